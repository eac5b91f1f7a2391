//! Property tests: no input makes the parser or the validator panic, and whatever loads
//! survives a serialization round trip.

mod common;

use proptest::prelude::*;
use serde_json::{Map, Value, json};

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        "[a-z/~*.:0-9 \\-]{0,12}".prop_map(Value::String),
        prop_oneof![
            Just("http"),
            Just("tcp"),
            Just("grpc"),
            Just("/"),
            Just("~/a(.*)"),
            Just("*.a.com"),
            Just("10.0.0.1"),
            Just("a.com:80"),
            Just("GET"),
            Just("v1"),
            Just("none"),
            Just("header"),
            Just("{vault://env/k}"),
            Just(r#"{"kid":"a","kty":"RSA","n":"AQAB","e":"AQAB","p":null}"#),
            Just(r#"{"kid":"a","kty":"OKP","crv":"Ed25519","x":false}"#),
            Just("-----BEGIN PUBLIC KEY-----\nMAA=\n-----END PUBLIC KEY-----\n"),
            Just("-----BEGIN DSA PRIVATE KEY-----\nMAYCAQACAQE=\n-----END DSA PRIVATE KEY-----\n")
        ]
        .prop_map(|s| Value::String(s.into())),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::vec((field_name(), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

fn field_name() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("name"),
        Just("host"),
        Just("port"),
        Just("protocol"),
        Just("paths"),
        Just("hosts"),
        Just("methods"),
        Just("headers"),
        Just("routes"),
        Just("service"),
        Just("targets"),
        Just("target"),
        Just("upstream"),
        Just("weight"),
        Just("plugins"),
        Just("config"),
        Just("id"),
        Just("tags"),
        Just("url"),
        Just("snis"),
        Just("protocols"),
        Just("username"),
        Just("hash_on"),
        Just("healthchecks"),
        Just("active"),
        Just("expression"),
        Just("cert"),
        Just("sources"),
        Just("ip"),
        Just("strip_path"),
        Just("consumer"),
        Just("key"),
        Just("kid"),
        Just("jwk"),
        Just("pem"),
        Just("set"),
        Just("keys"),
        Just("private_key"),
        Just("public_key"),
        Just("xyz")
    ]
    .prop_map(String::from)
}

fn entity_key() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("services"),
        Just("routes"),
        Just("upstreams"),
        Just("targets"),
        Just("consumers"),
        Just("plugins"),
        Just("certificates"),
        Just("snis"),
        Just("ca_certificates"),
        Just("vaults"),
        Just("keyauth_credentials"),
        Just("basicauth_credentials"),
        Just("jwt_secrets"),
        Just("acls"),
        Just("hmacauth_credentials"),
        Just("consumer_groups"),
        Just("consumer_group_consumers"),
        Just("key_sets"),
        Just("keys")
    ]
    .prop_map(String::from)
}

fn arb_document() -> impl Strategy<Value = Value> {
    prop::collection::vec(
        (entity_key(), prop::collection::vec(arb_json(), 0..4)),
        0..5,
    )
    .prop_map(|entries| {
        let mut m = Map::new();
        m.insert("_format_version".into(), json!("3.0"));
        for (k, v) in entries {
            m.insert(k, Value::Array(v));
        }
        Value::Object(m)
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = common::load(&String::from_utf8_lossy(&bytes));
        let p = common::plugins();
        let opts = silverback_config::LoadOptions {
            router_flavor: silverback_config::RouterFlavor::Expressions, plugins: &p, now_unix: None,
        };
        let _ = silverback_config::load_bytes(&bytes, &opts);
    }

    #[test]
    fn random_trees_never_panic(v in arb_json()) {
        let _ = common::load_value(v.clone());
        let doc = json!({"_format_version": "3.0", "services": [v]});
        let _ = common::load_value(doc.clone());
        // the same documents as YAML (read by the YAML path)
        for d in [&v, &doc] {
            if let Ok(yaml) = serde_saphyr::to_string(d) {
                let _ = common::load(&yaml);
            }
        }
    }

    #[test]
    fn random_documents_load_or_explain(doc in arb_document()) {
        match common::load_value(doc) {
            Ok(cfg) => {
                // whatever loads round-trips (flat and nested)
                for nested in [false, true] {
                    let again = common::load(&cfg.to_json(nested)).expect("exported document loads");
                    prop_assert_eq!(again.entity_count(), cfg.entity_count());
                }
            }
            Err(e) => {
                let body = e.kong_body(true);
                prop_assert_eq!(body["code"].as_i64(), Some(14));
                prop_assert!(!e.lines().is_empty());
            }
        }
    }
}
