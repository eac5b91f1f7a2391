//! Command-line options, with KIC's flag names where KIC has the flag. Every flag can also be
//! given as an environment variable `SILVERBACK_<FLAG_IN_UPPER_SNAKE_CASE>`; the `silverback`
//! binary also reads KIC's `CONTROLLER_<FLAG_IN_UPPER_SNAKE_CASE>` for the flags KIC has
//! (`SILVERBACK_*` wins when both are set; see its `cli` module).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Parses `150ms`, `2s`, `1.5s`, `3m`, `1h`, or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let n: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("invalid duration {s:?} (examples: 50ms, 2s, 1m)"))?;
    if !n.is_finite() || n < 0.0 {
        return Err(format!("invalid duration {s:?}"));
    }
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("invalid duration unit in {s:?} (ms, s, m, h)")),
    };
    Ok(Duration::from_secs_f64(secs))
}

/// Parses `namespace/name`.
pub fn parse_namespaced(s: &str) -> Result<(String, String), String> {
    match s.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
            Ok((ns.to_string(), name.to_string()))
        }
        _ => Err(format!("expected namespace/name, got {s:?}")),
    }
}

/// When to run leader election (KIC's hidden `--force-leader-election`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum LeaderElection {
    /// On with gateway discovery (several replicas may push), off otherwise (sidecar: each
    /// replica configures its own data plane).
    #[default]
    Auto,
    /// Always.
    Enabled,
    /// Never.
    Disabled,
}

/// Options of the sync loop and the controller's own endpoints (every mode).
#[derive(Debug, Clone, clap::Args)]
pub struct SyncArgs {
    /// Ingress class served: Ingresses of this class (or classless ones when the class is
    /// the cluster default) are configured.
    #[arg(long, env = "SILVERBACK_INGRESS_CLASS", default_value = "kong")]
    pub ingress_class: String,

    /// Quiet time after an object change before the configuration is rebuilt and pushed
    /// (changes within it are batched). KIC's fixed 3 s `--proxy-sync-seconds` loop is
    /// replaced by this debounce.
    #[arg(long, env = "SILVERBACK_SYNC_DEBOUNCE", default_value = "10ms", value_parser = parse_duration)]
    pub sync_debounce: Duration,

    /// Longest delay from a change to the push starting, however busy the changes.
    #[arg(long, env = "SILVERBACK_SYNC_MAX_DELAY", default_value = "50ms", value_parser = parse_duration)]
    pub sync_max_delay: Duration,

    /// How often every data plane's configuration hash is checked (a restarted one is
    /// re-pushed at once; failed pushes are retried). KIC's `--proxy-sync-seconds`.
    #[arg(long, env = "SILVERBACK_PROXY_SYNC_SECONDS", default_value = "3", value_parser = parse_duration)]
    pub proxy_sync_seconds: Duration,

    /// Leave objects a data plane rejects (and what depends on them) out and push the rest.
    /// On by default (KIC's FallbackConfiguration gate is opt-in).
    #[arg(long, env = "SILVERBACK_ENABLE_FALLBACK", default_value_t = true, action = clap::ArgAction::Set)]
    pub enable_fallback: bool,

    /// With the fallback, put back the last valid version of each object a data plane
    /// rejects (its version in the last accepted configuration) instead of leaving it out, so
    /// that a bad edit keeps the previous routes served. Objects without one are left out.
    /// KIC's flag of the same name (KIC needs its FallbackConfiguration gate too).
    #[arg(long, env = "SILVERBACK_USE_LAST_VALID_CONFIG_FOR_FALLBACK")]
    pub use_last_valid_config_for_fallback: bool,

    /// Keep terminating endpoints as targets of weight 0.
    #[arg(long, env = "SILVERBACK_ENABLE_DRAIN_SUPPORT")]
    pub enable_drain_support: bool,

    /// Cluster domain appended to Service DNS names of `service-upstream` targets.
    #[arg(long, env = "SILVERBACK_CLUSTER_DOMAIN", default_value = "")]
    pub cluster_domain: String,

