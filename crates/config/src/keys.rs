//! The checks of Kong 3.x `keys`: the entity checks of `kong/db/schema/entities/keys.lua`
//! and the `pem` and `jwk` typedefs of `kong/db/schema/typedefs.lua`, in Kong's order and
//! with Kong's messages.
//!
//! Kong loads the key material with OpenSSL (lua-resty-openssl's `pkey.new`). We have no
//! general-purpose crypto library, so the key material is checked as far as its structure
//! and the crates at hand allow:
//!
//! - a `jwk` must be JSON, its `kid` equal to the entity's, and it must hold what
//!   lua-resty-openssl needs to build a key: `kty` `RSA` with `n` and `e`, `EC` with a curve
//!   it knows (`P-256`, `P-384`, `P-521`) and `x` and `y`, or `OKP` with a curve it knows
//!   (`Ed25519`, `X25519`, `Ed448`, `X448`) and `d` or `x`; every key member given must be
//!   base64url, an EC coordinate no longer than the curve's, an OKP key exactly the curve's
//!   length. Then its members are checked against Kong's `jwk` record (unknown members and
//!   wrong types are refused). Not checked: that an EC point lies on its curve, that the
//!   RSA numbers form a key, that private members belong to the public ones.
//! - a `pem` public key must be a DER `SubjectPublicKeyInfo` (`PUBLIC KEY`, or PKCS#1
//!   `RSA PUBLIC KEY`) of an algorithm OpenSSL knows, with a well-formed key for RSA, EC
//!   (a point of the curve's length) and the Edwards/Montgomery curves; a private key must
//!   be PKCS#8, PKCS#1 or SEC1 (not encrypted), well-formed for those algorithms. Not
//!   checked: that an EC point lies on its curve, the RSA numbers' consistency.
//! - when both are given, the public key must be the private key's: compared for RSA (the
//!   modulus and exponent), for EC when the private key carries its public point (OpenSSL
//!   writes it; computing it needs curve arithmetic), and for Ed25519 (derived with ring).
//!   Not compared: EC private keys without their public point, X25519, Ed448, X448, DSA and
//!   DH keys, and EC keys on explicitly given curve parameters.
//!
//! Values that are vault references (`{vault://...}`) are not checked, as in Kong.

use std::sync::OnceLock;

use serde_json::Value;

use crate::schema::{Errors, Field, FieldError, Fields, Record};

/// Whether a value is a vault reference (`{vault://<prefix>/<secret>}`), which Kong leaves
/// unchecked (`kong.vault.is_reference`).
pub fn is_vault_reference(s: &str) -> bool {
    s.starts_with("{vault://") && s.ends_with('}')
}

/// The `pem` record (Kong's `typedefs.pem`): at least one of the two keys.
pub(crate) fn pem_record() -> Record {
    Record::new(vec![
        Field::string("private_key"),
        Field::string("public_key"),
    ])
    .check(|m, e| {
        if !m.contains_key("private_key") && !m.contains_key("public_key") {
            e.entity("at least one of these fields must be non-empty: 'private_key', 'public_key'");
        }
    })
}

/// The `pem` record's validator (Kong's `validate_pem_keys`): each key given loads, and
/// the public key is the private key's.
pub(crate) fn check_pem(v: &Value) -> Result<(), String> {
    let private = v.get("private_key").and_then(Value::as_str);
    let public = v.get("public_key").and_then(Value::as_str);
    if private.is_some_and(is_vault_reference) || public.is_some_and(is_vault_reference) {
        return Ok(());
    }
    let public = match public {
        Some(p) => Some(public_pem(p).ok_or("could not load public key")?),
        None => None,
    };
    // (Kong appends OpenSSL's error text to this one, which we cannot reproduce)
    let private = match private {
        Some(p) => Some(private_pem(p).ok_or("could not load private key")?),
        None => None,
    };
    if let (Some(public), Some(Some(of_private))) = (&public, &private)
        && public != of_private
    {
        return Err("public key does not match private key".into());
    }
    Ok(())
}

