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
//!
//! An HTTPS target is reached at its Pod IP but verified against the name
//! `pod.<service>.<namespace>.svc`, as KIC's `adminAPIFromEndpoint` does (the Kong Helm
//! chart and Kong's operator issue admin certificates for `*.<service>.<namespace>.svc`);
//! that name replaces `--kong-admin-tls-server-name` for discovered targets, as in KIC.

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
    admin_endpoints(slices, port_names).into_keys().collect()
}

/// The Service an EndpointSlice belongs to: its `kubernetes.io/service-name` label, else its
/// owner of kind Service.
fn service_of(s: &EndpointSlice) -> Option<String> {
    s.labels()
        .get("kubernetes.io/service-name")
        .cloned()
        .or_else(|| {
            s.owner_references()
                .iter()
                .find(|o| o.kind == "Service")
                .map(|o| o.name.clone())
        })
        .filter(|n| !n.is_empty())
}

/// [`admin_urls`], each with the TLS server name to verify it against: for an HTTPS URL,
/// `pod.<service>.<namespace>.svc` (KIC's name for discovered admin APIs) when the slice's
/// Service is known; `None` otherwise.
pub fn admin_endpoints<'a>(
    slices: impl IntoIterator<Item = &'a EndpointSlice>,
    port_names: &[String],
) -> BTreeMap<String, Option<String>> {
    let mut urls = BTreeMap::new();
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
        let server_name = if https {
            service_of(s).map(|svc| format!("pod.{svc}.{}.svc", s.namespace().unwrap_or_default()))
        } else {
            None
        };
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
                urls.insert(format!("{scheme}://{host}:{number}"), server_name.clone());
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
        let urls = admin_endpoints(slices.values(), &opts.port_names);
        known.retain(|u, _| urls.contains_key(u));
        for (u, server_name) in &urls {
            if known.contains_key(u) {
                continue;
            }
            let mut settings = opts.admin.clone();
            if server_name.is_some() {
                settings.tls.server_name = server_name.clone();
            }
            match AdminClient::new(u, settings, tls.clone()) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn https_endpoints_are_verified_against_the_services_pod_name() {
        let slice = |name: &str, port: &str, labels: serde_json::Value| -> EndpointSlice {
            serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": "kong", "labels": labels},
                "addressType": "IPv4",
                "ports": [{"name": port, "port": 8444}],
                "endpoints": [{"addresses": ["10.0.0.7"]}],
            }))
            .expect("a slice")
        };
        let names = ["admin-tls".to_string(), "admin".to_string()];
        let tls = slice(
            "a",
            "admin-tls",
            json!({"kubernetes.io/service-name": "kong-admin"}),
        );
        let e = admin_endpoints([&tls], &names);
        assert_eq!(
            e.get("https://10.0.0.7:8444"),
            Some(&Some("pod.kong-admin.kong.svc".to_string()))
        );
        let plain = slice(
            "b",
            "admin",
            json!({"kubernetes.io/service-name": "kong-admin"}),
        );
        assert_eq!(
            admin_endpoints([&plain], &names).get("http://10.0.0.7:8444"),
            Some(&None)
        );
        // Without the label, the owning Service names it.
        let mut owned = slice("c", "admin-tls", json!({}));
        owned.metadata.owner_references = Some(vec![
            serde_json::from_value(json!({
                "apiVersion": "v1", "kind": "Service", "name": "owner", "uid": "u"
            }))
            .expect("an owner"),
        ]);
        assert_eq!(
            admin_endpoints([&owned], &names).get("https://10.0.0.7:8444"),
            Some(&Some("pod.owner.kong.svc".to_string()))
        );
    }
}
