//! PEM parsing and the certificate checks of `certificates` and `ca_certificates`: the
//! certificate parses, the key parses and matches it, the alternative pair uses another key
//! type, a CA certificate is a CA and not expired.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::SigningKey;
use std::cell::RefCell;
use std::sync::Arc;

use crate::checks::EntityCheck;
use crate::schema::Field;

/// Parses a PEM chain (at least one certificate).
pub fn parse_certs(pem: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(pem.as_bytes()).collect();
    let certs = certs.map_err(|e| format!("invalid certificate: {}", pem_error(&e)))?;
    if certs.is_empty() {
        return Err("invalid certificate: no PEM certificate found".into());
    }
    for c in &certs {
        x509_parser::parse_x509_certificate(c.as_ref())
            .map_err(|e| format!("invalid certificate: {e}"))?;
    }
    Ok(certs)
}

/// Parses a PEM private key (PKCS#8, PKCS#1 or SEC1). The error never quotes the input.
pub fn parse_key(pem: &str) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes())
        .map_err(|e| format!("invalid key: {}", pem_error(&e)))
}

/// What went wrong in a PEM text, without its content: the PEM parser's own messages quote
/// the offending line, which for a key written on one line (as environment variables often
/// carry it) is the key itself.
fn pem_error(e: &rustls::pki_types::pem::Error) -> &'static str {
    use rustls::pki_types::pem::Error;
    match e {
        Error::MissingSectionEnd { .. } => "a PEM section has no END line",
        Error::IllegalSectionStart { .. } => {
            "a PEM BEGIN line is malformed (is the text on one line?)"
        }
        Error::Base64Decode(_) => "a PEM section is not valid base64",
        Error::NoItemsFound => "no PEM section of the expected kind",
        Error::SectionTooLarge => "a PEM section is too large",
        _ => "the PEM text cannot be read",
    }
}

/// Loads a key into a signing key of the ring provider. A well-formed key of a kind ring
/// cannot sign with (RSA of other than 2048, 3072 or 4096 bits, or with an exponent outside 65537 to
/// 2^33 - 1, curves other
/// than P-256 and P-384, Ed448, DSA, RSA-PSS keys) is named in the error, with what is
/// supported: OpenSSL, and so Kong, would serve it.
pub fn signing_key(key: &PrivateKeyDer<'_>) -> Result<Arc<dyn SigningKey>, String> {
    rustls::crypto::ring::sign::any_supported_type(key).map_err(|e| {
        match crate::keys::unsupported_signing_key(key) {
            Some(kind) => format!(
                "invalid key: {kind} not supported (supported: RSA of 2048, 3072 or 4096 bits, ECDSA on \
             P-256 or P-384, Ed25519)"
            ),
            None => format!("invalid key: {e}"),
        }
    })
}

/// Why a key is not found to be the key of a certificate ([`matching`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PairError {
    /// The leaf certificate's public key cannot be read (or there is no certificate).
    Certificate(String),
    /// The key's public half cannot be had.
    Key(String),
    /// Both read, and they are different keys.
    Mismatch,
}