/// The entity checks of `keys`, in Kong's order: `jwk` and `pem` are mutually exclusive,
/// one of them is required, and a `jwk` must be a JSON Web Key whose `kid` is the entity's.
/// Kong skips them all when `jwk` is a vault reference.
pub(crate) fn check_key(m: &Fields, e: &mut Errors) {
    let jwk = m.get("jwk").and_then(Value::as_str);
    if jwk.is_some_and(is_vault_reference) {
        return;
    }
    let pem = m.get("pem").is_some_and(|v| !v.is_null());
    // (Kong lists the two formats from a Lua table's iteration, `kong.constants.KEY_FORMATS`)
    if jwk.is_some() && pem {
        e.entity("only one or none of these fields must be set: 'jwk', 'pem'");
    }
    if jwk.is_none() && !pem {
        e.entity("at least one of these fields must be non-empty: 'jwk', 'pem'");
    }
    let kid = m.get("kid").and_then(Value::as_str).unwrap_or_default();
    if let Some(jwk) = jwk
        && let Err(msg) = check_jwk(jwk, kid)
    {
        e.entity(msg);
    }
}

/// Kong's check of a `jwk` string (the custom entity check of `keys.lua`).
fn check_jwk(jwk: &str, kid: &str) -> Result<(), String> {
    let Ok(v) = serde_json::from_str::<Value>(jwk) else {
        return Err("could not json decode jwk string".into());
    };
    // (Kong indexes whatever the JSON is: anything but an object has no `kid`)
    if v.get("kid").and_then(Value::as_str) != Some(kid) {
        return Err("kid in jwk.kid must be equal to keys.kid".into());
    }
    let Value::Object(members) = &v else {
        return Err("could not load JWK, likely not a valid key".into());
    };
    if !jwk_loads(members) {
        return Err("could not load JWK, likely not a valid key".into());
    }
    let (_, errors) = jwk_record().validate(members);
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors_to_string(&errors))
    }
}

/// Kong's `typedefs.jwk` record: the members a JWK may have (`kid` required).
fn jwk_record() -> &'static Record {
    static JWK: OnceLock<Record> = OnceLock::new();
    JWK.get_or_init(|| {
        let strings = |names: &[&'static str]| -> Vec<Field> {
            names.iter().map(|n| Field::string(n)).collect()
        };
        let mut f = strings(&["issuer", "kty", "use"]);
        f.push(Field::array("key_ops", Field::string("")));
        f.push(Field::string("alg"));
        f.push(Field::string("kid").required());
        f.push(Field::string("x5u"));
        f.push(Field::array("x5c", Field::string("")));
        f.extend(strings(&[
            "x5t", "x5t#S256", "k", "x", "y", "crv", "n", "e", "d", "p", "q", "dp", "dq", "qi",
            "oth", "r", "t",
        ]));
        Record::new(f)
    })
}

/// Kong's `Schema:errors_to_string`: `Validation error: ` and the messages, entity-level
/// first, then `field: message` by field name (Kong takes them in a Lua table's order);
/// an array's errors are its elements' messages from the first, up to the first valid one.
fn errors_to_string(e: &Errors) -> String {
    let mut msgs: Vec<String> = e.entity.clone();
    let mut fields: Vec<&(String, FieldError)> = e.fields.iter().collect();
    fields.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, err) in fields {
        let msg = match err {
            FieldError::Message(m) => m.clone(),
            FieldError::Nested(n) => {
                let by_index: Vec<String> = (1..)
                    .map_while(|i: usize| {
                        n.fields.iter().find_map(|(k, v)| match v {
                            FieldError::Message(m) if *k == i.to_string() => Some(m.clone()),
                            _ => None,
                        })
                    })
                    .collect();
                format!("Validation error: {}", by_index.join("; "))
            }
        };
        msgs.push(format!("{name}: {msg}"));
    }
    format!("Validation error: {}", msgs.join("; "))
}

