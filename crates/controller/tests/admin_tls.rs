//! The admin API client over TLS against a real TLS server of the test's own: CA
//! verification, server name override, client certificates (mTLS), skip-verify, the token
//! header; and Kong's 400 body with `flattened_errors` parsed into a rejection.
#![allow(clippy::unwrap_used)]

mod common;

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use silverback_controller::PushError;
use silverback_controller::admin::{AdminClient, AdminSettings, AdminTls};

struct Pki {
    ca_pem: String,
    server: (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>),
    client_cert_pem: String,
    client_key_pem: String,
    client_ca: CertificateDer<'static>,
}

fn pki() -> Pki {
    let (ca_cert, issuer) = common::test_ca();

    let server_key = rcgen::KeyPair::generate().unwrap();
    let server = rcgen::CertificateParams::new(vec!["kong-admin.test".to_string()])
        .unwrap()
        .signed_by(&server_key, &issuer)
        .unwrap();
    let client_key = rcgen::KeyPair::generate().unwrap();
    let mut cp = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    cp.distinguished_name
        .push(rcgen::DnType::CommonName, "controller");
    let client = cp.signed_by(&client_key, &issuer).unwrap();
    Pki {
        ca_pem: ca_cert.pem(),
        server: (
            vec![server.der().clone()],
            PrivateKeyDer::Pkcs8(server_key.serialize_der().into()),
        ),
        client_cert_pem: client.pem(),
        client_key_pem: client_key.serialize_pem(),
        client_ca: ca_cert.der().clone(),
    }
}

#[derive(Default)]
struct Seen {
    tokens: Vec<Option<String>>,
}

/// A TLS server requiring client certificates from the test CA. `POST /config` answers 201,
/// or Kong's 400 when the body contains `"bad"`; `GET /status` gives a hash.
async fn server(p: &Pki, seen: Arc<Mutex<Seen>>) -> std::net::SocketAddr {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(p.client_ca.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .unwrap();
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(p.server.0.clone(), p.server.1.clone_key())
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            let seen = seen.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc = hyper::service::service_fn(move |req: http::Request<Incoming>| {
                    let seen = seen.clone();
                    async move {
                        let token = req
                            .headers()
                            .get("kong-admin-token")
                            .map(|v| v.to_str().unwrap().to_string());
                        seen.lock().unwrap().tokens.push(token);
                        let path = req.uri().path().to_string();
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        let (status, out) = match path.as_str() {
                            "/status" => (200, r#"{"configuration_hash":"0123456789abcdef0123456789abcdef"}"#.to_string()),
                            "/config" if body.windows(5).any(|w| w == b"\"bad\"") => (400, serde_json::json!({
                                "code": 14, "name": "invalid declarative configuration",
                                "message": "declarative config is invalid: {}",
                                "fields": {},
                                "flattened_errors": [{
                                    "entity_type": "route", "entity_name": "ns.web.echo..80",
                                    "entity_tags": ["k8s-name:web", "k8s-namespace:ns", "k8s-kind:Ingress",
                                                    "k8s-group:networking.k8s.io", "k8s-version:v1"],
                                    "entity": {},
                                    "errors": [{"type": "field", "field": "paths.1", "message": "invalid regex"}],
                                }],
                            }).to_string()),
                            "/config" => (201, "{}".to_string()),
                            _ => (404, "{}".to_string()),
                        };
                        let mut r = http::Response::new(Full::new(Bytes::from(out)));
                        *r.status_mut() = http::StatusCode::from_u16(status).unwrap();
                        Ok::<_, Infallible>(r)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    addr
}

fn client(addr: std::net::SocketAddr, tls: AdminTls, token: Option<&str>) -> AdminClient {
    let settings = AdminSettings {
        tls,
        token: token.map(str::to_string),
        timeout: Duration::from_secs(5),
        ..AdminSettings::default()
    };
    AdminClient::new(&format!("https://{addr}"), settings, None).unwrap()
}

#[tokio::test]
async fn admin_client_speaks_tls_with_ca_client_certificate_and_token() {
    let p = pki();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let addr = server(&p, seen.clone()).await;
    let full = AdminTls {
        ca_pem: Some(p.ca_pem.clone()),
        client_cert_pem: Some((p.client_cert_pem.clone(), p.client_key_pem.clone())),
        server_name: Some("kong-admin.test".into()),
        skip_verify: false,
    };

    // Verified against the CA under the given server name, with a client certificate.
    let c = client(addr, full.clone(), Some("s3cret"));
    c.post_config(br#"{"_format_version":"3.0"}"#)
        .await
        .unwrap();
    assert_eq!(
        c.config_hash().await.unwrap(),
        "0123456789abcdef0123456789abcdef"
    );
    assert_eq!(seen.lock().unwrap().tokens[0].as_deref(), Some("s3cret"));

    // Kong's 400 with flattened errors becomes a rejection naming the entity's tags.
    match c
        .post_config(br#"{"_format_version":"3.0","x":"bad"}"#)
        .await
    {
        Err(PushError::Rejected { flattened, .. }) => {
            assert_eq!(flattened.len(), 1);
            let (problems, _) = silverback_translator::problems_from_flattened(&flattened);
            assert_eq!(problems[0].object.kind, "Ingress");
            assert_eq!(problems[0].object.name, "web");
            assert!(problems[0].reason.contains("invalid regex"));
        }
        other => panic!("expected a rejection, got {other:?}"),
    }

    // The URL's host (127.0.0.1) is not in the certificate: refused without the override.
    let no_name = client(
        addr,
        AdminTls {
            server_name: None,
            ..full.clone()
        },
        None,
    );
    let e = no_name.post_config(b"{}").await.unwrap_err();
    assert_eq!(e.reason(), "network", "{e}");

    // Another CA: refused.
    let other = pki();
    let wrong_ca = client(
        addr,
        AdminTls {
            ca_pem: Some(other.ca_pem.clone()),
            ..full.clone()
        },
        None,
    );
    assert!(wrong_ca.post_config(b"{}").await.is_err());

    // No client certificate: the server refuses the handshake.
    let no_cert = client(
        addr,
        AdminTls {
            client_cert_pem: None,
            ..full.clone()
        },
        None,
    );
    assert!(no_cert.config_hash().await.is_err());

    // Skip-verify accepts any server certificate (the client certificate is still sent).
    let skip = client(
        addr,
        AdminTls {
            ca_pem: None,
            server_name: None,
            skip_verify: true,
            ..full
        },
        None,
    );
    skip.post_config(b"{}").await.unwrap();
}

#[tokio::test]
async fn unreachable_admin_api_is_a_network_failure_within_the_timeout() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    let c = AdminClient::new(&format!("http://{addr}"), AdminSettings::default(), None).unwrap();
    let e = c.post_config(b"{}").await.unwrap_err();
    assert_eq!(e.reason(), "network", "{e}");
    assert!(AdminClient::new("ftp://x", AdminSettings::default(), None).is_err());
}
