//! The upstream HTTP/1.1 client (`h1_client`) against a real, scripted backend on a socket:
//! every way an HTTP/1.1 response can be framed (length, chunked with extensions and
//! trailers, until close, no body for HEAD/204/304), interim 100 answers, request bodies
//! streamed chunked or by length, connections the backend closes while idle (retried on a
//! fresh one) or drops with a request on them (a try nginx gives back: sent again on a
//! fresh one), and answers that must be refused (conflicting lengths, a length sent with
//! chunked coding, bad heads: 502; more in `upstream_answers.rs`).
//! The same requests are sent through the fast path and through hyper's server
//! (`fast_h1` off): the answers must not differ. The request heads the backend receives are
//! compared byte for byte with what Kong's nginx sends: its headers first, then the client's
//! as received (case, order, repeated names apart), the hop-by-hop ones left out.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http_body_util::Full;
use silverback_proxy::Settings;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The backend: answers by path; `/echo` answers with the body it received (de-chunked);
/// `/seen` with the request head it received, exactly, then a blank line and the body;
/// `/close-idle` answers with a length and then closes the connection without saying so;
/// `/drop-next` answers, and then closes the connection on the next request, unanswered.
async fn backend(conns: Arc<AtomicUsize>) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            conns.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(serve(s));
        }
    });
    addr
}

async fn read_more(s: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
    let mut tmp = [0u8; 4096];
    match s.read(&mut tmp).await {
        Ok(0) | Err(_) => false,
        Ok(n) => {
            buf.extend_from_slice(&tmp[..n]);
            true
        }
    }
}

/// Reads a request body framed by `head` out of `buf` (reading more as needed).
async fn read_body(s: &mut TcpStream, buf: &mut Vec<u8>, head: &str) -> Option<Vec<u8>> {
    let lower = head.to_ascii_lowercase();
    if lower.contains("transfer-encoding: chunked") {
        let mut body = Vec::new();
        loop {
            let line_end = loop {
                if let Some(i) = buf.windows(2).position(|w| w == b"\r\n") {
                    break i;
                }
                if !read_more(s, buf).await {
                    return None;
                }
            };
            let size =
                usize::from_str_radix(std::str::from_utf8(&buf[..line_end]).ok()?, 16).ok()?;
            buf.drain(..line_end + 2);
            while buf.len() < size + 2 {
                if !read_more(s, buf).await {
                    return None;
                }
            }
            body.extend_from_slice(&buf[..size]);
            buf.drain(..size + 2);
            if size == 0 {
                return Some(body);
            }
        }
    }
    let len = lower
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    while buf.len() < len {
        if !read_more(s, buf).await {
            return None;
        }
    }
    Some(buf.drain(..len).collect())
}

