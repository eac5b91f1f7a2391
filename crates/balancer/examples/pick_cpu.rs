//! `Balancer::pick` (+ drop of the peer) cost in CPU time of the measuring thread, for runs
//! on a loaded machine where criterion's wall-clock figures are inflated by preemption.
//!
//! `cargo run --release -p silverback-balancer --example pick_cpu [picks_per_case]`

use std::hint::black_box;
use std::time::Instant;

use silverback_balancer::{Balancers, PickContext};

/// CPU time of this thread (user + system), in seconds, from `/proc/thread-self/stat`.
fn thread_cpu() -> f64 {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap_or_default();
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after ")"; 100 ticks/s.
    (ticks(11) + ticks(12)) / 100.0
}

fn config(n: usize, algorithm: &str) -> silverback_config::Config {
    let mut y =
        format!("_format_version: \"3.0\"\nupstreams:\n- name: up\n  algorithm: {algorithm}\n");
    if algorithm == "consistent-hashing" {
        y.push_str("  hash_on: path\n");
    }
    y.push_str("  targets:\n");
    for i in 0..n {
        y.push_str(&format!(
            "  - target: 10.0.{}.{}:8080\n",
            i / 250,
            i % 250 + 1
        ));
    }
    let plugins = silverback_config::PluginRegistry::new();
    let opts = silverback_config::LoadOptions {
        router_flavor: silverback_config::RouterFlavor::TraditionalCompatible,
        plugins: &plugins,
        now_unix: None,
    };
    silverback_config::load_bytes(y.as_bytes(), &opts).expect("config")
}

fn many_upstreams(n: usize) -> silverback_config::Config {
    let mut y = String::from("_format_version: \"3.0\"\nupstreams:\n");
    for u in 0..n {
        y.push_str(&format!("- name: svc-{u}.ns.80.svc\n  targets:\n"));
        for t in 0..3 {
            y.push_str(&format!(
                "  - target: 10.{}.{}.{}:8080\n",
                t + 1,
                u / 250,
                u % 250 + 1
            ));
        }
    }
    let plugins = silverback_config::PluginRegistry::new();
    let opts = silverback_config::LoadOptions {
        router_flavor: silverback_config::RouterFlavor::TraditionalCompatible,
        plugins: &plugins,
        now_unix: None,
    };
    silverback_config::load_bytes(y.as_bytes(), &opts).expect("config")
}

fn main() {
    let picks: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(5_000_000);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    {
        let cfg = many_upstreams(10_000);
        let (c0, w0) = (thread_cpu(), Instant::now());
        let first = Balancers::build(&cfg, None, rt.handle()).expect("build");
        let (c1, w1) = (thread_cpu(), Instant::now());
        let again = Balancers::build(&cfg, Some(&first), rt.handle()).expect("build");
        let (c2, w2) = (thread_cpu(), Instant::now());
        println!(
            "build 10,000 upstreams x 3 targets: {:.0} ms CPU ({:.0} ms wall); rebuild unchanged: {:.0} ms CPU ({:.0} ms wall)\n",
            (c1 - c0) * 1e3,
            (w1 - w0).as_secs_f64() * 1e3,
            (c2 - c1) * 1e3,
            (w2 - w1).as_secs_f64() * 1e3
        );
        black_box(again);
    }
    let paths: Vec<String> = (0..1024).map(|i| format!("/users/{i}")).collect();
    println!("| algorithm | targets | CPU ns/pick | wall ns/pick |");
    println!("|---|---|---|---|");
    for n in [100usize, 1000] {
        for alg in [
            "round-robin",
            "consistent-hashing",
            "least-connections",
            "latency",
        ] {
            let cfg = config(n, alg);
            let balancers = Balancers::build(&cfg, None, rt.handle()).expect("build");
            let b = balancers.get("up").expect("upstream").clone();
            // Warm-up.
            for i in 0..picks / 10 {
                let ctx = PickContext {
                    path: &paths[i & 1023],
                    ..Default::default()
                };
                black_box(b.pick(&ctx, &[]).expect("peer").addr);
            }
            let (c0, w0) = (thread_cpu(), Instant::now());
            for i in 0..picks {
                let ctx = PickContext {
                    path: &paths[i & 1023],
                    ..Default::default()
                };
                black_box(b.pick(&ctx, &[]).expect("peer").addr);
            }
            let (cpu, wall) = (thread_cpu() - c0, w0.elapsed().as_secs_f64());
            println!(
                "| {alg} | {n} | {:.0} | {:.0} |",
                cpu * 1e9 / picks as f64,
                wall * 1e9 / picks as f64
            );
        }
    }
}
