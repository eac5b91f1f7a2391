//! Entity ids: Kong's deterministic UUIDv5 scheme, and generated secrets.
//!
//! Kong derives a namespace per entity type as `v5(fd02801f-0957-4a15-a55a-c8d9606f30b5,
//! "<plural>")` and the id as `v5(namespace, key)`, where the key is:
//! - for entities with a cache key (targets, plugins, credentials, acls, vaults, keys):
//!   `"<plural>:*:<part>:<part>..."`; a part is the field's string value, the parent's id for
//!   the reference a nesting fills, or `""` when an optional field is absent (reference
//!   objects `{"id": ..}` contribute nothing);
//! - otherwise the endpoint key's value (a service or route name, a consumer username...).
//!
//! Where Kong would fall back to a random id (no name, or a cache key made of generated
//! secrets), we derive one from the entity's position instead, so that the same document
//! always yields the same ids; secrets themselves are random.

use serde_json::Value;
use uuid::Uuid;

use crate::entities::EntityKind;
use crate::schema::Input;

/// Kong's root namespace for declarative ids.
pub const NAMESPACE: Uuid = uuid::uuid!("fd02801f-0957-4a15-a55a-c8d9606f30b5");

/// The per-type namespace.
pub fn namespace(kind: EntityKind) -> Uuid {
    static NAMESPACES: std::sync::OnceLock<[Uuid; EntityKind::ALL.len()]> =
        std::sync::OnceLock::new();
    NAMESPACES.get_or_init(|| EntityKind::ALL.map(|k| v5(&NAMESPACE, &[k.plural().as_bytes()])))
        [kind as usize]
}

/// Kong's id for an entity of `kind` whose name key is `key`.
pub fn kong_id(kind: EntityKind, key: &str) -> Uuid {
    v5(&namespace(kind), &[key.as_bytes()])
}

/// A UUIDv5 (RFC 9562): SHA-1 of the namespace and the name (given in pieces), the first 16
/// bytes with version and variant set. The same value as `Uuid::new_v5`, computed with the
/// `sha1` crate, which uses the CPU's SHA instructions where there are some.
fn v5(namespace: &Uuid, name: &[&[u8]]) -> Uuid {
    use sha1::Digest;
    let mut h = sha1::Sha1::new();
    h.update(namespace.as_bytes());
    for part in name {
        h.update(part);
    }
    let digest = h.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_sha1_bytes(bytes).into_uuid()
}

/// The key Kong hashes for this entity, if any. `parent` is the parent's id and the
/// reference field a nesting fills.
pub fn kong_key<I: Input + ?Sized>(
    kind: EntityKind,
    m: &I,
    parent: Option<(Option<Uuid>, &str)>,
) -> Option<String> {
    if let Some(fields) = kind.cache_key() {
        if fields.iter().any(|f| kind.auto_fields().contains(f))
            || kind == EntityKind::CaCertificate
        {
            return None;
        }
        let required = |f: &str| {
            matches!(
                (kind, f),
                (EntityKind::Target, _)
                    | (EntityKind::Acl, _)
                    | (EntityKind::Plugin, "name")
                    | (EntityKind::Key, "kid")
                    | (_, "username")
                    | (_, "prefix")
            )
        };
        let mut parts: Vec<String> = vec![kind.plural().to_string(), "*".to_string()];
        for f in fields {
            match m.get(f) {
                Some(Value::String(s)) => parts.push(s.clone()),
                None | Some(Value::Null) => match parent {
                    Some((Some(pid), fk)) if fk == *f => parts.push(pid.to_string()),
                    Some((None, fk)) if fk == *f => return None,
                    _ if required(f) => return None,
                    _ => parts.push(String::new()),
                },
                Some(_) => {}
            }
        }
        if kind == EntityKind::Plugin {
            // our extension: keep Kong's key when no consumer group is set
            match (m.get("consumer_group"), parent) {
                (Some(Value::String(s)), _) => parts.push(s.clone()),
                (_, Some((Some(pid), "consumer_group"))) => parts.push(pid.to_string()),
                _ => {}
            }
        }
        return Some(parts.join(":"));
    }
    let ek = kind.endpoint_key()?;
    m.get(ek).and_then(Value::as_str).map(str::to_string)
}

/// The id of an entity given without one; `position` is its index among entities of its
/// kind, used only where Kong would pick a random id.
pub fn generate<I: Input + ?Sized>(
    kind: EntityKind,
    m: &I,
    parent: Option<(Option<Uuid>, &str)>,
    position: usize,
) -> Uuid {
    // the common case: the endpoint key's value, hashed without a copy
    if kind.cache_key().is_none()
        && let Some(Value::String(name)) = kind.endpoint_key().and_then(|ek| m.get(ek))
    {
        return kong_id(kind, name);
    }
    match kong_key(kind, m, parent) {
        Some(k) => kong_id(kind, &k),
        None => v5(
            &namespace(kind),
            &[b"silverback#", position.to_string().as_bytes()],
        ),
    }
}

