//! TLS: certificates chosen by SNI from the configuration (Kong's `find_certificate` order),
//! the default certificates ([`crate::default_certs`]), and client configurations for TLS
//! upstreams.
//!
//! Lookup order for a ClientHello server name `n`: the exact name, `*.<n minus its first
//! label>` (when two labels or more remain), `<n minus its last label>.*`, an SNI entity
//! named `*`, then the default certificates. No server name gets the default certificates
//! (nor does an IP address sent as a server name, which rustls takes for none, where Kong
//! would serve `*`'s certificate to it). A certificate with `cert_alt`
//! offers both keys, and the default certificates offer one key per type; the client's
//! preference decides, as OpenSSL's does in Kong (`ssl_prefer_server_ciphers off`, Kong's
//! default): in TLS 1.3 the key that can sign with the first signature scheme the client
//! lists; in TLS 1.2, where the key follows the cipher suite, the key for the first suite in
//! the client's order that some loaded key the client can take serves ([`CertSet::choose`]).
//! That version is the one the ClientHello offers, read from its bytes
//! as they arrive ([`Offered`]): every handshake starts by reading the ClientHello
//! (`TlsListener`), and the listener hands it to a server configuration whose certificate
//! resolver knows the version (rustls' view of the hello lacks it). While a generated RSA
//! default certificate is on its way, a client that needs that certificate waits for it
//! there rather than failing.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{CipherSuite, DigitallySignedStruct, SignatureAlgorithm, SignatureScheme};
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
    /// `main` first, then its alternatives.
    keys: Vec<Candidate>,
}

/// A certificate of a [`CertSet`], with what its key can do, found once when the set is
/// made so that a handshake's choice asks the key nothing (asking allocates).
#[derive(Debug)]
struct Candidate {
    certified: Arc<CertifiedKey>,
    algorithm: SignatureAlgorithm,
    /// The schemes of [`SCHEMES`] the key signs with.
    schemes: Vec<SignatureScheme>,
}

/// The signature schemes a certificate's key is asked about: every scheme rustls names (a
/// scheme it does not name has no signer in it either).
const SCHEMES: &[SignatureScheme] = {
    use SignatureScheme as S;
    &[
        S::RSA_PKCS1_SHA1,
        S::ECDSA_SHA1_Legacy,
        S::RSA_PKCS1_SHA256,
        S::ECDSA_NISTP256_SHA256,
        S::RSA_PKCS1_SHA384,
        S::ECDSA_NISTP384_SHA384,
        S::RSA_PKCS1_SHA512,
        S::ECDSA_NISTP521_SHA512,
        S::RSA_PSS_SHA256,
        S::RSA_PSS_SHA384,
        S::RSA_PSS_SHA512,
        S::ED25519,
        S::ED448,
        S::ML_DSA_44,
        S::ML_DSA_65,
        S::ML_DSA_87,
    ]
};

impl Candidate {
    fn new(certified: Arc<CertifiedKey>) -> Candidate {
        let schemes = SCHEMES
            .iter()
            .copied()
            .filter(|s| {
                certified
                    .key
                    .choose_scheme(std::slice::from_ref(s))
                    .is_some()
            })
            .collect();
        Candidate {
            algorithm: certified.key.algorithm(),
            certified,
            schemes,
        }
    }
}

impl CertSet {
    /// A set of `main` and its alternatives; `main` answers a client that can use none.
    pub fn new(main: Arc<CertifiedKey>, alts: Vec<Arc<CertifiedKey>>) -> CertSet {
        let keys = std::iter::once(main)
            .chain(alts)
            .map(Candidate::new)
            .collect();
        CertSet { keys }
    }

    /// The certificates, `main` first.
    pub fn certificates(&self) -> impl Iterator<Item = &Arc<CertifiedKey>> {
        self.keys.iter().map(|k| &k.certified)
    }

    /// The certificate for a client whose handshake speaks `version`, as OpenSSL chooses
    /// in Kong (whose default cipher configuration has `ssl_prefer_server_ciphers off`).
    ///
    /// In TLS 1.3 the suite does not depend on the key: the first key that can sign with the
    /// first signature scheme the client lists, schemes TLS 1.3 forbids skipped (as OpenSSL
    /// skips them), else `main`.
    ///
    /// In TLS 1.2 the certificate follows the cipher suite, which OpenSSL picks by walking
    /// the client's suites in the client's order: the first TLS 1.2 suite of the client's
    /// that the server speaks and for which a key is loaded that the client can take (one
    /// of the suite's key type, ECDHE-ECDSA for ECDSA and Ed25519, ECDHE-RSA for RSA, that
    /// signs with a scheme the client lists) decides, and that key serves. The schemes'
    /// order does not matter there. (rustls then picks that same suite: it too follows the
    /// client's order among the suites the chosen key can serve.) With no such suite, the
    /// first key a suite of the client's can use, else `main` (the handshake fails then).
    ///
    /// Nothing is allocated: the client's lists are walked as they are.
    pub(crate) fn choose(&self, hello: &ClientHello<'_>, version: Version) -> Arc<CertifiedKey> {
        if let [only] = &self.keys[..] {
            return only.certified.clone();
        }
        let schemes = hello.signature_schemes();
        match version {
            Version::Tls13 => {
                for scheme in schemes {
                    if !usable_in_tls13(*scheme) {
                        continue;
                    }
                    if let Some(k) = self.keys.iter().find(|k| k.schemes.contains(scheme)) {
                        return k.certified.clone();
                    }
                }
                self.keys[0].certified.clone()
            }
            Version::Tls12 => {
                let takes = |k: &Candidate| k.schemes.iter().any(|s| schemes.contains(s));
                for offered in hello.cipher_suites() {
                    let Some(suite) = tls12_suite(*offered) else {
                        continue;
                    };
                    if let Some(k) = self
                        .keys
                        .iter()
                        .find(|k| suite.usable_for_signature_algorithm(k.algorithm) && takes(k))
                    {
                        return k.certified.clone();
                    }
                }
                let keys = Tls12Keys::offered(hello.cipher_suites());
                self.keys
                    .iter()
                    .find(|k| keys.can_use(k.algorithm))
                    .unwrap_or(&self.keys[0])
                    .certified
                    .clone()
            }
        }
    }
}

/// The TLS 1.2 suite of the server's (those of [`server_config`]'s provider) named `id`.
fn tls12_suite(id: CipherSuite) -> Option<&'static rustls::SupportedCipherSuite> {
    rustls::crypto::ring::DEFAULT_CIPHER_SUITES
        .iter()
        .find(|s| s.suite() == id && s.tls13().is_none())
}

