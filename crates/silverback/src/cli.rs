//! The command line: subcommands, and data-plane settings under Kong's names.
//!
//! Every flag can also be given as a `SILVERBACK_*` environment variable. Aliases let a Kong
//! or KIC user's environment carry over:
//!
//! - for data-plane settings that Kong has, the `KONG_*` variable of the same name
//!   (`KONG_PROXY_LISTEN` for `--proxy-listen`);
//! - for controller flags that KIC has (under the same name), KIC's `CONTROLLER_*` variable
//!   (`CONTROLLER_KONG_ADMIN_SVC` for `--kong-admin-svc`), as KIC binds every flag to
//!   `CONTROLLER_<FLAG_IN_UPPER_SNAKE_CASE>` and the Kong Helm chart configures KIC that way.
//!
//! Precedence: a command-line flag, then the `SILVERBACK_*` variable, then the `KONG_*` alias,
//! then the `CONTROLLER_*` alias (only `--log-level` has both), then the
//! default. Flags of our own (`--sync-debounce`, `--leader-election`...) have no alias.

use std::path::PathBuf;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use silverback_config::RouterFlavor;

/// Silverback: Kong for Kubernetes, in Rust.
#[derive(Debug, Parser)]
#[command(name = "silverback", version, about, propagate_version = true)]
pub struct Cli {
    /// Log filter (`info`, `debug`, `silverback_proxy=trace`, ...). Kong's `log_level` names
    /// (`notice`, `warn`, `crit`...) are accepted too.
    #[arg(
        long,
        global = true,
        env = "SILVERBACK_LOG_LEVEL",
        default_value = "info"
    )]
    pub log_level: String,
    /// Log format.
    #[arg(long, global = true, env = "SILVERBACK_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Controller and data plane in one process.
    Run(Box<RunArgs>),
    /// The data plane alone, optionally loading a declarative file at start.
    Proxy(Box<ProxyArgs>),
    /// The control plane alone: watches Kubernetes and pushes to data planes.
    Controller(Box<ControllerArgs>),
    /// Kubernetes manifests in, Kong declarative configuration out.
    Translate(TranslateArgs),
    /// Checks a declarative configuration file; prints every error; exits 1 on any error.
    Validate(ValidateArgs),
    /// Prints the version.
    Version,
}

