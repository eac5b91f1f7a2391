//! Prometheus metrics named as Kong's prometheus plugin names them, as if one global
//! prometheus plugin were enabled with `status_code_metrics`, `latency_metrics`,
//! `bandwidth_metrics` and `upstream_health_metrics` on and `per_consumer` off (so
//! `consumer` is always ""). Counters are atomics kept per (service, route) name pair,
//! created on a route's first request and carried over configuration swaps (as Kong keeps a
//! route's series in its shared dictionary); the hot path touches no lock after the first
//! request of a route in a configuration.
//!
//! As Kong's exporter (3.6+) a request that matched no route (a 404 of the router, a head
//! refused before routing) is counted in `kong_nginx_requests_total` only: it has no
//! `kong_http_requests_total`, latency or bandwidth series.
//!
//! Kong's `kong_memory_*` families (Lua VM and shared dictionary bytes) have no equivalent
//! here and are left out, as are `kong_control_plane_reachable` and the control plane's
//! per-data-plane families. Metrics of the gateway's own are named `silverback_*`.

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Kong's `KONG_LATENCY_BUCKETS` (ms, Kong 3.9+): the buckets of `kong_kong_latency_ms`.
pub const KONG_LATENCY_BUCKETS: &[u64] = &[
    1, 2, 5, 7, 10, 15, 20, 30, 50, 75, 100, 200, 500, 750, 1000, 3000, 6000,
];

/// Kong's `UPSTREAM_LATENCY_BUCKETS` (ms): the buckets of `kong_upstream_latency_ms` and
/// `kong_request_latency_ms`.
pub const UPSTREAM_LATENCY_BUCKETS: &[u64] = &[
    25, 50, 80, 100, 250, 400, 700, 1000, 2000, 5000, 10000, 30000, 60000,
];

/// Bucket slots of a [`Histogram`]: the most bounds of a bucket set, and `+Inf`.
const HISTOGRAM_SLOTS: usize = 18;

/// A latency histogram (ms) over one bucket set (the bounds are given by its owner).
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; HISTOGRAM_SLOTS],
    sum: AtomicU64,
}

impl Histogram {
    /// Records one observation against `bounds` (at most 17).
    pub fn observe(&self, bounds: &[u64], ms: u64) {
        let i = bounds
            .iter()
            .position(|b| ms <= *b)
            .unwrap_or(bounds.len())
            .min(HISTOGRAM_SLOTS - 1);
        self.buckets[i].fetch_add(1, Relaxed);
        self.sum.fetch_add(ms, Relaxed);
    }

    /// Writes the series' buckets: the `le` values as Kong prints them (its bucket keys are
    /// zero-padded in its shared dictionary, `00005.0`, and turned back into numbers by
    /// `fix_histogram_bucket_labels` before output: `5`, `6000`, `+Inf`), and only those an
    /// observation fell in (Kong's `observe` increments the buckets at or above the value,
    /// and a key never incremented is not in its dictionary: no `0` bucket is printed).
    fn render_buckets(&self, out: &mut String, bounds: &[u64], name: &str, labels: &str) {
        let mut cum = 0;
        for (i, b) in self.buckets.iter().enumerate().take(bounds.len() + 1) {
            cum += b.load(Relaxed);
            if cum == 0 {
                continue;
            }
            match bounds.get(i) {
                Some(le) => {
                    let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{le}\"}} {cum}");
                }
                None => {
                    let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {cum}");
                }
            }
        }
    }

    /// The number of observations.
    fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Relaxed)).sum()
    }

    fn is_empty(&self) -> bool {
        self.buckets.iter().all(|b| b.load(Relaxed) == 0)
    }
}

/// A label value escaped as the Prometheus text format needs: `\` as `\\`, `"` as `\"` (as
/// Kong's `full_metric_name` escapes them) and a line feed as `\n` (which Kong leaves as is,
/// breaking its exposition; Kong's entity names cannot hold one).
pub fn escape_label(v: &str) -> std::borrow::Cow<'_, str> {
    if !v.contains(['\\', '"', '\n']) {
        return v.into();
    }
    let mut s = String::with_capacity(v.len() + 4);
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s.into()
}

