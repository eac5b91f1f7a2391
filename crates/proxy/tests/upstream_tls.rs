//! TLS to upstreams, as Kong does it: no verification unless `tls_verify`, verification
//! against the service's `ca_certificates` (502 on failure), the name checked is the SNI
//! (the client's host with `preserve_host`, else the upstream `host_header` or target host), `tls_verify_depth` (OpenSSL's: that many
//! intermediates), and mTLS with the service's `client_certificate`, else the upstream's. A test CA (rcgen) and real TLS backends.
#![allow(missing_docs, clippy::unwrap_used)]

mod support;

use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use support::*;

fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p.distinguished_name.push(DnType::CommonName, name);
    CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap()
}

/// An intermediate CA signed by `ca`.
fn intermediate(
    ca: &CertifiedIssuer<'static, KeyPair>,
    name: &str,
) -> CertifiedIssuer<'static, KeyPair> {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p.distinguished_name.push(DnType::CommonName, name);
    CertifiedIssuer::signed_by(p, KeyPair::generate().unwrap(), ca).unwrap()
}

/// A certificate signed by `ca`: (cert PEM, key PEM).
fn leaf(ca: &CertifiedIssuer<'static, KeyPair>, names: &[&str], client: bool) -> (String, String) {
    let mut p =
        CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    p.distinguished_name.push(
        DnType::CommonName,
        names.first().copied().unwrap_or("client"),
    );
    p.extended_key_usages = vec![if client {
        ExtendedKeyUsagePurpose::ClientAuth
    } else {
        ExtendedKeyUsagePurpose::ServerAuth
    }];
    let key = KeyPair::generate().unwrap();
    let c = p.signed_by(&key, ca).unwrap();
    (c.pem(), key.serialize_pem())
}

/// A TLS server configuration; with `client_ca`, client certificates signed by it are
/// required.
fn server_tls(cert: &(String, String), client_ca: Option<&str>) -> Arc<rustls::ServerConfig> {
    use silverback_config::pki;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let b = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap();
    let b = match client_ca {
        None => b.with_no_client_auth(),
        Some(pem) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in pki::parse_certs(pem).unwrap() {
                roots.add(c).unwrap();
            }
            let v = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .unwrap();
            b.with_client_cert_verifier(v)
        }
    };
    let mut cfg = b
        .with_single_cert(
            pki::parse_certs(&cert.0).unwrap(),
            pki::parse_key(&cert.1).unwrap(),
        )
        .unwrap();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(cfg)
}

