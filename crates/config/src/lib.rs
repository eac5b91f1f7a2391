//! Kong's declarative configuration (`_format_version: "3.0"`): the model, parsing, validation
//! with Kong's rules and messages, deterministic ids, serialization and the configuration hash.
//!
//! This crate does no I/O. The data plane loads documents with [`load_bytes`]; the
//! controller's translator builds a [`Config`] and serializes it.
//!
//! ```
//! use silverback_config::{LoadOptions, PluginRegistry, RouterFlavor, config_hash, load_bytes};
//!
//! let plugins = PluginRegistry::new();
//! let opts = LoadOptions { router_flavor: RouterFlavor::TraditionalCompatible, plugins: &plugins, now_unix: None };
//! let doc = br#"
//! _format_version: "3.0"
//! services:
//! - name: echo
//!   url: http://127.0.0.1:9000/api
//!   routes:
//!   - name: r
//!     paths: ["/echo"]
//! "#;
//! let cfg = load_bytes(doc, &opts).expect("valid");
//! assert_eq!(cfg.routes[0].service.unwrap().id, cfg.services[0].id);
//! assert_eq!(cfg.services[0].path.as_deref(), Some("/api"));
//! // Kong's configuration hash: the md5 of the document as received
//! assert_eq!(config_hash(doc, &cfg).len(), 32);
//!
//! let err = load_bytes(br#"{"_format_version": "3.0", "services": [{"name": "x"}]}"#, &opts).unwrap_err();
//! assert_eq!(err.flattened()[0].errors[0].message, "required field missing");
//! ```

pub mod checks;
pub mod config;
mod direct;
pub mod entities;
pub mod error;
pub mod expression;
mod fast;
pub mod ids;
pub mod keys;
pub mod load;
pub mod parse;
pub mod pki;
pub mod plugin;
mod route_checks;
pub mod schema;
pub mod schema_json;
pub mod synthetic;
mod typed;
pub mod typedefs;
pub mod uri;

pub use config::{Config, EMPTY_HASH, config_hash};
pub use entities::*;
pub use error::{ConfigError, FlatError, FlattenedError};
pub use load::{
    LoadOptions, expand_shorthands, load, load_bytes, validate_entity, validate_entity_update,
};
pub use plugin::{PluginRegistry, PluginSchema};

/// Vault types the data plane implements.
pub const VAULT_TYPES: &[&str] = &["env"];

/// Kong's `router_flavor`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum RouterFlavor {
    /// Kong's pre-3.0 router; we match it with the compatible router, and accept
    /// `path_handling: v1`.
    Traditional,
    /// Field-based routes compiled to Kong's ATC semantics (the default).
    #[default]
    TraditionalCompatible,
    /// Routes written as ATC expressions (`expression` + `priority`).
    Expressions,
}

impl RouterFlavor {
    /// Kong's name of the flavor.
    pub fn as_str(self) -> &'static str {
        match self {
            RouterFlavor::Traditional => "traditional",
            RouterFlavor::TraditionalCompatible => "traditional_compatible",
            RouterFlavor::Expressions => "expressions",
        }
    }
}

impl std::str::FromStr for RouterFlavor {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "traditional" => Ok(RouterFlavor::Traditional),
            "traditional_compatible" => Ok(RouterFlavor::TraditionalCompatible),
            "expressions" => Ok(RouterFlavor::Expressions),
            other => Err(format!(
                "invalid router_flavor '{other}': expected traditional, traditional_compatible or expressions"
            )),
        }
    }
}

/// The regex a route path `~<re>` matches with: anchored at the start, as Kong's
/// `http.path ~ "^<re>"`.
pub fn router_regex(re: &str) -> String {
    format!("^{re}")
}