/// A number as Lua's `tostring` prints it (LuaJIT's `%.14g`): what Kong's exporter writes
/// for a gauge's value, such as the configuration hash taken as a number.
pub fn lua_number(v: f64) -> String {
    if v == 0.0 {
        return "0".into();
    }
    if !v.is_finite() {
        return if v.is_nan() {
            "nan".into()
        } else if v > 0.0 {
            "inf".into()
        } else {
            "-inf".into()
        };
    }
    // 14 significant digits, in scientific form first: its exponent decides the form
    let sci = format!("{v:.13e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if (-4..14).contains(&exp) {
        let decimals = (13 - exp).max(0) as usize;
        let fixed = format!("{v:.decimals$}");
        return trim_fraction(&fixed).to_string();
    }
    let sign = if exp < 0 { '-' } else { '+' };
    format!("{}e{sign}{:02}", trim_fraction(mantissa), exp.abs())
}

/// `s` without the trailing zeros of its fraction (and without a bare point).
fn trim_fraction(s: &str) -> &str {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        s
    }
}

/// Status codes with their own counter slot (nginx's 494 and 499, a client gone, among
/// them); others go to a locked map.
const CODE_RANGES: [(u16, u16); 6] = [
    (100, 101),
    (200, 206),
    (300, 308),
    (400, 431),
    (494, 499),
    (500, 511),
];
const SLOTS: usize = 2 + 7 + 9 + 32 + 6 + 12;

fn slot(code: u16) -> Option<usize> {
    let mut base = 0;
    for (lo, hi) in CODE_RANGES {
        if (lo..=hi).contains(&code) {
            return Some(base + (code - lo) as usize);
        }
        base += (hi - lo + 1) as usize;
    }
    None
}

fn slot_code(mut i: usize) -> u16 {
    for (lo, hi) in CODE_RANGES {
        let n = (hi - lo + 1) as usize;
        if i < n {
            return lo + i as u16;
        }
        i -= n;
    }
    0
}

/// Counters by status code.
#[derive(Debug)]
struct Codes {
    slots: [AtomicU64; SLOTS],
    other: Mutex<HashMap<u16, u64>>,
}

impl Default for Codes {
    fn default() -> Self {
        Codes {
            slots: std::array::from_fn(|_| AtomicU64::new(0)),
            other: Mutex::new(HashMap::new()),
        }
    }
}

impl Codes {
    fn inc(&self, code: u16) {
        match slot(code) {
            Some(i) => {
                self.slots[i].fetch_add(1, Relaxed);
            }
            None => {
                if let Ok(mut m) = self.other.lock() {
                    *m.entry(code).or_default() += 1;
                }
            }
        }
    }
    fn each(&self, mut f: impl FnMut(u16, u64)) {
        for (i, c) in self.slots.iter().enumerate() {
            let n = c.load(Relaxed);
            if n > 0 {
                f(slot_code(i), n);
            }
        }
        if let Ok(m) = self.other.lock() {
            for (c, n) in m.iter() {
                f(*c, *n);
            }
        }
    }
}

/// Counters of one (service, route) pair.
#[derive(Debug, Default)]
pub struct RouteStats {
    service: String,
    route: String,
    /// `service="…",route="…"`, the values escaped ([`escape_label`]).
    labels: String,
    from_service: Codes,
    from_kong: Codes,
    request_latency: Histogram,
    upstream_latency: Histogram,
    kong_latency: Histogram,
    ingress: AtomicU64,
    egress: AtomicU64,
}

impl RouteStats {
    /// The counters of the route `route` of the service `service` (the names as Kong's
    /// exporter takes them: the service's name or host, the route's name or id).
    pub fn new(service: &str, route: &str) -> RouteStats {
        RouteStats {
            service: service.into(),
            route: route.into(),
            labels: format!(
                "service=\"{}\",route=\"{}\"",
                escape_label(service),
                escape_label(route)
            ),
            ..Default::default()
        }
    }
    /// Records a response: `proxied` when Kong's `kong.response.get_source()` would say
    /// `service` (the request went past the access phase and no error of Kong's answered).
    pub fn response(&self, code: u16, proxied: bool) {
        if proxied {
            self.from_service.inc(code)
        } else {
            self.from_kong.inc(code)
        }
    }
    /// Records the latencies of a request answered `request` ms after it began, with the
    /// [`Latencies`] fixed before its answer.
    pub fn answered(&self, request: u64, l: Latencies) {
        self.latencies(request, l.kong.unwrap_or(request), l.upstream);
    }
    /// Records latencies (ms): Kong's `request` (to the answer's last byte), `kong` and,
    /// for requests that went past the access phase, `upstream` ([`Latencies`]).
    pub fn latencies(&self, request: u64, kong: u64, upstream: Option<u64>) {
        self.request_latency
            .observe(UPSTREAM_LATENCY_BUCKETS, request);
        self.kong_latency.observe(KONG_LATENCY_BUCKETS, kong);
        if let Some(u) = upstream {
            self.upstream_latency.observe(UPSTREAM_LATENCY_BUCKETS, u);
        }
    }
    /// Records bytes received from the client.
    pub fn ingress(&self, n: u64) {
        self.ingress.fetch_add(n, Relaxed);
    }
    /// Records bytes sent to the client.
    pub fn egress(&self, n: u64) {
        self.egress.fetch_add(n, Relaxed);
    }
}

