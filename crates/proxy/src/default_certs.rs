//! The default certificates of TLS listeners: what a client gets when no SNI of the
//! configuration matches its server name, or when it sends none (Kong's `ssl_cert`).
//!
//! As in Kong:
//! - `ssl_cert` and `ssl_cert_key` ([`SslCert`]) are lists of the same length, paired by
//!   position. Each entry is a file path, PEM text, or PEM text in base64 (standard or URL
//!   alphabet, padding optional): a path that exists is read; any other value is decoded from
//!   base64 when it decodes, and taken as PEM text when it does not (Kong's
//!   `kong/conf_loader/parse.lua`). Kong hands every pair to nginx (`ssl_certificate` once per
//!   entry) and OpenSSL keeps one certificate per key type, a later entry of a type replacing
//!   an earlier one; here too, so one RSA and one ECDSA pair is the useful list.
//! - Without `ssl_cert`, two self-signed certificates are generated, an RSA 2048 one and an
//!   ECDSA P-256 one, both with Kong's subject and issuer (`C=US, ST=California, L=San
//!   Francisco, O=Kong, OU=IT Department, CN=localhost`), a random 16-byte serial number,
//!   twenty years of validity from now, `basicConstraints CA:FALSE` (critical), extended key
//!   usages server and client authentication and a subject key identifier
//!   (`gen_default_ssl_cert` in `kong/cmd/utils/prefix_handler.lua`). Unlike Kong's, they
//!   also name `localhost` as a subject alternative name. They are generated once per process
//!   and shared by its gateways (Kong writes them once into its prefix directory).
//!
//! A client gets the certificate whose key can sign with the first signature scheme it
//! lists ([`CertSet`]'s choice, the same as for `cert_alt`): an ECDSA-capable client the
//! ECDSA one, a client without ECDSA the RSA one.
//!
//! RSA keys are generated with the `rsa` crate (ring, which signs for rustls, cannot generate
//! them); generation is the only thing it does: the PKCS#8 key is handed to rcgen and ring,
//! which sign the certificate and every handshake. A 2048-bit key takes 0.06-0.3 s on this
//! project's 2-core machines (prime search is random; 0.4-1.2 s when the bignum crates are
//! not optimized, so the workspace `Cargo.toml` optimizes them in debug builds too). It runs
//! on a thread of its own so that no start waits for it: the ECDSA certificate, generated in
//! a millisecond, serves from the first handshake, and the RSA certificate joins it when
//! ready. Until then a client that cannot use ECDSA fails its handshake. Generating it before
//! the listeners open would delay every start (and every test gateway) by that time for the
//! sake of the rare client without ECDSA in its first fraction of a second.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use arc_swap::ArcSwap;
use base64::Engine;
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::ClientHello;
use rustls::sign::CertifiedKey;
use silverback_config::pki;

use crate::ProxyError;
use crate::tls::CertSet;

/// Kong's `ssl_cert` and `ssl_cert_key`: the default certificates as given, before they are
/// read. Empty lists mean generated certificates. Its `Debug` shows the certificate entries
/// that are paths and nothing of the keys, which may be key material.
#[derive(Clone, PartialEq, Eq)]
pub struct SslCert {
    /// The setting's name as errors name it: `ssl_cert` (the proxy's), `admin_ssl_cert` or
    /// `status_ssl_cert`; the keys' is that with `_key`.
    pub setting: &'static str,
    /// `ssl_cert`: certificate chains (leaf first), one per key.
    pub certs: Vec<String>,
    /// `ssl_cert_key`: the private keys, in the order of `certs`.
    pub keys: Vec<String>,
}

impl Default for SslCert {
    fn default() -> SslCert {
        SslCert {
            setting: "ssl_cert",
            certs: vec![],
            keys: vec![],
        }
    }
}

impl fmt::Debug for SslCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown: Vec<&str> = self
            .certs
            .iter()
            .map(|c| {
                if Path::new(c).exists() {
                    c.as_str()
                } else {
                    "<content>"
                }
            })
            .collect();
        f.debug_struct("SslCert")
            .field("setting", &self.setting)
            .field("certs", &shown)
            .field("keys", &format_args!("<{} redacted>", self.keys.len()))
            .finish()
    }
}

