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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_bind_address_moves_metrics_to_their_own_listener() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("app.yaml"), manifests(9, "/a")).unwrap();
    let settings = Settings::loopback();
    let (flavor, plugins) = (settings.router_flavor, settings.plugins.clone());
    let gw = Arc::new(Gateway::start(settings, None).await.unwrap());
    let target: Arc<dyn DataPlaneTarget> =
        Arc::new(InProcessTarget::new(gw.clone(), flavor, plugins));
    let sync = SyncArgs {
        health_probe_bind_address: "127.0.0.1:0".into(),
        metrics_bind_address: "127.0.0.1:0".into(),
        dump_config: true,
        ..SyncArgs::default()
    };
    let ctl = silverback_controller::start_files(dir.path().to_path_buf(), &sync, vec![target])
        .await
        .unwrap();
    let health = ctl.health_addr.unwrap();
    let metrics_addr = ctl.metrics_addr.unwrap();
    assert_ne!(health, metrics_addr);
    ctl.wait_outcome(Duration::from_secs(10), |o| o.pushes > 0)
        .await
        .expect("the manifests are pushed");
    let (s, text) = get(metrics_addr, "m", "/metrics").await.unwrap();
    assert_eq!(s, 200);
    assert!(
        text.contains("ingress_controller_configuration_push_count"),
        "{text}"
    );
    // Only metrics there; probes and diagnostics stay on the health address, without metrics.
    for path in ["/healthz", "/readyz", "/debug/config/successful"] {
        assert_eq!(get(metrics_addr, "m", path).await.unwrap().0, 404, "{path}");
        assert_eq!(get(health, "h", path).await.unwrap().0, 200, "{path}");
    }
    assert_eq!(get(health, "h", "/metrics").await.unwrap().0, 404);
    ctl.shutdown().await;

    // Without it, one listener serves everything (the default); `off` is none.
    let mut args = SyncArgs::default();
    assert_eq!(args.metrics_addr().unwrap(), None);
    args.metrics_bind_address = ":10255".into();
    assert_eq!(
        args.metrics_addr().unwrap(),
        Some("0.0.0.0:10255".parse().unwrap())
    );
    args.metrics_bind_address = "off".into();
    assert_eq!(args.metrics_addr().unwrap(), None);
    args.metrics_bind_address = "nonsense".into();
    let e = args.metrics_addr().unwrap_err();
    assert!(format!("{e}").contains("--metrics-bind-address"), "{e}");
}

/// A self-signed CA certificate valid from `from` to `to` (years), as PEM.
fn ca_pem(name: &str, from: i32, to: i32) -> String {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.not_before = rcgen::date_time_ymd(from, 1, 1);
    params.not_after = rcgen::date_time_ymd(to, 1, 1);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    let key = rcgen::KeyPair::generate().unwrap();
    params.self_signed(&key).unwrap().pem()
}

/// A CA-certificate Secret (label `konghq.com/ca-cert`), as one JSON document.
fn ca_secret(name: &str, pem: &str) -> String {
    let doc = serde_json::json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": name, "namespace": "default",
                     "labels": {"konghq.com/ca-cert": "true"}},
        "stringData": {"cert": pem},
    });
    format!("---\n{doc}\n")
}

