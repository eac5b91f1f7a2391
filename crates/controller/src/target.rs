//! Data-plane targets: where configurations are pushed.
//!
//! - [`InProcessTarget`]: a [`Gateway`] in the same process (`silverback run`): the document is
//!   loaded and swapped in directly, no HTTP.
//! - [`AdminApiTarget`]: a data plane's admin API (`POST /config?check_hash=1&flatten_errors=1`,
//!   `GET /status`), Kong's own protocol, so a real Kong 3.x works as well.
//!
//! Both report a rejected configuration the same way: Kong's `flattened_errors`, which the
//! sync loop maps back to objects.

use std::sync::Arc;

use futures::future::BoxFuture;
use silverback_config::{FlattenedError, LoadOptions, PluginRegistry, RouterFlavor};
use silverback_proxy::Gateway;

use crate::admin::AdminClient;

/// Why a push failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PushError {
    /// The data plane rejected the configuration (HTTP 400 in Kong's format).
    #[error("configuration rejected: {message}")]
    Rejected {
        /// Kong's `message`.
        message: String,
        /// Kong's `flattened_errors` (empty when the data plane gave none).
        flattened: Vec<FlattenedError>,
    },
    /// The data plane could not be reached or answered something else.
    #[error("{0}")]
    Failed(String),
}

impl PushError {
    /// The failure reason label of the push metrics, as KIC's `pushFailureReason`: `network`
    /// when the data plane could not be reached, `conflict` for a 409 (a configuration
    /// conflict), `other` for anything else, a DB-less 400 rejection included.
    pub fn reason(&self) -> &'static str {
        match self {
            PushError::Failed(m) if m.starts_with("network:") => "network",
            PushError::Failed(m) if m.starts_with("conflict:") => "conflict",
            PushError::Rejected { .. } | PushError::Failed(_) => "other",
        }
    }
}

/// A data plane the controller configures.
pub trait DataPlaneTarget: Send + Sync + std::fmt::Debug {
    /// A stable name: the admin URL, or `in-process` (the `dataplane` metric label).
    fn name(&self) -> &str;
    /// Pushes a declarative document (JSON bytes).
    fn push<'a>(&'a self, document: &'a [u8]) -> BoxFuture<'a, Result<(), PushError>>;
    /// The running configuration's hash (Kong's `GET /status` `configuration_hash`);
    /// [`silverback_config::EMPTY_HASH`] when the data plane holds no configuration.
    fn config_hash(&self) -> BoxFuture<'_, Result<String, String>>;
}

/// A gateway in this process.
pub struct InProcessTarget {
    gateway: Arc<Gateway>,
    router_flavor: RouterFlavor,
    plugins: Arc<PluginRegistry>,
}

impl std::fmt::Debug for InProcessTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InProcessTarget").finish_non_exhaustive()
    }
}

impl InProcessTarget {
    /// A target for `gateway`, loading documents with its router flavor and plugins (take
    /// them from the [`silverback_proxy::Settings`] the gateway was started with).
    pub fn new(
        gateway: Arc<Gateway>,
        router_flavor: RouterFlavor,
        plugins: Arc<PluginRegistry>,
    ) -> InProcessTarget {
        InProcessTarget {
            gateway,
            router_flavor,
            plugins,
        }
    }

    /// The gateway.
    pub fn gateway(&self) -> &Arc<Gateway> {
        &self.gateway
    }
}

fn now_unix() -> Option<i64> {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()
        .and_then(|d| i64::try_from(d.as_secs()).ok())
}

impl DataPlaneTarget for InProcessTarget {
    fn name(&self) -> &str {
        "in-process"
    }

    fn push<'a>(&'a self, document: &'a [u8]) -> BoxFuture<'a, Result<(), PushError>> {
        let doc = document.to_vec();
        let gateway = self.gateway.clone();
        let plugins = self.plugins.clone();
        let router_flavor = self.router_flavor;
        Box::pin(async move {
            // Loading and compiling are CPU work: off the async threads.
            tokio::task::spawn_blocking(move || {
                let opts = LoadOptions {
                    router_flavor,
                    plugins: &plugins,
                    now_unix: now_unix(),
                };
                let config = silverback_config::load_bytes(&doc, &opts).map_err(|e| {
                    PushError::Rejected {
                        message: e.to_string(),
                        flattened: e.flattened().to_vec(),
                    }
                })?;
                let hash = silverback_config::config_hash(&doc, &config);
                gateway
                    .apply(config, hash)
                    .map_err(|e| PushError::Failed(format!("apply: {e}")))
            })
            .await
            .map_err(|e| PushError::Failed(format!("apply task: {e}")))?
        })
    }

    fn config_hash(&self) -> BoxFuture<'_, Result<String, String>> {
        Box::pin(async move { Ok(self.gateway.config_hash()) })
    }
}

/// A data plane's admin API.
#[derive(Debug, Clone)]
pub struct AdminApiTarget {
    client: Arc<AdminClient>,
    name: String,
}

impl AdminApiTarget {
    /// A target for the admin API at `client`'s URL.
    pub fn new(client: AdminClient) -> AdminApiTarget {
        AdminApiTarget {
            name: client.base_url().to_string(),
            client: Arc::new(client),
        }
    }
}

impl DataPlaneTarget for AdminApiTarget {
    fn name(&self) -> &str {
        &self.name
    }

    fn push<'a>(&'a self, document: &'a [u8]) -> BoxFuture<'a, Result<(), PushError>> {
        Box::pin(self.client.post_config(document))
    }

    fn config_hash(&self) -> BoxFuture<'_, Result<String, String>> {
        Box::pin(self.client.config_hash())
    }
}
