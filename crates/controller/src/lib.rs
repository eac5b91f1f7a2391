//! The Silverback controller: watches Kubernetes (or a directory of manifests), translates
//! the whole state into one Kong declarative configuration, pushes it to every data plane,
//! and writes status and Events back.
//!
//! ```text
//!  sources ──► Store ──(debounce)──► Syncer: translate, hash, push ──► data planes
//!  (kube watches | files)             │  fallback on rejection            (in-process Gateway,
//!                                     ▼                                    admin API URLs,
//!                              SyncOutcome ──► KubeReporter                discovered Pods)
//!                                               (Events, Ingress status)
//! ```
//!
//! - [`store`]: the objects, a change generation and the initial-listing gate.
//! - [`kube_source`] / [`files`]: the two sources.
//! - [`sync`]: debounce, translation, pushes, fallback, last good configuration, restart
//!   detection.
//! - [`target`] / [`admin`]: data planes (in-process [`Gateway`](silverback_proxy::Gateway)
//!   or admin API over HTTP/TLS).
//! - [`discovery`]: admin endpoints from the admin Service's EndpointSlices.
//! - [`election`]: Lease-based leader election.
//! - [`report`]: Events and Ingress status.
//! - [`health`] / [`metrics`]: `/healthz`, `/readyz`, `/metrics` (KIC's metric names),
//!   `/debug/config/*`.
//!
//! Entry points for the binary: [`start_files`] (`silverback run --manifests DIR`),
//! [`start_cluster`] (`silverback run` in a cluster, and `silverback controller`), both
//! returning a [`Controller`] handle; [`admin_targets`] builds the `--kong-admin-url` targets.

pub mod admin;
pub mod discovery;
pub mod election;
pub mod files;
pub mod health;
pub mod kube_source;
pub mod metrics;
pub mod options;
pub mod report;
pub mod store;
pub mod sync;
pub mod target;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use silverback_translator::TranslateOptions;
use tokio::sync::watch;

pub use options::{AdminArgs, ControllerOptions, KubeArgs, LeaderElection, SyncArgs};
pub use store::Store;
pub use sync::{Diagnostics, SyncOptions, SyncOutcome, Syncer};
pub use target::{AdminApiTarget, DataPlaneTarget, InProcessTarget, PushError};

/// A running controller. Dropping it does not stop it; call [`Controller::shutdown`].
pub struct Controller {
    /// The object store.
    pub store: Arc<Store>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Diagnostics documents.
    pub diagnostics: Arc<Diagnostics>,
    /// Outcomes of the syncs (the last one).
    pub outcomes: watch::Receiver<Option<Arc<SyncOutcome>>>,
    /// Whether this replica leads (always true without election).
    pub leading: watch::Receiver<bool>,
    /// The data planes configured.
    pub targets: watch::Receiver<Vec<Arc<dyn DataPlaneTarget>>>,
    /// Bound address of the health endpoints, if any.
    pub health_addr: Option<SocketAddr>,
    /// Bound address of the separate metrics listener (`--metrics-bind-address`), if any.
    pub metrics_addr: Option<SocketAddr>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

use metrics::Metrics;

impl std::fmt::Debug for Controller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controller")
            .field("health_addr", &self.health_addr)
            .field("metrics_addr", &self.metrics_addr)
            .finish_non_exhaustive()
    }
}

impl Controller {
    /// Stops every task: the sync loop finishes its current sync, the leader releases its
    /// Lease. Bounded by 10 s.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let all = futures::future::join_all(self.tasks);
        if tokio::time::timeout(Duration::from_secs(10), all)
            .await
            .is_err()
        {
            tracing::warn!("controller tasks did not stop in time");
        }
    }

    /// Stops every task at once, as if the process died: nothing is released (the Lease
    /// stays held until it expires). For failover tests.
    pub fn abort(self) {
        for t in &self.tasks {
            t.abort();
        }
    }

    /// Runs until `signal` completes, then shuts down.
    pub async fn run_until(self, signal: impl std::future::Future<Output = ()>) {
        signal.await;
        self.shutdown().await;
    }

    /// Waits until a sync outcome satisfies `f` (at most `timeout`).
    pub async fn wait_outcome(
        &self,
        timeout: Duration,
        f: impl Fn(&SyncOutcome) -> bool,
    ) -> Option<Arc<SyncOutcome>> {
        let mut rx = self.outcomes.clone();
        let r = tokio::time::timeout(timeout, rx.wait_for(|o| o.as_deref().is_some_and(&f))).await;
        match r {
            Ok(Ok(o)) => o.clone(),
            _ => None,
        }
    }
}

