//! DNS resolution with a TTL-respecting cache.
//!
//! - Names are looked up as SRV first, then A, as Kong's default `dns_order`
//!   (`LAST,SRV,A,CNAME`), which asks no AAAA: names resolve to IPv4 addresses only (an
//!   IPv6 literal is still used as is); the hosts file is honoured.
//! - Of an SRV answer, only the records of the best (lowest) priority are used, as Kong's
//!   balancer uses them; each record's target is resolved to addresses, which keep the
//!   record's port (0 = the caller's port) and share its weight (0 counts as 1): the
//!   record's weight counts once, split over its addresses, each given at least 1.
//! - An answer is cached until its TTL runs out (at least `min_ttl`). An expired answer is
//!   still served for up to `stale_ttl` while one background query refreshes it, so a
//!   request never waits on DNS for a name it has resolved before.
//! - "Name does not exist" and "no records" are cached for `not_found_ttl`; other failures
//!   for `error_ttl`.
//! - Every lookup and query is counted as Kong's DNS client counts them ([`Resolver::stats`],
//!   served as `GET /status/dns`).

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use hickory_resolver::config::{
    NameServerConfig, NameServerConfigGroup, ResolverConfig, ResolverOpts,
};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::xfer::Protocol;
use hickory_resolver::{ResolveError, TokioResolver};

use crate::error::NoPeer;

/// Resolver settings.
#[derive(Debug, Clone)]
pub struct ResolverOptions {
    /// Name servers (UDP, with TCP fallback). `None` reads the system configuration
    /// (`/etc/resolv.conf`).
    pub nameservers: Option<Vec<SocketAddr>>,
    /// Per-query timeout.
    pub timeout: Duration,
    /// Query SRV before A (Kong's default order).
    pub srv: bool,
    /// Which address records are asked, in which order (Kong's `dns_order`: `A` and
    /// `AAAA`); IPv4 only by default, as Kong's default order asks no AAAA.
    pub families: Families,
    /// Shortest time an answer is kept (a TTL of 0 is re-queried at this pace).
    pub min_ttl: Duration,
    /// How long an expired answer may still be served while it is refreshed.
    pub stale_ttl: Duration,
    /// How long "name does not exist" / "no records" is cached.
    pub not_found_ttl: Duration,
    /// How long another failure is cached.
    pub error_ttl: Duration,
}

impl Default for ResolverOptions {
    fn default() -> Self {
        ResolverOptions {
            nameservers: None,
            timeout: Duration::from_secs(2),
            srv: true,
            families: Families::V4,
            min_ttl: Duration::from_secs(1),
            stale_ttl: Duration::from_secs(3600),
            not_found_ttl: Duration::from_secs(30),
            error_ttl: Duration::from_secs(1),
        }
    }
}

/// The address records a name is looked up as, from Kong's `dns_order`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Families {
    /// A only (Kong's default order, `LAST,SRV,A,CNAME`).
    V4,
    /// AAAA only.
    V6,
    /// A, then AAAA when there is none.
    V4ThenV6,
    /// AAAA, then A when there is none.
    V6ThenV4,
}

impl Families {
    /// The families and whether SRV is asked, from a `dns_order` value (`LAST,SRV,A,CNAME`:
    /// a comma-separated list of `LAST`, `SRV`, `A`, `AAAA` and `CNAME`, any case).
    pub fn from_dns_order(order: &str) -> Result<(Families, bool), String> {
        let mut a = None;
        let mut aaaa = None;
        let mut srv = false;
        for (i, t) in order.split(',').map(str::trim).enumerate() {
            match t.to_ascii_uppercase().as_str() {
                "A" => a = a.or(Some(i)),
                "AAAA" => aaaa = aaaa.or(Some(i)),
                "SRV" => srv = true,
                "LAST" | "CNAME" => {}
                _ => {
                    return Err(format!(
                        "invalid dns_order entry '{t}': expected LAST, SRV, A, AAAA or CNAME"
                    ));
                }
            }
        }
        let families = match (a, aaaa) {
            (Some(_), None) => Families::V4,
            (None, Some(_)) => Families::V6,
            (Some(a), Some(b)) if a < b => Families::V4ThenV6,
            (Some(_), Some(_)) => Families::V6ThenV4,
            (None, None) => return Err("dns_order asks neither A nor AAAA".into()),
        };
        Ok((families, srv))
    }

