//! In-process test harness: real backend servers on loopback sockets, clients for HTTP/1.1,
//! h2c, TLS (with SNI and ALPN), raw TCP, and a gateway started from YAML. Every test file
//! uses these; nothing is mocked.
#![allow(dead_code, missing_docs, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use silverback_config::{LoadOptions, PluginRegistry, RouterFlavor};
use silverback_proxy::{Gateway, ListenerKind, Settings};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

// ---------------------------------------------------------------- backends

/// A backend server: answers every request with a JSON echo of what it received
/// (`method`, `uri`, `version`, `headers`, `body`), plus a few behaviours by path:
/// `/delay/<ms>` sleeps first, `.../status/<code>` answers that status, `/ws` accepts a
/// WebSocket upgrade and echoes bytes, `/grpc` answers like a gRPC server (trailers),
/// `.../deny/<ms>` answers a gRPC call refused at once (trailers-only) and leaves its
/// request body un-read, its stream open, for that long. Each `x-respond-header: Name:
/// value` request header adds that header to the echo's answer.
#[derive(Debug, Clone)]
pub struct Backend {
    pub addr: SocketAddr,
    /// Connections accepted so far.
    pub connections: Arc<AtomicUsize>,
    /// Connections ended so far (closed by either side, or broken).
    pub closed: Arc<AtomicUsize>,
    /// Requests served so far.
    pub requests: Arc<AtomicUsize>,
    pub name: &'static str,
    /// When non-zero, every request (health probes included) is answered with this status:
    /// a failing backend, switched on and off by the test.
    pub fail: Arc<AtomicU16>,
    /// Milliseconds every request (health probes included) waits before it is answered: a
    /// slow backend, switched on and off by the test.
    pub delay_ms: Arc<std::sync::atomic::AtomicU64>,
    /// Requests held until a number of them arrived ([`Backend::hold_until`]).
    gate: Arc<tokio::sync::watch::Sender<Gate>>,
}

/// [`Backend::hold_until`]'s count: `arrived` requests of the `want` held so far.
#[derive(Debug, Default)]
struct Gate {
    want: usize,
    arrived: usize,
}

#[derive(Debug, Default)]
pub struct BackendBuilder {
    name: &'static str,
    h2_only: bool,
    ip: Option<std::net::IpAddr>,
    tls: Option<Arc<rustls::ServerConfig>>,
    max_streams: Option<u32>,
    stream_window: Option<u32>,
}

