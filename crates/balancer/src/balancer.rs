//! [`Balancers`] (every upstream of one configuration) and [`Balancer`] (one upstream):
//! building from a configuration with state carried over, picking peers, passive reports,
//! health output.

use crate::target::ip_literal;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use rustc_hash::FxHashMap;
use rustls_pki_types::CertificateDer;
use silverback_config::{Config, Target, Upstream};
use tokio::runtime::Handle;
use tokio::sync::watch;
use uuid::Uuid;

use crate::context::{HashOn, PickContext};
use crate::dns::{DnsError, RecordType, Resolver, ResolverOptions};
use crate::error::{BalancerError, NoPeer, SetHealthError};
use crate::health::{HEALTH_GENERATION, HealthPolicy, Report};
use crate::report::*;
use crate::ring::{Algorithm, Endpoint, Entry, Ring, hash_value};
use crate::target::TargetAddr;

/// Settings that do not come from the configuration.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The resolver. `None`: the previous [`Balancers`]' resolver, else a new one from
    /// [`ResolverOptions::default`] (system configuration).
    pub resolver: Option<Arc<Resolver>>,
    /// Extra CA certificates trusted by active `https`/`grpcs` probes, besides the Mozilla
    /// roots.
    pub probe_roots: Vec<CertificateDer<'static>>,
}

/// The result of one try, for passive health checks and the latency algorithm. As in Kong,
/// a try that failed and was retried is reported as what failed (`TcpError`, `Timeout`:
/// Kong's balancer phase reports the previous try so), while the request's last try is
/// reported by the status the request ended with (`Response`, or `Status` when that try got
/// no response: Kong's log phase), a 504 counting as a timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Response headers arrived (a request's last try: answers are not retried). `latency`
    /// runs from the start of the connect to the response headers. The status counts as an
    /// HTTP status, a 504 as a timeout.
    Response {
        /// The status.
        status: u16,
        /// Connect + time to response headers.
        latency: Duration,
    },
    /// A try that will be retried failed to connect, or its connection broke before a
    /// response (Kong's `tcp_failure`).
    TcpError,
    /// A try that will be retried timed out (connect, write or read).
    Timeout,
    /// The request's last try got no response and the request ended with this status
    /// (nginx's 502 for a failed connection or a bad answer, 504 for a timeout): counted as
    /// that HTTP status, a 504 as a timeout, as Kong's log phase counts `ngx.status`.
    Status(u16),
}

/// The `Set-Cookie` a response must carry when `hash_on: cookie` found no cookie and the
/// balancer generated one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetCookie {
    /// Cookie name (`hash_on_cookie`).
    pub name: Arc<str>,
    /// The generated value (a UUID).
    pub value: String,
    /// `hash_on_cookie_path`.
    pub path: Arc<str>,
}

impl SetCookie {
    /// The header value: `name=value; Path=/; Same-Site=Lax; HttpOnly`.
    pub fn header_value(&self) -> String {
        format!(
            "{}={}; Path={}; Same-Site=Lax; HttpOnly",
            self.name, self.value, self.path
        )
    }
}

/// Where one try goes. Holding it counts as one in-flight request for least-connections:
/// keep it until the response is finished (or the try failed), then drop it.
#[derive(Debug)]
pub struct Peer {
    /// The address to connect to.
    pub addr: SocketAddr,
    /// The upstream's `host_header`, which replaces [`Peer::hostname`] in Host and SNI.
    pub host_header: Option<Arc<str>>,
    /// A cookie to set on the response (`hash_on: cookie` without a cookie). On a retry,
    /// pass its value as [`PickContext::generated_cookie`]. (Boxed: a peer moves through
    /// each step of a request, and the cookie is rare.)
    pub set_cookie: Option<Box<SetCookie>>,
    inner: PeerInner,
}

#[derive(Debug)]
enum PeerInner {
    Balanced {
        ep: Arc<Endpoint>,
        /// Least-connections: the ring and entry to release on drop.
        release: Option<(Arc<Ring>, u32)>,
    },
    Direct {
        hostname: Arc<str>,
        /// The Host header values (plain, TLS), when the configuration made them.
        host_values: Option<Arc<[Option<http::HeaderValue>; 2]>>,
    },
}

impl Drop for Peer {
    fn drop(&mut self) {
        if let PeerInner::Balanced {
            release: Some((ring, idx)),
            ..
        } = &self.inner
        {
            ring.release(*idx);
        }
    }
}

impl Peer {
    /// A peer for an IP or resolved name outside any upstream (no health, no balancing).
    pub fn direct(addr: SocketAddr, hostname: Arc<str>) -> Peer {
        Peer {
            addr,
            host_header: None,
            set_cookie: None,
            inner: PeerInner::Direct {
                hostname,
                host_values: None,
            },
        }
    }

    /// The name for the Host header and SNI, before `host_header`: the target's hostname,
    /// the SRV name with `use_srv_name`, the IP for IP targets, or the service host for
    /// peers outside upstreams.
    pub fn hostname(&self) -> &str {
        match &self.inner {
            PeerInner::Balanced { ep, .. } => &ep.hostname,
            PeerInner::Direct { hostname, .. } => hostname,
        }
    }

    /// The target string (`host:port`) when the peer came from an upstream.
    pub fn target(&self) -> Option<&str> {
        match &self.inner {
            PeerInner::Balanced { ep, .. } => Some(&ep.target),
            PeerInner::Direct { .. } => None,
        }
    }

    /// The upstream's name when the peer came from an upstream.
    pub fn upstream(&self) -> Option<&str> {
        match &self.inner {
            PeerInner::Balanced { ep, .. } => Some(&ep.upstream),
            PeerInner::Direct { .. } => None,
        }
    }

    /// The name for Host and SNI: `host_header` if set, else [`Peer::hostname`].
    pub fn host(&self) -> &str {
        self.host_header
            .as_deref()
            .unwrap_or_else(|| self.hostname())
    }

