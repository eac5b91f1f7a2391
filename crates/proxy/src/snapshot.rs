//! A compiled configuration: everything the request path needs, built off the request path
//! and published atomically (`ArcSwap`). A request loads the snapshot once and keeps it to
//! the end, so in-flight requests finish on the configuration they started with.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use silverback_config::{Config, RouterFlavor, Service};
use silverback_router::Router;
use uuid::Uuid;

use crate::ProxyError;
use crate::metrics::{Metrics, RouteStats};
use crate::tls::{CertStore, TlsSpec, UpstreamTls};
use crate::upstream::{BalancerOptions, Balancers, build_balancers};

/// What building a snapshot needs besides the configuration.
#[derive(Debug, Clone, Copy)]
pub struct BuildEnv<'a> {
    /// Where balancers run active health checks and DNS refreshes.
    pub runtime: &'a tokio::runtime::Handle,
    /// Balancer options (resolver, extra probe roots).
    pub balancer: &'a BalancerOptions,
}

/// One compiled configuration.
#[derive(Debug)]
pub struct Snapshot {
    /// The configuration.
    pub config: Arc<Config>,
    /// Its hash (Kong's `configuration_hash`: see [`silverback_config::config_hash`]).
    hash: String,
    /// The router.
    pub router: Router,
    /// Certificates by SNI.
    pub certs: CertStore,
    /// Peer selection: one balancer per upstream, plus DNS for other hosts.
    pub balancers: Arc<Balancers>,
    /// Route index by id (for per-route state).
    route_index: HashMap<Uuid, usize>,
    /// Service index by id (for per-service state).
    service_index: HashMap<Uuid, usize>,
    /// Upstream TLS settings per service, compiled on first use.
    service_tls: Vec<OnceLock<Result<Arc<UpstreamTls>, String>>>,
    /// Compiled TLS settings by digest, shared by services with the same settings.
    tls_by_digest: Mutex<HashMap<u64, Arc<UpstreamTls>>>,
    /// Per-route metrics, bound lazily.
    route_stats: Vec<OnceLock<Arc<RouteStats>>>,
    /// Whether the configuration came from a user (not the empty start state).
    pub loaded: bool,
    /// The flat declarative document, built on first use by the admin API.
    flat: OnceLock<serde_json::Value>,
    /// Set when a newer snapshot replaced this one (stops background work on it).
    superseded: AtomicBool,
    /// When it was built (Unix seconds): the `created_at`/`updated_at` the admin API shows
    /// for entities that carry none, as Kong stamps a declarative load.
    pub built_unix: i64,
}

