//! Errors: building balancers from a configuration ([`BalancerError`]) and failing to pick a
//! peer for a request ([`NoPeer`]).

/// A configuration that cannot be turned into balancers. Names the upstream and the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BalancerError {
    /// A target string that is not `host[:port]`.
    #[error("upstream '{upstream}': invalid target '{target}': {reason}")]
    InvalidTarget {
        /// The upstream's name.
        upstream: String,
        /// The target string.
        target: String,
        /// Why it is invalid.
        reason: String,
    },
    /// An upstream field with a value this data plane cannot use.
    #[error("upstream '{upstream}': invalid {field}: {reason}")]
    InvalidField {
        /// The upstream's name.
        upstream: String,
        /// The field, e.g. `algorithm` or `client_certificate`.
        field: &'static str,
        /// Why it is invalid.
        reason: String,
    },
}

/// Why a health override ([`crate::Balancer::set_health`]) was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SetHealthError {
    /// No target of the upstream has that id or target string. Kong: 404 `Not found`.
    #[error("target '{target}' not found in upstream '{upstream}'")]
    TargetNotFound {
        /// The upstream's name.
        upstream: String,
        /// The target as given.
        target: String,
    },
    /// The upstream has no health checks to override. Kong: 400 with this message.
    #[error("no healthchecker found for {upstream}")]
    NoHealthchecker {
        /// The upstream's name.
        upstream: String,
    },
}

/// Why no peer could be picked. Each maps to Kong's status and message
/// ([`NoPeer::status`], [`NoPeer::message`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoPeer {
    /// Every address is unhealthy, has weight 0, was already tried, or the healthy weight is
    /// at or below `healthchecks.threshold`. Kong: 503.
    #[error("failure to get a peer from the ring-balancer")]
    NoHealthyPeer,
    /// The name does not exist or has no usable record. Kong: 503.
    #[error("name resolution failed")]
    NameResolution,
    /// The resolver failed for another reason (timeout, server failure). Kong: 500, with
    /// the message [`NoPeer::kong_message`].
    #[error("DNS resolution failed for '{name}': {detail}")]
    Resolver {
        /// The name looked up (the service's host).
        name: String,
        /// The resolver's message.
        detail: String,
    },
}

impl NoPeer {
    /// The HTTP status Kong answers with.
    pub fn status(&self) -> u16 {
        match self {
            NoPeer::NoHealthyPeer | NoPeer::NameResolution => 503,
            NoPeer::Resolver { .. } => 500,
        }
    }

    /// The message Kong puts in the error body (its `balancer_execute` words a resolver's
    /// failure: `failed the initial dns/balancer resolve for '<host>' with: <error>`).
    pub fn kong_message(&self) -> std::borrow::Cow<'static, str> {
        match self {
            NoPeer::NoHealthyPeer => "failure to get a peer from the ring-balancer".into(),
            NoPeer::NameResolution => "name resolution failed".into(),
            NoPeer::Resolver { name, detail } => {
                format!("failed the initial dns/balancer resolve for '{name}' with: {detail}")
                    .into()
            }
        }
    }
}
