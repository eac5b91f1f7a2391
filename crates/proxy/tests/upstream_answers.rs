//! HTTP/1.1 upstream answers as Kong's nginx (1.27) takes them, against a backend that sends
//! the exact bytes (`RawBackend`): an answer nginx refuses (bad head, a head past
//! `proxy_buffer_size`, a second `Content-Length`, `Content-Length` with
//! `Transfer-Encoding`, another transfer coding) is a 502 sent once, not retried (nginx's
//! `invalid_header` is not in Kong's `proxy_next_upstream`), where a connection closed before
//! an answer is retried; the headers nginx hides stay out; chunked bodies with bare LF line
//! ends are read; an HTTP/1.0 answer's connection is not reused; the fast path writes the
//! headers it sets in Kong's case; a WebSocket upstream's 101 keeps its own reason phrase. Each runs through the fast path and hyper's server.

mod support;

use silverback_proxy::Settings;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

use support::*;

fn config(be: &RawBackend, retries: Option<u32>) -> String {
    let retries = retries
        .map(|r| format!("  retries: {r}\n"))
        .unwrap_or_default();
    format!(
        r#"
_format_version: "3.0"
services:
- name: raw
  url: http://{}
{retries}  routes:
  - name: raw
    paths: ["/"]
    strip_path: false
"#,
        be.addr
    )
}

/// A gateway in front of `be` (Kong's default 5 retries unless `retries`), with the fast
/// path on or off, and `settings` otherwise.
async fn gateway(be: &RawBackend, fast: bool, retries: Option<u32>, settings: Settings) -> Gw {
    let settings = Settings {
        fast_h1: fast,
        ..settings
    };
    Gw::start_with(settings, Some(&config(be, retries))).await
}

const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

#[tokio::test]
async fn an_invalid_answer_is_sent_once_and_a_closed_connection_is_retried() {
    for fast in [true, false] {
        let be = RawBackend::builder()
            .answer(
                "/invalid",
                &b"HTTP/1.1 200 OK\r\nX-A\r\nContent-Length: 2\r\n\r\nok"[..],
            )
            .answer(
                "/lengths",
                &b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok"[..],
            )
            .answer("/status", &b"HTTP/1.1 twohundred OK\r\n\r\n"[..])
            .answer_then_close("/closes", &b""[..])
            .answer_then_close("/half-head", &b"HTTP/1.1 200 OK\r\nContent-Le"[..])
            .answer("/ok", OK)
            .run()
            .await;
        let g = gateway(&be, fast, None, Settings::loopback()).await;
        let mut c = H1::connect(g.http).await;
        for path in ["/invalid", "/lengths", "/status"] {
            let r = c.get("x", path).await;
            assert_eq!(r.status, 502, "{path} (fast {fast}): {}", r.text());
            assert_eq!(be.hits(path), 1, "{path} (fast {fast}) retried");
        }
        // nginx's `error`: the upstream closed before a complete head, with or without a
        // byte of it: every try is made (1 + Kong's default 5 retries)
        for path in ["/closes", "/half-head"] {
            let r = c.get("x", path).await;
            assert_eq!(r.status, 502, "{path} (fast {fast}): {}", r.text());
            assert_eq!(be.hits(path), 6, "{path} (fast {fast})");
        }
        // the client's connection is still good
        assert_eq!(c.get("x", "/ok").await.text(), "ok");
    }
}