async fn serve(mut s: TcpStream) {
    let mut buf = Vec::new();
    let mut drop_next = false;
    loop {
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            if !read_more(&mut s, &mut buf).await {
                return;
            }
            continue;
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        let buf_head = buf[..end].to_vec();
        buf.drain(..end + 4);
        let Some(body) = read_body(&mut s, &mut buf, &head).await else {
            return;
        };
        let path = head.split(' ').nth(1).unwrap_or("/").to_string();
        if drop_next {
            return;
        }
        let out: Vec<u8> = match path.as_str() {
            "/drop-next" => {
                drop_next = true;
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst".to_vec()
            }
            "/eof" => {
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end")
                    .await;
                return;
            }
            "/continue" => b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nafter".to_vec(),
            "/chunked" => b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\n4\r\ndefg\r\n0\r\nX-Trailer: t\r\n\r\n".to_vec(),
            "/head" => b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n".to_vec(),
            "/nocontent" => b"HTTP/1.1 204 No Content\r\n\r\n".to_vec(),
            "/conflict" => b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd".to_vec(),
            "/garbage" => b"HTTP/1.1 twohundred OK\r\n\r\n".to_vec(),
            "/reason" => b"HTTP/1.1 200 Fine Thanks\r\nContent-Length: 2\r\n\r\nok".to_vec(),
            "/no-reason" => b"HTTP/1.1 200\r\nContent-Length: 2\r\n\r\nok".to_vec(),
            "/empty-reason" => b"HTTP/1.1 404 \r\nContent-Length: 2\r\n\r\nno".to_vec(),
            "/unavailable" => b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n".to_vec(),
            // hop-by-hop headers (and one named by Connection) among end-to-end ones
            "/hops" => b"HTTP/1.1 200 OK\r\nServer: upstream-server\r\nConnection: X-Secret, keep-alive\r\nX-Secret: s\r\nKeep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nVia: 1.0 upstream-proxy\r\nTrailer: X-Sum\r\nX-Kong-Request-Id: forged\r\nDate: Tue, 01 Jan 2030 00:00:00 GMT\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\nX-End: e\r\nContent-Length: 2\r\n\r\nok".to_vec(),
            "/both" => b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n".to_vec(),
            "/echo" => {
                let mut o = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nX-Chunked: {}\r\n\r\n",
                    body.len(),
                    head.to_ascii_lowercase().contains("transfer-encoding: chunked")
                )
                .into_bytes();
                o.extend_from_slice(&body);
                o
            }
            p if p.starts_with("/seen") => {
                let mut seen = buf_head.clone();
                seen.extend_from_slice(b"\r\n\r\n");
                seen.extend_from_slice(&body);
                let mut o = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", seen.len())
                    .into_bytes();
                o.extend_from_slice(&seen);
                o
            }
            "/close-idle" => {
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nonce").await;
                return;
            }
            _ => b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_vec(),
        };
        if s.write_all(&out).await.is_err() {
            return;
        }
    }
}

fn config(be: SocketAddr) -> String {
    format!(
        r#"
_format_version: "3.0"
services:
- name: raw
  url: http://{be}
  retries: 0
  routes:
  - name: raw
    paths: ["/"]
    strip_path: false
"#
    )
}

/// Runs `check` against a fresh backend and gateway, with and without the fast path. (The
/// gateway lives until `check` is done, whatever the closure captures.)
async fn both<F, Fut>(check: F)
where
    F: Fn(Arc<Gw>, Arc<AtomicUsize>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    for fast in [false, true] {
        let conns = Arc::new(AtomicUsize::new(0));
        let be = backend(conns.clone()).await;
        let settings = Settings {
            fast_h1: fast,
            ..Settings::loopback()
        };
        let g = Arc::new(Gw::start_with(settings, Some(&config(be))).await);
        check(g.clone(), conns).await;
        drop(g);
    }
}

#[tokio::test]
async fn every_response_framing_reaches_the_client() {
    both(|g, conns| async move {
        let mut c = H1::connect(g.http).await;
        let r = c.get("x", "/chunked").await;
        assert_eq!(r.status, 200);
        assert_eq!(r.text(), "abcdefg");
        let r = c.get("x", "/continue").await;
        assert_eq!(r.status, 200, "interim 100 skipped");
        assert_eq!(r.text(), "after");
        let r = c
            .send(req("HEAD", "x", "/head").body(Full::default()).unwrap())
            .await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-length"), Some("5"));
        assert!(r.body.is_empty());
        let r = c.get("x", "/nocontent").await;
        assert_eq!(r.status, 204);
        assert!(r.body.is_empty());
        let r = c.get("x", "/reason").await;
        assert_eq!(r.text(), "ok");
        // a status line without a reason phrase (nginx takes it), or with an empty one
        let r = c.get("x", "/no-reason").await;
        assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "ok"));
        let r = c.get("x", "/empty-reason").await;
        assert_eq!((r.status.as_u16(), r.text().as_str()), (404, "no"));
        // All of the above on one upstream connection: each body was read to its end.
        assert_eq!(conns.load(Ordering::SeqCst), 1);
        let r = c.get("x", "/eof").await;
        assert_eq!(r.status, 200);
        assert_eq!(r.text(), "until the end");
        // A connection delimited by its close is not reused.
        let r = c.get("x", "/reason").await;
        assert_eq!(r.text(), "ok");
        assert_eq!(conns.load(Ordering::SeqCst), 2);
        assert_eq!(g.gw.idle_upstream_connections(), 1);
        // A length sent with chunked coding is refused, as nginx 1.23+ refuses it, and that
        // connection is not reused.
        let r = c.get("x", "/both").await;
        assert_eq!(r.status, 502, "{}", r.text());
        let r = c.get("x", "/reason").await;
        assert_eq!(r.text(), "ok");
        assert_eq!(conns.load(Ordering::SeqCst), 3);
    })
    .await;
}

