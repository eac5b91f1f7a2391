//! The request path. Phases, in order (Kong's names in parentheses):
//!
//! 1. **rewrite**: request id, strict HTTP/1 framing checks (duplicate or non-numeric
//!    `Content-Length`, `Content-Length` with `Transfer-Encoding`), body size limit.
//! 2. **route** (router): one snapshot load; the router matches method, host, path,
//!    headers, SNI. No match is 404.
//! 3. **access** (runloop `before`): https-only routes (426 or redirect), gRPC checks
//!    (415/426, gRPCs-only), route without service (503).
//! 4. **balancer**: the snapshot's [`Balancer`](crate::upstream::Balancer) picks a peer per
//!    attempt; connect failures are retried up to the service's `retries` on the next pick.
//! 5. **upstream request**: path (strip_path, service path, path_handling, escaped, query
//!    appended), Host (`preserve_host`), `X-Forwarded-*`, `X-Real-IP`, `Via`,
//!    `X-Kong-Request-Id`, hop-by-hop headers removed; the body read whole first when the
//!    route asks for `request_buffering` and it ends within `request_buffer_limit` (sent
//!    by length, announced or not), else streamed ([`client_body`]).
//! 6. **header_filter**: hop-by-hop response headers removed (as Kong's header filter
//!    removes them: an `Upgrade` stays when it is the one asked), `Via`, `Server`,
//!    `X-Kong-Upstream-Latency`, `X-Kong-Proxy-Latency`, `X-Kong-Request-Id`.
//! 7. **body_filter**: with the route's `response_buffering` (Kong's default), a response
//!    from an HTTP/1.1 upstream with a `Content-Length` up to `response_buffer_limit` is read
//!    whole first (its connection goes back to the pool at once; a body cut short is a 502);
//!    otherwise the body streams through with the read timeout between chunks and the
//!    upstream connection goes back to the pool at its end.
//! 8. **log**: metrics.
//!
//! Every failure is an [`Error`] whose kind gives Kong's status and message; the body format
//! follows the client's `Accept` ([`Format`]).