/// The key types the TLS 1.2 cipher suites a client offers can serve, of the suites the
/// server speaks (those of [`server_config`]'s provider): an ECDHE-RSA suite needs an RSA
/// key, an ECDHE-ECDSA one an ECDSA or Ed25519 key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Tls12Keys {
    rsa: bool,
    ecdsa: bool,
    ed25519: bool,
}

impl Tls12Keys {
    fn offered(suites: &[CipherSuite]) -> Tls12Keys {
        let mut keys = Tls12Keys::default();
        for ours in rustls::crypto::ring::DEFAULT_CIPHER_SUITES {
            if ours.tls13().is_some() || !suites.contains(&ours.suite()) {
                continue;
            }
            keys.rsa |= ours.usable_for_signature_algorithm(SignatureAlgorithm::RSA);
            keys.ecdsa |= ours.usable_for_signature_algorithm(SignatureAlgorithm::ECDSA);
            keys.ed25519 |= ours.usable_for_signature_algorithm(SignatureAlgorithm::ED25519);
        }
        keys
    }

    fn can_use(self, algorithm: SignatureAlgorithm) -> bool {
        match algorithm {
            SignatureAlgorithm::RSA => self.rsa,
            SignatureAlgorithm::ECDSA => self.ecdsa,
            SignatureAlgorithm::ED25519 => self.ed25519,
            _ => false,
        }
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
        // name key -> (the entity's name as given, its certificates)
        let mut by_name: HashMap<String, (&str, Arc<CertSet>)> = HashMap::new();
        for s in &config.snis {
            let Some(p) = pairs.get(&s.certificate.id) else {
                continue;
            };
            let key = sni_key(&s.name).into_owned();
            match by_name.get_mut(&key) {
                None => {
                    by_name.insert(key, (&s.name, p.clone()));
                }
                Some(held) => {
                    // Kong keeps `A.test` and `a.test` (or `a.test.`) apart, matching each
                    // only to a client sending exactly that name; rustls gives the name
                    // lowercased and `sni_key` drops its trailing dot, so one key serves both: the
                    // name already in that form wins (the name clients send), else the
                    // first.
                    let (kept, dropped) = if s.name == key && held.0 != key {
                        let dropped = held.0;
                        *held = (&s.name, p.clone());
                        (s.name.as_str(), dropped)
                    } else {
                        (held.0, s.name.as_str())
                    };
                    tracing::warn!(
                        sni = %dropped,
                        serves = %kept,
                        "two SNIs differ only in case or a trailing dot, which a client's \
                         server name does not show: this one is not used"
                    );
                }
            }
        }
        let by_name = by_name.into_iter().map(|(k, (_, p))| (k, p)).collect();
        Ok(CertStore { by_name })
    }

    /// The certificate for a server name, in Kong's lookup order (`find_certificate` and
    /// `produce_wild_snis` in `kong/runloop/certificate.lua`): the exact name, `*.<the name
    /// without its first label>` when that leaves two labels or more (Kong's pattern needs
    /// three: `example.com` does not look up `*.com`), `<the name without its last
    /// label>.*`, then the catch-all `*`; `None` (no name, or none of these) means the
    /// default certificates. Names compare as [`sni_key`] gives them.
    pub fn lookup(&self, sni: Option<&str>) -> Option<&Arc<CertSet>> {
        let name = sni_key(sni?);
        if let Some(p) = self.by_name.get(name.as_ref()) {
            return Some(p);
        }
        if let Some((_, rest)) = name.split_once('.')
            && rest.contains('.')
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

/// The form a server name is compared in: ASCII lowercase, without one trailing dot. rustls'
/// server gives a client's name lowercased but keeps a trailing dot, which this drops; a
/// configured SNI name takes the same form, so `Example.test.` serves `example.test` and
/// `example.test.`. The exception is a configured `*.`, which Kong accepts
/// (`wildcard_host` checks it as `wildcard.`) and whose certificate no lookup of Kong's ever
/// reaches: it keeps its dot, which no lookup here asks for either, rather than becoming the
/// catch-all `*`.
pub(crate) fn sni_key(name: &str) -> std::borrow::Cow<'_, str> {
    let name = match name.strip_suffix('.') {
        Some(n) if n != "*" => n,
        _ => name,
    };
    if name.bytes().any(|b| b.is_ascii_uppercase()) {
        std::borrow::Cow::Owned(name.to_ascii_lowercase())
    } else {
        std::borrow::Cow::Borrowed(name)
    }
}

/// The certificate resolver of TLS listeners: reads the current snapshot's certificates,
/// so a configuration swap changes certificates without touching listeners.
#[derive(Debug)]
pub struct SniResolver {
    pub(crate) snapshot: Arc<ArcSwap<crate::snapshot::Snapshot>>,
    pub(crate) default: Arc<DefaultCertificates>,
    /// The protocol version of the handshakes it serves.
    pub(crate) version: Version,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let snap = self.snapshot.load();
        match snap.certs.lookup(hello.server_name()) {
            Some(p) => Some(p.choose(&hello, self.version)),
            None => Some(self.default.choose(&hello, self.version)),
        }
    }
}

/// The resolver of `ssl` admin and status listeners: their default certificates only, as
/// Kong's admin and status servers have `ssl_certificate` lines and no certificate phase.
/// The second field is the protocol version of the handshakes it serves.
#[derive(Debug)]
pub struct DefaultsOnly(pub(crate) Arc<DefaultCertificates>, pub(crate) Version);

impl ResolvesServerCert for DefaultsOnly {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.choose(&hello, self.1))
    }
}

/// How many TLS sessions a [`Sessions`] cache of proxy or admin listeners holds: about what
/// Kong's `ssl_session_cache shared:SSL:10m` (`ssl_session_cache_size`'s default) and
/// `shared:AdminSSL:10m` hold (nginx counts some 4000 sessions per megabyte).
pub(crate) const SESSION_CACHE_SIZE: usize = 40_000;

/// How many TLS sessions the [`Sessions`] cache of status listeners holds: about what Kong's
/// `ssl_session_cache shared:StatusSSL:1m` holds.
pub(crate) const STATUS_SESSION_CACHE_SIZE: usize = 4_000;

/// Session resumption of the TLS listeners of one kind (proxy, admin or status), shared by
/// all of them and by both server configurations of each, as nginx's one `server` block
/// per kind shares its session cache and ticket keys (Kong: `ssl_session_tickets on`,
/// `ssl_session_cache shared:SSL:10m`, with `AdminSSL`/`StatusSSL` caches of their own).
/// Listeners outlive configuration swaps, so swaps keep the sessions. TLS 1.3 resumes with
/// stateless tickets (rustls' ring `Ticketer`: ChaCha20-Poly1305, keys rotated every 6 hours,
/// tickets valid for 12), TLS 1.2 with tickets or, for a client without them, a session
/// id kept in a cache of [`SESSION_CACHE_SIZE`] entries ([`STATUS_SESSION_CACHE_SIZE`] for
/// status listeners).
#[derive(Clone)]
pub(crate) struct Sessions {
    cache: Arc<dyn rustls::server::StoresServerSessions>,
    /// `None` when the ticket keys could not be made (no randomness): sessions then resume
    /// by the cache alone.
    ticketer: Option<Arc<dyn rustls::server::ProducesTickets>>,
}

