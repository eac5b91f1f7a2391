//! Cluster mode against a real kube-apiserver, the controller running under the
//! ServiceAccount and RBAC of `deploy/rbac.yaml`, pushing to an in-process gateway whose
//! backend lives in a network namespace.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::json;
use silverback_controller::{
    ControllerOptions, DataPlaneTarget, InProcessTarget, KubeArgs, SyncArgs,
};
use silverback_envtest::netns::NetNs;
use silverback_proxy::{Gateway, ListenerKind, Settings};

fn expired_ca_pem() -> String {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.not_before = rcgen::date_time_ymd(2000, 1, 1);
    params.not_after = rcgen::date_time_ymd(2001, 1, 1);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "expired test CA");
    let key = rcgen::KeyPair::generate().unwrap();
    params.self_signed(&key).unwrap().pem()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingresses_are_served_updated_and_removed_under_the_shipped_rbac() {
    common::logs();
    let cp = start_control_plane(true).await;
    let admin = cp.client();
    let app = cp.create_namespace("app").await.unwrap();
    let kong = cp.create_namespace("kong").await.unwrap();
    apply_rbac(&admin, &kong, "t1").await;
    apply_ingress_class(&admin).await;
    let sa = cp
        .service_account_identity(&kong, "silverback")
        .await
        .unwrap();
    let sa_client = sa.client().unwrap();

    // A backend reachable only through a non-loopback address, as in a cluster.
    let net = NetNs::create().unwrap();
    let _echo = net.spawn_echo(8080, "backend-a").unwrap();
    service_with_endpoint(&admin, &app, "echo", &net.addr().to_string(), 8080).await;
    let ingresses: Api<Ingress> = Api::namespaced(admin.clone(), &app);
    let pp = PostParams::default();
    ingresses
        .create(&pp, &ingress(&app, "web", "/a", "echo"))
        .await
        .unwrap();
    ingresses
        .create(&pp, &ingress(&app, "other", "/other", "echo"))
        .await
        .unwrap();

    // The controller, as the ServiceAccount, with an in-process gateway.
    let settings = Settings::loopback();
    let (flavor, plugins) = (settings.router_flavor, settings.plugins.clone());
    let gw = Arc::new(Gateway::start(settings, None).await.unwrap());
    let proxy = gw.addr(ListenerKind::Proxy, false).unwrap();
    let target: Arc<dyn DataPlaneTarget> =
        Arc::new(InProcessTarget::new(gw.clone(), flavor, plugins));
    let opts = ControllerOptions {
        sync: SyncArgs {
            health_probe_bind_address: "127.0.0.1:0".into(),
            ..SyncArgs::default()
        },
        kube: KubeArgs {
            publish_status_address: vec!["198.51.100.7".into()],
            pod_name: Some("silverback-0".into()),
            pod_namespace: Some(kong.clone()),
            ..KubeArgs::default()
        },
        ..ControllerOptions::default()
    };
    let ctl = silverback_controller::start_cluster(sa_client, &opts, vec![target])
        .await
        .unwrap();

    // Served.
    let body = until_status(proxy, "x.test", "/a", 200).await;
    assert!(body.contains("backend-a"), "{body}");
    until_status(proxy, "x.test", "/other", 200).await;

    // A Normal Event on the controller's Pod for the accepted configuration.
    eventually(Duration::from_secs(15), "success Event on the Pod", || {
        let c = admin.clone();
        let ns = kong.clone();
        async move {
            let ev = events_for(&c, &ns, "Pod", "silverback-0", "KongConfigurationSucceeded").await;
            ev.first()
                .map(|e| assert_eq!(e.type_.as_deref(), Some("Normal")))
        }
    })
    .await;

    // Status of the configured Ingresses.
    eventually(Duration::from_secs(15), "Ingress status", || {
        let api = ingresses.clone();
        async move {
            let i = api.get("web").await.ok()?;
            let lb = i.status?.load_balancer?.ingress?;
            (lb.len() == 1 && lb[0].ip.as_deref() == Some("198.51.100.7")).then_some(())
        }
    })
    .await;

    // Update the path: the change is served, the old path is not.
    let t0 = Instant::now();
    set_path(&admin, &app, "web", "/b").await;
    until_status(proxy, "x.test", "/b", 200).await;
    eprintln!("cluster mode, Ingress update -> served: {:?}", t0.elapsed());
    until_status(proxy, "x.test", "/a", 404).await;

    // A broken Ingress (invalid regex): a Warning Event on it, the others keep being served
    // and updated.
    ingresses
        .create(&pp, &ingress(&app, "broken", "/~/[", "echo"))
        .await
        .unwrap();
    eventually(Duration::from_secs(15), "translation Warning Event", || {
        let c = admin.clone();
        let ns = app.clone();
        async move {
            let ev = events_for(
                &c,
                &ns,
                "Ingress",
                "broken",
                "KongConfigurationTranslationFailed",
            )
            .await;
            ev.first()
                .map(|e| assert_eq!(e.type_.as_deref(), Some("Warning")))
        }
    })
    .await;
    set_path(&admin, &app, "web", "/c").await;
    until_status(proxy, "x.test", "/c", 200).await;
    assert_eq!(get(proxy, "x.test", "/other").await.unwrap().0, 200);

    // A Secret the data plane rejects (an expired CA certificate the translator passes on):
    // the data plane's flattened error maps back to the Secret through its tags, it gets a
    // Warning Event, and the rest is pushed without it (fallback).
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), &app);
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "old-ca", "namespace": app, "labels": {"konghq.com/ca-cert": "true"}},
        "stringData": {"cert": expired_ca_pem()},
    }))
    .unwrap();
    secrets.create(&pp, &secret).await.unwrap();
    set_path(&admin, &app, "web", "/d").await;
    until_status(proxy, "x.test", "/d", 200).await;
    eventually(
        Duration::from_secs(15),
        "apply Warning Event on the Secret",
        || {
            let c = admin.clone();
            let ns = app.clone();
            async move {
                let ev =
                    events_for(&c, &ns, "Secret", "old-ca", "KongConfigurationApplyFailed").await;
                ev.first().map(|e| {
                    let note = e.note.clone().unwrap_or_default();
                    assert!(note.contains("expired"), "{note}");
                })
            }
        },
    )
    .await;
    assert!(gw.config().ca_certificates.is_empty());
    assert!(
        ctl.metrics
            .total(silverback_controller::metrics::FALLBACK_PUSH_COUNT)
            >= 1.0
    );

    // Delete: 404, and the status is no longer ours to keep.
    ingresses
        .delete("web", &DeleteParams::default())
        .await
        .unwrap();
    until_status(proxy, "x.test", "/d", 404).await;
    assert_eq!(get(proxy, "x.test", "/other").await.unwrap().0, 200);

    // An Ingress moved to another class is no longer configured but keeps the status we
    // wrote: as KIC, status is only ever set, never emptied.
    let patch = json!({"spec": {"ingressClassName": "someone-else"}});
    ingresses
        .patch(
            "other",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await
        .unwrap();
    until_status(proxy, "x.test", "/other", 404).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let lb = ingresses
        .get("other")
        .await
        .unwrap()
        .status
        .and_then(|s| s.load_balancer)
        .and_then(|l| l.ingress)
        .unwrap_or_default();
    assert_eq!(lb.len(), 1, "{lb:?}");

    ctl.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingress_class_parameters_and_namespace_scope_are_honoured() {
    common::logs();
    let cp = start_control_plane(true).await;
    let admin = cp.client();
    let watched = cp.create_namespace("watched").await.unwrap();
    let other = cp.create_namespace("other").await.unwrap();
    // Our IngressClass points at IngressClassParameters asking for service-upstream targets.
    let class: k8s_openapi::api::networking::v1::IngressClass = serde_json::from_value(json!({
        "metadata": {"name": "kong"},
        "spec": {"controller": "ingress-controllers.konghq.com/kong",
                 "parameters": {"apiGroup": "configuration.konghq.com", "kind": "IngressClassParameters",
                                "name": "params", "namespace": watched, "scope": "Namespace"}},
    }))
    .unwrap();
    Api::<k8s_openapi::api::networking::v1::IngressClass>::all(admin.clone())
        .create(&PostParams::default(), &class)
        .await
        .unwrap();
    let ar = silverback_controller::kube_source::ingress_class_parameters_resource();
    let params: kube::api::DynamicObject = serde_json::from_value(json!({
        "apiVersion": "configuration.konghq.com/v1alpha1",
        "kind": "IngressClassParameters",
        "metadata": {"name": "params", "namespace": watched},
        "spec": {"serviceUpstream": true},
    }))
    .unwrap();
    Api::<kube::api::DynamicObject>::namespaced_with(admin.clone(), &watched, &ar)
        .create(&PostParams::default(), &params)
        .await
        .unwrap();
    for ns in [&watched, &other] {
        service_with_endpoint(&admin, ns, "echo", "192.0.2.20", 8080).await;
        Api::<Ingress>::namespaced(admin.clone(), ns)
            .create(
                &PostParams::default(),
                &ingress(ns, "web", &format!("/{ns}"), "echo"),
            )
            .await
            .unwrap();
    }

    let gw = Arc::new(Gateway::start(Settings::loopback(), None).await.unwrap());
    let settings = Settings::loopback();
    let target: Arc<dyn DataPlaneTarget> = Arc::new(InProcessTarget::new(
        gw.clone(),
        settings.router_flavor,
        settings.plugins.clone(),
    ));
    let opts = ControllerOptions {
        kube: KubeArgs {
            watch_namespace: vec![watched.clone()],
            ..KubeArgs::default()
        },
        ..ControllerOptions::default()
    };
    let ctl = silverback_controller::start_cluster(admin.clone(), &opts, vec![target])
        .await
        .unwrap();
    let o = ctl
        .wait_outcome(Duration::from_secs(20), |o| !o.configured.is_empty())
        .await
        .unwrap();
    assert_eq!(o.configured.len(), 1, "{:?}", o.configured);
    assert_eq!(o.configured[0].namespace, watched);
    let doc = gw.config().to_json(false);
    // The target is the Service's DNS name (serviceUpstream), not the endpoint.
    assert!(doc.contains(&format!("echo.{watched}.svc:80")), "{doc}");
    assert!(!doc.contains("192.0.2.20"), "{doc}");
    assert!(!doc.contains(&format!("/{other}")), "{doc}");

    // Turning the parameter off switches to endpoints.
    let patch = json!({"spec": {"serviceUpstream": false}});
    Api::<kube::api::DynamicObject>::namespaced_with(admin.clone(), &watched, &ar)
        .patch(
            "params",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await
        .unwrap();
    eventually(Duration::from_secs(10), "endpoint targets", || {
        let doc = gw.config().to_json(false);
        async move { doc.contains("192.0.2.20:8080").then_some(()) }
    })
    .await;
    ctl.shutdown().await;
}

/// `status.loadBalancer.ingress` of Ingress `name` (empty when unset).
async fn lb_status(
    api: &Api<Ingress>,
    name: &str,
) -> Vec<k8s_openapi::api::networking::v1::IngressLoadBalancerIngress> {
    api.get(name)
        .await
        .unwrap()
        .status
        .and_then(|s| s.load_balancer)
        .and_then(|l| l.ingress)
        .unwrap_or_default()
}

/// The controller with an in-process gateway, publishing the addresses of `ns/publish`.
async fn with_publish_service(
    client: kube::Client,
    ns: &str,
    publish: &str,
) -> (silverback_controller::Controller, Arc<Gateway>) {
    let settings = Settings::loopback();
    let (flavor, plugins) = (settings.router_flavor, settings.plugins.clone());
    let gw = Arc::new(Gateway::start(settings, None).await.unwrap());
    let target: Arc<dyn DataPlaneTarget> =
        Arc::new(InProcessTarget::new(gw.clone(), flavor, plugins));
    let opts = ControllerOptions {
        kube: KubeArgs {
            publish_service: Some((ns.to_string(), publish.to_string())),
            ..KubeArgs::default()
        },
        ..ControllerOptions::default()
    };
    let ctl = silverback_controller::start_cluster(client, &opts, vec![target])
        .await
        .unwrap();
    (ctl, gw)
}

/// A proxy Service of `type_` named `name`.
async fn proxy_service(client: &kube::Client, ns: &str, name: &str, type_: &str) -> Service {
    let svc: Service = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": ns},
        "spec": {"type": type_, "ports": [{"name": "http", "port": 80, "targetPort": 8000}]},
    }))
    .unwrap();
    Api::<Service>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &svc)
        .await
        .unwrap()
}

