//! The Kubernetes source: one watch per kind (and per namespace with `--watch-namespace`)
//! feeding the [`Store`].
//!
//! Watches come from `kube::runtime::watcher`, which resumes a broken watch from its last
//! resource version and re-lists when that has expired (`410 Gone`, e.g. after an API server
//! restart or an etcd compaction): the objects of a re-list replace that kind's objects in the
//! store atomically when the listing completes (`InitDone`), so nothing is lost or left stale.
//!
//! Errors are retried with client-go's backoff (0.8 s doubling to 30 s, jittered, reset by the
//! next success), except an expired watch right after a success or another error: the API
//! server answered, so the re-list starts at once rather than after the backoff grown while
//! it was unreachable.

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use futures::stream::BoxStream;
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use kube::api::{Api, ApiResource, DynamicObject, ListParams};
use kube::runtime::utils::Backoff as _;
use kube::runtime::watcher::{self, Event};
use kube::{Client, Resource, ResourceExt as _};
use serde::de::DeserializeOwned;
use silverback_translator::{IngressClassParameters, Kind, Objects};
use tokio::sync::watch;

use crate::store::Store;

/// What to watch.
#[derive(Debug, Clone, Default)]
pub struct WatchScope {
    /// Namespaces to watch; empty = all.
    pub namespaces: Vec<String>,
    /// `--secret-label-selector`: a label key; only Secrets with this label set to `true` are
    /// read (see [`secret_selector`]).
    pub secret_label_selector: Option<String>,
}

/// The label selector of the Secret watch for `--secret-label-selector KEY`: as in KIC
/// ("Limits the secrets ingested to those having this label set to \"true\""), the value is a
/// label key and the selector `KEY=true`; none when it is empty. An error when the value is
/// not a label key (a selector such as `a=b` was given).
pub fn secret_selector(key: Option<&str>) -> anyhow::Result<Option<String>> {
    let Some(key) = key.map(str::trim).filter(|k| !k.is_empty()) else {
        return Ok(None);
    };
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    let name_ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    let prefix_ok = prefix.is_none_or(|p| {
        !p.is_empty()
            && p.len() <= 253
            && p.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-.".contains(c))
    });
    anyhow::ensure!(
        name_ok && prefix_ok,
        "--secret-label-selector {key:?}: expected a label key (Secrets with this label set to \"true\" are read), as in KIC"
    );
    Ok(Some(format!("{key}=true")))
}

/// The `ApiResource` of Kong's IngressClassParameters.
pub fn ingress_class_parameters_resource() -> ApiResource {
    ApiResource {
        group: "configuration.konghq.com".into(),
        version: "v1alpha1".into(),
        api_version: "configuration.konghq.com/v1alpha1".into(),
        kind: "IngressClassParameters".into(),
        plural: "ingressclassparameterses".into(),
    }
}

fn clear_kind(o: &mut Objects, kind: Kind, ns: Option<&str>) {
    let keep = |k: &(String, String)| ns.is_some_and(|ns| k.0 != ns);
    match kind {
        Kind::Ingress => o.ingresses.retain(|k, _| keep(k)),
        Kind::IngressClass => o.ingress_classes.clear(),
        Kind::Service => o.services.retain(|k, _| keep(k)),
        Kind::Secret => o.secrets.retain(|k, _| keep(k)),
        Kind::EndpointSlice => o.endpoint_slices.retain(|k, _| keep(k)),
        Kind::IngressClassParameters => o.ingress_class_parameters.retain(|k, _| keep(k)),
    }
}

trait Insert: Sized {
    const KIND: Kind;
    fn insert(self, o: &mut Objects);
}

impl Insert for Ingress {
    const KIND: Kind = Kind::Ingress;
    fn insert(self, o: &mut Objects) {
        o.insert_ingress(self);
    }
}
impl Insert for IngressClass {
    const KIND: Kind = Kind::IngressClass;
    fn insert(self, o: &mut Objects) {
        o.insert_ingress_class(self);
    }
}
impl Insert for Service {
    const KIND: Kind = Kind::Service;
    fn insert(self, o: &mut Objects) {
        o.insert_service(self);
    }
}
impl Insert for Secret {
    const KIND: Kind = Kind::Secret;
    fn insert(self, o: &mut Objects) {
        o.insert_secret(self);
    }
}
impl Insert for EndpointSlice {
    const KIND: Kind = Kind::EndpointSlice;
    fn insert(self, o: &mut Objects) {
        o.insert_endpoint_slice(self);
    }
}
impl Insert for DynamicObject {
    const KIND: Kind = Kind::IngressClassParameters;
    fn insert(self, o: &mut Objects) {
        let spec = self
            .data
            .get("spec")
            .cloned()
            .and_then(|s| serde_json::from_value(s).ok())
            .unwrap_or_default();
        o.insert_ingress_class_parameters(IngressClassParameters {
            metadata: self.metadata,
            spec,
        });
    }
}

