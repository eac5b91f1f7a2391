//! The control plane behaves like a real Kubernetes API: objects, watches, status subresources,
//! CRD validation, Leases and clean teardown.
// Test code: helpers outside #[test] functions may unwrap too.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{eventually, within};
use futures::StreamExt as _;
use k8s_openapi::ByteString;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{Secret, Service, ServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, HTTPIngressRuleValue, Ingress, IngressBackend, IngressClass, IngressClassSpec,
    IngressRule, IngressServiceBackend, IngressSpec, IngressTLS, ServiceBackendPort,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams,
};
use kube::runtime::watcher;
use kube::{Client, ResourceExt as _};
use serde_json::json;
use silverback_envtest::{ControlPlane, GatewayApiChannel};
use tokio::sync::mpsc;

fn meta(name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        ..ObjectMeta::default()
    }
}

fn widget_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("test.silverback.dev", "v1", "Widget"),
        "widgets",
    )
}

/// What a watch saw: (kind, name, a summary of the interesting field).
type Seen = (String, String, String);

/// Watches `ar` in `ns` (or cluster-wide) and reports every applied object on `tx`, with
/// `summary` extracting the field the test waits for.
fn watch(
    client: &Client,
    ar: ApiResource,
    ns: Option<&str>,
    tx: mpsc::UnboundedSender<Seen>,
    summary: fn(&DynamicObject) -> String,
) -> tokio::task::JoinHandle<()> {
    let api: Api<DynamicObject> = match ns {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
        None => Api::all_with(client.clone(), &ar),
    };
    let kind = ar.kind.clone();
    tokio::spawn(async move {
        let mut stream = watcher(api, watcher::Config::default()).boxed();
        while let Some(event) = stream.next().await {
            match event {
                Ok(watcher::Event::Apply(obj) | watcher::Event::InitApply(obj)) => {
                    let _ = tx.send((kind.clone(), obj.name_any(), summary(&obj)));
                }
                Ok(_) => {}
                // A watch error is not final: the watcher lists again on the next poll (an
                // apiserver may answer 410 Expired to a watch started just after a list, e.g.
                // while the watch cache of a new CRD catches up). Whether the objects arrive
                // is what `expect_seen` checks.
                Err(e) => {
                    eprintln!("watch of {kind}: {e}; listing again");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    })
}

/// Waits until the watches reported every `(kind, name, summary)` in `want` (30 s limit).
async fn expect_seen(rx: &mut mpsc::UnboundedReceiver<Seen>, want: &[(&str, &str, &str)]) {
    let mut missing: Vec<Seen> = want
        .iter()
        .map(|(k, n, s)| ((*k).to_owned(), (*n).to_owned(), (*s).to_owned()))
        .collect();
    within(30, "watch events", async {
        while !missing.is_empty() {
            let seen = rx.recv().await.expect("watch channel closed");
            missing.retain(|m| *m != seen);
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_watches_status_crds_and_leases() {
    let started = Instant::now();
    let cp = ControlPlane::builder()
        .gateway_api_crds(GatewayApiChannel::Standard)
        .crds(
            Path::new(
                &std::env::var("CARGO_MANIFEST_DIR")
                    .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string()),
            )
            .join("tests/data/widgets.yaml"),
        )
        .start()
        .await
        .expect("control plane starts");
    eprintln!(
        "control plane with Gateway API + test CRDs ready in {:.2} s",
        started.elapsed().as_secs_f64()
    );
    let client = cp.client();

    // The Gateway API CRDs from the module cache are served.
    let gwc = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("gateway.networking.k8s.io", "v1", "GatewayClass"),
        "gatewayclasses",
    );
    let gwcs: Api<DynamicObject> = Api::all_with(client.clone(), &gwc);
    let class: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "GatewayClass",
        "metadata": {"name": "silverback"},
        "spec": {"controllerName": "silverback.dev/gateway-controller"},
    }))
    .unwrap();
    gwcs.create(&PostParams::default(), &class).await.unwrap();

    let ns = cp.create_namespace("objects").await.unwrap();
    assert!(ns.starts_with("objects-"));

    // Watch everything before creating it.
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut watches = vec![
        watch(
            &client,
            ApiResource::erase::<k8s_openapi::api::core::v1::Namespace>(&()),
            None,
            tx.clone(),
            |_| String::new(),
        ),
        watch(
            &client,
            ApiResource::erase::<Service>(&()),
            Some(&ns),
            tx.clone(),
            |o| {
                o.data["spec"]["clusterIP"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned()
            },
        ),
        watch(
            &client,
            ApiResource::erase::<EndpointSlice>(&()),
            Some(&ns),
            tx.clone(),
            |o| {
                o.data["endpoints"][0]["addresses"][0]
                    .as_str()
                    .unwrap_or("")
                    .to_owned()
            },
        ),
        watch(
            &client,
            ApiResource::erase::<Secret>(&()),
            Some(&ns),
            tx.clone(),
            |o| o.data["type"].as_str().unwrap_or("").to_owned(),
        ),
        watch(
            &client,
            ApiResource::erase::<Ingress>(&()),
            Some(&ns),
            tx.clone(),
            |o| {
                o.data["status"]["loadBalancer"]["ingress"][0]["ip"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned()
            },
        ),
        watch(
            &client,
            ApiResource::erase::<IngressClass>(&()),
            None,
            tx.clone(),
            |o| {
                o.data["spec"]["controller"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned()
            },
        ),
        watch(&client, widget_resource(), Some(&ns), tx.clone(), |o| {
            format!(
                "size={} ready={}",
                o.data["spec"]["size"], o.data["status"]["ready"]
            )
        }),
    ];
    let pp = PostParams::default();

    // Service: the API server allocates a ClusterIP from --service-cluster-ip-range.
    let services: Api<Service> = Api::namespaced(client.clone(), &ns);
    let svc = services
        .create(
            &pp,
            &Service {
                metadata: meta("web"),
                spec: Some(ServiceSpec {
                    ports: Some(vec![ServicePort {
                        name: Some("http".into()),
                        port: 80,
                        target_port: Some(IntOrString::Int(8080)),
                        ..ServicePort::default()
                    }]),
                    ..ServiceSpec::default()
                }),
                ..Service::default()
            },
        )
        .await
        .unwrap();
    let cluster_ip = svc.spec.unwrap().cluster_ip.unwrap();
    assert!(cluster_ip.starts_with("10.0.0."), "ClusterIP {cluster_ip}");

    // EndpointSlice: a non-loopback address is accepted, a loopback one is rejected.
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), &ns);
    let slice = |name: &str, ip: &str| EndpointSlice {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            labels: Some(BTreeMap::from([(
                "kubernetes.io/service-name".to_owned(),
                "web".to_owned(),
            )])),
            ..ObjectMeta::default()
        },
        address_type: "IPv4".into(),
        endpoints: vec![Endpoint {
            addresses: vec![ip.to_owned()],
            conditions: Some(EndpointConditions {
                ready: Some(true),
                ..EndpointConditions::default()
            }),
            ..Endpoint::default()
        }],
        ports: Some(vec![EndpointPort {
            name: Some("http".into()),
            port: Some(8080),
            protocol: Some("TCP".into()),
            ..EndpointPort::default()
        }]),
    };
    slices
        .create(&pp, &slice("web-1", "10.213.0.2"))
        .await
        .unwrap();
    match slices.create(&pp, &slice("web-loop", "127.0.0.1")).await {
        Err(kube::Error::Api(e)) => assert_eq!(e.code, 422, "{e:?}"),
        other => panic!("a loopback endpoint must be rejected, got {other:?}"),
    }

    // Secret.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    secrets
        .create(
            &pp,
            &Secret {
                metadata: meta("web-tls"),
                type_: Some("kubernetes.io/tls".into()),
                data: Some(BTreeMap::from([
                    ("tls.crt".to_owned(), ByteString(b"cert".to_vec())),
                    ("tls.key".to_owned(), ByteString(b"key".to_vec())),
                ])),
                ..Secret::default()
            },
        )
        .await
        .unwrap();

    // IngressClass and Ingress.
    let classes: Api<IngressClass> = Api::all(client.clone());
    classes
        .create(
            &pp,
            &IngressClass {
                metadata: meta("silverback"),
                spec: Some(IngressClassSpec {
                    controller: Some("silverback.dev/ingress-controller".into()),
                    ..IngressClassSpec::default()
                }),
            },
        )
        .await
        .unwrap();
    let ingresses: Api<Ingress> = Api::namespaced(client.clone(), &ns);
    let created = ingresses
        .create(
            &pp,
            &Ingress {
                metadata: meta("web"),
                spec: Some(IngressSpec {
                    ingress_class_name: Some("silverback".into()),
                    tls: Some(vec![IngressTLS {
                        hosts: Some(vec!["example.com".into()]),
                        secret_name: Some("web-tls".into()),
                    }]),
                    rules: Some(vec![IngressRule {
                        host: Some("example.com".into()),
                        http: Some(HTTPIngressRuleValue {
                            paths: vec![HTTPIngressPath {
                                path: Some("/".into()),
                                path_type: "Prefix".into(),
                                backend: IngressBackend {
                                    service: Some(IngressServiceBackend {
                                        name: "web".into(),
                                        port: Some(ServiceBackendPort {
                                            number: Some(80),
                                            ..ServiceBackendPort::default()
                                        }),
                                    }),
                                    ..IngressBackend::default()
                                },
                            }],
                        }),
                    }]),
                    ..IngressSpec::default()
                }),
                ..Ingress::default()
            },
        )
        .await
        .unwrap();
    let generation = created.metadata.generation;

    // Custom resource: schema validation is enforced.
    let widgets: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &widget_resource());
    let widget = |name: &str, size: serde_json::Value| -> DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": "test.silverback.dev/v1",
            "kind": "Widget",
            "metadata": {"name": name},
            "spec": {"size": size, "colour": "blue"},
        }))
        .unwrap()
    };
    widgets.create(&pp, &widget("w1", json!(3))).await.unwrap();
    match widgets.create(&pp, &widget("bad", json!(0))).await {
        Err(kube::Error::Api(e)) => {
            assert_eq!(e.code, 422, "{e:?}");
            assert!(e.message.contains("spec.size"), "{}", e.message);
        }
        other => panic!("an invalid Widget must be rejected, got {other:?}"),
    }

    expect_seen(
        &mut rx,
        &[
            ("Namespace", &ns, ""),
            ("Service", "web", &cluster_ip),
            ("EndpointSlice", "web-1", "10.213.0.2"),
            ("Secret", "web-tls", "kubernetes.io/tls"),
            (
                "IngressClass",
                "silverback",
                "silverback.dev/ingress-controller",
            ),
            ("Ingress", "web", ""),
            ("Widget", "w1", "size=3 ready=null"),
        ],
    )
    .await;

    // Status subresources: the Ingress load balancer, and the Widget's status.
    let status = json!({"status": {"loadBalancer": {"ingress": [{"ip": "10.213.0.1"}]}}});
    let updated = ingresses
        .patch_status("web", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
    assert_eq!(
        updated
            .status
            .unwrap()
            .load_balancer
            .unwrap()
            .ingress
            .unwrap()[0]
            .ip
            .as_deref(),
        Some("10.213.0.1")
    );
    assert_eq!(
        updated.metadata.generation, generation,
        "status writes keep the generation"
    );
    // The status endpoint ignores spec changes; the main endpoint ignores status changes.
    let sneaky = json!({"spec": {"size": 99}, "status": {"ready": true}});
    widgets
        .patch_status("w1", &PatchParams::default(), &Patch::Merge(&sneaky))
        .await
        .unwrap();
    widgets
        .patch(
            "w1",
            &PatchParams::default(),
            &Patch::Merge(&json!({"status": {"ready": false}})),
        )
        .await
        .unwrap();
    let w1 = widgets.get("w1").await.unwrap();
    assert_eq!(w1.data["spec"]["size"], json!(3));
    assert_eq!(w1.data["status"]["ready"], json!(true));
    expect_seen(
        &mut rx,
        &[
            ("Ingress", "web", "10.213.0.1"),
            ("Widget", "w1", "size=3 ready=true"),
        ],
    )
    .await;

    // Lease: taking it, optimistic concurrency against a competitor, renewing.
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
    let now = || MicroTime(k8s_openapi::jiff::Timestamp::now());
    let lease = leases
        .create(
            &pp,
            &Lease {
                metadata: meta("silverback-leader"),
                spec: Some(LeaseSpec {
                    holder_identity: Some("replica-a".into()),
                    lease_duration_seconds: Some(15),
                    acquire_time: Some(now()),
                    renew_time: Some(now()),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            },
        )
        .await
        .unwrap();
    // replica-a renews; replica-b, acting on the older version, must lose.
    let mut renewal = lease.clone();
    renewal.spec.as_mut().unwrap().renew_time = Some(now());
    let renewed = leases
        .replace("silverback-leader", &pp, &renewal)
        .await
        .unwrap();
    let mut takeover = lease.clone();
    takeover.spec.as_mut().unwrap().holder_identity = Some("replica-b".into());
    match leases.replace("silverback-leader", &pp, &takeover).await {
        Err(kube::Error::Api(e)) => assert_eq!(e.code, 409, "{e:?}"),
        other => panic!("a stale takeover must conflict, got {other:?}"),
    }
    assert_ne!(renewed.resource_version(), lease.resource_version());
    let current = leases.get("silverback-leader").await.unwrap();
    assert_eq!(
        current.spec.unwrap().holder_identity.as_deref(),
        Some("replica-a")
    );

    // Teardown: processes gone, directory removed.
    for w in watches.drain(..) {
        w.abort();
    }
    let (apiserver, etcd, dir) = (cp.apiserver_pid(), cp.etcd_pid(), cp.dir().to_path_buf());
    assert!(dir.join("admin.kubeconfig").is_file());
    let stopped = Instant::now();
    drop(cp);
    eprintln!(
        "control plane stopped in {:.2} s",
        stopped.elapsed().as_secs_f64()
    );
    for pid in [apiserver, etcd] {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "pid {pid} still runs"
        );
    }
    assert!(!dir.exists(), "{} still exists", dir.display());
}

#[tokio::test]
async fn bare_start_is_fast_and_the_kubeconfig_works() {
    let started = Instant::now();
    let cp = ControlPlane::start().await.expect("control plane starts");
    let took = started.elapsed();
    eprintln!("bare control plane ready in {:.2} s", took.as_secs_f64());

    // The kubeconfig file on disk is complete: a client made from it alone works.
    let text = std::fs::read_to_string(cp.kubeconfig_path()).unwrap();
    let kubeconfig: kube::config::Kubeconfig = serde_json::from_str(&text).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    let client = Client::try_from(config).unwrap();
    let version = client.apiserver_version().await.unwrap();
    assert_eq!(
        format!("v{}", silverback_envtest::Versions::pinned().kubernetes),
        version.git_version
    );

    // The default namespace is there (made by the API server itself).
    let ns = eventually(10, "namespace default", || {
        let api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
        async move { api.get_opt("default").await.ok().flatten() }
    })
    .await;
    assert_eq!(ns.name_any(), "default");
    // Budget of the issue: a warm start under 10 s (generous on a loaded 2-core machine).
    assert!(took < Duration::from_secs(20), "start took {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_server_restarts_on_the_same_port_with_the_same_data() {
    let mut cp = ControlPlane::start().await.expect("control plane starts");
    let client = cp.client();
    let ns = cp.create_namespace("restart").await.unwrap();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let mut kept = Secret {
        metadata: meta("kept"),
        ..Secret::default()
    };
    kept.string_data = Some(BTreeMap::from([("k".to_owned(), "v".to_owned())]));
    secrets.create(&PostParams::default(), &kept).await.unwrap();
    let mut gone = kept.clone();
    gone.metadata = meta("gone");
    secrets.create(&PostParams::default(), &gone).await.unwrap();
    let pid = cp.apiserver_pid();

    cp.stop_apiserver();
    assert!(!cp.apiserver_running());
    assert!(!Path::new(&format!("/proc/{pid}")).exists());
    // Down: requests fail (bounded: the client's connect fails at once).
    let down = within(10, "a request while down", secrets.get_opt("kept")).await;
    assert!(down.is_err(), "{down:?}");
    // Storage changes behind the API server's back, and is compacted.
    let deleted = cp
        .etcd_delete(&format!("/registry/secrets/{ns}/gone"))
        .await
        .unwrap();
    assert_eq!(deleted, 1);
    let compacted = cp.compact_etcd().await.unwrap();
    assert!(compacted > 0);

    cp.start_apiserver(Duration::from_secs(60)).await.unwrap();
    assert!(cp.apiserver_running());
    assert_ne!(cp.apiserver_pid(), pid);
    // The same client (same URL, certificates) reconnects; the data survived.
    let got = within(20, "get after the restart", secrets.get_opt("kept"))
        .await
        .unwrap();
    assert!(got.is_some());
    assert!(secrets.get_opt("gone").await.unwrap().is_none());
    // A watch from a resource version older than the compaction has expired.
    let stale = compacted - 1;
    let wp = kube::api::WatchParams::default().timeout(5);
    let mut stream = within(10, "watch", secrets.watch(&wp, &stale.to_string()))
        .await
        .unwrap()
        .boxed();
    let first = within(10, "first watch event", stream.next()).await;
    match first {
        Some(Ok(kube::api::WatchEvent::Error(e))) => assert_eq!(e.code, 410, "{e:?}"),
        Some(Err(kube::Error::Api(e))) => assert_eq!(e.code, 410, "{e:?}"),
        other => panic!("expected 410 Gone, got {other:?}"),
    }
    // The log of the second run is appended to the first's.
    let log = std::fs::read_to_string(cp.apiserver_log()).unwrap();
    assert!(log.len() > 100);
}