/// A data plane rejects an edited object (a CA certificate that expired): with
/// `--use-last-valid-config-for-fallback` its last valid version stays configured, without it
/// the object is left out; an object that never had a valid version is left out either way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_valid_version_of_a_rejected_object_is_kept_when_asked() {
    common::logs();
    let echo = EchoServer::start(
        std::net::TcpListener::bind("127.0.0.1:0").unwrap(),
        "files-backend",
    )
    .unwrap();
    let port = echo.addr().port();
    let good = ca_pem("good CA", 2020, 2090);
    let expired = ca_pem("expired CA", 2000, 2001);
    for use_last_valid in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("app.yaml");
        std::fs::write(&file, manifests(port, "/a") + &ca_secret("ca", &good)).unwrap();
        let settings = Settings::loopback();
        let (flavor, plugins) = (settings.router_flavor, settings.plugins.clone());
        let gw = Arc::new(Gateway::start(settings, None).await.unwrap());
        let proxy = gw.addr(ListenerKind::Proxy, false).unwrap();
        let target: Arc<dyn DataPlaneTarget> =
            Arc::new(InProcessTarget::new(gw.clone(), flavor, plugins));
        let sync = SyncArgs {
            use_last_valid_config_for_fallback: use_last_valid,
            health_probe_bind_address: "127.0.0.1:0".into(),
            dump_config: true,
            ..SyncArgs::default()
        };
        let ctl = silverback_controller::start_files(dir.path().to_path_buf(), &sync, vec![target])
            .await
            .unwrap();
        until_status(proxy, "example.test", "/a", 200).await;
        assert_eq!(gw.config().ca_certificates.len(), 1);
        let good_line = good.lines().nth(1).unwrap();
        let dp = [("dataplane", "in-process")];
        let first_push = ctl.metrics.get(metrics::PUSH_LAST_SUCCESSFUL, &dp);
        assert!(first_push > 0.0);
        let first_size = ctl
            .metrics
            .get(metrics::PUSH_SIZE, &[("protocol", "db-less"), dp[0]]);
        assert!(first_size > 0.0);

        // The CA Secret is edited into one the data plane rejects, a second broken one is
        // added, and the Ingress moves in the same edit.
        std::fs::write(
            &file,
            manifests(port, "/b") + &ca_secret("ca", &expired) + &ca_secret("new-ca", &expired),
        )
        .unwrap();
        until_status(proxy, "example.test", "/b", 200).await;
        let o = ctl
            .wait_outcome(Duration::from_secs(10), |o| o.apply_problems.len() >= 2)
            .await
            .expect("both Secrets reported as rejected");
        assert!(o.failure.is_none(), "{:?}", o.failure);
        // Metrics, as KIC's: the fallback push is reported under the fallback metrics only
        // (the last successful push and its size stay those of the first push), and the
        // rejection (a DB-less 400) is failure_reason "other", not "conflict".
        assert_eq!(
            ctl.metrics.get(metrics::PUSH_LAST_SUCCESSFUL, &dp),
            first_push
        );
        assert_eq!(
            ctl.metrics
                .get(metrics::PUSH_SIZE, &[("protocol", "db-less"), dp[0]]),
            first_size
        );
        assert!(ctl.metrics.get(metrics::FALLBACK_PUSH_LAST, &dp) >= first_push);
        assert!(
            ctl.metrics.get(
                metrics::FALLBACK_PUSH_SIZE,
                &[("protocol", "db-less"), dp[0]]
            ) > 0.0
        );
        let rejected = [
            ("success", "false"),
            ("protocol", "db-less"),
            ("failure_reason", "other"),
            dp[0],
        ];
        assert!(ctl.metrics.get(metrics::PUSH_COUNT, &rejected) >= 1.0);
        let text = ctl.metrics.render();
        assert!(!text.contains("failure_reason=\"conflict\""), "{text}");
        assert!(
            text.contains(
                "ingress_controller_fallback_configuration_push_last{dataplane=\"in-process\"}"
            ),
            "{text}"
        );
        let doc = gw.config().to_json(false);
        let health = ctl.health_addr.unwrap();
        let (_, fallback) = get(health, "h", "/debug/config/fallback").await.unwrap();
        let fallback: serde_json::Value = serde_json::from_str(&fallback).unwrap();
        let names = |key: &str| -> Vec<String> {
            fallback[key]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["name"].as_str().unwrap().to_string())
                .collect()
        };
        if use_last_valid {
            // The previous version of `ca` is still configured; `new-ca` has none.
            let cas = &gw.config().ca_certificates;
            assert_eq!(cas.len(), 1, "{doc}");
            assert!(cas[0].cert.contains(good_line), "{doc}");
            assert_eq!(names("backfilled"), ["ca"], "{fallback}");
            assert_eq!(names("excluded"), ["new-ca"], "{fallback}");
        } else {
            assert!(gw.config().ca_certificates.is_empty(), "{doc}");
            assert!(names("backfilled").is_empty(), "{fallback}");
            assert_eq!(names("excluded"), ["ca", "new-ca"], "{fallback}");
        }
        ctl.shutdown().await;
    }
}