/// A random secret (credential keys and secrets left out of the document).
pub fn random_secret() -> String {
    Uuid::new_v4().simple().to_string()
}

/// Kong's basic-auth password storage: `sha1_hex(password .. consumer_id)`.
pub fn basicauth_hash(password: &str, consumer_id: &str) -> String {
    use sha1::Digest;
    let mut h = sha1::Sha1::new();
    h.update(password.as_bytes());
    h.update(consumer_id.as_bytes());
    hex::encode(h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Map, json};

    #[test]
    fn v5_is_uuid_v5() {
        for name in ["", "a", "services", &"x".repeat(200)] {
            assert_eq!(
                v5(&NAMESPACE, &[name.as_bytes()]),
                Uuid::new_v5(&NAMESPACE, name.as_bytes())
            );
        }
        assert_eq!(
            v5(&NAMESPACE, &[b"silverback#", b"12"]),
            Uuid::new_v5(&NAMESPACE, b"silverback#12")
        );
    }

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn ids_match_kong_and_kic() {
        // the ids KIC gives a service and route with these names (its FillIDs uses Kong's scheme)
        assert_eq!(
            kong_id(EntityKind::Service, "foo-namespace.foo-svc.80").to_string(),
            "fe1e2edc-5479-52fe-b0f4-b90d8d5f83ba"
        );
        assert_eq!(
            kong_id(
                EntityKind::Route,
                "foo-namespace.foo.foo-svc.example.com.80"
            )
            .to_string(),
            "3eee2c18-8fcc-5661-8f84-5c89adfa404f"
        );
    }

    #[test]
    fn cache_keys() {
        let up = Uuid::nil();
        assert_eq!(
            kong_key(
                EntityKind::Target,
                &obj(json!({"target": "10.0.0.1:80"})),
                Some((Some(up), "upstream"))
            )
            .unwrap(),
            format!("targets:*:{up}:10.0.0.1:80")
        );
        assert_eq!(
            kong_key(
                EntityKind::Target,
                &obj(json!({"target": "t", "upstream": "u"})),
                None
            )
            .unwrap(),
            "targets:*:u:t"
        );
        assert_eq!(
            kong_key(
                EntityKind::Plugin,
                &obj(json!({"name": "cors", "service": "s"})),
                None
            )
            .unwrap(),
            "plugins:*:cors::s:"
        );
        assert_eq!(
            kong_key(
                EntityKind::Plugin,
                &obj(json!({"name": "cors", "route": {"id": "x"}})),
                None
            )
            .unwrap(),
            "plugins:*:cors::"
        );
        assert!(
            kong_key(
                EntityKind::KeyauthCredential,
                &obj(json!({"key": "k"})),
                None
            )
            .is_none()
        );
        assert_eq!(
            kong_key(EntityKind::Service, &obj(json!({"name": "s"})), None).unwrap(),
            "s"
        );
        assert!(kong_key(EntityKind::Service, &obj(json!({"host": "h"})), None).is_none());
    }

    #[test]
    fn key_cache_keys() {
        let set = Uuid::nil();
        assert_eq!(
            kong_key(
                EntityKind::Key,
                &obj(json!({"kid": "a", "name": "n"})),
                Some((Some(set), "set"))
            )
            .unwrap(),
            format!("keys:*:a:{set}")
        );
        assert_eq!(
            kong_key(EntityKind::Key, &obj(json!({"kid": "a"})), None).unwrap(),
            "keys:*:a:"
        );
        assert_eq!(
            kong_key(EntityKind::Key, &obj(json!({"kid": "a", "set": "s"})), None).unwrap(),
            "keys:*:a:s"
        );
        // no kid (an invalid key): no key to hash
        assert!(kong_key(EntityKind::Key, &obj(json!({"name": "n"})), None).is_none());
        assert_eq!(
            kong_key(EntityKind::KeySet, &obj(json!({"name": "s"})), None).unwrap(),
            "s"
        );
    }

    #[test]
    fn basicauth() {
        // sha1("secret" .. "c"), computed with Python's hashlib
        assert_eq!(
            basicauth_hash("secret", "c"),
            "94b26d568ad5f1b38fd5eb28872a8e1cfc217874"
        );
        assert_ne!(basicauth_hash("secret", "c"), basicauth_hash("secret", "d"));
    }
}
