//! `silverback proxy` and the data-plane half of `silverback run`: settings from the command
//! line, the runtime, the initial declarative file, and a clean shutdown on SIGINT/SIGTERM.

use std::path::Path;

use anyhow::{Context, bail};
use silverback_config::{Config, LoadOptions, PluginRegistry, RouterFlavor, load_bytes};
use std::sync::Arc;

use silverback_proxy::access_log::{AccessLogSpec, LogFormat};
use silverback_proxy::header_buffers::HeaderBuffers;
use silverback_proxy::{
    AdminToken, Cidr, Gateway, Headers, Listen, Settings, SslCert, UpstreamHeaders,
};

use crate::cli::DataPlaneArgs;

/// Data-plane settings from the command line (Kong's names, Kong's defaults).
pub fn settings(args: &DataPlaneArgs) -> anyhow::Result<Settings> {
    let listen = |name: &str, v: &str| {
        Listen::parse_list(v).with_context(|| format!("invalid {name} '{v}'"))
    };
    // (the formats the access logs may name)
    let custom = custom_log_format(args.nginx_http_log_format.as_deref())?;
    let kong = Arc::new(LogFormat::kong());
    let combined = Arc::new(LogFormat::combined());
    let access_log = |setting: &str, value: &str, default: &Arc<LogFormat>| {
        AccessLogSpec::parse(value, default, custom.as_ref())
            .map_err(|e| anyhow::anyhow!("{setting}: {e}"))
    };
    let worker_threads = match args.nginx_worker_processes.as_str() {
        "auto" => None,
        n => match n.parse::<usize>() {
            Ok(n) if n > 0 => Some(n),
            _ => bail!("invalid nginx_worker_processes '{n}': expected a positive number or auto"),
        },
    };
    let admin_token = match (&args.admin_token, &args.admin_token_file) {
        (Some(t), _) => Some(t.clone()),
        (None, Some(path)) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("cannot read admin_token_file {}", path.display()))?
                .trim()
                .to_string(),
        ),
        (None, None) => None,
    };
    let admin_token = match admin_token {
        Some(t) => Some(AdminToken::new(&t).context("the admin token is empty")?),
        None => None,
    };
    let (header_buffers, proxy_header_buffers) = header_buffers(args)?;
    let (tls_versions, not_spoken) =
        silverback_proxy::TlsVersions::from_kong(&args.ssl_cipher_suite, &args.ssl_protocols)
            .map_err(anyhow::Error::msg)?;
    if !not_spoken.is_empty() {
        tracing::warn!(
            ssl_cipher_suite = %args.ssl_cipher_suite,
            left_out = %not_spoken.join(" "),
            "TLS versions before 1.2 are not spoken; the ssl listeners speak TLS 1.2 and later"
        );
    }
    Ok(Settings {
        proxy_listen: listen("proxy_listen", &args.proxy_listen)?,
        admin_listen: listen("admin_listen", &args.admin_listen)?,
        status_listen: listen("status_listen", &args.status_listen)?,
        trusted_ips: Cidr::parse_list(&args.trusted_ips)
            .map_err(|e| anyhow::anyhow!("invalid trusted_ips '{}': {e}", args.trusted_ips))?,
        real_ip_header: args.real_ip_header.clone(),
        real_ip_recursive: args.real_ip_recursive,
        port_maps: silverback_proxy::PortMaps::parse(&args.port_maps)
            .map_err(anyhow::Error::msg)?,
        router_flavor: args.router_flavor,
        worker_threads,
        admin_token,
        fast_h1: args.fast_h1,
        headers: Headers::parse(&args.headers)?,
        headers_upstream: UpstreamHeaders::parse(&args.headers_upstream)?,
        batch_writes: silverback_proxy::BatchWrites::parse(&args.batch_writes)
            .map_err(anyhow::Error::msg)?,
        error_default_type: silverback_proxy::error::Format::parse_default_type(
            &args.error_default_type,
        )
        .map_err(anyhow::Error::msg)?,
        client_max_body_size: silverback_proxy::parse_size(&args.nginx_http_client_max_body_size)
            .map_err(|e| {
            anyhow::anyhow!("nginx_http_client_max_body_size: {e}")
        })?,
        admin_client_max_body_size: silverback_proxy::parse_size(
            &args.nginx_admin_client_max_body_size,
        )
        .map_err(|e| anyhow::anyhow!("nginx_admin_client_max_body_size: {e}"))?,
        proxy_buffer_size: proxy_buffer_size(&args.nginx_proxy_proxy_buffer_size)?,
        keepalive_requests: args.nginx_http_keepalive_requests,
        upstream_keepalive_pool_size: args.upstream_keepalive_pool_size,
        upstream_keepalive_max_requests: args.upstream_keepalive_max_requests,
        upstream_keepalive_idle_timeout: std::time::Duration::from_secs(
            args.upstream_keepalive_idle_timeout,
        ),
        header_buffers,
        proxy_header_buffers,
        log_level: crate::log_level(),
        ssl_cert: SslCert::parse(&args.ssl_cert, &args.ssl_cert_key),
        admin_ssl_cert: SslCert::parse_setting(
            "admin_ssl_cert",
            &args.admin_ssl_cert,
            &args.admin_ssl_cert_key,
        ),
        status_ssl_cert: SslCert::parse_setting(
            "status_ssl_cert",
            &args.status_ssl_cert,
            &args.status_ssl_cert_key,
        ),
        tls_versions,
        prefix: prefix(args.prefix.as_deref())?,
        proxy_access_log: access_log("proxy_access_log", &args.proxy_access_log, &kong)?,
        admin_access_log: access_log("admin_access_log", &args.admin_access_log, &combined)?,
        status_access_log: access_log("status_access_log", &args.status_access_log, &combined)?,
        balancer: balancer_options(&args.dns_order)?,
        ..Settings::default()
    })
}

