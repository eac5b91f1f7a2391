//! Health checks and least-connections against real backend servers on loopback sockets.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Backend, config, eventually, get};
use silverback_balancer::{Balancers, HealthStatus, NoPeer, Outcome, PickContext};
use tokio::runtime::Handle;

/// One proxied try the way the proxy makes it: pick, send, report, drop.
async fn proxy_once(bs: &Balancers, tried: &[SocketAddr]) -> Result<(SocketAddr, u16), NoPeer> {
    let peer = bs.peer("up", 80, &PickContext::default(), tried).await?;
    let start = Instant::now();
    match get(peer.addr, "/").await {
        Ok(status) => {
            peer.report(Outcome::Response {
                status,
                latency: start.elapsed(),
            });
            Ok((peer.addr, status))
        }
        Err(_) => {
            peer.report(Outcome::TcpError);
            Ok((peer.addr, 502))
        }
    }
}

fn state_of(bs: &Balancers, addr: SocketAddr) -> HealthStatus {
    let h = bs.get("up").expect("up").health();
    h.targets
        .iter()
        .flat_map(|t| t.data.addresses.iter())
        .find(|a| a.ip == addr.ip().to_string() && a.port == addr.port())
        .map(|a| a.health)
        .unwrap_or(HealthStatus::DnsError)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passive_ejection_then_active_recovery() {
    let good = Backend::start("127.0.10.1").await;
    let bad = Backend::start("127.0.10.2").await;
    let cfg = config(&format!(
        "_format_version: '3.0'
upstreams:
- name: up
  healthchecks:
    active:
      http_path: /health
      healthy:
        interval: 0
        successes: 2
      unhealthy:
        interval: 0.1
        http_failures: 3
    passive:
      unhealthy:
        http_failures: 3
  targets:
  - target: {}
  - target: {}
",
        good.addr, bad.addr
    ));
    let bs = Balancers::build(&cfg, None, &Handle::current()).expect("build");
    bad.set_status(500);
    // Round-robin alternates; after 3 failures of `bad` it is out.
    let mut bad_before = 0;
    for _ in 0..20 {
        let (addr, status) = proxy_once(&bs, &[]).await.expect("peer");
        if addr == bad.addr {
            assert_eq!(status, 500);
            bad_before += 1;
        }
    }
    assert_eq!(bad_before, 3, "ejected after exactly 3 failures");
    assert_eq!(state_of(&bs, bad.addr), HealthStatus::Unhealthy);
    let hits = bad.hits();
    for _ in 0..20 {
        let (addr, _) = proxy_once(&bs, &[]).await.expect("peer");
        assert_eq!(addr, good.addr);
    }
    assert_eq!(bad.hits(), hits, "an unhealthy target got traffic");
    // Probes keep failing (500 is an unhealthy status): stays out.
    assert!(
        eventually(Duration::from_secs(3), || bad.probes() >= 3).await,
        "no active probes"
    );
    assert_eq!(state_of(&bs, bad.addr), HealthStatus::Unhealthy);
    // The healthy target is not probed (healthy.interval = 0).
    assert_eq!(good.probes(), 0);
    // Fixed: two successful probes bring it back.
    bad.set_status(200);
    assert!(
        eventually(Duration::from_secs(5), || state_of(&bs, bad.addr)
            == HealthStatus::Healthy)
        .await,
        "active checks did not bring the target back"
    );
    let mut seen = HashMap::new();
    for _ in 0..10 {
        let (addr, _) = proxy_once(&bs, &[]).await.expect("peer");
        *seen.entry(addr).or_insert(0) += 1;
    }
    assert_eq!(seen.get(&bad.addr), Some(&5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_targets_are_found_by_tcp_probes_and_503_when_all_down() {
    let a = Backend::start("127.0.11.1").await;
    let b = Backend::start("127.0.11.2").await;
    let cfg = config(&format!(
        "_format_version: '3.0'
upstreams:
- name: up
  healthchecks:
    active:
      type: tcp
      timeout: 0.5
      healthy:
        interval: 0.1
        successes: 1
      unhealthy:
        interval: 0.1
        tcp_failures: 2
  targets:
  - target: {}
  - target: {}
",
        a.addr, b.addr
    ));
    let bs = Balancers::build(&cfg, None, &Handle::current()).expect("build");
    a.kill();
    b.kill();
    assert!(
        eventually(Duration::from_secs(5), || {
            state_of(&bs, a.addr) == HealthStatus::Unhealthy
                && state_of(&bs, b.addr) == HealthStatus::Unhealthy
        })
        .await,
        "dead targets still healthy"
    );
    let err = bs
        .peer("up", 80, &PickContext::default(), &[])
        .await
        .expect_err("all down");
    assert_eq!(err, NoPeer::NoHealthyPeer);
    assert_eq!(err.status(), 503);
    let h = bs.get("up").expect("up").health();
    assert_eq!(h.balancer.health, HealthStatus::Unhealthy);
    // One comes back.
    b.revive().await;
    assert!(
        eventually(Duration::from_secs(5), || state_of(&bs, b.addr)
            == HealthStatus::Healthy)
        .await
    );
    let (addr, status) = proxy_once(&bs, &[]).await.expect("peer");
    assert_eq!((addr, status), (b.addr, 200));
    // Dropping the configuration stops the checker: no more probes arrive.
    drop(bs);
    tokio::time::sleep(Duration::from_millis(150)).await;
    let before = b.probes();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(b.probes(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_count_as_timeouts() {
    let slow = Backend::start("127.0.12.1").await;
    slow.set_delay(Duration::from_secs(3));
    let cfg = config(&format!(
        "_format_version: '3.0'
upstreams:
- name: up
  healthchecks:
    active:
      http_path: /health
      timeout: 0.2
      healthy:
        interval: 0.1
      unhealthy:
        timeouts: 2
  targets:
  - target: {}
",
        slow.addr
    ));
    let bs = Balancers::build(&cfg, None, &Handle::current()).expect("build");
    assert!(
        eventually(Duration::from_secs(5), || state_of(&bs, slow.addr)
            == HealthStatus::Unhealthy)
        .await,
        "slow target still healthy"
    );
    // Passive timeouts too.
    let cfg2 = config(&format!(
        "_format_version: '3.0'\nupstreams:\n- name: up\n  healthchecks:\n    passive:\n      unhealthy:\n        timeouts: 2\n  targets:\n  - target: {}\n",
        slow.addr
    ));
    let bs2 = Balancers::build(&cfg2, None, &Handle::current()).expect("build");
    let p = bs2
        .peer("up", 80, &PickContext::default(), &[])
        .await
        .expect("peer");
    p.report(Outcome::Timeout);
    assert_eq!(state_of(&bs2, slow.addr), HealthStatus::Healthy);
    p.report(Outcome::Timeout);
    assert_eq!(state_of(&bs2, slow.addr), HealthStatus::Unhealthy);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_connections_sends_less_to_the_slow_target() {
    let fast = Backend::start("127.0.13.1").await;
    let slow = Backend::start("127.0.13.2").await;
    slow.set_delay(Duration::from_millis(150));
    fast.set_delay(Duration::from_millis(5));
    let cfg = config(&format!(
        "_format_version: '3.0'\nupstreams:\n- name: up\n  algorithm: least-connections\n  targets:\n  - target: {}\n  - target: {}\n",
        fast.addr, slow.addr
    ));
    let bs = Arc::new(Balancers::build(&cfg, None, &Handle::current()).expect("build"));
    let deadline = Instant::now() + Duration::from_millis(1500);
    let mut workers = Vec::new();
    for _ in 0..6 {
        let bs = Arc::clone(&bs);
        workers.push(tokio::spawn(async move {
            let mut n = 0;
            while Instant::now() < deadline && n < 10_000 {
                proxy_once(&bs, &[]).await.expect("peer");
                n += 1;
            }
        }));
    }
    for w in workers {
        w.await.expect("worker");
    }
    let (f, s) = (fast.hits(), slow.hits());
    // Round-robin would split evenly; least-connections keeps the slow one at about one
    // request at a time.
    assert!(f > 5 * s, "fast {f}, slow {s}");
    assert!(s >= 1, "slow never used");
}

/// A backend that records each request head it reads and answers `answer` without a
/// `Content-Length` and without closing the connection.
async fn recording_backend(
    ip: &str,
    answer: &'static [u8],
) -> (SocketAddr, Arc<std::sync::Mutex<Vec<String>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind((ip, 0)).await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let heads: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
    let h = Arc::clone(&heads);
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                continue;
            };
            let h = Arc::clone(&h);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 512];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut chunk).await {
                        Ok(n) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                        _ => return,
                    }
                }
                h.lock()
                    .expect("lock")
                    .push(String::from_utf8_lossy(&buf).into_owned());
                let _ = s.write_all(answer).await;
                // (held open: the probe must not wait for the end of the answer)
                tokio::time::sleep(Duration::from_secs(30)).await;
            });
        }
    });
    (addr, heads)
}

