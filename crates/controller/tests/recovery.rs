//! The controller reconnects and resyncs without losing state when the API server restarts or
//! a watch expires: the data plane keeps serving the last configuration while the API server
//! is down, nothing partial or empty is pushed meanwhile, and afterwards changes (including
//! ones made while the controller could not watch) are served.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use futures::future::BoxFuture;
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{Api, PostParams};
use silverback_controller::{
    ControllerOptions, DataPlaneTarget, InProcessTarget, KubeArgs, LeaderElection, PushError,
};
use silverback_envtest::netns::NetNs;
use silverback_proxy::{Gateway, ListenerKind, Settings};

/// A target that records every document pushed to it before handing it on.
#[derive(Debug)]
struct Recording {
    inner: Arc<dyn DataPlaneTarget>,
    pushed: Mutex<Vec<String>>,
}

impl DataPlaneTarget for Recording {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn push<'a>(&'a self, document: &'a [u8]) -> BoxFuture<'a, Result<(), PushError>> {
        self.pushed
            .lock()
            .unwrap()
            .push(String::from_utf8_lossy(document).into_owned());
        self.inner.push(document)
    }
    fn config_hash(&self) -> BoxFuture<'_, Result<String, String>> {
        self.inner.config_hash()
    }
}

impl Recording {
    fn pushes(&self) -> Vec<String> {
        self.pushed.lock().unwrap().clone()
    }
}

