//! Parse + validate + hash of a 10,000-service / 10,000-route / 10,000-target configuration.
//! Run: `cargo bench -p silverback-config --bench load`.

// The allocator the `silverback` binary uses.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use criterion::{Criterion, criterion_group, criterion_main};
use silverback_config::{
    LoadOptions, PluginRegistry, RouterFlavor, config_hash, load_bytes, synthetic,
};

fn bench(c: &mut Criterion) {
    let doc = synthetic::services_routes_targets(10_000, "10.0.0.1:8080");
    let plugins = PluginRegistry::new();
    let opts = LoadOptions {
        router_flavor: RouterFlavor::TraditionalCompatible,
        plugins: &plugins,
        now_unix: None,
    };
    let mut g = c.benchmark_group("config");
    g.sample_size(20);
    g.bench_function("load_and_hash_10k_json", |b| {
        b.iter(|| {
            let cfg = load_bytes(doc.as_bytes(), &opts).expect("valid");
            std::hint::black_box(config_hash(doc.as_bytes(), &cfg))
        })
    });
    let yaml =
        serde_saphyr::to_string(&serde_json::from_str::<serde_json::Value>(&doc).expect("json"))
            .expect("yaml");
    g.bench_function("load_and_hash_10k_yaml", |b| {
        b.iter(|| {
            let cfg = load_bytes(yaml.as_bytes(), &opts).expect("valid");
            std::hint::black_box(config_hash(yaml.as_bytes(), &cfg))
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