/// The latencies of Kong 3.7+'s log serializer that are fixed before the answer's end.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Latencies {
    /// `latencies.kong` (ms): Kong's proxy latency (`KONG_PROXY_LATENCY`, from the
    /// request's start to the end of the balancer phase of its last try) for a request past
    /// the access phase; `None` for Kong's own answer, whose `KONG_RESPONSE_LATENCY` is the
    /// request's time (the upstream body's streaming is `latencies.receive`, not counted).
    pub kong: Option<u64>,
    /// `latencies.proxy` (ms): Kong's waiting time (`KONG_WAITING_TIME`), from the end of
    /// the balancer phase to the answer's head (the upstream's, or an error's after the
    /// access phase, or the log of a request whose client left); `None` when the request
    /// never went past the access phase (Kong's -1, not observed).
    pub upstream: Option<u64>,
}

/// What Kong's log phase records of a routed request whose answer body is streamed: the
/// latencies, which end with the answer (nginx's `request_time` runs to its last byte), and
/// the body bytes sent. Kept by the streamed body ([`crate::body::ProxyBody::attach_log`])
/// and recorded when it is dropped: at its end, or when the client goes away. (A complete
/// body's request is recorded at once, [`RouteStats::answered`]; the answer's head bytes
/// are counted by its writer.)
#[derive(Debug)]
pub struct Log {
    stats: Arc<RouteStats>,
    /// When the request began.
    start: Instant,
    /// The latencies fixed before the answer's end.
    latencies: Latencies,
    /// Body bytes sent.
    egress: u64,
    /// A proxied answer's status counted with the log (an upgraded request's 101, counted
    /// when its tunnel ends).
    status: Option<u16>,
    /// The request's access log line, written with the body bytes sent.
    access: Option<Box<crate::access_log::Entry>>,
}

impl Log {
    /// The log of a request on `stats` begun at `start`, with the `latencies` fixed before
    /// its answer's end.
    pub fn new(stats: Arc<RouteStats>, start: Instant, latencies: Latencies) -> Log {
        Log {
            stats,
            start,
            latencies,
            egress: 0,
            status: None,
            access: None,
        }
    }
    /// Writes the request's access log line (if any) when the log is recorded.
    pub fn with_access(mut self, access: Option<Box<crate::access_log::Entry>>) -> Log {
        self.access = access;
        self
    }
    /// Counts the upstream's answer `status` with the log rather than at once.
    pub fn with_status(mut self, status: u16) -> Log {
        self.status = Some(status);
        self
    }
    /// `n` more bytes sent to the client.
    pub fn egress(&mut self, n: u64) {
        self.egress += n;
    }
}

impl Drop for Log {
    fn drop(&mut self) {
        if let Some(status) = self.status {
            self.stats.response(status, true);
        }
        self.stats
            .answered(self.start.elapsed().as_millis() as u64, self.latencies);
        if self.egress > 0 {
            self.stats.egress(self.egress);
        }
        if let Some(e) = self.access.take() {
            e.finish(self.egress);
        }
    }
}

/// The connection and request counters, as nginx's `stub_status` (Kong's
/// `kong.nginx.get_statistics()`) reports them: `/status`'s `server` and
/// `kong_nginx_connections_total` / `kong_nginx_requests_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Connections {
    /// Connections accepted, on every listener.
    pub accepted: u64,
    /// Connections handled: those accepted but the ones dropped for want of room under
    /// `worker_connections`, as nginx counts them.
    pub handled: u64,
    /// Connections open now.
    pub active: u64,
    /// Connections reading a request head: not told apart here, reported as 0.
    pub reading: u64,
    /// Connections serving a request: every open connection (the gateway does not tell
    /// idle keep-alive connections from busy ones).
    pub writing: u64,
    /// Idle keep-alive connections: not told apart here, reported as 0.
    pub waiting: u64,
    /// Requests, on every listener (admin and status ones included, as nginx counts them).
    pub requests: u64,
}