impl Sessions {
    /// A new cache of the size Kong gives `kind`'s, and a ticketer.
    pub(crate) fn for_kind(kind: crate::gateway::ListenerKind) -> Sessions {
        Sessions::new(match kind {
            crate::gateway::ListenerKind::Status => STATUS_SESSION_CACHE_SIZE,
            _ => SESSION_CACHE_SIZE,
        })
    }

    /// A new cache of `capacity` sessions and ticketer.
    pub(crate) fn new(capacity: usize) -> Sessions {
        let ticketer = match rustls::crypto::ring::Ticketer::new() {
            Ok(t) => Some(t),
            Err(e) => {
                tracing::error!(error = %e, "cannot make TLS session ticket keys: sessions resume by id only");
                None
            }
        };
        Sessions {
            cache: rustls::server::ServerSessionMemoryCache::new(capacity),
            ticketer,
        }
    }

    /// Sets `config` to resume sessions with these.
    fn apply(&self, config: &mut rustls::ServerConfig) {
        config.session_storage = self.cache.clone();
        if let Some(t) = &self.ticketer {
            config.ticketer = t.clone();
        }
    }
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions")
            .field("tickets", &self.ticketer.is_some())
            .finish_non_exhaustive()
    }
}

/// The handshakes of one TLS listener. Each starts by reading the ClientHello, the protocol
/// versions it offers scanned from its bytes as they pass ([`Offered`], [`HelloScan`]);
/// the handshake then goes on with the server configuration of the version it will speak,
/// whose certificate resolver chooses for that version ([`CertSet::choose`]). While a
/// generated RSA default certificate is on its way ([`DefaultCertificates::rsa_pending`]),
/// a client that would get the default certificates and cannot use the ECDSA one
/// ([`accepts_ecdsa_p256`]) first waits for the RSA one, within the handshake timeout
/// ([`TlsListener::accept_within`]), instead of failing; every other client goes on at once.
#[derive(Clone)]
pub(crate) struct TlsListener {
    /// The server configurations of handshakes that speak TLS 1.2 and TLS 1.3: the same but
    /// for their resolvers' version (they share session storage and ticketer).
    tls12: Arc<rustls::ServerConfig>,
    tls13: Arc<rustls::ServerConfig>,
    /// TLS 1.3 is allowed (else every handshake takes the TLS 1.2 configuration).
    tls13_on: bool,
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
        sessions: &Sessions,
        versions: crate::TlsVersions,
    ) -> TlsListener {
        let resolver = |version| -> Arc<dyn ResolvesServerCert> {
            Arc::new(SniResolver {
                snapshot: snapshot.clone(),
                default: defaults.clone(),
                version,
            })
        };
        let (tls12, tls13) = server_configs(resolver, http2, sessions, versions);
        TlsListener {
            tls12,
            tls13,
            tls13_on: versions.tls13,
            defaults,
            snapshot: Some(snapshot),
        }
    }

    /// An admin or status listener: `defaults` only.
    pub(crate) fn defaults_only(
        defaults: Arc<DefaultCertificates>,
        http2: bool,
        sessions: &Sessions,
        versions: crate::TlsVersions,
    ) -> TlsListener {
        let resolver = |version| -> Arc<dyn ResolvesServerCert> {
            Arc::new(DefaultsOnly(defaults.clone(), version))
        };
        let (tls12, tls13) = server_configs(resolver, http2, sessions, versions);
        TlsListener {
            tls12,
            tls13,
            tls13_on: versions.tls13,
            defaults,
            snapshot: None,
        }
    }

    /// The server side of a handshake on `io`, bounded by `timeout` (the gateway's own
    /// setting, within the first head's `client_header_timeout`, which bounds the handshake
    /// in nginx) from the first byte to the last, a wait for the RSA
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
        let start = tokio_rustls::LazyConfigAcceptor::new(
            rustls::server::Acceptor::default(),
            Scanning::new(io),
        )
        .await?;
        let tokio_rustls::StartHandshake { accepted, io, .. } = start;
        let Scanning { io, scan } = io;
        let start = tokio_rustls::StartHandshake::from_parts(accepted, io);
        let hello = start.client_hello();
        let mut offered = scan.offered().unwrap_or_else(|| Offered::guess(&hello));
        // Without TLS 1.3 on this listener, the handshake speaks TLS 1.2 whatever else is
        // offered, and its certificate is chosen (or waited for) by TLS 1.2's rules.
        offered.tls13 &= self.tls13_on;
        if self.waits_for_rsa(&hello, offered) {
            self.defaults.rsa_settled().await;
        }
        let config = match offered.version() {
            Version::Tls12 => &self.tls12,
            Version::Tls13 => &self.tls13,
        };
        start.into_stream(config.clone()).await
    }

    /// Whether the client would get the default certificates and needs the RSA one, which
    /// is still on its way.
    fn waits_for_rsa(&self, hello: &ClientHello<'_>, offered: Offered) -> bool {
        if !self.defaults.rsa_pending() {
            return false;
        }
        if let Some(snapshot) = &self.snapshot
            && snapshot.load().certs.lookup(hello.server_name()).is_some()
        {
            return false;
        }
        self.defaults.waits_for_rsa(hello, offered)
    }
}

/// An `io` that scans the bytes read through it for the versions of the ClientHello they
/// start with ([`HelloScan`]), keeping none of them; writes pass through.
struct Scanning<IO> {
    io: IO,
    scan: HelloScan,
}

impl<IO> Scanning<IO> {
    fn new(io: IO) -> Scanning<IO> {
        Scanning {
            io,
            scan: HelloScan::default(),
        }
    }
}

impl<IO: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Scanning<IO> {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        std::task::ready!(std::pin::Pin::new(&mut this.io).poll_read(cx, buf))?;
        this.scan.feed(&buf.filled()[before..]);
        std::task::Poll::Ready(Ok(()))
    }
}

impl<IO: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Scanning<IO> {
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

/// The protocol version a handshake speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Version {
    Tls12,
    Tls13,
}

impl Offered {
    /// Reads the versions from the records that carry a ClientHello (the first bytes of a
    /// connection); `None` when they do not hold one whole.
    #[cfg(test)]
    pub(crate) fn read(records: &[u8]) -> Option<Offered> {
        let mut scan = HelloScan::default();
        scan.feed(records);
        scan.offered()
    }