fn sync_options(s: &SyncArgs) -> anyhow::Result<SyncOptions> {
    Ok(SyncOptions {
        translate: TranslateOptions {
            ingress_class: s.ingress_class.clone(),
            router_flavor: s.router_flavor,
            enable_drain_support: s.enable_drain_support,
            cluster_domain: s.cluster_domain.clone(),
            ..TranslateOptions::default()
        },
        debounce: s.sync_debounce,
        max_delay: s.sync_max_delay.max(s.sync_debounce),
        fallback: s.enable_fallback,
        use_last_valid: s.use_last_valid_config_for_fallback,
        check_interval: s.proxy_sync_seconds.max(Duration::from_millis(100)),
    })
}

struct Common {
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    diagnostics: Arc<Diagnostics>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    health_addr: Option<SocketAddr>,
    metrics_addr: Option<SocketAddr>,
    /// The leader state `/readyz` reads; set once it exists.
    leading: Arc<std::sync::OnceLock<watch::Receiver<bool>>>,
}

async fn common(sync: &SyncArgs) -> anyhow::Result<Common> {
    let store = Arc::new(Store::new());
    let metrics = Arc::new(Metrics::default());
    let diagnostics = Arc::new(Diagnostics::default());
    let shutdown = watch::Sender::new(false);
    let mut tasks = Vec::new();
    let metrics_addr = sync.metrics_addr()?;
    let leading = Arc::new(std::sync::OnceLock::new());
    let endpoints = |probes: bool, metrics_endpoint: bool| health::Endpoints {
        store: store.clone(),
        metrics: metrics.clone(),
        diagnostics: diagnostics.clone(),
        leading: leading.clone(),
        dump_config: sync.dump_config,
        dump_sensitive_config: sync.dump_sensitive_config,
        probes,
        metrics_endpoint,
    };
    let health_addr = match sync.health_addr()? {
        Some(addr) => {
            let e = endpoints(true, metrics_addr.is_none());
            let (bound, task) = health::serve(addr, e, shutdown.subscribe()).await?;
            tasks.push(task);
            Some(bound)
        }
        None => None,
    };
    let metrics_addr = match metrics_addr {
        Some(addr) => {
            let e = endpoints(false, true);
            let (bound, task) = health::serve(addr, e, shutdown.subscribe()).await?;
            tasks.push(task);
            Some(bound)
        }
        None => None,
    };
    Ok(Common {
        store,
        metrics,
        diagnostics,
        shutdown,
        tasks,
        health_addr,
        metrics_addr,
        leading,
    })
}