/// Whether lua-resty-openssl's JWK loader (`load_jwk`) would build a key from `m`, as far
/// as that can be told without curve arithmetic.
fn jwk_loads(m: &serde_json::Map<String, Value>) -> bool {
    // `Some(None)` when absent, `None` when given but not base64url
    let member = |k: &str| -> Option<Option<Vec<u8>>> {
        match m.get(k) {
            None | Some(Value::Null) => Some(None),
            Some(Value::String(s)) => base64url(s).map(Some),
            Some(_) => None,
        }
    };
    let given = |k: &str| -> Option<Vec<u8>> { member(k)? };
    let valid = |ks: &[&str]| ks.iter().all(|k| member(k).is_some());
    match m.get("kty").and_then(Value::as_str) {
        Some("RSA") => {
            given("n").is_some_and(|n| !n.is_empty())
                && given("e").is_some_and(|e| !e.is_empty())
                && valid(&["d", "p", "q", "dp", "dq", "qi"])
        }
        Some("EC") => {
            let Some(len) = m.get("crv").and_then(Value::as_str).and_then(ec_field_len) else {
                return false;
            };
            let coordinate =
                |k: &str| given(k).is_some_and(|c| !c.is_empty() && stripped(&c).len() <= len);
            coordinate("x") && coordinate("y") && valid(&["d"])
        }
        Some("OKP") => {
            let Some(len) = m.get("crv").and_then(Value::as_str).and_then(okp_key_len) else {
                return false;
            };
            // the private key when given (the public one is then ignored), else the public
            match m.get("d") {
                Some(d) if !d.is_null() => given("d").is_some_and(|d| d.len() == len),
                _ => given("x").is_some_and(|x| x.len() == len),
            }
        }
        _ => false,
    }
}

/// The coordinate length of the EC curves lua-resty-openssl reads from JWKs.
fn ec_field_len(crv: &str) -> Option<usize> {
    match crv {
        "P-256" => Some(32),
        "P-384" => Some(48),
        "P-521" => Some(66),
        _ => None,
    }
}

/// The key length of the Edwards and Montgomery curves of JWKs (RFC 8037).
fn okp_key_len(crv: &str) -> Option<usize> {
    match crv {
        "Ed25519" | "X25519" => Some(32),
        "Ed448" => Some(57),
        "X448" => Some(56),
        _ => None,
    }
}

/// A big-endian number without its leading zero bytes.
fn stripped(b: &[u8]) -> &[u8] {
    let i = b.iter().position(|x| *x != 0).unwrap_or(b.len());
    &b[i..]
}

/// Base64 with the URL-safe alphabet (`url`) or the standard one, as nginx decodes it:
/// padding optional (the text ends at the first `=`), no other characters.
fn base64_decode(s: &str, url: bool) -> Option<Vec<u8>> {
    let s = s.split('=').next().unwrap_or_default();
    if s.len() % 4 == 1 {
        return None;
    }
    let value = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' if url => 62,
            b'_' if url => 63,
            b'+' if !url => 62,
            b'/' if !url => 63,
            _ => return None,
        } as u32)
    };
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    for chunk in s.as_bytes().chunks(4) {
        let mut n = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            n |= value(*c)? << (18 - 6 * i);
        }
        let bytes = n.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    Some(out)
}

fn base64url(s: &str) -> Option<Vec<u8>> {
    base64_decode(s, true)
}

// === DER ===

const SEQUENCE: u8 = 0x30;
const INTEGER: u8 = 0x02;
const BIT_STRING: u8 = 0x03;
const OCTET_STRING: u8 = 0x04;
const OID: u8 = 0x06;

// Object identifiers (their DER contents).
const RSA_ENCRYPTION: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
const RSASSA_PSS: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0a];
const EC_PUBLIC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
const DSA: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x38, 0x04, 0x01];
const DH_PKCS3: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x03, 0x01];
const DH_X942: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3e, 0x02, 0x01];
const X25519: &[u8] = &[0x2b, 0x65, 0x6e];
const X448: &[u8] = &[0x2b, 0x65, 0x6f];
const ED25519: &[u8] = &[0x2b, 0x65, 0x70];
const ED448: &[u8] = &[0x2b, 0x65, 0x71];
const P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const P384: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x22];
const P521: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x23];

/// The key length of an Edwards or Montgomery curve's algorithm.
fn okp_len(alg: &[u8]) -> Option<usize> {
    match alg {
        X25519 | ED25519 => Some(32),
        X448 => Some(56),
        ED448 => Some(57),
        _ => None,
    }
}

/// The coordinate length of a named EC curve we know.
fn curve_len(curve: &[u8]) -> Option<usize> {
    match curve {
        P256 => Some(32),
        P384 => Some(48),
        P521 => Some(66),
        _ => None,
    }
}

