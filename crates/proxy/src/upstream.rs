//! Where requests go: the balancer seam, name resolution, and the upstream connection pool.
//!
//! # Load balancing
//! Peers come from `silverback-balancer` ([`Balancers`]): a service whose host names an
//! `upstreams` entity goes through that upstream's balancer (every algorithm, active and
//! passive health checks); any other host is an IP or a name resolved by the balancer's DNS
//! cache. The balancers are built with every configuration swap, off the request path, from
//! the running ones, so unchanged upstreams keep their health state and checkers.
//!
//! # Pool
//! Upstream connections are kept alive per `(address, TLS server name and settings)`
//! ([`Pool`], Kong's pool key), HTTP/1.1 and HTTP/2 (gRPC) ones apart. Both work as nginx's
//! keep-alive cache does with its `proxy_pass` and `grpc_pass`: a connection carries one
//! request at a time and is in the pool only while no request uses it. An HTTP/1.1
//! connection goes back when its request was written whole and its answer read to the end.
//! An HTTP/2 one goes back when its answer's stream was read to the end (trailers
//! included) and hyper had by then taken the last part of the request body
//! ([`H2ReqBody`]); an answer that ends first closes it. Either is closed after a timeout,
//! an error, a reset or a body cut short. A request takes an idle connection or opens a
//! new one, so calls to an HTTP/2 upstream do not queue behind its
//! `SETTINGS_MAX_CONCURRENT_STREAMS` nor share a connection's flow-control window, with
//! one residual exception: a taken last part is not yet sent, and h2 may still hold less
//! than 32 KiB of the body for want of the upstream's window; an upstream that answered
//! whole and then neither opens that window nor resets the stream leaves the stream open
//! on a pooled connection, beside the next call's (which then waits, if the upstream takes
//! one stream at a time, at most its read timeout: [`crate::body::H2Body`]). The same
//! settings hold for both protocols: at most `upstream_keepalive_pool_size` idle
//! connections per key (one more returned is closed), each closed after
//! `upstream_keepalive_max_requests` requests or `upstream_keepalive_idle_timeout` idle.
//! Nothing caps the connections in use: each request in flight holds one (nginx bounds all
//! its connections by `worker_connections`).

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Either;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use silverback_config::{Config, Protocol};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::deadline::Deadline;
use crate::error::{Error, Kind, Source};
use crate::h1_client::H1Conn;
pub use crate::tls::UpstreamTls;

/// The request body type sent upstream: the client's body streamed, or a buffered one.
pub type ReqBody = Either<ClientBody, http_body_util::Full<Bytes>>;

/// The largest part of a request body an HTTP/2 upstream connection is handed at once
/// ([`H2ReqBody`]): the default `SETTINGS_MAX_FRAME_SIZE`, so that no more DATA frames go
/// out than whole parts would make.
pub const H2_PART: usize = 16 * 1024;

/// A request body as an HTTP/2 upstream connection takes it: [`ReqBody`] handed on in
/// parts of at most [`H2_PART`] bytes (a larger data frame is split, without copying), its
/// [`RequestSent`] marked when hyper takes the last part (the last data, the trailers, or
/// the end; at once for an empty body, which goes with the request's head).
///
/// hyper (1.x) takes a part whenever it asks for one, and asks for the next only once the
/// one before it was given some stream window; past that, h2 holds what the upstream's
/// flow-control window does not take yet. So a body whose last part was taken can still
/// have less than two parts (32 KiB) unsent for want of window (unless the upstream shrinks
/// its initial window meanwhile), and the parts make that bound hold for a body held in
/// full as for one streamed from the client (whose frames may be larger).
#[derive(Debug)]
pub struct H2ReqBody {
    inner: ReqBody,
    /// The rest of a data frame larger than a part, handed on next.
    rest: Bytes,
    /// Whether hyper asked for a part yet.
    started: bool,
    sent: RequestSent,
}

/// Whether hyper took the last part of a request body sent to an HTTP/2 upstream
/// ([`H2ReqBody`]): an answer that ends first leaves its request unfinished, and the
/// connection is not pooled ([`crate::body::H2Body`]).
#[derive(Debug, Clone, Default)]
pub struct RequestSent(Arc<std::sync::atomic::AtomicBool>);

impl RequestSent {
    /// Whether the body's last part was taken.
    pub fn taken(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    fn mark(&self) {
        self.0.store(true, Ordering::Release);
    }
}

impl H2ReqBody {
    /// `inner`, reporting to `sent`.
    pub fn new(inner: ReqBody, sent: RequestSent) -> H2ReqBody {
        if http_body::Body::is_end_stream(&inner) {
            sent.mark();
        }
        H2ReqBody {
            inner,
            rest: Bytes::new(),
            started: false,
            sent,
        }
    }