impl Backend {
    /// A backend speaking HTTP/1.1 and h2c (prior knowledge).
    pub fn builder() -> BackendBuilder {
        BackendBuilder {
            name: "backend",
            ..BackendBuilder::default()
        }
    }
    pub async fn start() -> Backend {
        Backend::builder().run().await
    }
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
    /// Makes every request fail with `status` (0: back to normal).
    pub fn set_fail(&self, status: u16) {
        self.fail.store(status, Ordering::SeqCst);
    }
    /// Makes every request wait `ms` milliseconds first (0: back to normal).
    pub fn set_delay(&self, ms: u64) {
        self.delay_ms.store(ms, Ordering::SeqCst);
    }
    pub fn served(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
    /// Connections ended so far.
    pub fn closed(&self) -> usize {
        self.closed.load(Ordering::SeqCst)
    }
    /// Holds every request from now on (before any other behaviour) until `n` have arrived,
    /// then lets them all, and any after them, go on: `n` requests are then certainly in
    /// flight at once, however slowly the machine runs them.
    pub fn hold_until(&self, n: usize) {
        self.gate.send_replace(Gate {
            want: n,
            arrived: 0,
        });
    }
}

/// An address on `ip` where nothing listens (connections are refused).
pub async fn dead_addr(ip: &str) -> SocketAddr {
    let l = TcpListener::bind((ip, 0)).await.unwrap();
    l.local_addr().unwrap()
}

impl BackendBuilder {
    pub fn name(mut self, n: &'static str) -> Self {
        self.name = n;
        self
    }
    /// Listens on this loopback address (127.0.0.x) instead of 127.0.0.1.
    pub fn ip(mut self, ip: &str) -> Self {
        self.ip = Some(ip.parse().unwrap());
        self
    }
    /// Serves TLS with this configuration (HTTP/1.1 inside, or HTTP/2 when its ALPN
    /// chooses `h2`: [`h2_server_tls`]).
    pub fn tls(mut self, cfg: Arc<rustls::ServerConfig>) -> Self {
        self.tls = Some(cfg);
        self
    }
    /// Takes at most `n` streams at once on an HTTP/2 connection (it advertises
    /// `SETTINGS_MAX_CONCURRENT_STREAMS`, and refuses streams past it).
    pub fn h2_max_streams(mut self, n: u32) -> Self {
        self.max_streams = Some(n);
        self
    }
    /// Advertises this initial HTTP/2 stream window (`SETTINGS_INITIAL_WINDOW_SIZE`): a
    /// sender may have that many bytes of a request body unread by the handler in flight.
    pub fn h2_stream_window(mut self, n: u32) -> Self {
        self.stream_window = Some(n);
        self
    }
    pub async fn run(self) -> Backend {
        let ip = self.ip.unwrap_or([127, 0, 0, 1].into());
        let l = TcpListener::bind((ip, 0)).await.unwrap();
        let addr = l.local_addr().unwrap();
        let b = Backend {
            addr,
            connections: Arc::default(),
            closed: Arc::default(),
            requests: Arc::default(),
            name: self.name,
            fail: Arc::default(),
            delay_ms: Arc::default(),
            gate: Arc::new(tokio::sync::watch::Sender::new(Gate::default())),
        };
        let b2 = b.clone();
        let tls = self.tls.map(tokio_rustls::TlsAcceptor::from);
        let max_streams = self.max_streams;
        let stream_window = self.stream_window;
        tokio::spawn(async move {
            loop {
                let Ok((s, _)) = l.accept().await else { return };
                b2.connections.fetch_add(1, Ordering::SeqCst);
                let b3 = b2.clone();
                let closed = b2.closed.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| handle(b3.clone(), req));
                    let mut builder =
                        hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    // (as many headers as the gateway passes on: nginx's 1000 and its own)
                    builder.http1().max_headers(1100);
                    if let Some(n) = max_streams {
                        builder.http2().max_concurrent_streams(n);
                    }
                    if let Some(n) = stream_window {
                        builder.http2().initial_stream_window_size(n);
                    }
                    match tls {
                        None => {
                            let _ = builder
                                .serve_connection_with_upgrades(TokioIo::new(s), svc)
                                .await;
                        }
                        Some(acc) => {
                            if let Ok(t) = acc.accept(s).await {
                                let _ = builder
                                    .serve_connection_with_upgrades(TokioIo::new(t), svc)
                                    .await;
                            }
                        }
                    }
                    closed.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        b
    }
}

fn headers_json(h: &HeaderMap) -> Value {
    let mut m = BTreeMap::new();
    for k in h.keys() {
        let vals: Vec<String> = h
            .get_all(k)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect();
        m.insert(k.as_str().to_string(), Value::from(vals.join(", ")));
    }
    json!(m)
}

async fn handle(
    b: Backend,
    mut req: Request<Incoming>,
) -> Result<Response<http_body_util::combinators::BoxBody<Bytes, Infallible>>, Infallible> {
    b.requests.fetch_add(1, Ordering::SeqCst);
    if b.gate.borrow().want > 0 {
        let mut rx = b.gate.subscribe();
        b.gate.send_modify(|g| g.arrived += 1);
        let _ = rx.wait_for(|g| g.arrived >= g.want).await;
    }
    let path = req.uri().path().to_string();
    let full = |status: u16, body: Bytes| {
        let mut r = Response::new(Full::new(body).boxed());
        *r.status_mut() = StatusCode::from_u16(status).unwrap();
        r
    };
    let delay = b.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let fail = b.fail.load(Ordering::SeqCst);
    if fail != 0 {
        let mut r = full(fail, Bytes::from_static(b"failing"));
        r.headers_mut().insert("x-backend", b.name.parse().unwrap());
        return Ok(r);
    }
    if let Some(ms) = path.strip_prefix("/delay/") {
        tokio::time::sleep(Duration::from_millis(ms.parse().unwrap_or(0))).await;
    }
    // `.../deny/<ms>`: a gRPC call refused before its request is read, as an authenticating
    // server may: a trailers-only answer (HEADERS with END_STREAM) at once, while the
    // request body stays un-read (its flow-control window unopened) and the stream open
    // for `ms` milliseconds.
    if let Some((_, ms)) = path.rsplit_once("/deny/") {
        let ms = ms.parse().unwrap_or(0);
        let body = req.into_body();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            drop(body);
        });
        let mut r = full(200, Bytes::new());
        let h = r.headers_mut();
        h.insert("content-type", "application/grpc".parse().unwrap());
        h.insert("grpc-status", "16".parse().unwrap());
        h.insert("grpc-message", "denied".parse().unwrap());
        return Ok(r);
    }
    if path == "/ws" {
        let key = req.headers().get("sec-websocket-key").cloned();
        let on = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            if let Ok(up) = on.await {
                let mut io = TokioIo::new(up);
                let mut buf = [0u8; 1024];
                loop {
                    match io.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            let mut out = b"echo:".to_vec();
                            out.extend_from_slice(&buf[..n]);
                            if io.write_all(&out).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            }
        });
        let mut r = full(101, Bytes::new());
        r.headers_mut()
            .insert("upgrade", "websocket".parse().unwrap());
        r.headers_mut()
            .insert("connection", "Upgrade".parse().unwrap());
        if let Some(k) = key {
            r.headers_mut().insert("sec-websocket-accept", k);
        }
        return Ok(r);
    }
    // `.../slow/N`: N pieces of 1 KiB, 20 ms apart, of unknown length (chunked).
    if let Some((_, n)) = path.rsplit_once("/slow/") {
        let n: usize = n.parse().unwrap_or(1);
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        tokio::spawn(async move {
            for _ in 0..n {
                tokio::time::sleep(Duration::from_millis(20)).await;
                let piece = Ok(http_body::Frame::data(Bytes::from(vec![b'x'; 1024])));
                if tx.send(piece).await.is_err() {
                    return;
                }
            }
        });
        let body = http_body_util::StreamBody::new(Recv(rx)).boxed();
        return Ok(Response::new(body));
    }
    if path.starts_with("/grpc") {
        let body = req
            .into_body()
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", "0".parse().unwrap());
        trailers.insert("grpc-message", "ok".parse().unwrap());
        let frames = futures_stream(body, trailers);
        let mut r = Response::new(frames);
        r.headers_mut()
            .insert("content-type", "application/grpc".parse().unwrap());
        return Ok(r);
    }
    let status = path
        .rsplit_once("/status/")
        .and_then(|(_, c)| c.parse().ok())
        .unwrap_or(200);
    // `x-respond-server` / `x-respond-via`: the answer carries that `Server` / `Via`.
    let respond_server = req.headers().get("x-respond-server").cloned();
    let respond_via = req.headers().get("x-respond-via").cloned();
    let respond_headers: Vec<(http::HeaderName, http::HeaderValue)> = req
        .headers()
        .get_all("x-respond-header")
        .iter()
        .filter_map(|v| {
            let (n, v) = v.to_str().ok()?.split_once(':')?;
            Some((n.trim().parse().ok()?, v.trim().parse().ok()?))
        })
        .collect();
    let version = format!("{:?}", req.version());
    let method = req.method().to_string();
    let uri = req.uri().to_string();
    let headers = headers_json(req.headers());
    let body = req
        .into_body()
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let echo = json!({
        "backend": b.name, "method": method, "uri": uri, "version": version,
        "headers": headers, "body": String::from_utf8_lossy(&body),
    });
    let mut r = full(status, Bytes::from(echo.to_string()));
    r.headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    r.headers_mut().insert("x-backend", b.name.parse().unwrap());
    r.headers_mut()
        .insert("connection", "x-hop".parse().unwrap());
    r.headers_mut()
        .insert("x-hop", "must-not-pass".parse().unwrap());
    if let Some(v) = respond_server {
        r.headers_mut().insert("server", v);
    }
    if let Some(v) = respond_via {
        r.headers_mut().insert("via", v);
    }
    for (n, v) in respond_headers {
        r.headers_mut().append(n, v);
    }
    Ok(r)
}

/// A body of one data frame followed by trailers.
fn futures_stream(
    data: Bytes,
    trailers: HeaderMap,
) -> http_body_util::combinators::BoxBody<Bytes, Infallible> {
    use http_body::Frame;
    let frames: Vec<Result<Frame<Bytes>, Infallible>> =
        vec![Ok(Frame::data(data)), Ok(Frame::trailers(trailers))];
    http_body_util::StreamBody::new(StreamIter(frames.into_iter())).boxed()
}

/// The frames sent on a channel, as a body stream.
struct Recv(tokio::sync::mpsc::Receiver<Result<http_body::Frame<Bytes>, Infallible>>);
impl futures_core::Stream for Recv {
    type Item = Result<http_body::Frame<Bytes>, Infallible>;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.0.poll_recv(cx)
    }
}

struct StreamIter<I>(I);
impl<I: Iterator + Unpin> futures_core::Stream for StreamIter<I> {
    type Item = I::Item;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<I::Item>> {
        std::task::Poll::Ready(self.0.next())
    }
}

