//! Health reports in the shapes of Kong's admin API: `GET /upstreams/{u}/health`
//! ([`TargetHealth`] list), `?balancer_health=1` ([`BalancerHealth`]), and the
//! `kong_upstream_target_health` metric ([`TargetHealthSample`]).

use serde::Serialize;
use uuid::Uuid;

/// Kong's health state names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum HealthStatus {
    /// Taking traffic.
    Healthy,
    /// Out of rotation until checks bring it back.
    Unhealthy,
    /// The target's name resolved to no address.
    DnsError,
    /// The upstream has no health checks.
    HealthchecksOff,
}

impl HealthStatus {
    /// `HEALTHY`, `UNHEALTHY`, `DNS_ERROR` or `HEALTHCHECKS_OFF`.
    pub fn as_str(self) -> &'static str {
        match self {
            HealthStatus::Healthy => "HEALTHY",
            HealthStatus::Unhealthy => "UNHEALTHY",
            HealthStatus::DnsError => "DNS_ERROR",
            HealthStatus::HealthchecksOff => "HEALTHCHECKS_OFF",
        }
    }

    /// The lowercase state label of `kong_upstream_target_health`.
    pub fn metric_state(self) -> &'static str {
        match self {
            HealthStatus::Healthy => "healthy",
            HealthStatus::Unhealthy => "unhealthy",
            HealthStatus::DnsError => "dns_error",
            HealthStatus::HealthchecksOff => "healthchecks_off",
        }
    }

    /// Every state, in the order the metric lists them.
    pub const ALL: [HealthStatus; 4] = [
        HealthStatus::Healthy,
        HealthStatus::Unhealthy,
        HealthStatus::DnsError,
        HealthStatus::HealthchecksOff,
    ];
}

/// Weight totals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct WeightSummary {
    /// Sum of the addresses' weights.
    pub total: u64,
    /// Weight of unhealthy addresses.
    pub unavailable: u64,
    /// `total - unavailable`.
    pub available: u64,
}

/// One resolved address of a target, in `GET /upstreams/{u}/health` (Kong's
/// `get_upstream_health`: the address's `healthy` turned into `health`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AddressHealth {
    /// The IP (an IPv6 one in brackets, as Kong keeps it).
    pub ip: String,
    /// The port.
    pub port: u16,
    /// The weight.
    pub weight: u32,
    /// `HEALTHY`, `UNHEALTHY` or `HEALTHCHECKS_OFF`.
    pub health: HealthStatus,
}

/// The balancer's view of one target (Kong's `getTargetStatus`, the `data` of a target in
/// `/health`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TargetDetails {
    /// The target's host (an IPv6 address in brackets, as in the target string).
    pub host: String,
    /// The target's port.
    pub port: u16,
    /// Where the addresses came from (Kong's `get_dns_source`): the record type (`"A"`,
    /// `"SRV"`; `"A"` or `"AAAA"` for an IP target), the DNS client's error when the last
    /// lookup failed without an earlier answer, `"unknown"` before the first lookup.
    pub dns: String,
    /// The configured weight.
    #[serde(rename = "nodeWeight")]
    pub node_weight: u32,
    /// Weight totals over the addresses.
    pub weight: WeightSummary,
    /// The addresses.
    pub addresses: Vec<AddressHealth>,
}

/// The upstream reference of a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct UpstreamRef {
    /// The upstream's id.
    pub id: Uuid,
}

/// One entry of `GET /upstreams/{u}/health` `data`: the target entity plus `health` and
/// `data`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TargetHealth {
    /// The target's id.
    pub id: Uuid,
    /// `host:port`.
    pub target: String,
    /// The configured weight.
    pub weight: u32,
    /// Tags (`null` when none, as Kong prints).
    pub tags: Option<Vec<String>>,
    /// Creation time (ms, float), when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_at: Option<f64>,
    /// Update time (ms, float), when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<f64>,
    /// The upstream.
    pub upstream: UpstreamRef,
    /// HEALTHY if any address is healthy, else UNHEALTHY if any is unhealthy, else
    /// HEALTHCHECKS_OFF; DNS_ERROR when the target has no address.
    pub health: HealthStatus,
    /// The balancer's details.
    pub data: TargetDetails,
}

