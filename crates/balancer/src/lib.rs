//! Kong's upstream load balancing for Silverback.
//!
//! [`Balancers::build`] turns a configuration's upstreams and targets into one [`Balancer`]
//! each, carrying state over from the previous configuration. The proxy asks
//! [`Balancers::peer`] (or [`Balancer::pick`]) for a [`Peer`] per try, reports how the try
//! went with [`Peer::report`], and drops the peer when the response is done.
//!
//! - Algorithms ([`Algorithm`]): weighted round-robin, consistent-hashing on `hash_on` /
//!   `hash_fallback` (adding one of N addresses moves about 1/N of the keys),
//!   least-connections, latency (decaying average, two random choices).
//! - Targets are `host[:port]` (port 8000 by default); every address a hostname resolves to
//!   is a balancer entry, kept in sync with DNS TTLs ([`dns::Resolver`]).
//! - Health: active probes (http, https, tcp, grpc, grpcs) and passive reports with Kong's
//!   counters and defaults; an unhealthy address gets no traffic; no available address is
//!   [`NoPeer::NoHealthyPeer`] (503 `failure to get a peer from the ring-balancer`).
//! - [`Balancer::health`] reports in the shapes of Kong's admin API and metric.
//!
//! ```no_run
//! # async fn f(config: &silverback_config::Config) -> Result<(), Box<dyn std::error::Error>> {
//! use silverback_balancer::{Balancers, Outcome, PickContext};
//! let balancers = Balancers::build(config, None, &tokio::runtime::Handle::current())?;
//! let ctx = PickContext { path: "/users/7", ..Default::default() };
//! let mut tried = Vec::new();
//! let peer = balancers.peer("my-upstream", 80, &ctx, &tried).await?;
//! // ... connect to peer.addr, send Host: peer.host_header_value(false) ...
//! peer.report(Outcome::Response { status: 200, latency: std::time::Duration::from_millis(3) });
//! tried.push(peer.addr);
//! drop(peer); // the response is finished
//! # Ok(()) }
//! ```

mod balancer;
mod checker;
pub mod context;
pub mod dns;
pub mod error;
mod health;
pub mod report;
mod ring;
pub mod target;

pub use balancer::{Balancer, Balancers, Options, Outcome, Peer, SetCookie, sni_name};
pub use context::{PickContext, UriCaptures};
pub use dns::{Families, Resolver, ResolverOptions};
pub use error::{BalancerError, NoPeer, SetHealthError};
pub use health::ProbeKind;
pub use report::{
    AddressHealth, BalancerAddress, BalancerDetails, BalancerHealth, BalancerHost, HealthStatus,
    TargetDetails, TargetHealth, TargetHealthSample, UpstreamHealth, UpstreamRef, WeightSummary,
};
pub use ring::Algorithm;
pub use target::{DEFAULT_TARGET_PORT, TargetAddr};
