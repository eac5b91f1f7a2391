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
        let tls13 = hello.cipher_suites().iter().any(|s| is_tls13_suite(*s));
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
/// way ([`DefaultCertificates::rsa_pending`]), the ClientHello is read first (its bytes
/// kept for the protocol versions it offers, [`Offered`]): a client that would get the
/// default certificates and cannot use the ECDSA one ([`accepts_ecdsa_p256`]) waits for the
/// RSA one, within the handshake timeout ([`TlsListener::accept_within`]), instead of
/// failing; every other client goes on at once. Afterwards, and always for default
/// certificates that are final from the start, the handshake is rustls' usual one.
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

    /// The server side of a handshake on `io`, bounded by `timeout` (Kong's
    /// `tls_handshake_timeout`) from the first byte to the last, a wait for the RSA
    /// certificate included: past it the handshake fails with [`std::io::ErrorKind::TimedOut`].
    pub(crate) async fn accept_within<IO>(
        &self,
        io: IO,
        timeout: std::time::Duration,
    ) -> std::io::Result<tokio_rustls::server::TlsStream<IO>>
    where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        match tokio::time::timeout(timeout, self.accept(io)).await {
            Ok(done) => done,
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "TLS handshake timed out",
            )),
        }
    }

    /// The server side of a handshake on `io`, unbounded ([`TlsListener::accept_within`]).
    async fn accept<IO>(&self, io: IO) -> std::io::Result<tokio_rustls::server::TlsStream<IO>>
    where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        if !self.defaults.rsa_pending() {
            return tokio_rustls::TlsAcceptor::from(self.config.clone())
                .accept(io)
                .await;
        }
        // The ClientHello's bytes are kept for what rustls' view of it lacks: the versions.
        let start = tokio_rustls::LazyConfigAcceptor::new(
            rustls::server::Acceptor::default(),
            Recording::new(io),
        )
        .await?;
        let tokio_rustls::StartHandshake { accepted, io, .. } = start;
        let (io, hello_bytes) = io.into_parts();
        let start = tokio_rustls::StartHandshake::from_parts(accepted, io);
        let hello = start.client_hello();
        let offered = Offered::read(&hello_bytes).unwrap_or_else(|| Offered::guess(&hello));
        if self.waits_for_rsa(&hello, offered) {
            self.defaults.rsa_settled().await;
        }
        start.into_stream(self.config.clone()).await
    }

    /// Whether the client would get the default certificates and needs the RSA one.
    fn waits_for_rsa(&self, hello: &ClientHello<'_>, offered: Offered) -> bool {
        if let Some(snapshot) = &self.snapshot
            && snapshot.load().certs.lookup(hello.server_name()).is_some()
        {
            return false;
        }
        self.defaults.waits_for_rsa(hello, offered)
    }
}

/// The most bytes of a ClientHello [`Recording`] keeps (rustls refuses a larger hello).
const HELLO_LIMIT: usize = 1 << 17;

/// An `io` that keeps a copy of the first bytes read through it (a ClientHello's records,
/// up to [`HELLO_LIMIT`]); writes pass through.
struct Recording<IO> {
    io: IO,
    seen: Vec<u8>,
}

impl<IO> Recording<IO> {
    fn new(io: IO) -> Recording<IO> {
        Recording { io, seen: vec![] }
    }

    /// The `io` back, and the bytes read through it.
    fn into_parts(self) -> (IO, Vec<u8>) {
        (self.io, self.seen)
    }
}

impl<IO: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Recording<IO> {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        std::task::ready!(std::pin::Pin::new(&mut this.io).poll_read(cx, buf))?;
        let read = &buf.filled()[before..];
        let room = HELLO_LIMIT.saturating_sub(this.seen.len());
        this.seen.extend_from_slice(&read[..read.len().min(room)]);
        std::task::Poll::Ready(Ok(()))
    }
}