fn indent(pem: &str) -> String {
    pem.lines()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

const CA_ID: &str = "8e0a2a3a-5b7f-4a57-9a43-2f0d9a0c0001";
const OTHER_CA_ID: &str = "8e0a2a3a-5b7f-4a57-9a43-2f0d9a0c0002";
const CLIENT_ID: &str = "8e0a2a3a-5b7f-4a57-9a43-2f0d9a0c0003";
const STRANGER_ID: &str = "8e0a2a3a-5b7f-4a57-9a43-2f0d9a0c0004";

#[tokio::test]
async fn verification_sni_and_mtls() {
    let test_ca = ca("Silverback Test CA");
    let other_ca = ca("Another CA");
    let server = leaf(&test_ca, &["localhost", "127.0.0.1"], false);
    let client = leaf(&test_ca, &["client.test"], true);
    // a client certificate the mTLS backend refuses (another CA's)
    let stranger = leaf(&other_ca, &["stranger.test"], true);
    // a server certificate under an intermediate: leaf, intermediate, then the test CA
    let mid = intermediate(&test_ca, "Silverback Test Intermediate");
    let chained = leaf(&mid, &["localhost", "127.0.0.1"], false);
    let chained = (format!("{}{}", chained.0, mid.pem()), chained.1);
    let tls = Backend::builder()
        .name("tls")
        .tls(server_tls(&server, None))
        .run()
        .await;
    // a backend that would refuse an ALPN offer of `http/1.1` (it names only `h2`): nginx
    // offers no ALPN to an https upstream, and neither does the gateway
    let h2_named = {
        let mut c = (*server_tls(&server, None)).clone();
        c.alpn_protocols = vec![b"h2".to_vec()];
        Backend::builder()
            .name("no-alpn")
            .tls(Arc::new(c))
            .run()
            .await
    };
    let chain = Backend::builder()
        .name("chain")
        .tls(server_tls(&chained, None))
        .run()
        .await;
    let mtls = Backend::builder()
        .name("mtls")
        .tls(server_tls(&server, Some(&test_ca.pem())))
        .run()
        .await;
    let svc_on = |name: &str, host: &str, port: u16, extra: &str| {
        format!(
            "- name: {name}\n  protocol: https\n  host: {host}\n  port: {port}\n  retries: 1\n{extra}  routes:\n  - name: {name}\n    paths: [\"/{name}\"]\n",
        )
    };
    let svc = |name: &str, host: &str, extra: &str| {
        let port = if host.starts_with("127.") {
            tls.addr.port()
        } else {
            443
        };
        svc_on(name, host, port, extra)
    };
    let mut services = String::new();
    services += &svc("noverify", "127.0.0.1", "");
    services += &svc_on("no-alpn", "127.0.0.1", h2_named.addr.port(), "");
    services += &svc("system-roots", "127.0.0.1", "  tls_verify: true\n");
    services += &svc(
        "verified",
        "127.0.0.1",
        &format!("  tls_verify: true\n  ca_certificates: [{CA_ID}]\n"),
    );
    services += &svc(
        "wrong-ca",
        "127.0.0.1",
        &format!("  tls_verify: true\n  ca_certificates: [{OTHER_CA_ID}]\n"),
    );
    services += &svc(
        "by-name",
        "named",
        &format!("  tls_verify: true\n  ca_certificates: [{CA_ID}]\n"),
    );
    services += &svc(
        "wrong-name",
        "misnamed",
        &format!("  tls_verify: true\n  ca_certificates: [{CA_ID}]\n"),
    );
    services += &svc(
        "depth0",
        "127.0.0.1",
        &format!("  tls_verify: true\n  tls_verify_depth: 0\n  ca_certificates: [{CA_ID}]\n"),
    );
    // OpenSSL's verify depth: the leaf, that many intermediates, the trust anchor
    let verified_depth = |d: &str| format!("  tls_verify: true\n{d}  ca_certificates: [{CA_ID}]\n");
    let chain_port = chain.addr.port();
    services += &svc_on("chain", "127.0.0.1", chain_port, &verified_depth(""));
    services += &svc_on(
        "chain-depth0",
        "127.0.0.1",
        chain_port,
        &verified_depth("  tls_verify_depth: 0\n"),
    );
    services += &svc_on(
        "chain-depth1",
        "127.0.0.1",
        chain_port,
        &verified_depth("  tls_verify_depth: 1\n"),
    );
    // with `preserve_host`, the client's host is the TLS name, and the name verified
    services += &format!(
        "- name: preserved\n  protocol: https\n  host: 127.0.0.1\n  port: {port}\n  retries: 0\n  tls_verify: true\n  ca_certificates: [{CA_ID}]\n  routes:\n  - name: preserved\n    paths: [\"/preserved\"]\n    preserve_host: true\n",
        port = tls.addr.port()
    );
    services += &svc("mtls-none", "mtls-plain", "");
    services += &svc(
        "mtls-service",
        "mtls-plain",
        &format!("  client_certificate: {{id: {CLIENT_ID}}}\n"),
    );
    services += &svc(
        "mtls-upstream",
        "mtls-up",
        &format!("  tls_verify: true\n  ca_certificates: [{CA_ID}]\n"),
    );
    // the service's client certificate before the upstream's (which the backend refuses)
    services += &svc(
        "mtls-both",
        "mtls-stranger",
        &format!("  client_certificate: {{id: {CLIENT_ID}}}\n"),
    );
    let cfg = format!(
        r#"
_format_version: "3.0"
ca_certificates:
- id: {CA_ID}
  cert: |
{ca}
- id: {OTHER_CA_ID}
  cert: |
{other}
certificates:
- id: {CLIENT_ID}
  cert: |
{ccert}
  key: |
{ckey}
- id: {STRANGER_ID}
  cert: |
{scert}
  key: |
{skey}
upstreams:
- name: named
  host_header: localhost
  targets:
  - target: {tls}
- name: misnamed
  host_header: wrong.example
  targets:
  - target: {tls}
- name: mtls-plain
  host_header: localhost
  targets:
  - target: {mtls}
- name: mtls-up
  host_header: localhost
  client_certificate: {{id: {CLIENT_ID}}}
  targets:
  - target: {mtls}
- name: mtls-stranger
  host_header: localhost
  client_certificate: {{id: {STRANGER_ID}}}
  targets:
  - target: {mtls}
services:
{services}"#,
        ca = indent(&test_ca.pem()),
        other = indent(&other_ca.pem()),
        ccert = indent(&client.0),
        ckey = indent(&client.1),
        scert = indent(&stranger.0),
        skey = indent(&stranger.1),
        tls = tls.addr,
        mtls = mtls.addr,
    );
    let g = Gw::start(Some(&cfg)).await;
    let mut c = H1::connect(g.http).await;
    let expect = [
        // Kong's default: tls_verify off, any certificate accepted.
        ("/noverify", 200, "tls"),
        ("/no-alpn", 200, "no-alpn"),
        // Verification against the system roots: our test CA is not among them.
        ("/system-roots", 502, ""),
        ("/verified", 200, "tls"),
        ("/wrong-ca", 502, ""),
        // The SNI and the verified name come from the upstream's host_header.
        ("/by-name", 200, "tls"),
        ("/wrong-name", 502, ""),
        // Depth 0 allows a leaf the trusted CA signed itself, not one under an
        // intermediate; the default depth, 1, allows one intermediate.
        ("/depth0", 200, "tls"),
        ("/chain-depth0", 502, ""),
        ("/chain-depth1", 200, "chain"),
        ("/chain", 200, "chain"),
        // The backend requires a client certificate.
        ("/mtls-none", 502, ""),
        ("/mtls-service", 200, "mtls"),
        ("/mtls-upstream", 200, "mtls"),
        ("/mtls-both", 200, "mtls"),
    ];
    // the certificate names localhost (and 127.0.0.1), not wrong.example
    for (host, status) in [("localhost:8443", 200), ("wrong.example", 502)] {
        let r = c.get(host, "/preserved").await;
        assert_eq!(r.status, status, "{host}: {}", r.text());
    }
    for (path, status, backend) in expect {
        let r = c.get("x", path).await;
        assert_eq!(r.status, status, "{path}: {}", r.text());
        if status == 200 {
            assert_eq!(r.header("x-backend"), Some(backend), "{path}");
        } else {
            // (an nginx-level error: text/plain without Accept or Content-Type)
            assert!(
                r.text()
                    .starts_with("An invalid response was received from the upstream server\n"),
                "{path}: {}",
                r.text()
            );
        }
    }
    g.gw.shutdown().await;
}

/// A handshake that fails verification goes on to the next target, as nginx's upstream
/// module tries the next peer on a certificate that fails its check (`error`): with one
/// target presenting a certificate of another CA, every request is served by the other;
/// with that target alone, the tries run out and the answer is a 502.
#[tokio::test]
async fn a_target_failing_verification_is_retried_on_the_next() {
    let test_ca = ca("Silverback Test CA");
    let other_ca = ca("Another CA");
    let good = Backend::builder()
        .name("good")
        .tls(server_tls(&leaf(&test_ca, &["localhost"], false), None))
        .run()
        .await;
    let bad = Backend::builder()
        .name("bad")
        .ip("127.0.0.2")
        .tls(server_tls(&leaf(&other_ca, &["localhost"], false), None))
        .run()
        .await;
    let cfg = format!(
        r#"
_format_version: "3.0"
ca_certificates:
- id: {CA_ID}
  cert: |
{ca}
upstreams:
- name: pair
  host_header: localhost
  targets:
  - target: {good}
  - target: {bad}
- name: lone
  host_header: localhost
  targets:
  - target: {bad}
services:
- name: pair
  protocol: https
  host: pair
  tls_verify: true
  ca_certificates: [{CA_ID}]
  routes:
  - name: pair
    paths: ["/pair"]
- name: lone
  protocol: https
  host: lone
  tls_verify: true
  ca_certificates: [{CA_ID}]
  routes:
  - name: lone
    paths: ["/lone"]
"#,
        ca = indent(&test_ca.pem()),
        good = good.addr,
        bad = bad.addr,
    );
    let g = Gw::start(Some(&cfg)).await;
    let mut c = H1::connect(g.http).await;
    for _ in 0..6 {
        let r = c.get("x", "/pair").await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("x-backend"), Some("good"));
    }
    let r = c.get("x", "/lone").await;
    assert_eq!(r.status, 502, "{}", r.text());
    g.gw.shutdown().await;
}