use std::cell::Cell;
use std::hash::{BuildHasher, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderName};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri, Version};
use http_body::Body as _;
use http_body_util::{BodyExt, Either, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use silverback_config::{Protocol, Route, Service};
use silverback_router::{RequestView, Scheme};

use crate::body::{H2Body, ProxyBody, UpBody, UpstreamBody};
use crate::deadline::Deadline;
use crate::error::{Error, Format, Kind, Source, grpc_headers};
use crate::gateway::{ListenerKind, Shared};
use crate::h1_client::{ClientHead, ExchangeError, Named, RawBody, RawHead, SendBody, SetHeaders};
use crate::metrics::{Latencies, Log, RouteStats};
use crate::snapshot::Snapshot;
use crate::upstream::{PoolKey, ReqBody, TlsKey, UpstreamTls, is_h2, no_peer};
use silverback_balancer::{Outcome as BalancerOutcome, PickContext};

/// What the proxy knows about the client connection.
#[derive(Debug)]
pub struct ConnInfo {
    /// Client address.
    pub peer: SocketAddr,
    /// Local address.
    pub local: SocketAddr,
    /// Whether the connection is TLS.
    pub tls: bool,
    /// TLS server name sent by the client.
    pub sni: Option<Box<str>>,
    /// The addresses of the connection's PROXY protocol header, on `proxy_protocol`
    /// listeners.
    pub proxied: Option<crate::proxy_protocol::Addresses>,
    /// The client IP as a header value (`X-Forwarded-For`, `X-Real-IP`), built once per
    /// connection.
    pub(crate) peer_ip: HeaderValue,
    /// The port clients reach the listener on: the local port, through `port_maps` (Kong's
    /// `ctx.host_port`), for the router's `net.dst.port` and `X-Forwarded-Port`.
    client_port: u16,
    /// [`ConnInfo::client_port`] as a header value (`X-Forwarded-Port`).
    local_port: HeaderValue,
    /// The requests made on the connection so far (nginx's `c->requests`).
    requests: std::sync::atomic::AtomicU64,
    /// Asks hyper's side of the connection to shut down gracefully (an HTTP/2 connection
    /// that reached `keepalive_requests`, or the framing guard once it refused a head).
    pub(crate) close: Arc<tokio::sync::Notify>,
}

impl ConnInfo {
    /// What is known about a connection once accepted (and after the TLS handshake).
    pub fn new(peer: SocketAddr, local: SocketAddr, tls: bool, sni: Option<Box<str>>) -> ConnInfo {
        let peer_ip =
            HeaderValue::from_str(&peer.ip().to_string()).unwrap_or(HeaderValue::from_static(""));
        ConnInfo {
            peer,
            local,
            tls,
            sni,
            proxied: None,
            peer_ip,
            client_port: local.port(),
            local_port: HeaderValue::from(local.port()),
            requests: std::sync::atomic::AtomicU64::new(0),
            close: Arc::default(),
        }
    }

    /// Counts a request on the connection: whether it is the last one it takes
    /// (`keepalive_requests`, nginx's: the request that reaches the limit is answered, and
    /// the connection closed after it, or an HTTP/2 one shut down gracefully).
    pub(crate) fn last_request(&self, keepalive_requests: u64) -> bool {
        self.requests.fetch_add(1, Relaxed) + 1 >= keepalive_requests
    }

    /// Applies `port_maps`: the port clients reach this connection's listener on.
    pub fn map_port(&mut self, maps: &crate::settings::PortMaps) {
        let p = maps.client_port(self.local.port());
        if p != self.client_port {
            self.client_port = p;
            self.local_port = HeaderValue::from(p);
        }
    }
}

struct Ctx {
    start: Instant,
    rid: HeaderValue,
    /// The body format of an error of the gateway's own phases (`kong.response.error`).
    format: Format,
    /// The body format of an error nginx raises in Kong ([`Kind::nginx_error`]).
    nginx_format: Format,
    stats: Option<Arc<RouteStats>>,
    /// The response came from the upstream.
    proxied: bool,
    /// The request went past the access phase (Kong's `KONG_PROXIED`): an answer that is
    /// not an error of Kong's (a client gone, 499; a stalled body, 408) then has the
    /// source `service`.
    past_access: bool,
    /// When the last try toward the upstream began (the end of Kong's balancer phase, as
    /// the answer's `X-Kong-Proxy-Latency` counts it), for the headers of an nginx error
    /// after it; and whether the service is gRPC (its `Via` names HTTP/2).
    access_end: Option<Instant>,
    service_h2: bool,
    /// The hash cookie the balancer generated for this request (`hash_on: cookie`, the
    /// client sent none): Kong's header filter sets it on every answer past the access
    /// phase, nginx's error pages included.
    hash_cookie: Option<Box<silverback_balancer::SetCookie>>,
    /// The request's head bytes (counted as ingress once routed).
    head_bytes: u64,
    /// Once the upstream answered: its time to the answer head (ms), and the time to the
    /// try's start (ms, Kong's proxy latency), as the answer's headers give them.
    upstream: Option<(u64, u64)>,
    /// The request was answered (or left unanswered on purpose) and counted: a context
    /// dropped before is a request whose client went away.
    done: bool,
    /// The answer opened a tunnel (a 101), which records the request's log when it ends.
    tunnelled: bool,
    /// The request's access log line, when the proxy listeners log
    /// ([`crate::access_log`]): written once the answer ends.
    access: Option<Box<crate::access_log::Entry>>,
}

impl Drop for Ctx {
    /// A routed request dropped before its answer (the client went away, and the
    /// connection with it): counted as nginx logs it, 499, with the latencies so far.
    fn drop(&mut self) {
        if self.done {
            return;
        }
        if let Some(mut e) = self.access.take() {
            e.status = 499;
            e.finish(0);
        }
        if let Some(stats) = self.stats.take() {
            stats.response(499, self.past_access);
            drop(Log::new(stats, self.start, self.latencies()));
        }
    }
}

impl Ctx {
    /// A request's context as it starts: now, with a new request id, the error formats,
    /// and the head's size; nothing routed, tried or answered yet.
    fn new(format: Format, nginx_format: Format, head_bytes: u64) -> Ctx {
        Ctx {
            start: Instant::now(),
            rid: request_id(),
            format,
            nginx_format,
            stats: None,
            proxied: false,
            past_access: false,
            access_end: None,
            service_h2: false,
            hash_cookie: None,
            head_bytes,
            upstream: None,
            done: false,
            tunnelled: false,
            access: None,
        }
    }

    /// Kong's `latencies.kong` and `latencies.proxy` as they stand now ([`Latencies`]):
    /// past the access phase, the time to the last try's start, and the upstream's time to
    /// its answer head, or the wait since that start when it gave none (an error page, a
    /// client gone).
    fn latencies(&self) -> Latencies {
        if let Some((upstream, proxy)) = self.upstream {
            return Latencies {
                kong: Some(proxy),
                upstream: Some(upstream),
            };
        }
        if !self.past_access {
            return Latencies::default();
        }
        let end = self.access_end.unwrap_or(self.start);
        Latencies {
            kong: Some(ms(end.saturating_duration_since(self.start))),
            upstream: Some(ms(end.elapsed())),
        }
    }
}

static X_KONG_REQUEST_ID: Named = Named::new("x-kong-request-id", b"X-Kong-Request-Id");
static X_KONG_UPSTREAM_LATENCY: Named =
    Named::new("x-kong-upstream-latency", b"X-Kong-Upstream-Latency");
static X_KONG_PROXY_LATENCY: Named = Named::new("x-kong-proxy-latency", b"X-Kong-Proxy-Latency");
static X_KONG_RESPONSE_LATENCY: HeaderName = HeaderName::from_static("x-kong-response-latency");
static X_KONG_UPSTREAM_STATUS: Named =
    Named::new("x-kong-upstream-status", b"X-Kong-Upstream-Status");
static X_FORWARDED_FOR: Named = Named::new("x-forwarded-for", b"X-Forwarded-For");
static X_FORWARDED_PROTO: Named = Named::new("x-forwarded-proto", b"X-Forwarded-Proto");
static X_FORWARDED_HOST: Named = Named::new("x-forwarded-host", b"X-Forwarded-Host");
static X_FORWARDED_PORT: Named = Named::new("x-forwarded-port", b"X-Forwarded-Port");
static X_FORWARDED_PATH: Named = Named::new("x-forwarded-path", b"X-Forwarded-Path");
static X_FORWARDED_PREFIX: Named = Named::new("x-forwarded-prefix", b"X-Forwarded-Prefix");
static X_REAL_IP: Named = Named::new("x-real-ip", b"X-Real-IP");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
/// Values made once (`from_static` checks its bytes each time it runs).
static KEEP_ALIVE_VALUE: HeaderValue = HeaderValue::from_static("keep-alive");
static HTTP_VALUE: HeaderValue = HeaderValue::from_static("http");
static HTTPS_VALUE: HeaderValue = HeaderValue::from_static("https");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
static PROXY: HeaderName = HeaderName::from_static("proxy");
static X_ACCEL_BUFFERING: HeaderName = HeaderName::from_static("x-accel-buffering");
// standard names as statics, for `SetHeaders` (which holds `&'static` names with the case
// Kong's nginx writes them in)
static TE: Named = Named::new("te", b"TE");
static CONNECTION: Named = Named::new("connection", b"Connection");
static UPGRADE: Named = Named::new("upgrade", b"Upgrade");
static VIA: Named = Named::new("via", b"Via");
static TRAILER: Named = Named::new("trailer", b"Trailer");
static SERVER: Named = Named::new("server", b"Server");
static SET_COOKIE: Named = Named::new("set-cookie", b"Set-Cookie");

thread_local! {
    static RNG: Cell<u64> = Cell::new({
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(std::process::id() as u64);
        h.finish() | 1
    });
}

fn next_u64() -> u64 {
    RNG.with(|c| {
        // xorshift64*
        let mut x = c.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        c.set(x);
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    })
}

/// Two lowercase hex digits of each byte value. (`hex::encode_to_slice`, nibble by nibble,
/// measured 165 more instructions per proxied request.)
static HEX_PAIRS: [[u8; 2]; 256] = {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut t = [[0u8; 2]; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = [HEX[i >> 4], HEX[i & 0xf]];
        i += 1;
    }
    t
};

/// How many request ids share one allocation.
/// (Each id keeps its block alive: a small block bounds what a long-lived request holds.)
const IDS_PER_BLOCK: usize = 16;

thread_local! {
    /// Room for the next request ids: each is split off as a shared `Bytes` (one allocation
    /// per [`IDS_PER_BLOCK`] ids, and their clones only count references).
    static ID_BLOCK: std::cell::RefCell<bytes::BytesMut> =
        std::cell::RefCell::new(bytes::BytesMut::new());
}

/// A request id: 32 lowercase hex digits, as Kong's `$kong_request_id`.
pub fn request_id() -> HeaderValue {
    let mut out = [0u8; 32];
    for (i, w) in [next_u64(), next_u64()].into_iter().enumerate() {
        for (j, b) in w.to_be_bytes().into_iter().enumerate() {
            let at = i * 16 + j * 2;
            out[at..at + 2].copy_from_slice(&HEX_PAIRS[b as usize]);
        }
    }
    let id = ID_BLOCK.with(|block| {
        let mut block = block.borrow_mut();
        if block.capacity() < out.len() {
            *block = bytes::BytesMut::with_capacity(out.len() * IDS_PER_BLOCK);
        }
        block.extend_from_slice(&out);
        block.split_to(out.len()).freeze()
    });
    // Hex digits are always a valid header value.
    HeaderValue::from_maybe_shared(id).unwrap_or(HeaderValue::from_static("0"))
}

fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

fn num_header(n: u64) -> HeaderValue {
    // Latencies are mostly a few milliseconds: those values are static (no allocation).
    static SMALL: [HeaderValue; 10] = [
        HeaderValue::from_static("0"),
        HeaderValue::from_static("1"),
        HeaderValue::from_static("2"),
        HeaderValue::from_static("3"),
        HeaderValue::from_static("4"),
        HeaderValue::from_static("5"),
        HeaderValue::from_static("6"),
        HeaderValue::from_static("7"),
        HeaderValue::from_static("8"),
        HeaderValue::from_static("9"),
    ];
    match SMALL.get(n as usize) {
        Some(v) => v.clone(),
        None => HeaderValue::from(n),
    }
}

/// Entry point of the proxy listeners (hyper's server); `client`: the request's head as
/// received, when the framing guard kept it ([`crate::h1_guard::Heads`]).
pub(crate) async fn serve(
    sh: Arc<Shared>,
    conn: Arc<ConnInfo>,
    req: Request<Incoming>,
    mut client: Option<ClientHead>,
) -> Result<Response<ProxyBody>, crate::error::Unanswered> {
    let http10 = req.version() == Version::HTTP_10;
    let http11 = req.version() == Version::HTTP_11;
    let head_only = req.method() == Method::HEAD;
    let head_bytes = request_head_len(&req);
    // (hyper adds `connection: close` to the answer of a request that asked for it, the
    // token anywhere in a `Connection` list)
    let asks_close = http11
        && req.headers().get_all(header::CONNECTION).iter().any(|v| {
            v.as_bytes()
                .split(|&b| b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"))
        });
    // An HTTP/1.x body the phases leave unread comes back here, to be discarded
    // ([`crate::discard`]).
    let back = (req.version() <= Version::HTTP_11 && !http_body::Body::is_end_stream(req.body()))
        .then(crate::discard::Returned::default);
    // (a client waiting for `100 Continue` that gets the answer first may send its next
    // request instead of the body: its unread body is not discarded, the connection closes)
    let expects = req.headers().contains_key(header::EXPECT);
    let (parts, body) = req.into_parts();
    let body = Some(crate::discard::Unread::new(body, back.clone()));
    let last = conn.last_request(sh.settings.keepalive_requests);
    let http2 = parts.version == Version::HTTP_2;
    let mut head = Some(parts);
    let (answer, stats) = handle(&sh, &conn, (&mut head, body), head_bytes, client.as_mut()).await;
    let mut r = answer.into_response();
    if last {
        if http2 {
            // (nginx's GOAWAY once the stream that reached the limit is taken)
            conn.close.notify_one();
        } else {
            r.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
    }
    if crate::error::is_unanswered(&r) {
        return Err(crate::error::Unanswered);
    }
    let unread = back.and_then(|b| b.lock().ok().and_then(|mut s| s.take()));
    if let Some(body) = unread {
        if expects {
            r.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        } else if r
            .headers()
            .get(header::CONNECTION)
            .is_none_or(|v| v != "close")
        {
            tokio::spawn(crate::discard::discard(body));
        }
    }
    // nginx writes `Connection: keep-alive` on every HTTP/1.1 answer it keeps the
    // connection for, before a `Connection` Kong sets (`Upgrade` on a 426); hyper writes
    // nothing then (and `close` itself when it closes)
    if http11
        && !asks_close
        && !sh.stopping.load(std::sync::atomic::Ordering::Relaxed)
        && !r.status().is_informational()
    {
        let h = r.headers_mut();
        match h.get(header::CONNECTION) {
            None => {
                h.insert(header::CONNECTION, KEEP_ALIVE_VALUE.clone());
            }
            Some(v) if v != "close" => {
                let own: Vec<HeaderValue> = h.get_all(header::CONNECTION).iter().cloned().collect();
                h.insert(header::CONNECTION, KEEP_ALIVE_VALUE.clone());
                for v in own {
                    h.append(header::CONNECTION, v);
                }
            }
            Some(_) => {}
        }
    }
    if let Some(stats) = stats {
        let mut sent = response_head_len(&r);
        if asks_close && !r.headers().contains_key(header::CONNECTION) {
            sent += "connection: close\r\n".len() as u64;
        }
        // (hyper sends no body to a HEAD request; a streamed body counts its own bytes)
        if !head_only {
            sent += r.body().complete_len();
        }
        stats.egress(sent);
    }
    // An HTTP/1.0 client cannot take a chunked answer: one of unknown length ends with the
    // connection, so the connection is not kept. (hyper adds `keep-alive` to an HTTP/1.1
    // answer for a keep-alive 1.0 client even beside `close`; an HTTP/1.0 answer without
    // `keep-alive` makes it close.)
    if http10
        && !r.headers().contains_key(header::CONTENT_LENGTH)
        && http_body::Body::size_hint(r.body()).exact().is_none()
    {
        *r.version_mut() = Version::HTTP_10;
        r.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    Ok(r)
}

/// The size of a request head as HTTP/1.1 encodes it (request line, headers, blank
/// line): nginx's `request_length` counts the head as read; hyper does not tell how many
/// bytes it read, so the head is measured as it would be written (for HTTP/2, whose head
/// is HPACK-coded, that is not what came over the wire).
pub(crate) fn request_head_len<B>(req: &Request<B>) -> u64 {
    let target = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().len())
        .unwrap_or(1);
    let target = if req.uri().scheme().is_some() && req.version() != Version::HTTP_2 {
        req.uri().to_string().len()
    } else {
        target
    };
    // "METHOD target HTTP/1.1\r\n" ... "\r\n"
    let mut n = req.method().as_str().len() + 1 + target + 11 + 2;
    for (name, value) in req.headers() {
        n += name.as_str().len() + 2 + value.len() + 2;
    }
    n as u64
}

/// The size of an answer's head as hyper will write it in HTTP/1.1 (status line, headers,
/// the `Date` and framing hyper adds, blank line): the exact bytes are not known on the
/// hyper path (for HTTP/2, HPACK-coded, they differ).
pub(crate) fn response_head_len(r: &Response<ProxyBody>) -> u64 {
    let reason = r
        .extensions()
        .get::<hyper::ext::ReasonPhrase>()
        .map(|p| p.as_bytes().len())
        .unwrap_or_else(|| r.status().canonical_reason().map_or(0, str::len));
    // "HTTP/1.1 200 OK\r\n"
    let mut n = 9 + 3 + 1 + reason + 2;
    for (name, value) in r.headers() {
        n += name.as_str().len() + 2 + value.len() + 2;
    }
    if !r.headers().contains_key(header::DATE) {
        // "date: " + IMF-fixdate + "\r\n"
        n += 6 + 29 + 2;
    }
    let framed = r.headers().contains_key(header::CONTENT_LENGTH)
        || r.headers().contains_key(header::TRANSFER_ENCODING);
    if !framed {
        n += match http_body::Body::size_hint(r.body()).exact() {
            Some(len) => 16 + itoa::Buffer::new().format(len).len() + 2,
            None => 26 + 2,
        };
    }
    (n + 2) as u64
}

/// One request through every phase: its head (`Some`, lent: the phases take it only to
/// send it to an HTTP/2 upstream, and keep the rest where it is) and its body (`None` for a
/// request without one: the HTTP/1.1 fast path, [`crate::h1_fast`], takes only those);
/// `head_bytes`: the size of its head. `client`: an HTTP/1.x request's head as received,
/// from which its headers go to an HTTP/1.1 upstream in their case and order
/// ([`ClientHead`]), lent rather than moved (the futures that carry the request stay
/// smaller). With the answer, for a request that matched a route, its counters, on which
/// the writer counts the answer's head bytes and a complete body's bytes as it sends them
/// (a streamed body counts its own, [`ProxyBody::attach_log`]).
// (an `async` block on purpose: see the comment at its start)
#[allow(clippy::manual_async_fn)]
pub(crate) fn handle(
    sh: &Arc<Shared>,
    conn: &ConnInfo,
    (head, body): (
        &mut Option<http::request::Parts>,
        Option<crate::discard::Unread>,
    ),
    head_bytes: u64,
    client: Option<&mut ClientHead>,
) -> impl std::future::Future<Output = (Answer, Option<Arc<RouteStats>>)> {
    // An `async` block, not an `async fn`, here and in the phases it calls (`proxy`,
    // `send`): an `async fn` copies each argument it takes by value into the future's own
    // locals before it starts (the request, its parts, its body: a few hundred bytes each,
    // for every request); an `async` block uses them where they were captured.
    async move {
        sh.metrics.requests.fetch_add(1, Relaxed);
        // (a head already taken is the proxy phase's internal error)
        let present = head.as_ref().map_or(
            Present {
                bits: 0,
                repeated: false,
            },
            |req| Present::of(&req.headers),
        );
        let mut cx = Ctx::new(Format::Json, sh.settings.error_default_type, head_bytes);
        let mut head_only = false;
        if let (Some(log), Some(req)) = (sh.access.get(ListenerKind::Proxy), head.as_ref()) {
            // (nginx's `$remote_addr` is `realip`'s)
            let trusted = sh.settings.is_trusted(conn.peer.ip());
            let remote = real_addr(sh, conn, &req.headers, trusted).ip();
            let text;
            let remote = if remote == conn.peer.ip() {
                conn.peer_ip.as_bytes()
            } else {
                text = remote.to_string();
                text.as_bytes()
            };
            cx.access = Some(log.begin(&crate::access_log::Request {
                remote,
                line: crate::access_log::Line::Parsed(&req.method, &req.uri, req.version),
                headers: Some(&req.headers),
                request_id: cx.rid.as_bytes(),
                tls: Some(conn.tls),
                hostname: &sh.hostname,
            }));
            head_only = req.method == Method::HEAD;
        }
        if present.has(Present::CONTENT_TYPE | Present::ACCEPT)
            && let Some(req) = head.as_ref()
        {
            cx.format = Format::negotiate(&req.headers, req.version == Version::HTTP_2);
            cx.nginx_format = Format::nginx_error(
                &req.headers,
                sh.settings.error_default_type,
                req.version == Version::HTTP_2,
            );
        }
        let mut unanswered: Option<StatusCode> = None;
        let resp = match proxy(sh, conn, (head, body, client), present, &mut cx).await {
            Ok(r) => r,
            Err(e) => {
                match e.source {
                    Source::Upstream => {
                        tracing::warn!(request_id = ?cx.rid, error = %e, "upstream failure")
                    }
                    Source::Internal => {
                        tracing::error!(request_id = ?cx.rid, error = %e, "internal failure")
                    }
                    Source::Downstream => {
                        tracing::debug!(request_id = ?cx.rid, error = %e, "bad request")
                    }
                }
                // A body that stalled past `client_body_timeout`, or whose connection ended:
                // nginx terminates the request and closes the connection without an answer;
                // its 408 or 400 is still logged and counted (`ngx_http_terminate_request` sets
                // the status), here below.
                if matches!(e.kind, Kind::RequestTimeout | Kind::ClientLeft) {
                    unanswered = Some(e.kind.status());
                    crate::error::unanswered().into()
                } else {
                    error_answer(sh, &cx, e).into()
                }
            }
        };
        cx.done = true;
        let mut access = cx.access.take();
        if let Some(e) = &mut access {
            e.status = unanswered.unwrap_or(resp.status()).as_u16();
        }
        // (the body bytes of a complete answer: nothing goes out unanswered, nor to a `HEAD`)
        let full = |resp: &Answer| match (resp, unanswered.is_some() || head_only) {
            (_, true) => 0,
            (Answer::Map(r), _) => r.body().complete_len(),
            (Answer::Raw(a), _) => a.body.complete_len(),
        };
        // Kong's exporter counts only requests that matched a route
        let Some(stats) = cx.stats.take() else {
            if let Some(e) = access {
                e.finish(full(&resp));
            }
            return (resp, None);
        };
        if !cx.proxied {
            let status = unanswered.unwrap_or(resp.status());
            // an unanswered 408 or 400 is no error page of Kong's: past the access phase its
            // source is the service's (`kong.response.get_source()`)
            stats.response(status.as_u16(), unanswered.is_some() && cx.past_access);
        }
        let mut resp = resp;
        let body = match &mut resp {
            Answer::Map(r) => r.body_mut(),
            Answer::Raw(a) => &mut a.body,
        };
        if matches!(body, ProxyBody::Upstream(_)) && unanswered.is_none() {
            // the latencies end with the streamed body
            body.attach_log(Log::new(stats.clone(), cx.start, cx.latencies()).with_access(access));
        } else if cx.tunnelled {
            // (recorded when the tunnel ends)
        } else {
            // a complete body: sent in one write, its time not waited for
            stats.answered(ms(cx.start.elapsed()), cx.latencies());
            if let Some(e) = access {
                e.finish(full(&resp));
            }
        }
        if unanswered.is_some() {
            // (nothing is sent)
            return (resp, None);
        }
        (resp, Some(stats))
    }
}

/// The answer to a request that failed with `e` before the upstream answered (Kong's or
/// nginx's error, by what raised it).
fn error_answer(sh: &Shared, cx: &Ctx, e: Error) -> Response<ProxyBody> {
    let status = e.kind.status();
    let mut r = if let Some(r) = nginx_answer(sh, cx, status.as_u16(), status) {
        r
    } else if e.kind.nginx_error() {
        let mut r = kong_error(sh, cx, cx.nginx_format, e.kind.status(), e.kind.message());
        if cx.nginx_format == Format::Grpc {
            // (Kong's error handler answers a gRPC request with `kong.response.exit` and a
            // table: `grpc-status` and `grpc-message`, no `Content-Type`, where its own
            // phases' `kong.response.error` sets `application/grpc`)
            r.headers_mut().remove(header::CONTENT_TYPE);
        }
        proxied_error_headers(sh, cx, e.kind.status(), r.headers_mut());
        r
    } else {
        response_error(sh, cx, e.kind.status(), &e.client_message())
    };
    // nginx closes the connection after a request it refuses (the request's framing
    // may be what it could not read): its special response handler ends keep-alive for a
    // 400, 413 or 501 before Kong's `error_page` takes the answer over
    if matches!(
        e.kind,
        Kind::BadRequest | Kind::PayloadTooLarge | Kind::NotImplemented | Kind::MethodNotAllowed
    ) {
        r.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    r
}

/// Why a request head was refused before any phase ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Malformed (nginx: 400).
    Bad,
    /// Over the header size or count limit (nginx's 494, which Kong sends as 400 with its
    /// own message).
    TooLarge,
    /// A transfer coding other than `chunked` (nginx: 501, answered with nginx's own page,
    /// since Kong's `error_page` lines leave 501 out).
    NotImplemented,
    /// A method nginx does not serve, `CONNECT` or `TRACE` (405).
    NotAllowed,
    /// A request line longer than a large header buffer (nginx: 414).
    UriTooLong,
    /// Plain HTTP on a TLS listener (nginx's 497, sent as 400 with nginx's own page: Kong's
    /// `error_page` lines leave 497 out).
    PlainHttp,
}

/// Kong's answer to a head refused before routing, on a listener of `kind`: 400 (or 405,
/// 414, 501 as [`Refusal`] says), the connection closed. Not for a `HEAD` request's framing:
/// the caller writes only the head of it then ([`crate::h1_fast::refusal_bytes`]).
///
/// On a proxy listener a 400, 405 or 414 goes through nginx's `error_page` to Kong's
/// handler, its body format taken from the `Accept` and `Content-Type` found in the head if
/// any; a 501 is nginx's own HTML page whatever they say ([`nginx_answer`]); the headers
/// Kong's header filter adds are on both.
///
/// Kong's admin and status servers have no `error_page` lines and run their header filter
/// inside `location /` only, which a head refused while nginx reads it never reaches: there
/// every refusal is nginx's own page for its code (a head past the buffers gets the page of
/// nginx's 494, sent as 400), as `text/html; charset=UTF-8` (those servers set `charset
/// UTF-8`), without `Server`, request id or latency headers (Kong's nginx writes no
/// `Server` of its own).
///
/// On every listener the request counts in nginx's request total (`kong_nginx_requests_total`)
/// and nowhere else: it matched no route, and Kong's exporter records no series for it.
pub(crate) fn refusal(
    sh: &Shared,
    accept: Option<&[u8]>,
    content_type: Option<&[u8]>,
    why: Refusal,
    kind: ListenerKind,
) -> Response<ProxyBody> {
    let proxied = kind == ListenerKind::Proxy;
    // (nginx counts the request on every server; it matched no route: no series of Kong's
    // exporter)
    sh.metrics.requests.fetch_add(1, Relaxed);
    // nginx's code for the refusal, and the status it is sent with
    let (code, status) = match why {
        Refusal::Bad => (400, StatusCode::BAD_REQUEST),
        Refusal::TooLarge => (494, StatusCode::BAD_REQUEST),
        Refusal::NotImplemented => (501, StatusCode::NOT_IMPLEMENTED),
        Refusal::NotAllowed => (405, StatusCode::METHOD_NOT_ALLOWED),
        Refusal::UriTooLong => (414, StatusCode::URI_TOO_LONG),
        Refusal::PlainHttp => (497, StatusCode::BAD_REQUEST),
    };
    if !proxied {
        tracing::debug!(reason = ?why, "request head refused");
        let page = crate::error::nginx_page(code).unwrap_or_default();
        return page_answer(status, page, "text/html; charset=UTF-8");
    }
    // (a head refused while read is HTTP/1's)
    let format =
        Format::nginx_error_of(accept, content_type, sh.settings.error_default_type, false);
    let mut cx = Ctx::new(format, format, 0);
    // (answered here, whatever the client does next)
    cx.done = true;
    tracing::debug!(request_id = ?cx.rid, reason = ?why, "request head refused");
    // Kong's message for the status, but for nginx's 494, which Kong sends as a 400
    let message = match why {
        Refusal::TooLarge => "Request header or cookie too large",
        _ => crate::error::status_message(status),
    };
    let mut r = match nginx_answer(sh, &cx, code, status) {
        Some(r) => r,
        None => kong_error(sh, &cx, format, status, message),
    };
    r.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    r
}

/// nginx's own answer, sent with `status`, to an error of nginx's `code` that Kong's proxy
/// server's `error_page` lines leave to it (501, and 497, plain HTTP on a TLS port, sent as
/// 400; [`crate::error::kong_handles`]): nginx's HTML page as `text/html` whatever the
/// request accepts ([`crate::error::nginx_page`]), the connection closed (nginx keeps no
/// connection alive after them), and the headers Kong's header filter, which runs on that
/// answer too in the proxy server, adds (`Server`, request id, latency, as `headers` says).
/// `None` for the codes Kong's handler renders.
fn nginx_answer(
    sh: &Shared,
    cx: &Ctx,
    code: u16,
    status: StatusCode,
) -> Option<Response<ProxyBody>> {
    if crate::error::kong_handles(code) {
        return None;
    }
    let page = crate::error::nginx_page(code)?;
    let mut r = page_answer(status, page, "text/html");
    kong_headers(sh, cx, r.headers_mut());
    Some(r)
}

/// An answer of nginx's `page` with `status`, as `content_type`, closing the connection.
pub(crate) fn page_answer(
    status: StatusCode,
    page: &'static str,
    content_type: &'static str,
) -> Response<ProxyBody> {
    let mut r = Response::new(ProxyBody::full(Bytes::from_static(page.as_bytes())));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CONNECTION, HeaderValue::from_static("close"));
    r
}

/// A response produced by the gateway itself, in Kong's error format.
fn kong_error(
    sh: &Shared,
    cx: &Ctx,
    format: Format,
    status: StatusCode,
    message: &str,
) -> Response<ProxyBody> {
    let mut r = Response::new(ProxyBody::full(
        format.body(message, cx.rid.to_str().unwrap_or("")),
    ));
    *r.status_mut() = status;
    let h = r.headers_mut();
    if let Some(ct) = format.content_type() {
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
    } else {
        grpc_headers(h, status, message);
    }
    kong_headers(sh, cx, h);
    r
}

/// A `kong.response.error(status, message)` response: the `Accept` template, or to a gRPC
/// request no body and the gRPC status's name as `grpc-message`.
fn response_error(sh: &Shared, cx: &Ctx, status: StatusCode, message: &str) -> Response<ProxyBody> {
    let message = if cx.format == Format::Grpc {
        crate::error::grpc_status_name(crate::error::grpc_status(status))
    } else {
        message
    };
    kong_error(sh, cx, cx.format, status, message)
}

/// The headers of an nginx error past Kong's access phase: Kong's `error_page` handler
/// restores the request's context, where `KONG_PROXIED` is set, so its header filter writes
/// a proxied answer's headers (`X-Kong-Upstream-Latency` for the wait so far,
/// `X-Kong-Proxy-Latency`, `Via`, `Server` in place of nginx's own, `X-Kong-Upstream-Status`
/// when enabled, and the balancer's hash cookie when it generated one), not
/// `X-Kong-Response-Latency`. Before the access phase ended, the headers [`kong_headers`]
/// wrote stay.
fn proxied_error_headers(sh: &Shared, cx: &Ctx, status: StatusCode, h: &mut HeaderMap) {
    if !cx.past_access {
        return;
    }
    // (an error before the first try, the client's body refused: the wait counts from the
    // request's start, the access phase's own time being next to nothing)
    let end = cx.access_end.unwrap_or(cx.start);
    let grpc = cx.service_h2;
    let on = &sh.settings.headers;
    h.remove(&X_KONG_RESPONSE_LATENCY);
    if on.upstream_latency {
        h.insert(
            X_KONG_UPSTREAM_LATENCY.name().clone(),
            num_header(ms(end.elapsed())),
        );
    }
    if on.proxy_latency {
        h.insert(
            X_KONG_PROXY_LATENCY.name().clone(),
            num_header(ms(end.saturating_duration_since(cx.start))),
        );
    }
    if on.via {
        let via = if grpc { &sh.via_h2 } else { &sh.via_h1 };
        h.insert(header::VIA, via.clone());
    }
    if on.upstream_status {
        h.insert(
            X_KONG_UPSTREAM_STATUS.name().clone(),
            HeaderValue::from(status.as_u16()),
        );
    }
    // (the header filter's `before`, which sets the hash cookie, runs for the error page too)
    if let Some(c) = &cx.hash_cookie
        && let Ok(v) = HeaderValue::from_str(&c.header_value())
    {
        h.append(SET_COOKIE.name().clone(), v);
    }
}

fn kong_headers(sh: &Shared, cx: &Ctx, h: &mut HeaderMap) {
    let on = &sh.settings.headers;
    if on.request_id {
        h.insert(X_KONG_REQUEST_ID.name().clone(), cx.rid.clone());
    }
    if on.response_latency {
        h.insert(
            X_KONG_RESPONSE_LATENCY.clone(),
            num_header(ms(cx.start.elapsed())),
        );
    }
    if on.server {
        h.insert(header::SERVER, sh.server.clone());
    }
}

/// Strict HTTP/1 framing: what hyper tolerates but a proxy must not forward.
fn check_framing(h: &HeaderMap) -> Result<Option<u64>, Error> {
    let bad = || Error::downstream(Kind::BadRequest);
    let mut cls = h.get_all(header::CONTENT_LENGTH).iter();
    let cl = match (cls.next(), cls.next()) {
        (None, _) => None,
        (Some(_), Some(_)) => return Err(bad()),
        (Some(v), None) => {
            let b = v.as_bytes();
            if b.is_empty() || b.len() > 19 || !b.iter().all(u8::is_ascii_digit) {
                return Err(bad());
            }
            std::str::from_utf8(b)
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
        }
    };
    let mut tes = h.get_all(header::TRANSFER_ENCODING).iter();
    if let Some(te) = tes.next() {
        if cl.is_some() || tes.next().is_some() {
            return Err(bad());
        }
        // Only `chunked` is understood (as nginx): `gzip, chunked` would reach the upstream
        // as a plain chunked body of compressed bytes. RFC 9112 §6.1: 501.
        if !te.as_bytes().trim_ascii().eq_ignore_ascii_case(b"chunked") {
            return Err(Error::downstream(Kind::NotImplemented));
        }
    }
    if h.get_all(header::HOST).iter().count() > 1 {
        return Err(bad());
    }
    Ok(cl)
}

/// Which of the request headers the phases read are present, found in one pass over the
/// names: most are absent, and a lookup of an absent name still hashes it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Present {
    bits: u16,
    /// Some name has more than one value.
    repeated: bool,
}

impl Present {
    const CONTENT_LENGTH: u16 = 1;
    const TRANSFER_ENCODING: u16 = 1 << 1;
    const TE: u16 = 1 << 2;
    const CONNECTION: u16 = 1 << 3;
    const UPGRADE: u16 = 1 << 4;
    const CONTENT_TYPE: u16 = 1 << 5;
    const ACCEPT: u16 = 1 << 6;
    const VIA: u16 = 1 << 7;
    const X_FORWARDED_FOR: u16 = 1 << 8;

    pub(crate) fn of(h: &HeaderMap) -> Present {
        let mut bits = 0;
        for n in h.keys() {
            bits |= if n == header::CONTENT_LENGTH {
                Self::CONTENT_LENGTH
            } else if n == header::TRANSFER_ENCODING {
                Self::TRANSFER_ENCODING
            } else if n == header::TE {
                Self::TE
            } else if n == header::CONNECTION {
                Self::CONNECTION
            } else if n == header::UPGRADE {
                Self::UPGRADE
            } else if n == header::CONTENT_TYPE {
                Self::CONTENT_TYPE
            } else if n == header::ACCEPT {
                Self::ACCEPT
            } else if n == header::VIA {
                Self::VIA
            } else if n == X_FORWARDED_FOR.name() {
                Self::X_FORWARDED_FOR
            } else {
                0
            };
        }
        Present {
            bits,
            repeated: h.len() != h.keys_len(),
        }
    }

    fn has(self, bits: u16) -> bool {
        self.bits & bits != 0
    }
}

fn has_proto(route: &Route, p: Protocol) -> bool {
    route.protocols.contains(&p)
}

/// Whether a request asks for a WebSocket upgrade: its first `Upgrade` is `websocket`, as
/// Kong reads `$http_upgrade`. Only such a request is sent upstream as an upgrade, as in
/// Kong (`Connection: keep-alive, Upgrade` and `Upgrade: websocket`, its `access` phase's
/// `$upstream_connection` and `$upstream_upgrade`); any other `Upgrade` (`h2c`, `TLS/1.2`)
/// is not passed on, so the upstream is asked for no other protocol.
///
/// A 101 from the upstream opens a tunnel only in answer to such a request; to any other
/// request it is a 502. That is stricter than Kong, where nginx's proxy module tunnels on a
/// 101 whenever the client sent any `Upgrade` (`ngx_http_proxy_process_header` sets
/// `u->upgrade` on `r->headers_in.upgrade`): a client that sent `Upgrade: foo` gets the 101
/// (with nginx's `Connection: upgrade` and without the upstream's `Upgrade`, which Kong's
/// header filter drops as it differs from the empty `$upstream_upgrade`) and a raw tunnel,
/// and one that sent no `Upgrade` gets the 101 followed by whatever the upstream sends, as
/// a body, until the upstream closes. The upstream was asked for no protocol switch in
/// either case, so its 101 breaks RFC 9110 §15.2.2; and a tunnel would carry the client's
/// later requests past the gateway's routing and plugins (as in h2c smuggling).
fn is_websocket(h: &HeaderMap) -> bool {
    h.get(header::UPGRADE)
        .is_some_and(|v| v.as_bytes().trim_ascii().eq_ignore_ascii_case(b"websocket"))
}

/// Whether a request header is one [`strip_hop_by_hop`] removes by name: the hop-by-hop
/// ones, and `Expect`, which nginx's proxy module never passes on (it sets it empty by
/// default; the gateway, like nginx, answers a `100-continue` itself).
fn is_hop_by_hop(n: &HeaderName, keep_upgrade: bool) -> bool {
    n == header::CONNECTION
        || n == header::EXPECT
        || n == header::TRANSFER_ENCODING
        || (!keep_upgrade && n == header::UPGRADE)
        || n == KEEP_ALIVE
        || n == PROXY_CONNECTION
        || n == PROXY
}

/// `prev, last`: a client's list with the gateway's entry after it, as bytes (a value that
/// is not text passes as it came, as in Kong).
fn appended(prev: &HeaderValue, last: &HeaderValue) -> Option<HeaderValue> {
    let mut v = Vec::with_capacity(prev.len() + 2 + last.len());
    v.extend_from_slice(prev.as_bytes());
    v.extend_from_slice(b", ");
    v.extend_from_slice(last.as_bytes());
    HeaderValue::from_bytes(&v).ok()
}

/// Removes a request's hop-by-hop headers (and those named in `Connection`) before it goes
/// upstream; `keep_upgrade` for a WebSocket upgrade. Each name removed is noted in the
/// client's head as received, if kept (its lines of that name are then left out). (An
/// answer's: [`strip_answer_hop_by_hop`].)
fn strip_hop_by_hop(h: &mut HeaderMap, keep_upgrade: bool, mut client: Option<&mut ClientHead>) {
    // One pass over the (few) names; only the names present are removed (a removal hashes).
    if !h.keys().any(|n| is_hop_by_hop(n, keep_upgrade)) {
        return;
    }
    // `close` names no header, `keep-alive` goes below anyway.
    let names_other = |t: &str| {
        let t = t.trim();
        !t.is_empty() && !t.eq_ignore_ascii_case("close") && !t.eq_ignore_ascii_case("keep-alive")
    };
    // (of several `Connection` lines, the first, as Kong's `get_header` takes it)
    let listed = h.get(header::CONNECTION).and_then(|v| v.to_str().ok());
    if let Some(listed) = listed.filter(|v| v.split(',').any(names_other)) {
        let named: Vec<HeaderName> = listed
            .split(',')
            .filter(|t| names_other(t))
            .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
            .collect();
        for n in named {
            if keep_upgrade && n == header::UPGRADE {
                continue;
            }
            if h.remove(&n).is_some()
                && let Some(c) = client.as_deref_mut()
            {
                c.removed(n);
            }
        }
    }
    while let Some(n) = h.keys().find(|n| is_hop_by_hop(n, keep_upgrade)).cloned() {
        h.remove(&n);
        if let Some(c) = client.as_deref_mut() {
            c.removed(n);
        }
    }
}

/// Removes the upstream answer's headers nginx hides by default (hyper's client paths;
/// the HTTP/1.1 client leaves them out while reading, [`RawHead`]): `X-Accel-*`, and for
/// the proxy module (not `grpc`, a gRPC service's) `X-Pad`. (`Date` and `Server`, which
/// nginx hides too, are passed on by Kong's `proxy_pass_header`/`grpc_pass_header`.)
fn hide_headers(h: &mut HeaderMap, grpc: bool) {
    let hidden = |n: &HeaderName| {
        crate::h1_client::hidden_by_nginx(n.as_str().as_bytes()) && !(grpc && n == "x-pad")
    };
    while let Some(n) = h.keys().find(|n| hidden(n)).cloned() {
        h.remove(n);
    }
}

/// Removes an upstream answer's hop-by-hop headers (hyper's client paths; the HTTP/1.1
/// client leaves the same ones out while reading, [`RawHead`]), as nginx and Kong 3.x's
/// `header_filter` remove them: `Connection`, `Keep-Alive` and `Transfer-Encoding` (nginx's
/// upstream module never passes them on), the headers `Connection` names but `close`,
/// `keep-alive` and `upgrade`, and `Upgrade` unless it is the protocol asked upstream
/// ([`crate::h1_client::keeps_upgrade`]; `asked`: `websocket` for a WebSocket upgrade, else
/// empty). So an upstream that refuses a WebSocket (426 with `Upgrade: websocket`) is
/// answered with its `Upgrade`, as in Kong. `Proxy-Authenticate`, `Proxy-Connection` and
/// every other header pass, as Kong 3.x passes them.
fn strip_answer_hop_by_hop(h: &mut HeaderMap, asked: &[u8]) {
    // One pass over the (few) names; only the names present are removed (a removal hashes).
    if !h.keys().any(|n| {
        n == header::CONNECTION
            || n == header::TRANSFER_ENCODING
            || n == header::UPGRADE
            || n == KEEP_ALIVE
    }) {
        return;
    }
    let named: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|t| {
            !t.is_empty()
                && !t.eq_ignore_ascii_case(b"close")
                && !t.eq_ignore_ascii_case(b"keep-alive")
                && !t.eq_ignore_ascii_case(b"upgrade")
        })
        .filter_map(|t| HeaderName::from_bytes(t).ok())
        .collect();
    for n in named {
        h.remove(n);
    }
    h.remove(header::CONNECTION);
    h.remove(header::TRANSFER_ENCODING);
    h.remove(&KEEP_ALIVE);
    let upgrades = h.get_all(header::UPGRADE).iter().count();
    if upgrades > 0 {
        let last = h
            .get_all(header::UPGRADE)
            .iter()
            .next_back()
            .map_or(&b""[..], HeaderValue::as_bytes);
        if !crate::h1_client::keeps_upgrade(upgrades, last, asked) {
            h.remove(header::UPGRADE);
        }
    }
}

