//! Backends in test network namespaces: reachable from the host at a non-loopback address that
//! the API server accepts in an EndpointSlice.
// Test code: helpers outside #[test] functions may unwrap too.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;

use common::{eventually, http_get};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};
use silverback_envtest::ControlPlane;
use silverback_envtest::echo::{BACKEND_HEADER, EchoResponse};
use silverback_envtest::netns::NetNs;

fn netns_exists(name: &str) -> bool {
    Path::new("/run/netns").join(name).exists()
}

fn link_exists(name: &str) -> bool {
    Command::new("ip")
        .args(["link", "show", name])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

#[tokio::test]
async fn host_reaches_an_in_process_backend_at_its_namespace_address() {
    let ns = NetNs::create().expect("netns");
    let name = ns.name().to_owned();
    assert!(netns_exists(&name));
    let addr = ns.addr();
    assert!(!addr.is_loopback() && addr.is_private(), "{addr}");

    let echo = ns.spawn_echo(8080, "backend-a").unwrap();
    assert_eq!(echo.addr(), SocketAddr::from((addr, 8080)));
    let resp = http_get(echo.addr(), "/hello?x=1", "example.com")
        .await
        .unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header(BACKEND_HEADER), Some("backend-a"));
    let body: EchoResponse = serde_json::from_str(&resp.body).unwrap();
    assert_eq!(body.backend, "backend-a");
    assert_eq!(body.path, "/hello?x=1");
    assert_eq!(body.host, "example.com");
    assert_eq!(body.header("x-test"), Some("envtest"));
    // The request came over the veth pair, from the host's side of it.
    let peer: SocketAddr = body.peer.parse().unwrap();
    assert_eq!(peer.ip(), ns.host_addr());

    // /status/<code> answers with that status.
    let resp = http_get(echo.addr(), "/status/503", "example.com")
        .await
        .unwrap();
    assert_eq!(resp.status, 503);

    drop(echo);
    drop(ns);
    assert!(!netns_exists(&name), "netns {name} left behind");
    let index = name.trim_start_matches("sbt-");
    assert!(!link_exists(&format!("sbth{index}")), "veth left behind");
}

#[tokio::test]
async fn a_backend_process_in_a_namespace_serves_the_address_of_an_endpoint_slice() {
    let cp = ControlPlane::start().await.expect("control plane starts");
    let ns = NetNs::create().expect("netns");
    let backend = SocketAddr::from((ns.addr(), 8081));

    // The API server takes the namespace's address as an endpoint (it refuses loopback).
    let kube_ns = cp.create_namespace("netns").await.unwrap();
    let slices: Api<EndpointSlice> = Api::namespaced(cp.client(), &kube_ns);
    let slice = slices
        .create(
            &PostParams::default(),
            &EndpointSlice {
                metadata: ObjectMeta {
                    name: Some("echo-1".into()),
                    labels: Some(BTreeMap::from([(
                        "kubernetes.io/service-name".to_owned(),
                        "echo".to_owned(),
                    )])),
                    ..ObjectMeta::default()
                },
                address_type: "IPv4".into(),
                endpoints: vec![Endpoint {
                    addresses: vec![ns.addr().to_string()],
                    ..Endpoint::default()
                }],
                ports: Some(vec![EndpointPort {
                    port: Some(8081),
                    ..EndpointPort::default()
                }]),
            },
        )
        .await
        .unwrap();

    // A separate process in the namespace, at the address and port the slice names.
    let mut cmd = ns.command(env!("CARGO_BIN_EXE_silverback-envtest-echo"));
    cmd.args(["--listen", &backend.to_string(), "--name", "backend-b"]);
    let process = ns.spawn(cmd, None).unwrap();
    let target = SocketAddr::from((
        slice.endpoints[0].addresses[0]
            .parse::<std::net::Ipv4Addr>()
            .unwrap(),
        u16::try_from(slice.ports.unwrap()[0].port.unwrap()).unwrap(),
    ));
    let resp = eventually(10, "backend-b answers", || async move {
        http_get(target, "/", "echo.example").await.ok()
    })
    .await;
    let body: EchoResponse = serde_json::from_str(&resp.body).unwrap();
    assert_eq!(body.backend, "backend-b");
    assert!(process.exit_status().is_none());

    // Killing the process closes the port.
    drop(process);
    eventually(5, "backend-b gone", || async move {
        http_get(target, "/", "echo.example")
            .await
            .is_err()
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn namespaces_get_distinct_subnets() {
    let a = NetNs::create().unwrap();
    let b = NetNs::create().unwrap();
    assert_ne!(a.name(), b.name());
    assert_ne!(a.addr(), b.addr());
    // Each backend answers on its own address, with its own name.
    let ea = a.spawn_echo(0, "a").unwrap();
    let eb = b.spawn_echo(0, "b").unwrap();
    for (echo, name) in [(&ea, "a"), (&eb, "b")] {
        let resp = http_get(echo.addr(), "/", "x").await.unwrap();
        assert_eq!(resp.header(BACKEND_HEADER), Some(name));
    }
    // Code running in a namespace sees only its own interfaces.
    let v4_addrs = a
        .run_in(|| {
            let out = Command::new("ip")
                .args(["-4", "-o", "addr"])
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).into_owned()
        })
        .unwrap();
    assert!(v4_addrs.contains(&a.addr().to_string()), "{v4_addrs}");
    assert!(!v4_addrs.contains(&b.addr().to_string()), "{v4_addrs}");
}
