//! Benchmarks (ignored by default; run with
//! `cargo test --release -p silverback-controller --test bench -- --ignored --nocapture --test-threads 1`):
//!
//! - apply → traffic latency: with 1,000 Ingresses present, 100 Ingresses created one after
//!   another, each timed from the create call to the proxy answering 200 on its path;
//! - controller memory (process RSS) with 10,000 Ingresses, pushing to a target that only
//!   counts bytes (so the gateway's own memory is not counted).
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::*;
use futures::StreamExt as _;
use futures::future::BoxFuture;
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{Api, PostParams};
use silverback_controller::{
    ControllerOptions, DataPlaneTarget, InProcessTarget, PushError, SyncArgs,
};
use silverback_envtest::netns::NetNs;
use silverback_proxy::{Gateway, ListenerKind, Settings};

fn rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    kb / 1024.0
}

async fn create_many(client: &kube::Client, ns: &str, prefix: &str, range: std::ops::Range<usize>) {
    let api = Api::<Ingress>::namespaced(client.clone(), ns);
    futures::stream::iter(range)
        .map(|i| {
            let api = api.clone();
            let ing = ingress(
                ns,
                &format!("{prefix}{i}"),
                &format!("/{prefix}{i}"),
                "echo",
            );
            async move {
                api.create(&PostParams::default(), &ing).await.unwrap();
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark"]
async fn apply_to_traffic_latency_with_1000_ingresses() {
    common::logs();
    let cp = start_control_plane(false).await;
    let admin = cp.client();
    let ns = cp.create_namespace("bench").await.unwrap();
    apply_ingress_class(&admin).await;
    let net = NetNs::create().unwrap();
    let _echo = net.spawn_echo(8080, "bench").unwrap();
    service_with_endpoint(&admin, &ns, "echo", &net.addr().to_string(), 8080).await;
    create_many(&admin, &ns, "pre", 0..1000).await;

    let settings = Settings::loopback();
    let (flavor, plugins) = (settings.router_flavor, settings.plugins.clone());
    let gw = Arc::new(Gateway::start(settings, None).await.unwrap());
    let proxy = gw.addr(ListenerKind::Proxy, false).unwrap();
    let target: Arc<dyn DataPlaneTarget> =
        Arc::new(InProcessTarget::new(gw.clone(), flavor, plugins));
    let ctl = silverback_controller::start_cluster(
        admin.clone(),
        &ControllerOptions::default(),
        vec![target],
    )
    .await
    .unwrap();
    until_status(proxy, "b.test", "/pre999", 200).await;

    let api = Api::<Ingress>::namespaced(admin.clone(), &ns);
    let mut lat = Vec::new();
    for i in 0..100 {
        let path = format!("/new{i}");
        let t0 = Instant::now();
        api.create(
            &PostParams::default(),
            &ingress(&ns, &format!("new{i}"), &path, "echo"),
        )
        .await
        .unwrap();
        loop {
            if let Ok((200, _)) = get(proxy, "b.test", &path).await {
                break;
            }
            assert!(t0.elapsed() < Duration::from_secs(10), "{path} not served");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        lat.push(t0.elapsed());
    }
    lat.sort();
    eprintln!(
        "apply->200 with 1000 Ingresses present, 100 creates: p50 {:?} p90 {:?} p99 {:?} max {:?}",
        pct(&lat, 0.5),
        pct(&lat, 0.9),
        pct(&lat, 0.99),
        lat[lat.len() - 1]
    );
    assert!(pct(&lat, 0.99) < Duration::from_secs(1));
    ctl.shutdown().await;
}

/// Accepts everything; counts bytes.
#[derive(Debug, Default)]
struct Sink {
    bytes: AtomicU64,
}

impl DataPlaneTarget for Sink {
    fn name(&self) -> &str {
        "sink"
    }
    fn push<'a>(&'a self, document: &'a [u8]) -> BoxFuture<'a, Result<(), PushError>> {
        self.bytes.store(document.len() as u64, Ordering::Relaxed);
        Box::pin(async { Ok(()) })
    }
    fn config_hash(&self) -> BoxFuture<'_, Result<String, String>> {
        Box::pin(async { Ok("x".to_string()) })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark"]
async fn controller_memory_with_10000_ingresses() {
    common::logs();
    let cp = start_control_plane(false).await;
    let admin = cp.client();
    let ns = cp.create_namespace("mem").await.unwrap();
    apply_ingress_class(&admin).await;
    service_with_endpoint(&admin, &ns, "echo", "192.0.2.1", 8080).await;
    let before = rss_mb();
    let sink = Arc::new(Sink::default());
    let ctl = silverback_controller::start_cluster(
        admin.clone(),
        &ControllerOptions {
            sync: SyncArgs {
                sync_max_delay: Duration::from_millis(500),
                ..SyncArgs::default()
            },
            ..ControllerOptions::default()
        },
        vec![sink.clone() as Arc<dyn DataPlaneTarget>],
    )
    .await
    .unwrap();
    let t0 = Instant::now();
    create_many(&admin, &ns, "i", 0..10_000).await;
    eprintln!("10k Ingresses created in {:?}", t0.elapsed());
    let o = ctl
        .wait_outcome(Duration::from_secs(120), |o| o.configured.len() == 10_000)
        .await
        .expect("10k Ingresses configured");
    eprintln!(
        "configured {} (generation {})",
        o.configured.len(),
        o.generation
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rss_mb();
    eprintln!(
        "process RSS with the controller holding 10k Ingresses: {after:.1} MB (before the controller: {before:.1} MB); last document {} bytes",
        sink.bytes.load(Ordering::Relaxed)
    );
    assert!(after < 150.0, "{after} MB");
    ctl.shutdown().await;
}