/// A backend that answers with scripted bytes, exactly as given: for an HTTP/1.1
/// upstream's answers of every shape, valid or not. Each request head (a body announced by
/// `Content-Length` is read and dropped) is answered by its path's bytes, or a 404; the
/// connection then stays open for the next request, unless the path's answer closes it.
#[derive(Debug, Clone)]
pub struct RawBackend {
    pub addr: SocketAddr,
    /// Connections accepted so far.
    pub connections: Arc<AtomicUsize>,
    /// The paths of the requests received, in order.
    pub paths: Arc<std::sync::Mutex<Vec<String>>>,
}

/// A [`RawBackend`]'s script: path -> (answer in pieces, close the connection after it).
type RawAnswers = BTreeMap<String, (Vec<Vec<u8>>, bool)>;

#[derive(Debug, Default)]
pub struct RawBackendBuilder {
    answers: RawAnswers,
}

impl RawBackend {
    pub fn builder() -> RawBackendBuilder {
        RawBackendBuilder::default()
    }
    /// Requests received for `path`.
    pub fn hits(&self, path: &str) -> usize {
        self.paths
            .lock()
            .unwrap()
            .iter()
            .filter(|p| *p == path)
            .count()
    }
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

impl RawBackendBuilder {
    /// Answers `path` with `bytes`, keeping the connection open.
    pub fn answer(mut self, path: &str, bytes: impl Into<Vec<u8>>) -> Self {
        self.answers
            .insert(path.into(), (vec![bytes.into()], false));
        self
    }
    /// Answers `path` with `pieces`, 100 ms apart, keeping the connection open.
    pub fn answer_in_pieces(mut self, path: &str, pieces: &[&[u8]]) -> Self {
        let pieces = pieces.iter().map(|p| p.to_vec()).collect();
        self.answers.insert(path.into(), (pieces, false));
        self
    }
    /// Answers `path` with `bytes` (possibly none), then closes the connection.
    pub fn answer_then_close(mut self, path: &str, bytes: impl Into<Vec<u8>>) -> Self {
        self.answers.insert(path.into(), (vec![bytes.into()], true));
        self
    }
    pub async fn run(self) -> RawBackend {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let b = RawBackend {
            addr: l.local_addr().unwrap(),
            connections: Arc::default(),
            paths: Arc::default(),
        };
        let answers = Arc::new(self.answers);
        let (conns, paths) = (b.connections.clone(), b.paths.clone());
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                conns.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(raw_serve(s, answers.clone(), paths.clone()));
            }
        });
        b
    }
}

async fn raw_serve(
    mut s: TcpStream,
    answers: Arc<RawAnswers>,
    paths: Arc<std::sync::Mutex<Vec<String>>>,
) {
    const NOT_FOUND: &[u8] = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n";
    let mut buf = Vec::new();
    let mut tmp = [0u8; 8192];
    loop {
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            match s.read(&mut tmp).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&tmp[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
        let body = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse::<usize>().ok())
            .unwrap_or(0);
        while buf.len() < end + body {
            match s.read(&mut tmp).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&tmp[..n]),
            }
        }
        let path = String::from_utf8_lossy(&buf[..end])
            .split(' ')
            .nth(1)
            .unwrap_or("/")
            .to_string();
        buf.drain(..end + body);
        paths.lock().unwrap().push(path.clone());
        let (pieces, close) = match answers.get(&path) {
            Some((p, c)) => (p.iter().map(Vec::as_slice).collect(), *c),
            None => (vec![NOT_FOUND], false),
        };
        for (i, piece) in pieces.into_iter().enumerate() {
            if i > 0 {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            if s.write_all(piece).await.is_err() {
                return;
            }
        }
        if close {
            return;
        }
    }
}

// ---------------------------------------------------------------- gateway

pub fn load(yaml: &str) -> silverback_config::Config {
    let plugins = PluginRegistry::new();
    let opts = LoadOptions {
        router_flavor: RouterFlavor::TraditionalCompatible,
        plugins: &plugins,
        now_unix: None,
    };
    silverback_config::load_bytes(yaml.as_bytes(), &opts).expect("valid test configuration")
}

/// Kong's configuration hash of `yaml` (the md5 of the document).
pub fn doc_hash(yaml: &str) -> String {
    silverback_config::config_hash(yaml.as_bytes(), &load(yaml))
}

pub struct Gw {
    pub gw: Gateway,
    pub http: SocketAddr,
    pub https: SocketAddr,
    pub admin: SocketAddr,
    pub status: SocketAddr,
}

impl Gw {
    /// The `ssl` admin listener (the settings must have one).
    pub fn admin_tls(&self) -> SocketAddr {
        self.gw.addr(ListenerKind::Admin, true).unwrap()
    }
    /// The `ssl` status listener (the settings must have one).
    pub fn status_tls(&self) -> SocketAddr {
        self.gw.addr(ListenerKind::Status, true).unwrap()
    }
    pub async fn start(yaml: Option<&str>) -> Gw {
        Gw::start_with(Settings::loopback(), yaml).await
    }
    pub async fn start_with(settings: Settings, yaml: Option<&str>) -> Gw {
        let gw = Gateway::start(settings, yaml.map(|y| (load(y), doc_hash(y))))
            .await
            .expect("gateway starts");
        Gw {
            http: gw.addr(ListenerKind::Proxy, false).unwrap(),
            https: gw
                .addr(ListenerKind::Proxy, true)
                .unwrap_or(gw.addr(ListenerKind::Proxy, false).unwrap()),
            admin: gw.addr(ListenerKind::Admin, false).unwrap(),
            status: gw.addr(ListenerKind::Status, false).unwrap(),
            gw,
        }
    }
}

// ---------------------------------------------------------------- clients

/// A response read to the end.
#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub trailers: Option<HeaderMap>,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn header(&self, n: &str) -> Option<&str> {
        self.headers.get(n).and_then(|v| v.to_str().ok())
    }
}

async fn read(resp: Response<Incoming>) -> Resp {
    let (p, b) = resp.into_parts();
    let c = b.collect().await.expect("body");
    let trailers = c.trailers().cloned();
    Resp {
        status: p.status,
        headers: p.headers,
        body: c.to_bytes(),
        trailers,
    }
}

