//! Active https probes against a TLS backend with a test CA, SNI and a client certificate
//! (mTLS) taken from the upstream's `client_certificate`.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Backend, config, eventually};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use silverback_balancer::{Balancers, HealthStatus, Options};
use tokio::runtime::Handle;

struct Pki {
    ca: CertificateDer<'static>,
    server: rustls::ServerConfig,
    client_cert_pem: String,
    client_key_pem: String,
}

fn pki(server_name: &str) -> Pki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "silverback test ca");
    let ca =
        CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("key")).expect("ca");
    let server_key = KeyPair::generate().expect("key");
    let server_cert = CertificateParams::new(vec![server_name.to_string()])
        .expect("params")
        .signed_by(&server_key, &ca)
        .expect("sign");
    let client_key = KeyPair::generate().expect("key");
    let mut client_params =
        CertificateParams::new(vec!["gateway.test".to_string()]).expect("params");
    client_params
        .distinguished_name
        .push(DnType::CommonName, "gateway");
    let client_cert = client_params.signed_by(&client_key, &ca).expect("sign");

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der().clone()).expect("root");
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::clone(&provider),
    )
    .build()
    .expect("verifier");
    let server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![server_cert.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der())),
        )
        .expect("server config");
    Pki {
        ca: ca.der().clone(),
        server,
        client_cert_pem: client_cert.pem(),
        client_key_pem: client_key.serialize_pem(),
    }
}

fn upstream_doc(pki: &Pki, target: &str, sni: &str) -> String {
    let cert_id = "5a5b0e3c-6a0e-4d43-9a7e-0f8d2b1c4e11";
    serde_json::json!({
        "_format_version": "3.0",
        "certificates": [{"id": cert_id, "cert": pki.client_cert_pem, "key": pki.client_key_pem}],
        "upstreams": [{
            "name": "up",
            "client_certificate": {"id": cert_id},
            "healthchecks": {"active": {
                "type": "https",
                "http_path": "/health",
                "https_sni": sni,
                "timeout": 1,
                "healthy": {"interval": 0.1, "successes": 1},
                "unhealthy": {"interval": 0.1, "http_failures": 2, "tcp_failures": 2}
            }},
            "targets": [{"target": target}]
        }]
    })
    .to_string()
}

fn state(bs: &Balancers) -> HealthStatus {
    bs.get("up").expect("up").health().targets[0].health
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_probes_verify_and_present_the_client_certificate() {
    let pki = pki("backend.test");
    let backend = Backend::start_tls("127.0.30.1", Arc::new(pki.server.clone())).await;
    let cfg = config(&upstream_doc(
        &pki,
        &backend.addr.to_string(),
        "backend.test",
    ));
    let opts = Options {
        probe_roots: vec![pki.ca.clone()],
        ..Default::default()
    };
    let bs = Balancers::build_with(&cfg, None, &Handle::current(), &opts).expect("build");
    // Verified, mTLS accepted: the probes reach the HTTP layer.
    assert!(
        eventually(Duration::from_secs(5), || backend.probes() >= 2).await,
        "no probe got through TLS"
    );
    assert_eq!(state(&bs), HealthStatus::Healthy);
    // HTTP failures over TLS.
    backend.set_status(503);
    assert!(
        eventually(Duration::from_secs(5), || state(&bs)
            == HealthStatus::Unhealthy)
        .await
    );
    backend.set_status(200);
    assert!(
        eventually(Duration::from_secs(5), || state(&bs)
            == HealthStatus::Healthy)
        .await
    );
    drop(bs);

    // Without the test CA the handshake fails verification: TCP failures, unhealthy, and no
    // request ever reaches the backend.
    let before = backend.probes();
    let bs = Balancers::build(&cfg, None, &Handle::current()).expect("build");
    assert!(
        eventually(Duration::from_secs(5), || state(&bs)
            == HealthStatus::Unhealthy)
        .await
    );
    assert_eq!(backend.probes(), before);
    drop(bs);

    // A wrong SNI fails the name check the same way.
    let cfg = config(&upstream_doc(&pki, &backend.addr.to_string(), "other.test"));
    let bs = Balancers::build_with(&cfg, None, &Handle::current(), &opts).expect("build");
    assert!(
        eventually(Duration::from_secs(5), || state(&bs)
            == HealthStatus::Unhealthy)
        .await
    );
    assert_eq!(backend.probes(), before);
}
