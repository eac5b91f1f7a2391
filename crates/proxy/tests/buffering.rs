//! `response_buffering` against a real (raw TCP) backend that sends its bodies in two parts
//! with a pause between them: with buffering on, a small `Content-Length` response reaches
//! the client only whole, and its upstream connection is back in the pool by then; with it
//! off, or for bodies of unknown or too large a size, the first part arrives before the
//! pause ends. A backend that dies in the middle of a buffered body gives what was read,
//! then the connection closed, as nginx gives it.
//!
//! `request_buffering` against the echo backend, which reports the framing it received: a
//! body of unknown length (chunked HTTP/1.1, HTTP/2 without `content-length`) that ends
//! within `request_buffer_limit` goes upstream by length on a buffering route, as nginx
//! sends a body it has read; streamed otherwise. An upstream that answers before it has
//! read the body (a 413 from its head) is the answer, on either kind of route, as nginx
//! reads the answer while it sends.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use silverback_proxy::Settings;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The pause between the two parts of every body.
const PAUSE: Duration = Duration::from_millis(600);

/// A keep-alive HTTP/1.1 backend. By path: `/length` sends `Content-Length: 11` and
/// `hello` + pause + ` world`; `/chunked` the same in two chunks; `/accel` is `/length`
/// with `X-Accel-Buffering: no`; `/truncated` announces 11 bytes, sends 5 and closes.
async fn split_backend() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else {
                return;
            };
            tokio::spawn(serve_split(s));
        }
    });
    addr
}

async fn serve_split(mut s: TcpStream) {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 4096];
    loop {
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            match s.read(&mut tmp).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&tmp[..n]),
            }
            continue;
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        buf.drain(..end + 4);
        let path = head.split(' ').nth(1).unwrap_or("/").to_string();
        let (first, second): (&[u8], &[u8]) = match path.as_str() {
            "/chunked" => (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
                b"6\r\n world\r\n0\r\n\r\n",
            ),
            "/accel" => (
                b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\nX-Accel-Buffering: no\r\n\r\nhello",
                b" world",
            ),
            "/truncated" => (b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\nhello", b""),
            _ => (
                b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\nhello",
                b" world",
            ),
        };
        if s.write_all(first).await.is_err() {
            return;
        }
        tokio::time::sleep(PAUSE).await;
        if path == "/truncated" {
            return;
        }
        if s.write_all(second).await.is_err() {
            return;
        }
    }
}

/// Sends a GET and returns what arrived before the backend's pause ended, and the whole
/// response.
async fn get_split(gw: SocketAddr, path: &str) -> (String, String) {
    let mut s = TcpStream::connect(gw).await.expect("connect");
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .expect("write");
    let mut out = Vec::new();
    let mut tmp = [0u8; 4096];
    let early_deadline = tokio::time::Instant::now() + PAUSE / 2;
    let mut early = None;
    let end = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let deadline = if early.is_none() { early_deadline } else { end };
        match tokio::time::timeout_at(deadline, s.read(&mut tmp)).await {
            Err(_) if early.is_none() => early = Some(String::from_utf8_lossy(&out).into_owned()),
            Err(_) | Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => {
                out.extend_from_slice(&tmp[..n]);
                let text = String::from_utf8_lossy(&out);
                if text.ends_with("hello world") || text.ends_with("0\r\n\r\n") {
                    break;
                }
            }
        }
    }
    let whole = String::from_utf8_lossy(&out).into_owned();
    (early.unwrap_or_else(|| whole.clone()), whole)
}

fn config(be: SocketAddr, buffering: bool) -> String {
    format!(
        r#"
_format_version: "3.0"
services:
- name: split
  url: http://{be}
  routes:
  - name: split
    paths: ["/"]
    strip_path: false
    response_buffering: {buffering}
"#
    )
}