    /// The body, if none of it was asked for yet (a request hyper gives back unsent can be
    /// sent elsewhere); `None` once any part was.
    pub fn into_unsent(self) -> Option<ReqBody> {
        (!self.started).then_some(self.inner)
    }
}

impl http_body::Body for H2ReqBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, BodyError>>> {
        use std::task::Poll;
        let this = &mut *self;
        this.started = true;
        let mut data = if this.rest.is_empty() {
            match std::task::ready!(std::pin::Pin::new(&mut this.inner).poll_frame(cx)) {
                None => {
                    this.sent.mark();
                    return Poll::Ready(None);
                }
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                Some(Ok(f)) => match f.into_data() {
                    Ok(d) => d,
                    Err(f) => {
                        // trailers end the body
                        if f.is_trailers() {
                            this.sent.mark();
                        }
                        return Poll::Ready(Some(Ok(f)));
                    }
                },
            }
        } else {
            std::mem::take(&mut this.rest)
        };
        if data.len() > H2_PART {
            this.rest = data.split_off(H2_PART);
        }
        if http_body::Body::is_end_stream(&*this) {
            this.sent.mark();
        }
        Poll::Ready(Some(Ok(http_body::Frame::data(data))))
    }

    fn is_end_stream(&self) -> bool {
        self.rest.is_empty() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        let inner = self.inner.size_hint();
        let rest = self.rest.len() as u64;
        if rest == 0 {
            return inner;
        }
        let mut h = http_body::SizeHint::new();
        h.set_lower(inner.lower().saturating_add(rest));
        if let Some(u) = inner.upper() {
            h.set_upper(u.saturating_add(rest));
        }
        h
    }
}

/// The client's body as it streams upstream, held to `client_max_body_size` (past it, the
/// body fails with [`BodyTooLarge`], answered 413 when nothing was answered yet) and to
/// `client_body_timeout` between its parts (then it fails with [`BodyTimedOut`], 408). How
/// it ended is kept in its [`BodyWatch`]. Its start can be read ahead
/// ([`ClientBody::read_ahead`], request buffering); what was read ahead is passed on first.
///
/// Boxed: the request's body moves through each step of the request (into the try, back
/// for the next), a pointer each time rather than the 250-odd bytes of its state; and a
/// request without a body, the usual one, moves the smaller `Option` of it.
#[derive(Debug)]
pub struct ClientBody(Box<ClientBodyState>);

impl std::ops::Deref for ClientBody {
    type Target = ClientBodyState;
    fn deref(&self) -> &ClientBodyState {
        &self.0
    }
}

impl std::ops::DerefMut for ClientBody {
    fn deref_mut(&mut self) -> &mut ClientBodyState {
        &mut self.0
    }
}

/// A [`ClientBody`]'s state.
#[derive(Debug)]
pub struct ClientBodyState {
    inner: Incoming,
    /// The data read ahead and not passed on yet, copied into one buffer as it comes: what
    /// it holds is bounded by its bytes, whatever the number of parts the client cut them
    /// into (a part of one byte costs no more than that byte).
    ahead: bytes::BytesMut,
    /// Trailers read ahead (after the data), passed on after it.
    ahead_trailers: Option<http::HeaderMap>,
    /// The data bytes in `ahead`.
    ahead_len: u64,
    /// Bytes still allowed (`u64::MAX`: no limit).
    left: u64,
    /// The longest pause allowed between two parts.
    idle: Duration,
    /// When the pause the body is in ends; made at its first pause, moved on by each part.
    deadline: Option<Deadline>,
    /// How the body failed or ended (see [`BodyWatch`]).
    watch: BodyWatch,
    /// Where the bytes read from the client count as ingress (a routed request's).
    stats: Option<Arc<crate::metrics::RouteStats>>,
}

/// How a [`ClientBody`] failed or ended, readable after it was handed to a client: an
/// HTTP/2 upstream's send fails with a stream reset that does not carry the body's error,
/// and the upstream's read timeout counts from the body's end.
#[derive(Debug, Clone, Default)]
pub struct BodyWatch(Arc<WatchState>);

#[derive(Debug, Default)]
struct WatchState {
    failure: std::sync::atomic::AtomicU8,
    end: std::sync::OnceLock<tokio::time::Instant>,
    /// Bytes passed on so far.
    sent: AtomicU64,
    /// The body was last polled without a part ready: it waits on the client.
    waiting: std::sync::atomic::AtomicBool,
}

impl BodyWatch {
    const TOO_LARGE: u8 = 1;
    const BROKEN: u8 = 2;
    const TIMED_OUT: u8 = 3;
    const LEFT: u8 = 4;

    fn fail(&self, v: u8) {
        self.0
            .failure
            .store(v, std::sync::atomic::Ordering::Relaxed);
    }

    /// The client's error that ended the body, if it failed: too large (413), malformed
    /// (400), stalled (408) or its connection gone (unanswered, counted as a 400).
    pub fn failure(&self) -> Option<Kind> {
        match self.0.failure.load(std::sync::atomic::Ordering::Relaxed) {
            Self::TOO_LARGE => Some(Kind::PayloadTooLarge),
            Self::BROKEN => Some(Kind::BadRequest),
            Self::TIMED_OUT => Some(Kind::RequestTimeout),
            Self::LEFT => Some(Kind::ClientLeft),
            _ => None,
        }
    }

    /// How many bytes of the body were passed on so far.
    pub fn sent(&self) -> u64 {
        self.0.sent.load(Ordering::Relaxed)
    }

    /// Whether the body is waiting on the client (last polled, it had no part ready), as
    /// opposed to not being asked for more (the upstream takes no more).
    pub fn waiting_on_client(&self) -> bool {
        self.0.waiting.load(Ordering::Relaxed)
    }