#[tokio::test]
async fn hop_by_hop_headers_stop_here_and_the_gateway_sets_its_own() {
    both(|g, _| async move {
        let mut c = H1::connect(g.http).await;
        let r = c.get("x", "/hops").await;
        assert_eq!(r.status, 200);
        assert_eq!(r.text(), "ok");
        let h = &r.headers;
        for gone in ["x-secret", "keep-alive", "trailer"] {
            assert!(!h.contains_key(gone), "{gone} forwarded: {h:?}");
        }
        // the upstream's `Connection` stops here; the gateway's says the connection stays
        // open, as nginx's does
        let connection: Vec<_> = h.get_all("connection").iter().collect();
        assert_eq!(connection, ["keep-alive"], "{h:?}");
        // nginx passes it on, and Kong 3.x's header filter leaves it
        assert_eq!(r.header("proxy-connection"), Some("keep-alive"));
        // the upstream's Server stays; Via gets this hop appended
        assert_eq!(r.header("server"), Some("upstream-server"));
        let via = r.header("via").expect("via");
        assert!(via.starts_with("1.0 upstream-proxy, 1.1 "), "{via}");
        assert_eq!(h.get_all("via").iter().count(), 1);
        // the gateway's request id replaces the upstream's
        let rid = r.header("x-kong-request-id").expect("request id");
        assert_ne!(rid, "forged");
        assert_eq!(h.get_all("x-kong-request-id").iter().count(), 1);
        assert!(r.header("x-kong-upstream-latency").is_some());
        assert!(r.header("x-kong-proxy-latency").is_some());
        // the upstream's Date, once; both cookies; the rest as sent
        assert_eq!(h.get_all("date").iter().count(), 1);
        assert_eq!(r.header("date"), Some("Tue, 01 Jan 2030 00:00:00 GMT"));
        let cookies: Vec<_> = h.get_all("set-cookie").iter().collect();
        assert_eq!(cookies, ["a=1", "b=2"]);
        assert_eq!(r.header("x-end"), Some("e"));
        assert_eq!(r.header("content-length"), Some("2"));
    })
    .await;
}

#[tokio::test]
async fn request_bodies_are_sent_by_length_or_chunked() {
    both(|g, _| async move {
        let mut c = H1::connect(g.http).await;
        let r = c
            .send(
                req("POST", "x", "/echo")
                    .body(Full::new(Bytes::from_static(b"sized body")))
                    .unwrap(),
            )
            .await;
        assert_eq!(r.text(), "sized body");
        assert_eq!(r.header("x-chunked"), Some("false"));
        // A body of unknown length (chunked from the client) that ends within
        // `request_buffer_limit` goes by length on this buffering route, as from Kong.
        let parts = Parts::of(&["part one, ", "part two"]);
        let r = h1_parts(g.http, req("PUT", "x", "/echo"), parts).await;
        assert_eq!(r.text(), "part one, part two");
        assert_eq!(r.header("x-chunked"), Some("false"));
        // A longer one goes upstream chunked (what was read first, then the rest),
        // de-chunked by the backend.
        let part = "0123456789abcdef".repeat(2048);
        let parts = Parts((0..3).map(|_| Bytes::from(part.clone())).collect());
        let r = h1_parts(g.http, req("PUT", "x", "/echo"), parts).await;
        assert_eq!(r.text(), part.repeat(3));
        assert_eq!(r.header("x-chunked"), Some("true"));
    })
    .await;
}

