//! ServiceAccount identities are subject to RBAC: denied before a Role is bound, allowed after,
//! and only for what the Role grants.
// Test code: helpers outside #[test] functions may unwrap too.
#![allow(clippy::unwrap_used)]

mod common;

use common::eventually;
use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Client;
use kube::api::{Api, ListParams, PostParams};
use silverback_envtest::{ControlPlane, Identity};

async fn whoami(client: &Client) -> (String, Vec<String>) {
    let api: Api<SelfSubjectReview> = Api::all(client.clone());
    let review = api
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await
        .unwrap();
    let user = review.status.unwrap().user_info.unwrap();
    (user.username.unwrap(), user.groups.unwrap_or_default())
}

async fn list_services(client: &Client, ns: &str) -> Result<usize, u16> {
    let api: Api<Service> = Api::namespaced(client.clone(), ns);
    match api.list(&ListParams::default()).await {
        Ok(list) => Ok(list.items.len()),
        Err(kube::Error::Api(e)) => Err(e.code),
        Err(e) => panic!("unexpected error: {e}"),
    }
}

#[tokio::test]
async fn service_account_identities_are_denied_until_a_role_is_bound() {
    let cp = ControlPlane::start().await.expect("control plane starts");
    let ns = cp.create_namespace("rbac").await.unwrap();

    // Two ways to be the ServiceAccount: a TokenRequest token and a client certificate.
    let by_token: Identity = cp
        .service_account_identity(&ns, "controller")
        .await
        .unwrap();
    let by_cert: Identity = cp.service_account_cert_identity(&ns, "controller").unwrap();
    let expected_user = format!("system:serviceaccount:{ns}:controller");
    assert!(by_token.token().is_some());
    // Like a Pod's, the identities' default namespace is the ServiceAccount's.
    for id in [&by_token, &by_cert] {
        let ctx = id.kubeconfig().contexts[0].context.as_ref().unwrap();
        assert_eq!(ctx.namespace.as_deref(), Some(ns.as_str()));
    }
    assert!(by_token.kubeconfig_path().is_file() && by_cert.kubeconfig_path().is_file());
    let token_client = by_token.client().unwrap();
    let cert_client = by_cert.client().unwrap();
    for client in [&token_client, &cert_client] {
        let (user, groups) = whoami(client).await;
        assert_eq!(user, expected_user);
        for g in [
            "system:serviceaccounts",
            &format!("system:serviceaccounts:{ns}"),
        ] {
            assert!(groups.iter().any(|x| x == g), "{g} missing in {groups:?}");
        }
    }

    // Nothing is bound yet: denied.
    assert_eq!(list_services(&token_client, &ns).await, Err(403));
    assert_eq!(list_services(&cert_client, &ns).await, Err(403));

    // Bind a Role allowing Services only.
    let admin = cp.client();
    let pp = PostParams::default();
    Api::<Role>::namespaced(admin.clone(), &ns)
        .create(
            &pp,
            &Role {
                metadata: ObjectMeta {
                    name: Some("read-services".into()),
                    ..ObjectMeta::default()
                },
                rules: Some(vec![PolicyRule {
                    api_groups: Some(vec![String::new()]),
                    resources: Some(vec!["services".into()]),
                    verbs: vec!["get".into(), "list".into(), "watch".into()],
                    ..PolicyRule::default()
                }]),
            },
        )
        .await
        .unwrap();
    Api::<RoleBinding>::namespaced(admin.clone(), &ns)
        .create(
            &pp,
            &RoleBinding {
                metadata: ObjectMeta {
                    name: Some("controller-reads-services".into()),
                    ..ObjectMeta::default()
                },
                role_ref: RoleRef {
                    api_group: "rbac.authorization.k8s.io".into(),
                    kind: "Role".into(),
                    name: "read-services".into(),
                },
                subjects: Some(vec![Subject {
                    kind: "ServiceAccount".into(),
                    name: "controller".into(),
                    namespace: Some(ns.clone()),
                    ..Subject::default()
                }]),
            },
        )
        .await
        .unwrap();

    // RBAC's cache follows the binding within moments: both identities are now allowed.
    for client in [&token_client, &cert_client] {
        let c = client.clone();
        let n = ns.clone();
        eventually(10, "services allowed", move || {
            let (c, n) = (c.clone(), n.clone());
            async move { list_services(&c, &n).await.ok() }
        })
        .await;
    }

    // ... but only what the Role grants: Secrets stay forbidden, and so do Services elsewhere.
    let secrets: Api<Secret> = Api::namespaced(token_client.clone(), &ns);
    match secrets.list(&ListParams::default()).await {
        Err(kube::Error::Api(e)) => assert_eq!(e.code, 403),
        other => panic!("listing secrets must be forbidden, got {other:?}"),
    }
    assert_eq!(list_services(&token_client, "default").await, Err(403));

    // Another identity (a different ServiceAccount) is unaffected by the binding.
    let other = cp
        .service_account_cert_identity(&ns, "someone-else")
        .unwrap();
    assert_eq!(list_services(&other.client().unwrap(), &ns).await, Err(403));
}