    /// Router flavor of the data planes. Not a flag of its own: `silverback run` sets it from
    /// the data plane's `--router-flavor`; `traditional_compatible` otherwise.
    #[arg(skip)]
    pub router_flavor: silverback_config::RouterFlavor,

    /// Address of `/healthz`, `/readyz` and `/metrics` (empty: none).
    #[arg(
        long,
        env = "SILVERBACK_HEALTH_PROBE_BIND_ADDRESS",
        default_value = "0.0.0.0:10254"
    )]
    pub health_probe_bind_address: String,

    /// Address of a separate listener for `/metrics` (KIC's `--metrics-bind-address`). Empty
    /// (the default, unlike KIC's `:10255`): `/metrics` is served on the health address. When
    /// set, `/metrics` is served there only.
    #[arg(long, env = "SILVERBACK_METRICS_BIND_ADDRESS", default_value = "")]
    pub metrics_bind_address: String,

    /// Serve the pushed and rejected configurations at `/debug/config/{successful,failed,fallback}`
    /// on the health address (KIC serves `/debug/config/*` on a port of its own, `:10256`).
    /// Private keys and credentials are redacted, as in KIC, unless
    /// `--dump-sensitive-config` is given.
    #[arg(long, env = "SILVERBACK_DUMP_CONFIG")]
    pub dump_config: bool,

    /// With `--dump-config`, serve the configurations with their private keys and
    /// credentials (keep the health address private then).
    #[arg(long, env = "SILVERBACK_DUMP_SENSITIVE_CONFIG")]
    pub dump_sensitive_config: bool,
}

impl Default for SyncArgs {
    fn default() -> Self {
        SyncArgs {
            ingress_class: "kong".into(),
            sync_debounce: Duration::from_millis(10),
            sync_max_delay: Duration::from_millis(50),
            proxy_sync_seconds: Duration::from_secs(3),
            enable_fallback: true,
            use_last_valid_config_for_fallback: false,
            enable_drain_support: false,
            cluster_domain: String::new(),
            router_flavor: silverback_config::RouterFlavor::TraditionalCompatible,
            health_probe_bind_address: String::new(),
            metrics_bind_address: String::new(),
            dump_config: false,
            dump_sensitive_config: false,
        }
    }
}

impl SyncArgs {
    /// The health address, if any.
    pub fn health_addr(&self) -> anyhow::Result<Option<SocketAddr>> {
        bind_address(
            "--health-probe-bind-address",
            &self.health_probe_bind_address,
        )
    }

    /// The separate metrics address, if any.
    pub fn metrics_addr(&self) -> anyhow::Result<Option<SocketAddr>> {
        bind_address("--metrics-bind-address", &self.metrics_bind_address)
    }
}

/// Parses a listen address: `host:port`, `:port` (every interface), or empty, `0` or `off`
/// for none.
fn bind_address(flag: &str, value: &str) -> anyhow::Result<Option<SocketAddr>> {
    let a = value.trim();
    if a.is_empty() || a == "0" || a == "off" {
        return Ok(None);
    }
    let a = if a.starts_with(':') {
        format!("0.0.0.0{a}")
    } else {
        a.to_string()
    };
    Ok(Some(
        a.parse()
            .map_err(|e| anyhow::anyhow!("{flag} {a:?}: {e}"))?,
    ))
}

/// Kubernetes options (cluster modes).
#[derive(Debug, Clone, clap::Args)]
pub struct KubeArgs {
    /// Kubeconfig file; in-cluster configuration (or `$KUBECONFIG`) when absent.
    #[arg(long, env = "SILVERBACK_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,

    /// Namespaces to watch (comma-separated; all when empty).
    #[arg(long, env = "SILVERBACK_WATCH_NAMESPACE", value_delimiter = ',')]
    pub watch_namespace: Vec<String>,

    /// A label key: only Secrets with this label set to `true` are read (KIC's meaning; not a
    /// label selector). Empty: every Secret.
    #[arg(long, env = "SILVERBACK_SECRET_LABEL_SELECTOR")]
    pub secret_label_selector: Option<String>,

