//! The checks of Kong 3.x `keys`: the entity checks of `kong/db/schema/entities/keys.lua`
//! and the `pem` and `jwk` typedefs of `kong/db/schema/typedefs.lua`, in Kong's order and
//! with Kong's messages.
//!
//! Kong loads the key material with OpenSSL (lua-resty-openssl's `pkey.new`). We have no
//! general-purpose crypto library, so the key material is checked as far as its structure
//! and the crates at hand allow:
//!
//! - a `jwk` must be JSON, its `kid` equal to the entity's, and it must hold what
//!   lua-resty-openssl needs to build a key: `kty` `RSA` with `n` and `e` (`p` and `q`
//!   together or neither, `dp`, `dq` and `qi` all or none, as OpenSSL's setters demand), `EC`
//!   with a curve it knows (`P-256`, `P-384`, `P-521`) and `x` and `y`, or `OKP` with a
//!   curve it knows (`Ed25519`, `X25519`, `Ed448`, `X448`) and `d` or `x`; every key member
//!   given must be base64url, an EC coordinate no longer than the curve's, an OKP key
//!   exactly the curve's length. Members are read as Lua reads them: `false` is absent,
//!   `null` is given (and is no base64url: the loader's error path then fails in Lua, and
//!   Kong refuses the document without a message of its own). This is the loader that builds
//!   keys with OpenSSL's setters (`RSA_set0_*`); lua-resty-openssl's newer loader for
//!   OpenSSL 3 (`EVP_PKEY_fromdata`) skips members that are not strings and takes `dp`,
//!   `dq`, `qi` in any number (checked against OpenSSL 3.0). Then its members are checked
//!   against Kong's `jwk` record (unknown members and wrong types are refused). Not checked:
//!   that an EC point lies on its curve, that the RSA numbers form a key, that private
//!   members belong to the public ones.
//! - a `pem` public key must be a DER `SubjectPublicKeyInfo` (`PUBLIC KEY`, or PKCS#1
//!   `RSA PUBLIC KEY`) of an algorithm OpenSSL knows, with a well-formed key for RSA, EC
//!   (a point of the curve's length: uncompressed, compressed or hybrid, the hybrid form's
//!   parity bit that of `y`) and the Edwards/Montgomery curves; a private key must be
//!   PKCS#8, PKCS#1, SEC1 or OpenSSL's traditional DSA form (not encrypted), well-formed for
//!   those algorithms. Not checked: that an EC point lies on its curve, the RSA numbers'
//!   consistency.
//! - when both are given, the public key must be the private key's, as Kong compares them:
//!   the two keys written again as `PUBLIC KEY` PEM. Compared for RSA (the modulus and
//!   exponent), for EC when the private key carries its public point (OpenSSL writes a point
//!   in the form it read it, so one point in two forms does not match), and for Ed25519
//!   (derived with ring). An EC private key without its point gets it computed by OpenSSL,
//!   written uncompressed: its public key must then be an uncompressed point on the same
//!   named curve (the point itself is not compared: computing it needs curve arithmetic).
//!   Not compared: X25519, Ed448, X448, DSA and DH keys, and EC keys on explicitly given
//!   curve parameters.
//!
//! Values that are vault references (`{vault://...}`) are not checked, as in Kong: an entity
//! check that reads a `jwk` holding a reference is skipped (Kong skips the checks of a
//! referenceable field holding a reference), `jwk` and `pem` exclusiveness included.

use std::sync::OnceLock;

use serde_json::Value;

use crate::checks::EntityCheck;
use crate::schema::{Errors, Field, FieldError, Record};

/// Whether a value is a vault reference (`{vault://<prefix>/<secret>}`), which Kong leaves
/// unchecked (`kong.vault.is_reference`).
pub fn is_vault_reference(s: &str) -> bool {
    s.starts_with("{vault://") && s.ends_with('}')
}

/// The `pem` record (Kong's `typedefs.pem`): at least one of the two keys.
pub(crate) fn pem_record() -> Record {
    Record::new(vec![
        Field::string("private_key").referenceable(),
        Field::string("public_key").referenceable(),
    ])
    .check(EntityCheck::at_least_one_of(&["private_key", "public_key"]))
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
    if let (Some(public), Some(of_private)) = (&public, &private)
        && !of_private.may_be(public)
    {
        return Err("public key does not match private key".into());
    }
    Ok(())
}

