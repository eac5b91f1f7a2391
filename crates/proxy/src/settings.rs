//! Node settings in Kong's vocabulary (`proxy_listen`, `admin_listen`, `trusted_ips`, ...):
//! what a `kong.conf` would hold. [`Settings::default`] gives Kong's defaults.

use crate::header_buffers::HeaderBuffers;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use silverback_config::{PluginRegistry, RouterFlavor};

use crate::error::Format;

/// One listener: `addr:port [ssl] [http2] [proxy_protocol] [reuseport] [backlog=N]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listen {
    /// Address and port to bind (port 0 picks a free one).
    pub addr: SocketAddr,
    /// TLS termination on this listener.
    pub ssl: bool,
    /// HTTP/2: offered by ALPN on `ssl` listeners; plain listeners accept h2c with prior
    /// knowledge when some listener of their kind has it (nginx's `http2 on` is the
    /// `server`'s).
    pub http2: bool,
    /// `SO_REUSEPORT` on the socket.
    pub reuseport: bool,
    /// Each connection starts with a PROXY protocol header (v1 or v2), read before anything
    /// else (before the TLS handshake on `ssl` listeners); see [`crate::proxy_protocol`].
    pub proxy_protocol: bool,
    /// Listen backlog (default 511, nginx's).
    pub backlog: u32,
    /// Whether `backlog=N` was given.
    pub backlog_given: bool,
    /// The flags Kong accepts that have no effect here (`deferred`, `bind`, `ipv6only=…`,
    /// `so_keepalive=…`), as written: `GET /` reports them as Kong does.
    pub inert: Vec<String>,
}

/// Why a listener specification was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ListenError {
    /// The address part is not `ip:port`, `[ipv6]:port` or `*:port`.
    #[error("invalid listen address '{0}': expected ip:port")]
    Address(String),
    /// A flag we do not know.
    #[error("invalid listen flag '{0}' in '{1}'")]
    Flag(String, String),
    /// `backlog=N` with a bad number.
    #[error("invalid backlog in '{0}'")]
    Backlog(String),
    /// Kong's `off`, given with other listeners.
    #[error("'off' cannot be combined with other listeners")]
    Off,
}

impl Listen {
    /// A plain listener on `addr` with default flags.
    pub fn plain(addr: SocketAddr) -> Listen {
        Listen {
            addr,
            ssl: false,
            http2: false,
            reuseport: false,
            proxy_protocol: false,
            backlog: 511,
            backlog_given: false,
            inert: Vec::new(),
        }
    }

    /// Parses a comma-separated list in Kong's syntax, e.g.
    /// `"0.0.0.0:8000, 0.0.0.0:8443 ssl http2 reuseport backlog=16384"`. `off` (alone) gives
    /// an empty list. Flags Kong accepts but that have no effect here (`deferred`, `bind`,
    /// `so_keepalive=...`, `ipv6only=...`) are accepted and ignored.
    pub fn parse_list(s: &str) -> Result<Vec<Listen>, ListenError> {
        let items: Vec<&str> = s
            .split(',')
            .map(str::trim)
            .filter(|x| !x.is_empty())
            .collect();
        if items.contains(&"off") {
            return if items.len() == 1 {
                Ok(vec![])
            } else {
                Err(ListenError::Off)
            };
        }
        items.into_iter().map(Listen::parse_one).collect()
    }

    fn parse_one(item: &str) -> Result<Listen, ListenError> {
        let mut words = item.split_whitespace();
        let addr_s = words
            .next()
            .ok_or_else(|| ListenError::Address(item.into()))?;
        let addr = parse_addr(addr_s).ok_or_else(|| ListenError::Address(addr_s.into()))?;
        let mut l = Listen::plain(addr);
        for w in words {
            match w {
                "ssl" => l.ssl = true,
                "http2" => l.http2 = true,
                "reuseport" => l.reuseport = true,
                "proxy_protocol" => l.proxy_protocol = true,
                "deferred" | "bind" => l.inert.push(w.into()),
                _ if w.starts_with("backlog=") => {
                    l.backlog = w["backlog=".len()..]
                        .parse()
                        .map_err(|_| ListenError::Backlog(item.into()))?;
                    l.backlog_given = true;
                }
                _ if w.starts_with("so_keepalive=") || w.starts_with("ipv6only=") => {
                    l.inert.push(w.into());
                }
                _ => return Err(ListenError::Flag(w.into(), item.into())),
            }
        }
        Ok(l)
    }
}

impl std::fmt::Display for Listen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.addr)?;
        if self.ssl {
            f.write_str(" ssl")?;
        }
        if self.http2 {
            f.write_str(" http2")?;
        }
        if self.proxy_protocol {
            f.write_str(" proxy_protocol")?;
        }
        if self.reuseport {
            f.write_str(" reuseport")?;
        }
        if self.backlog != 511 {
            write!(f, " backlog={}", self.backlog)?;
        }
        Ok(())
    }
}

fn parse_addr(s: &str) -> Option<SocketAddr> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Some(a);
    }
    let (host, port) = s.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    let ip: IpAddr = match host {
        "*" => IpAddr::from([0, 0, 0, 0]),
        "localhost" => IpAddr::from([127, 0, 0, 1]),
        h => h
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .ok()?,
    };
    Some(SocketAddr::new(ip, port))
}

/// An IP network (`10.0.0.0/8`, `::1`). A bare address is a host network (`/32` or
/// `/128`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    /// Network address.
    pub addr: IpAddr,
    /// Prefix length.
    pub prefix: u8,
}

