//! Proxying through a real gateway to real backends: routing decisions, the upstream URL
//! and headers, Kong's error responses, timeouts, keep-alive, strict parsing, TLS with SNI,
//! h2/h2c, WebSocket and gRPC.

mod support;

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn basic(b: &Backend) -> String {
    format!(
        r#"
_format_version: "3.0"
services:
- name: echo
  url: {url}/base
  routes:
  - name: strip
    paths: ["/strip"]
  - name: keep
    paths: ["/keep"]
    strip_path: false
  - name: host
    hosts: ["example.com"]
    preserve_host: true
  - name: regex
    paths: ["~/items/(?<id>\\d+)$"]
  - name: secure
    paths: ["/secure"]
    protocols: ["https"]
  - name: redirect
    paths: ["/redirect"]
    protocols: ["https"]
    https_redirect_status_code: 301
- name: root
  url: {url}
  routes:
  - name: root-any
    paths: ["/any"]
    strip_path: false
- name: slow
  url: {url}
  read_timeout: 300
  routes:
  - name: slow
    paths: ["/delay"]
    strip_path: false
- name: dead
  url: http://127.0.0.1:1
  retries: 1
  routes:
  - name: dead
    paths: ["/dead"]
routes:
- name: orphan
  paths: ["/orphan"]
"#,
        url = b.url()
    )
}

#[tokio::test]
async fn routes_and_builds_the_upstream_request() {
    let b = Backend::start().await;
    let g = Gw::start(Some(&basic(&b))).await;
    let mut c = H1::connect(g.http).await;

    let r = c.get("anything.test", "/strip/a/b?x=1&y").await;
    assert_eq!(r.status, 200);
    let e = r.json();
    assert_eq!(e["uri"], "/base/a/b?x=1&y");
    assert_eq!(e["headers"]["host"], b.addr.to_string());
    assert_eq!(e["headers"]["x-forwarded-proto"], "http");
    assert_eq!(e["headers"]["x-forwarded-host"], "anything.test");
    assert_eq!(e["headers"]["x-forwarded-port"], g.http.port().to_string());
    assert_eq!(e["headers"]["x-forwarded-path"], "/strip/a/b");
    assert_eq!(e["headers"]["x-forwarded-prefix"], "/strip");
    assert_eq!(e["headers"]["x-forwarded-for"], "127.0.0.1");
    assert_eq!(e["headers"]["x-real-ip"], "127.0.0.1");
    assert_eq!(e["headers"]["via"], "1.1 kong/3.10.0");
    let rid = r.header("x-kong-request-id").unwrap().to_string();
    assert_eq!(rid.len(), 32);
    assert!(
        rid.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    );
    assert_eq!(e["headers"]["x-kong-request-id"], rid.as_str());
    // Response headers: hop-by-hop named in Connection removed, Kong's added.
    assert_eq!(r.header("x-backend"), Some("backend"));
    assert_eq!(r.header("x-hop"), None);
    assert_eq!(r.header("via"), Some("1.1 kong/3.10.0"));
    assert_eq!(r.header("server"), Some("kong/3.10.0"));
    assert!(
        r.header("x-kong-upstream-latency")
            .unwrap()
            .parse::<u64>()
            .is_ok()
    );
    assert!(
        r.header("x-kong-proxy-latency")
            .unwrap()
            .parse::<u64>()
            .is_ok()
    );

    // strip_path false; the service path joins with a slash per path_handling v0.
    assert_eq!(c.get("x", "/keep/z").await.json()["uri"], "/base/keep/z");
    // preserve_host: the client's Host (with port) goes upstream.
    let e = c.get("example.com:8080", "/p").await.json();
    assert_eq!(e["headers"]["host"], "example.com:8080");
    assert_eq!(e["uri"], "/base/p");
    // Regex route; the whole match is stripped.
    assert_eq!(c.get("x", "/items/42").await.json()["uri"], "/base");
    assert_eq!(c.get("x", "/items/42x").await.status, 404);
    // Incoming X-Forwarded-For is appended to; untrusted forwarding headers are ignored.
    let e = c
        .send(
            req("GET", "x", "/any")
                .header("x-forwarded-for", "1.2.3.4")
                .header("x-forwarded-proto", "https")
                .header("x-real-ip", "9.9.9.9")
                .body(Full::default())
                .unwrap(),
        )
        .await
        .json();
    assert_eq!(e["headers"]["x-forwarded-for"], "1.2.3.4, 127.0.0.1");
    assert_eq!(e["headers"]["x-forwarded-proto"], "http");
    assert_eq!(e["headers"]["x-real-ip"], "127.0.0.1");
    assert_eq!(e["uri"], "/any");
    // A body streams through.
    let e = c
        .send(
            req("POST", "x", "/any")
                .header("content-type", "text/plain")
                .body(Full::new(Bytes::from_static(b"hello")))
                .unwrap(),
        )
        .await
        .json();
    assert_eq!(e["method"], "POST");
    assert_eq!(e["body"], "hello");
    assert_eq!(e["headers"]["content-length"], "5");
    g.gw.shutdown().await;
}

#[tokio::test]
async fn trusted_ips_and_real_ip_header() {
    let b = Backend::start().await;
    let mut s = silverback_proxy::Settings::loopback();
    s.trusted_ips = silverback_proxy::Cidr::parse_list("127.0.0.0/8").unwrap();
    s.real_ip_header = "X-Forwarded-For".into();
    s.real_ip_recursive = true;
    let g = Gw::start_with(s, Some(&basic(&b))).await;
    let mut c = H1::connect(g.http).await;
    let e = c
        .send(
            req("GET", "x", "/any")
                .header("x-forwarded-for", "5.6.7.8, 127.0.0.9")
                .header("x-forwarded-proto", "https")
                .header("x-forwarded-host", "public.example")
                .header("x-forwarded-port", "443")
                .body(Full::default())
                .unwrap(),
        )
        .await
        .json();
    assert_eq!(e["headers"]["x-real-ip"], "5.6.7.8");
    assert_eq!(e["headers"]["x-forwarded-proto"], "https");
    assert_eq!(e["headers"]["x-forwarded-host"], "public.example");
    assert_eq!(e["headers"]["x-forwarded-port"], "443");
    assert_eq!(
        e["headers"]["x-forwarded-for"],
        "5.6.7.8, 127.0.0.9, 127.0.0.1"
    );
    // As nginx's realip reads X-Forwarded-For: every line, from the last; an entry with a
    // port; an entry that is no address ends the reading, keeping what was found. (The list
    // sent upstream is the first line and the peer, as Kong's `get_header` takes it.)
    for (lines, real, xff) in [
        (
            &["9.9.9.9", "5.6.7.8:4711, 127.0.0.2"][..],
            "5.6.7.8",
            "9.9.9.9, 127.0.0.1",
        ),
        (
            &["9.9.9.9", "127.0.0.2"][..],
            "9.9.9.9",
            "9.9.9.9, 127.0.0.1",
        ),
        (
            &["1.1.1.1, junk, 127.0.0.5"][..],
            "127.0.0.5",
            "1.1.1.1, junk, 127.0.0.5, 127.0.0.1",
        ),
    ] {
        let mut r = req("GET", "x", "/any");
        for l in lines {
            r = r.header("x-forwarded-for", *l);
        }
        let e = c.send(r.body(Full::default()).unwrap()).await.json();
        assert_eq!(e["headers"]["x-real-ip"], real, "{lines:?}");
        assert_eq!(e["headers"]["x-forwarded-for"], xff, "{lines:?}");
    }
    // a trusted client's forwarded values pass as their bytes came, text or not
    let host = http::HeaderValue::from_bytes("café.example".as_bytes()).unwrap();
    let e = c
        .send(
            req("GET", "x", "/any")
                .header("x-forwarded-host", host)
                .body(Full::default())
                .unwrap(),
        )
        .await
        .json();
    assert_eq!(e["headers"]["x-forwarded-host"], "café.example");
    // A trusted client saying https passes the https-only check.
    let r = c
        .send(
            req("GET", "x", "/secure")
                .header("x-forwarded-proto", "https")
                .body(Full::default())
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, 200);
    g.gw.shutdown().await;
}

/// The JSON the echo backend returned in a raw HTTP/1.1 answer.
fn echoed(raw: &[u8]) -> serde_json::Value {
    let text = String::from_utf8_lossy(raw);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    let body = text.split_once("\r\n\r\n").map_or("", |x| x.1);
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// A PROXY protocol v2 header for TCP over IPv4.
fn proxy_v2(command: u8, src: [u8; 4], dst: [u8; 4], ports: (u16, u16)) -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.extend_from_slice(&[0x20 | command, 0x11, 0, 12]);
    h.extend_from_slice(&src);
    h.extend_from_slice(&dst);
    h.extend_from_slice(&ports.0.to_be_bytes());
    h.extend_from_slice(&ports.1.to_be_bytes());
    h
}

/// Listeners with `proxy_protocol`: the header is read before anything (before TLS on ssl
/// listeners), its address is the client's when the peer is trusted and `real_ip_header`
/// is `proxy_protocol`, and a connection without a valid header is closed unanswered.
#[tokio::test]
async fn proxy_protocol_listeners() {
    let b = Backend::start().await;
    let mut s = silverback_proxy::Settings::loopback();
    s.proxy_listen = silverback_proxy::Listen::parse_list(
        "127.0.0.1:0 proxy_protocol, 127.0.0.1:0 ssl http2 proxy_protocol",
    )
    .unwrap();
    s.trusted_ips = silverback_proxy::Cidr::parse_list("127.0.0.0/8").unwrap();
    s.real_ip_header = "proxy_protocol".into();
    s.client_header_timeout = Duration::from_millis(300);
    let g = Gw::start_with(s, Some(&basic(&b))).await;
    let request = b"GET /any HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let fetch = |head: Vec<u8>, extra: &'static [u8]| async move {
        let mut c = tokio::net::TcpStream::connect(g.http).await.unwrap();
        c.write_all(&[head.as_slice(), extra].concat())
            .await
            .unwrap();
        read_to_close(&mut c, Duration::from_secs(5)).await
    };

    // v1, the request in the same segment: the header's source is the client
    let v1 = b"PROXY TCP4 203.0.113.9 10.0.0.1 40000 8000\r\n".to_vec();
    let (out, closed) = fetch(v1.clone(), request).await;
    assert!(closed);
    let e = echoed(&out);
    assert_eq!(e["headers"]["x-real-ip"], "203.0.113.9");
    // no X-Forwarded-For from the client: Kong sends `$remote_addr`, the real client
    assert_eq!(e["headers"]["x-forwarded-for"], "203.0.113.9");
    // a client list gets the peer appended (`$realip_remote_addr`)
    let with_xff =
        b"GET /any HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 1.1.1.1\r\nConnection: close\r\n\r\n";
    let e = echoed(&fetch(v1, with_xff).await.0);
    assert_eq!(e["headers"]["x-forwarded-for"], "1.1.1.1, 127.0.0.1");
    assert_eq!(e["headers"]["x-real-ip"], "203.0.113.9");

    // v2, and the header split from the request
    let mut c = tokio::net::TcpStream::connect(g.http).await.unwrap();
    c.write_all(&proxy_v2(1, [198, 51, 100, 4], [10, 0, 0, 1], (1234, 8000)))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    c.write_all(request).await.unwrap();
    let e = echoed(&read_to_close(&mut c, Duration::from_secs(5)).await.0);
    assert_eq!(e["headers"]["x-real-ip"], "198.51.100.4");

    // LOCAL (v2) and UNKNOWN (v1) carry no address: the peer's stands
    let local = proxy_v2(0, [0; 4], [0; 4], (0, 0));
    assert_eq!(
        echoed(&fetch(local, request).await.0)["headers"]["x-real-ip"],
        "127.0.0.1"
    );
    let unknown = b"PROXY UNKNOWN\r\n".to_vec();
    assert_eq!(
        echoed(&fetch(unknown, request).await.0)["headers"]["x-real-ip"],
        "127.0.0.1"
    );

    // no header, a broken one, or none in time: closed without an answer
    for bad in [
        Vec::new(),
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n".to_vec(),
        b"PROXY TCP9 1.2.3.4 5.6.7.8 1 2\r\n".to_vec(),
    ] {
        let (out, closed) = fetch(bad.clone(), request).await;
        assert!(
            closed && out.is_empty(),
            "{:?}: {:?}",
            String::from_utf8_lossy(&bad),
            String::from_utf8_lossy(&out)
        );
    }
    let mut c = tokio::net::TcpStream::connect(g.http).await.unwrap();
    c.write_all(b"PROXY TCP4 1.2.3.4").await.unwrap();
    let (out, closed) = read_to_close(&mut c, Duration::from_secs(5)).await;
    assert!(closed && out.is_empty(), "a partial header times out");

    // one header serves the whole connection: a kept-alive GET (the fast path), then a
    // POST with a body (handed to hyper)
    let mut c = tokio::net::TcpStream::connect(g.http).await.unwrap();
    let two = [
        &b"PROXY TCP4 203.0.113.9 10.0.0.1 40000 8000\r\n"[..],
        b"GET /any HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST /any HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
    ]
    .concat();
    c.write_all(&two).await.unwrap();
    let (out, closed) = read_to_close(&mut c, Duration::from_secs(5)).await;
    let text = String::from_utf8_lossy(&out);
    assert!(closed && count_responses(&text) == 2, "{text}");
    let real = "\"x-real-ip\":\"203.0.113.9\"";
    assert_eq!(text.matches(real).count(), 2, "{text}");
    assert!(
        text.contains("\"POST\"") && text.contains("hello"),
        "{text}"
    );

    // TLS: the header comes before the handshake, v1 and v2 (with a TLV, as an NLB sends)
    let pre = b"PROXY TCP6 2001:db8::7 2001:db8::1 5000 8443\r\n";
    let mut t = tls_connect_after(g.https, pre, "x").await;
    t.write_all(request).await.unwrap();
    let e = echoed(&read_to_close(&mut t, Duration::from_secs(5)).await.0);
    assert_eq!(e["headers"]["x-real-ip"], "2001:db8::7");
    assert_eq!(e["headers"]["x-forwarded-proto"], "https");
    let mut pre = proxy_v2(1, [192, 0, 2, 77], [10, 0, 0, 1], (999, 8443));
    pre[15] += 7;
    pre.extend_from_slice(&[0xea, 0x00, 0x04, b'v', b'p', b'c', b'e']);
    let mut t = tls_connect_after(g.https, &pre, "x").await;
    t.write_all(request).await.unwrap();
    let e = echoed(&read_to_close(&mut t, Duration::from_secs(5)).await.0);
    assert_eq!(e["headers"]["x-real-ip"], "192.0.2.77");

    // the listeners say so on the admin API
    let root = get(g.admin, "localhost", "/").await.json();
    let listeners = &root["configuration"]["proxy_listeners"];
    assert_eq!(listeners[0]["proxy_protocol"], true, "{listeners}");
    assert_eq!(listeners[1]["proxy_protocol"], true, "{listeners}");
    g.gw.shutdown().await;

    // an untrusted peer's header is read but not believed
    let mut s = silverback_proxy::Settings::loopback();
    s.proxy_listen = silverback_proxy::Listen::parse_list("127.0.0.1:0 proxy_protocol").unwrap();
    s.real_ip_header = "proxy_protocol".into();
    let g = Gw::start_with(s, Some(&basic(&b))).await;
    let mut c = tokio::net::TcpStream::connect(g.http).await.unwrap();
    c.write_all(
        &[
            &b"PROXY TCP4 203.0.113.9 10.0.0.1 40000 8000\r\n"[..],
            request,
        ]
        .concat(),
    )
    .await
    .unwrap();
    let e = echoed(&read_to_close(&mut c, Duration::from_secs(5)).await.0);
    assert_eq!(e["headers"]["x-real-ip"], "127.0.0.1");
    assert_eq!(e["headers"]["x-forwarded-for"], "127.0.0.1");
    // a connection still waiting for its header does not hold up a shutdown
    let _silent = tokio::net::TcpStream::connect(g.http).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let start = std::time::Instant::now();
    g.gw.shutdown().await;
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
}

/// One `client_header_timeout`, from the accept, covers a connection's PROXY header, its TLS
/// handshake and its first request head, as in nginx (`ngx_http_init_connection` sets the
/// read timer once; `ngx_http_wait_request_handler` and `ngx_http_ssl_handshake` read the
/// header under it and keep it for the head): a client that dribbles the header and then
/// the head, each within the timeout but not both, is closed unanswered at the timeout.
/// Each later head gets its own. On the fast path and behind the framing guard (hyper), in
/// cleartext and over TLS. (The timeout is 1 s: the header is complete at 0.7 s and the
/// head at 1.5 s, each within it alone, both together 0.5 s past it: a timer per phase
/// would serve the request, and even a slow accept leaves the head past the timeout.)
#[tokio::test]
async fn one_header_timeout_covers_the_proxy_header_and_the_first_head() {
    use tokio::time::Instant;
    let b = Backend::start().await;
    let ms = Duration::from_millis;
    let header = b"PROXY TCP4 203.0.113.9 10.0.0.1 40000 8000\r\n";
    let (h1, h2) = header.split_at(20);
    let line: &[u8] = b"GET /any HTTP/1.1\r\n";
    let rest: &[u8] = b"Host: x\r\nConnection: close\r\n\r\n";
    // (a refusal, not the timeout, would close it at once)
    let closed_at_the_timeout = |what: &str, out: &[u8], closed: bool, at: Duration| {
        assert!(
            closed && out.is_empty(),
            "{what}: {:?}",
            String::from_utf8_lossy(out)
        );
        assert!(at >= ms(900), "{what}: closed after {at:?}");
    };
    for fast_h1 in [true, false] {
        let mut s = silverback_proxy::Settings::loopback();
        s.proxy_listen = silverback_proxy::Listen::parse_list(
            "127.0.0.1:0 proxy_protocol, 127.0.0.1:0 ssl http2 proxy_protocol",
        )
        .unwrap();
        s.client_header_timeout = ms(1000);
        s.fast_h1 = fast_h1;
        let g = Gw::start_with(s, Some(&basic(&b))).await;
        let what = |w: &str| format!("{w} (fast path: {fast_h1})");

        // cleartext, within the timeout: served
        let start = Instant::now();
        let mut c = tokio::net::TcpStream::connect(g.http).await.unwrap();
        let pieces = [
            (ms(50), h1),
            (ms(100), h2),
            (ms(200), line),
            (ms(250), rest),
        ];
        assert!(dribble(&mut c, start, &pieces).await);
        echoed(&read_to_close(&mut c, ms(5000)).await.0);

        // the header complete at 700 ms and the head 800 ms after it: closed at 1 s
        let start = Instant::now();
        let c = tokio::net::TcpStream::connect(g.http).await.unwrap();
        let (mut r, mut w) = c.into_split();
        let pieces = [
            (ms(350), h1),
            (ms(700), h2),
            (ms(900), line),
            (ms(1500), rest),
        ];
        let (_, (out, closed, at)) = tokio::join!(dribble(&mut w, start, &pieces), async {
            let (out, closed) = read_to_close(&mut r, ms(5000)).await;
            (out, closed, start.elapsed())
        });
        closed_at_the_timeout(&what("cleartext"), &out, closed, at);

        // TLS: the header, then the handshake, then the head, under the same timeout
        let start = Instant::now();
        let mut c = tokio::net::TcpStream::connect(g.https).await.unwrap();
        assert!(dribble(&mut c, start, &[(ms(50), h1), (ms(100), h2)]).await);
        let mut t = tls_on(c, "x").await.unwrap();
        assert!(dribble(&mut t, start, &[(ms(200), line), (ms(250), rest)]).await);
        let e = echoed(&read_to_close(&mut t, ms(5000)).await.0);
        assert_eq!(e["headers"]["x-forwarded-proto"], "https");

        let start = Instant::now();
        let mut c = tokio::net::TcpStream::connect(g.https).await.unwrap();
        assert!(dribble(&mut c, start, &[(ms(350), h1), (ms(700), h2)]).await);
        let t = tls_on(c, "x").await.unwrap();
        let (mut r, mut w) = tokio::io::split(t);
        let pieces = [(ms(900), line), (ms(1500), rest)];
        let (_, (out, closed, at)) = tokio::join!(dribble(&mut w, start, &pieces), async {
            let (out, closed) = read_to_close(&mut r, ms(5000)).await;
            (out, closed, start.elapsed())
        });
        closed_at_the_timeout(&what("TLS"), &out, closed, at);

        // a later head has a timeout of its own: the second request comes 1.2 s after the
        // accept, within the timeout of the first request's end (at 420 ms)
        let start = Instant::now();
        let mut c = tokio::net::TcpStream::connect(g.http).await.unwrap();
        let first = [&header[..], line].concat();
        let second = [line, rest].concat();
        let pieces = [
            (ms(300), first.as_slice()),
            (ms(420), b"Host: x\r\n\r\n".as_slice()),
            (ms(1200), second.as_slice()),
        ];
        assert!(dribble(&mut c, start, &pieces).await);
        let (out, closed) = read_to_close(&mut c, ms(5000)).await;
        let text = String::from_utf8_lossy(&out);
        assert!(
            closed && count_responses(&text) == 2,
            "{}: {text}",
            what("keep-alive")
        );
        g.gw.shutdown().await;
    }
}

/// A head the fast path hands to hyper before it is complete keeps its timeout: the start
/// of an h2c preface (hyper's protocol detection has no timer at all), or a head with more
/// headers than the fast path parses (hyper's header timer would start over at the
/// hand-off). Such a client is closed unanswered, as nginx closes it, one
/// `client_header_timeout` after the accept (and, for a later head, after the answer
/// before it), not one after the hand-off. In cleartext and over TLS, and with the fast path
/// off (where the framing guard times the first head from the start).
#[tokio::test]
async fn a_head_handed_to_hyper_unfinished_keeps_its_timeout() {
    use tokio::time::Instant;
    let b = Backend::start().await;
    let ms = Duration::from_millis;
    // 70 headers (the fast path parses 64, the limit is 100), and no blank line
    let mut many = b"GET /any HTTP/1.1\r\nHost: x\r\n".to_vec();
    for i in 0..70 {
        many.extend_from_slice(format!("X-H-{i}: v\r\n").as_bytes());
    }
    // the hand-off at 800 ms, then a header line every 100 ms up to 1.5 s (77 headers): closed
    // at the timeout, 1 s; hyper's own timer would close it at 1.8 s
    let mut pieces: Vec<(Duration, &[u8])> = vec![(ms(800), &many)];
    for i in 0..8 {
        pieces.push((ms(800 + 100 * i), b"X-More: v\r\n"));
    }
    let lone_p: &[(Duration, &[u8])] = &[(ms(100), b"P")];
    // (closed with nothing written, at the timeout and well before a timer started at the
    // hand-off would close it)
    let closed_at_the_timeout = |what: &str, out: &[u8], closed: bool, at: Duration| {
        assert!(
            closed && out.is_empty(),
            "{what}: {:?}",
            String::from_utf8_lossy(out)
        );
        assert!(at >= ms(950), "{what}: closed after {at:?}");
        assert!(at < ms(1500), "{what}: closed after {at:?}");
    };
    async fn stalled<S>(
        s: S,
        start: Instant,
        pieces: &[(Duration, &[u8])],
    ) -> (Vec<u8>, bool, Duration)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let (mut r, mut w) = tokio::io::split(s);
        let (_, (out, closed)) = tokio::join!(dribble(&mut w, start, pieces), async {
            read_to_close(&mut r, Duration::from_secs(5)).await
        });
        (out, closed, start.elapsed())
    }
    for fast_h1 in [true, false] {
        let mut s = silverback_proxy::Settings::loopback();
        s.client_header_timeout = ms(1000);
        s.fast_h1 = fast_h1;
        let g = Gw::start_with(s, Some(&basic(&b))).await;
        let what = |w: &str| format!("{w} (fast path: {fast_h1})");
        let plain = |pieces| async move {
            let start = Instant::now();
            let c = tokio::net::TcpStream::connect(g.http).await.unwrap();
            stalled(c, start, pieces).await
        };
        let tls = |pieces| async move {
            let start = Instant::now();
            let c = tokio::net::TcpStream::connect(g.https).await.unwrap();
            let t = tls_on(c, "x").await.unwrap();
            stalled(t, start, pieces).await
        };
        // a later head: the timer starts at the end of the answer before it
        let later = async {
            let mut c = tokio::net::TcpStream::connect(g.http).await.unwrap();
            // (the clock read before the request: the timer starts after its answer, so a
            // late wake-up of this task cannot make the close look early)
            let start = Instant::now();
            c.write_all(b"GET /any HTTP/1.1\r\nHost: x\r\n\r\n")
                .await
                .unwrap();
            let mut buf = vec![0u8; 8192];
            let n = c.read(&mut buf).await.unwrap();
            assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{}", what("later"));
            stalled(c, start, &pieces).await
        };
        let (p, p_tls, m, m_tls, l) = tokio::join!(
            plain(lone_p),
            tls(lone_p),
            plain(&pieces),
            tls(&pieces),
            later
        );
        closed_at_the_timeout(&what("a lone P"), &p.0, p.1, p.2);
        closed_at_the_timeout(&what("a lone P over TLS"), &p_tls.0, p_tls.1, p_tls.2);
        closed_at_the_timeout(&what("70 headers"), &m.0, m.1, m.2);
        closed_at_the_timeout(&what("70 headers over TLS"), &m_tls.0, m_tls.1, m_tls.2);
        closed_at_the_timeout(&what("a later head of 70 headers"), &l.0, l.1, l.2);
        g.gw.shutdown().await;
    }
}

