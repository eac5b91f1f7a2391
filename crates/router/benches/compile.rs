//! `Router::new` over the 10,000-route synthetic configuration (see `benches/match.rs`):
//! what a data plane spends compiling the router after `POST /config`. Regexes are checked
//! there and compiled on first use; the second benchmark adds compiling all of them
//! (`Router::compile_regexes`, meant for a background task).
//!
//! `cargo bench -p silverback-router --bench compile`

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use silverback_config::{LoadOptions, PluginRegistry, RouterFlavor, load_bytes};
use silverback_router::Router;
use silverback_router::synthetic::mixed_routes;

fn bench(c: &mut Criterion) {
    let plugins = PluginRegistry::new();
    let opts = LoadOptions {
        router_flavor: RouterFlavor::TraditionalCompatible,
        plugins: &plugins,
        now_unix: None,
    };
    let cfg = Arc::new(load_bytes(mixed_routes(10_000).as_bytes(), &opts).expect("valid"));
    c.bench_function("compile/10000-routes", |b| {
        b.iter(|| {
            black_box(
                Router::new(cfg.clone(), RouterFlavor::TraditionalCompatible).expect("router"),
            )
        })
    });
    c.bench_function("compile/10000-routes+all-regexes", |b| {
        b.iter(|| {
            let r = Router::new(cfg.clone(), RouterFlavor::TraditionalCompatible).expect("router");
            black_box(r.compile_regexes());
            r
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).measurement_time(std::time::Duration::from_secs(8));
    targets = bench
}
criterion_main!(benches);