impl Cidr {
    /// Parses `a.b.c.d[/n]` or `v6[/n]`, or Kong's `0.0.0.0/0,::/0` shorthand pieces.
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let s = s.trim();
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = a.parse().map_err(|_| format!("invalid IP or CIDR '{s}'"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|n| *n <= max)
                .ok_or_else(|| format!("invalid prefix in '{s}'"))?,
        };
        Ok(Cidr { addr, prefix })
    }

    /// Parses a comma-separated list. Kong's `unix:` entry (connections on UNIX-domain
    /// sockets, which no listener here takes) is accepted and names nothing.
    pub fn parse_list(s: &str) -> Result<Vec<Cidr>, String> {
        s.split(',')
            .map(str::trim)
            .filter(|x| !x.is_empty() && *x != "unix:")
            .map(Cidr::parse)
            .collect()
    }

    /// Whether `ip` is inside the network. IPv4-mapped IPv6 addresses match IPv4 networks.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = if self.prefix == 0 {
                    0
                } else {
                    u32::MAX << (32 - self.prefix)
                };
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = if self.prefix == 0 {
                    0
                } else {
                    u128::MAX << (128 - self.prefix)
                };
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

/// Kong's `headers` setting: which headers the gateway adds to the answers it sends, parsed
/// from a comma-separated list of tokens: `server_tokens` (`Server` and `Via`),
/// `latency_tokens` (the four latency headers), single header names (in any case), or `off`
/// first for none. The default is Kong's: `server_tokens, latency_tokens, X-Kong-Request-Id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Headers {
    /// `Server` (on answers the gateway makes, and on proxied answers without one).
    pub server: bool,
    /// `Via` on proxied answers.
    pub via: bool,
    /// `X-Kong-Proxy-Latency` on proxied answers.
    pub proxy_latency: bool,
    /// `X-Kong-Upstream-Latency` on proxied answers.
    pub upstream_latency: bool,
    /// `X-Kong-Response-Latency` on answers the gateway makes.
    pub response_latency: bool,
    /// `X-Kong-Admin-Latency` on admin API answers.
    pub admin_latency: bool,
    /// `X-Kong-Upstream-Status` (the upstream's status) on proxied answers; off by default.
    pub upstream_status: bool,
    /// `X-Kong-Request-Id` on every answer.
    pub request_id: bool,
    /// The tokens as configured (reported by `GET /`, as Kong reports `headers`).
    pub tokens: Arc<[Box<str>]>,
}

/// A token of `headers` or `headers_upstream` that is not one of Kong's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{setting}: invalid entry '{token}'")]
pub struct HeadersError {
    /// `headers` or `headers_upstream`.
    pub setting: &'static str,
    /// The unknown token.
    pub token: String,
}

/// The tokens of a Kong header list.
fn tokens(list: &str) -> impl Iterator<Item = &str> {
    list.split(',').map(str::trim).filter(|t| !t.is_empty())
}

/// The tokens that enable something: none when the list is empty or starts with `off` (Kong
/// then enables nothing, and ignores `off` anywhere else). `off` is matched exactly, as Kong
/// does; header names in any case.
fn enabling_tokens(list: &str) -> impl Iterator<Item = &str> {
    let off = tokens(list).next().is_none_or(|t| t == "off");
    tokens(list).filter(move |t| !off && *t != "off")
}

/// Every token is checked, even after a leading `off`, as Kong's configuration loader does.
fn check_tokens(
    setting: &'static str,
    list: &str,
    known: impl Fn(&str) -> bool,
) -> Result<(), HeadersError> {
    for t in tokens(list) {
        if t != "off" && !known(&t.to_ascii_lowercase()) {
            return Err(HeadersError {
                setting,
                token: t.to_string(),
            });
        }
    }
    Ok(())
}

impl Headers {
    /// Kong's default value of `headers`.
    pub const KONG_DEFAULT: &'static str = "server_tokens, latency_tokens, X-Kong-Request-Id";

    /// Parses Kong's syntax, e.g. `server_tokens, X-Kong-Upstream-Status` or `off`.
    pub fn parse(list: &str) -> Result<Headers, HeadersError> {
        check_tokens("headers", list, |t| Headers::none("").enable(t))?;
        Ok(Headers::enabling(list))
    }

    /// The headers `list` enables, its unknown tokens ignored.
    fn enabling(list: &str) -> Headers {
        let mut h = Headers::none(list);
        for t in enabling_tokens(list) {
            h.enable(&t.to_ascii_lowercase());
        }
        h
    }

    /// None enabled; `list` kept as the configured tokens.
    fn none(list: &str) -> Headers {
        Headers {
            server: false,
            via: false,
            proxy_latency: false,
            upstream_latency: false,
            response_latency: false,
            admin_latency: false,
            upstream_status: false,
            request_id: false,
            tokens: tokens(list).map(Box::from).collect(),
        }
    }

    /// Enables the lowercase `token`; `false` for an unknown token.
    fn enable(&mut self, token: &str) -> bool {
        match token {
            "server_tokens" => (self.server, self.via) = (true, true),
            "latency_tokens" => {
                self.proxy_latency = true;
                self.upstream_latency = true;
                self.response_latency = true;
                self.admin_latency = true;
            }
            "server" => self.server = true,
            "via" => self.via = true,
            "x-kong-proxy-latency" => self.proxy_latency = true,
            "x-kong-upstream-latency" => self.upstream_latency = true,
            "x-kong-response-latency" => self.response_latency = true,
            "x-kong-admin-latency" => self.admin_latency = true,
            "x-kong-upstream-status" => self.upstream_status = true,
            "x-kong-request-id" => self.request_id = true,
            _ => return false,
        }
        true
    }