async fn run<K>(
    api: Api<K>,
    config: watcher::Config,
    store: Arc<Store>,
    source: String,
    ns: Option<String>,
    mut shutdown: watch::Receiver<bool>,
) where
    K: Resource + Insert + Clone + DeserializeOwned + Debug + Send + 'static,
{
    let mut stream = watch_retrying(api, config, source.clone());
    let mut buffer: Vec<K> = Vec::new();
    loop {
        let ev = tokio::select! {
            _ = crate::stopped(&mut shutdown) => return,
            ev = stream.next() => ev,
        };
        let Some(ev) = ev else {
            return;
        };
        match ev {
            Event::Init => buffer.clear(),
            Event::InitApply(mut o) => {
                o.managed_fields_mut().clear();
                buffer.push(o);
            }
            Event::InitDone => {
                let items = std::mem::take(&mut buffer);
                let n = items.len();
                store.update(|objects| {
                    clear_kind(objects, K::KIND, ns.as_deref());
                    for o in items {
                        o.insert(objects);
                    }
                });
                tracing::debug!(source = %source, objects = n, "listed");
                store.source_synced(&source);
            }
            Event::Apply(mut o) => {
                o.managed_fields_mut().clear();
                store.update(|objects| o.insert(objects));
            }
            Event::Delete(o) => {
                let ns = o.namespace().unwrap_or_default();
                let name = o.name_any();
                store.update(|objects| objects.remove(K::KIND, &ns, &name));
            }
        }
    }
}

/// A `kube::runtime::watcher` stream of `api` that retries its errors itself, so it yields
/// only events (and ends only if the watcher does).
///
/// Errors are logged (naming `source`) and retried with client-go's backoff (0.8 s doubling to
/// 30 s, jittered, reset by the next event), except an expired resource version (`410 Gone`)
/// after an event or another error: the API server answered, so the watcher re-lists at once
/// instead of waiting out a backoff that grew while the server was unreachable (which made a
/// controller lag up to 30 s behind an API server that had come back).
pub fn watch_retrying<K>(
    api: Api<K>,
    config: watcher::Config,
    source: String,
) -> BoxStream<'static, Event<K>>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    struct State<K> {
        inner: BoxStream<'static, watcher::Result<Event<K>>>,
        backoff: watcher::DefaultBackoff,
        /// The last error was an expired watch retried at once (the next one waits).
        expired_retried: bool,
        source: String,
    }
    let state = State {
        inner: watcher::watcher(api, config).boxed(),
        backoff: watcher::DefaultBackoff::default(),
        expired_retried: false,
        source,
    };
    futures::stream::unfold(state, |mut st| async move {
        loop {
            match st.inner.next().await? {
                Ok(ev) => {
                    st.backoff.reset();
                    st.expired_retried = false;
                    return Some((ev, st));
                }
                Err(e) => {
                    let wait = if is_expired(&e) && !st.expired_retried {
                        st.expired_retried = true;
                        tracing::info!(source = %st.source, error = %e, "watch expired; re-listing");
                        Duration::ZERO
                    } else {
                        st.expired_retried = false;
                        let wait = st.backoff.next().unwrap_or(Duration::from_secs(30));
                        tracing::warn!(source = %st.source, error = %e, retry_in = ?wait, "watch error; retrying");
                        wait
                    };
                    tokio::time::sleep(wait).await;
                }
            }
        }
    })
    .boxed()
}

/// Whether a watcher error says that the resource version expired (`410 Gone`): the watcher
/// re-lists next.
fn is_expired(e: &watcher::Error) -> bool {
    match e {
        watcher::Error::WatchError(s) => s.code == 410,
        watcher::Error::InitialListFailed(kube::Error::Api(s))
        | watcher::Error::WatchStartFailed(kube::Error::Api(s))
        | watcher::Error::WatchFailed(kube::Error::Api(s)) => s.code == 410,
        _ => false,
    }
}