    /// The Host header Kong sends when `preserve_host` is off: [`Peer::host`], plus
    /// `:port` unless the port is the scheme's default (80 for http/grpc, 443 for
    /// https/grpcs). `tls` is whether the service protocol is https/grpcs.
    pub fn host_header_value(&self, tls: bool) -> String {
        host_header_value(self.host(), self.addr.port(), tls)
    }

    /// [`Peer::host_header_value`] as a header value (`None` if it is not one). Made once
    /// per address of an upstream, and once per configuration for a service whose host is an
    /// IP address, unless the upstream sets `host_header`.
    pub fn host_header(&self, tls: bool) -> Option<http::HeaderValue> {
        let make = || host_value(self.host(), self.addr.port(), tls);
        if self.host_header.is_some() {
            return make();
        }
        match &self.inner {
            PeerInner::Balanced { ep, .. } => {
                ep.host_values[usize::from(tls)].get_or_init(make).clone()
            }
            PeerInner::Direct {
                host_values: Some(v),
                ..
            } => v[usize::from(tls)].clone(),
            PeerInner::Direct { .. } => make(),
        }
    }

    /// The TLS server name for the upstream connection: [`Peer::host`] as [`sni_name`]
    /// takes it.
    pub fn sni(&self) -> Option<&str> {
        sni_name(self.host())
    }

    /// Reports how this try went: passive health checks (HTTP status, TCP failure, timeout)
    /// and the latency average. Does nothing for peers outside upstreams.
    pub fn report(&self, outcome: Outcome) {
        let PeerInner::Balanced { ep, .. } = &self.inner else {
            return;
        };
        let policy = ep.policy.load();
        let report = match outcome {
            Outcome::Response { status, latency } => {
                ep.record_latency(latency);
                final_status(&policy, status)
            }
            Outcome::Status(status) => final_status(&policy, status),
            Outcome::TcpError => Some(Report::TcpFailure),
            Outcome::Timeout => Some(Report::Timeout),
        };
        if let Some(r) = report
            && let Some(now_healthy) = ep.health.record(r, &policy.passive.limits)
        {
            log_transition(&ep.upstream, &ep.target, ep.addr, now_healthy, "passive");
        }
    }
}

/// How Kong's log phase counts the status a request ended with: 504 as a timeout, any
/// other as an HTTP status.
fn final_status(policy: &HealthPolicy, status: u16) -> Option<Report> {
    if status == 504 {
        Some(Report::Timeout)
    } else {
        policy.passive.classify(status)
    }
}

/// [`host_header_value`] as a header value (`None` if it is not one).
fn host_value(host: &str, port: u16, tls: bool) -> Option<http::HeaderValue> {
    http::HeaderValue::from_maybe_shared(bytes::Bytes::from(host_header_value(host, port, tls)))
        .ok()
}

/// The Host header Kong sends for `host` and `port` ([`Peer::host_header_value`]).
fn host_header_value(host: &str, port: u16, tls: bool) -> String {
    let default = if tls { 443 } else { 80 };
    if host.contains("]:") || (!host.starts_with('[') && host.matches(':').count() == 1) {
        // Already `host:port` or `[v6]:port` (an upstream's `host_header`): as configured.
        return host.to_string();
    }
    let bare_v6 = !host.starts_with('[') && host.contains(':');
    let mut v = String::with_capacity(host.len() + 8);
    if bare_v6 {
        v.push('[');
        v.push_str(host);
        v.push(']');
    } else {
        v.push_str(host);
    }
    if port != default {
        v.push(':');
        v.push_str(itoa::Buffer::new().format(port));
    }
    v
}

pub(crate) fn log_transition(
    upstream: &str,
    target: &str,
    addr: SocketAddr,
    healthy: bool,
    source: &str,
) {
    if healthy {
        tracing::info!(upstream, target, %addr, source, "target address is now healthy");
    } else {
        tracing::warn!(upstream, target, %addr, source, "target address is now unhealthy");
    }
}

/// One resolved address of a target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ResolvedAddr {
    pub addr: SocketAddr,
    pub weight: u32,
    pub hostname: Arc<str>,
}

/// How a target's addresses were obtained.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DnsStatus {
    /// Not resolved yet.
    Pending,
    /// An IP target.
    Ip,
    /// Resolved from records of this type.
    Resolved(RecordType),
    /// The last lookup failed and there is no previous answer.
    Failed(String),
}

#[derive(Debug)]
pub(crate) struct TargetDns {
    pub addresses: Vec<ResolvedAddr>,
    pub status: DnsStatus,
}

/// One configured target.
#[derive(Debug)]
pub(crate) struct TargetSlot {
    pub config: Target,
    /// Normalized `host:port`.
    pub target: Arc<str>,
    pub addr: TargetAddr,
    pub dns: Mutex<TargetDns>,
}

#[derive(Debug)]
struct Spec {
    algorithm: Algorithm,
    hash_on: HashOn,
    hash_fallback: HashOn,
    cookie: Option<(Arc<str>, Arc<str>)>,
    host_header: Option<Arc<str>>,
    use_srv_name: bool,
}

/// Endpoint state by (target string, address), carried across rings and configurations.
type EndpointMap = HashMap<(Arc<str>, SocketAddr), Arc<Endpoint>>;