#[tokio::test]
async fn small_responses_are_buffered_whole() {
    let be = split_backend().await;
    let g = Gw::start(Some(&config(be, true))).await;
    let (early, whole) = get_split(g.http, "/length").await;
    assert_eq!(early, "", "nothing is sent before the body is complete");
    assert!(whole.starts_with("HTTP/1.1 200 OK\r\n"), "{whole}");
    assert!(
        whole
            .to_ascii_lowercase()
            .contains("content-length: 11\r\n")
    );
    assert!(whole.ends_with("\r\n\r\nhello world"), "{whole}");
    // The upstream connection went back to the pool as soon as the body was read.
    assert_eq!(g.gw.idle_upstream_connections(), 1);
    // And it is reused.
    let (_, again) = get_split(g.http, "/length").await;
    assert!(again.ends_with("hello world"));
    assert_eq!(g.gw.idle_upstream_connections(), 1);
    g.gw.shutdown().await;
}

#[tokio::test]
async fn unbuffered_routes_stream() {
    let be = split_backend().await;
    let g = Gw::start(Some(&config(be, false))).await;
    let (early, whole) = get_split(g.http, "/length").await;
    assert!(early.starts_with("HTTP/1.1 200 OK\r\n"), "{early:?}");
    assert!(early.ends_with("\r\n\r\nhello"), "{early:?}");
    assert!(whole.ends_with("\r\n\r\nhello world"), "{whole}");
    g.gw.shutdown().await;
}

#[tokio::test]
async fn unknown_large_or_opted_out_bodies_stream_even_when_buffering() {
    let be = split_backend().await;
    // Chunked (unknown size) and `X-Accel-Buffering: no`.
    let g = Gw::start(Some(&config(be, true))).await;
    let (early, whole) = get_split(g.http, "/chunked").await;
    assert!(early.contains("hello"), "{early:?}");
    assert!(whole.contains(" world"), "{whole}");
    let (early, whole) = get_split(g.http, "/accel").await;
    assert!(early.ends_with("hello"), "{early:?}");
    assert!(whole.ends_with("hello world"), "{whole}");
    g.gw.shutdown().await;

    // Larger than the buffer limit.
    let settings = silverback_proxy::Settings {
        response_buffer_limit: 10,
        ..silverback_proxy::Settings::loopback()
    };
    let g = Gw::start_with(settings, Some(&config(be, true))).await;
    let (early, whole) = get_split(g.http, "/length").await;
    assert!(early.ends_with("hello"), "{early:?}");
    assert!(whole.ends_with("hello world"), "{whole}");
    g.gw.shutdown().await;
}

/// A buffered body cut short is passed on as nginx passes it on: its head and what was read
/// (held back until then, as an answer this small waits in nginx's `postpone_output`), then
/// the connection closed short of the announced length; not a 502 (on both request paths).
#[tokio::test]
async fn a_body_cut_short_while_buffering_ends_the_connection() {
    let be = split_backend().await;
    for fast in [true, false] {
        let settings = silverback_proxy::Settings {
            fast_h1: fast,
            ..silverback_proxy::Settings::loopback()
        };
        let g = Gw::start_with(settings, Some(&config(be, true))).await;
        let (early, whole) = get_split(g.http, "/truncated").await;
        assert_eq!(early, "", "fast path {fast}");
        assert!(
            whole.starts_with("HTTP/1.1 200 OK\r\n"),
            "fast path {fast}: {whole}"
        );
        let lower = whole.to_ascii_lowercase();
        assert!(lower.contains("content-length: 11\r\n"), "{whole}");
        // (`get_split` reads until the connection ends)
        assert!(
            whole.ends_with("\r\n\r\nhello"),
            "fast path {fast}: {whole}"
        );
        g.gw.shutdown().await;
    }
}

// ---------------------------------------------------------------- request_buffering

/// What the echo backend received: its `content-length` and `transfer-encoding` headers and
/// its body.
fn received(r: &Resp) -> (Option<String>, Option<String>, String) {
    assert_eq!(r.status, 200, "{}", r.text());
    let j = r.json();
    let h = |n: &str| j["headers"][n].as_str().map(str::to_string);
    let body = j["body"].as_str().unwrap_or_default().to_string();
    (h("content-length"), h("transfer-encoding"), body)
}

