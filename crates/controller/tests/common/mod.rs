//! Helpers shared by the controller's integration tests.
#![allow(dead_code, clippy::unwrap_used)]

use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;

/// Installs a tracing subscriber once (RUST_LOG decides).
pub fn logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,silverback_controller=info".into()),
        )
        .with_test_writer()
        .try_init();
}

/// A self-signed CA for the admin API's TLS tests: its certificate, and the issuer that signs
/// the server and client certificates.
pub fn test_ca() -> (rcgen::Certificate, rcgen::Issuer<'static, rcgen::KeyPair>) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "admin test CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    (ca_cert, rcgen::Issuer::new(ca, ca_key))
}

/// One HTTP/1.1 GET; (status, body). Errors are returned as text.
pub async fn get(addr: SocketAddr, host: &str, path: &str) -> Result<(u16, String), String> {
    let fut = async {
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| e.to_string())?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(|e| e.to_string())?;
        let conn = tokio::spawn(conn);
        let req = http::Request::get(path)
            .header(http::header::HOST, host)
            .body(Full::new(Bytes::new()))
            .map_err(|e| e.to_string())?;
        let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        conn.abort();
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    };
    tokio::time::timeout(Duration::from_secs(5), fut)
        .await
        .map_err(|_| "timed out".to_string())?
}

/// Polls `f` every 10 ms until it returns `Some`, at most `timeout`; panics with `what`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Polls until the proxy answers `path` with `status`; returns the body.
pub async fn until_status(addr: SocketAddr, host: &str, path: &str, status: u16) -> String {
    eventually(
        Duration::from_secs(20),
        &format!("{host}{path} answering {status}"),
        || async move {
            match get(addr, host, path).await {
                Ok((s, body)) if s == status => Some(body),
                _ => None,
            }
        },
    )
    .await
}

use k8s_openapi::api::core::v1::{Service, ServiceAccount};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use kube::api::{Api, PostParams};
use serde_json::{Value, json};

/// The crate's directory (read when the test runs: a test binary reused from a checkout
/// elsewhere would carry that checkout's path).
pub fn crate_dir() -> std::path::PathBuf {
    std::path::PathBuf::from(
        std::env::var("CARGO_MANIFEST_DIR")
            .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string()),
    )
}

/// The repository's top-level `deploy/` directory (the deployment manifests).
pub fn deploy_dir() -> std::path::PathBuf {
    crate_dir().join("../../deploy")
}

/// YAML documents of a file under `deploy/`, with the namespace `kong` renamed to `ns`.
pub fn deploy_docs(file: &str, ns: &str) -> Vec<Value> {
    let path = deploy_dir().join(file);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let text = text.replace("namespace: kong", &format!("namespace: {ns}"));
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text).unwrap();
    docs.into_iter().filter(|d| !d.is_null()).collect()
}

/// Creates the RBAC objects of `deploy/rbac.yaml` for namespace `ns`, with cluster-scoped
/// names suffixed by `suffix` (tests may share an API server). Skips the Namespace.
pub async fn apply_rbac(client: &kube::Client, ns: &str, suffix: &str) {
    let pp = PostParams::default();
    for mut d in deploy_docs("rbac.yaml", ns) {
        let kind = d["kind"].as_str().unwrap().to_string();
        match kind.as_str() {
            "Namespace" => {}
            "ServiceAccount" => {
                let o: ServiceAccount = serde_json::from_value(d).unwrap();
                let _ = Api::<ServiceAccount>::namespaced(client.clone(), ns)
                    .create(&pp, &o)
                    .await;
            }
            "ClusterRole" => {
                d["metadata"]["name"] = json!(format!("silverback-{suffix}"));
                let o: ClusterRole = serde_json::from_value(d).unwrap();
                Api::<ClusterRole>::all(client.clone())
                    .create(&pp, &o)
                    .await
                    .unwrap();
            }
            "ClusterRoleBinding" => {
                d["metadata"]["name"] = json!(format!("silverback-{suffix}"));
                d["roleRef"]["name"] = json!(format!("silverback-{suffix}"));
                let o: ClusterRoleBinding = serde_json::from_value(d).unwrap();
                Api::<ClusterRoleBinding>::all(client.clone())
                    .create(&pp, &o)
                    .await
                    .unwrap();
            }
            "Role" => {
                let o: Role = serde_json::from_value(d).unwrap();
                Api::<Role>::namespaced(client.clone(), ns)
                    .create(&pp, &o)
                    .await
                    .unwrap();
            }
            "RoleBinding" => {
                let o: RoleBinding = serde_json::from_value(d).unwrap();
                Api::<RoleBinding>::namespaced(client.clone(), ns)
                    .create(&pp, &o)
                    .await
                    .unwrap();
            }
            other => panic!("unexpected kind {other} in rbac.yaml"),
        }
    }
}

