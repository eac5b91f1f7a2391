//! Translation of a generated cluster: 10,000 Ingresses + 10,000 Services + 10,000
//! EndpointSlices (3 endpoints each), with both router flavors.

use criterion::{Criterion, criterion_group, criterion_main};
use silverback_translator::{RouterFlavor, TranslateOptions, synthetic, translate};

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
        let t = translate(&objects, &opts);
        assert!(t.problems.is_empty(), "{:?}", &t.problems[..1]);
        g.bench_function(flavor.as_str(), |b| b.iter(|| translate(&objects, &opts)));
        g.bench_function(format!("{}+json", flavor.as_str()), |b| {
            b.iter(|| translate(&objects, &opts).to_json())
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