    /// When the body was read to its end, if it was.
    pub fn ended(&self) -> Option<tokio::time::Instant> {
        self.0.end.get().copied()
    }

    fn set_waiting(&self, waiting: bool) {
        self.0.waiting.store(waiting, Ordering::Relaxed);
    }

    fn passed(&self, n: usize) {
        self.0.sent.fetch_add(n as u64, Ordering::Relaxed);
    }

    fn end(&self) {
        let _ = self.0.end.set(tokio::time::Instant::now());
    }
}

/// Whether a body failed on its framing (a chunk size line, a chunk's end or a trailer that
/// hyper's decoder refuses: an `InvalidData` or `InvalidInput` I/O error under the error),
/// rather than on the connection (the client gone: an unexpected end, a reset).
pub(crate) fn broken_framing(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(e);
    while let Some(c) = cause {
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            return matches!(
                io.kind(),
                std::io::ErrorKind::InvalidData | std::io::ErrorKind::InvalidInput
            );
        }
        cause = c.source();
    }
    false
}

/// The client's body went past `client_max_body_size`.
#[derive(Debug, thiserror::Error)]
#[error("the request body is larger than client_max_body_size")]
pub struct BodyTooLarge;

/// The client paused its body longer than `client_body_timeout`.
#[derive(Debug, thiserror::Error)]
#[error("the request body stopped arriving (client_body_timeout)")]
pub struct BodyTimedOut;

impl ClientBody {
    /// `inner`, limited to `max` bytes (0: no limit, as nginx's `client_max_body_size 0`)
    /// and to pauses of `idle` between its parts; the bytes read count on `stats`.
    pub fn new(
        inner: Incoming,
        max: u64,
        idle: Duration,
        stats: Option<Arc<crate::metrics::RouteStats>>,
    ) -> ClientBody {
        let body = ClientBodyState {
            inner,
            ahead: bytes::BytesMut::new(),
            ahead_trailers: None,
            ahead_len: 0,
            left: if max == 0 { u64::MAX } else { max },
            idle,
            deadline: None,
            watch: BodyWatch::default(),
            stats,
        };
        if http_body::Body::is_end_stream(&body.inner) {
            body.watch.end();
        }
        ClientBody(Box::new(body))
    }

    /// What tells, later, whether and how this body failed or ended.
    pub fn watch(&self) -> BodyWatch {
        self.watch.clone()
    }

    /// Reads the body ahead until it ends or more than `limit` bytes are in, with the
    /// body's own limits (`client_max_body_size`, `client_body_timeout` between parts):
    /// `Ok(Some(body))` when it ended within `limit` bytes (the whole body; trailers are
    /// left out), `Ok(None)` when it goes on past them (what was read is passed on first,
    /// before the rest, when the body is polled). An error is the client's:
    /// [`BodyWatch::failure`] tells which.
    pub async fn read_ahead(&mut self, limit: u64) -> Result<Option<Bytes>, BodyError> {
        loop {
            if self.ahead_len > limit {
                return Ok(None);
            }
            if http_body::Body::is_end_stream(&self.inner) {
                return Ok(Some(self.take_ahead()));
            }
            match std::future::poll_fn(|cx| self.poll_inner(cx)).await {
                None => return Ok(Some(self.take_ahead())),
                Some(Err(e)) => return Err(e),
                Some(Ok(f)) => match f.into_data() {
                    Ok(d) => {
                        self.ahead_len += d.len() as u64;
                        self.ahead.extend_from_slice(&d);
                    }
                    Err(f) => {
                        if let Ok(t) = f.into_trailers() {
                            self.ahead_trailers = Some(t);
                        }
                    }
                },
            }
        }
    }

    /// The data read ahead, as one piece (trailers are dropped); counted as passed on.
    fn take_ahead(&mut self) -> Bytes {
        let total = std::mem::take(&mut self.ahead_len);
        self.ahead_trailers = None;
        self.watch
            .passed(usize::try_from(total).unwrap_or(usize::MAX));
        std::mem::take(&mut self.ahead).freeze()
    }
}