/// Routes match the client after realip: an expression on `net.src.ip` sees the address of
/// a trusted PROXY header.
#[tokio::test]
async fn routes_match_the_proxy_protocol_client() {
    let b = Backend::start().await;
    let mut s = silverback_proxy::Settings::loopback();
    s.router_flavor = silverback_config::RouterFlavor::Expressions;
    s.proxy_listen = silverback_proxy::Listen::parse_list("127.0.0.1:0 proxy_protocol").unwrap();
    s.trusted_ips = silverback_proxy::Cidr::parse_list("127.0.0.0/8").unwrap();
    s.real_ip_header = "proxy_protocol".into();
    let g = Gw::start_with(s, None).await;
    let doc = format!(
        r#"{{"_format_version":"3.0","services":[{{"name":"echo","url":"{}/base","routes":[
        {{"name":"office","expression":"net.src.ip in 203.0.113.0/24 && net.src.port == 40000"}}]}}]}}"#,
        b.url()
    );
    load_config(g.admin, doc).await;
    let request = b"GET /any HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    for (header, status) in [
        (
            &b"PROXY TCP4 203.0.113.9 10.0.0.1 40000 8000\r\n"[..],
            "200",
        ),
        (b"PROXY TCP4 203.0.113.9 10.0.0.1 40001 8000\r\n", "404"),
        (b"PROXY TCP4 198.51.100.1 10.0.0.1 40000 8000\r\n", "404"),
    ] {
        let mut c = tokio::net::TcpStream::connect(g.http).await.unwrap();
        c.write_all(&[header, request].concat()).await.unwrap();
        let (out, _) = read_to_close(&mut c, Duration::from_secs(5)).await;
        let text = String::from_utf8_lossy(&out);
        assert!(
            text.starts_with(&format!("HTTP/1.1 {status}")),
            "{header:?}: {text}"
        );
    }
    g.gw.shutdown().await;
}

/// With a trusted `real_ip_header` other than X-Forwarded-For and no X-Forwarded-For from
/// the client, Kong's upstream X-Forwarded-For is `$remote_addr`: the real client.
#[tokio::test]
async fn forwarded_for_without_a_client_list_is_the_real_client() {
    let b = Backend::start().await;
    let mut s = silverback_proxy::Settings::loopback();
    s.trusted_ips = silverback_proxy::Cidr::parse_list("127.0.0.0/8").unwrap();
    let g = Gw::start_with(s, Some(&basic(&b))).await;
    let mut c = H1::connect(g.http).await;
    let r = req("GET", "x", "/any").header("x-real-ip", "192.0.2.44");
    let e = c.send(r.body(Full::default()).unwrap()).await.json();
    assert_eq!(e["headers"]["x-real-ip"], "192.0.2.44");
    assert_eq!(e["headers"]["x-forwarded-for"], "192.0.2.44");
    g.gw.shutdown().await;
}

/// Kong's `headers` and `headers_upstream`: what each setting adds, on the fast path (GET)
/// and through hyper (a request with a body), on proxied answers and the gateway's own.
#[tokio::test]
async fn headers_settings_choose_the_added_headers() {
    use silverback_proxy::{Headers, UpstreamHeaders};
    let b = Backend::start().await;
    let mut s = silverback_proxy::Settings::loopback();
    s.headers = Headers::parse("off").unwrap();
    s.headers_upstream = UpstreamHeaders::parse("off").unwrap();
    let g = Gw::start_with(s, Some(&basic(&b))).await;
    let mut c = H1::connect(g.http).await;
    for r in [
        c.get("x", "/any").await,
        c.send(
            req("POST", "x", "/any")
                .body(Full::new(Bytes::from_static(b"x")))
                .unwrap(),
        )
        .await,
    ] {
        assert_eq!(r.status, 200);
        for name in [
            "via",
            "server",
            "x-kong-upstream-latency",
            "x-kong-proxy-latency",
            "x-kong-request-id",
            "x-kong-upstream-status",
        ] {
            assert_eq!(r.header(name), None, "{name} with headers=off");
        }
        let e = r.json();
        assert!(e["headers"]["x-kong-request-id"].is_null());
        // Kong sends its Via upstream whatever `headers` says.
        assert_eq!(e["headers"]["via"], "1.1 kong/3.10.0");
        assert_eq!(e["headers"]["x-forwarded-for"], "127.0.0.1");
    }
    let r = c.get("x", "/nothing-here").await;
    assert_eq!(r.status, 404);
    for name in ["server", "x-kong-response-latency", "x-kong-request-id"] {
        assert_eq!(r.header(name), None, "{name} on a 404 with headers=off");
    }
    // The same over HTTP/2 (h2c), where hyper writes the answer.
    let mut c2 = H2::h2c(g.http).await;
    let r = c2.get("http://h2c.test/any").await;
    assert_eq!(r.status, 200);
    for name in ["via", "server", "x-kong-proxy-latency", "x-kong-request-id"] {
        assert_eq!(r.header(name), None, "{name} over h2 with headers=off");
    }
    assert_eq!(r.json()["headers"]["via"], "2 kong/3.10.0");
    g.gw.shutdown().await;

    // Single names: the upstream status, and Server without Via or latencies.
    let mut s = silverback_proxy::Settings::loopback();
    s.headers = Headers::parse("Server, x-kong-upstream-status").unwrap();
    let g = Gw::start_with(s, Some(&basic(&b))).await;
    let mut c = H1::connect(g.http).await;
    let r = c.get("x", "/any").await;
    assert_eq!(r.header("x-kong-upstream-status"), Some("200"));
    assert_eq!(r.header("server"), Some("kong/3.10.0"));
    assert_eq!(r.header("via"), None);
    assert_eq!(r.header("x-kong-proxy-latency"), None);
    assert_eq!(r.header("x-kong-request-id"), None);
    // headers_upstream keeps its default: the request id still goes upstream.
    assert_eq!(
        r.json()["headers"]["x-kong-request-id"]
            .as_str()
            .map(str::len),
        Some(32)
    );
    let r = c.get("x", "/nothing-here").await;
    assert_eq!(r.header("server"), Some("kong/3.10.0"));
    assert_eq!(r.header("x-kong-response-latency"), None);
    // The upstream's own Server is kept.
    let r = c
        .send(
            req("GET", "x", "/any")
                .header("x-respond-server", "backend/1")
                .body(Full::default())
                .unwrap(),
        )
        .await;
    assert_eq!(r.header("server"), Some("backend/1"));
    g.gw.shutdown().await;

    // Defaults: Via is appended to the upstream's, its Server kept.
    let g = Gw::start(Some(&basic(&b))).await;
    let mut c = H1::connect(g.http).await;
    let r = c
        .send(
            req("GET", "x", "/any")
                .header("x-respond-server", "backend/1")
                .header("x-respond-via", "1.0 cache")
                .body(Full::default())
                .unwrap(),
        )
        .await;
    assert_eq!(r.header("server"), Some("backend/1"));
    assert_eq!(r.header("via"), Some("1.0 cache, 1.1 kong/3.10.0"));
    g.gw.shutdown().await;
}

#[tokio::test]
async fn kong_error_responses() {
    let b = Backend::start().await;
    let g = Gw::start(Some(&basic(&b))).await;
    let mut c = H1::connect(g.http).await;

    let r = c.get("x", "/nothing-here").await;
    assert_eq!(r.status, 404);
    assert_eq!(
        r.header("content-type"),
        Some("application/json; charset=utf-8")
    );
    let rid = r.header("x-kong-request-id").unwrap().to_string();
    assert_eq!(
        r.json(),
        serde_json::json!({"message": "no Route matched with those values", "request_id": rid})
    );
    assert_eq!(r.header("server"), Some("kong/3.10.0"));
    assert!(r.header("x-kong-response-latency").is_some());

    let r = c
        .send(
            req("GET", "x", "/nothing")
                .header("accept", "text/plain")
                .body(Full::default())
                .unwrap(),
        )
        .await;
    assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
    assert_eq!(
        r.text(),
        format!(
            "no Route matched with those values\nrequest_id: {}\n",
            r.header("x-kong-request-id").unwrap()
        )
    );

    let r = c
        .send(
            req("GET", "x", "/nothing")
                .header("accept", "text/html")
                .body(Full::default())
                .unwrap(),
        )
        .await;
    assert!(
        r.text()
            .contains("<p>no Route matched with those values.</p>")
    );

    let r = c.get("x", "/orphan").await;
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["message"], "no Service found with those values");

    // Errors nginx raises in Kong (here: the upstream fails) fall back to Content-Type,
    // then to `error_default_type` (text/plain), not to JSON.
    let r = c.get("x", "/dead").await;
    assert_eq!(r.status, 502);
    assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
    assert_eq!(
        r.text(),
        format!(
            "An invalid response was received from the upstream server\nrequest_id: {}\n",
            r.header("x-kong-request-id").unwrap()
        )
    );
    let r = c
        .send(
            req("GET", "x", "/dead")
                .header("content-type", "text/html")
                .body(Full::default())
                .unwrap(),
        )
        .await;
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    let r = c
        .send(
            req("GET", "x", "/dead")
                .header("content-type", "text/html")
                .header("accept", "text/plain;q=0.5, application/json")
                .body(Full::default())
                .unwrap(),
        )
        .await;
    assert_eq!(
        r.json()["message"],
        "An invalid response was received from the upstream server"
    );

    let r = c
        .send(
            req("GET", "x", "/delay/2000")
                .header("accept", "*/*")
                .body(Full::default())
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, 504);
    assert_eq!(r.json()["message"], "The upstream server is timing out");
    // Under the read timeout it passes.
    assert_eq!(c.get("x", "/delay/10").await.status, 200);

    // Upstream error statuses pass through untouched.
    let r = c.get("x", "/any/../status/503").await;
    assert_eq!(
        r.status, 404,
        "normalized path /status/503 matches no route"
    );
    g.gw.shutdown().await;
}

