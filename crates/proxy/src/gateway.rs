//! A running data plane: listeners, the published snapshot, and the configuration swap.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use http::HeaderValue;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use silverback_config::Config;
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use crate::ProxyError;
use crate::default_certs::{DefaultCertificates, PerKind};
use crate::metrics::Metrics;
use crate::proxy::ConnInfo;
use crate::settings::{Listen, Settings};
use crate::snapshot::{BuildEnv, Snapshot};
use crate::tls::{Sessions, TlsListener};
use crate::upstream::{Pool, WriteTimed};

/// What a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ListenerKind {
    /// `proxy_listen`
    Proxy,
    /// `admin_listen`
    Admin,
    /// `status_listen`
    Status,
}

/// A bound listener.
#[derive(Debug, Clone)]
pub struct BoundListener {
    /// What it serves.
    pub kind: ListenerKind,
    /// Its specification.
    pub listen: Listen,
    /// The address actually bound (the port is known even when 0 was asked for).
    pub addr: SocketAddr,
}

/// State shared by every connection.
pub(crate) struct Shared {
    /// The gateway is shutting down: answers say `Connection: close` (hyper's path adds it
    /// itself; this only keeps the `keep-alive` the gateway writes off them).
    pub stopping: std::sync::atomic::AtomicBool,
    pub settings: Settings,
    pub snapshot: Arc<ArcSwap<Snapshot>>,
    pub pool: Arc<Pool>,
    pub metrics: Metrics,
    /// The runtime balancers run their background work on.
    pub runtime: tokio::runtime::Handle,
    pub node_id: uuid::Uuid,
    pub hostname: String,
    /// Held while a `POST /config` is being loaded (another one answers 429 meanwhile). The
    /// load owns its guard, so it stays held until the load ends even if the client goes
    /// away.
    pub loading: Arc<tokio::sync::Mutex<()>>,
    /// Held by [`Shared::apply`] from reading the running snapshot to publishing the next:
    /// applies are serialized whoever makes them (the admin API, an in-process controller),
    /// so none is built from a snapshot that another replaces meanwhile.
    pub applying: Mutex<()>,
    /// Permits to read an admin request's body whole into memory, for the handlers that
    /// read one of their own (`POST /config`, the schema validations, the entity writes:
    /// writes only; `admin::read_body`): at most [`CONFIG_UPLOADS`] are buffered at once,
    /// each up to `admin_client_max_body_size` and for at most `admin_upload_timeout`; more
    /// answer 429. A body already at its end takes none. The JSON bodies lapis reads for
    /// the other routes (every `GET` and `HEAD` among them) and every body on the status
    /// listener take none either: they are read through a small buffer
    /// (`admin::read_params_body`), so no read is ever refused for uploads.
    pub uploads: tokio::sync::Semaphore,
    pub listeners: Mutex<Vec<BoundListener>>,
    pub server: HeaderValue,
    pub via_h1: HeaderValue,
    pub via_h2: HeaderValue,
    /// The access logs of the listener kinds ([`crate::access_log`]).
    pub access: PerKind<Option<crate::access_log::Logger>>,
    /// Bumped when the connections reach `worker_connections`: idle HTTP/1.1 proxy
    /// connections close to make room ([`admit`]).
    pub drain: watch::Sender<u64>,
}

/// How many admin request bodies (`POST /config`, validations, writes) may be read into
/// memory at the same time.
pub const CONFIG_UPLOADS: usize = 4;

impl Shared {
    /// Compiles and publishes a configuration whose hash is `hash` (see
    /// [`silverback_config::config_hash`]). Compilation happens in the caller; the running
    /// snapshot is untouched on error. Returns the snapshot now serving.
    ///
    /// Applies run one at a time (they block on each other): each builds on the snapshot
    /// the previous one published. Blocking: call it off the async threads.
    pub fn apply(&self, config: Config, hash: String) -> Result<Arc<Snapshot>, ProxyError> {
        // (the lock guards no data: a panicking build leaves nothing half-done behind it)
        let _applying = self
            .applying
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let t = Instant::now();
        let prev = self.snapshot.load_full();
        let env = BuildEnv {
            runtime: &self.runtime,
            balancer: &self.settings.balancer,
        };
        let flavor = self.settings.router_flavor;
        let snap = Arc::new(Snapshot::build(
            config,
            hash,
            flavor,
            &env,
            Some(&prev),
            true,
        )?);
        self.snapshot.store(snap.clone());
        prev.supersede();
        drop(prev);
        self.metrics.config_swaps.fetch_add(1, Relaxed);
        tracing::info!(
            elapsed_ms = t.elapsed().as_millis() as u64,
            "configuration applied"
        );
        spawn_warm_up(&snap);
        Ok(snap)
    }
}

/// Compiles the remaining router regexes of a just-published snapshot off the request
/// path; the thread gives up as soon as a newer configuration replaces this one.
fn spawn_warm_up(snap: &Arc<Snapshot>) {
    let (regexes, compiled) = snap.router.regex_counts();
    if compiled == regexes {
        return;
    }
    let warm = snap.clone();
    let spawned = std::thread::Builder::new()
        .name("silverback-warm-up".into())
        .spawn(move || {
            let t = Instant::now();
            let n = warm.warm_up();
            tracing::debug!(
                regexes = n,
                elapsed_ms = t.elapsed().as_millis() as u64,
                "router regexes compiled"
            );
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "could not start the regex warm-up thread; regexes compile on first use");
    }
}

