//! Load-independent measure of the synthetic workload, for `valgrind --tool=callgrind`:
//! builds the 10,000-route router and runs `ROUNDS` passes (default 2) over the 4,096 bench
//! requests. Instructions per find = the `Router::find` inclusive count / (ROUNDS × 4096).
//!
//! ```text
//! cargo build --release -p silverback-router --example count
//! valgrind --tool=callgrind --cache-sim=yes --toggle-collect='*Router*find*' \
//!     target/release/examples/count 2
//! ```
use std::sync::Arc;

use silverback_config::{LoadOptions, PluginRegistry, RouterFlavor, load_bytes};
use silverback_router::synthetic::{mixed_requests, mixed_routes};
use silverback_router::{RequestView, Router, Scheme};

fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(2);
    let plugins = PluginRegistry::new();
    let opts = LoadOptions {
        router_flavor: RouterFlavor::TraditionalCompatible,
        plugins: &plugins,
        now_unix: None,
    };
    let cfg = Arc::new(load_bytes(mixed_routes(10_000).as_bytes(), &opts).expect("valid"));
    let router = Router::new(cfg, RouterFlavor::TraditionalCompatible).expect("router");
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
    let mut found = 0usize;
    for _ in 0..rounds {
        for v in &views {
            found += usize::from(std::hint::black_box(router.find(v)).is_some());
        }
    }
    println!("{} finds, {found} matched", rounds * views.len());
}
