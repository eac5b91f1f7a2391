//! Translation of a generated cluster: 10,000 Ingresses + 10,000 Services + 10,000
//! EndpointSlices (3 endpoints each), with both router flavors.
//!
//! `typed` is what the controller runs (`translate_typed`, then `to_json` for the push);
//! `value` is [`translate`], which also builds the `serde_json::Value` tree. Each iteration
//! includes freeing its output. The allocator is mimalloc, as in the `silverback` binary.

use criterion::{Criterion, criterion_group, criterion_main};
use silverback_translator::{
    RouterFlavor, TranslateOptions, synthetic, translate, translate_typed,
};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn bench(c: &mut Criterion) {
    let objects = synthetic::cluster(10_000, 3);
    let mut g = c.benchmark_group("translate_10k");
    g.sample_size(10);
    for flavor in [
        RouterFlavor::TraditionalCompatible,
        RouterFlavor::Expressions,
    ] {
        let opts = TranslateOptions {
            router_flavor: flavor,
            ..Default::default()
        };
        let t = translate_typed(&objects, &opts);
        assert!(t.problems.is_empty(), "{:?}", &t.problems[..1]);
        let f = flavor.as_str();
        g.bench_function(format!("{f}/typed"), |b| {
            b.iter(|| translate_typed(&objects, &opts))
        });
        g.bench_function(format!("{f}/typed+json"), |b| {
            b.iter(|| translate_typed(&objects, &opts).to_json())
        });
        g.bench_function(format!("{f}/value"), |b| {
            b.iter(|| translate(&objects, &opts))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