/// Kong's `nginx_http_log_format`: a format of the user's, for the access logs to name.
/// Its variables that are not read are warned about (each is written without a value).
fn custom_log_format(value: Option<&str>) -> anyhow::Result<Option<Arc<LogFormat>>> {
    let Some(v) = value.filter(|v| !v.trim().is_empty()) else {
        return Ok(None);
    };
    let f = LogFormat::parse(v).map_err(|e| anyhow::anyhow!("nginx_http_log_format: {e}"))?;
    let unsupported = f.unsupported();
    if !unsupported.is_empty() {
        tracing::warn!(
            format = f.name(),
            variables = ?unsupported,
            "nginx_http_log_format: these variables are not known here: logged without a value"
        );
    }
    Ok(Some(Arc::new(f)))
}

/// The load balancer's resolver, from Kong's `dns_order`.
fn balancer_options(dns_order: &str) -> anyhow::Result<silverback_balancer::Options> {
    let (families, srv) = silverback_balancer::Families::from_dns_order(dns_order)
        .map_err(|e| anyhow::anyhow!("dns_order: {e}"))?;
    let resolver = silverback_balancer::Resolver::new(silverback_balancer::ResolverOptions {
        families,
        srv,
        ..Default::default()
    });
    Ok(silverback_balancer::Options {
        resolver: Some(std::sync::Arc::new(resolver)),
        ..Default::default()
    })
}

/// Kong's `nginx_proxy_proxy_buffer_size`: an nginx size, more than 0 (nginx would take 0
/// and then refuse every answer).
fn proxy_buffer_size(v: &str) -> anyhow::Result<usize> {
    let n = silverback_proxy::parse_size(v)
        .map_err(|e| anyhow::anyhow!("nginx_proxy_proxy_buffer_size: {e}"))?;
    if n == 0 {
        bail!("nginx_proxy_proxy_buffer_size: must be more than 0");
    }
    usize::try_from(n).map_err(|_| anyhow::anyhow!("nginx_proxy_proxy_buffer_size: too large"))
}

/// Kong's `prefix`, made absolute from the working directory as Kong makes it; empty means
/// unset.
fn prefix(given: Option<&Path>) -> anyhow::Result<Option<std::path::PathBuf>> {
    match given {
        Some(p) if !p.as_os_str().is_empty() => std::path::absolute(p)
            .map(Some)
            .with_context(|| format!("invalid prefix '{}'", p.display())),
        _ => Ok(None),
    }
}

/// nginx's request head buffers from Kong's settings: the `nginx_http_` ones, and on the
/// proxy listeners the `nginx_proxy_` ones where given.
fn header_buffers(args: &DataPlaneArgs) -> anyhow::Result<(HeaderBuffers, HeaderBuffers)> {
    let first = |name: &str, v: &str| {
        HeaderBuffers::parse_first(v).map_err(|e| anyhow::anyhow!("{name}: {e}"))
    };
    let large = |name: &str, v: &str| {
        HeaderBuffers::parse_large(v).map_err(|e| anyhow::anyhow!("{name}: {e}"))
    };
    let http_first = first(
        "nginx_http_client_header_buffer_size",
        &args.nginx_http_client_header_buffer_size,
    )?;
    let (count, size) = large(
        "nginx_http_large_client_header_buffers",
        &args.nginx_http_large_client_header_buffers,
    )?;
    let http = HeaderBuffers {
        first: http_first,
        count,
        size,
    };
    let mut proxy = http;
    if let Some(v) = &args.nginx_proxy_client_header_buffer_size {
        proxy.first = first("nginx_proxy_client_header_buffer_size", v)?;
    }
    if let Some(v) = &args.nginx_proxy_large_client_header_buffers {
        (proxy.count, proxy.size) = large("nginx_proxy_large_client_header_buffers", v)?;
    }
    Ok((http, proxy))
}