/// Kong's `uri.escape`: percent-encodes bytes outside its safe set.
fn escape_path(p: &str) -> std::borrow::Cow<'_, str> {
    fn safe(b: u8) -> bool {
        b.is_ascii_alphanumeric() || b"!#$&'()*+,/:;=?@[]-_.~%".contains(&b)
    }
    if p.bytes().all(safe) {
        return p.into();
    }
    let mut s = String::with_capacity(p.len() + 8);
    for b in p.bytes() {
        if safe(b) {
            s.push(b as char);
        } else {
            s.push_str(&format!("%{b:02X}"));
        }
    }
    s.into()
}

/// The client address after `trusted_ips`/`real_ip_header` (nginx's `$remote_addr` and
/// `$remote_port` after its `realip` module): the peer's, unless the peer is trusted and
/// `real_ip_header` names a header it sent ([`crate::realip`]; the port reads 0 unless the
/// entry had one, as in nginx) or is `proxy_protocol` on a connection that began with a
/// PROXY header giving an address.
fn real_addr(sh: &Shared, conn: &ConnInfo, h: &HeaderMap, trusted: bool) -> SocketAddr {
    let peer = conn.peer;
    if !trusted {
        return peer;
    }
    let name = sh.settings.real_ip_header.as_str();
    if name == "proxy_protocol" {
        return conn.proxied.and_then(|a| a.source).unwrap_or(peer);
    }
    let lines = h.get_all(name).into_iter().map(HeaderValue::as_bytes);
    crate::realip::client_addr(peer, name, lines, sh.settings.real_ip_recursive, |ip| {
        sh.settings.is_trusted(ip)
    })
}