    /// A guess from what rustls shows, for a hello whose bytes did not parse: TLS 1.3 when a
    /// TLS 1.3 suite is offered, and TLS 1.2.
    pub(crate) fn guess(hello: &ClientHello<'_>) -> Offered {
        Offered {
            tls12: true,
            tls13: hello.cipher_suites().iter().any(|s| is_tls13_suite(*s)),
        }
    }

    /// The version the server speaks with a client offering these: TLS 1.3 when offered,
    /// else TLS 1.2 (a client offering neither is refused whatever is chosen).
    pub(crate) fn version(self) -> Version {
        if self.tls13 {
            Version::Tls13
        } else {
            Version::Tls12
        }
    }
}

/// A reader of the versions a ClientHello offers ([`Offered`]), fed the first bytes of a
/// connection as they arrive: TLS records of the handshake type, whose payloads carry the
/// hello, possibly across several records and reads. It keeps a few counters and none of
/// the bytes, and stops at the end of the hello (or at the first byte that cannot belong
/// to one).
#[derive(Debug, Clone)]
pub(crate) struct HelloScan {
    state: ScanState,
    /// Bytes of the current record's header seen (0 to 4), and its length's first byte.
    header_seen: u8,
    length_high: u8,
    /// Payload bytes of the current record still to come.
    record_left: usize,
    /// The hello's field being read, its size in bytes, and how many of them are seen.
    field: Field,
    size: usize,
    seen: usize,
    /// The value of a numeric field so far.
    value: usize,
    /// Handshake bytes seen, the message's 4-byte header included.
    at: usize,
    /// Where the hello message, its extensions, the current extension and the version list
    /// of a `supported_versions` extension end (as `at` counts).
    hello_end: usize,
    extensions_end: usize,
    extension_end: usize,
    versions_end: usize,
    /// The type of the current extension.
    extension: usize,
    offered: Offered,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ScanState {
    Reading,
    Done,
    Failed,
}

/// The fields of a ClientHello (RFC 8446 §4.1.2), in order; numbers are big-endian.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    /// The handshake message type (1: ClientHello), 1 byte.
    Type,
    /// The message's length, 3 bytes.
    Length,
    /// `legacy_version`, 2 bytes.
    LegacyVersion,
    Random,
    SessionIdLength,
    SessionId,
    SuitesLength,
    Suites,
    CompressionLength,
    Compression,
    ExtensionsLength,
    ExtensionType,
    ExtensionLength,
    /// An extension's data (after a version list: the rest of it).
    Extension,
    /// The length of a `supported_versions` extension's list, 1 byte.
    VersionsLength,
    /// One version of that list, 2 bytes.
    Version,
}

impl Field {
    /// Whether the field's value is read (else its bytes are skipped).
    fn is_number(self) -> bool {
        !matches!(
            self,
            Field::Random
                | Field::SessionId
                | Field::Suites
                | Field::Compression
                | Field::Extension
        )
    }
}

impl Default for HelloScan {
    fn default() -> HelloScan {
        HelloScan {
            state: ScanState::Reading,
            header_seen: 0,
            length_high: 0,
            record_left: 0,
            field: Field::Type,
            size: 1,
            seen: 0,
            value: 0,
            at: 0,
            hello_end: 0,
            extensions_end: 0,
            extension_end: 0,
            versions_end: 0,
            extension: 0,
            offered: Offered {
                tls12: false,
                tls13: false,
            },
        }
    }
}

impl HelloScan {
    /// The `supported_versions` extension's type.
    const SUPPORTED_VERSIONS: usize = 43;

    /// The versions, once a whole hello has been read.
    pub(crate) fn offered(&self) -> Option<Offered> {
        (self.state == ScanState::Done).then_some(self.offered)
    }

    /// Reads the next bytes of the connection.
    pub(crate) fn feed(&mut self, mut bytes: &[u8]) {
        while let [first, rest @ ..] = bytes
            && self.state == ScanState::Reading
        {
            if self.record_left == 0 {
                // A record header: type (22, handshake), version, length.
                match self.header_seen {
                    0 if *first != 22 => self.state = ScanState::Failed,
                    3 => self.length_high = *first,
                    4 => {
                        self.record_left = usize::from(self.length_high) << 8 | usize::from(*first)
                    }
                    _ => {}
                }
                self.header_seen = (self.header_seen + 1) % 5;
                bytes = rest;
                continue;
            }
            let (payload, rest) = bytes.split_at(bytes.len().min(self.record_left));
            self.record_left -= payload.len();
            self.handshake(payload);
            bytes = rest;
        }
    }

    /// Reads handshake bytes.
    fn handshake(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() && self.state == ScanState::Reading {
            let (part, rest) = bytes.split_at(bytes.len().min(self.size - self.seen));
            if self.field.is_number() {
                for b in part {
                    self.value = self.value << 8 | usize::from(*b);
                }
            }
            self.seen += part.len();
            self.at += part.len();
            bytes = rest;
            if self.seen == self.size {
                self.next();
            }
        }
    }

    /// Moves on from the field just read (its value in `self.value`).
    fn next(&mut self) {
        let v = std::mem::take(&mut self.value);
        let (field, size) = match self.field {
            Field::Type if v != 1 => return self.state = ScanState::Failed,
            Field::Type => (Field::Length, 3),
            Field::Length => {
                self.hello_end = self.at + v;
                (Field::LegacyVersion, 2)
            }
            Field::LegacyVersion => {
                self.offered = Offered {
                    tls12: v >= 0x0303,
                    tls13: false,
                };
                (Field::Random, 32)
            }
            Field::Random => (Field::SessionIdLength, 1),
            Field::SessionIdLength => (Field::SessionId, v),
            Field::SessionId => (Field::SuitesLength, 2),
            Field::SuitesLength => (Field::Suites, v),
            Field::Suites => (Field::CompressionLength, 1),
            Field::CompressionLength => (Field::Compression, v),
            // (no extensions at all)
            Field::Compression if self.at == self.hello_end => {
                return self.state = ScanState::Done;
            }
            Field::Compression => (Field::ExtensionsLength, 2),
            Field::ExtensionsLength => {
                self.extensions_end = self.at + v;
                if self.extensions_end > self.hello_end {
                    return self.state = ScanState::Failed;
                }
                return self.next_extension();
            }
            Field::ExtensionType => {
                self.extension = v;
                (Field::ExtensionLength, 2)
            }
            Field::ExtensionLength => {
                self.extension_end = self.at + v;
                if self.extension_end > self.extensions_end {
                    return self.state = ScanState::Failed;
                }
                if self.extension == Self::SUPPORTED_VERSIONS {
                    (Field::VersionsLength, 1)
                } else {
                    (Field::Extension, v)
                }
            }
            Field::Extension => return self.next_extension(),
            Field::VersionsLength => {
                self.versions_end = self.at + v;
                if self.versions_end > self.extension_end {
                    return self.state = ScanState::Failed;
                }
                // (the extension replaces the legacy version)
                self.offered = Offered {
                    tls12: false,
                    tls13: false,
                };
                return self.next_version();
            }
            Field::Version => {
                match v {
                    0x0303 => self.offered.tls12 = true,
                    0x0304 => self.offered.tls13 = true,
                    _ => {}
                }
                return self.next_version();
            }
        };
        self.start(field, size);
    }

