//! Heap use of each phase of loading a 10,000-service configuration, with a counting
//! allocator: `cargo run --release -p silverback-config --example mem_phases`.

use peak_alloc::PeakAlloc;

#[global_allocator]
static A: PeakAlloc = PeakAlloc;

fn main() {
    use silverback_config::*;
    let doc = synthetic::services_routes_targets(10_000, "10.0.0.1:8080");
    println!("doc: cur {:.1} MB", A.current_usage_as_mb());
    let v = parse::parse_document(doc.as_bytes()).expect("the synthetic document parses");
    println!(
        "parsed DOM: cur {:.1} MB peak {:.1}",
        A.current_usage_as_mb(),
        A.peak_usage_as_mb()
    );
    drop(v);
    A.reset_peak_usage();
    let plugins = PluginRegistry::new();
    let opts = LoadOptions {
        router_flavor: RouterFlavor::TraditionalCompatible,
        plugins: &plugins,
        now_unix: None,
    };
    let cfg = load_bytes(doc.as_bytes(), &opts).expect("the synthetic document is valid");
    println!(
        "loaded: cur {:.1} MB peak {:.1}",
        A.current_usage_as_mb(),
        A.peak_usage_as_mb()
    );
    let h = silverback_config::config_hash(doc.as_bytes(), &cfg);
    println!(
        "hashed {h}: cur {:.1} MB peak {:.1}",
        A.current_usage_as_mb(),
        A.peak_usage_as_mb()
    );
}