    /// The record names as `/status/dns` counts queries (`A`, `AAAA`, `A/AAAA`).
    fn as_str(self) -> &'static str {
        match self {
            Families::V4 => "A",
            Families::V6 => "AAAA",
            Families::V4ThenV6 | Families::V6ThenV4 => "A/AAAA",
        }
    }
}

/// One usable address of a name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsRecord {
    /// The address.
    pub ip: IpAddr,
    /// The SRV record's port (`None` for A, or an SRV port of 0).
    pub port: Option<u16>,
    /// The SRV record's weight, 0 raised to 1, shared by the addresses of its target
    /// (`None` for A).
    pub weight: Option<u32>,
    /// The SRV record's target name (`None` for A).
    pub srv_name: Option<Arc<str>>,
}

/// The record type an answer came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordType {
    /// IPv4 / IPv6 addresses (or the hosts file).
    A,
    /// SRV records.
    Srv,
}

impl RecordType {
    /// Kong's name, as in `/upstreams/{u}/health` (`"A"`, `"SRV"`).
    pub fn as_str(self) -> &'static str {
        match self {
            RecordType::A => "A",
            RecordType::Srv => "SRV",
        }
    }
}

/// A successful answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsAnswer {
    /// The name that was asked for.
    pub name: Arc<str>,
    /// The addresses (never empty).
    pub records: Vec<DnsRecord>,
    /// Where the records came from.
    pub kind: RecordType,
}

/// A failed lookup.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DnsError {
    /// The name does not exist or has no usable records; with Kong's DNS client's message
    /// for it ([`NAME_ERROR`] or [`EMPTY_RECORD`]).
    #[error("name resolution failed for '{0}'")]
    NotFound(String, &'static str),
    /// Timeout, server failure, or another resolver error.
    #[error("DNS error for '{name}': {detail}")]
    Failed {
        /// The name.
        name: String,
        /// The resolver's message: for an answer with an error code, Kong's resolver's
        /// (`dns server error: 2 server failure`); else hickory's.
        detail: String,
        /// Whether a name server answered (with an error code such as "server failure"),
        /// rather than not at all (a timeout, an unreachable server).
        answered: bool,
    },
}

/// Kong's DNS client's message for a name that does not exist.
pub const NAME_ERROR: &str = "dns server error: 3 name error";
/// Kong's DNS client's message for a name without records of the types asked.
pub const EMPTY_RECORD: &str = "dns client error: 101 empty record received";

impl DnsError {
    /// The DNS client's own message, as Kong shows it for a target whose lookup failed
    /// (`dns` in `/upstreams/{u}/health`): `dns server error: 3 name error`,
    /// `dns client error: 101 empty record received`, or the resolver's error.
    pub fn client_message(&self) -> &str {
        match self {
            DnsError::NotFound(_, m) => m,
            DnsError::Failed { detail, .. } => detail,
        }
    }
}

impl From<&DnsError> for NoPeer {
    fn from(e: &DnsError) -> NoPeer {
        match e {
            DnsError::NotFound(..) => NoPeer::NameResolution,
            DnsError::Failed { name, detail, .. } => NoPeer::Resolver {
                name: name.clone(),
                detail: detail.clone(),
            },
        }
    }
}

struct CacheEntry {
    answer: Result<Arc<DnsAnswer>, DnsError>,
    expires: Instant,
    refreshing: AtomicBool,
    /// Round-robin pointer for [`Resolver::pick`].
    next: AtomicUsize,
    /// The name's lookup counters (shared with the entries that replace this one).
    stats: Arc<LookupStats>,
}

