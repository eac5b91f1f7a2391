//! Writing back to Kubernetes: Events for problems and pushes, and Ingress
//! `status.loadBalancer`.
//!
//! - Every translation problem becomes a Warning Event `KongConfigurationTranslationFailed` on
//!   the object, every object a data plane rejected a Warning Event
//!   `KongConfigurationApplyFailed` (KIC's reasons). A problem is reported when it appears;
//!   it is reported again if it goes away and comes back.
//! - A new configuration accepted by the data planes is a Normal Event
//!   `KongConfigurationSucceeded` on the controller's Pod (when `--pod-name`/`--pod-namespace`
//!   are known), a push that failed everywhere a Warning `KongConfigurationApplyFailed`.
//! - Ingresses actually configured (in the last configuration a data plane accepted) get
//!   `status.loadBalancer.ingress` from `--publish-status-address`, else from the
//!   `--publish-service` Service ([`service_addresses`]: a LoadBalancer's ingress entries,
//!   else the cluster IPs). As
//!   in KIC, status is only ever set, never emptied: nothing is written while the addresses
//!   cannot be read (the Service is missing, the API server fails) or are none yet, nor for
//!   an Ingress not configured (yet); an Ingress that leaves our class, or whose
//!   configuration goes, keeps the addresses last written (KIC only drops it from the
//!   configuration).
//!
//! Only the leader writes.

use std::collections::{BTreeSet, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ObjectReference, Service};
use k8s_openapi::api::networking::v1::{Ingress, IngressLoadBalancerIngress};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, ResourceExt as _};
use serde_json::json;
use silverback_translator::{ObjectRef, Problem};
use tokio::sync::watch;

use crate::store::Store;
use crate::sync::SyncOutcome;

/// Reason of a translation problem's Event.
pub const REASON_TRANSLATION_FAILED: &str = "KongConfigurationTranslationFailed";
/// Reason of a rejected object's (or failed push's) Event.
pub const REASON_APPLY_FAILED: &str = "KongConfigurationApplyFailed";
/// Reason of a successful push's Event.
pub const REASON_SUCCEEDED: &str = "KongConfigurationSucceeded";

/// Settings of the writer.
#[derive(Debug, Clone, Default)]
pub struct ReportOptions {
    /// Emit Events (`--emit-kubernetes-events`).
    pub emit_events: bool,
    /// Write Ingress status (`--update-status`).
    pub update_status: bool,
    /// `--publish-service` as (namespace, name).
    pub publish_service: Option<(String, String)>,
    /// `--publish-status-address`.
    pub publish_status_address: Vec<String>,
    /// The controller's Pod (namespace, name), for success Events.
    pub pod: Option<(String, String)>,
    /// Reporting controller name of the Events.
    pub controller_name: String,
    /// How often status is re-checked without a sync (publish Service changes, overwrites).
    pub status_resync: Duration,
}

fn reference(o: &ObjectRef) -> ObjectReference {
    ObjectReference {
        api_version: Some(o.api_version.clone()).filter(|s| !s.is_empty()),
        kind: Some(o.kind.clone()),
        name: Some(o.name.clone()),
        namespace: Some(o.namespace.clone()).filter(|s| !s.is_empty()),
        uid: Some(o.uid.clone()).filter(|s| !s.is_empty()),
        ..ObjectReference::default()
    }
}

/// Truncates an Event note to the API's 1 kB limit.
fn note(s: &str) -> String {
    if s.len() <= 1000 {
        return s.to_string();
    }
    let mut end = 1000;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

/// The addresses a publish Service gives, as KIC's address finder reads them: a
/// `LoadBalancer` Service its load balancer's ingress entries only (an entry with both an IP
/// and a host name gives both, as two addresses), none while the load balancer is pending;
/// any other type its cluster IPs (none for a headless Service).
pub fn service_addresses(svc: &Service) -> Vec<IngressLoadBalancerIngress> {
    let spec = svc.spec.as_ref();
    if spec.and_then(|s| s.type_.as_deref()) == Some("LoadBalancer") {
        let entries = svc
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|l| l.ingress.as_deref())
            .unwrap_or_default();
        let mut out = Vec::new();
        for e in entries {
            if let Some(ip) = e.ip.as_ref().filter(|s| !s.is_empty()) {
                out.push(IngressLoadBalancerIngress {
                    ip: Some(ip.clone()),
                    ..Default::default()
                });
            }
            if let Some(h) = e.hostname.as_ref().filter(|s| !s.is_empty()) {
                out.push(IngressLoadBalancerIngress {
                    hostname: Some(h.clone()),
                    ..Default::default()
                });
            }
        }
        return out;
    }
    spec.and_then(|s| s.cluster_ips.as_deref())
        .unwrap_or_default()
        .iter()
        .filter(|ip| !ip.is_empty() && ip.as_str() != "None")
        .map(|ip| IngressLoadBalancerIngress {
            ip: Some(ip.clone()),
            ..Default::default()
        })
        .collect()
}