/// A running data plane. Dropping it does not stop it; call [`Gateway::shutdown`].
pub struct Gateway {
    shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("listeners", &self.local_addrs())
            .finish_non_exhaustive()
    }
}

fn bind(l: &Listen) -> Result<TcpListener, ProxyError> {
    let err = |source| ProxyError::Bind {
        addr: l.addr,
        source,
    };
    let domain = if l.addr.is_ipv4() {
        socket2::Domain::IPV4
    } else {
        socket2::Domain::IPV6
    };
    let s = socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))
        .map_err(err)?;
    s.set_reuse_address(true).map_err(err)?;
    if l.reuseport {
        s.set_reuse_port(true).map_err(err)?;
    }
    s.set_nonblocking(true).map_err(err)?;
    s.set_tcp_nodelay(true).map_err(err)?;
    s.bind(&l.addr.into()).map_err(err)?;
    s.listen(l.backlog.min(i32::MAX as u32) as i32)
        .map_err(err)?;
    TcpListener::from_std(s.into()).map_err(err)
}

impl Gateway {
    /// Binds every listener and starts serving on the current tokio runtime. `initial` (a
    /// configuration and its hash, see [`silverback_config::config_hash`]) is served from
    /// the start (the proxy is "ready" only once a non-empty configuration is
    /// loaded, as Kong in DB-less mode). Load balancing, health checks and DNS are
    /// `silverback-balancer`'s ([`Settings::balancer`] sets its resolver).
    pub async fn start(
        settings: Settings,
        initial: Option<(Config, String)>,
    ) -> Result<Gateway, ProxyError> {
        let loaded = initial.is_some();
        let runtime = tokio::runtime::Handle::current();
        let (config, hash) =
            initial.unwrap_or_else(|| (Config::default(), silverback_config::EMPTY_HASH.into()));
        let snap = Snapshot::build(
            config,
            hash,
            settings.router_flavor,
            &BuildEnv {
                runtime: &runtime,
                balancer: &settings.balancer,
            },
            None,
            loaded,
        )?;
        let snap = Arc::new(snap);
        spawn_warm_up(&snap);
        let snapshot = Arc::new(ArcSwap::new(snap));
        // The default certificates are read (or generated) only when a listener needs them,
        // as Kong checks `ssl_cert` (`admin_ssl_cert`, `status_ssl_cert`) only with TLS
        // enabled on the proxy (admin, status) listeners, and generates a pair for a kind
        // only then. Proxy listeners also serve the configuration's certificates by SNI;
        // admin and status ones only their own.
        let ssl = |ls: &[Listen], c: &crate::SslCert| ls.iter().any(|l| l.ssl).then(|| c.clone());
        let wanted = PerKind::new(
            ssl(&settings.proxy_listen, &settings.ssl_cert),
            ssl(&settings.admin_listen, &settings.admin_ssl_cert),
            ssl(&settings.status_listen, &settings.status_ssl_cert),
        );
        let prefix = settings.prefix.clone();
        // Files are read and written (and synced), and another process's lock on the prefix
        // may be waited for: off the runtime's threads.
        let defaults = tokio::task::spawn_blocking(move || {
            if let Some(prefix) = &prefix {
                crate::default_certs::check_prefix(prefix)?;
            }
            DefaultCertificates::for_listeners(&wanted, prefix.as_deref())
        })
        .await
        .map_err(|e| ProxyError::Tls(format!("default certificates: {e}")))??;
        let hv = |s: String| {
            HeaderValue::from_str(&s).map_err(|e| ProxyError::Tls(format!("server token: {e}")))
        };
        let [proxy_log, admin_log, status_log] = crate::access_log::open_all(
            [
                ("proxy_access_log", settings.proxy_access_log.as_ref()),
                ("admin_access_log", settings.admin_access_log.as_ref()),
                ("status_access_log", settings.status_access_log.as_ref()),
            ],
            settings.prefix.as_deref(),
        )?;
        let shared = Arc::new(Shared {
            access: PerKind::new(proxy_log, admin_log, status_log),
            drain: watch::Sender::new(0),
            stopping: std::sync::atomic::AtomicBool::new(false),
            server: hv(settings.server_token.clone())?,
            via_h1: hv(format!("1.1 {}", settings.server_token))?,
            via_h2: hv(format!("2 {}", settings.server_token))?,
            pool: Arc::new(
                Pool::new(
                    settings.upstream_keepalive_pool_size,
                    settings.upstream_keepalive_idle_timeout,
                    settings.upstream_keepalive_max_requests,
                )
                .with_batch_writes(settings.batch_writes.upstream()),
            ),
            metrics: Metrics::default(),
            runtime,
            node_id: uuid::Uuid::new_v4(),
            hostname: std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|s| s.trim().to_string())
                .unwrap_or_else(|_| "localhost".into()),
            loading: Arc::new(tokio::sync::Mutex::new(())),
            applying: Mutex::new(()),
            uploads: tokio::sync::Semaphore::new(CONFIG_UPLOADS),
            listeners: Mutex::new(vec![]),
            snapshot,
            settings,
        });
        let (tx, rx) = watch::channel(false);
        let mut tasks = vec![];
        let mut bound = vec![];
        let specs: Vec<(ListenerKind, Listen)> = [
            (ListenerKind::Proxy, &shared.settings.proxy_listen),
            (ListenerKind::Admin, &shared.settings.admin_listen),
            (ListenerKind::Status, &shared.settings.status_listen),
        ]
        .into_iter()
        .flat_map(|(k, ls)| ls.iter().map(move |l| (k, l.clone())))
        .collect();
        // One session cache and ticketer per kind of listener, as nginx's per `server` block,
        // made for the first `ssl` listener of the kind (the cache allocates its table).
        let mut sessions: PerKind<Option<Sessions>> = PerKind::new(None, None, None);
        // HTTP/2 per kind, as Kong's template enables it per `server` block (`http2 on;` when
        // any listener of the block has the `http2` flag): h2 offered by ALPN on every `ssl`
        // listener of the kind.
        let http2 = PerKind::new(
            kind_http2(&shared.settings, ListenerKind::Proxy),
            kind_http2(&shared.settings, ListenerKind::Admin),
            kind_http2(&shared.settings, ListenerKind::Status),
        );
        for (kind, l) in specs {
            let listener = bind(&l)?;
            let addr = listener.local_addr().map_err(|source| ProxyError::Bind {
                addr: l.addr,
                source,
            })?;
            bound.push(BoundListener {
                kind,
                listen: l.clone(),
                addr,
            });
            let tls = match defaults.get(kind) {
                Some(d) if l.ssl => Some({
                    let sessions = sessions
                        .get_mut(kind)
                        .get_or_insert_with(|| Sessions::for_kind(kind));
                    match kind {
                        ListenerKind::Proxy => TlsListener::proxy(
                            shared.snapshot.clone(),
                            d.clone(),
                            *http2.get(kind),
                            sessions,
                            shared.settings.tls_versions,
                        ),
                        ListenerKind::Admin | ListenerKind::Status => TlsListener::defaults_only(
                            d.clone(),
                            *http2.get(kind),
                            sessions,
                            shared.settings.tls_versions,
                        ),
                    }
                }),
                _ => None,
            };
            tasks.push(tokio::spawn(accept_loop(
                shared.clone(),
                (kind, l.proxy_protocol),
                listener,
                tls,
                rx.clone(),
            )));
        }
        if let Ok(mut l) = shared.listeners.lock() {
            *l = bound;
        }
        // Idle upstream connections are swept in the background.
        let pool = shared.pool.clone();
        let mut srx = rx.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(10)) => pool.sweep(),
                    _ = srx.changed() => return,
                }
            }
        }));
        Ok(Gateway {
            shared,
            shutdown: tx,
            tasks,
        })
    }

    /// Compiles `config` (router, certificates, balancer) in the calling thread and publishes
    /// it atomically; `hash` is what `/status` reports for it (see
    /// [`silverback_config::config_hash`]). On error the running configuration keeps serving.
    /// Applies, this one's and `POST /config`'s, run one at a time: a call waits for the one
    /// under way.
    pub fn apply(&self, config: Config, hash: String) -> Result<(), ProxyError> {
        self.shared.apply(config, hash).map(|_| ())
    }

    /// The running configuration's hash (Kong's `configuration_hash`).
    pub fn config_hash(&self) -> String {
        self.shared.snapshot.load().hash().to_string()
    }

    /// The running router's distinct regexes and how many are compiled yet (they are
    /// compiled on first use, and by a background thread right after each swap).
    pub fn regex_counts(&self) -> (usize, usize) {
        self.shared.snapshot.load().router.regex_counts()
    }

    /// The running configuration.
    pub fn config(&self) -> Arc<Config> {
        self.shared.snapshot.load().config.clone()
    }

    /// Every bound listener with its actual address.
    pub fn local_addrs(&self) -> Vec<BoundListener> {
        self.shared
            .listeners
            .lock()
            .map(|l| l.clone())
            .unwrap_or_default()
    }

    /// The first bound address of a kind, TLS or not.
    pub fn addr(&self, kind: ListenerKind, ssl: bool) -> Option<SocketAddr> {
        self.local_addrs()
            .into_iter()
            .find(|l| l.kind == kind && l.listen.ssl == ssl)
            .map(|l| l.addr)
    }

    /// The access logs' files, each once ([`crate::access_log`]): for the binary to reopen
    /// them on a signal ([`crate::access_log::Sink::reopen`]).
    pub fn access_logs(&self) -> Vec<Arc<crate::access_log::Sink>> {
        let mut sinks: Vec<Arc<crate::access_log::Sink>> = vec![];
        for k in [
            ListenerKind::Proxy,
            ListenerKind::Admin,
            ListenerKind::Status,
        ] {
            if let Some(l) = self.shared.access.get(k)
                && !sinks.iter().any(|s| Arc::ptr_eq(s, l.sink()))
            {
                sinks.push(l.sink().clone());
            }
        }
        sinks
    }

    /// Idle upstream connections in the pool.
    pub fn idle_upstream_connections(&self) -> usize {
        self.shared.pool.idle_count()
    }

    /// Stops accepting, lets in-flight requests finish (up to `shutdown_grace`), then stops.
    pub async fn shutdown(self) {
        self.shared
            .stopping
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = self.shutdown.send(true);
        self.shared.snapshot.load().balancers.shutdown();
        let grace = self.shared.settings.shutdown_grace;
        // (the lines of the requests served meanwhile are written out at the end)
        let sinks = self.access_logs();
        for t in self.tasks {
            if tokio::time::timeout(grace, t).await.is_err() {
                tracing::warn!("listener did not drain in time");
            }
        }
        let _ = tokio::task::spawn_blocking(move || sinks.iter().for_each(|s| s.close())).await;
    }
}