/// Why `ssl_cert` / `ssl_cert_key` cannot be used. The messages name the setting and the file
/// (or the entry's position for inline content), never the content itself.
#[derive(Debug, thiserror::Error)]
pub enum SslCertError {
    /// Certificates without keys (Kong's message).
    #[error("{setting}_key must be specified")]
    KeyMissing {
        /// The setting (`ssl_cert`, `admin_ssl_cert`, `status_ssl_cert`).
        setting: &'static str,
    },
    /// Keys without certificates (Kong's message).
    #[error("{setting} must be specified")]
    CertMissing {
        /// The setting.
        setting: &'static str,
    },
    /// Lists of different lengths (Kong's message).
    #[error("{setting} was specified {certs} times while {setting}_key was specified {keys} times")]
    Count {
        /// The setting.
        setting: &'static str,
        /// Entries of the certificates.
        certs: usize,
        /// Entries of the keys.
        keys: usize,
    },
    /// A certificate entry cannot be read or parsed.
    #[error("{setting}: failed loading certificate from {from}: {reason}")]
    Cert {
        /// The setting.
        setting: &'static str,
        /// The entry.
        from: Origin,
        /// Why.
        reason: String,
    },
    /// A key entry cannot be read or parsed.
    #[error("{setting}_key: failed loading key from {from}: {reason}")]
    Key {
        /// The setting.
        setting: &'static str,
        /// The entry.
        from: Origin,
        /// Why.
        reason: String,
    },
    /// The key of a pair is not the certificate's (nginx refuses to start on it).
    #[error("{setting}_key {key} does not match {setting} {cert}")]
    Mismatch {
        /// The setting.
        setting: &'static str,
        /// The certificate entry.
        cert: Origin,
        /// The key entry.
        key: Origin,
    },
}

/// Where an entry of `ssl_cert` or `ssl_cert_key` comes from, as errors and logs name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A file path (one that exists, or a value that looks like a path but names nothing).
    File(PathBuf),
    /// Content given in the setting itself: the entry's position (from 1), and whether it
    /// was base64-encoded.
    Inline {
        /// Position in the list, from 1.
        entry: usize,
        /// Given as base64.
        base64: bool,
    },
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File(p) => write!(f, "{}", p.display()),
            Origin::Inline {
                entry,
                base64: false,
            } => write!(f, "entry {entry} (PEM text)"),
            Origin::Inline {
                entry,
                base64: true,
            } => write!(f, "entry {entry} (base64)"),
        }
    }
}

impl SslCert {
    /// The settings as Kong reads them: comma-separated lists, each entry trimmed; empty
    /// entries are ignored.
    pub fn parse(certs: &str, keys: &str) -> SslCert {
        SslCert::parse_setting("ssl_cert", certs, keys)
    }

    /// [`SslCert::parse`] for another setting of the same form (`admin_ssl_cert`,
    /// `status_ssl_cert`), named so in errors.
    pub fn parse_setting(setting: &'static str, certs: &str, keys: &str) -> SslCert {
        let list = |s: &str| -> Vec<String> {
            s.split(',')
                .map(str::trim)
                .filter(|e| !e.is_empty())
                .map(str::to_string)
                .collect()
        };
        SslCert {
            setting,
            certs: list(certs),
            keys: list(keys),
        }
    }

    /// Whether neither setting is given (the certificates are then generated).
    pub fn is_empty(&self) -> bool {
        self.certs.is_empty() && self.keys.is_empty()
    }

