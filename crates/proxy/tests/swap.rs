//! Hot configuration swap under continuous load: consecutive `POST /config` swaps between two
//! large configurations cause no failed request and no connection reset.
//!
//! Size and count: `SILVERBACK_SWAP_ROUTES` (default 10000 in release builds, 100 in debug
//! builds, where loading is ~10x slower) and `SILVERBACK_SWAPS` (default 200 in release builds,
//! 50 in debug builds: a debug-build load costs about a second whatever its size).

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use support::*;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swaps_under_load_lose_nothing() {
    let routes = env(
        "SILVERBACK_SWAP_ROUTES",
        if cfg!(debug_assertions) { 100 } else { 10_000 },
    );
    let swaps = env(
        "SILVERBACK_SWAPS",
        if cfg!(debug_assertions) { 50 } else { 200 },
    );
    let b = Backend::start().await;
    let backend = b.addr.to_string();
    let a = silverback_config::synthetic::services_routes_targets(routes, &backend);
    let c = silverback_config::synthetic::services_routes_targets(routes - 1, &backend);
    let g = Gw::start(None).await;
    let r = admin_post(g.admin, "/config", "application/json", a.clone()).await;
    assert_eq!(r.status, 201);

    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let mut load = vec![];
    for w in 0..2 {
        let (stop, ok, failed, addr) = (stop.clone(), ok.clone(), failed.clone(), g.http);
        load.push(tokio::spawn(async move {
            let mut c = H1::connect(addr).await;
            let mut i = 0usize;
            // Bounded: stops when the swaps are done, or after 200k requests.
            while !stop.load(Ordering::Relaxed) && i < 200_000 {
                // Routes 0..routes-2 exist in both configurations.
                let n = (i * 7 + w) % (routes - 1);
                let r = c
                    .get(&format!("svc-{n}.example.test"), &format!("/svc-{n}/x"))
                    .await;
                if r.status == 200 && r.header("x-backend").is_some() {
                    ok.fetch_add(1, Ordering::Relaxed);
                } else {
                    failed.fetch_add(1, Ordering::Relaxed);
                    eprintln!("failed: {} {}", r.status, r.text());
                }
                i += 1;
            }
        }));
    }
    let mut latencies = vec![];
    for i in 0..swaps {
        let body = if i % 2 == 0 { c.clone() } else { a.clone() };
        let t = Instant::now();
        let r = admin_post(g.admin, "/config", "application/json", body).await;
        latencies.push(t.elapsed());
        assert_eq!(r.status, 201, "swap {i}: {}", r.text());
    }
    // Let the load run a little past the last swap.
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.store(true, Ordering::Relaxed);
    for l in load {
        // A panic here would be a connection error (reset) in a client.
        l.await.expect("load client saw no connection error");
    }
    latencies.sort();
    let med = latencies[latencies.len() / 2];
    let max = latencies[latencies.len() - 1];
    eprintln!(
        "{swaps} swaps of {routes} routes: median {med:?}, max {max:?}; {} requests ok, {} failed",
        ok.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed)
    );
    assert_eq!(failed.load(Ordering::Relaxed), 0);
    assert!(
        ok.load(Ordering::Relaxed) > swaps,
        "load kept running during the swaps"
    );
    g.gw.shutdown().await;
}

#[tokio::test]
async fn regexes_compile_in_the_background_after_a_swap() {
    let b = Backend::start().await;
    let mut cfg = String::from("_format_version: \"3.0\"\nservices:\n");
    for i in 0..40 {
        cfg.push_str(&format!(
            "- name: s{i}\n  url: http://{addr}\n  routes:\n  - name: r{i}\n    paths: [\"~/items/{i}/(?<id>[0-9]+)$\"]\n",
            addr = b.addr
        ));
    }
    let g = Gw::start(None).await;
    let r = admin_post(g.admin, "/config", "application/x-www-form-urlencoded", cfg).await;
    assert_eq!(r.status, 201, "{}", r.text());
    // No request has used a regex yet; the warm-up thread compiles all 40 (bounded wait).
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut counts = g.gw.regex_counts();
    while counts.1 < counts.0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
        counts = g.gw.regex_counts();
    }
    assert_eq!(counts, (40, 40));
    let mut c = H1::connect(g.http).await;
    assert_eq!(c.get("any", "/items/7/123").await.status, 200);
    assert_eq!(c.get("any", "/items/7/abc").await.status, 404);
    g.gw.shutdown().await;
}
