//! Loads a synthetic 10,000-service/route/target configuration once and reports the time and
//! the process's peak resident memory (`VmHWM`). Run:
//! `cargo run --release -p silverback-config --example load_big`.

// The allocator the `silverback` binary uses.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use silverback_config::{LoadOptions, PluginRegistry, RouterFlavor, load_bytes, synthetic};

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000);
    let doc = synthetic::services_routes_targets(n, "10.0.0.1:8080");
    let plugins = PluginRegistry::new();
    let opts = LoadOptions {
        router_flavor: RouterFlavor::TraditionalCompatible,
        plugins: &plugins,
        now_unix: None,
    };
    let start = std::time::Instant::now();
    let cfg = match load_bytes(doc.as_bytes(), &opts) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    };
    let loaded = start.elapsed();
    let hash = cfg.hash();
    let elapsed = start.elapsed();
    let hwm = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM"))
                .map(str::to_string)
        })
        .unwrap_or_default();
    println!(
        "entities={} doc_bytes={} load+hash={:.1}ms (hash {:.1}ms) hash={hash} {hwm}",
        cfg.entity_count(),
        doc.len(),
        elapsed.as_secs_f64() * 1000.0,
        (elapsed - loaded).as_secs_f64() * 1000.0
    );
}