/// The client's hosts as header values, shared with the request head where they are its
/// `Host` header: nginx's `$http_host`, the `Host` header (HTTP/2's `:authority` stands for
/// it when there is none, as nginx then makes it the request's host header), which Kong
/// routes on and sends with `preserve_host`; and nginx's `$host`, which takes an
/// absolute-form target's authority (RFC 9112 §3.2.2) or `:authority` before the `Host`
/// header, for `X-Forwarded-Host`.
fn client_hosts(req: &http::request::Parts) -> (Option<HeaderValue>, Option<HeaderValue>) {
    let header = req.headers.get(header::HOST).cloned();
    let authority = req
        .uri
        .authority()
        .and_then(|a| HeaderValue::from_str(a.as_str()).ok());
    let line = authority.or_else(|| header.clone());
    // (HTTP/2's `:authority` is the request's host header: one with both is refused,
    // [`h2_refusal`])
    let host = if req.version == Version::HTTP_2 {
        header.or_else(|| line.clone())
    } else {
        header
    };
    (host, line)
}

/// nginx's check of a request's host, in one pass: not empty, no control bytes or spaces
/// (bytes from 0x80 up pass, as in nginx: such a host matches only routes without hosts),
/// no path separator, no `..`.
pub(crate) fn valid_host(h: &[u8]) -> bool {
    let mut prev = 0u8;
    for &b in h {
        if b <= b' ' || b == 0x7f || b == b'/' || b == b'\\' || (b == b'.' && prev == b'.') {
            return false;
        }
        prev = b;
    }
    !h.is_empty()
}

/// nginx's `$host` (Kong's `X-Forwarded-Host` and the host of an https redirect) from the
/// client's host, as `ngx_http_validate_host` keeps it: everything from the first `:`
/// outside an IPv6 literal's brackets cut, one trailing dot dropped, lower case; shared with
/// the client's value when that is already the case. Without a host, nginx's server name
/// (Kong's `kong`).
fn forwarded_host(host: Option<&HeaderValue>) -> Option<HeaderValue> {
    let Some(host) = host else {
        return Some(HeaderValue::from_static("kong"));
    };
    let b = host.as_bytes();
    let mut len = b.len();
    if b.first() == Some(&b'[') {
        if let Some(end) = b.iter().position(|&c| c == b']') {
            len = end + 1;
        }
    } else if let Some(colon) = b.iter().position(|&c| c == b':') {
        len = colon;
    }
    if len > 0 && b[len - 1] == b'.' {
        len -= 1;
    }
    let bare = &b[..len];
    if bare.len() == b.len() && !bare.iter().any(u8::is_ascii_uppercase) {
        return Some(host.clone());
    }
    HeaderValue::from_bytes(&bare.to_ascii_lowercase()).ok()
}

/// Why nginx's HTTP/2 module refuses a request, if it does: its method or `:path` (400), a
/// `Host` header beside `:authority` (400: nginx before 1.29.1 makes `:authority` the host
/// header, and a second one is a duplicate), or a method nginx does not serve (405). (Out
/// of line: the HTTP/1 requests that make most of the traffic only test the version.)
#[inline(never)]
fn h2_refusal(req: &http::request::Parts) -> Option<Kind> {
    let method = req.method.as_str().as_bytes();
    if !crate::request_line::accepted_h2(method, req.uri.path().as_bytes())
        || req.uri.authority().is_some() && req.headers.contains_key(header::HOST)
    {
        Some(Kind::BadRequest)
    } else if method == b"TRACE" || method == b"CONNECT" {
        Some(Kind::MethodNotAllowed)
    } else {
        None
    }
}

/// A path as a header value (`/` without allocating).
fn path_value(p: &str) -> Option<HeaderValue> {
    if p == "/" {
        return Some(HeaderValue::from_static("/"));
    }
    HeaderValue::from_str(p).ok()
}

