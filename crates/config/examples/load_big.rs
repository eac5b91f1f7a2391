//! Loads a synthetic 10,000-service/route/target configuration once and reports the time and
//! the process's peak resident memory (`VmHWM`); `cpu:` is the thread's CPU time of each
//! phase, which other processes on the machine do not inflate. Run:
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
    let cpu0 = cpu_ns();
    let start = std::time::Instant::now();
    let cfg = match load_bytes(doc.as_bytes(), &opts) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    };
    let loaded = start.elapsed();
    let cpu1 = cpu_ns();
    let hash = silverback_config::config_hash(doc.as_bytes(), &cfg);
    let elapsed = start.elapsed();
    let cpu2 = cpu_ns();
    let hwm = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM"))
                .map(str::to_string)
        })
        .unwrap_or_default();
    println!(
        "entities={} doc_bytes={} load+hash={:.1}ms (hash {:.1}ms) cpu: load {:.1}ms hash {:.1}ms hash={hash} {hwm}",
        cfg.entity_count(),
        doc.len(),
        elapsed.as_secs_f64() * 1000.0,
        (elapsed - loaded).as_secs_f64() * 1000.0,
        (cpu1 - cpu0) as f64 / 1e6,
        (cpu2 - cpu1) as f64 / 1e6,
    );
}

/// CPU time of this thread so far, ns (the first field of `/proc/thread-self/schedstat`;
/// 0 where it cannot be read).
fn cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}