impl<IO: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Recording<IO> {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// The protocol versions (of those the server speaks) a ClientHello offers: those of its
/// `supported_versions` extension, else its legacy version (TLS 1.2 at most; TLS 1.3 needs
/// the extension). The server speaks both and picks TLS 1.3 when it is offered. rustls'
/// [`ClientHello`] does not show them, so they are read from the hello's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Offered {
    /// TLS 1.2 is offered.
    pub(crate) tls12: bool,
    /// TLS 1.3 is offered.
    pub(crate) tls13: bool,
}

impl Offered {
    /// Reads the versions from the records that carry a ClientHello (the first bytes of a
    /// connection); `None` when they do not hold one whole.
    pub(crate) fn read(records: &[u8]) -> Option<Offered> {
        // The handshake bytes, out of their records (a hello may span several).
        let mut handshake = vec![];
        let mut rest = Bytes(records);
        while !rest.0.is_empty() {
            let (kind, _version, length) = (rest.u8()?, rest.u16()?, rest.u16()?);
            if kind != 22 {
                return None;
            }
            handshake.extend_from_slice(rest.take(length.into())?);
            if let [_, a, b, c, ..] = handshake[..]
                && handshake.len() >= 4 + u24(a, b, c)
            {
                break;
            }
        }
        let mut msg = Bytes(&handshake);
        if msg.u8()? != 1 {
            return None;
        }
        let (a, b, c) = (msg.u8()?, msg.u8()?, msg.u8()?);
        let mut hello = Bytes(msg.take(u24(a, b, c))?);
        let legacy = hello.u16()?;
        hello.take(32)?; // random
        let n = hello.u8()?;
        hello.take(n.into())?; // session id
        let n = hello.u16()?;
        hello.take(n.into())?; // cipher suites
        let n = hello.u8()?;
        hello.take(n.into())?; // compression methods
        let mut offered = Offered {
            tls12: legacy >= 0x0303,
            tls13: false,
        };
        if hello.0.is_empty() {
            return Some(offered);
        }
        let n = hello.u16()?;
        let mut extensions = Bytes(hello.take(n.into())?);
        while !extensions.0.is_empty() {
            let (kind, n) = (extensions.u16()?, extensions.u16()?);
            let mut data = Bytes(extensions.take(n.into())?);
            if kind == 43 {
                let n = data.u8()?;
                let mut versions = Bytes(data.take(n.into())?);
                offered = Offered {
                    tls12: false,
                    tls13: false,
                };
                while !versions.0.is_empty() {
                    match versions.u16()? {
                        0x0303 => offered.tls12 = true,
                        0x0304 => offered.tls13 = true,
                        _ => {}
                    }
                }
            }
        }
        Some(offered)
    }

    /// A guess from what rustls shows, for a hello whose bytes did not parse: TLS 1.3 when a
    /// TLS 1.3 suite is offered, and TLS 1.2.
    pub(crate) fn guess(hello: &ClientHello<'_>) -> Offered {
        Offered {
            tls12: true,
            tls13: hello.cipher_suites().iter().any(|s| is_tls13_suite(*s)),
        }
    }
}

/// Whether `suite` is a TLS 1.3 cipher suite.
fn is_tls13_suite(suite: rustls::CipherSuite) -> bool {
    (0x1301..=0x1305).contains(&u16::from(suite))
}

fn u24(a: u8, b: u8, c: u8) -> usize {
    usize::from(a) << 16 | usize::from(b) << 8 | usize::from(c)
}

/// Big-endian reads off the front of a byte string.
struct Bytes<'a>(&'a [u8]);

impl<'a> Bytes<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }
}