impl ClientBodyState {
    /// The next frame from the client, held to the size limit and the pause timeout (what
    /// is passed on is counted by the caller).
    fn poll_inner(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, BodyError>>> {
        use std::task::Poll;
        let r = http_body::Body::poll_frame(std::pin::Pin::new(&mut self.inner), cx);
        self.watch.set_waiting(r.is_pending());
        match &r {
            Poll::Ready(Some(Ok(f))) => {
                if let Some(d) = f.data_ref() {
                    if let Some(s) = &self.stats {
                        s.ingress(d.len() as u64);
                    }
                    match self.left.checked_sub(d.len() as u64) {
                        Some(left) => self.left = left,
                        None => {
                            self.watch.fail(BodyWatch::TOO_LARGE);
                            return Poll::Ready(Some(Err(Box::new(BodyTooLarge))));
                        }
                    }
                }
                if let Some(d) = &mut self.deadline {
                    d.set(tokio::time::Instant::now() + self.idle);
                }
                if http_body::Body::is_end_stream(&self.inner) {
                    self.watch.end();
                }
            }
            Poll::Ready(Some(Err(e))) => self.watch.fail(if broken_framing(e) {
                BodyWatch::BROKEN
            } else {
                BodyWatch::LEFT
            }),
            Poll::Ready(None) => self.watch.end(),
            Poll::Pending => {
                let idle = self.idle;
                let d = self
                    .deadline
                    .get_or_insert_with(|| Deadline::new(tokio::time::Instant::now() + idle));
                if d.poll_expired(cx).is_ready() {
                    self.watch.fail(BodyWatch::TIMED_OUT);
                    return Poll::Ready(Some(Err(Box::new(BodyTimedOut))));
                }
            }
        }
        r.map(|o| o.map(|r| r.map_err(Into::into)))
    }
}

/// How a [`ClientBody`] failed ([`BodyWatch::failure`] tells the client's error).
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

impl http_body::Body for ClientBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        use std::task::Poll;
        let this: &mut ClientBodyState = &mut self.0;
        if this.ahead_len > 0 {
            this.watch.set_waiting(false);
            // (the buffer itself: what is left of its capacity is not kept)
            let d = std::mem::take(&mut this.ahead).freeze();
            this.ahead_len = 0;
            this.watch.passed(d.len());
            return Poll::Ready(Some(Ok(http_body::Frame::data(d))));
        }
        if let Some(t) = this.ahead_trailers.take() {
            this.watch.set_waiting(false);
            return Poll::Ready(Some(Ok(http_body::Frame::trailers(t))));
        }
        let r = this.poll_inner(cx);
        if let Poll::Ready(Some(Ok(f))) = &r
            && let Some(d) = f.data_ref()
        {
            this.watch.passed(d.len());
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.ahead_len == 0 && self.ahead_trailers.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        let inner = self.inner.size_hint();
        if self.ahead_len == 0 {
            return inner;
        }
        let mut h = http_body::SizeHint::new();
        h.set_lower(inner.lower().saturating_add(self.ahead_len));
        if let Some(u) = inner.upper() {
            h.set_upper(u.saturating_add(self.ahead_len));
        }
        h
    }
}

/// Where a service's requests go: the [`Balancers`] of `silverback-balancer`, built per
/// configuration off the request path ([`build_balancers`]).
pub use silverback_balancer::{Balancers, Options as BalancerOptions, Peer};

/// Builds the balancers of `config`, carrying the state of unchanged upstreams over from
/// `previous` (health, counters, DNS, active checkers, least-connections counts). The
/// configuration's CA certificates are also trusted by active `https` probes.
pub fn build_balancers(
    config: &Config,
    previous: Option<&Balancers>,
    runtime: &tokio::runtime::Handle,
    options: &BalancerOptions,
) -> Result<Balancers, String> {
    let mut opts = options.clone();
    for ca in &config.ca_certificates {
        if let Ok(certs) = silverback_config::pki::parse_certs(&ca.cert) {
            opts.probe_roots.extend(certs);
        }
    }
    Balancers::build_with(config, previous, runtime, &opts).map_err(|e| e.to_string())
}

/// The [`Error`] for a failed pick: Kong's 503 `failure to get a peer from the
/// ring-balancer`, 503 `name resolution failed`, or 500.
pub fn no_peer(e: &silverback_balancer::NoPeer) -> Error {
    use silverback_balancer::NoPeer;
    match e {
        NoPeer::NoHealthyPeer => Error::upstream(Kind::NoPeer),
        NoPeer::NameResolution => Error::upstream(Kind::NameResolution),
        NoPeer::Resolver { .. } => {
            Error::new(Kind::Resolver, Source::Internal).because(e.kong_message().into_owned())
        }
    }
}

/// A byte stream with Kong's `write_timeout` (nginx's `proxy_send_timeout`): a write that
/// makes no progress for that long fails with `TimedOut`. The timeout is shared with the
/// [`Conn`] so that each request sets its service's value before sending. Client connections
/// use it too, with [`Settings::send_timeout`](crate::Settings::send_timeout) (nginx's
/// `send_timeout`).
pub struct WriteTimed<T> {
    inner: T,
    timeout_ms: Arc<AtomicU64>,
    sleep: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

impl<T> WriteTimed<T> {
    /// `inner` with writes that fail after making no progress for `timeout` (none when
    /// zero).
    pub fn new(inner: T, timeout: Duration) -> WriteTimed<T> {
        WriteTimed {
            inner,
            timeout_ms: Arc::new(AtomicU64::new(timeout.as_millis() as u64)),
            sleep: None,
        }
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &T {
        &self.inner
    }

    fn stalled(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Error> {
        let ms = self.timeout_ms.load(Ordering::Relaxed);
        if ms == 0 {
            return std::task::Poll::Pending;
        }
        let s = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(Duration::from_millis(ms))));
        match s.as_mut().poll(cx) {
            std::task::Poll::Ready(()) => {
                self.sleep = None;
                std::task::Poll::Ready(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "upstream write timeout",
                ))
            }
            std::task::Poll::Pending => std::task::Poll::Pending,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for WriteTimed<T> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for WriteTimed<T> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match std::pin::Pin::new(&mut self.inner).poll_write(cx, buf) {
            std::task::Poll::Ready(r) => {
                self.sleep = None;
                std::task::Poll::Ready(r)
            }
            std::task::Poll::Pending => self.stalled(cx).map(Err),
        }
    }
    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, bufs) {
            std::task::Poll::Ready(r) => {
                self.sleep = None;
                std::task::Poll::Ready(r)
            }
            std::task::Poll::Pending => self.stalled(cx).map(Err),
        }
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match std::pin::Pin::new(&mut self.inner).poll_flush(cx) {
            std::task::Poll::Ready(r) => {
                self.sleep = None;
                std::task::Poll::Ready(r)
            }
            std::task::Poll::Pending => self.stalled(cx).map(Err),
        }
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        // (a shutdown first writes what a stream still holds: `batch_write::Plain`)
        match std::pin::Pin::new(&mut self.inner).poll_shutdown(cx) {
            std::task::Poll::Ready(r) => {
                self.sleep = None;
                std::task::Poll::Ready(r)
            }
            std::task::Poll::Pending => self.stalled(cx).map(Err),
        }
    }
}