/// An HTTP/1.1 client on one keep-alive connection.
pub struct H1 {
    tx: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

impl H1 {
    pub async fn connect(addr: SocketAddr) -> H1 {
        let s = TcpStream::connect(addr).await.unwrap();
        let (tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
            .await
            .unwrap();
        tokio::spawn(async move {
            let _ = conn.with_upgrades().await;
        });
        H1 { tx }
    }
    pub async fn send(&mut self, req: Request<Full<Bytes>>) -> Resp {
        self.tx.ready().await.expect("connection ready");
        read(self.tx.send_request(req).await.expect("response")).await
    }
    pub async fn get(&mut self, host: &str, path: &str) -> Resp {
        self.send(req("GET", host, path).body(Full::default()).unwrap())
            .await
    }
    /// A `GET` with the headers given (beside `Host`).
    pub async fn get_with(&mut self, host: &str, path: &str, headers: &[(&str, &str)]) -> Resp {
        let mut b = req("GET", host, path);
        for (name, value) in headers {
            b = b.header(*name, *value);
        }
        self.send(b.body(Full::default()).unwrap()).await
    }
}

pub fn req(method: &str, host: &str, path: &str) -> http::request::Builder {
    Request::builder()
        .method(method)
        .uri(path)
        .header("host", host)
}

/// One request on a fresh HTTP/1.1 connection.
pub async fn get(addr: SocketAddr, host: &str, path: &str) -> Resp {
    H1::connect(addr).await.get(host, path).await
}

/// One request on a fresh HTTP/1.1 connection with a body of unknown length, sent chunked,
/// a chunk per part.
pub async fn h1_parts(addr: SocketAddr, req: http::request::Builder, parts: Parts) -> Resp {
    let s = TcpStream::connect(addr).await.unwrap();
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
        .await
        .unwrap();
    tokio::spawn(conn);
    tx.ready().await.unwrap();
    read(
        tx.send_request(req.body(parts).unwrap())
            .await
            .expect("response"),
    )
    .await
}

/// One request on a fresh h2c connection with a body of unknown length (no
/// `content-length`), a DATA frame per part.
pub async fn h2c_parts(addr: SocketAddr, req: http::request::Builder, parts: Parts) -> Resp {
    let s = TcpStream::connect(addr).await.unwrap();
    let (mut tx, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(s))
            .await
            .unwrap();
    tokio::spawn(conn);
    tx.ready().await.unwrap();
    read(
        tx.send_request(req.body(parts).unwrap())
            .await
            .expect("response"),
    )
    .await
}

/// A configuration with one service at `url` and two routes, `/buffered` with Kong's default
/// `request_buffering` and `/streamed` with `request_buffering: false` (paths kept).
pub fn request_buffering_routes(url: &str) -> String {
    format!(
        r#"
_format_version: "3.0"
services:
- name: s
  url: {url}
  routes:
  - name: buffered
    paths: ["/buffered"]
    strip_path: false
  - name: streamed
    paths: ["/streamed"]
    strip_path: false
    request_buffering: false
"#
    )
}

/// An h2 client (h2c prior knowledge, or over a TLS stream).
pub struct H2 {
    tx: hyper::client::conn::http2::SendRequest<Full<Bytes>>,
}

impl H2 {
    pub async fn h2c(addr: SocketAddr) -> H2 {
        let s = TcpStream::connect(addr).await.unwrap();
        H2::over(s).await
    }
    pub async fn over<I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static>(
        io: I,
    ) -> H2 {
        let (tx, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io))
                .await
                .unwrap();
        tokio::spawn(conn);
        H2 { tx }
    }
    pub async fn send(&mut self, req: Request<Full<Bytes>>) -> Resp {
        self.tx.ready().await.unwrap();
        read(self.tx.send_request(req).await.expect("response")).await
    }
    /// A `GET` of `uri` (scheme and authority included) with no headers and no body.
    pub async fn get(&mut self, uri: impl AsRef<str>) -> Resp {
        let req = Request::get(uri.as_ref()).body(Full::default()).unwrap();
        self.send(req).await
    }
}

/// An HTTP/2 (h2c) server that takes requests but never reads their bodies and never
/// answers: its flow-control window fills, and the sender is left waiting.
pub async fn h2_black_hole() -> SocketAddr {
    h2_black_hole_counted().await.0
}

/// What [`h2_black_hole_counted`]'s server saw.
#[derive(Debug, Default)]
pub struct HoleLog {
    /// Connections accepted.
    pub accepted: AtomicUsize,
    /// Connections the client closed (or broke).
    pub closed: AtomicUsize,
}

/// [`h2_black_hole`], counting the connections it accepts and those closed.
pub async fn h2_black_hole_counted() -> (SocketAddr, Arc<HoleLog>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let log = Arc::new(HoleLog::default());
    let log2 = log.clone();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else { return };
            log2.accepted.fetch_add(1, Ordering::SeqCst);
            let log = log2.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|_req: Request<Incoming>| async {
                    std::future::pending::<Result<Response<Full<Bytes>>, Infallible>>().await
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
                log.closed.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    (addr, log)
}

/// A request body fed part by part from the test (`tokio::sync::mpsc`): ends when the
/// sender is dropped.
pub struct Feed(pub tokio::sync::mpsc::Receiver<Bytes>);

impl http_body::Body for Feed {
    type Data = Bytes;
    type Error = std::convert::Infallible;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|o| o.map(|b| Ok(http_body::Frame::data(b))))
    }
}

/// Sends `req` over a new h2c connection to `addr` with a body fed through the returned
/// sender; the answer comes from the returned task.
pub async fn h2c_fed(
    addr: SocketAddr,
    req: http::request::Builder,
) -> (
    tokio::sync::mpsc::Sender<Bytes>,
    tokio::task::JoinHandle<Resp>,
) {
    let s = TcpStream::connect(addr).await.unwrap();
    let (mut tx, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(s))
            .await
            .unwrap();
    tokio::spawn(conn);
    let (feed, rx) = tokio::sync::mpsc::channel(4);
    let req = req.body(Feed(rx)).unwrap();
    let task = tokio::spawn(async move {
        tx.ready().await.unwrap();
        read(tx.send_request(req).await.expect("response")).await
    });
    (feed, task)
}

/// Certificate checks off; records what the server presented.
#[derive(Debug)]
pub struct Capture {
    provider: Arc<rustls::crypto::CryptoProvider>,
    /// The signature schemes offered (all of the provider's when `None`).
    only: Option<Vec<rustls::SignatureScheme>>,
}

impl rustls::client::danger::ServerCertVerifier for Capture {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &rustls::pki_types::CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            m,
            c,
            d,
            &self.provider.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &rustls::pki_types::CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            m,
            c,
            d,
            &self.provider.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        match &self.only {
            Some(s) => s.clone(),
            None => self
                .provider
                .signature_verification_algorithms
                .supported_schemes(),
        }
    }
}