    /// `namespace/name` of the proxy Service whose addresses go into Ingress status.
    #[arg(long, env = "SILVERBACK_PUBLISH_SERVICE", value_parser = parse_namespaced)]
    pub publish_service: Option<(String, String)>,

    /// Addresses (IPs or host names) written into Ingress status, overriding
    /// `--publish-service` (comma-separated).
    #[arg(long, env = "SILVERBACK_PUBLISH_STATUS_ADDRESS", value_delimiter = ',')]
    pub publish_status_address: Vec<String>,

    /// Write Ingress status.
    #[arg(long, env = "SILVERBACK_UPDATE_STATUS", default_value_t = true, action = clap::ArgAction::Set)]
    pub update_status: bool,

    /// Emit Kubernetes Events.
    #[arg(long, env = "SILVERBACK_EMIT_KUBERNETES_EVENTS", default_value_t = true, action = clap::ArgAction::Set)]
    pub emit_kubernetes_events: bool,

    /// Name of the leader election Lease.
    #[arg(
        long,
        env = "SILVERBACK_ELECTION_ID",
        default_value = "5b374a9e.konghq.com"
    )]
    pub election_id: String,

    /// Namespace of the Lease (default: the Pod's namespace, else the kubeconfig's).
    #[arg(long, env = "SILVERBACK_ELECTION_NAMESPACE")]
    pub election_namespace: Option<String>,

    /// Leader election: auto (on with gateway discovery), enabled or disabled.
    #[arg(
        long,
        env = "SILVERBACK_LEADER_ELECTION",
        value_enum,
        default_value = "auto"
    )]
    pub leader_election: LeaderElection,

    /// Lease validity without renewal; a new leader takes over at most this plus the retry
    /// period after the old one died.
    #[arg(long, env = "SILVERBACK_ELECTION_LEASE_DURATION", default_value = "10s", value_parser = parse_duration)]
    pub election_lease_duration: Duration,

    /// How long the leader tries to renew before stepping down.
    #[arg(long, env = "SILVERBACK_ELECTION_RENEW_DEADLINE", default_value = "7s", value_parser = parse_duration)]
    pub election_renew_deadline: Duration,

    /// Retry / renewal period of the election.
    #[arg(long, env = "SILVERBACK_ELECTION_RETRY_PERIOD", default_value = "2s", value_parser = parse_duration)]
    pub election_retry_period: Duration,

    /// The controller's Pod name (Events, election identity); from the downward API.
    #[arg(long, env = "POD_NAME")]
    pub pod_name: Option<String>,

    /// The controller's Pod namespace; from the downward API.
    #[arg(long, env = "POD_NAMESPACE")]
    pub pod_namespace: Option<String>,
}

impl Default for KubeArgs {
    fn default() -> Self {
        KubeArgs {
            kubeconfig: None,
            watch_namespace: vec![],
            secret_label_selector: None,
            publish_service: None,
            publish_status_address: vec![],
            update_status: true,
            emit_kubernetes_events: true,
            election_id: "5b374a9e.konghq.com".into(),
            election_namespace: None,
            leader_election: LeaderElection::Auto,
            election_lease_duration: Duration::from_secs(10),
            election_renew_deadline: Duration::from_secs(7),
            election_retry_period: Duration::from_secs(2),
            pod_name: None,
            pod_namespace: None,
        }
    }
}

/// Data-plane admin API options (`silverback controller`).
#[derive(Debug, Clone, clap::Args)]
pub struct AdminArgs {
    /// Admin API URLs of the data planes to configure (comma-separated).
    #[arg(long, env = "SILVERBACK_KONG_ADMIN_URL", value_delimiter = ',')]
    pub kong_admin_url: Vec<String>,

    /// Gateway discovery: `namespace/name` of the data planes' admin Service; every endpoint
    /// that is not terminating (ready or not: a data plane is not ready until configured) is
    /// configured.
    #[arg(long, env = "SILVERBACK_KONG_ADMIN_SVC", value_parser = parse_namespaced)]
    pub kong_admin_svc: Option<(String, String)>,

