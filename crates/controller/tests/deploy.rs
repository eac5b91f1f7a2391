//! The deployment manifests are well-formed and only use settings the binary has.
#![allow(clippy::unwrap_used)]

mod common;

use clap::CommandFactory as _;
use common::deploy_docs;
use k8s_openapi::api::apps::v1::Deployment;

#[derive(clap::Parser)]
struct Cli {
    #[command(flatten)]
    o: silverback_controller::ControllerOptions,
}

/// Data-plane settings the proxy container uses (the binary's `DataPlaneArgs`).
const DATA_PLANE_ENV: &[&str] = &[
    "SILVERBACK_PROXY_LISTEN",
    "SILVERBACK_ADMIN_LISTEN",
    "SILVERBACK_STATUS_LISTEN",
    "SILVERBACK_NGINX_ADMIN_CLIENT_MAX_BODY_SIZE",
];

#[test]
fn deployments_use_known_settings_and_the_shipped_service_account() {
    let cmd = Cli::command();
    let known: Vec<String> = cmd
        .get_arguments()
        .filter_map(|a| a.get_env().map(|e| e.to_string_lossy().into_owned()))
        .collect();
    let mut checked = 0;
    for file in ["sidecar.yaml", "gateway-discovery.yaml"] {
        for d in deploy_docs(file, "kong") {
            if d["kind"] != "Deployment" {
                continue;
            }
            let dep: Deployment = serde_json::from_value(d).unwrap();
            let pod = dep.spec.unwrap().template.spec.unwrap();
            for c in &pod.containers {
                let role = c.args.as_ref().unwrap()[0].clone();
                assert!(role == "proxy" || role == "controller", "{role}");
                if role == "controller" {
                    assert_eq!(pod.service_account_name.as_deref(), Some("silverback"));
                }
                for e in c.env.iter().flatten() {
                    let ok = if role == "controller" {
                        known.contains(&e.name)
                    } else {
                        DATA_PLANE_ENV.contains(&e.name.as_str())
                    };
                    assert!(ok, "{file}: {} sets unknown {}", c.name, e.name);
                    checked += 1;
                }
            }
        }
    }
    assert!(checked >= 10);
    // Every other manifest parses.
    for file in [
        "rbac.yaml",
        "crds.yaml",
        "ingressclass.yaml",
        "proxy-service.yaml",
    ] {
        assert!(!deploy_docs(file, "kong").is_empty(), "{file}");
    }
}

#[test]
fn the_dockerfile_lives_in_deploy_and_says_how_to_build_it() {
    let text = std::fs::read_to_string(common::deploy_dir().join("Dockerfile")).unwrap();
    // Built from the repository root, as its own comment says.
    assert!(text.contains("docker build -f deploy/Dockerfile"), "{text}");
    assert!(text.contains("-p silverback"), "{text}");
}