/// A TLS connection with `sni` and ALPN; returns the stream, the leaf certificate's
/// subject alt names, and the negotiated ALPN.
pub async fn tls_connect(
    addr: SocketAddr,
    sni: &str,
    alpn: &[&[u8]],
) -> (
    tokio_rustls::client::TlsStream<TcpStream>,
    Vec<String>,
    Option<Vec<u8>>,
) {
    tls_connect_offering(addr, sni, alpn, None, None).await
}

/// [`tls_connect`] after sending `preamble` (a PROXY protocol header, say) in clear.
pub async fn tls_connect_after(
    addr: SocketAddr,
    preamble: &[u8],
    sni: &str,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    try_tls_handshake(addr, Some(preamble), sni, &[], None, None)
        .await
        .expect("TLS handshake")
}

/// [`tls_connect`] offering only the signature schemes `only` (all when `None`) and, when
/// `tls12_suites` is given, TLS 1.2 alone with those cipher suites (TLS 1.3 suites among
/// them are listed in the hello all the same, as rustls lists them).
pub async fn tls_connect_offering(
    addr: SocketAddr,
    sni: &str,
    alpn: &[&[u8]],
    only: Option<Vec<rustls::SignatureScheme>>,
    tls12_suites: Option<Vec<rustls::SupportedCipherSuite>>,
) -> (
    tokio_rustls::client::TlsStream<TcpStream>,
    Vec<String>,
    Option<Vec<u8>>,
) {
    let tls = try_tls_handshake(addr, None, sni, alpn, only, tls12_suites)
        .await
        .expect("TLS handshake");
    let names = san_names(&leaf(&tls));
    let alpn = tls.get_ref().1.alpn_protocol().map(|a| a.to_vec());
    (tls, names, alpn)
}

/// The subject alt names of a certificate, as `DNSName(example.test)`.
pub fn san_names(der: &[u8]) -> Vec<String> {
    let (_, x) = x509_parser::parse_x509_certificate(der).unwrap();
    x.subject_alternative_name()
        .ok()
        .flatten()
        .map(|s| {
            s.value
                .general_names
                .iter()
                .map(|g| format!("{g}"))
                .collect()
        })
        .unwrap_or_default()
}

/// [`tls_connect_offering`] that returns a failed handshake rather than panicking. An IP
/// address as `sni` sends no server name (rustls sends names only).
pub async fn try_tls_connect_offering(
    addr: SocketAddr,
    sni: &str,
    alpn: &[&[u8]],
    only: Option<Vec<rustls::SignatureScheme>>,
    tls12_suites: Option<Vec<rustls::SupportedCipherSuite>>,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    try_tls_handshake(addr, None, sni, alpn, only, tls12_suites).await
}

async fn try_tls_handshake(
    addr: SocketAddr,
    preamble: Option<&[u8]>,
    sni: &str,
    alpn: &[&[u8]],
    only: Option<Vec<rustls::SignatureScheme>>,
    tls12_suites: Option<Vec<rustls::SupportedCipherSuite>>,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let mut p = rustls::crypto::ring::default_provider();
    if let Some(suites) = &tls12_suites {
        p.cipher_suites = suites.clone();
    }
    let provider = Arc::new(p);
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone());
    let builder = if tls12_suites.is_some() {
        builder.with_protocol_versions(&[&rustls::version::TLS12])
    } else {
        builder.with_safe_default_protocol_versions()
    };
    let mut cfg = builder
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Capture { provider, only }))
        .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
    let name = rustls::pki_types::ServerName::try_from(sni.to_string()).unwrap();
    let mut s = TcpStream::connect(addr).await?;
    if let Some(p) = preamble {
        s.write_all(p).await?;
    }
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, s)
        .await
}

/// A client configuration that accepts any server certificate and keeps the sessions it
/// is given for resumption (rustls' in-memory store: TLS 1.3 tickets, TLS 1.2 session ids
/// or tickets), speaking TLS 1.2 alone when `tls12_only`, else TLS 1.3 and 1.2.
pub fn resuming_client(tls12_only: bool) -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone());
    let builder = if tls12_only {
        builder.with_protocol_versions(&[&rustls::version::TLS12])
    } else {
        builder.with_safe_default_protocol_versions()
    };
    let cfg = builder
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Capture {
            provider,
            only: None,
        }))
        .with_no_client_auth();
    Arc::new(cfg)
}

/// [`resuming_client`] speaking TLS 1.2 alone and resuming by session id only (it neither
/// asks for nor keeps tickets), so that a resumption goes through the server's session
/// cache.
pub fn session_id_client() -> Arc<rustls::ClientConfig> {
    let mut cfg = Arc::unwrap_or_clone(resuming_client(true));
    cfg.resumption = rustls::client::Resumption::in_memory_sessions(256)
        .tls12_resumption(rustls::client::Tls12Resumption::SessionIdOnly);
    Arc::new(cfg)
}

/// A TLS handshake (no ALPN, any server certificate accepted) on a connection that has
/// already sent what it had to send in clear (a PROXY protocol header, say).
pub async fn tls_on(
    s: TcpStream,
    sni: &str,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Capture {
            provider,
            only: None,
        }))
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from(sni.to_string()).unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, s)
        .await
}

/// The leaf certificate the server presented.
pub fn leaf(
    tls: &tokio_rustls::client::TlsStream<TcpStream>,
) -> rustls::pki_types::CertificateDer<'static> {
    tls.get_ref().1.peer_certificates().unwrap()[0].clone()
}

/// A TLS server configuration with a self-signed certificate for `names`, offering `h2`
/// then `http/1.1` by ALPN (for a [`Backend`] serving gRPC over TLS).
pub fn h2_server_tls(names: &[&str]) -> Arc<rustls::ServerConfig> {
    let (c, k) = cert(names);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            silverback_config::pki::parse_certs(&c).unwrap(),
            silverback_config::pki::parse_key(&k).unwrap(),
        )
        .unwrap();
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(cfg)
}

/// A self-signed certificate for `names`: (cert PEM, key PEM).
pub fn cert(names: &[&str]) -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let params =
        rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .unwrap();
    let c = params.self_signed(&key).unwrap();
    (c.pem(), key.serialize_pem())
}

// ---------------------------------------------------------------- default certificates

/// Kong's subject (and issuer) of its generated default certificates.
pub const KONG_DEFAULT_SUBJECT: &str =
    "C=US, ST=California, L=San Francisco, O=Kong, OU=IT Department, CN=localhost";

/// The key type and size of a certificate, and its subject.
pub fn key_of(der: &[u8]) -> (&'static str, usize, String) {
    use x509_parser::public_key::PublicKey;
    let (_, x) = x509_parser::parse_x509_certificate(der).expect("an X.509 certificate");
    let (kind, bits) = match x.public_key().parsed().expect("a known key type") {
        PublicKey::RSA(k) => ("RSA", k.key_size()),
        PublicKey::EC(k) => ("EC", k.key_size()),
        other => panic!("unexpected key {other:?}"),
    };
    (kind, bits, x.subject().to_string())
}

