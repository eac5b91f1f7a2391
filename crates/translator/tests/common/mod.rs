//! Helpers shared by the translator's integration tests.
#![allow(dead_code)]

use std::path::Path;

use base64::Engine;
use silverback_config::plugin::{PluginRegistry, PluginSchema};
use silverback_config::schema::{Field, Record};
use silverback_config::{LoadOptions, RouterFlavor};
use silverback_translator::{Objects, TranslateOptions, Translation};

/// The directory of the test fixtures (found when the test runs: a test binary reused from a
/// checkout elsewhere would carry that checkout's path).
pub fn fixtures() -> &'static Path {
    static DIR: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        Path::new(
            &std::env::var("CARGO_MANIFEST_DIR")
                .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string()),
        )
        .join("tests/fixtures")
    })
}

/// Replaces `@A_CRT@`-style placeholders with the base64 of the matching PKI file.
pub fn expand(text: &str) -> String {
    let mut out = text.to_string();
    for (tag, file) in [
        ("@A_CRT@", "a.crt"),
        ("@A_KEY@", "a.key"),
        ("@B_CRT@", "b.crt"),
        ("@B_KEY@", "b.key"),
        ("@CA_CRT@", "ca.crt"),
    ] {
        if out.contains(tag) {
            let pem = std::fs::read(fixtures().join("pki").join(file)).expect("pki fixture");
            out = out.replace(tag, &base64::engine::general_purpose::STANDARD.encode(pem));
        }
    }
    out
}

/// Options from a fixture's first line: `# options: drain rewrite class=NAME traditional`.
pub fn options(text: &str, flavor: RouterFlavor) -> TranslateOptions {
    let mut o = TranslateOptions {
        router_flavor: flavor,
        ..Default::default()
    };
    let first = text.lines().next().unwrap_or_default();
    if let Some(rest) = first.strip_prefix("# options:") {
        for w in rest.split_whitespace() {
            match w {
                "drain" => o.enable_drain_support = true,
                "rewrite" => o.rewrite_uris = true,
                "cluster-domain" => o.cluster_domain = "cluster.local".into(),
                w if w.starts_with("class=") => o.ingress_class = w["class=".len()..].to_string(),
                other => panic!("unknown fixture option {other}"),
            }
        }
    }
    o
}

/// The plugins a data plane would have for our output (only what the translator emits).
pub fn plugins() -> PluginRegistry {
    let mut r = PluginRegistry::new();
    r.register(PluginSchema::http(
        "request-transformer",
        801,
        Record::new(vec![Field::any("replace")]),
    ));
    r
}

/// Loads the translation's document with the configuration model; panics with Kong's errors.
pub fn assert_loads(t: &Translation, flavor: RouterFlavor) -> silverback_config::Config {
    let plugins = plugins();
    let opts = LoadOptions {
        router_flavor: flavor,
        plugins: &plugins,
        now_unix: None,
    };
    match silverback_config::load(t.config.clone(), &opts) {
        Ok(c) => c,
        Err(e) => panic!(
            "output does not load: {}\n{}",
            e.lines().join("\n"),
            t.to_yaml()
        ),
    }
}

/// Parses a fixture.
pub fn objects(text: &str) -> Objects {
    Objects::from_yaml_documents(expand(text).as_bytes()).expect("fixture parses")
}