/// Data-plane settings, under Kong's names.
#[derive(Debug, Clone, Args)]
pub struct DataPlaneArgs {
    /// Proxy listeners, Kong's syntax: `addr:port [ssl] [http2] [reuseport] [backlog=N]`, comma-separated.
    #[arg(
        long,
        env = "SILVERBACK_PROXY_LISTEN",
        default_value = "0.0.0.0:8000 reuseport backlog=16384, 0.0.0.0:8443 http2 ssl reuseport backlog=16384"
    )]
    pub proxy_listen: String,
    /// Admin API listeners (loopback by default: the admin API can reconfigure the gateway).
    #[arg(
        long,
        env = "SILVERBACK_ADMIN_LISTEN",
        default_value = "127.0.0.1:8001 reuseport backlog=16384"
    )]
    pub admin_listen: String,
    /// Status API listeners (`/status`, `/status/ready`, `/metrics`); `off` disables.
    #[arg(long, env = "SILVERBACK_STATUS_LISTEN", default_value = "0.0.0.0:8100")]
    pub status_listen: String,
    /// Router flavor: `traditional_compatible`, `expressions` or `traditional`.
    #[arg(
        long,
        env = "SILVERBACK_ROUTER_FLAVOR",
        default_value = "traditional_compatible"
    )]
    pub router_flavor: RouterFlavor,
    /// Addresses (IPs or CIDRs, comma-separated) whose forwarding headers are trusted;
    /// `unix:` and `0.0.0.0/0, ::/0` as in Kong.
    #[arg(long, env = "SILVERBACK_TRUSTED_IPS", default_value = "")]
    pub trusted_ips: String,
    /// Header carrying the client address, or `proxy_protocol`.
    #[arg(long, env = "SILVERBACK_REAL_IP_HEADER", default_value = "X-Real-IP")]
    pub real_ip_header: String,
    /// Take the last untrusted address of `real_ip_header` rather than the last one.
    #[arg(long, env = "SILVERBACK_REAL_IP_RECURSIVE", default_value = "off", value_parser = parse_on_off, action = clap::ArgAction::Set)]
    pub real_ip_recursive: bool,
    /// Ports clients reach the listeners on, as Kong's `port_maps`: `client_port:listener_port`
    /// pairs, comma-separated (`80:8000, 443:8443`, as Kong's Kubernetes chart sets them);
    /// used for routes with `host:port` and `X-Forwarded-Port`.
    #[arg(long, env = "SILVERBACK_PORT_MAPS", default_value = "")]
    pub port_maps: String,
    /// Headers added to answers (Kong's `headers`): `server_tokens` (Server, Via),
    /// `latency_tokens`, single names such as `X-Kong-Upstream-Status`, or `off`.
    #[arg(
        long,
        env = "SILVERBACK_HEADERS",
        default_value = silverback_proxy::Headers::KONG_DEFAULT
    )]
    pub headers: String,
    /// Headers added to upstream requests besides the forwarding headers (Kong's
    /// `headers_upstream`): `X-Kong-Request-Id` or `off`.
    #[arg(
        long,
        env = "SILVERBACK_HEADERS_UPSTREAM",
        default_value = silverback_proxy::UpstreamHeaders::KONG_DEFAULT
    )]
    pub headers_upstream: String,
    /// Whether small HTTP/1.1 requests to upstreams and answers to clients are written
    /// together at the end of each batch of events the worker handles (with one worker),
    /// as nginx's event loop writes them: a peer on the same machine is then woken once per
    /// batch, not once per message. `on`, `off`, or `upstream` (requests only).
    #[arg(long, env = "SILVERBACK_BATCH_WRITES", default_value = "on")]
    pub batch_writes: String,
    /// Body format of the errors nginx raises in Kong (bad requests, upstream failures)
    /// for a request with neither `Accept` nor `Content-Type` (Kong's `error_default_type`):
    /// `text/plain`, `application/json`, `application/xml` or `text/html`.
    #[arg(
        long,
        env = "SILVERBACK_ERROR_DEFAULT_TYPE",
        default_value = "text/plain"
    )]
    pub error_default_type: String,
    /// Proxy worker threads (Kong's `nginx_worker_processes`): a number, or `auto` for one per core.
    #[arg(
        long,
        env = "SILVERBACK_NGINX_WORKER_PROCESSES",
        default_value = "auto"
    )]
    pub nginx_worker_processes: String,
    /// Idle upstream connections kept per address, TLS server name included (Kong's
    /// `upstream_keepalive_pool_size`). `0` keeps none: every request opens a connection.
    #[arg(
        long,
        env = "SILVERBACK_UPSTREAM_KEEPALIVE_POOL_SIZE",
        default_value_t = 512
    )]
    pub upstream_keepalive_pool_size: usize,
    /// Requests after which an upstream connection is closed (Kong's
    /// `upstream_keepalive_max_requests`). `0`: no limit.
    #[arg(
        long,
        env = "SILVERBACK_UPSTREAM_KEEPALIVE_MAX_REQUESTS",
        default_value_t = 10_000
    )]
    pub upstream_keepalive_max_requests: u32,
    /// Seconds an idle upstream connection is kept (Kong's
    /// `upstream_keepalive_idle_timeout`). `0`: no limit.
    #[arg(
        long,
        env = "SILVERBACK_UPSTREAM_KEEPALIVE_IDLE_TIMEOUT",
        default_value_t = 60
    )]
    pub upstream_keepalive_idle_timeout: u64,
    /// The TLS versions of the `ssl` listeners, as Kong's `ssl_cipher_suite` names them:
    /// `modern` (TLS 1.3), `intermediate` (TLS 1.2 and 1.3), `fips` (TLS 1.2), `old`
    /// (TLS 1.2 and 1.3 here: nothing older is spoken), or `custom` (`--ssl-protocols`).
    #[arg(
        long,
        env = "SILVERBACK_SSL_CIPHER_SUITE",
        default_value = "intermediate"
    )]
    pub ssl_cipher_suite: String,
    /// The TLS versions under `--ssl-cipher-suite custom` (Kong's `ssl_protocols`, nginx's
    /// names, space-separated); `TLSv1` and `TLSv1.1` are left out with a warning.
    #[arg(
        long,
        env = "SILVERBACK_SSL_PROTOCOLS",
        default_value = "TLSv1.1 TLSv1.2 TLSv1.3"
    )]
    pub ssl_protocols: String,
    /// The most connections per worker (Kong's `nginx_events_worker_connections`, nginx's
    /// `worker_connections`): `auto` is the open-file limit held between 1024 and 16384.
    /// Past it (times the workers), idle connections are closed to make room, and a
    /// connection that finds none is closed.
    #[arg(
        long,
        env = "SILVERBACK_NGINX_EVENTS_WORKER_CONNECTIONS",
        default_value = "auto"
    )]
    pub nginx_events_worker_connections: String,
    /// The proxy listeners' access log (Kong's `proxy_access_log`): a file, `/dev/stdout`,
    /// `/dev/stderr`, or `off`; in Kong's `kong_log_format` unless a format follows the
    /// file (`combined`). A relative file is under `--prefix`. (Kong's default is
    /// `logs/access.log`; this is the one its Kubernetes charts set.)
    #[arg(
        long,
        env = "SILVERBACK_PROXY_ACCESS_LOG",
        default_value = "/dev/stdout"
    )]
    pub proxy_access_log: String,
    /// The admin listeners' access log (Kong's `admin_access_log`), in nginx's `combined`
    /// format unless a format follows the file. (Kong's default is `logs/admin_access.log`;
    /// this is the one its Kubernetes charts set.)
    #[arg(
        long,
        env = "SILVERBACK_ADMIN_ACCESS_LOG",
        default_value = "/dev/stdout"
    )]
    pub admin_access_log: String,
    /// The status listeners' access log (Kong's `status_access_log`), as
    /// `--admin-access-log`.
    #[arg(long, env = "SILVERBACK_STATUS_ACCESS_LOG", default_value = "off")]
    pub status_access_log: String,
    /// A log format of one's own, for the access logs to name after their file (Kong's
    /// injected `nginx_http_log_format`, nginx's `log_format` arguments): `NAME
    /// [escape=default|json|none] 'STRING'`, e.g. `json escape=json '{"status":$status}'`.
    #[arg(long, env = "SILVERBACK_NGINX_HTTP_LOG_FORMAT")]
    pub nginx_http_log_format: Option<String>,
    /// The open-file limit (Kong's `nginx_main_worker_rlimit_nofile`, nginx's
    /// `worker_rlimit_nofile`): each connection takes a file descriptor. `auto` raises the
    /// soft limit to the hard one; a number sets both to it.
    #[arg(
        long,
        env = "SILVERBACK_NGINX_MAIN_WORKER_RLIMIT_NOFILE",
        default_value = "auto"
    )]
    pub nginx_main_worker_rlimit_nofile: String,
    /// Largest request body accepted on the proxy and status listeners (Kong's
    /// `nginx_http_client_max_body_size`): bytes, or with `k`/`m`/`g`; larger bodies get
    /// 413. `0`, Kong's default, means no limit.
    #[arg(
        long,
        env = "SILVERBACK_NGINX_HTTP_CLIENT_MAX_BODY_SIZE",
        default_value = "0"
    )]
    pub nginx_http_client_max_body_size: String,
    /// Largest request body the admin API accepts (Kong's `nginx_admin_client_max_body_size`):
    /// bytes, or with `k`/`m`/`g`; larger bodies get 413. `0` means no limit.
    #[arg(
        long,
        env = "SILVERBACK_NGINX_ADMIN_CLIENT_MAX_BODY_SIZE",
        default_value = "10m"
    )]
    pub nginx_admin_client_max_body_size: String,
    /// The longest head (status line and headers) of an upstream's HTTP/1.1 answer (Kong's
    /// `nginx_proxy_proxy_buffer_size`, nginx's `proxy_buffer_size`): bytes, or with
    /// `k`/`m`/`g`. A longer head gets 502. `4k`, nginx's default (Kong sets none).
    #[arg(
        long,
        env = "SILVERBACK_NGINX_PROXY_PROXY_BUFFER_SIZE",
        default_value = "4k"
    )]
    pub nginx_proxy_proxy_buffer_size: String,
    /// The record types names are looked up as, in order (Kong's `dns_order`): `LAST`,
    /// `SRV`, `A`, `AAAA`, `CNAME`. Kong's default asks no AAAA, so names resolve to IPv4
    /// addresses only; add `AAAA` for IPv6 (`LAST,SRV,A,AAAA,CNAME`, or `AAAA` first to
    /// prefer it).
    #[arg(long, env = "SILVERBACK_DNS_ORDER", default_value = "LAST,SRV,A,CNAME")]
    pub dns_order: String,
    /// The requests one client connection takes (Kong's `nginx_http_keepalive_requests`,
    /// nginx's `keepalive_requests`; 10000 since Kong 3.6): the last one's answer closes
    /// the connection, an HTTP/2 connection gets a GOAWAY. `0` closes after every request.
    #[arg(
        long,
        env = "SILVERBACK_NGINX_HTTP_KEEPALIVE_REQUESTS",
        default_value_t = 10_000
    )]
    pub nginx_http_keepalive_requests: u64,
    /// First buffer for a request head (Kong's `nginx_http_client_header_buffer_size`).
    #[arg(
        long,
        env = "SILVERBACK_NGINX_HTTP_CLIENT_HEADER_BUFFER_SIZE",
        default_value = "1k"
    )]
    pub nginx_http_client_header_buffer_size: String,
    /// Large buffers for a request head, number and size (Kong's
    /// `nginx_http_large_client_header_buffers`): a request line longer than one gets 414, a
    /// header line longer than one, or a head needing more of them, 400.
    #[arg(
        long,
        env = "SILVERBACK_NGINX_HTTP_LARGE_CLIENT_HEADER_BUFFERS",
        default_value = "4 8k"
    )]
    pub nginx_http_large_client_header_buffers: String,
    /// The first head buffer on the proxy listeners only (Kong's
    /// `nginx_proxy_client_header_buffer_size`; default: the `nginx_http_` one).
    #[arg(long, env = "SILVERBACK_NGINX_PROXY_CLIENT_HEADER_BUFFER_SIZE")]
    pub nginx_proxy_client_header_buffer_size: Option<String>,
    /// The large head buffers on the proxy listeners only (Kong's
    /// `nginx_proxy_large_client_header_buffers`; default: the `nginx_http_` ones).
    #[arg(long, env = "SILVERBACK_NGINX_PROXY_LARGE_CLIENT_HEADER_BUFFERS")]
    pub nginx_proxy_large_client_header_buffers: Option<String>,
    /// Serve plain HTTP/1.1 requests without a body on the gateway's own connection loop
    /// (`on`) or leave every request to hyper's server (`off`); the answers are the same.
    #[arg(long, env = "SILVERBACK_FAST_H1", default_value = "on", value_parser = parse_on_off, action = clap::ArgAction::Set)]
    pub fast_h1: bool,
    /// Require this token in the `Kong-Admin-Token` header of every admin API request
    /// (others get 401); for an admin API reachable beyond loopback, e.g. by a controller
    /// using gateway discovery with `--kong-admin-token`. Prefer `--admin-token-file`.
    #[arg(long, env = "SILVERBACK_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Read the admin token from this file (surrounding whitespace ignored).
    #[arg(
        long,
        env = "SILVERBACK_ADMIN_TOKEN_FILE",
        conflicts_with = "admin_token"
    )]
    pub admin_token_file: Option<PathBuf>,
    /// Default certificates of TLS listeners, served when no SNI of the configuration matches
    /// (Kong's `ssl_cert`): comma-separated, each a file path, PEM text or base64 of PEM text;
    /// one RSA and one ECDSA certificate are useful. Unset: an RSA and an ECDSA certificate
    /// are generated at start (or read from `--prefix`), the RSA one in the background.
    /// (A value may start with `-`: PEM text does.)
    #[arg(
        long,
        env = "SILVERBACK_SSL_CERT",
        default_value = "",
        allow_hyphen_values = true
    )]
    pub ssl_cert: String,
    /// The private keys of `--ssl-cert`, in the same order (Kong's `ssl_cert_key`). Prefer a
    /// file or the environment to key text on the command line, which `ps` shows.
    #[arg(
        long,
        env = "SILVERBACK_SSL_CERT_KEY",
        default_value = "",
        hide_env_values = true,
        allow_hyphen_values = true
    )]
    pub ssl_cert_key: String,
    /// The certificates of `ssl` admin listeners (Kong's `admin_ssl_cert`), in the form of
    /// `--ssl-cert`. Unset: a generated pair of their own (kept in `--prefix` when set).
    /// Admin listeners serve no certificate of the configuration.
    #[arg(
        long,
        env = "SILVERBACK_ADMIN_SSL_CERT",
        default_value = "",
        allow_hyphen_values = true
    )]
    pub admin_ssl_cert: String,
    /// The private keys of `--admin-ssl-cert` (Kong's `admin_ssl_cert_key`).
    #[arg(
        long,
        env = "SILVERBACK_ADMIN_SSL_CERT_KEY",
        default_value = "",
        hide_env_values = true,
        allow_hyphen_values = true
    )]
    pub admin_ssl_cert_key: String,
    /// The certificates of `ssl` status listeners (Kong's `status_ssl_cert`), in the form of
    /// `--ssl-cert`. Unset: a generated pair of their own (kept in `--prefix` when set).
    #[arg(
        long,
        env = "SILVERBACK_STATUS_SSL_CERT",
        default_value = "",
        allow_hyphen_values = true
    )]
    pub status_ssl_cert: String,
    /// The private keys of `--status-ssl-cert` (Kong's `status_ssl_cert_key`).
    #[arg(
        long,
        env = "SILVERBACK_STATUS_SSL_CERT_KEY",
        default_value = "",
        hide_env_values = true,
        allow_hyphen_values = true
    )]
    pub status_ssl_cert_key: String,
    /// A directory that keeps the generated default certificates (Kong's `prefix`): under
    /// `ssl/`, one RSA and one ECDSA pair per listener kind with an `ssl` listener and no
    /// certificate setting, under Kong's names (`kong-default.crt`, `kong-default-ecdsa.key`,
    /// `admin-kong-default.crt`, `status-...`; keys mode 0600). A start writes the pairs that
    /// are missing, each whole or not at all, and reads the others, under a lock on
    /// `ssl/.lock` that makes starts sharing the prefix share its pairs; a pair that cannot be
    /// read stops it. A relative path is taken from the working directory. Unset (unlike
    /// Kong, whose default is `/usr/local/kong`): nothing is written to disk, and every start
    /// generates new ones.
    #[arg(long, env = "SILVERBACK_PREFIX")]
    pub prefix: Option<PathBuf>,
}