/// The balancer of one upstream.
pub struct Balancer {
    upstream: Upstream,
    target_configs: Vec<Target>,
    client_cert: Option<(String, String)>,
    name: Arc<str>,
    spec: Spec,
    policy: Arc<HealthPolicy>,
    targets: Vec<Arc<TargetSlot>>,
    endpoints: Mutex<EndpointMap>,
    ring: ArcSwap<Ring>,
    ring_version: AtomicU64,
    threshold_key: AtomicU64,
    threshold_ok: AtomicBool,
    resolver: Arc<Resolver>,
    stop: watch::Sender<bool>,
    probe_roots: Arc<[CertificateDer<'static>]>,
    /// Woken each time a hostname target's lookup ended (requests waiting for a new
    /// balancer's first answers: [`Balancers::peer_within`]).
    dns_done: tokio::sync::Notify,
}

impl std::fmt::Debug for Balancer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Balancer")
            .field("name", &self.name)
            .field("spec", &self.spec)
            .finish_non_exhaustive()
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

fn invalid(upstream: &str, field: &'static str, reason: impl Into<String>) -> BalancerError {
    BalancerError::InvalidField {
        upstream: upstream.to_string(),
        field,
        reason: reason.into(),
    }
}

impl Balancer {
    fn new(
        upstream: &Upstream,
        targets: Vec<Target>,
        client_cert: Option<(String, String)>,
        previous: Option<&Balancer>,
        resolver: Arc<Resolver>,
        probe_roots: Arc<[CertificateDer<'static>]>,
        policy: Arc<HealthPolicy>,
    ) -> Result<Balancer, BalancerError> {
        let uname = upstream.name.as_str();
        let name: Arc<str> = uname.into();
        let algorithm =
            Algorithm::parse(&upstream.algorithm).map_err(|e| invalid(uname, "algorithm", e))?;
        let hash_on = HashOn::parse(
            &upstream.hash_on,
            match upstream.hash_on.as_str() {
                "header" => upstream.hash_on_header.as_deref(),
                "cookie" => upstream.hash_on_cookie.as_deref(),
                "query_arg" => upstream.hash_on_query_arg.as_deref(),
                "uri_capture" => upstream.hash_on_uri_capture.as_deref(),
                _ => None,
            },
        )
        .map_err(|e| invalid(uname, "hash_on", e))?;
        let hash_fallback = HashOn::parse(
            &upstream.hash_fallback,
            match upstream.hash_fallback.as_str() {
                "header" => upstream.hash_fallback_header.as_deref(),
                // (Kong has no `hash_fallback_cookie`: a cookie fallback reads `hash_on_cookie`)
                "cookie" => upstream.hash_on_cookie.as_deref(),
                "query_arg" => upstream.hash_fallback_query_arg.as_deref(),
                "uri_capture" => upstream.hash_fallback_uri_capture.as_deref(),
                _ => None,
            },
        )
        .map_err(|e| invalid(uname, "hash_fallback", e))?;
        // `hash_on` other than none implies consistent-hashing (Kong's shorthand).
        let algorithm = match (&hash_on, algorithm) {
            (HashOn::None, a) => a,
            (_, Algorithm::RoundRobin) => Algorithm::ConsistentHashing,
            (_, a) => a,
        };
        // A missing hash cookie is generated (and set on the response) whether the cookie is
        // `hash_on` or `hash_fallback`, as Kong's `get_value_to_hash` does on either pass.
        let cookie = match (&hash_on, &hash_fallback) {
            (HashOn::Cookie(n), _) | (_, HashOn::Cookie(n)) => {
                let path = if upstream.hash_on_cookie_path.is_empty() {
                    "/"
                } else {
                    &upstream.hash_on_cookie_path
                };
                Some((Arc::from(n.as_str()), Arc::from(path)))
            }
            _ => None,
        };
        let spec = Spec {
            algorithm,
            hash_on,
            hash_fallback,
            cookie,
            host_header: upstream.host_header.as_deref().map(Arc::from),
            use_srv_name: upstream.use_srv_name,
        };

        let mut slots = Vec::with_capacity(targets.len());
        for t in &targets {
            let addr =
                TargetAddr::parse(&t.target).map_err(|reason| BalancerError::InvalidTarget {
                    upstream: uname.to_string(),
                    target: t.target.clone(),
                    reason,
                })?;
            let target: Arc<str> = if addr.host.contains(':') {
                format!("[{}]:{}", addr.host, addr.port).into()
            } else {
                format!("{}:{}", addr.host, addr.port).into()
            };
            let dns = match addr.ip {
                Some(ip) => TargetDns {
                    addresses: vec![ResolvedAddr {
                        addr: SocketAddr::new(ip, addr.port),
                        weight: t.weight,
                        hostname: Arc::from(addr.host.as_str()),
                    }],
                    status: DnsStatus::Ip,
                },
                None => {
                    // Start from the previous balancer's answer for this name, if any.
                    let prev = previous.and_then(|p| p.targets.iter().find(|s| s.addr == addr));
                    match prev {
                        Some(p) => {
                            let d = p.dns.lock().unwrap_or_else(|e| e.into_inner());
                            let addresses = d
                                .addresses
                                .iter()
                                .map(|a| ResolvedAddr {
                                    weight: if matches!(
                                        d.status,
                                        DnsStatus::Resolved(RecordType::Srv)
                                    ) {
                                        a.weight
                                    } else {
                                        t.weight
                                    },
                                    ..a.clone()
                                })
                                .collect();
                            TargetDns {
                                addresses,
                                status: d.status.clone(),
                            }
                        }
                        None => TargetDns {
                            addresses: vec![],
                            status: DnsStatus::Pending,
                        },
                    }
                }
            };
            slots.push(Arc::new(TargetSlot {
                config: t.clone(),
                target,
                addr,
                dns: Mutex::new(dns),
            }));
        }
        // Sorted by host then port, so every process builds the same structures.
        slots.sort_by(|a, b| {
            (a.addr.host.as_str(), a.addr.port).cmp(&(b.addr.host.as_str(), b.addr.port))
        });

        let endpoints = previous
            .map(|p| {
                p.endpoints
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone()
            })
            .unwrap_or_default();
        let (stop, _) = watch::channel(false);
        let b = Balancer {
            upstream: upstream.clone(),
            target_configs: targets,
            client_cert,
            name,
            spec,
            policy,
            targets: slots,
            endpoints: Mutex::new(endpoints),
            ring: ArcSwap::from_pointee(Ring::new(algorithm, vec![])),
            ring_version: AtomicU64::new(0),
            threshold_key: AtomicU64::new(u64::MAX),
            threshold_ok: AtomicBool::new(false),
            resolver,
            stop,
            probe_roots,
            dns_done: tokio::sync::Notify::new(),
        };
        b.rebuild_ring();
        Ok(b)
    }

    /// Rebuilds the ring from the targets' current addresses, reusing endpoint state.
    pub(crate) fn rebuild_ring(&self) {
        let mut endpoints = self.endpoints.lock().unwrap_or_else(|e| e.into_inner());
        let mut entries = Vec::new();
        let mut live = std::collections::HashSet::new();
        for (ti, slot) in self.targets.iter().enumerate() {
            let dns = slot.dns.lock().unwrap_or_else(|e| e.into_inner());
            for a in &dns.addresses {
                let key = (Arc::clone(&slot.target), a.addr);
                let fresh = || {
                    Arc::new(Endpoint::new(
                        a.addr,
                        Arc::clone(&a.hostname),
                        Arc::clone(&slot.target),
                        Arc::clone(&self.name),
                        Arc::clone(&self.policy),
                    ))
                };
                let ep = endpoints.entry(key.clone()).or_insert_with(fresh);
                if ep.hostname != a.hostname {
                    // Same address under another name (SRV change): new identity.
                    *ep = fresh();
                } else if !Arc::ptr_eq(&ep.policy.load(), &self.policy) {
                    ep.policy.store(Arc::clone(&self.policy));
                }
                live.insert(key);
                entries.push(Entry {
                    ep: Arc::clone(ep),
                    weight: a.weight,
                    target: ti as u32,
                });
            }
        }
        endpoints.retain(|k, _| live.contains(k));
        self.ring
            .store(Arc::new(Ring::new(self.spec.algorithm, entries)));
        self.ring_version.fetch_add(1, Ordering::Relaxed);
    }

    /// The upstream's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The upstream's id.
    pub fn id(&self) -> Uuid {
        self.upstream.id
    }

    /// The upstream entity this balancer was built from.
    pub fn upstream(&self) -> &Upstream {
        &self.upstream
    }

    /// The algorithm in use.
    pub fn algorithm(&self) -> Algorithm {
        self.spec.algorithm
    }

    /// Whether health checks (active or passive) are on.
    pub fn healthchecks_enabled(&self) -> bool {
        self.policy.enabled
    }

    fn threshold_ok(&self, ring: &Ring) -> bool {
        let threshold = self.policy.threshold;
        if threshold <= 0.0 {
            return true;
        }
        let key = HEALTH_GENERATION
            .load(Ordering::Relaxed)
            .wrapping_mul(1 << 20)
            .wrapping_add(self.ring_version.load(Ordering::Relaxed));
        if self.threshold_key.load(Ordering::Acquire) == key {
            return self.threshold_ok.load(Ordering::Relaxed);
        }
        let (mut total, mut healthy) = (0u64, 0u64);
        for e in &ring.entries {
            total += u64::from(e.weight);
            if e.ep.health.is_healthy() {
                healthy += u64::from(e.weight);
            }
        }
        let ok = total > 0 && (healthy as f64 / total as f64 * 100.0) > threshold;
        self.threshold_ok.store(ok, Ordering::Relaxed);
        self.threshold_key.store(key, Ordering::Release);
        ok
    }

    /// The hash of a request, and the cookie to set when one had to be generated.
    fn hash(&self, ctx: &PickContext<'_>) -> (u64, Option<Box<SetCookie>>) {
        if let Some(v) = self
            .spec
            .hash_on
            .value(ctx)
            .or_else(|| self.spec.hash_fallback.value(ctx))
        {
            return (hash_value(&v), None);
        }
        if let Some((name, path)) = &self.spec.cookie {
            let value = Uuid::new_v4().to_string();
            let h = hash_value(&value);
            return (
                h,
                Some(Box::new(SetCookie {
                    name: Arc::clone(name),
                    value,
                    path: Arc::clone(path),
                })),
            );
        }
        (hash_value(""), None)
    }

    /// Picks the peer for one try. `tried` holds the addresses of earlier tries of the same
    /// request: they are avoided while another address is available (consistent-hashing
    /// continues its walk, the others pick the next best).
    pub fn pick(&self, ctx: &PickContext<'_>, tried: &[SocketAddr]) -> Result<Peer, NoPeer> {
        let (hash, set_cookie) = match self.spec.algorithm {
            Algorithm::ConsistentHashing => self.hash(ctx),
            _ => (0, None),
        };
        let full =
            (self.spec.algorithm == Algorithm::LeastConnections).then(|| self.ring.load_full());
        let guard = full.is_none().then(|| self.ring.load());
        let ring: &Ring = match (&full, &guard) {
            (Some(f), _) => f,
            (None, Some(g)) => g,
            (None, None) => return Err(NoPeer::NoHealthyPeer),
        };
        if !self.threshold_ok(ring) {
            return Err(NoPeer::NoHealthyPeer);
        }
        let idx = ring.pick(hash, tried).ok_or(NoPeer::NoHealthyPeer)?;
        let ep = Arc::clone(&ring.entries[idx as usize].ep);
        let release = full.as_ref().map(|r| (Arc::clone(r), idx));
        Ok(Peer {
            addr: ep.addr,
            host_header: self.spec.host_header.clone(),
            set_cookie,
            inner: PeerInner::Balanced { ep, release },
        })
    }

    /// Passive health report for a peer; the same as [`Peer::report`].
    pub fn report(&self, peer: &Peer, outcome: Outcome) {
        peer.report(outcome);
    }

    /// The admin API override (`PUT /upstreams/{u}/targets/{t}[/{address}]/healthy|unhealthy`):
    /// sets every address of the target (by target string or id), or only `address`, read as
    /// Kong reads it (`ip[:port]`, the port 8000 when left out, as a target's). Checked in
    /// Kong's order: the target exists, then the upstream has health checks. As Kong's
    /// health checker, an address that is not one of the target's changes nothing and is no
    /// error. Returns how many addresses were set.
    pub fn set_health(
        &self,
        target: &str,
        address: Option<&str>,
        healthy: bool,
    ) -> Result<usize, SetHealthError> {
        let normalized = TargetAddr::parse(target).ok();
        let slot = self
            .targets
            .iter()
            .find(|s| s.config.id.to_string() == target || Some(&s.addr) == normalized.as_ref())
            .ok_or_else(|| SetHealthError::TargetNotFound {
                upstream: self.name.to_string(),
                target: target.to_string(),
            })?;
        if !self.policy.enabled {
            return Err(SetHealthError::NoHealthchecker {
                upstream: self.name.to_string(),
            });
        }
        // `None`: every address of the target; `Some(None)`: an address that is none (a
        // hostname, or no address at all)
        let only: Option<Option<SocketAddr>> = address.map(|a| {
            TargetAddr::parse(a)
                .ok()
                .and_then(|t| Some(SocketAddr::new(t.ip?, t.port)))
        });
        let ring = self.ring.load();
        let mut set = 0;
        for e in ring
            .entries
            .iter()
            .filter(|e| Arc::ptr_eq(&self.targets[e.target as usize], slot))
            .filter(|e| only.is_none_or(|a| a == Some(e.ep.addr)))
        {
            set += 1;
            if e.ep.health.set(healthy) {
                log_transition(&self.name, &slot.target, e.ep.addr, healthy, "admin");
            }
        }
        Ok(set)
    }

    /// The health of every target and of the balancer, in Kong's shapes.
    pub fn health(&self) -> UpstreamHealth {
        let ring = self.ring.load();
        let enabled = self.policy.enabled;
        let mut hosts = Vec::with_capacity(self.targets.len());
        let mut targets = Vec::with_capacity(self.targets.len());
        let (mut total, mut unavailable) = (0u64, 0u64);
        for (ti, slot) in self.targets.iter().enumerate() {
            let mut addresses = Vec::new();
            let (mut t_total, mut t_unavailable) = (0u64, 0u64);
            for e in ring.entries.iter().filter(|e| e.target as usize == ti) {
                let healthy = e.ep.health.is_healthy();
                t_total += u64::from(e.weight);
                if !healthy {
                    t_unavailable += u64::from(e.weight);
                }
                addresses.push(AddressHealth {
                    ip: match e.ep.addr.ip() {
                        std::net::IpAddr::V6(ip) => format!("[{ip}]"),
                        ip => ip.to_string(),
                    },
                    port: e.ep.addr.port(),
                    weight: e.weight,
                    health: match (enabled, healthy) {
                        (false, _) => HealthStatus::HealthchecksOff,
                        (true, true) => HealthStatus::Healthy,
                        (true, false) => HealthStatus::Unhealthy,
                    },
                });
            }
            total += t_total;
            unavailable += t_unavailable;
            let dns = {
                let d = slot.dns.lock().unwrap_or_else(|e| e.into_inner());
                match &d.status {
                    DnsStatus::Pending => "unknown".to_string(),
                    DnsStatus::Ip if slot.addr.host.contains(':') => "AAAA".to_string(),
                    DnsStatus::Ip => "A".to_string(),
                    DnsStatus::Resolved(k) => k.as_str().to_string(),
                    DnsStatus::Failed(e) => e.clone(),
                }
            };
            let health = if addresses.is_empty() {
                HealthStatus::DnsError
            } else if addresses.iter().any(|a| a.health == HealthStatus::Healthy) {
                HealthStatus::Healthy
            } else if addresses
                .iter()
                .any(|a| a.health == HealthStatus::Unhealthy)
            {
                HealthStatus::Unhealthy
            } else {
                HealthStatus::HealthchecksOff
            };
            let details = TargetDetails {
                host: if slot.addr.host.contains(':') {
                    format!("[{}]", slot.addr.host)
                } else {
                    slot.addr.host.clone()
                },
                port: slot.addr.port,
                dns,
                node_weight: slot.config.weight,
                weight: WeightSummary {
                    total: t_total,
                    unavailable: t_unavailable,
                    available: t_total - t_unavailable,
                },
                addresses,
            };
            hosts.push(BalancerHost::from(&details));
            targets.push(TargetHealth {
                id: slot.config.id,
                target: slot.config.target.clone(),
                weight: slot.config.weight,
                tags: (!slot.config.tags.is_empty()).then(|| slot.config.tags.clone()),
                created_at: slot.config.created_at,
                updated_at: slot.config.updated_at,
                upstream: UpstreamRef {
                    id: self.upstream.id,
                },
                health,
                data: details,
            });
        }
        let healthy = self.threshold_ok(&ring) && total > unavailable;
        let balancer_health = if healthy {
            HealthStatus::Healthy
        } else {
            HealthStatus::Unhealthy
        };
        let balancer = BalancerHealth {
            health: if enabled {
                balancer_health
            } else {
                HealthStatus::HealthchecksOff
            },
            balancer_health,
            id: self.upstream.id,
            details: BalancerDetails {
                healthy,
                weight: WeightSummary {
                    total,
                    unavailable,
                    available: total - unavailable,
                },
                hosts,
            },
        };
        UpstreamHealth {
            name: self.name.to_string(),
            balancer,
            targets,
        }
    }

    /// [`Balancer::pick`], but while a hostname target has not had its first answer yet (a
    /// new balancer) and no peer is available, waits for its lookups to end, up to `wait`:
    /// Kong resolves a balancer's targets when creating it, and a request that finds no
    /// balancer waits for it, so a request right after a configuration change is not
    /// refused for want of an answer that is on its way. A retry (`tried` not empty) does
    /// not wait.
    pub async fn pick_within(
        &self,
        ctx: &PickContext<'_>,
        tried: &[SocketAddr],
        wait: Duration,
    ) -> Result<Peer, NoPeer> {
        match self.pick(ctx, tried) {
            Ok(p) => return Ok(p),
            Err(e) if !tried.is_empty() || self.resolved() => return Err(e),
            Err(_) => {}
        }
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let notified = self.dns_done.notified();
            tokio::pin!(notified);
            // (registered before looking, so that an answer in between is not missed)
            notified.as_mut().enable();
            let err = match self.pick(ctx, tried) {
                Ok(p) => return Ok(p),
                Err(e) => e,
            };
            if !tried.is_empty() || self.resolved() {
                return Err(err);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Err(err);
            }
        }
    }