fn by_length(n: usize, body: &str) -> (Option<String>, Option<String>, String) {
    (Some(n.to_string()), None, body.to_string())
}

fn chunked(body: &str) -> (Option<String>, Option<String>, String) {
    (None, Some("chunked".to_string()), body.to_string())
}

/// With Kong's default `request_buffering`, a chunked HTTP/1.1 body is read whole and sent
/// upstream with a `Content-Length` (an upstream that refuses chunked requests takes it, as
/// it takes it from Kong), an empty one too; on a `request_buffering: false` route it
/// streams, chunked.
#[tokio::test]
async fn chunked_bodies_go_by_length_on_buffering_routes() {
    let b = Backend::start().await;
    let g = Gw::start(Some(&request_buffering_routes(&b.url()))).await;
    let post = |path| req("POST", "x", path);
    let parts = || Parts::of(&["hello ", "chunked ", "world"]);
    let r = h1_parts(g.http, post("/buffered"), parts()).await;
    assert_eq!(received(&r), by_length(19, "hello chunked world"));
    let r = h1_parts(g.http, post("/buffered"), Parts::of(&[])).await;
    assert_eq!(received(&r), by_length(0, ""));
    let r = h1_parts(g.http, post("/streamed"), parts()).await;
    assert_eq!(received(&r), chunked("hello chunked world"));
    g.gw.shutdown().await;
}

/// An HTTP/2 request without `content-length` on a buffering route reaches an HTTP/1.1
/// upstream by length; on a `request_buffering: false` route, chunked.
#[tokio::test]
async fn h2_bodies_without_a_length_go_by_length_on_buffering_routes() {
    let b = Backend::start().await;
    let g = Gw::start(Some(&request_buffering_routes(&b.url()))).await;
    let post = |path| req("POST", "x", path);
    let parts = || Parts::of(&["from ", "an h2 ", "client"]);
    let r = h2c_parts(g.http, post("/buffered"), parts()).await;
    assert_eq!(received(&r), by_length(17, "from an h2 client"));
    assert_eq!(r.json()["version"], "HTTP/1.1");
    let r = h2c_parts(g.http, post("/streamed"), parts()).await;
    assert_eq!(received(&r), chunked("from an h2 client"));
    g.gw.shutdown().await;
}

/// A body of unknown length longer than `request_buffer_limit` arrives whole: what was read
/// first, then the rest, chunked (nginx would go on reading it into a temporary file and
/// send it by length: the gateway's one difference from Kong here). One of exactly the
/// limit still goes by length.
#[tokio::test]
async fn bodies_over_the_buffer_limit_arrive_whole() {
    let b = Backend::start().await;
    let settings = silverback_proxy::Settings {
        request_buffer_limit: 16,
        ..silverback_proxy::Settings::loopback()
    };
    let g = Gw::start_with(settings, Some(&request_buffering_routes(&b.url()))).await;
    let post = || req("POST", "x", "/buffered");
    let r = h1_parts(g.http, post(), Parts::of(&["0123456789", "012345"])).await;
    assert_eq!(received(&r), by_length(16, "0123456789012345"));
    let r = h1_parts(g.http, post(), Parts::of(&["0123456789", "0123456"])).await;
    assert_eq!(received(&r), chunked("01234567890123456"));
    let r = h1_parts(g.http, post(), Parts::tens(5)).await;
    assert_eq!(received(&r), chunked(&"0123456789".repeat(5)));
    let r = h2c_parts(
        g.http,
        post(),
        Parts::of(&["0123456789", "0123456789", "x"]),
    )
    .await;
    assert_eq!(received(&r), chunked("01234567890123456789x"));
    g.gw.shutdown().await;
}