/// `silverback run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// A directory (or file) of Kubernetes YAML manifests to serve, watched for changes; no
    /// cluster needed.
    #[arg(long, env = "SILVERBACK_MANIFESTS")]
    pub manifests: Option<PathBuf>,
    /// A Kong declarative configuration file to serve (data plane only, no controller).
    #[arg(long, env = "SILVERBACK_CONFIG", conflicts_with = "manifests")]
    pub config: Option<PathBuf>,
    /// Data-plane settings.
    #[command(flatten)]
    pub data_plane: DataPlaneArgs,
    /// Controller settings (with neither `--manifests` nor `--config`, the controller watches
    /// the cluster given by `--kubeconfig` or the in-cluster configuration).
    #[command(flatten)]
    pub controller: silverback_controller::ControllerOptions,
}

/// `silverback proxy`.
#[derive(Debug, Args)]
pub struct ProxyArgs {
    /// A Kong declarative configuration file to load at start (Kong's `declarative_config`).
    #[arg(
        long,
        env = "SILVERBACK_DECLARATIVE_CONFIG",
        alias = "declarative-config"
    )]
    pub config: Option<PathBuf>,
    /// Data-plane settings.
    #[command(flatten)]
    pub data_plane: DataPlaneArgs,
}

/// `silverback controller`.
#[derive(Debug, Args)]
pub struct ControllerArgs {
    /// Router flavor of the data planes the controller configures.
    #[arg(
        long,
        env = "SILVERBACK_ROUTER_FLAVOR",
        default_value = "traditional_compatible"
    )]
    pub router_flavor: RouterFlavor,
    /// Controller settings.
    #[command(flatten)]
    pub controller: silverback_controller::ControllerOptions,
}