/// A reader of DER elements (tag, contents) in sequence.
struct Der<'a>(&'a [u8]);

impl<'a> Der<'a> {
    /// The next element (single-byte tags and definite lengths only).
    fn next(&mut self) -> Option<(u8, &'a [u8])> {
        let (&tag, rest) = self.0.split_first()?;
        if tag & 0x1f == 0x1f {
            return None;
        }
        let (&first, rest) = rest.split_first()?;
        let (len, rest) = if first < 0x80 {
            (usize::from(first), rest)
        } else {
            let n = usize::from(first & 0x7f);
            if n == 0 || n > 4 || rest.len() < n {
                return None;
            }
            let len = rest[..n]
                .iter()
                .fold(0usize, |l, b| (l << 8) | usize::from(*b));
            (len, &rest[n..])
        };
        if rest.len() < len {
            return None;
        }
        self.0 = &rest[len..];
        Some((tag, &rest[..len]))
    }

    /// The next element, which must have `tag`.
    fn element(&mut self, tag: u8) -> Option<&'a [u8]> {
        match self.next()? {
            (t, c) if t == tag => Some(c),
            _ => None,
        }
    }

    /// The next element if it has `tag` (an optional one).
    fn optional(&mut self, tag: u8) -> Option<&'a [u8]> {
        match self.0.first() {
            Some(t) if *t == tag => self.element(tag),
            _ => None,
        }
    }

    /// An INTEGER, as a big-endian number without leading zeros (must not be negative).
    fn unsigned(&mut self) -> Option<&'a [u8]> {
        let c = self.element(INTEGER)?;
        if c.is_empty() || c[0] & 0x80 != 0 {
            return None;
        }
        Some(stripped(c))
    }
}

/// A public key, as far as it can be compared.
#[derive(Debug, PartialEq)]
enum PublicKey {
    /// RSA: modulus and public exponent.
    Rsa { n: Vec<u8>, e: Vec<u8> },
    /// EC on a named curve: the point compressed (`02`/`03` and x), which is what two
    /// encodings of one point share.
    Ec { curve: Vec<u8>, point: Vec<u8> },
    /// An Edwards or Montgomery curve key.
    Okp { alg: Vec<u8>, key: Vec<u8> },
    /// Another algorithm OpenSSL reads (DSA, DH, EC on explicit parameters, RSA-PSS):
    /// compared as encoded.
    Other(Vec<u8>),
}

/// An EC point of a named curve in its compressed form, checked for the curve's length
/// when the curve is one we know.
fn ec_point(curve: &[u8], point: &[u8]) -> Option<Vec<u8>> {
    let (&form, xy) = point.split_first()?;
    let len = curve_len(curve);
    match form {
        0x04 => {
            if xy.is_empty() || xy.len() % 2 != 0 || len.is_some_and(|l| xy.len() != 2 * l) {
                return None;
            }
            let (x, y) = xy.split_at(xy.len() / 2);
            let mut out = vec![0x02 | (y[y.len() - 1] & 1)];
            out.extend_from_slice(x);
            Some(out)
        }
        0x02 | 0x03 => {
            if xy.is_empty() || len.is_some_and(|l| xy.len() != l) {
                return None;
            }
            Some(point.to_vec())
        }
        _ => None,
    }
}

/// A BIT STRING's bits (whole bytes only).
fn bits(c: &[u8]) -> Option<&[u8]> {
    match c.split_first()? {
        (0, rest) => Some(rest),
        _ => None,
    }
}

/// PKCS#1 `RSAPublicKey`.
fn rsa_public(der: &[u8]) -> Option<PublicKey> {
    let mut r = Der(Der(der).element(SEQUENCE)?);
    let n = r.unsigned()?.to_vec();
    let e = r.unsigned()?.to_vec();
    (!n.is_empty() && !e.is_empty()).then_some(PublicKey::Rsa { n, e })
}

