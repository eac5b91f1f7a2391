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
//!   also name `localhost` as a subject alternative name.
//! - Each kind of listener has a pair of its own: the proxy listeners (for `ssl_cert`), the
//!   admin listeners (`admin_ssl_cert`) and the status listeners (`status_ssl_cert`). A pair
//!   is made only for a kind with an `ssl` listener and its setting unset, as Kong's
//!   `prepare_prefix` does.
//! - With a prefix directory (Kong's `prefix`, [`crate::Settings::prefix`]) the pairs are
//!   kept in `<prefix>/ssl/` under Kong's names ([`PairFiles::in_prefix`]):
//!   `kong-default.crt`/`.key` (RSA) and `kong-default-ecdsa.crt`/`.key` (ECDSA), with
//!   `admin-` or `status-` in front for those listeners. Keys are PKCS#8 PEM in files created
//!   with mode 0600, as Kong creates them; the directories are created as needed. A start
//!   reads a pair whose files are there and generates (and writes) a pair only when neither
//!   of its two files exists, each pair on its own, as Kong does. A pair is written whole or
//!   not at all: both files under temporary names first, then each linked to its name
//!   (`write_pair`), so that a failed write leaves no key without its certificate, which
//!   would stop every later start; a start that finds a key whose certificate a crash left
//!   under its temporary name links it (`finish_interrupted_write`). A pair with one file missing, unreadable or not parsing,
//!   or whose key is not its certificate's, stops the start with an error naming the file
//!   ([`PrefixError`]; never its content): Kong does not generate such a pair again either,
//!   and nginx refuses to start on it. Every pair of every kind is read before anything is
//!   written, so such a start leaves the prefix as it was (but for the lock file and the
//!   `ssl/` directory that holds it). Where the file system has no hard links, each file is
//!   created exclusively under its name instead (`write_pair_in_place`).
//! - Reading and writing the pairs happens under an exclusive lock on `<prefix>/ssl/.lock`
//!   (`PrefixLock`, a `flock`), taken by a start and, for the RSA pair, by the thread that
//!   generates it, never while the RSA key is being generated (the ECDSA keys, about a
//!   millisecond, are made under it): of two processes starting on one
//!   prefix, the second waits for the first's files, then reads them; an RSA thread that
//!   finds its pair written meanwhile serves that one. Both then serve the same pairs.
//! - Without a prefix nothing is written: the pairs are generated once per process and
//!   shared by its gateways, and each process has new ones.
//!
//! A client gets the certificate chosen as for `cert_alt` ([`CertSet::choose`]): in TLS 1.3
//! the one whose key can sign with the first signature scheme it lists, in TLS 1.2 the one
//! of the first suite in its list that a key it can take serves; a client without ECDSA
//! (for TLS 1.2: without an ECDHE-ECDSA suite) gets the RSA one.
//!
//! RSA keys are generated with the `rsa` crate (ring, which signs for rustls, cannot generate
//! them); generation is the only thing it does: the PKCS#8 key is handed to rcgen and ring,
//! which sign the certificate and every handshake. A 2048-bit key takes 0.06-0.3 s on this
//! project's 2-core machines (prime search is random; 0.4-1.2 s when the bignum crates are
//! not optimized, so the workspace `Cargo.toml` optimizes them in debug builds too). It runs
//! on a thread of its own so that no start waits for it: the ECDSA certificate, generated in
//! a millisecond, serves from the first handshake, and the RSA certificate joins it when
//! ready (after the attempt to write it to the prefix, when there is one: a certificate that
//! cannot be written serves from memory, with an error in the log). Until then a client
//! that would get the default certificates and cannot use ECDSA waits for the RSA
//! certificate (the TLS listeners read each ClientHello before answering it,
//! [`crate::tls`]'s `TlsListener`), within the handshake timeout, instead of failing; every
//! other client is served at once. So no handshake fails for want of the RSA certificate, and the only
//! window left is that wait, for clients without ECDSA in the first fraction of a second
//! after a start that generates it. An RSA certificate read from the prefix, or given by
//! `ssl_cert`, is there from the start, and handshakes never take that detour.

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
use tokio::sync::watch;