/// How the lookups of one name went (Kong's `<name>:all` entry of the DNS statistics). Each
/// lookup counts one outcome (`runs` is their sum), as Kong's client counts them:
/// - `hit_lru`: answered from the cache (a cached "not found" or server error included, and
///   a stale answer whose refresh is already under way);
/// - `miss`: the name servers were asked and answered (with records or an error code), or
///   an expired answer was served stale while a refresh starts (which also counts `stale`);
/// - `fail`: the name servers were asked and did not answer (timeout, unreachable).
#[derive(Debug, Default)]
struct LookupStats {
    hit_lru: AtomicU64,
    miss: AtomicU64,
    fail: AtomicU64,
    /// Background refreshes started for a stale answer.
    stale: AtomicU64,
}

/// How the queries of one name and record type went (Kong's `<name>:<type>` entries).
#[derive(Debug, Default, Clone)]
struct QueryStats {
    query: u64,
    query_succ: u64,
    /// Answers with an error, by lua-resty-dns's reason ([`answer_error`]).
    query_fail: BTreeMap<&'static str, u64>,
    /// No answer: timeouts, unreachable name servers, malformed replies.
    query_fail_nameserver: u64,
    /// The last query's duration, in milliseconds.
    query_last_time: u64,
}

/// The resolver's counters, by Kong's key and counter name: `<name>:all` for lookups,
/// `<name>:SRV` and `<name>:A` for queries (Kong's default `dns_order` asks no AAAA).
/// Counters that are still 0 are left out, as Kong's client leaves out those it never
/// incremented.
pub type DnsStats = BTreeMap<String, BTreeMap<String, u64>>;

/// A caching resolver, shared by every configuration (the cache survives swaps).
pub struct Resolver {
    inner: TokioResolver,
    opts: ResolverOptions,
    /// The first name server, named in the error of a query no server answered.
    first_server: Option<SocketAddr>,
    cache: RwLock<HashMap<Box<str>, Arc<CacheEntry>>>,
    /// Lookup counters by name (looked up here only when a name is not cached).
    lookups: Mutex<HashMap<Box<str>, Arc<LookupStats>>>,
    /// Query counters by Kong's `<name>:<type>` key.
    queries: Mutex<BTreeMap<String, QueryStats>>,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolver")
            .field("opts", &self.opts)
            .finish_non_exhaustive()
    }
}

impl Resolver {
    /// A resolver with these settings. With no name servers given and no readable system
    /// configuration, only the hosts file and IP literals resolve.
    pub fn new(opts: ResolverOptions) -> Resolver {
        let (config, mut ropts) = match &opts.nameservers {
            Some(servers) => {
                let mut group = NameServerConfigGroup::new();
                for s in servers {
                    group.push(NameServerConfig::new(*s, Protocol::Udp));
                    group.push(NameServerConfig::new(*s, Protocol::Tcp));
                }
                (ResolverConfig::from_parts(None, vec![], group), ResolverOpts::default())
            }
            None => hickory_resolver::system_conf::read_system_conf().unwrap_or_else(|e| {
                tracing::warn!(error = %e, "no system DNS configuration; only the hosts file resolves");
                (ResolverConfig::from_parts(None, vec![], NameServerConfigGroup::new()), ResolverOpts::default())
            }),
        };
        ropts.timeout = opts.timeout;
        ropts.attempts = 2;
        // Our own cache does the TTL bookkeeping; keep hickory's small.
        ropts.cache_size = 64;
        // Kong's default `dns_order` (`LAST,SRV,A,CNAME`) asks no AAAA: IPv4 only, for targets
        // and service hosts alike (hickory's built-in `localhost` included), unless the
        // order given asks AAAA
        use hickory_resolver::config::LookupIpStrategy as S;
        ropts.ip_strategy = match opts.families {
            Families::V4 => S::Ipv4Only,
            Families::V6 => S::Ipv6Only,
            Families::V4ThenV6 => S::Ipv4thenIpv6,
            Families::V6ThenV4 => S::Ipv6thenIpv4,
        };
        let first_server = config.name_servers().first().map(|s| s.socket_addr);
        let inner = TokioResolver::builder_with_config(config, TokioConnectionProvider::default())
            .with_options(ropts)
            .build();
        Resolver {
            inner,
            opts,
            first_server,
            cache: RwLock::new(HashMap::new()),
            lookups: Mutex::new(HashMap::new()),
            queries: Mutex::new(BTreeMap::new()),
        }
    }