/// `silverback translate`.
#[derive(Debug, Args)]
pub struct TranslateArgs {
    /// A manifest file or a directory of them.
    #[arg(short = 'f', long = "filename", env = "SILVERBACK_TRANSLATE_FILENAME")]
    pub file: PathBuf,
    /// Router flavor of the output.
    #[arg(
        long,
        env = "SILVERBACK_ROUTER_FLAVOR",
        default_value = "traditional_compatible"
    )]
    pub router_flavor: RouterFlavor,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = OutputFormat::Yaml)]
    pub output: OutputFormat,
}

/// `silverback validate`.
#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// The declarative configuration file (JSON or YAML); `-` reads standard input.
    pub file: PathBuf,
    /// Router flavor the file is meant for (decides whether `expression` routes are valid).
    #[arg(
        long,
        env = "SILVERBACK_ROUTER_FLAVOR",
        default_value = "traditional_compatible"
    )]
    pub router_flavor: RouterFlavor,
    /// Output format of the errors: readable lines, or Kong's `flattened_errors` body.
    #[arg(short = 'o', long, value_enum, default_value_t = ErrorFormat::Text)]
    pub output: ErrorFormat,
}

/// Configuration output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// YAML.
    Yaml,
    /// JSON.
    Json,
}

/// Error output format of `validate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ErrorFormat {
    /// One line per error.
    Text,
    /// Kong's 400 body with `flattened_errors`.
    Json,
}

