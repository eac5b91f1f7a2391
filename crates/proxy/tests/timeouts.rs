//! Timeouts on writes: Kong's upstream `write_timeout` (nginx's `proxy_send_timeout`)
//! fails a request whose body the upstream stops accepting, with 504; `send_timeout` drops
//! a client that stops reading its answer.
#![allow(missing_docs, clippy::unwrap_used)]

mod support;

use std::time::{Duration, Instant};

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn write_timeout_when_the_upstream_stops_reading() {
    // An upstream that accepts connections and never reads from them.
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    sock.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let l = sock.listen(16).unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = l.accept().await {
            held.push(s);
        }
    });
    let cfg = format!(
        r#"
_format_version: "3.0"
services:
- name: stuck
  url: http://{addr}
  write_timeout: 300
  read_timeout: 20000
  retries: 0
  routes:
  - name: stuck
    paths: ["/w"]
"#
    );
    let g = Gw::start(Some(&cfg)).await;
    let len: usize = 32 << 20;
    let s = tokio::net::TcpStream::connect(g.http).await.unwrap();
    let (mut rd, mut wr) = s.into_split();
    let t = Instant::now();
    tokio::spawn(async move {
        let head = format!("POST /w HTTP/1.1\r\nHost: x\r\nContent-Length: {len}\r\n\r\n");
        if wr.write_all(head.as_bytes()).await.is_err() {
            return;
        }
        let chunk = vec![b'a'; 64 << 10];
        for _ in 0..len / chunk.len() {
            if wr.write_all(&chunk).await.is_err() {
                return;
            }
        }
    });
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&out).contains("\r\n\r\n") {
        match tokio::time::timeout(Duration::from_secs(15), rd.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 504"), "{text}");
    assert!(
        t.elapsed() < Duration::from_secs(12),
        "the write timeout, not the read timeout, ended it: {:?}",
        t.elapsed()
    );
    g.gw.shutdown().await;
}

/// A backend that answers every request with a 32 MiB body.
async fn big_backend() -> std::net::SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let size = 32 << 20;
                let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {size}\r\n\r\n");
                if s.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let chunk = vec![b'x'; 64 << 10];
                for _ in 0..size / chunk.len() {
                    if s.write_all(&chunk).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_client_that_stops_reading_is_dropped_after_send_timeout() {
    let be = big_backend().await;
    let cfg = format!(
        r#"
_format_version: "3.0"
services:
- name: big
  url: http://{be}
  routes:
  - name: big
    paths: ["/"]
"#
    );
    // With the fast path and with hyper's server.
    for fast_h1 in [true, false] {
        let settings = silverback_proxy::Settings {
            send_timeout: Duration::from_millis(300),
            fast_h1,
            ..silverback_proxy::Settings::loopback()
        };
        let g = Gw::start_with(settings, Some(&cfg)).await;
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.set_recv_buffer_size(4096).unwrap();
        let mut c = sock.connect(g.http).await.unwrap();
        c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        // The client reads nothing for a while: the gateway's writes stall, then give up.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let start = Instant::now();
        let mut got = 0usize;
        let mut buf = vec![0u8; 1 << 16];
        let closed = loop {
            match tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break true,
                Ok(Ok(n)) => got += n,
                Err(_) => break false,
            }
        };
        assert!(
            closed,
            "fast_h1 {fast_h1}: connection still open after {got} bytes"
        );
        assert!(
            got < 32 << 20,
            "fast_h1 {fast_h1}: the whole body arrived ({got} bytes)"
        );
        assert!(start.elapsed() < Duration::from_secs(5));
        g.gw.shutdown().await;
    }
}

/// A request sent and then timed out is tried again on a buffering route (`retries`), but
/// never on a `request_buffering: false` route, where Kong's nginx retries no request it
/// sent (`request_body_no_buffering`), whatever its method or body: one try, then 504.
#[tokio::test]
async fn sent_requests_are_not_retried_on_unbuffered_routes() {
    // An upstream that reads requests and never answers; it counts them.
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let seen = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen2 = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let seen = seen2.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let mut head = Vec::new();
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 {
                        return;
                    }
                    head.extend_from_slice(&buf[..n]);
                    if head.windows(4).any(|w| w == b"\r\n\r\n") {
                        seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        head.clear();
                    }
                }
            });
        }
    });
    let cfg = format!(
        "_format_version: \"3.0\"\nservices:\n- name: silent\n  url: http://{addr}\n  read_timeout: 100\n  retries: 2\n  routes:\n  - name: buffered\n    paths: [\"/b\"]\n  - name: unbuffered\n    paths: [\"/u\"]\n    request_buffering: false\n"
    );
    let g = Gw::start(Some(&cfg)).await;
    let count = || seen.load(std::sync::atomic::Ordering::SeqCst);
    let r = get(g.http, "x", "/b").await;
    assert_eq!(r.status, 504);
    assert_eq!(count(), 3, "a try and two retries");
    let r = get(g.http, "x", "/u").await;
    assert_eq!(r.status, 504);
    assert_eq!(count(), 4, "one try");
    g.gw.shutdown().await;
}
