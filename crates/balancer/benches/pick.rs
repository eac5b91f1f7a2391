//! Benchmarks of the balancer.
//!
//! `Balancer::pick` cost per algorithm for 100 and 1,000 targets (all healthy, no retry).

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use silverback_balancer::{Balancers, PickContext};

fn config(n: usize, algorithm: &str) -> silverback_config::Config {
    let mut y = String::from("_format_version: \"3.0\"\nupstreams:\n- name: up\n");
    y.push_str(&format!("  algorithm: {algorithm}\n"));
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

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut g = c.benchmark_group("pick");
    let paths: Vec<String> = (0..1024).map(|i| format!("/users/{i}")).collect();
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
            let mut i = 0usize;
            g.bench_with_input(BenchmarkId::new(alg, n), &n, |bench, _| {
                bench.iter(|| {
                    i = (i + 1) & 1023;
                    let ctx = PickContext {
                        path: &paths[i],
                        ..Default::default()
                    };
                    let peer = b.pick(&ctx, &[]).expect("peer");
                    black_box(peer.addr)
                })
            });
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
