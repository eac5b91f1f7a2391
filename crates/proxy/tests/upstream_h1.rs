//! The upstream HTTP/1.1 client (`h1_client`) against a real, scripted backend on a socket:
//! every way an HTTP/1.1 response can be framed (length, chunked with extensions and
//! trailers, until close, no body for HEAD/204/304), interim 100 answers, request bodies
//! streamed chunked or by length, connections the backend closes while idle (retried on a
//! fresh one), and answers that must be refused (conflicting lengths, a length sent with
//! chunked coding, bad heads: 502; more in `upstream_answers.rs`).
//! The same requests are sent through the fast path and through hyper's server
//! (`fast_h1` off): the answers must not differ.

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
/// `/close-idle` answers with a length and then closes the connection without saying so.
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
    loop {
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            if !read_more(&mut s, &mut buf).await {
                return;
            }
            continue;
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        buf.drain(..end + 4);
        let Some(body) = read_body(&mut s, &mut buf, &head).await else {
            return;
        };
        let path = head.split(' ').nth(1).unwrap_or("/").to_string();
        let out: Vec<u8> = match path.as_str() {
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
        for gone in ["connection", "x-secret", "keep-alive", "trailer"] {
            assert!(!h.contains_key(gone), "{gone} forwarded: {h:?}");
        }
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
