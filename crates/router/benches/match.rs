//! Router match benchmark: 10,000 routes of mixed kinds (exact and wildcard hosts, plain
//! prefixes, regex paths with captures, header and method constraints, routes split by path
//! group, host-less regexes), one match per iteration, cycling through 4,096 requests.
//!
//! `cargo bench -p silverback-router --bench match`

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderName, HeaderValue};
use silverback_config::{LoadOptions, PluginRegistry, RouterFlavor, load_bytes};
use silverback_router::synthetic::{mixed_requests, mixed_routes};
use silverback_router::{RequestView, Router, Scheme};

struct Owned {
    method: &'static str,
    host: String,
    path: String,
    headers: HeaderMap,
}

fn setup(n: usize) -> (Router, Vec<Owned>) {
    let plugins = PluginRegistry::new();
    let opts = LoadOptions {
        router_flavor: RouterFlavor::TraditionalCompatible,
        plugins: &plugins,
        now_unix: None,
    };
    let cfg = load_bytes(mixed_routes(n).as_bytes(), &opts).expect("valid document");
    let router = Router::new(Arc::new(cfg), RouterFlavor::TraditionalCompatible).expect("router");
    let reqs = mixed_requests(n, 4096)
        .into_iter()
        .map(|r| {
            let mut headers = HeaderMap::new();
            for (k, v) in &r.headers {
                headers.append(
                    HeaderName::from_static(k),
                    HeaderValue::from_str(v).expect("value"),
                );
            }
            Owned {
                method: r.method,
                host: r.host,
                path: r.path,
                headers,
            }
        })
        .collect();
    (router, reqs)
}

fn view(r: &Owned) -> RequestView<'_> {
    RequestView {
        method: r.method,
        scheme: Scheme::Http,
        host: &r.host,
        port: 8000,
        path: &r.path,
        headers: &r.headers,
        sni: None,
        src: None,
        dst: None,
        query: None,
    }
}

fn bench(c: &mut Criterion) {
    for n in [1usize, 10_000] {
        let (router, reqs) = setup(n);
        let mut i = 0usize;
        c.bench_function(&format!("find/{n}-routes/mixed"), |b| {
            b.iter(|| {
                let r = &reqs[i & 4095];
                i = i.wrapping_add(1);
                black_box(
                    router
                        .find(black_box(&view(r)))
                        .map(|m| m.upstream_path.len()),
                )
            })
        });
    }
    let (router, reqs) = setup(10_000);
    let hits: Vec<&Owned> = reqs.iter().filter(|r| r.host.starts_with("svc-")).collect();
    let mut i = 0usize;
    c.bench_function("find/10000-routes/exact-host-prefix", |b| {
        b.iter(|| {
            let r = hits[i % hits.len()];
            i = i.wrapping_add(1);
            black_box(
                router
                    .find(black_box(&view(r)))
                    .map(|m| m.upstream_path.len()),
            )
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(std::time::Duration::from_secs(4));
    targets = bench
}
criterion_main!(benches);