fn parse_on_off(s: &str) -> Result<bool, String> {
    match s {
        "on" | "true" | "1" | "yes" => Ok(true),
        "off" | "false" | "0" | "no" => Ok(false),
        other => Err(format!("expected on or off, got '{other}'")),
    }
}

/// The `KONG_*` alias of a `SILVERBACK_*` variable, for settings Kong has.
fn kong_alias(var: &str) -> Option<String> {
    const KONG_SETTINGS: &[&str] = &[
        "PROXY_LISTEN",
        "ADMIN_LISTEN",
        "STATUS_LISTEN",
        "ROUTER_FLAVOR",
        "TRUSTED_IPS",
        "REAL_IP_HEADER",
        "REAL_IP_RECURSIVE",
        "PORT_MAPS",
        "DECLARATIVE_CONFIG",
        "LOG_LEVEL",
        "NGINX_WORKER_PROCESSES",
        "NGINX_MAIN_WORKER_RLIMIT_NOFILE",
        "NGINX_EVENTS_WORKER_CONNECTIONS",
        "PROXY_ACCESS_LOG",
        "ADMIN_ACCESS_LOG",
        "STATUS_ACCESS_LOG",
        "NGINX_HTTP_LOG_FORMAT",
        "UPSTREAM_KEEPALIVE_POOL_SIZE",
        "UPSTREAM_KEEPALIVE_MAX_REQUESTS",
        "UPSTREAM_KEEPALIVE_IDLE_TIMEOUT",
        "NGINX_HTTP_CLIENT_MAX_BODY_SIZE",
        "NGINX_ADMIN_CLIENT_MAX_BODY_SIZE",
        "NGINX_HTTP_CLIENT_HEADER_BUFFER_SIZE",
        "NGINX_HTTP_LARGE_CLIENT_HEADER_BUFFERS",
        "NGINX_PROXY_CLIENT_HEADER_BUFFER_SIZE",
        "NGINX_PROXY_LARGE_CLIENT_HEADER_BUFFERS",
        "NGINX_PROXY_PROXY_BUFFER_SIZE",
        "HEADERS",
        "HEADERS_UPSTREAM",
        "ERROR_DEFAULT_TYPE",
        "SSL_CERT",
        "SSL_CIPHER_SUITE",
        "SSL_PROTOCOLS",
        "SSL_CERT_KEY",
        "ADMIN_SSL_CERT",
        "ADMIN_SSL_CERT_KEY",
        "STATUS_SSL_CERT",
        "STATUS_SSL_CERT_KEY",
        "PREFIX",
        "DNS_ORDER",
    ];
    alias_in(var, KONG_SETTINGS, "KONG_")
}

