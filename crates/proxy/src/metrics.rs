//! Prometheus metrics named as Kong's prometheus plugin names them. Counters are atomics
//! kept per (service, route) name pair, created on a route's first request and carried
//! over configuration swaps; the hot path touches no lock after the first request of a
//! route in a configuration.

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

/// Kong's latency buckets (ms).
pub const BUCKETS: [u64; 17] = [
    1, 2, 5, 7, 10, 15, 20, 30, 50, 75, 100, 200, 500, 750, 1000, 3000, 6000,
];

/// A latency histogram (ms).
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; 18],
    sum: AtomicU64,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, ms: u64) {
        let i = BUCKETS
            .iter()
            .position(|b| ms <= *b)
            .unwrap_or(BUCKETS.len());
        self.buckets[i].fetch_add(1, Relaxed);
        self.sum.fetch_add(ms, Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cum = 0;
        for (i, b) in self.buckets.iter().enumerate() {
            cum += b.load(Relaxed);
            let le = BUCKETS
                .get(i)
                .map(|x| format!("{x:05}.0"))
                .unwrap_or_else(|| "+Inf".into());
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{le}\"}} {cum}");
        }
        let _ = writeln!(out, "{name}_count{{{labels}}} {cum}");
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}", self.sum.load(Relaxed));
    }
}

/// Status codes with their own counter slot; others go to a locked map.
const CODE_RANGES: [(u16, u16); 5] = [(100, 101), (200, 206), (300, 308), (400, 431), (500, 511)];
const SLOTS: usize = 2 + 7 + 9 + 32 + 12;

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
    from_service: Codes,
    from_kong: Codes,
    request_latency: Histogram,
    upstream_latency: Histogram,
    kong_latency: Histogram,
    ingress: AtomicU64,
    egress: AtomicU64,
}

