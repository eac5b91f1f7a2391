//! Times the phases of applying a large configuration: parse+validate, compile (router,
//! certificates, balancer), and the flattened-entities answer. `cargo run --release -p
//! silverback-proxy --example apply_cost -- 10000`
#![allow(missing_docs)]

use std::time::Instant;

use silverback_config::{LoadOptions, PluginRegistry, RouterFlavor};
use silverback_proxy::snapshot::{BuildEnv, Snapshot};
use silverback_proxy::upstream::BalancerOptions;

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10_000);
    let doc = silverback_config::synthetic::services_routes_targets(n, "127.0.0.1:19100");
    let plugins = PluginRegistry::new();
    let opts = LoadOptions {
        router_flavor: RouterFlavor::TraditionalCompatible,
        plugins: &plugins,
        now_unix: None,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let balancer = BalancerOptions::default();
    let env = BuildEnv {
        runtime: rt.handle(),
        balancer: &balancer,
    };
    for _ in 0..3 {
        let t = Instant::now();
        let cfg = silverback_config::load_bytes(doc.as_bytes(), &opts).expect("valid");
        let t_load = t.elapsed();
        let t = Instant::now();
        let hash = silverback_config::config_hash(doc.as_bytes(), &cfg);
        let t_hash = t.elapsed();
        let t = Instant::now();
        let snap = Snapshot::build(
            cfg,
            hash.clone(),
            RouterFlavor::TraditionalCompatible,
            &env,
            None,
            true,
        )
        .expect("builds");
        let t_build = t.elapsed();
        let t = Instant::now();
        let body = snap.flattened_json();
        let t_flat = t.elapsed();
        println!(
            "{n} routes: parse+validate {t_load:?}, hash {t_hash:?}, compile {t_build:?} -> serving; then the 201 answer {t_flat:?} ({} bytes) (hash {})",
            body.len(),
            &hash[..8]
        );
        drop(snap);
    }
}