/// Whether any listener of `kind` has the `http2` flag. Kong's template writes `http2 on;` in
/// the kind's `server` block then, which (nginx 1.25.1 and later) offers h2 by ALPN on every
/// `ssl` listener of the block and takes HTTP/2 with prior knowledge (h2c) on every plain one.
pub(crate) fn kind_http2(settings: &Settings, kind: ListenerKind) -> bool {
    let listeners = match kind {
        ListenerKind::Proxy => &settings.proxy_listen,
        ListenerKind::Admin => &settings.admin_listen,
        ListenerKind::Status => &settings.status_listen,
    };
    listeners.iter().any(|l| l.http2)
}

/// What every connection of a listener is served with.
struct ConnSetup {
    /// Hyper's server, both protocols: plain connections of a kind with `http2` (h2c with
    /// prior knowledge detected by its preface).
    builder: auto::Builder<TokioExecutor>,
    /// Hyper's server, HTTP/1 only: plain connections of a kind without `http2`, and TLS
    /// connections that did not agree on `h2` (nginx looks for the preface only on plain
    /// connections).
    h1_only: auto::Builder<TokioExecutor>,
    /// Whether plain connections take h2c ([`kind_http2`]).
    h2c: bool,
    /// Hyper's server, HTTP/2 only: for TLS connections that agreed on `h2` by ALPN (other
    /// bytes there are a protocol error, as in nginx, not HTTP/1 past the framing guard).
    h2_only: auto::Builder<TokioExecutor>,
    /// The limits of the framing guard in front of hyper's HTTP/1.
    limits: crate::h1_guard::Limits,
    /// The answer to a head the guard refuses, as Kong's server of the listener's kind gives it.
    answerer: crate::h1_guard::Answerer,
}

