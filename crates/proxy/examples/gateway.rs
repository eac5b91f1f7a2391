//! A standalone gateway for benchmarks and manual runs (the product binary is
//! `crates/silverback`): `cargo run --release -p silverback-proxy --example gateway --
//! --proxy-listen 127.0.0.1:8000 --workers 1 --config kong.yaml`.
#![allow(missing_docs)]

// The allocator of the `silverback` binary.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::Parser;
use silverback_config::{LoadOptions, PluginRegistry};
use silverback_proxy::{Gateway, Listen, Settings};

#[derive(Parser, Debug)]
struct Args {
    /// `proxy_listen`
    #[arg(long, default_value = "0.0.0.0:8000, 0.0.0.0:8443 ssl http2")]
    proxy_listen: String,
    /// `admin_listen`
    #[arg(long, default_value = "127.0.0.1:8001")]
    admin_listen: String,
    /// `status_listen`
    #[arg(long, default_value = "127.0.0.1:8100")]
    status_listen: String,
    /// Worker threads (1 = a single-threaded runtime, like one nginx worker).
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// Declarative configuration to start with.
    #[arg(long)]
    config: Option<std::path::PathBuf>,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let a = Args::parse();
    let settings = Settings {
        proxy_listen: Listen::parse_list(&a.proxy_listen)?,
        admin_listen: Listen::parse_list(&a.admin_listen)?,
        status_listen: Listen::parse_list(&a.status_listen)?,
        worker_threads: Some(a.workers),
        ..Settings::default()
    };
    let initial = match &a.config {
        None => None,
        Some(p) => {
            let plugins = PluginRegistry::new();
            let opts = LoadOptions {
                router_flavor: settings.router_flavor,
                plugins: &plugins,
                now_unix: None,
            };
            let bytes = std::fs::read(p)?;
            let cfg = silverback_config::load_bytes(&bytes, &opts).map_err(|e| e.to_string())?;
            let hash = silverback_config::config_hash(&bytes, &cfg);
            Some((cfg, hash))
        }
    };
    let rt = if a.workers <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(a.workers)
            .enable_all()
            .build()?
    };
    rt.block_on(async move {
        let gw = Gateway::start(settings, initial).await?;
        for l in gw.local_addrs() {
            eprintln!("listening: {:?} {}", l.kind, l.addr);
        }
        tokio::signal::ctrl_c().await?;
        gw.shutdown().await;
        Ok(())
    })
}
