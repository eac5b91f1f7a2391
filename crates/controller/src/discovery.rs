//! Gateway discovery (`--kong-admin-svc ns/name`): every endpoint of the admin Service's
//! EndpointSlices that is not terminating, on the ports named in
//! `--kong-admin-svc-port-names`, becomes an admin API target. The target list follows the
//! EndpointSlices as they change; targets whose URL did not change are kept (with what they
//! were pushed).
//!
//! Not-ready endpoints are targets too, as in KIC (`AdminAPIsFromEndpointSlice` skips only
//! terminating ones): a data plane's readiness probe (`/status/ready`) fails until it holds a
//! configuration, so a new or restarted data plane is published not ready, and only a push
//! makes it ready. A target that does not answer yet fails its pushes and status checks; the
//! sync loop's periodic check pushes to it once it answers.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use futures::StreamExt as _;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::Api;
use kube::runtime::watcher::{self, Event};
use kube::{Client, ResourceExt as _};
use tokio::sync::watch;

use crate::admin::{AdminClient, AdminSettings};
use crate::target::{AdminApiTarget, DataPlaneTarget};

/// Settings of gateway discovery.
#[derive(Debug, Clone)]
pub struct DiscoveryOptions {
    /// The admin Service's namespace.
    pub namespace: String,
    /// The admin Service's name.
    pub service: String,
    /// Port names to use, in order of preference (`admin-tls,kong-admin-tls` in KIC).
    pub port_names: Vec<String>,
    /// Admin client settings.
    pub admin: AdminSettings,
}

/// Admin URLs of the endpoints in `slices` that are not terminating (ready or not): for each
/// address, the first port (in
/// `port_names` order) it exposes. Ports whose name contains `tls` (or whose appProtocol is
/// `https`) are reached over HTTPS.
pub fn admin_urls<'a>(
    slices: impl IntoIterator<Item = &'a EndpointSlice>,
    port_names: &[String],
) -> BTreeSet<String> {
    let mut urls = BTreeSet::new();
    for s in slices {
        let ports = s.ports.as_deref().unwrap_or_default();
        let port = port_names.iter().find_map(|want| {
            ports
                .iter()
                .find(|p| p.name.as_deref() == Some(want.as_str()))
        });
        let Some(port) = port else { continue };
        let Some(number) = port.port else { continue };
        let https = port.name.as_deref().is_some_and(|n| n.contains("tls"))
            || port.app_protocol.as_deref() == Some("https");
        let scheme = if https { "https" } else { "http" };
        for e in &s.endpoints {
            let terminating = e
                .conditions
                .as_ref()
                .and_then(|c| c.terminating)
                .unwrap_or(false);
            if terminating {
                continue;
            }
            for a in &e.addresses {
                let host = if a.contains(':') {
                    format!("[{a}]")
                } else {
                    a.clone()
                };
                urls.insert(format!("{scheme}://{host}:{number}"));
            }
        }
    }
    urls
}

/// Watches the admin Service's EndpointSlices and keeps `targets` up to date until
/// `shutdown`. `ready` turns true after the first listing.
pub async fn run(
    client: Client,
    opts: DiscoveryOptions,
    targets: watch::Sender<Vec<Arc<dyn DataPlaneTarget>>>,
    ready: watch::Sender<bool>,
    mut shutdown: watch::Receiver<bool>,
) {
    let api: Api<EndpointSlice> = Api::namespaced(client, &opts.namespace);
    let cfg =
        watcher::Config::default().labels(&format!("kubernetes.io/service-name={}", opts.service));
    let mut stream = crate::kube_source::watch_retrying(api, cfg, "admin endpoints".into());
    let tls = if opts.admin.tls.skip_verify
        || opts.admin.tls.ca_pem.is_some()
        || opts.admin.tls.client_cert_pem.is_some()
    {
        match crate::admin::tls_config(&opts.admin.tls) {
            Ok(t) => Some(t),
            Err(e) => {
                tracing::error!(error = %e, "admin TLS settings are unusable");
                None
            }
        }
    } else {
        None
    };
    let mut slices: BTreeMap<String, EndpointSlice> = BTreeMap::new();
    let mut buffer: BTreeMap<String, EndpointSlice> = BTreeMap::new();
    let mut known: BTreeMap<String, Arc<dyn DataPlaneTarget>> = BTreeMap::new();
    loop {
        let ev = tokio::select! {
            _ = crate::stopped(&mut shutdown) => return,
            ev = stream.next() => ev,
        };
        let Some(ev) = ev else { return };
        match ev {
            Event::Init => {
                buffer.clear();
                continue;
            }
            Event::InitApply(s) => {
                buffer.insert(s.name_any(), s);
                continue;
            }
            Event::InitDone => slices = std::mem::take(&mut buffer),
            Event::Apply(s) => {
                slices.insert(s.name_any(), s);
            }
            Event::Delete(s) => {
                slices.remove(&s.name_any());
            }
        }
        let urls = admin_urls(slices.values(), &opts.port_names);
        known.retain(|u, _| urls.contains(u));
        for u in &urls {
            if known.contains_key(u) {
                continue;
            }
            match AdminClient::new(u, opts.admin.clone(), tls.clone()) {
                Ok(c) => {
                    known.insert(u.clone(), Arc::new(AdminApiTarget::new(c)));
                }
                Err(e) => tracing::warn!(url = %u, error = %e, "unusable admin endpoint"),
            }
        }
        let list: Vec<Arc<dyn DataPlaneTarget>> = known.values().cloned().collect();
        let changed = {
            let cur = targets.borrow();
            cur.len() != list.len() || cur.iter().zip(&list).any(|(a, b)| a.name() != b.name())
        };
        if changed {
            tracing::info!(dataplanes = ?known.keys().collect::<Vec<_>>(), "data planes discovered");
            targets.send_replace(list);
        }
        ready.send_replace(true);
    }
}
