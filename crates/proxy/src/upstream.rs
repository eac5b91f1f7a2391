//! Where requests go: the balancer seam, name resolution, and the upstream connection pool.
//!
//! # The seam for load balancing
//! A [`Balancer`] is built per configuration (by a [`BalancerFactory`], off the request path)
//! and lives in the snapshot. For every attempt the proxy asks it for a [`Pick`]
//! ([`Balancer::select`]) and tells it the outcome ([`Balancer::report`]), which is what passive
//! health checks need. [`DirectBalancer`] is the built-in one: a service host that names an
//! `upstreams` entity round-robins over that upstream's targets (by weight), any other host
//! is used as is (IP or DNS name). The balancer crate (issue 4) replaces it through
//! [`crate::Settings::balancer`].
//!
//! # Pool
//! HTTP/1.1 upstream connections are kept alive per `(address, TLS server name)`
//! ([`Pool`]); a connection goes back to the pool when its response body has been read
//! to the end, and is retired after `upstream_keepalive_max_requests` requests or
//! `upstream_keepalive_idle_timeout`. HTTP/2 upstreams (gRPC) share one multiplexed
//! connection per key.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::HeaderMap;
use http_body_util::Either;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use silverback_config::{Config, Protocol, Service};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use uuid::Uuid;

use crate::error::{Error, Kind, Source};

/// The request body type sent upstream: the client's body streamed, or a buffered one.
pub type ReqBody = Either<Incoming, http_body_util::Full<Bytes>>;

/// One choice of peer for one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pick {
    /// Host to connect to: an IP literal or a DNS name.
    pub host: Arc<str>,
    /// Port.
    pub port: u16,
    /// The address, when `host` is an IP literal (saves a parse per request).
    pub addr: Option<SocketAddr>,
    /// Host header value sent upstream (without port) when `preserve_host` is off:
    /// the upstream's `host_header`, else the target's host.
    pub host_header: Arc<str>,
}

impl Pick {
    /// A pick of `host:port`.
    pub fn new(host: &str, port: u16) -> Pick {
        let h: Arc<str> = host.trim_start_matches('[').trim_end_matches(']').into();
        let addr = h.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, port));
        Pick {
            host: h,
            port,
            addr,
            host_header: host.into(),
        }
    }
}

/// What happened on one attempt, for passive health checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The upstream answered with this status.
    Response(u16),
    /// Connecting failed.
    ConnectFailed,
    /// A timeout (connect or read).
    Timeout,
    /// The upstream broke the connection or spoke garbage.
    Failed,
}

/// What a balancer sees of the request.
#[derive(Debug)]
pub struct SelectCtx<'a> {
    /// The matched service.
    pub service: &'a Service,
    /// 0 for the first attempt.
    pub attempt: u32,
    /// Request headers (hash_on header/cookie).
    pub headers: &'a HeaderMap,
    /// The client address (hash_on ip).
    pub client_ip: IpAddr,
    /// The previous attempt's pick, on retries.
    pub previous: Option<&'a Pick>,
}