/// A DER `SubjectPublicKeyInfo`.
fn spki(der: &[u8]) -> Option<PublicKey> {
    let mut s = Der(Der(der).element(SEQUENCE)?);
    let mut alg = Der(s.element(SEQUENCE)?);
    let key = bits(s.element(BIT_STRING)?)?;
    let oid = alg.element(OID)?;
    match oid {
        RSA_ENCRYPTION => rsa_public(key),
        EC_PUBLIC_KEY => match alg.next()? {
            (OID, curve) => Some(PublicKey::Ec {
                curve: curve.to_vec(),
                point: ec_point(curve, key)?,
            }),
            // explicit curve parameters
            (SEQUENCE, _) => Some(PublicKey::Other(der.to_vec())),
            _ => None,
        },
        X25519 | X448 | ED25519 | ED448 => {
            (Some(key.len()) == okp_len(oid)).then(|| PublicKey::Okp {
                alg: oid.to_vec(),
                key: key.to_vec(),
            })
        }
        RSASSA_PSS => rsa_public(key).map(|_| PublicKey::Other(der.to_vec())),
        DSA | DH_PKCS3 | DH_X942 => (!key.is_empty()).then(|| PublicKey::Other(der.to_vec())),
        _ => None,
    }
}

/// The DER of the first PEM section labelled `label` (standard base64, line breaks
/// ignored).
fn pem_section(pem: &str, label: &str) -> Option<Vec<u8>> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = pem.find(&begin)? + begin.len();
    let stop = start + pem[start..].find(&end)?;
    let body: String = pem[start..stop]
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    base64_decode(&body, false)
}

/// A PEM public key: `PUBLIC KEY` (SubjectPublicKeyInfo) or `RSA PUBLIC KEY` (PKCS#1).
fn public_pem(pem: &str) -> Option<PublicKey> {
    use rustls_pki_types::SubjectPublicKeyInfoDer;
    use rustls_pki_types::pem::PemObject;
    if let Ok(der) = SubjectPublicKeyInfoDer::from_pem_slice(pem.as_bytes()) {
        return spki(der.as_ref());
    }
    rsa_public(&pem_section(pem, "RSA PUBLIC KEY")?)
}

/// A PEM private key (PKCS#8, PKCS#1 or SEC1): `Some(public key)` when it loads, with the
/// public key when it can be told.
fn private_pem(pem: &str) -> Option<Option<PublicKey>> {
    use rustls_pki_types::PrivateKeyDer;
    use rustls_pki_types::pem::PemObject;
    match &PrivateKeyDer::from_pem_slice(pem.as_bytes()).ok()? {
        PrivateKeyDer::Pkcs1(k) => rsa_private(k.secret_pkcs1_der()).map(Some),
        PrivateKeyDer::Sec1(k) => ec_private(k.secret_sec1_der(), Curve::Own),
        PrivateKeyDer::Pkcs8(k) => pkcs8(k),
        _ => None,
    }
}

/// PKCS#1 `RSAPrivateKey`: its public key.
fn rsa_private(der: &[u8]) -> Option<PublicKey> {
    let mut r = Der(Der(der).element(SEQUENCE)?);
    r.element(INTEGER)?;
    let n = r.unsigned()?.to_vec();
    let e = r.unsigned()?.to_vec();
    // d, p, q, dP, dQ, qInv
    for _ in 0..6 {
        r.element(INTEGER)?;
    }
    (!n.is_empty() && !e.is_empty()).then_some(PublicKey::Rsa { n, e })
}

/// The curve of an EC key, as its PKCS#8 wrapping gives it.
#[derive(Clone, Copy)]
enum Curve<'a> {
    /// Not wrapped (SEC1 alone): the key names its curve.
    Own,
    /// A named curve.
    Named(&'a [u8]),
    /// Explicit curve parameters.
    Explicit,
}

/// SEC1 `ECPrivateKey`: its public key when it carries one (and its curve is named).
fn ec_private(der: &[u8], wrapped: Curve<'_>) -> Option<Option<PublicKey>> {
    let mut r = Der(Der(der).element(SEQUENCE)?);
    if r.element(INTEGER)? != [1] {
        return None;
    }
    let scalar = r.element(OCTET_STRING)?;
    let own = match r.optional(0xa0) {
        Some(p) => Some(Der(p).next()?),
        None => None,
    };
    let curve = match (own, wrapped) {
        (Some((OID, c)), _) | (None, Curve::Named(c)) => c,
        // explicit parameters: loads, but is not compared
        (Some((SEQUENCE, _)), _) | (None, Curve::Explicit) => return Some(None),
        _ => return None,
    };
    if scalar.is_empty() || curve_len(curve).is_some_and(|l| stripped(scalar).len() > l) {
        return None;
    }
    match r.optional(0xa1) {
        Some(p) => {
            let point = bits(Der(p).element(BIT_STRING)?)?;
            Some(Some(PublicKey::Ec {
                curve: curve.to_vec(),
                point: ec_point(curve, point)?,
            }))
        }
        None => Some(None),
    }
}