/// One address in [`BalancerHost`]: Kong's `getTargetStatus` address as the balancer's
/// status gives it, with `healthy` (the address is available), not `health`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BalancerAddress {
    /// The IP (an IPv6 one in brackets).
    pub ip: String,
    /// The port.
    pub port: u16,
    /// The weight.
    pub weight: u32,
    /// Whether the address takes traffic (always with health checks off).
    pub healthy: bool,
}

/// One target in [`BalancerDetails`] (Kong's `getTargetStatus`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BalancerHost {
    /// The target's host (an IPv6 address in brackets).
    pub host: String,
    /// The target's port.
    pub port: u16,
    /// As [`TargetDetails::dns`].
    pub dns: String,
    /// The configured weight.
    #[serde(rename = "nodeWeight")]
    pub node_weight: u32,
    /// Weight totals over the addresses.
    pub weight: WeightSummary,
    /// The addresses.
    pub addresses: Vec<BalancerAddress>,
}

impl From<&TargetDetails> for BalancerHost {
    fn from(t: &TargetDetails) -> Self {
        BalancerHost {
            host: t.host.clone(),
            port: t.port,
            dns: t.dns.clone(),
            node_weight: t.node_weight,
            weight: t.weight,
            addresses: t
                .addresses
                .iter()
                .map(|a| BalancerAddress {
                    ip: a.ip.clone(),
                    port: a.port,
                    weight: a.weight,
                    healthy: a.health != HealthStatus::Unhealthy,
                })
                .collect(),
        }
    }
}

/// `details` of [`BalancerHealth`] (Kong's balancer `getStatus`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BalancerDetails {
    /// Whether the healthy weight is above the threshold (and not 0).
    pub healthy: bool,
    /// Weight totals over every address.
    pub weight: WeightSummary,
    /// Every target's details.
    pub hosts: Vec<BalancerHost>,
}

/// `GET /upstreams/{u}/health?balancer_health=1` `data` (Kong's `get_balancer_health`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BalancerHealth {
    /// HEALTHCHECKS_OFF without health checks, else [`BalancerHealth::balancer_health`].
    pub health: HealthStatus,
    /// HEALTHY or UNHEALTHY, with or without health checks.
    pub balancer_health: HealthStatus,
    /// The upstream's id.
    pub id: Uuid,
    /// The balancer's status, with or without health checks.
    pub details: BalancerDetails,
}

/// The health of one upstream.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UpstreamHealth {
    /// The upstream's name.
    pub name: String,
    /// The balancer as a whole.
    pub balancer: BalancerHealth,
    /// Every target (weight-0 targets included; Kong's `/health` lists the targets with a
    /// non-zero weight, so filter on `weight > 0` for that endpoint).
    pub targets: Vec<TargetHealth>,
}

/// One sample of `kong_upstream_target_health{upstream,target,address,state}`: the metric
/// is 1 for `state` and 0 for the other three states of the same labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetHealthSample {
    /// Upstream name.
    pub upstream: String,
    /// Target string.
    pub target: String,
    /// `ip:port` (empty when the target has no address).
    pub address: String,
    /// The current state.
    pub state: HealthStatus,
}

impl UpstreamHealth {
    /// The metric samples of this upstream.
    pub fn metric_samples(&self) -> Vec<TargetHealthSample> {
        let mut out = Vec::new();
        for t in &self.targets {
            if t.data.addresses.is_empty() {
                out.push(TargetHealthSample {
                    upstream: self.name.clone(),
                    target: t.target.clone(),
                    address: String::new(),
                    state: HealthStatus::DnsError,
                });
            }
            for a in &t.data.addresses {
                let address = if a.ip.contains(':') && !a.ip.starts_with('[') {
                    format!("[{}]:{}", a.ip, a.port)
                } else {
                    format!("{}:{}", a.ip, a.port)
                };
                out.push(TargetHealthSample {
                    upstream: self.name.clone(),
                    target: t.target.clone(),
                    address,
                    state: a.health,
                });
            }
        }
        out
    }
}