    /// Whether every hostname target has been resolved at least once (or failed).
    pub fn resolved(&self) -> bool {
        self.targets.iter().all(|t| {
            !matches!(
                t.dns.lock().unwrap_or_else(|e| e.into_inner()).status,
                DnsStatus::Pending
            )
        })
    }

    fn same_config(
        &self,
        upstream: &Upstream,
        targets: &[Target],
        cert: &Option<(String, String)>,
    ) -> bool {
        self.upstream == *upstream && self.target_configs == targets && self.client_cert == *cert
    }

    pub(crate) fn current_ring(&self) -> Arc<Ring> {
        self.ring.load_full()
    }

    pub(crate) fn policy(&self) -> &Arc<HealthPolicy> {
        &self.policy
    }

    pub(crate) fn targets(&self) -> &[Arc<TargetSlot>] {
        &self.targets
    }

    pub(crate) fn client_cert(&self) -> Option<&(String, String)> {
        self.client_cert.as_ref()
    }

    pub(crate) fn probe_roots(&self) -> &[CertificateDer<'static>] {
        &self.probe_roots
    }

    pub(crate) fn host_header(&self) -> Option<&Arc<str>> {
        self.spec.host_header.as_ref()
    }

    /// Starts the DNS refresher and the active checker, as needed.
    fn start(self: &Arc<Self>, runtime: &Handle) {
        if self.targets.iter().any(|t| t.addr.ip.is_none()) {
            let weak = Arc::downgrade(self);
            let stop = self.stop.subscribe();
            let resolver = Arc::clone(&self.resolver);
            runtime.spawn(dns_refresher(weak, resolver, stop));
        }
        if self.policy.active.enabled() {
            let weak = Arc::downgrade(self);
            let stop = self.stop.subscribe();
            runtime.spawn(crate::checker::run(weak, stop));
        }
    }