/// The writer; see the [module documentation](self).
pub struct KubeReporter {
    client: Client,
    store: Arc<Store>,
    opts: ReportOptions,
    recorder: Recorder,
    reported: HashSet<(&'static str, ObjectRef, String)>,
    /// `SyncOutcome::pushes` and `failures` of the last outcome handled.
    seen_pushes: u64,
    seen_failures: u64,
}

impl std::fmt::Debug for KubeReporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeReporter").finish_non_exhaustive()
    }
}

impl KubeReporter {
    /// A writer using `client`.
    pub fn new(client: Client, store: Arc<Store>, opts: ReportOptions) -> KubeReporter {
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: opts.controller_name.clone(),
                instance: opts.pod.as_ref().map(|(_, n)| n.clone()),
            },
        );
        KubeReporter {
            client,
            store,
            opts,
            recorder,
            reported: HashSet::new(),
            seen_pushes: 0,
            seen_failures: 0,
        }
    }

    /// Runs until `shutdown`, handling each outcome of the sync loop while `leader`.
    pub async fn run(
        mut self,
        mut outcomes: watch::Receiver<Option<Arc<SyncOutcome>>>,
        leader: watch::Receiver<bool>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut resync = tokio::time::interval(self.opts.status_resync.max(Duration::from_secs(1)));
        resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = crate::stopped(&mut shutdown) => return,
                r = outcomes.changed() => {
                    if r.is_err() {
                        return;
                    }
                    let o = outcomes.borrow_and_update().clone();
                    if let Some(o) = o && *leader.borrow() {
                        self.handle(&o).await;
                    }
                }
                _ = resync.tick() => {
                    let o = outcomes.borrow().clone();
                    if let Some(o) = o && *leader.borrow() && self.opts.update_status {
                        self.update_status(&o.configured).await;
                    }
                }
            }
        }
    }

    async fn publish(&self, type_: EventType, reason: &str, message: &str, r: &ObjectReference) {
        let ev = Event {
            type_,
            reason: reason.to_string(),
            note: Some(note(message)),
            action: "KongConfiguration".to_string(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&ev, r).await {
            tracing::warn!(error = %e, reason, "cannot publish an Event");
        }
    }

    /// Events and status for one outcome.
    pub async fn handle(&mut self, o: &SyncOutcome) {
        if self.opts.emit_events {
            let mut current = HashSet::new();
            let all = o
                .translation_problems
                .iter()
                .map(|p| (REASON_TRANSLATION_FAILED, p))
                .chain(o.apply_problems.iter().map(|p| (REASON_APPLY_FAILED, p)));
            for (reason, p) in all {
                let Problem {
                    object,
                    field,
                    reason: why,
                    ..
                } = p;
                let message = if field.is_empty() {
                    why.clone()
                } else {
                    format!("{field}: {why}")
                };
                let key = (reason, object.clone(), message.clone());
                if !self.reported.contains(&key) {
                    self.publish(EventType::Warning, reason, &message, &reference(object))
                        .await;
                }
                current.insert(key);
            }
            self.reported = current;
            if let Some((ns, name)) = &self.opts.pod {
                let pod = ObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Pod".into()),
                    name: Some(name.clone()),
                    namespace: Some(ns.clone()),
                    ..ObjectReference::default()
                };
                // Counted, not read from this outcome's flags: an outcome that replaced
                // others before this writer woke up (the channel keeps only the latest) must
                // not swallow their pushes or failures.
                if o.pushes > self.seen_pushes {
                    self.publish(
                        EventType::Normal,
                        REASON_SUCCEEDED,
                        "successfully applied Kong configuration to every data plane",
                        &pod,
                    )
                    .await;
                }
                if o.failures > self.seen_failures {
                    let f = o
                        .failure
                        .as_deref()
                        .unwrap_or("a configuration push failed (a later sync succeeded)");
                    self.publish(EventType::Warning, REASON_APPLY_FAILED, f, &pod)
                        .await;
                }
            }
        }
        self.seen_pushes = o.pushes;
        self.seen_failures = o.failures;
        if self.opts.update_status {
            self.update_status(&o.configured).await;
        }
    }

    /// The addresses to publish; an error when they cannot be read or there are none (then
    /// nothing is written, as in KIC).
    pub async fn addresses(&self) -> Result<Vec<IngressLoadBalancerIngress>, String> {
        if !self.opts.publish_status_address.is_empty() {
            return Ok(self
                .opts
                .publish_status_address
                .iter()
                .map(|a| {
                    if a.parse::<IpAddr>().is_ok() {
                        IngressLoadBalancerIngress {
                            ip: Some(a.clone()),
                            ..Default::default()
                        }
                    } else {
                        IngressLoadBalancerIngress {
                            hostname: Some(a.clone()),
                            ..Default::default()
                        }
                    }
                })
                .collect());
        }
        let Some((ns, name)) = &self.opts.publish_service else {
            return Err("neither --publish-status-address nor --publish-service is set".into());
        };
        let api: Api<Service> = Api::namespaced(self.client.clone(), ns);
        let svc = match api.get_opt(name).await {
            Ok(Some(s)) => s,
            Ok(None) => return Err(format!("publish service {ns}/{name} not found")),
            Err(e) => return Err(format!("cannot read the publish service {ns}/{name}: {e}")),
        };
        let addrs = service_addresses(&svc);
        if addrs.is_empty() {
            return Err(format!(
                "waiting for addresses to be provisioned for publish service {ns}/{name}"
            ));
        }
        Ok(addrs)
    }

    /// Writes the addresses into the status of the `configured` Ingresses whose status
    /// differs. Writes nothing when the addresses cannot be read; never empties a status.
    pub async fn update_status(&self, configured: &[ObjectRef]) {
        if !configured.iter().any(|r| r.kind == "Ingress") {
            return;
        }
        let addresses = match self.addresses().await {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "Ingress status not updated");
                return;
            }
        };
        let configured: BTreeSet<(&str, &str)> = configured
            .iter()
            .filter(|r| r.kind == "Ingress")
            .map(|r| (r.namespace.as_str(), r.name.as_str()))
            .collect();
        let current: Vec<(String, String, Vec<IngressLoadBalancerIngress>)> =
            self.store.read(|o| {
                o.ingresses
                    .values()
                    .map(|i: &Ingress| {
                        (
                            i.namespace().unwrap_or_default(),
                            i.name_any(),
                            i.status
                                .as_ref()
                                .and_then(|s| s.load_balancer.as_ref())
                                .and_then(|l| l.ingress.clone())
                                .unwrap_or_default(),
                        )
                    })
                    .collect()
            });
        for (ns, name, now) in current {
            if !configured.contains(&(ns.as_str(), name.as_str())) || now == addresses {
                continue;
            }
            let patch = json!({"status": {"loadBalancer": {"ingress": addresses}}});
            let api: Api<Ingress> = Api::namespaced(self.client.clone(), &ns);
            match api
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => tracing::debug!(ingress = %format!("{ns}/{name}"), "status written"),
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => {
                    tracing::warn!(ingress = %format!("{ns}/{name}"), error = %e, "cannot write status")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(v: serde_json::Value) -> Service {
        serde_json::from_value(v).expect("a Service")
    }

    fn show(a: &[IngressLoadBalancerIngress]) -> Vec<String> {
        a.iter()
            .map(|i| {
                i.ip.clone()
                    .or_else(|| i.hostname.clone())
                    .unwrap_or_default()
            })
            .collect()
    }

    #[test]
    fn publish_service_addresses_follow_kics_address_finder() {
        // A pending load balancer: nothing, not the cluster IP.
        let pending = svc(
            json!({"spec": {"type": "LoadBalancer", "clusterIPs": ["10.0.0.5"],
                                           "externalIPs": ["203.0.113.9"]}}),
        );
        assert!(service_addresses(&pending).is_empty());
        // An entry with both an IP and a host name gives both.
        let lb = svc(
            json!({"spec": {"type": "LoadBalancer", "clusterIPs": ["10.0.0.5"]},
                            "status": {"loadBalancer": {"ingress": [
                                {"ip": "198.51.100.1", "hostname": "lb.example.com"},
                                {"hostname": "lb2.example.com"}]}}}),
        );
        assert_eq!(
            show(&service_addresses(&lb)),
            ["198.51.100.1", "lb.example.com", "lb2.example.com"]
        );
        let lb_addrs = service_addresses(&lb);
        assert!(lb_addrs[1].ip.is_none());
        // Other types: the cluster IPs (external IPs are not used).
        let cip = svc(
            json!({"spec": {"type": "NodePort", "clusterIPs": ["10.0.0.5", "fd00::5"],
                                      "externalIPs": ["203.0.113.9"]}}),
        );
        assert_eq!(show(&service_addresses(&cip)), ["10.0.0.5", "fd00::5"]);
        let headless = svc(json!({"spec": {"clusterIP": "None", "clusterIPs": ["None"]}}));
        assert!(service_addresses(&headless).is_empty());
    }
}