#[allow(clippy::too_many_lines, clippy::manual_async_fn)]
fn proxy(
    sh: &Arc<Shared>,
    conn: &ConnInfo,
    (head, body, mut client_head): (
        &mut Option<http::request::Parts>,
        Option<crate::discard::Unread>,
        Option<&mut ClientHead>,
    ),
    present: Present,
    cx: &mut Ctx,
) -> impl std::future::Future<Output = Result<Answer, Error>> {
    // (an `async` block, not an `async fn`: see [`handle`])
    async move {
        let Some(req) = head.as_mut() else {
            return Err(Error::new(Kind::Internal, Source::Internal));
        };
        // --- rewrite ---
        let content_length = if !present.has(Present::CONTENT_LENGTH | Present::TRANSFER_ENCODING)
            && !present.repeated
        {
            // no framing header, and no name given twice (a second Host, say)
            None
        } else if req.version <= Version::HTTP_11 {
            check_framing(&req.headers)?
        } else {
            req.headers
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok()?.parse().ok())
        };
        // the client's hosts, read once: `Host` for routing and `preserve_host`, and the
        // request line's host before it for `X-Forwarded-Host` (see `client_hosts`)
        let (client_host, line_host) = client_hosts(req);
        // RFC 9112 §3.2: an HTTP/1.1 request without a `Host` header (an absolute-form target
        // does not stand for it), or any request with an invalid host in either place, is
        // refused (as nginx does); so is an HTTP/2 request with neither `:authority` nor `Host`
        // (nginx's check is for every version past 1.0)
        if (match &client_host {
            None => req.version >= Version::HTTP_11,
            Some(h) => !valid_host(h.as_bytes()),
        }) || line_host
            .as_ref()
            .is_some_and(|h| !valid_host(h.as_bytes()))
        {
            return Err(Error::downstream(Kind::BadRequest));
        }
        // HTTP/1 heads had their request line checked before they were parsed into a request;
        // an HTTP/2 request's method and `:path` are checked here, as nginx's HTTP/2 module
        // checks them
        if req.version == Version::HTTP_2
            && let Some(kind) = h2_refusal(req)
        {
            return Err(Error::downstream(kind));
        }
        // (the body's size once the head was found good, as nginx checks it in its find-config
        // phase, after the head's own checks)
        let max = sh.settings.client_max_body_size;
        if max > 0 && content_length.is_some_and(|n| n > max) {
            return Err(Error::downstream(Kind::PayloadTooLarge));
        }

        // --- route ---
        // (nginx's `realip` runs before anything: routes match the real client's address)
        let trusted = sh.settings.is_trusted(conn.peer.ip());
        let client = real_addr(sh, conn, &req.headers, trusted);
        let snap = sh.snapshot.load_full();
        let scheme = if conn.tls {
            Scheme::Https
        } else {
            Scheme::Http
        };
        let m = {
            // (UTF-8 past ASCII included, as atc-router takes any UTF-8 string; one that is not
            // matches nothing where a route reads hosts, as atc-router refuses the value)
            let host = match &client_host {
                None => Some(""),
                Some(v) => v
                    .to_str()
                    .ok()
                    .or_else(|| std::str::from_utf8(v.as_bytes()).ok()),
            };
            let host = match host {
                Some(h) => h,
                None if snap.router.reads_host() => return Err(Error::downstream(Kind::NoRoute)),
                None => "",
            };
            let view = RequestView {
                method: req.method.as_str(),
                scheme,
                host,
                port: conn.client_port,
                path: req.uri.path(),
                headers: &req.headers,
                sni: conn.sni.as_deref(),
                src: Some(client),
                dst: Some(conn.local),
                query: req.uri.query(),
            };
            snap.router.find(&view)
        };
        let Some(m) = m else {
            return Err(Error::downstream(Kind::NoRoute));
        };
        let route = m.route;
        let stats = snap.route_stats(&sh.metrics, route, m.service);
        // the head now, the body's bytes as they are read ([`crate::upstream::ClientBody`])
        stats.ingress(cx.head_bytes);
        cx.stats = Some(stats.clone());

        // --- access ---
        // The forwarded values, as header values: the client's own when it is trusted, else
        // what this node saw. Most are shared with the client's head or the connection (no
        // copy); an empty value removes the header; a trusted client's value passes as its
        // bytes came (text or not), as Kong's `get_header` passes it.
        // (read only from a trusted client: no call at all for the others)
        let [c_proto, c_host, c_port, c_path, c_prefix] = if trusted {
            [
                &X_FORWARDED_PROTO,
                &X_FORWARDED_HOST,
                &X_FORWARDED_PORT,
                &X_FORWARDED_PATH,
                &X_FORWARDED_PREFIX,
            ]
            .map(|n| req.headers.get(n.name()).cloned())
        } else {
            [None, None, None, None, None]
        };
        let fwd_proto = c_proto.unwrap_or_else(|| match scheme {
            Scheme::Http => HTTP_VALUE.clone(),
            Scheme::Https => HTTPS_VALUE.clone(),
        });
        let fwd_https = fwd_proto.as_bytes() == b"https";
        let fwd_host = match c_host {
            Some(v) => Some(v),
            None => forwarded_host(line_host.as_ref()),
        };
        let fwd_port = c_port.unwrap_or_else(|| conn.local_port.clone());
        let fwd_path = match c_path {
            Some(v) => Some(v),
            None => path_value(req.uri.path()),
        };
        let fwd_prefix = match c_prefix {
            Some(p) => Some(p),
            None => m
                .stripped_prefix
                .as_deref()
                .filter(|p| *p != "/" && !p.is_empty())
                .and_then(|p| HeaderValue::from_str(p).ok()),
        };
        if has_proto(route, Protocol::Https) && !has_proto(route, Protocol::Http) && !fwd_https {
            let code = route.https_redirect_status_code;
            if code == 426 {
                let mut r = response_error(
                    sh,
                    cx,
                    StatusCode::UPGRADE_REQUIRED,
                    "Please use HTTPS protocol",
                );
                r.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
                r.headers_mut().insert(
                    header::UPGRADE,
                    HeaderValue::from_static("TLS/1.2, HTTP/1.1"),
                );
                return Ok(r.into());
            }
            let uri = req.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
            let mut r = Response::new(ProxyBody::empty());
            *r.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::MOVED_PERMANENTLY);
            let fwd_host = fwd_host.as_ref().map_or(&b""[..], HeaderValue::as_bytes);
            let location = [&b"https://"[..], fwd_host, uri.as_bytes()].concat();
            if let Ok(v) = HeaderValue::from_bytes(&location) {
                r.headers_mut().insert(header::LOCATION, v);
            }
            kong_headers(sh, cx, r.headers_mut());
            return Ok(r.into());
        }
        // gRPC routes take gRPC over HTTP/2 only (Kong checks this for gRPC routes alone: a
        // gRPC-looking request on an http route is proxied as it is)
        if has_proto(route, Protocol::Grpc) || has_proto(route, Protocol::Grpcs) {
            let is_grpc = present.has(Present::CONTENT_TYPE)
                && req
                    .headers
                    .get(header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|ct| ct.starts_with("application/grpc"));
            if !is_grpc {
                return Ok(response_error(
                    sh,
                    cx,
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "Non-gRPC request matched gRPC route",
                )
                .into());
            }
            if req.version != Version::HTTP_2 {
                let mut r = response_error(
                    sh,
                    cx,
                    StatusCode::UPGRADE_REQUIRED,
                    "Please use HTTP2 protocol",
                );
                r.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
                r.headers_mut()
                    .insert(header::UPGRADE, HeaderValue::from_static("HTTP/2"));
                return Ok(r.into());
            }
            if !has_proto(route, Protocol::Grpc) && !fwd_https {
                let mut r = Response::new(ProxyBody::empty());
                grpc_headers(
                    r.headers_mut(),
                    StatusCode::OK,
                    "gRPC request matched gRPCs route",
                );
                r.headers_mut()
                    .insert("grpc-status", HeaderValue::from_static("1"));
                kong_headers(sh, cx, r.headers_mut());
                return Ok(r.into());
            }
        }
        let Some(service) = m.service else {
            return Err(Error::new(Kind::NoService, Source::Internal));
        };

        // --- upstream request ---
        // (hyper upgrades HTTP/1.1 connections only; a gRPC service takes no upgrade: Kong's
        // `@grpc` location passes the request on as gRPC, its `Upgrade` dropped)
        let grpc_service = is_h2(service.protocol);
        let upgrade = req.version == Version::HTTP_11
            && !grpc_service
            && present.has(Present::UPGRADE)
            && is_websocket(&req.headers);
        let client_upgrade = if upgrade {
            Some(
                req.extensions
                    .remove::<hyper::upgrade::OnUpgrade>()
                    .unwrap_or_else(|| hyper::upgrade::on(Request::new(()))),
            )
        } else {
            None
        };
        // Whether the client sent a body, even an empty one (a length, chunks, an HTTP/2 stream
        // its headers did not end): nginx then sends the upstream a `Content-Length`, and
        // without one none, whatever the method.
        let framed = present.has(Present::CONTENT_LENGTH | Present::TRANSFER_ENCODING)
            || body_pending(body.as_ref().and_then(crate::discard::Unread::get));
        let parts = req;
        // A gRPC service gets the client's target as it came: Kong's `@grpc` location passes
        // to `grpc_pass` without a URI, so nginx sends the request's unparsed URI (no
        // `strip_path`, `path_handling` or service `path`).
        let pq = if grpc_service {
            parts
                .uri
                .path_and_query()
                .map_or_else(|| "/".to_string(), |p| p.as_str().to_string())
        } else {
            let mut pq = escape_path(&m.upstream_path).into_owned();
            if let Some(q) = parts.uri.query() {
                pq.push('?');
                pq.push_str(q);
            }
            pq
        };
        let client_version = parts.version;
        let h = &mut parts.headers;
        if client_version == Version::HTTP_2 {
            join_cookies(h);
        }
        let te_trailers = present.has(Present::TE)
            && h.get(header::TE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| {
                    v.split(',')
                        .any(|t| t.trim().eq_ignore_ascii_case("trailers"))
                });
        // Kong sends its `Via` upstream whatever `headers` says, after the client's. The
        // client's `Via` and `X-Forwarded-For` are read before the hop-by-hop headers go, as
        // Kong reads them (`access.before`, where `Connection`-listed names are cleared in
        // `access.after`); of a repeated one, the first line, as Kong 3.6+'s `get_header` takes
        // it (nginx 1.25 would join them; Kong chose the first value).
        let via = match client_version {
            Version::HTTP_11 => sh.via_h1.clone(),
            Version::HTTP_2 => sh.via_h2.clone(),
            v => HeaderValue::from_str(&format!("{} {}", version_str(v), sh.settings.server_token))
                .unwrap_or_else(|_| sh.via_h1.clone()),
        };
        let via = match present
            .has(Present::VIA)
            .then(|| h.get(header::VIA))
            .flatten()
        {
            Some(prev) => appended(prev, &via),
            None => Some(via),
        };
        let client_xff = present
            .has(Present::X_FORWARDED_FOR)
            .then(|| h.get(X_FORWARDED_FOR.name()).cloned())
            .flatten();
        strip_hop_by_hop(h, upgrade, client_head.as_deref_mut());
        // The headers the gateway sets (Kong's `proxy_set_header`s), beside the client's head:
        // they replace the client's of the same names when the upstream request is written,
        // and are written before them, in the order of Kong's template (`TE`, `Via`, `Host`,
        // `Upgrade`, `Connection`, `X-Forwarded-*`, `X-Real-IP`, `X-Kong-Request-Id`), as nginx
        // writes its `proxy_set_header`s.
        let mut set = SetHeaders::with_capacity(12);
        set.set(
            &TE,
            te_trailers.then(|| HeaderValue::from_static("trailers")),
        );
        set.set(&VIA, via);
        set.host_here();
        // (Kong's `$upstream_upgrade` and `$upstream_connection`, which its access phase sets to
        // `keep-alive` for any other request; a gRPC service's `grpc_pass` sends neither, HTTP/2
        // having no such header)
        if upgrade {
            set.set(&UPGRADE, Some(HeaderValue::from_static("websocket")));
            set.set(
                &CONNECTION,
                Some(HeaderValue::from_static("keep-alive, Upgrade")),
            );
        } else if !grpc_service {
            set.set(&CONNECTION, Some(KEEP_ALIVE_VALUE.clone()));
        }
        let realip = client.ip();
        let real = if realip == conn.peer.ip() {
            Some(conn.peer_ip.clone())
        } else {
            HeaderValue::from_str(&realip.to_string()).ok()
        };
        let xff = match client_xff {
            Some(prev) => appended(&prev, &conn.peer_ip),
            // (Kong: the client's list and the peer, else `$remote_addr`, the real client)
            None => real.clone(),
        };
        set.set(&X_FORWARDED_FOR, xff);
        set.set(&X_FORWARDED_PROTO, Some(fwd_proto));
        set.set(&X_FORWARDED_HOST, fwd_host);
        set.set(&X_FORWARDED_PORT, Some(fwd_port));
        set.set(&X_FORWARDED_PATH, fwd_path);
        set.set(&X_FORWARDED_PREFIX, fwd_prefix);
        set.set(&X_REAL_IP, real);
        if sh.settings.headers_upstream.request_id {
            set.set(&X_KONG_REQUEST_ID, Some(cx.rid.clone()));
        }

        // (the end of Kong's access phase: `KONG_PROXIED`)
        cx.past_access = true;
        cx.service_h2 = is_h2(service.protocol);
        let body: ReqBody = if let Some(body) = body.and_then(crate::discard::Unread::take) {
            client_body(sh, route, service, &stats, upgrade, content_length, body).await?
        } else {
            Either::Right(Full::new(Bytes::new()))
        };

        let mut up = Upstream {
            service,
            route,
            client_ip: realip,
            captures: &m.captures,
            client_host: client_host.as_ref(),
            stats: &stats,
            pq,
            te_trailers,
            set,
            client: client_head.map(|c| &*c),
            framed,
        };
        // (the head and the try's settings stay where they are, lent: `send`'s future is
        // built and moved without them)
        send(sh, cx, &snap, &mut up, head, body, client_upgrade).await
    }
}

/// An HTTP/2 request's `cookie` fields joined into one, `; ` between them, as nginx's
/// HTTP/2 module joins them (RFC 9113 §8.2.3: an HTTP/1.1 upstream takes one line).
fn join_cookies(h: &mut HeaderMap) {
    let mut all = h.get_all(header::COOKIE).iter();
    if all.next().is_none() || all.next().is_none() {
        return;
    }
    let joined: Vec<u8> = h
        .get_all(header::COOKIE)
        .iter()
        .map(HeaderValue::as_bytes)
        .collect::<Vec<_>>()
        .join(&b"; "[..]);
    if let Ok(v) = HeaderValue::from_bytes(&joined) {
        h.insert(header::COOKIE, v);
    }
}

/// Whether a request's body has yet to end when its head is in: a chunked HTTP/1 body, or an
/// HTTP/2 stream its headers did not end (a body announced by a length is told by the
/// header).
fn body_pending(body: Option<&Incoming>) -> bool {
    body.is_some_and(|b| !http_body::Body::is_end_stream(b))
}

/// The client's body as sent upstream (Kong's `request_buffering`, nginx's
/// `proxy_request_buffering`). With the route's `request_buffering` (Kong's default) a body
/// of at most `request_buffer_limit` bytes is read whole first, whether its length was
/// announced or not (a chunked HTTP/1.1 body, an HTTP/2 body without `content-length`), and
/// goes upstream with a `Content-Length`, as nginx sends a body it has read (and can be sent
/// again on a retry). A longer body is streamed: what was read first, then the rest, chunked
/// when its length is unknown. There it differs from Kong: nginx goes on reading such a
/// body into a temporary file (past `client_body_buffer_size`) and still sends it by
/// length, where the gateway keeps no request body on disk, so an upstream that refuses
/// chunked requests gets a body of unknown length over `request_buffer_limit` (64 KiB by
/// default) chunked. Streamed at once:
/// every body of a route with `request_buffering: false`, as in Kong; a WebSocket upgrade
/// request's; and a gRPC service's body of unknown length, as nginx's gRPC module never
/// buffers a request body (`ngx_http_grpc_handler` sets `request_body_no_buffering`), so
/// that streaming calls stream. A gRPC body of a known length within the limit is still
/// read first, unlike nginx: it can then be sent again when an HTTP/2 upstream refuses its
/// stream unprocessed (GOAWAY). The client's limits hold either way: past
/// `client_max_body_size` 413, a body broken off or malformed 400, a pause longer than
/// `client_body_timeout` 408.
async fn client_body(
    sh: &Shared,
    route: &Route,
    service: &Service,
    stats: &Arc<RouteStats>,
    upgrade: bool,
    content_length: Option<u64>,
    body: Incoming,
) -> Result<ReqBody, Error> {
    if content_length == Some(0) || (content_length.is_none() && body.is_end_stream()) {
        return Ok(Either::Right(Full::new(Bytes::new())));
    }
    let limit = sh.settings.request_buffer_limit;
    let mut stream = crate::upstream::ClientBody::new(
        body,
        sh.settings.client_max_body_size,
        sh.settings.client_body_timeout,
        Some(stats.clone()),
    );
    let buffers = route.request_buffering
        && !upgrade
        && limit > 0
        && match content_length {
            Some(n) => n <= limit,
            // (a gRPC call's body may stream for as long as the call lasts)
            None => !is_h2(service.protocol),
        };
    if !buffers {
        return Ok(Either::Left(stream));
    }
    match stream.read_ahead(limit).await {
        Ok(Some(whole)) => Ok(Either::Right(Full::new(whole))),
        Ok(None) => Ok(Either::Left(stream)),
        Err(e) => {
            // too large 413, stalled 408 (nginx's `client_body_timeout`), else 400
            let kind = stream.watch().failure().unwrap_or(Kind::BadRequest);
            Err(Error::downstream(kind).because(e))
        }
    }
}

/// The length of a response read whole before it is sent (`response_buffering`), if it is:
/// an HTTP/1.1 upstream's response with a `Content-Length` of at most `limit`, unless the
/// upstream asks for streaming with `X-Accel-Buffering: no` (as nginx honours it). Bodies of
/// unknown or larger size are streamed, so memory stays bounded by `limit` per response.
fn buffers(head: &UpHead, body: &UpBody, limit: u64) -> Option<u64> {
    if limit == 0 || head.unbuffered() {
        return None;
    }
    if body.is_end_stream() {
        return Some(0);
    }
    body.size_hint().exact().filter(|n| *n <= limit)
}

/// A body read ahead that broke off: the failure, what was read, the announced length.
struct Broken(Error, Bytes, u64);

/// Reads a whole response body of `len` bytes (at most the size [`buffers`] allowed), with
/// the read timeout between two reads as when streaming. When it breaks off (a failure, a
/// timeout), the error comes with what was read.
async fn read_whole(
    body: &mut UpBody,
    read_timeout: Duration,
    len: u64,
) -> Result<Bytes, Box<Broken>> {
    let mut first: Option<Bytes> = None;
    let mut rest: Option<bytes::BytesMut> = None;
    let read = |first: Option<Bytes>, rest: Option<bytes::BytesMut>| match (first, rest) {
        (_, Some(b)) => b.freeze(),
        (Some(f), None) => f,
        (None, None) => Bytes::new(),
    };
    while !body.is_end_stream() {
        let frame = match tokio::time::timeout(read_timeout, body.frame()).await {
            Err(_) => {
                let e = Error::upstream(Kind::ReadTimeout);
                return Err(Box::new(Broken(e, read(first, rest), len)));
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                let e = Error::upstream(Kind::InvalidResponse).because(e);
                return Err(Box::new(Broken(e, read(first, rest), len)));
            }
            Ok(Some(Ok(f))) => f,
        };
        let Ok(d) = frame.into_data() else {
            continue;
        };
        match (&mut first, &mut rest) {
            (None, _) => first = Some(d),
            (Some(f), None) => {
                let mut b = bytes::BytesMut::with_capacity(len as usize);
                b.extend_from_slice(f);
                b.extend_from_slice(&d);
                rest = Some(b);
            }
            (Some(_), Some(b)) => b.extend_from_slice(&d),
        }
    }
    Ok(read(first, rest))
}