/// Chooses peers for a service; one instance per configuration.
pub trait Balancer: Send + Sync + fmt::Debug {
    /// The peer for this attempt, or the error kind to answer with (`NoPeer`,
    /// `NameResolution`).
    fn select(&self, ctx: &SelectCtx<'_>) -> Result<Pick, Kind>;
    /// The outcome of an attempt on `pick` (passive health).
    fn report(&self, _service: &Service, _pick: &Pick, _outcome: Outcome) {}
}

/// Builds the balancer of a configuration (called off the request path, on every swap).
pub trait BalancerFactory: Send + Sync + fmt::Debug {
    /// Builds it. `previous` is the running one, to carry health state over.
    fn build(
        &self,
        config: &Arc<Config>,
        previous: Option<&Arc<dyn Balancer>>,
    ) -> Result<Arc<dyn Balancer>, String>;
}

/// The built-in balancer: upstream targets round-robin by weight, anything else direct.
#[derive(Debug, Default)]
pub struct DirectBalancer {
    /// Expanded weighted target lists by upstream name.
    upstreams: HashMap<String, (Vec<Pick>, AtomicUsize)>,
    /// Direct picks by service id.
    direct: HashMap<Uuid, Pick>,
}

impl DirectBalancer {
    /// Builds it from a configuration.
    pub fn new(config: &Config) -> DirectBalancer {
        let mut upstreams = HashMap::new();
        let mut by_upstream: HashMap<Uuid, Vec<&silverback_config::Target>> = HashMap::new();
        for t in config.targets.iter().filter(|t| t.weight > 0) {
            by_upstream.entry(t.upstream.id).or_default().push(t);
        }
        for u in &config.upstreams {
            let mut picks = Vec::new();
            let targets = by_upstream.remove(&u.id).unwrap_or_default();
            let g = targets.iter().fold(0u32, |g, t| gcd(g, t.weight)).max(1);
            for t in targets {
                let (host, port) = split_target(&t.target);
                let mut p = Pick::new(host, port);
                if let Some(h) = &u.host_header {
                    p.host_header = h.as_str().into();
                }
                for _ in 0..(t.weight / g).min(100) {
                    picks.push(p.clone());
                }
            }
            upstreams.insert(u.name.clone(), (picks, AtomicUsize::new(0)));
        }
        let mut direct = HashMap::new();
        for s in &config.services {
            if !upstreams.contains_key(&s.host) {
                direct.insert(s.id, Pick::new(&s.host, s.port));
            }
        }
        DirectBalancer { upstreams, direct }
    }
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a } else { gcd(b, a % b) }
}

fn split_target(t: &str) -> (&str, u16) {
    if let Some(rest) = t.strip_prefix('[')
        && let Some((h, p)) = rest.split_once("]:")
    {
        return (h, p.parse().unwrap_or(8000));
    }
    match t.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => (h, p.parse().unwrap_or(8000)),
        _ => (t, 8000),
    }
}

impl Balancer for DirectBalancer {
    fn select(&self, ctx: &SelectCtx<'_>) -> Result<Pick, Kind> {
        if let Some(p) = self.direct.get(&ctx.service.id) {
            return Ok(p.clone());
        }
        let (picks, rr) = self
            .upstreams
            .get(&ctx.service.host)
            .ok_or(Kind::NameResolution)?;
        if picks.is_empty() {
            return Err(Kind::NoPeer);
        }
        let i = rr.fetch_add(1, Ordering::Relaxed);
        Ok(picks[i % picks.len()].clone())
    }
}

/// The default factory: [`DirectBalancer`].
#[derive(Debug, Default)]
pub struct DirectFactory;

impl BalancerFactory for DirectFactory {
    fn build(
        &self,
        config: &Arc<Config>,
        _: Option<&Arc<dyn Balancer>>,
    ) -> Result<Arc<dyn Balancer>, String> {
        Ok(Arc::new(DirectBalancer::new(config)))
    }
}

/// A cache of DNS answers (30 s), so only the first request to a name waits on resolution.
#[derive(Debug, Default)]
pub struct Resolver {
    cache: Mutex<HashMap<(Arc<str>, u16), Answer>>,
}

/// Addresses of a name and when they were resolved.
type Answer = (Vec<SocketAddr>, Instant);

const DNS_TTL: Duration = Duration::from_secs(30);

impl Resolver {
    /// Resolves a pick to addresses.
    pub async fn resolve(&self, pick: &Pick) -> Result<Vec<SocketAddr>, Error> {
        if let Some(a) = pick.addr {
            return Ok(vec![a]);
        }
        let key = (pick.host.clone(), pick.port);
        if let Ok(c) = self.cache.lock()
            && let Some((addrs, at)) = c.get(&key)
            && at.elapsed() < DNS_TTL
        {
            return Ok(addrs.clone());
        }
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((&*pick.host, pick.port))
            .await
            .map_err(|e| Error::upstream(Kind::NameResolution).because(e))?
            .collect();
        if addrs.is_empty() {
            return Err(Error::upstream(Kind::NameResolution));
        }
        if let Ok(mut c) = self.cache.lock() {
            c.insert(key, (addrs.clone(), Instant::now()));
        }
        Ok(addrs)
    }
}