    /// Port names of the admin Service to use, in order of preference (names with `tls` use
    /// HTTPS).
    #[arg(
        long,
        env = "SILVERBACK_KONG_ADMIN_SVC_PORT_NAMES",
        value_delimiter = ',',
        default_value = "admin-tls,kong-admin-tls,admin,kong-admin"
    )]
    pub kong_admin_svc_port_names: Vec<String>,

    /// Do not verify the data planes' certificates.
    #[arg(long, env = "SILVERBACK_KONG_ADMIN_TLS_SKIP_VERIFY")]
    pub kong_admin_tls_skip_verify: bool,

    /// Name to verify the data planes' certificates against (`--kong-admin-url` targets;
    /// discovered HTTPS targets are verified against `pod.<service>.<namespace>.svc`, as in
    /// KIC).
    #[arg(long, env = "SILVERBACK_KONG_ADMIN_TLS_SERVER_NAME")]
    pub kong_admin_tls_server_name: Option<String>,

    /// PEM CA certificate(s) to verify the data planes with.
    #[arg(long, env = "SILVERBACK_KONG_ADMIN_CA_CERT")]
    pub kong_admin_ca_cert: Option<String>,

    /// File with the PEM CA certificate(s).
    #[arg(long, env = "SILVERBACK_KONG_ADMIN_CA_CERT_FILE")]
    pub kong_admin_ca_cert_file: Option<PathBuf>,

    /// PEM client certificate for mTLS to the admin API.
    #[arg(long, env = "SILVERBACK_KONG_ADMIN_TLS_CLIENT_CERT")]
    pub kong_admin_tls_client_cert: Option<String>,

    /// File with the PEM client certificate.
    #[arg(long, env = "SILVERBACK_KONG_ADMIN_TLS_CLIENT_CERT_FILE")]
    pub kong_admin_tls_client_cert_file: Option<PathBuf>,

    /// PEM client key.
    #[arg(long, env = "SILVERBACK_KONG_ADMIN_TLS_CLIENT_KEY")]
    pub kong_admin_tls_client_key: Option<String>,

    /// File with the PEM client key.
    #[arg(long, env = "SILVERBACK_KONG_ADMIN_TLS_CLIENT_KEY_FILE")]
    pub kong_admin_tls_client_key_file: Option<PathBuf>,

    /// Admin token (sent as `Kong-Admin-Token`).
    #[arg(long, env = "SILVERBACK_KONG_ADMIN_TOKEN")]
    pub kong_admin_token: Option<String>,

    /// File with the admin token.
    #[arg(long, env = "SILVERBACK_KONG_ADMIN_TOKEN_FILE")]
    pub kong_admin_token_file: Option<PathBuf>,

    /// Extra headers for admin requests, `name:value` (comma-separated).
    #[arg(long, env = "SILVERBACK_KONG_ADMIN_HEADER", value_delimiter = ',')]
    pub kong_admin_header: Vec<String>,

    /// Timeout of one admin API request.
    #[arg(long, env = "SILVERBACK_PROXY_TIMEOUT_SECONDS", default_value = "30", value_parser = parse_duration)]
    pub proxy_timeout_seconds: Duration,
}

impl Default for AdminArgs {
    fn default() -> Self {
        AdminArgs {
            kong_admin_url: vec![],
            kong_admin_svc: None,
            kong_admin_svc_port_names: ["admin-tls", "kong-admin-tls", "admin", "kong-admin"]
                .map(String::from)
                .to_vec(),
            kong_admin_tls_skip_verify: false,
            kong_admin_tls_server_name: None,
            kong_admin_ca_cert: None,
            kong_admin_ca_cert_file: None,
            kong_admin_tls_client_cert: None,
            kong_admin_tls_client_cert_file: None,
            kong_admin_tls_client_key: None,
            kong_admin_tls_client_key_file: None,
            kong_admin_token: None,
            kong_admin_token_file: None,
            kong_admin_header: vec![],
            proxy_timeout_seconds: Duration::from_secs(30),
        }
    }
}