/// Checks that `key` belongs to the leaf of `certs` (their public keys compared, as DER);
/// returns the key's algorithm. The comparison is of the SubjectPublicKeyInfo bytes: a
/// certificate that spells the same key otherwise (RSA without the NULL parameters, explicit
/// EC curve parameters) is a mismatch, where Kong's OpenSSL compares the keys themselves. The certificate is read with x509-parser, which takes
/// every X.509 version (webpki's `keys_match` reads version 3 only).
pub fn matching(
    certs: &[CertificateDer<'_>],
    key: &Arc<dyn SigningKey>,
) -> Result<rustls::SignatureAlgorithm, PairError> {
    let leaf = certs
        .first()
        .ok_or_else(|| PairError::Certificate("no certificate".into()))?;
    let (_, x509) = x509_parser::parse_x509_certificate(leaf.as_ref())
        .map_err(|e| PairError::Certificate(format!("invalid certificate: {e}")))?;
    let spki = key
        .public_key()
        .ok_or_else(|| PairError::Key("the key's public half cannot be computed".into()))?;
    if spki.as_ref() == x509.tbs_certificate.subject_pki.raw {
        Ok(key.algorithm())
    } else {
        Err(PairError::Mismatch)
    }
}

/// Parses and matches a certificate and key, as the proxy needs them.
pub fn parse_pair(
    cert: &str,
    key: &str,
) -> Result<(Vec<CertificateDer<'static>>, Arc<dyn SigningKey>), String> {
    let certs = parse_certs(cert)?;
    let signer = signing_key(&parse_key(key)?)?;
    matching(&certs, &signer).map_err(|e| match e {
        PairError::Mismatch => "certificate does not match key".to_string(),
        PairError::Certificate(why) | PairError::Key(why) => why,
    })?;
    Ok((certs, signer))
}

/// A certificate field (Kong's `typedefs.certificate`): a PEM chain that parses.
pub(crate) fn certificate_field(name: &'static str) -> Field {
    Field::string(name).check_str(|s| {
        no_vault_reference(s)?;
        parse_certs(s).map(|_| ())
    })
}

/// Kong takes a vault reference (`{vault://env/tls-cert}`) in a certificate's `cert` and
/// `key` (they are `referenceable`); Silverback has no vaults, so it says so rather than
/// failing to read the reference as PEM.
fn no_vault_reference(s: &str) -> Result<(), String> {
    if crate::keys::is_vault_reference(s.trim()) {
        return Err(format!(
            "vault references are not supported by this gateway ('{}')",
            s.trim()
        ));
    }
    Ok(())
}

thread_local! {
    /// Keys loaded by their field's check, kept for the entity check that matches them to
    /// their certificate (which takes them): loading an RSA key is the costly part of a
    /// certificate's checks, and this way it is done once. At most two (`key` and
    /// `key_alt`), so a key does not outlive the next certificate's checks.
    static LOADED: RefCell<Vec<(String, Arc<dyn SigningKey>)>> = const { RefCell::new(Vec::new()) };
}

/// A private key field (Kong's `typedefs.key`): a PEM key that loads.
pub(crate) fn key_field(name: &'static str) -> Field {
    Field::string(name).check_str(|s| {
        no_vault_reference(s)?;
        let key = signing_key(&parse_key(s)?)?;
        LOADED.with_borrow_mut(|kept| {
            if kept.len() == 2 {
                kept.remove(0);
            }
            kept.push((s.to_owned(), key));
        });
        Ok(())
    })
}

/// The signing key of `pem`: the one its field's check kept, else loaded now.
fn loaded_key(pem: &str) -> Result<Arc<dyn SigningKey>, String> {
    let kept = LOADED.with_borrow_mut(|kept| {
        let i = kept.iter().position(|(p, _)| p == pem)?;
        Some(kept.remove(i).1)
    });
    match kept {
        Some(key) => Ok(key),
        None => signing_key(&parse_key(pem)?),
    }
}

/// Whether `key` is the key of the leaf of `cert` (both valid, as their fields checked).
fn pair_matches(cert: &str, key: &str) -> bool {
    let (Ok(certs), Ok(key)) = (parse_certs(cert), loaded_key(key)) else {
        return false;
    };
    matching(&certs, &key).is_ok()
}

/// The algorithm of the public key of a certificate's leaf (its OID).
fn key_type(cert: &str) -> Option<String> {
    let certs = parse_certs(cert).ok()?;
    let (_, x509) = x509_parser::parse_x509_certificate(certs.first()?.as_ref()).ok()?;
    Some(x509.public_key().algorithm.algorithm.to_id_string())
}

/// The entity checks of `certificates.lua`, in Kong's order: the alternative pair is given
/// whole or not at all, each key matches its certificate, and the two certificates use keys
/// of different types.
pub(crate) fn certificate_checks() -> Vec<EntityCheck> {
    vec![
        EntityCheck::mutually_required(&["cert_alt", "key_alt"]),
        EntityCheck::custom(&["cert", "key"], |v, _| {
            match (v.str("cert"), v.str("key")) {
                (Some(c), Some(k)) if !pair_matches(c, k) => {
                    Err("certificate does not match key".into())
                }
                _ => Ok(()),
            }
        }),
        EntityCheck::custom(&["cert_alt", "key_alt"], |v, _| {
            match (v.str("cert_alt"), v.str("key_alt")) {
                (Some(c), Some(k)) if !pair_matches(c, k) => {
                    Err("alternative certificate does not match key".into())
                }
                _ => Ok(()),
            }
        }),
        EntityCheck::custom(&["cert", "cert_alt"], |v, _| {
            match (v.str("cert"), v.str("cert_alt")) {
                (Some(c), Some(alt)) => match key_type(c) {
                    Some(t) if Some(&t) == key_type(alt).as_ref() => {
                        Err("certificate and alternative certificate need to have different type (e.g. RSA and ECDSA), the provided certificates were both of the same type".into())
                    }
                    _ => Ok(()),
                },
                _ => Ok(()),
            }
        }),
    ]
}

/// Checks a CA certificate; returns its SHA-256 digest (hex of the DER).
pub fn check_ca_certificate(pem: &str, now_unix: Option<i64>) -> Result<String, String> {
    let certs = parse_certs(pem)?;
    if certs.len() != 1 {
        return Err("please submit only one certificate at a time".into());
    }
    let (_, x509) = x509_parser::parse_x509_certificate(certs[0].as_ref())
        .map_err(|err| format!("invalid certificate: {err}"))?;
    if let Some(now) = now_unix
        && x509.validity().not_after.timestamp() < now
    {
        return Err("certificate expired, \"Not After\" time is in the past".into());
    }
    let is_ca = x509
        .basic_constraints()
        .ok()
        .flatten()
        .is_some_and(|bc| bc.value.ca);
    if !is_ca {
        return Err("certificate does not appear to be a CA because it is missing the \"CA\" basic constraint".into());
    }
    use sha2::Digest;
    Ok(hex::encode(sha2::Sha256::digest(certs[0].as_ref())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        std::fs::read_to_string(format!(
            "{}/tests/fixtures/pki/{name}",
            std::env::var("CARGO_MANIFEST_DIR")
                .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string())
        ))
        .unwrap()
    }

    /// A well-formed key ring cannot sign with is named in the error, with what is supported;
    /// the keys ring takes still load.
    #[test]
    fn unsupported_keys_are_named() {
        let error = |name: &str| {
            let key = parse_key(&fixture(name)).unwrap();
            match signing_key(&key) {
                Ok(_) => panic!("{name} loaded"),
                Err(e) => e,
            }
        };
        let supported =
            "(supported: RSA of 2048, 3072 or 4096 bits, ECDSA on P-256 or P-384, Ed25519)";
        for (name, kind) in [
            ("rsa1024.key", "RSA keys of 1024 bits are"),
            ("rsa1024-pkcs1.key", "RSA keys of 1024 bits are"),
            ("rsa6144.key", "RSA keys of 6144 bits are"),
            ("rsa2560.key", "RSA keys of 2560 bits are"),
            (
                "rsa-e3.key",
                "RSA keys with a public exponent outside 65537 to 2^33 - 1 are",
            ),
            ("p521.key", "ECDSA keys on P-521 are"),
            ("p521-sec1.key", "ECDSA keys on P-521 are"),
            ("ed448.key", "Ed448 keys are"),
        ] {
            assert_eq!(
                error(name),
                format!("invalid key: {kind} not supported {supported}"),
                "{name}"
            );
        }
        for name in [
            "rsa.key",
            "rsa-pkcs1.key",
            "ec.key",
            "ec-sec1.key",
            "ed25519.key",
        ] {
            assert!(
                signing_key(&parse_key(&fixture(name)).unwrap()).is_ok(),
                "{name}"
            );
        }
        // a key that is not even well-formed keeps ring's message
        let garbage = PrivateKeyDer::Pkcs8(vec![0x30, 0x03, 0x02, 0x01, 0x00].into());
        let e = signing_key(&garbage).err().unwrap();
        assert!(
            e.starts_with("invalid key: ") && e.contains("failed to parse private key"),
            "{e}"
        );
    }

    /// A version 1 certificate (no extensions) matches its key, and not another.
    #[test]
    fn version_1_certificates_are_matched() {
        let certs = parse_certs(&fixture("v1.crt")).unwrap();
        let (_, x509) = x509_parser::parse_x509_certificate(certs[0].as_ref()).unwrap();
        assert_eq!(x509.version(), x509_parser::x509::X509Version::V1);
        let key = signing_key(&parse_key(&fixture("v1.key")).unwrap()).unwrap();
        assert_eq!(
            matching(&certs, &key),
            Ok(rustls::SignatureAlgorithm::ECDSA)
        );
        let other = signing_key(&parse_key(&fixture("ec.key")).unwrap()).unwrap();
        assert_eq!(matching(&certs, &other), Err(PairError::Mismatch));
        assert!(matches!(
            matching(&[], &key),
            Err(PairError::Certificate(_))
        ));
        assert!(parse_pair(&fixture("v1.crt"), &fixture("v1.key")).is_ok());
    }

    #[test]
    fn key_errors_never_quote_the_key() {
        let key = "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgSECRETSECRETSECRETSECRET";
        let inputs = [
            format!("-----BEGIN PRIVATE KEY-----{key}-----END PRIVATE KEY-----"),
            format!("-----BEGIN PRIVATE KEY-----\\n{key}\\n-----END PRIVATE KEY-----\\n"),
            format!("-----BEGIN PRIVATE KEY----- {key} -----END PRIVATE KEY-----"),
            format!("-----BEGIN PRIVATE KEY-----\n{key}\n"),
            format!("-----BEGIN PRIVATE KEY-----\n{key}!!\n-----END PRIVATE KEY-----\n"),
        ];
        for input in inputs {
            let e = parse_key(&input).expect_err(&input);
            // neither the text nor its bytes as numbers (the PEM parser prints a Vec<u8>)
            assert!(!e.contains("SECRET") && !e.contains("77, 73, 71"), "{e}");
            assert!(e.starts_with("invalid key: "), "{e}");
        }
    }
}