/// Whether an error (or one of its causes) is a write timeout of [`WriteTimed`].
pub fn is_write_timeout(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(c) = cur {
        if let Some(io) = c.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::TimedOut
        {
            return true;
        }
        cur = c.source();
    }
    false
}

/// A byte stream to an upstream (plain TCP or TLS).
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

/// Pool key: Kong's `ip|port` for cleartext, `ip|port|sni|tls settings` for TLS.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PoolKey {
    /// Peer address.
    pub addr: SocketAddr,
    /// `None` for cleartext.
    pub tls: Option<TlsKey>,
}

/// The TLS part of a [`PoolKey`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TlsKey {
    /// The server name sent (SNI); `None` for an IP (no SNI, the IP is verified).
    pub sni: Option<Arc<str>>,
    /// [`UpstreamTls::policy`]: verification, depth, CAs, client certificate.
    pub policy: u64,
}

/// An idle connection and what the pool knows of it.
struct Idle<C> {
    conn: C,
    /// When it went back to the pool.
    since: Instant,
    /// Requests it carried.
    uses: u32,
}

/// A connection the keep-alive pool can hold.
trait Keep {
    /// Whether the peer closed it (or it failed) while it was idle.
    fn is_closed(&mut self) -> bool;
    /// The key it is kept under.
    fn key(&self) -> &PoolKey;
}

/// An idle HTTP/1.1 connection: the checked-out connection's own box, kept as it is (its
/// key, write timeout and deadline included), so that taking it and giving it back moves a
/// pointer.
struct H1Idle(Box<ConnState>);

impl Keep for H1Idle {
    fn is_closed(&mut self) -> bool {
        self.0.h1.is_closed()
    }
    fn key(&self) -> &PoolKey {
        &self.0.key
    }
}

impl Keep for H2Idle {
    fn is_closed(&mut self) -> bool {
        self.tx.is_closed()
    }
    fn key(&self) -> &PoolKey {
        &self.key
    }
}

/// Pool maps hash their keys (a few words each, not attacker-chosen: addresses from the
/// configuration and DNS) with FxHash rather than SipHash, which cost more than the lookup
/// itself on every request.
type KeyMap<V> = rustc_hash::FxHashMap<PoolKey, V>;

/// The keep-alive settings: Kong's `upstream_keepalive_pool_size`,
/// `upstream_keepalive_idle_timeout` and `upstream_keepalive_max_requests`.
#[derive(Debug, Clone, Copy)]
struct Limits {
    max_idle: usize,
    idle_timeout: Duration,
    max_requests: u32,
}

/// The idle connections of one protocol, per key, the most recently returned last (taken
/// first, as nginx's keep-alive cache takes its most recent). A connection is in here only
/// while no request uses it.
struct IdleLists<C>(Mutex<KeyMap<Vec<Idle<C>>>>);

impl<C: Keep> IdleLists<C> {
    fn new() -> Self {
        IdleLists(Mutex::new(KeyMap::default()))
    }

    /// The most recent idle connection for `key` still open and idle for no longer than
    /// the idle timeout, with its count of requests; older or closed ones met on the way
    /// are dropped (closed).
    fn take(&self, key: &PoolKey, now: Instant, limits: &Limits) -> Option<(C, u32)> {
        let mut idle = self.0.lock().ok()?;
        let list = idle.get_mut(key)?;
        while let Some(mut c) = list.pop() {
            if now.saturating_duration_since(c.since) > limits.idle_timeout || c.conn.is_closed() {
                continue;
            }
            return Some((c.conn, c.uses));
        }
        None
    }

    /// Keeps `conn`, which has just finished a request, unless it carried
    /// `max_requests` requests (`uses` counts that one) or its key already has `max_idle`
    /// idle connections: it is then dropped, which closes it.
    fn put(&self, conn: C, uses: u32, limits: &Limits) {
        if uses >= limits.max_requests {
            return;
        }
        if let Ok(mut idle) = self.0.lock() {
            // (the key is cloned only for a key met for the first time)
            let list = match idle.get_mut(conn.key()) {
                Some(l) => l,
                None => idle.entry(conn.key().clone()).or_default(),
            };
            if list.len() < limits.max_idle {
                list.push(Idle {
                    conn,
                    since: Instant::now(),
                    uses,
                });
            }
        }
    }

    /// Drops the connections past the idle timeout or closed.
    fn sweep(&self, limits: &Limits) {
        if let Ok(mut idle) = self.0.lock() {
            for list in idle.values_mut() {
                list.retain_mut(|c| {
                    c.since.elapsed() <= limits.idle_timeout && !c.conn.is_closed()
                });
            }
            idle.retain(|_, l| !l.is_empty());
        }
    }

