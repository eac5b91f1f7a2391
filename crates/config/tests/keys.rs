//! Kong 3.x `key_sets` and `keys`: loading (nested and flat), references, ids, export and
//! the configuration hash. The error cases are in `invalid.rs`.

mod common;

use common::{load, load_value, pem};
use serde_json::{Value, json};
use silverback_config::{EMPTY_HASH, EntityKind, config_hash, ids};
use uuid::Uuid;

/// `rsa.key`'s public half as a JWK string, with `kid`.
fn jwk(kid: &str) -> String {
    let mut v: Value = serde_json::from_str(&pem("rsa.jwk")).expect("JSON fixture");
    v["kid"] = json!(kid);
    v.to_string()
}

fn uuid(s: &str) -> Uuid {
    Uuid::parse_str(s).expect("uuid")
}

#[test]
fn keys_nest_in_their_key_set_and_name_it_from_the_top_level() {
    let doc = json!({
        "_format_version": "3.0",
        "key_sets": [{"name": "signing", "tags": ["ks"], "keys": [
            {"name": "jwk-1", "kid": "jwk-1", "jwk": jwk("jwk-1")},
            {"name": "pem-1", "kid": "pem-1",
             "pem": {"private_key": pem("rsa.key"), "public_key": pem("rsa.pub")}}
        ]}, {"id": "0d5b6b34-5b7b-4bd4-8a43-5a7f6a4a0001"}],
        "keys": [
            {"name": "by-name", "kid": "k2", "set": "signing", "pem": {"public_key": pem("ec.pub")}},
            {"name": "by-id", "kid": "k3", "set": {"id": "0d5b6b34-5b7b-4bd4-8a43-5a7f6a4a0001"},
             "jwk": jwk("k3")},
            {"name": "loose", "kid": "loose", "pem": {"private_key": pem("ec.key")}}
        ]
    });
    let cfg = load_value(doc).expect("valid");
    assert_eq!(cfg.key_sets.len(), 2);
    assert_eq!(cfg.keys.len(), 5);
    let signing = cfg.key_sets[0].id;
    assert_eq!(cfg.key_sets[0].name.as_deref(), Some("signing"));
    assert_eq!(cfg.key_sets[0].tags, ["ks"]);
    let set_of = |name: &str| {
        cfg.keys
            .iter()
            .find(|k| k.name.as_deref() == Some(name))
            .unwrap_or_else(|| panic!("key {name}"))
            .set
            .map(|s| s.id)
    };
    // nested: the parent fills `set`
    assert_eq!(set_of("jwk-1"), Some(signing));
    assert_eq!(set_of("pem-1"), Some(signing));
    // by the set's name or id
    assert_eq!(set_of("by-name"), Some(signing));
    assert_eq!(
        set_of("by-id"),
        Some(uuid("0d5b6b34-5b7b-4bd4-8a43-5a7f6a4a0001"))
    );
    assert_eq!(set_of("loose"), None);
    let pem_1 = cfg
        .keys
        .iter()
        .find(|k| k.kid == "pem-1")
        .and_then(|k| k.pem.as_ref())
        .expect("pem");
    assert_eq!(pem_1.public_key.as_deref(), Some(pem("rsa.pub").as_str()));
    // secrets stay out of debug output
    let shown = format!("{:?}", cfg.keys);
    assert!(
        !shown.contains("PRIVATE KEY") && !shown.contains("\"n\""),
        "{shown}"
    );

    // the flattened map `POST /config` answers with
    let flat = cfg.flattened_entities();
    assert_eq!(flat["key_sets"][signing.to_string()]["name"], "signing");
    let first = cfg.keys[0].id.to_string();
    assert_eq!(
        flat["keys"][&first]["set"],
        json!({"id": signing.to_string()})
    );
}

#[test]
fn ids_follow_kongs_scheme() {
    // v5(v5(fd02801f-..., "<plural>"), key), computed with Python's uuid module: a key set
    // by its name, a key by its cache key `keys:*:<kid>:<set>` (the set as given)
    let doc = json!({
        "_format_version": "3.0",
        "key_sets": [{"name": "signing", "keys": [{"kid": "jwk-1", "jwk": jwk("jwk-1")}]}],
        "keys": [{"kid": "loose", "jwk": jwk("loose")},
                 {"kid": "k2", "set": "signing", "jwk": jwk("k2")}]
    });
    let cfg = load_value(doc.clone()).expect("valid");
    assert_eq!(
        cfg.key_sets[0].id,
        uuid("7eb0ad2a-016a-576d-a9cf-34dba5cedb47")
    );
    let id_of = |kid: &str| cfg.keys.iter().find(|k| k.kid == kid).expect(kid).id;
    assert_eq!(id_of("jwk-1"), uuid("8d850ad0-64e6-5161-a100-91ad1df6c3bb"));
    assert_eq!(id_of("loose"), uuid("63e4803a-c4c3-558d-becf-2d8d5c0490ca"));
    assert_eq!(id_of("k2"), uuid("51b89520-4cf0-575d-8b90-b46e07721215"));
    assert_eq!(
        ids::kong_id(EntityKind::KeySet, "signing"),
        cfg.key_sets[0].id
    );
    // the same document gives the same ids; another kid another id
    assert_eq!(load_value(doc.clone()).expect("valid"), cfg);
    let mut other = doc;
    other["keys"][0]["kid"] = json!("loose-2");
    other["keys"][0]["jwk"] = json!(jwk("loose-2"));
    let other = load_value(other).expect("valid");
    assert_ne!(other.keys[1].id, id_of("loose"));
    assert_eq!(other.keys[0].id, id_of("jwk-1"));
    // a key set without a name still gets the same id each time
    let anon = json!({"_format_version": "3.0", "key_sets": [{"tags": ["a"]}]});
    assert_eq!(
        load_value(anon.clone()).expect("valid").key_sets[0].id,
        load_value(anon).expect("valid").key_sets[0].id
    );
}