/// Active HTTP probes send lua-resty-healthcheck's request: `GET <path> HTTP/1.0`, the
/// configured headers, `Host` (the upstream's `host_header`, else the target's name or IP,
/// no port), nothing else; and read only the status line, so an answer without a length
/// that never ends is read in time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_http_probes_send_kongs_request() {
    let (plain, plain_heads) =
        recording_backend("127.0.10.20", b"HTTP/1.1 500 Oops\r\nx: y\r\n\r\nbody").await;
    let (hh, hh_heads) = recording_backend("127.0.10.21", b"HTTP/1.0 200 OK\r\n\r\n").await;
    let checks = "  healthchecks:
    active:
      http_path: /status
      timeout: 2
      headers:
        x-probe: [\"1\"]
      healthy:
        interval: 0.1
      unhealthy:
        interval: 0.1
        http_failures: 1
";
    let cfg = config(&format!(
        "_format_version: '3.0'
upstreams:
- name: up
{checks}  targets:
  - target: {plain}
- name: named
  host_header: probe.internal
{checks}  targets:
  - target: {hh}
"
    ));
    let bs = Balancers::build(&cfg, None, &Handle::current()).expect("build");
    // The 500 is read from the status line alone: an HTTP failure, not a timeout.
    assert!(
        eventually(Duration::from_secs(5), || state_of(&bs, plain)
            == HealthStatus::Unhealthy)
        .await,
        "the probe's 500 was not counted"
    );
    assert!(
        eventually(Duration::from_secs(5), || !hh_heads
            .lock()
            .expect("lock")
            .is_empty())
        .await
    );
    let ip = plain.ip();
    assert_eq!(
        plain_heads.lock().expect("lock")[0],
        format!("GET /status HTTP/1.0\r\nx-probe: 1\r\nHost: {ip}\r\n\r\n")
    );
    assert_eq!(
        hh_heads.lock().expect("lock")[0],
        "GET /status HTTP/1.0\r\nx-probe: 1\r\nHost: probe.internal\r\n\r\n"
    );
    let h = bs.get("named").expect("named").health();
    assert_eq!(h.targets[0].health, HealthStatus::Healthy);
}