fn spawn<K>(
    tasks: &mut Vec<tokio::task::JoinHandle<()>>,
    api: Api<K>,
    config: watcher::Config,
    store: &Arc<Store>,
    ns: Option<String>,
    shutdown: &watch::Receiver<bool>,
) where
    K: Resource + Insert + Clone + DeserializeOwned + Debug + Send + 'static,
{
    let source = format!("{}/{}", K::KIND.as_str(), ns.as_deref().unwrap_or("*"));
    store.register_source(&source);
    tasks.push(tokio::spawn(run(
        api,
        config,
        store.clone(),
        source,
        ns,
        shutdown.clone(),
    )));
}

/// Whether the IngressClassParameters CRD is served (a 404 means not installed).
async fn crd_served(client: &Client, ns: Option<&str>) -> bool {
    let ar = ingress_class_parameters_resource();
    let api: Api<DynamicObject> = match ns {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
        None => Api::all_with(client.clone(), &ar),
    };
    !matches!(
        api.list(&ListParams::default().limit(1)).await,
        Err(kube::Error::Api(e)) if e.code == 404
    )
}

/// Starts every watch; the store becomes ready when each has listed once.
pub async fn start(
    client: Client,
    scope: &WatchScope,
    store: Arc<Store>,
    shutdown: watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    let cfg = watcher::Config::default;
    let namespaces: Vec<Option<String>> = if scope.namespaces.is_empty() {
        vec![None]
    } else {
        scope.namespaces.iter().cloned().map(Some).collect()
    };
    spawn::<IngressClass>(
        &mut tasks,
        Api::all(client.clone()),
        cfg(),
        &store,
        None,
        &shutdown,
    );
    let params_served = crd_served(&client, namespaces[0].as_deref()).await;
    if !params_served {
        tracing::warn!(
            "IngressClassParameters (configuration.konghq.com/v1alpha1) is not installed; not watched"
        );
    }
    let mut secret_cfg = cfg();
    match secret_selector(scope.secret_label_selector.as_deref()) {
        Ok(Some(sel)) => secret_cfg = secret_cfg.labels(&sel),
        Ok(None) => {}
        // Checked at start (start_cluster); not reached.
        Err(e) => tracing::error!(error = %e, "Secret label selector ignored"),
    }
    for ns in namespaces {
        fn api<K>(client: &Client, ns: &Option<String>) -> Api<K>
        where
            K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
            <K as Resource>::DynamicType: Default,
        {
            match ns {
                Some(ns) => Api::namespaced(client.clone(), ns),
                None => Api::all(client.clone()),
            }
        }
        spawn::<Ingress>(
            &mut tasks,
            api(&client, &ns),
            cfg(),
            &store,
            ns.clone(),
            &shutdown,
        );
        spawn::<Service>(
            &mut tasks,
            api(&client, &ns),
            cfg(),
            &store,
            ns.clone(),
            &shutdown,
        );
        spawn::<EndpointSlice>(
            &mut tasks,
            api(&client, &ns),
            cfg(),
            &store,
            ns.clone(),
            &shutdown,
        );
        spawn::<Secret>(
            &mut tasks,
            api(&client, &ns),
            secret_cfg.clone(),
            &store,
            ns.clone(),
            &shutdown,
        );
        if params_served {
            let ar = ingress_class_parameters_resource();
            let api: Api<DynamicObject> = match &ns {
                Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
                None => Api::all_with(client.clone(), &ar),
            };
            spawn::<DynamicObject>(&mut tasks, api, cfg(), &store, ns.clone(), &shutdown);
        }
    }
    tasks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_label_selector_is_a_label_key_set_to_true() {
        assert_eq!(
            secret_selector(Some("konghq.com/secret"))
                .unwrap()
                .as_deref(),
            Some("konghq.com/secret=true")
        );
        assert_eq!(
            secret_selector(Some("managed")).unwrap().as_deref(),
            Some("managed=true")
        );
        assert_eq!(secret_selector(Some("")).unwrap(), None);
        assert_eq!(secret_selector(None).unwrap(), None);
        for bad in ["a=b", "a,b", "!a", "a b", "Upper.Case/x", "/x"] {
            assert!(secret_selector(Some(bad)).is_err(), "{bad}");
        }
    }
}