/// Files mode (`silverback run --manifests DIR`): reads the manifests under `dir`, watches
/// them, and pushes every change to `targets` (typically one [`InProcessTarget`]). No
/// cluster, no election, no Events. Fails if the first read fails.
pub async fn start_files(
    dir: PathBuf,
    sync: &SyncArgs,
    targets: Vec<Arc<dyn DataPlaneTarget>>,
) -> anyhow::Result<Controller> {
    let mut c = common(sync).await?;
    let watcher = files::watch_dir(
        dir.clone(),
        c.store.clone(),
        Duration::from_secs(2),
        c.shutdown.subscribe(),
    )
    .await
    .with_context(|| format!("reading manifests from {}", dir.display()))?;
    c.tasks.push(watcher);
    let (_targets_tx, targets_rx) = watch::channel(targets);
    let (_leader_tx, leader_rx) = watch::channel(true);
    let _ = c.leading.set(leader_rx.clone());
    let syncer = Syncer::new(
        c.store.clone(),
        sync_options(sync)?,
        targets_rx.clone(),
        leader_rx.clone(),
        c.metrics.clone(),
        c.diagnostics.clone(),
    );
    let outcomes = syncer.outcomes();
    let shutdown = c.shutdown.subscribe();
    c.tasks.push(tokio::spawn(async move {
        let _keep = (_targets_tx, _leader_tx);
        syncer.run(shutdown).await;
    }));
    Ok(Controller {
        store: c.store,
        metrics: c.metrics,
        diagnostics: c.diagnostics,
        outcomes,
        leading: leader_rx,
        targets: targets_rx,
        health_addr: c.health_addr,
        metrics_addr: c.metrics_addr,
        shutdown: c.shutdown,
        tasks: c.tasks,
    })
}