#[tokio::test]
async fn a_connection_closed_while_idle_is_replaced() {
    both(|g, conns| async move {
        let mut c = H1::connect(g.http).await;
        for i in 0..3 {
            let r = c.get("x", "/close-idle").await;
            assert_eq!(r.status, 200, "request {i}: {}", r.text());
            assert_eq!(r.text(), "once");
            // Let the backend's close arrive before the next request.
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert_eq!(conns.load(Ordering::SeqCst), 3);
    })
    .await;
}

/// A kept-alive connection that fails once the request is on it (the upstream closes it
/// unanswered) does not use up a try: nginx gives the try back for an error on a cached
/// connection, so even with `retries: 0` the request goes again on a new connection. (An
/// error on a new connection is the 502 of `retries: 0`.)
#[tokio::test]
async fn a_kept_alive_connection_that_fails_gives_its_try_back() {
    both(|g, conns| async move {
        let mut c = H1::connect(g.http).await;
        for i in 0..3 {
            let r = c.get("x", "/drop-next").await;
            assert_eq!(
                (r.status.as_u16(), r.text().as_str()),
                (200, "first"),
                "{i}"
            );
            // the request after it goes on the kept connection, which is dropped
            let r = c.get("x", "/reason").await;
            assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "ok"), "{i}");
        }
        // each `/drop-next` connection, then a new one for its `/reason`, which serves
        // the next `/drop-next`
        assert_eq!(conns.load(Ordering::SeqCst), 4);
    })
    .await;
}

#[tokio::test]
async fn malformed_answers_are_502() {
    both(|g, _| async move {
        let mut c = H1::connect(g.http).await;
        let r = c.get("x", "/conflict").await;
        assert_eq!(r.status, 502, "{}", r.text());
        let r = c.get("x", "/garbage").await;
        assert_eq!(r.status, 502, "{}", r.text());
        // The client connection is still good.
        let r = c.get("x", "/chunked").await;
        assert_eq!(r.text(), "abcdefg");
    })
    .await;
}

/// Sends `raw` on a new connection and reads `n` answers (each framed by its
/// `Content-Length`; interim ones skipped); returns their bodies.
async fn raw_answers(addr: SocketAddr, raw: &[u8], n: usize) -> Vec<String> {
    let run = async {
        let mut c = TcpStream::connect(addr).await.expect("connect");
        c.write_all(raw).await.expect("write");
        let mut buf = Vec::new();
        let mut bodies = Vec::new();
        while bodies.len() < n {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                if head.starts_with("http/1.1 1") {
                    // an interim answer (`100 Continue`): no body, not counted
                    buf.drain(..end + 4);
                    continue;
                }
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .expect("an answer with a length");
                if buf.len() >= end + 4 + len {
                    assert!(
                        head.starts_with("http/1.1 200") || head.starts_with("http/1.0 200"),
                        "{head}"
                    );
                    bodies.push(String::from_utf8_lossy(&buf[end + 4..end + 4 + len]).into_owned());
                    buf.drain(..end + 4 + len);
                    continue;
                }
            }
            let mut tmp = [0u8; 8192];
            let k = c.read(&mut tmp).await.expect("read");
            assert!(k > 0, "closed after {} answers", bodies.len());
            buf.extend_from_slice(&tmp[..k]);
        }
        bodies
    };
    tokio::time::timeout(std::time::Duration::from_secs(10), run)
        .await
        .expect("answers within 10 s")
}

/// The head a `/seen` answer reports, with the values that vary from run to run (the
/// upstream's and the gateway's ports, the request id, the server token) replaced by
/// `<...>`, and its body after a `|`.
fn seen(answer: &str) -> String {
    let (head, body) = answer.split_once("\r\n\r\n").expect("a head");
    let mut out: Vec<String> = Vec::new();
    for line in head.split("\r\n") {
        let l = match line.split_once(": ") {
            Some(("Host", _)) => "Host: <upstream>".to_string(),
            Some(("X-Forwarded-Port", _)) => "X-Forwarded-Port: <port>".to_string(),
            Some(("X-Kong-Request-Id", v)) => {
                assert_eq!(v.len(), 32, "{v}");
                "X-Kong-Request-Id: <id>".to_string()
            }
            Some(("Via", v)) => {
                let (before, token) = v.rsplit_once(' ').expect("a token");
                assert!(token.starts_with("kong/"), "{v}");
                format!("Via: {before} <kong>")
            }
            _ => line.to_string(),
        };
        out.push(l);
    }
    format!("{}\n|{body}", out.join("\n"))
}