/// One-byte chunks, each byte distinct, with a pause after the read-ahead limit was passed:
/// every byte arrives once and in order, by length when the body ends within the limit,
/// chunked (what was read ahead, then the rest as it comes) when it goes past it.
#[tokio::test]
async fn one_byte_chunks_arrive_in_order_around_the_read_ahead_limit() {
    let b = Backend::start().await;
    let settings = silverback_proxy::Settings {
        request_buffer_limit: 16,
        ..silverback_proxy::Settings::loopback()
    };
    let g = Gw::start_with(settings, Some(&request_buffering_routes(&b.url()))).await;
    let chunks = |s: &str| -> Vec<u8> {
        s.bytes()
            .flat_map(|c| [b'1', b'\r', b'\n', c, b'\r', b'\n'])
            .collect()
    };
    for (first, then, framing) in [
        ("abcdefghijklmnop", "", "\"content-length\":\"16\""),
        (
            "abcdefghijklmnopqrst",
            "ABCDEFGH",
            "\"transfer-encoding\":\"chunked\"",
        ),
    ] {
        let mut s = TcpStream::connect(g.http).await.unwrap();
        let mut out = b"POST /buffered HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
            Transfer-Encoding: chunked\r\n\r\n"
            .to_vec();
        out.extend(chunks(first));
        s.write_all(&out).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut out = chunks(then);
        out.extend_from_slice(b"0\r\n\r\n");
        s.write_all(&out).await.unwrap();
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut answer))
            .await
            .expect("answered")
            .unwrap();
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(
            answer.contains(&format!("\"body\":\"{first}{then}\"")),
            "{answer}"
        );
        assert!(answer.contains(framing), "{framing}: {answer}");
    }
    g.gw.shutdown().await;
}

/// The client's limits hold while a body of unknown length is read ahead on a buffering
/// route, as on the known-length path: 413 once it grows past `client_max_body_size`, 400
/// for a malformed chunk, no answer (nginx's 408, which closes the connection unanswered)
/// when it stops for `client_body_timeout`; nothing reaches the
/// upstream.
#[tokio::test]
async fn the_clients_limits_hold_while_a_body_is_read_ahead() {
    let b = Backend::start().await;
    let settings = silverback_proxy::Settings {
        client_max_body_size: 16,
        client_body_timeout: Duration::from_millis(300),
        ..silverback_proxy::Settings::loopback()
    };
    let g = Gw::start_with(settings, Some(&request_buffering_routes(&b.url()))).await;
    let w = Duration::from_millis(800);
    let out = raw(
        g.http,
        b"POST /buffered HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\na\r\n0123456789\r\na\r\n0123456789\r\n0\r\n\r\n",
        w,
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 413"), "{out}");
    let out = raw(
        g.http,
        b"POST /buffered HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n",
        w,
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
    let t = std::time::Instant::now();
    let out = raw(
        g.http,
        b"POST /buffered HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
        Duration::from_secs(3),
    )
    .await;
    // (nginx's 408: the request ends unanswered, the connection closed)
    assert!(out.is_empty(), "{out}");
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(2),
        "{took:?}"
    );
    assert_eq!(b.served(), 0);
    // within the limits, by length
    let out = raw(
        g.http,
        b"POST /buffered HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\na\r\n0123456789\r\n0\r\n\r\n",
        w,
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.contains(r#""content-length":"10""#), "{out}");
    assert!(out.contains(r#""body":"0123456789""#), "{out}");
    g.gw.shutdown().await;
}

/// An HTTP/1.1 backend that answers every request as soon as its head is in, without
/// reading its body: `413` with the body `nope!`, and `Connection: close`. Then, by path, `/hold` keeps the
/// connection open for 5 s without reading (its socket buffers fill up), `/close` closes it
/// (a reset, as it holds unread bytes). Each accepted connection is counted.
async fn early_backend(conns: Arc<AtomicUsize>) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            conns.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let answer = b"HTTP/1.1 413 Payload Too Large\r\nConnection: close\r\nContent-Length: 5\r\n\r\nnope!";
                if s.write_all(answer).await.is_err() {
                    return;
                }
                if String::from_utf8_lossy(&head).contains("/hold ") {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                }
            });
        }
    });
    addr
}