/// Node-wide metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Accepted connections.
    pub accepted: AtomicU64,
    /// Connections open now.
    pub active: AtomicI64,
    /// Connections closed at once for want of room under `worker_connections`.
    pub dropped: AtomicU64,
    /// Requests read (every listener, refused heads included).
    pub requests: AtomicU64,
    /// Configuration swaps.
    pub config_swaps: AtomicU64,
    routes: Mutex<HashMap<(String, String), Arc<RouteStats>>>,
}

/// What the node reports about itself beside the counters.
#[derive(Debug, Clone, Copy)]
pub struct Node<'a> {
    /// The node's id.
    pub node_id: &'a str,
    /// The Kong version the gateway reports (`GET /`'s `version`).
    pub version: &'a str,
    /// The configuration hash (32 hex digits).
    pub config_hash: &'a str,
    /// Background jobs running now and pending ([`silverback_timers::Registry::counts`]).
    pub timers: (u64, u64),
    /// The upstreams' targets and their health (`kong_upstream_target_health`).
    pub target_health: &'a [silverback_balancer::TargetHealthSample],
}

impl Metrics {
    /// The counters of a (service, route) name pair, created on first use.
    pub fn route(&self, service: &str, route: &str) -> Arc<RouteStats> {
        let Ok(mut m) = self.routes.lock() else {
            // (a panic while the map was held: counted apart, not shown)
            return Arc::new(RouteStats::new(service, route));
        };
        m.entry((service.to_string(), route.to_string()))
            .or_insert_with(|| Arc::new(RouteStats::new(service, route)))
            .clone()
    }

    /// The connection and request counters.
    pub fn connections(&self) -> Connections {
        let accepted = self.accepted.load(Relaxed);
        let active = self.active.load(Relaxed).max(0) as u64;
        Connections {
            accepted,
            handled: accepted.saturating_sub(self.dropped.load(Relaxed)),
            active,
            reading: 0,
            writing: active,
            waiting: 0,
            requests: self.requests.load(Relaxed),
        }
    }