/// `var` (`SILVERBACK_<NAME>`) under `prefix` when `<NAME>` is one of `names`.
fn alias_in(var: &str, names: &[&str], prefix: &str) -> Option<String> {
    let rest = var.strip_prefix("SILVERBACK_")?;
    names.contains(&rest).then(|| format!("{prefix}{rest}"))
}

/// The `CONTROLLER_*` alias of a `SILVERBACK_*` variable, for controller flags KIC has under
/// the same name (KIC's `envKeyPrefix = "CONTROLLER_"`).
fn controller_alias(var: &str) -> Option<String> {
    const KIC_FLAGS: &[&str] = &[
        "LOG_LEVEL",
        "LOG_FORMAT",
        "INGRESS_CLASS",
        "PROXY_SYNC_SECONDS",
        "USE_LAST_VALID_CONFIG_FOR_FALLBACK",
        "ENABLE_DRAIN_SUPPORT",
        "CLUSTER_DOMAIN",
        "HEALTH_PROBE_BIND_ADDRESS",
        "METRICS_BIND_ADDRESS",
        "DUMP_CONFIG",
        "DUMP_SENSITIVE_CONFIG",
        "KUBECONFIG",
        "WATCH_NAMESPACE",
        "SECRET_LABEL_SELECTOR",
        "PUBLISH_SERVICE",
        "PUBLISH_STATUS_ADDRESS",
        "UPDATE_STATUS",
        "EMIT_KUBERNETES_EVENTS",
        "ELECTION_ID",
        "ELECTION_NAMESPACE",
        "KONG_ADMIN_URL",
        "KONG_ADMIN_SVC",
        "KONG_ADMIN_SVC_PORT_NAMES",
        "KONG_ADMIN_TLS_SKIP_VERIFY",
        "KONG_ADMIN_TLS_SERVER_NAME",
        "KONG_ADMIN_CA_CERT",
        "KONG_ADMIN_CA_CERT_FILE",
        "KONG_ADMIN_TLS_CLIENT_CERT",
        "KONG_ADMIN_TLS_CLIENT_CERT_FILE",
        "KONG_ADMIN_TLS_CLIENT_KEY",
        "KONG_ADMIN_TLS_CLIENT_KEY_FILE",
        "KONG_ADMIN_TOKEN",
        "KONG_ADMIN_TOKEN_FILE",
        "KONG_ADMIN_HEADER",
        "PROXY_TIMEOUT_SECONDS",
    ];
    alias_in(var, KIC_FLAGS, "CONTROLLER_")
}