    /// Each token and header name with whether it is enabled (Kong's `enabled_headers` in
    /// `GET /`).
    pub fn enabled(&self) -> [(&'static str, bool); 10] {
        [
            ("server_tokens", self.server && self.via),
            (
                "latency_tokens",
                self.proxy_latency
                    && self.upstream_latency
                    && self.response_latency
                    && self.admin_latency,
            ),
            ("Server", self.server),
            ("Via", self.via),
            ("X-Kong-Proxy-Latency", self.proxy_latency),
            ("X-Kong-Upstream-Latency", self.upstream_latency),
            ("X-Kong-Response-Latency", self.response_latency),
            ("X-Kong-Admin-Latency", self.admin_latency),
            ("X-Kong-Upstream-Status", self.upstream_status),
            ("X-Kong-Request-Id", self.request_id),
        ]
    }
}

impl Default for Headers {
    fn default() -> Self {
        Headers::enabling(Headers::KONG_DEFAULT)
    }
}

/// Kong's `headers_upstream` setting: which headers the gateway adds to the requests it sends
/// upstream beside the forwarding headers. Only `X-Kong-Request-Id` (the default) or `off`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamHeaders {
    /// `X-Kong-Request-Id` on upstream requests.
    pub request_id: bool,
    /// The tokens as configured (reported by `GET /`).
    pub tokens: Arc<[Box<str>]>,
}

impl UpstreamHeaders {
    /// Kong's default value of `headers_upstream`.
    pub const KONG_DEFAULT: &'static str = "X-Kong-Request-Id";

    /// Parses Kong's syntax: `X-Kong-Request-Id` or `off`.
    pub fn parse(list: &str) -> Result<UpstreamHeaders, HeadersError> {
        check_tokens("headers_upstream", list, |t| t == "x-kong-request-id")?;
        Ok(UpstreamHeaders::enabling(list))
    }

    fn enabling(list: &str) -> UpstreamHeaders {
        UpstreamHeaders {
            request_id: enabling_tokens(list).next().is_some(),
            tokens: tokens(list).map(Box::from).collect(),
        }
    }
}

impl Default for UpstreamHeaders {
    fn default() -> Self {
        UpstreamHeaders::enabling(UpstreamHeaders::KONG_DEFAULT)
    }
}