    /// The Prometheus text exposition, the families in the order Kong's exporter sorts
    /// them (by name), the gateway's own (`silverback_*`) last.
    pub fn render(&self, node: Node<'_>) -> String {
        let mut o = String::with_capacity(4096);
        let node_id = escape_label(node.node_id);
        let mut all: Vec<Arc<RouteStats>> = self
            .routes
            .lock()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default();
        all.sort_by(|a, b| (&a.service, &a.route).cmp(&(&b.service, &b.route)));

        let family = family_start(
            &mut o,
            "# HELP kong_bandwidth_bytes Total bandwidth (ingress/egress) throughput in bytes\n# TYPE kong_bandwidth_bytes counter\n",
        );
        for r in &all {
            for (dir, v) in [
                ("egress", r.egress.load(Relaxed)),
                ("ingress", r.ingress.load(Relaxed)),
            ] {
                if v > 0 {
                    let _ = writeln!(
                        o,
                        "kong_bandwidth_bytes{{{},direction=\"{dir}\",workspace=\"default\",consumer=\"\"}} {v}",
                        r.labels
                    );
                }
            }
        }
        family_end(&mut o, family);
        // Kong's control plane reports each data plane's hash with `node_id`, `hostname`
        // and `ip`; a node reporting itself has only its id to give (the hash itself as a
        // label would make a new series at every load).
        let hash = u128::from_str_radix(node.config_hash, 16)
            .map(|v| v as f64)
            .unwrap_or(0.0);
        let _ = writeln!(
            o,
            "# HELP kong_data_plane_config_hash Config hash numeric value of the data plane\n# TYPE kong_data_plane_config_hash gauge\nkong_data_plane_config_hash{{node_id=\"{node_id}\"}} {}",
            lua_number(hash)
        );
        // DB-less: the declarative configuration is always there (Kong's `off` connector
        // connects without fail).
        o.push_str("# HELP kong_datastore_reachable Datastore reachable from Kong, 0 is unreachable\n# TYPE kong_datastore_reachable gauge\nkong_datastore_reachable 1\n");
        let family = family_start(
            &mut o,
            "# HELP kong_http_requests_total HTTP status codes per consumer/service/route in Kong\n# TYPE kong_http_requests_total counter\n",
        );
        let mut codes: Vec<(u16, &str, u64)> = Vec::new();
        for r in &all {
            codes.clear();
            r.from_service.each(|c, n| codes.push((c, "service", n)));
            r.from_kong.each(|c, n| codes.push((c, "kong", n)));
            codes.sort_unstable();
            for (c, source, n) in &codes {
                let _ = writeln!(
                    o,
                    "kong_http_requests_total{{{},code=\"{c}\",source=\"{source}\",workspace=\"default\",consumer=\"\"}} {n}",
                    r.labels
                );
            }
        }
        family_end(&mut o, family);
        let histogram = |o: &mut String,
                         name: &str,
                         help: &str,
                         bounds: &[u64],
                         pick: fn(&RouteStats) -> &Histogram| {
            let family = family_start(
                o,
                &format!("# HELP {name} {help}\n# TYPE {name} histogram\n"),
            );
            // Kong prints its keys sorted: every series' `_bucket` lines, then every
            // `_count`, then every `_sum`
            let series: Vec<(&Histogram, String)> = all
                .iter()
                .map(|r| (pick(r), r))
                .filter(|(h, _)| !h.is_empty())
                .map(|(h, r)| (h, format!("{},workspace=\"default\"", r.labels)))
                .collect();
            for (h, l) in &series {
                h.render_buckets(o, bounds, name, l);
            }
            for (h, l) in &series {
                let _ = writeln!(o, "{name}_count{{{l}}} {}", h.count());
            }
            for (h, l) in &series {
                let _ = writeln!(o, "{name}_sum{{{l}}} {}", h.sum.load(Relaxed));
            }
            family_end(o, family);
        };
        histogram(
            &mut o,
            "kong_kong_latency_ms",
            "Latency added by Kong and enabled plugins for each service/route in Kong",
            KONG_LATENCY_BUCKETS,
            |r| &r.kong_latency,
        );
        let c = self.connections();
        o.push_str("# HELP kong_nginx_connections_total Number of connections by subsystem\n# TYPE kong_nginx_connections_total gauge\n");
        for (state, v) in [
            ("accepted", c.accepted),
            ("active", c.active),
            ("handled", c.handled),
            ("reading", c.reading),
            ("total", c.requests),
            ("waiting", c.waiting),
            ("writing", c.writing),
        ] {
            let _ = writeln!(
                o,
                "kong_nginx_connections_total{{node_id=\"{node_id}\",subsystem=\"http\",state=\"{state}\"}} {v}"
            );
        }
        // (the errors of Kong's metrics library; the gateway's counters cannot fail)
        o.push_str("# HELP kong_nginx_metric_errors_total Number of nginx-lua-prometheus errors\n# TYPE kong_nginx_metric_errors_total counter\nkong_nginx_metric_errors_total 0\n");
        let _ = writeln!(
            o,
            "# HELP kong_nginx_requests_total Number of requests total\n# TYPE kong_nginx_requests_total gauge\nkong_nginx_requests_total{{node_id=\"{node_id}\",subsystem=\"http\"}} {}",
            c.requests
        );
        let (running, pending) = node.timers;
        let _ = writeln!(
            o,
            "# HELP kong_nginx_timers Number of nginx timers\n# TYPE kong_nginx_timers gauge\nkong_nginx_timers{{state=\"pending\"}} {pending}\nkong_nginx_timers{{state=\"running\"}} {running}"
        );
        let _ = writeln!(
            o,
            "# HELP kong_node_info Kong Node metadata information\n# TYPE kong_node_info gauge\nkong_node_info{{node_id=\"{node_id}\",version=\"{}\"}} 1",
            escape_label(node.version)
        );
        histogram(
            &mut o,
            "kong_request_latency_ms",
            "Total latency incurred during requests for each service/route in Kong",
            UPSTREAM_LATENCY_BUCKETS,
            |r| &r.request_latency,
        );
        histogram(
            &mut o,
            "kong_upstream_latency_ms",
            "Latency added by upstream response for each service/route in Kong",
            UPSTREAM_LATENCY_BUCKETS,
            |r| &r.upstream_latency,
        );
        render_target_health(&mut o, node.target_health);
        let _ = writeln!(
            o,
            "# HELP silverback_config_swaps_total Configurations applied\n# TYPE silverback_config_swaps_total counter\nsilverback_config_swaps_total {}",
            self.config_swaps.load(Relaxed)
        );
        o
    }
}

/// Writes a family's `# HELP` and `# TYPE` lines; returns where they start and end, for
/// [`family_end`].
fn family_start(o: &mut String, header: &str) -> (usize, usize) {
    let start = o.len();
    o.push_str(header);
    (start, o.len())
}