/// The gateway's headers, in the order of Kong's template, for a request to `path` that
/// sent `Via: 1.0 other` and `X-Forwarded-For: 9.9.9.9` (and `te` when it asked for
/// trailers).
fn kongs(method: &str, path: &str, te: bool) -> String {
    let te = if te { "TE: trailers\n" } else { "" };
    format!(
        "{method} {path} HTTP/1.1\n{te}Via: 1.0 other, 1.1 <kong>\nHost: <upstream>\nConnection: keep-alive\n\
         X-Forwarded-For: 9.9.9.9, 127.0.0.1\nX-Forwarded-Proto: http\nX-Forwarded-Host: x\n\
         X-Forwarded-Port: <port>\nX-Forwarded-Path: {path}\nX-Real-IP: 127.0.0.1\n\
         X-Kong-Request-Id: <id>\n"
    )
}

/// The client's headers as the tests send them: mixed case, a name repeated with another
/// between, the hop-by-hop ones and one `Connection` names, and headers the gateway sets.
const MIXED: &str = "Host: x\r\nX-Aa: 1\r\nx-bb:2\r\nVia: 1.0 other\r\nX-AA:  3 \r\n\
    Keep-Alive: timeout=5\r\nX-Forwarded-For: 9.9.9.9\r\nProxy-Connection: keep-alive\r\n\
    User-Agent: Mixed/1.0\r\nx-kong-request-id: forged\r\n";

/// What is left of [`MIXED`] upstream: the client's own headers, as sent.
const MIXED_LEFT: &str = "X-Aa: 1\nx-bb: 2\nX-AA: 3\nUser-Agent: Mixed/1.0\n";

#[tokio::test]
async fn request_headers_go_upstream_as_received_on_the_fast_path() {
    both(|g, _| async move {
        // (a simple GET: the fast path when it is on; `Connection: keep-alive` and `TE`
        // are for the gateway alone)
        let raw = format!(
            "GET /seen HTTP/1.1\r\n{}Connection: keep-alive\r\nTE: trailers\r\nX-Last: z\r\n\r\n",
            MIXED
        );
        let got = raw_answers(g.http, raw.as_bytes(), 1).await;
        assert_eq!(
            seen(&got[0]),
            format!("{}{MIXED_LEFT}X-Last: z\n|", kongs("GET", "/seen", true))
        );
    })
    .await;
}

/// nginx never passes `Expect` upstream (its proxy module sets it empty); of a client's
/// repeated `Via` and `X-Forwarded-For` lines the first goes before the gateway's entry, as
/// Kong 3.6+ reads them, even when `Connection` names them (Kong reads them before it
/// clears the names `Connection` lists).
#[tokio::test]
async fn expect_is_dropped_and_the_first_forwarding_lines_are_kept() {
    both(|g, _| async move {
        let raw = "POST /seen HTTP/1.1\r\nHost: x\r\nVia: 1.0 a\r\nX-Forwarded-For: 1.1.1.1\r\n\
                   Expect: 100-continue\r\nVia: 1.1 b\r\nX-Forwarded-For: 2.2.2.2, 3.3.3.3\r\n\
                   Connection: Via, X-Forwarded-For\r\nContent-Length: 2\r\n\r\nok";
        let got = raw_answers(g.http, raw.as_bytes(), 1).await;
        let seen = seen(&got[0]);
        assert!(!seen.to_ascii_lowercase().contains("expect"), "{seen}");
        assert!(seen.contains("\nVia: 1.0 a, 1.1 <kong>\n"), "{seen}");
        assert!(
            seen.contains("\nX-Forwarded-For: 1.1.1.1, 127.0.0.1\n"),
            "{seen}"
        );
        assert!(seen.ends_with("|ok"), "{seen}");
        assert_eq!(seen.matches("Via:").count(), 1, "{seen}");
        assert_eq!(seen.matches("X-Forwarded-For:").count(), 1, "{seen}");
    })
    .await;
}