    /// The counters of every name looked up so far (`GET /status/dns`).
    pub fn stats(&self) -> DnsStats {
        let mut out = DnsStats::new();
        let lookups: Vec<(Box<str>, Arc<LookupStats>)> = lock(&self.lookups)
            .iter()
            .map(|(k, v)| (k.clone(), Arc::clone(v)))
            .collect();
        for (name, l) in lookups {
            let mut m = BTreeMap::new();
            let counts = [
                ("hit_lru", l.hit_lru.load(Ordering::Relaxed)),
                ("miss", l.miss.load(Ordering::Relaxed)),
                ("fail", l.fail.load(Ordering::Relaxed)),
            ];
            let runs = counts.iter().map(|(_, n)| n).sum();
            let stale = ("stale", l.stale.load(Ordering::Relaxed));
            for (k, v) in counts.into_iter().chain([("runs", runs), stale]) {
                if v > 0 {
                    m.insert(k.to_string(), v);
                }
            }
            out.insert(format!("{name}:all"), m);
        }
        for (key, q) in lock(&self.queries).iter() {
            let mut m = BTreeMap::new();
            m.insert("query".to_string(), q.query);
            m.insert("query_last_time".to_string(), q.query_last_time);
            for (k, v) in [
                ("query_succ", q.query_succ),
                ("query_fail_nameserver", q.query_fail_nameserver),
            ] {
                if v > 0 {
                    m.insert(k.to_string(), v);
                }
            }
            for (reason, n) in &q.query_fail {
                m.insert(format!("query_fail:{reason}"), *n);
            }
            out.insert(key.clone(), m);
        }
        out
    }

    fn lookup_stats(&self, name: &str) -> Arc<LookupStats> {
        let mut map = lock(&self.lookups);
        match map.get(name) {
            Some(s) => Arc::clone(s),
            None => {
                let s = Arc::new(LookupStats::default());
                map.insert(name.into(), Arc::clone(&s));
                s
            }
        }
    }

    /// Counts one query of `name` for record type `kind` (Kong's type name), which took
    /// `took` and ended in `outcome`.
    fn count_query<T>(
        &self,
        name: &str,
        kind: &str,
        took: Duration,
        outcome: &Result<T, ResolveError>,
    ) {
        let mut map = lock(&self.queries);
        let q = map.entry(format!("{name}:{kind}")).or_default();
        q.query += 1;
        q.query_last_time = u64::try_from(took.as_millis()).unwrap_or(u64::MAX);
        match outcome {
            Ok(_) => q.query_succ += 1,
            Err(e) => match answer_error(e) {
                Some((_, reason)) => *q.query_fail.entry(reason).or_default() += 1,
                None => q.query_fail_nameserver += 1,
            },
        }
    }

    /// The settings.
    pub fn options(&self) -> &ResolverOptions {
        &self.opts
    }

    fn cached(&self, name: &str) -> Option<Arc<CacheEntry>> {
        self.cache
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
    }

    /// Resolves `name`, from the cache when possible. An expired answer is served (and
    /// refreshed in the background) for up to `stale_ttl`.
    pub async fn resolve(self: &Arc<Self>, name: &str) -> Result<Arc<DnsAnswer>, DnsError> {
        let (entry, answer) = self.resolve_entry(name, true).await;
        drop(entry);
        answer
    }