    fn next_extension(&mut self) {
        if self.at == self.extensions_end {
            // (the extensions end the hello: bytes left after them, or a message longer
            // than its fields, are not a hello)
            self.state = if self.at == self.hello_end {
                ScanState::Done
            } else {
                ScanState::Failed
            };
        } else {
            self.start(Field::ExtensionType, 2);
        }
    }

    fn next_version(&mut self) {
        if self.at == self.versions_end {
            self.start(Field::Extension, self.extension_end - self.at);
        } else {
            self.start(Field::Version, 2);
        }
    }

    /// Starts reading `field`, of `size` bytes, which must end within what holds it.
    fn start(&mut self, field: Field, size: usize) {
        let end = match field {
            Field::Type | Field::Length => usize::MAX,
            Field::LegacyVersion
            | Field::Random
            | Field::SessionIdLength
            | Field::SessionId
            | Field::SuitesLength
            | Field::Suites
            | Field::CompressionLength
            | Field::Compression
            | Field::ExtensionsLength => self.hello_end,
            Field::ExtensionType | Field::ExtensionLength => self.extensions_end,
            Field::Extension | Field::VersionsLength => self.extension_end,
            Field::Version => self.versions_end,
        };
        if self.at + size > end {
            self.state = ScanState::Failed;
            return;
        }
        (self.field, self.size, self.seen) = (field, size, 0);
        if size == 0 {
            self.next();
        }
    }
}

/// Whether `suite` is a TLS 1.3 cipher suite.
fn is_tls13_suite(suite: rustls::CipherSuite) -> bool {
    (0x1301..=0x1305).contains(&u16::from(suite))
}

/// Whether a client can take a certificate with an ECDSA P-256 key (signing with
/// `ecdsa_secp256r1_sha256`): it lists that scheme, and it offers TLS 1.3 and a TLS 1.3
/// suite (whose suites do not depend on the key; the server then speaks TLS 1.3) or TLS 1.2
/// and a TLS 1.2 ECDHE-ECDSA suite. The versions are those the hello offers ([`Offered`]),
/// not guessed from its suites: a client may list TLS 1.3 suites and offer TLS 1.2 only
/// (rustls' does when limited to TLS 1.2). The signature schemes are the hello's own, which
/// rustls has not yet narrowed to the suites.
pub(crate) fn accepts_ecdsa_p256(hello: &ClientHello<'_>, offered: Offered) -> bool {
    let suites = hello.cipher_suites();
    let tls13 = offered.tls13 && suites.iter().any(|s| is_tls13_suite(*s));
    let tls12_ecdsa = offered.tls12 && Tls12Keys::offered(suites).ecdsa;
    (tls13 || tls12_ecdsa)
        && hello
            .signature_schemes()
            .contains(&rustls::SignatureScheme::ECDSA_NISTP256_SHA256)
}

/// The server configurations of a TLS listener for handshakes that speak TLS 1.2 and TLS
/// 1.3, with the certificate resolvers `resolver` makes for each version.
///
/// Both speak the `versions` allowed: a client offering only TLS 1.2 to a listener without
/// it is refused (rustls's `protocol_version` alert), and without TLS 1.3 every client is
/// handed the TLS 1.2 configuration ([`TlsListener::accept`]).
fn server_configs(
    resolver: impl Fn(Version) -> Arc<dyn ResolvesServerCert>,
    http2: bool,
    sessions: &Sessions,
    versions: crate::TlsVersions,
) -> (Arc<rustls::ServerConfig>, Arc<rustls::ServerConfig>) {
    let mut allowed: Vec<&'static rustls::SupportedProtocolVersion> = Vec::with_capacity(2);
    if versions.tls13 {
        allowed.push(&rustls::version::TLS13);
    }
    if versions.tls12 {
        allowed.push(&rustls::version::TLS12);
    }
    let mut tls13 = Arc::unwrap_or_clone(server_config_with(
        resolver(Version::Tls13),
        http2,
        &allowed,
    ));
    sessions.apply(&mut tls13);
    let mut tls12 = tls13.clone();
    tls12.cert_resolver = resolver(Version::Tls12);
    (Arc::new(tls12), Arc::new(tls13))
}

/// The server configuration of a TLS listener (TLS 1.2 and 1.3).
pub fn server_config(
    resolver: Arc<dyn ResolvesServerCert>,
    http2: bool,
) -> Arc<rustls::ServerConfig> {
    server_config_with(resolver, http2, rustls::ALL_VERSIONS)
}

/// The server configuration of a TLS listener speaking `versions`.
fn server_config_with(
    resolver: Arc<dyn ResolvesServerCert>,
    http2: bool,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = match rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
    {
        Ok(b) => b.with_no_client_auth().with_cert_resolver(resolver),
        // The ring provider supports every protocol version; unreachable in practice.
        Err(_) => rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_cert_resolver(resolver),
    };
    // nginx's list (`NGX_HTTP_ALPN_PROTOS`, after `h2` where HTTP/2 is on), in its order of
    // preference: a client offering only `http/1.0` is served HTTP/1 rather than refused
    // with `no_application_protocol` (a connection that agreed on anything but `h2` is
    // served as HTTP/1).
    let mut protocols = Vec::with_capacity(4);
    if http2 {
        protocols.push(b"h2".to_vec());
    }
    protocols.extend([
        b"http/1.1".to_vec(),
        b"http/1.0".to_vec(),
        b"http/0.9".to_vec(),
    ]);
    cfg.alpn_protocols = protocols;
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
        // (nginx's proxy module offers no ALPN to an https upstream; its gRPC module offers
        // `h2`)
        let mk = |alpn: Option<&[u8]>| -> Result<Arc<rustls::ClientConfig>, String> {
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
            c.alpn_protocols = alpn.into_iter().map(<[u8]>::to_vec).collect();
            Ok(Arc::new(c))
        };
        Ok(UpstreamTls {
            policy: self.digest(),
            h1: mk(None)?,
            h2: mk(Some(b"h2"))?,
        })
    }
}