/// Rewrites an argument's environment variable to its alias (`KONG_*`, else `CONTROLLER_*`)
/// when the `SILVERBACK_*` variable is not set and the alias is.
fn alias_env(arg: clap::Arg, lookup: &dyn Fn(&str) -> bool) -> clap::Arg {
    let Some(var) = arg.get_env().and_then(|v| v.to_str()).map(str::to_string) else {
        return arg;
    };
    if lookup(&var) {
        return arg;
    }
    let alias = [kong_alias(&var), controller_alias(&var)]
        .into_iter()
        .flatten()
        .find(|a| lookup(a));
    match alias {
        Some(a) => arg.env(a),
        None => arg,
    }
}

fn with_aliases(cmd: clap::Command, lookup: &dyn Fn(&str) -> bool) -> clap::Command {
    let names: Vec<String> = cmd
        .get_subcommands()
        .map(|s| s.get_name().to_string())
        .collect();
    let mut cmd = cmd.mut_args(|a| alias_env(a, lookup));
    for name in names {
        cmd = cmd.mut_subcommand(name, |sc| with_aliases(sc, lookup));
    }
    cmd
}

impl Cli {
    /// Parses the process's arguments and environment (with the `KONG_*` and `CONTROLLER_*`
    /// aliases).
    pub fn parse_env() -> Cli {
        let lookup = |v: &str| std::env::var_os(v).is_some();
        let matches = with_aliases(Cli::command(), &lookup).get_matches();
        match Cli::from_arg_matches(&matches) {
            Ok(cli) => cli,
            Err(e) => e.exit(),
        }
    }

    #[cfg(test)]
    /// Parses `args`, with `lookup` telling which environment variables are set (for the alias
    /// rewrite; clap itself still reads the process environment).
    pub fn try_parse_with<I, T>(args: I, lookup: &dyn Fn(&str) -> bool) -> Result<Cli, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let matches = with_aliases(Cli::command(), lookup).try_get_matches_from(args)?;
        Cli::from_arg_matches(&matches)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn kong_aliases_cover_kong_settings_only() {
        assert_eq!(
            kong_alias("SILVERBACK_PROXY_LISTEN").as_deref(),
            Some("KONG_PROXY_LISTEN")
        );
        assert_eq!(
            kong_alias("SILVERBACK_SSL_CERT_KEY").as_deref(),
            Some("KONG_SSL_CERT_KEY")
        );
        assert_eq!(
            kong_alias("SILVERBACK_PREFIX").as_deref(),
            Some("KONG_PREFIX")
        );
        assert_eq!(kong_alias("SILVERBACK_MANIFESTS"), None);
        assert_eq!(kong_alias("PROXY_LISTEN"), None);
    }

    #[test]
    fn controller_aliases_cover_kic_flags_only() {
        assert_eq!(
            controller_alias("SILVERBACK_KONG_ADMIN_SVC").as_deref(),
            Some("CONTROLLER_KONG_ADMIN_SVC")
        );
        assert_eq!(
            controller_alias("SILVERBACK_PUBLISH_SERVICE").as_deref(),
            Some("CONTROLLER_PUBLISH_SERVICE")
        );
        // Our own flags, and data-plane settings, have none.
        assert_eq!(controller_alias("SILVERBACK_SYNC_DEBOUNCE"), None);
        assert_eq!(controller_alias("SILVERBACK_LEADER_ELECTION"), None);
        assert_eq!(controller_alias("SILVERBACK_PROXY_LISTEN"), None);
        // Every alias names a controller flag that exists.
        let cmd = Cli::command();
        let controller = cmd
            .find_subcommand("controller")
            .expect("the controller subcommand");
        let vars: Vec<String> = controller
            .get_arguments()
            .chain(cmd.get_arguments())
            .filter_map(|a| a.get_env()?.to_str().map(str::to_string))
            .collect();
        let aliased = vars
            .iter()
            .filter(|v| controller_alias(v).is_some())
            .count();
        assert_eq!(aliased, 35, "{vars:?}");
    }