#[tokio::test]
async fn https_only_routes() {
    let b = Backend::start().await;
    let g = Gw::start(Some(&basic(&b))).await;
    let mut c = H1::connect(g.http).await;
    let r = c.get("x", "/secure").await;
    assert_eq!(r.status, 426);
    // (kong.response.error: the Accept template, with the request id)
    assert_eq!(r.json()["message"], "Please use HTTPS protocol");
    assert_eq!(
        r.json()["request_id"].as_str(),
        r.header("x-kong-request-id")
    );
    assert_eq!(r.header("upgrade"), Some("TLS/1.2, HTTP/1.1"));
    // nginx's own `Connection` line, and the one Kong sets: the connection is kept (the
    // fast path and hyper's, as written)
    for raw in [
        "GET /secure HTTP/1.1\r\nHost: x\r\n\r\n",
        "POST /secure HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nz",
    ] {
        let mut s = tokio::net::TcpStream::connect(g.http).await.unwrap();
        s.write_all(raw.as_bytes()).await.unwrap();
        let a = read_answer(&mut s).await;
        // (two lines on the fast path; hyper joins them into one)
        let mut tokens: Vec<&str> = a
            .split("\r\n")
            .filter(|l| l.to_ascii_lowercase().starts_with("connection:"))
            .flat_map(|l| l["connection:".len()..].split(','))
            .map(str::trim)
            .collect();
        tokens.sort_unstable();
        assert_eq!(tokens, ["Upgrade", "keep-alive"], "{a}");
        // (and the connection takes the next request)
        s.write_all(b"GET /any HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let a = read_answer(&mut s).await;
        assert!(a.starts_with("HTTP/1.1 200 "), "{a}");
    }
    let r = c.get("shop.example", "/redirect/x?q=1").await;
    assert_eq!(r.status, 301);
    assert_eq!(
        r.header("location"),
        Some("https://shop.example/redirect/x?q=1")
    );
    assert!(r.body.is_empty());
    // Over TLS the same route proxies; a client offering only `http/1.0` gets it (nginx
    // offers `http/1.1`, `http/1.0` and `http/0.9`) and is served HTTP/1 as well.
    for offer in [&b"http/1.1"[..], b"http/1.0"] {
        let (tls, _, alpn) = tls_connect(g.https, "shop.example", &[offer]).await;
        assert_eq!(alpn.as_deref(), Some(offer));
        let (mut tx, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
                .await
                .unwrap();
        tokio::spawn(conn);
        let r = tx
            .send_request(
                req("GET", "shop.example", "/secure/a")
                    .body(Full::<Bytes>::default())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    g.gw.shutdown().await;
}

#[tokio::test]
async fn upstream_connections_are_kept_alive() {
    let b = Backend::start().await;
    let g = Gw::start(Some(&basic(&b))).await;
    let mut c = H1::connect(g.http).await;
    for _ in 0..50 {
        assert_eq!(c.get("x", "/any").await.status, 200);
    }
    // Several clients in parallel.
    let mut tasks = vec![];
    for _ in 0..8 {
        let a = g.http;
        tasks.push(tokio::spawn(async move {
            let mut c = H1::connect(a).await;
            for _ in 0..20 {
                assert_eq!(c.get("x", "/any").await.status, 200);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let conns = b.connections.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        conns <= 9,
        "expected pooled upstream connections, backend saw {conns}"
    );
    assert_eq!(b.requests.load(std::sync::atomic::Ordering::SeqCst), 210);
    assert!(g.gw.idle_upstream_connections() >= 1);
    g.gw.shutdown().await;
}

#[tokio::test]
async fn strict_http1_parsing() {
    let b = Backend::start().await;
    let g = Gw::start(Some(&basic(&b))).await;
    let w = Duration::from_millis(500);
    let conflict = raw(
        g.http,
        b"POST /any HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        w,
    )
    .await;
    assert_kong_400(&conflict, "Bad request");
    let list = raw(
        g.http,
        b"POST /any HTTP/1.1\r\nHost: x\r\nContent-Length: 3, 4\r\n\r\nabcd",
        w,
    )
    .await;
    assert_kong_400(&list, "Bad request");
    // Identical duplicates are refused too, as nginx does (RFC 9112 6.3 allows either), on
    // both request paths.
    let dup = raw(g.http, b"POST /any HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc", w).await;
    assert_kong_400(&dup, "Bad request");
    let dup = raw(
        g.http,
        b"GET /any HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n",
        w,
    )
    .await;
    assert_kong_400(&dup, "Bad request");
    let both = raw(
        g.http,
        b"POST /any HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        w,
    )
    .await;
    // Content-Length with Transfer-Encoding is refused (as nginx does), in either order, also
    // on a keep-alive connection after a valid request.
    assert_kong_400(&both, "Bad request");
    // ... at once, whatever follows the head (hyper waits for a blank line before it parses
    // a head that came in pieces: the refused head must not leave it waiting)
    let both = raw(
        g.http,
        b"POST /any HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\nabc",
        w,
    )
    .await;
    assert_kong_400(&both, "Bad request");
    let both = raw(
        g.http,
        b"GET /any HTTP/1.1\r\nHost: x\r\n\r\nPOST /any HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
        w,
    )
    .await;
    assert!(both.starts_with("HTTP/1.1 200"), "{both}");
    assert_eq!(count_responses(&both), 2, "{both}");
    assert!(both.contains("HTTP/1.1 400"), "{both}");
    let fold = raw(
        g.http,
        b"GET /any HTTP/1.1\r\nHost: x\r\nX-A: a\r\n  folded\r\n\r\n",
        w,
    )
    .await;
    assert_kong_400(&fold, "Bad request");
    let bad_chunk = raw(g.http, b"POST /any HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n", w).await;
    assert!(!bad_chunk.contains("HTTP/1.1 200"), "{bad_chunk}");
    let two_hosts = raw(
        g.http,
        b"GET /any HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        w,
    )
    .await;
    assert!(two_hosts.starts_with("HTTP/1.1 400"), "{two_hosts}");
    // A body that looks like a request is never parsed as one (no route: 404 without
    // reading the body, then the connection must not be reused).
    let smuggle = b"POST /nothing HTTP/1.1\r\nHost: x\r\nContent-Length: 36\r\n\r\nGET /any HTTP/1.1\r\nHost: smuggled\r\n\r\n";
    let out = raw(g.http, smuggle, w).await;
    assert!(out.starts_with("HTTP/1.1 404"), "{out}");
    assert_eq!(count_responses(&out), 1, "{out}");
    assert!(!out.contains("smuggled"));
    // Too many header bytes.
    let mut big = b"GET /any HTTP/1.1\r\nHost: x\r\n".to_vec();
    for i in 0..100 {
        big.extend_from_slice(format!("X-Big-{i}: {}\r\n", "a".repeat(500)).as_bytes());
    }
    big.extend_from_slice(b"\r\n");
    let out = raw(g.http, &big, w).await;
    // (nginx's 494, which Kong sends as 400 with its own message)
    assert_kong_400(&out, "Request header or cookie too large");
    // The HTTP/2 preface after a request is not taken as a switch to HTTP/2: it is a request
    // line that does not parse (nginx: 400, Kong's page), and no HTTP/2 frame (they hold NUL
    // bytes) comes back (`the_h2_preface_is_one_only_at_the_connections_start`).
    let out = raw(
        g.http,
        b"GET /any HTTP/1.1\r\nHost: x\r\n\r\nPRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00",
        w,
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert_kong_400_after(&out, 1, "Bad request");
    assert!(!out.contains('\0'), "{out:?}");
    // Pipelined requests on one connection are answered in order.
    let out = raw(
        g.http,
        b"GET /any/1 HTTP/1.1\r\nHost: x\r\n\r\nGET /any/2 HTTP/1.1\r\nHost: x\r\n\r\n",
        w,
    )
    .await;
    assert_eq!(count_responses(&out), 2, "{out}");
    assert!(out.find("/any/1").unwrap() < out.find("/any/2").unwrap());
    g.gw.shutdown().await;
}

/// Heads refused on hyper's path (after the fast path handed the connection over, or with
/// the fast path off) get Kong's answer, as on the fast path, after the answers owed before
/// them; never hyper's bare 400 or 431.
#[tokio::test]
async fn heads_refused_on_hypers_path_get_kongs_answer() {
    let b = Backend::start().await;
    let w = Duration::from_millis(500);
    // (1001 header lines: one past nginx's `max_headers`)
    let many = {
        let mut h = b"GET /any HTTP/1.1\r\nHost: x\r\n".to_vec();
        for i in 0..1000 {
            h.extend_from_slice(format!("X-{i}: 1\r\n").as_bytes());
        }
        h.extend_from_slice(b"\r\n");
        h
    };
    let big = {
        let mut h = b"GET /any HTTP/1.1\r\nHost: x\r\n".to_vec();
        for i in 0..100 {
            h.extend_from_slice(format!("X-Big-{i}: {}\r\n", "a".repeat(500)).as_bytes());
        }
        h.extend_from_slice(b"\r\n");
        h
    };
    for fast_h1 in [true, false] {
        let mut s = silverback_proxy::Settings::loopback();
        s.fast_h1 = fast_h1;
        let g = Gw::start_with(s, Some(&basic(&b))).await;
        // a request with a body hands the connection to hyper; the refused heads after it
        // are answered once its own answer is out
        let body_first = b"POST /any HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nZ";
        for (bad, message) in [
            (&b"GET /any HTTP/1.1\r\nHost: x\r\nX-A: a\r\n  folded\r\n\r\n"[..], "Bad request"),
            (b"GET /any HTTP/1.1\r\nHost: x\r\nBad Name: 1\r\n\r\n", "Bad request"),
            (b"GET /any HTTP/1.1\r\nHost: x\r\nContent-Length: 1, 1\r\n\r\nZ", "Bad request"),
            (b"POST /any HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n", "Bad request"),
            (&many[..], "Request header or cookie too large"),
            (&big[..], "Request header or cookie too large"),
        ] {
            let what = format!("fast_h1 {fast_h1}: {}", String::from_utf8_lossy(&bad[..40]));
            let mut input = body_first.to_vec();
            input.extend_from_slice(bad);
            let out = raw(g.http, &input, w).await;
            assert!(out.starts_with("HTTP/1.1 200"), "{what}: {out}");
            // (the first answer whole: the echo of its body)
            assert!(out.contains("\"body\":\"Z\"}"), "{what}: {out}");
            assert_kong_400_after(&out, 1, message);
            // alone on a connection, too (refused before any answer is owed)
            if !fast_h1 {
                assert_kong_400(&raw(g.http, bad, w).await, message);
            }
        }
        // an answer still streaming when a refused head arrives behind its request is
        // finished whole (10 pieces of 1 KiB, 20 ms apart) before the refusal
        let out = raw(
            g.http,
            b"GET /any/slow/10 HTTP/1.1\r\nHost: x\r\n\r\nGET /any HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
            Duration::from_secs(2),
        )
        .await;
        assert!(out.starts_with("HTTP/1.1 200"), "fast_h1 {fast_h1}: {out}");
        let body_end = out.find("HTTP/1.1 400").unwrap_or(out.len());
        let body_start = out.find("\r\n\r\n").map_or(0, |i| i + 4);
        let xs = out[body_start..body_end]
            .bytes()
            .filter(|&b| b == b'x')
            .count();
        assert_eq!(xs, 10 * 1024, "fast_h1 {fast_h1}: {out}");
        assert!(
            out[..body_end].ends_with("0\r\n\r\n"),
            "fast_h1 {fast_h1}: cut short"
        );
        assert_kong_400_after(&out, 1, "Bad request");
        // a head that comes in pieces is refused as soon as it can no longer be accepted,
        // and the answer is Kong's (JSON when asked for)
        let mut c = tokio::net::TcpStream::connect(g.http).await.unwrap();
        c.write_all(body_first).await.unwrap();
        c.write_all(b"GET /any HTTP/1.1\r\nHost: x\r\nAccept: application/json\r\n")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        c.write_all(b"X-Ok: 1\r\nNo Colon Here\r\n").await.unwrap();
        let mut out = Vec::new();
        let _ = tokio::time::timeout(w, c.read_to_end(&mut out)).await;
        // (the client leaves: the gateway's lingering read ends)
        drop(c);
        let out = String::from_utf8_lossy(&out);
        assert_eq!(count_responses(&out), 2, "fast_h1 {fast_h1}: {out}");
        let last = &out[out.rfind("HTTP/1.1 ").unwrap()..];
        assert!(last.starts_with("HTTP/1.1 400"), "{out}");
        assert!(last.contains("application/json"), "{out}");
        assert!(last.contains("\"message\":\"Bad request\""), "{out}");
        g.gw.shutdown().await;
    }
}

/// What nginx refuses at the request line, or for the transfer coding, Kong refuses before
/// any phase runs: the method's characters, a target that is neither origin- nor
/// absolute-form (`*`, a `CONNECT`'s authority), a path nginx cannot normalize (a `..` above
/// the root, plain or encoded; a bad or NUL `%` escape), the methods nginx does not serve
/// (`CONNECT`, `TRACE`: 405) and `chunked` on HTTP/1.0 (400). Each gets Kong's answer and
/// the connection closes, whether the fast path or hyper's path reads it, and whether it
/// comes first or behind another request; the upstream never sees it. (A transfer coding
/// other than `chunked` gets nginx's own 501 page:
/// `unknown_transfer_codings_get_nginxs_own_501_page`.)
#[tokio::test]
async fn request_lines_and_codings_nginx_refuses_get_kongs_answer() {
    let b = Backend::start().await;
    let w = Duration::from_millis(500);
    let cases: &[(&[u8], u16, &str)] = &[
        (b"get /any HTTP/1.1\r\nHost: x\r\n\r\n", 400, "Bad request"),
        (b"G3T /any HTTP/1.1\r\nHost: x\r\n\r\n", 400, "Bad request"),
        (b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n", 400, "Bad request"),
        (b"GET any HTTP/1.1\r\nHost: x\r\n\r\n", 400, "Bad request"),
        (
            b"CONNECT x:443 HTTP/1.1\r\nHost: x:443\r\n\r\n",
            400,
            "Bad request",
        ),
        (
            b"GET /../any HTTP/1.1\r\nHost: x\r\n\r\n",
            400,
            "Bad request",
        ),
        (
            b"GET /any/../../x HTTP/1.1\r\nHost: x\r\n\r\n",
            400,
            "Bad request",
        ),
        (
            b"GET /%2e%2e/any HTTP/1.1\r\nHost: x\r\n\r\n",
            400,
            "Bad request",
        ),
        (
            b"GET /any%2F..%2F..%2Fx HTTP/1.1\r\nHost: x\r\n\r\n",
            400,
            "Bad request",
        ),
        (
            b"GET http://x/../any HTTP/1.1\r\nHost: x\r\n\r\n",
            400,
            "Bad request",
        ),
        (
            b"GET /any%00 HTTP/1.1\r\nHost: x\r\n\r\n",
            400,
            "Bad request",
        ),
        (
            b"GET /any%zz HTTP/1.1\r\nHost: x\r\n\r\n",
            400,
            "Bad request",
        ),
        (
            b"CONNECT /any HTTP/1.1\r\nHost: x\r\n\r\n",
            405,
            "Method not allowed",
        ),
        (
            b"TRACE /any HTTP/1.1\r\nHost: x\r\n\r\n",
            405,
            "Method not allowed",
        ),
        (
            b"POST /any HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            400,
            "Bad request",
        ),
    ];
    for fast_h1 in [true, false] {
        let mut s = silverback_proxy::Settings::loopback();
        s.fast_h1 = fast_h1;
        let g = Gw::start_with(s, Some(&basic(&b))).await;
        for &(bad, status, message) in cases {
            let what = format!("fast_h1 {fast_h1}: {}", String::from_utf8_lossy(bad));
            let out = raw(g.http, bad, w).await;
            assert!(
                out.starts_with(&format!("HTTP/1.1 {status}")),
                "{what}: {out}"
            );
            assert_kong_refusal(&out, 0, status, message);
            // behind a request that is answered first
            let mut input = b"GET /any HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
            input.extend_from_slice(bad);
            let out = raw(g.http, &input, w).await;
            assert!(out.starts_with("HTTP/1.1 200"), "{what}: {out}");
            assert_kong_refusal(&out, 1, status, message);
        }
        // what nginx accepts still passes: dot segments within the root, encoded
        // characters, an absolute-form target, methods of upper-case letters, `-` and `_`
        for ok in [
            &b"GET /any/x/../y HTTP/1.1\r\nHost: x\r\n\r\n"[..],
            b"GET /any/%41%2e%2E/z?../../.. HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET http://x/any HTTP/1.1\r\nHost: x\r\n\r\n",
            b"M-SEARCH_X /any HTTP/1.1\r\nHost: x\r\n\r\n",
        ] {
            let out = raw(g.http, ok, w).await;
            assert!(
                out.starts_with("HTTP/1.1 200"),
                "fast_h1 {fast_h1}: {}: {out}",
                String::from_utf8_lossy(ok)
            );
        }
        g.gw.shutdown().await;
    }
}

/// The last answer in `out` (behind `before` others) is the proxy listener's 501 page:
/// `text/html` whatever the request accepts, the page's length, the connection closed, and
/// the headers Kong's header filter adds when `headers` are on (`Server`, request id), none
/// when off.
fn assert_nginx_501(out: &str, before: usize, headers_on: bool) {
    NginxPage::proxy_501(headers_on).check(out, before);
}

/// A transfer coding other than `chunked` gets nginx's 501: Kong's template leaves 501 out
/// of its `error_page` lines, so nginx answers it with its built-in HTML page, not Kong's
/// error format, whatever `Accept` or `Content-Type` ask for, and closes the connection.
/// On the fast path and hyper's, alone or behind an answered request, with `headers` on and
/// off (off: no `Server` or request id); to a `HEAD`, the head alone. On the admin and
/// status listeners, nginx's page without Kong's headers, with their charset. The upstream
/// never sees it.
#[tokio::test]
async fn unknown_transfer_codings_get_nginxs_own_501_page() {
    let b = Backend::start().await;
    let w = Duration::from_millis(500);
    let codings = ["identity", "gzip, chunked", "chunked, gzip", "xchunked"];
    let asking = [
        "",
        "Accept: application/json\r\n",
        "Accept: text/plain\r\n",
        "Accept: text/html\r\n",
        "Content-Type: application/grpc\r\n",
        "Content-Type: application/xml\r\n",
    ];
    for (fast_h1, headers_on) in [(true, true), (false, true), (true, false), (false, false)] {
        let mut s = silverback_proxy::Settings::loopback();
        s.fast_h1 = fast_h1;
        if !headers_on {
            s.headers = silverback_proxy::Headers::parse("off").unwrap();
        }
        let g = Gw::start_with(s, Some(&basic(&b))).await;
        let served = b.served();
        for te in codings {
            for extra in asking {
                let what = format!("fast_h1 {fast_h1}, headers {headers_on}: {te}, {extra:?}");
                let bad = format!(
                    "POST /any HTTP/1.1\r\nHost: x\r\n{extra}Transfer-Encoding: {te}\r\n\r\n0\r\n\r\n"
                );
                let out = raw(g.http, bad.as_bytes(), w).await;
                assert!(out.starts_with("HTTP/1.1 501"), "{what}: {out}");
                assert_nginx_501(&out, 0, headers_on);
                // behind a request that is answered first
                let mut input = b"GET /any HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
                input.extend_from_slice(bad.as_bytes());
                let out = raw(g.http, &input, w).await;
                assert!(out.starts_with("HTTP/1.1 200"), "{what}: {out}");
                assert_nginx_501(&out, 1, headers_on);
            }
            // a HEAD: the head alone, with the page's length
            let bad = format!("HEAD /any HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: {te}\r\n\r\n");
            let head = NginxPage::proxy_501(headers_on).to_head();
            head.check(&raw(g.http, bad.as_bytes(), w).await, 0);
            let input = format!("GET /any HTTP/1.1\r\nHost: x\r\n\r\n{bad}");
            head.check(&raw(g.http, input.as_bytes(), w).await, 1);
        }
        // the admin and status listeners (Kong's servers there have no `error_page` and run
        // their header filter in `location /` only): nginx's page with their charset,
        // without Kong's headers, `headers` on or off
        for addr in [g.admin, g.status] {
            let page = NginxPage::admin("501", NGINX_501);
            let out = raw(
                addr,
                b"POST /config HTTP/1.1\r\nHost: x\r\nAccept: application/json\r\nTransfer-Encoding: gzip\r\n\r\n",
                w,
            )
            .await;
            page.check(&out, 0);
            let out = raw(
                addr,
                b"HEAD /status HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n",
                w,
            )
            .await;
            page.to_head().check(&out, 0);
        }
        // the refusals Kong's handler renders keep Kong's format
        let out = raw(
            g.http,
            b"POST /any HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            w,
        )
        .await;
        assert!(out.starts_with("HTTP/1.1 400"), "{out}");
        if headers_on {
            assert_kong_refusal(&out, 0, 400, "Bad request");
        }
        assert_eq!(
            b.served() - served,
            codings.len() * (asking.len() + 1),
            "only the GETs"
        );
        g.gw.shutdown().await;
    }
}

/// Kong's admin and status servers (`kong/templates/nginx_kong.lua`) have no `error_page`
/// lines and run their header filter inside `location /`: a head nginx refuses while it
/// reads it never gets there, so every refusal is nginx's own page for its code (400; 405
/// for `TRACE`; 414 for a request line past a large buffer; nginx's 494 page, sent as 400,
/// for a header line past one; 501), as `text/html; charset=UTF-8` (those servers set
/// `charset UTF-8`), without `Server` or `X-Kong-*` headers, whatever `Accept` says; to a
/// `HEAD`, the head alone. The proxy listener keeps Kong's answers.
#[tokio::test]
async fn heads_refused_on_admin_and_status_listeners_get_nginxs_pages() {
    let w = Duration::from_millis(500);
    let g = Gw::start(None).await;
    let long_uri = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "u".repeat(8200));
    let long_line = format!(
        "GET /status HTTP/1.1\r\nHost: x\r\nCookie: {}\r\n\r\n",
        "c".repeat(8200)
    );
    let cases: Vec<(String, NginxPage)> = vec![
        (
            "GET /status HTTP/1.1\r\nHost: x\r\nAccept: application/json\r\nBad Header\r\n\r\n"
                .into(),
            NginxPage::admin("400", NGINX_400),
        ),
        (
            "GET /%2e%2e/x HTTP/1.1\r\nHost: x\r\n\r\n".into(),
            NginxPage::admin("400", NGINX_400),
        ),
        (
            "TRACE /status HTTP/1.1\r\nHost: x\r\n\r\n".into(),
            NginxPage::admin("405", NGINX_405),
        ),
        (long_uri, NginxPage::admin("414", NGINX_414)),
        (long_line, NginxPage::admin("400", NGINX_494)),
        // one header line past nginx's `max_headers` (1000)
        (
            format!(
                "GET /status HTTP/1.1\r\nHost: x\r\n{}\r\n",
                (0..1000)
                    .map(|i| format!("X-H{i}: v\r\n"))
                    .collect::<String>()
            ),
            NginxPage::admin("400", NGINX_494),
        ),
        (
            "POST /config HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n".into(),
            NginxPage::admin("501", NGINX_501),
        ),
    ];
    for addr in [g.admin, g.status] {
        for (bad, page) in &cases {
            let what = &bad[..bad.len().min(40)];
            let out = raw(addr, bad.as_bytes(), w).await;
            assert!(
                out.starts_with(&format!("HTTP/1.1 {}", page.status)),
                "{what}: {out}"
            );
            page.check(&out, 0);
            // behind a request that is answered first
            let input = format!("GET /status HTTP/1.1\r\nHost: x\r\n\r\n{bad}");
            let out = raw(addr, input.as_bytes(), w).await;
            assert!(out.starts_with("HTTP/1.1 200"), "{what}: {out}");
            page.check(&out, 1);
            // a HEAD (but the TRACE): the head alone
            if let Some(rest) = bad.strip_prefix("GET ").or(bad.strip_prefix("POST ")) {
                let out = raw(addr, format!("HEAD {rest}").as_bytes(), w).await;
                page.to_head().check(&out, 0);
            }
        }
    }
    // the same heads on the proxy listener: Kong's answers, with Kong's headers
    let out = raw(g.http, cases[0].0.as_bytes(), w).await;
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
    assert!(
        out.contains("\r\n\r\n{\n  \"message\":\"Bad request\""),
        "{out}"
    );
    assert!(
        out.to_ascii_lowercase().contains("\r\nx-kong-request-id: "),
        "{out}"
    );
    g.gw.shutdown().await;
}

/// Every head the gateway refuses, asked with `HEAD`, gets the head of the answer alone, its
/// `Content-Length` that of the body left out, as nginx answers a `HEAD` (Kong's handler
/// included): on the fast path and hyper's, alone or behind an answered request.
#[tokio::test]
async fn refused_head_requests_get_the_head_alone() {
    let b = Backend::start().await;
    let w = Duration::from_millis(500);
    let long_uri = format!("HEAD /any/{} HTTP/1.1\r\nHost: x\r\n\r\n", "u".repeat(8200));
    let long_line = format!(
        "HEAD /any HTTP/1.1\r\nHost: x\r\nCookie: {}\r\n\r\n",
        "c".repeat(8200)
    );
    let cases: Vec<(String, u16, &str)> = vec![
        (
            "HEAD /any%zz HTTP/1.1\r\nHost: x\r\n\r\n".into(),
            400,
            "Bad request",
        ),
        (
            "HEAD /any HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n".into(),
            400,
            "Bad request",
        ),
        (
            "HEAD /any HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".into(),
            400,
            "Bad request",
        ),
        (long_uri, 414, "URI too long"),
        (long_line, 400, "Request header or cookie too large"),
    ];
    for fast_h1 in [true, false] {
        let mut s = silverback_proxy::Settings::loopback();
        s.fast_h1 = fast_h1;
        let g = Gw::start_with(s, Some(&basic(&b))).await;
        for (bad, status, message) in &cases {
            let what = format!("fast_h1 {fast_h1}: {}", &bad[..bad.len().min(40)]);
            for before in [0, 1] {
                let input = if before == 0 {
                    bad.clone()
                } else {
                    format!("GET /any HTTP/1.1\r\nHost: x\r\n\r\n{bad}")
                };
                let out = raw(g.http, input.as_bytes(), w).await;
                assert_eq!(count_responses(&out), before + 1, "{what}: {out}");
                let at = out.rfind("HTTP/1.1 ").unwrap();
                let (head, body) = out[at..].split_once("\r\n\r\n").expect("a whole head");
                assert!(
                    head.starts_with(&format!("HTTP/1.1 {status} ")),
                    "{what}: {out}"
                );
                assert_eq!(body, "", "{what}: the head alone");
                // the length of Kong's text body, which the GET gets
                let rid = head
                    .to_ascii_lowercase()
                    .split("\r\nx-kong-request-id: ")
                    .nth(1)
                    .and_then(|r| r.split("\r\n").next().map(str::to_string))
                    .unwrap_or_else(|| panic!("{what}: no request id: {out}"));
                let len = format!("{message}\nrequest_id: {rid}\n").len();
                assert!(
                    head.to_ascii_lowercase()
                        .contains(&format!("\r\ncontent-length: {len}")),
                    "{what}: {out}"
                );
                assert!(
                    head.to_ascii_lowercase().contains("\r\nconnection: close"),
                    "{what}: {out}"
                );
            }
        }
        g.gw.shutdown().await;
    }
}

/// nginx's head buffers (1k, then 4 large ones of 8k, Kong's defaults): a request line
/// longer than a large buffer gets Kong's 414, a header line longer than one (or a head
/// needing a fifth) Kong's 400 for nginx's 494, on either path, alone or behind a request;
/// many lines that fit the buffers pass.
#[tokio::test]
async fn heads_are_limited_as_nginx_buffers_limit_them() {
    let b = Backend::start().await;
    let w = Duration::from_millis(500);
    let long_uri = format!("GET /any/{} HTTP/1.1\r\nHost: x\r\n\r\n", "u".repeat(8200));
    let long_line = format!(
        "GET /any HTTP/1.1\r\nHost: x\r\nCookie: {}\r\n\r\n",
        "c".repeat(8200)
    );
    let five_buffers = format!(
        "GET /any HTTP/1.1\r\nHost: x\r\n{}\r\n",
        (0..5)
            .map(|i| format!("X-{i}: {}\r\n", "v".repeat(6000)))
            .collect::<String>()
    );
    let cases: [(&str, u16, &str); 3] = [
        (&long_uri, 414, "URI too long"),
        (&long_line, 400, "Request header or cookie too large"),
        (&five_buffers, 400, "Request header or cookie too large"),
    ];
    // 20 KB of 2 KB lines, and lines of just under 8 KiB in four buffers
    let fits = [
        format!(
            "GET /any HTTP/1.1\r\nHost: x\r\n{}\r\n",
            (0..10)
                .map(|i| format!("X-{i}: {}\r\n", "v".repeat(2000)))
                .collect::<String>()
        ),
        format!(
            "GET /any HTTP/1.1\r\nHost: x\r\n{}\r\n",
            (0..4)
                .map(|i| format!("X-{i}: {}\r\n", "v".repeat(8180)))
                .collect::<String>()
        ),
    ];
    for fast_h1 in [true, false] {
        let mut s = silverback_proxy::Settings::loopback();
        s.fast_h1 = fast_h1;
        let g = Gw::start_with(s, Some(&basic(&b))).await;
        for (bad, status, message) in cases {
            let what = format!("fast_h1 {fast_h1}: {}", &bad[..30]);
            let out = raw(g.http, bad.as_bytes(), w).await;
            assert!(
                out.starts_with(&format!("HTTP/1.1 {status}")),
                "{what}: {out}"
            );
            assert_kong_refusal(&out, 0, status, message);
            let input = format!("GET /any HTTP/1.1\r\nHost: x\r\n\r\n{bad}");
            let out = raw(g.http, input.as_bytes(), w).await;
            assert!(out.starts_with("HTTP/1.1 200"), "{what}: {out}");
            assert_kong_refusal(&out, 1, status, message);
        }
        for ok in &fits {
            let out = raw(g.http, ok.as_bytes(), w).await;
            assert!(out.starts_with("HTTP/1.1 200"), "fast_h1 {fast_h1}: {out}");
        }
        g.gw.shutdown().await;
    }
}

/// nginx counts a head's header lines (its `max_headers`, 1000 by default; Debian's nginx
/// 1.22 was seen refusing the 1001st): up to 1000 small lines are read and all passed on,
/// on either path and on the admin listener; one more is refused as a head too large
/// (Kong's 400 for nginx's 494), as is a head of few lines past nginx's buffers.
#[tokio::test]
async fn header_lines_are_counted_as_nginx_counts_them() {
    let b = Backend::start().await;
    let w = Duration::from_millis(500);
    // `Host` and `n` lines `X-H<i>: <v>`
    let head = |path: &str, n: usize, v: &str| {
        format!(
            "GET {path} HTTP/1.1\r\nHost: x\r\n{}\r\n",
            (0..n)
                .map(|i| format!("X-H{i}: {v}\r\n"))
                .collect::<String>()
        )
    };
    for fast_h1 in [true, false] {
        let mut s = silverback_proxy::Settings::loopback();
        s.fast_h1 = fast_h1;
        let g = Gw::start_with(s, Some(&basic(&b))).await;
        // 300 headers, every one reaching the backend
        let mut req = req("GET", "x", "/any");
        for i in 0..300 {
            req = req.header(format!("x-h{i}"), format!("v{i}"));
        }
        let r = H1::connect(g.http)
            .await
            .send(req.body(Full::new(Bytes::new())).unwrap())
            .await;
        assert_eq!(r.status, 200, "fast_h1 {fast_h1}: {}", r.text());
        let seen = r.json();
        for i in 0..300 {
            assert_eq!(
                seen["headers"][format!("x-h{i}")],
                format!("v{i}"),
                "fast_h1 {fast_h1}: x-h{i}"
            );
        }
        // 1000 lines pass, 1001 do not
        let out = raw(g.http, head("/any", 999, "v").as_bytes(), w).await;
        assert!(out.starts_with("HTTP/1.1 200"), "fast_h1 {fast_h1}: {out}");
        let out = raw(g.http, head("/any", 1000, "v").as_bytes(), w).await;
        assert_kong_400(&out, "Request header or cookie too large");
        // 300 lines past the buffers' 32 KiB
        let out = raw(g.http, head("/any", 300, &"v".repeat(110)).as_bytes(), w).await;
        assert_kong_400(&out, "Request header or cookie too large");
        if fast_h1 {
            let out = raw(g.admin, head("/status", 300, "v").as_bytes(), w).await;
            assert!(out.starts_with("HTTP/1.1 200"), "{out}");
            let out = raw(g.admin, head("/status", 999, "v").as_bytes(), w).await;
            assert!(out.starts_with("HTTP/1.1 200"), "{out}");
        }
        g.gw.shutdown().await;
    }
}

/// Answers of every framing written back to back to a client that reads slowly (a long one
/// cut over many writes; answers to `HEAD`, whose length is not a body's; `204`s without
/// one; all with large heads) are each counted, so a refused head pipelined behind them is
/// answered right after them, not at the header timeout. (Several answers in one write,
/// which hyper makes when a client's buffers stay full, are in the guard's unit tests:
/// loopback buffers are too large to make it happen here reliably.)
#[tokio::test]
async fn a_refused_head_behind_answers_of_every_framing_is_answered_after_them() {
    let b = Backend::start().await;
    for fast_h1 in [true, false] {
        let mut s = silverback_proxy::Settings::loopback();
        s.fast_h1 = fast_h1;
        // answer heads of 12k (`nginx_proxy_proxy_buffer_size 16k`)
        s.proxy_buffer_size = 16 << 10;
        let g = Gw::start_with(s, Some(&basic(&b))).await;
        let big = vec![b'Z'; 64 << 10];
        let mut input = format!(
            "POST /any HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
            big.len()
        )
        .into_bytes();
        input.extend_from_slice(&big);
        // answers without a body but with large heads (the backend sends back `Server` and
        // `Via` as asked)
        let large = "v".repeat(6000);
        for path in ["/any", "/any/status/204"].repeat(3) {
            let method = if path == "/any" { "HEAD" } else { "GET" };
            input.extend_from_slice(
                format!("{method} {path} HTTP/1.1\r\nHost: x\r\nX-Respond-Server: {large}\r\nX-Respond-Via: {large}\r\n\r\n").as_bytes(),
            );
        }
        input.extend_from_slice(b"GET /any HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n");
        // a client with a small receive buffer that reads late and slowly
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.set_recv_buffer_size(4096).unwrap();
        let (mut r, mut w) = sock.connect(g.http).await.unwrap().into_split();
        let writer = tokio::spawn(async move {
            w.write_all(&input).await.unwrap();
            w
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut out = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), async {
            let mut buf = [0u8; 4096];
            loop {
                match r.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => out.extend_from_slice(&buf[..n]),
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await;
        assert!(read.is_ok(), "fast_h1 {fast_h1}: no end within 10 s");
        drop(writer.await.unwrap());
        let out = String::from_utf8_lossy(&out);
        let heads: Vec<&str> = out
            .match_indices("HTTP/1.1 ")
            .map(|(i, _)| &out[i..i + 12])
            .collect();
        assert_eq!(
            heads,
            [
                "HTTP/1.1 200",
                "HTTP/1.1 200",
                "HTTP/1.1 204",
                "HTTP/1.1 200",
                "HTTP/1.1 204",
                "HTTP/1.1 200",
                "HTTP/1.1 204",
                "HTTP/1.1 400"
            ],
            "fast_h1 {fast_h1}"
        );
        assert_eq!(out.matches('Z').count(), big.len(), "fast_h1 {fast_h1}");
        assert_kong_400_after(&out, 7, "Bad request");
        g.gw.shutdown().await;
    }
}

/// The request's host (RFC 9112 §3.2): required in HTTP/1.1 and checked as nginx checks it,
/// taken from an absolute-form target before `Host`; transfer codings other than `chunked`
/// (501); a head over the limit whatever its reads.
#[tokio::test]
async fn error_default_type_sets_the_format_of_nginx_errors_only() {
    let b = Backend::start().await;
    let mut settings = silverback_proxy::Settings::loopback();
    settings.error_default_type = silverback_proxy::error::Format::Xml;
    let g = Gw::start_with(settings, Some(&basic(&b))).await;
    let mut c = H1::connect(g.http).await;
    // the gateway's own phases (kong.response.error): JSON without Accept, as before
    let r = c.get("x", "/nothing-here").await;
    assert_eq!(r.status, 404);
    assert_eq!(
        r.header("content-type"),
        Some("application/json; charset=utf-8")
    );
    // nginx-level errors: the configured type
    let r = c.get("x", "/dead").await;
    assert_eq!(r.status, 502);
    assert_eq!(
        r.header("content-type"),
        Some("application/xml; charset=utf-8")
    );
    assert!(
        r.text().contains(
            "<message>An invalid response was received from the upstream server</message>"
        ),
        "{}",
        r.text()
    );
    let out = raw(
        g.http,
        b"GET / HTTP/1.1\r\nHost: x/y\r\n\r\n",
        Duration::from_millis(500),
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
    assert!(out.contains("<message>Bad request</message>"), "{out}");
}

#[tokio::test]
async fn hosts_codings_and_split_heads() {
    let foo = Backend::builder().name("foo").run().await;
    let other = Backend::builder().name("other").run().await;
    let cfg = format!(
        r#"
_format_version: "3.0"
services:
- name: foo
  url: {foo}
  routes:
  - name: foo
    hosts: ["foo.example"]
  - name: wild
    hosts: ["*.wild"]
    paths: ["/"]
- name: other
  url: {other}
  routes:
  - name: other
    paths: ["/"]
"#,
        foo = foo.url(),
        other = other.url()
    );
    let g = Gw::start(Some(&cfg)).await;
    let w = Duration::from_millis(500);
    for bad in [
        &b"GET /nohost HTTP/1.1\r\n\r\n"[..],
        b"POST /nohost HTTP/1.1\r\nContent-Length: 1\r\n\r\nZ",
        b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x/y\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost:\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a..b\r\n\r\n",
    ] {
        let out = raw(g.http, bad, w).await;
        assert!(
            out.starts_with("HTTP/1.1 400"),
            "{}: {out}",
            String::from_utf8_lossy(bad)
        );
        assert!(
            out.to_ascii_lowercase().contains("x-kong-request-id"),
            "{out}"
        );
    }
    // a host with bytes from 0x80 up is valid (as in nginx): it matches no route of other
    // hosts, and routes without hosts still serve it
    let out = raw(
        g.http,
        b"GET /x HTTP/1.1\r\nHost: caf\xc3\xa9.example\r\n\r\n",
        w,
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.contains("\"backend\":\"other\""), "{out}");
    // ...and, being UTF-8, it matches host routes as any name (atc-router takes it)
    let out = raw(
        g.http,
        b"GET /x HTTP/1.1\r\nHost: caf\xc3\xa9.wild\r\n\r\n",
        w,
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.contains("\"backend\":\"foo\""), "{out}");
    // one that is not UTF-8 matches nothing, not even the route without hosts: atc-router
    // refuses the value when some route reads hosts, and Kong's router then matches nothing
    let out = raw(
        g.http,
        b"GET /x HTTP/1.1\r\nHost: caf\xe9.example\r\n\r\n",
        w,
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 404"), "{out}");
    // HTTP/1.0 needs no Host; its upstream `Via` carries the version as Kong writes it (a
    // Lua number: "1")
    let out = raw(g.http, b"GET /old HTTP/1.0\r\n\r\n", w).await;
    assert!(
        out.starts_with("HTTP/1.0 200") || out.starts_with("HTTP/1.1 200"),
        "{out}"
    );
    assert!(out.contains("\"via\":\"1 kong/3.10.0\""), "{out}");
    // ...and no host: `X-Forwarded-Host` is nginx's server name, Kong's `kong` (`$host`)
    assert!(out.contains("\"x-forwarded-host\":\"kong\""), "{out}");
    // an HTTP/1.0 keep-alive client and an answer of unknown length (streamed by the
    // upstream): it ends with the connection, and the answer says so
    let out = raw(
        g.http,
        b"GET /grpc/x HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n\r\nGET /after HTTP/1.0\r\nHost: x\r\n\r\n",
        w,
    )
    .await;
    assert!(out.starts_with("HTTP/1.0 200"), "{out}");
    let lower = out.to_ascii_lowercase();
    assert!(lower.contains("connection: close\r\n"), "{out}");
    assert!(!lower.contains("keep-alive"), "{out}");
    // the Host header routes (Kong routes on `$http_host`), not an absolute-form target's
    // host, which is nginx's `$host` and so `X-Forwarded-Host` (both request paths)
    for (req, backend, fwd) in [
        (
            &b"GET http://foo.example/abs HTTP/1.1\r\nHost: bar\r\n\r\n"[..],
            "other",
            "foo.example",
        ),
        (
            b"POST http://foo.example/abs HTTP/1.1\r\nHost: bar\r\nContent-Length: 2\r\n\r\nhi",
            "other",
            "foo.example",
        ),
        (
            b"GET http://bar/abs HTTP/1.1\r\nHost: foo.example\r\n\r\n",
            "foo",
            "bar",
        ),
    ] {
        let out = raw(g.http, req, w).await;
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
        let lower = out.to_ascii_lowercase();
        assert!(lower.contains(&format!("x-backend: {backend}")), "{out}");
        assert!(
            out.contains(&format!("\"x-forwarded-host\":\"{fwd}\"")),
            "{out}"
        );
    }
    // an absolute-form target does not stand for the Host header HTTP/1.1 requires
    let out = raw(g.http, b"GET http://foo.example/abs HTTP/1.1\r\n\r\n", w).await;
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
    // transfer codings nginx does not know: 501, nothing sent upstream
    let served = other.served();
    for te in ["gzip, chunked", "identity, chunked", "foo"] {
        let req = format!(
            "POST /te HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: {te}\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
        );
        let out = raw(g.http, req.as_bytes(), w).await;
        assert!(
            out.starts_with("HTTP/1.1 501") || out.starts_with("HTTP/1.1 400"),
            "{te}: {out}"
        );
    }
    let out = raw(
        g.http,
        b"POST /te HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        w,
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 501"), "{out}");
    assert_eq!(other.served(), served);
    // a head past nginx's buffers (1k + 4 x 8k), in two writes that each stay under it:
    // refused
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut head = b"GET /big HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec();
        head.extend(std::iter::repeat_n(b'a', 40_000));
        head.extend_from_slice(b"\r\n\r\n");
        let mut s = tokio::net::TcpStream::connect(g.http).await.unwrap();
        s.write_all(&head[..31_000]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        s.write_all(&head[31_000..]).await.unwrap();
        // (the whole answer: the connection closes after it)
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out))
            .await
            .unwrap()
            .unwrap();
        assert_kong_400(
            &String::from_utf8_lossy(&out),
            "Request header or cookie too large",
        );
    }
    g.gw.shutdown().await;
}

/// `out` is one answer of Kong's to a refused request head: 400, a request id, the message
/// in the default (text) format, and the connection closed.
fn assert_kong_400(out: &str, message: &str) {
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
    assert_kong_400_after(out, 0, message);
}

/// `out` is `before` answers then Kong's 400 with `message`, in text, closing the connection.
fn assert_kong_400_after(out: &str, before: usize, message: &str) {
    assert_kong_refusal(out, before, 400, message);
}

/// `out` is `before` answers then Kong's `status` with `message`, in text, closing the
/// connection.
fn assert_kong_refusal(out: &str, before: usize, status: u16, message: &str) {
    assert_eq!(count_responses(out), before + 1, "{out}");
    let at = out
        .rfind(&format!("HTTP/1.1 {status}"))
        .unwrap_or_else(|| panic!("no {status}: {out}"));
    assert_eq!(count_responses(&out[..at]), before, "{out}");
    let out = &out[at..];
    let lower = out.to_ascii_lowercase();
    assert!(lower.contains("\r\nconnection: close\r\n"), "{out}");
    let rid = lower
        .split("\r\nx-kong-request-id: ")
        .nth(1)
        .and_then(|r| r.split("\r\n").next())
        .unwrap_or_else(|| panic!("no request id: {out}"));
    assert!(
        out.ends_with(&format!("\r\n\r\n{message}\nrequest_id: {rid}\n")),
        "{out}"
    );
}

/// A gateway serving [`basic`] with a client header timeout of `ms`.
async fn with_header_timeout(b: &Backend, ms: u64) -> Gw {
    let mut s = silverback_proxy::Settings::loopback();
    s.client_header_timeout = Duration::from_millis(ms);
    Gw::start_with(s, Some(&basic(b))).await
}

/// The read timeout and the client header timeout are kept per connection and moved on by
/// each request (`deadline.rs`): after many quick requests on the same client and upstream
/// connections, a slow answer still times out at its own deadline, and an idle client is
/// closed at its own.
#[tokio::test]
async fn timeouts_hold_after_many_requests_on_one_connection() {
    let b = Backend::start().await;
    let g = with_header_timeout(&b, 600).await;
    let mut c = H1::connect(g.http).await;
    // 200 ms of quick requests: each moves both deadlines on (the upstream connection is
    // reused from the pool)
    let t = std::time::Instant::now();
    while t.elapsed() < Duration::from_millis(200) {
        assert_eq!(c.get("x", "/delay/1").await.status, 200);
    }
    let t = std::time::Instant::now();
    let r = c.get("x", "/delay/2000").await;
    assert_eq!(r.status, 504);
    let took = t.elapsed();
    // the service's read timeout is 300 ms, and a timeout is retried (5 retries by default):
    // six tries of 300 ms
    assert!(
        took >= Duration::from_millis(6 * 290),
        "timed out early: {took:?}"
    );
    assert!(
        took < Duration::from_millis(3500),
        "timed out late: {took:?}"
    );
    // the client's connection is still served, then closed once idle for 600 ms
    assert_eq!(c.get("x", "/delay/1").await.status, 200);
    let mut sock = tokio::net::TcpStream::connect(g.http).await.unwrap();
    for _ in 0..20 {
        sock.write_all(b"GET /any HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = vec![0u8; 4096];
        let n = sock.read(&mut buf).await.unwrap();
        assert!(n > 0);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let t = std::time::Instant::now();
    let mut buf = vec![0u8; 4096];
    let r = tokio::time::timeout(Duration::from_secs(5), sock.read(&mut buf)).await;
    assert!(matches!(r, Ok(Ok(0)) | Ok(Err(_))), "not closed: {r:?}");
    let idle = t.elapsed();
    assert!(idle >= Duration::from_millis(550), "closed early: {idle:?}");
    assert!(idle < Duration::from_millis(4000), "closed late: {idle:?}");
    g.gw.shutdown().await;
}

#[tokio::test]
async fn slow_clients_are_cut_off() {
    let b = Backend::start().await;
    let g = with_header_timeout(&b, 300).await;
    // A client that never finishes its head.
    let mut sock = tokio::net::TcpStream::connect(g.http).await.unwrap();
    sock.write_all(b"GET /any HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 1024];
    let t = std::time::Instant::now();
    let r = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match sock.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(r.is_ok(), "connection not closed");
    assert!(t.elapsed() < Duration::from_secs(3));
    // An idle keep-alive connection is closed too.
    let mut sock = tokio::net::TcpStream::connect(g.http).await.unwrap();
    sock.write_all(b"GET /any HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let r = tokio::time::timeout(Duration::from_secs(5), async {
        let mut n = 0;
        loop {
            match sock.read(&mut buf).await {
                Ok(0) | Err(_) => return n,
                Ok(k) => n += k,
            }
        }
    })
    .await;
    assert!(r.expect("idle connection closed") > 0);
    g.gw.shutdown().await;
}

/// On hyper's path too (after a request with a body hands the connection over, and with the
/// fast path off), where the framing guard holds a head back until it is complete: a client
/// that trickles a head that never ends is cut off by the header timeout.
#[tokio::test]
async fn slow_heads_are_cut_off_on_hypers_path() {
    let b = Backend::start().await;
    for fast_h1 in [true, false] {
        let mut s = silverback_proxy::Settings::loopback();
        s.client_header_timeout = Duration::from_millis(300);
        s.fast_h1 = fast_h1;
        let g = Gw::start_with(s, Some(&basic(&b))).await;
        let mut sock = tokio::net::TcpStream::connect(g.http).await.unwrap();
        sock.write_all(b"POST /any HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nZ")
            .await
            .unwrap();
        let mut buf = vec![0u8; 4096];
        let n = sock.read(&mut buf).await.unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "fast_h1 {fast_h1}");
        let t = std::time::Instant::now();
        let closed = tokio::time::timeout(Duration::from_secs(5), async {
            let head = b"GET /any HTTP/1.1\r\nHost: x\r\nX-Slow: ";
            for byte in head.iter().chain(std::iter::repeat(&b'a')) {
                if sock.write_all(&[*byte]).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                match tokio::time::timeout(Duration::from_millis(1), sock.read(&mut buf)).await {
                    Ok(Ok(0)) | Ok(Err(_)) => return,
                    _ => {}
                }
            }
        })
        .await;
        assert!(
            closed.is_ok(),
            "fast_h1 {fast_h1}: a trickled head is still read"
        );
        assert!(t.elapsed() < Duration::from_secs(3), "fast_h1 {fast_h1}");
        g.gw.shutdown().await;
    }
}

fn tls_config(b: &Backend) -> String {
    let (c1, k1) = cert(&["exact.test"]);
    let (c2, k2) = cert(&["*.wild.test"]);
    format!(
        r#"
_format_version: "3.0"
certificates:
- cert: {c1:?}
  key: {k1:?}
  snis: [{{name: exact.test}}]
- cert: {c2:?}
  key: {k2:?}
  snis: [{{name: "*.wild.test"}}]
services:
- name: echo
  url: {url}
  routes:
  - name: all
    paths: ["/"]
    strip_path: false
  - name: sni-only
    snis: ["exact.test"]
    paths: ["/sni"]
    strip_path: false
    protocols: ["https"]
"#,
        url = b.url()
    )
}

#[tokio::test]
async fn tls_certificates_by_sni_and_h2_by_alpn() {
    let b = Backend::start().await;
    let g = Gw::start(Some(&tls_config(&b))).await;
    let (_, names, _) = tls_connect(g.https, "exact.test", &[b"http/1.1"]).await;
    assert_eq!(names, vec!["DNSName(exact.test)"]);
    let (_, names, _) = tls_connect(g.https, "a.wild.test", &[b"http/1.1"]).await;
    assert_eq!(names, vec!["DNSName(*.wild.test)"]);
    let (_, names, _) = tls_connect(g.https, "other.test", &[b"http/1.1"]).await;
    assert_eq!(names, vec!["DNSName(localhost)"], "default certificate");
    // h2 over TLS by ALPN, with SNI routing.
    let (tls, _, alpn) = tls_connect(g.https, "exact.test", &[b"h2", b"http/1.1"]).await;
    assert_eq!(alpn.as_deref(), Some(&b"h2"[..]));
    let mut c = H2::over(tls).await;
    let r = c.get("https://exact.test/sni/x").await;
    assert_eq!(r.status, 200);
    let e = r.json();
    assert_eq!(e["uri"], "/sni/x");
    assert_eq!(e["headers"]["x-forwarded-proto"], "https");
    assert_eq!(e["headers"]["via"], "2 kong/3.10.0");
    assert_eq!(e["version"], "HTTP/1.1");
    // The SNI route does not match another name.
    let (tls, _, _) = tls_connect(g.https, "a.wild.test", &[b"h2"]).await;
    let mut c = H2::over(tls).await;
    let r = c.get("https://a.wild.test/sni/x").await;
    assert_eq!(
        r.json()["uri"],
        "/sni/x",
        "falls back to the catch-all route"
    );
    assert!(r.json()["headers"].get("x-forwarded-prefix").is_none());
    g.gw.shutdown().await;
}

/// Kong's catch-all SNI `*` (Kong PR #5404): a client whose name matches no other SNI gets
/// its certificate, before the default ones; a client sending no name gets the default.
#[tokio::test]
async fn the_catch_all_sni_serves_unmatched_names() {
    let b = Backend::start().await;
    let (c1, k1) = cert(&["exact.test"]);
    let (c2, k2) = cert(&["catch-all.test"]);
    let doc = format!(
        r#"
_format_version: "3.0"
certificates:
- cert: {c1:?}
  key: {k1:?}
  snis: [{{name: exact.test}}]
- cert: {c2:?}
  key: {k2:?}
  snis: [{{name: "*"}}]
services:
- name: echo
  url: {url}
  routes:
  - name: all
    paths: ["/"]
"#,
        url = b.url()
    );
    let g = Gw::start(Some(&doc)).await;
    let (_, names, _) = tls_connect(g.https, "exact.test", &[b"http/1.1"]).await;
    assert_eq!(names, vec!["DNSName(exact.test)"]);
    for other in ["other.test", "example.com", "a.b.c.test", "localhost"] {
        let (_, names, _) = tls_connect(g.https, other, &[b"http/1.1"]).await;
        assert_eq!(names, vec!["DNSName(catch-all.test)"], "{other}");
    }
    // no server name (an IP address is not sent as one): the default certificate
    let (tls, _, _) = tls_connect(g.https, "127.0.0.1", &[b"http/1.1"]).await;
    assert_eq!(
        key_of(&leaf(&tls)).2,
        KONG_DEFAULT_SUBJECT,
        "default certificate"
    );
    g.gw.shutdown().await;
}

/// TLS sessions resume through the listener's two server configurations (each handshake
/// reads the ClientHello first, then goes on with the configuration of the version it
/// offers; both share the session store): a rustls client that keeps its sessions resumes
/// on its next connection, with a TLS 1.3 ticket or a TLS 1.2 session, for a configured SNI
/// and for the default certificates, on the proxy and admin listeners, and the resumed
/// connection serves requests.
#[tokio::test]
async fn tls_sessions_resume() {
    let b = Backend::start().await;
    let g = Gw::start_with(tls_everywhere(), Some(&tls_config(&b))).await;
    let admin = g.admin_tls();
    // (`ids`: TLS 1.2 resumed by session id, the client taking no tickets: the server's
    // session cache)
    for (what, (tls12_only, ids), addr, sni, path) in [
        (
            "TLS 1.3, SNI",
            (false, false),
            g.https,
            "exact.test",
            "/sni/x",
        ),
        (
            "TLS 1.2, SNI",
            (true, false),
            g.https,
            "exact.test",
            "/sni/x",
        ),
        (
            "TLS 1.2 by id, SNI",
            (true, true),
            g.https,
            "exact.test",
            "/sni/x",
        ),
        (
            "TLS 1.3, default",
            (false, false),
            g.https,
            "other.test",
            "/x",
        ),
        (
            "TLS 1.2, default",
            (true, false),
            g.https,
            "other.test",
            "/x",
        ),
        (
            "TLS 1.2 by id, default",
            (true, true),
            g.https,
            "other.test",
            "/x",
        ),
        (
            "TLS 1.3, admin",
            (false, false),
            admin,
            "localhost",
            "/status",
        ),
        (
            "TLS 1.2, admin",
            (true, false),
            admin,
            "localhost",
            "/status",
        ),
        (
            "TLS 1.2 by id, admin",
            (true, true),
            admin,
            "localhost",
            "/status",
        ),
    ] {
        let config = if ids {
            session_id_client()
        } else {
            resuming_client(tls12_only)
        };
        let mut kinds = vec![];
        for _ in 0..2 {
            let name = rustls::pki_types::ServerName::try_from(sni.to_string()).unwrap();
            let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            let mut tls = tokio_rustls::TlsConnector::from(config.clone())
                .connect(name, tcp)
                .await
                .unwrap_or_else(|e| panic!("{what}: handshake: {e}"));
            let (_, conn) = tls.get_ref();
            let version = conn.protocol_version();
            let want = if tls12_only {
                rustls::ProtocolVersion::TLSv1_2
            } else {
                rustls::ProtocolVersion::TLSv1_3
            };
            assert_eq!(version, Some(want), "{what}");
            kinds.push(conn.handshake_kind());
            // a request answered (reading it takes in the TLS 1.3 tickets sent after the
            // handshake)
            let req = format!("GET {path} HTTP/1.1\r\nHost: {sni}\r\nConnection: close\r\n\r\n");
            tls.write_all(req.as_bytes()).await.unwrap();
            let (out, closed) = read_to_close(&mut tls, Duration::from_secs(5)).await;
            let out = String::from_utf8_lossy(&out);
            assert!(closed, "{what}: {out}");
            assert!(out.starts_with("HTTP/1.1 200"), "{what}: {out}");
        }
        assert_eq!(
            kinds,
            [
                Some(rustls::HandshakeKind::Full),
                Some(rustls::HandshakeKind::Resumed)
            ],
            "{what}"
        );
    }
    g.gw.shutdown().await;
}

/// Sessions are kept as nginx keeps them in Kong's one proxy `server` block (its shared
/// session cache and ticket keys): a session made on one `ssl` proxy listener resumes on
/// another, and after a configuration swap; admin listeners keep their own.
#[tokio::test]
async fn tls_sessions_resume_across_listeners_and_swaps() {
    let b = Backend::start().await;
    let settings = silverback_proxy::Settings {
        proxy_listen: silverback_proxy::Listen::parse_list(
            "127.0.0.1:0, 127.0.0.1:0 ssl, 127.0.0.1:0 ssl http2",
        )
        .unwrap(),
        ..tls_everywhere()
    };
    let doc = tls_config(&b);
    let g = Gw::start_with(settings, Some(&doc)).await;
    let proxies: Vec<_> =
        g.gw.local_addrs()
            .into_iter()
            .filter(|l| l.kind == silverback_proxy::ListenerKind::Proxy && l.listen.ssl)
            .map(|l| l.addr)
            .collect();
    assert_eq!(proxies.len(), 2);
    let admin = g.admin_tls();
    // (the last: TLS 1.2 by session id alone, the client taking no tickets)
    for (tls12_only, ids) in [(false, false), (true, false), (true, true)] {
        let config = if ids {
            session_id_client()
        } else {
            resuming_client(tls12_only)
        };
        let kind = |addr| {
            let config = config.clone();
            async move {
                let name = rustls::pki_types::ServerName::try_from("exact.test").unwrap();
                let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
                let mut tls = tokio_rustls::TlsConnector::from(config)
                    .connect(name, tcp)
                    .await
                    .unwrap();
                // a request answered, which takes in the TLS 1.3 tickets sent after the
                // handshake
                let req = "GET /x HTTP/1.1\r\nHost: exact.test\r\nConnection: close\r\n\r\n";
                tls.write_all(req.as_bytes()).await.unwrap();
                let (out, _) = read_to_close(&mut tls, Duration::from_secs(5)).await;
                assert!(out.starts_with(b"HTTP/1.1 "));
                tls.get_ref().1.handshake_kind()
            }
        };
        use rustls::HandshakeKind::{Full, Resumed};
        let what = match (tls12_only, ids) {
            (_, true) => "TLS 1.2 by session id",
            (true, false) => "TLS 1.2",
            (false, _) => "TLS 1.3",
        };
        assert_eq!(kind(proxies[0]).await, Some(Full), "{what}");
        assert_eq!(
            kind(proxies[1]).await,
            Some(Resumed),
            "{what}: another listener"
        );
        g.gw.apply(load(&doc), doc_hash(&doc)).unwrap();
        assert_eq!(
            kind(proxies[0]).await,
            Some(Resumed),
            "{what}: after a swap"
        );
        // the admin listener's sessions are its own (a request to it is answered too)
        assert_eq!(kind(admin).await, Some(Full), "{what}: admin");
    }
    g.gw.shutdown().await;
}

#[tokio::test]
async fn certificates_follow_configuration_swaps() {
    let b = Backend::start().await;
    let g = Gw::start(Some(&basic(&b))).await;
    let (_, names, _) = tls_connect(g.https, "exact.test", &[b"http/1.1"]).await;
    assert_eq!(names, vec!["DNSName(localhost)"]);
    let doc = tls_config(&b);
    g.gw.apply(load(&doc), doc_hash(&doc)).unwrap();
    let (_, names, _) = tls_connect(g.https, "exact.test", &[b"http/1.1"]).await;
    assert_eq!(names, vec!["DNSName(exact.test)"]);
    g.gw.shutdown().await;
}

/// HTTP/2 per listener kind, as Kong's template enables it per `server` block (`http2 on;`
/// when any listener of the block has `http2`, nginx 1.25.1 and later): h2 by ALPN on every
/// `ssl` listener of the kind and h2c (prior knowledge) on every plain one; with no `http2`
/// flag on the kind, neither, and the preface is an HTTP/1 request line that does not parse
/// (nginx answers 400, with Kong's page on a proxy listener and nginx's on the others).
#[tokio::test]
async fn http2_is_enabled_per_listener_kind() {
    let b = Backend::start().await;
    let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";
    let ssl_proxies = |g: &Gw| -> Vec<std::net::SocketAddr> {
        g.gw.local_addrs()
            .into_iter()
            .filter(|l| l.kind == silverback_proxy::ListenerKind::Proxy && l.listen.ssl)
            .map(|l| l.addr)
            .collect()
    };
    for fast_h1 in [true, false] {
        // one `ssl` proxy listener with `http2`, one without: h2 on both, h2c on the plain one
        let settings = silverback_proxy::Settings {
            proxy_listen: silverback_proxy::Listen::parse_list(
                "127.0.0.1:0, 127.0.0.1:0 ssl, 127.0.0.1:0 ssl http2",
            )
            .unwrap(),
            admin_listen: silverback_proxy::Listen::parse_list(
                "127.0.0.1:0, 127.0.0.1:0 ssl http2",
            )
            .unwrap(),
            fast_h1,
            ..tls_everywhere()
        };
        let g = Gw::start_with(settings, Some(&basic(&b))).await;
        let ssl = ssl_proxies(&g);
        assert_eq!(ssl.len(), 2);
        for addr in ssl.into_iter().chain([g.admin_tls()]) {
            let (_, _, alpn) = tls_connect(addr, "localhost", &[b"h2", b"http/1.1"]).await;
            assert_eq!(
                alpn.as_deref(),
                Some(&b"h2"[..]),
                "{addr} (fast path: {fast_h1})"
            );
        }
        for addr in [g.http, g.admin] {
            let r = H2::h2c(addr).await.get("http://h2c.test/status").await;
            assert_ne!(r.status, 400, "{addr} (fast path: {fast_h1})");
        }
        // the status kind has no `http2`: no h2 there
        let status_tls =
            g.gw.addr(silverback_proxy::ListenerKind::Status, true)
                .unwrap();
        let (_, _, alpn) = tls_connect(status_tls, "localhost", &[b"h2", b"http/1.1"]).await;
        assert_eq!(alpn.as_deref(), Some(&b"http/1.1"[..]));
        let out = raw(g.status, preface, Duration::from_secs(2)).await;
        assert!(out.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{out}");
        assert!(
            out.contains("<center><h1>400 Bad Request</h1></center>"),
            "{out}"
        );
        g.gw.shutdown().await;

        // no `http2` anywhere on the proxy kind: no h2 by ALPN, and the preface on a plain
        // listener (or over TLS) is a request line that does not parse
        let settings = silverback_proxy::Settings {
            proxy_listen: silverback_proxy::Listen::parse_list("127.0.0.1:0, 127.0.0.1:0 ssl")
                .unwrap(),
            fast_h1,
            ..silverback_proxy::Settings::loopback()
        };
        let g = Gw::start_with(settings, Some(&basic(&b))).await;
        let (mut tls, _, alpn) = tls_connect(g.https, "localhost", &[b"h2", b"http/1.1"]).await;
        assert_eq!(
            alpn.as_deref(),
            Some(&b"http/1.1"[..]),
            "fast path: {fast_h1}"
        );
        let out = raw(g.http, preface, Duration::from_secs(2)).await;
        assert!(
            out.starts_with("HTTP/1.1 400 Bad Request\r\n"),
            "fast path: {fast_h1}: {out}"
        );
        assert!(out.contains("Bad request"), "fast path: {fast_h1}: {out}");
        // in pieces too
        let mut c = tokio::net::TcpStream::connect(g.http).await.unwrap();
        for piece in preface.chunks(5) {
            c.write_all(piece).await.unwrap();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let (out, _) = read_to_close(&mut c, Duration::from_secs(2)).await;
        let out = String::from_utf8_lossy(&out);
        assert!(
            out.starts_with("HTTP/1.1 400 Bad Request\r\n"),
            "fast path: {fast_h1}: {out}"
        );
        tls.write_all(preface).await.unwrap();
        let (out, _) = read_to_close(&mut tls, Duration::from_secs(2)).await;
        let out = String::from_utf8_lossy(&out);
        assert!(
            out.starts_with("HTTP/1.1 400 Bad Request\r\n"),
            "TLS, fast path: {fast_h1}: {out}"
        );
        // plain HTTP/1.1 is unchanged
        let r = get(g.http, "x", "/status").await;
        assert_ne!(r.status, 400);
        g.gw.shutdown().await;
    }
}

/// On a listener kind with `http2`, nginx takes the HTTP/2 preface only as the connection's
/// very first bytes (`ngx_http_wait_request_handler` compares its first read with it): after
/// an HTTP/1 request, or after empty lines, `PRI * HTTP/2.0` is a request line that does not
/// parse, refused with Kong's 400, on the fast path and behind the framing guard alike.
#[tokio::test]
async fn the_h2_preface_is_one_only_at_the_connections_start() {
    let b = Backend::start().await;
    let w = Duration::from_secs(2);
    let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";
    for fast_h1 in [true, false] {
        let settings = silverback_proxy::Settings {
            fast_h1,
            ..silverback_proxy::Settings::loopback()
        };
        let g = Gw::start_with(settings, Some(&basic(&b))).await;
        let what = |w: &str| format!("{w} (fast path: {fast_h1})");
        // (h2c is taken at the start)
        let r = H2::h2c(g.http).await.get("http://h2c.test/any").await;
        assert_eq!(r.status, 200, "{}", what("h2c"));
        // after a request served (on the fast path, when on), and after one handed to hyper
        // (a body: behind the framing guard whatever the fast path)
        for first in [
            &b"GET /any HTTP/1.1\r\nHost: x\r\n\r\n"[..],
            b"POST /any HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi",
        ] {
            let mut input = first.to_vec();
            input.extend_from_slice(preface);
            let out = raw(g.http, &input, w).await;
            let what = what(&String::from_utf8_lossy(first));
            assert!(out.starts_with("HTTP/1.1 200"), "{what}: {out}");
            assert_kong_400_after(&out, 1, "Bad request");
            assert!(!out.contains('\0'), "{what}: {out:?}");
            // the preface arriving after the answer, in pieces
            let mut c = tokio::net::TcpStream::connect(g.http).await.unwrap();
            c.write_all(first).await.unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
            for piece in preface.chunks(5) {
                c.write_all(piece).await.unwrap();
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let (out, _) = read_to_close(&mut c, w).await;
            let out = String::from_utf8_lossy(&out);
            assert!(out.starts_with("HTTP/1.1 200"), "{what}, in pieces: {out}");
            assert_kong_400_after(&out, 1, "Bad request");
        }
        // after empty lines: an HTTP/1 head (nginx compares the raw bytes with the preface)
        for lead in [&b"\r\n"[..], b"\n", b"\r\n\r\n"] {
            let mut input = lead.to_vec();
            input.extend_from_slice(preface);
            let out = raw(g.http, &input, w).await;
            assert_kong_400(&out, "Bad request");
            // in pieces
            let mut c = tokio::net::TcpStream::connect(g.http).await.unwrap();
            c.write_all(lead).await.unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
            for piece in preface.chunks(5) {
                c.write_all(piece).await.unwrap();
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let (out, _) = read_to_close(&mut c, w).await;
            let out = String::from_utf8_lossy(&out);
            assert_kong_400(&out, "Bad request");
        }
        // at the start, all 24 bytes decide: `PRI * HTTP/2.0` and an empty line followed by
        // something else is that HTTP/1 head, in one read or with a pause after the empty line
        let not_preface = b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n";
        let out = raw(g.http, not_preface, w).await;
        assert_kong_400(&out, "Bad request");
        for split in [18, 20] {
            let mut c = tokio::net::TcpStream::connect(g.http).await.unwrap();
            c.write_all(&not_preface[..split]).await.unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
            c.write_all(&not_preface[split..]).await.unwrap();
            let (out, _) = read_to_close(&mut c, w).await;
            let out = String::from_utf8_lossy(&out);
            assert_kong_400(&out, "Bad request");
        }
        // (and the preface with the same pause is HTTP/2)
        let mut c = tokio::net::TcpStream::connect(g.http).await.unwrap();
        c.write_all(&preface[..18]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        c.write_all(&preface[18..]).await.unwrap();
        let (out, _) = read_to_close(&mut c, Duration::from_millis(300)).await;
        assert!(
            out.len() >= 9 && out[3] == 4,
            "{}: {out:?}",
            what("a SETTINGS frame")
        );
        drop(c);
        g.gw.shutdown().await;
    }
}

/// Plain HTTP sent to a TLS listener is answered as nginx answers it (its 497): 400 with
/// nginx's page "The plain HTTP request was sent to HTTPS port" (Kong's `error_page` lines
/// leave it to nginx) and Kong's headers, the connection closed; TLS still works there.
#[tokio::test]
async fn plain_http_on_a_tls_listener_gets_nginxs_page() {
    let b = Backend::start().await;
    let g = Gw::start(Some(&basic(&b))).await;
    let out = raw(
        g.https,
        b"GET /any HTTP/1.1\r\nHost: x\r\nAccept: application/json\r\n\r\n",
        Duration::from_secs(2),
    )
    .await;
    NginxPage {
        status: "400",
        page: NGINX_497,
        content_type: "text/html",
        headers: PageHeaders::Proxy,
        head_only: false,
    }
    .check(&out, 0);
    // TLS on the same listener is served as before
    let mut t = tls_connect_after(g.https, b"", "x").await;
    t.write_all(b"GET /any HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let (out, _) = read_to_close(&mut t, Duration::from_secs(5)).await;
    let out = String::from_utf8_lossy(&out);
    assert!(out.starts_with("HTTP/1.1 200 "), "{out}");
    g.gw.shutdown().await;
}

#[tokio::test]
async fn h2c_prior_knowledge() {
    let b = Backend::start().await;
    let g = Gw::start(Some(&basic(&b))).await;
    let mut c = H2::h2c(g.http).await;
    for i in 0..5 {
        let r = c.get(format!("http://h2c.test/strip/{i}")).await;
        assert_eq!(r.status, 200);
        let e = r.json();
        assert_eq!(e["uri"], format!("/base/{i}"));
        assert_eq!(e["headers"]["x-forwarded-host"], "h2c.test");
        assert_eq!(e["headers"]["via"], "2 kong/3.10.0");
    }
    // a `:path` nginx cannot normalize gets Kong's 400 on its stream; the connection goes on
    for bad in ["/../any", "/any/%2e%2e/%2E%2E/x", "/any%00"] {
        let r = c.get(format!("http://h2c.test{bad}")).await;
        assert_eq!(r.status, 400, "{bad}");
        // (an nginx-level error: text unless the request asks for another format)
        assert!(r.text().starts_with("Bad request\nrequest_id: "), "{bad}");
    }
    // a `Host` header beside `:authority` is a second host header to Kong's nginx (400)
    let r = c
        .send(
            http::Request::get("http://h2c.test/any")
                .header("host", "h2c.test")
                .body(Full::default())
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, 400);
    assert!(r.text().starts_with("Bad request\nrequest_id: "));
    // and a method nginx's HTTP/2 module refuses (400), or does not serve (405)
    for (method, status, message) in [
        ("get", 400, "Bad request"),
        ("TRACE", 405, "Method not allowed"),
    ] {
        let r = c
            .send(
                http::Request::builder()
                    .method(method)
                    .uri("http://h2c.test/any")
                    .body(Full::default())
                    .unwrap(),
            )
            .await;
        assert_eq!(r.status, status, "{method}");
        assert!(
            r.text().starts_with(&format!("{message}\nrequest_id: ")),
            "{method}"
        );
    }
    let r = c.get("http://h2c.test/any/x/../y").await;
    assert_eq!(r.status, 200);
    g.gw.shutdown().await;
}

#[tokio::test]
async fn websocket_tunnels_after_101() {
    let b = Backend::start().await;
    let g = Gw::start(Some(&basic(&b))).await;
    let (_, head) = websocket_open(g.http, "/any/../ws").await;
    // `/any/../ws` normalizes to `/ws`, which no route matches.
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");

    let (_, head) = websocket_open(g.http, "/any/x").await;
    // The backend only upgrades /ws: a normal response, no tunnel.
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    g.gw.shutdown().await;
}

#[tokio::test]
async fn websocket_upgrade_and_echo() {
    let b = Backend::start().await;
    let cfg = format!(
        "_format_version: \"3.0\"\nservices:\n- name: ws\n  url: {}\n  routes:\n  - name: ws\n    paths: [\"/ws\"]\n    strip_path: false\n",
        b.url()
    );
    let g = Gw::start(Some(&cfg)).await;
    let (mut s, raw_head) = websocket_open(g.http, "/ws").await;
    let mut buf = vec![0u8; 4096];
    // nginx's header filter writes the 101's `Connection` itself, lower-case `upgrade`
    assert!(
        raw_head.contains("\r\nConnection: upgrade\r\n"),
        "{raw_head}"
    );
    let head = raw_head.to_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: websocket"), "{head}");
    assert!(
        head.contains("sec-websocket-accept: dghlihnhbxbszsbub25jzq=="),
        "{head}"
    );
    for msg in ["one", "two"] {
        s.write_all(msg.as_bytes()).await.unwrap();
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&buf[..n], format!("echo:{msg}").as_bytes());
    }
    // nginx logs an upgraded request when its tunnel ends: no latency is recorded while it
    // is open, and then one that covers it, with the tunnel's bytes toward the client sent
    let metric = |t: &str, name: &str| -> Option<u64> {
        t.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    };
    let count = "kong_request_latency_ms_count{service=\"ws\",route=\"ws\",workspace=\"default\"}";
    let egress = "kong_bandwidth_bytes{service=\"ws\",route=\"ws\",direction=\"egress\"";
    let t = get(g.status, "localhost", "/metrics").await.text();
    let upgraded = "kong_http_requests_total{service=\"ws\",route=\"ws\",code=\"101\"";
    assert_eq!(metric(&t, count), None, "{t}");
    assert_eq!(metric(&t, upgraded), None, "{t}");
    let head_sent = metric(&t, egress).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(s);
    let t = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let t = get(g.status, "localhost", "/metrics").await.text();
            if metric(&t, count) == Some(1) {
                return t;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the tunnel's end is logged");
    assert_eq!(metric(&t, upgraded), Some(1), "{t}");
    let sum = "kong_request_latency_ms_sum{service=\"ws\",route=\"ws\",workspace=\"default\"}";
    assert!(metric(&t, sum).unwrap() >= 300, "{t}");
    assert_eq!(
        metric(&t, egress).unwrap(),
        head_sent + "echo:one".len() as u64 + "echo:two".len() as u64,
        "{t}"
    );
    g.gw.shutdown().await;
}

#[tokio::test]
async fn grpc_over_h2_with_trailers() {
    let b = Backend::start().await;
    let cfg = format!(
        r#"
_format_version: "3.0"
services:
- name: grpc
  url: grpc://{addr}
  routes:
  - name: grpc
    paths: ["/grpc"]
    strip_path: false
    protocols: ["grpc", "grpcs"]
  - name: grpcs-only
    paths: ["/grpcs-only"]
    protocols: ["grpcs"]
"#,
        addr = b.addr
    );
    let g = Gw::start(Some(&cfg)).await;
    let mut c = H2::h2c(g.http).await;
    let r = c
        .send(
            http::Request::post("http://x/grpc.Echo/Say")
                .header("content-type", "application/grpc")
                .header("te", "trailers")
                .body(Full::new(Bytes::from_static(b"\0\0\0\0\x03abc")))
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/grpc"));
    assert_eq!(&r.body[..], b"\0\0\0\0\x03abc");
    let t = r.trailers.expect("trailers preserved");
    assert_eq!(t.get("grpc-status").unwrap(), "0");
    assert_eq!(t.get("grpc-message").unwrap(), "ok");

    // Non-gRPC request on a gRPC route: 415.
    let r = c.get("http://x/grpc.Echo/Say").await;
    assert_eq!(r.status, 415);
    assert_eq!(r.json()["message"], "Non-gRPC request matched gRPC route");
    // gRPC over HTTP/1.1: 426.
    let mut h1 = H1::connect(g.http).await;
    let r = h1
        .send(
            req("POST", "x", "/grpc.Echo/Say")
                .header("content-type", "application/grpc")
                .body(Full::default())
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, 426);
    assert_eq!(r.json()["message"], "Please use HTTP2 protocol");
    // (over HTTP/1.1 the request is no gRPC request to Kong: its answers are JSON)
    assert_eq!(
        r.header("content-type"),
        Some("application/json; charset=utf-8")
    );
    assert_eq!(r.header("grpc-status"), None);
    // A gRPC error over HTTP/2: Kong's gRPC status for the HTTP one (404: 5), and from
    // `kong.response.error` the status's name in `grpc-message`, no body.
    let r = c
        .send(
            http::Request::post("http://x/nowhere/a")
                .header("content-type", "application/grpc")
                .body(Full::default())
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, 404);
    assert_eq!(r.header("grpc-status"), Some("5"));
    assert_eq!(r.header("grpc-message"), Some("NotFound"));
    assert!(r.body.is_empty());
    // Plain-text gRPC on a grpcs-only route.
    let r = c
        .send(
            http::Request::post("http://x/grpcs-only/a")
                .header("content-type", "application/grpc")
                .body(Full::default())
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("grpc-status"), Some("1"));
    assert_eq!(
        r.header("grpc-message"),
        Some("gRPC request matched gRPCs route")
    );
    g.gw.shutdown().await;
}

#[tokio::test]
async fn upstream_entity_targets_are_used() {
    let b1 = Backend::builder().name("one").run().await;
    let b2 = Backend::builder().name("two").run().await;
    let cfg = format!(
        r#"
_format_version: "3.0"
upstreams:
- name: pool
  targets:
  - target: {a}
  - target: {b}
services:
- name: lb
  host: pool
  port: 80
  routes:
  - name: lb
    paths: ["/"]
"#,
        a = b1.addr,
        b = b2.addr
    );
    let g = Gw::start(Some(&cfg)).await;
    let mut c = H1::connect(g.http).await;
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..4 {
        let r = c.get("x", "/").await;
        assert_eq!(r.status, 200);
        // Kong sends the target's host:port as Host.
        let name = r.header("x-backend").unwrap().to_string();
        let addr = if name == "one" { b1.addr } else { b2.addr };
        assert_eq!(r.json()["headers"]["host"], addr.to_string());
        seen.insert(name);
    }
    assert_eq!(seen.len(), 2, "round robin over both targets");
    g.gw.shutdown().await;
}

/// A shutdown closes keep-alive connections waiting between requests on the fast path at
/// once (not after the grace period), and a connection that has served many requests first
/// still notices it.
#[tokio::test]
async fn shutdown_closes_idle_keep_alive_connections_at_once() {
    let b = Backend::start().await;
    let g = Gw::start(Some(&basic(&b))).await;
    let mut s = tokio::net::TcpStream::connect(g.http).await.unwrap();
    let mut seen = Vec::new();
    for _ in 0..50 {
        s.write_all(b"GET /any HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        // read until this answer's end (the echo body is JSON ending in `}`)
        let mut buf = [0u8; 4096];
        loop {
            let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
                .await
                .expect("answer in time")
                .unwrap();
            assert!(n > 0, "closed early");
            seen.extend_from_slice(&buf[..n]);
            if seen.ends_with(b"}") || seen.ends_with(b"}\n") {
                break;
            }
        }
        assert!(
            seen.starts_with(b"HTTP/1.1 200"),
            "{}",
            String::from_utf8_lossy(&seen)
        );
        seen.clear();
    }
    let started = std::time::Instant::now();
    let shut = tokio::spawn(g.gw.shutdown());
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(3), s.read(&mut buf))
        .await
        .expect("the idle connection is closed at once")
        .unwrap_or(0);
    assert_eq!(n, 0, "{}", String::from_utf8_lossy(&buf[..n]));
    tokio::time::timeout(Duration::from_secs(5), shut)
        .await
        .expect("shutdown within the grace period")
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

/// `client_max_body_size`: a body over it gets 413, whether its length is announced or it is
/// chunked (counted as it streams upstream); smaller bodies pass.
#[tokio::test]
async fn client_max_body_size_holds_for_chunked_bodies_too() {
    let b = Backend::start().await;
    let cfg = format!(
        "_format_version: \"3.0\"\nservices:\n- name: s\n  url: {}\n  routes:\n  - name: r\n    paths: [\"/\"]\n    request_buffering: false\n",
        b.url()
    );
    let mut settings = silverback_proxy::Settings::loopback();
    settings.client_max_body_size = 16;
    let g = Gw::start_with(settings, Some(&cfg)).await;
    let w = Duration::from_millis(800);
    let out = raw(
        g.http,
        b"POST /cl HTTP/1.1\r\nHost: x\r\nContent-Length: 20\r\n\r\n01234567890123456789",
        w,
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 413"), "{out}");
    // nginx ends keep-alive on its 413, even under Kong's error page
    assert!(out.contains("\r\nConnection: close\r\n"), "{out}");
    let out = raw(
        g.http,
        b"POST /chunked HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\na\r\n0123456789\r\na\r\n0123456789\r\n0\r\n\r\n",
        w,
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 413"), "{out}");
    assert!(out.contains("\r\nConnection: close\r\n"), "{out}");
    assert!(
        out.to_ascii_lowercase().contains("x-kong-request-id"),
        "{out}"
    );
    let out = raw(
        g.http,
        b"POST /small HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\na\r\n0123456789\r\n0\r\n\r\n",
        w,
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.contains(r#""body":"0123456789""#), "{out}");
    g.gw.shutdown().await;
}

/// A body refused with 413 (`client_max_body_size`) while the client is still sending it:
/// the connection closes as nginx closes it, with a lingering read that takes and drops
/// whatever the client goes on sending for as long as it keeps sending (nginx's
/// `lingering_timeout` between reads, `lingering_time` in all), with no cap on the bytes.
/// A client that writes its whole 32 MiB body before it reads gets the whole answer, and
/// none of its writes fails on a reset connection.
#[tokio::test]
async fn a_413_for_a_body_still_arriving_is_read_whole_after_the_body() {
    let b = Backend::start().await;
    let mut settings = silverback_proxy::Settings::loopback();
    settings.client_max_body_size = 1024;
    let g = Gw::start_with(settings, Some(&basic(&b))).await;
    const BODY: usize = 32 * 1024 * 1024;
    for chunked in [false, true] {
        let head = "POST /any HTTP/1.1\r\nHost: x\r\n";
        let mut s = send_whole_body(g.http, head, BODY, chunked, b'x').await;
        let (got, closed) = read_to_close(&mut s, Duration::from_secs(10)).await;
        let out = String::from_utf8_lossy(&got);
        assert!(closed, "{out}");
        assert!(out.starts_with("HTTP/1.1 413 "), "{out}");
        assert_eq!(count_responses(&out), 1, "{out}");
        let (head, body) = out.split_once("\r\n\r\n").expect("a whole head");
        let length = head
            .lines()
            .find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse::<usize>().ok())?
            })
            .expect("a length");
        assert!(length > 0, "{out}");
        assert_eq!(body.len(), length, "the whole answer: {out}");
    }
    assert_eq!(b.served(), 0);
    g.gw.shutdown().await;
}

/// A client that stops sending a body the route buffers gets no answer after
/// `client_body_timeout`: nginx finalizes the request with 408, which terminates it and
/// closes the connection without writing anything (`ngx_http_finalize_request`).
#[tokio::test]
async fn a_stalled_buffered_body_is_closed_unanswered() {
    let b = Backend::start().await;
    let mut settings = silverback_proxy::Settings::loopback();
    settings.client_body_timeout = Duration::from_millis(300);
    let g = Gw::start_with(settings, Some(&basic(&b))).await;
    let t = std::time::Instant::now();
    let out = raw(
        g.http,
        b"POST /any HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nab",
        Duration::from_secs(3),
    )
    .await;
    assert!(out.is_empty(), "{out}");
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(2),
        "closed at the body timeout, not before: {took:?}"
    );
    assert_eq!(b.served(), 0);
    // still counted as nginx logs it: a 408, past Kong's access phase and not answered by
    // its error handler, so from the `service` as `kong.response.get_source()` says
    let m = get(g.status, "localhost", "/metrics").await.text();
    assert!(m.contains(r#"code="408",source="service""#), "{m}");
    assert!(!m.contains(r#"code="408",source="kong""#), "{m}");
    g.gw.shutdown().await;
}

/// Over HTTP/2 a body that stalls past `client_body_timeout` gets no answer either: the
/// stream is reset with `PROTOCOL_ERROR`, as nginx resets the stream of a request it ends
/// after a client timeout (`ngx_http_v2_close_stream`; Debian's nginx 1.22 was seen doing
/// so), on the proxy and admin listeners alike; the connection stays usable.
#[tokio::test]
async fn a_stalled_h2_body_is_reset_as_nginx_resets_it() {
    let b = Backend::start().await;
    let mut settings = silverback_proxy::Settings::loopback();
    settings.client_body_timeout = Duration::from_millis(300);
    // (h2c on the admin listener: its kind needs `http2`, as Kong's default `admin_listen` has)
    settings.admin_listen =
        silverback_proxy::Listen::parse_list("127.0.0.1:0 http2").expect("admin_listen");
    let g = Gw::start_with(settings, Some(&basic(&b))).await;
    for (addr, path) in [(g.http, "/any"), (g.admin, "/services")] {
        let s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (client, conn) = h2::client::handshake(s).await.unwrap();
        tokio::spawn(conn);
        let mut client = client.ready().await.unwrap();
        let req = http::Request::post(format!("http://x{path}"))
            .header("content-type", "application/json")
            .header("content-length", "10")
            .body(())
            .unwrap();
        let t = std::time::Instant::now();
        let (answer, mut body) = client.send_request(req, false).unwrap();
        body.send_data(Bytes::from_static(b"{\"a"), false).unwrap();
        let e = tokio::time::timeout(Duration::from_secs(3), answer)
            .await
            .expect("a reset before the client gives up")
            .expect_err("no answer");
        assert!(e.is_reset(), "{path}: {e:?}");
        assert_eq!(
            e.reason(),
            Some(h2::Reason::PROTOCOL_ERROR),
            "{path}: {e:?}"
        );
        let took = t.elapsed();
        assert!(
            (Duration::from_millis(300)..Duration::from_secs(2)).contains(&took),
            "{path}: {took:?}"
        );
        // the connection goes on
        let mut client = client.ready().await.unwrap();
        let get = http::Request::get(format!(
            "http://x{}",
            if addr == g.http { "/any" } else { "/status" }
        ))
        .body(())
        .unwrap();
        let (answer, _) = client.send_request(get, true).unwrap();
        assert_eq!(answer.await.unwrap().status(), 200, "{path}");
    }
    assert_eq!(b.served(), 1);
    g.gw.shutdown().await;
}

/// `client_max_body_size` on a body streamed to an HTTP/2 (gRPC) upstream: 413 (hyper's
/// stream reset toward the upstream does not make it the upstream's 502).
#[tokio::test]
async fn client_max_body_size_toward_an_h2_upstream() {
    let b = Backend::start().await;
    let cfg = format!(
        "_format_version: \"3.0\"\nservices:\n- name: grpc\n  url: grpc://{}\n  routes:\n  - name: grpc\n    paths: [\"/grpc\"]\n    strip_path: false\n    protocols: [\"grpc\"]\n",
        b.addr
    );
    let mut settings = silverback_proxy::Settings::loopback();
    settings.client_max_body_size = 16;
    let g = Gw::start_with(settings, Some(&cfg)).await;
    let send = |frames: usize| async move {
        let s = tokio::net::TcpStream::connect(g.http).await.unwrap();
        let (mut tx, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(s),
        )
        .await
        .unwrap();
        tokio::spawn(conn);
        let req = http::Request::post("http://x/grpc/Echo")
            .header("content-type", "application/grpc")
            .body(Parts::tens(frames))
            .unwrap();
        tx.ready().await.unwrap();
        tx.send_request(req).await.unwrap().status()
    };
    assert_eq!(send(5).await, 413);
    assert_eq!(send(1).await, 200);
    g.gw.shutdown().await;
}

/// A gRPC service gets the client's target as it came, as Kong's `@grpc` location passes it
/// (`grpc_pass` without a URI: nginx's unparsed URI): a route's `strip_path` (on by default)
/// does not apply.
#[tokio::test]
async fn grpc_services_get_the_target_as_it_came() {
    let b = Backend::start().await;
    let cfg = format!(
        "_format_version: \"3.0\"\nservices:\n- name: grpc\n  url: grpc://{}\n  routes:\n  - name: grpc\n    paths: [\"/grpc\"]\n    protocols: [\"grpc\"]\n",
        b.addr
    );
    let g = Gw::start(Some(&cfg)).await;
    let mut c = H2::h2c(g.http).await;
    let r = c
        .send(
            http::Request::post("http://x/grpc/pkg.Svc/Call?a=%41")
                .header("content-type", "application/grpc")
                .body(Full::new(Bytes::from_static(b"\0\0\0\0\0")))
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, 200);
    // (the backend answers gRPC only under `/grpc`: stripped or prefixed, it would not)
    assert_eq!(
        r.header("content-type"),
        Some("application/grpc"),
        "{:?}",
        r.headers
    );
    let t = r.trailers.expect("trailers");
    assert_eq!(t.get("grpc-status").unwrap(), "0");
    g.gw.shutdown().await;
}

/// Only WebSocket is upgraded, as Kong does: another `Upgrade` (`h2c`, `foo`) is not passed
/// upstream. A 101 answers a WebSocket request only: an upstream that switches protocols
/// anyway gets no tunnel but a 502, whether the client sent another `Upgrade` or none.
/// That is stricter than Kong, whose nginx tunnels on such a 101 when the client sent any
/// `Upgrade`, and passes it on followed by the upstream's bytes when it sent none (the
/// upstream was asked for no switch: `proxy::is_websocket`). A WebSocket asked in another
/// case is passed on as `websocket`, and an idle tunnel closes after the service's
/// `read_timeout`.
#[tokio::test]
async fn only_websocket_upgrades_and_idle_tunnels_close() {
    let b = Backend::start().await;
    let cfg = format!(
        "_format_version: \"3.0\"\nservices:\n- name: ws\n  url: {}\n  read_timeout: 400\n  routes:\n  - name: ws\n    paths: [\"/ws\"]\n    strip_path: false\n",
        b.url()
    );
    let g = Gw::start(Some(&cfg)).await;
    let mut buf = vec![0u8; 4096];
    // The backend's `/ws` answers 101 to anything: the gateway must not tunnel an h2c
    // upgrade it never asked for.
    let mut s = tokio::net::TcpStream::connect(g.http).await.unwrap();
    s.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n")
        .await
        .unwrap();
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let head = String::from_utf8_lossy(&buf[..n]).to_lowercase();
    assert!(head.starts_with("http/1.1 502"), "{head}");
    // nor one of any other protocol, nor one asked for nothing
    for ask in [
        "Connection: upgrade\r\nUpgrade: foo\r\n",
        "Connection: keep-alive\r\n",
    ] {
        let mut s = tokio::net::TcpStream::connect(g.http).await.unwrap();
        s.write_all(format!("GET /ws HTTP/1.1\r\nHost: x\r\n{ask}\r\n").as_bytes())
            .await
            .unwrap();
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        let head = String::from_utf8_lossy(&buf[..n]).to_lowercase();
        assert!(head.starts_with("http/1.1 502"), "{ask}: {head}");
    }
    // the upstream is not asked for another protocol (the echo behind `/ws/echo`)
    let r = H1::connect(g.http)
        .await
        .send(
            req("GET", "x", "/ws/echo")
                .header("connection", "upgrade")
                .header("upgrade", "foo")
                .body(Full::default())
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.json()["headers"].get("upgrade").is_none(), "{}", r.text());

    let mut s = tokio::net::TcpStream::connect(g.http).await.unwrap();
    s.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: WebSocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        .await
        .unwrap();
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("an answer")
        .unwrap();
    let head = String::from_utf8_lossy(&buf[..n]).to_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    // (measured from before the last traffic: the quiet time starts after it)
    let started = std::time::Instant::now();
    s.write_all(b"ping").await.unwrap();
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf[..n], b"echo:ping");
    // Quiet past the read timeout: the gateway closes the tunnel.
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("the idle tunnel is closed")
        .unwrap_or(0);
    assert_eq!(n, 0);
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "{:?}",
        started.elapsed()
    );
    g.gw.shutdown().await;
}

/// An upstream's `Upgrade` reaches the client when it names the protocol the request asked
/// the upstream for, as Kong's header filter lets it through: a WebSocket request refused
/// with 426 and `Upgrade: websocket` (in any case) gets that `Upgrade`; one naming another
/// protocol, and any `Upgrade` answering a request that asked for none (Apache's
/// `Upgrade: h2,h2c`), is dropped. The headers `Connection` names go; `Proxy-Authenticate`
/// and `Proxy-Connection` pass, as Kong 3.x passes them.
#[tokio::test]
async fn an_upstreams_upgrade_passes_when_it_was_asked_for() {
    let b = Backend::start().await;
    let g = Gw::start(Some(&basic(&b))).await;
    let ws = |answer_upgrade: &str| {
        req("GET", "x", "/keep/status/426")
            .header("connection", "Upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
            .header("sec-websocket-version", "13")
            .header("x-respond-header", format!("Upgrade: {answer_upgrade}"))
            // (`Connection: Upgrade` names no header to remove: the Upgrade rule decides)
            .header("x-respond-header", "Connection: Upgrade")
            .header("x-respond-header", "Proxy-Authenticate: Basic realm=\"up\"")
            // (headers nginx's proxy module hides: hyper's client path too)
            .header("x-respond-header", "X-Pad: avoid browser bug")
            .header("x-respond-header", "X-Accel-Buffering: no")
            .body(Full::default())
            .unwrap()
    };
    let r = H1::connect(g.http).await.send(ws("websocket")).await;
    assert_eq!(r.status, 426, "{}", r.text());
    assert!(r.header("x-pad").is_none(), "{:?}", r.headers);
    assert!(r.header("x-accel-buffering").is_none(), "{:?}", r.headers);
    assert_eq!(r.header("upgrade"), Some("websocket"), "{:?}", r.headers);
    assert_eq!(r.header("proxy-authenticate"), Some("Basic realm=\"up\""));
    assert!(r.header("x-hop").is_none(), "{:?}", r.headers);
    assert_ne!(r.header("connection"), Some("x-hop"));
    let r = H1::connect(g.http).await.send(ws("WebSocket")).await;
    assert_eq!(r.header("upgrade"), Some("WebSocket"), "{:?}", r.headers);
    let r = H1::connect(g.http).await.send(ws("h2c")).await;
    assert_eq!(r.status, 426);
    assert!(r.header("upgrade").is_none(), "{:?}", r.headers);
    // a plain request (the HTTP/1.1 upstream client's path)
    let r = H1::connect(g.http)
        .await
        .send(
            req("GET", "x", "/keep/plain")
                .header("x-respond-header", "Upgrade: h2,h2c")
                .header("x-respond-header", "Connection: Upgrade")
                .header("x-respond-header", "Proxy-Authenticate: Basic realm=\"up\"")
                .header("x-respond-header", "Proxy-Connection: keep-alive")
                .body(Full::default())
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.header("upgrade").is_none(), "{:?}", r.headers);
    assert!(r.header("x-hop").is_none(), "{:?}", r.headers);
    assert_eq!(r.header("proxy-authenticate"), Some("Basic realm=\"up\""));
    assert_eq!(r.header("proxy-connection"), Some("keep-alive"));
    g.gw.shutdown().await;
}

/// Kong checks the protocol of gRPC requests on gRPC routes only: a gRPC-Web request over
/// HTTP/1.1 on an http route is proxied like any other.
#[tokio::test]
async fn grpc_content_types_on_http_routes_are_proxied() {
    let b = Backend::start().await;
    let g = Gw::start(Some(&basic(&b))).await;
    let r = H1::connect(g.http)
        .await
        .send(
            req("POST", "x", "/any/x")
                .header("content-type", "application/grpc-web+proto")
                .body(Full::new(Bytes::from_static(b"\0\0\0\0\0")))
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    g.gw.shutdown().await;
}

/// `cert_alt`: in TLS 1.3 the client's first signature scheme decides which key answers, as
/// OpenSSL's choice does in Kong. A client listing ECDSA first gets the ECDSA alternative of
/// an RSA certificate; one offering only RSA gets the RSA certificate.
#[tokio::test]
async fn cert_alt_follows_the_clients_signature_preference() {
    let pki = format!(
        "{}/../config/tests/fixtures/pki",
        std::env::var("CARGO_MANIFEST_DIR")
            .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string())
    );
    let rsa_cert = std::fs::read_to_string(format!("{pki}/rsa.crt")).unwrap();
    let rsa_key = std::fs::read_to_string(format!("{pki}/rsa.key")).unwrap();
    let (ec_cert, ec_key) = cert(&["ecdsa.example.test"]);
    let doc = serde_json::json!({
        "_format_version": "3.0",
        "certificates": [{
            "cert": rsa_cert, "key": rsa_key, "cert_alt": ec_cert, "key_alt": ec_key,
            "snis": [{"name": "example.test"}],
        }],
    });
    let g = Gw::start(Some(&doc.to_string())).await;
    let (_, names, _) = tls_connect(g.https, "example.test", &[]).await;
    assert_eq!(names, ["DNSName(ecdsa.example.test)"], "{names:?}");
    let rsa_only = vec![
        rustls::SignatureScheme::RSA_PSS_SHA256,
        rustls::SignatureScheme::RSA_PKCS1_SHA256,
    ];
    let (_, names, _) =
        tls_connect_offering(g.https, "example.test", &[], Some(rsa_only), None).await;
    assert_eq!(names, ["DNSName(example.test)"], "{names:?}");
    // A TLS 1.2 client whose suites all need an RSA key gets the RSA certificate, whatever
    // order its signature schemes come in (rustls offers the resolver only the schemes its
    // suites can use).
    let rsa_suites =
        vec![rustls::crypto::ring::cipher_suite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256];
    let (_, names, _) =
        tls_connect_offering(g.https, "example.test", &[], None, Some(rsa_suites)).await;
    assert_eq!(names, ["DNSName(example.test)"], "{names:?}");
    g.gw.shutdown().await;
}

/// `cert_alt` with the version the client really offers: a client limited to TLS 1.2 that
/// still lists TLS 1.3 suites (rustls' does) and every signature scheme, ECDSA first, but
/// whose TLS 1.2 suites all need an RSA key, gets the RSA certificate and completes the
/// handshake, whichever of the two is the main one; one whose TLS 1.2 suites all need an
/// ECDSA key gets the ECDSA one even when it lists an RSA scheme first; one offering both
/// kinds gets the key of its first suite it can take the key of. A TLS 1.3 client gets the
/// certificate of its first scheme.
#[tokio::test]
async fn cert_alt_follows_the_tls12_suites_a_tls12_client_offers() {
    use rustls::SignatureScheme as S;
    use rustls::crypto::ring::cipher_suite as suite;
    let rsa = (
        std::fs::read_to_string(pki_path("rsa.crt")).unwrap(),
        std::fs::read_to_string(pki_path("rsa.key")).unwrap(),
    );
    let ecdsa = cert(&["ecdsa.example.test"]);
    let rsa_name = ["DNSName(example.test)"];
    let ecdsa_name = ["DNSName(ecdsa.example.test)"];
    let tls13_suites = || {
        vec![
            suite::TLS13_AES_128_GCM_SHA256,
            suite::TLS13_AES_256_GCM_SHA384,
            suite::TLS13_CHACHA20_POLY1305_SHA256,
        ]
    };
    let with_tls13 = |tls12: Vec<rustls::SupportedCipherSuite>| {
        let mut all = tls13_suites();
        all.extend(tls12);
        all
    };
    let rsa_suites = || {
        vec![
            suite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
            suite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
            suite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
        ]
    };
    let ecdsa_suites = || vec![suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256];
    for (main, alt, what) in [
        (&rsa, &ecdsa, "RSA main, ECDSA alt"),
        (&ecdsa, &rsa, "ECDSA main, RSA alt"),
    ] {
        let doc = serde_json::json!({
            "_format_version": "3.0",
            "certificates": [{
                "cert": main.0, "key": main.1, "cert_alt": alt.0, "key_alt": alt.1,
                "snis": [{"name": "example.test"}],
            }],
        });
        let g = Gw::start(Some(&doc.to_string())).await;
        let cases = [
            (
                "TLS 1.2, RSA suites, TLS 1.3 suites listed",
                None,
                Some(with_tls13(rsa_suites())),
                &rsa_name,
            ),
            ("TLS 1.2, RSA suites", None, Some(rsa_suites()), &rsa_name),
            (
                "TLS 1.2, an ECDSA suite, RSA scheme first, TLS 1.3 suites listed",
                Some(vec![S::RSA_PSS_SHA256, S::ECDSA_NISTP256_SHA256]),
                Some(with_tls13(ecdsa_suites())),
                &ecdsa_name,
            ),
            // both kinds of suite: the first suite in the client's order decides (Kong's
            // `ssl_prefer_server_ciphers off`: OpenSSL walks the client's suites, and in
            // TLS 1.2 the certificate follows the suite), whatever the schemes' order
            (
                "TLS 1.2, ECDSA suite first, RSA scheme first",
                Some(vec![S::RSA_PKCS1_SHA256, S::ECDSA_NISTP256_SHA256]),
                Some(with_tls13([ecdsa_suites(), rsa_suites()].concat())),
                &ecdsa_name,
            ),
            (
                "TLS 1.2, RSA suite first, ECDSA scheme first",
                Some(vec![S::ECDSA_NISTP256_SHA256, S::RSA_PKCS1_SHA256]),
                Some(with_tls13([rsa_suites(), ecdsa_suites()].concat())),
                &rsa_name,
            ),
            (
                "TLS 1.2, RSA suite first, ECDSA schemes only",
                Some(vec![S::ECDSA_NISTP256_SHA256]),
                Some(with_tls13([rsa_suites(), ecdsa_suites()].concat())),
                &ecdsa_name,
            ),
            (
                "TLS 1.3, RSA scheme first",
                Some(vec![S::RSA_PSS_SHA256, S::ECDSA_NISTP256_SHA256]),
                None,
                &rsa_name,
            ),
            (
                "TLS 1.3, ECDSA scheme first",
                Some(vec![S::ECDSA_NISTP256_SHA256, S::RSA_PSS_SHA256]),
                None,
                &ecdsa_name,
            ),
        ];
        for (case, schemes, tls12, want) in cases {
            let tls = try_tls_connect_offering(g.https, "example.test", &[], schemes, tls12)
                .await
                .unwrap_or_else(|e| panic!("{what}, {case}: the handshake fails: {e}"));
            let version = tls.get_ref().1.protocol_version();
            let names = san_names(&leaf(&tls));
            assert_eq!(names, *want, "{what}, {case} ({version:?})");
        }
        g.gw.shutdown().await;
    }
}

/// Without `ssl_cert`, a client that matches no SNI (or sends none) gets one of Kong's two
/// generated certificates by its signature preference: an ECDSA-capable client the ECDSA
/// P-256 one at once; a client without ECDSA (TLS 1.2 with RSA suites only, TLS 1.3 offering
/// RSA schemes only) the RSA 2048 one, waiting for it if it is still being generated.
#[tokio::test]
async fn generated_default_certificates_follow_the_clients_signature_preference() {
    let g = Gw::start(None).await;
    let (tls, _, _) = tls_connect(g.https, "nothing.test", &[]).await;
    let ec = leaf(&tls);
    assert_eq!(key_of(&ec), ("EC", 256, KONG_DEFAULT_SUBJECT.into()));
    let tls = try_tls_connect_offering(g.https, "nothing.test", &[], None, Some(rsa_only_tls12()))
        .await
        .expect("one attempt: the handshake waits for the RSA certificate");
    let rsa = leaf(&tls);
    assert_eq!(key_of(&rsa), ("RSA", 2048, KONG_DEFAULT_SUBJECT.into()));
    // The same with TLS 1.3 suites listed, TLS 1.2 alone offered.
    let tls = try_tls_connect_offering(
        g.https,
        "nothing.test",
        &[],
        None,
        Some(rsa_only_tls12_listing_tls13()),
    )
    .await
    .expect("TLS 1.2 alone, TLS 1.3 suites listed");
    assert_eq!(leaf(&tls), rsa, "TLS 1.2 alone, TLS 1.3 suites listed");
    // Without a server name (an IP address sends none): the same choice.
    let rsa_schemes = vec![
        rustls::SignatureScheme::RSA_PSS_SHA256,
        rustls::SignatureScheme::RSA_PKCS1_SHA256,
    ];
    let (tls, _, _) =
        tls_connect_offering(g.https, "127.0.0.1", &[], Some(rsa_schemes), None).await;
    assert_eq!(leaf(&tls), rsa, "TLS 1.3, RSA schemes only");
    // TLS 1.3 cannot sign with RSA-PKCS1: a client listing it first gets the ECDSA one
    let pkcs1_first = vec![
        rustls::SignatureScheme::RSA_PKCS1_SHA256,
        rustls::SignatureScheme::ECDSA_NISTP256_SHA256,
    ];
    let (tls, _, _) =
        tls_connect_offering(g.https, "nothing.test", &[], Some(pkcs1_first), None).await;
    assert_eq!(leaf(&tls), ec, "TLS 1.3, RSA-PKCS1 listed first");
    let (tls, _, _) = tls_connect(g.https, "127.0.0.1", &[]).await;
    assert_eq!(leaf(&tls), ec, "ECDSA preferred");
    g.gw.shutdown().await;
}

/// With `ssl_cert` and `ssl_cert_key` (one RSA and one ECDSA pair, in files), a client that
/// matches no SNI receives exactly the configured certificate of the key type it prefers;
/// SNIs of the configuration still get their own.
#[tokio::test]
async fn ssl_cert_files_are_the_default_certificates() {
    let b = Backend::start().await;
    let dir = std::env::temp_dir().join(format!("sb-ssl-cert-files-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let write = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    };
    let rsa_pem = std::fs::read_to_string(pki_path("rsa.crt")).unwrap();
    let rsa_crt = write("rsa.crt", &rsa_pem);
    let rsa_key = write(
        "rsa.key",
        &std::fs::read_to_string(pki_path("rsa.key")).unwrap(),
    );
    let (ec_pem, ec_key_pem) = cert(&["default.example.test"]);
    let ec_crt = write("ec.crt", &ec_pem);
    let ec_key = write("ec.key", &ec_key_pem);
    let mut settings = silverback_proxy::Settings::loopback();
    settings.ssl_cert = silverback_proxy::SslCert::parse(
        &format!("{rsa_crt}, {ec_crt}"),
        &format!("{rsa_key}, {ec_key}"),
    );
    let g = Gw::start_with(settings, Some(&tls_config(&b))).await;
    let der = |pem: &str| {
        use rustls::pki_types::pem::PemObject;
        rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
    };
    for sni in ["nothing.test", "127.0.0.1"] {
        let (tls, _, _) = tls_connect(g.https, sni, &[]).await;
        assert_eq!(leaf(&tls), der(&ec_pem), "{sni}: ECDSA preferred");
        let (tls, _, _) =
            tls_connect_offering(g.https, sni, &[], None, Some(rsa_only_tls12())).await;
        assert_eq!(leaf(&tls), der(&rsa_pem), "{sni}: TLS 1.2, RSA only");
        let suites = rsa_only_tls12_listing_tls13();
        let (tls, _, _) = tls_connect_offering(g.https, sni, &[], None, Some(suites)).await;
        assert_eq!(
            leaf(&tls),
            der(&rsa_pem),
            "{sni}: TLS 1.2, RSA only, 1.3 listed"
        );
    }
    let (_, names, _) = tls_connect(g.https, "exact.test", &[]).await;
    assert_eq!(names, ["DNSName(exact.test)"], "a configured SNI wins");
    g.gw.shutdown().await;
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A bad `ssl_cert` / `ssl_cert_key` fails the start with an error naming the setting and the
/// file; without a TLS listener they are not read, as Kong checks them only with TLS on.
#[tokio::test]
async fn bad_ssl_cert_settings_fail_the_start() {
    let dir = std::env::temp_dir().join(format!("sb-ssl-cert-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let garbage = dir.join("garbage.key");
    std::fs::write(&garbage, "no key here").unwrap();
    let garbage = garbage.display().to_string();
    let missing = dir.join("missing.crt").display().to_string();
    let (rsa_crt, rsa_key, ec_crt, ec_key) = (
        pki_path("rsa.crt"),
        pki_path("rsa.key"),
        pki_path("ec.crt"),
        pki_path("ec.key"),
    );
    let cases = [
        (
            rsa_crt.clone(),
            String::new(),
            "ssl_cert_key must be specified".to_string(),
        ),
        (
            format!("{rsa_crt},{ec_crt}"),
            rsa_key.clone(),
            "ssl_cert was specified 2 times while ssl_cert_key was specified 1 times".into(),
        ),
        (
            missing.clone(),
            rsa_key.clone(),
            format!("ssl_cert: failed loading certificate from {missing}: no such file"),
        ),
        (
            rsa_crt.clone(),
            garbage.clone(),
            format!("ssl_cert_key: failed loading key from {garbage}: invalid key"),
        ),
        (
            rsa_crt.clone(),
            ec_key.clone(),
            format!("ssl_cert_key {ec_key} does not match ssl_cert {rsa_crt}"),
        ),
    ];
    for (certs, keys, want) in cases {
        let mut settings = silverback_proxy::Settings::loopback();
        settings.ssl_cert = silverback_proxy::SslCert::parse(&certs, &keys);
        let err = match silverback_proxy::Gateway::start(settings, None).await {
            Ok(_) => panic!("the start should fail with {want}"),
            Err(e) => e.to_string(),
        };
        assert!(err.starts_with(&want), "{err}\nwanted: {want}");
    }
    let mut settings = silverback_proxy::Settings::loopback();
    settings.proxy_listen = silverback_proxy::Listen::parse_list("127.0.0.1:0").unwrap();
    settings.ssl_cert = silverback_proxy::SslCert::parse(&missing, "");
    let g = Gw::start_with(settings, None).await;
    g.gw.shutdown().await;
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `ssl` admin and status listeners serve their own certificates (Kong's `admin_ssl_cert`,
/// `status_ssl_cert`, else generated ones), never the configuration's; a proxy-only
/// `ssl_cert` problem does not concern them, and theirs are checked only with TLS on.
#[tokio::test]
async fn admin_and_status_listeners_serve_their_own_certificates() {
    let b = Backend::start().await;
    let dir = std::env::temp_dir().join(format!("sb-admin-ssl-cert-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (admin_pem, admin_key) = cert(&["admin.example.test"]);
    let (crt, key) = (dir.join("admin.crt"), dir.join("admin.key"));
    std::fs::write(&crt, &admin_pem).unwrap();
    std::fs::write(&key, &admin_key).unwrap();
    let mut settings = silverback_proxy::Settings::loopback();
    settings.admin_listen = silverback_proxy::Listen::parse_list("127.0.0.1:0 ssl").unwrap();
    settings.status_listen = silverback_proxy::Listen::parse_list("127.0.0.1:0 ssl").unwrap();
    settings.admin_ssl_cert = silverback_proxy::SslCert::parse_setting(
        "admin_ssl_cert",
        &crt.display().to_string(),
        &key.display().to_string(),
    );
    let yaml = tls_config(&b);
    let gw = silverback_proxy::Gateway::start(settings, Some((load(&yaml), doc_hash(&yaml))))
        .await
        .unwrap();
    let kind = silverback_proxy::ListenerKind::Admin;
    let (admin, status) = (
        gw.addr(kind, true).unwrap(),
        gw.addr(silverback_proxy::ListenerKind::Status, true)
            .unwrap(),
    );
    let der = {
        use rustls::pki_types::pem::PemObject;
        rustls::pki_types::CertificateDer::from_pem_slice(admin_pem.as_bytes()).unwrap()
    };
    // the configuration's SNI is not the admin listener's business
    for sni in ["exact.test", "nothing.test"] {
        let (mut tls, _, _) = tls_connect(admin, sni, &[]).await;
        assert_eq!(leaf(&tls), der, "{sni}");
        tls.write_all(b"GET /status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let (out, _) = read_to_close(&mut tls, Duration::from_secs(5)).await;
        assert!(
            out.starts_with(b"HTTP/1.1 200"),
            "{}",
            String::from_utf8_lossy(&out)
        );
    }
    // the status listener, without its own setting: the generated (Kong's) certificate
    let (tls, _, _) = tls_connect(status, "exact.test", &[]).await;
    assert_eq!(key_of(&leaf(&tls)).2, KONG_DEFAULT_SUBJECT);
    gw.shutdown().await;

    // a bad admin_ssl_cert fails the start, named as such; without TLS on the admin
    // listener it is not read
    let mut settings = silverback_proxy::Settings::loopback();
    settings.admin_listen = silverback_proxy::Listen::parse_list("127.0.0.1:0 ssl").unwrap();
    settings.admin_ssl_cert =
        silverback_proxy::SslCert::parse_setting("admin_ssl_cert", &crt.display().to_string(), "");
    let err = match silverback_proxy::Gateway::start(settings.clone(), None).await {
        Ok(_) => panic!("the start should fail"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.starts_with("admin_ssl_cert_key must be specified"),
        "{err}"
    );
    settings.admin_listen = silverback_proxy::Listen::parse_list("127.0.0.1:0").unwrap();
    let gw = silverback_proxy::Gateway::start(settings, None)
        .await
        .unwrap();
    gw.shutdown().await;
    std::fs::remove_dir_all(&dir).unwrap();
}

/// As Kong, each kind of listener has a generated pair of its own: the proxy, admin and
/// status listeners present three different ECDSA certificates and three different RSA ones.
#[tokio::test]
async fn each_listener_kind_has_its_own_generated_certificates() {
    let g = Gw::start_with(tls_everywhere(), None).await;
    let mut seen = vec![];
    for addr in tls_addrs(&g.gw) {
        let (ecdsa, rsa) = default_pair(addr).await;
        seen.extend([ecdsa, rsa]);
    }
    for (i, a) in seen.iter().enumerate() {
        for b in &seen[i + 1..] {
            assert_ne!(
                a, b,
                "every listener kind and key type has its own certificate"
            );
        }
    }
    // Gateways of one process without a prefix share them, kind by kind.
    let again = Gw::start_with(tls_everywhere(), None).await;
    let (ecdsa, rsa) = default_pair(again.admin_tls()).await;
    assert_eq!([ecdsa, rsa], [seen[2].clone(), seen[3].clone()]);
    again.gw.shutdown().await;
    g.gw.shutdown().await;
}

/// With a prefix, the generated certificates are written under `<prefix>/ssl/` with Kong's
/// names (the directories created, keys mode 0600) and a later start presents the same
/// ones; a pair whose two files are gone is generated again, alone, as Kong does.
#[tokio::test]
async fn a_prefix_keeps_the_default_certificates_across_restarts() {
    let dir = TempDir::new("prefix-restart");
    let prefix = dir.path().join("kong").join("prefix");
    let settings = || silverback_proxy::Settings {
        prefix: Some(prefix.clone()),
        ..tls_everywhere()
    };
    let first = Gw::start_with(settings(), None).await;
    let mut served = vec![];
    for addr in tls_addrs(&first.gw) {
        served.push(default_pair(addr).await);
    }
    first.gw.shutdown().await;

    let ssl = prefix.join("ssl");
    let mut want: Vec<String> = ["", "admin-", "status-"]
        .iter()
        .flat_map(|lead| kong_files(lead).into_iter().map(|(n, _)| n))
        .collect();
    want.sort();
    let mut with_lock = want.clone();
    with_lock.insert(0, ".lock".into());
    assert_eq!(
        file_names(&ssl),
        with_lock,
        "the pairs and the lock file, nothing else"
    );
    for (lead, (ecdsa, rsa)) in ["", "admin-", "status-"].iter().zip(&served) {
        for (name, key) in kong_files(lead) {
            let path = ssl.join(&name);
            let mode = {
                use std::os::unix::fs::PermissionsExt;
                std::fs::metadata(&path).unwrap().permissions().mode() & 0o777
            };
            if key {
                assert_eq!(mode, 0o600, "{name}");
                let pem = std::fs::read_to_string(&path).unwrap();
                assert!(
                    pem.starts_with("-----BEGIN PRIVATE KEY-----"),
                    "{name}: PKCS#8"
                );
            } else {
                assert_eq!(mode & 0o600, 0o600, "{name}");
                let expected = if name.contains("ecdsa") { ecdsa } else { rsa };
                assert_eq!(&pem_file_der(&path), expected, "{name} is what was served");
            }
        }
    }

    let before: Vec<Vec<u8>> = want
        .iter()
        .map(|n| std::fs::read(ssl.join(n)).unwrap())
        .collect();
    let second = Gw::start_with(settings(), None).await;
    for (addr, pair) in tls_addrs(&second.gw).into_iter().zip(&served) {
        assert_eq!(
            &default_pair(addr).await,
            pair,
            "the same certificates after a restart"
        );
    }
    second.gw.shutdown().await;
    let after: Vec<Vec<u8>> = want
        .iter()
        .map(|n| std::fs::read(ssl.join(n)).unwrap())
        .collect();
    assert!(before == after, "the files are read, not rewritten");

    // Both files of the proxy listeners' RSA pair gone: that pair alone is generated again.
    std::fs::remove_file(ssl.join("kong-default.crt")).unwrap();
    std::fs::remove_file(ssl.join("kong-default.key")).unwrap();
    let third = Gw::start_with(settings(), None).await;
    let (ecdsa, rsa) = default_pair(third.https).await;
    assert_eq!(ecdsa, served[0].0);
    assert_ne!(rsa, served[0].1, "a new RSA certificate");
    assert_eq!(pem_file_der(&ssl.join("kong-default.crt")), rsa);
    assert_eq!(default_pair(third.admin_tls()).await, served[1]);
    third.gw.shutdown().await;
}

/// A pair is generated (and written) only for a kind of listener that serves it: an `ssl`
/// listener and its certificate setting unset.
#[tokio::test]
async fn a_prefix_gets_only_the_pairs_its_listeners_serve() {
    let dir = TempDir::new("prefix-only-needed");
    // TLS on the proxy listeners only.
    let settings = silverback_proxy::Settings {
        prefix: Some(dir.path().to_path_buf()),
        ..silverback_proxy::Settings::loopback()
    };
    let g = Gw::start_with(settings, None).await;
    default_pair(g.https).await;
    g.gw.shutdown().await;
    let mut want: Vec<String> = kong_files("").into_iter().map(|(n, _)| n).collect();
    want.push(".lock".into());
    want.sort();
    assert_eq!(file_names(&dir.path().join("ssl")), want);

    // TLS everywhere, the proxy listeners with `ssl_cert`: the admin and status pairs.
    let dir = TempDir::new("prefix-only-needed");
    let mut settings = tls_everywhere();
    settings.prefix = Some(dir.path().to_path_buf());
    settings.ssl_cert =
        silverback_proxy::SslCert::parse(&pki_path("rsa.crt"), &pki_path("rsa.key"));
    let g = Gw::start_with(settings, None).await;
    default_pair(g.admin_tls()).await;
    default_pair(g.status_tls()).await;
    g.gw.shutdown().await;
    let mut want: Vec<String> = ["admin-", "status-"]
        .iter()
        .flat_map(|lead| kong_files(lead).into_iter().map(|(n, _)| n))
        .collect();
    want.push(".lock".into());
    want.sort();
    assert_eq!(file_names(&dir.path().join("ssl")), want);
}

/// Two gateways starting at once on one empty prefix (as two processes would: the prefix's
/// lock is a file lock) present one pair of certificates, the one written there.
#[tokio::test]
async fn two_gateways_starting_on_one_empty_prefix_present_one_pair() {
    let dir = TempDir::new("prefix-two-starts");
    let settings = || silverback_proxy::Settings {
        prefix: Some(dir.path().to_path_buf()),
        ..silverback_proxy::Settings::loopback()
    };
    let (a, b) = tokio::join!(
        Gw::start_with(settings(), None),
        Gw::start_with(settings(), None)
    );
    let served = default_pair(a.https).await;
    assert_eq!(default_pair(b.https).await, served, "both present one pair");
    let ssl = dir.path().join("ssl");
    assert_eq!(pem_file_der(&ssl.join("kong-default-ecdsa.crt")), served.0);
    assert_eq!(pem_file_der(&ssl.join("kong-default.crt")), served.1);
    a.gw.shutdown().await;
    b.gw.shutdown().await;
}

/// A pair kept in the prefix that cannot be used stops the start with an error naming the
/// file, never quoting it; so does a prefix that is not a directory. Files of a kind without
/// TLS are not read.
#[tokio::test]
async fn unusable_default_certificates_in_the_prefix_fail_the_start() {
    let dir = TempDir::new("prefix-unusable");
    let settings = || silverback_proxy::Settings {
        prefix: Some(dir.path().to_path_buf()),
        ..silverback_proxy::Settings::loopback()
    };
    let g = Gw::start_with(settings(), None).await;
    default_pair(g.https).await;
    g.gw.shutdown().await;
    let ssl = dir.path().join("ssl");
    let start_error = || async {
        match silverback_proxy::Gateway::start(settings(), None).await {
            Ok(_) => panic!("the start should fail"),
            Err(e) => e.to_string(),
        }
    };

    // A key file that is not a key, holding text that would show if quoted.
    let key = ssl.join("kong-default-ecdsa.key");
    let good_key = std::fs::read(&key).unwrap();
    std::fs::write(
        &key,
        "-----BEGIN PRIVATE KEY-----c2VjcmV0IGtleQ==-----END PRIVATE KEY-----",
    )
    .unwrap();
    let e = start_error().await;
    assert!(
        e.starts_with(&format!(
            "default certificate file {}: invalid key",
            key.display()
        )),
        "{e}"
    );
    assert!(!e.contains("c2VjcmV0"), "{e}");
    std::fs::write(&key, &good_key).unwrap();

    // A certificate that is not one.
    let crt = ssl.join("kong-default.crt");
    let good_crt = std::fs::read(&crt).unwrap();
    std::fs::write(&crt, "garbage").unwrap();
    let e = start_error().await;
    assert!(
        e.starts_with(&format!(
            "default certificate file {}: invalid certificate",
            crt.display()
        )),
        "{e}"
    );
    // Half a pair: not generated again (Kong's rule), the missing file named.
    std::fs::remove_file(&crt).unwrap();
    let e = start_error().await;
    assert_eq!(
        e,
        format!(
            "default certificate file {crt}: No such file or directory (os error 2) (delete \
             {crt} and {key} to have a new pair generated)",
            crt = crt.display(),
            key = ssl.join("kong-default.key").display()
        )
    );
    // The proxy listeners without TLS do not read them.
    let plain = silverback_proxy::Settings {
        proxy_listen: silverback_proxy::Listen::parse_list("127.0.0.1:0").unwrap(),
        ..settings()
    };
    Gw::start_with(plain, None).await.gw.shutdown().await;
    std::fs::write(&crt, &good_crt).unwrap();
    let g = Gw::start_with(settings(), None).await;
    g.gw.shutdown().await;

    // A prefix that is a file (Kong's message).
    let file = dir.path().join("ssl").join("kong-default.crt");
    let settings = silverback_proxy::Settings {
        prefix: Some(file.clone()),
        ..silverback_proxy::Settings::loopback()
    };
    let e = match silverback_proxy::Gateway::start(settings, None).await {
        Ok(_) => panic!("the start should fail"),
        Err(e) => e.to_string(),
    };
    assert_eq!(e, format!("{} is not a directory", file.display()));
}

/// Connections hyper serves close after `keepalive_timeout` without a request, as nginx's
/// do: an HTTP/2 connection whose client keeps answering pings, and a TLS connection that
/// agreed on h2 but never sends the preface.
#[tokio::test]
async fn idle_connections_close_after_the_keepalive_timeout() {
    let b = Backend::start().await;
    let mut settings = silverback_proxy::Settings::loopback();
    settings.keepalive_timeout = Duration::from_millis(300);
    let g = Gw::start_with(settings, Some(&basic(&b))).await;
    // h2c prior knowledge: one request, then quiet: the gateway sends GOAWAY and closes.
    let s = tokio::net::TcpStream::connect(g.http).await.unwrap();
    let (mut tx, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(s),
    )
    .await
    .unwrap();
    let ended = tokio::spawn(conn);
    // A streamed answer longer than the timeout (30 pieces 20 ms apart) is no idle time: the
    // connection still takes a request after it.
    let r = tx
        .send_request(
            http::Request::get("http://x/any/slow/30")
                .body(Full::<Bytes>::default())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body = r.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body.len(), 30 * 1024);
    let t = std::time::Instant::now();
    let r = tx
        .send_request(
            http::Request::get("http://x/any/a")
                .body(Full::<Bytes>::default())
                .unwrap(),
        )
        .await
        .expect("the connection was kept through the long answer");
    assert_eq!(r.status(), 200);
    tokio::time::timeout(Duration::from_secs(5), ended)
        .await
        .expect("the idle HTTP/2 connection is closed")
        .unwrap()
        .ok();
    // (measured from before the last request: the quiet time starts after its answer)
    assert!(
        t.elapsed() >= Duration::from_millis(300),
        "{:?}",
        t.elapsed()
    );
    // TLS with ALPN h2, and nothing after the handshake.
    let (mut tls, _, alpn) = tls_connect(g.https, "localhost", &[b"h2"]).await;
    assert_eq!(alpn.as_deref(), Some(&b"h2"[..]));
    assert!(
        read_to_close(&mut tls, Duration::from_secs(5)).await.1,
        "a connection that never sends the preface is closed"
    );
    g.gw.shutdown().await;
}

/// A TLS connection that agreed on `h2` by ALPN speaks HTTP/2 only: HTTP/1 bytes there are
/// a protocol error, not a request served past the HTTP/1 framing checks.
#[tokio::test]
async fn alpn_h2_connections_take_http2_only() {
    let b = Backend::start().await;
    let g = Gw::start(Some(&basic(&b))).await;
    let (mut tls, _, alpn) = tls_connect(g.https, "localhost", &[b"h2"]).await;
    assert_eq!(alpn.as_deref(), Some(&b"h2"[..]));
    tls.write_all(b"GET /any/a HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let (got, closed) = read_to_close(&mut tls, Duration::from_secs(5)).await;
    assert!(closed, "the connection is refused, not left open");
    assert!(
        !got.starts_with(b"HTTP/1"),
        "{}",
        String::from_utf8_lossy(&got)
    );
    g.gw.shutdown().await;
}

/// The config of one gRPC service to `addr` (`retries` as given), routed on `/`.
fn grpc_service(addr: std::net::SocketAddr, retries: u32) -> String {
    format!(
        "_format_version: \"3.0\"\nservices:\n- name: grpc\n  url: grpc://{addr}\n  retries: {retries}\n  routes:\n  - name: grpc\n    paths: [\"/\"]\n    protocols: [\"grpc\"]\n"
    )
}

/// A gRPC-looking call with `method` (an idempotent GET, or a POST as every gRPC call).
fn grpc_call(method: &str) -> http::Request<Full<Bytes>> {
    http::Request::builder()
        .method(method)
        .uri("http://x/pkg.Svc/Call")
        .header("content-type", "application/grpc")
        .body(Full::new(Bytes::from_static(b"\0\0\0\0\0")))
        .expect("a request")
}

/// An h2 upstream that refuses a stream with GOAWAY after the gateway sent it on a pooled
/// connection (naming an earlier stream as the last it processed): a 502, not sent again,
/// whatever the method and the retries left, as nginx's gRPC module takes such a refusal
/// for an invalid answer ("upstream sent goaway", `invalid_header`, which Kong's
/// `proxy_next_upstream` does not retry). The connection that refused it is closed, not
/// pooled again, and the next request goes on a fresh one.
#[tokio::test]
async fn h2_upstream_goaway_refusing_a_sent_stream() {
    let (addr, log) = support::h2_second_stream_refused(2, false).await;
    let g = Gw::start(Some(&grpc_service(addr, 5))).await;
    let mut c = H2::h2c(g.http).await;
    let seen = |n: &std::sync::atomic::AtomicUsize| n.load(std::sync::atomic::Ordering::SeqCst);
    let r = c.send(grpc_call("POST")).await;
    assert_eq!((r.status.as_u16(), &r.body[..]), (200, &b"c1"[..]));
    for (i, method) in ["GET", "POST"].into_iter().enumerate() {
        // on the pooled connection, which refuses it: not sent again
        let r = c.send(grpc_call(method)).await;
        assert_eq!(
            seen(&log.refused),
            i + 1,
            "{method}: the stream was sent and refused"
        );
        assert_eq!(r.status.as_u16(), 502, "{method}");
        // (Kong's error handler: `grpc-status` and `grpc-message`, no `Content-Type`)
        assert!(r.header("grpc-status").is_some(), "{:?}", r.headers);
        assert_eq!(
            r.header("grpc-message"),
            Some("An invalid response was received from the upstream server")
        );
        assert_eq!(r.header("content-type"), None, "{:?}", r.headers);
        assert_eq!(
            seen(&log.conns),
            i + 1,
            "{method}: no other connection was opened for it"
        );
        // the next call does not get that connection back
        let r = c.send(grpc_call("POST")).await;
        let body = format!("c{}", i + 2);
        assert_eq!(
            (r.status.as_u16(), &r.body[..]),
            (200, body.as_bytes()),
            "{method}"
        );
    }
    assert_eq!((seen(&log.conns), seen(&log.answered)), (3, 3));
    g.gw.shutdown().await;
}

/// A kept-alive HTTP/2 connection that closes under a call it took is an error on a cached
/// connection, whose try nginx gives back: with `retries: 0` an idempotent call still goes
/// again on a new connection (a POST, never sent twice, is a 502).
#[tokio::test]
async fn h2_upstream_closing_a_kept_connection_gives_its_try_back() {
    let (addr, log) = support::h2_second_stream_refused(2, true).await;
    let g = Gw::start(Some(&grpc_service(addr, 0))).await;
    let mut c = H2::h2c(g.http).await;
    let seen = |n: &std::sync::atomic::AtomicUsize| n.load(std::sync::atomic::Ordering::SeqCst);
    let r = c.send(grpc_call("POST")).await;
    assert_eq!((r.status.as_u16(), &r.body[..]), (200, &b"c1"[..]));
    let r = c.send(grpc_call("GET")).await;
    assert_eq!(seen(&log.refused), 1);
    assert_eq!((r.status.as_u16(), &r.body[..]), (200, &b"c2"[..]));
    let r = c.send(grpc_call("POST")).await;
    assert_eq!(seen(&log.refused), 2);
    assert_eq!(r.status.as_u16(), 502);
    g.gw.shutdown().await;
}

/// Upstream requests written at the end of the scheduler's batch (`batch_write`, on by
/// default with one worker: this test's runtime is the current-thread one the gateway runs
/// on): many keep-alive clients at once, each request's answer is its own, and the
/// upstream connections are reused. The same with the setting off.
#[tokio::test]
async fn concurrent_requests_written_at_the_end_of_the_batch_get_their_own_answers() {
    use silverback_proxy::BatchWrites;
    for batch in [BatchWrites::On, BatchWrites::Upstream, BatchWrites::Off] {
        let b = Backend::start().await;
        let yaml = format!(
            "_format_version: '3.0'\nservices:\n- name: s\n  url: {}\n  routes:\n  - name: r\n    paths: [/]\n",
            b.url()
        );
        let mut settings = silverback_proxy::Settings::loopback();
        settings.batch_writes = batch;
        let g = Gw::start_with(settings, Some(&yaml)).await;
        // (the gateway runs on this test's thread, where the deferred writes are counted)
        let deferred = silverback_proxy::batch_write::deferred_on_this_thread();
        let clients = (0..40).map(|c| {
            let addr = g.http;
            tokio::spawn(async move {
                let mut h = H1::connect(addr).await;
                for i in 0..25 {
                    let path = format!("/c{c}/r{i}");
                    let r = h.get("batch.test", &path).await;
                    assert_eq!(r.status, 200, "{path}");
                    assert_eq!(r.json()["uri"], path.as_str());
                }
            })
        });
        for c in clients.collect::<Vec<_>>() {
            c.await.expect("client");
        }
        assert_eq!(b.served(), 1000, "batch writes {batch:?}");
        // every request, and with `On` every answer, went at the end of a batch
        let want = match batch {
            BatchWrites::On => 2000,
            BatchWrites::Upstream => 1000,
            BatchWrites::Off => 0,
        };
        assert_eq!(
            silverback_proxy::batch_write::deferred_on_this_thread() - deferred,
            want,
            "batch writes {batch:?}"
        );
        // (keep-alive upstream connections: far fewer than requests)
        assert!(
            b.connections.load(std::sync::atomic::Ordering::SeqCst) <= 80,
            "batch writes {batch:?}: {} connections",
            b.connections.load(std::sync::atomic::Ordering::SeqCst)
        );
    }
}

/// An answer written at the end of the batch reaches a client that ended its side of the
/// connection after its request, whole, then the connection closes.
#[tokio::test]
async fn a_half_closed_client_gets_its_batched_answer() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let b = Backend::start().await;
    let yaml = format!(
        "_format_version: '3.0'\nservices:\n- name: s\n  url: {}\n  routes:\n  - name: r\n    paths: [/]\n",
        b.url()
    );
    let g = Gw::start(Some(&yaml)).await;
    for _ in 0..20 {
        let mut c = tokio::net::TcpStream::connect(g.http)
            .await
            .expect("connect");
        c.write_all(b"GET /half HTTP/1.1\r\nHost: h.test\r\n\r\n")
            .await
            .expect("write");
        c.shutdown().await.expect("half-close");
        let mut all = Vec::new();
        tokio::time::timeout(std::time::Duration::from_secs(5), c.read_to_end(&mut all))
            .await
            .expect("in time")
            .expect("read");
        let text = String::from_utf8_lossy(&all);
        assert!(text.starts_with("HTTP/1.1 200 "), "{text}");
        assert!(text.contains("\"uri\":\"/half\""), "{text}");
    }
}

/// An nginx error past Kong's access phase (an upstream refusing the connection) carries a
/// proxied answer's headers, as Kong's error handler restores the request's context where
/// `KONG_PROXIED` is set: the upstream and proxy latencies, `Via` and `Server`, not
/// `X-Kong-Response-Latency`. An error of Kong's own phases (no route; no target to pick, a
/// failure of its access phase) keeps a Kong answer's headers.
#[tokio::test]
async fn errors_past_the_access_phase_carry_proxied_headers() {
    let dead = dead_addr("127.0.0.1").await;
    let cfg = format!(
        r#"
_format_version: "3.0"
upstreams:
- name: empty
services:
- name: dead
  url: http://{dead}
  routes:
  - name: dead
    paths: ["/dead"]
- name: empty
  host: empty
  routes:
  - name: empty
    paths: ["/empty"]
"#
    );
    let g = Gw::start(Some(&cfg)).await;
    let mut c = H1::connect(g.http).await;
    let version = silverback_proxy::KONG_VERSION;
    let r = c.get("x", "/dead").await;
    assert_eq!(r.status, 502);
    for h in [
        "x-kong-upstream-latency",
        "x-kong-proxy-latency",
        "x-kong-request-id",
    ] {
        assert!(
            r.header(h)
                .is_some_and(|v| v.parse::<u64>().is_ok() || h.ends_with("id")),
            "{h}"
        );
    }
    assert_eq!(
        r.header("via"),
        Some(format!("1.1 kong/{version}").as_str())
    );
    assert_eq!(r.header("server"), Some(format!("kong/{version}").as_str()));
    assert_eq!(r.header("x-kong-response-latency"), None);
    for path in ["/nothing", "/empty"] {
        let r = c.get("x", path).await;
        assert!(r.status == 404 || r.status == 503, "{path}: {}", r.status);
        assert!(r.header("x-kong-response-latency").is_some(), "{path}");
        assert_eq!(r.header("via"), None, "{path}");
        assert_eq!(r.header("x-kong-upstream-latency"), None, "{path}");
        assert_eq!(r.header("server"), Some(format!("kong/{version}").as_str()));
    }
    g.gw.shutdown().await;
}

/// A `HEAD` to an answer of the gateway's own (no route; an upstream that refuses) gets
/// the head of the `GET`'s answer, its `Content-Length` included, as nginx keeps the length
/// Kong's `kong.response.exit` sets; on both request paths.
#[tokio::test]
async fn head_requests_get_the_length_of_the_gateways_answers() {
    let cfg = dead_service_doc().await;
    for fast_h1 in [true, false] {
        let settings = silverback_proxy::Settings {
            fast_h1,
            ..silverback_proxy::Settings::loopback()
        };
        let g = Gw::start_with(settings, Some(&cfg)).await;
        let w = Duration::from_millis(300);
        for path in ["/nothing", "/dead"] {
            let get = raw(
                g.http,
                format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(),
                w,
            )
            .await;
            let (get_head, get_body) = get.split_once("\r\n\r\n").unwrap();
            let length = get_head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length: ")
                        .map(str::to_string)
                })
                .unwrap_or_else(|| panic!("{get}"));
            assert_eq!(length, get_body.len().to_string(), "{get}");
            let head = raw(
                g.http,
                format!("HEAD {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(),
                w,
            )
            .await;
            let (head_head, head_body) = head.split_once("\r\n\r\n").unwrap();
            assert_eq!(head_body, "", "fast {fast_h1} {path}");
            assert!(
                head_head
                    .to_ascii_lowercase()
                    .contains(&format!("\r\ncontent-length: {length}")),
                "fast {fast_h1} {path}: {head}"
            );
        }
        g.gw.shutdown().await;
    }
}

/// An nginx error to a request that asks for gRPC without being gRPC (HTTP/1.1) is Kong's
/// `{"message":…}` in JSON, as its error handler's table goes through `kong.response.exit`,
/// which answers the gRPC way only to HTTP/2 gRPC requests.
#[tokio::test]
async fn grpc_looking_http1_requests_get_json_errors() {
    let cfg = dead_service_doc().await;
    let g = Gw::start(Some(&cfg)).await;
    let mut c = H1::connect(g.http).await;
    for (name, value) in [
        ("content-type", "application/grpc"),
        ("accept", "application/grpc"),
    ] {
        let r = c
            .send(
                req("POST", "x", "/dead")
                    .header(name, value)
                    .body(Full::new(Bytes::from_static(b"\0\0\0\0\0")))
                    .unwrap(),
            )
            .await;
        assert_eq!(r.status, 502, "{name}");
        assert_eq!(
            r.header("content-type"),
            Some("application/json; charset=utf-8"),
            "{name}"
        );
        assert_eq!(
            r.text(),
            r#"{"message":"An invalid response was received from the upstream server"}"#
        );
        assert_eq!(r.header("grpc-status"), None);
    }
    g.gw.shutdown().await;
}

/// Every HTTP/1.1 answer says whether the connection stays open, as nginx writes it:
/// `Connection: keep-alive` (on both request paths), or `close` when the client asked for
/// it or the request is refused; one line, never both.
#[tokio::test]
async fn http1_answers_say_keep_alive_or_close() {
    let b = Backend::start().await;
    let g = Gw::start(Some(&basic(&b))).await;
    let w = Duration::from_millis(300);
    let connection = |out: &str| -> Vec<String> {
        let head = out.split("\r\n\r\n").next().unwrap_or("");
        head.lines()
            .filter_map(|l| {
                let (n, v) = l.split_once(':')?;
                n.eq_ignore_ascii_case("connection")
                    .then(|| v.trim().to_ascii_lowercase())
            })
            .collect()
    };
    for (req, want) in [
        (&b"GET /any HTTP/1.1\r\nHost: x\r\n\r\n"[..], "keep-alive"),
        (
            b"POST /any HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi",
            "keep-alive",
        ),
        (
            b"GET /nothing-here HTTP/1.1\r\nHost: x\r\n\r\n",
            "keep-alive",
        ),
        (
            b"GET /any HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            "close",
        ),
        (
            b"GET /any HTTP/1.1\r\nHost: x\r\nConnection: TE, close\r\nTE: trailers\r\n\r\n",
            "close",
        ),
        (
            b"GET /any HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            "close",
        ),
    ] {
        let out = raw(g.http, req, w).await;
        assert_eq!(
            connection(&out),
            [want],
            "{}: {out}",
            String::from_utf8_lossy(req)
        );
    }
    g.gw.shutdown().await;
}

/// Kong's `port_maps`: a listener's port as clients reach it (a Service mapping 80 to the
/// gateway's port) is what `X-Forwarded-Port` says and what a route host's `:port` matches
/// when the `Host` header has no port, on both request paths; a `Host` port still wins.
#[tokio::test]
async fn port_maps_give_the_port_clients_use() {
    let on80 = Backend::builder().name("on80").run().await;
    let any = Backend::builder().name("any").run().await;
    // (a free port, named in `port_maps` before the listener takes it)
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = format!(
        "_format_version: \"3.0\"\nservices:\n- name: on80\n  url: {}\n  routes:\n  - name: on80\n    hosts: [\"a.test:80\"]\n- name: any\n  url: {}\n  routes:\n  - name: any\n    paths: [\"/\"]\n",
        on80.url(),
        any.url()
    );
    for fast_h1 in [true, false] {
        let settings = silverback_proxy::Settings {
            proxy_listen: silverback_proxy::Listen::parse_list(&format!("127.0.0.1:{port}"))
                .unwrap(),
            port_maps: silverback_proxy::PortMaps::parse(&format!("80:{port}")).unwrap(),
            fast_h1,
            ..silverback_proxy::Settings::loopback()
        };
        let g = Gw::start_with(settings, Some(&cfg)).await;
        let mut c = H1::connect(g.http).await;
        for (host, backend) in [
            ("a.test".to_string(), "on80"),
            ("a.test:80".to_string(), "on80"),
            (format!("a.test:{port}"), "any"),
        ] {
            let r = c.get(&host, "/x").await;
            assert_eq!(r.status, 200, "{host}");
            assert_eq!(
                r.header("x-backend"),
                Some(backend),
                "fast {fast_h1} {host}"
            );
            assert_eq!(
                r.json()["headers"]["x-forwarded-port"],
                "80",
                "fast {fast_h1}"
            );
        }
        g.gw.shutdown().await;
    }
}

/// A configuration of one service, `dead`, on an address where nothing listens (connections
/// refused: a 502), routed at `/dead`.
async fn dead_service_doc() -> String {
    let dead = dead_addr("127.0.0.1").await;
    format!(
        "_format_version: \"3.0\"\nservices:\n- name: dead\n  url: http://{dead}\n  routes:\n  - name: dead\n    paths: [\"/dead\"]\n"
    )
}

/// A body the gateway answers without reading (no route: 404; an https-only route: 426) is
/// discarded as nginx discards it, and the connection serves the next request: whether the
/// body came with the head, after the answer, or chunked. A body that stops arriving ends
/// the connection after nginx's `lingering_timeout` (5 s); so does the answer to a client
/// that waited for `100 Continue`.
#[tokio::test]
async fn unread_bodies_are_discarded_and_the_connection_kept() {
    let b = Backend::start().await;
    let g = Gw::start(Some(&basic(&b))).await;
    let next = b"GET /any HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut s = tokio::net::TcpStream::connect(g.http).await.unwrap();
    // the body with the head
    s.write_all(b"POST /nowhere HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
        .await
        .unwrap();
    let a = read_answer(&mut s).await;
    assert!(a.starts_with("HTTP/1.1 404 "), "{a}");
    assert!(a.contains("\r\nConnection: keep-alive\r\n"), "{a}");
    s.write_all(next).await.unwrap();
    let a = read_answer(&mut s).await;
    assert!(a.starts_with("HTTP/1.1 200 "), "{a}");
    // the body after the answer (a large one, in pieces), on an https-only route
    s.write_all(b"PUT /secure HTTP/1.1\r\nHost: x\r\nContent-Length: 1048576\r\n\r\n")
        .await
        .unwrap();
    let a = read_answer(&mut s).await;
    assert!(a.starts_with("HTTP/1.1 426 "), "{a}");
    for _ in 0..16 {
        s.write_all(&[b'z'; 65536]).await.unwrap();
    }
    s.write_all(next).await.unwrap();
    let a = read_answer(&mut s).await;
    assert!(a.starts_with("HTTP/1.1 200 "), "{a}");
    // chunked
    s.write_all(b"POST /nowhere HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
        .await
        .unwrap();
    let a = read_answer(&mut s).await;
    assert!(a.starts_with("HTTP/1.1 404 "), "{a}");
    s.write_all(next).await.unwrap();
    let a = read_answer(&mut s).await;
    assert!(a.starts_with("HTTP/1.1 200 "), "{a}");
    // a client waiting for `100 Continue` (which the gateway, answering first, does not
    // send) may send its next request instead of the body: that connection is closed
    let mut e = tokio::net::TcpStream::connect(g.http).await.unwrap();
    e.write_all(
        b"POST /nowhere HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 30\r\n\r\n",
    )
    .await
    .unwrap();
    let (a, closed) = read_to_close(&mut e, Duration::from_secs(5)).await;
    let a = String::from_utf8_lossy(&a);
    assert!(a.starts_with("HTTP/1.1 404 "), "{a}");
    assert!(a.contains("\r\nConnection: close\r\n"), "{a}");
    assert!(closed, "{a}");
    // a body that stops: the connection is closed once the client has been quiet for 5 s
    s.write_all(b"POST /nowhere HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nhel")
        .await
        .unwrap();
    let a = read_answer(&mut s).await;
    assert!(a.starts_with("HTTP/1.1 404 "), "{a}");
    let t = std::time::Instant::now();
    let (rest, closed) = read_to_close(&mut s, Duration::from_secs(10)).await;
    assert!(closed && rest.is_empty(), "{rest:?}");
    let waited = t.elapsed();
    assert!(
        waited >= Duration::from_millis(4500) && waited < Duration::from_secs(8),
        "{waited:?}"
    );
    g.gw.shutdown().await;
}

/// The HTTP/2 settings are nginx's (Kong's server blocks set none of their own): 128
/// concurrent streams, a 64k stream window (`http2_body_preread_size`), frames up to the
/// largest size, and the connection window opened to its largest by a WINDOW_UPDATE.
#[tokio::test]
async fn h2_settings_are_nginxs() {
    let b = Backend::start().await;
    let g = Gw::start(Some(&basic(&b))).await;
    let mut s = tokio::net::TcpStream::connect(g.http).await.unwrap();
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut settings = None;
    let mut window = None;
    let mut buf = [0u8; 4096];
    while settings.is_none() || window.is_none() {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("frames within 5 s")
            .unwrap();
        assert!(n > 0, "closed");
        got.extend_from_slice(&buf[..n]);
        while got.len() >= 9 {
            let len = usize::from(got[0]) << 16 | usize::from(got[1]) << 8 | usize::from(got[2]);
            if got.len() < 9 + len {
                break;
            }
            let (kind, flags) = (got[3], got[4]);
            let stream = u32::from_be_bytes([got[5], got[6], got[7], got[8]]) & 0x7fff_ffff;
            let payload = got[9..9 + len].to_vec();
            got.drain(..9 + len);
            match kind {
                4 if flags & 1 == 0 => {
                    settings = Some(
                        payload
                            .chunks(6)
                            .map(|e| {
                                (
                                    u16::from_be_bytes([e[0], e[1]]),
                                    u32::from_be_bytes([e[2], e[3], e[4], e[5]]),
                                )
                            })
                            .collect::<std::collections::BTreeMap<_, _>>(),
                    );
                }
                8 if stream == 0 => {
                    window = Some(u32::from_be_bytes([
                        payload[0], payload[1], payload[2], payload[3],
                    ]));
                }
                _ => {}
            }
        }
    }
    let settings = settings.unwrap();
    // SETTINGS_MAX_CONCURRENT_STREAMS, _INITIAL_WINDOW_SIZE, _MAX_FRAME_SIZE
    assert_eq!(settings.get(&3), Some(&128), "{settings:?}");
    assert_eq!(settings.get(&4), Some(&65_536), "{settings:?}");
    assert_eq!(settings.get(&5), Some(&16_777_215), "{settings:?}");
    // from the default 65,535 to 2^31 - 1
    assert_eq!(window, Some((1 << 31) - 1 - 65_535));
    drop(s);
    g.gw.shutdown().await;
}

/// An HTTP/2 request's cookie fields reach an HTTP/1.1 upstream as one `Cookie` line,
/// joined with `; ` (RFC 9113 §8.2.3), as nginx's HTTP/2 module joins them.
#[tokio::test]
async fn h2_cookies_are_joined_for_an_http1_upstream() {
    let b = Backend::start().await;
    let g = Gw::start(Some(&basic(&b))).await;
    let mut c = H2::h2c(g.http).await;
    let r = c
        .send(
            http::Request::get("http://h2c.test/any")
                .header("cookie", "a=1")
                .header("cookie", "b=2")
                .body(Full::default())
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, 200);
    // (the echo backend would show two lines as `a=1, b=2`)
    assert_eq!(r.json()["headers"]["cookie"], "a=1; b=2");
    g.gw.shutdown().await;
}

/// An HTTP/2 request with neither `:authority` nor `Host`, or with an invalid host, is a
/// 400, as nginx refuses a request past HTTP/1.0 without a host.
#[tokio::test]
async fn h2_requests_need_a_valid_host() {
    let b = Backend::start().await;
    let g = Gw::start(Some(&basic(&b))).await;
    let tcp = tokio::net::TcpStream::connect(g.http).await.unwrap();
    let (mut tx, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(conn);
    for (uri, host, want) in [
        ("/any", None, 400),
        ("/any", Some("x"), 200),
        ("http://a..b/any", None, 400),
        ("http://ok.test/any", None, 200),
    ] {
        let mut r = http::Request::get(uri);
        if let Some(h) = host {
            r = r.header("host", h);
        }
        let (answer, _) = tx.send_request(r.body(()).unwrap(), true).unwrap();
        let answer = answer.await.unwrap();
        assert_eq!(answer.status().as_u16(), want, "{uri} {host:?}");
    }
    drop(tx);
    g.gw.shutdown().await;
}

/// `keepalive_requests` (Kong's `nginx_http_keepalive_requests`): the request that reaches
/// it is answered with `Connection: close` and its connection closed, on the fast path and
/// on hyper's (the count goes on across the hand-over); an HTTP/2 connection is shut down
/// gracefully (GOAWAY) once it took that many streams. The admin and status listeners
/// count theirs alike.
#[tokio::test]
async fn keepalive_requests_ends_a_connection() {
    let b = Backend::start().await;
    let mut s = silverback_proxy::Settings::loopback();
    s.keepalive_requests = 3;
    let g = Gw::start_with(s, Some(&basic(&b))).await;
    let mut c = tokio::net::TcpStream::connect(g.http).await.unwrap();
    for (i, raw) in [
        "GET /any HTTP/1.1\r\nHost: x\r\n\r\n",
        "POST /any HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nz",
        "GET /any HTTP/1.1\r\nHost: x\r\n\r\n",
    ]
    .into_iter()
    .enumerate()
    {
        c.write_all(raw.as_bytes()).await.unwrap();
        let a = read_answer(&mut c).await;
        assert!(a.starts_with("HTTP/1.1 200 "), "{i}: {a}");
        let close = a.to_ascii_lowercase().contains("\r\nconnection: close\r\n");
        assert_eq!(close, i == 2, "{i}: {a}");
    }
    let (rest, closed) = read_to_close(&mut c, Duration::from_secs(5)).await;
    assert!(closed && rest.is_empty(), "{rest:?}");

    // HTTP/2: the third stream is answered, then the connection ends
    let tcp = tokio::net::TcpStream::connect(g.http).await.unwrap();
    let (mut tx, conn) = h2::client::handshake(tcp).await.unwrap();
    let conn = tokio::spawn(conn);
    for _ in 0..3 {
        let r = http::Request::get("http://h2.test/any").body(()).unwrap();
        let (answer, _) = tx.send_request(r, true).unwrap();
        assert_eq!(answer.await.unwrap().status(), 200);
    }
    // (the client still holds the connection: the gateway ends it)
    tokio::time::timeout(Duration::from_secs(5), conn)
        .await
        .expect("the connection ends after its last stream")
        .unwrap()
        .unwrap();
    let r = http::Request::get("http://h2.test/any").body(()).unwrap();
    assert!(
        tx.send_request(r, true).is_err(),
        "no stream after the GOAWAY"
    );

    // the admin and status listeners count their requests too (Kong's servers are nginx's)
    for addr in [g.admin, g.status] {
        let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
        for i in 0..3 {
            c.write_all(b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n")
                .await
                .unwrap();
            let a = read_answer(&mut c).await;
            assert!(a.starts_with("HTTP/1.1 200 "), "{addr} {i}: {a}");
            let close = a.to_ascii_lowercase().contains("\r\nconnection: close\r\n");
            assert_eq!(close, i == 2, "{addr} {i}: {a}");
        }
        let (rest, closed) = read_to_close(&mut c, Duration::from_secs(5)).await;
        assert!(closed && rest.is_empty(), "{addr}: {rest:?}");
    }
    g.gw.shutdown().await;
}

/// Kong's `ssl_cipher_suite` chooses the TLS versions of the `ssl` listeners: `modern` is
/// TLS 1.3 alone (a client speaking only TLS 1.2 is refused), `fips` TLS 1.2 alone (a
/// client offering both gets TLS 1.2), `intermediate`, the default, both.
#[tokio::test]
async fn the_cipher_suite_chooses_the_tls_versions() {
    use rustls::ProtocolVersion::{TLSv1_2, TLSv1_3};
    use silverback_proxy::{Settings, TlsVersions};
    async fn version(
        addr: std::net::SocketAddr,
        tls12_only: bool,
    ) -> std::io::Result<rustls::ProtocolVersion> {
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        let name = rustls::pki_types::ServerName::try_from("example.test").unwrap();
        let tls = tokio_rustls::TlsConnector::from(resuming_client(tls12_only))
            .connect(name, tcp)
            .await?;
        Ok(tls.get_ref().1.protocol_version().unwrap())
    }
    for (suite, both, tls12_only) in [
        ("intermediate", Some(TLSv1_3), Some(TLSv1_2)),
        ("modern", Some(TLSv1_3), None),
        ("fips", Some(TLSv1_2), Some(TLSv1_2)),
    ] {
        let mut settings = Settings::loopback();
        settings.tls_versions = TlsVersions::from_kong(suite, "").unwrap().0;
        let g = Gw::start_with(settings, None).await;
        assert_eq!(version(g.https, false).await.ok(), both, "{suite}");
        assert_eq!(version(g.https, true).await.ok(), tls12_only, "{suite}");
        // (a refused handshake leaves the listener serving)
        assert_eq!(version(g.https, false).await.ok(), both, "{suite}");
        g.gw.shutdown().await;
    }
}
