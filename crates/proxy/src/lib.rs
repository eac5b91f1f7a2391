//! The Silverback data plane: a Kong-compatible HTTP gateway.
//!
//! - [`Settings`] holds a node's settings in `kong.conf` vocabulary ([`Listen`] parses
//!   `proxy_listen`-style specifications).
//! - [`Gateway::start`] binds the proxy, admin and status listeners and serves on the
//!   current tokio runtime; [`Gateway::apply`] swaps the configuration in process (the
//!   admin API's `POST /config` does the same over HTTP).
//! - The request path and its phases are documented in [`proxy`]; errors and their mapping
//!   to Kong's statuses in [`error`]; the admin API in [`admin`]; load balancing
//!   (`silverback-balancer`) and the upstream connection pool in [`upstream`]; TLS
//!   certificate selection and upstream TLS in [`tls`], the default certificates (Kong's
//!   `ssl_cert`, or generated RSA and ECDSA ones, kept in Kong's prefix directory when one
//!   is set) in [`default_certs`].
//!
//! ```no_run
//! # async fn run() -> Result<(), silverback_proxy::ProxyError> {
//! use silverback_proxy::{Gateway, Listen, Settings};
//! let settings = Settings {
//!     proxy_listen: Listen::parse_list("127.0.0.1:8000, 127.0.0.1:8443 ssl http2").unwrap(),
//!     ..Settings::default()
//! };
//! let gw = Gateway::start(settings, None).await?;
//! println!("{:?}", gw.local_addrs());
//! gw.shutdown().await;
//! # Ok(()) }
//! ```

pub mod access_log;
pub mod admin;
mod admin_routes;
mod admin_schemas;
mod admin_view;
mod admin_writes;
pub mod batch_write;
pub mod body;
pub mod deadline;
pub mod default_certs;
mod discard;
pub mod error;
mod gateway;
pub mod h1_client;
pub mod h1_fast;
pub mod h1_guard;
mod h1_send;
pub mod header_buffers;
pub mod log_format;
pub mod log_level;
pub mod metrics;
pub mod proxy;
pub mod proxy_protocol;
mod realip;
mod request_line;
pub mod settings;
pub mod snapshot;
pub mod tls;
pub mod upstream;

pub use default_certs::SslCert;
pub use error::ProxyError;
pub use gateway::{BoundListener, Gateway, ListenerKind};
pub use settings::{
    AdminToken, BatchWrites, Cidr, Headers, HeadersError, Listen, ListenError, PortMaps, Settings,
    TlsVersions, UpstreamHeaders, parse_size,
};

/// The Kong version whose behaviour and admin API this data plane reproduces (reported by
/// `GET /` and in the default server token).
pub const KONG_VERSION: &str = "3.10.0";