fn value_or_file(
    value: &Option<String>,
    file: &Option<PathBuf>,
    what: &str,
) -> anyhow::Result<Option<String>> {
    match (value, file) {
        (Some(v), _) => Ok(Some(v.clone())),
        (None, Some(f)) => {
            Ok(Some(std::fs::read_to_string(f).map_err(|e| {
                anyhow::anyhow!("{what} file {}: {e}", f.display())
            })?))
        }
        (None, None) => Ok(None),
    }
}

impl AdminArgs {
    /// The admin client settings these options describe (files read).
    pub fn settings(&self) -> anyhow::Result<crate::admin::AdminSettings> {
        let cert = value_or_file(
            &self.kong_admin_tls_client_cert,
            &self.kong_admin_tls_client_cert_file,
            "--kong-admin-tls-client-cert",
        )?;
        let key = value_or_file(
            &self.kong_admin_tls_client_key,
            &self.kong_admin_tls_client_key_file,
            "--kong-admin-tls-client-key",
        )?;
        let client_cert_pem = match (cert, key) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => None,
            _ => anyhow::bail!("a client certificate needs both the certificate and the key"),
        };
        let mut headers = Vec::new();
        for h in &self.kong_admin_header {
            let (k, v) = h
                .split_once(':')
                .ok_or_else(|| anyhow::anyhow!("--kong-admin-header {h:?}: expected name:value"))?;
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
        Ok(crate::admin::AdminSettings {
            tls: crate::admin::AdminTls {
                ca_pem: value_or_file(
                    &self.kong_admin_ca_cert,
                    &self.kong_admin_ca_cert_file,
                    "--kong-admin-ca-cert",
                )?,
                client_cert_pem,
                server_name: self.kong_admin_tls_server_name.clone(),
                skip_verify: self.kong_admin_tls_skip_verify,
            },
            token: value_or_file(
                &self.kong_admin_token,
                &self.kong_admin_token_file,
                "--kong-admin-token",
            )?
            .map(|t| t.trim().to_string()),
            headers,
            timeout: self.proxy_timeout_seconds,
        })
    }
}

/// Every controller option (`silverback controller`, and `silverback run` in a cluster).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ControllerOptions {
    /// Sync loop and endpoints.
    #[command(flatten)]
    pub sync: SyncArgs,
    /// Kubernetes.
    #[command(flatten)]
    pub kube: KubeArgs,
    /// Data-plane admin APIs.
    #[command(flatten)]
    pub admin: AdminArgs,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        o: ControllerOptions,
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("50ms"), Ok(Duration::from_millis(50)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert!(parse_duration("x").is_err());
        assert!(parse_duration("5d").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn flags_parse_with_kic_names() {
        let c = Cli::try_parse_from([
            "x",
            "--kong-admin-url",
            "http://a:8001,https://b:8444",
            "--watch-namespace=a,b",
            "--publish-service",
            "kong/kong-proxy",
            "--enable-fallback=false",
            "--sync-debounce=5ms",
            "--kong-admin-header=x-a:1",
        ])
        .expect("parses");
        assert_eq!(
            c.o.admin.kong_admin_url,
            ["http://a:8001", "https://b:8444"]
        );
        assert_eq!(c.o.kube.watch_namespace, ["a", "b"]);
        assert_eq!(
            c.o.kube.publish_service,
            Some(("kong".to_string(), "kong-proxy".to_string()))
        );
        assert!(!c.o.sync.enable_fallback);
        assert_eq!(c.o.sync.sync_debounce, Duration::from_millis(5));
        assert_eq!(c.o.sync.ingress_class, "kong");
        let s = c.o.admin.settings().expect("settings");
        assert_eq!(s.headers, [("x-a".to_string(), "1".to_string())]);
        assert!(Cli::try_parse_from(["x", "--kong-admin-svc", "nope"]).is_err());
    }
}