/// A byte stream to an upstream (plain TCP or TLS).
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

/// Pool key: address plus TLS server name (None for plain).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PoolKey {
    /// Peer address.
    pub addr: SocketAddr,
    /// TLS server name; `None` for cleartext.
    pub tls: Option<Arc<str>>,
}

struct Idle {
    tx: hyper::client::conn::http1::SendRequest<ReqBody>,
    since: Instant,
    uses: u32,
}

/// Keep-alive pool of upstream connections.
pub struct Pool {
    idle: Mutex<HashMap<PoolKey, Vec<Idle>>>,
    h2: Mutex<HashMap<PoolKey, hyper::client::conn::http2::SendRequest<ReqBody>>>,
    max_idle: usize,
    idle_timeout: Duration,
    max_requests: u32,
    tls_h1: Arc<rustls::ClientConfig>,
    tls_h2: Arc<rustls::ClientConfig>,
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("max_idle", &self.max_idle)
            .finish_non_exhaustive()
    }
}

/// A checked-out HTTP/1.1 connection; give it back with [`Pool::put`].
pub struct Conn {
    /// The sender.
    pub tx: hyper::client::conn::http1::SendRequest<ReqBody>,
    /// The key it belongs to.
    pub key: PoolKey,
    uses: u32,
    /// Whether it came from the pool (a failure before sending may then be retried on a
    /// fresh connection).
    pub reused: bool,
}

impl fmt::Debug for Conn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Conn")
            .field("key", &self.key)
            .field("reused", &self.reused)
            .finish()
    }
}

impl Pool {
    /// A pool with Kong's keep-alive settings.
    pub fn new(max_idle: usize, idle_timeout: Duration, max_requests: u32) -> Pool {
        let (tls_h1, tls_h2) = crate::tls::insecure_client_configs();
        Pool {
            idle: Mutex::new(HashMap::new()),
            h2: Mutex::new(HashMap::new()),
            max_idle,
            idle_timeout,
            max_requests,
            tls_h1,
            tls_h2,
        }
    }

    /// An idle connection for `key`, if one is alive.
    pub fn take(&self, key: &PoolKey) -> Option<Conn> {
        let mut idle = self.idle.lock().ok()?;
        let list = idle.get_mut(key)?;
        while let Some(c) = list.pop() {
            if c.tx.is_closed() || c.since.elapsed() > self.idle_timeout {
                continue;
            }
            return Some(Conn {
                tx: c.tx,
                key: key.clone(),
                uses: c.uses,
                reused: true,
            });
        }
        None
    }

    /// Gives a connection back after its response was read to the end.
    pub fn put(&self, mut c: Conn) {
        c.uses += 1;
        if c.tx.is_closed() || c.uses >= self.max_requests {
            return;
        }
        if let Ok(mut idle) = self.idle.lock() {
            let list = idle.entry(c.key).or_default();
            if list.len() < self.max_idle {
                list.push(Idle {
                    tx: c.tx,
                    since: Instant::now(),
                    uses: c.uses,
                });
            }
        }
    }

    /// Drops idle connections past their idle timeout.
    pub fn sweep(&self) {
        if let Ok(mut idle) = self.idle.lock() {
            for list in idle.values_mut() {
                list.retain(|c| !c.tx.is_closed() && c.since.elapsed() <= self.idle_timeout);
            }
            idle.retain(|_, l| !l.is_empty());
        }
        if let Ok(mut h2) = self.h2.lock() {
            h2.retain(|_, tx| !tx.is_closed());
        }
    }

    /// Number of idle HTTP/1.1 connections (for tests and metrics).
    pub fn idle_count(&self) -> usize {
        self.idle
            .lock()
            .map(|i| i.values().map(Vec::len).sum())
            .unwrap_or(0)
    }