impl ConnSetup {
    fn new(sh: &Arc<Shared>, kind: ListenerKind) -> ConnSetup {
        let sh2 = sh.clone();
        ConnSetup {
            builder: conn_builder(sh, kind),
            h1_only: conn_builder(sh, kind).http1_only(),
            h2c: kind_http2(&sh.settings, kind),
            h2_only: conn_builder(sh, kind).http2_only(),
            limits: crate::h1_guard::Limits {
                max_headers: sh.settings.max_headers,
                buffers: buffers_of(sh, kind),
                h2c: false,
            },
            answerer: Arc::new(move |head, why, peer| {
                crate::h1_fast::refusal_bytes(&sh2, head, why, (kind, peer))
            }),
        }
    }

    /// `io` behind the framing guard, for hyper's HTTP/1 (and h2c when `h2c`), and the
    /// guard's request for a graceful shutdown of hyper's side; the guard closes the
    /// connection at `first_head_by` if no request head has come by then, and hands a copy
    /// of the heads it passes to `heads`, if given.
    fn guard<T>(
        &self,
        (io, peer): (T, std::net::IpAddr),
        (first_head_by, h2c): (Option<std::time::Instant>, bool),
        heads: Option<Arc<crate::h1_guard::Heads>>,
        close_after: Arc<Notify>,
    ) -> (TokioIo<crate::h1_guard::H1Guard<T>>, Option<Arc<Notify>>) {
        let guard = crate::h1_guard::H1Guard::new(
            io,
            crate::h1_guard::Limits { h2c, ..self.limits },
            self.answerer.clone(),
            close_after.clone(),
        );
        let guard = guard.with_peer(peer).first_head_by(first_head_by);
        let io = TokioIo::new(guard.keeping_heads(heads));
        (io, Some(close_after))
    }
}

/// The request head buffers of a listener's kind.
fn buffers_of(sh: &Shared, kind: ListenerKind) -> crate::header_buffers::HeaderBuffers {
    if kind == ListenerKind::Proxy {
        sh.settings.proxy_header_buffers
    } else {
        sh.settings.header_buffers
    }
}

fn conn_builder(sh: &Shared, kind: ListenerKind) -> auto::Builder<TokioExecutor> {
    let s = &sh.settings;
    let mut b = auto::Builder::new(TokioExecutor::new());
    // The framing guard refuses heads over the limits before hyper would (hyper's bare 431
    // is never the answer): hyper's own limits sit just above them. (With a `max_headers`
    // over its default of 100, hyper takes the slots of its parser from the heap, uninitialized,
    // for each head it parses: 64 bytes each, 64 KiB with nginx's 1000. Most requests
    // without a body take the fast path, whose parser is not hyper's.)
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(s.client_header_timeout)
        .max_buf_size(
            buffers_of(sh, kind)
                .max_bytes()
                .saturating_add(4096)
                .max(8192),
        )
        .max_headers(s.max_headers.saturating_add(1))
        // Header names go out Title-Case (`Content-Type`, `X-Kong-Request-Id`), as nginx and
        // Kong's Lua write the headers they set, rather than as `http` holds them (lower
        // case). An upstream's names, lower-cased on the way through, come out Title-Case
        // too, where nginx keeps their case (`ETag` becomes `Etag`); the fast path keeps them.
        .title_case_headers(true)
        .keep_alive(true)
        .half_close(false);
    // nginx's HTTP/2 settings on every server block of Kong's (none sets its own): 128
    // concurrent streams, a stream window of `http2_body_preread_size` (64k) and the
    // connection window opened to its largest (`NGX_HTTP_V2_MAX_WINDOW`), frames up to the
    // largest size
    b.http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(s.keepalive_timeout))
        .keep_alive_timeout(Duration::from_secs(20))
        .max_concurrent_streams(128)
        .initial_stream_window_size(65_536)
        .initial_connection_window_size(H2_MAX_WINDOW)
        .max_frame_size(16_777_215)
        .max_header_list_size(u32::try_from(buffers_of(sh, kind).max_bytes()).unwrap_or(u32::MAX));
    b
}