/// An invalid line in a head that arrives in pieces is refused when it is in, as nginx
/// refuses it as it parses: 502 at once, not retried, while the upstream holds the
/// connection open (not a read timeout, which would be retried).
#[tokio::test]
async fn an_invalid_line_in_a_head_arriving_in_pieces_is_refused_at_once() {
    for fast in [true, false] {
        let be = RawBackend::builder()
            .answer_in_pieces(
                "/trickled",
                &[b"HTTP/1.1 200 OK\r\n", b"X-A: 1\r\n", b"X-\0: b\r\n"],
            )
            .answer_in_pieces(
                "/trickled-ok",
                &[
                    b"HTTP/1.1 200 OK\r\n",
                    b"X-A: 1\r\nContent-Le",
                    b"ngth: 2\r\n\r\nok",
                ],
            )
            .run()
            .await;
        // (a read timeout of 3 s: the old wait for the head's end took that long)
        let yaml = config(&be, None).replace("  routes:", "  read_timeout: 3000\n  routes:");
        let settings = Settings {
            fast_h1: fast,
            ..Settings::loopback()
        };
        let g = Gw::start_with(settings, Some(&yaml)).await;
        let mut c = H1::connect(g.http).await;
        let t = std::time::Instant::now();
        let r = c.get("x", "/trickled").await;
        assert_eq!(r.status, 502, "fast {fast}: {}", r.text());
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
        assert_eq!(be.hits("/trickled"), 1, "fast {fast}: retried");
        assert_eq!(c.get("x", "/trickled-ok").await.text(), "ok");
    }
}

#[tokio::test]
async fn framing_nginx_refuses_is_502() {
    let cases: &[(&str, &[u8])] = &[
        (
            "/cl-twice-equal",
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok",
        ),
        (
            "/cl-twice-differ",
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok",
        ),
        (
            "/cl-then-te",
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
        ),
        (
            "/te-then-cl",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\n2\r\nok\r\n0\r\n\r\n",
        ),
        (
            "/te-twice",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
        ),
        (
            "/te-gzip",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nok",
        ),
        (
            "/te-list",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
        ),
        (
            "/cl-not-a-number",
            b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\nok",
        ),
    ];
    let mut b = RawBackend::builder().answer(
        "/te-any-case",
        &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: CHUNKED\r\n\r\n2\r\nok\r\n0\r\n\r\n"[..],
    );
    for (path, bytes) in cases {
        b = b.answer(path, *bytes);
    }
    let be = b.run().await;
    for fast in [true, false] {
        let g = gateway(&be, fast, None, Settings::loopback()).await;
        let mut c = H1::connect(g.http).await;
        for (path, _) in cases {
            let r = c.get("x", path).await;
            assert_eq!(r.status, 502, "{path} (fast {fast}): {}", r.text());
        }
        let r = c.get("x", "/te-any-case").await;
        assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "ok"));
    }
    for (path, _) in cases {
        assert_eq!(be.hits(path), 2, "{path}: once per gateway, not retried");
    }
}

/// An answer whose head is `n` bytes long (a 200 with a body `ok`).
fn head_of(n: usize) -> Vec<u8> {
    let start = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Pad-Out: ";
    let mut a = start.to_vec();
    a.resize(n - 4, b'a');
    a.extend_from_slice(b"\r\n\r\nok");
    a
}