/// A file of the config crate's test PKI (`rsa.crt`, `ec.key`, ...).
pub fn pki_path(name: &str) -> String {
    format!(
        "{}/../config/tests/fixtures/pki/{name}",
        std::env::var("CARGO_MANIFEST_DIR")
            .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string())
    )
}

/// A TLS 1.2 client whose only cipher suite needs an RSA certificate.
pub fn rsa_only_tls12() -> Vec<rustls::SupportedCipherSuite> {
    vec![rustls::crypto::ring::cipher_suite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256]
}

/// A TLS 1.2 client whose only TLS 1.2 cipher suite needs an RSA certificate, listing TLS
/// 1.3 suites too, as rustls' client limited to TLS 1.2 lists its provider's.
pub fn rsa_only_tls12_listing_tls13() -> Vec<rustls::SupportedCipherSuite> {
    let mut suites = vec![
        rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256,
        rustls::crypto::ring::cipher_suite::TLS13_AES_256_GCM_SHA384,
    ];
    suites.extend(rsa_only_tls12());
    suites
}

/// The generated default certificates a TLS listener presents to a client without a server
/// name: (ECDSA, RSA), each checked to be Kong's (subject, key type and size). The RSA one
/// is asked for by a TLS 1.2 client with RSA suites only, in one attempt: a listener whose
/// RSA certificate is still being generated makes it wait, never fail.
pub async fn default_pair(
    addr: SocketAddr,
) -> (
    rustls::pki_types::CertificateDer<'static>,
    rustls::pki_types::CertificateDer<'static>,
) {
    let (tls, _, _) = tls_connect(addr, "127.0.0.1", &[]).await;
    let ecdsa = leaf(&tls);
    assert_eq!(key_of(&ecdsa), ("EC", 256, KONG_DEFAULT_SUBJECT.into()));
    let tls = try_tls_connect_offering(addr, "127.0.0.1", &[], None, Some(rsa_only_tls12()))
        .await
        .expect("an RSA-only client gets the RSA default certificate");
    let rsa = leaf(&tls);
    assert_eq!(key_of(&rsa), ("RSA", 2048, KONG_DEFAULT_SUBJECT.into()));
    (ecdsa, rsa)
}

/// Settings with a plain and an `ssl` listener of every kind (proxy, admin, status).
pub fn tls_everywhere() -> silverback_proxy::Settings {
    let both = || silverback_proxy::Listen::parse_list("127.0.0.1:0, 127.0.0.1:0 ssl").unwrap();
    silverback_proxy::Settings {
        admin_listen: both(),
        status_listen: both(),
        ..silverback_proxy::Settings::loopback()
    }
}

/// The `ssl` listener of each kind.
pub fn tls_addrs(gw: &silverback_proxy::Gateway) -> [std::net::SocketAddr; 3] {
    use silverback_proxy::ListenerKind::{Admin, Proxy, Status};
    [Proxy, Admin, Status].map(|k| gw.addr(k, true).unwrap())
}

/// The files Kong names for a listener kind's pairs: (file name, is a key), RSA pair first.
pub fn kong_files(lead: &str) -> Vec<(String, bool)> {
    ["", "-ecdsa"]
        .iter()
        .flat_map(|tail| {
            [
                (format!("{lead}kong-default{tail}.crt"), false),
                (format!("{lead}kong-default{tail}.key"), true),
            ]
        })
        .collect()
}

/// The names of the files in a directory, sorted.
pub fn file_names(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// The DER of the first certificate of a PEM file.
pub fn pem_file_der(path: &std::path::Path) -> rustls::pki_types::CertificateDer<'static> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::from_pem_file(path).unwrap()
}