/// The largest HTTP/2 flow-control window (2^31 - 1), nginx's `NGX_HTTP_V2_MAX_WINDOW`.
const H2_MAX_WINDOW: u32 = (1 << 31) - 1;

/// How long a listener waits after a failed accept. Out of file descriptors (`EMFILE`,
/// `ENFILE`): 500 ms, as nginx stops accepting for `accept_mutex_delay` then, so that the
/// connections it holds can finish and the log gets one line per wait, not a flood. Other
/// failures: 20 ms.
fn accept_pause(e: &std::io::Error) -> Duration {
    /// Linux's `errno` values for a full file table, the process's and the system's.
    const EMFILE: i32 = 24;
    const ENFILE: i32 = 23;
    match e.raw_os_error() {
        Some(EMFILE | ENFILE) => Duration::from_millis(500),
        _ => Duration::from_millis(20),
    }
}

/// How long a connection accepted past `worker_connections` waits for room (idle
/// connections closing, [`admit`]) before it is closed unanswered.
pub const ROOM_WAIT: Duration = Duration::from_millis(100);

/// Whether a connection just accepted, the `open`th open now, may be served under
/// `worker_connections`. Past the limit, idle HTTP/1.1 proxy connections are asked to close
/// (nginx closes its reusable connections, idle keep-alive ones, when it runs short), and
/// the connection waits up to [`ROOM_WAIT`] for the count to come back within the limit;
/// else it is dropped and counted, with a warning at most once a second (nginx's "worker
/// connections are not enough").
async fn admit(sh: &Shared, open: i64) -> bool {
    let limit = sh.settings.worker_connections as i64;
    if limit == 0 || open <= limit {
        return true;
    }
    sh.drain.send_modify(|n| *n += 1);
    let until = tokio::time::Instant::now() + ROOM_WAIT;
    while tokio::time::Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(2)).await;
        if sh.metrics.active.load(Relaxed) <= limit {
            return true;
        }
    }
    sh.metrics.dropped.fetch_add(1, Relaxed);
    static WARNED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    if WARNED.swap(now, Relaxed) != now {
        tracing::warn!(
            worker_connections = limit,
            "worker_connections are not enough: closing a new connection"
        );
    }
    false
}

async fn accept_loop(
    sh: Arc<Shared>,
    (kind, proxy_protocol): (ListenerKind, bool),
    listener: TcpListener,
    tls: Option<TlsListener>,
    mut shutdown: watch::Receiver<bool>,
) {
    let setup = Arc::new(ConnSetup::new(&sh, kind));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    let pause = accept_pause(&e);
                    tracing::warn!(error = %e, retry_in = ?pause, "accept failed");
                    tokio::time::sleep(pause).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        // (the first request head's `client_header_timeout` starts here, as nginx sets its
        // read timer when it accepts)
        let at = std::time::Instant::now();
        let _ = stream.set_nodelay(true);
        let local = stream.local_addr().unwrap_or(peer);
        sh.metrics.accepted.fetch_add(1, Relaxed);
        let sh2 = sh.clone();
        let b = setup.clone();
        let tls = tls.clone();
        let watcher = graceful.watcher();
        let mut stop = shutdown.clone();
        tokio::spawn(async move {
            let open = sh2.metrics.active.fetch_add(1, Relaxed) + 1;
            if !admit(&sh2, open).await {
                sh2.metrics.active.fetch_sub(1, Relaxed);
                return;
            }
            let conn = Accepted {
                peer,
                local,
                proxied: None,
                at,
            };
            // Answers on plain HTTP/1.1 proxy connections written at the end of the
            // scheduler's batch (`batch_write`), where the fast path serves them.
            if !proxy_protocol
                && tls.is_none()
                && kind == ListenerKind::Proxy
                && sh2.settings.fast_h1
                && sh2.settings.batch_writes.client()
                && crate::batch_write::available()
            {
                let (plain, slot) =
                    crate::batch_write::Plain::client(stream, sh2.settings.send_timeout);
                let stream = WriteTimed::new(plain, sh2.settings.send_timeout);
                let (w, stop) = (watcher, &mut stop);
                serve_conn(&sh2, kind, &b, (stream, Some(slot)), conn, None, w, stop).await;
            } else if !proxy_protocol {
                // Writes to the client give up after `send_timeout` without progress.
                let stream = WriteTimed::new(stream, sh2.settings.send_timeout);
                serve_conn(
                    &sh2,
                    kind,
                    &b,
                    (stream, None),
                    conn,
                    tls,
                    watcher,
                    &mut stop,
                )
                .await;
            } else {
                let mut stream = WriteTimed::new(stream, sh2.settings.send_timeout);
                // (the header is read within the first request head's timeout, as nginx
                // reads it; a shutdown does not wait for it)
                let by = conn.first_head_by(&sh2);
                let read = tokio::select! {
                    r = crate::proxy_protocol::read(&mut stream, by.into()) => r,
                    _ = stop.wait_for(|stopping| *stopping) => {
                        Err(crate::proxy_protocol::Error::Incomplete("shutting down"))
                    }
                };
                match read {
                    Ok((addresses, rest)) => {
                        let stream = crate::h1_fast::Rewind::new(stream, rest);
                        let conn = Accepted {
                            proxied: Some(addresses),
                            ..conn
                        };
                        let io = (stream, None);
                        serve_conn(&sh2, kind, &b, io, conn, tls, watcher, &mut stop).await
                    }
                    // (a peer that closes or stays silent is no news; nginx logs a
                    // broken header and closes the connection)
                    Err(e @ crate::proxy_protocol::Error::Incomplete(_)) => {
                        tracing::debug!(%peer, error = %e, "connection closed")
                    }
                    Err(e) => tracing::info!(%peer, error = %e, "connection closed"),
                }
            }
            sh2.metrics.active.fetch_sub(1, Relaxed);
        });
    }
    drop(listener);
    if tokio::time::timeout(sh.settings.shutdown_grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(?kind, "connections still open after the grace period");
    }
}