    /// Applies one resolution of a hostname target. Returns whether addresses changed.
    fn apply_dns(
        &self,
        slot: &TargetSlot,
        answer: Result<&crate::dns::DnsAnswer, &DnsError>,
    ) -> bool {
        let mut d = slot.dns.lock().unwrap_or_else(|e| e.into_inner());
        match answer {
            Ok(a) => {
                let mut addresses: Vec<ResolvedAddr> = a
                    .records
                    .iter()
                    .map(|r| ResolvedAddr {
                        addr: SocketAddr::new(r.ip, r.port.unwrap_or(slot.addr.port)),
                        weight: if slot.config.weight == 0 {
                            0
                        } else {
                            r.weight.unwrap_or(slot.config.weight)
                        },
                        hostname: match (&r.srv_name, self.spec.use_srv_name) {
                            (Some(n), true) => Arc::clone(n),
                            _ => Arc::from(slot.addr.host.as_str()),
                        },
                    })
                    .collect();
                addresses.sort_by_key(|x| x.addr);
                addresses.dedup_by(|x, y| x.addr == y.addr);
                d.status = DnsStatus::Resolved(a.kind);
                if d.addresses != addresses {
                    d.addresses = addresses;
                    return true;
                }
                false
            }
            Err(e) => {
                if d.addresses.is_empty() {
                    d.status = DnsStatus::Failed(e.client_message().to_string());
                }
                false
            }
        }
    }
}

/// The health rules of an upstream, shared with earlier upstreams of equal settings.
fn policy_for(
    cache: &mut Vec<(silverback_config::Healthchecks, Arc<HealthPolicy>)>,
    u: &Upstream,
) -> Result<Arc<HealthPolicy>, BalancerError> {
    if let Some((_, p)) = cache.iter().find(|(h, _)| *h == *u.healthchecks) {
        return Ok(Arc::clone(p));
    }
    let p = Arc::new(
        HealthPolicy::from_config(&u.healthchecks)
            .map_err(|e| invalid(&u.name, "healthchecks", e))?,
    );
    if cache.len() < 16 {
        cache.push(((*u.healthchecks).clone(), Arc::clone(&p)));
    }
    Ok(p)
}

/// Keeps hostname targets in sync with DNS: re-queries each when its answer expires.
async fn dns_refresher(
    weak: Weak<Balancer>,
    resolver: Arc<Resolver>,
    mut stop: watch::Receiver<bool>,
) {
    // (listed in `GET /timers` while the refresher runs; a pass over the targets is one run,
    // failed when a target did not resolve)
    let timer = match weak.upgrade() {
        Some(b) => silverback_timers::global().register(
            format!("dns-refresh:{}", b.name),
            silverback_timers::Site::new(module_path!(), "dns_refresher"),
        ),
        None => return,
    };
    loop {
        let Some(b) = weak.upgrade() else { return };
        let run = timer.run();
        let mut failure = None;
        let now = Instant::now();
        let mut next = now + Duration::from_secs(3600);
        // Every hostname target at once: one slow name does not hold back the others' first
        // answers, each going into the ring as it comes (a new balancer's first answers end
        // the wait of the requests that arrived before them: [`Balancers::peer_within`]).
        // (The next pass waits for the slowest lookup of this one: a name that does not
        // answer delays its siblings' refreshes by its timeout, a few seconds; their answers
        // are served stale meanwhile.)
        let mut lookups = tokio::task::JoinSet::new();
        for (i, slot) in b.targets.iter().enumerate() {
            if slot.addr.ip.is_none() {
                let resolver = Arc::clone(&resolver);
                let host = slot.addr.host.clone();
                lookups.spawn(async move { (i, resolver.resolve_fresh(&host).await) });
            }
        }
        loop {
            let done = tokio::select! {
                r = lookups.join_next() => r,
                _ = stop.changed() => {
                    run.abandon();
                    return;
                }
            };
            let Some(done) = done else { break };
            let Ok((i, res)) = done else { continue };
            let slot = &b.targets[i];
            let changed = match &res {
                Ok((answer, expires)) => {
                    next = next.min(*expires);
                    b.apply_dns(slot, Ok(answer))
                }
                Err(e) => {
                    tracing::warn!(upstream = %b.name, target = %slot.target, error = %e, "target resolution failed");
                    failure = Some(format!("target {}: {e}", slot.target));
                    let retry = match e {
                        DnsError::NotFound(..) => resolver.options().not_found_ttl,
                        DnsError::Failed { .. } => resolver.options().error_ttl,
                    };
                    next = next.min(Instant::now() + retry);
                    b.apply_dns(slot, Err(e))
                }
            };
            if changed {
                b.rebuild_ring();
            }
            b.dns_done.notify_waiters();
        }
        drop(b);
        if let Some(f) = failure {
            run.fail(f);
        } else {
            drop(run);
        }
        let next = next.max(Instant::now() + resolver.options().min_ttl);
        tokio::select! {
            _ = tokio::time::sleep_until(next.into()) => {}
            _ = stop.changed() => return,
        }
    }
}

/// The services' hosts that are IP addresses and not upstream names, with each port given.
fn direct_hosts(
    config: &Config,
    upstreams: &FxHashMap<Box<str>, Arc<Balancer>>,
) -> FxHashMap<Box<str>, Vec<DirectHost>> {
    let mut direct: FxHashMap<Box<str>, Vec<DirectHost>> = FxHashMap::default();
    for s in &config.services {
        let host = s.host.as_str();
        if upstreams.contains_key(host) {
            continue;
        }
        let Some(ip) = ip_literal(host) else {
            continue;
        };
        let ports = direct.entry(host.into()).or_default();
        if ports.iter().any(|d| d.addr.port() == s.port) {
            continue;
        }
        ports.push(DirectHost {
            addr: SocketAddr::new(ip, s.port),
            hostname: host.into(),
            host_values: Arc::new([
                host_value(host, s.port, false),
                host_value(host, s.port, true),
            ]),
        });
    }
    direct
}

/// A service host that is an IP address, for one port.
#[derive(Debug)]
struct DirectHost {
    addr: SocketAddr,
    hostname: Arc<str>,
    host_values: Arc<[Option<http::HeaderValue>; 2]>,
}

/// Every upstream balancer of one configuration, by name.
#[derive(Debug)]
pub struct Balancers {
    by_name: FxHashMap<Box<str>, Arc<Balancer>>,
    /// The services' hosts that are IP addresses (and not upstream names), by host: their
    /// address and Host header values for each port a service gives, made once here.
    direct: FxHashMap<Box<str>, Vec<DirectHost>>,
    resolver: Arc<Resolver>,
    /// Upstream names in configuration order.
    order: Vec<Box<str>>,
}

impl Balancers {
    /// Builds the balancers of `config`. An upstream equal to one in `previous` (same
    /// upstream entity, targets and client certificate) keeps its balancer as is: health,
    /// counters, DNS state, checkers. A changed upstream gets a new balancer that keeps the
    /// health of addresses it still has. Active checkers and DNS refreshers run on
    /// `runtime` and stop when their balancer is dropped (or on [`Balancers::shutdown`]).
    pub fn build(
        config: &Config,
        previous: Option<&Balancers>,
        runtime: &Handle,
    ) -> Result<Balancers, BalancerError> {
        Self::build_with(config, previous, runtime, &Options::default())
    }

