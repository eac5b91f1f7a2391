//! Files mode: a directory of manifests drives an in-process gateway; edits are served within
//! moments, bad files lose nothing, deletions are honoured.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{eventually, get, until_status};
use silverback_controller::{DataPlaneTarget, InProcessTarget, SyncArgs, metrics};
use silverback_envtest::echo::EchoServer;
use silverback_proxy::{Gateway, ListenerKind, Settings};

fn manifests(port: u16, path: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Service
metadata: {{name: echo, namespace: default}}
spec: {{ports: [{{name: http, port: 80}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: echo-1
  namespace: default
  labels: {{kubernetes.io/service-name: echo}}
addressType: IPv4
ports: [{{name: http, port: {port}}}]
endpoints: [{{addresses: ["127.0.0.1"]}}]
"#
    ) + &ingress("web", path)
}

fn ingress(name: &str, path: &str) -> String {
    format!(
        r#"---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: {name}, namespace: default}}
spec:
  ingressClassName: kong
  rules:
  - http:
      paths:
      - {{path: {path}, pathType: Prefix, backend: {{service: {{name: echo, port: {{number: 80}}}}}}}}
"#
    )
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifests_directory_drives_the_gateway() {
    common::logs();
    let echo = EchoServer::start(
        std::net::TcpListener::bind("127.0.0.1:0").unwrap(),
        "files-backend",
    )
    .unwrap();
    let port = echo.addr().port();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("app.yaml");
    std::fs::write(&file, manifests(port, "/a")).unwrap();

    let settings = Settings::loopback();
    let (flavor, plugins) = (settings.router_flavor, settings.plugins.clone());
    let gw = Arc::new(Gateway::start(settings, None).await.unwrap());
    let proxy = gw.addr(ListenerKind::Proxy, false).unwrap();
    let target: Arc<dyn DataPlaneTarget> =
        Arc::new(InProcessTarget::new(gw.clone(), flavor, plugins));
    let sync = SyncArgs {
        health_probe_bind_address: "127.0.0.1:0".into(),
        dump_config: true,
        ..SyncArgs::default()
    };
    let ctl = silverback_controller::start_files(dir.path().to_path_buf(), &sync, vec![target])
        .await
        .unwrap();

    // The first read is served.
    let body = until_status(proxy, "example.test", "/a/x", 200).await;
    assert!(body.contains("files-backend"), "{body}");
    assert_eq!(get(proxy, "example.test", "/b").await.unwrap().0, 404);

    // Edits: time from the write to the new configuration in the gateway (push done), and
    // to the proxy answering on the new path.
    let mut to_swap = Vec::new();
    let mut to_traffic = Vec::new();
    for i in 0..20 {
        let path = format!("/p{i}");
        let before = gw.config_hash();
        let t0 = Instant::now();
        std::fs::write(&file, manifests(port, &path)).unwrap();
        eventually(Duration::from_secs(5), "hash change", || {
            let changed = gw.config_hash() != before;
            async move { changed.then_some(()) }
        })
        .await;
        to_swap.push(t0.elapsed());
        until_status(proxy, "example.test", &path, 200).await;
        to_traffic.push(t0.elapsed());
    }
    to_swap.sort();
    to_traffic.sort();
    eprintln!(
        "files mode, write -> configuration swapped: p50 {:?} max {:?}; write -> 200: p50 {:?} max {:?}",
        percentile(&to_swap, 0.5),
        to_swap[to_swap.len() - 1],
        percentile(&to_traffic, 0.5),
        to_traffic[to_traffic.len() - 1],
    );
    // The target is < 100 ms to the push starting; swap includes inotify, parse, translate,
    // load and router compilation. Generous bound for a loaded CI machine.
    assert!(percentile(&to_swap, 0.5) < Duration::from_millis(500));

    // A broken file: reported, the previous objects stay served.
    let good_hash = gw.config_hash();
    std::fs::write(dir.path().join("broken.yaml"), "kind: [unclosed").unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(gw.config_hash(), good_hash);
    assert_eq!(get(proxy, "example.test", "/p19").await.unwrap().0, 200);
    std::fs::remove_file(dir.path().join("broken.yaml")).unwrap();

    // A second Ingress in another file, then the first one deleted.
    std::fs::write(dir.path().join("more.yaml"), ingress("more", "/more")).unwrap();
    until_status(proxy, "example.test", "/more", 200).await;
    std::fs::write(
        &file,
        manifests(port, "/p19")
            .split("---\napiVersion: networking")
            .next()
            .unwrap(),
    )
    .unwrap();
    until_status(proxy, "example.test", "/p19", 404).await;
    assert_eq!(get(proxy, "example.test", "/more").await.unwrap().0, 200);

    // Metrics and health.
    let health = ctl.health_addr.unwrap();
    let (s, text) = get(health, "h", "/metrics").await.unwrap();
    assert_eq!(s, 200);
    assert!(
        text.contains(
            "ingress_controller_configuration_push_count{success=\"true\",protocol=\"db-less\",failure_reason=\"\",dataplane=\"in-process\"}"
        ),
        "{text}"
    );
    assert!(ctl.metrics.total(metrics::PUSH_COUNT) >= 22.0);
    assert_eq!(get(health, "h", "/healthz").await.unwrap().0, 200);
    assert_eq!(get(health, "h", "/readyz").await.unwrap().0, 200);
    let (s, dump) = get(health, "h", "/debug/config/successful").await.unwrap();
    assert_eq!(s, 200);
    assert!(dump.contains("default.more.echo"), "{dump}");

    ctl.shutdown().await;
    // After shutdown, changes are no longer applied.
    let h = gw.config_hash();
    std::fs::remove_file(dir.path().join("more.yaml")).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(gw.config_hash(), h);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_directory_is_an_error() {
    let missing = std::env::temp_dir().join("silverback-controller-no-such-dir");
    let r = silverback_controller::start_files(missing, &SyncArgs::default(), vec![]).await;
    let e = r.expect_err("fails");
    assert!(format!("{e:#}").contains("no-such-dir"), "{e:#}");
}