    /// Resolves `name`, querying when the cached answer has expired (used to keep balancer
    /// targets in sync). Returns the answer and when it expires.
    pub async fn resolve_fresh(
        self: &Arc<Self>,
        name: &str,
    ) -> Result<(Arc<DnsAnswer>, Instant), DnsError> {
        let (entry, answer) = self.resolve_entry(name, false).await;
        answer.map(|a| (a, entry.expires))
    }

    /// The cache entry that answered a lookup of `name`, and its answer; counts the lookup.
    async fn resolve_entry(
        self: &Arc<Self>,
        name: &str,
        allow_stale: bool,
    ) -> (Arc<CacheEntry>, Result<Arc<DnsAnswer>, DnsError>) {
        let now = Instant::now();
        if let Some(e) = self.cached(name) {
            if now < e.expires {
                e.stats.hit_lru.fetch_add(1, Ordering::Relaxed);
                let answer = e.answer.clone();
                return (e, answer);
            }
            if allow_stale
                && let Ok(a) = &e.answer
                && now < e.expires + self.opts.stale_ttl
            {
                let a = Arc::clone(a);
                if e.refreshing.swap(true, Ordering::AcqRel) {
                    // (the refresh is under way: Kong's client has the stale answer cached
                    // again meanwhile)
                    e.stats.hit_lru.fetch_add(1, Ordering::Relaxed);
                } else {
                    e.stats.miss.fetch_add(1, Ordering::Relaxed);
                    e.stats.stale.fetch_add(1, Ordering::Relaxed);
                    self.spawn_stale_refresh(name);
                }
                return (e, Ok(a));
            }
        }
        let (e, failed) = self.query_and_store(name).await;
        let counter = match failed {
            Some(DnsError::Failed {
                answered: false, ..
            }) => &e.stats.fail,
            _ => &e.stats.miss,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let answer = e.answer.clone();
        (e, answer)
    }

    /// Refreshes a stale answer in the background (a one-shot job in `GET /timers`).
    fn spawn_stale_refresh(self: &Arc<Self>, name: &str) {
        let me = Arc::clone(self);
        let timer = silverback_timers::global().register(
            format!("dns-stale-refresh:{name}"),
            silverback_timers::Site::new(module_path!(), "spawn_stale_refresh"),
        );
        let name = name.to_string();
        tokio::spawn(async move {
            let run = timer.run();
            if let (_, Some(e)) = me.query_and_store(&name).await {
                run.fail(e.to_string());
            }
        });
    }

    /// Queries `name` and caches the answer (the previous good one when the query failed).
    /// Returns the entry, and the query's error when it failed.
    async fn query_and_store(&self, name: &str) -> (Arc<CacheEntry>, Option<DnsError>) {
        let (answer, ttl) = self.query(name).await;
        let ttl = match &answer {
            Ok(_) => ttl.max(self.opts.min_ttl),
            Err(DnsError::NotFound(..)) => self.opts.not_found_ttl,
            Err(DnsError::Failed { .. }) => self.opts.error_ttl,
        };
        let prev = self.cached(name);
        // Keep serving the last good answer when a refresh fails.
        let failed = answer.as_ref().err().cloned();
        let answer = match (answer, prev.as_ref().map(|p| &p.answer)) {
            (Err(err), Some(Ok(good))) => {
                tracing::warn!(name, error = %err, "DNS refresh failed; keeping the previous answer");
                Ok(Arc::clone(good))
            }
            (a, _) => a,
        };
        let stats = match &prev {
            Some(p) => Arc::clone(&p.stats),
            None => self.lookup_stats(name),
        };
        let entry = Arc::new(CacheEntry {
            answer,
            expires: Instant::now() + ttl,
            refreshing: AtomicBool::new(false),
            next: AtomicUsize::new(prev.map(|p| p.next.load(Ordering::Relaxed)).unwrap_or(0)),
            stats,
        });
        self.cache
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.into(), Arc::clone(&entry));
        (entry, failed)
    }

