//! TLS: certificates chosen by SNI from the configuration (Kong's `find_certificate` order),
//! the default certificates ([`crate::default_certs`]), and client configurations for TLS
//! upstreams.
//!
//! Lookup order for a ClientHello server name `n`: the exact name, `*.<n minus its first
//! label>`, `<n minus its last label>.*`, an SNI entity named `*`, then the default
//! certificates. No server name gets the default certificates. A certificate with `cert_alt`
//! offers both keys, and the default certificates offer one key per type; the client's
//! preference decides, as OpenSSL's does in Kong: the key that can sign with the first
//! signature scheme the client lists ([`CertSet::choose`]). While a generated RSA default
//! certificate is on its way, a listener reads the ClientHello before answering, so that a
//! client that needs that certificate waits for it rather than failing (`TlsListener`).

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, SignatureScheme};
use silverback_config::{Config, pki};

use crate::ProxyError;
use crate::default_certs::DefaultCertificates;

/// Certificates of one configuration, indexed by SNI.
#[derive(Debug, Default)]
pub struct CertStore {
    by_name: HashMap<String, Arc<CertSet>>,
}

/// Certificates for one name, each with a key of another type: a configured certificate
/// and its `cert_alt`, or the default certificates (RSA and ECDSA).
#[derive(Debug)]
pub struct CertSet {
    main: Arc<CertifiedKey>,
    alts: Vec<Arc<CertifiedKey>>,
}

impl CertSet {
    /// A set of `main` and its alternatives; `main` answers a client that can use none.
    pub fn new(main: Arc<CertifiedKey>, alts: Vec<Arc<CertifiedKey>>) -> CertSet {
        CertSet { main, alts }
    }

    /// The certificates, `main` first.
    pub fn certificates(&self) -> impl Iterator<Item = &Arc<CertifiedKey>> {
        std::iter::once(&self.main).chain(&self.alts)
    }

    /// The certificate for a client: the first that can sign with the first signature
    /// scheme the client lists (for TLS 1.2, rustls lists only the schemes its cipher
    /// suites can use; for TLS 1.3, schemes TLS 1.3 forbids are skipped here, as OpenSSL
    /// skips them), else `main`.
    pub(crate) fn choose(&self, hello: &ClientHello<'_>) -> Arc<CertifiedKey> {
        if self.alts.is_empty() {
            return self.main.clone();
        }
        // (the server speaks TLS 1.3, so a client offering a TLS 1.3 suite gets it)
        let tls13 = hello
            .cipher_suites()
            .iter()
            .any(|s| (0x1301..=0x1305).contains(&u16::from(*s)));
        for scheme in hello.signature_schemes() {
            if tls13 && !usable_in_tls13(*scheme) {
                continue;
            }
            for k in self.certificates() {
                if k.key.choose_scheme(std::slice::from_ref(scheme)).is_some() {
                    return k.clone();
                }
            }
        }
        self.main.clone()
    }
}

/// Whether TLS 1.3 allows `scheme` (RFC 8446 §4.2.3): no MD5, SHA-1 or SHA-224, no
/// RSASSA-PKCS1-v1_5 or DSA signatures.
fn usable_in_tls13(scheme: rustls::SignatureScheme) -> bool {
    let v = u16::from(scheme);
    let (hash, signature) = ((v >> 8) as u8, v as u8);
    match hash {
        0..=3 => false,
        4..=6 => !matches!(signature, 1 | 2),
        _ => true,
    }
}

fn certified(cert: &str, key: &str) -> Result<Arc<CertifiedKey>, String> {
    let chain = pki::parse_certs(cert)?;
    let key = pki::signing_key(&pki::parse_key(key)?)?;
    Ok(Arc::new(CertifiedKey::new(chain, key)))
}

impl CertStore {
    /// Compiles the certificates and SNIs of a configuration.
    pub fn build(config: &Config) -> Result<CertStore, ProxyError> {
        let mut pairs = HashMap::new();
        for c in &config.certificates {
            let err = |message| ProxyError::Certificate {
                id: c.id.to_string(),
                message,
            };
            let main = certified(&c.cert, &c.key).map_err(err)?;
            let alts = match (&c.cert_alt, &c.key_alt) {
                (Some(cert), Some(key)) => vec![certified(cert, key).map_err(err)?],
                _ => vec![],
            };
            pairs.insert(c.id, Arc::new(CertSet::new(main, alts)));
        }
        let mut by_name = HashMap::new();
        for s in &config.snis {
            if let Some(p) = pairs.get(&s.certificate.id) {
                by_name.insert(s.name.to_ascii_lowercase(), p.clone());
            }
        }
        Ok(CertStore { by_name })
    }