/// A Kubernetes client: `--kubeconfig` if given, else `$KUBECONFIG`, `~/.kube/config` or the
/// in-cluster configuration.
pub async fn kube_client(kubeconfig: Option<&std::path::Path>) -> anyhow::Result<kube::Client> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = match kubeconfig {
        Some(p) => {
            let kc = kube::config::Kubeconfig::read_from(p)
                .with_context(|| format!("reading kubeconfig {}", p.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .context("kubeconfig")?
        }
        None => kube::Config::infer()
            .await
            .context("no Kubernetes configuration (in-cluster or kubeconfig)")?,
    };
    kube::Client::try_from(config).context("building the Kubernetes client")
}

/// Admin API targets for `--kong-admin-url`.
pub fn admin_targets(admin: &AdminArgs) -> anyhow::Result<Vec<Arc<dyn DataPlaneTarget>>> {
    let settings = admin.settings()?;
    let tls = if admin.kong_admin_url.iter().any(|u| u.starts_with("https:")) {
        Some(admin::tls_config(&settings.tls)?)
    } else {
        None
    };
    admin
        .kong_admin_url
        .iter()
        .map(|u| {
            let c = admin::AdminClient::new(u, settings.clone(), tls.clone())?;
            Ok(Arc::new(AdminApiTarget::new(c)) as Arc<dyn DataPlaneTarget>)
        })
        .collect()
}

fn identity(kube: &KubeArgs) -> String {
    if let Some(p) = &kube.pod_name {
        return p.clone();
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "silverback".into());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{host}_{}_{nanos:x}", std::process::id())
}

/// Cluster mode: watches Kubernetes with `client` and configures the data planes.
///
/// - `in_process`: targets of `silverback run` (the gateway in this process). When empty,
///   the data planes come from `--kong-admin-svc` (gateway discovery) or `--kong-admin-url`.
/// - Leader election follows `--leader-election` (auto: on with gateway discovery).
///
/// Returns once the watches, the sync loop and the writers are started; the first push
/// happens when every watch has listed once.
pub async fn start_cluster(
    client: kube::Client,
    opts: &ControllerOptions,
    in_process: Vec<Arc<dyn DataPlaneTarget>>,
) -> anyhow::Result<Controller> {
    kube_source::secret_selector(opts.kube.secret_label_selector.as_deref())?;
    let mut c = common(&opts.sync).await?;
    let sync_opts = sync_options(&opts.sync)?;

    // Data planes.
    let (targets_tx, targets_rx) = watch::channel(Vec::<Arc<dyn DataPlaneTarget>>::new());
    let discovery = in_process.is_empty() && opts.admin.kong_admin_svc.is_some();
    if !in_process.is_empty() {
        targets_tx.send_replace(in_process);
    } else if let Some((ns, name)) = &opts.admin.kong_admin_svc {
        let (ready_tx, _ready_rx) = watch::channel(false);
        let dopts = discovery::DiscoveryOptions {
            namespace: ns.clone(),
            service: name.clone(),
            port_names: opts.admin.kong_admin_svc_port_names.clone(),
            admin: opts.admin.settings()?,
        };
        let tx = targets_tx.clone();
        c.tasks.push(tokio::spawn(discovery::run(
            client.clone(),
            dopts,
            tx,
            ready_tx,
            c.shutdown.subscribe(),
        )));
    } else {
        anyhow::ensure!(
            !opts.admin.kong_admin_url.is_empty(),
            "no data plane: give --kong-admin-url or --kong-admin-svc"
        );
        targets_tx.send_replace(admin_targets(&opts.admin)?);
    }

    // Leader election.
    let elect = match opts.kube.leader_election {
        LeaderElection::Enabled => true,
        LeaderElection::Disabled => false,
        LeaderElection::Auto => discovery,
    };
    let (leader_tx, leader_rx) = watch::channel(!elect);
    let _ = c.leading.set(leader_rx.clone());
    if elect {
        let ns = opts
            .kube
            .election_namespace
            .clone()
            .or_else(|| opts.kube.pod_namespace.clone())
            .unwrap_or_else(|| client.default_namespace().to_string());
        let eopts = election::ElectionOptions {
            lease_duration: opts.kube.election_lease_duration,
            renew_deadline: opts.kube.election_renew_deadline,
            retry_period: opts.kube.election_retry_period,
            ..election::ElectionOptions::new(&ns, &opts.kube.election_id, &identity(&opts.kube))
        };
        let elector = election::Elector::new(client.clone(), eopts);
        let mut leading = elector.leading();
        let tx = leader_tx.clone();
        let mut sd = c.shutdown.subscribe();
        c.tasks.push(tokio::spawn(async move {
            loop {
                tokio::select! {
                    r = leading.changed() => {
                        if r.is_err() { return; }
                        tx.send_replace(*leading.borrow_and_update());
                    }
                    _ = crate::stopped(&mut sd) => return,
                }
            }
        }));
        let sd = c.shutdown.subscribe();
        c.tasks.push(tokio::spawn(elector.run(sd)));
    }

    // Sources.
    let scope = kube_source::WatchScope {
        namespaces: opts.kube.watch_namespace.clone(),
        secret_label_selector: opts.kube.secret_label_selector.clone(),
    };
    let watches = kube_source::start(
        client.clone(),
        &scope,
        c.store.clone(),
        c.shutdown.subscribe(),
    )
    .await;
    c.tasks.extend(watches);

    // Sync loop and writers.
    let syncer = Syncer::new(
        c.store.clone(),
        sync_opts,
        targets_rx.clone(),
        leader_rx.clone(),
        c.metrics.clone(),
        c.diagnostics.clone(),
    );
    let outcomes = syncer.outcomes();
    let sd = c.shutdown.subscribe();
    c.tasks.push(tokio::spawn(async move {
        let _keep = (leader_tx, targets_tx);
        syncer.run(sd).await;
    }));
    let reporter = report::KubeReporter::new(
        client,
        c.store.clone(),
        report::ReportOptions {
            emit_events: opts.kube.emit_kubernetes_events,
            update_status: opts.kube.update_status,
            publish_service: opts.kube.publish_service.clone(),
            publish_status_address: opts.kube.publish_status_address.clone(),
            pod: opts
                .kube
                .pod_namespace
                .clone()
                .zip(opts.kube.pod_name.clone()),
            controller_name: "silverback".into(),
            status_resync: Duration::from_secs(10),
        },
    );
    c.tasks.push(tokio::spawn(reporter.run(
        outcomes.clone(),
        leader_rx.clone(),
        c.shutdown.subscribe(),
    )));
    Ok(Controller {
        store: c.store,
        metrics: c.metrics,
        diagnostics: c.diagnostics,
        outcomes,
        leading: leader_rx,
        targets: targets_rx,
        health_addr: c.health_addr,
        metrics_addr: c.metrics_addr,
        shutdown: c.shutdown,
        tasks: c.tasks,
    })
}

/// Completes when `shutdown` turns true (or its sender is gone).
pub(crate) async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|s| *s).await;
}