/// Ingress status is not wiped when the publish Service cannot be read: nothing is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingress_status_stays_when_the_publish_service_goes_away() {
    common::logs();
    let cp = start_control_plane(false).await;
    let admin = cp.client();
    let ns = cp.create_namespace("keep").await.unwrap();
    apply_ingress_class(&admin).await;
    service_with_endpoint(&admin, &ns, "echo", "192.0.2.40", 8080).await;
    let svc = proxy_service(&admin, &ns, "kong-proxy", "ClusterIP").await;
    let cluster_ip = svc.spec.unwrap().cluster_ip.unwrap();
    let ingresses: Api<Ingress> = Api::namespaced(admin.clone(), &ns);
    ingresses
        .create(&PostParams::default(), &ingress(&ns, "web", "/k", "echo"))
        .await
        .unwrap();
    let (ctl, _gw) = with_publish_service(admin.clone(), &ns, "kong-proxy").await;
    eventually(Duration::from_secs(15), "status with the ClusterIP", || {
        let api = ingresses.clone();
        let ip = cluster_ip.clone();
        async move {
            let lb = lb_status(&api, "web").await;
            (lb.len() == 1 && lb[0].ip.as_deref() == Some(ip.as_str())).then_some(())
        }
    })
    .await;

    // The publish Service goes away; a sync follows (a new Ingress).
    Api::<Service>::namespaced(admin.clone(), &ns)
        .delete("kong-proxy", &DeleteParams::default())
        .await
        .unwrap();
    ingresses
        .create(
            &PostParams::default(),
            &ingress(&ns, "second", "/k2", "echo"),
        )
        .await
        .unwrap();
    ctl.wait_outcome(Duration::from_secs(15), |o| {
        o.configured.iter().any(|r| r.name == "second")
    })
    .await
    .expect("the second Ingress configured");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let lb = lb_status(&ingresses, "web").await;
    assert_eq!(lb.len(), 1, "{lb:?}");
    assert_eq!(lb[0].ip.as_deref(), Some(cluster_ip.as_str()));
    assert!(lb_status(&ingresses, "second").await.is_empty());
    ctl.shutdown().await;
}