use crate::tls::{CertSet, Offered, Version, accepts_ecdsa_p256};
use crate::{ListenerKind, ProxyError};

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
    /// A key entry that is neither an existing file, PEM text nor base64, and does not look
    /// like a path: named by its position (from 1) alone, as it may be mangled key material.
    Entry(usize),
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
            Origin::Entry(entry) => write!(f, "entry {entry}"),
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
                read_entry(cert, i + 1, false).map_err(|(from, reason)| SslCertError::Cert {
                    setting,
                    from,
                    reason,
                })?;
            let (key_pem, key_from) =
                read_entry(key, i + 1, true).map_err(|(from, reason)| SslCertError::Key {
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
            match pki::matching(&chain, &signer) {
                Ok(_) => {}
                Err(pki::PairError::Mismatch) => {
                    return Err(SslCertError::Mismatch {
                        setting,
                        cert: cert_from,
                        key: key_from,
                    });
                }
                Err(pki::PairError::Certificate(reason)) => {
                    return Err(SslCertError::Cert {
                        setting,
                        from: cert_from,
                        reason,
                    });
                }
                Err(pki::PairError::Key(reason)) => {
                    return Err(SslCertError::Key {
                        setting,
                        from: key_from,
                        reason,
                    });
                }
            }
            let certified = CertifiedKey::new(chain, signer);
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
/// they decode, PEM text otherwise. Errors carry the origin and the reason, never content:
/// a `key` entry that is none of these is named as a file only when it looks like a path
/// ([`looks_like_path`]), else by its position, since it may be key material that did not
/// decode (a truncated base64 key, say).
fn read_entry(value: &str, entry: usize, key: bool) -> Result<(String, Origin), (Origin, String)> {
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
    // when it looks like one, so that mangled key material is never shown.
    if key && !looks_like_path(value) {
        return Err((
            Origin::Entry(entry),
            "not a file, PEM text, or base64 of PEM text".into(),
        ));
    }
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

/// Whether a value that names no file looks like a path to one, so that an error may show
/// it: no whitespace, and its directory exists; a name without a directory, or in `/`
/// itself, must also have a `.` in it, which base64 never has (a base64 value may hold a
/// `/`, but rarely one whose part before it is an existing directory).
fn looks_like_path(value: &str) -> bool {
    if value.is_empty() || value.contains(char::is_whitespace) {
        return false;
    }
    let path = Path::new(value);
    let dotted = path
        .file_name()
        .is_some_and(|n| n.as_encoded_bytes().contains(&b'.'));
    match path.parent() {
        None => false,
        Some(dir) if dir.as_os_str().is_empty() || dir == Path::new("/") => dotted,
        Some(dir) => dir.is_dir(),
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

/// A generated certificate: ready for rustls, and as PEM for the prefix directory. Its
/// `Debug` shows nothing of the key.
pub struct Generated {
    /// The certificate and its signing key.
    pub certified: Arc<CertifiedKey>,
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The private key, PKCS#8 PEM (as Kong writes it).
    key_pem: String,
}

impl fmt::Debug for Generated {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Generated")
            .field("algorithm", &self.certified.key.algorithm())
            .finish_non_exhaustive()
    }
}

/// Generates one self-signed certificate as Kong's default (see the module documentation).
pub fn generate(kind: KeyType) -> Result<Generated, String> {
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
    Ok(Generated {
        certified: Arc::new(CertifiedKey::new(vec![cert.der().clone()], signer)),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// The two files of one generated pair in the prefix directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PairFiles {
    /// The certificate (PEM).
    pub cert: PathBuf,
    /// The private key (PKCS#8 PEM), mode 0600 when written here.
    pub key: PathBuf,
}

impl PairFiles {
    /// Kong's names, under `<prefix>/ssl/`: `kong-default.crt` and `.key` for the RSA pair
    /// and `kong-default-ecdsa.crt` and `.key` for the ECDSA pair of the proxy listeners;
    /// the same with `admin-` or `status-` in front for the admin and status listeners.
    pub fn in_prefix(prefix: &Path, kind: ListenerKind, key: KeyType) -> PairFiles {
        let lead = match kind {
            ListenerKind::Proxy => "",
            ListenerKind::Admin => "admin-",
            ListenerKind::Status => "status-",
        };
        let tail = match key {
            KeyType::Rsa2048 => "",
            KeyType::EcdsaP256 => "-ecdsa",
        };
        let dir = prefix.join("ssl");
        PairFiles {
            cert: dir.join(format!("{lead}kong-default{tail}.crt")),
            key: dir.join(format!("{lead}kong-default{tail}.key")),
        }
    }
}

/// Why the default certificates kept in the prefix directory cannot be used. Messages name
/// files, never their content.
#[derive(Debug, thiserror::Error)]
pub enum PrefixError {
    /// The prefix exists and is not a directory (Kong's message).
    #[error("{0} is not a directory")]
    NotADirectory(PathBuf),
    /// The prefix cannot be looked at (a search permission missing on its path, say).
    #[error("cannot access {path}: {source}")]
    Access {
        /// The prefix.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// `<prefix>/ssl` cannot be created.
    #[error("cannot create {dir}: {source}")]
    CreateDir {
        /// The directory.
        dir: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file of a pair that is there (one of its two files at least) cannot be read or
    /// parsed. Kong does not generate a pair again while one of its files exists; nginx then
    /// refuses to start on it.
    #[error(
        "default certificate file {file}: {reason} (delete {} and {} to have a new pair \
         generated)",
        pair.cert.display(),
        pair.key.display()
    )]
    Unusable {
        /// The file.
        file: PathBuf,
        /// Why.
        reason: String,
        /// The pair it belongs to.
        pair: PairFiles,
    },
    /// The key of a pair is not its certificate's.
    #[error(
        "default certificate key {} does not match {} (delete both to have a new pair \
         generated)",
        .0.key.display(),
        .0.cert.display()
    )]
    Mismatch(PairFiles),
    /// A generated file cannot be written.
    #[error("cannot write {file}: {source}")]
    Write {
        /// The file.
        file: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// Checks the prefix as Kong does before using it: a path that exists must be a directory.
/// A path that cannot be looked at (a search permission missing on the way, say) is an
/// error naming it, not taken for a missing one.
pub fn check_prefix(prefix: &Path) -> Result<(), PrefixError> {
    match std::fs::metadata(prefix) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(PrefixError::NotADirectory(prefix.to_path_buf())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(PrefixError::Access {
            path: prefix.to_path_buf(),
            source,
        }),
    }
}

/// The pair kept in `files`: `None` when neither file exists (Kong generates the pair only
/// then), else both read, parsed and matched.
pub fn read_pair(files: &PairFiles) -> Result<Option<Arc<CertifiedKey>>, PrefixError> {
    let unusable = |file: &Path, reason: String| PrefixError::Unusable {
        file: file.to_path_buf(),
        reason,
        pair: files.clone(),
    };
    // A file that cannot be looked at is not taken for a missing one (which would have the
    // pair generated over it).
    let exists = |file: &Path| file.try_exists().map_err(|e| unusable(file, e.to_string()));
    let cert_there = exists(&files.cert)?;
    let key_there = exists(&files.key)?;
    if !cert_there && !key_there {
        return Ok(None);
    }
    if key_there && !cert_there {
        finish_interrupted_write(files);
    }
    let cert_pem =
        std::fs::read_to_string(&files.cert).map_err(|e| unusable(&files.cert, e.to_string()))?;
    let key_pem =
        std::fs::read_to_string(&files.key).map_err(|e| unusable(&files.key, e.to_string()))?;
    let chain = pki::parse_certs(&cert_pem).map_err(|r| unusable(&files.cert, r))?;
    let signer = pki::parse_key(&key_pem)
        .and_then(|k| pki::signing_key(&k))
        .map_err(|r| unusable(&files.key, r))?;
    match pki::matching(&chain, &signer) {
        Ok(_) => {}
        Err(pki::PairError::Mismatch) => return Err(PrefixError::Mismatch(files.clone())),
        Err(pki::PairError::Certificate(reason)) => return Err(unusable(&files.cert, reason)),
        Err(pki::PairError::Key(reason)) => return Err(unusable(&files.key, reason)),
    }
    Ok(Some(Arc::new(CertifiedKey::new(chain, signer))))
}

/// Writes a generated pair where neither of its files exists, as a pair or not at all: both
/// files are first written in full under temporary names in their directory (created
/// exclusively, the key with mode 0600 from its creation, the certificate with the default
/// mode, 0666 less the umask; each synced to disk), then each is hard-linked to its final
/// name, the key first, as Kong writes it. A link fails where its name exists, so nothing is
/// overwritten; when the certificate's fails, the key just linked is removed again. The
/// temporary names are removed in every case. So a failed write leaves neither file of the
/// pair, and one that a crash interrupts leaves at most a temporary file (never read) or,
/// between the two links, the key and the certificate's temporary, which the next
/// [`read_pair`] links to its name ([`finish_interrupted_write`]).
fn write_pair(files: &PairFiles, generated: &Generated) -> Result<(), PrefixError> {
    let dir = files.key.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|source| PrefixError::CreateDir {
        dir: dir.to_path_buf(),
        source,
    })?;
    let key = Temporary::write(&files.key, &generated.key_pem, true)?;
    let cert = Temporary::write(&files.cert, &generated.cert_pem, false)?;
    if let Err(source) = std::fs::hard_link(&key.0, &files.key) {
        if !links_unsupported(&source) {
            return Err(PrefixError::Write {
                file: files.key.clone(),
                source,
            });
        }
        // A file system without hard links (vfat, some network and FUSE mounts): each
        // file is created exclusively under its final name instead, so a failure can
        // leave the key alone there, as Kong's own writes can.
        drop((key, cert));
        return write_pair_in_place(files, generated);
    }
    if let Err(source) = std::fs::hard_link(&cert.0, &files.cert) {
        if let Err(e) = std::fs::remove_file(&files.key) {
            tracing::error!(
                error = %e,
                key = %files.key.display(),
                "cannot remove the key of a default certificate that was not written"
            );
        }
        return Err(PrefixError::Write {
            file: files.cert.clone(),
            source,
        });
    }
    // The links themselves on disk (best effort: the files are).
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Finishes a [`write_pair`] that a crash cut between its two links, which left the key
/// under its name and the certificate only under its temporary name (synced before the
/// first link, and removed only after the second). Called where the key is there and the
/// certificate is not: a temporary certificate of the pair in the directory whose public key
/// is the key's is linked to the certificate's name (a link never replaces a file, so one
/// that another process made first stays), and that temporary and the temporary copies of
/// the key are removed. Nothing else is touched: a key without such a temporary is left to
/// [`read_pair`]'s error, as a lone key that this process did not write. Best effort: what
/// cannot be read or linked is logged, and the read that follows says what is wrong.
fn finish_interrupted_write(files: &PairFiles) {
    let Some(dir) = files.cert.parent() else {
        return;
    };
    let Ok(key_pem) = std::fs::read_to_string(&files.key) else {
        return;
    };
    let Ok(signer) = pki::parse_key(&key_pem).and_then(|k| pki::signing_key(&k)) else {
        return;
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let (certs, keys): (Vec<PathBuf>, Vec<PathBuf>) = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| is_temporary_of(p, &files.cert) || is_temporary_of(p, &files.key))
        .partition(|p| is_temporary_of(p, &files.cert));
    let matching = certs.into_iter().find(|temporary| {
        std::fs::read_to_string(temporary)
            .ok()
            .and_then(|pem| pki::parse_certs(&pem).ok())
            .is_some_and(|chain| pki::matching(&chain, &signer).is_ok())
    });
    let Some(temporary) = matching else {
        return;
    };
    match std::fs::hard_link(&temporary, &files.cert) {
        Ok(()) => tracing::warn!(
            cert = %files.cert.display(),
            key = %files.key.display(),
            "finished writing a default certificate pair that an earlier start left with its \
             key alone (that start stopped between writing the key and the certificate)"
        ),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => {
            tracing::error!(
                error = %e,
                cert = %files.cert.display(),
                "cannot finish writing a default certificate pair left with its key alone"
            );
            return;
        }
    }
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    let _ = std::fs::remove_file(&temporary);
    for copy in keys {
        if std::fs::read_to_string(&copy).is_ok_and(|pem| pem == key_pem) {
            let _ = std::fs::remove_file(&copy);
        }
    }
}

/// Whether `path` is a temporary name [`Temporary::write`] gives a file written for
/// `target`: `.<target's name>.<pid>.<16 hex digits>.tmp` in its directory.
fn is_temporary_of(path: &Path, target: &Path) -> bool {
    let (Some(name), Some(of)) = (path.file_name(), target.file_name()) else {
        return false;
    };
    let (Some(name), Some(of)) = (name.to_str(), of.to_str()) else {
        return false;
    };
    let Some(rest) = name
        .strip_prefix('.')
        .and_then(|n| n.strip_prefix(of))
        .and_then(|n| n.strip_prefix('.'))
        .and_then(|n| n.strip_suffix(".tmp"))
    else {
        return false;
    };
    let Some((pid, nonce)) = rest.split_once('.') else {
        return false;
    };
    path.parent() == target.parent()
        && !pid.is_empty()
        && pid.bytes().all(|b| b.is_ascii_digit())
        && nonce.len() == 16
        && nonce.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Whether a failed `link(2)` says the file system has no hard links.
fn links_unsupported(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::Unsupported
        || matches!(
            e.raw_os_error(),
            Some(libc_codes::EPERM | libc_codes::EOPNOTSUPP)
        )
}

/// The `errno` values of a file system that refuses hard links (Linux's).
mod libc_codes {
    pub(super) const EPERM: i32 = 1;
    pub(super) const EOPNOTSUPP: i32 = 95;
}

/// [`write_pair`] where hard links cannot be made: the key, then the certificate, each
/// created exclusively (never overwriting) under its final name; the key is removed again
/// if the certificate cannot be written.
fn write_pair_in_place(files: &PairFiles, generated: &Generated) -> Result<(), PrefixError> {
    let write = |path: &Path, text: &str, private| {
        create_synced(path, text, private).map_err(|source| PrefixError::Write {
            file: path.to_path_buf(),
            source,
        })
    };
    write(&files.key, &generated.key_pem, true)?;
    if let Err(e) = write(&files.cert, &generated.cert_pem, false) {
        if let Err(e) = std::fs::remove_file(&files.key) {
            tracing::error!(
                error = %e,
                key = %files.key.display(),
                "cannot remove the key of a default certificate that was not written"
            );
        }
        return Err(e);
    }
    Ok(())
}

/// Creates `at` exclusively (mode 0600 if `private`), writes `text` and syncs it; a file it
/// created but could not fill is removed again, so no half-written file is left to read.
fn create_synced(at: &Path, text: &str, private: bool) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        if private {
            options.mode(0o600);
        }
    }
    #[cfg(not(unix))]
    let _ = private;
    let mut file = options.open(at)?;
    let filled = file
        .write_all(text.as_bytes())
        .and_then(|()| file.sync_all());
    if filled.is_err() {
        let _ = std::fs::remove_file(at);
    }
    filled
}

/// A file written under a temporary name beside its final one (`.<name>.<pid>.<random>.tmp`),
/// removed when dropped.
struct Temporary(PathBuf);

impl Temporary {
    /// Writes `text` to a new temporary file for `path`, mode 0600 if `private`, and syncs
    /// it. Errors name `path`, the file being written.
    fn write(path: &Path, text: &str, private: bool) -> Result<Temporary, PrefixError> {
        let err = |source| PrefixError::Write {
            file: path.to_path_buf(),
            source,
        };
        let mut nonce = [0u8; 8];
        getrandom::fill(&mut nonce)
            .map_err(|e| err(std::io::Error::other(format!("random name: {e}"))))?;
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let temporary = path.with_file_name(format!(
            ".{name}.{}.{}.tmp",
            std::process::id(),
            hex::encode(nonce)
        ));
        create_synced(&temporary, text, private).map_err(err)?;
        Ok(Temporary(temporary))
    }
}

impl Drop for Temporary {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// An exclusive advisory lock (`flock`) on `<prefix>/ssl/.lock`, held while the pairs there
/// are read and missing ones written: by a start, and by the thread that writes a generated
/// RSA pair. Two processes (or gateways) on one prefix so never both write a pair: the
/// second waits, then reads the first one's. It is held for file operations only, never
/// during RSA key generation, and released when dropped. The lock file stays (removing it
/// would race with a process about to lock it). Where it cannot be opened or locked (a
/// read-only directory, a file system without locks), the work goes on without it after a
/// warning: reading needs no lock, and a write there fails on its own.
struct PrefixLock {
    /// The locked file (closing it releases the lock); `None` when going on unlocked.
    _file: Option<std::fs::File>,
}

impl PrefixLock {
    /// Locks `dir` (`<prefix>/ssl`, created if need be), waiting for the lock.
    fn take(dir: &Path) -> Result<PrefixLock, PrefixError> {
        std::fs::create_dir_all(dir).map_err(|source| PrefixError::CreateDir {
            dir: dir.to_path_buf(),
            source,
        })?;
        let path = dir.join(".lock");
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .or_else(|_| std::fs::File::open(&path));
        let locked = file.and_then(|f| match f.try_lock() {
            Ok(()) => Ok(f),
            Err(std::fs::TryLockError::WouldBlock) => {
                // another process holds it (writing its pair, or stuck): say so, then wait
                tracing::info!(
                    file = %path.display(),
                    "waiting for another process's lock on the prefix's default certificates"
                );
                f.lock().map(|()| f)
            }
            Err(std::fs::TryLockError::Error(e)) => Err(e),
        });
        match locked {
            Ok(f) => Ok(PrefixLock { _file: Some(f) }),
            Err(e) => {
                tracing::warn!(
                    file = %path.display(),
                    error = %e,
                    "cannot lock the default certificates of the prefix; going on without \
                     the lock (two processes starting on this prefix at once may both \
                     generate a pair, and one of them then fails to write it)"
                );
                Ok(PrefixLock { _file: None })
            }
        }
    }

    /// Whether the lock is held (not so when it could not be taken).
    #[cfg(test)]
    fn held(&self) -> bool {
        self._file.is_some()
    }
}

/// Under the prefix's lock: the pair kept in `files` if one is there (written by another
/// process since this one read the prefix), else `generated`, written there (`None`).
fn keep_or_write(
    files: &PairFiles,
    generated: &Generated,
) -> Result<Option<Arc<CertifiedKey>>, PrefixError> {
    let _lock = PrefixLock::take(files.key.parent().unwrap_or(Path::new(".")))?;
    if let Some(kept) = read_pair(files)? {
        return Ok(Some(kept));
    }
    write_pair(files, generated)?;
    Ok(None)
}

/// What a failed write of `files` leaves for the next start, as the log tells it: a pair is
/// generated again only where neither of its files exists.
fn after_failed_write(files: &PairFiles) -> String {
    let there: Vec<String> = [&files.cert, &files.key]
        .into_iter()
        .filter_map(|p| match p.try_exists() {
            Ok(false) => None,
            Ok(true) => Some(format!("{} is there", p.display())),
            Err(e) => Some(format!("{} cannot be checked ({e})", p.display())),
        })
        .collect();
    if there.is_empty() {
        "neither of its files was written: the next start generates another pair".into()
    } else {
        format!(
            "{}, so the next start reads what is there instead of generating a pair",
            there.join(" and ")
        )
    }
}

/// The listeners a kind names in logs.
fn listeners(kind: ListenerKind) -> &'static str {
    match kind {
        ListenerKind::Proxy => "proxy",
        ListenerKind::Admin => "admin",
        ListenerKind::Status => "status",
    }
}

/// The default certificates of one kind of listener. Generated ones can change once, when
/// the RSA certificate is ready; configured ones, and ones read from the prefix, never
/// change.
#[derive(Debug)]
pub struct DefaultCertificates {
    set: ArcSwap<CertSet>,
    /// Whether `set` is final: `false` while a generated RSA certificate is on its way.
    settled: watch::Sender<bool>,
}

/// One value per kind of listener, reached by a `match` on the kind (not by its
/// discriminant, which a reordered enum would change).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct PerKind<T> {
    proxy: T,
    admin: T,
    status: T,
}

impl<T> PerKind<T> {
    /// The values of the proxy, admin and status listeners.
    pub(crate) const fn new(proxy: T, admin: T, status: T) -> PerKind<T> {
        PerKind {
            proxy,
            admin,
            status,
        }
    }

    /// The value of `kind`.
    pub(crate) fn get(&self, kind: ListenerKind) -> &T {
        match kind {
            ListenerKind::Proxy => &self.proxy,
            ListenerKind::Admin => &self.admin,
            ListenerKind::Status => &self.status,
        }
    }

    /// The value of `kind`, to change.
    pub(crate) fn get_mut(&mut self, kind: ListenerKind) -> &mut T {
        match kind {
            ListenerKind::Proxy => &mut self.proxy,
            ListenerKind::Admin => &mut self.admin,
            ListenerKind::Status => &mut self.status,
        }
    }
}

/// Generated certificates without a prefix, one set per listener kind (proxy, admin,
/// status), shared by every gateway of the process.
static GENERATED: Mutex<PerKind<Option<Arc<DefaultCertificates>>>> =
    Mutex::new(PerKind::new(None, None, None));

impl DefaultCertificates {
    /// The default certificates of each kind of listener in `wanted` (`None`: the kind has
    /// no `ssl` listener, and gets none): those of its setting (`ssl_cert`,
    /// `admin_ssl_cert` or `status_ssl_cert`, in `wanted`) when set; else, with a `prefix`,
    /// the pairs kept there, each generated and written when neither of its files exists;
    /// else generated ones kept in memory. Every setting is loaded, then every pair of the
    /// prefix read, before anything is written. A generated RSA certificate comes later,
    /// from a thread of its own (see the module documentation). Blocking: it may wait for
    /// another process's lock on the prefix ([`PrefixLock`]).
    pub(crate) fn for_listeners(
        wanted: &PerKind<Option<SslCert>>,
        prefix: Option<&Path>,
    ) -> Result<PerKind<Option<Arc<DefaultCertificates>>>, ProxyError> {
        let mut made = PerKind::<Option<Arc<DefaultCertificates>>>::default();
        let mut generated = vec![];
        for kind in [
            ListenerKind::Proxy,
            ListenerKind::Admin,
            ListenerKind::Status,
        ] {
            match wanted.get(kind) {
                None => {}
                Some(c) if c.is_empty() => generated.push(kind),
                Some(c) => {
                    let set = c.load()?;
                    tracing::info!(
                        certificates = set.certificates().count(),
                        "default certificates from {}",
                        c.setting
                    );
                    *made.get_mut(kind) = Some(DefaultCertificates::settled(set));
                }
            }
        }
        match prefix {
            Some(_) if generated.is_empty() => {}
            Some(prefix) => {
                for (kind, d) in DefaultCertificates::in_prefix(prefix, &generated)? {
                    *made.get_mut(kind) = Some(d);
                }
            }
            None => {
                for kind in generated {
                    *made.get_mut(kind) = Some(DefaultCertificates::in_memory(kind)?);
                }
            }
        }
        Ok(made)
    }

    fn settled(set: CertSet) -> Arc<DefaultCertificates> {
        Arc::new(DefaultCertificates {
            set: ArcSwap::from_pointee(set),
            settled: watch::Sender::new(true),
        })
    }

    /// A set of `ecdsa` alone, not final until its [`RsaSlot`] publishes the RSA
    /// certificate or is dropped.
    pub(crate) fn pending(ecdsa: Arc<CertifiedKey>) -> (Arc<DefaultCertificates>, RsaSlot) {
        let target = Arc::new(DefaultCertificates {
            set: ArcSwap::from_pointee(CertSet::new(ecdsa.clone(), vec![])),
            settled: watch::Sender::new(false),
        });
        (target.clone(), RsaSlot { target, ecdsa })
    }

    fn in_memory(kind: ListenerKind) -> Result<Arc<DefaultCertificates>, ProxyError> {
        let mut shared = GENERATED.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(d) = shared.get(kind) {
            return Ok(d.clone());
        }
        let ecdsa = generate(KeyType::EcdsaP256).map_err(ProxyError::Tls)?;
        let (defaults, slot) = DefaultCertificates::pending(ecdsa.certified);
        spawn_rsa(kind, slot, None)?;
        *shared.get_mut(kind) = Some(defaults.clone());
        Ok(defaults)
    }

    /// The pairs of `kinds` in `prefix`, under its lock.
    fn in_prefix(
        prefix: &Path,
        kinds: &[ListenerKind],
    ) -> Result<Vec<(ListenerKind, Arc<DefaultCertificates>)>, ProxyError> {
        let lock = PrefixLock::take(&prefix.join("ssl"))?;
        // Every pair of every kind is read before anything is written: a pair that cannot
        // be used stops the start with the prefix as it was (the lock file aside).
        let mut kept = vec![];
        for &kind in kinds {
            let rsa_files = PairFiles::in_prefix(prefix, kind, KeyType::Rsa2048);
            let ecdsa_files = PairFiles::in_prefix(prefix, kind, KeyType::EcdsaP256);
            let rsa = read_pair(&rsa_files)?;
            let ecdsa = read_pair(&ecdsa_files)?;
            kept.push((kind, rsa_files, rsa, ecdsa_files, ecdsa));
        }
        let mut made = vec![];
        let mut rsa_to_come = vec![];
        for (kind, rsa_files, rsa, ecdsa_files, ecdsa) in kept {
            let ecdsa = match ecdsa {
                Some(kept) => kept,
                None => {
                    let g = generate(KeyType::EcdsaP256).map_err(ProxyError::Tls)?;
                    write_pair(&ecdsa_files, &g)?;
                    tracing::info!(
                        cert = %ecdsa_files.cert.display(),
                        key = %ecdsa_files.key.display(),
                        "default ECDSA certificate of the {} listeners generated", listeners(kind)
                    );
                    g.certified
                }
            };
            match rsa {
                Some(rsa) => {
                    tracing::info!(
                        dir = %prefix.join("ssl").display(),
                        "default certificates of the {} listeners read from the prefix",
                        listeners(kind)
                    );
                    let set = CertSet::new(rsa, vec![ecdsa]);
                    made.push((kind, DefaultCertificates::settled(set)));
                }
                None => {
                    let (defaults, slot) = DefaultCertificates::pending(ecdsa);
                    made.push((kind, defaults));
                    rsa_to_come.push((kind, slot, rsa_files));
                }
            }
        }
        // (each RSA thread takes the lock again to write its pair)
        drop(lock);
        for (kind, slot, files) in rsa_to_come {
            spawn_rsa(kind, slot, Some(files))?;
        }
        Ok(made)
    }

    /// The certificates now (for generated ones, the RSA certificate may not be there yet).
    pub fn current(&self) -> Arc<CertSet> {
        self.set.load_full()
    }

    /// Whether a generated RSA certificate is still on its way.
    pub fn rsa_pending(&self) -> bool {
        !*self.settled.borrow()
    }

    /// Waits until the certificates are final: the RSA certificate is there, or its
    /// generation failed.
    pub async fn rsa_settled(&self) {
        let mut rx = self.settled.subscribe();
        // (the sender lives in `self`: it cannot be gone)
        let _ = rx.wait_for(|settled| *settled).await;
    }

    /// Whether a handshake should wait for the RSA certificate: it is on its way and the
    /// client (offering the `offered` versions) cannot use the ECDSA one.
    pub(crate) fn waits_for_rsa(&self, hello: &ClientHello<'_>, offered: Offered) -> bool {
        self.rsa_pending() && !accepts_ecdsa_p256(hello, offered)
    }

    /// How many handshakes wait for the RSA certificate now.
    #[cfg(test)]
    pub(crate) fn waiting(&self) -> usize {
        self.settled.receiver_count()
    }

    /// The certificate for a client whose handshake speaks `version` (see
    /// [`CertSet::choose`]).
    pub(crate) fn choose(&self, hello: &ClientHello<'_>, version: Version) -> Arc<CertifiedKey> {
        self.set.load().choose(hello, version)
    }
}

/// The RSA certificate a pending set ([`DefaultCertificates::pending`]) waits for:
/// [`RsaSlot::publish`] adds it beside the ECDSA one; dropped without publishing (its
/// generation failed, its thread ended), the set stays as it is. Either way the set is final
/// afterwards, so that no handshake waits for nothing.
pub(crate) struct RsaSlot {
    target: Arc<DefaultCertificates>,
    ecdsa: Arc<CertifiedKey>,
}

impl RsaSlot {
    /// Serves `rsa` beside the ECDSA certificate from now on.
    pub(crate) fn publish(self, rsa: Arc<CertifiedKey>) {
        // RSA first, as Kong lists it; the client's schemes decide anyway.
        let set = CertSet::new(rsa, vec![self.ecdsa.clone()]);
        self.target.set.store(Arc::new(set));
        // (dropped here: final)
    }
}

impl Drop for RsaSlot {
    fn drop(&mut self) {
        self.target.settled.send_replace(true);
    }
}

/// Generates the RSA certificate on a thread of its own and publishes it through `slot`.
/// With `files`, first, under the prefix's lock: when another process wrote the pair since
/// this one read the prefix, that pair is published instead of the new one; else the new
/// one is written, and published whether or not the write succeeds (a failed write is
/// logged, and the certificate then lives in memory only). So a certificate published after
/// a successful write is the one in the prefix. Waiting for the lock happens on that thread.
fn spawn_rsa(
    kind: ListenerKind,
    slot: RsaSlot,
    files: Option<PairFiles>,
) -> Result<(), ProxyError> {
    std::thread::Builder::new()
        .name("silverback-rsa-keygen".into())
        .spawn(move || {
            let start = Instant::now();
            let rsa = match generate(KeyType::Rsa2048) {
                Ok(rsa) => rsa,
                Err(e) => {
                    tracing::error!(
                        error = %e,
                        "cannot generate the default RSA certificate of the {} listeners: \
                         clients without ECDSA get no default certificate",
                        listeners(kind)
                    );
                    return;
                }
            };
            let served = match &files {
                None => rsa.certified,
                Some(files) => match keep_or_write(files, &rsa) {
                    Ok(None) => {
                        tracing::info!(
                            cert = %files.cert.display(),
                            key = %files.key.display(),
                            "default RSA certificate of the {} listeners generated",
                            listeners(kind)
                        );
                        rsa.certified
                    }
                    Ok(Some(kept)) => {
                        tracing::info!(
                            cert = %files.cert.display(),
                            "default RSA certificate of the {} listeners written meanwhile by \
                             another start on the prefix: serving that one",
                            listeners(kind)
                        );
                        kept
                    }
                    Err(e) => {
                        tracing::error!(
                            error = %e,
                            "the default RSA certificate of the {} listeners serves from \
                             memory only; {}",
                            listeners(kind),
                            after_failed_write(files)
                        );
                        rsa.certified
                    }
                },
            };
            slot.publish(served);
            tracing::debug!(
                ms = start.elapsed().as_millis() as u64,
                "default RSA certificate of the {} listeners ready",
                listeners(kind)
            );
        })
        .map_err(|e| ProxyError::Tls(format!("cannot start RSA key generation: {e}")))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The config crate's test PKI (the directory cargo gives the test run, where a
    /// binary built elsewhere would carry another path).
    fn pki() -> String {
        let dir = std::env::var("CARGO_MANIFEST_DIR")
            .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string());
        format!("{dir}/../config/tests/fixtures/pki")
    }

    fn fixture(name: &str) -> String {
        format!("{}/{name}", pki())
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
            "ssl_cert_key: failed loading key from entry 1: not a file, PEM text, or base64 \
             of PEM text"
        );
        // A truncated base64 key (no longer base64: one character too many), with and
        // without a `/` of the base64 alphabet: named by position, never shown.
        let cut = "LS0tLS1CRUdJTiBQUklWQVRFIEtFWS0tLS0tCk1JR0hBZ0VBTUJNR0J5cUdTTTQ5QWdF";
        let truncated = format!("{cut}R");
        let slashed = "LS0tLS1CRUdJTiBQUklW/QVRFIEtFWS0tLS0tCk1JR0hBZ0VBTUJNR0J5cUdTTTQ5QWdZ";
        for key in [truncated.as_str(), slashed, &format!("/{cut}")] {
            assert!(decode_base64(key).is_none(), "{key} is not base64");
            let e = err(&rsa_crt, key);
            assert_eq!(
                e,
                "ssl_cert_key: failed loading key from entry 1: not a file, PEM text, or \
                 base64 of PEM text",
                "{key}"
            );
            assert!(!e.contains("LS0t"), "{e}");
        }
        // A path to nothing in an existing directory is named, as a file name with a dot.
        let e = err(&rsa_crt, &dir.join("missing.key").display().to_string());
        assert!(e.contains("missing.key: no such file"), "{e}");
        let e = err(&rsa_crt, "missing.key");
        assert!(e.contains("from missing.key: no such file"), "{e}");
        let e = err(&rsa_crt, "/no/such/dir/missing.key");
        assert!(e.contains("from entry 1: not a file"), "{e}");
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

    /// An X.509 version 1 certificate loads with its key (webpki's `keys_match`, used
    /// before, cannot read one and called it a mismatch), and a key of another is still a
    /// mismatch.
    #[test]
    fn version_1_certificates_load() {
        let set = SslCert::parse(&fixture("v1.crt"), &fixture("v1.key"))
            .load()
            .expect("a v1 certificate and its key");
        assert_eq!(set.certificates().count(), 1);
        let e = SslCert::parse(&fixture("v1.crt"), &fixture("ec.key"))
            .load()
            .unwrap_err();
        assert!(matches!(e, SslCertError::Mismatch { .. }), "{e}");
        let dir = std::env::temp_dir().join(format!("sb-v1-pair-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let files = PairFiles {
            cert: dir.join("v1.crt"),
            key: dir.join("v1.key"),
        };
        std::fs::copy(fixture("v1.crt"), &files.cert).unwrap();
        std::fs::copy(fixture("v1.key"), &files.key).unwrap();
        assert!(read_pair(&files).unwrap().is_some(), "a kept v1 pair reads");
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
            let g = generate(kind).unwrap();
            assert!(!format!("{g:?}").contains("PRIVATE"), "Debug hides the key");
            // the PEM forms are the certificate and key served
            assert_eq!(pki::parse_certs(&g.cert_pem).unwrap(), g.certified.cert);
            assert!(
                g.key_pem.starts_with("-----BEGIN PRIVATE KEY-----"),
                "PKCS#8"
            );
            let k = g.certified;
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

    /// A directory of its own under the system's temporary directory, removed at the end.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(name: &str) -> Scratch {
            let dir = std::env::temp_dir().join(format!("sb-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            Scratch(dir)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn each_kind_has_its_own_value() {
        use ListenerKind::{Admin, Proxy, Status};
        let mut v = PerKind::new("p", "a", "s");
        assert_eq!([Proxy, Admin, Status].map(|k| *v.get(k)), ["p", "a", "s"]);
        *v.get_mut(Admin) = "A";
        assert_eq!(v, PerKind::new("p", "A", "s"));
    }

    #[test]
    fn pairs_have_kongs_file_names() {
        let p = Path::new("/p");
        let names = |kind, key| {
            let f = PairFiles::in_prefix(p, kind, key);
            (f.cert.display().to_string(), f.key.display().to_string())
        };
        use KeyType::{EcdsaP256, Rsa2048};
        use ListenerKind::{Admin, Proxy, Status};
        let want = |stem: &str| (format!("/p/ssl/{stem}.crt"), format!("/p/ssl/{stem}.key"));
        assert_eq!(names(Proxy, Rsa2048), want("kong-default"));
        assert_eq!(names(Proxy, EcdsaP256), want("kong-default-ecdsa"));
        assert_eq!(names(Admin, Rsa2048), want("admin-kong-default"));
        assert_eq!(names(Admin, EcdsaP256), want("admin-kong-default-ecdsa"));
        assert_eq!(names(Status, Rsa2048), want("status-kong-default"));
        assert_eq!(names(Status, EcdsaP256), want("status-kong-default-ecdsa"));
    }

    #[test]
    fn a_written_pair_reads_back_and_its_key_is_private() {
        let dir = Scratch::new("pair-round-trip");
        let files = PairFiles::in_prefix(
            &dir.0.join("nested"),
            ListenerKind::Admin,
            KeyType::EcdsaP256,
        );
        assert!(
            read_pair(&files).unwrap().is_none(),
            "neither file: generate"
        );
        let g = generate(KeyType::EcdsaP256).unwrap();
        write_pair(&files, &g).unwrap();
        let back = read_pair(&files).unwrap().unwrap();
        assert_eq!(back.cert, g.certified.cert);
        assert_eq!(back.key.public_key(), g.certified.key.public_key());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&files.key), 0o600);
            assert_eq!(mode(&files.cert) & 0o600, 0o600);
        }
        // written only when neither file exists: nothing is overwritten
        let other = generate(KeyType::EcdsaP256).unwrap();
        let e = write_pair(&files, &other).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("cannot write {}", files.key.display())),
            "{e}"
        );
        let back = read_pair(&files).unwrap().unwrap();
        assert_eq!(back.cert, g.certified.cert);
        assert_eq!(
            names_in(files.key.parent().unwrap()),
            [
                "admin-kong-default-ecdsa.crt",
                "admin-kong-default-ecdsa.key"
            ],
            "no temporary file left"
        );
    }

    /// The names in a directory, sorted.
    fn names_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// A pair whose certificate cannot be written leaves neither file (no key alone, which
    /// would stop every later start), and the log says what the next start does.
    #[test]
    fn without_hard_links_a_pair_is_written_in_place() {
        use std::os::unix::fs::PermissionsExt;
        let unsupported = |code| links_unsupported(&std::io::Error::from_raw_os_error(code));
        assert!(unsupported(1) && unsupported(95), "EPERM, EOPNOTSUPP");
        assert!(
            !unsupported(17) && !unsupported(13),
            "EEXIST, EACCES are failures"
        );

        let dir = Scratch::new("pair-in-place");
        let files = PairFiles::in_prefix(&dir.0, ListenerKind::Admin, KeyType::EcdsaP256);
        let ssl = files.cert.parent().unwrap().to_path_buf();
        std::fs::create_dir_all(&ssl).unwrap();
        let g = generate(KeyType::EcdsaP256).unwrap();
        write_pair_in_place(&files, &g).unwrap();
        assert_eq!(read_pair(&files).unwrap().unwrap().cert, g.certified.cert);
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&files.key), 0o600);
        // never over an existing file
        let e = write_pair_in_place(&files, &g).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("cannot write {}: ", files.key.display())),
            "{e}"
        );
        // a certificate that cannot be written takes its key away again
        let other = PairFiles::in_prefix(&dir.0, ListenerKind::Status, KeyType::EcdsaP256);
        std::fs::create_dir_all(&other.cert).unwrap();
        let e = write_pair_in_place(&other, &g).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("cannot write {}: ", other.cert.display())),
            "{e}"
        );
        assert!(!other.key.exists());
    }

    /// A write cut by a crash between its two links (the key linked, the certificate only
    /// under its temporary name) is finished by the next read; a lone key without its
    /// certificate's temporary is still refused, and so is one whose temporaries are
    /// another key's.
    #[test]
    fn a_pair_cut_between_its_links_is_finished_by_the_next_read() {
        let dir = Scratch::new("pair-cut");
        let files = PairFiles::in_prefix(&dir.0, ListenerKind::Proxy, KeyType::EcdsaP256);
        let ssl = files.cert.parent().unwrap().to_path_buf();
        std::fs::create_dir_all(&ssl).unwrap();
        // What a crash leaves: both temporaries (their removal never ran), the key linked.
        let cut = |g: &Generated| {
            let key = Temporary::write(&files.key, &g.key_pem, true).unwrap();
            let cert = Temporary::write(&files.cert, &g.cert_pem, false).unwrap();
            std::fs::hard_link(&key.0, &files.key).unwrap();
            std::mem::forget((key, cert));
        };
        let g = generate(KeyType::EcdsaP256).unwrap();
        cut(&g);
        assert_eq!(names_in(&ssl).len(), 3, "{:?}", names_in(&ssl));
        let back = read_pair(&files).unwrap().unwrap();
        assert_eq!(back.cert, g.certified.cert);
        assert_eq!(
            names_in(&ssl),
            ["kong-default-ecdsa.crt", "kong-default-ecdsa.key"],
            "the temporaries are gone"
        );

        // Another pair's temporaries beside a lone key: not linked, the start stops.
        std::fs::remove_file(&files.cert).unwrap();
        let other = generate(KeyType::EcdsaP256).unwrap();
        let stray = Temporary::write(&files.cert, &other.cert_pem, false).unwrap();
        let e = read_pair(&files).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!(
                "default certificate file {}: ",
                files.cert.display()
            )),
            "{e}"
        );
        assert!(
            !files.cert.exists(),
            "a certificate of another key is not linked"
        );
        assert!(stray.0.exists(), "nor removed");
        drop(stray);
        // A temporary-looking name of another file, or with a bad nonce, is not taken.
        let not_ours = [
            ssl.join(format!(".kong-default.crt.1.{}.tmp", "0".repeat(16))),
            ssl.join(".kong-default-ecdsa.crt.1.xyz.tmp"),
        ];
        for p in &not_ours {
            std::fs::write(p, &g.cert_pem).unwrap();
        }
        assert!(read_pair(&files).is_err());
        assert!(!files.cert.exists());
        assert!(is_temporary_of(
            &ssl.join(format!(".kong-default-ecdsa.crt.42.{}.tmp", "a1".repeat(8))),
            &files.cert
        ));
    }

    #[test]
    fn a_failed_write_leaves_no_half_pair() {
        let dir = Scratch::new("pair-half");
        let files = PairFiles::in_prefix(&dir.0, ListenerKind::Proxy, KeyType::EcdsaP256);
        let ssl = files.cert.parent().unwrap();
        // Something in the certificate's way: a directory by its name.
        std::fs::create_dir_all(&files.cert).unwrap();
        let g = generate(KeyType::EcdsaP256).unwrap();
        let e = write_pair(&files, &g).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("cannot write {}: ", files.cert.display())),
            "{e}"
        );
        assert!(!files.key.exists(), "the key was removed again");
        assert_eq!(names_in(ssl), ["kong-default-ecdsa.crt"], "no temporaries");
        assert_eq!(
            after_failed_write(&files),
            format!(
                "{} is there, so the next start reads what is there instead of generating a \
                 pair",
                files.cert.display()
            )
        );
        // Out of the way, the pair is written; before, the next start would generate it.
        std::fs::remove_dir(&files.cert).unwrap();
        assert_eq!(
            after_failed_write(&files),
            "neither of its files was written: the next start generates another pair"
        );
        write_pair(&files, &g).unwrap();
        assert_eq!(read_pair(&files).unwrap().unwrap().cert, g.certified.cert);

        // A directory that cannot be made (a file by its name).
        let blocked = Scratch::new("pair-blocked");
        let ssl = blocked.0.join("ssl");
        std::fs::write(&ssl, "a file where the directory goes").unwrap();
        let files = PairFiles::in_prefix(&blocked.0, ListenerKind::Proxy, KeyType::EcdsaP256);
        let e = write_pair(&files, &g).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("cannot create {}: ", ssl.display())),
            "{e}"
        );
        let said = after_failed_write(&files);
        assert!(
            said.starts_with(&format!(
                "{} cannot be checked (Not a directory",
                files.cert.display()
            )),
            "{said}"
        );
    }

    /// While another holds the prefix's lock, reading or writing a pair waits; then it
    /// reads the pair the other wrote instead of writing its own.
    #[test]
    fn a_second_writer_waits_and_reads_the_first_ones_pair() {
        let dir = Scratch::new("pair-lock");
        let files = PairFiles::in_prefix(&dir.0, ListenerKind::Proxy, KeyType::EcdsaP256);
        let ssl = files.key.parent().unwrap().to_path_buf();
        let lock = PrefixLock::take(&ssl).unwrap();
        assert!(lock.held());
        let (first, second) = (
            generate(KeyType::EcdsaP256).unwrap(),
            generate(KeyType::EcdsaP256).unwrap(),
        );
        let waiting = {
            let files = files.clone();
            std::thread::spawn(move || keep_or_write(&files, &second))
        };
        std::thread::sleep(std::time::Duration::from_millis(300));
        assert!(!waiting.is_finished(), "it waits for the lock");
        write_pair(&files, &first).unwrap();
        drop(lock);
        let kept = waiting
            .join()
            .unwrap()
            .unwrap()
            .expect("the first one's pair");
        assert_eq!(kept.cert, first.certified.cert);
        assert_eq!(
            read_pair(&files).unwrap().unwrap().cert,
            first.certified.cert
        );
        assert_eq!(
            names_in(&ssl),
            [".lock", "kong-default-ecdsa.crt", "kong-default-ecdsa.key"]
        );
    }

    /// Two writers of one pair at once, again and again: one writes, the other reads its
    /// pair, and no write fails.
    #[test]
    fn two_writers_of_one_pair_end_with_one_pair() {
        let dir = Scratch::new("pair-writers");
        for round in 0..20 {
            let prefix = dir.0.join(round.to_string());
            let files = PairFiles::in_prefix(&prefix, ListenerKind::Admin, KeyType::EcdsaP256);
            let barrier = std::sync::Barrier::new(2);
            let outcomes: Vec<(Generated, Option<Arc<CertifiedKey>>)> = std::thread::scope(|s| {
                let writer = || {
                    s.spawn(|| {
                        let g = generate(KeyType::EcdsaP256).unwrap();
                        barrier.wait();
                        let kept = keep_or_write(&files, &g).unwrap();
                        (g, kept)
                    })
                };
                let (a, b) = (writer(), writer());
                vec![a.join().unwrap(), b.join().unwrap()]
            });
            let on_disk = read_pair(&files).unwrap().unwrap().cert.clone();
            let wrote: Vec<_> = outcomes.iter().filter(|(_, k)| k.is_none()).collect();
            assert_eq!(wrote.len(), 1, "round {round}: one writes");
            assert_eq!(wrote[0].0.certified.cert, on_disk);
            for (_, kept) in &outcomes {
                if let Some(kept) = kept {
                    assert_eq!(kept.cert, on_disk, "round {round}: the other reads it");
                }
            }
        }
    }

    /// Two starts on one empty prefix at once (the ECDSA pair written by a start, the RSA
    /// pair by its thread) serve one pair of certificates, the one in the files.
    #[tokio::test]
    async fn two_starts_on_one_empty_prefix_serve_one_pair() {
        let dir = Scratch::new("pair-starts");
        for round in 0..3 {
            let prefix = dir.0.join(round.to_string());
            let wanted = PerKind::new(Some(SslCert::default()), None, None);
            let barrier = std::sync::Barrier::new(2);
            let started: Vec<Arc<DefaultCertificates>> = std::thread::scope(|s| {
                let start = || {
                    s.spawn(|| {
                        barrier.wait();
                        let made = DefaultCertificates::for_listeners(&wanted, Some(&prefix));
                        made.unwrap().get(ListenerKind::Proxy).clone().unwrap()
                    })
                };
                let (a, b) = (start(), start());
                vec![a.join().unwrap(), b.join().unwrap()]
            });
            let mut served = vec![];
            for d in &started {
                d.rsa_settled().await;
                let certs: Vec<_> = d.current().certificates().map(|k| k.cert.clone()).collect();
                served.push(certs);
            }
            assert_eq!(served[0].len(), 2, "RSA and ECDSA");
            assert_eq!(
                served[0], served[1],
                "round {round}: one pair served by both"
            );
            for key in [KeyType::Rsa2048, KeyType::EcdsaP256] {
                let files = PairFiles::in_prefix(&prefix, ListenerKind::Proxy, key);
                let kept = read_pair(&files).unwrap().unwrap();
                assert!(served[0].contains(&kept.cert), "round {round}: {key:?}");
            }
            assert_eq!(
                names_in(&prefix.join("ssl")),
                [
                    ".lock",
                    "kong-default-ecdsa.crt",
                    "kong-default-ecdsa.key",
                    "kong-default.crt",
                    "kong-default.key"
                ]
            );
        }
    }

    /// A lock that cannot be taken (here the lock file's name leads nowhere: a link into a
    /// directory that does not exist) lets the work go on unlocked.
    #[cfg(unix)]
    #[test]
    fn an_unusable_lock_file_is_gone_around() {
        let dir = Scratch::new("pair-no-lock");
        let files = PairFiles::in_prefix(&dir.0, ListenerKind::Status, KeyType::EcdsaP256);
        let ssl = files.key.parent().unwrap();
        std::fs::create_dir_all(ssl).unwrap();
        std::os::unix::fs::symlink(dir.0.join("missing").join("lock"), ssl.join(".lock")).unwrap();
        assert!(!PrefixLock::take(ssl).unwrap().held());
        let g = generate(KeyType::EcdsaP256).unwrap();
        assert!(keep_or_write(&files, &g).unwrap().is_none(), "written");
        let kept = keep_or_write(&files, &generate(KeyType::EcdsaP256).unwrap()).unwrap();
        assert_eq!(kept.unwrap().cert, g.certified.cert);
    }

    /// Every kind's pairs are read before any is written: an unusable admin pair stops the
    /// start before the proxy listeners' pairs are generated.
    #[test]
    fn an_unusable_pair_stops_the_start_before_anything_is_written() {
        let dir = Scratch::new("pair-all-first");
        let admin = PairFiles::in_prefix(&dir.0, ListenerKind::Admin, KeyType::EcdsaP256);
        std::fs::create_dir_all(admin.key.parent().unwrap()).unwrap();
        std::fs::write(&admin.key, "not a key").unwrap();
        let wanted = PerKind::new(Some(SslCert::default()), Some(SslCert::default()), None);
        let e = DefaultCertificates::for_listeners(&wanted, Some(&dir.0))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with(&format!(
                "default certificate file {}",
                admin.cert.display()
            )),
            "{e}"
        );
        assert_eq!(
            names_in(admin.key.parent().unwrap()),
            [".lock", "admin-kong-default-ecdsa.key"],
            "nothing written"
        );
    }

    #[test]
    fn kept_pairs_that_cannot_be_used_are_named_never_quoted() {
        let dir = Scratch::new("pair-unusable");
        let files = PairFiles::in_prefix(&dir.0, ListenerKind::Proxy, KeyType::Rsa2048);
        let (crt, key) = (
            files.cert.display().to_string(),
            files.key.display().to_string(),
        );
        let delete = format!("(delete {crt} and {key} to have a new pair generated)");
        std::fs::create_dir_all(files.cert.parent().unwrap()).unwrap();
        let ec = generate(KeyType::EcdsaP256).unwrap();
        // half a pair: Kong does not generate it again; the missing file is named
        std::fs::write(&files.cert, &ec.cert_pem).unwrap();
        let e = read_pair(&files).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("default certificate file {key}: ")),
            "{e}"
        );
        assert!(e.ends_with(&delete), "{e}");
        // a key that is not one, in a form that would show up if quoted
        let secret =
            "-----BEGIN PRIVATE KEY-----c2VjcmV0IGtleSBtYXRlcmlhbA==-----END PRIVATE KEY-----";
        std::fs::write(&files.key, secret).unwrap();
        let e = read_pair(&files).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("default certificate file {key}: invalid key")),
            "{e}"
        );
        assert!(!e.contains("c2VjcmV0"), "{e}");
        // a certificate that is not one
        std::fs::write(&files.key, &ec.key_pem).unwrap();
        std::fs::write(&files.cert, "garbage").unwrap();
        let e = read_pair(&files).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!(
                "default certificate file {crt}: invalid certificate"
            )),
            "{e}"
        );
        // another pair's key
        std::fs::write(&files.cert, &ec.cert_pem).unwrap();
        std::fs::write(&files.key, &generate(KeyType::EcdsaP256).unwrap().key_pem).unwrap();
        assert_eq!(
            read_pair(&files).unwrap_err().to_string(),
            format!(
                "default certificate key {key} does not match {crt} (delete both to have a new pair generated)"
            )
        );
        // the prefix itself must be a directory
        assert!(check_prefix(&dir.0).is_ok());
        assert!(check_prefix(&dir.0.join("not-yet")).is_ok());
        assert_eq!(
            check_prefix(&files.cert).unwrap_err().to_string(),
            format!("{crt} is not a directory")
        );
    }

    /// A file of a pair, or the prefix, that cannot be looked at is an error naming it, not
    /// a missing file (a missing pair would be generated over it). Root ignores permission
    /// bits, so a missing search permission (EACCES) cannot be tested here as root; a link
    /// that loops (ELOOP) and a path through a regular file (ENOTDIR) fail the same check.
    #[cfg(unix)]
    #[test]
    fn paths_that_cannot_be_looked_at_are_errors() {
        let dir = Scratch::new("pair-unseen");
        let files = PairFiles::in_prefix(&dir.0, ListenerKind::Proxy, KeyType::EcdsaP256);
        let crt = files.cert.display().to_string();
        std::fs::create_dir_all(files.cert.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(&files.cert, &files.cert).unwrap();
        let e = read_pair(&files).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!(
                "default certificate file {crt}: Too many levels of symbolic links"
            )),
            "{e}"
        );
        let file = dir.0.join("a-file");
        std::fs::write(&file, "").unwrap();
        let e = check_prefix(&file.join("prefix")).unwrap_err().to_string();
        assert_eq!(
            e,
            format!(
                "cannot access {}: Not a directory (os error 20)",
                file.join("prefix").display()
            )
        );
        let inside = PairFiles::in_prefix(&file, ListenerKind::Admin, KeyType::Rsa2048);
        let e = read_pair(&inside).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!(
                "default certificate file {}: Not a directory",
                inside.cert.display()
            )),
            "{e}"
        );
    }
}