#[tokio::test]
async fn the_head_limit_is_proxy_buffer_size_and_headers_are_not_counted() {
    let mut many = b"HTTP/1.1 200 OK\r\n".to_vec();
    for i in 0..150 {
        many.extend_from_slice(format!("X-H{i}: {i}\r\n").as_bytes());
    }
    many.extend_from_slice(b"Content-Length: 2\r\n\r\nok");
    let be = RawBackend::builder()
        .answer("/4096", head_of(4096))
        .answer("/4097", head_of(4097))
        .answer("/6000", head_of(6000))
        .answer("/many", many)
        .run()
        .await;
    for fast in [true, false] {
        // Kong's default: nginx's one page, 4k
        let g = gateway(&be, fast, None, Settings::loopback()).await;
        let mut c = H1::connect(g.http).await;
        let r = c.get("x", "/4096").await;
        assert_eq!(
            (r.status.as_u16(), r.text().as_str()),
            (200, "ok"),
            "fast {fast}"
        );
        for path in ["/4097", "/6000"] {
            let r = c.get("x", path).await;
            assert_eq!(r.status, 502, "{path} (fast {fast})");
        }
        // (read raw: hyper's client takes 100 headers at most)
        let wait = std::time::Duration::from_millis(500);
        let out = raw(g.http, b"GET /many HTTP/1.1\r\nHost: x\r\n\r\n", wait).await;
        assert!(out.starts_with("HTTP/1.1 200 "), "fast {fast}: {out}");
        let forwarded = (0..150)
            .filter(|i| {
                out.to_ascii_lowercase()
                    .contains(&format!("\r\nx-h{i}: {i}\r\n"))
            })
            .count();
        assert_eq!(forwarded, 150, "fast {fast}: {out}");
        assert!(out.ends_with("\r\n\r\nok"), "{out}");
        drop(c);
        drop(g);
        // `nginx_proxy_proxy_buffer_size 8k`
        let settings = Settings {
            proxy_buffer_size: 8192,
            ..Settings::loopback()
        };
        let g = gateway(&be, fast, None, settings).await;
        let r = get(g.http, "x", "/6000").await;
        assert_eq!(
            (r.status.as_u16(), r.text().as_str()),
            (200, "ok"),
            "fast {fast}"
        );
    }
    // the over-long heads were not retried (Kong's 5 retries would make 6 tries each)
    assert_eq!(be.hits("/4097"), 2);
    assert_eq!(be.hits("/6000"), 4, "a 502 and a 200 per path");
}

#[tokio::test]
async fn headers_nginx_hides_are_not_forwarded() {
    let be = RawBackend::builder()
        .answer(
            "/hidden",
            &b"HTTP/1.1 200 OK\r\nX-Pad: avoid browser bug\r\nX-Accel-Expires: 10\r\n\
X-Accel-Redirect: /elsewhere\r\nX-Accel-Limit-Rate: 1024\r\nX-Accel-Buffering: yes\r\n\
X-Accel-Charset: utf-8\r\nX-Kept: 1\r\nContent-Length: 2\r\n\r\nok"[..],
        )
        .run()
        .await;
    for fast in [true, false] {
        let g = gateway(&be, fast, None, Settings::loopback()).await;
        let r = get(g.http, "x", "/hidden").await;
        assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "ok"));
        for gone in [
            "x-pad",
            "x-accel-expires",
            "x-accel-redirect",
            "x-accel-limit-rate",
            "x-accel-buffering",
            "x-accel-charset",
        ] {
            assert!(!r.headers.contains_key(gone), "{gone} (fast {fast})");
        }
        assert_eq!(r.header("x-kept"), Some("1"));
    }
}