/// Node settings. Field names follow `kong.conf`; [`Default`] gives Kong's defaults.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `proxy_listen` (default `0.0.0.0:8000 reuseport backlog=16384, 0.0.0.0:8443 http2 ssl
    /// reuseport backlog=16384`).
    pub proxy_listen: Vec<Listen>,
    /// `admin_listen` (default `127.0.0.1:8001 reuseport backlog=16384`): loopback only
    /// unless configured otherwise.
    pub admin_listen: Vec<Listen>,
    /// `status_listen` (default `0.0.0.0:8100`): `/status`, `/status/ready`, `/metrics`.
    pub status_listen: Vec<Listen>,
    /// `trusted_ips`: clients whose forwarding headers (`X-Forwarded-*`, `real_ip_header`)
    /// are believed. Default: none.
    pub trusted_ips: Vec<Cidr>,
    /// `real_ip_header` (default `X-Real-IP`).
    pub real_ip_header: String,
    /// `real_ip_recursive` (default off).
    pub real_ip_recursive: bool,
    /// `port_maps`: the port clients reach a listener port on, as `(listener port, client
    /// port)` ([`PortMaps::parse`]). The router's `net.dst.port` (a request whose `Host` has
    /// no port) and `X-Forwarded-Port` use it, as Kong's `ctx.host_port`. Default: none.
    pub port_maps: PortMaps,
    /// `router_flavor` (default `traditional_compatible`).
    pub router_flavor: RouterFlavor,
    /// Plugins this node implements (reported by `GET /`, used to validate `POST /config`).
    pub plugins: Arc<PluginRegistry>,
    /// The node's log level, as `/debug/node/log-level` shows and changes it (default: fixed
    /// at Kong's `notice`; the binary supplies one that changes its logging).
    pub log_level: Arc<crate::log_level::LogLevel>,
    /// Worker threads of the proxy runtime the binary builds (`nginx_worker_processes`);
    /// `None` means one per core. [`crate::Gateway::start`] itself runs on the caller's runtime.
    pub worker_threads: Option<usize>,
    /// The server token sent in `Server` and `Via` (`kong/3.10.0`, Kong's format).
    pub server_token: String,
    /// `headers`: the headers added to answers (default Kong's: `server_tokens,
    /// latency_tokens, X-Kong-Request-Id`).
    pub headers: Headers,
    /// `headers_upstream`: the request id on upstream requests (default on).
    pub headers_upstream: UpstreamHeaders,
    /// Which small complete HTTP/1.1 messages are written at the end of the scheduler's
    /// batch, with one worker ([`crate::batch_write`]; default both; not a Kong setting).
    pub batch_writes: BatchWrites,
    /// `error_default_type`: the body format of an error nginx raises in Kong (a bad
    /// request, an upstream failure) when the request has neither `Accept` nor
    /// `Content-Type`. Default `text/plain`.
    pub error_default_type: Format,
    /// The request head buffers of the admin and status listeners (Kong's
    /// `nginx_http_client_header_buffer_size` and `nginx_http_large_client_header_buffers`,
    /// 1k and 4 x 8k): a longer line or a larger head is refused as nginx refuses it.
    pub header_buffers: HeaderBuffers,
    /// The same for the proxy listeners (Kong's `nginx_proxy_*` settings of those names,
    /// else the `nginx_http_*` ones).
    pub proxy_header_buffers: HeaderBuffers,
    /// nginx's `max_headers` (default 1000): the most request header lines a head may have,
    /// on every listener; the next line is refused as nginx refuses it, as a head too large
    /// (494, which Kong's proxy server answers as its 400 `Request header or cookie too
    /// large`, and the admin and status servers with nginx's page). (nginx added the
    /// directive as a fix against a denial of service; Debian's 1.22 backports it.) The size
    /// limits of `header_buffers` apply besides.
    pub max_headers: usize,
    /// `client_max_body_size` in bytes (Kong's `nginx_http_client_max_body_size`, set in
    /// nginx's `http` block): larger bodies get 413, on the proxy listeners and on the status
    /// listeners, whose server Kong leaves with the `http` block's limit. 0 = unlimited
    /// (Kong's default).
    pub client_max_body_size: u64,
    /// Request bodies up to this size are read whole before proxying when the route says
    /// `request_buffering`, whether their length is announced or not, and sent upstream by
    /// length (which also makes them retryable); larger ones are streamed, chunked when their
    /// length is unknown (nginx would spill them to a temporary file instead). 0 turns
    /// request buffering off.
    pub request_buffer_limit: u64,
    /// Responses with a `Content-Length` up to this size are read whole from the upstream
    /// before being sent when the route says `response_buffering` (the upstream connection
    /// is then free at once); others, and every response of a route with
    /// `response_buffering: false`, are streamed. 0 turns response buffering off.
    pub response_buffer_limit: u64,
    /// The longest head of an HTTP/1.1 upstream's answer, in bytes (Kong's
    /// `nginx_proxy_proxy_buffer_size`, nginx's `proxy_buffer_size`: Kong's template leaves
    /// nginx's default, one memory page, 4k on x86-64). An answer whose status line and
    /// headers do not fit is a 502, not retried (nginx's "upstream sent too big header");
    /// there is no limit on the number of headers besides.
    pub proxy_buffer_size: usize,
    /// Serve plain HTTP/1.1 requests without a body on the gateway's own connection loop
    /// ([`crate::h1_fast`]) rather than through hyper's server (the same phases and answers,
    /// less CPU per request). `false` leaves every request to hyper. Default `true`.
    pub fast_h1: bool,
    /// Time to receive a whole request head, and the idle time allowed between two requests
    /// on a keep-alive connection (`client_header_timeout`, 60 s). The first head's runs from
    /// the connection's accept, as nginx's: a PROXY protocol header and a TLS handshake
    /// before it count.
    pub client_header_timeout: Duration,
    /// The longest a client may pause while sending its body (`client_body_timeout`, 60 s):
    /// then 408, and nothing is held against the upstream (on the admin and status
    /// listeners, no answer at all: nginx terminates the request there, with no
    /// `error_page` to answer it).
    pub client_body_timeout: Duration,
    /// A write to a client that makes no progress for this long closes the connection
    /// (nginx's `send_timeout`, 60 s), so that a client that stops reading cannot hold a
    /// connection and its upstream forever.
    pub send_timeout: Duration,
    /// How long a connection served by hyper (HTTP/2, and HTTP/1 after the fast path) may go
    /// without a request before it is closed gracefully (`keepalive_timeout`, 60 s); also the
    /// interval of HTTP/2 pings.
    pub keepalive_timeout: Duration,
    /// TLS handshake timeout (the handshake must also end within the first request head's
    /// `client_header_timeout`, which runs from the accept).
    pub tls_handshake_timeout: Duration,
    /// Idle upstream connections kept per address (`upstream_keepalive_pool_size`, 512); 0
    /// keeps none (a new connection for every request).
    pub upstream_keepalive_pool_size: usize,
    /// Idle time after which pooled upstream connections are closed
    /// (`upstream_keepalive_idle_timeout`, 60 s); 0 is no limit.
    pub upstream_keepalive_idle_timeout: Duration,
    /// Requests after which an upstream connection is retired
    /// (`upstream_keepalive_max_requests`, 10000); 0 is no limit.
    pub upstream_keepalive_max_requests: u32,
    /// The requests a client connection takes (Kong's `nginx_http_keepalive_requests`,
    /// nginx's `keepalive_requests`, 10,000 since Kong 3.6): the answer to the last one
    /// says `Connection: close` and the connection closes after it; an HTTP/2 connection
    /// is shut down gracefully (GOAWAY) once it took that many streams. 0 closes after
    /// every request.
    pub keepalive_requests: u64,
    /// The admin listeners' `client_max_body_size` in bytes (Kong's
    /// `nginx_admin_client_max_body_size`, 10m): a request announcing a larger body gets
    /// nginx's 413 page at once, and a body of unknown length (chunked) once it grows past
    /// it. 0 = unlimited.
    pub admin_client_max_body_size: u64,
    /// The longest an admin request body read under one of the upload permits (`POST
    /// /config`, the schema validations, the entity writes) may take in all, 60 s: then it
    /// is ended as a stalled body is, without an answer, and its permit is free again. Not a
    /// Kong setting (nginx bounds only the pause between reads, `client_body_timeout`, which
    /// holds too): it keeps a client that trickles its body from holding a permit for long.
    pub admin_upload_timeout: Duration,
    /// Grace period for in-flight requests at shutdown.
    pub shutdown_grace: Duration,
    /// Load-balancer options: the DNS resolver (`None`: the system's configuration, as
    /// Kong's `dns_resolver` default) and extra CA roots for active `https` probes.
    pub balancer: silverback_balancer::Options,
    /// When set, every admin API request must carry this value in `Kong-Admin-Token`
    /// (the header Kong Enterprise's RBAC and KIC's `--kong-admin-token` use); others get
    /// 401. The status listener is not affected. Default: none (the admin API is protected
    /// by listening on loopback only).
    pub admin_token: Option<AdminToken>,
    /// `ssl_cert` and `ssl_cert_key`: the certificates TLS proxy listeners serve when no SNI
    /// of the configuration matches (files, PEM text or base64 of it, see
    /// [`crate::default_certs`]). Default: none, so an RSA and an ECDSA certificate are
    /// generated (or read from [`Settings::prefix`]). Read and checked by
    /// [`crate::Gateway::start`] when a proxy listener has `ssl`.
    pub ssl_cert: crate::SslCert,
    /// `admin_ssl_cert` and `admin_ssl_cert_key`: the certificates of `ssl` admin listeners,
    /// which, as Kong's, serve no certificate of the configuration. Same form and default
    /// (a pair of their own, not the proxy listeners').
    pub admin_ssl_cert: crate::SslCert,
    /// `status_ssl_cert` and `status_ssl_cert_key`: the same for `ssl` status listeners.
    pub status_ssl_cert: crate::SslCert,
    /// The TLS versions every `ssl` listener speaks (Kong's `ssl_cipher_suite`, and
    /// `ssl_protocols` under its `custom` suite). Default: TLS 1.2 and 1.3 (`intermediate`).
    pub tls_versions: TlsVersions,
    /// Kong's `prefix`: the directory whose `ssl/` keeps the generated default certificates
    /// under Kong's names (`kong-default.crt`, `admin-kong-default-ecdsa.key`, ...; see
    /// [`crate::default_certs`]), written at the first start that needs them and read back
    /// by later ones. Default: none (Kong's is `/usr/local/kong`), so nothing is written to
    /// disk and each process generates its own. Taken as given: the command line makes it
    /// absolute, as Kong does.
    pub prefix: Option<std::path::PathBuf>,
    /// The most client connections open at once, every listener's together: nginx's
    /// `worker_connections` (Kong's `nginx_events_worker_connections`) times the workers.
    /// Past it, idle HTTP/1.1 connections of the proxy listeners are closed to make room (as
    /// nginx reuses its idle keep-alive connections), and a connection that finds no room
    /// within [`crate::gateway::ROOM_WAIT`] is closed unanswered. `0`, the library's
    /// default: no limit.
    pub worker_connections: usize,
    /// The access log of the proxy listeners (Kong's `proxy_access_log`, in
    /// `kong_log_format` unless it names a format); `None`, the library's default, logs
    /// nothing. See [`crate::access_log`].
    pub proxy_access_log: Option<crate::access_log::AccessLogSpec>,
    /// The access log of the admin listeners (Kong's `admin_access_log`, nginx's
    /// `combined` format unless it names one). Default: none.
    pub admin_access_log: Option<crate::access_log::AccessLogSpec>,
    /// The access log of the status listeners (Kong's `status_access_log`). Default: none,
    /// as Kong's.
    pub status_access_log: Option<crate::access_log::AccessLogSpec>,
}