    fn count(&self) -> usize {
        self.0
            .lock()
            .map(|i| i.values().map(Vec::len).sum())
            .unwrap_or(0)
    }
}

/// Keep-alive pool of upstream connections, HTTP/1.1 and HTTP/2 apart, both under the same
/// settings.
pub struct Pool {
    h1: IdleLists<H1Idle>,
    h2: IdleLists<H2Idle>,
    limits: Limits,
    /// New plain connections defer small requests ([`crate::batch_write`]).
    batch_writes: bool,
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// A checked-out HTTP/1.1 connection; give it back with [`Pool::put`].
///
/// Boxed: a connection moves from the pool through each step of a request (the try, the
/// answer's body) and back, a pointer each time rather than the 200-odd bytes of its state;
/// the box is made once, when the connection is opened, and kept while it is pooled.
pub struct Conn(Box<ConnState>);

impl std::ops::Deref for Conn {
    type Target = ConnState;
    fn deref(&self) -> &ConnState {
        &self.0
    }
}

impl std::ops::DerefMut for Conn {
    fn deref_mut(&mut self) -> &mut ConnState {
        &mut self.0
    }
}

/// A [`Conn`]'s state.
pub struct ConnState {
    /// The connection.
    pub h1: H1Conn,
    /// The key it belongs to.
    pub key: PoolKey,
    uses: u32,
    /// The connection's write timeout (ms), set per request.
    pub write_timeout: Arc<AtomicU64>,
    /// The deadline of the answer's head, set per request ([`Deadline::arm`]); kept with
    /// the connection so that its timer is too.
    pub read_deadline: Option<Deadline>,
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

/// A checked-out HTTP/2 connection, carrying one request at a time as nginx's gRPC
/// module does; give it back with [`Pool::put_h2`] once its request was taken whole and
/// its answer read whole. Dropped, it is closed at once, with every task that serves it.
pub struct H2Conn {
    /// Where requests go.
    pub tx: hyper::client::conn::http2::SendRequest<H2ReqBody>,
    /// The key it belongs to.
    pub key: PoolKey,
    uses: u32,
    /// The connection's write timeout (ms), set per request.
    pub write_timeout: Arc<AtomicU64>,
    /// Whether it came from the pool (a request it does not take may then go on another).
    pub reused: bool,
    closer: Closer,
}

impl fmt::Debug for H2Conn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("H2Conn")
            .field("key", &self.key)
            .field("reused", &self.reused)
            .finish_non_exhaustive()
    }
}

/// What an idle HTTP/2 connection keeps.
struct H2Idle {
    key: PoolKey,
    tx: hyper::client::conn::http2::SendRequest<H2ReqBody>,
    write_timeout: Arc<AtomicU64>,
    closer: Closer,
}

/// Ends every task of one HTTP/2 connection when dropped (the connection's driver, which
/// owns the socket, and hyper's per-request tasks), so that a connection the pool does not
/// keep is closed at once rather than when hyper's last reference to it goes.
struct Closer(tokio_util::sync::CancellationToken);

impl Drop for Closer {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

/// The executor of one HTTP/2 connection's tasks: tokio's, each task ending when the
/// connection's [`Closer`] is dropped.
#[derive(Clone)]
struct ConnExec(tokio_util::sync::CancellationToken);

impl<F> hyper::rt::Executor<F> for ConnExec
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, fut: F) {
        let token = self.0.clone();
        tokio::spawn(async move {
            token.run_until_cancelled(fut).await;
        });
    }
}

impl Pool {
    /// A pool with Kong's keep-alive settings: at most `max_idle` idle connections per key
    /// and protocol, each closed after `idle_timeout` idle or `max_requests` requests. As
    /// Kong reads them, a `max_idle` of 0 keeps no connection, and an `idle_timeout` or
    /// `max_requests` of 0 is no limit.
    pub fn new(max_idle: usize, idle_timeout: Duration, max_requests: u32) -> Pool {
        Pool {
            h1: IdleLists::new(),
            h2: IdleLists::new(),
            limits: Limits {
                max_idle,
                idle_timeout: if idle_timeout.is_zero() {
                    Duration::MAX
                } else {
                    idle_timeout
                },
                max_requests: if max_requests == 0 {
                    u32::MAX
                } else {
                    max_requests
                },
            },
            batch_writes: true,
        }
    }

    /// Whether new plain HTTP/1.1 connections write small requests at the end of the
    /// scheduler's batch (on a current-thread runtime; default on).
    pub fn with_batch_writes(mut self, on: bool) -> Pool {
        self.batch_writes = on;
        self
    }

    /// An idle HTTP/1.1 connection for `key`, if one is alive (`now`: a clock reading of
    /// the caller).
    pub fn take(&self, key: &PoolKey, now: Instant) -> Option<Conn> {
        let (H1Idle(mut c), uses) = self.h1.take(key, now, &self.limits)?;
        // (its key is `key`: it was kept under its own)
        c.uses = uses;
        c.reused = true;
        Some(Conn(c))
    }