    /// [`Balancers::build`] with [`Options`].
    pub fn build_with(
        config: &Config,
        previous: Option<&Balancers>,
        runtime: &Handle,
        options: &Options,
    ) -> Result<Balancers, BalancerError> {
        let resolver = options
            .resolver
            .clone()
            .or_else(|| previous.map(|p| Arc::clone(&p.resolver)))
            .unwrap_or_else(|| Arc::new(Resolver::new(ResolverOptions::default())));
        let mut by_upstream: HashMap<Uuid, Vec<Target>> = HashMap::new();
        for t in &config.targets {
            by_upstream
                .entry(t.upstream.id)
                .or_default()
                .push(t.clone());
        }
        let mut by_name =
            FxHashMap::with_capacity_and_hasher(config.upstreams.len(), Default::default());
        let mut order = Vec::with_capacity(config.upstreams.len());
        let mut fresh = Vec::new();
        let probe_roots: Arc<[CertificateDer<'static>]> = options.probe_roots.clone().into();
        // Most upstreams share a handful of health-check settings: build each rule set once.
        let mut policies: Vec<(silverback_config::Healthchecks, Arc<HealthPolicy>)> = Vec::new();
        for u in &config.upstreams {
            let targets = by_upstream.remove(&u.id).unwrap_or_default();
            let cert = match &u.client_certificate {
                None => None,
                Some(fk) => {
                    let c = config
                        .certificates
                        .iter()
                        .find(|c| c.id == fk.id)
                        .ok_or_else(|| {
                            invalid(
                                &u.name,
                                "client_certificate",
                                format!("no certificate {}", fk.id),
                            )
                        })?;
                    Some((c.cert.clone(), c.key.clone()))
                }
            };
            let prev = previous.and_then(|p| p.by_name.get(u.name.as_str()));
            let b = match prev {
                Some(p) if p.same_config(u, &targets, &cert) => Arc::clone(p),
                _ => {
                    let b = Arc::new(Balancer::new(
                        u,
                        targets,
                        cert,
                        prev.map(|p| &**p),
                        Arc::clone(&resolver),
                        Arc::clone(&probe_roots),
                        policy_for(&mut policies, u)?,
                    )?);
                    fresh.push(Arc::clone(&b));
                    b
                }
            };
            order.push(u.name.as_str().into());
            by_name.insert(u.name.as_str().into(), b);
        }
        // Start background work only once the whole configuration was accepted.
        for b in &fresh {
            b.start(runtime);
        }
        let direct = direct_hosts(config, &by_name);
        Ok(Balancers {
            by_name,
            direct,
            resolver,
            order,
        })
    }

    /// The balancer of an upstream.
    pub fn get(&self, upstream_name: &str) -> Option<&Arc<Balancer>> {
        self.by_name.get(upstream_name)
    }

    /// Every balancer, in configuration order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Balancer>> {
        self.order.iter().filter_map(|n| self.by_name.get(n))
    }