/// Loads a declarative file with the data plane's rules; every error is in the message.
pub fn load_file(
    path: &Path,
    flavor: RouterFlavor,
    plugins: &PluginRegistry,
) -> anyhow::Result<(Config, String)> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let opts = LoadOptions {
        router_flavor: flavor,
        plugins,
        now_unix: None,
    };
    let config = load_bytes(&bytes, &opts).map_err(|e| {
        let lines: Vec<String> = e.lines().into_iter().map(|l| format!("  {l}")).collect();
        anyhow::anyhow!("{} is invalid:\n{}", path.display(), lines.join("\n"))
    })?;
    let hash = silverback_config::config_hash(&bytes, &config);
    Ok((config, hash))
}

/// A multi-threaded runtime sized by `nginx_worker_processes`.
pub fn runtime(settings: &Settings) -> anyhow::Result<tokio::runtime::Runtime> {
    // One worker: a current-thread runtime, like one nginx worker (no work stealing, no
    // cross-thread wakeups). Configuration loads still run on the blocking pool.
    let mut b = match settings.worker_threads {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(n) => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n);
            b
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    b.enable_all()
        .thread_name("silverback")
        .build()
        .context("cannot start the runtime")
}

/// The data plane's settings, with the process's open-file limit set as they ask
/// (`nginx_main_worker_rlimit_nofile`, [`crate::limits`]).
pub fn prepare(args: &DataPlaneArgs) -> anyhow::Result<Settings> {
    let nofile = crate::limits::Nofile::parse(&args.nginx_main_worker_rlimit_nofile)?;
    let connections =
        crate::limits::WorkerConnections::parse(&args.nginx_events_worker_connections)?;
    let mut settings = settings(args)?;
    let soft = crate::limits::apply(nofile);
    // (the runtime's workers: one per core unless set)
    let workers = settings.worker_threads.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    });
    settings.worker_connections = connections.total(soft, workers);
    Ok(settings)
}

/// Starts the data plane, optionally with a declarative file, and serves until SIGINT or
/// SIGTERM.
pub fn serve(args: &DataPlaneArgs, config: Option<&Path>) -> anyhow::Result<()> {
    let settings = prepare(args)?;
    let initial = match config {
        Some(path) => Some(load_file(path, settings.router_flavor, &settings.plugins)?),
        None => None,
    };
    let rt = runtime(&settings)?;
    rt.block_on(async move {
        let gateway = start(settings, initial).await?;
        shutdown_signal().await;
        tracing::info!("shutting down");
        gateway.shutdown().await;
        Ok(())
    })
}

/// Starts a gateway and logs where it listens.
pub async fn start(
    settings: Settings,
    initial: Option<(Config, String)>,
) -> anyhow::Result<Gateway> {
    let entities = initial.as_ref().map_or(0, |(c, _)| c.entity_count());
    let gateway = Gateway::start(settings, initial)
        .await
        .context("cannot start the data plane")?;
    for l in gateway.local_addrs() {
        tracing::info!(kind = ?l.kind, addr = %l.addr, "listening");
    }
    reopen_logs_on_usr1(gateway.access_logs());
    tracing::info!(entities, hash = %gateway.config_hash(), "data plane started");
    Ok(gateway)
}

/// Opens the access logs' files again on each SIGUSR1, as nginx does: after a rotation
/// moved them away, new lines go to new files.
fn reopen_logs_on_usr1(sinks: Vec<Arc<silverback_proxy::access_log::Sink>>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if sinks.is_empty() {
            return;
        }
        let mut usr1 = match signal(SignalKind::user_defined1()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot handle SIGUSR1: access logs are not reopened");
                return;
            }
        };
        tokio::spawn(async move {
            while usr1.recv().await.is_some() {
                for s in &sinks {
                    tracing::info!(path = %s.path().display(), "reopening the access log");
                    s.reopen();
                }
            }
        });
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prefix_is_made_absolute_and_empty_is_unset() {
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(
            prefix(Some(Path::new("kong"))).unwrap(),
            Some(cwd.join("kong"))
        );
        assert_eq!(
            prefix(Some(Path::new("/srv/kong"))).unwrap(),
            Some("/srv/kong".into())
        );
        assert_eq!(prefix(Some(Path::new(""))).unwrap(), None);
        assert_eq!(prefix(None).unwrap(), None);
    }

    #[test]
    fn the_proxy_buffer_size_is_an_nginx_size_above_0() {
        assert_eq!(proxy_buffer_size("4k").unwrap(), 4096);
        assert_eq!(proxy_buffer_size("160k").unwrap(), 160 * 1024);
        assert_eq!(proxy_buffer_size("8192").unwrap(), 8192);
        for bad in ["0", "4 k", "four"] {
            let e = proxy_buffer_size(bad).unwrap_err().to_string();
            assert!(e.starts_with("nginx_proxy_proxy_buffer_size: "), "{e}");
        }
    }
}