/// A LoadBalancer publish Service whose load balancer is pending (envtest has no load
/// balancer controller) publishes nothing, not its ClusterIP; once the load balancer has an
/// address (an IP and a host name), both are published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_load_balancer_publishes_nothing() {
    common::logs();
    let cp = start_control_plane(false).await;
    let admin = cp.client();
    let ns = cp.create_namespace("lb").await.unwrap();
    apply_ingress_class(&admin).await;
    service_with_endpoint(&admin, &ns, "echo", "192.0.2.50", 8080).await;
    proxy_service(&admin, &ns, "kong-proxy", "LoadBalancer").await;
    let ingresses: Api<Ingress> = Api::namespaced(admin.clone(), &ns);
    ingresses
        .create(&PostParams::default(), &ingress(&ns, "web", "/lb", "echo"))
        .await
        .unwrap();
    let (ctl, _gw) = with_publish_service(admin.clone(), &ns, "kong-proxy").await;
    ctl.wait_outcome(Duration::from_secs(15), |o| !o.configured.is_empty())
        .await
        .expect("configured");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(lb_status(&ingresses, "web").await.is_empty());

    // The load balancer gets its address; the next sync (a new Ingress) publishes it.
    let patch = json!({"status": {"loadBalancer": {"ingress": [
        {"ip": "198.51.100.20", "hostname": "lb.example.com"}]}}});
    Api::<Service>::namespaced(admin.clone(), &ns)
        .patch_status(
            "kong-proxy",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await
        .unwrap();
    ingresses
        .create(
            &PostParams::default(),
            &ingress(&ns, "second", "/lb2", "echo"),
        )
        .await
        .unwrap();
    eventually(
        Duration::from_secs(15),
        "the load balancer's addresses",
        || {
            let api = ingresses.clone();
            async move {
                let lb = lb_status(&api, "web").await;
                (lb.len() == 2
                    && lb[0].ip.as_deref() == Some("198.51.100.20")
                    && lb[1].hostname.as_deref() == Some("lb.example.com"))
                .then_some(())
            }
        },
    )
    .await;
    ctl.shutdown().await;
}