    /// Reads and checks every pair, with Kong's checks (both lists given, of one length,
    /// every entry loads) and nginx's (each key belongs to its certificate).
    pub fn load(&self) -> Result<CertSet, SslCertError> {
        let setting = self.setting;
        match (self.certs.len(), self.keys.len()) {
            (c, 0) if c > 0 => return Err(SslCertError::KeyMissing { setting }),
            (0, k) if k > 0 => return Err(SslCertError::CertMissing { setting }),
            (certs, keys) if certs != keys => {
                return Err(SslCertError::Count {
                    setting,
                    certs,
                    keys,
                });
            }
            _ => {}
        }
        let mut loaded: Vec<(Arc<CertifiedKey>, Origin)> = Vec::new();
        for (i, (cert, key)) in self.certs.iter().zip(&self.keys).enumerate() {
            let (cert_pem, cert_from) =
                read_entry(cert, i + 1).map_err(|(from, reason)| SslCertError::Cert {
                    setting,
                    from,
                    reason,
                })?;
            let (key_pem, key_from) =
                read_entry(key, i + 1).map_err(|(from, reason)| SslCertError::Key {
                    setting,
                    from,
                    reason,
                })?;
            let chain = pki::parse_certs(&cert_pem).map_err(|reason| SslCertError::Cert {
                setting,
                from: cert_from.clone(),
                reason,
            })?;
            let signer = pki::parse_key(&key_pem)
                .and_then(|k| pki::signing_key(&k))
                .map_err(|reason| SslCertError::Key {
                    setting,
                    from: key_from.clone(),
                    reason,
                })?;
            let certified = CertifiedKey::new(chain, signer);
            if certified.keys_match().is_err() {
                return Err(SslCertError::Mismatch {
                    setting,
                    cert: cert_from,
                    key: key_from,
                });
            }
            let algorithm = certified.key.algorithm();
            let entry = (Arc::new(certified), cert_from);
            // OpenSSL keeps one certificate per key type: a later one replaces the earlier.
            match loaded
                .iter_mut()
                .find(|(k, _)| k.key.algorithm() == algorithm)
            {
                Some(earlier) => {
                    tracing::warn!(
                        replaced = %earlier.1,
                        by = %entry.1,
                        "{setting}: two certificates with {algorithm:?} keys; the later one is used"
                    );
                    *earlier = entry;
                }
                None => loaded.push(entry),
            }
        }
        let mut keys = loaded.into_iter().map(|(k, _)| k);
        match keys.next() {
            Some(main) => Ok(CertSet::new(main, keys.collect())),
            None => Err(SslCertError::CertMissing { setting }),
        }
    }
}

/// Reads one entry by Kong's rule: an existing path is read, other values are base64 when
/// they decode, PEM text otherwise. Errors carry the origin and the reason, never content.
fn read_entry(value: &str, entry: usize) -> Result<(String, Origin), (Origin, String)> {
    let path = Path::new(value);
    if path.exists() {
        let from = Origin::File(path.to_path_buf());
        return match std::fs::read_to_string(path) {
            Ok(text) => Ok((text, from)),
            Err(e) => Err((from, e.to_string())),
        };
    }
    if let Some(bytes) = decode_base64(value) {
        let from = Origin::Inline {
            entry,
            base64: true,
        };
        return match String::from_utf8(bytes) {
            Ok(text) => Ok((text, from)),
            Err(_) => Err((from, "the decoded bytes are not PEM text".into())),
        };
    }
    if value.contains("-----BEGIN") {
        let from = Origin::Inline {
            entry,
            base64: false,
        };
        return Ok((value.to_string(), from));
    }
    // Neither content nor an existing file: most likely a path to nothing. It is named only
    // when it looks like one (a single word), so that mangled key material is never shown.
    if value.contains(char::is_whitespace) {
        let from = Origin::Inline {
            entry,
            base64: false,
        };
        Err((from, "not a file, PEM text, or base64 of PEM text".into()))
    } else {
        let from = Origin::File(path.to_path_buf());
        Err((from, "no such file (nor PEM text or base64 of it)".into()))
    }
}

/// Base64 as nginx's `ngx.decode_base64` or `decode_base64url` takes it (Kong tries both):
/// the standard or the URL-safe alphabet, padding optional, no whitespace.
fn decode_base64(value: &str) -> Option<Vec<u8>> {
    use base64::alphabet;
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    let config =
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
    GeneralPurpose::new(&alphabet::STANDARD, config)
        .decode(value)
        .or_else(|_| GeneralPurpose::new(&alphabet::URL_SAFE, config).decode(value))
        .ok()
}

/// The key types of the generated certificates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyType {
    /// RSA, 2048 bits, signed with SHA-256 (PKCS#1 v1.5).
    Rsa2048,
    /// ECDSA on P-256, signed with SHA-256.
    EcdsaP256,
}