/// A secret the admin API requires in `Kong-Admin-Token`. Never printed: its `Debug` is
/// redacted, and comparisons take the same time wherever the first difference is.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken(Arc<str>);

impl AdminToken {
    /// A token; `None` when empty (an empty token would protect nothing).
    pub fn new(token: &str) -> Option<AdminToken> {
        (!token.is_empty()).then(|| AdminToken(Arc::from(token)))
    }

    /// Whether `presented` equals the token, in time independent of where they differ.
    pub fn matches(&self, presented: &[u8]) -> bool {
        let want = self.0.as_bytes();
        if want.len() != presented.len() {
            return false;
        }
        want.iter()
            .zip(presented)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}

/// The TLS protocol versions the `ssl` listeners speak, from Kong's `ssl_cipher_suite` and
/// `ssl_protocols` ([`TlsVersions::from_kong`]). rustls speaks no version before TLS 1.2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TlsVersions {
    /// TLS 1.2.
    pub tls12: bool,
    /// TLS 1.3.
    pub tls13: bool,
}

impl Default for TlsVersions {
    /// Kong's default suite, `intermediate`: TLS 1.2 and 1.3.
    fn default() -> Self {
        TlsVersions {
            tls12: true,
            tls13: true,
        }
    }
}

impl TlsVersions {
    /// The versions of Kong's `ssl_cipher_suite` (`modern`, `intermediate`, `old`, `fips`,
    /// `custom`), with `ssl_protocols` (space-separated nginx names: `TLSv1`, `TLSv1.1`,
    /// `TLSv1.2`, `TLSv1.3`) read under `custom` only, as Kong reads it.
    ///
    /// `modern` is TLS 1.3 alone, `intermediate` TLS 1.2 and 1.3 and `fips` TLS 1.2 alone,
    /// as Kong's. `old` (TLS 1.0 to 1.3 in Kong) speaks TLS 1.2 and 1.3 here, and under
    /// `custom` the versions before TLS 1.2 are left out: the second value lists what was
    /// left out, for a warning. A `custom` list naming neither TLS 1.2 nor 1.3, an unknown
    /// suite or an unknown protocol name is an error that names the setting.
    pub fn from_kong(suite: &str, protocols: &str) -> Result<(TlsVersions, Vec<String>), String> {
        let both = TlsVersions::default();
        match suite.trim() {
            "modern" => Ok((
                TlsVersions {
                    tls12: false,
                    tls13: true,
                },
                Vec::new(),
            )),
            "intermediate" => Ok((both, Vec::new())),
            "old" => Ok((both, vec!["TLSv1".into(), "TLSv1.1".into()])),
            "fips" => Ok((
                TlsVersions {
                    tls12: true,
                    tls13: false,
                },
                Vec::new(),
            )),
            "custom" => {
                let mut v = TlsVersions {
                    tls12: false,
                    tls13: false,
                };
                let mut dropped = Vec::new();
                for p in protocols.split_whitespace() {
                    match p {
                        "TLSv1.2" => v.tls12 = true,
                        "TLSv1.3" => v.tls13 = true,
                        "TLSv1" | "TLSv1.1" | "SSLv2" | "SSLv3" => dropped.push(p.to_string()),
                        other => {
                            return Err(format!(
                                "invalid ssl_protocols '{protocols}': unknown protocol '{other}' \
                                 (expected TLSv1, TLSv1.1, TLSv1.2 or TLSv1.3)"
                            ));
                        }
                    }
                }
                if !v.tls12 && !v.tls13 {
                    return Err(format!(
                        "invalid ssl_protocols '{protocols}': names neither TLSv1.2 nor TLSv1.3, \
                         the versions this gateway speaks"
                    ));
                }
                Ok((v, dropped))
            }
            other => Err(format!(
                "invalid ssl_cipher_suite '{other}': expected modern, intermediate, old, fips or custom"
            )),
        }
    }
}