/// A fresh directory under the system's temporary directory, removed when dropped.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "sb-{name}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A WebSocket upgrade request for `path` (host `x`), as raw bytes.
pub fn websocket_upgrade(path: &str) -> Vec<u8> {
    format!(
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .into_bytes()
}

/// Connects to `addr`, asks for a WebSocket upgrade of `path`, and reads the answer's head
/// (one read): the connection, for the tunnel, and the head as received.
pub async fn websocket_open(addr: SocketAddr, path: &str) -> (TcpStream, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(&websocket_upgrade(path)).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = s.read(&mut buf).await.unwrap();
    (s, String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// Sends raw bytes and reads until the server closes or `wait` passes.
pub async fn raw(addr: SocketAddr, bytes: &[u8], wait: Duration) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Connects to `addr` and sends `head` (a request line and headers, without the framing
/// header and the empty line) with a body of `total` bytes of `byte`, by `Content-Length` or
/// chunked, in 64 KiB pieces, all before reading anything: a client that writes its whole
/// body first. Every write must succeed (a connection reset under it fails the test).
/// Returns the connection, for reading the answer.
pub async fn send_whole_body(
    addr: SocketAddr,
    head: &str,
    total: usize,
    chunked: bool,
    byte: u8,
) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let framing = if chunked {
        "Transfer-Encoding: chunked".to_string()
    } else {
        format!("Content-Length: {total}")
    };
    s.write_all(format!("{head}{framing}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let piece = vec![byte; 64 * 1024];
    for i in 0..total / piece.len() {
        let written = if chunked {
            let mut c = format!("{:x}\r\n", piece.len()).into_bytes();
            c.extend_from_slice(&piece);
            c.extend_from_slice(b"\r\n");
            s.write_all(&c).await
        } else {
            s.write_all(&piece).await
        };
        assert!(
            written.is_ok(),
            "chunked {chunked}: write {i} failed: {written:?}"
        );
    }
    if chunked {
        s.write_all(b"0\r\n\r\n").await.unwrap();
    }
    s
}

/// Reads one answer framed by its `Content-Length` (none: no body) from `s`: its head and
/// body (what came, if the connection ends first).
pub async fn read_answer<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if got.len() >= end + 4 + len {
                return String::from_utf8_lossy(&got[..end + 4 + len]).into_owned();
            }
        }
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return String::from_utf8_lossy(&got).into_owned(),
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// Reads `s` until the peer closes it (or a read fails) or `wait` passes: what came, and
/// whether it was closed.
pub async fn read_to_close<S: tokio::io::AsyncRead + Unpin>(
    s: &mut S,
    wait: Duration,
) -> (Vec<u8>, bool) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = tokio::time::timeout(wait, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .is_ok();
    (got, closed)
}

/// A client that dribbles its bytes: writes each piece at its time after `start` (a clock
/// read when the connection was made). Stops at the first write that fails (the server
/// may have closed the connection meanwhile); whether all were written.
pub async fn dribble<W: tokio::io::AsyncWrite + Unpin>(
    w: &mut W,
    start: tokio::time::Instant,
    pieces: &[(Duration, &[u8])],
) -> bool {
    for (at, bytes) in pieces {
        tokio::time::sleep_until(start + *at).await;
        if w.write_all(bytes).await.is_err() || w.flush().await.is_err() {
            return false;
        }
    }
    true
}

/// Counts HTTP responses in a raw byte dump.
pub fn count_responses(s: &str) -> usize {
    s.matches("HTTP/1.1 ").count()
}

/// POSTs a JSON configuration to the admin API's `/config` and expects it loaded (201).
pub async fn load_config(admin: SocketAddr, doc: impl Into<Bytes>) {
    let r = admin_post(admin, "/config", "application/json", doc).await;
    assert_eq!(r.status, 201, "{}", r.text());
}

/// POSTs a body to the admin API.
/// A request with a body of content type `ct` (none when empty) on a connection of its own.
pub async fn admin_send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    ct: &str,
    body: impl Into<Bytes>,
) -> Resp {
    let mut r = req(method, "localhost", path);
    if !ct.is_empty() {
        r = r.header("content-type", ct);
    }
    H1::connect(addr)
        .await
        .send(r.body(Full::new(body.into())).unwrap())
        .await
}

pub async fn admin_post(addr: SocketAddr, path: &str, ct: &str, body: impl Into<Bytes>) -> Resp {
    H1::connect(addr)
        .await
        .send(
            req("POST", "localhost", path)
                .header("content-type", ct)
                .body(Full::new(body.into()))
                .unwrap(),
        )
        .await
}

/// A body of unknown length, sent in parts.
pub struct Parts(pub std::collections::VecDeque<Bytes>);

impl http_body::Body for Parts {
    type Data = Bytes;
    type Error = std::convert::Infallible;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        std::task::Poll::Ready(self.0.pop_front().map(|b| Ok(http_body::Frame::data(b))))
    }
}

impl Parts {
    /// `n` parts of 10 bytes each.
    pub fn tens(n: usize) -> Parts {
        Parts((0..n).map(|_| Bytes::from_static(b"0123456789")).collect())
    }
    /// These parts, in order.
    pub fn of(parts: &[&'static str]) -> Parts {
        Parts(
            parts
                .iter()
                .map(|p| Bytes::from_static(p.as_bytes()))
                .collect(),
        )
    }
}

/// What [`h2_second_stream_refused`]'s server saw.
#[derive(Debug, Default)]
pub struct GoawayLog {
    /// Connections accepted.
    pub conns: AtomicUsize,
    /// Streams refused (each had been received whole, never answered).
    pub refused: AtomicUsize,
    /// Streams answered.
    pub answered: AtomicUsize,
}

/// An h2c server written frame by frame, so that the moment of its refusal is exact: on
/// each of its first `refusing` connections it answers the first stream, and on receiving
/// the second stream's HEADERS it sends GOAWAY naming the first as the last it processed
/// (RFC 9113 §6.8: the second was not processed), without answering it; or, with `close`,
/// closes the connection without a word. Every other stream is answered: `:status 200` and
/// the body `c<N>`, N the connection's number from 1.
pub async fn h2_second_stream_refused(
    refusing: usize,
    close: bool,
) -> (SocketAddr, Arc<GoawayLog>) {
    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = u32::try_from(payload.len()).unwrap();
        let mut f = len.to_be_bytes()[1..].to_vec();
        f.extend_from_slice(&[kind, flags]);
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let log = Arc::new(GoawayLog::default());
    let log2 = log.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            let n = log2.conns.fetch_add(1, Ordering::SeqCst) + 1;
            let log = log2.clone();
            tokio::spawn(async move {
                let mut preface = [0u8; 24];
                if s.read_exact(&mut preface).await.is_err() || preface != PREFACE {
                    return;
                }
                let _ = s.write_all(&frame(4, 0, 0, &[])).await; // SETTINGS
                let mut streams = Vec::new();
                loop {
                    let mut h = [0u8; 9];
                    if s.read_exact(&mut h).await.is_err() {
                        return;
                    }
                    let len = u32::from_be_bytes([0, h[0], h[1], h[2]]) as usize;
                    let (kind, flags) = (h[3], h[4]);
                    let stream = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff;
                    let mut payload = vec![0u8; len];
                    if s.read_exact(&mut payload).await.is_err() {
                        return;
                    }
                    let out = match kind {
                        // SETTINGS (not an ACK): acknowledged
                        4 if flags & 1 == 0 => frame(4, 1, 0, &[]),
                        // PING (not an ACK): answered
                        6 if flags & 1 == 0 => frame(6, 1, 0, &payload),
                        // HEADERS
                        // HEADERS opening a stream (not trailers on one already open)
                        1 if !streams.contains(&stream) => {
                            streams.push(stream);
                            if n <= refusing && streams.len() == 2 {
                                log.refused.fetch_add(1, Ordering::SeqCst);
                                if close {
                                    return;
                                }
                                // GOAWAY: last processed stream, NO_ERROR
                                let mut p = streams[0].to_be_bytes().to_vec();
                                p.extend_from_slice(&0u32.to_be_bytes());
                                frame(7, 0, 0, &p)
                            } else {
                                log.answered.fetch_add(1, Ordering::SeqCst);
                                // `:status: 200` (HPACK static index 8), then the body
                                let mut out = frame(1, 4, stream, &[0x88]);
                                out.extend(frame(0, 1, stream, format!("c{n}").as_bytes()));
                                out
                            }
                        }
                        _ => continue,
                    };
                    if s.write_all(&out).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, log)
}

// ---------------------------------------------------------------- nginx's own pages

/// nginx's 501 page, byte for byte, as Kong's nginx sends it: nginx's special-response
/// format (`<title>` and centered `<h1>` with the status, CRLF lines), without the
/// `<hr><center>…</center>` server-token line, which Kong's OpenResty build patches out
/// (`build/openresty/patches/nginx-*-remove-server-tokens-from-special-responses-output.patch`).
pub const NGINX_501: &str = "<html>\r\n\
<head><title>501 Not Implemented</title></head>\r\n\
<body>\r\n\
<center><h1>501 Not Implemented</h1></center>\r\n\
</body>\r\n\
</html>\r\n";

/// nginx's page for plain HTTP on a TLS port (its 497, sent as 400).
pub const NGINX_497: &str = "<html>\r\n\
<head><title>400 The plain HTTP request was sent to HTTPS port</title></head>\r\n\
<body>\r\n\
<center><h1>400 Bad Request</h1></center>\r\n\
<center>The plain HTTP request was sent to HTTPS port</center>\r\n\
</body>\r\n\
</html>\r\n";

/// nginx's pages for the other refusals, in the same format: 400, 405, 413, 414, and 494 (a
/// head past the buffers, sent as 400, whose page names the cause under the heading).
pub const NGINX_400: &str = "<html>\r\n\
<head><title>400 Bad Request</title></head>\r\n\
<body>\r\n\
<center><h1>400 Bad Request</h1></center>\r\n\
</body>\r\n\
</html>\r\n";
pub const NGINX_405: &str = "<html>\r\n\
<head><title>405 Not Allowed</title></head>\r\n\
<body>\r\n\
<center><h1>405 Not Allowed</h1></center>\r\n\
</body>\r\n\
</html>\r\n";
pub const NGINX_413: &str = "<html>\r\n\
<head><title>413 Request Entity Too Large</title></head>\r\n\
<body>\r\n\
<center><h1>413 Request Entity Too Large</h1></center>\r\n\
</body>\r\n\
</html>\r\n";
pub const NGINX_414: &str = "<html>\r\n\
<head><title>414 Request-URI Too Large</title></head>\r\n\
<body>\r\n\
<center><h1>414 Request-URI Too Large</h1></center>\r\n\
</body>\r\n\
</html>\r\n";
pub const NGINX_494: &str = "<html>\r\n\
<head><title>400 Request Header Or Cookie Too Large</title></head>\r\n\
<body>\r\n\
<center><h1>400 Bad Request</h1></center>\r\n\
<center>Request Header Or Cookie Too Large</center>\r\n\
</body>\r\n\
</html>\r\n";

/// Which of Kong's headers an answer of nginx's page carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageHeaders {
    /// None: a head refused while nginx reads it reaches no location, whose header filter
    /// would add them (and the proxy listener with `headers` off).
    None,
    /// The proxy server's header filter: `Server` and request id.
    Proxy,
    /// The admin (or status) server's header filter in `location /`, which runs on nginx's
    /// pages for a body it refuses there: `Server` and `X-Kong-Admin-Latency`; with
    /// `cors`, Kong's content handler had run, and set `Access-Control-Allow-Origin: *`.
    Admin { cors: bool },
}

/// How an answer of nginx's own page is expected.
#[derive(Debug, Clone, Copy)]
pub struct NginxPage {
    /// The status line's code. (Its reason is http's, not nginx's: `405 Method Not
    /// Allowed` where nginx writes `405 Not Allowed`, as for every answer the gateway
    /// writes.)
    pub status: &'static str,
    pub page: &'static str,
    /// `text/html` on the proxy listener; with `; charset=UTF-8` on admin and status ones
    /// (Kong sets `charset UTF-8` in those servers).
    pub content_type: &'static str,
    /// The headers of Kong's the answer carries.
    pub headers: PageHeaders,
    /// The answer to a `HEAD`: the head alone, its `Content-Length` the page's.
    pub head_only: bool,
}

impl NginxPage {
    /// The 501 of the proxy listener.
    pub fn proxy_501(headers_on: bool) -> NginxPage {
        NginxPage {
            status: "501",
            page: NGINX_501,
            content_type: "text/html",
            headers: if headers_on {
                PageHeaders::Proxy
            } else {
                PageHeaders::None
            },
            head_only: false,
        }
    }

    /// A page of the admin or status listener for a refused head.
    pub fn admin(status: &'static str, page: &'static str) -> NginxPage {
        NginxPage {
            status,
            page,
            content_type: "text/html; charset=UTF-8",
            headers: PageHeaders::None,
            head_only: false,
        }
    }

    /// A page of the admin listener for a refused body (`cors`: refused while Kong's
    /// content handler read it).
    pub fn admin_body(status: &'static str, page: &'static str, cors: bool) -> NginxPage {
        NginxPage {
            headers: PageHeaders::Admin { cors },
            ..NginxPage::admin(status, page)
        }
    }

    pub fn to_head(self) -> NginxPage {
        NginxPage {
            head_only: true,
            ..self
        }
    }

    /// The last answer in `out` (behind `before` others) is this page, with its
    /// `Content-Type` whatever the request accepts, the page's length, the connection
    /// closed, and Kong's headers as [`PageHeaders`] says, no others.
    pub fn check(&self, out: &str, before: usize) {
        assert_eq!(count_responses(out), before + 1, "{out}");
        let line = format!("HTTP/1.1 {} ", self.status);
        let at = out
            .rfind(&line)
            .unwrap_or_else(|| panic!("no {}: {out}", self.status));
        assert_eq!(count_responses(&out[..at]), before, "{out}");
        let (head, body) = out[at..].split_once("\r\n\r\n").expect("a whole head");
        let want = if self.head_only { "" } else { self.page };
        assert_eq!(body, want, "{out}");
        let lower = format!("{}\r\n", head.to_ascii_lowercase());
        assert!(
            lower.contains(&format!(
                "\r\ncontent-type: {}\r\n",
                self.content_type.to_ascii_lowercase()
            )),
            "{out}"
        );
        assert!(
            lower.contains(&format!("\r\ncontent-length: {}\r\n", self.page.len())),
            "{out}"
        );
        assert!(lower.contains("\r\nconnection: close\r\n"), "{out}");
        assert!(lower.contains("\r\ndate: "), "{out}");
        assert!(!lower.contains("transfer-encoding"), "{out}");
        let server = format!("\r\nserver: kong/{}\r\n", silverback_proxy::KONG_VERSION);
        assert_eq!(
            lower.contains(&server),
            self.headers != PageHeaders::None,
            "{out}"
        );
        assert_eq!(
            lower.contains("\r\nx-kong-request-id: "),
            self.headers == PageHeaders::Proxy,
            "{out}"
        );
        let admin = matches!(self.headers, PageHeaders::Admin { .. });
        assert_eq!(lower.contains("\r\nx-kong-admin-latency: "), admin, "{out}");
        assert_eq!(
            lower.contains("\r\naccess-control-allow-origin: *\r\n"),
            self.headers == PageHeaders::Admin { cors: true },
            "{out}"
        );
        // (the head's lines: the status line, then only the headers above)
        let known = [
            "content-type",
            "content-length",
            "connection",
            "date",
            "server",
            "x-kong-request-id",
            "x-kong-response-latency",
            "x-kong-admin-latency",
            "access-control-allow-origin",
        ];
        for l in head.lines().skip(1) {
            let name = l.split(':').next().unwrap_or("").to_ascii_lowercase();
            assert!(known.contains(&name.as_str()), "{name}: {out}");
        }
        if self.headers == PageHeaders::None {
            assert!(!lower.contains("\r\nx-kong-"), "{out}");
        }
    }
}