/// nginx reads an upstream's answer while it sends the request's body: an upstream that
/// refuses an upload from its head is answered to the client at once, the rest of the body
/// is not sent, and that upstream connection is not reused. (This client reads only once
/// it has written its whole body, so on a buffering route its connection stays usable.)
#[tokio::test]
async fn an_answer_that_comes_while_a_buffered_body_is_sent_is_the_answer() {
    let conns = Arc::new(AtomicUsize::new(0));
    let be = early_backend(conns.clone()).await;
    // a limit that takes the whole body in (it is then written upstream as one piece)
    let settings = Settings {
        request_buffer_limit: 64 << 20,
        ..Settings::loopback()
    };
    let routes = request_buffering_routes(&format!("http://{be}"));
    let g = Gw::start_with(settings, Some(&routes)).await;
    // far more than loopback's socket buffers take
    let total = 48 << 20;
    for (n, path) in ["/buffered/hold", "/buffered/close"]
        .into_iter()
        .enumerate()
    {
        let head = format!("POST {path} HTTP/1.1\r\nHost: x\r\n");
        let run = async {
            let mut s = send_whole_body(g.http, &head, total, false, b'u').await;
            let answer = read_answer(&mut s).await;
            // the client's connection is kept: its body was read whole
            s.write_all(b"GET /buffered/hold HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
                .await
                .expect("write");
            (answer, read_answer(&mut s).await)
        };
        let (first, second) = tokio::time::timeout(Duration::from_secs(20), run)
            .await
            .unwrap_or_else(|_| panic!("{path}: no answer within 20 s"));
        for a in [&first, &second] {
            assert!(a.starts_with("HTTP/1.1 413 "), "{path}: {a}");
            assert!(a.ends_with("\r\n\r\nnope!"), "{path}: {a}");
        }
        // each request had an upstream connection of its own
        assert_eq!(conns.load(Ordering::SeqCst), 2 * (n + 1), "{path}");
    }
}

/// The same on a route that streams the body (`request_buffering: false`), or a buffering
/// route given a body past `request_buffer_limit` (streamed too, where nginx would spill it
/// to a file): the answer reaches the client while it is still sending, and its connection
/// is closed after it (its body was not read whole), gently enough that the answer is not
/// lost to a reset.
#[tokio::test]
async fn an_answer_that_comes_while_a_streamed_body_is_sent_is_the_answer() {
    let conns = Arc::new(AtomicUsize::new(0));
    let be = early_backend(conns.clone()).await;
    let g = Gw::start(Some(&request_buffering_routes(&format!("http://{be}")))).await;
    for path in [
        "/streamed/hold",
        "/streamed/close",
        "/buffered/hold",
        "/buffered/close",
    ] {
        let mut s = TcpStream::connect(g.http).await.expect("connect");
        let total = 48usize << 20;
        s.write_all(
            format!("POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {total}\r\n\r\n")
                .as_bytes(),
        )
        .await
        .expect("head");
        let (mut r, mut w) = s.into_split();
        // the client writes on (its writes fail once the gateway is gone)
        let writer = tokio::spawn(async move {
            let piece = vec![b's'; 64 * 1024];
            for _ in 0..total / piece.len() {
                if w.write_all(&piece).await.is_err() {
                    return;
                }
            }
        });
        let (got, closed) = read_to_close(&mut r, Duration::from_secs(20)).await;
        let got = String::from_utf8_lossy(&got);
        assert!(got.starts_with("HTTP/1.1 413 "), "{path}: {got}");
        assert!(got.ends_with("\r\n\r\nnope!"), "{path}: {got}");
        assert!(closed, "{path}: the connection is closed after the answer");
        writer.abort();
    }
}