/// Which writes wait for the end of the scheduler's batch ([`crate::batch_write`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchWrites {
    /// Every write is made in place.
    Off,
    /// Requests to upstreams only.
    Upstream,
    /// Requests to upstreams, and answers to clients on plain HTTP/1.1 proxy connections.
    On,
}

impl BatchWrites {
    /// `on`, `off` or `upstream`.
    pub fn parse(s: &str) -> Result<BatchWrites, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "on" => Ok(BatchWrites::On),
            "off" => Ok(BatchWrites::Off),
            "upstream" => Ok(BatchWrites::Upstream),
            other => Err(format!(
                "batch_writes: '{other}' is not one of on, off, upstream"
            )),
        }
    }

    /// Whether requests to upstreams are deferred.
    pub fn upstream(self) -> bool {
        self != BatchWrites::Off
    }

    /// Whether answers to clients are deferred.
    pub fn client(self) -> bool {
        self == BatchWrites::On
    }
}

impl Default for Settings {
    fn default() -> Self {
        let l = |s: &str| Listen::parse_list(s).unwrap_or_default();
        Settings {
            proxy_listen: l(
                "0.0.0.0:8000 reuseport backlog=16384, 0.0.0.0:8443 http2 ssl reuseport backlog=16384",
            ),
            admin_listen: l("127.0.0.1:8001 reuseport backlog=16384"),
            status_listen: l("0.0.0.0:8100"),
            trusted_ips: vec![],
            real_ip_header: "X-Real-IP".into(),
            real_ip_recursive: false,
            port_maps: PortMaps::default(),
            router_flavor: RouterFlavor::TraditionalCompatible,
            plugins: Arc::new(PluginRegistry::new()),
            log_level: Arc::new(crate::log_level::LogLevel::fixed()),
            worker_threads: None,
            server_token: format!("kong/{}", crate::KONG_VERSION),
            headers: Headers::default(),
            headers_upstream: UpstreamHeaders::default(),
            batch_writes: BatchWrites::On,
            error_default_type: Format::Text,
            header_buffers: HeaderBuffers::default(),
            proxy_header_buffers: HeaderBuffers::default(),
            max_headers: 1000,
            client_max_body_size: 0,
            request_buffer_limit: 64 * 1024,
            response_buffer_limit: 64 * 1024,
            proxy_buffer_size: crate::h1_client::DEFAULT_HEAD_LIMIT,
            fast_h1: true,
            client_header_timeout: Duration::from_secs(60),
            client_body_timeout: Duration::from_secs(60),
            send_timeout: Duration::from_secs(60),
            keepalive_timeout: Duration::from_secs(60),
            tls_handshake_timeout: Duration::from_secs(60),
            upstream_keepalive_pool_size: 512,
            upstream_keepalive_idle_timeout: Duration::from_secs(60),
            upstream_keepalive_max_requests: 10_000,
            keepalive_requests: 10_000,
            admin_client_max_body_size: 10 * 1024 * 1024,
            admin_upload_timeout: Duration::from_secs(60),
            shutdown_grace: Duration::from_secs(10),
            balancer: silverback_balancer::Options::default(),
            admin_token: None,
            ssl_cert: crate::SslCert::default(),
            admin_ssl_cert: crate::SslCert::parse_setting("admin_ssl_cert", "", ""),
            status_ssl_cert: crate::SslCert::parse_setting("status_ssl_cert", "", ""),
            tls_versions: TlsVersions::default(),
            prefix: None,
            proxy_access_log: None,
            admin_access_log: None,
            status_access_log: None,
            worker_connections: 0,
        }
    }
}

/// An nginx size (`client_max_body_size` and the like): a number of bytes, optionally with
/// `k`, `m` or `g` (any case) for KiB, MiB, GiB. `0` is allowed.
///
/// ```
/// use silverback_proxy::parse_size;
/// assert_eq!(parse_size("8m"), Ok(8 * 1024 * 1024));
/// assert_eq!(parse_size("0"), Ok(0));
/// assert!(parse_size("8 mb").is_err());
/// ```
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (digits, unit) = match t.as_bytes().last() {
        Some(b'k' | b'K') => (&t[..t.len() - 1], 1u64 << 10),
        Some(b'm' | b'M') => (&t[..t.len() - 1], 1 << 20),
        Some(b'g' | b'G') => (&t[..t.len() - 1], 1 << 30),
        _ => (t, 1),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "invalid size '{s}': expected a number of bytes, optionally with k, m or g"
        ));
    }
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(unit))
        .ok_or_else(|| format!("invalid size '{s}': too large"))
}