/// `d` after `at` (a duration too long to add is thirty years, as good as never).
pub(crate) fn later(at: std::time::Instant, d: Duration) -> std::time::Instant {
    at.checked_add(d)
        .unwrap_or_else(|| at + Duration::from_secs(30 * 365 * 86_400))
}

/// A connection's addresses (the peer's and ours, and a PROXY protocol header's) and when
/// it was accepted.
#[derive(Clone, Copy)]
struct Accepted {
    peer: SocketAddr,
    local: SocketAddr,
    proxied: Option<crate::proxy_protocol::Addresses>,
    at: std::time::Instant,
}

impl Accepted {
    /// When the connection's first request head must have arrived: `client_header_timeout`
    /// after the accept, as nginx times it (`ngx_http_init_connection` sets the read timer
    /// once; the PROXY header, a TLS handshake and the first head are all read under it).
    fn first_head_by(&self, sh: &Shared) -> std::time::Instant {
        later(self.at, sh.settings.client_header_timeout)
    }

    fn info(self, sh: &Shared, tls: bool, sni: Option<Box<str>>) -> Arc<ConnInfo> {
        let mut info = ConnInfo::new(self.peer, self.local, tls, sni);
        info.proxied = self.proxied;
        info.map_port(&sh.settings.port_maps);
        Arc::new(info)
    }
}

#[allow(clippy::too_many_arguments)]
async fn serve_conn<S>(
    sh: &Arc<Shared>,
    kind: ListenerKind,
    b: &ConnSetup,
    (stream, slot): (S, Option<crate::batch_write::Slot>),
    conn: Accepted,
    tls: Option<TlsListener>,
    watcher: hyper_util::server::graceful::Watcher,
    shutdown: &mut watch::Receiver<bool>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let peer = conn.peer;
    let first_head_by = conn.first_head_by(sh);
    match tls {
        None if kind == ListenerKind::Proxy && sh.settings.fast_h1 => {
            let info = conn.info(sh, false, None);
            // Simple HTTP/1.1 requests on the fast path; hyper takes the connection over
            // at the first request that is not, with the bytes read so far put back. A
            // head (or HTTP/2 preface) handed over unfinished keeps the deadline the fast
            // path timed it by (for the first head, `first_head_by`): the framing guard
            // holds hyper to it, whose own header timer would start over at the hand-off
            // (and whose version detection has none). A complete head needs none.
            let h2c = b.h2c;
            match crate::h1_fast::serve(sh, &info, stream, slot, conn.at, h2c, shutdown).await {
                crate::h1_fast::Outcome::Closed => {}
                crate::h1_fast::Outcome::Handoff { io, head_by } => {
                    let io = (io, head_by, h2c);
                    serve_guarded(sh, kind, b, io, info, watcher, shutdown).await
                }
            }
        }
        None => {
            let info = conn.info(sh, false, None);
            // HTTP/1 framing checks hyper leaves out (h2c prior knowledge passes through
            // where the kind has `http2`).
            let io = (stream, Some(first_head_by), b.h2c);
            serve_guarded(sh, kind, b, io, info, watcher, shutdown).await
        }
        Some(tls) => {
            // (the handshake within the gateway's `tls_handshake_timeout`, and within the
            // first head's timeout, which nginx starts at the accept and keeps through the
            // handshake, its only bound there)
            let limit = sh
                .settings
                .tls_handshake_timeout
                .min(first_head_by.saturating_duration_since(std::time::Instant::now()));
            // nginx's first look (`ngx_http_ssl_handshake`): a byte that begins neither a
            // TLS record (0x16) nor an SSLv2 hello (its high bit) is plain HTTP
            use tokio::io::AsyncReadExt as _;
            let mut stream = stream;
            let mut first = [0u8; 1];
            match tokio::time::timeout(limit, stream.read(&mut first)).await {
                Ok(Ok(1)) => {}
                _ => return,
            }
            if first[0] != 0x16 && first[0] & 0x80 == 0 {
                let first = (first[0], peer.ip());
                plain_http_on_tls(sh, kind, stream, first, first_head_by).await;
                return;
            }
            let stream = crate::h1_fast::Rewind::new(stream, bytes::Bytes::copy_from_slice(&first));
            let s = match tls.accept_within(stream, limit).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!(error = %e, %peer, "TLS handshake failed");
                    return;
                }
            };
            let sni = s.get_ref().1.server_name().map(Box::from);
            let info = conn.info(sh, true, sni);
            if s.get_ref().1.alpn_protocol() == Some(b"h2") {
                let io = TokioIo::new(s);
                let closing = (watcher, Some(info.close.clone()), shutdown);
                serve_io(sh, kind, (&b.h2_only, true), (io, None), info, closing).await
            } else if kind == ListenerKind::Proxy && sh.settings.fast_h1 {
                // HTTP/1.1 over TLS: the same fast path as in cleartext (no h2c: without
                // `h2` by ALPN, nginx reads HTTP/1 on a TLS connection).
                match crate::h1_fast::serve(sh, &info, s, None, conn.at, false, shutdown).await {
                    crate::h1_fast::Outcome::Closed => {}
                    crate::h1_fast::Outcome::Handoff { io, head_by } => {
                        let io = (io, head_by, false);
                        serve_guarded(sh, kind, b, io, info, watcher, shutdown).await
                    }
                }
            } else {
                let io = (s, Some(first_head_by), false);
                serve_guarded(sh, kind, b, io, info, watcher, shutdown).await
            }
        }
    }
}

