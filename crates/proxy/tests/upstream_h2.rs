//! The upstream keep-alive pool for HTTP/2 (gRPC) upstreams, as nginx's `grpc_pass` with
//! its keep-alive cache uses it: one call per connection at a time (an upstream's
//! `SETTINGS_MAX_CONCURRENT_STREAMS` does not hold calls back), a connection reused only
//! after its call completed cleanly, its request sent before its answer ended, and closed
//! after a timeout, an abandoned answer or an answer ahead of its request, and Kong's
//! `upstream_keepalive_*` settings (pool size, idle timeout, requests per connection)
//! applied as they are to HTTP/1.1 upstreams, which are checked alongside. Real backends on
//! sockets, connections counted where they are accepted.
#![allow(missing_docs, clippy::unwrap_used)]

mod support;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use silverback_proxy::Settings;
use support::*;

/// How the test talks to the upstream through the gateway.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Proto {
    /// gRPC calls over h2c to a `grpc` service.
    Grpc,
    /// gRPC calls to a `grpcs` service (TLS, ALPN `h2`).
    Grpcs,
    /// HTTP/1.1 requests to an `http` service (the same pool settings).
    Http,
}

/// A configuration with one service to `addr` over `proto`, routed on `/`.
fn config(proto: Proto, addr: SocketAddr, read_timeout_ms: u32) -> String {
    let (scheme, route) = match proto {
        Proto::Grpc => ("grpc", "grpc"),
        Proto::Grpcs => ("grpcs", "grpc"),
        Proto::Http => ("http", "http"),
    };
    format!(
        r#"
_format_version: "3.0"
services:
- name: s
  url: {scheme}://{addr}
  read_timeout: {read_timeout_ms}
  routes:
  - name: r
    paths: ["/"]
    protocols: ["{route}"]
"#
    )
}