/// Generates one self-signed certificate as Kong's default (see the module documentation);
/// returns it with its key, ready for rustls.
pub fn generate(kind: KeyType) -> Result<Arc<CertifiedKey>, String> {
    let rc = |e: rcgen::Error| e.to_string();
    let key = match kind {
        KeyType::EcdsaP256 => {
            rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(rc)?
        }
        KeyType::Rsa2048 => {
            use rsa::pkcs8::EncodePrivateKey;
            let key = rsa::PrivateKey::new(&mut getrandom::SysRng, 2048)
                .map_err(|e| format!("RSA key generation: {e}"))?;
            let der = key
                .to_pkcs8_der()
                .map_err(|e| format!("RSA key encoding: {e}"))?;
            rcgen::KeyPair::from_pkcs8_der_and_sign_algo(
                &PrivatePkcs8KeyDer::from(der.as_bytes()),
                &rcgen::PKCS_RSA_SHA256,
            )
            .map_err(rc)?
        }
    };
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).map_err(rc)?;
    // A fresh name: the parameters come with rcgen's own common name in first place.
    params.distinguished_name = rcgen::DistinguishedName::new();
    for (field, value) in [
        (rcgen::DnType::CountryName, "US"),
        (rcgen::DnType::StateOrProvinceName, "California"),
        (rcgen::DnType::LocalityName, "San Francisco"),
        (rcgen::DnType::OrganizationName, "Kong"),
        (rcgen::DnType::OrganizationalUnitName, "IT Department"),
        (rcgen::DnType::CommonName, "localhost"),
    ] {
        params.distinguished_name.push(field, value);
    }
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now;
    params.not_after = now + time::Duration::days(20 * 365);
    let mut serial = [0u8; 16];
    getrandom::fill(&mut serial).map_err(|e| format!("serial number: {e}"))?;
    params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
    params.is_ca = rcgen::IsCa::ExplicitNoCa;
    params.extended_key_usages = vec![
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let cert = params.self_signed(&key).map_err(rc)?;
    let signer = pki::signing_key(&PrivateKeyDer::Pkcs8(key.serialize_der().into()))?;
    Ok(Arc::new(CertifiedKey::new(
        vec![cert.der().clone()],
        signer,
    )))
}

/// The default certificates of a gateway's TLS listeners. Generated ones can change once,
/// when the RSA certificate is ready; configured ones never change.
#[derive(Debug)]
pub struct DefaultCertificates {
    set: ArcSwap<CertSet>,
}

/// The generated certificates, shared by every gateway of the process.
static GENERATED: Mutex<Option<Arc<DefaultCertificates>>> = Mutex::new(None);

impl DefaultCertificates {
    /// The certificates of `ssl_cert` when set, else the generated ones (the RSA
    /// certificate is generated in the background on first use in the process).
    pub fn new(ssl_cert: &SslCert) -> Result<Arc<DefaultCertificates>, ProxyError> {
        if ssl_cert.is_empty() {
            return DefaultCertificates::generated();
        }
        let set = ssl_cert.load()?;
        tracing::info!(
            certificates = set.certificates().count(),
            "default certificates from ssl_cert"
        );
        Ok(Arc::new(DefaultCertificates {
            set: ArcSwap::from_pointee(set),
        }))
    }

    fn generated() -> Result<Arc<DefaultCertificates>, ProxyError> {
        let mut shared = GENERATED.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(d) = shared.as_ref() {
            return Ok(d.clone());
        }
        let ecdsa = generate(KeyType::EcdsaP256).map_err(ProxyError::Tls)?;
        let defaults = Arc::new(DefaultCertificates {
            set: ArcSwap::from_pointee(CertSet::new(ecdsa.clone(), vec![])),
        });
        let target = defaults.clone();
        std::thread::Builder::new()
            .name("silverback-rsa-keygen".into())
            .spawn(move || {
                let start = Instant::now();
                match generate(KeyType::Rsa2048) {
                    Ok(rsa) => {
                        // RSA first, as Kong lists it; the client's schemes decide anyway.
                        target.set.store(Arc::new(CertSet::new(rsa, vec![ecdsa])));
                        tracing::debug!(
                            ms = start.elapsed().as_millis() as u64,
                            "default RSA certificate generated"
                        );
                    }
                    Err(e) => tracing::error!(
                        error = %e,
                        "cannot generate the default RSA certificate: clients without ECDSA \
                         get no default certificate"
                    ),
                }
            })
            .map_err(|e| ProxyError::Tls(format!("cannot start RSA key generation: {e}")))?;
        *shared = Some(defaults.clone());
        Ok(defaults)
    }