/// Creates the `kong` IngressClass of `deploy/ingressclass.yaml` (if missing).
pub async fn apply_ingress_class(client: &kube::Client) {
    for d in deploy_docs("ingressclass.yaml", "") {
        let o: IngressClass = serde_json::from_value(d).unwrap();
        let _ = Api::<IngressClass>::all(client.clone())
            .create(&PostParams::default(), &o)
            .await;
    }
}

/// A Service `name` (port 80 → `target`) and its EndpointSlice pointing at `addr:target`.
pub async fn service_with_endpoint(
    client: &kube::Client,
    ns: &str,
    name: &str,
    addr: &str,
    target: u16,
) {
    let pp = PostParams::default();
    let svc: Service = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": ns},
        "spec": {"ports": [{"name": "http", "port": 80, "targetPort": target}]},
    }))
    .unwrap();
    Api::<Service>::namespaced(client.clone(), ns)
        .create(&pp, &svc)
        .await
        .unwrap();
    let slice: EndpointSlice = serde_json::from_value(json!({
        "metadata": {"name": format!("{name}-1"), "namespace": ns,
                     "labels": {"kubernetes.io/service-name": name}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": target, "protocol": "TCP"}],
        "endpoints": [{"addresses": [addr], "conditions": {"ready": true}}],
    }))
    .unwrap();
    Api::<EndpointSlice>::namespaced(client.clone(), ns)
        .create(&pp, &slice)
        .await
        .unwrap();
}

/// An Ingress of class `kong` routing `path` (Prefix unless it starts with `/~`) to `svc:80`.
pub fn ingress(ns: &str, name: &str, path: &str, svc: &str) -> Ingress {
    let path_type = if path.starts_with("/~") {
        "ImplementationSpecific"
    } else {
        "Prefix"
    };
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": ns},
        "spec": {"ingressClassName": "kong", "rules": [{"http": {"paths": [
            {"path": path, "pathType": path_type,
             "backend": {"service": {"name": svc, "port": {"number": 80}}}}
        ]}}]},
    }))
    .unwrap()
}

/// Sets the first path of Ingress `name`.
pub async fn set_path(client: &kube::Client, ns: &str, name: &str, path: &str) {
    let api = Api::<Ingress>::namespaced(client.clone(), ns);
    let patch = json!({"spec": {"rules": [{"http": {"paths": [
        {"path": path, "pathType": "Prefix",
         "backend": {"service": {"name": "echo", "port": {"number": 80}}}}
    ]}}]}});
    api.patch(
        name,
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(&patch),
    )
    .await
    .unwrap();
}

/// Events (events.k8s.io/v1) about `kind/name` in `ns` with `reason`.
pub async fn events_for(
    client: &kube::Client,
    ns: &str,
    kind: &str,
    name: &str,
    reason: &str,
) -> Vec<k8s_openapi::api::events::v1::Event> {
    let api: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), ns);
    api.list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| {
            e.reason.as_deref() == Some(reason)
                && e.regarding.as_ref().is_some_and(|r| {
                    r.kind.as_deref() == Some(kind) && r.name.as_deref() == Some(name)
                })
        })
        .collect()
}

/// Starts a control plane (with `deploy/crds.yaml` when `crds`), one start at a time within
/// the test binary: concurrent starts race in the harness's sweep of stale directories (an
/// owner file read while empty is taken for a dead owner).
pub async fn start_control_plane(crds: bool) -> silverback_envtest::ControlPlane {
    static STARTING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _one = STARTING.lock().await;
    let mut b = silverback_envtest::ControlPlane::builder();
    if crds {
        b = b.crds(deploy_dir().join("crds.yaml"));
    }
    b.start().await.unwrap()
}
