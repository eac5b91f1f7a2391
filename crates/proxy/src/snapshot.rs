//! A compiled configuration: everything the request path needs, built off the request path
//! and published atomically (`ArcSwap`). A request loads the snapshot once and keeps it to
//! the end, so in-flight requests finish on the configuration they started with.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use silverback_config::{Config, RouterFlavor};
use silverback_router::Router;
use uuid::Uuid;

use crate::ProxyError;
use crate::metrics::{Metrics, RouteStats};
use crate::tls::CertStore;
use crate::upstream::{Balancer, BalancerFactory};

/// One compiled configuration.
#[derive(Debug)]
pub struct Snapshot {
    /// The configuration.
    pub config: Arc<Config>,
    /// Its hash (`EMPTY_HASH` for the empty configuration).
    pub hash: String,
    /// The router.
    pub router: Router,
    /// Certificates by SNI.
    pub certs: CertStore,
    /// Peer selection.
    pub balancer: Arc<dyn Balancer>,
    /// Route index by id (for per-route state).
    route_index: HashMap<Uuid, usize>,
    /// Per-route metrics, bound lazily.
    route_stats: Vec<OnceLock<Arc<RouteStats>>>,
    /// Whether the configuration came from a user (not the empty start state).
    pub loaded: bool,
    /// The flat declarative document, built on first use by the admin API.
    flat: OnceLock<serde_json::Value>,
}

impl Snapshot {
    /// Compiles a configuration.
    pub fn build(
        config: Config,
        flavor: RouterFlavor,
        factory: &dyn BalancerFactory,
        previous: Option<&Snapshot>,
        loaded: bool,
    ) -> Result<Snapshot, ProxyError> {
        let hash = config.hash();
        let config = Arc::new(config);
        let router =
            Router::new(config.clone(), flavor).map_err(|e| ProxyError::Router(e.to_string()))?;
        let certs = CertStore::build(&config)?;
        let balancer = factory
            .build(&config, previous.map(|p| &p.balancer))
            .map_err(|e| ProxyError::Router(format!("balancer: {e}")))?;
        let route_index = config
            .routes
            .iter()
            .enumerate()
            .map(|(i, r)| (r.id, i))
            .collect();
        let route_stats = (0..config.routes.len()).map(|_| OnceLock::new()).collect();
        Ok(Snapshot {
            hash,
            router,
            certs,
            balancer,
            route_index,
            route_stats,
            config,
            loaded,
            flat: OnceLock::new(),
        })
    }

    /// The flat declarative document (entity arrays by plural name), cached.
    pub fn flat(&self) -> &serde_json::Value {
        self.flat.get_or_init(|| self.config.to_flat_value())
    }

    /// The metrics of a route (by id), bound on first use.
    pub fn route_stats(
        &self,
        metrics: &Metrics,
        route: &silverback_config::Route,
        service: Option<&silverback_config::Service>,
    ) -> Arc<RouteStats> {
        let Some(i) = self.route_index.get(&route.id).copied() else {
            return metrics.unmatched.clone();
        };
        self.route_stats[i]
            .get_or_init(|| {
                let s = service.and_then(|s| s.name.as_deref()).unwrap_or("");
                let r = route.name.clone().unwrap_or_else(|| route.id.to_string());
                metrics.route(s, &r)
            })
            .clone()
    }
}
