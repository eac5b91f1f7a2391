//! Health state of one balancer address, and the counting rules shared by active probes and
//! passive reports (lua-resty-healthcheck's semantics):
//!
//! - a report is a success, an HTTP failure, a TCP failure or a timeout;
//! - a success resets the failure counters, a failure resets the success counter;
//! - `successes` consecutive successes make an unhealthy address healthy, and
//!   `http_failures` / `tcp_failures` / `timeouts` consecutive failures of that kind make a
//!   healthy one unhealthy; a limit of 0 turns that kind of report off entirely;
//! - a status in neither list counts for nothing.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use silverback_config::Healthchecks;

/// Bumped on every health transition of any address, so that balancers can refresh what they
/// derive from health (the healthy-weight threshold, parked least-connections entries)
/// without a callback.
pub(crate) static HEALTH_GENERATION: AtomicU64 = AtomicU64::new(0);

/// A set of HTTP statuses 0..1024.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct StatusSet([u64; 16]);

impl StatusSet {
    pub(crate) fn new(statuses: &[u16]) -> StatusSet {
        let mut s = StatusSet::default();
        for &st in statuses {
            if st < 1024 {
                s.0[usize::from(st / 64)] |= 1 << (st % 64);
            }
        }
        s
    }
    #[inline]
    pub(crate) fn contains(&self, st: u16) -> bool {
        st < 1024 && self.0[usize::from(st / 64)] & (1 << (st % 64)) != 0
    }
}

/// What one probe or one proxied try said about an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Report {
    Success,
    HttpFailure,
    TcpFailure,
    Timeout,
}

/// The limits of one check type (active or passive). 0 = that kind of report is ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Limits {
    pub successes: u8,
    pub http_failures: u8,
    pub tcp_failures: u8,
    pub timeouts: u8,
}

/// Passive (circuit-breaker) rules.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PassivePolicy {
    pub healthy_statuses: StatusSet,
    pub unhealthy_statuses: StatusSet,
    pub limits: Limits,
}

impl PassivePolicy {
    pub(crate) fn classify(&self, status: u16) -> Option<Report> {
        if self.unhealthy_statuses.contains(status) {
            Some(Report::HttpFailure)
        } else if self.healthy_statuses.contains(status) {
            Some(Report::Success)
        } else {
            None
        }
    }
}

/// Active probe kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeKind {
    /// HTTP/1.1 GET.
    Http,
    /// HTTP/1.1 GET over TLS.
    Https,
    /// TCP connect.
    Tcp,
    /// HTTP/2 GET over cleartext (prior knowledge).
    Grpc,
    /// HTTP/2 GET over TLS (ALPN h2).
    Grpcs,
}

/// Active probing rules.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ActivePolicy {
    pub kind: ProbeKind,
    pub timeout: Duration,
    pub concurrency: usize,
    pub http_path: String,
    pub https_sni: Option<String>,
    pub verify_certificate: bool,
    pub headers: Vec<(String, String)>,
    pub healthy_interval: Option<Duration>,
    pub unhealthy_interval: Option<Duration>,
    pub healthy_statuses: StatusSet,
    pub unhealthy_statuses: StatusSet,
    pub limits: Limits,
}

impl ActivePolicy {
    pub(crate) fn classify(&self, status: u16) -> Option<Report> {
        if self.healthy_statuses.contains(status) {
            Some(Report::Success)
        } else if self.unhealthy_statuses.contains(status) {
            Some(Report::HttpFailure)
        } else {
            None
        }
    }
    pub(crate) fn enabled(&self) -> bool {
        self.healthy_interval.is_some() || self.unhealthy_interval.is_some()
    }
}

/// The health rules of one upstream.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct HealthPolicy {
    pub active: ActivePolicy,
    pub passive: PassivePolicy,
    /// Minimum percentage of healthy weight; at or below it the whole balancer is unhealthy.
    pub threshold: f64,
    /// Whether any health checking is on (Kong's `is_upstream_using_healthcheck`); when
    /// off, addresses report `HEALTHCHECKS_OFF`.
    pub enabled: bool,
}

fn secs(s: f64) -> Option<Duration> {
    (s > 0.0 && s.is_finite()).then(|| Duration::from_secs_f64(s))
}