    /// Gives an HTTP/1.1 connection back after its response was read to the end.
    pub fn put(&self, c: Conn) {
        if c.h1.has_leftover() {
            return;
        }
        let Conn(state) = c;
        let uses = state.uses + 1;
        self.h1.put(H1Idle(state), uses, &self.limits);
    }

    /// An idle HTTP/2 connection for `key`, if one is alive (`now`: a clock reading of the
    /// caller). It is the caller's alone until given back.
    pub fn take_h2(&self, key: &PoolKey, now: Instant) -> Option<H2Conn> {
        let (c, uses) = self.h2.take(key, now, &self.limits)?;
        Some(H2Conn {
            tx: c.tx,
            // (kept under its own key, which is `key`)
            key: c.key,
            uses,
            write_timeout: c.write_timeout,
            reused: true,
            closer: c.closer,
        })
    }

    /// Gives an HTTP/2 connection back after its answer was read to the end of its stream
    /// (trailers included), hyper having taken the last part of its request body
    /// ([`RequestSent`]). A connection that failed, timed out, was left mid-stream or whose
    /// answer ended before its request must be dropped instead: that closes it.
    pub fn put_h2(&self, c: H2Conn) {
        if c.tx.is_closed() {
            return;
        }
        let idle = H2Idle {
            key: c.key,
            tx: c.tx,
            write_timeout: c.write_timeout,
            closer: c.closer,
        };
        self.h2.put(idle, c.uses + 1, &self.limits);
    }

    /// Drops idle connections past their idle timeout or closed by their peer.
    pub fn sweep(&self) {
        self.h1.sweep(&self.limits);
        self.h2.sweep(&self.limits);
    }

    /// Number of idle connections, both protocols (for tests and metrics).
    pub fn idle_count(&self) -> usize {
        self.h1.count() + self.h2.count()
    }

    /// Opens a byte stream to `key` within `timeout`; `tls` is required when `key.tls` is
    /// set.
    pub async fn connect_io(
        &self,
        key: &PoolKey,
        tls: Option<&UpstreamTls>,
        timeout: Duration,
        h2: bool,
        write_timeout: &Arc<AtomicU64>,
    ) -> Result<WriteTimed<Box<dyn Io>>, Error> {
        let (io, _) = self.connect_raw(key, tls, timeout, h2, false).await?;
        Ok(WriteTimed {
            inner: io,
            timeout_ms: write_timeout.clone(),
            sleep: None,
        })
    }

    async fn connect_raw(
        &self,
        key: &PoolKey,
        tls: Option<&UpstreamTls>,
        timeout: Duration,
        h2: bool,
        deferrable: bool,
    ) -> Result<(Box<dyn Io>, Option<crate::batch_write::Slot>), Error> {
        // (one deadline for the connect and the TLS handshake, as nginx arms one timer for
        // both: `ngx_ssl_handshake`'s only when none is set)
        let deadline = tokio::time::Instant::now() + timeout;
        let tcp = match tokio::time::timeout_at(deadline, TcpStream::connect(key.addr)).await {
            Err(_) => return Err(Error::upstream(Kind::ConnectTimeout).retryable()),
            Ok(Err(e)) => return Err(Error::upstream(Kind::ConnectRefused).retryable().because(e)),
            Ok(Ok(s)) => s,
        };
        let _ = tcp.set_nodelay(true);
        let (Some(tk), Some(t)) = (&key.tls, tls) else {
            if deferrable && crate::batch_write::available() {
                let (plain, slot) = crate::batch_write::Plain::upstream(tcp);
                return Ok((Box::new(plain), Some(slot)));
            }
            return Ok((Box::new(tcp), None));
        };
        let cfg = if h2 { t.h2.clone() } else { t.h1.clone() };
        let name = match &tk.sni {
            None => rustls::pki_types::ServerName::IpAddress(key.addr.ip().into()),
            Some(sni) => rustls::pki_types::ServerName::try_from(sni.to_string())
                .map_err(|e| Error::upstream(Kind::UpstreamTls).because(e))?,
        };
        let tls = tokio_rustls::TlsConnector::from(cfg);
        match tokio::time::timeout_at(deadline, tls.connect(name, tcp)).await {
            Err(_) => Err(Error::upstream(Kind::ConnectTimeout).retryable()),
            // A failed handshake, a certificate that fails verification included, is tried
            // again on the next peer, as nginx's `ngx_http_upstream_ssl_handshake` goes to
            // the next upstream (`error`) on a verify or name-check failure.
            Ok(Err(e)) => Err(Error::upstream(Kind::UpstreamTls).because(e).retryable()),
            Ok(Ok(s)) => Ok((Box::new(s), None)),
        }
    }

    /// A new HTTP/1.1 connection.
    pub async fn connect_h1(
        &self,
        key: &PoolKey,
        tls: Option<&UpstreamTls>,
        timeout: Duration,
        write_timeout: Duration,
    ) -> Result<Conn, Error> {
        let wt = Arc::new(AtomicU64::new(write_timeout.as_millis() as u64));
        let (io, slot) = self
            .connect_raw(key, tls, timeout, false, self.batch_writes)
            .await?;
        let io = WriteTimed {
            inner: io,
            timeout_ms: wt.clone(),
            sleep: None,
        };
        Ok(Conn(Box::new(ConnState {
            h1: H1Conn::with_slot(io, slot),
            key: key.clone(),
            uses: 0,
            reused: false,
            write_timeout: wt,
            read_deadline: None,
        })))
    }