/// Takes back a family's `# HELP` and `# TYPE` lines when no sample followed them: Kong's
/// exporter (nginx-lua-prometheus) writes them with a family's first sample, so a family
/// without samples does not appear.
fn family_end(o: &mut String, (start, header_end): (usize, usize)) {
    if o.len() == header_end {
        o.truncate(start);
    }
}

/// Appends `kong_upstream_target_health`, as Kong's prometheus plugin writes it: for every
/// target address, one sample per state, 1 for the current state and 0 for the others.
/// `kong_upstream_target_health`: a sample per target address and state, in Kong's sorted
/// key order (by upstream, target, address, then state: `dns_error`, `healthchecks_off`,
/// `healthy`, `unhealthy`).
fn render_target_health(o: &mut String, samples: &[silverback_balancer::TargetHealthSample]) {
    if samples.is_empty() {
        return;
    }
    o.push_str("# HELP kong_upstream_target_health Health status of targets of upstream. States = healthchecks_off|healthy|unhealthy|dns_error, value is 1 when state is populated.\n# TYPE kong_upstream_target_health gauge\n");
    let mut lines: Vec<String> = Vec::with_capacity(samples.len() * 4);
    for s in samples {
        for st in silverback_balancer::HealthStatus::ALL {
            lines.push(format!(
                "kong_upstream_target_health{{upstream=\"{}\",target=\"{}\",address=\"{}\",state=\"{}\",subsystem=\"http\"}} {}\n",
                escape_label(&s.upstream),
                escape_label(&s.target),
                escape_label(&s.address),
                st.metric_state(),
                u8::from(st == s.state)
            ));
        }
    }
    lines.sort_unstable();
    for l in lines {
        o.push_str(&l);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NODE: Node<'static> = Node {
        node_id: "n1",
        version: "3.9.1",
        config_hash: "0123456789abcdef0123456789abcdef",
        timers: (2, 0),
        target_health: &[],
    };

    #[test]
    fn slots_round_trip() {
        for code in [
            100, 101, 200, 206, 300, 308, 400, 404, 431, 494, 499, 500, 511,
        ] {
            assert_eq!(slot_code(slot(code).unwrap()), code);
        }
        assert_eq!(slot(493), None);
        assert_eq!(slot(299), None);
        assert_eq!(slot(520), None);
    }

    #[test]
    fn renders_kong_names() {
        let m = Metrics::default();
        let r = m.route("svc", "rt");
        r.response(200, true);
        r.response(200, true);
        r.response(494, false);
        r.latencies(3, 1, Some(2));
        let t = m.render(NODE);
        assert!(t.contains("kong_http_requests_total{service=\"svc\",route=\"rt\",code=\"200\",source=\"service\",workspace=\"default\",consumer=\"\"} 2"), "{t}");
        assert!(t.contains("code=\"494\",source=\"kong\""));
        assert!(t.contains(
            "kong_upstream_latency_ms_count{service=\"svc\",route=\"rt\",workspace=\"default\"} 1"
        ));
        assert!(
            t.contains("kong_data_plane_config_hash{node_id=\"n1\"} 1.5123660752042e+36\n"),
            "{t}"
        );
        assert!(!t.contains("hash=\""), "{t}");
        assert!(t.contains("\nsilverback_config_swaps_total 0\n"), "{t}");
        assert!(!t.contains("kong_data_plane_config_swaps_total"), "{t}");
    }

    /// A family without samples is not written at all (Kong's exporter writes `# HELP` and
    /// `# TYPE` with a family's first sample).
    #[test]
    fn families_without_samples_are_left_out() {
        let m = Metrics::default();
        let t = m.render(NODE);
        for name in [
            "kong_bandwidth_bytes",
            "kong_http_requests_total",
            "kong_kong_latency_ms",
            "kong_request_latency_ms",
            "kong_upstream_latency_ms",
        ] {
            assert!(!t.contains(name), "{name}: {t}");
        }
        assert!(
            t.contains("# TYPE kong_nginx_requests_total gauge\n"),
            "{t}"
        );
        // a route with requests but no upstream latency (answered by the gateway)
        let r = m.route("svc", "rt");
        r.response(404, false);
        r.latencies(1, 1, None);
        let t = m.render(NODE);
        for name in [
            "kong_http_requests_total",
            "kong_kong_latency_ms",
            "kong_request_latency_ms",
        ] {
            assert!(t.contains(&format!("# TYPE {name} ")), "{name}: {t}");
        }
        assert!(!t.contains("kong_upstream_latency_ms"), "{t}");
        assert!(!t.contains("kong_bandwidth_bytes"), "{t}");
    }

    /// Each histogram has Kong's buckets for it, with `le` as Kong prints it; a bucket no
    /// observation fell in is not printed, and a family's `_bucket` lines come before its
    /// `_count` lines, then its `_sum` lines (Kong's sorted keys).
    #[test]
    fn histograms_use_kongs_buckets_and_le_values() {
        let m = Metrics::default();
        m.route("svc", "rt").latencies(3, 1, Some(3));
        let t = m.render(NODE);
        let les = |name: &str| -> Vec<String> {
            t.lines()
                .filter(|l| l.starts_with(&format!("{name}_bucket{{")))
                .map(|l| {
                    let at = l.find("le=\"").unwrap() + 4;
                    l[at..].split('"').next().unwrap().to_string()
                })
                .collect()
        };
        let kong: Vec<String> = [
            "1", "2", "5", "7", "10", "15", "20", "30", "50", "75", "100", "200", "500", "750",
            "1000", "3000", "6000", "+Inf",
        ]
        .map(String::from)
        .to_vec();
        let upstream: Vec<String> = [
            "25", "50", "80", "100", "250", "400", "700", "1000", "2000", "5000", "10000", "30000",
            "60000", "+Inf",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(les("kong_kong_latency_ms"), kong);
        assert_eq!(les("kong_upstream_latency_ms"), upstream);
        assert_eq!(les("kong_request_latency_ms"), upstream);
        assert!(t.contains("kong_kong_latency_ms_bucket{service=\"svc\",route=\"rt\",workspace=\"default\",le=\"1\"} 1\n"), "{t}");
        assert!(t.contains("kong_kong_latency_ms_bucket{service=\"svc\",route=\"rt\",workspace=\"default\",le=\"5\"} 1\n"), "{t}");
        assert!(t.contains("kong_request_latency_ms_bucket{service=\"svc\",route=\"rt\",workspace=\"default\",le=\"25\"} 1\n"), "{t}");
        assert!(t.contains("kong_request_latency_ms_bucket{service=\"svc\",route=\"rt\",workspace=\"default\",le=\"+Inf\"} 1\n"), "{t}");
        assert!(t.contains("kong_request_latency_ms_sum{service=\"svc\",route=\"rt\",workspace=\"default\"} 3\n"), "{t}");
        assert!(!t.contains("00005.0"), "{t}");
        // past the last bound: +Inf only
        m.route("svc", "rt").latencies(70_000, 7_000, None);
        let t = m.render(NODE);
        assert!(t.contains("kong_request_latency_ms_bucket{service=\"svc\",route=\"rt\",workspace=\"default\",le=\"60000\"} 1\n"), "{t}");
        assert!(t.contains("kong_request_latency_ms_bucket{service=\"svc\",route=\"rt\",workspace=\"default\",le=\"+Inf\"} 2\n"), "{t}");
        assert!(t.contains("kong_kong_latency_ms_bucket{service=\"svc\",route=\"rt\",workspace=\"default\",le=\"6000\"} 1\n"), "{t}");
        // a series whose only observation is above the first bounds has no lines for them
        m.route("svc", "rt2").latencies(3, 3, None);
        let t = m.render(NODE);
        let rt2 =
            "kong_kong_latency_ms_bucket{service=\"svc\",route=\"rt2\",workspace=\"default\",le=";
        assert!(!t.contains(&format!("{rt2}\"1\"}}")), "{t}");
        assert!(!t.contains(&format!("{rt2}\"2\"}}")), "{t}");
        assert!(t.contains(&format!("{rt2}\"5\"}} 1\n")), "{t}");
        // every bucket line of the family, then every count, then every sum
        let kinds: Vec<&str> = t
            .lines()
            .filter(|l| l.starts_with("kong_kong_latency_ms_"))
            .map(|l| l.split('{').next().unwrap_or(""))
            .collect();
        let mut sorted = kinds.clone();
        sorted.sort_unstable();
        assert_eq!(kinds, sorted, "{t}");
        assert_eq!(kinds.iter().filter(|k| k.ends_with("_count")).count(), 2);
    }

    /// Target health in Kong's sorted-key order (upstream, target, address, state), its
    /// family between `kong_upstream_latency_ms` and the gateway's own.
    #[test]
    fn target_health_in_kongs_order() {
        use silverback_balancer::{HealthStatus, TargetHealthSample};
        let m = Metrics::default();
        m.route("svc", "rt").latencies(3, 1, Some(3));
        let sample = |upstream: &str, target: &str, state| TargetHealthSample {
            upstream: upstream.into(),
            target: target.into(),
            address: target.into(),
            state,
        };
        let samples = [
            sample("up", "b.test:80", HealthStatus::Healthy),
            sample("up", "a.test:80", HealthStatus::Unhealthy),
            sample("a-up", "c.test:80", HealthStatus::HealthchecksOff),
        ];
        let t = m.render(Node {
            target_health: &samples,
            ..NODE
        });
        let lines: Vec<&str> = t
            .lines()
            .filter(|l| l.starts_with("kong_upstream_target_health{"))
            .collect();
        assert_eq!(lines.len(), 12, "{t}");
        let mut sorted = lines.clone();
        sorted.sort_unstable();
        assert_eq!(lines, sorted);
        assert!(lines[0].starts_with("kong_upstream_target_health{upstream=\"a-up\",target=\"c.test:80\",address=\"c.test:80\",state=\"dns_error\""), "{t}");
        assert!(
            lines[1].contains("state=\"healthchecks_off\",subsystem=\"http\"} 1"),
            "{t}"
        );
        let at = |needle: &str| t.find(needle).unwrap_or_else(|| panic!("{needle} in {t}"));
        assert!(at("# TYPE kong_upstream_latency_ms") < at("# TYPE kong_upstream_target_health"));
        assert!(
            at("# TYPE kong_upstream_target_health") < at("# TYPE silverback_config_swaps_total")
        );
    }

    /// The node-level families Kong's exporter always writes.
    #[test]
    fn node_families() {
        let m = Metrics::default();
        m.accepted.store(5, Relaxed);
        m.active.store(2, Relaxed);
        m.requests.store(9, Relaxed);
        let t = m.render(NODE);
        for line in [
            "# HELP kong_node_info Kong Node metadata information\n# TYPE kong_node_info gauge\nkong_node_info{node_id=\"n1\",version=\"3.9.1\"} 1\n",
            "# HELP kong_datastore_reachable Datastore reachable from Kong, 0 is unreachable\n# TYPE kong_datastore_reachable gauge\nkong_datastore_reachable 1\n",
            "# HELP kong_nginx_timers Number of nginx timers\n# TYPE kong_nginx_timers gauge\nkong_nginx_timers{state=\"pending\"} 0\nkong_nginx_timers{state=\"running\"} 2\n",
            "# HELP kong_nginx_metric_errors_total Number of nginx-lua-prometheus errors\n# TYPE kong_nginx_metric_errors_total counter\nkong_nginx_metric_errors_total 0\n",
            "kong_nginx_connections_total{node_id=\"n1\",subsystem=\"http\",state=\"accepted\"} 5\n",
            "kong_nginx_connections_total{node_id=\"n1\",subsystem=\"http\",state=\"handled\"} 5\n",
            "kong_nginx_connections_total{node_id=\"n1\",subsystem=\"http\",state=\"active\"} 2\n",
            "kong_nginx_connections_total{node_id=\"n1\",subsystem=\"http\",state=\"reading\"} 0\n",
            "kong_nginx_connections_total{node_id=\"n1\",subsystem=\"http\",state=\"writing\"} 2\n",
            "kong_nginx_connections_total{node_id=\"n1\",subsystem=\"http\",state=\"waiting\"} 0\n",
            "kong_nginx_connections_total{node_id=\"n1\",subsystem=\"http\",state=\"total\"} 9\n",
            "kong_nginx_requests_total{node_id=\"n1\",subsystem=\"http\"} 9\n",
        ] {
            assert!(t.contains(line), "{line} in {t}");
        }
        assert!(!t.contains("kong_memory_"), "{t}");
    }

    #[test]
    fn label_values_are_escaped() {
        let m = Metrics::default();
        m.route("a\\b", "say \"hi\"\nthere").response(200, true);
        let t = m.render(NODE);
        assert!(
            t.contains(
                r#"kong_http_requests_total{service="a\\b",route="say \"hi\"\nthere",code="200""#
            ),
            "{t}"
        );
        assert_eq!(escape_label("plain"), "plain");
    }

    #[test]
    fn numbers_as_lua_prints_them() {
        assert_eq!(lua_number(0.0), "0");
        assert_eq!(lua_number(5.0), "5");
        assert_eq!(lua_number(1.5), "1.5");
        assert_eq!(lua_number(12345678901234.0), "12345678901234");
        assert_eq!(lua_number(123456789012346.0), "1.2345678901235e+14");
        assert_eq!(lua_number(u128::MAX as f64), "3.4028236692094e+38");
        assert_eq!(lua_number(0.00001), "1e-05");
    }
}