impl HealthPolicy {
    pub(crate) fn from_config(h: &Healthchecks) -> Result<HealthPolicy, String> {
        let a = &h.active;
        let kind = match a.kind.as_str() {
            "http" => ProbeKind::Http,
            "https" => ProbeKind::Https,
            "tcp" => ProbeKind::Tcp,
            "grpc" => ProbeKind::Grpc,
            "grpcs" => ProbeKind::Grpcs,
            other => return Err(format!("unknown active health check type '{other}'")),
        };
        let headers = a
            .headers
            .iter()
            .flatten()
            .flat_map(|(k, vs)| vs.iter().map(move |v| (k.clone(), v.clone())))
            .collect();
        let active = ActivePolicy {
            kind,
            timeout: secs(a.timeout).unwrap_or(Duration::from_secs(1)),
            concurrency: (a.concurrency as usize).max(1),
            http_path: if a.http_path.is_empty() {
                "/".into()
            } else {
                a.http_path.clone()
            },
            https_sni: a.https_sni.clone(),
            verify_certificate: a.https_verify_certificate,
            headers,
            healthy_interval: secs(a.healthy.interval),
            unhealthy_interval: secs(a.unhealthy.interval),
            healthy_statuses: StatusSet::new(&a.healthy.http_statuses),
            unhealthy_statuses: StatusSet::new(&a.unhealthy.http_statuses),
            limits: Limits {
                successes: a.healthy.successes,
                http_failures: a.unhealthy.http_failures,
                tcp_failures: a.unhealthy.tcp_failures,
                timeouts: a.unhealthy.timeouts,
            },
        };
        let p = &h.passive;
        let passive = PassivePolicy {
            healthy_statuses: StatusSet::new(&p.healthy.http_statuses),
            unhealthy_statuses: StatusSet::new(&p.unhealthy.http_statuses),
            limits: Limits {
                successes: p.healthy.successes,
                http_failures: p.unhealthy.http_failures,
                tcp_failures: p.unhealthy.tcp_failures,
                timeouts: p.unhealthy.timeouts,
            },
        };
        let enabled = active.enabled()
            || passive.limits.tcp_failures != 0
            || passive.limits.timeouts != 0
            || passive.limits.http_failures != 0;
        Ok(HealthPolicy {
            active,
            passive,
            threshold: h.threshold,
            enabled,
        })
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct Counters {
    successes: u8,
    http_failures: u8,
    tcp_failures: u8,
    timeouts: u8,
}

/// The health of one address. Shared (by `Arc`) between successive balancers of the same
/// upstream, so it survives configuration swaps and DNS refreshes.
#[derive(Debug)]
pub(crate) struct HealthState {
    healthy: AtomicBool,
    counters: Mutex<Counters>,
}

impl Default for HealthState {
    fn default() -> Self {
        HealthState {
            healthy: AtomicBool::new(true),
            counters: Mutex::new(Counters::default()),
        }
    }
}

impl HealthState {
    #[inline]
    pub(crate) fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Forces a state (admin API override). Resets the counters. Returns whether it changed.
    pub(crate) fn set(&self, healthy: bool) -> bool {
        let mut c = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        *c = Counters::default();
        let changed = self.healthy.swap(healthy, Ordering::Relaxed) != healthy;
        if changed {
            HEALTH_GENERATION.fetch_add(1, Ordering::Relaxed);
        }
        changed
    }

    /// Applies one report under `limits`. Returns `Some(new_health)` on a transition.
    pub(crate) fn record(&self, report: Report, limits: &Limits) -> Option<bool> {
        let limit = match report {
            Report::Success => limits.successes,
            Report::HttpFailure => limits.http_failures,
            Report::TcpFailure => limits.tcp_failures,
            Report::Timeout => limits.timeouts,
        };
        if limit == 0 {
            return None;
        }
        let mut c = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        let healthy = self.healthy.load(Ordering::Relaxed);
        let transition = match report {
            Report::Success => {
                c.http_failures = 0;
                c.tcp_failures = 0;
                c.timeouts = 0;
                if healthy {
                    false
                } else {
                    c.successes = c.successes.saturating_add(1);
                    c.successes >= limit
                }
            }
            failure => {
                c.successes = 0;
                if !healthy {
                    false
                } else {
                    let n = match failure {
                        Report::HttpFailure => &mut c.http_failures,
                        Report::TcpFailure => &mut c.tcp_failures,
                        _ => &mut c.timeouts,
                    };
                    *n = n.saturating_add(1);
                    *n >= limit
                }
            }
        };
        if transition {
            *c = Counters::default();
            self.healthy.store(!healthy, Ordering::Relaxed);
            HEALTH_GENERATION.fetch_add(1, Ordering::Relaxed);
            Some(!healthy)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(s: u8, h: u8, t: u8, to: u8) -> Limits {
        Limits {
            successes: s,
            http_failures: h,
            tcp_failures: t,
            timeouts: to,
        }
    }

    #[test]
    fn failures_then_successes() {
        let st = HealthState::default();
        let l = limits(2, 3, 1, 2);
        assert_eq!(st.record(Report::HttpFailure, &l), None);
        assert_eq!(st.record(Report::HttpFailure, &l), None);
        // A success in between resets the failure count.
        assert_eq!(st.record(Report::Success, &l), None);
        assert_eq!(st.record(Report::HttpFailure, &l), None);
        assert_eq!(st.record(Report::HttpFailure, &l), None);
        assert_eq!(st.record(Report::HttpFailure, &l), Some(false));
        assert!(!st.is_healthy());
        assert_eq!(st.record(Report::Success, &l), None);
        assert_eq!(st.record(Report::TcpFailure, &l), None);
        assert_eq!(st.record(Report::Success, &l), None);
        assert_eq!(st.record(Report::Success, &l), Some(true));
        assert!(st.is_healthy());
        assert_eq!(st.record(Report::TcpFailure, &l), Some(false));
    }

    #[test]
    fn zero_limit_is_off() {
        let st = HealthState::default();
        let l = limits(0, 0, 0, 0);
        for _ in 0..300 {
            assert_eq!(st.record(Report::Timeout, &l), None);
        }
        assert!(st.is_healthy());
    }

    #[test]
    fn status_sets() {
        let s = StatusSet::new(&[200, 302, 999]);
        assert!(s.contains(200) && s.contains(302) && s.contains(999));
        assert!(!s.contains(201) && !s.contains(1000));
    }
}