    /// The shared resolver.
    pub fn resolver(&self) -> &Arc<Resolver> {
        &self.resolver
    }

    /// Waits until every hostname target has been resolved once, up to `timeout`. Returns
    /// whether all were.
    pub async fn ready(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.by_name.values().all(|b| b.resolved()) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// The one call of the proxy: a peer for a service's `host` and `port`. A host naming an
    /// upstream goes through that balancer (the port is ignored, as in Kong); an IP is used
    /// as is; any other name is resolved through the DNS cache, rotating over its addresses
    /// and avoiding `tried` ones. An upstream whose hostname targets have not had their
    /// first answer yet is waited for ([`Balancer::pick_within`]) up to four times the
    /// resolver's query timeout (an SRV and an A query, each tried twice);
    /// [`Balancers::peer_within`] sets the bound.
    pub async fn peer(
        &self,
        host: &str,
        port: u16,
        ctx: &PickContext<'_>,
        tried: &[SocketAddr],
    ) -> Result<Peer, NoPeer> {
        let wait = self.resolver.options().timeout.saturating_mul(4);
        self.peer_within(host, port, ctx, tried, wait).await
    }

    /// [`Balancers::peer`], waiting up to `wait` for a new upstream's first DNS answers (the
    /// proxy passes the service's connect timeout).
    pub async fn peer_within(
        &self,
        host: &str,
        port: u16,
        ctx: &PickContext<'_>,
        tried: &[SocketAddr],
        wait: Duration,
    ) -> Result<Peer, NoPeer> {
        if let Some(b) = self.by_name.get(host) {
            return b.pick_within(ctx, tried, wait).await;
        }
        if let Some(d) = self
            .direct
            .get(host)
            .and_then(|ports| ports.iter().find(|d| d.addr.port() == port))
        {
            return Ok(Peer {
                addr: d.addr,
                host_header: None,
                set_cookie: None,
                inner: PeerInner::Direct {
                    hostname: Arc::clone(&d.hostname),
                    host_values: Some(Arc::clone(&d.host_values)),
                },
            });
        }
        if let Some(ip) = ip_literal(host) {
            return Ok(Peer::direct(SocketAddr::new(ip, port), host.into()));
        }
        let (addr, _srv_name) = self
            .resolver
            .pick(host, port, tried)
            .await
            .map_err(|e| NoPeer::from(&e))?;
        Ok(Peer::direct(addr, host.into()))
    }

    /// Health of every upstream, in configuration order.
    pub fn health(&self) -> Vec<UpstreamHealth> {
        self.iter().map(|b| b.health()).collect()
    }

    /// Every sample of `kong_upstream_target_health`.
    pub fn target_health_metrics(&self) -> Vec<TargetHealthSample> {
        self.iter()
            .flat_map(|b| b.health().metric_samples())
            .collect()
    }

    /// Stops every active checker and DNS refresher of this set now (process exit). After a
    /// configuration swap nothing needs calling: dropping the old set stops the work of
    /// balancers the new set did not keep.
    pub fn shutdown(&self) {
        for b in self.by_name.values() {
            let _ = b.stop.send(true);
        }
    }
}

/// The TLS server name for a host (nginx's `ngx_http_upstream_ssl_name` on Kong's
/// `proxy_ssl_name $upstream_host`): the host without its port, or `None` when it is an IP
/// address (no SNI is sent for IPs, RFC 6066) or empty.
pub fn sni_name(h: &str) -> Option<&str> {
    let h = if let Some(rest) = h.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else if h.matches(':').count() == 1 {
        h.split(':').next().unwrap_or(h)
    } else {
        h
    };
    if h.is_empty() || ip_literal(h).is_some() {
        None
    } else {
        Some(h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_and_sni() {
        let addr: SocketAddr = "10.0.0.1:8080".parse().expect("addr");
        let p = Peer::direct(addr, "api.test".into());
        assert_eq!(p.host_header_value(false), "api.test:8080");
        assert_eq!(p.sni(), Some("api.test"));
        let p = Peer::direct("10.0.0.1:80".parse().expect("addr"), "api.test".into());
        assert_eq!(p.host_header_value(false), "api.test");
        assert_eq!(p.host_header_value(true), "api.test:80");
        let p = Peer::direct("10.0.0.1:443".parse().expect("addr"), "10.0.0.1".into());
        assert_eq!(p.host_header_value(true), "10.0.0.1");
        assert_eq!(p.sni(), None);
        let p = Peer::direct("[::1]:81".parse().expect("addr"), "::1".into());
        assert_eq!(p.host_header_value(false), "[::1]:81");
        assert_eq!(p.sni(), None);
        let mut p = Peer::direct(addr, "api.test".into());
        p.host_header = Some("front.test:8443".into());
        assert_eq!(p.host(), "front.test:8443");
        assert_eq!(p.host_header_value(false), "front.test:8443");
        assert_eq!(p.sni(), Some("front.test"));
        p.host_header = Some("[fe80::1]:8443".into());
        assert_eq!(p.host_header_value(false), "[fe80::1]:8443");
        assert_eq!(p.sni(), None);
        // A bracketed literal without a port gets the port as any other host does.
        p.host_header = Some("[fe80::1]".into());
        assert_eq!(p.host_header_value(false), "[fe80::1]:8080");
        let p = Peer::direct("[::1]:80".parse().expect("addr"), "[::1]".into());
        assert_eq!(p.host_header_value(false), "[::1]");
        assert_eq!(p.host_header_value(true), "[::1]:80");
        assert!(p.target().is_none() && p.upstream().is_none());
        p.report(Outcome::TcpError);
    }
}