    /// Opens a byte stream to `key` within `timeout`.
    pub async fn connect_io(
        &self,
        key: &PoolKey,
        timeout: Duration,
        h2: bool,
    ) -> Result<Box<dyn Io>, Error> {
        let tcp = match tokio::time::timeout(timeout, TcpStream::connect(key.addr)).await {
            Err(_) => return Err(Error::upstream(Kind::ConnectTimeout).retryable()),
            Ok(Err(e)) => return Err(Error::upstream(Kind::ConnectRefused).retryable().because(e)),
            Ok(Ok(s)) => s,
        };
        let _ = tcp.set_nodelay(true);
        let Some(sni) = &key.tls else {
            return Ok(Box::new(tcp));
        };
        let cfg = if h2 {
            self.tls_h2.clone()
        } else {
            self.tls_h1.clone()
        };
        let name = match sni.parse::<IpAddr>() {
            Ok(ip) => rustls::pki_types::ServerName::IpAddress(ip.into()),
            Err(_) => rustls::pki_types::ServerName::try_from(sni.to_string())
                .map_err(|e| Error::upstream(Kind::UpstreamTls).because(e))?,
        };
        let tls = tokio_rustls::TlsConnector::from(cfg);
        match tokio::time::timeout(timeout, tls.connect(name, tcp)).await {
            Err(_) => Err(Error::upstream(Kind::ConnectTimeout).retryable()),
            Ok(Err(e)) => Err(Error::upstream(Kind::UpstreamTls).retryable().because(e)),
            Ok(Ok(s)) => Ok(Box::new(s)),
        }
    }

    /// A new HTTP/1.1 connection.
    pub async fn connect_h1(&self, key: &PoolKey, timeout: Duration) -> Result<Conn, Error> {
        let io = self.connect_io(key, timeout, false).await?;
        let (tx, conn) = hyper::client::conn::http1::Builder::new()
            .handshake(TokioIo::new(io))
            .await
            .map_err(|e| Error::upstream(Kind::ConnectRefused).retryable().because(e))?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "upstream connection ended");
            }
        });
        Ok(Conn {
            tx,
            key: key.clone(),
            uses: 0,
            reused: false,
        })
    }

    /// A new HTTP/1.1 connection that can be upgraded (WebSocket); never pooled.
    pub async fn connect_upgradable(
        &self,
        key: &PoolKey,
        timeout: Duration,
    ) -> Result<hyper::client::conn::http1::SendRequest<ReqBody>, Error> {
        let io = self.connect_io(key, timeout, false).await?;
        let (tx, conn) = hyper::client::conn::http1::Builder::new()
            .handshake(TokioIo::new(io))
            .await
            .map_err(|e| Error::upstream(Kind::ConnectRefused).retryable().because(e))?;
        tokio::spawn(async move {
            let _ = conn.with_upgrades().await;
        });
        Ok(tx)
    }

    /// The shared HTTP/2 connection for `key`, opened if needed.
    pub async fn h2(
        &self,
        key: &PoolKey,
        timeout: Duration,
    ) -> Result<hyper::client::conn::http2::SendRequest<ReqBody>, Error> {
        if let Ok(m) = self.h2.lock()
            && let Some(tx) = m.get(key)
            && !tx.is_closed()
        {
            return Ok(tx.clone());
        }
        let io = self.connect_io(key, timeout, true).await?;
        let (tx, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .timer(hyper_util::rt::TokioTimer::new())
            .handshake(TokioIo::new(io))
            .await
            .map_err(|e| {
                Error::new(Kind::ConnectRefused, Source::Upstream)
                    .retryable()
                    .because(e)
            })?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "upstream h2 connection ended");
            }
        });
        if let Ok(mut m) = self.h2.lock() {
            m.insert(key.clone(), tx.clone());
        }
        Ok(tx)
    }
}

/// Whether a service protocol talks HTTP/2 to the upstream.
pub fn is_h2(p: Protocol) -> bool {
    matches!(p, Protocol::Grpc | Protocol::Grpcs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_split() {
        assert_eq!(split_target("10.0.0.1:8080"), ("10.0.0.1", 8080));
        assert_eq!(split_target("[::1]:81"), ("::1", 81));
        assert_eq!(split_target("example.com"), ("example.com", 8000));
        let p = Pick::new("127.0.0.1", 9);
        assert_eq!(p.addr, Some("127.0.0.1:9".parse().unwrap()));
        assert!(Pick::new("example.com", 9).addr.is_none());
    }
}