fn version_str(v: Version) -> &'static str {
    match v {
        // (Kong writes `ngx.req.http_version()`, a Lua number: 1.0 prints as "1")
        Version::HTTP_10 => "1",
        Version::HTTP_2 => "2",
        _ => "1.1",
    }
}

/// What [`send`] needs to know about the matched request.
struct Upstream<'a> {
    service: &'a Service,
    route: &'a Route,
    /// The client address after `real_ip` (Kong's `remote_addr`; `hash_on: ip`).
    client_ip: IpAddr,
    /// The route's regex captures (`hash_on: uri_capture`).
    captures: &'a silverback_router::Captures,
    /// The client's `Host` (`preserve_host`).
    client_host: Option<&'a HeaderValue>,
    stats: &'a Arc<RouteStats>,
    /// Upstream path and query.
    pq: String,
    te_trailers: bool,
    /// The headers the gateway sets on the upstream request.
    set: SetHeaders,
    /// The client's head as received (HTTP/1.x), for its headers' case and order on an
    /// HTTP/1.1 upstream.
    client: Option<&'a ClientHead>,
    /// Whether the client sent a body, even an empty one (the upstream then gets a
    /// `Content-Length`).
    framed: bool,
}

enum Chan {
    H1(crate::upstream::Conn),
    H2(crate::upstream::H2Conn),
    Ws(hyper::client::conn::http1::SendRequest<ReqBody>),
}

fn outcome_of(e: &Error) -> BalancerOutcome {
    match e.kind {
        Kind::ConnectTimeout | Kind::ReadTimeout | Kind::WriteTimeout => BalancerOutcome::Timeout,
        _ => BalancerOutcome::TcpError,
    }
}

async fn next_h1(
    sh: &Shared,
    key: &PoolKey,
    tls: Option<&UpstreamTls>,
    t: Duration,
    wt: Duration,
    now: Instant,
) -> Result<crate::upstream::Conn, Error> {
    let connect = || sh.pool.connect_h1(key, tls, t, wt);
    pooled_or_new(sh.pool.take(key, now), |c| &c.write_timeout, wt, connect).await
}

/// `taken`, an idle connection from the pool, given this try's write timeout (held in the
/// connection at `timeout`), or else a new one, `connect`ed.
async fn pooled_or_new<C, F>(
    taken: Option<C>,
    timeout: fn(&C) -> &std::sync::atomic::AtomicU64,
    wt: Duration,
    connect: impl FnOnce() -> F,
) -> Result<C, Error>
where
    F: std::future::Future<Output = Result<C, Error>>,
{
    match taken {
        Some(c) => {
            timeout(&c).store(wt.as_millis() as u64, std::sync::atomic::Ordering::Relaxed);
            Ok(c)
        }
        None => connect().await,
    }
}

/// An idle HTTP/2 connection to `key` from the pool, or a new one.
async fn next_h2(
    sh: &Shared,
    key: &PoolKey,
    tls: Option<&UpstreamTls>,
    t: Duration,
    wt: Duration,
    now: Instant,
) -> Result<crate::upstream::H2Conn, Error> {
    let connect = || sh.pool.connect_h2(key, tls, t, wt);
    pooled_or_new(sh.pool.take_h2(key, now), |c| &c.write_timeout, wt, connect).await
}

/// Waits for `answer` (the head of an HTTP/2 upstream's answer) within the read timeout,
/// counted from the end of the client's streamed body (`watch`) as nginx counts it from the
/// request sent: while the body still streams, its own `client_body_timeout` holds the
/// client to its pace, and a slow upload is not the upstream's timeout. A body that makes
/// no progress for the read timeout while not waiting on the client is one the upstream
/// does not take (HTTP/2 flow control): that is the upstream's timeout. `Err(None)`: the timeout passed;
/// `Err(Some(kind))`: the client's body failed meanwhile.
async fn after_body<F: std::future::Future>(
    answer: F,
    read_timeout: Duration,
    watch: Option<&crate::upstream::BodyWatch>,
) -> Result<F::Output, Option<Kind>> {
    let mut answer = std::pin::pin!(answer);
    let mut at = tokio::time::Instant::now() + read_timeout;
    let mut sent = watch.map_or(0, crate::upstream::BodyWatch::sent);
    loop {
        if let Ok(r) = tokio::time::timeout_at(at, answer.as_mut()).await {
            return Ok(r);
        }
        let Some(w) = watch else {
            return Err(None);
        };
        if let Some(kind) = w.failure() {
            return Err(Some(kind));
        }
        match w.ended() {
            // still streaming, and moving, or waiting on the client (whose pauses its own
            // timer judges): count again from now
            None if w.sent() > sent || w.waiting_on_client() => {
                sent = w.sent();
                at = tokio::time::Instant::now() + read_timeout;
            }
            None => return Err(None),
            Some(end) if end + read_timeout > at => at = end + read_timeout,
            Some(_) => return Err(None),
        }
    }
}

/// nginx's `proxy_next_upstream` rule: a request with a non-idempotent method is not
/// retried once it was sent.
fn idempotent(m: &http::Method) -> bool {
    !matches!(*m, http::Method::POST | http::Method::PATCH) && m.as_str() != "LOCK"
}

/// A copy of a request head (for a retry after the request was sent).
fn clone_head(p: &http::request::Parts) -> http::request::Parts {
    let (mut c, ()) = Request::new(()).into_parts();
    c.method = p.method.clone();
    c.uri = p.uri.clone();
    c.version = p.version;
    c.headers = p.headers.clone();
    c
}

/// The upstream request target in origin form: the client's own URI when it is already
/// exactly that (shared, no parsing), else `pq` parsed.
fn origin_form(client: &Uri, pq: &str) -> Result<Uri, Error> {
    if client.scheme().is_none() && client.path_and_query().map(|p| p.as_str()) == Some(pq) {
        return Ok(client.clone());
    }
    Uri::from_maybe_shared(Bytes::copy_from_slice(pq.as_bytes()))
        .map_err(|e| Error::downstream(Kind::BadRequest).because(e))
}

/// Router captures as the balancer's `uri_capture` hash input.
struct Caps<'a>(&'a silverback_router::Captures);

impl silverback_balancer::context::UriCaptures for Caps<'_> {
    fn capture(&self, name: &str) -> Option<&str> {
        self.0.by_key(name)
    }
}

/// Why an attempt failed, and the request when it was not sent (it can then be retried
/// even when its body is a stream).
type AttemptError = (Error, Option<Request<ReqBody>>);