    /// The certificate for a server name, in Kong's lookup order; `None` means the default.
    pub fn lookup(&self, sni: Option<&str>) -> Option<&Arc<CertSet>> {
        let name = sni?.trim_end_matches('.').to_ascii_lowercase();
        if let Some(p) = self.by_name.get(&name) {
            return Some(p);
        }
        if let Some((_, rest)) = name.split_once('.')
            && let Some(p) = self.by_name.get(&format!("*.{rest}"))
        {
            return Some(p);
        }
        if let Some((head, _)) = name.rsplit_once('.')
            && let Some(p) = self.by_name.get(&format!("{head}.*"))
        {
            return Some(p);
        }
        self.by_name.get("*")
    }

    /// Number of server names.
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// Whether no server name is configured.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}

/// The certificate resolver of TLS listeners: reads the current snapshot's certificates,
/// so a configuration swap changes certificates without touching listeners.
#[derive(Debug)]
pub struct SniResolver {
    pub(crate) snapshot: Arc<ArcSwap<crate::snapshot::Snapshot>>,
    pub(crate) default: Arc<DefaultCertificates>,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let snap = self.snapshot.load();
        match snap.certs.lookup(hello.server_name()) {
            Some(p) => Some(p.choose(&hello)),
            None => Some(self.default.choose(&hello)),
        }
    }
}

/// The resolver of `ssl` admin and status listeners: their default certificates only, as
/// Kong's admin and status servers have `ssl_certificate` lines and no certificate phase.
#[derive(Debug)]
pub struct DefaultsOnly(pub(crate) Arc<DefaultCertificates>);

impl ResolvesServerCert for DefaultsOnly {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.choose(&hello))
    }
}

/// The handshakes of one TLS listener. While a generated RSA default certificate is on its
/// way ([`DefaultCertificates::rsa_pending`]), the ClientHello is read first: a client that
/// would get the default certificates and cannot use the ECDSA one waits for the RSA one
/// (within the handshake timeout) instead of failing; every other client goes on at once.
/// Afterwards, and always for default certificates that are final from the start, the
/// handshake is rustls' usual one.
#[derive(Clone)]
pub(crate) struct TlsListener {
    config: Arc<rustls::ServerConfig>,
    defaults: Arc<DefaultCertificates>,
    /// Proxy listeners: the configuration's certificates by SNI, which need no waiting.
    snapshot: Option<Arc<ArcSwap<crate::snapshot::Snapshot>>>,
}

impl TlsListener {
    /// A proxy listener: the configuration's certificates by SNI, else `defaults`.
    pub(crate) fn proxy(
        snapshot: Arc<ArcSwap<crate::snapshot::Snapshot>>,
        defaults: Arc<DefaultCertificates>,
        http2: bool,
    ) -> TlsListener {
        let resolver = Arc::new(SniResolver {
            snapshot: snapshot.clone(),
            default: defaults.clone(),
        });
        TlsListener {
            config: server_config(resolver, http2),
            defaults,
            snapshot: Some(snapshot),
        }
    }

    /// An admin or status listener: `defaults` only.
    pub(crate) fn defaults_only(defaults: Arc<DefaultCertificates>, http2: bool) -> TlsListener {
        TlsListener {
            config: server_config(Arc::new(DefaultsOnly(defaults.clone())), http2),
            defaults,
            snapshot: None,
        }
    }

    /// The server side of a handshake on `io`.
    pub(crate) async fn accept<IO>(
        &self,
        io: IO,
    ) -> std::io::Result<tokio_rustls::server::TlsStream<IO>>
    where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        if !self.defaults.rsa_pending() {
            return tokio_rustls::TlsAcceptor::from(self.config.clone())
                .accept(io)
                .await;
        }
        let start =
            tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), io).await?;
        if self.waits_for_rsa(&start.client_hello()) {
            self.defaults.rsa_settled().await;
        }
        start.into_stream(self.config.clone()).await
    }

    /// Whether the client would get the default certificates and needs the RSA one.
    fn waits_for_rsa(&self, hello: &ClientHello<'_>) -> bool {
        if let Some(snapshot) = &self.snapshot
            && snapshot.load().certs.lookup(hello.server_name()).is_some()
        {
            return false;
        }
        self.defaults.waits_for_rsa(hello)
    }
}

/// The server configuration of a TLS listener.
pub fn server_config(
    resolver: Arc<dyn ResolvesServerCert>,
    http2: bool,
) -> Arc<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = match rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(rustls::ALL_VERSIONS)
    {
        Ok(b) => b.with_no_client_auth().with_cert_resolver(resolver),
        // The ring provider supports every protocol version; unreachable in practice.
        Err(_) => rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_cert_resolver(resolver),
    };
    cfg.alpn_protocols = if http2 {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    Arc::new(cfg)
}

/// Accepts any upstream certificate: Kong's default (`tls_verify` off).
#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Kong's default `proxy_ssl_verify_depth` (nginx's `proxy_ssl_verify_depth 1`): the leaf
/// and one issuer.
pub const DEFAULT_VERIFY_DEPTH: u8 = 1;