/// Requests `path` every 20 ms until stopped; counts the 200s and keeps every other answer.
/// Requests that got no answer (a 5 s timeout on a loaded machine) say nothing about the
/// configuration: they are only counted.
struct Prober {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    unanswered: Arc<AtomicU64>,
    bad: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Prober {
    fn start(proxy: SocketAddr, host: &'static str, path: &'static str) -> Prober {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let unanswered = Arc::new(AtomicU64::new(0));
        let bad = Arc::new(Mutex::new(Vec::new()));
        let (s, o, u, b) = (stop.clone(), ok.clone(), unanswered.clone(), bad.clone());
        let task = tokio::spawn(async move {
            while !s.load(Ordering::Relaxed) {
                match get(proxy, host, path).await {
                    Ok((200, _)) => {
                        o.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok((status, body)) => b.lock().unwrap().push(format!("{status}: {body}")),
                    Err(_) => {
                        u.fetch_add(1, Ordering::Relaxed);
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        Prober {
            stop,
            ok,
            unanswered,
            bad,
            task,
        }
    }

    fn ok(&self) -> u64 {
        self.ok.load(Ordering::Relaxed)
    }

    /// Stops probing; returns the answers that were not 200.
    async fn finish(self) -> Vec<String> {
        self.stop.store(true, Ordering::Relaxed);
        eprintln!(
            "prober: {} answered 200, {} unanswered",
            self.ok(),
            self.unanswered.load(Ordering::Relaxed)
        );
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("the prober stops")
            .unwrap();
        self.bad.lock().unwrap().clone()
    }
}

/// Polls until the proxy answers `path` with `status`, for at most 60 s: after an API server
/// restart the watches reconnect on their retry schedule (exponential, up to 30 s apart).
async fn until_status_after_restart(proxy: SocketAddr, path: &str, status: u16) {
    eventually(
        Duration::from_secs(60),
        &format!("x.test{path} answering {status} after the restart"),
        || async move {
            match get(proxy, "x.test", path).await {
                Ok((s, _)) if s == status => Some(()),
                _ => None,
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_server_restart_and_expired_watches_lose_no_state() {
    common::logs();
    let mut cp = start_control_plane(true).await;
    let admin = cp.client();
    let app = cp.create_namespace("app").await.unwrap();
    apply_ingress_class(&admin).await;
    let net = NetNs::create().unwrap();
    let _echo = net.spawn_echo(8080, "backend").unwrap();
    service_with_endpoint(&admin, &app, "echo", &net.addr().to_string(), 8080).await;
    let ingresses: Api<Ingress> = Api::namespaced(admin.clone(), &app);
    let pp = PostParams::default();
    // `web` is never touched: it must be served throughout. `moved` gets a new path after
    // the restart, `gone` is deleted while the API server is down.
    for (name, path) in [("web", "/a"), ("moved", "/m1"), ("gone", "/g")] {
        ingresses
            .create(&pp, &ingress(&app, name, path, "echo"))
            .await
            .unwrap();
    }

    let settings = Settings::loopback();
    let (flavor, plugins) = (settings.router_flavor, settings.plugins.clone());
    let gw = Arc::new(Gateway::start(settings, None).await.unwrap());
    let proxy = gw.addr(ListenerKind::Proxy, false).unwrap();
    let recording = Arc::new(Recording {
        inner: Arc::new(InProcessTarget::new(gw.clone(), flavor, plugins)),
        pushed: Mutex::new(Vec::new()),
    });
    let target: Arc<dyn DataPlaneTarget> = recording.clone();
    let ctl = silverback_controller::start_cluster(
        cp.client(),
        &ControllerOptions::default(),
        vec![target],
    )
    .await
    .unwrap();
    for path in ["/a", "/m1", "/g"] {
        until_status(proxy, "x.test", path, 200).await;
    }
    let prober = Prober::start(proxy, "x.test", "/a");
    let relists_before = ctl.store.relists();

    // The API server goes away (a crash: SIGKILL). The data plane keeps serving, and the
    // controller pushes nothing: it has nothing new, and must not push a partial or empty
    // configuration because its watches broke.
    let pushes_before = recording.pushes().len();
    let ok_before = prober.ok();
    cp.stop_apiserver();
    let down_since = Instant::now();
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(
        prober.ok() > ok_before + 10,
        "the proxy kept answering while the API server was down"
    );
    // While it is down, storage changes behind its back (as through another API server of
    // the cluster) and etcd is compacted: the controller's watches, resumed from their last
    // resource version, have expired (410 Gone) and must re-list.
    let deleted = cp
        .etcd_delete(&format!("/registry/ingress/{app}/gone"))
        .await
        .unwrap();
    assert_eq!(deleted, 1, "the Ingress is stored under /registry/ingress/");
    cp.compact_etcd().await.unwrap();
    assert_eq!(
        recording.pushes().len(),
        pushes_before,
        "nothing pushed while the API server was down"
    );

    cp.start_apiserver(Duration::from_secs(60)).await.unwrap();
    eprintln!(
        "API server down for {:?} (restart included)",
        down_since.elapsed()
    );
    let t0 = Instant::now();
    // The deletion made while nobody could watch is picked up by the re-list.
    until_status_after_restart(proxy, "/g", 404).await;
    eprintln!("re-listed after the restart in {:?}", t0.elapsed());
    assert!(
        ctl.store.relists() > relists_before,
        "the expired watches were re-established with a list"
    );
    // New changes are served.
    ingresses
        .create(&pp, &ingress(&app, "new", "/n", "echo"))
        .await
        .unwrap();
    set_path(&admin, &app, "moved", "/m2").await;
    until_status_after_restart(proxy, "/n", 200).await;
    until_status_after_restart(proxy, "/m2", 200).await;
    until_status(proxy, "x.test", "/m1", 404).await;

    // A second restart, with nothing changed meanwhile: still nothing lost, and a change
    // afterwards is served again.
    cp.restart_apiserver(Duration::from_secs(60)).await.unwrap();
    set_path(&admin, &app, "moved", "/m3").await;
    until_status_after_restart(proxy, "/m3", 200).await;
    assert_eq!(get(proxy, "x.test", "/n").await.unwrap().0, 200);

    // `web` answered 200 to every request, and every configuration pushed held it (no empty
    // or partial configuration in between).
    let bad = prober.finish().await;
    assert!(bad.is_empty(), "/a did not answer 200: {bad:?}");
    let pushes = recording.pushes();
    assert!(pushes.len() > pushes_before, "changes were pushed");
    for (i, doc) in pushes.iter().enumerate() {
        assert!(
            doc.contains("\"k8s-name:web\""),
            "push {i} lacks the Ingress `web`: {doc}"
        );
    }
    ctl.shutdown().await;
}

/// A leader whose API server stops answering (frozen: requests hang rather than fail) steps
/// down before its Lease can expire, so no other replica leads while it still pushes; it leads
/// again once the API server answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_steps_down_before_its_lease_expires_when_the_api_server_hangs() {
    common::logs();
    let cp = start_control_plane(false).await;
    let ns = cp.create_namespace("elect").await.unwrap();
    let settings = Settings::loopback();
    let (flavor, plugins) = (settings.router_flavor, settings.plugins.clone());
    let gw = Arc::new(Gateway::start(settings, None).await.unwrap());
    let target: Arc<dyn DataPlaneTarget> =
        Arc::new(InProcessTarget::new(gw.clone(), flavor, plugins));
    let lease = Duration::from_secs(6);
    let opts = ControllerOptions {
        kube: KubeArgs {
            election_namespace: Some(ns.clone()),
            election_id: "elect".into(),
            leader_election: LeaderElection::Enabled,
            pod_name: Some("replica-a".into()),
            election_lease_duration: lease,
            election_renew_deadline: Duration::from_secs(4),
            election_retry_period: Duration::from_millis(500),
            ..KubeArgs::default()
        },
        ..ControllerOptions::default()
    };
    let ctl = silverback_controller::start_cluster(cp.client(), &opts, vec![target])
        .await
        .unwrap();
    let leading = ctl.leading.clone();
    eventually(Duration::from_secs(20), "leading", || {
        let l = *leading.borrow();
        async move { l.then_some(()) }
    })
    .await;

    cp.pause_apiserver().unwrap();
    let t0 = Instant::now();
    eventually(Duration::from_secs(15), "stepped down", || {
        let l = *leading.borrow();
        async move { (!l).then_some(()) }
    })
    .await;
    let took = t0.elapsed();
    eprintln!("API server frozen -> leader stepped down in {took:?} (lease {lease:?})");
    assert!(took < lease, "stepped down after {took:?}, lease {lease:?}");

    cp.resume_apiserver().unwrap();
    eventually(Duration::from_secs(30), "leading again", || {
        let l = *leading.borrow();
        async move { l.then_some(()) }
    })
    .await;
    ctl.shutdown().await;
}
