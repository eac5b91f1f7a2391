//! Quick timing probe of the synthetic workload (development aid).
use std::sync::Arc;
use std::time::Instant;

use silverback_config::{LoadOptions, PluginRegistry, RouterFlavor, load_bytes};
use silverback_router::synthetic::{mixed_requests, mixed_routes};
use silverback_router::{RequestView, Router, Scheme};

fn main() {
    let plugins = PluginRegistry::new();
    let opts = LoadOptions {
        router_flavor: RouterFlavor::TraditionalCompatible,
        plugins: &plugins,
        now_unix: None,
    };
    let t = Instant::now();
    let cfg = Arc::new(load_bytes(mixed_routes(10_000).as_bytes(), &opts).expect("valid"));
    println!("load {:?}", t.elapsed());
    let t = Instant::now();
    let router = Router::new(cfg, RouterFlavor::TraditionalCompatible).expect("router");
    println!("compile {:?}", t.elapsed());
    let reqs = mixed_requests(10_000, 4096);
    let headers: Vec<http::HeaderMap> = reqs
        .iter()
        .map(|r| {
            let mut h = http::HeaderMap::new();
            for (k, v) in &r.headers {
                h.append(
                    http::HeaderName::from_static(k),
                    http::HeaderValue::from_str(v).expect("v"),
                );
            }
            h
        })
        .collect();
    let mut per_kind = vec![Vec::new(); 11];
    for _round in 0..200 {
        for (r, h) in reqs.iter().zip(&headers) {
            let v = RequestView {
                method: r.method,
                scheme: Scheme::Http,
                host: &r.host,
                port: 8000,
                path: &r.path,
                headers: h,
                sni: None,
                src: None,
                dst: None,
                query: None,
            };
            let t = Instant::now();
            let m = router.find(&v);
            let d = t.elapsed().as_nanos();
            std::hint::black_box(m);
            per_kind[r.route.map_or(10, |i| i % 10)].push(d);
        }
    }
    // batch timing: min over repetitions of the mean per find (less sensitive to preemption)
    let views: Vec<RequestView<'_>> = reqs
        .iter()
        .zip(&headers)
        .map(|(r, h)| RequestView {
            method: r.method,
            scheme: Scheme::Http,
            host: &r.host,
            port: 8000,
            path: &r.path,
            headers: h,
            sni: None,
            src: None,
            dst: None,
            query: None,
        })
        .collect();
    let mut best = f64::MAX;
    for _ in 0..300 {
        let t = Instant::now();
        for v in &views[..512] {
            std::hint::black_box(router.find(v));
        }
        best = best.min(t.elapsed().as_nanos() as f64 / 512.0);
    }
    println!("mixed batch: best mean {best:.0} ns/find");
    // the criterion loop: cycling through all 4,096 requests, in batches of 256 finds; the
    // minimum over batches drops the batches a busy machine preempted
    let mut means = Vec::new();
    let mut i = 0usize;
    for _ in 0..2000 {
        let t = Instant::now();
        for _ in 0..256 {
            std::hint::black_box(router.find(&views[i & 4095]));
            i = i.wrapping_add(1);
        }
        means.push(t.elapsed().as_nanos() as f64 / 256.0);
    }
    means.sort_by(f64::total_cmp);
    println!(
        "mixed cycle (4096 requests): min batch mean {:.0} ns/find, p10 {:.0}, median {:.0}",
        means[0],
        means[means.len() / 10],
        means[means.len() / 2]
    );
    for (k, v) in per_kind.iter_mut().enumerate() {
        v.sort_unstable();
        if !v.is_empty() {
            println!(
                "kind {k}: median {} ns, p90 {} ns",
                v[v.len() / 2],
                v[v.len() * 9 / 10]
            );
        }
    }
}