impl Snapshot {
    /// Compiles a configuration whose hash is `hash`. Balancer background work (active
    /// health checks, DNS refreshes) runs on `runtime`; unchanged upstreams keep
    /// `previous`'s balancers.
    pub fn build(
        config: Config,
        hash: String,
        flavor: RouterFlavor,
        env: &BuildEnv<'_>,
        previous: Option<&Snapshot>,
        loaded: bool,
    ) -> Result<Snapshot, ProxyError> {
        let config = Arc::new(config);
        let router =
            Router::new(config.clone(), flavor).map_err(|e| ProxyError::Router(e.to_string()))?;
        let certs = CertStore::build(&config)?;
        let balancers = Arc::new(
            build_balancers(
                &config,
                previous.map(|p| &*p.balancers),
                env.runtime,
                env.balancer,
            )
            .map_err(|e| ProxyError::Router(format!("balancer: {e}")))?,
        );
        let service_index = config
            .services
            .iter()
            .enumerate()
            .map(|(i, s)| (s.id, i))
            .collect();
        let service_tls = (0..config.services.len())
            .map(|_| OnceLock::new())
            .collect();
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
            balancers,
            route_index,
            service_index,
            service_tls,
            tls_by_digest: Mutex::new(HashMap::new()),
            route_stats,
            config,
            loaded,
            flat: OnceLock::new(),
            superseded: AtomicBool::new(false),
            built_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64),
        })
    }

    /// The configuration hash (Kong's `configuration_hash`).
    pub fn hash(&self) -> &str {
        &self.hash
    }

    /// Marks this snapshot as replaced by a newer one.
    pub fn supersede(&self) {
        self.superseded.store(true, Ordering::Relaxed);
    }

    /// Compiles the router's remaining regexes, stopping early once a newer snapshot
    /// replaced this one. Meant for a background thread right after publishing, so that
    /// no request pays for a regex's first use. Returns how many it compiled.
    pub fn warm_up(&self) -> usize {
        self.router
            .compile_regexes_while(|| !self.superseded.load(Ordering::Relaxed))
    }

    /// How to connect to a TLS service's upstream: its `tls_verify`, `tls_verify_depth`,
    /// `ca_certificates`, and `client_certificate` (the service's, else the upstream's when
    /// the service host names an upstream that has one), compiled once per snapshot.
    pub fn upstream_tls(&self, service: &Service) -> Result<Arc<UpstreamTls>, String> {
        match self.service_index.get(&service.id) {
            Some(&i) => self.service_tls[i]
                .get_or_init(|| self.compile_tls(service))
                .clone(),
            None => self.compile_tls(service),
        }
    }

    fn compile_tls(&self, s: &Service) -> Result<Arc<UpstreamTls>, String> {
        let c = &self.config;
        let mut spec = TlsSpec {
            verify: s.tls_verify.unwrap_or(false),
            depth: s.tls_verify_depth,
            ..TlsSpec::default()
        };
        for id in &s.ca_certificates {
            let ca = c
                .ca_certificates
                .iter()
                .find(|ca| ca.id == *id)
                .ok_or_else(|| format!("no ca_certificate {id}"))?;
            spec.cas.push(&ca.cert);
        }
        // (the service's first: Kong's `fallback_upstream_client_cert` takes the upstream's
        // only for a service without one)
        let cert = s.client_certificate.as_ref().or_else(|| {
            self.balancers
                .get(&s.host)
                .and_then(|b| b.upstream().client_certificate.as_ref())
        });
        if let Some(fk) = cert {
            let cert = c
                .certificates
                .iter()
                .find(|x| x.id == fk.id)
                .ok_or_else(|| format!("no certificate {}", fk.id))?;
            spec.client = Some((&cert.cert, &cert.key));
        }
        let digest = spec.digest();
        if let Ok(m) = self.tls_by_digest.lock()
            && let Some(t) = m.get(&digest)
        {
            return Ok(t.clone());
        }
        let t = Arc::new(spec.build()?);
        if let Ok(mut m) = self.tls_by_digest.lock() {
            m.insert(digest, t.clone());
        }
        Ok(t)
    }

    /// The `POST /config` answer: `{"services": {"<id>": {...}}, ...}`, serialized directly
    /// (the same content as `Config::flattened_entities`, without building a value tree).
    pub fn flattened_json(&self) -> Vec<u8> {
        flattened_json(&self.config)
    }

    /// The flat declarative document (entity arrays by plural name), cached.
    pub fn flat(&self) -> &serde_json::Value {
        self.flat.get_or_init(|| self.config.to_flat_value())
    }

    /// Where a route of this snapshot's configuration is in `config.routes`: computed from
    /// its address (the router hands out references into that vector), so the lookup costs
    /// the same with 10,000 routes as with one; by id for any other reference.
    fn route_position(&self, route: &silverback_config::Route) -> Option<usize> {
        let routes = &self.config.routes;
        let size = std::mem::size_of::<silverback_config::Route>().max(1);
        let offset = (route as *const silverback_config::Route as usize)
            .wrapping_sub(routes.as_ptr() as usize);
        let i = offset / size;
        if offset.is_multiple_of(size) && routes.get(i).is_some_and(|r| std::ptr::eq(r, route)) {
            return Some(i);
        }
        self.route_index.get(&route.id).copied()
    }

    /// The metrics of a route (by id), bound on first use.
    pub fn route_stats(
        &self,
        metrics: &Metrics,
        route: &silverback_config::Route,
        service: Option<&silverback_config::Service>,
    ) -> Arc<RouteStats> {
        // the labels as Kong's exporter takes them: `service.name or service.host`, `""`
        // without a service; `route.name or route.id`
        let bind = || {
            let s = service
                .map(|s| s.name.as_deref().unwrap_or(&s.host))
                .unwrap_or("");
            let r = route.name.clone().unwrap_or_else(|| route.id.to_string());
            metrics.route(s, &r)
        };
        let Some(i) = self.route_position(route) else {
            return bind();
        };
        self.route_stats[i].get_or_init(bind).clone()
    }
}

fn write_kind<T: serde::Serialize>(
    out: &mut Vec<u8>,
    first: &mut bool,
    name: &str,
    items: &[T],
    id: impl Fn(&T) -> String,
) {
    if items.is_empty() {
        return;
    }
    if !std::mem::take(first) {
        out.push(b',');
    }
    out.push(b'"');
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\":{");
    for (i, it) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.push(b'"');
        out.extend_from_slice(id(it).as_bytes());
        out.extend_from_slice(b"\":");
        let _ = serde_json::to_writer(&mut *out, it);
    }
    out.push(b'}');
}

/// Writes the flattened entity map of a configuration.
pub fn flattened_json(c: &Config) -> Vec<u8> {
    let mut out = Vec::with_capacity(1024 + c.entity_count() * 512);
    out.push(b'{');
    let mut first = true;
    macro_rules! kinds {
        ($($f:ident),*) => {$( write_kind(&mut out, &mut first, stringify!($f), &c.$f, |e| e.id.to_string()); )*};
    }
    kinds!(
        vaults,
        certificates,
        ca_certificates,
        snis,
        consumers,
        consumer_groups
    );
    // The join table has no id: Kong keys it by its two references.
    write_kind(
        &mut out,
        &mut first,
        "consumer_group_consumers",
        &c.consumer_group_consumers,
        |e| {
            let v = serde_json::to_value(e).unwrap_or_default();
            let part = |f: &str| {
                v.get(f)
                    .and_then(|x| x.get("id"))
                    .and_then(serde_json::Value::as_str)
                    .unwrap_or("")
                    .to_string()
            };
            format!("{}:{}", part("consumer_group"), part("consumer"))
        },
    );
    kinds!(
        services,
        routes,
        upstreams,
        targets,
        plugins,
        keyauth_credentials,
        basicauth_credentials,
        jwt_secrets,
        acls,
        hmacauth_credentials,
        key_sets,
        keys
    );
    out.push(b'}');
    out
}