    async fn query(&self, name: &str) -> (Result<Arc<DnsAnswer>, DnsError>, Duration) {
        if let Some(ip) = crate::target::ip_literal(name) {
            let rec = DnsRecord {
                ip,
                port: None,
                weight: None,
                srv_name: None,
            };
            return (
                Ok(Arc::new(DnsAnswer {
                    name: name.into(),
                    records: vec![rec],
                    kind: RecordType::A,
                })),
                Duration::MAX / 4,
            );
        }
        let fqdn_name = name;
        if self.opts.srv {
            let started = Instant::now();
            let srv = self.inner.srv_lookup(fqdn_name).await;
            self.count_query(name, "SRV", started.elapsed(), &srv);
            match srv {
                Ok(srv) => {
                    let now = Instant::now();
                    let mut ttl = srv.as_lookup().valid_until().saturating_duration_since(now);
                    let mut records = Vec::new();
                    let mut last_err = None;
                    // Only the records of the best (lowest) priority are used, in the order
                    // Kong sorts them (priority, target, port).
                    let best = srv.iter().map(|r| r.priority()).min();
                    let mut top: Vec<_> =
                        srv.iter().filter(|r| Some(r.priority()) == best).collect();
                    top.sort_by_key(|r| (r.target().to_utf8(), r.port()));
                    for r in top {
                        let target = r.target().to_utf8();
                        let target = target.trim_end_matches('.');
                        let weight = u32::from(r.weight()).max(1);
                        let port = (r.port() != 0).then_some(r.port());
                        let srv_name: Arc<str> = target.into();
                        let started = Instant::now();
                        let ips = self.inner.lookup_ip(target).await;
                        let took = started.elapsed();
                        self.count_query(target, self.opts.families.as_str(), took, &ips);
                        match ips {
                            Ok(ips) => {
                                ttl = ttl.min(ips.valid_until().saturating_duration_since(now));
                                let mut ips: Vec<IpAddr> = ips.iter().collect();
                                ips.sort_unstable();
                                ips.dedup();
                                // Kong keeps one address per SRV record (its name resolved
                                // on each pick): the record's weight counts once, shared by
                                // its addresses (each at least 1).
                                let n = u32::try_from(ips.len()).unwrap_or(u32::MAX).max(1);
                                for (i, ip) in ips.into_iter().enumerate() {
                                    let extra = u32::from((i as u32) < weight % n);
                                    records.push(DnsRecord {
                                        ip,
                                        port,
                                        weight: Some((weight / n + extra).max(1)),
                                        srv_name: Some(Arc::clone(&srv_name)),
                                    });
                                }
                            }
                            Err(e) => last_err = Some((e, took)),
                        }
                    }
                    if !records.is_empty() {
                        let a = DnsAnswer {
                            name: name.into(),
                            records,
                            kind: RecordType::Srv,
                        };
                        return (Ok(Arc::new(a)), ttl);
                    }
                    if let Some((e, took)) = last_err {
                        return (Err(self.classify(name, &e, took)), Duration::ZERO);
                    }
                }
                Err(e) if !(e.is_nx_domain() || e.is_no_records_found()) => {
                    tracing::debug!(name, error = %e, "SRV lookup failed; trying A");
                }
                Err(_) => {}
            }
        }
        let started = Instant::now();
        let ips = self.inner.lookup_ip(fqdn_name).await;
        let took = started.elapsed();
        self.count_query(name, self.opts.families.as_str(), took, &ips);
        match ips {
            Ok(ips) => {
                let ttl = ips.valid_until().saturating_duration_since(Instant::now());
                let mut records: Vec<DnsRecord> = ips
                    .iter()
                    .map(|ip| DnsRecord {
                        ip,
                        port: None,
                        weight: None,
                        srv_name: None,
                    })
                    .collect();
                records.dedup();
                if records.is_empty() {
                    return (
                        Err(DnsError::NotFound(name.into(), EMPTY_RECORD)),
                        Duration::ZERO,
                    );
                }
                (
                    Ok(Arc::new(DnsAnswer {
                        name: name.into(),
                        records,
                        kind: RecordType::A,
                    })),
                    ttl,
                )
            }
            Err(e) => (Err(self.classify(name, &e, took)), Duration::ZERO),
        }
    }