/// How connections to a TLS upstream are made: Kong's https pool-key parts (`tls_verify`,
/// `tls_verify_depth`, `ca_certificates`, `client_certificate`) compiled into rustls client
/// configurations, one per ALPN (`http/1.1` and `h2`).
pub struct UpstreamTls {
    /// A digest of the settings (not of the `Arc`s): part of the connection pool key, so that
    /// pooled connections survive a configuration swap that keeps the same settings, and
    /// services with different settings never share a connection.
    pub policy: u64,
    /// For HTTP/1.1 upstreams.
    pub h1: Arc<rustls::ClientConfig>,
    /// For HTTP/2 upstreams (gRPCs).
    pub h2: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamTls")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

/// The TLS settings of one service (and its upstream's client certificate).
#[derive(Debug, Clone, Default, Hash)]
pub struct TlsSpec<'a> {
    /// `tls_verify` (Kong: `null` means the global `proxy_ssl_verify`, which is off).
    pub verify: bool,
    /// `tls_verify_depth` (`null`: 1, nginx's default).
    pub depth: Option<u8>,
    /// PEMs of the service's `ca_certificates`; empty means the system (Mozilla) roots.
    pub cas: Vec<&'a str>,
    /// PEM certificate chain and key for mTLS (`client_certificate`).
    pub client: Option<(&'a str, &'a str)>,
}

impl TlsSpec<'_> {
    /// The digest used in pool keys.
    pub fn digest(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        // SipHash with fixed keys: stable across snapshots of one process.
        #[allow(deprecated)]
        let mut h = std::hash::SipHasher::new();
        self.hash(&mut h);
        h.finish()
    }

    /// Compiles the rustls configurations.
    pub fn build(&self) -> Result<UpstreamTls, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier: Arc<dyn ServerCertVerifier> = if self.verify {
            let mut roots = rustls::RootCertStore::empty();
            let mut anchors = Vec::new();
            if self.cas.is_empty() {
                roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            }
            for pem in &self.cas {
                for c in pki::parse_certs(pem)? {
                    anchors.push(c.as_ref().to_vec());
                    roots.add(c).map_err(|e| format!("ca_certificates: {e}"))?;
                }
            }
            let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(
                Arc::new(roots),
                provider.clone(),
            )
            .build()
            .map_err(|e| format!("ca_certificates: {e}"))?;
            Arc::new(DepthVerifier {
                inner,
                depth: self.depth.unwrap_or(DEFAULT_VERIFY_DEPTH),
                anchors,
            })
        } else {
            Arc::new(NoVerify(provider.clone()))
        };
        let client = match self.client {
            None => None,
            Some((cert, key)) => Some((
                pki::parse_certs(cert).map_err(|e| format!("client_certificate: {e}"))?,
                pki::parse_key(key).map_err(|e| format!("client_certificate: {e}"))?,
            )),
        };
        let mk = |alpn: &[u8]| -> Result<Arc<rustls::ClientConfig>, String> {
            let b = rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .map_err(|e| e.to_string())?
                .dangerous()
                .with_custom_certificate_verifier(verifier.clone());
            let mut c = match &client {
                None => b.with_no_client_auth(),
                Some((chain, key)) => b
                    .with_client_auth_cert(chain.clone(), key.clone_key())
                    .map_err(|e| format!("client_certificate: {e}"))?,
            };
            c.alpn_protocols = vec![alpn.to_vec()];
            Ok(Arc::new(c))
        };
        Ok(UpstreamTls {
            policy: self.digest(),
            h1: mk(b"http/1.1")?,
            h2: mk(b"h2")?,
        })
    }
}

/// WebPKI verification plus nginx's `proxy_ssl_verify_depth`: the chain the upstream
/// presents may hold at most `depth - 1` intermediates besides the leaf (a presented copy of
/// a trust anchor does not count), as OpenSSL counts depth 0 for the leaf.
#[derive(Debug)]
struct DepthVerifier {
    inner: Arc<rustls::client::WebPkiServerVerifier>,
    depth: u8,
    anchors: Vec<Vec<u8>>,
}

impl ServerCertVerifier for DepthVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verified =
            self.inner
                .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)?;
        let issuers = intermediates
            .iter()
            .filter(|c| !self.anchors.iter().any(|a| a.as_slice() == c.as_ref()))
            .count()
            + 1;
        if issuers > usize::from(self.depth) {
            return Err(rustls::Error::General(format!(
                "certificate chain too long: {issuers} issuers, tls_verify_depth {}",
                self.depth
            )));
        }
        Ok(verified)
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(m, c, d)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(m, c, d)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::SignatureScheme as S;

    #[test]
    fn schemes_tls13_allows() {
        for s in [
            S::RSA_PSS_SHA256,
            S::RSA_PSS_SHA512,
            S::ECDSA_NISTP256_SHA256,
            S::ECDSA_NISTP384_SHA384,
            S::ED25519,
        ] {
            assert!(usable_in_tls13(s), "{s:?}");
        }
        for s in [
            S::RSA_PKCS1_SHA1,
            S::ECDSA_SHA1_Legacy,
            S::RSA_PKCS1_SHA256,
            S::RSA_PKCS1_SHA512,
        ] {
            assert!(!usable_in_tls13(s), "{s:?}");
        }
    }
}