/// Whether a client can take a certificate with an ECDSA P-256 key (signing with
/// `ecdsa_secp256r1_sha256`): it lists that scheme, and it offers TLS 1.3 and a TLS 1.3
/// suite (whose suites do not depend on the key; the server then speaks TLS 1.3) or TLS 1.2
/// and a TLS 1.2 ECDHE-ECDSA suite. The versions are those the hello offers ([`Offered`]),
/// not guessed from its suites: a client may list TLS 1.3 suites and offer TLS 1.2 only
/// (rustls' does when limited to TLS 1.2). The signature schemes are the hello's own, which
/// rustls has not yet narrowed to the suites.
pub(crate) fn accepts_ecdsa_p256(hello: &ClientHello<'_>, offered: Offered) -> bool {
    use rustls::CipherSuite as C;
    let suites = hello.cipher_suites();
    let tls13 = offered.tls13 && suites.iter().any(|s| is_tls13_suite(*s));
    let tls12_ecdsa = offered.tls12
        && suites.iter().any(|s| {
            matches!(
                *s,
                C::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
                    | C::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384
                    | C::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
            )
        });
    (tls13 || tls12_ecdsa)
        && hello
            .signature_schemes()
            .contains(&rustls::SignatureScheme::ECDSA_NISTP256_SHA256)
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
    use crate::default_certs::{DefaultCertificates, KeyType, RsaSlot};
    use rustls::SignatureScheme as S;
    use rustls::crypto::ring::cipher_suite as suite;
    use std::time::{Duration, Instant};
    use tokio::task::JoinHandle;

    const PKI: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/tests/fixtures/pki");

    /// Accepts any certificate and offers `schemes` in the ClientHello.
    #[derive(Debug)]
    struct Offering {
        inner: NoVerify,
        schemes: Vec<SignatureScheme>,
    }

    impl ServerCertVerifier for Offering {
        fn verify_server_cert(
            &self,
            e: &CertificateDer<'_>,
            i: &[CertificateDer<'_>],
            n: &ServerName<'_>,
            o: &[u8],
            t: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            self.inner.verify_server_cert(e, i, n, o, t)
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
            self.schemes.clone()
        }
    }

    /// A client of `versions`, offering `suites` and `schemes` (ring's all when `None`).
    fn client(
        versions: &[&'static rustls::SupportedProtocolVersion],
        suites: Option<Vec<rustls::SupportedCipherSuite>>,
        schemes: Option<Vec<SignatureScheme>>,
    ) -> Arc<rustls::ClientConfig> {
        let mut p = rustls::crypto::ring::default_provider();
        if let Some(suites) = suites {
            p.cipher_suites = suites;
        }
        let p = Arc::new(p);
        let schemes =
            schemes.unwrap_or_else(|| p.signature_verification_algorithms.supported_schemes());
        let verifier = Offering {
            inner: NoVerify(p.clone()),
            schemes,
        };
        let cfg = rustls::ClientConfig::builder_with_provider(p)
            .with_protocol_versions(versions)
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth();
        Arc::new(cfg)
    }

    const BOTH: &[&rustls::SupportedProtocolVersion] =
        &[&rustls::version::TLS13, &rustls::version::TLS12];
    const TLS13: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];
    const TLS12: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS12];

    fn rsa_schemes() -> Option<Vec<SignatureScheme>> {
        Some(vec![S::RSA_PSS_SHA256, S::RSA_PKCS1_SHA256])
    }

    /// Clients that cannot use an ECDSA certificate: TLS 1.3 with RSA schemes only, and TLS
    /// 1.2 with RSA suites only.
    fn clients_without_ecdsa() -> Vec<(&'static str, Arc<rustls::ClientConfig>)> {
        vec![
            ("TLS 1.3, RSA schemes", client(TLS13, None, rsa_schemes())),
            (
                "TLS 1.2, RSA suite",
                client(
                    TLS12,
                    Some(vec![suite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256]),
                    None,
                ),
            ),
        ]
    }

    /// The first bytes a client sends: its ClientHello's records.
    fn hello_bytes(config: Arc<rustls::ClientConfig>) -> Vec<u8> {
        let name = ServerName::try_from("example.test").unwrap();
        let mut c = rustls::ClientConnection::new(config, name).unwrap();
        let mut out = vec![];
        c.write_tls(&mut out).unwrap();
        out
    }

    /// What the server makes of a ClientHello: the versions read from it, and whether the
    /// client can take an ECDSA P-256 certificate.
    fn judge(bytes: &[u8]) -> (Offered, bool, Vec<rustls::CipherSuite>) {
        let mut a = rustls::server::Acceptor::default();
        a.read_tls(&mut &bytes[..]).unwrap();
        let Ok(Some(accepted)) = a.accept() else {
            panic!("a whole ClientHello")
        };
        let hello = accepted.client_hello();
        let offered = Offered::read(bytes).expect("the hello parses");
        (
            offered,
            accepts_ecdsa_p256(&hello, offered),
            hello.cipher_suites().to_vec(),
        )
    }

    #[test]
    fn ecdsa_p256_is_accepted_by_the_versions_and_suites_offered() {
        let yes = |v| Offered {
            tls12: v != 13,
            tls13: v != 12,
        };
        let cases = [
            (
                "every version, suite, scheme",
                client(BOTH, None, None),
                yes(0),
                true,
            ),
            ("TLS 1.3 only", client(TLS13, None, None), yes(13), true),
            (
                "TLS 1.3, RSA schemes only",
                client(TLS13, None, rsa_schemes()),
                yes(13),
                false,
            ),
            (
                "TLS 1.2, an ECDSA suite",
                client(
                    TLS12,
                    Some(vec![suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256]),
                    None,
                ),
                yes(12),
                true,
            ),
            (
                "TLS 1.2, an RSA suite, ECDSA schemes listed",
                client(
                    TLS12,
                    Some(vec![suite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256]),
                    None,
                ),
                yes(12),
                false,
            ),
            (
                "TLS 1.2, an ECDSA suite, RSA schemes only",
                client(
                    TLS12,
                    Some(vec![suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256]),
                    rsa_schemes(),
                ),
                yes(12),
                false,
            ),
        ];
        for (what, config, versions, accepts) in cases {
            let (offered, got, _) = judge(&hello_bytes(config));
            assert_eq!(offered, versions, "{what}");
            assert_eq!(got, accepts, "{what}");
        }
        // TLS 1.3 suites in the list but TLS 1.2 alone in supported_versions (rustls' client
        // limited to TLS 1.2 sends that): the server speaks TLS 1.2, where only the RSA
        // suite serves. Guessed from the suites, the versions would say TLS 1.3, and the
        // client would be taken for an ECDSA one.
        let config = client(
            TLS12,
            Some(vec![
                suite::TLS13_AES_128_GCM_SHA256,
                suite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
            ]),
            None,
        );
        let (offered, accepts, suites) = judge(&hello_bytes(config));
        assert!(suites.contains(&rustls::CipherSuite::TLS13_AES_128_GCM_SHA256));
        assert_eq!(offered, yes(12));
        assert!(!accepts);
    }

    #[test]
    fn versions_are_read_across_records_and_garbage_is_not_read() {
        let bytes = hello_bytes(client(TLS12, None, None));
        // The same handshake message in two records.
        let body = &bytes[5..];
        let (a, b) = body.split_at(body.len() / 2);
        let mut split = vec![];
        for part in [a, b] {
            split.extend_from_slice(&[22, 3, 1]);
            split.extend_from_slice(&(part.len() as u16).to_be_bytes());
            split.extend_from_slice(part);
        }
        let want = Offered {
            tls12: true,
            tls13: false,
        };
        assert_eq!(Offered::read(&bytes), Some(want));
        assert_eq!(Offered::read(&split), Some(want));
        assert_eq!(Offered::read(&split[..split.len() - 1]), None, "cut short");
        assert_eq!(Offered::read(b"GET / HTTP/1.1\r\n\r\n"), None);
        assert_eq!(Offered::read(&[]), None);
    }

    /// A generated ECDSA certificate and the RSA one of the test PKI.
    fn certificates() -> (Arc<CertifiedKey>, Arc<CertifiedKey>) {
        let ecdsa = crate::default_certs::generate(KeyType::EcdsaP256).unwrap();
        let rsa =
            crate::SslCert::parse(&format!("{PKI}/rsa.crt"), &format!("{PKI}/rsa.key")).load();
        let rsa = rsa.unwrap().certificates().next().unwrap().clone();
        (ecdsa.certified, rsa)
    }

    /// A pending set of default certificates (the ECDSA one alone), its RSA slot, and an
    /// admin-style listener serving it.
    fn pending() -> (
        Arc<DefaultCertificates>,
        RsaSlot,
        TlsListener,
        Arc<CertifiedKey>,
        Arc<CertifiedKey>,
    ) {
        let (ecdsa, rsa) = certificates();
        let (defaults, slot) = DefaultCertificates::pending(ecdsa.clone());
        let listener = TlsListener::defaults_only(defaults.clone(), false);
        (defaults, slot, listener, ecdsa, rsa)
    }

    /// The leaf certificate a client got, and its connection (kept open until the server's
    /// side is done).
    type Got = (
        CertificateDer<'static>,
        tokio_rustls::client::TlsStream<tokio::io::DuplexStream>,
    );

    /// A handshake over an in-memory pipe: the server's outcome, and the client's.
    fn handshake(
        listener: &TlsListener,
        timeout: Duration,
        client: Arc<rustls::ClientConfig>,
        sni: &'static str,
    ) -> (
        JoinHandle<std::io::Result<()>>,
        JoinHandle<std::io::Result<Got>>,
    ) {
        let (c, s) = tokio::io::duplex(1 << 16);
        let listener = listener.clone();
        let server =
            tokio::spawn(async move { listener.accept_within(s, timeout).await.map(|_| ()) });
        let client = tokio::spawn(async move {
            let name = ServerName::try_from(sni).unwrap();
            let tls = tokio_rustls::TlsConnector::from(client)
                .connect(name, c)
                .await?;
            let leaf = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
            Ok((leaf, tls))
        });
        (server, client)
    }

    const LONG: Duration = Duration::from_secs(30);

    /// Waits until `n` handshakes wait for the RSA certificate.
    async fn until_waiting(defaults: &DefaultCertificates, n: usize) {
        let start = Instant::now();
        while defaults.waiting() != n {
            assert!(start.elapsed() < LONG, "{n} handshakes should wait");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// (a) A client without ECDSA is held until the RSA certificate is there, then gets it.
    #[tokio::test]
    async fn a_client_without_ecdsa_waits_for_the_rsa_certificate() {
        let (defaults, slot, listener, _, rsa) = pending();
        let clients = clients_without_ecdsa();
        let runs: Vec<_> = clients
            .iter()
            .map(|(_, c)| handshake(&listener, LONG, c.clone(), "nothing.test"))
            .collect();
        until_waiting(&defaults, clients.len()).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        for ((what, _), (server, client)) in clients.iter().zip(&runs) {
            assert!(!server.is_finished() && !client.is_finished(), "{what}");
        }
        slot.publish(rsa.clone());
        assert!(!defaults.rsa_pending());
        for ((what, _), (server, client)) in clients.iter().zip(runs) {
            server
                .await
                .unwrap()
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            let (leaf, _) = client.await.unwrap().unwrap();
            assert_eq!(leaf, rsa.cert[0], "{what}: the RSA certificate");
        }
    }

    /// (b) When the RSA certificate never comes (its generation failed), a waiting
    /// handshake fails at once rather than at the timeout.
    #[tokio::test]
    async fn a_waiting_handshake_fails_promptly_without_the_rsa_certificate() {
        let (defaults, slot, listener, _, _) = pending();
        let (server, client) = handshake(
            &listener,
            LONG,
            client(TLS13, None, rsa_schemes()),
            "x.test",
        );
        until_waiting(&defaults, 1).await;
        let start = Instant::now();
        drop(slot);
        let outcome = tokio::time::timeout(Duration::from_secs(5), server).await;
        assert!(outcome.expect("prompt").unwrap().is_err(), "no certificate");
        assert!(client.await.unwrap().is_err());
        assert!(start.elapsed() < Duration::from_secs(5));
        assert_eq!(defaults.waiting(), 0);
    }

    /// (c) The handshake timeout runs during the wait.
    #[tokio::test]
    async fn the_handshake_timeout_bounds_the_wait() {
        let (defaults, _slot, listener, _, _) = pending();
        let timeout = Duration::from_millis(300);
        let start = Instant::now();
        let (server, client) = handshake(
            &listener,
            timeout,
            client(TLS13, None, rsa_schemes()),
            "x.test",
        );
        until_waiting(&defaults, 1).await;
        let e = tokio::time::timeout(Duration::from_secs(10), server)
            .await
            .expect("the timeout ends the wait")
            .unwrap()
            .unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::TimedOut, "{e}");
        assert!(start.elapsed() >= timeout);
        assert!(start.elapsed() < Duration::from_secs(10));
        assert!(client.await.unwrap().is_err(), "the connection is dropped");
        assert_eq!(defaults.waiting(), 0);
        assert!(
            defaults.rsa_pending(),
            "still pending: only the timeout ended it"
        );
    }

    /// (d) A client whose server name has a certificate of the configuration never waits;
    /// one whose name has none does.
    #[tokio::test]
    async fn a_configured_sni_does_not_wait() {
        let (ecdsa, rsa) = certificates();
        let (defaults, slot) = DefaultCertificates::pending(ecdsa);
        let settings = crate::Settings::loopback();
        let pem = |name: &str| std::fs::read_to_string(format!("{PKI}/{name}")).unwrap();
        let doc = serde_json::json!({
            "_format_version": "3.0",
            "certificates": [{
                "cert": pem("rsa.crt"), "key": pem("rsa.key"),
                "snis": [{"name": "example.test"}],
            }],
        });
        let options = silverback_config::LoadOptions {
            router_flavor: settings.router_flavor,
            plugins: &settings.plugins,
            now_unix: None,
        };
        let config = silverback_config::load_bytes(doc.to_string().as_bytes(), &options).unwrap();
        let env = crate::snapshot::BuildEnv {
            runtime: &tokio::runtime::Handle::current(),
            balancer: &settings.balancer,
        };
        let snapshot = crate::snapshot::Snapshot::build(
            config,
            "hash".into(),
            settings.router_flavor,
            &env,
            None,
            true,
        )
        .unwrap();
        let listener = TlsListener::proxy(
            Arc::new(ArcSwap::from_pointee(snapshot)),
            defaults.clone(),
            false,
        );
        let (server, client_run) = handshake(
            &listener,
            LONG,
            client(TLS13, None, rsa_schemes()),
            "example.test",
        );
        let (leaf, _open) = tokio::time::timeout(Duration::from_secs(10), client_run)
            .await
            .expect("no wait")
            .unwrap()
            .unwrap();
        server.await.unwrap().unwrap();
        assert_eq!(leaf, rsa.cert[0], "the configured certificate");
        assert!(defaults.rsa_pending());
        let (server, client_run) = handshake(
            &listener,
            LONG,
            client(TLS13, None, rsa_schemes()),
            "other.test",
        );
        until_waiting(&defaults, 1).await;
        drop(slot);
        assert!(server.await.unwrap().is_err());
        assert!(client_run.await.unwrap().is_err());
    }

    /// (e) A client that can use ECDSA gets the ECDSA certificate at once.
    #[tokio::test]
    async fn an_ecdsa_client_does_not_wait() {
        let (defaults, _slot, listener, ecdsa, _) = pending();
        for (what, config) in [
            ("every version", client(BOTH, None, None)),
            (
                "TLS 1.2, an ECDSA suite",
                client(
                    TLS12,
                    Some(vec![suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256]),
                    None,
                ),
            ),
        ] {
            let (server, client) = handshake(&listener, LONG, config, "nothing.test");
            let (leaf, _open) = tokio::time::timeout(Duration::from_secs(10), client)
                .await
                .unwrap_or_else(|_| panic!("{what}: no wait"))
                .unwrap()
                .unwrap();
            server.await.unwrap().unwrap();
            assert_eq!(leaf, ecdsa.cert[0], "{what}");
        }
        assert!(defaults.rsa_pending());
        assert_eq!(defaults.waiting(), 0);
    }

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