    /// A failed query of `name` that took `took`: "not found" when the name does not exist
    /// or has no records (cached for `not_found_ttl`), otherwise a failure (cached for
    /// `error_ttl`), worded as Kong's DNS client words it: `dns server error: 2 server
    /// failure` for an answer's error code; for no answer, lua-resty-dns's `failed to
    /// receive reply from UDP server <server>: timeout` in the client's `DNS server error:
    /// <error>, took <N> ms`.
    fn classify(&self, name: &str, e: &ResolveError, took: Duration) -> DnsError {
        let answered = answer_error(e);
        match answered {
            Some((_, "name error")) => return DnsError::NotFound(name.into(), NAME_ERROR),
            Some((_, "empty record received")) => {
                return DnsError::NotFound(name.into(), EMPTY_RECORD);
            }
            _ => {}
        }
        let detail = match answered {
            Some((code, r)) => format!("dns server error: {code} {r}"),
            None => {
                let why = match e.proto().map(hickory_resolver::proto::ProtoError::kind) {
                    Some(hickory_resolver::proto::ProtoErrorKind::Timeout) => "timeout".to_string(),
                    Some(hickory_resolver::proto::ProtoErrorKind::Io(io))
                        if io.kind() == std::io::ErrorKind::ConnectionRefused =>
                    {
                        "connection refused".to_string()
                    }
                    _ => e.to_string(),
                };
                let server = self
                    .first_server
                    .map_or_else(|| "(none)".to_string(), |s| s.to_string());
                format!(
                    "DNS server error: failed to receive reply from UDP server {server}: {why}, took {} ms",
                    took.as_millis()
                )
            }
        };
        DnsError::Failed {
            name: name.into(),
            detail,
            answered: answered.is_some(),
        }
    }

    /// Picks an address of `name` for one try: the cached answer's records in turn
    /// (round-robin), skipping addresses in `tried` while others remain. `port` is used
    /// unless an SRV record gives one.
    pub async fn pick(
        self: &Arc<Self>,
        name: &str,
        port: u16,
        tried: &[SocketAddr],
    ) -> Result<(SocketAddr, Option<Arc<str>>), DnsError> {
        let (entry, answer) = self.resolve_entry(name, true).await;
        let answer = answer?;
        let start = entry.next.fetch_add(1, Ordering::Relaxed);
        let n = answer.records.len();
        let addr_of = |r: &DnsRecord| SocketAddr::new(r.ip, r.port.unwrap_or(port));
        let mut chosen = &answer.records[start % n];
        for k in 0..n {
            let r = &answer.records[(start + k) % n];
            if !tried.contains(&addr_of(r)) {
                chosen = r;
                break;
            }
        }
        Ok((addr_of(chosen), chosen.srv_name.clone()))
    }
}

/// Locks a counter map; a panic elsewhere while it was held leaves counts, not broken state.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// An answer's error code, with lua-resty-dns's reason for it (Kong's
/// `query_fail:<reason>`), or `None` when no answer came (a timeout, an unreachable server,
/// a malformed reply).
fn answer_error(e: &ResolveError) -> Option<(u16, &'static str)> {
    use hickory_resolver::proto::ProtoErrorKind;
    use hickory_resolver::proto::op::ResponseCode;
    match e.proto()?.kind() {
        ProtoErrorKind::NoRecordsFound { response_code, .. } => Some((
            u16::from(*response_code),
            match *response_code {
                ResponseCode::NoError => "empty record received",
                ResponseCode::FormErr => "format error",
                ResponseCode::ServFail => "server failure",
                ResponseCode::NXDomain => "name error",
                ResponseCode::NotImp => "not implemented",
                ResponseCode::Refused => "refused",
                _ => "unknown",
            },
        )),
        _ => None,
    }
}
