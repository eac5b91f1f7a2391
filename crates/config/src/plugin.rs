//! The plugin registry: each plugin the data plane implements brings its own schema
//! (configuration record, allowed protocols, scope restrictions). Validation of `plugins`
//! entities looks the plugin up here; an unknown name is Kong's "not enabled" error.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::schema::Record;

/// What a plugin declares about itself.
#[derive(Debug, Clone)]
pub struct PluginSchema {
    /// The plugin name (`key-auth`).
    pub name: &'static str,
    /// Version string reported by the admin API.
    pub version: &'static str,
    /// Execution priority (higher runs first), as in Kong.
    pub priority: i64,
    /// Protocols the plugin supports; `protocols` of an instance must be a subset.
    pub protocols: &'static [&'static str],
    /// The plugin cannot be scoped to a consumer.
    pub no_consumer: bool,
    /// The plugin cannot be scoped to a route.
    pub no_route: bool,
    /// The plugin cannot be scoped to a service.
    pub no_service: bool,
    /// Schema of `config`.
    pub config: Record,
}

/// Protocols of HTTP plugins (Kong's `protocols_http`).
pub const HTTP_PROTOCOLS: &[&str] = &["grpc", "grpcs", "http", "https", "ws", "wss"];

impl PluginSchema {
    /// An HTTP plugin with no scope restriction.
    pub fn http(name: &'static str, priority: i64, config: Record) -> Self {
        PluginSchema {
            name,
            version: env!("CARGO_PKG_VERSION"),
            priority,
            protocols: HTTP_PROTOCOLS,
            no_consumer: false,
            no_route: false,
            no_service: false,
            config,
        }
    }
}

/// The set of plugins a data plane implements.
#[derive(Debug, Clone, Default)]
pub struct PluginRegistry {
    plugins: BTreeMap<&'static str, Arc<PluginSchema>>,
}

impl PluginRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }
    /// Adds (or replaces) a plugin.
    pub fn register(&mut self, schema: PluginSchema) -> &mut Self {
        self.plugins.insert(schema.name, Arc::new(schema));
        self
    }
    /// Looks a plugin up.
    pub fn get(&self, name: &str) -> Option<&Arc<PluginSchema>> {
        self.plugins.get(name)
    }
    /// All plugins, by name.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<PluginSchema>> {
        self.plugins.values()
    }
    /// Number of plugins.
    pub fn len(&self) -> usize {
        self.plugins.len()
    }
    /// Whether the registry is empty.
    pub fn is_empty(&self) -> bool {
        self.plugins.is_empty()
    }
}