    /// The certificates now (for the generated ones, the RSA certificate may not be there
    /// yet).
    pub fn current(&self) -> Arc<CertSet> {
        self.set.load_full()
    }

    /// The certificate for a client (see [`CertSet`]).
    pub(crate) fn choose(&self, hello: &ClientHello<'_>) -> Arc<CertifiedKey> {
        self.set.load().choose(hello)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PKI: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/tests/fixtures/pki");

    fn fixture(name: &str) -> String {
        format!("{PKI}/{name}")
    }

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    #[test]
    fn lists_are_read_as_kong_reads_them() {
        let s = SslCert::parse(" /a.crt , /b.crt,", "/a.key,/b.key");
        assert_eq!(s.certs, ["/a.crt", "/b.crt"]);
        assert_eq!(s.keys, ["/a.key", "/b.key"]);
        assert!(SslCert::parse("", " ").is_empty());
    }

    #[test]
    fn counts_get_kongs_messages() {
        let msg = |c: &str, k: &str| SslCert::parse(c, k).load().unwrap_err().to_string();
        assert_eq!(msg("/a.crt", ""), "ssl_cert_key must be specified");
        assert_eq!(msg("", "/a.key"), "ssl_cert must be specified");
        assert_eq!(
            msg("/a.crt,/b.crt", "/a.key"),
            "ssl_cert was specified 2 times while ssl_cert_key was specified 1 times"
        );
    }

    #[test]
    fn files_text_and_base64_are_accepted() {
        let cert = std::fs::read_to_string(fixture("rsa.crt")).unwrap();
        let key = std::fs::read_to_string(fixture("rsa.key")).unwrap();
        let by_file = SslCert::parse(&fixture("rsa.crt"), &fixture("rsa.key"))
            .load()
            .unwrap();
        let by_text = SslCert {
            certs: vec![cert.clone()],
            keys: vec![key.clone()],
            ..SslCert::default()
        }
        .load()
        .unwrap();
        let by_base64 = SslCert::parse(&b64(&cert), &b64(&key)).load().unwrap();
        let url_safe = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&key);
        let by_url_base64 = SslCert::parse(&b64(&cert), &url_safe).load().unwrap();
        for set in [&by_text, &by_base64, &by_url_base64] {
            assert_eq!(set.certificates().count(), 1);
            assert_eq!(set.certificates().next().unwrap().cert, by_file.main_cert());
        }
    }

