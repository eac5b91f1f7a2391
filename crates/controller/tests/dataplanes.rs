//! Data planes over the admin API: leader election between two controller replicas (only
//! the leader pushes; a crashed leader is replaced), gateway discovery through the admin
//! Service's EndpointSlices, and a restarted (empty) data plane re-pushed at once.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use common::*;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{Api, PostParams};
use serde_json::json;
use silverback_controller::{
    AdminArgs, ControllerOptions, KubeArgs, LeaderElection, SyncArgs, metrics,
};
use silverback_envtest::netns::NetNs;
use silverback_proxy::{Gateway, Listen, Settings};

/// A gateway running inside a network namespace, on its own thread and runtime.
struct NsGateway {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl NsGateway {
    fn start(net: &NetNs, proxy_port: u16, admin_port: u16) -> NsGateway {
        NsGateway::start_with(net, proxy_port, admin_port, None)
    }

    /// With `admin_tls` (certificate and key PEM), the admin listener is `ssl` and serves them.
    fn start_with(
        net: &NetNs,
        proxy_port: u16,
        admin_port: u16,
        admin_tls: Option<(String, String)>,
    ) -> NsGateway {
        let addr = net.addr();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        // A thread created inside the namespace stays in it, and so do its sockets.
        let thread = net
            .run_in(move || {
                std::thread::spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .unwrap();
                    rt.block_on(async move {
                        let ssl = if admin_tls.is_some() { " ssl" } else { "" };
                        let mut settings = Settings {
                            proxy_listen: Listen::parse_list(&format!("{addr}:{proxy_port}"))
                                .unwrap(),
                            admin_listen: Listen::parse_list(&format!("{addr}:{admin_port}{ssl}"))
                                .unwrap(),
                            status_listen: vec![],
                            shutdown_grace: Duration::from_millis(100),
                            ..Settings::loopback()
                        };
                        if let Some((cert, key)) = &admin_tls {
                            settings.admin_ssl_cert = silverback_proxy::SslCert::parse_setting(
                                "admin_ssl_cert",
                                cert,
                                key,
                            );
                        }
                        let gw = Gateway::start(settings, None).await.unwrap();
                        ready_tx.send(()).unwrap();
                        let _ = stop_rx.await;
                        gw.shutdown().await;
                    });
                })
            })
            .unwrap();
        ready_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        NsGateway {
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.thread.take().unwrap().join().unwrap();
    }
}