/// The names `Connection` lists are taken from its first line, as Kong's `get_header` reads
/// it (a later line's names pass); `Proxy-Authenticate`, which neither Kong nor nginx
/// removes from a request, passes too.
#[tokio::test]
async fn connection_names_come_from_its_first_line() {
    both(|g, _| async move {
        let raw = "GET /seen HTTP/1.1\r\nHost: x\r\nConnection: X-Gone, keep-alive\r\n\
                   Connection: X-Kept\r\nX-Gone: 1\r\nX-Kept: 2\r\nProxy-Authenticate: p\r\n\r\n";
        let got = raw_answers(g.http, raw.as_bytes(), 1).await;
        let seen = seen(&got[0]);
        assert!(!seen.contains("X-Gone"), "{seen}");
        assert!(seen.contains("\nX-Kept: 2\n"), "{seen}");
        assert!(seen.contains("\nProxy-Authenticate: p\n"), "{seen}");
        assert_eq!(seen.matches("Connection:").count(), 1, "{seen}");
        assert!(seen.contains("\nConnection: keep-alive\n"), "{seen}");
    })
    .await;
}

#[tokio::test]
async fn request_headers_go_upstream_as_received_with_a_body() {
    both(|g, _| async move {
        // a body by length (hyper's path), with a header that `Connection` names
        let raw = format!(
            "POST /seen HTTP/1.1\r\n{}Connection: X-Gone, keep-alive\r\nContent-Length: 4\r\n\
             X-Gone: g\r\nX-Last: z\r\n\r\nbody",
            MIXED
        );
        let got = raw_answers(g.http, raw.as_bytes(), 1).await;
        assert_eq!(
            seen(&got[0]),
            format!(
                "{}Content-Length: 4\n{MIXED_LEFT}X-Last: z\n|body",
                kongs("POST", "/seen", false)
            )
        );
        // a chunked body, read whole and sent by length (Kong's `request_buffering`)
        let raw = format!(
            "POST /seen/chunked HTTP/1.1\r\n{}Transfer-Encoding: chunked\r\nX-Last: z\r\n\r\n\
             3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
            MIXED
        );
        let got = raw_answers(g.http, raw.as_bytes(), 1).await;
        assert_eq!(
            seen(&got[0]),
            format!(
                "{}Content-Length: 5\n{MIXED_LEFT}X-Last: z\n|abcde",
                kongs("POST", "/seen/chunked", false)
            )
        );
        // HTTP/1.0
        let raw = format!("GET /seen/10 HTTP/1.0\r\n{}X-Last: z\r\n\r\n", MIXED);
        let got = raw_answers(g.http, raw.as_bytes(), 1).await;
        assert_eq!(
            seen(&got[0]),
            format!(
                "{}{MIXED_LEFT}X-Last: z\n|",
                kongs("GET", "/seen/10", false)
            )
            .replace("1.0 other, 1.1 <kong>", "1.0 other, 1 <kong>")
        );
    })
    .await;
}

#[tokio::test]
async fn pipelined_requests_each_go_upstream_with_their_own_headers() {
    both(|g, _| async move {
        // Three requests in one write, hyper's from the first (it has a body): each head
        // is its own, the second one's headers differing from the first's.
        let first = format!(
            "POST /seen/1 HTTP/1.1\r\n{}Content-Length: 2\r\n\r\nab",
            MIXED
        );
        let second = "PUT /seen/2 HTTP/1.1\r\nhost: x\r\nX-Second: 2\r\nX-Forwarded-For: 9.9.9.9\r\n\
            Via: 1.0 other\r\nx-second: 22\r\nContent-Length: 1\r\n\r\nc";
        let third = "GET /seen/3 HTTP/1.1\r\nHost: x\r\nVia: 1.0 other\r\nX-Third: 3\r\n\
            X-Forwarded-For: 9.9.9.9\r\nConnection: close\r\n\r\n";
        let raw = format!("{first}{second}{third}");
        let got = raw_answers(g.http, raw.as_bytes(), 3).await;
        assert_eq!(
            seen(&got[0]),
            format!("{}Content-Length: 2\n{MIXED_LEFT}|ab", kongs("POST", "/seen/1", false))
        );
        assert_eq!(
            seen(&got[1]),
            format!(
                "{}Content-Length: 1\nX-Second: 2\nx-second: 22\n|c",
                kongs("PUT", "/seen/2", false)
            )
        );
        assert_eq!(
            seen(&got[2]),
            format!("{}X-Third: 3\n|", kongs("GET", "/seen/3", false))
        );
    })
    .await;
}