    /// A new HTTP/1.1 connection that can be upgraded (WebSocket); never pooled.
    pub async fn connect_upgradable(
        &self,
        key: &PoolKey,
        tls: Option<&UpstreamTls>,
        timeout: Duration,
        write_timeout: Duration,
    ) -> Result<hyper::client::conn::http1::SendRequest<ReqBody>, Error> {
        let wt = Arc::new(AtomicU64::new(write_timeout.as_millis() as u64));
        let io = self.connect_io(key, tls, timeout, false, &wt).await?;
        let (tx, conn) = hyper::client::conn::http1::Builder::new()
            .handshake(TokioIo::new(io))
            .await
            .map_err(|e| Error::upstream(Kind::ConnectRefused).retryable().because(e))?;
        tokio::spawn(async move {
            let _ = conn.with_upgrades().await;
        });
        Ok(tx)
    }

    /// A new HTTP/2 connection (ALPN `h2` over TLS, prior knowledge in cleartext).
    pub async fn connect_h2(
        &self,
        key: &PoolKey,
        tls: Option<&UpstreamTls>,
        timeout: Duration,
        write_timeout: Duration,
    ) -> Result<H2Conn, Error> {
        let wt = Arc::new(AtomicU64::new(write_timeout.as_millis() as u64));
        let io = self.connect_io(key, tls, timeout, true, &wt).await?;
        let token = tokio_util::sync::CancellationToken::new();
        let exec = ConnExec(token.clone());
        let closer = Closer(token);
        let (tx, conn) = hyper::client::conn::http2::Builder::new(exec.clone())
            .timer(hyper_util::rt::TokioTimer::new())
            .handshake(TokioIo::new(io))
            .await
            .map_err(|e| {
                Error::new(Kind::ConnectRefused, Source::Upstream)
                    .retryable()
                    .because(e)
            })?;
        hyper::rt::Executor::execute(&exec, async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "upstream h2 connection ended");
            }
        });
        Ok(H2Conn {
            tx,
            key: key.clone(),
            uses: 0,
            write_timeout: wt,
            reused: false,
            closer,
        })
    }
}

/// Whether a service protocol talks HTTP/2 to the upstream.
pub fn is_h2(p: Protocol) -> bool {
    matches!(p, Protocol::Grpc | Protocol::Grpcs)
}

#[cfg(test)]
mod tests {
    use super::{BodyTimedOut, H2_PART, H2ReqBody, RequestSent, broken_framing};
    use bytes::Bytes;
    use http_body::Body;
    use http_body_util::{BodyExt, Either, Full};

    #[test]
    fn framing_errors_are_told_from_a_client_gone() {
        use std::io::{Error, ErrorKind};
        #[derive(Debug, thiserror::Error)]
        #[error("body error")]
        struct Wrapper(#[source] Error);
        for (kind, framing) in [
            (ErrorKind::InvalidInput, true),
            (ErrorKind::InvalidData, true),
            (ErrorKind::UnexpectedEof, false),
            (ErrorKind::ConnectionReset, false),
        ] {
            let e = Wrapper(Error::new(kind, "x"));
            assert_eq!(broken_framing(&e), framing, "{kind:?}");
            assert_eq!(broken_framing(&Error::new(kind, "x")), framing, "{kind:?}");
        }
        assert!(!broken_framing(&BodyTimedOut));
    }

    /// A body held in full goes to an HTTP/2 connection in parts of at most 16 KiB, the
    /// same bytes in order, and counts as sent only when its last part is taken.
    #[tokio::test]
    async fn a_full_body_goes_in_parts_and_is_sent_at_its_last() {
        let data: Bytes = (0..40 * 1024).map(|i| (i % 251) as u8).collect();
        let sent = RequestSent::default();
        let mut b = H2ReqBody::new(Either::Right(Full::new(data.clone())), sent.clone());
        assert_eq!(b.size_hint().exact(), Some(data.len() as u64));
        let mut got = Vec::new();
        let mut sizes = Vec::new();
        while let Some(f) = b.frame().await {
            let d = f.unwrap().into_data().unwrap();
            assert_eq!(sent.taken(), b.is_end_stream(), "after {} bytes", got.len());
            sizes.push(d.len());
            got.extend_from_slice(&d);
        }
        assert_eq!(sizes, [H2_PART, H2_PART, 8 * 1024]);
        assert_eq!(got, data);
        assert!(sent.taken());
        assert!(b.into_unsent().is_none(), "asked for: not sent again");
    }

    /// An empty body goes with the request's head: it is sent at once (hyper never asks
    /// for it), and untouched it can go on another connection.
    #[test]
    fn an_empty_body_is_sent_with_its_head() {
        let sent = RequestSent::default();
        let b = H2ReqBody::new(Either::Right(Full::new(Bytes::new())), sent.clone());
        assert!(sent.taken());
        assert!(b.into_unsent().is_some());
        let sent = RequestSent::default();
        let b = H2ReqBody::new(Either::Right(Full::new(Bytes::from("x"))), sent.clone());
        assert!(!sent.taken());
        assert!(b.into_unsent().is_some(), "not asked for yet");
    }
}