/// Kong's `port_maps`: which port clients use to reach each listener port (a load
/// balancer or a Kubernetes Service in front of the gateway mapping `80` to `8000`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PortMaps(Vec<(u16, u16)>);

impl PortMaps {
    /// Parses Kong's list of `client_port:listener_port` entries, comma-separated (`80:8000,
    /// 443:8443`); each port from 1 to 65535, else Kong's `invalid port mapping
    /// (`port_maps`): <entry>`. A later entry for the same listener port wins.
    pub fn parse(s: &str) -> Result<PortMaps, String> {
        let mut maps = Vec::new();
        for entry in s.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let port = |p: &str| p.trim().parse::<u16>().ok().filter(|&n| n >= 1);
            let pair = entry
                .split_once(':')
                .and_then(|(c, l)| Some((port(c)?, port(l)?)));
            let Some((client, local)) = pair else {
                return Err(format!("invalid port mapping (`port_maps`): {entry}"));
            };
            maps.retain(|&(l, _)| l != local);
            maps.push((local, client));
        }
        Ok(PortMaps(maps))
    }

    /// The port clients reach listener port `local` on (`local` itself when unmapped).
    pub fn client_port(&self, local: u16) -> u16 {
        self.0
            .iter()
            .find(|&&(l, _)| l == local)
            .map_or(local, |&(_, c)| c)
    }
}

impl Settings {
    /// Settings for tests: every listener on `127.0.0.1:0`, one plain and one TLS+h2 proxy
    /// listener, and short timeouts.
    pub fn loopback() -> Settings {
        let l = |s: &str| Listen::parse_list(s).unwrap_or_default();
        Settings {
            proxy_listen: l("127.0.0.1:0, 127.0.0.1:0 ssl http2"),
            admin_listen: l("127.0.0.1:0"),
            status_listen: l("127.0.0.1:0"),
            ..Settings::default()
        }
    }

    /// Whether `ip` is in `trusted_ips`.
    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted_ips.iter().any(|c| c.contains(ip))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn port_maps_are_kongs() {
        let m = super::PortMaps::parse("80:8000, 443:8443,").unwrap();
        assert_eq!(m.client_port(8000), 80);
        assert_eq!(m.client_port(8443), 443);
        assert_eq!(m.client_port(9000), 9000);
        assert_eq!(
            super::PortMaps::parse("").unwrap(),
            super::PortMaps::default()
        );
        for bad in ["80", "80:", "0:8000", "80:70000", "x:8000", "80:8000:1"] {
            assert_eq!(
                super::PortMaps::parse(bad),
                Err(format!("invalid port mapping (`port_maps`): {bad}")),
                "{bad}"
            );
        }
    }

    use super::*;

    #[test]
    fn sizes_as_nginx_writes_them() {
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("1024"), Ok(1024));
        assert_eq!(parse_size("8k"), Ok(8 << 10));
        assert_eq!(parse_size("8M"), Ok(8 << 20));
        assert_eq!(parse_size(" 2g "), Ok(2 << 30));
        for bad in [
            "",
            "m",
            "-1",
            "1.5m",
            "8 mb",
            "10t",
            "99999999999999999999g",
        ] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn parses_kong_listen_syntax() {
        let l = Listen::parse_list("0.0.0.0:8000, 0.0.0.0:8443 ssl http2 reuseport backlog=16384")
            .unwrap();
        assert_eq!(l.len(), 2);
        assert_eq!(l[0], Listen::plain("0.0.0.0:8000".parse().unwrap()));
        assert!(l[1].ssl && l[1].http2 && l[1].reuseport);
        assert_eq!(l[1].backlog, 16384);
        assert_eq!(
            l[1].to_string(),
            "0.0.0.0:8443 ssl http2 reuseport backlog=16384"
        );
        let pp = Listen::parse_list("0.0.0.0:8000 proxy_protocol deferred bind").unwrap();
        assert!(pp[0].proxy_protocol && !pp[0].ssl);
        assert_eq!(pp[0].to_string(), "0.0.0.0:8000 proxy_protocol");
        let v6 = Listen::parse_list("[::1]:8001").unwrap();
        assert_eq!(v6[0].addr, "[::1]:8001".parse().unwrap());
        assert_eq!(
            Listen::parse_list("*:80").unwrap()[0].addr,
            "0.0.0.0:80".parse().unwrap()
        );
        assert_eq!(Listen::parse_list("off").unwrap(), vec![]);
        assert_eq!(Listen::parse_list("off, 1.2.3.4:5"), Err(ListenError::Off));
        assert!(matches!(
            Listen::parse_list("1.2.3.4"),
            Err(ListenError::Address(_))
        ));
        assert!(matches!(
            Listen::parse_list("1.2.3.4:80 sll"),
            Err(ListenError::Flag(..))
        ));
        assert!(matches!(
            Listen::parse_list("1.2.3.4:80 backlog=x"),
            Err(ListenError::Backlog(_))
        ));
    }

    #[test]
    fn defaults_are_kongs() {
        let s = Settings::default();
        assert_eq!(s.proxy_listen.len(), 2);
        assert_eq!(s.proxy_listen[0].addr.port(), 8000);
        assert!(s.proxy_listen[1].ssl && s.proxy_listen[1].http2);
        assert_eq!(s.admin_listen[0].addr, "127.0.0.1:8001".parse().unwrap());
        assert_eq!(s.status_listen[0].addr.port(), 8100);
        assert_eq!(s.real_ip_header, "X-Real-IP");
    }