#[allow(
    clippy::too_many_lines,
    clippy::too_many_arguments,
    clippy::manual_async_fn
)]
fn send(
    sh: &Arc<Shared>,
    cx: &mut Ctx,
    snap: &Snapshot,
    up: &mut Upstream<'_>,
    head: &mut Option<http::request::Parts>,
    body: ReqBody,
    client_upgrade: Option<hyper::upgrade::OnUpgrade>,
) -> impl std::future::Future<Output = Result<Answer, Error>> {
    // (an `async` block, not an `async fn`: see [`handle`])
    async move {
        let service = up.service;
        let h2 = is_h2(service.protocol);
        let tls = service.protocol.is_tls();
        let connect_timeout = Duration::from_millis(u64::from(service.connect_timeout));
        let read_timeout = Duration::from_millis(u64::from(service.read_timeout));
        let write_timeout = Duration::from_millis(u64::from(service.write_timeout));
        let tls_cfg = if tls {
            Some(
                snap.upstream_tls(service)
                    .map_err(|e| Error::new(Kind::UpstreamTls, Source::Internal).because(e))?,
            )
        } else {
            None
        };
        let tls_ref = tls_cfg.as_deref();
        let retries = u32::from(service.retries);
        let (mut stream_body, full_bytes) = match body {
            Either::Left(b) => (Some(b), None),
            // A complete body is ready at once (an empty one, the usual, without collecting).
            Either::Right(f) if f.is_end_stream() => (None, Some(Bytes::new())),
            Either::Right(f) => (
                None,
                Some(f.collect().await.map(|c| c.to_bytes()).unwrap_or_default()),
            ),
        };
        // A request once sent goes again only when its body is complete and its method
        // idempotent (a WebSocket handshake is a GET like any other), and never from a
        // `request_buffering: false` route, where Kong's nginx sets `request_body_no_buffering`
        // (`ngx_http_upstream_next` retries no request it sent then, body or none).
        let Some(parts) = head.as_ref() else {
            return Err(Error::new(Kind::Internal, Source::Internal));
        };
        let replayable =
            full_bytes.is_some() && idempotent(&parts.method) && up.route.request_buffering;
        // The client's URI (shared, not copied): the balancer hashes on its path and query.
        let client_uri = parts.uri.clone();
        let mut origin_uri: Option<Uri> = None;
        let mut tried: Vec<std::net::SocketAddr> = Vec::new();
        let mut attempt = 0u32;

        // --- balancer ---
        // `t_done`: when the answer's head was in (one reading of the clock for every latency)
        let (peer, resp, t_sent, t_done) = loop {
            let Some(parts) = head.as_mut() else {
                return Err(Error::new(Kind::Internal, Source::Internal));
            };
            let caps = Caps(up.captures);
            let pctx = PickContext {
                client_ip: Some(up.client_ip),
                headers: Some(&parts.headers),
                path: client_uri.path(),
                query: client_uri.query(),
                uri_captures: (!up.captures.is_empty()).then_some(&caps as _),
                generated_cookie: cx.hash_cookie.as_ref().map(|c| c.value.as_str()),
                ..PickContext::default()
            };
            let peer = match snap
                .balancers
                // (a new upstream's hostname targets are waited for, up to the connect timeout,
                // as Kong's request waits for the balancer it creates)
                .peer_within(&service.host, service.port, &pctx, &tried, connect_timeout)
                .await
            {
                Ok(p) => p,
                // Every available address was tried: retry one of them (Kong's round-robin
                // simply walks on, so a one-target upstream retries its target). A failure then
                // is Kong's balancer phase's `ngx.exit`: an nginx error.
                Err(_) if !tried.is_empty() => snap
                    .balancers
                    .peer_within(&service.host, service.port, &pctx, &[], Duration::ZERO)
                    .await
                    .map_err(|e| match e {
                        silverback_balancer::NoPeer::Resolver { .. } => {
                            Error::new(Kind::Internal, Source::Internal).because(e)
                        }
                        _ => Error::upstream(Kind::Unavailable).because(e),
                    })?,
                Err(e) => return Err(no_peer(&e)),
            };
            if cx.hash_cookie.is_none() {
                cx.hash_cookie.clone_from(&peer.set_cookie);
            }
            let t_start = Instant::now();
            // (the last try's start, as Kong's balancer phase rewrites its times on each)
            cx.access_end = Some(t_start);
            // The client's host with `preserve_host`: Kong's `$upstream_host`, which is also
            // the TLS name (`proxy_ssl_name $upstream_host`) and the name verified.
            let preserved = up
                .client_host
                .filter(|v| up.route.preserve_host && !v.is_empty());
            let key = PoolKey {
                addr: peer.addr,
                tls: tls_cfg.as_ref().map(|t| TlsKey {
                    sni: match preserved {
                        Some(v) => v.to_str().ok().and_then(silverback_balancer::sni_name),
                        None => peer.sni(),
                    }
                    .map(Arc::from),
                    policy: t.policy,
                }),
            };

            // Host and URI (recomputed on every try, as Kong does).
            let host_value = match preserved {
                Some(v) => Some(v.clone()),
                None => peer.host_header(tls),
            };
            if h2 {
                let scheme = if tls { "https" } else { "http" };
                let host = host_value
                    .as_ref()
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                parts.uri = Uri::try_from(format!("{scheme}://{host}{}", up.pq))
                    .map_err(|e| Error::new(Kind::Internal, Source::Internal).because(e))?;
                parts.headers.remove(header::HOST);
                parts.version = Version::HTTP_2;
            } else {
                if origin_uri.is_none() {
                    origin_uri = Some(origin_form(&parts.uri, &up.pq)?);
                }
                if let Some(u) = &origin_uri {
                    parts.uri = u.clone();
                }
                up.set.set_host(host_value);
                parts.version = Version::HTTP_11;
            }

            // Whether this try sent a request that cannot be sent again.
            let mut spent = false;
            // Whether the try failed on a kept-alive connection with an error (not a timeout,
            // not an answer refused): nginx gives such a try back (`u->peer.tries++` for a
            // cached peer's `NGX_HTTP_UPSTREAM_FT_ERROR`), so it does not count against
            // `retries` (HTTP/1.1 and HTTP/2 upstreams).
            let mut given_back = false;
            let r: Result<(UpHead, UpBody), AttemptError> = async {
                let chan = if client_upgrade.is_some() {
                    sh.pool
                        .connect_upgradable(&key, tls_ref, connect_timeout, write_timeout)
                        .await
                        .map(Chan::Ws)
                } else if h2 {
                    next_h2(sh, &key, tls_ref, connect_timeout, write_timeout, t_start)
                        .await
                        .map(Chan::H2)
                } else {
                    next_h1(sh, &key, tls_ref, connect_timeout, write_timeout, t_start)
                        .await
                        .map(Chan::H1)
                };
                let chan = chan.map_err(|e| (e, None))?;
                if let Chan::H1(c) = chan {
                    // The head stays where it is: a retry encodes it again.
                    let Some(p) = head.as_ref() else {
                        return Err((Error::new(Kind::Internal, Source::Internal), None));
                    };
                    let t = H1Try {
                        key: &key,
                        tls: tls_ref,
                        connect_timeout,
                        write_timeout,
                        read_timeout,
                        start: t_start,
                    };
                    let body = (full_bytes.as_ref(), up.framed, &mut stream_body);
                    return match t.send(sh, c, (p, up.client), &up.set, body).await {
                        Ok(r) => Ok(r),
                        Err((e, sent)) => {
                            spent = sent.sent && !replayable;
                            given_back = sent.on_kept_alive;
                            Err((e, None))
                        }
                    };
                }
                // Keep the head for another try when the body can be replayed (and a try is
                // left, or a kept-alive connection's failure would give this one back).
                let kept_alive = matches!(&chan, Chan::H2(c) if c.reused);
                let keep = replayable && (attempt < retries || kept_alive);
                let Some(mut p) = (if keep {
                    head.as_ref().map(clone_head)
                } else {
                    head.take()
                }) else {
                    return Err((Error::new(Kind::Internal, Source::Internal), None));
                };
                // h2 carries the host as the URI's authority
                up.set.apply(&mut p.headers, !h2);
                let watch = stream_body.as_ref().map(crate::upstream::ClientBody::watch);
                let b: ReqBody = match (&full_bytes, stream_body.take()) {
                    (Some(f), _) => Either::Right(Full::new(f.clone())),
                    (None, Some(s)) => Either::Left(s),
                    (None, None) => Either::Right(Full::new(Bytes::new())),
                };
                let req = Request::from_parts(p, b);
                match chan {
                    Chan::H1(_) => Err((Error::new(Kind::Internal, Source::Internal), None)),
                    Chan::H2(c) => {
                        let t = H2Try {
                            key: &key,
                            tls: tls_ref,
                            connect_timeout,
                            write_timeout,
                            read_timeout,
                        };
                        t.send(sh, c, req, watch, &mut given_back).await
                    }
                    Chan::Ws(mut tx) => {
                        let read_err = |e| hyper_error(e, watch.as_ref());
                        if let Err(e) = tx.ready().await {
                            return Err((read_err(e), Some(req)));
                        }
                        match tokio::time::timeout(read_timeout, tx.send_request(req)).await {
                            Err(_) => Err((Error::upstream(Kind::ReadTimeout).retryable(), None)),
                            Ok(r) => r.map(UpHead::hyper).map_err(|e| (read_err(e), None)),
                        }
                    }
                }
            }
            .await;
            if spent {
                *head = None;
            }
            match r {
                Ok(resp) => {
                    let t_done = Instant::now();
                    if let Some(a) = &mut cx.access {
                        a.tried(crate::access_log::Try {
                            addr: peer.addr,
                            status: resp.0.status().as_u16(),
                            time: t_done.duration_since(t_start),
                        });
                    }
                    peer.report(BalancerOutcome::Response {
                        status: resp.0.status().as_u16(),
                        latency: t_done.duration_since(t_start),
                    });
                    break (peer, resp, t_start, t_done);
                }
                Err((e, back)) => {
                    if let Some(r) = back {
                        let (p, b) = r.into_parts();
                        *head = Some(p);
                        if let Either::Left(s) = b {
                            stream_body = Some(s);
                        }
                    }
                    let last =
                        !e.retryable || (attempt >= retries && !given_back) || head.is_none();
                    // A client that sent a broken body or stopped sending is not the peer's
                    // failure: nothing counts against its health. A try that is retried counts
                    // as what failed (Kong's balancer phase); the last one by the status the
                    // request ends with (Kong's log phase: a refused connection is an HTTP 502,
                    // a timeout's 504 a timeout).
                    if e.source != Source::Downstream {
                        peer.report(if last {
                            BalancerOutcome::Status(e.kind.status().as_u16())
                        } else {
                            outcome_of(&e)
                        });
                    }
                    if let Some(a) = &mut cx.access {
                        a.tried(crate::access_log::Try {
                            addr: peer.addr,
                            status: e.kind.status().as_u16(),
                            time: t_start.elapsed(),
                        });
                    }
                    tried.push(peer.addr);
                    drop(peer);
                    if last {
                        return Err(e);
                    }
                    tracing::debug!(error = %e, attempt, given_back, "retrying on another peer");
                    if !given_back {
                        attempt += 1;
                    }
                }
            }
        };
        let upstream_ms = ms(t_done.duration_since(t_sent));
        let proxy_ms = ms(t_sent.duration_since(cx.start));
        let (head, mut rbody) = resp;
        let status = head.status();
        let mut peer = Some(peer);
        let switching = status == StatusCode::SWITCHING_PROTOCOLS;
        // Kong's `$upstream_upgrade`: what the upstream was asked to switch to
        let asked_upgrade: &[u8] = if client_upgrade.is_some() {
            b"websocket"
        } else {
            b""
        };
        // a 101 only answers a client that asked for a WebSocket, stricter than Kong
        // ([`is_websocket`]); an upstream that names another protocol in it has its `Upgrade`
        // dropped, as Kong's header filter drops it
        let upgrading = match (switching, client_upgrade) {
            (true, Some(client)) => Some(client),
            (true, None) => return Err(Error::upstream(Kind::InvalidResponse)),
            (false, _) => None,
        };

        // --- response buffering ---
        // A body that breaks off meanwhile is passed on as nginx passes it on once it sent the
        // head (an answer this small waits in its `postpone_output`): the head, what was read,
        // then the connection closed.
        let buffered = match buffers(&head, &rbody, sh.settings.response_buffer_limit) {
            Some(len) if up.route.response_buffering && !switching && !h2 => {
                // The upstream connection goes back to the pool as soon as the body is in.
                let b = read_whole(&mut rbody, read_timeout, len).await;
                peer = None;
                Some(b)
            }
            _ => None,
        };

        // --- header_filter: what the gateway sets on the answer ---
        let mut set = SetHeaders::with_capacity(7);
        if !up.te_trailers {
            set.set(&TRAILER, None);
        }
        let on = &sh.settings.headers;
        if on.via {
            let via = if h2 { &sh.via_h2 } else { &sh.via_h1 };
            let via = match head.via() {
                Some(prev) => {
                    let mut v = prev.into_owned();
                    v.extend_from_slice(b", ");
                    v.extend_from_slice(via.as_bytes());
                    HeaderValue::from_bytes(&v).ok()
                }
                None => Some(via.clone()),
            };
            set.set(&VIA, via);
        }
        if on.server && !head.has_server() {
            set.set(&SERVER, Some(sh.server.clone()));
        }
        if on.upstream_latency {
            set.set(&X_KONG_UPSTREAM_LATENCY, Some(num_header(upstream_ms)));
        }
        if on.proxy_latency {
            set.set(&X_KONG_PROXY_LATENCY, Some(num_header(proxy_ms)));
        }
        if on.upstream_status {
            set.set(
                &X_KONG_UPSTREAM_STATUS,
                Some(HeaderValue::from(status.as_u16())),
            );
        }
        if on.request_id {
            set.set(&X_KONG_REQUEST_ID, Some(cx.rid.clone()));
        }
        // (Kong's set_cookie: in place of the upstream's cookie of that name, if it set one)
        if let Some(c) = &cx.hash_cookie
            && let Ok(v) = HeaderValue::from_str(&c.header_value())
        {
            set.replace_prefixed(&SET_COOKIE, v, c.name.len() + 1);
        }
        // (an upgraded request is counted when its tunnel ends, as nginx logs it then)
        if upgrading.is_none() {
            up.stats.response(status.as_u16(), true);
        }
        // (the latencies are recorded when the answer ends: [`Log`])
        cx.upstream = Some((upstream_ms, proxy_ms));
        cx.proxied = true;

        let mut rp = match head {
            // HTTP/1.1 upstreams: the head goes on as read, with the set headers
            UpHead::Raw(head) => {
                let body = answer_body(buffered, rbody, read_timeout, peer);
                return Ok(Answer::Raw(Box::new(RawAnswer { head, set, body })));
            }
            UpHead::Map(rp) => rp,
        };
        strip_answer_hop_by_hop(&mut rp.headers, asked_upgrade);
        hide_headers(&mut rp.headers, h2);
        // (nginx's header filters write a 204 without them, as the HTTP/1.1 client leaves them
        // out while reading)
        if rp.status == StatusCode::NO_CONTENT {
            rp.headers.remove(header::CONTENT_TYPE);
            rp.headers.remove(header::CONTENT_LENGTH);
        }
        set.apply(&mut rp.headers, false);
        rp.version = Version::HTTP_11;

        if let Some(client) = upgrading {
            // (nginx's header filter writes `Connection: upgrade` on a 101)
            rp.headers
                .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            let mut tmp = Response::from_parts(rp, rbody);
            let upstream = hyper::upgrade::on(&mut tmp);
            let (rp, _) = tmp.into_parts();
            // nginx logs an upgraded request when its tunnel ends: the request latency runs to
            // then, and the bytes sent include the tunnel's toward the client
            if let Some(e) = &mut cx.access {
                e.status = 101;
            }
            let mut log = Log::new(Arc::clone(up.stats), cx.start, cx.latencies())
                .with_status(101)
                .with_access(cx.access.take());
            cx.tunnelled = true;
            tokio::spawn(async move {
                let (Ok(u), Ok(d)) = tokio::join!(upstream, client) else {
                    return;
                };
                let sent = tunnel(TokioIo::new(d), TokioIo::new(u), read_timeout).await;
                log.egress(sent);
            });
            return Ok(Response::from_parts(rp, ProxyBody::empty()).into());
        }

        // --- body_filter ---
        // (a 204 is a head alone to nginx, `header_only`, whatever body the upstream sent)
        if rp.status == StatusCode::NO_CONTENT {
            return Ok(Response::from_parts(rp, ProxyBody::empty()).into());
        }
        let body = answer_body(buffered, rbody, read_timeout, peer);
        Ok(Response::from_parts(rp, body).into())
    }
}

/// Carries an upgraded connection's bytes both ways, as nginx's upgraded handler does: each
/// direction on its own (a peer slow to read one way never holds up the other), ending when
/// either side closes (after passing on what it had sent) or fails, or when no byte has
/// moved either way for `idle` (the service's `read_timeout`, nginx's `proxy_read_timeout`,
/// which any event re-arms; a write that stalls that long ends it too). Then both sides are
/// shut down. Returns the bytes sent to the client.
async fn tunnel<C, U>(client: C, upstream: U, idle: Duration) -> u64
where
    C: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    U: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // when a byte last moved, either way
    let clock = crate::deadline::IdleClock::new();
    // (the bytes written are counted in `moved` as they go: the side that did not end is
    // dropped unfinished)
    async fn pump<R, W>(
        mut from: R,
        mut to: W,
        clock: &crate::deadline::IdleClock,
        moved: Option<&std::sync::atomic::AtomicU64>,
    ) -> W
    where
        R: tokio::io::AsyncRead + Unpin,
        W: tokio::io::AsyncWrite + Unpin,
    {
        // (nginx's `proxy_buffer_size`)
        let mut buf = vec![0u8; 8 * 1024];
        loop {
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => return to,
                Ok(n) => {
                    clock.touch();
                    if to.write_all(&buf[..n]).await.is_err() || to.flush().await.is_err() {
                        return to;
                    }
                    if let Some(m) = moved {
                        m.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
                    }
                    clock.touch();
                }
            }
        }
    }
    let to_client = std::sync::atomic::AtomicU64::new(0);
    let (client_in, client_out) = tokio::io::split(client);
    let (upstream_in, upstream_out) = tokio::io::split(upstream);
    let up = pump(client_in, upstream_out, &clock, None);
    let down = pump(upstream_in, client_out, &clock, Some(&to_client));
    let quiet = clock.quiet_for(idle);
    let mut up = std::pin::pin!(up);
    let mut down = std::pin::pin!(down);
    // (the write half of the side that ended is shut down with the other's)
    let (upstream_out, client_out) = tokio::select! {
        u = up.as_mut() => (Some(u), None),
        c = down.as_mut() => (None, Some(c)),
        () = quiet => (None, None),
    };
    let close = async {
        match (upstream_out, client_out) {
            (Some(mut u), None) => {
                let _ = u.shutdown().await;
            }
            (None, Some(mut c)) => {
                let _ = c.shutdown().await;
            }
            _ => {}
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), close).await;
    to_client.load(std::sync::atomic::Ordering::Relaxed)
}

/// An upstream answer's head: as read from an HTTP/1.1 connection, or hyper's.
enum UpHead {
    Raw(RawHead),
    Map(http::response::Parts),
}

impl UpHead {
    fn hyper(r: Response<Incoming>) -> (UpHead, UpBody) {
        let (p, b) = r.into_parts();
        (UpHead::Map(p), UpBody::Hyper(b))
    }
    fn status(&self) -> StatusCode {
        match self {
            UpHead::Raw(h) => h.status,
            UpHead::Map(p) => p.status,
        }
    }
    /// The first `Via` value.
    /// The upstream's `Via`, its lines joined with `, ` as nginx's `$upstream_http_via`
    /// joins them (1.23+).
    fn via(&self) -> Option<std::borrow::Cow<'_, [u8]>> {
        fn join<'a>(mut vs: impl Iterator<Item = &'a [u8]>) -> Option<std::borrow::Cow<'a, [u8]>> {
            let first = vs.next()?;
            let Some(second) = vs.next() else {
                return Some(std::borrow::Cow::Borrowed(first));
            };
            let mut v = first.to_vec();
            for more in std::iter::once(second).chain(vs) {
                v.extend_from_slice(b", ");
                v.extend_from_slice(more);
            }
            Some(std::borrow::Cow::Owned(v))
        }
        match self {
            UpHead::Raw(h) => {
                h.via()?;
                join(
                    h.iter()
                        .filter(|(n, _)| n.eq_ignore_ascii_case(b"via"))
                        .map(|(_, v)| v),
                )
            }
            UpHead::Map(p) => join(
                p.headers
                    .get_all(header::VIA)
                    .iter()
                    .map(HeaderValue::as_bytes),
            ),
        }
    }
    fn has_server(&self) -> bool {
        match self {
            UpHead::Raw(h) => h.has_server(),
            UpHead::Map(p) => p.headers.contains_key(header::SERVER),
        }
    }
    /// `X-Accel-Buffering: no`
    fn unbuffered(&self) -> bool {
        match self {
            UpHead::Raw(h) => h.unbuffered(),
            UpHead::Map(p) => p
                .headers
                .get(&X_ACCEL_BUFFERING)
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"no")),
        }
    }
}

/// What the request phases answer: a response, or an HTTP/1.1 upstream's head as read with
/// the headers the gateway sets, which the HTTP/1.1 fast path writes without building a
/// `HeaderMap` ([`Answer::into_response`] builds one for hyper's server).
///
/// Both boxed: an answer is returned up through every phase of the request (a few hundred
/// bytes each time, unboxed); boxed, a pointer moves instead.
#[derive(Debug)]
pub(crate) enum Answer {
    /// A response.
    Map(Box<Response<ProxyBody>>),
    /// An upstream's answer forwarded.
    Raw(Box<RawAnswer>),
}

/// An HTTP/1.1 upstream's answer forwarded: its head as read, the headers set on it, its
/// body.
#[derive(Debug)]
pub(crate) struct RawAnswer {
    pub(crate) head: RawHead,
    pub(crate) set: SetHeaders,
    pub(crate) body: ProxyBody,
}

impl From<Response<ProxyBody>> for Answer {
    fn from(r: Response<ProxyBody>) -> Self {
        Answer::Map(Box::new(r))
    }
}