/// PKCS#8 `PrivateKeyInfo`: its public key when it can be told.
fn pkcs8(key: &rustls_pki_types::PrivatePkcs8KeyDer<'_>) -> Option<Option<PublicKey>> {
    let der = key.secret_pkcs8_der();
    let mut r = Der(Der(der).element(SEQUENCE)?);
    let version = r.element(INTEGER)?;
    if version != [0] && version != [1] {
        return None;
    }
    let mut alg = Der(r.element(SEQUENCE)?);
    let inner = r.element(OCTET_STRING)?;
    let oid = alg.element(OID)?;
    match oid {
        RSA_ENCRYPTION => rsa_private(inner).map(Some),
        RSASSA_PSS => rsa_private(inner).map(|_| None),
        EC_PUBLIC_KEY => match alg.next()? {
            (OID, curve) => ec_private(inner, Curve::Named(curve)),
            (SEQUENCE, _) => ec_private(inner, Curve::Explicit),
            _ => None,
        },
        X25519 | X448 | ED25519 | ED448 => {
            let raw = Der(inner).element(OCTET_STRING)?;
            if Some(raw.len()) != okp_len(oid) {
                return None;
            }
            if oid != ED25519 {
                return Some(None);
            }
            // ring derives the public key from the seed
            let signer = rustls::crypto::ring::sign::any_eddsa_type(key).ok()?;
            Some(spki(signer.public_key()?.as_ref()))
        }
        DSA | DH_PKCS3 | DH_X942 => Some(None),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn base64_as_nginx_decodes_it() {
        assert_eq!(base64url("AQAB"), Some(vec![1, 0, 1]));
        assert_eq!(base64url("AQ"), Some(vec![1]));
        assert_eq!(base64url("AQ=="), Some(vec![1]));
        assert_eq!(base64url("_-8"), Some(vec![0xff, 0xef]));
        assert_eq!(base64url("A"), None);
        assert_eq!(base64url("A+B/"), None);
        assert_eq!(base64_decode("A+B/", false), Some(vec![3, 224, 127]));
        assert_eq!(base64url(""), Some(vec![]));
    }

    #[test]
    fn vault_references() {
        assert!(is_vault_reference("{vault://env/my-key}"));
        assert!(!is_vault_reference("vault://env/my-key"));
        assert!(!is_vault_reference("{vault://env/my-key"));
        assert!(!is_vault_reference("{\"kid\": \"a\"}"));
    }

    #[test]
    fn jwk_members_lua_resty_openssl_needs() {
        let loads = |v: Value| match v {
            Value::Object(m) => jwk_loads(&m),
            _ => false,
        };
        let x = "AQ".repeat(16) + "AQ";
        assert!(loads(json!({"kty": "RSA", "n": "AQAB", "e": "AQAB"})));
        assert!(!loads(json!({"kty": "RSA", "n": "AQAB"})));
        assert!(!loads(
            json!({"kty": "RSA", "n": "AQAB", "e": "AQAB", "d": "*"})
        ));
        assert!(!loads(json!({"kty": "RSA", "n": 5, "e": "AQAB"})));
        assert!(loads(
            json!({"kty": "EC", "crv": "P-256", "x": "AQAB", "y": "AQAB"})
        ));
        assert!(!loads(json!({"kty": "EC", "crv": "P-256", "x": "AQAB"})));
        assert!(!loads(
            json!({"kty": "EC", "crv": "secp256k1", "x": "AQAB", "y": "AQAB"})
        ));
        // a coordinate longer than the curve's
        assert!(!loads(
            json!({"kty": "EC", "crv": "P-256", "x": "AQAB".repeat(12), "y": "AQAB"})
        ));
        // OKP keys have the curve's exact length; `d` first
        let key32 = "A".repeat(43);
        assert_eq!(base64url(&key32).map(|k| k.len()), Some(32));
        assert!(loads(json!({"kty": "OKP", "crv": "Ed25519", "x": key32})));
        assert!(!loads(json!({"kty": "OKP", "crv": "Ed448", "x": key32})));
        assert!(!loads(
            json!({"kty": "OKP", "crv": "Ed25519", "d": "AQAB", "x": key32})
        ));
        assert!(!loads(json!({"kty": "OKP", "crv": "P-256", "x": key32})));
        assert!(!loads(json!({"kty": "oct", "k": x})));
        assert!(!loads(json!({"kid": "a"})));
    }

    #[test]
    fn jwk_errors_read_as_kongs() {
        let rsa = |extra: Value| {
            let mut v = json!({"kty": "RSA", "n": "AQAB", "e": "AQAB", "kid": "k"});
            if let (Value::Object(m), Value::Object(x)) = (&mut v, extra) {
                m.extend(x);
            }
            check_jwk(&v.to_string(), "k")
        };
        assert_eq!(rsa(json!({})), Ok(()));
        assert_eq!(
            rsa(json!({"alg": "RS256", "use": "sig", "key_ops": ["verify"], "x5c": ["AQAB"]})),
            Ok(())
        );
        assert_eq!(
            rsa(json!({"ext": true})),
            Err("Validation error: ext: unknown field".to_string())
        );
        assert_eq!(
            rsa(json!({"use": 1, "alg": ""})),
            Err(
                "Validation error: alg: length must be at least 1; use: expected a string"
                    .to_string()
            )
        );
        assert_eq!(
            rsa(json!({"key_ops": [1, "sign"]})),
            Err("Validation error: key_ops: Validation error: expected a string".to_string())
        );
        assert_eq!(
            check_jwk("{\"kid\": \"k\"", "k"),
            Err("could not json decode jwk string".to_string())
        );
        assert_eq!(
            check_jwk("[\"k\"]", "k"),
            Err("kid in jwk.kid must be equal to keys.kid".to_string())
        );
        assert_eq!(
            check_jwk("{\"kid\": 1}", "1"),
            Err("kid in jwk.kid must be equal to keys.kid".to_string())
        );
        assert_eq!(
            check_jwk("{\"kid\": \"k\"}", "k"),
            Err("could not load JWK, likely not a valid key".to_string())
        );
    }

    #[test]
    fn der_lengths() {
        // long-form length
        let mut long = vec![0x04, 0x81, 0x80];
        long.extend(std::iter::repeat_n(7u8, 0x80));
        let mut d = Der(&long);
        assert_eq!(d.element(OCTET_STRING).map(<[u8]>::len), Some(0x80));
        assert!(d.next().is_none());
        // truncated, indefinite, multi-byte tag
        assert!(Der(&[0x04, 0x05, 1]).next().is_none());
        assert!(Der(&[0x30, 0x80, 0, 0]).next().is_none());
        assert!(Der(&[0x1f, 0x01, 0]).next().is_none());
        // negative integers are refused; leading zeros dropped
        assert!(Der(&[0x02, 0x01, 0x80]).unsigned().is_none());
        assert_eq!(
            Der(&[0x02, 0x02, 0x00, 0x80]).unsigned(),
            Some(&[0x80u8][..])
        );
    }

    #[test]
    fn ec_points_compare_in_either_encoding() {
        let x = [7u8; 32];
        let mut y = [9u8; 32];
        let mut full = vec![4];
        full.extend_from_slice(&x);
        full.extend_from_slice(&y);
        let mut compressed = vec![3];
        compressed.extend_from_slice(&x);
        assert_eq!(ec_point(P256, &full), Some(compressed.clone()));
        assert_eq!(ec_point(P256, &compressed), Some(compressed.clone()));
        y[31] = 8;
        let mut even = vec![4];
        even.extend_from_slice(&x);
        even.extend_from_slice(&y);
        assert_ne!(ec_point(P256, &even), Some(compressed));
        // the curve's length
        assert!(ec_point(P384, &full).is_none());
        assert!(ec_point(P256, &[5, 1, 2]).is_none());
    }
}