/// The entity checks of `keys.lua`, in Kong's order: `jwk` and `pem` are mutually
/// exclusive, one of them is required, and a `jwk` must be a JSON Web Key whose `kid` is the
/// entity's. A check reading a `jwk` that is a vault reference is skipped (Kong skips the
/// checks of a referenceable field holding a reference).
pub(crate) fn key_checks() -> Vec<EntityCheck> {
    // (Kong lists the two formats from a Lua table's iteration, `kong.constants.KEY_FORMATS`)
    const FORMATS: &[&str] = &["jwk", "pem"];
    vec![
        EntityCheck::mutually_exclusive(FORMATS),
        EntityCheck::at_least_one_of(FORMATS),
        EntityCheck::custom(&["jwk", "pem", "kid"], |v, _| {
            if let Some(jwk) = v.str("jwk") {
                check_jwk(jwk, v.str("kid").unwrap_or_default())?;
            }
            // (the `pem` record requires one of its keys itself: a `pem` without either
            // failed already, and this check does not run on a failed field)
            if let Some(Value::Object(pem)) = v.get("pem")
                && !is_nonempty_key(pem.get("private_key"))
                && !is_nonempty_key(pem.get("public_key"))
            {
                return Err("need to supply a PEM formatted public and/or private key.".into());
            }
            Ok(())
        }),
    ]
}

/// Whether a `pem` member is set, as Lua reads it (`pem.private_key or pem.public_key`).
fn is_nonempty_key(v: Option<&Value>) -> bool {
    !matches!(v, None | Some(Value::Null) | Some(Value::Bool(false)))
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
            FieldError::Nested(n) => format!("Validation error: {}", elements_from_first(n)),
        };
        msgs.push(format!("{name}: {msg}"));
    }
    format!("Validation error: {}", msgs.join("; "))
}

/// The messages of an array's elements `1`, `2`, ... up to the first element without one,
/// joined with `; `. One pass over the errors (an array may have hundreds of thousands).
fn elements_from_first(n: &Errors) -> String {
    // a run from 1 is at most as long as the list of errors
    let mut by_index: Vec<Option<&str>> = vec![None; n.fields.len()];
    for (k, v) in &n.fields {
        if let (FieldError::Message(m), Ok(i)) = (v, k.parse::<usize>())
            && let Some(slot) = i.checked_sub(1).and_then(|i| by_index.get_mut(i))
            && slot.is_none()
        {
            *slot = Some(m);
        }
    }
    let run: Vec<&str> = by_index.into_iter().map_while(|m| m).collect();
    run.join("; ")
}