/// Outcomes count the pushes: an outcome replaced by a later one before a reader saw it (the
/// channel keeps only the latest) does not hide its push from the Event writer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outcomes_count_pushes_so_a_late_reader_misses_none() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("app.yaml");
    std::fs::write(&file, manifests(9, "/a")).unwrap();
    let settings = Settings::loopback();
    let (flavor, plugins) = (settings.router_flavor, settings.plugins.clone());
    let gw = Arc::new(Gateway::start(settings, None).await.unwrap());
    let target: Arc<dyn DataPlaneTarget> =
        Arc::new(InProcessTarget::new(gw.clone(), flavor, plugins));
    let ctl = silverback_controller::start_files(
        dir.path().to_path_buf(),
        &SyncArgs::default(),
        vec![target],
    )
    .await
    .unwrap();
    let first = ctl
        .wait_outcome(Duration::from_secs(10), |o| o.pushes == 1)
        .await
        .expect("first push");
    // One translation for the start: the periodic check's immediate first tick and the
    // initial change do not both sync the same generation.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(ctl.metrics.total(metrics::TRANSLATION_COUNT), 1.0);
    // The same content again: a sync that pushes nothing; its outcome replaces the first.
    std::fs::write(&file, manifests(9, "/a")).unwrap();
    let same = ctl
        .wait_outcome(Duration::from_secs(10), |o| o.generation > first.generation)
        .await
        .expect("a sync of the unchanged content");
    assert!(!same.pushed);
    assert_eq!(same.pushes, 1, "{same:?}");
    // A change: one more push counted.
    std::fs::write(&file, manifests(9, "/b")).unwrap();
    let changed = ctl
        .wait_outcome(Duration::from_secs(10), |o| o.pushes == 2)
        .await
        .expect("second push");
    assert!(changed.pushed);
    assert_eq!(changed.failures, 0);
    ctl.shutdown().await;
}

/// A push that failed on every data plane (nothing listening at the admin URL yet) is
/// retried by the periodic check: once a data plane answers there, it gets the document
/// within a check period, without any object change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_that_failed_everywhere_is_retried_without_any_change() {
    common::logs();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("app.yaml"), manifests(9, "/retried")).unwrap();
    // A port where nothing listens yet.
    let (port, targets) = admin_url_not_yet_served();
    let sync = SyncArgs {
        proxy_sync_seconds: Duration::from_millis(300),
        ..SyncArgs::default()
    };
    let ctl = silverback_controller::start_files(dir.path().to_path_buf(), &sync, targets)
        .await
        .unwrap();
    let failed = ctl
        .wait_outcome(Duration::from_secs(10), |o| o.failures > 0)
        .await
        .expect("the first push fails");
    assert_eq!(failed.pushes, 0);

    // A data plane comes up at that address.
    let gw = gateway_with_admin_on(port).await;
    let t0 = Instant::now();
    eventually(Duration::from_secs(5), "the document pushed", || {
        let ok = gw.config().to_json(false).contains("/retried");
        async move { ok.then_some(()) }
    })
    .await;
    eprintln!("configured {:?} after the data plane came up", t0.elapsed());
    // Reported as a push of a new configuration (success Event), with no new translation.
    let o = ctl
        .wait_outcome(Duration::from_secs(5), |o| o.pushes == 1)
        .await
        .expect("the retried push counted");
    assert!(o.failure.is_none(), "{:?}", o.failure);
    assert_eq!(o.generation, failed.generation);
    ctl.shutdown().await;
    gw.shutdown().await;
}

/// A document no data plane could check (every push failed) that the data plane then
/// rejects is not retried as it is: the controller translates and pushes again, so the
/// fallback leaves the broken object out and the rest is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_document_the_data_plane_rejects_goes_through_the_fallback() {
    common::logs();
    let dir = tempfile::tempdir().unwrap();
    let expired = ca_pem("expired CA", 2000, 2001);
    std::fs::write(
        dir.path().join("app.yaml"),
        manifests(9, "/checked") + &ca_secret("ca", &expired),
    )
    .unwrap();
    let (port, targets) = admin_url_not_yet_served();
    let sync = SyncArgs {
        proxy_sync_seconds: Duration::from_millis(300),
        ..SyncArgs::default()
    };
    let ctl = silverback_controller::start_files(dir.path().to_path_buf(), &sync, targets)
        .await
        .unwrap();
    ctl.wait_outcome(Duration::from_secs(10), |o| o.failures > 0)
        .await
        .expect("the first push fails");
    let gw = gateway_with_admin_on(port).await;
    eventually(
        Duration::from_secs(10),
        "the rest pushed without the rejected CA",
        || {
            let c = gw.config();
            let ok = c.to_json(false).contains("/checked") && c.ca_certificates.is_empty();
            async move { ok.then_some(()) }
        },
    )
    .await;
    ctl.shutdown().await;
    gw.shutdown().await;
}