/// A gRPC call (POST, `application/grpc`, one empty message) to `path`, on a client
/// connection of its own.
async fn call(gw: SocketAddr, path: &str) -> Resp {
    let req = http::Request::post(format!("http://x{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(Bytes::from_static(b"\0\0\0\0\0")))
        .unwrap();
    H2::h2c(gw).await.send(req).await
}

/// One request to the service over `proto`, checked answered whole: a unary gRPC call
/// (grpc-status 0 in the trailers), or an HTTP/1.1 GET.
async fn one(proto: Proto, gw: SocketAddr) {
    match proto {
        Proto::Grpc | Proto::Grpcs => {
            let r = call(gw, "/grpc.Echo/Say").await;
            assert_eq!(r.status, 200, "{proto:?}: {:?}", r.headers);
            let t = r.trailers.expect("trailers");
            assert_eq!(t.get("grpc-status").unwrap(), "0", "{proto:?}");
        }
        Proto::Http => {
            let r = get(gw, "x", "/plain").await;
            assert_eq!(r.status, 200, "{proto:?}");
        }
    }
}

/// A backend for `proto` (TLS with ALPN `h2` for gRPCs).
async fn backend(proto: Proto) -> Backend {
    let b = Backend::builder();
    match proto {
        Proto::Grpcs => b.tls(h2_server_tls(&["127.0.0.1"])).run().await,
        _ => b.run().await,
    }
}

fn accepted(b: &Backend) -> usize {
    b.connections.load(Ordering::SeqCst)
}

/// A backend for `proto`, and a gateway proxying to it with the settings `tweak` leaves.
async fn backend_behind(proto: Proto, tweak: impl FnOnce(&mut Settings)) -> (Backend, Gw) {
    let b = backend(proto).await;
    let mut settings = Settings::loopback();
    tweak(&mut settings);
    let g = Gw::start_with(settings, Some(&config(proto, b.addr, 5000))).await;
    (b, g)
}

/// Waits (up to 5 s) until `f` holds.
async fn until(what: &str, f: impl Fn() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "waited too long: {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// An upstream that takes one stream at a time (as a hyper or tonic server configured
/// so; theirs take 200, Go's 250, nginx's 128), with one call streaming its answer on a
/// connection: the next call goes on another connection and is answered at once, rather
/// than waiting on the first connection for a free stream until its read timeout (504).
#[tokio::test]
async fn calls_beyond_the_upstreams_stream_limit_go_on_other_connections() {
    let b = Backend::builder().h2_max_streams(1).run().await;
    // (a read timeout shorter than the streaming call, with a margin for a slow machine)
    let g = Gw::start(Some(&config(Proto::Grpc, b.addr, 1000))).await;
    // 100 pieces of 1 KiB, 20 ms apart: an answer streaming for two seconds
    let streaming = tokio::spawn(call(g.http, "/grpc.Echo/Watch/slow/100"));
    until("the backend has the streaming call", || b.served() == 1).await;
    let r = call(g.http, "/grpc.Echo/Say").await;
    assert_eq!(r.status, 200, "{:?}", r.headers);
    assert_eq!(
        r.trailers.expect("trailers").get("grpc-status").unwrap(),
        "0"
    );
    assert!(
        !streaming.is_finished(),
        "while the first call still streams"
    );
    let s = streaming.await.unwrap();
    assert_eq!(s.status, 200);
    assert_eq!(s.body.len(), 100 * 1024);
    assert_eq!(accepted(&b), 2);
    g.gw.shutdown().await;
}

/// A call that times out closes its upstream connection: a silent upstream costs each call
/// its read timeout (504), and the next call connects afresh (where a new target may
/// answer) instead of queueing on the silent connection.
#[tokio::test]
async fn a_timed_out_connection_is_closed_not_reused() {
    let (hole, log) = h2_black_hole_counted().await;
    let g = Gw::start(Some(&config(Proto::Grpc, hole, 300))).await;
    for n in 1..=2 {
        let t = Instant::now();
        let r = call(g.http, "/grpc.Echo/Say").await;
        assert_eq!(r.status, 504, "call {n}: {:?}", r.headers);
        assert_eq!(r.header("grpc-status"), Some("4"), "call {n}");
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
        assert_eq!(log.accepted.load(Ordering::SeqCst), n, "call {n}");
        until("the timed-out connection is closed", || {
            log.closed.load(Ordering::SeqCst) == n
        })
        .await;
    }
    assert_eq!(g.gw.idle_upstream_connections(), 0);
    g.gw.shutdown().await;
}

/// A call whose answer the client abandons mid-stream leaves its upstream connection
/// mid-stream too: it is closed, and the next call opens another.
#[tokio::test]
async fn an_abandoned_answer_closes_its_connection() {
    let b = Backend::start().await;
    let g = Gw::start(Some(&config(Proto::Grpc, b.addr, 2000))).await;
    let s = tokio::net::TcpStream::connect(g.http).await.unwrap();
    let (mut tx, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(s))
            .await
            .unwrap();
    let conn = tokio::spawn(conn);
    tx.ready().await.unwrap();
    let req = http::Request::post("http://x/grpc.Echo/Watch/slow/50")
        .header("content-type", "application/grpc")
        .body(Full::new(Bytes::from_static(b"\0\0\0\0\0")))
        .unwrap();
    let resp = tx.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let first = body.frame().await.unwrap().unwrap();
    assert!(first.is_data());
    // the client goes away with the answer still streaming
    drop((body, tx));
    conn.abort();
    until("the abandoned call's upstream connection is closed", || {
        b.closed() == 1
    })
    .await;
    one(Proto::Grpc, g.http).await;
    assert_eq!(
        accepted(&b),
        2,
        "the abandoned call's connection was not reused"
    );
    one(Proto::Grpc, g.http).await;
    assert_eq!(accepted(&b), 2, "the completed call's was");
    assert_eq!(b.closed(), 1, "the completed call's connection stays open");
    g.gw.shutdown().await;
}

/// A call the upstream answers in full before it read the request (a trailers-only
/// refusal, as an authenticating gRPC server sends) while it leaves the request's stream
/// open and its window shut: the request is still being sent, so its connection is closed
/// rather than pooled. Pooled, it would take the next call on a second stream, which an
/// upstream taking one stream at a time holds until the read timeout (504).
#[tokio::test]
async fn a_call_answered_before_its_request_was_sent_closes_its_connection() {
    let b = Backend::builder()
        .h2_max_streams(1)
        .h2_stream_window(16 * 1024)
        .run()
        .await;
    let g = Gw::start(Some(&config(Proto::Grpc, b.addr, 4000))).await;
    // a connection that knows the upstream's settings (a new one may send a first request
    // with the default 64 KiB window, before they arrive)
    one(Proto::Grpc, g.http).await;
    assert_eq!(accepted(&b), 1);
    // 60 KiB with a content-length: read whole by the gateway (within the request buffer
    // limit), then sent on the pooled connection, whose stream window takes 16 KiB of it
    let body = Bytes::from(vec![0u8; 60 * 1024]);
    let req = http::Request::post("http://x/grpc.Echo/Say/deny/5000")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("content-length", body.len())
        .body(Full::new(body))
        .unwrap();
    let r = H2::h2c(g.http).await.send(req).await;
    assert_eq!(r.status, 200, "{:?}", r.headers);
    assert_eq!(r.header("grpc-status"), Some("16"), "{:?}", r.headers);
    let t = Instant::now();
    one(Proto::Grpc, g.http).await;
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "the next call waited {:?}",
        t.elapsed()
    );
    assert_eq!(accepted(&b), 2, "the next call went on a new connection");
    until("the refused call's upstream connection is closed", || {
        b.closed() == 1
    })
    .await;
    g.gw.shutdown().await;
}

/// A gRPC call whose request body streams from the client (no content-length): answered
/// before the client ended its request, the call leaves the request unfinished and its
/// connection is closed, and the next call opens another.
#[tokio::test]
async fn a_streamed_call_answered_before_its_request_ended_closes_its_connection() {
    let b = Backend::start().await;
    let g = Gw::start(Some(&config(Proto::Grpc, b.addr, 4000))).await;
    let req = http::Request::post("http://x/grpc.Echo/Say/deny/1000")
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    let (feed, answer) = h2c_fed(g.http, req).await;
    feed.send(Bytes::from_static(b"\0\0\0\0\x01"))
        .await
        .unwrap();
    let r = answer.await.unwrap();
    assert_eq!(r.status, 200, "{:?}", r.headers);
    assert_eq!(r.header("grpc-status"), Some("16"), "{:?}", r.headers);
    until("the call's upstream connection is closed", || {
        b.closed() == 1
    })
    .await;
    // the client still streams its request, to no one
    feed.send(Bytes::from_static(b"x")).await.ok();
    drop(feed);
    one(Proto::Grpc, g.http).await;
    assert_eq!(accepted(&b), 2, "the next call went on a new connection");
    g.gw.shutdown().await;
}

/// A gRPC call whose request body streams from the client and ends (the client
/// half-closes) before the upstream answers: the call completed whole, and its connection
/// carries the next call.
#[tokio::test]
async fn a_streamed_call_whose_request_ended_first_keeps_its_connection() {
    let b = Backend::start().await;
    let g = Gw::start(Some(&config(Proto::Grpc, b.addr, 4000))).await;
    let req = http::Request::post("http://x/grpc.Echo/Say")
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    let (feed, answer) = h2c_fed(g.http, req).await;
    feed.send(Bytes::from_static(b"\0\0\0\0\x02"))
        .await
        .unwrap();
    until("the backend has the call", || b.served() == 1).await;
    feed.send(Bytes::from_static(b"hi")).await.unwrap();
    drop(feed);
    let r = answer.await.unwrap();
    assert_eq!(r.status, 200, "{:?}", r.headers);
    assert_eq!(&r.body[..], b"\0\0\0\0\x02hi");
    assert_eq!(
        r.trailers.expect("trailers").get("grpc-status").unwrap(),
        "0"
    );
    one(Proto::Grpc, g.http).await;
    assert_eq!(accepted(&b), 1, "the next call reused the connection");
    assert_eq!(b.closed(), 0);
    g.gw.shutdown().await;
}

/// Calls one after the other share one upstream connection; calls at the same time take
/// one each (an idle one first), and those are all kept for the calls after them. gRPC in
/// clear and over TLS, and HTTP/1.1 for comparison.
#[tokio::test]
async fn sequential_calls_share_a_connection_and_concurrent_ones_do_not() {
    for proto in [Proto::Grpc, Proto::Grpcs, Proto::Http] {
        let b = backend(proto).await;
        let g = Gw::start(Some(&config(proto, b.addr, 5000))).await;
        for _ in 0..5 {
            one(proto, g.http).await;
        }
        assert_eq!(accepted(&b), 1, "{proto:?}: sequential calls");
        assert_eq!(g.gw.idle_upstream_connections(), 1, "{proto:?}");
        // four at once: the backend holds each until all four arrived
        b.hold_until(4);
        let calls: Vec<_> = (0..4).map(|_| tokio::spawn(one(proto, g.http))).collect();
        for c in calls {
            c.await.unwrap();
        }
        assert_eq!(accepted(&b), 4, "{proto:?}: the idle one and three more");
        assert_eq!(g.gw.idle_upstream_connections(), 4, "{proto:?}");
        for _ in 0..4 {
            one(proto, g.http).await;
        }
        assert_eq!(accepted(&b), 4, "{proto:?}: all kept and reused");
        g.gw.shutdown().await;
    }
}

/// Kong's `upstream_keepalive_max_requests`, `upstream_keepalive_idle_timeout` and
/// `upstream_keepalive_pool_size` retire HTTP/2 upstream connections as they do HTTP/1.1
/// ones: after that many requests, after that long idle, and beyond that many idle per
/// address.
#[tokio::test]
async fn keepalive_settings_retire_connections() {
    for proto in [Proto::Grpc, Proto::Http] {
        // at most 3 requests per connection: 7 calls take 3 connections
        let (b, g) = backend_behind(proto, |s| s.upstream_keepalive_max_requests = 3).await;
        for _ in 0..7 {
            one(proto, g.http).await;
        }
        assert_eq!(accepted(&b), 3, "{proto:?}: max requests");
        g.gw.shutdown().await;

        // idle for at most 2 s (a margin for a slow machine between the first two calls)
        let (b, g) = backend_behind(proto, |s| {
            s.upstream_keepalive_idle_timeout = Duration::from_secs(2)
        })
        .await;
        one(proto, g.http).await;
        one(proto, g.http).await;
        assert_eq!(accepted(&b), 1, "{proto:?}: reused while fresh");
        tokio::time::sleep(Duration::from_secs(3)).await;
        one(proto, g.http).await;
        assert_eq!(accepted(&b), 2, "{proto:?}: idle timeout");
        g.gw.shutdown().await;

        // at most 2 idle connections per address: of 4 used at once, 2 are kept
        let (b, g) = backend_behind(proto, |s| s.upstream_keepalive_pool_size = 2).await;
        for round in 1..=2 {
            // four at once: the backend holds each until all four arrived
            b.hold_until(4);
            let calls: Vec<_> = (0..4).map(|_| tokio::spawn(one(proto, g.http))).collect();
            for c in calls {
                c.await.unwrap();
            }
            assert_eq!(g.gw.idle_upstream_connections(), 2, "{proto:?}: pool size");
            // the second round reuses the two kept and opens two more
            assert_eq!(accepted(&b), 4 * round - 2 * (round - 1), "{proto:?}");
        }
        g.gw.shutdown().await;
    }
}

/// The settings at 0, as Kong reads them: no limit on requests per connection or on idle
/// time, and a pool size of 0 keeps no connection (each request opens one).
#[tokio::test]
async fn keepalive_settings_of_0_are_kongs() {
    for proto in [Proto::Grpc, Proto::Http] {
        let (b, g) = backend_behind(proto, |s| {
            s.upstream_keepalive_max_requests = 0;
            s.upstream_keepalive_idle_timeout = Duration::ZERO;
        })
        .await;
        for _ in 0..7 {
            one(proto, g.http).await;
        }
        assert_eq!(accepted(&b), 1, "{proto:?}: one connection for all");
        assert_eq!(g.gw.idle_upstream_connections(), 1, "{proto:?}");
        g.gw.shutdown().await;

        let (b, g) = backend_behind(proto, |s| s.upstream_keepalive_pool_size = 0).await;
        for _ in 0..3 {
            one(proto, g.http).await;
        }
        assert_eq!(accepted(&b), 3, "{proto:?}: a connection per request");
        assert_eq!(g.gw.idle_upstream_connections(), 0, "{proto:?}");
        g.gw.shutdown().await;
    }
}

/// A 204 from a gRPC service reaches the client without `Content-Type` or
/// `Content-Length`, as nginx's header filter writes that status.
#[tokio::test]
async fn a_204_from_a_grpc_service_has_no_content_type() {
    let b = backend(Proto::Grpc).await;
    let g = Gw::start(Some(&config(Proto::Grpc, b.addr, 60_000))).await;
    let r = call(g.http, "/any/status/204").await;
    assert_eq!(r.status, 204, "{:?}", r.headers);
    assert!(!r.headers.contains_key("content-type"), "{:?}", r.headers);
    assert!(!r.headers.contains_key("content-length"), "{:?}", r.headers);
    assert_eq!(r.header("x-backend"), Some("backend"), "{:?}", r.headers);
    g.gw.shutdown().await;
}