async fn admin_slice(client: &kube::Client, ns: &str, svc: &str, addrs: &[Ipv4Addr], port: u16) {
    let api = Api::<EndpointSlice>::namespaced(client.clone(), ns);
    let slice: EndpointSlice = serde_json::from_value(json!({
        "metadata": {"name": format!("{svc}-1"), "namespace": ns,
                     "labels": {"kubernetes.io/service-name": svc}},
        "addressType": "IPv4",
        "ports": [{"name": "admin", "port": port, "protocol": "TCP"}],
        "endpoints": addrs.iter().map(|a| json!({"addresses": [a.to_string()], "conditions": {"ready": true}})).collect::<Vec<_>>(),
    }))
    .unwrap();
    match api.get_opt(&format!("{svc}-1")).await.unwrap() {
        None => {
            api.create(&PostParams::default(), &slice).await.unwrap();
        }
        Some(cur) => {
            let mut s = slice;
            s.metadata.resource_version = cur.metadata.resource_version;
            api.replace(&format!("{svc}-1"), &PostParams::default(), &s)
                .await
                .unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_discovery_configures_every_data_plane_and_repushes_a_restarted_one() {
    common::logs();
    let cp = start_control_plane(false).await;
    let admin = cp.client();
    let ns = cp.create_namespace("disc").await.unwrap();
    apply_ingress_class(&admin).await;

    // Backend and first data plane share a network namespace; the second data plane has its own.
    let net1 = NetNs::create().unwrap();
    let net2 = NetNs::create().unwrap();
    let _echo = net1.spawn_echo(8080, "backend-d").unwrap();
    service_with_endpoint(&admin, &ns, "echo", &net1.addr().to_string(), 8080).await;
    Api::<Ingress>::namespaced(admin.clone(), &ns)
        .create(
            &PostParams::default(),
            &ingress(&ns, "web", "/disc", "echo"),
        )
        .await
        .unwrap();
    let dp1 = NsGateway::start(&net1, 8000, 8001);
    admin_slice(&admin, &ns, "dp-admin", &[net1.addr()], 8001).await;

    let opts = ControllerOptions {
        sync: SyncArgs {
            proxy_sync_seconds: Duration::from_millis(200),
            ..SyncArgs::default()
        },
        kube: KubeArgs {
            election_namespace: Some(ns.clone()),
            election_id: "disc".into(),
            election_retry_period: Duration::from_millis(500),
            ..KubeArgs::default()
        },
        admin: AdminArgs {
            kong_admin_svc: Some((ns.clone(), "dp-admin".into())),
            proxy_timeout_seconds: Duration::from_secs(5),
            ..AdminArgs::default()
        },
    };
    let ctl = silverback_controller::start_cluster(admin.clone(), &opts, vec![])
        .await
        .unwrap();
    // Discovery turns election on.
    let mut leading = ctl.leading.clone();
    tokio::time::timeout(Duration::from_secs(15), leading.wait_for(|l| *l))
        .await
        .unwrap()
        .unwrap();

    let proxy1 = SocketAddr::from((net1.addr(), 8000));
    let body = until_status(proxy1, "d.test", "/disc", 200).await;
    assert!(body.contains("backend-d"), "{body}");

    // A second data plane appears in the EndpointSlice: configured too.
    let dp2 = NsGateway::start(&net2, 8000, 8001);
    admin_slice(&admin, &ns, "dp-admin", &[net1.addr(), net2.addr()], 8001).await;
    let proxy2 = SocketAddr::from((net2.addr(), 8000));
    // (net2's proxy cannot reach the backend in net1: 502 proves the route is configured.)
    until_status(proxy2, "d.test", "/disc", 502).await;
    assert_eq!(ctl.targets.borrow().len(), 2);

    // The first data plane restarts with an empty configuration: re-pushed at once.
    dp1.stop();
    let t0 = Instant::now();
    let dp1 = NsGateway::start(&net1, 8000, 8001);
    until_status(proxy1, "d.test", "/disc", 200).await;
    let repush = t0.elapsed();
    eprintln!("restarted data plane configured again after {repush:?}");
    assert!(repush < Duration::from_secs(5), "{repush:?}");

    // The second one leaves the EndpointSlice: no longer a target.
    admin_slice(&admin, &ns, "dp-admin", &[net1.addr()], 8001).await;
    let targets = ctl.targets.clone();
    eventually(Duration::from_secs(10), "one target left", || {
        let n = targets.borrow().len();
        async move { (n == 1).then_some(()) }
    })
    .await;

    ctl.shutdown().await;
    dp1.stop();
    dp2.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_leader_pushes_and_a_new_leader_takes_over_after_a_crash() {
    common::logs();
    let cp = start_control_plane(false).await;
    let admin = cp.client();
    let ns = cp.create_namespace("elect").await.unwrap();
    apply_ingress_class(&admin).await;
    service_with_endpoint(&admin, &ns, "echo", "192.0.2.10", 8080).await;
    let ingresses = Api::<Ingress>::namespaced(admin.clone(), &ns);
    ingresses
        .create(&PostParams::default(), &ingress(&ns, "web", "/one", "echo"))
        .await
        .unwrap();

    let gw = Gateway::start(Settings::loopback(), None).await.unwrap();
    let admin_url = format!(
        "http://{}",
        gw.addr(silverback_proxy::ListenerKind::Admin, false)
            .unwrap()
    );
    let has_path = |p: &str| gw.config().to_json(false).contains(p);

    // Production timings (lease 10 s, retry 2 s): the takeover bound is what is measured.
    let opts = |id: &str| ControllerOptions {
        kube: KubeArgs {
            election_namespace: Some(ns.clone()),
            election_id: "elect".into(),
            leader_election: LeaderElection::Enabled,
            pod_name: Some(id.into()),
            ..KubeArgs::default()
        },
        admin: AdminArgs {
            kong_admin_url: vec![admin_url.clone()],
            ..AdminArgs::default()
        },
        ..ControllerOptions::default()
    };
    let a = silverback_controller::start_cluster(admin.clone(), &opts("replica-a"), vec![])
        .await
        .unwrap();
    let b = silverback_controller::start_cluster(admin.clone(), &opts("replica-b"), vec![])
        .await
        .unwrap();
    eventually(Duration::from_secs(20), "a leader", || {
        let (la, lb) = (*a.leading.borrow(), *b.leading.borrow());
        async move { (la || lb).then_some(()) }
    })
    .await;
    // Exactly one leads, and only it pushes.
    let (leader, follower) = if *a.leading.borrow() { (a, b) } else { (b, a) };
    assert!(!*follower.leading.borrow());
    eventually(Duration::from_secs(10), "pushed", || {
        let ok = has_path("/one") && leader.metrics.total(metrics::PUSH_COUNT) >= 1.0;
        async move { ok.then_some(()) }
    })
    .await;
    ingresses
        .create(&PostParams::default(), &ingress(&ns, "two", "/two", "echo"))
        .await
        .unwrap();
    eventually(Duration::from_secs(10), "second push", || {
        let ok = has_path("/two");
        async move { ok.then_some(()) }
    })
    .await;
    assert_eq!(follower.metrics.total(metrics::PUSH_COUNT), 0.0);

    // The leader dies without releasing the Lease.
    leader.abort();
    let t0 = Instant::now();
    let mut l = follower.leading.clone();
    tokio::time::timeout(Duration::from_secs(15), l.wait_for(|l| *l))
        .await
        .expect("a new leader within 15 s")
        .unwrap();
    let takeover = t0.elapsed();
    eprintln!("new leader after {takeover:?}");
    // The new leader pushes what changed meanwhile and after.
    ingresses
        .create(
            &PostParams::default(),
            &ingress(&ns, "three", "/three", "echo"),
        )
        .await
        .unwrap();
    eventually(Duration::from_secs(10), "pushed by the new leader", || {
        let ok = has_path("/three") && follower.metrics.total(metrics::PUSH_COUNT) >= 1.0;
        async move { ok.then_some(()) }
    })
    .await;

    // A graceful shutdown releases the Lease for the next replica at once.
    let c = silverback_controller::start_cluster(admin.clone(), &opts("replica-c"), vec![])
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!*c.leading.borrow());
    let t0 = Instant::now();
    follower.shutdown().await;
    let mut l = c.leading.clone();
    tokio::time::timeout(Duration::from_secs(6), l.wait_for(|l| *l))
        .await
        .expect("leadership handed over after a release")
        .unwrap();
    eprintln!("leader after a release: {:?}", t0.elapsed());
    c.shutdown().await;
}

/// An admin EndpointSlice of its own for one data plane: `addr:port` with `conditions`.
async fn admin_slice_with(
    client: &kube::Client,
    ns: &str,
    (svc, slice): (&str, &str),
    addr: Ipv4Addr,
    port: u16,
    conditions: serde_json::Value,
) {
    let s: EndpointSlice = serde_json::from_value(json!({
        "metadata": {"name": slice, "namespace": ns,
                     "labels": {"kubernetes.io/service-name": svc}},
        "addressType": "IPv4",
        "ports": [{"name": "admin", "port": port, "protocol": "TCP"}],
        "endpoints": [{"addresses": [addr.to_string()], "conditions": conditions}],
    }))
    .unwrap();
    Api::<EndpointSlice>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &s)
        .await
        .unwrap();
}

/// A data plane that is not ready yet (its readiness probe fails until it is configured, so
/// it is published not ready) is configured; a terminating one is not, as in KIC.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_discovery_configures_not_ready_endpoints_but_not_terminating_ones() {
    common::logs();
    let cp = start_control_plane(false).await;
    let admin = cp.client();
    let ns = cp.create_namespace("notready").await.unwrap();
    apply_ingress_class(&admin).await;
    let net1 = NetNs::create().unwrap();
    let net2 = NetNs::create().unwrap();
    let _echo = net1.spawn_echo(8080, "backend-nr").unwrap();
    service_with_endpoint(&admin, &ns, "echo", &net1.addr().to_string(), 8080).await;
    Api::<Ingress>::namespaced(admin.clone(), &ns)
        .create(&PostParams::default(), &ingress(&ns, "web", "/nr", "echo"))
        .await
        .unwrap();
    let fresh = NsGateway::start(&net1, 8000, 8001);
    let leaving = NsGateway::start(&net2, 8000, 8001);
    admin_slice_with(
        &admin,
        &ns,
        ("dp-admin", "fresh"),
        net1.addr(),
        8001,
        json!({"ready": false, "serving": false, "terminating": false}),
    )
    .await;
    admin_slice_with(
        &admin,
        &ns,
        ("dp-admin", "leaving"),
        net2.addr(),
        8001,
        json!({"ready": false, "serving": true, "terminating": true}),
    )
    .await;

    let opts = ControllerOptions {
        sync: SyncArgs {
            proxy_sync_seconds: Duration::from_millis(200),
            ..SyncArgs::default()
        },
        kube: KubeArgs {
            leader_election: LeaderElection::Disabled,
            ..KubeArgs::default()
        },
        admin: AdminArgs {
            kong_admin_svc: Some((ns.clone(), "dp-admin".into())),
            proxy_timeout_seconds: Duration::from_secs(5),
            ..AdminArgs::default()
        },
    };
    let ctl = silverback_controller::start_cluster(admin.clone(), &opts, vec![])
        .await
        .unwrap();
    let body = until_status(SocketAddr::from((net1.addr(), 8000)), "n.test", "/nr", 200).await;
    assert!(body.contains("backend-nr"), "{body}");
    // A few check periods later the terminating one still has no route.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (s, _) = get(SocketAddr::from((net2.addr(), 8000)), "n.test", "/nr")
        .await
        .unwrap();
    assert_eq!(s, 404);
    assert_eq!(ctl.targets.borrow().len(), 1);
    ctl.shutdown().await;
    fresh.stop();
    leaving.stop();
}

/// A discovered HTTPS admin endpoint is verified against `pod.<service>.<namespace>.svc`, as
/// KIC does: a data plane whose admin certificate is issued for `*.<service>.<namespace>.svc`
/// (as the Kong Helm chart issues it), not for its Pod IP, is configured.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovered_https_admin_endpoints_are_verified_against_the_service_pod_name() {
    common::logs();
    let cp = start_control_plane(false).await;
    let admin = cp.client();
    let ns = cp.create_namespace("admintls").await.unwrap();
    apply_ingress_class(&admin).await;

    // A CA, and the data plane's admin certificate for *.dp-admin.<ns>.svc only.
    let (ca_cert, issuer) = common::test_ca();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec![format!("*.dp-admin.{ns}.svc")])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();

    let net = NetNs::create().unwrap();
    let _echo = net.spawn_echo(8080, "backend-tls").unwrap();
    service_with_endpoint(&admin, &ns, "echo", &net.addr().to_string(), 8080).await;
    Api::<Ingress>::namespaced(admin.clone(), &ns)
        .create(&PostParams::default(), &ingress(&ns, "web", "/tls", "echo"))
        .await
        .unwrap();
    let dp = NsGateway::start_with(&net, 8000, 8444, Some((cert.pem(), key.serialize_pem())));
    let s: EndpointSlice = serde_json::from_value(json!({
        "metadata": {"name": "dp-admin-1", "namespace": ns,
                     "labels": {"kubernetes.io/service-name": "dp-admin"}},
        "addressType": "IPv4",
        "ports": [{"name": "admin-tls", "port": 8444, "protocol": "TCP"}],
        "endpoints": [{"addresses": [net.addr().to_string()], "conditions": {"ready": true}}],
    }))
    .unwrap();
    Api::<EndpointSlice>::namespaced(admin.clone(), &ns)
        .create(&PostParams::default(), &s)
        .await
        .unwrap();

    let opts = ControllerOptions {
        sync: SyncArgs {
            proxy_sync_seconds: Duration::from_millis(200),
            ..SyncArgs::default()
        },
        kube: KubeArgs {
            leader_election: LeaderElection::Disabled,
            ..KubeArgs::default()
        },
        admin: AdminArgs {
            kong_admin_svc: Some((ns.clone(), "dp-admin".into())),
            kong_admin_ca_cert: Some(ca_cert.pem()),
            proxy_timeout_seconds: Duration::from_secs(5),
            ..AdminArgs::default()
        },
    };
    let ctl = silverback_controller::start_cluster(admin.clone(), &opts, vec![])
        .await
        .unwrap();
    let body = until_status(SocketAddr::from((net.addr(), 8000)), "t.test", "/tls", 200).await;
    assert!(body.contains("backend-tls"), "{body}");
    ctl.shutdown().await;
    dp.stop();
}