    #[test]
    fn headers_in_kongs_syntax() {
        let flags = |h: &Headers| h.enabled().map(|(_, on)| on);
        let d = Headers::default();
        assert_eq!(d, Headers::parse(Headers::KONG_DEFAULT).unwrap());
        assert!(d.server && d.via && d.request_id && d.proxy_latency && d.admin_latency);
        assert!(!d.upstream_status);
        assert_eq!(
            d.tokens.as_ref(),
            ["server_tokens", "latency_tokens", "X-Kong-Request-Id"].map(Box::from)
        );
        let off = Headers::parse("off").unwrap();
        assert_eq!(flags(&off), [false; 10]);
        assert_eq!(off.tokens.as_ref(), [Box::from("off")]);
        assert_eq!(flags(&Headers::parse("").unwrap()), [false; 10]);
        // A leading `off` wins; elsewhere it is ignored.
        assert_eq!(flags(&Headers::parse("off, via").unwrap()), [false; 10]);
        let h = Headers::parse("VIA, off,x-kong-upstream-status").unwrap();
        assert!(h.via && h.upstream_status && !h.server && !h.request_id);
        let h = Headers::parse("latency_tokens").unwrap();
        assert!(h.proxy_latency && h.upstream_latency && h.response_latency && h.admin_latency);
        assert!(!h.via && !h.server && !h.request_id);
        assert!(h.enabled().contains(&("latency_tokens", true)));
        assert!(h.enabled().contains(&("server_tokens", false)));
        let e = Headers::parse("server_tokens, X-Kong-Nope").unwrap_err();
        assert_eq!(e.to_string(), "headers: invalid entry 'X-Kong-Nope'");
        // Unknown tokens are refused even after `off`, as Kong's loader does; `off` is
        // matched exactly, header names in any case.
        assert!(Headers::parse("off, bogus").is_err());
        assert_eq!(
            Headers::parse("OFF").unwrap_err().to_string(),
            "headers: invalid entry 'OFF'"
        );

        assert!(UpstreamHeaders::default().request_id);
        assert!(
            UpstreamHeaders::parse("x-kong-request-id")
                .unwrap()
                .request_id
        );
        assert!(!UpstreamHeaders::parse("off").unwrap().request_id);
        assert!(
            !UpstreamHeaders::parse("off, X-Kong-Request-Id")
                .unwrap()
                .request_id
        );
        assert_eq!(
            UpstreamHeaders::parse("via").unwrap_err().to_string(),
            "headers_upstream: invalid entry 'via'"
        );
        assert!(UpstreamHeaders::parse("Off").is_err());
    }

    #[test]
    fn tls_versions_from_kongs_cipher_suites() {
        let v = |tls12, tls13| TlsVersions { tls12, tls13 };
        let ok = |suite: &str, protocols: &str| TlsVersions::from_kong(suite, protocols).unwrap();
        assert_eq!(ok("modern", "TLSv1.2"), (v(false, true), vec![]));
        assert_eq!(ok("intermediate", ""), (v(true, true), vec![]));
        assert_eq!(ok("fips", ""), (v(true, false), vec![]));
        // Kong's `old` reaches down to TLS 1.0; what cannot be spoken is named for a warning.
        assert_eq!(
            ok("old", ""),
            (
                v(true, true),
                vec!["TLSv1".to_string(), "TLSv1.1".to_string()]
            )
        );
        // `ssl_protocols` counts under `custom` only (Kong's default list here).
        assert_eq!(
            ok("custom", "TLSv1.1 TLSv1.2 TLSv1.3"),
            (v(true, true), vec!["TLSv1.1".to_string()])
        );
        assert_eq!(ok("custom", "TLSv1.3"), (v(false, true), vec![]));
        assert_eq!(ok("custom", " TLSv1.2 "), (v(true, false), vec![]));
        for (suite, protocols, error) in [
            ("strong", "", "invalid ssl_cipher_suite 'strong'"),
            (
                "custom",
                "TLSv1 TLSv1.1",
                "names neither TLSv1.2 nor TLSv1.3",
            ),
            ("custom", "", "names neither TLSv1.2 nor TLSv1.3"),
            (
                "custom",
                "TLSv1.2,TLSv1.3",
                "unknown protocol 'TLSv1.2,TLSv1.3'",
            ),
        ] {
            let e = TlsVersions::from_kong(suite, protocols).unwrap_err();
            assert!(e.contains(error), "{suite} {protocols}: {e}");
        }
    }

    #[test]
    fn cidr_contains() {
        let c = Cidr::parse("10.1.0.0/16").unwrap();
        assert!(c.contains("10.1.2.3".parse().unwrap()));
        assert!(!c.contains("10.2.0.1".parse().unwrap()));
        assert!(c.contains("::ffff:10.1.9.9".parse().unwrap()));
        assert!(
            Cidr::parse("0.0.0.0/0")
                .unwrap()
                .contains("8.8.8.8".parse().unwrap())
        );
        assert!(Cidr::parse("::1").unwrap().contains("::1".parse().unwrap()));
        assert!(!Cidr::parse("::1").unwrap().contains("::2".parse().unwrap()));
        assert!(Cidr::parse("1.2.3.4/33").is_err());
        assert!(Cidr::parse("nope").is_err());
        assert_eq!(
            Cidr::parse_list("0.0.0.0/0, unix:,::/0").unwrap(),
            [
                Cidr::parse("0.0.0.0/0").unwrap(),
                Cidr::parse("::/0").unwrap()
            ]
        );
    }
}