    impl CertSet {
        fn main_cert(&self) -> Vec<rustls::pki_types::CertificateDer<'static>> {
            self.certificates().next().unwrap().cert.clone()
        }
    }

    #[test]
    fn errors_name_the_setting_and_the_file_never_the_key() {
        let dir = std::env::temp_dir().join(format!("sb-ssl-cert-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let garbage = dir.join("garbage.pem");
        std::fs::write(&garbage, "not a certificate").unwrap();
        let missing = dir.join("missing.crt");
        let g = garbage.display().to_string();
        let m = missing.display().to_string();
        let (rsa_crt, rsa_key) = (fixture("rsa.crt"), fixture("rsa.key"));
        let err = |c: &str, k: &str| SslCert::parse(c, k).load().unwrap_err().to_string();

        let e = err(&m, &rsa_key);
        assert!(
            e.starts_with(&format!(
                "ssl_cert: failed loading certificate from {m}: no such file"
            )),
            "{e}"
        );
        let e = err(&rsa_crt, &g);
        assert!(
            e.starts_with(&format!(
                "ssl_cert_key: failed loading key from {g}: invalid key"
            )),
            "{e}"
        );
        let e = err(&g, &rsa_key);
        assert!(
            e.starts_with(&format!(
                "ssl_cert: failed loading certificate from {g}: invalid certificate"
            )),
            "{e}"
        );
        let e = err(&dir.display().to_string(), &rsa_key);
        assert!(e.contains("directory"), "{e}");
        // Inline key material that does not load: named by position, never shown.
        let secret =
            "-----BEGIN PRIVATE KEY-----\nc2VjcmV0IGtleSBtYXRlcmlhbA==\n-----END PRIVATE KEY-----";
        let e = SslCert {
            certs: vec![rsa_crt.clone()],
            keys: vec![secret.into()],
            setting: "admin_ssl_cert",
        }
        .load()
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with(
                "admin_ssl_cert_key: failed loading key from entry 1 (PEM text): invalid key"
            ),
            "{e}"
        );
        assert!(!e.contains("c2VjcmV0"), "{e}");
        let e = err(&rsa_crt, "c2VjcmV0IGtleSBtYXRlcmlhbA==");
        assert!(
            e.starts_with("ssl_cert_key: failed loading key from entry 1 (base64): invalid key"),
            "{e}"
        );
        assert!(!e.contains("c2VjcmV0"), "{e}");
        let e = err(&rsa_crt, "secret key material");
        assert_eq!(
            e,
            "ssl_cert_key: failed loading key from entry 1 (PEM text): not a file, PEM text, \
             or base64 of PEM text"
        );
        // A key of another certificate.
        let (ec_crt, ec_key) = (fixture("ec.crt"), fixture("ec.key"));
        assert_eq!(
            err(&rsa_crt, &ec_key),
            format!("ssl_cert_key {ec_key} does not match ssl_cert {rsa_crt}")
        );
        assert!(
            format!("{:?}", SslCert::parse(&ec_crt, "secret")).contains("<1 redacted>"),
            "Debug hides keys"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn one_certificate_per_key_type_the_later_wins() {
        let rsa = (fixture("rsa.crt"), fixture("rsa.key"));
        let ec = (fixture("ec.crt"), fixture("ec.key"));
        let set = SslCert::parse(
            &format!("{},{},{}", rsa.0, ec.0, rsa.0),
            &format!("{},{},{}", rsa.1, ec.1, rsa.1),
        )
        .load()
        .unwrap();
        let algs: Vec<_> = set.certificates().map(|k| k.key.algorithm()).collect();
        assert_eq!(
            algs,
            [
                rustls::SignatureAlgorithm::RSA,
                rustls::SignatureAlgorithm::ECDSA
            ]
        );
    }

    #[test]
    fn generated_certificates_carry_kongs_fields() {
        for kind in [KeyType::EcdsaP256, KeyType::Rsa2048] {
            let k = generate(kind).unwrap();
            assert!(k.keys_match().is_ok());
            let (_, x) = x509_parser::parse_x509_certificate(k.cert[0].as_ref()).unwrap();
            let want =
                "C=US, ST=California, L=San Francisco, O=Kong, OU=IT Department, CN=localhost";
            assert_eq!(x.subject().to_string(), want);
            assert_eq!(x.issuer().to_string(), want);
            assert_eq!(x.version(), x509_parser::x509::X509Version::V3);
            let days =
                (x.validity().not_after.timestamp() - x.validity().not_before.timestamp()) / 86_400;
            assert_eq!(days, 7300);
            let bc = x.basic_constraints().unwrap().unwrap();
            assert!(bc.critical && !bc.value.ca);
            let eku = x.extended_key_usage().unwrap().unwrap().value;
            assert!(eku.server_auth && eku.client_auth);
            assert!(
                x.get_extension_unique(
                    &x509_parser::oid_registry::OID_X509_EXT_SUBJECT_KEY_IDENTIFIER
                )
                .unwrap()
                .is_some()
            );
            let (alg, bits) = match kind {
                KeyType::EcdsaP256 => (rustls::SignatureAlgorithm::ECDSA, 256),
                KeyType::Rsa2048 => (rustls::SignatureAlgorithm::RSA, 2048),
            };
            assert_eq!(k.key.algorithm(), alg);
            assert_eq!(x.public_key().parsed().unwrap().key_size(), bits);
        }
    }
}