/// A CA certificate Secret (label `konghq.com/ca-cert`) with `labels` added.
fn ca_secret(ns: &str, name: &str, labels: serde_json::Value) -> Secret {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(2090, 1, 1);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    let key = rcgen::KeyPair::generate().unwrap();
    let mut l = labels;
    l["konghq.com/ca-cert"] = json!("true");
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": ns, "labels": l},
        "stringData": {"cert": params.self_signed(&key).unwrap().pem()},
    }))
    .unwrap()
}

/// `--secret-label-selector KEY` reads only the Secrets whose label KEY is `true`, as in KIC
/// (the value is a label key, not a selector).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_label_selector_reads_secrets_labelled_true_only() {
    common::logs();
    let cp = start_control_plane(false).await;
    let admin = cp.client();
    let ns = cp.create_namespace("sel").await.unwrap();
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), &ns);
    let pp = PostParams::default();
    for (name, labels) in [
        ("yes", json!({"example.com/ingest": "true"})),
        ("no", json!({"example.com/ingest": "false"})),
        ("unlabelled", json!({})),
    ] {
        secrets
            .create(&pp, &ca_secret(&ns, name, labels))
            .await
            .unwrap();
    }
    let gw = Arc::new(Gateway::start(Settings::loopback(), None).await.unwrap());
    let settings = Settings::loopback();
    let target: Arc<dyn DataPlaneTarget> = Arc::new(InProcessTarget::new(
        gw.clone(),
        settings.router_flavor,
        settings.plugins.clone(),
    ));
    let opts = ControllerOptions {
        kube: KubeArgs {
            secret_label_selector: Some("example.com/ingest".into()),
            ..KubeArgs::default()
        },
        ..ControllerOptions::default()
    };
    let ctl = silverback_controller::start_cluster(admin.clone(), &opts, vec![target.clone()])
        .await
        .unwrap();
    ctl.wait_outcome(Duration::from_secs(20), |o| o.pushes > 0)
        .await
        .expect("pushed");
    let names: Vec<String> = ctl
        .store
        .read(|o| o.secrets.keys().map(|(_, n)| n.clone()).collect());
    assert_eq!(names, ["yes"]);
    assert_eq!(gw.config().ca_certificates.len(), 1);
    ctl.shutdown().await;

    // A selector where a label key is expected is refused at start.
    let bad = ControllerOptions {
        kube: KubeArgs {
            secret_label_selector: Some("example.com/ingest=true".into()),
            ..KubeArgs::default()
        },
        ..ControllerOptions::default()
    };
    let e = silverback_controller::start_cluster(admin.clone(), &bad, vec![target])
        .await
        .unwrap_err();
    assert!(format!("{e}").contains("label key"), "{e}");
}