    /// Runs `test` of this binary in a child process with `env` set (the environment is read
    /// by clap itself, and setting it in this multi-threaded process is unsound).
    fn in_child_with_env(test: &str, env: &[(&str, &str)]) {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", test, "--nocapture", "--test-threads=1"])
            .env("SILVERBACK_CLI_TEST_CHILD", "1")
            .envs(env.iter().copied())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[test]
    fn kics_controller_variables_configure_the_controller() {
        if std::env::var_os("SILVERBACK_CLI_TEST_CHILD").is_none() {
            in_child_with_env(
                "cli::tests::kics_controller_variables_configure_the_controller",
                &[
                    ("CONTROLLER_KONG_ADMIN_URL", "https://a:8444,https://b:8444"),
                    ("CONTROLLER_PUBLISH_SERVICE", "kong/kong-proxy"),
                    ("CONTROLLER_INGRESS_CLASS", "from-controller"),
                    ("CONTROLLER_DUMP_CONFIG", "true"),
                    ("CONTROLLER_PROXY_SYNC_SECONDS", "5"),
                    ("CONTROLLER_ELECTION_ID", "from-controller"),
                    ("SILVERBACK_ELECTION_ID", "from-silverback"),
                    ("CONTROLLER_WATCH_NAMESPACE", "from-controller"),
                    ("CONTROLLER_SYNC_DEBOUNCE", "1h"),
                ],
            );
            return;
        }
        let lookup = |v: &str| std::env::var_os(v).is_some();
        let cli = Cli::try_parse_with(
            ["silverback", "controller", "--watch-namespace", "from-flag"],
            &lookup,
        )
        .unwrap();
        let Command::Controller(c) = cli.command else {
            panic!("controller")
        };
        let o = c.controller;
        assert_eq!(o.admin.kong_admin_url, ["https://a:8444", "https://b:8444"]);
        assert_eq!(
            o.kube.publish_service,
            Some(("kong".to_string(), "kong-proxy".to_string()))
        );
        assert_eq!(o.sync.ingress_class, "from-controller");
        assert!(o.sync.dump_config);
        assert_eq!(o.sync.proxy_sync_seconds, std::time::Duration::from_secs(5));
        // SILVERBACK_* wins over CONTROLLER_*, a flag over both.
        assert_eq!(o.kube.election_id, "from-silverback");
        assert_eq!(o.kube.watch_namespace, ["from-flag"]);
        // Not a KIC flag: no alias.
        assert_eq!(o.sync.sync_debounce, std::time::Duration::from_millis(10));
    }

    #[test]
    fn data_plane_defaults_are_kongs() {
        let cli = Cli::try_parse_with(["silverback", "proxy"], &|_| false).unwrap();
        let Command::Proxy(p) = cli.command else {
            panic!("proxy")
        };
        assert_eq!(
            p.data_plane.proxy_listen,
            "0.0.0.0:8000 reuseport backlog=16384, 0.0.0.0:8443 http2 ssl reuseport backlog=16384"
        );
        assert_eq!(
            p.data_plane.admin_listen,
            "127.0.0.1:8001 reuseport backlog=16384"
        );
        assert_eq!(
            p.data_plane.router_flavor,
            RouterFlavor::TraditionalCompatible
        );
        assert!(!p.data_plane.real_ip_recursive);
        assert_eq!(p.data_plane.nginx_admin_client_max_body_size, "10m");
        assert_eq!(p.data_plane.nginx_proxy_proxy_buffer_size, "4k");
        assert_eq!(p.data_plane.nginx_main_worker_rlimit_nofile, "auto");
        // (Kong 3.6's upstream keep-alive defaults, which the data plane's own match)
        let s = crate::dataplane::settings(&p.data_plane).unwrap();
        let d = silverback_proxy::Settings::default();
        assert_eq!(s.upstream_keepalive_pool_size, 512);
        assert_eq!(
            s.upstream_keepalive_pool_size,
            d.upstream_keepalive_pool_size
        );
        assert_eq!(s.upstream_keepalive_max_requests, 10_000);
        assert_eq!(
            s.upstream_keepalive_max_requests,
            d.upstream_keepalive_max_requests
        );
        assert_eq!(
            s.upstream_keepalive_idle_timeout,
            std::time::Duration::from_secs(60)
        );
        assert_eq!(
            s.upstream_keepalive_idle_timeout,
            d.upstream_keepalive_idle_timeout
        );
    }

    #[test]
    fn flags_use_kong_names() {
        let cli = Cli::try_parse_with(
            [
                "silverback",
                "proxy",
                "--proxy-listen",
                "127.0.0.1:9000",
                "--router-flavor",
                "expressions",
                "--real-ip-recursive",
                "on",
            ],
            &|_| false,
        )
        .unwrap();
        let Command::Proxy(p) = cli.command else {
            panic!("proxy")
        };
        assert_eq!(p.data_plane.proxy_listen, "127.0.0.1:9000");
        assert_eq!(p.data_plane.router_flavor, RouterFlavor::Expressions);
        assert!(p.data_plane.real_ip_recursive);
    }

    #[test]
    fn a_bad_router_flavor_is_a_clear_error() {
        let err = Cli::try_parse_with(["silverback", "proxy", "--router-flavor", "fast"], &|_| {
            false
        })
        .unwrap_err();
        assert!(
            err.to_string().contains("invalid router_flavor 'fast'"),
            "{err}"
        );
    }
}