impl RouteStats {
    /// Records a response: `proxied` when it came from the upstream.
    pub fn response(&self, code: u16, proxied: bool) {
        if proxied {
            self.from_service.inc(code)
        } else {
            self.from_kong.inc(code)
        }
    }
    /// Records latencies (ms); `upstream` only for proxied responses.
    pub fn latencies(&self, request: u64, kong: u64, upstream: Option<u64>) {
        self.request_latency.observe(request);
        self.kong_latency.observe(kong);
        if let Some(u) = upstream {
            self.upstream_latency.observe(u);
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

/// Node-wide metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Accepted connections.
    pub accepted: AtomicU64,
    /// Connections open now.
    pub active: AtomicI64,
    /// Connections handled to the end.
    pub handled: AtomicU64,
    /// Requests served (proxy listeners).
    pub requests: AtomicU64,
    /// Configuration swaps.
    pub config_swaps: AtomicU64,
    routes: Mutex<HashMap<(String, String), Arc<RouteStats>>>,
    /// Requests that matched no route.
    pub unmatched: Arc<RouteStats>,
}

impl Metrics {
    /// The counters of a (service, route) name pair, created on first use.
    pub fn route(&self, service: &str, route: &str) -> Arc<RouteStats> {
        let Ok(mut m) = self.routes.lock() else {
            return self.unmatched.clone();
        };
        m.entry((service.to_string(), route.to_string()))
            .or_insert_with(|| {
                Arc::new(RouteStats {
                    service: service.into(),
                    route: route.into(),
                    ..Default::default()
                })
            })
            .clone()
    }

    /// The Prometheus text exposition.
    pub fn render(&self, node_id: &str, config_hash: &str) -> String {
        let mut o = String::with_capacity(4096);
        o.push_str("# HELP kong_nginx_connections_total Number of connections by subsystem\n# TYPE kong_nginx_connections_total gauge\n");
        let active = self.active.load(Relaxed).max(0);
        for (state, v) in [
            ("accepted", self.accepted.load(Relaxed)),
            ("active", active as u64),
            ("handled", self.handled.load(Relaxed)),
            ("total", self.requests.load(Relaxed)),
        ] {
            let _ = writeln!(
                o,
                "kong_nginx_connections_total{{node_id=\"{node_id}\",subsystem=\"http\",state=\"{state}\"}} {v}"
            );
        }
        o.push_str("# HELP kong_nginx_requests_total Number of requests total\n# TYPE kong_nginx_requests_total gauge\n");
        let _ = writeln!(
            o,
            "kong_nginx_requests_total{{node_id=\"{node_id}\",subsystem=\"http\"}} {}",
            self.requests.load(Relaxed)
        );
        o.push_str("# HELP kong_data_plane_config_hash Config hash numeric value\n# TYPE kong_data_plane_config_hash gauge\n");
        let hv = u128::from_str_radix(config_hash, 16)
            .map(|v| v as f64)
            .unwrap_or(0.0);
        let _ = writeln!(
            o,
            "kong_data_plane_config_hash{{node_id=\"{node_id}\",hash=\"{config_hash}\"}} {hv}"
        );
        let _ = writeln!(
            o,
            "# HELP kong_data_plane_config_swaps_total Configurations applied\n# TYPE kong_data_plane_config_swaps_total counter\nkong_data_plane_config_swaps_total {}",
            self.config_swaps.load(Relaxed)
        );
        let mut all: Vec<Arc<RouteStats>> = self
            .routes
            .lock()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default();
        all.push(self.unmatched.clone());
        all.sort_by(|a, b| (&a.service, &a.route).cmp(&(&b.service, &b.route)));
        o.push_str("# HELP kong_http_requests_total HTTP status codes per consumer/service/route in Kong\n# TYPE kong_http_requests_total counter\n");
        for r in &all {
            let l = format!("service=\"{}\",route=\"{}\"", r.service, r.route);
            r.from_service.each(|c, n| {
                let _ = writeln!(o, "kong_http_requests_total{{{l},code=\"{c}\",source=\"service\",workspace=\"default\",consumer=\"\"}} {n}");
            });
            r.from_kong.each(|c, n| {
                let _ = writeln!(o, "kong_http_requests_total{{{l},code=\"{c}\",source=\"kong\",workspace=\"default\",consumer=\"\"}} {n}");
            });
        }
        for (name, help, pick) in [
            (
                "kong_request_latency_ms",
                "Total latency incurred during requests for each service/route in Kong",
                0,
            ),
            (
                "kong_upstream_latency_ms",
                "Latency added by upstream response for each service/route in Kong",
                1,
            ),
            (
                "kong_kong_latency_ms",
                "Latency added by Kong and enabled plugins for each service/route in Kong",
                2,
            ),
        ] {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} histogram");
            for r in &all {
                let h = match pick {
                    0 => &r.request_latency,
                    1 => &r.upstream_latency,
                    _ => &r.kong_latency,
                };
                if h.buckets.iter().all(|b| b.load(Relaxed) == 0) {
                    continue;
                }
                let l = format!(
                    "service=\"{}\",route=\"{}\",workspace=\"default\"",
                    r.service, r.route
                );
                h.render(&mut o, name, &l);
            }
        }
        o.push_str("# HELP kong_bandwidth_bytes Total bandwidth (ingress/egress) throughput in bytes\n# TYPE kong_bandwidth_bytes counter\n");
        for r in &all {
            for (dir, v) in [
                ("ingress", r.ingress.load(Relaxed)),
                ("egress", r.egress.load(Relaxed)),
            ] {
                if v > 0 {
                    let _ = writeln!(
                        o,
                        "kong_bandwidth_bytes{{service=\"{}\",route=\"{}\",direction=\"{dir}\",workspace=\"default\",consumer=\"\"}} {v}",
                        r.service, r.route
                    );
                }
            }
        }
        o
    }
}

/// Appends `kong_upstream_target_health`, as Kong's prometheus plugin writes it: for every
/// target address, one sample per state, 1 for the current state and 0 for the others.
pub fn render_target_health(o: &mut String, samples: &[silverback_balancer::TargetHealthSample]) {
    if samples.is_empty() {
        return;
    }
    o.push_str("# HELP kong_upstream_target_health Health status of targets of upstream. States = healthchecks_off|healthy|unhealthy|dns_error, value is 1 when state is populated.\n# TYPE kong_upstream_target_health gauge\n");
    for s in samples {
        for st in silverback_balancer::HealthStatus::ALL {
            let _ = writeln!(
                o,
                "kong_upstream_target_health{{upstream=\"{}\",target=\"{}\",address=\"{}\",state=\"{}\",subsystem=\"http\"}} {}",
                s.upstream,
                s.target,
                s.address,
                st.metric_state(),
                u8::from(st == s.state)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_round_trip() {
        for code in [100, 101, 200, 206, 300, 308, 400, 404, 431, 500, 511] {
            assert_eq!(slot_code(slot(code).unwrap()), code);
        }
        assert_eq!(slot(494), None);
        assert_eq!(slot(299), None);
    }

    #[test]
    fn renders_kong_names() {
        let m = Metrics::default();
        let r = m.route("svc", "rt");
        r.response(200, true);
        r.response(200, true);
        r.response(494, false);
        r.latencies(3, 1, Some(2));
        let t = m.render("n1", "0123456789abcdef0123456789abcdef");
        assert!(t.contains("kong_http_requests_total{service=\"svc\",route=\"rt\",code=\"200\",source=\"service\",workspace=\"default\",consumer=\"\"} 2"), "{t}");
        assert!(t.contains("code=\"494\",source=\"kong\""));
        assert!(t.contains("kong_request_latency_ms_bucket{service=\"svc\",route=\"rt\",workspace=\"default\",le=\"00005.0\"} 1"), "{t}");
        assert!(t.contains(
            "kong_upstream_latency_ms_count{service=\"svc\",route=\"rt\",workspace=\"default\"} 1"
        ));
        assert!(t.contains(
            "kong_data_plane_config_hash{node_id=\"n1\",hash=\"0123456789abcdef0123456789abcdef\"}"
        ));
    }
}