/// A 204 reaches the client without `Content-Type` or `Content-Length`, as nginx's header
/// filters (HTTP/1 and HTTP/2) drop them for that status; the upstream's `Last-Modified`
/// stays (nginx drops only the one it would write itself).
#[tokio::test]
async fn a_204_loses_its_content_type_and_length() {
    let be = RawBackend::builder()
        .answer(
            "/none",
            &b"HTTP/1.1 204 No Content\r\nContent-Type: text/plain\r\nContent-Length: 0\r\n\
Last-Modified: Mon, 02 Jan 2006 15:04:05 GMT\r\nX-Kept: 1\r\n\r\n"[..],
        )
        .run()
        .await;
    for fast in [true, false] {
        let g = gateway(&be, fast, None, Settings::loopback()).await;
        let mut c = tokio::net::TcpStream::connect(g.http).await.unwrap();
        c.write_all(b"GET /none HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let a = read_answer(&mut c).await.to_ascii_lowercase();
        assert!(a.starts_with("http/1.1 204 "), "fast {fast}: {a}");
        assert!(!a.contains("content-type"), "fast {fast}: {a}");
        assert!(!a.contains("content-length"), "fast {fast}: {a}");
        assert!(
            a.contains("\r\nlast-modified: mon, 02 jan 2006"),
            "fast {fast}: {a}"
        );
        assert!(a.contains("\r\nx-kept: 1\r\n"), "fast {fast}: {a}");
        // (the connection goes on: the 204 had no body)
        c.write_all(b"GET /none HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        assert!(read_answer(&mut c).await.starts_with("HTTP/1.1 204 "));
        // HTTP/2's header filter drops them alike
        let r = h2c_parts(g.http, req("GET", "x", "/none"), Parts(Default::default())).await;
        assert_eq!(r.status, 204);
        assert!(!r.headers.contains_key("content-type"), "{:?}", r.headers);
        assert!(!r.headers.contains_key("content-length"), "{:?}", r.headers);
        assert_eq!(r.header("x-kept"), Some("1"));
    }
}

#[tokio::test]
async fn chunked_bodies_with_bare_lf_and_space_extensions_are_read() {
    let be = RawBackend::builder()
        .answer(
            "/lf",
            &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\nabc\n4 ext\r\ndefg\n2\t;x=y\nhi\r\n0\nX-T: 1\n\n"[..],
        )
        .answer("/ok", OK)
        .run()
        .await;
    for fast in [true, false] {
        let g = gateway(&be, fast, None, Settings::loopback()).await;
        let mut c = H1::connect(g.http).await;
        let r = tokio::time::timeout(std::time::Duration::from_secs(5), c.get("x", "/lf"))
            .await
            .expect("the body ends at its last chunk, not at the read timeout");
        assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "abcdefghi"));
        // read to its end: the connection is reused
        assert_eq!(c.get("x", "/ok").await.text(), "ok");
    }
    assert_eq!(be.connections(), 2, "one upstream connection per gateway");
}

#[tokio::test]
async fn an_http_1_0_answer_closes_its_connection_whatever_it_says() {
    let be = RawBackend::builder()
        .answer(
            "/one-oh",
            &b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok"[..],
        )
        .run()
        .await;
    for fast in [true, false] {
        let before = be.connections();
        let g = gateway(&be, fast, None, Settings::loopback()).await;
        let mut c = H1::connect(g.http).await;
        for _ in 0..3 {
            let r = c.get("x", "/one-oh").await;
            assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "ok"));
        }
        assert_eq!(
            be.connections() - before,
            3,
            "fast {fast}: an upstream connection per answer"
        );
        assert_eq!(g.gw.idle_upstream_connections(), 0);
    }
}

/// The head of a raw answer (up to its blank line).
fn head_part(raw: &str) -> &str {
    raw.split("\r\n\r\n").next().unwrap_or(raw)
}

