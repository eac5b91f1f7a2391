//! `worker_connections`: the most client connections open at once. Past it, idle
//! HTTP/1.1 connections are closed to make room, as nginx reuses its idle keep-alive
//! connections, and a connection that finds no room is closed unanswered.
#![allow(missing_docs, clippy::unwrap_used)]

mod support;

use std::time::Duration;

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn routes(b: &Backend) -> String {
    format!(
        "_format_version: \"3.0\"\nservices:\n- name: echo\n  url: {}\n  routes:\n  - name: any\n    paths: [\"/\"]\n    strip_path: false\n",
        b.url()
    )
}

/// Sends `GET path` on `s` and reads the whole answer ([`read_answer`]); its status.
async fn get_on(s: &mut TcpStream, path: &str) -> u16 {
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(5), read_answer(s))
        .await
        .unwrap();
    answer.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0)
}

/// Whether the gateway closed `s` (within 2 s) without sending anything.
async fn closed_silently(s: &mut TcpStream) -> bool {
    let (got, closed) = read_to_close(s, Duration::from_secs(2)).await;
    closed && got.is_empty()
}

fn settings(limit: usize) -> silverback_proxy::Settings {
    let mut s = silverback_proxy::Settings::loopback();
    s.worker_connections = limit;
    s
}

#[tokio::test]
async fn idle_connections_make_room_for_a_new_one() {
    let b = Backend::start().await;
    let g = Gw::start_with(settings(3), Some(&routes(&b))).await;
    let mut idle = vec![];
    for _ in 0..3 {
        let mut s = TcpStream::connect(g.http).await.unwrap();
        assert_eq!(get_on(&mut s, "/a").await, 200);
        idle.push(s);
    }
    // a fourth: the idle ones are asked to close, and it is served
    let mut s = TcpStream::connect(g.http).await.unwrap();
    assert_eq!(get_on(&mut s, "/b").await, 200);
    for s in &mut idle {
        assert!(closed_silently(s).await);
    }
    g.gw.shutdown().await;
}

#[tokio::test]
async fn a_connection_past_the_limit_with_none_idle_is_closed_unanswered() {
    let b = Backend::start().await;
    let g = Gw::start_with(settings(3), Some(&routes(&b))).await;
    // three connections busy for 1.5 s
    let mut busy = vec![];
    for _ in 0..3 {
        let mut s = TcpStream::connect(g.http).await.unwrap();
        s.write_all(b"GET /delay/1500 HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        busy.push(s);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let t = std::time::Instant::now();
    let mut s = TcpStream::connect(g.http).await.unwrap();
    let _ = s.write_all(b"GET /c HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(closed_silently(&mut s).await);
    assert!(
        t.elapsed() < Duration::from_millis(1000),
        "{:?}",
        t.elapsed()
    );
    // the busy ones are answered, then there is room again
    let mut buf = [0u8; 16];
    for s in &mut busy {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    }
    drop(busy);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let m = get(g.status, "localhost", "/metrics").await.text();
    let count = |state: &str| -> u64 {
        let key = format!("state=\"{state}\"}} ");
        m.lines()
            .find(|l| l.starts_with("kong_nginx_connections_total") && l.contains(&key))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap()
    };
    // (nginx's `handled` leaves out the connections dropped for want of room)
    assert_eq!(count("accepted") - count("handled"), 1, "{m}");
    g.gw.shutdown().await;
}