/// Whether lua-resty-openssl's JWK loader (`load_jwk`) would build a key from `m`, as far
/// as that can be told without curve arithmetic.
///
/// Members are read as Lua reads the decoded JSON: `false` is no value (`if tbl.d then`),
/// `null` is one (cjson's `null` is truthy) that does not decode as base64url.
fn jwk_loads(m: &serde_json::Map<String, Value>) -> bool {
    let absent = |k: &str| matches!(m.get(k), None | Some(Value::Bool(false)));
    // `Some(None)` when absent, `None` when given but not base64url
    let member = |k: &str| -> Option<Option<Vec<u8>>> {
        match m.get(k) {
            None | Some(Value::Bool(false)) => Some(None),
            Some(Value::String(s)) => base64url(s).map(Some),
            Some(_) => None,
        }
    };
    let given = |k: &str| -> Option<Vec<u8>> { member(k)? };
    let valid = |ks: &[&str]| ks.iter().all(|k| member(k).is_some());
    // OpenSSL sets the factors and the CRT parameters each in one call that wants all of them
    // (`RSA_set0_factors`, `RSA_set0_crt_params`): some without the others do not load
    let all_or_none = |ks: &[&str]| ks.iter().all(|k| absent(k)) || !ks.iter().any(|k| absent(k));
    match m.get("kty").and_then(Value::as_str) {
        Some("RSA") => {
            given("n").is_some_and(|n| !n.is_empty())
                && given("e").is_some_and(|e| !e.is_empty())
                && valid(&["d", "p", "q", "dp", "dq", "qi"])
                && all_or_none(&["p", "q"])
                && all_or_none(&["dp", "dq", "qi"])
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
            if absent("d") {
                given("x").is_some_and(|x| x.len() == len)
            } else {
                given("d").is_some_and(|d| d.len() == len)
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
const SECP256K1: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x0a];

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

/// What kind of key `key` is, when it is a well-formed key ring cannot sign with ("RSA keys
/// of 1024 bits are"): RSA of other than 2048, 3072 or 4096 bits (ring's `PRIVATE_KEY_PUBLIC_MODULUS_MAX_BITS`;
/// 8192 is its verifier's limit) or with an exponent outside 65537 to 2^33 - 1, EC keys on
/// curves other than P-256 and P-384, Ed448, DSA, RSA-PSS, key-agreement keys. `None` for a
/// key of a kind ring takes (what it refused is the key itself) or one that does not parse.
pub(crate) fn unsupported_signing_key(key: &rustls_pki_types::PrivateKeyDer<'_>) -> Option<String> {
    use rustls_pki_types::PrivateKeyDer;
    let rsa = |der: &[u8]| match rsa_private(der)? {
        PublicKey::Rsa { n, e } => rsa_kind(&n, &e),
        _ => None,
    };
    match key {
        PrivateKeyDer::Pkcs1(k) => rsa(k.secret_pkcs1_der()),
        PrivateKeyDer::Sec1(k) => {
            // ECPrivateKey: version, private key, [0] the curve's OID
            let mut r = Der(Der(k.secret_sec1_der()).element(SEQUENCE)?);
            r.element(INTEGER)?;
            r.element(OCTET_STRING)?;
            curve_kind(Der(r.optional(0xa0)?).element(OID)?)
        }
        PrivateKeyDer::Pkcs8(k) => {
            // PrivateKeyInfo: version, the algorithm (its OID and parameters), the key
            let mut r = Der(Der(k.secret_pkcs8_der()).element(SEQUENCE)?);
            r.element(INTEGER)?;
            let mut alg = Der(r.element(SEQUENCE)?);
            match alg.element(OID)? {
                RSA_ENCRYPTION => rsa(r.element(OCTET_STRING)?),
                EC_PUBLIC_KEY => curve_kind(alg.element(OID)?),
                ED25519 => None,
                RSASSA_PSS => Some("RSA-PSS keys are".into()),
                ED448 => Some("Ed448 keys are".into()),
                DSA => Some("DSA keys are".into()),
                X25519 | X448 => Some("key agreement keys (X25519, X448) are".into()),
                _ => Some("keys of this algorithm are".into()),
            }
        }
        _ => None,
    }
}

/// An RSA key's (modulus `n`, exponent `e`, both without leading zeros) reason to be
/// refused by ring: its size, or its exponent when the size is one ring takes.
fn rsa_kind(n: &[u8], e: &[u8]) -> Option<String> {
    let bits = n.len() * 8 - n.first().map_or(0, |b| b.leading_zeros() as usize);
    // (and primes of a multiple of 512 bits: 2048, 3072 or 4096 in all)
    if !(2048..=4096).contains(&bits) || !bits.div_ceil(2).is_multiple_of(512) {
        return Some(format!("RSA keys of {bits} bits are"));
    }
    // (65537 is 0x010001; 2^33 - 1 is ring's `PublicExponent::MAX`)
    let small = e.len() < 3 || (e.len() == 3 && e < &[0x01, 0x00, 0x01][..]);
    let large = e.len() > 5 || (e.len() == 5 && e[0] > 1);
    (small || large).then(|| "RSA keys with a public exponent outside 65537 to 2^33 - 1 are".into())
}

/// The named curve of an EC key ring refuses; `None` for P-256 and P-384 (what ring refused
/// is then the key itself, and its own message says so).
fn curve_kind(oid: &[u8]) -> Option<String> {
    match oid {
        P256 | P384 => None,
        P521 => Some("ECDSA keys on P-521 are".into()),
        SECP256K1 => Some("ECDSA keys on secp256k1 are".into()),
        _ => Some("ECDSA keys on this curve are".into()),
    }
}

/// A public key, as far as it can be compared.
#[derive(Debug, PartialEq)]
enum PublicKey {
    /// RSA: modulus and public exponent.
    Rsa { n: Vec<u8>, e: Vec<u8> },
    /// EC on a named curve: the point as encoded (its form byte, x, and y unless
    /// compressed). OpenSSL writes a key's point again in the form it read it in, so Kong's
    /// comparison of the written keys tells one point in two forms apart.
    Ec { curve: Vec<u8>, point: Vec<u8> },
    /// An Edwards or Montgomery curve key.
    Okp { alg: Vec<u8>, key: Vec<u8> },
    /// Another algorithm OpenSSL reads (DSA, DH, EC on explicit parameters, RSA-PSS):
    /// compared as encoded.
    Other(Vec<u8>),
}

/// What can be told of a private key's public key (what OpenSSL writes for it).
#[derive(Debug, PartialEq)]
enum OfPrivate {
    /// The public key itself.
    Key(PublicKey),
    /// An EC key on a named curve without its public point: OpenSSL computes the point and
    /// writes it uncompressed (the point itself is not known here).
    EcUncompressed { curve: Vec<u8> },
    /// Nothing that can be compared.
    Unknown,
}

impl OfPrivate {
    /// Whether `public` may be this private key's public key, as Kong compares them.
    fn may_be(&self, public: &PublicKey) -> bool {
        match self {
            OfPrivate::Key(k) => k == public,
            OfPrivate::EcUncompressed { curve } => matches!(
                public,
                PublicKey::Ec { curve: c, point } if c == curve && point.first() == Some(&0x04)
            ),
            OfPrivate::Unknown => true,
        }
    }
}

/// An EC point of a named curve, as encoded, when OpenSSL would read it: uncompressed
/// (`04`, x, y), compressed (`02`/`03`, x) or hybrid (`06`/`07`, x, y, the form's low bit
/// that of y), of the curve's length when the curve is one we know.
fn ec_point(curve: &[u8], point: &[u8]) -> Option<Vec<u8>> {
    let (&form, xy) = point.split_first()?;
    let len = curve_len(curve);
    match form {
        0x04 | 0x06 | 0x07 => {
            if xy.is_empty() || xy.len() % 2 != 0 || len.is_some_and(|l| xy.len() != 2 * l) {
                return None;
            }
            let y_odd = xy[xy.len() - 1] & 1;
            if form != 0x04 && form & 1 != y_odd {
                return None;
            }
        }
        0x02 | 0x03 => {
            if xy.is_empty() || len.is_some_and(|l| xy.len() != l) {
                return None;
            }
        }
        _ => return None,
    }
    Some(point.to_vec())
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

/// A PEM private key (PKCS#8, PKCS#1, SEC1 or OpenSSL's traditional DSA form), when it
/// loads: what can be told of its public key.
fn private_pem(pem: &str) -> Option<OfPrivate> {
    use rustls_pki_types::PrivateKeyDer;
    use rustls_pki_types::pem::PemObject;
    let Ok(key) = PrivateKeyDer::from_pem_slice(pem.as_bytes()) else {
        // OpenSSL reads this one too (rustls does not know it)
        return dsa_private(&pem_section(pem, "DSA PRIVATE KEY")?);
    };
    match &key {
        PrivateKeyDer::Pkcs1(k) => rsa_private(k.secret_pkcs1_der()).map(OfPrivate::Key),
        PrivateKeyDer::Sec1(k) => ec_private(k.secret_sec1_der(), Curve::Own),
        PrivateKeyDer::Pkcs8(k) => pkcs8(k),
        _ => None,
    }
}

/// OpenSSL's traditional `DSAPrivateKey`: a SEQUENCE of six INTEGERs (version, p, q, g,
/// the public and the private key). Not compared.
fn dsa_private(der: &[u8]) -> Option<OfPrivate> {
    let mut r = Der(Der(der).element(SEQUENCE)?);
    // (OpenSSL reads any version)
    r.element(INTEGER)?;
    for _ in 0..5 {
        r.unsigned()?;
    }
    r.0.is_empty().then_some(OfPrivate::Unknown)
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

/// SEC1 `ECPrivateKey`: its public key when it carries one, else its curve (when named).
fn ec_private(der: &[u8], wrapped: Curve<'_>) -> Option<OfPrivate> {
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
        (Some((SEQUENCE, _)), _) | (None, Curve::Explicit) => return Some(OfPrivate::Unknown),
        _ => return None,
    };
    if scalar.is_empty() || curve_len(curve).is_some_and(|l| stripped(scalar).len() > l) {
        return None;
    }
    match r.optional(0xa1) {
        Some(p) => {
            let point = bits(Der(p).element(BIT_STRING)?)?;
            Some(OfPrivate::Key(PublicKey::Ec {
                curve: curve.to_vec(),
                point: ec_point(curve, point)?,
            }))
        }
        None => Some(OfPrivate::EcUncompressed {
            curve: curve.to_vec(),
        }),
    }
}

/// PKCS#8 `PrivateKeyInfo`: what can be told of its public key.
fn pkcs8(key: &rustls_pki_types::PrivatePkcs8KeyDer<'_>) -> Option<OfPrivate> {
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
        RSA_ENCRYPTION => rsa_private(inner).map(OfPrivate::Key),
        RSASSA_PSS => rsa_private(inner).map(|_| OfPrivate::Unknown),
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
                return Some(OfPrivate::Unknown);
            }
            // ring derives the public key from the seed
            let signer = rustls::crypto::ring::sign::any_eddsa_type(key).ok()?;
            Some(match spki(signer.public_key()?.as_ref()) {
                Some(k) => OfPrivate::Key(k),
                None => OfPrivate::Unknown,
            })
        }
        DSA | DH_PKCS3 | DH_X942 => Some(OfPrivate::Unknown),
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
    fn ec_points_keep_their_form() {
        let x = [7u8; 32];
        let y = [9u8; 32];
        let point = |form: u8, with_y: bool| {
            let mut p = vec![form];
            p.extend_from_slice(&x);
            if with_y {
                p.extend_from_slice(&y);
            }
            p
        };
        let (full, compressed, hybrid) = (point(4, true), point(3, false), point(7, true));
        for p in [&full, &compressed, &hybrid] {
            assert_eq!(ec_point(P256, p).as_ref(), Some(p));
        }
        // one point in two forms is two keys, as OpenSSL writes them again (Kong compares
        // the written keys)
        let key = |p: &[u8]| PublicKey::Ec {
            curve: P256.to_vec(),
            point: ec_point(P256, p).expect("loads"),
        };
        assert_ne!(key(&full), key(&compressed));
        assert_ne!(key(&full), key(&hybrid));
        assert_eq!(key(&full), key(&point(4, true)));
        // a hybrid point's form says the parity of y (9 is odd): `06` does not load
        assert!(ec_point(P256, &point(6, true)).is_none());
        // the curve's length; unknown forms
        assert!(ec_point(P384, &full).is_none());
        assert!(ec_point(P256, &point(2, true)).is_none());
        assert!(ec_point(P256, &[5, 1, 2]).is_none());
        assert!(ec_point(P256, &[0]).is_none());
    }

    #[test]
    fn an_ec_key_without_its_point_is_written_uncompressed() {
        let of_private = OfPrivate::EcUncompressed {
            curve: P256.to_vec(),
        };
        let key = |curve: &[u8], form: u8, len: usize| PublicKey::Ec {
            curve: curve.to_vec(),
            point: std::iter::once(form)
                .chain(std::iter::repeat_n(1, len))
                .collect(),
        };
        assert!(of_private.may_be(&key(P256, 4, 64)));
        assert!(!of_private.may_be(&key(P256, 3, 32)));
        assert!(!of_private.may_be(&key(P256, 7, 64)));
        assert!(!of_private.may_be(&key(P384, 4, 96)));
        assert!(!of_private.may_be(&PublicKey::Rsa {
            n: vec![1],
            e: vec![3]
        }));
        assert!(OfPrivate::Unknown.may_be(&key(P256, 3, 32)));
    }

    #[test]
    fn the_traditional_dsa_form_loads() {
        let int = |v: &[u8]| {
            let mut e = vec![INTEGER, v.len() as u8];
            e.extend_from_slice(v);
            e
        };
        let seq = |ints: &[&[u8]]| {
            let body: Vec<u8> = ints.iter().flat_map(|i| int(i)).collect();
            let mut e = vec![SEQUENCE, body.len() as u8];
            e.extend(body);
            e
        };
        let six: [&[u8]; 6] = [&[0], &[0x17], &[0x0b], &[4], &[9], &[3]];
        assert_eq!(dsa_private(&seq(&six)), Some(OfPrivate::Unknown));
        // (OpenSSL reads any version)
        let mut v1 = six;
        v1[0] = &[1];
        assert!(dsa_private(&seq(&v1)).is_some());
        assert!(dsa_private(&seq(&six[..5])).is_none());
        let mut seven = six.to_vec();
        seven.push(&[1]);
        assert!(dsa_private(&seq(&seven)).is_none());
        let mut negative = six;
        negative[1] = &[0x80];
        assert!(dsa_private(&seq(&negative)).is_none());
        // in PEM, where rustls finds no key
        let pem = |label: &str, der: &[u8]| {
            let b64 = base64_encode(der);
            format!("-----BEGIN {label}-----\n{b64}\n-----END {label}-----\n")
        };
        assert_eq!(
            private_pem(&pem("DSA PRIVATE KEY", &seq(&six))),
            Some(OfPrivate::Unknown)
        );
        assert!(private_pem(&pem("DSA PRIVATE KEY", &seq(&six[..5]))).is_none());
        assert!(private_pem(&pem("DSA PUBLIC KEY", &seq(&six))).is_none());
    }

    /// Standard base64 with padding (the tests' PEM).
    fn base64_encode(b: &[u8]) -> String {
        const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for c in b.chunks(3) {
            let n = c
                .iter()
                .enumerate()
                .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
            for i in 0..4 {
                if i <= c.len() {
                    out.push(char::from(A[((n >> (18 - 6 * i)) & 63) as usize]));
                } else {
                    out.push('=');
                }
            }
        }
        out
    }

    #[test]
    fn base64_encode_for_the_tests() {
        for b in [&b""[..], b"a", b"ab", b"abc", b"\xff\x00\x10\x20"] {
            assert_eq!(base64_decode(&base64_encode(b), false).as_deref(), Some(b));
        }
    }

    #[test]
    fn an_arrays_errors_are_read_in_one_pass() {
        // 50,000 elements: Kong's message in full, and it is built in one pass (finding the
        // message of each index anew took seconds of quadratic work)
        let n = 50_000;
        let mut errs = Errors::default();
        for i in 1..=n {
            errs.fields.push((
                i.to_string(),
                FieldError::Message("expected a string".into()),
            ));
        }
        let mut e = Errors::default();
        e.fields.push(("key_ops".into(), FieldError::Nested(errs)));
        let started = std::time::Instant::now();
        let msg = errors_to_string(&e);
        assert!(
            started.elapsed() < std::time::Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        assert!(msg.starts_with(
            "Validation error: key_ops: Validation error: expected a string; expected a string;"
        ));
        assert_eq!(msg.matches("expected a string").count(), n);
        // the run stops at the first element without a message, in any order of the errors
        let mut gap = Errors::default();
        for (i, m) in [(3, "c"), (1, "a"), (2, "b"), (5, "e")] {
            gap.fields
                .push((i.to_string(), FieldError::Message(m.to_string())));
        }
        gap.fields
            .push(("4".into(), FieldError::Nested(Errors::default())));
        assert_eq!(elements_from_first(&gap), "a; b; c");
        assert_eq!(elements_from_first(&Errors::default()), "");
    }

    #[test]
    fn the_parsers_never_panic_on_random_or_damaged_input() {
        // a fixed-seed xorshift: the same inputs each run
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let fixture = |name: &str| {
            // (read when the test runs, as the other tests read their fixtures)
            std::fs::read_to_string(format!(
                "{}/tests/fixtures/pki/{name}",
                std::env::var("CARGO_MANIFEST_DIR")
                    .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string())
            ))
            .expect("fixture")
        };
        let der_of = |pem: &str| {
            let start = pem.find("-----\n").map_or(0, |i| i + 6);
            let stop = pem.rfind("\n-----END").unwrap_or(pem.len());
            let body: String = pem[start..stop].split_whitespace().collect();
            base64_decode(&body, false).expect("fixture base64")
        };
        // well-formed DER to damage: each parser's own inputs
        let seeds: Vec<Vec<u8>> = [
            "rsa.key",
            "rsa-pkcs1.key",
            "rsa.pub",
            "ec.key",
            "ec-sec1.key",
            "ec-compressed.key",
            "ec.pub",
            "ed25519.key",
            "ed25519.pub",
            "p521.key",
            "dsa.key",
            "dsa.pub",
        ]
        .iter()
        .map(|f| der_of(&fixture(f)))
        .collect();
        let run = |der: &[u8]| {
            let _ = spki(der);
            let _ = rsa_public(der);
            let _ = rsa_private(der);
            let _ = dsa_private(der);
            let _ = ec_private(der, Curve::Own);
            let _ = ec_private(der, Curve::Named(P256));
            let _ = ec_private(der, Curve::Explicit);
            let _ = pkcs8(&rustls_pki_types::PrivatePkcs8KeyDer::from(der));
            let _ = Der(der).next();
            let text = String::from_utf8_lossy(der);
            let _ = base64_decode(&text, true);
            let _ = base64_decode(&text, false);
        };
        for i in 0..3000 {
            // random bytes, often starting as DER does
            let len = (next() % 300) as usize;
            let mut bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if i % 2 == 0 && !bytes.is_empty() {
                bytes[0] = SEQUENCE;
            }
            run(&bytes);
            // a fixture cut short, with bytes changed
            let seed = &seeds[i % seeds.len()];
            let mut damaged = seed[..(next() as usize % (seed.len() + 1))].to_vec();
            for _ in 0..1 + next() % 4 {
                if !damaged.is_empty() {
                    let at = next() as usize % damaged.len();
                    damaged[at] = next() as u8;
                }
            }
            run(&damaged);
            run(&seed[..next() as usize % (seed.len() + 1)]);
        }
        // base64 of random text from its alphabets
        let alphabet = b"ABCXYZabcxyz0189+/-_=\n ";
        for _ in 0..3000 {
            let len = (next() % 40) as usize;
            let text: String = (0..len)
                .map(|_| char::from(alphabet[next() as usize % alphabet.len()]))
                .collect();
            let _ = base64_decode(&text, true);
            let _ = base64_decode(&text, false);
        }
    }

    #[test]
    fn jwk_members_as_lua_reads_them() {
        let loads = |v: Value| match v {
            Value::Object(m) => jwk_loads(&m),
            _ => false,
        };
        let rsa = |extra: Value| {
            let mut v = json!({"kty": "RSA", "n": "AQAB", "e": "AQAB"});
            if let (Value::Object(m), Value::Object(x)) = (&mut v, extra) {
                m.extend(x);
            }
            loads(v)
        };
        // `null` is a value that does not decode; `false` is no value
        assert!(!rsa(json!({"d": null})));
        assert!(!rsa(json!({"n": null})));
        assert!(rsa(json!({"d": false})));
        assert!(!rsa(json!({"n": false})));
        // the factors together, the CRT parameters together
        assert!(rsa(json!({"d": "AQAB", "p": "AQ", "q": "AQ"})));
        assert!(!rsa(json!({"d": "AQAB", "p": "AQ"})));
        assert!(!rsa(json!({"q": "AQ"})));
        assert!(!rsa(json!({"p": "AQ", "q": null})));
        assert!(rsa(
            json!({"p": "AQ", "q": "AQ", "dp": "AQ", "dq": "AQ", "qi": "AQ"})
        ));
        assert!(rsa(json!({"dp": "AQ", "dq": "AQ", "qi": "AQ"})));
        assert!(!rsa(json!({"p": "AQ", "q": "AQ", "dp": "AQ", "dq": "AQ"})));
        assert!(!rsa(json!({"qi": "AQ"})));
        assert!(rsa(json!({"p": "AQ", "q": "AQ", "dp": false})));
        // EC and OKP
        let ec = json!({"kty": "EC", "crv": "P-256", "x": "AQAB", "y": "AQAB"});
        assert!(loads(ec.clone()));
        let mut with_d = ec.clone();
        with_d["d"] = Value::Null;
        assert!(!loads(with_d));
        let mut no_y = ec;
        no_y["y"] = Value::Null;
        assert!(!loads(no_y));
        let key32 = "A".repeat(43);
        assert!(!loads(
            json!({"kty": "OKP", "crv": "Ed25519", "d": null, "x": key32})
        ));
        assert!(loads(
            json!({"kty": "OKP", "crv": "Ed25519", "d": false, "x": key32})
        ));
        assert!(!loads(json!({"kty": "OKP", "crv": "Ed25519", "x": null})));
    }
}