#[test]
fn the_nested_export_puts_keys_back_in_their_set_and_loads_again() {
    let doc = json!({
        "_format_version": "3.0",
        "key_sets": [{"name": "signing", "keys": [{"name": "a", "kid": "a", "jwk": jwk("a")}]}],
        "keys": [{"name": "b", "kid": "b", "pem": {"public_key": pem("rsa.pub")}}]
    });
    let cfg = load_value(doc).expect("valid");
    let nested = cfg.to_nested_value();
    assert_eq!(nested["key_sets"][0]["keys"][0]["kid"], "a");
    assert!(nested["key_sets"][0]["keys"][0].get("set").is_none());
    assert_eq!(nested["keys"].as_array().map(Vec::len), Some(1));
    assert_eq!(nested["keys"][0]["kid"], "b");
    let again = load_value(nested).expect("the export loads");
    assert_eq!(again.keys, cfg.keys);
    assert_eq!(again.key_sets, cfg.key_sets);
    let flat = load(&cfg.to_yaml(false)).expect("the flat export loads");
    assert_eq!(flat.keys, cfg.keys);
}

#[test]
fn the_hash_is_the_documents_and_key_sets_alone_are_not_empty() {
    let doc = "_format_version: \"3.0\"\nkey_sets:\n- name: only\n";
    let cfg = load(doc).expect("valid");
    assert_eq!(cfg.entity_count(), 1);
    // md5sum of the same bytes, computed outside this code
    assert_eq!(
        config_hash(doc.as_bytes(), &cfg),
        "9949416d3d9b84778e0af435a03ce4a5"
    );
    assert_ne!(config_hash(doc.as_bytes(), &cfg), EMPTY_HASH);
    let empty = "_format_version: \"3.0\"\nkey_sets: []\nkeys: []\n";
    let cfg = load(empty).expect("valid");
    assert_eq!(config_hash(empty.as_bytes(), &cfg), EMPTY_HASH);
}

#[test]
fn key_material_kong_accepts() {
    // every pair of the fixtures that loads, as Kong's `validate_pem_keys` would load it
    let cases: &[(&str, Option<&str>, Option<&str>)] = &[
        ("rsa pkcs8", Some("rsa.key"), Some("rsa.pub")),
        ("rsa pkcs1 private", Some("rsa-pkcs1.key"), Some("rsa.pub")),
        ("rsa pkcs1 public", Some("rsa.key"), Some("rsa-pkcs1.pub")),
        ("ec pkcs8", Some("ec.key"), Some("ec.pub")),
        ("ec sec1", Some("ec-sec1.key"), Some("ec.pub")),
        ("p-521", Some("p521.key"), Some("p521.pub")),
        ("ed25519", Some("ed25519.key"), Some("ed25519.pub")),
        ("public only", None, Some("p521.pub")),
        ("private only", Some("ed25519-other.key"), None),
        // no public point to compare: not checked (OpenSSL would compute it)
        ("ec without its point", Some("ec-nopub.key"), Some("ec.pub")),
        // a point in the form the public key has it
        (
            "compressed point",
            Some("ec-compressed.key"),
            Some("ec-compressed.pub"),
        ),
        ("compressed public key", None, Some("ec-compressed.pub")),
        ("hybrid public key", None, Some("ec-hybrid.pub")),
        // OpenSSL's traditional DSA form (DSA keys are not compared)
        ("dsa traditional", Some("dsa.key"), None),
        ("dsa pair", Some("dsa.key"), Some("dsa.pub")),
    ];
    for (name, private, public) in cases {
        let mut p = serde_json::Map::new();
        if let Some(f) = private {
            p.insert("private_key".into(), json!(pem(f)));
        }
        if let Some(f) = public {
            p.insert("public_key".into(), json!(pem(f)));
        }
        let doc = json!({"_format_version": "3.0", "keys": [{"kid": name, "pem": p}]});
        let cfg = load_value(doc).unwrap_or_else(|e| panic!("{name}: {e:?}"));
        assert_eq!(cfg.keys[0].kid, *name);
    }
    // vault references are not checked
    let doc = json!({"_format_version": "3.0", "keys": [
        {"kid": "a", "jwk": "{vault://env/jwk}"},
        {"kid": "b", "pem": {"private_key": "{vault://env/key}", "public_key": "not a key"}}
    ]});
    assert_eq!(load_value(doc).expect("references").keys.len(), 2);
}