impl Answer {
    /// The status.
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            Answer::Map(r) => r.status(),
            Answer::Raw(a) => a.head.status,
        }
    }

    /// As a response (the head's headers put into a `HeaderMap`).
    pub(crate) fn into_response(self) -> Response<ProxyBody> {
        match self {
            Answer::Map(r) => *r,
            Answer::Raw(a) => match a.head.into_parts() {
                Ok(mut rp) => {
                    a.set.apply(&mut rp.headers, false);
                    rp.version = Version::HTTP_11;
                    Response::from_parts(rp, a.body)
                }
                // httparse accepted what `http` refuses: not expected, answered as any
                // invalid upstream answer
                Err(_) => {
                    let mut r = Response::new(ProxyBody::full(Kind::InvalidResponse.message()));
                    *r.status_mut() = Kind::InvalidResponse.status();
                    r
                }
            },
        }
    }
}

/// What one try on an HTTP/1.1 upstream needs besides the request.
struct H1Try<'a> {
    key: &'a PoolKey,
    tls: Option<&'a UpstreamTls>,
    connect_timeout: Duration,
    write_timeout: Duration,
    read_timeout: Duration,
    /// When the try started (the clock read once for its timeouts and the pool).
    start: Instant,
}

/// How a try on an HTTP/1.1 upstream failed, beside its error.
#[derive(Debug, Clone, Copy)]
struct H1Failure {
    /// The request was (perhaps) sent.
    sent: bool,
    /// It failed on a kept-alive connection with an error, not a timeout: the try is given
    /// back, as nginx gives it back.
    on_kept_alive: bool,
}

impl H1Failure {
    const NOT_SENT: H1Failure = H1Failure {
        sent: false,
        on_kept_alive: false,
    };
    const SENT: H1Failure = H1Failure {
        sent: true,
        on_kept_alive: false,
    };
}

impl H1Try<'_> {
    /// Sends `parts` (with the client's head as received, if kept; with the complete body
    /// `full`, or the client's `stream`) on `c` and reads the answer's head. An empty `full`
    /// body goes without a `Content-Length` unless the client sent a body (`framed`). A
    /// pooled connection found closed before anything was sent is replaced by a fresh one.
    /// The error says whether the request was (perhaps) sent.
    async fn send(
        &self,
        sh: &Arc<Shared>,
        mut c: crate::upstream::Conn,
        (parts, client): (&http::request::Parts, Option<&ClientHead>),
        set: &SetHeaders,
        (full, framed, stream): (
            Option<&Bytes>,
            bool,
            &mut Option<crate::upstream::ClientBody>,
        ),
    ) -> Result<(UpHead, UpBody), (Error, H1Failure)> {
        // the try's clock reading, read again after a connection that failed
        let mut start = self.start;
        let watch = stream.as_ref().map(crate::upstream::ClientBody::watch);
        loop {
            let body = match full {
                Some(b) if b.is_empty() && !framed => SendBody::Empty,
                Some(b) => SendBody::Full(b),
                None => SendBody::Stream(stream),
            };
            // (its parts borrowed apart: the exchange and the deadline around it)
            let cs: &mut crate::upstream::ConnState = &mut c;
            // the read timeout, on the connection's kept deadline
            let with_body = matches!(body, SendBody::Stream(Some(_)) | SendBody::Full(_));
            let r = if with_body {
                // The read timeout starts once the request is sent, as nginx arms
                // `proxy_read_timeout` only then (a body is written under the write timeout;
                // a streamed one at the client's pace, `client_body_timeout` between its
                // parts).
                match cs
                    .h1
                    .send_request(parts, client, set, body, sh.settings.proxy_buffer_size)
                    .await
                {
                    Err(e) => Some(Err(e)),
                    Ok(sent) => {
                        let answer = std::pin::pin!(cs.h1.read_answer(
                            parts.method == http::Method::HEAD,
                            sh.settings.proxy_buffer_size
                        ));
                        // (a request not sent whole leaves the connection unusable)
                        let whole = sent == crate::h1_client::Sent::Whole;
                        Deadline::arm(&mut cs.read_deadline, Instant::now(), self.read_timeout)
                            .within(answer)
                            .await
                            .map(|r| r.map(|(head, f, reusable)| (head, f, reusable && whole)))
                    }
                }
            } else {
                let exchange = std::pin::pin!(cs.h1.exchange(
                    parts,
                    client,
                    set,
                    body,
                    sh.settings.proxy_buffer_size
                ));
                // (the try's clock reading, unless the connection was just opened: the
                // connect time does not count against the read timeout)
                let now = if cs.reused { start } else { Instant::now() };
                Deadline::arm(&mut cs.read_deadline, now, self.read_timeout)
                    .within(exchange)
                    .await
            };
            let e = match r {
                None => {
                    return Err((
                        Error::upstream(Kind::ReadTimeout).retryable(),
                        H1Failure::SENT,
                    ));
                }
                Some(Ok((head, framing, reusable))) => {
                    let body = RawBody::new(sh.pool.clone(), c, framing, reusable);
                    return Ok((UpHead::Raw(head), UpBody::Raw(body)));
                }
                Some(Err(e)) => e,
            };
            let timed_out = e.io().kind() == std::io::ErrorKind::TimedOut;
            let err = if timed_out {
                Error::upstream(Kind::WriteTimeout).retryable()
            } else {
                Error::upstream(Kind::InvalidResponse).retryable()
            };
            match e {
                ExchangeError::NotSent(_) if c.reused => {
                    start = Instant::now();
                    c = next_h1(
                        sh,
                        self.key,
                        self.tls,
                        self.connect_timeout,
                        self.write_timeout,
                        start,
                    )
                    .await
                    .map_err(|e| (e, H1Failure::NOT_SENT))?;
                }
                ExchangeError::NotSent(io) => return Err((err.because(io), H1Failure::NOT_SENT)),
                ExchangeError::Failed(io) => {
                    let failure = H1Failure {
                        sent: true,
                        on_kept_alive: c.reused && !timed_out,
                    };
                    return Err((err.because(io), failure));
                }
                // an answer nginx refuses (`invalid_header`): a 502, not retried, as Kong's
                // `proxy_next_upstream` is nginx's `error timeout`
                ExchangeError::Invalid(io) => {
                    return Err((
                        Error::upstream(Kind::InvalidResponse).because(io),
                        H1Failure::SENT,
                    ));
                }
                // the client's body failed (too large, broken off, stalled: 413, 400, 408;
                // or at odds with its length: 400), and the upstream connection
                // (mid-request) is dropped
                ExchangeError::Client(io) => {
                    let kind = watch
                        .as_ref()
                        .and_then(crate::upstream::BodyWatch::failure)
                        .unwrap_or(Kind::BadRequest);
                    return Err((Error::downstream(kind).because(io), H1Failure::SENT));
                }
            }
        }
    }
}

/// The upstream error for a failure of hyper's client: the client's own when its streamed
/// body (`watch`) failed meanwhile (too large, broken off: whatever the upstream stream's
/// reset says), else a write timeout, a read timeout, or an invalid answer.
fn hyper_error(e: hyper::Error, watch: Option<&crate::upstream::BodyWatch>) -> Error {
    if let Some(kind) = watch.and_then(crate::upstream::BodyWatch::failure) {
        return Error::downstream(kind).because(e);
    }
    if crate::upstream::is_write_timeout(&e) {
        Error::upstream(Kind::WriteTimeout).retryable()
    } else if e.is_timeout() {
        Error::upstream(Kind::ReadTimeout).retryable()
    } else if e.is_parse() || stream_refused(&e) {
        // an answer nginx refuses (`invalid_header`): not retried; so is an HTTP/2 stream
        // the upstream reset, or refused by a GOAWAY (nginx's gRPC module: "upstream
        // rejected request", "upstream sent goaway", both `NGX_HTTP_UPSTREAM_INVALID_HEADER`)
        Error::upstream(Kind::InvalidResponse).because(e)
    } else {
        Error::upstream(Kind::InvalidResponse)
            .retryable()
            .because(e)
    }
}

/// Whether an HTTP/2 upstream reset the stream or refused it with a GOAWAY, rather than the
/// connection failing under it.
fn stream_refused(e: &hyper::Error) -> bool {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(h2e) = s.downcast_ref::<h2::Error>() {
            return h2e.is_remote() && (h2e.is_reset() || h2e.is_go_away());
        }
        source = s.source();
    }
    false
}

/// What one try on an HTTP/2 upstream needs besides the request.
struct H2Try<'a> {
    key: &'a PoolKey,
    tls: Option<&'a UpstreamTls>,
    connect_timeout: Duration,
    write_timeout: Duration,
    read_timeout: Duration,
}

impl H2Try<'_> {
    /// Sends `req` on `c`, a connection no other request uses, and waits for the answer's
    /// head ([`after_body`]). The answer's body holds the connection and gives it back to
    /// the pool at its clean end ([`H2Body`]); on any failure the connection is dropped,
    /// which closes it (a timed-out or failed connection is never used again, as nginx
    /// closes it). A request a pooled connection does not take (closed, or going away
    /// before it was sent) goes on another, idle or new; one a new connection does not
    /// take is given back with the error, for the balancer's next try. `given_back` is set
    /// when the request failed with an error on a kept-alive connection after it was taken
    /// (the try does not count, as in nginx).
    async fn send(
        &self,
        sh: &Arc<Shared>,
        mut c: crate::upstream::H2Conn,
        req: Request<ReqBody>,
        watch: Option<crate::upstream::BodyWatch>,
        given_back: &mut bool,
    ) -> Result<(UpHead, UpBody), AttemptError> {
        // when hyper took the body's last part (the connection is pooled after the answer
        // only then)
        let sent = crate::upstream::RequestSent::default();
        let mut req = req.map(|b| crate::upstream::H2ReqBody::new(b, sent.clone()));
        loop {
            let (e, back) = match c.tx.ready().await {
                Err(e) => (e, req),
                Ok(()) => {
                    let answer = c.tx.try_send_request(req);
                    match after_body(answer, self.read_timeout, watch.as_ref()).await {
                        Err(Some(kind)) => return Err((Error::downstream(kind), None)),
                        Err(None) => {
                            return Err((Error::upstream(Kind::ReadTimeout).retryable(), None));
                        }
                        Ok(Ok(r)) => {
                            let (p, b) = r.into_parts();
                            let body = H2Body::new(b, sh.pool.clone(), c, sent);
                            return Ok((UpHead::Map(p), UpBody::H2(body)));
                        }
                        Ok(Err(mut e)) => match e.take_message() {
                            Some(back) => (e.into_error(), back),
                            None => {
                                let e = hyper_error(e.into_error(), watch.as_ref());
                                // (an error, not a timeout, on a kept-alive connection: the
                                // try is given back, as nginx gives a cached peer's back)
                                *given_back =
                                    c.reused && e.retryable && e.kind == Kind::InvalidResponse;
                                return Err((e, None));
                            }
                        },
                    }
                }
            };
            if !c.reused {
                return Err((hyper_error(e, watch.as_ref()), unsent(back)));
            }
            tracing::debug!(error = %e, "pooled upstream h2 connection took no request");
            req = back;
            c = match next_h2(
                sh,
                self.key,
                self.tls,
                self.connect_timeout,
                self.write_timeout,
                Instant::now(),
            )
            .await
            {
                Ok(c) => c,
                Err(e) => return Err((e, unsent(req))),
            };
        }
    }
}

/// A request an HTTP/2 connection gave back unsent, as it can be sent again: `None` when
/// hyper had asked for part of its body after all.
fn unsent(r: Request<crate::upstream::H2ReqBody>) -> Option<Request<ReqBody>> {
    let (p, b) = r.into_parts();
    b.into_unsent().map(|b| Request::from_parts(p, b))
}

/// The body of an upstream's answer: the one read whole when buffered (or what was read of
/// it before it broke off, then the failure), else the upstream's streamed through.
fn answer_body(
    buffered: Option<Result<Bytes, Box<Broken>>>,
    rbody: UpBody,
    read_timeout: Duration,
    peer: Option<silverback_balancer::Peer>,
) -> ProxyBody {
    match buffered {
        Some(Ok(b)) => ProxyBody::full(b),
        Some(Err(b)) => {
            let Broken(e, read, len) = *b;
            UpstreamBody::broken(rbody, read, Box::new(e), len)
        }
        None => UpstreamBody::wrap(rbody, read_timeout, peer),
    }
}

#[cfg(test)]
mod helper_tests {
    use super::request_id;

    #[test]
    fn forwarded_host_is_nginxs_host() {
        let v = |s: &str| http::HeaderValue::from_str(s).unwrap();
        for (host, want) in [
            ("a.test:8000", "a.test"),
            ("a.test", "a.test"),
            ("A.Test:", "a.test"),
            ("a.test:x1", "a.test"),
            ("a.test.", "a.test"),
            ("a.test.:80", "a.test"),
            ("[::1]:80", "[::1]"),
            ("[::1]", "[::1]"),
            ("1.2.3.4:1", "1.2.3.4"),
            ("a:b:12", "a"),
            ("8000", "8000"),
        ] {
            let got = super::forwarded_host(Some(&v(host)));
            assert_eq!(got, Some(v(want)), "{host}");
        }
        assert_eq!(super::forwarded_host(None), Some(v("kong")));
    }

    #[test]
    fn request_ids_are_distinct_hex_and_keep_their_value() {
        // More ids than one block holds, the first ones kept while the later ones are made
        // (they share the block's allocation).
        let (ids, copies): (Vec<_>, Vec<Vec<u8>>) = (0..3 * super::IDS_PER_BLOCK + 7)
            .map(|_| {
                let id = request_id();
                let copy = id.as_bytes().to_vec();
                (id, copy)
            })
            .unzip();
        let mut seen = std::collections::HashSet::new();
        for (v, copy) in ids.iter().zip(&copies) {
            let b = v.as_bytes();
            assert_eq!(b.len(), 32, "{v:?}");
            assert!(
                b.iter()
                    .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c)),
                "{v:?}"
            );
            assert_eq!(b, &copy[..]);
            assert!(seen.insert(b.to_vec()), "repeated id {v:?}");
        }
        // every hex digit turns up in both halves of a digit pair
        let all: Vec<u8> = copies.concat();
        for d in b"0123456789abcdef" {
            assert!(all.chunks(2).any(|p| p[0] == *d), "{}", *d as char);
            assert!(all.chunks(2).any(|p| p[1] == *d), "{}", *d as char);
        }
    }
}