/// WebPKI verification plus nginx's `proxy_ssl_verify_depth`: the chain the upstream
/// presents may hold at most `depth` intermediates besides the leaf (a presented copy of a
/// trust anchor does not count), as OpenSSL's verify depth allows the leaf, `depth`
/// intermediates and the trust anchor (depth 0: a leaf the anchor signed itself).
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
        let between = intermediates
            .iter()
            .filter(|c| !self.anchors.iter().any(|a| a.as_slice() == c.as_ref()))
            .count();
        if between > usize::from(self.depth) {
            return Err(rustls::Error::General(format!(
                "certificate chain too long: {between} intermediates, tls_verify_depth {}",
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

    /// The config crate's test PKI (the directory cargo gives the test run, where a
    /// binary built elsewhere would carry another path).
    fn pki() -> String {
        let dir = std::env::var("CARGO_MANIFEST_DIR")
            .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string());
        format!("{dir}/../config/tests/fixtures/pki")
    }

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
            (
                "TLS 1.2, RSA suite, TLS 1.3 suites listed",
                client(
                    TLS12,
                    Some(vec![
                        suite::TLS13_AES_128_GCM_SHA256,
                        suite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
                    ]),
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
        // As a connection delivers them: a byte at a time, or in uneven reads; what follows
        // the hello is not read.
        for records in [&bytes, &split] {
            for step in [1, 2, 3, 7, 100] {
                let mut scan = HelloScan::default();
                for chunk in records.chunks(step) {
                    assert_eq!(scan.offered(), None, "not before the end");
                    scan.feed(chunk);
                }
                scan.feed(b"\x17\x03\x03 whatever comes next");
                assert_eq!(scan.offered(), Some(want), "{step}-byte reads");
            }
        }
        let both = hello_bytes(client(BOTH, None, None));
        assert_eq!(
            Offered::read(&both),
            Some(Offered {
                tls12: true,
                tls13: true
            })
        );
        // A field that overruns what holds it: the random past a 10-byte hello's end.
        let mut bad = bytes.clone();
        bad[6..9].copy_from_slice(&[0, 0, 10]);
        assert_eq!(Offered::read(&bad), None);
    }

    /// A ClientHello written by hand, in one record: legacy version TLS 1.2, a zero random,
    /// no session id, one suite, null compression, and `extensions` (type and data each),
    /// or no extensions block at all when `None`.
    fn hello_record(extensions: Option<&[(u16, &[u8])]>) -> Vec<u8> {
        let mut hello = vec![3, 3];
        hello.extend_from_slice(&[0; 32]);
        hello.push(0);
        hello.extend_from_slice(&[0, 2, 0x13, 0x01]);
        hello.extend_from_slice(&[1, 0]);
        if let Some(extensions) = extensions {
            let mut block = vec![];
            for (kind, data) in extensions {
                block.extend_from_slice(&kind.to_be_bytes());
                block.extend_from_slice(&(data.len() as u16).to_be_bytes());
                block.extend_from_slice(data);
            }
            hello.extend_from_slice(&(block.len() as u16).to_be_bytes());
            hello.extend_from_slice(&block);
        }
        let mut message = vec![1];
        message.extend_from_slice(&(hello.len() as u32).to_be_bytes()[1..]);
        message.extend_from_slice(&hello);
        let mut record = vec![22, 3, 1];
        record.extend_from_slice(&(message.len() as u16).to_be_bytes());
        record.extend_from_slice(&message);
        record
    }

    /// Malformed hellos give no versions (the handshake then goes on with a guess from what
    /// rustls shows, and rustls refuses such a hello anyway), and never read past what
    /// holds a field; well-formed ones written by hand read as they say.
    #[test]
    fn malformed_hellos_give_no_versions() {
        let both = Offered {
            tls12: true,
            tls13: true,
        };
        let neither = Offered {
            tls12: false,
            tls13: false,
        };
        let tls12 = Offered {
            tls12: true,
            tls13: false,
        };
        // well-formed: a version list (beside another extension), none, no extensions
        let versions: &[u8] = &[4, 0x03, 0x04, 0x03, 0x03];
        let good = hello_record(Some(&[(0, b"\0\0"), (43, versions), (10, &[0, 2, 0, 29])]));
        assert_eq!(Offered::read(&good), Some(both));
        assert_eq!(
            Offered::read(&hello_record(Some(&[(10, &[0, 2, 0, 29])]))),
            Some(tls12)
        );
        assert_eq!(Offered::read(&hello_record(None)), Some(tls12));
        // (the offsets of the hand-written hello: the record header 5 bytes, the message
        // header 4, version 2, random 32, session id 1, suites 4, compression 2, then the
        // extensions' length)
        let extensions_at = 5 + 4 + 2 + 32 + 1 + 4 + 2;

        // a truncated extension: its length runs past the end of the extensions block (and
        // of the hello)
        let mut bad = good.clone();
        let first_length = extensions_at + 2 + 2;
        bad[first_length..first_length + 2].copy_from_slice(&200u16.to_be_bytes());
        assert_eq!(Offered::read(&bad), None, "an extension past the block");
        // the hello cut inside an extension, then other bytes: never done
        let cut = good.len() - 3;
        let mut scan = HelloScan::default();
        scan.feed(&good[..cut]);
        assert_eq!(scan.offered(), None, "cut inside an extension");
        let mut truncated = good[..cut].to_vec();
        truncated[3..5].copy_from_slice(&((cut - 5) as u16).to_be_bytes());
        truncated.extend_from_slice(b"\x17\x03\x03\x00\x05hello");
        assert_eq!(
            Offered::read(&truncated),
            None,
            "record ends inside an extension"
        );

        // oversized lengths: the extensions block past the hello, a session id past it, a
        // message longer than its fields (and than any record brings), a version list past
        // its extension
        let mut bad = good.clone();
        bad[extensions_at..extensions_at + 2].copy_from_slice(&0xffffu16.to_be_bytes());
        assert_eq!(Offered::read(&bad), None, "extensions past the hello");
        let mut bad = good.clone();
        bad[5 + 4 + 2 + 32] = 255;
        assert_eq!(Offered::read(&bad), None, "a session id past the hello");
        let mut bad = good.clone();
        bad[6..9].copy_from_slice(&[0xff, 0xff, 0xff]);
        assert_eq!(Offered::read(&bad), None, "a message past its records");
        // (a record longer than its hello is not the hello's fault: the hello read whole
        // is read, and rustls shows it only once the record is whole)
        let mut longer = good.clone();
        longer[3..5].copy_from_slice(&0xffffu16.to_be_bytes());
        assert_eq!(
            Offered::read(&longer),
            Some(both),
            "a record longer than its hello"
        );
        let mut bad = good.clone();
        let list_length = bad.len() - (4 + 4) - versions.len();
        assert_eq!(bad[list_length], 4);
        bad[list_length] = 250;
        assert_eq!(
            Offered::read(&bad),
            None,
            "a version list past its extension"
        );

        // zero-length supported_versions: no data at all (not even the list's length) is
        // malformed; an empty list offers nothing; an odd-length list is malformed
        let empty_extension = hello_record(Some(&[(43, &[])]));
        assert_eq!(Offered::read(&empty_extension), None, "no list length");
        let empty_list = hello_record(Some(&[(43, &[0])]));
        assert_eq!(Offered::read(&empty_list), Some(neither), "an empty list");
        let odd_list = hello_record(Some(&[(43, &[3, 0x03, 0x04, 0x03])]));
        assert_eq!(Offered::read(&odd_list), None, "a list of 3 bytes");
        // a byte at a time, the same
        for (bytes, want) in [
            (&good, Some(both)),
            (&empty_extension, None),
            (&empty_list, Some(neither)),
            (&odd_list, None),
        ] {
            let mut scan = HelloScan::default();
            for b in bytes.iter() {
                scan.feed(std::slice::from_ref(b));
            }
            assert_eq!(scan.offered(), want);
        }
    }

    /// The version decides which certificates can serve: in TLS 1.2 only those a TLS 1.2
    /// suite of the client's can use, the first such suite in the client's order deciding;
    /// in TLS 1.3 any, in the order of the client's signature schemes.
    #[test]
    fn the_choice_follows_the_version_spoken() {
        let (ecdsa, rsa) = certificates();
        let rsa_first = CertSet::new(rsa.clone(), vec![ecdsa.clone()]);
        let ecdsa_first = CertSet::new(ecdsa.clone(), vec![rsa.clone()]);
        let chosen = |set: &CertSet, config| {
            let bytes = hello_bytes(config);
            let mut a = rustls::server::Acceptor::default();
            a.read_tls(&mut &bytes[..]).unwrap();
            let Ok(Some(accepted)) = a.accept() else {
                panic!("a whole ClientHello")
            };
            let offered = Offered::read(&bytes).unwrap();
            set.choose(&accepted.client_hello(), offered.version())
        };
        let tls12_rsa = || {
            client(
                TLS12,
                Some(vec![
                    suite::TLS13_AES_128_GCM_SHA256,
                    suite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
                ]),
                None,
            )
        };
        let tls12_ecdsa_rsa_scheme_first = || {
            client(
                TLS12,
                Some(vec![
                    suite::TLS13_AES_128_GCM_SHA256,
                    suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
                ]),
                Some(vec![S::RSA_PSS_SHA256, S::ECDSA_NISTP256_SHA256]),
            )
        };
        for set in [&rsa_first, &ecdsa_first] {
            assert!(Arc::ptr_eq(&chosen(set, tls12_rsa()), &rsa));
            assert!(Arc::ptr_eq(
                &chosen(set, tls12_ecdsa_rsa_scheme_first()),
                &ecdsa
            ));
            assert!(Arc::ptr_eq(&chosen(set, client(BOTH, None, None)), &ecdsa));
            assert!(Arc::ptr_eq(
                &chosen(set, client(TLS13, None, rsa_schemes())),
                &rsa
            ));
        }
        // TLS 1.2 with both kinds of suite: the first TLS 1.2 suite in the client's order
        // decides (the TLS 1.3 suite listed before it passed over), whatever order its
        // schemes come in (OpenSSL walks the client's suites: Kong's
        // `ssl_prefer_server_ciphers` is off)...
        let tls12_suites = |suites: Vec<rustls::SupportedCipherSuite>, schemes| {
            let mut all = vec![suite::TLS13_AES_128_GCM_SHA256];
            all.extend(suites);
            client(TLS12, Some(all), Some(schemes))
        };
        let ecdsa_suite = suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256;
        let rsa_suite = suite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384;
        let both_schemes_rsa_first = || vec![S::RSA_PKCS1_SHA256, S::ECDSA_NISTP256_SHA256];
        let both_schemes_ecdsa_first = || vec![S::ECDSA_NISTP256_SHA256, S::RSA_PKCS1_SHA256];
        for set in [&rsa_first, &ecdsa_first] {
            let ecdsa_suite_first = [ecdsa_suite, rsa_suite];
            let rsa_suite_first = [rsa_suite, ecdsa_suite];
            for schemes in [both_schemes_rsa_first(), both_schemes_ecdsa_first()] {
                let got = chosen(
                    set,
                    tls12_suites(ecdsa_suite_first.to_vec(), schemes.clone()),
                );
                assert!(Arc::ptr_eq(&got, &ecdsa), "ECDSA suite first, {schemes:?}");
                let got = chosen(set, tls12_suites(rsa_suite_first.to_vec(), schemes.clone()));
                assert!(Arc::ptr_eq(&got, &rsa), "RSA suite first, {schemes:?}");
            }
            // ...among the suites whose key the client can take: an RSA suite first, but
            // ECDSA schemes alone, gets the ECDSA key of the later ECDSA suite
            let got = chosen(
                set,
                tls12_suites(rsa_suite_first.to_vec(), vec![S::ECDSA_NISTP256_SHA256]),
            );
            assert!(Arc::ptr_eq(&got, &ecdsa), "RSA suite first, ECDSA schemes");
        }
        // No scheme of the client's fits a usable key: the first usable one, not `main`.
        let tls12_rsa_ecdsa_schemes = client(
            TLS12,
            Some(vec![
                suite::TLS13_AES_128_GCM_SHA256,
                suite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
            ]),
            Some(vec![S::ECDSA_NISTP256_SHA256]),
        );
        assert!(Arc::ptr_eq(
            &chosen(&ecdsa_first, tls12_rsa_ecdsa_schemes),
            &rsa
        ));
        assert_eq!(
            Tls12Keys::offered(&[
                rustls::CipherSuite::TLS13_AES_128_GCM_SHA256,
                rustls::CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
            ]),
            Tls12Keys {
                rsa: true,
                ecdsa: false,
                ed25519: false
            }
        );
    }

    /// A generated ECDSA certificate and the RSA one of the test PKI.
    fn certificates() -> (Arc<CertifiedKey>, Arc<CertifiedKey>) {
        let ecdsa = crate::default_certs::generate(KeyType::EcdsaP256).unwrap();
        let rsa =
            crate::SslCert::parse(&format!("{}/rsa.crt", pki()), &format!("{}/rsa.key", pki()))
                .load();
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
        let listener = TlsListener::defaults_only(
            defaults.clone(),
            false,
            &Sessions::new(SESSION_CACHE_SIZE),
            crate::TlsVersions::default(),
        );
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
        let pem = |name: &str| std::fs::read_to_string(format!("{}/{name}", pki())).unwrap();
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
            &Sessions::new(SESSION_CACHE_SIZE),
            crate::TlsVersions::default(),
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

    /// The configuration of `doc`'s certificates and SNIs, as the proxy compiles it.
    fn store(certificates: serde_json::Value) -> CertStore {
        let doc = serde_json::json!({"_format_version": "3.0", "certificates": certificates});
        let plugins = silverback_config::PluginRegistry::new();
        let options = silverback_config::LoadOptions {
            router_flavor: silverback_config::RouterFlavor::TraditionalCompatible,
            plugins: &plugins,
            now_unix: None,
        };
        let config = silverback_config::load_bytes(doc.to_string().as_bytes(), &options).unwrap();
        CertStore::build(&config).unwrap()
    }

    fn pem(name: &str) -> String {
        std::fs::read_to_string(format!("{}/{name}", pki())).unwrap()
    }

    /// The leaf certificate `name` gets, if any.
    fn leaf_for(store: &CertStore, name: Option<&str>) -> Option<CertificateDer<'static>> {
        store
            .lookup(name)
            .and_then(|set| set.certificates().next())
            .map(|c| c.cert[0].clone())
    }

    /// Kong's order: exact, `*.rest` (for three labels or more), `head.*`, `*`, default; no
    /// server name gets the default even with `*` configured. Each kind of name is on a
    /// certificate of its own, so a lookup that skips a step or takes them out of order
    /// serves the wrong one.
    #[test]
    fn lookup_follows_kongs_order() {
        let pair = |name: &str, snis: &[&str]| {
            serde_json::json!({
                "cert": pem(&format!("{name}.crt")),
                "key": pem(&format!("{name}.key")),
                "snis": snis,
            })
        };
        let store = store(serde_json::json!([
            pair("rsa", &["exact.test", "*"]),
            pair("ec", &["*.wild.test", "a.exact.test", "*.b.c"]),
            pair("other", &["com.*", "a.b.*"]),
            pair("v1", &["*.com", "*.example.com"]),
        ]));
        let leaf = |name: &str| pki::parse_certs(&pem(&format!("{name}.crt"))).unwrap()[0].clone();
        let (catch_all, exact, suffix, prefix, example) = (
            leaf("rsa"),
            leaf("rsa"),
            leaf("ec"),
            leaf("other"),
            leaf("v1"),
        );
        for (name, want) in [
            (Some("exact.test"), Some(&exact)),
            (Some("a.exact.test"), Some(&suffix)),
            // `*.wild.test` before `*`
            (Some("x.wild.test"), Some(&suffix)),
            // `com.*` before `*`
            (Some("com.test"), Some(&prefix)),
            // `*.b.c` and `a.b.*` both match: the `*.rest` form is looked up first
            (Some("a.b.c"), Some(&suffix)),
            (Some("a.b.d"), Some(&prefix)),
            // `*.com` is never looked up for two labels: `*` serves
            (Some("example.com"), Some(&catch_all)),
            (Some("a.example.com"), Some(&example)),
            (Some("nothing.here"), Some(&catch_all)),
            (None, None),
        ] {
            assert_eq!(leaf_for(&store, name).as_ref(), want, "{name:?}");
        }
        // `*.com` serves no name at all: `*.<rest>` replaces the first of three labels or more
        let without_catch_all = self::store(serde_json::json!([pair("ec", &["*.com"])]));
        for name in ["example.com", "a.example.com", "com"] {
            assert_eq!(leaf_for(&without_catch_all, Some(name)), None, "{name}");
        }
    }

    /// Status listeners keep about what Kong's `StatusSSL:1m` holds, the others what `10m`
    /// holds: the oldest session goes once the cache is full.
    #[test]
    fn session_caches_are_sized_per_kind() {
        use crate::gateway::ListenerKind;
        for (kind, size) in [
            (ListenerKind::Status, STATUS_SESSION_CACHE_SIZE),
            (ListenerKind::Proxy, SESSION_CACHE_SIZE),
            (ListenerKind::Admin, SESSION_CACHE_SIZE),
        ] {
            let cache = Sessions::for_kind(kind).cache;
            for i in 0..=size {
                assert!(cache.put((i as u32).to_be_bytes().to_vec(), vec![1]));
            }
            assert_eq!(cache.get(&0u32.to_be_bytes()), None, "{kind:?}");
            assert_eq!(cache.get(&1u32.to_be_bytes()), Some(vec![1]), "{kind:?}");
        }
        assert_eq!(STATUS_SESSION_CACHE_SIZE, 4_000);
    }

    /// A configured `*.` (which Kong's `wildcard_host` accepts) serves nothing, as in Kong:
    /// its key keeps the dot rather than becoming the catch-all `*`.
    #[test]
    fn a_star_dot_sni_is_not_the_catch_all() {
        assert_eq!(sni_key("*."), "*.");
        assert_eq!(sni_key("*"), "*");
        let pair = |name: &str, snis: &[&str]| {
            serde_json::json!({
                "cert": pem(&format!("{name}.crt")),
                "key": pem(&format!("{name}.key")),
                "snis": snis,
            })
        };
        let alone = store(serde_json::json!([pair("ec", &["*."])]));
        assert_eq!(alone.len(), 1);
        for name in ["example.com", "a.example.com", "x"] {
            assert_eq!(leaf_for(&alone, Some(name)), None, "{name}");
        }
        // next to a `*` on another certificate: `*` serves, and no clash is reported
        let both = store(serde_json::json!([
            pair("ec", &["*."]),
            pair("rsa", &["*"])
        ]));
        assert_eq!(both.len(), 2);
        let rsa_leaf = pki::parse_certs(&pem("rsa.crt")).unwrap()[0].clone();
        assert_eq!(leaf_for(&both, Some("example.com")), Some(rsa_leaf));
    }

    /// Entity names compare as clients' names arrive (lowercase, no trailing dot); of two
    /// that differ only so, the one already in that form serves.
    #[test]
    fn sni_names_are_normalised_and_clashes_resolved() {
        let rsa_leaf = pki::parse_certs(&pem("rsa.crt")).unwrap()[0].clone();
        let ec_leaf = pki::parse_certs(&pem("ec.crt")).unwrap()[0].clone();
        let store = store(serde_json::json!([
            {"cert": pem("ec.crt"), "key": pem("ec.key"), "snis": ["A.Test", "dot.test.", "*.Wild.test"]},
            {"cert": pem("rsa.crt"), "key": pem("rsa.key"), "snis": ["a.test", "b.test"]},
            {"cert": pem("ec.crt"), "key": pem("ec.key"), "snis": ["B.test"]},
        ]));
        assert_eq!(store.len(), 4);
        for (name, want) in [
            ("a.test", &rsa_leaf),
            ("b.test", &rsa_leaf),
            ("dot.test", &ec_leaf),
            ("dot.test.", &ec_leaf),
            ("x.wild.test", &ec_leaf),
        ] {
            assert_eq!(leaf_for(&store, Some(name)).as_ref(), Some(want), "{name}");
        }
        assert_eq!(sni_key("Example.COM."), "example.com");
        assert!(matches!(
            sni_key("example.com"),
            std::borrow::Cow::Borrowed(_)
        ));
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