/// Plain HTTP on a TLS listener, whose first byte was `first`: the request head is read (by
/// the first head's deadline, `head_by`; past it, or at the client's end, the connection
/// closes unanswered), then answered as nginx answers it (`NGX_HTTP_TO_HTTPS`: 400 with its
/// page "The plain HTTP request was sent to HTTPS port", which Kong's `error_page` lines
/// leave to nginx; a head past the header buffers is nginx's 494 instead), the connection
/// closed.
async fn plain_http_on_tls<S>(
    sh: &Arc<Shared>,
    kind: ListenerKind,
    mut stream: S,
    (first, peer): (u8, std::net::IpAddr),
    head_by: std::time::Instant,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::AsyncReadExt as _;
    let max = buffers_of(sh, kind).max_bytes();
    let mut head = vec![first];
    let mut chunk = [0u8; 4096];
    let deadline = tokio::time::Instant::from_std(head_by);
    let why = loop {
        if head.windows(4).any(|w| w == b"\r\n\r\n") || head.windows(2).any(|w| w == b"\n\n") {
            break crate::proxy::Refusal::PlainHttp;
        }
        if head.len() > max {
            break crate::proxy::Refusal::TooLarge;
        }
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => head.extend_from_slice(&chunk[..n]),
            _ => return,
        }
    };
    tracing::debug!(listener = ?kind, "plain HTTP request on a TLS listener");
    let answer = crate::h1_fast::refusal_bytes(sh, &head, why, (kind, peer));
    let mut closing = crate::h1_fast::Closing::new(answer);
    std::future::poll_fn(|cx| closing.poll_close(&mut stream, cx)).await;
}

/// `io` (HTTP/1, or, when `h2c`, h2c with prior knowledge) served by hyper behind the
/// framing guard; `first_head_by`: when the first request head hyper gets (the connection's
/// first, or one the fast path handed over unfinished) must have come, if it is yet to come
/// (the guard closes the connection then, unanswered, as nginx does).
async fn serve_guarded<I>(
    sh: &Arc<Shared>,
    kind: ListenerKind,
    b: &ConnSetup,
    (io, first_head_by, h2c): (I, Option<std::time::Instant>, bool),
    info: Arc<ConnInfo>,
    watcher: hyper_util::server::graceful::Watcher,
    shutdown: &mut watch::Receiver<bool>,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    // (the heads as received, for the proxy's upstream requests: see `h1_guard`)
    let heads = (kind == ListenerKind::Proxy).then(Arc::default);
    let close = info.close.clone();
    let io = (io, info.peer.ip());
    let (io, close_after) = b.guard(io, (first_head_by, h2c), heads.clone(), close);
    let builder = if h2c { &b.builder } else { &b.h1_only };
    serve_io(
        sh,
        kind,
        (builder, false),
        (io, heads),
        info,
        (watcher, close_after, shutdown),
    )
    .await
}

/// How a connection served by hyper is shut down gracefully: the listener's drain (held
/// while the connection lives), the gateway's shutdown signal, and the framing guard's
/// request once it has refused a head.
type Closing<'a> = (
    hyper_util::server::graceful::Watcher,
    Option<Arc<Notify>>,
    &'a mut watch::Receiver<bool>,
);

/// `io` served by hyper's builder `b`; `h2_only`: the builder takes HTTP/2 only, and no
/// connection upgrade (hyper's upgrading server reads the version itself, whatever the
/// builder says). `heads`: the HTTP/1 request heads as received, from the framing guard in
/// front of hyper, for the proxy's requests.
async fn serve_io<I>(
    sh: &Arc<Shared>,
    kind: ListenerKind,
    (b, h2_only): (&auto::Builder<TokioExecutor>, bool),
    (io, heads): (TokioIo<I>, Option<Arc<crate::h1_guard::Heads>>),
    info: Arc<ConnInfo>,
    closing: Closing<'_>,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::new(Activity::default());
    let idle = activity.clone().idle(sh.settings.keepalive_timeout);
    let r = match kind {
        ListenerKind::Proxy => {
            let sh = sh.clone();
            // (a request that gets no answer fails the service, as on the admin listener)
            let svc = service_fn(move |req| {
                let busy = activity.begin();
                let client = heads.as_ref().and_then(|h| h.take_for(&req));
                let answer = crate::proxy::serve(sh.clone(), info.clone(), req, client);
                async move { answer.await.map(|r| held(Ok(r), busy)) }
            });
            if h2_only {
                let conn = b.serve_connection(io, svc).into_owned();
                drive(conn, |c| c.graceful_shutdown(), closing, idle).await
            } else {
                let conn = b.serve_connection_with_upgrades(io, svc).into_owned();
                drive(conn, |c| c.graceful_shutdown(), closing, idle).await
            }
        }
        ListenerKind::Admin | ListenerKind::Status => {
            let sh = sh.clone();
            // (a request that gets no answer fails the service: hyper then closes the
            // connection without writing anything, as nginx does)
            let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let busy = activity.begin();
                // (nginx's `keepalive_requests` holds in Kong's admin and status servers
                // too: the request that reaches it closes the connection, or its HTTP/2
                // connection gets a GOAWAY)
                let last = info.last_request(sh.settings.keepalive_requests);
                let http2 = req.version() == hyper::Version::HTTP_2;
                let info = info.clone();
                let answer =
                    crate::admin::serve(sh.clone(), (kind, info.peer_ip.clone(), info.tls), req);
                async move {
                    answer.await.map(|mut r| {
                        if last {
                            if http2 {
                                info.close.notify_one();
                            } else {
                                r.headers_mut().insert(
                                    hyper::header::CONNECTION,
                                    hyper::header::HeaderValue::from_static("close"),
                                );
                            }
                        }
                        held(Ok(r), busy)
                    })
                }
            });
            let conn = b.serve_connection(io, svc).into_owned();
            drive(conn, |c| c.graceful_shutdown(), closing, idle).await
        }
    };
    match r {
        Some(Err(e)) => tracing::debug!(error = %e, "connection ended with an error"),
        None => tracing::debug!("connection closed before its first request"),
        Some(Ok(())) => {}
    }
}