#[tokio::test]
async fn a_content_length_goes_upstream_when_the_client_sent_a_body() {
    both(|g, _| async move {
        // As nginx (Kong's `proxy_request_buffering on`): a length when the client sent one
        // or a chunked body, even empty, whatever the method; none without, even for POST.
        for (raw, want) in [
            ("POST /seen HTTP/1.1\r\nHost: x\r\n\r\n", None),
            (
                "GET /seen HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
                Some("0"),
            ),
            (
                "POST /seen HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
                Some("0"),
            ),
            (
                "DELETE /seen HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
                Some("0"),
            ),
            ("DELETE /seen HTTP/1.1\r\nHost: x\r\n\r\n", None),
        ] {
            let got = raw_answers(g.http, raw.as_bytes(), 1).await;
            let head = got[0].split("\r\n\r\n").next().unwrap_or("").to_string();
            let lengths: Vec<&str> = head
                .split("\r\n")
                .filter_map(|l| l.strip_prefix("Content-Length: "))
                .collect();
            assert_eq!(
                lengths,
                want.into_iter().collect::<Vec<_>>(),
                "{raw:?}: {head}"
            );
            assert!(!head.contains("Transfer-Encoding"), "{head}");
        }
    })
    .await;
}

/// Status lines as nginx writes them: an upstream's as it came (a line without a reason
/// phrase stays without one on the fast path; hyper's path adds none either way it keeps),
/// and the gateway's own answers with nginx's phrases (`503 Service Temporarily
/// Unavailable`, `426 ` with none), on both paths.
#[tokio::test]
async fn status_lines_are_nginxs() {
    let conns = Arc::new(AtomicUsize::new(0));
    let be = backend(conns).await;
    // (the raw service's routes, and more)
    let cfg = format!(
        r#"{}  - name: secure
    paths: ["/secure"]
    protocols: ["https"]
- name: dead
  url: http://127.0.0.1:1
  retries: 0
  routes:
  - name: dead
    paths: ["/dead"]
routes:
- name: orphan
  paths: ["/orphan"]
"#,
        config(be)
    );
    let g = Gw::start(Some(&cfg)).await;
    let line = |raw: &str| {
        let raw = raw.to_string();
        async move {
            let mut s = TcpStream::connect(g.http).await.expect("connect");
            s.write_all(raw.as_bytes()).await.expect("write");
            let a = read_answer(&mut s).await;
            a.split("\r\n").next().unwrap_or("").to_string()
        }
    };
    // (the fast path: no body; hyper's: a body)
    for (path, want) in [
        ("/no-reason", "HTTP/1.1 200"),
        ("/reason", "HTTP/1.1 200 Fine Thanks"),
        ("/empty-reason", "HTTP/1.1 404 "),
        // (an upstream's own phrase, though nginx's table words its own answers otherwise)
        ("/unavailable", "HTTP/1.1 503 Service Unavailable"),
        ("/orphan", "HTTP/1.1 503 Service Temporarily Unavailable"),
        ("/secure", "HTTP/1.1 426 "),
    ] {
        let fast = line(&format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n")).await;
        assert_eq!(fast, want, "fast path {path}");
        let hyper = line(&format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nz"
        ))
        .await;
        // (hyper writes a phrase-less upstream line with the standard phrase)
        let want = if path == "/no-reason" {
            "HTTP/1.1 200 OK"
        } else {
            want
        };
        assert_eq!(hyper, want, "hyper's path {path}");
    }
    let dead = line("GET /dead HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(dead, "HTTP/1.1 502 Bad Gateway");
    drop(g);
}