#[tokio::test]
async fn the_fast_path_writes_kongs_case_and_keeps_the_upstreams() {
    let be = RawBackend::builder()
        .answer(
            "/length",
            &b"HTTP/1.1 200 OK\r\nx-lower: 1\r\nETag: \"e\"\r\nContent-Length: 2\r\n\r\nok"[..],
        )
        .answer(
            "/chunked",
            &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"[..],
        )
        .run()
        .await;
    let wait = std::time::Duration::from_millis(500);
    let g = gateway(&be, true, None, Settings::loopback()).await;
    let out = raw(g.http, b"GET /length HTTP/1.1\r\nHost: x\r\n\r\n", wait).await;
    let head = head_part(&out);
    for line in [
        "\r\nDate: ",
        "\r\nServer: kong/",
        "\r\nVia: 1.1 kong/",
        "\r\nX-Kong-Upstream-Latency: ",
        "\r\nX-Kong-Proxy-Latency: ",
        "\r\nX-Kong-Request-Id: ",
        "\r\nContent-Length: 2",
        // the upstream's own, as sent
        "\r\nx-lower: 1",
        "\r\nETag: \"e\"",
    ] {
        assert!(head.contains(line), "{line:?} in {head}");
    }
    // a body streamed from the upstream (no length): chunked
    let out = raw(g.http, b"GET /chunked HTTP/1.1\r\nHost: x\r\n\r\n", wait).await;
    assert!(
        head_part(&out).contains("\r\nTransfer-Encoding: chunked"),
        "{out}"
    );
    drop(g);
    // the gateway's own answer (no route: no configuration)
    let fast = Settings {
        fast_h1: true,
        ..Settings::loopback()
    };
    let g = Gw::start_with(fast, None).await;
    let out = raw(g.http, b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n", wait).await;
    let head = head_part(&out);
    assert!(head.starts_with("HTTP/1.1 404 "), "{out}");
    for line in [
        "\r\nDate: ",
        "\r\nContent-Type: application/json",
        "\r\nContent-Length: ",
        "\r\nServer: kong/",
        "\r\nX-Kong-Response-Latency: ",
        "\r\nX-Kong-Request-Id: ",
    ] {
        assert!(head.contains(line), "{line:?} in {head}");
    }
    drop(g);
    // hyper's server: Title-Case throughout (the upstream's names too)
    let g = gateway(&be, false, None, Settings::loopback()).await;
    let out = raw(g.http, b"GET /length HTTP/1.1\r\nHost: x\r\n\r\n", wait).await;
    let head = head_part(&out);
    for line in [
        "\r\nDate: ",
        "\r\nX-Kong-Request-Id: ",
        "\r\nContent-Length: 2",
        "\r\nX-Lower: 1",
        "\r\nEtag: \"e\"",
    ] {
        assert!(head.contains(line), "{line:?} in {head}");
    }
}

/// An upstream's `Via` lines are joined with `, ` before the gateway's own is appended, as
/// Kong builds it from nginx's `$upstream_http_via` (which joins repeated lines), on both
/// request paths.
#[tokio::test]
async fn repeated_upstream_via_lines_are_joined() {
    let be = RawBackend::builder()
        .answer(
            "/via",
            &b"HTTP/1.1 200 OK\r\nVia: 1.1 a\r\nX-Other: 1\r\nvia: 1.0 b, 1.1 c\r\nContent-Length: 2\r\n\r\nok"[..],
        )
        .run()
        .await;
    let wait = std::time::Duration::from_millis(500);
    for fast in [true, false] {
        let g = gateway(&be, fast, None, Settings::loopback()).await;
        // (a body makes the request take hyper's path when the fast path is on too)
        for req in [
            &b"GET /via HTTP/1.1\r\nHost: x\r\n\r\n"[..],
            b"POST /via HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nz",
        ] {
            let out = raw(g.http, req, wait).await;
            let head = head_part(&out).to_ascii_lowercase();
            let vias: Vec<&str> = head.lines().filter(|l| l.starts_with("via:")).collect();
            assert_eq!(
                vias,
                [format!(
                    "via: 1.1 a, 1.0 b, 1.1 c, 1.1 kong/{}",
                    silverback_proxy::KONG_VERSION
                )],
                "fast {fast}: {out}"
            );
        }
    }
}

#[tokio::test]
async fn a_websocket_upstreams_own_reason_phrase_reaches_the_client() {
    // nginx passes an upstream's status line on as it came, its phrase included
    let be = RawBackend::builder()
        .answer(
            "/ws",
            &b"HTTP/1.1 101 Web Socket Protocol Handshake\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"[..],
        )
        .run()
        .await;
    for fast in [true, false] {
        let g = gateway(&be, fast, None, Settings::loopback()).await;
        let wait = Duration::from_millis(500);
        let out = raw(g.http, &websocket_upgrade("/ws"), wait).await;
        assert!(
            out.starts_with("HTTP/1.1 101 Web Socket Protocol Handshake\r\n"),
            "fast {fast}: {out}"
        );
        assert!(
            out.to_ascii_lowercase()
                .contains("\r\nupgrade: websocket\r\n"),
            "fast {fast}: {out}"
        );
    }
}
