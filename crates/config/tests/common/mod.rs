//! Helpers shared by the configuration tests.
#![allow(dead_code)]

use serde_json::Value;
use silverback_config::schema::{Field, Record};
use silverback_config::{
    Config, ConfigError, LoadOptions, PluginRegistry, PluginSchema, RouterFlavor,
};

/// Two plugins with schemas of our own, standing in for real plugins in these tests.
pub fn plugins() -> PluginRegistry {
    let mut r = PluginRegistry::new();
    let mut auth = PluginSchema::http(
        "example-auth",
        1250,
        Record::new(vec![
            Field::array("key_names", Field::string("")).default(vec!["apikey"]),
            Field::boolean("hide_credentials").default(false),
        ]),
    );
    auth.no_consumer = true;
    r.register(auth);
    r.register(PluginSchema::http(
        "example-limit",
        910,
        Record::new(vec![
            Field::number("minute", 0.0, 1e12),
            Field::one_of("policy", &["local", "redis"]).default("local"),
        ]),
    ));
    r
}

pub fn load_with(doc: &str, flavor: RouterFlavor) -> Result<Config, ConfigError> {
    let p = plugins();
    let opts = LoadOptions {
        router_flavor: flavor,
        plugins: &p,
        now_unix: Some(1_764_000_000),
    };
    silverback_config::load_bytes(doc.as_bytes(), &opts)
}

pub fn load(doc: &str) -> Result<Config, ConfigError> {
    load_with(doc, RouterFlavor::TraditionalCompatible)
}

pub fn load_value(doc: Value) -> Result<Config, ConfigError> {
    load(&doc.to_string())
}

pub fn pem(name: &str) -> String {
    // (read when the test runs: a test binary reused from a checkout elsewhere would carry
    // that checkout's path)
    std::fs::read_to_string(format!(
        "{}/tests/fixtures/pki/{name}",
        std::env::var("CARGO_MANIFEST_DIR")
            .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string())
    ))
    .expect("fixture")
}

/// Renders every error as one line: `type[name] field: message` for entity errors and
/// `top path: message` for the rest, in report order (Kong's `flattened_errors` order).
pub fn error_lines(err: &ConfigError) -> Vec<String> {
    match err {
        ConfigError::Parse(m) => vec![format!("parse: {m}")],
        ConfigError::Invalid(inv) => {
            let mut out = Vec::new();
            top_lines("", &Value::Object(inv.top_level.clone()), &mut out);
            for fe in &inv.flattened {
                let name = fe.key.clone().unwrap_or_else(|| "-".into());
                for e in &fe.errors {
                    let field = e.field.clone().unwrap_or_else(|| "@entity".into());
                    out.push(format!(
                        "{}[{}] {}: {}",
                        fe.entity_type, name, field, e.message
                    ));
                }
            }
            out
        }
    }
}

fn top_lines(prefix: &str, v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                top_lines(&p, v, out);
            }
        }
        Value::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                top_lines(&format!("{prefix}.{}", i + 1), v, out);
            }
        }
        Value::Null => {}
        Value::String(s) => out.push(format!("top {prefix}: {s}")),
        other => out.push(format!("top {prefix}: {other}")),
    }
}