/// When a connection served by hyper last started or finished answering a request, and how
/// many answers are under way: nginx closes a connection (an HTTP/2 one included, which
/// hyper would keep open as long as the client answers its pings) after `keepalive_timeout`
/// without a request, and a connection that never sends one (an HTTP/2 preface that never
/// comes) likewise.
#[derive(Debug)]
struct Activity {
    /// The last start or end of an answer.
    clock: crate::deadline::IdleClock,
    busy: AtomicU64,
    /// Requests begun.
    requests: AtomicU64,
}

impl Default for Activity {
    fn default() -> Self {
        Activity {
            clock: crate::deadline::IdleClock::new(),
            busy: AtomicU64::new(0),
            requests: AtomicU64::new(0),
        }
    }
}

/// An answer under way; its drop marks the end.
#[derive(Debug)]
struct Busy(Arc<Activity>);

/// A response whose connection counts as busy until its body has been sent (or dropped):
/// a long download or stream is no idle time.
fn held(
    r: Result<http::Response<crate::body::ProxyBody>, Infallible>,
    busy: Busy,
) -> http::Response<Held> {
    let mut r = match r {
        Ok(r) => r,
        Err(never) => match never {},
    };
    // (hyper writes the standard phrases; nginx writes its own)
    crate::error::set_nginx_reason(&mut r);
    r.map(|body| Held {
        body,
        busy: Some(busy),
    })
}

/// A response body holding its connection's [`Busy`] until the end.
#[derive(Debug)]
struct Held {
    body: crate::body::ProxyBody,
    busy: Option<Busy>,
}

impl http_body::Body for Held {
    type Data = bytes::Bytes;
    type Error = crate::body::BoxError;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        let r = std::pin::Pin::new(&mut this.body).poll_frame(cx);
        if matches!(r, std::task::Poll::Ready(None)) || this.body.is_end_stream() {
            this.busy = None;
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.clock.touch();
        self.0.busy.fetch_sub(1, Relaxed);
    }
}

impl Activity {
    fn begin(self: &Arc<Self>) -> Busy {
        self.requests.fetch_add(1, Relaxed);
        self.busy.fetch_add(1, Relaxed);
        self.clock.touch();
        Busy(self.clone())
    }

    /// Resolves once nothing has been answered for `timeout` and nothing is under way; to
    /// whether the connection ever began a request. A zero `timeout` never resolves (no
    /// watchdog).
    async fn idle(self: Arc<Self>, timeout: Duration) -> bool {
        if timeout.is_zero() {
            return std::future::pending().await;
        }
        loop {
            self.clock.quiet_for(timeout).await;
            if self.busy.load(Relaxed) == 0 {
                return self.requests.load(Relaxed) > 0;
            }
            // (an answer under way touches the clock when it ends)
            tokio::time::sleep(timeout).await;
        }
    }
}

/// Polls `conn` to its end, shut down gracefully (`graceful`) when the gateway shuts down,
/// the framing guard asks for it, or `idle` resolves (in-flight answers still finish). A
/// connection idle before its first request is shut down gracefully too (an idle HTTP/2
/// channel gets its GOAWAY), and dropped if it has not ended a second later (an HTTP/2
/// client that never sends the preface, which a graceful shutdown would wait for): `None`.
async fn drive<C, T>(
    conn: C,
    graceful: impl Fn(std::pin::Pin<&mut C>),
    (watcher, close_after, shutdown): Closing<'_>,
    idle: impl std::future::Future<Output = bool>,
) -> Option<T>
where
    C: std::future::Future<Output = T>,
{
    // (the listener's drain waits for this connection while the watcher lives)
    let _drain = watcher;
    let mut conn = std::pin::pin!(conn);
    let mut closing = *shutdown.borrow();
    if closing {
        graceful(conn.as_mut());
    }
    let asked = async {
        match &close_after {
            Some(n) => n.notified().await,
            None => std::future::pending().await,
        }
    };
    let mut asked = std::pin::pin!(asked);
    let mut idle = std::pin::pin!(idle);
    let mut unused_since: Option<std::pin::Pin<Box<tokio::time::Sleep>>> = None;
    loop {
        tokio::select! {
            r = conn.as_mut() => return Some(r),
            _ = shutdown.changed(), if !closing => {}
            () = asked.as_mut(), if !closing => {}
            used = idle.as_mut(), if !closing => if !used {
                unused_since = Some(Box::pin(tokio::time::sleep(Duration::from_secs(1))));
            },
            () = async {
                match unused_since.as_mut() {
                    Some(s) => s.as_mut().await,
                    None => std::future::pending().await,
                }
            } => return None,
        }
        closing = true;
        graceful(conn.as_mut());
    }
}