/// `/readyz` is 503 until a data plane accepted a configuration (KIC: the leader is ready
/// only after its first successful push), then 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_waits_for_the_first_accepted_configuration() {
    common::logs();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("app.yaml"), manifests(9, "/ready")).unwrap();
    let (port, targets) = admin_url_not_yet_served();
    let sync = SyncArgs {
        proxy_sync_seconds: Duration::from_millis(300),
        health_probe_bind_address: "127.0.0.1:0".into(),
        ..SyncArgs::default()
    };
    let ctl = silverback_controller::start_files(dir.path().to_path_buf(), &sync, targets)
        .await
        .unwrap();
    let health = ctl.health_addr.unwrap();
    ctl.wait_outcome(Duration::from_secs(10), |o| o.failures > 0)
        .await
        .expect("the first push fails");
    let (s, body) = get(health, "h", "/readyz").await.unwrap();
    assert_eq!(s, 503, "{body}");
    assert_eq!(get(health, "h", "/healthz").await.unwrap().0, 200);

    let gw = gateway_with_admin_on(port).await;
    eventually(Duration::from_secs(5), "/readyz 200", || async move {
        matches!(get(health, "h", "/readyz").await, Ok((200, _))).then_some(())
    })
    .await;
    assert!(gw.config().to_json(false).contains("/ready"));
    ctl.shutdown().await;
    gw.shutdown().await;
}

/// A TLS Secret of a self-signed certificate for `host`, as one JSON document.
fn tls_secret(name: &str, host: &str) -> String {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec![host.to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let doc = serde_json::json!({
        "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
        "metadata": {"name": name, "namespace": "default"},
        "stringData": {"tls.crt": cert.pem(), "tls.key": key.serialize_pem()},
    });
    format!("---\n{doc}\n")
}

/// `--dump-config` serves the configuration without private keys (KIC's SanitizedCopy
/// placeholder instead) unless `--dump-sensitive-config` is given.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dumped_configuration_hides_private_keys_unless_asked() {
    common::logs();
    let tls_ingress = r#"---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: secure, namespace: default}
spec:
  ingressClassName: kong
  tls: [{hosts: [secure.test], secretName: tls}]
  rules:
  - host: secure.test
    http:
      paths:
      - {path: /s, pathType: Prefix, backend: {service: {name: echo, port: {number: 80}}}}
"#;
    for sensitive in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("app.yaml"),
            manifests(9, "/a") + &tls_secret("tls", "secure.test") + tls_ingress,
        )
        .unwrap();
        let settings = Settings::loopback();
        let (flavor, plugins) = (settings.router_flavor, settings.plugins.clone());
        let gw = Arc::new(Gateway::start(settings, None).await.unwrap());
        let target: Arc<dyn DataPlaneTarget> =
            Arc::new(InProcessTarget::new(gw.clone(), flavor, plugins));
        let sync = SyncArgs {
            health_probe_bind_address: "127.0.0.1:0".into(),
            dump_config: true,
            dump_sensitive_config: sensitive,
            ..SyncArgs::default()
        };
        let ctl = silverback_controller::start_files(dir.path().to_path_buf(), &sync, vec![target])
            .await
            .unwrap();
        ctl.wait_outcome(Duration::from_secs(10), |o| o.pushes > 0)
            .await
            .expect("pushed");
        assert_eq!(gw.config().certificates.len(), 1);
        let (s, dump) = get(ctl.health_addr.unwrap(), "h", "/debug/config/successful")
            .await
            .unwrap();
        assert_eq!(s, 200);
        let v: serde_json::Value = serde_json::from_str(&dump).unwrap();
        let cert = &v["certificates"][0];
        assert!(
            cert["cert"].as_str().unwrap().contains("BEGIN CERTIFICATE"),
            "{dump}"
        );
        if sensitive {
            assert!(dump.contains("PRIVATE KEY"), "{dump}");
        } else {
            assert!(!dump.contains("PRIVATE KEY"), "{dump}");
            assert_eq!(cert["key"], "{vault://redacted-value}", "{dump}");
        }
        ctl.shutdown().await;
    }
}

/// An admin-URL target on a free port where nothing listens yet: its port and the targets.
fn admin_url_not_yet_served() -> (u16, Vec<Arc<dyn DataPlaneTarget>>) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let admin = silverback_controller::AdminArgs {
        kong_admin_url: vec![format!("http://127.0.0.1:{port}")],
        proxy_timeout_seconds: Duration::from_secs(2),
        ..silverback_controller::AdminArgs::default()
    };
    (port, silverback_controller::admin_targets(&admin).unwrap())
}

/// A gateway whose admin API listens on `port` (a data plane coming up late).
async fn gateway_with_admin_on(port: u16) -> Gateway {
    let settings = Settings {
        admin_listen: silverback_proxy::Listen::parse_list(&format!("127.0.0.1:{port}")).unwrap(),
        ..Settings::loopback()
    };
    Gateway::start(settings, None).await.unwrap()
}
