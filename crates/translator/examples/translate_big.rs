//! Peak memory of translating a generated cluster: builds `N` (default 10,000) Ingresses,
//! Services and EndpointSlices, translates them, serializes the document, and prints the
//! time and the process's peak resident memory (VmHWM).
//!
//! `cargo run --release -p silverback-translator --example translate_big -- 10000`

use std::time::Instant;

use silverback_translator::{TranslateOptions, synthetic, translate};

fn vm_hwm() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM"))
                .map(|l| l.split_whitespace().skip(1).collect::<Vec<_>>().join(" "))
        })
        .unwrap_or_else(|| "unknown".into())
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10_000);
    let objects = synthetic::cluster(n, 3);
    println!(
        "objects: {} (VmHWM after building them: {})",
        objects.len(),
        vm_hwm()
    );
    let start = Instant::now();
    let t = translate(&objects, &TranslateOptions::default());
    let took = start.elapsed();
    let json = t.to_json();
    println!(
        "translate: {took:?}; services {}; problems {}; JSON {} bytes; VmHWM {}",
        t.config["services"].as_array().map_or(0, Vec::len),
        t.problems.len(),
        json.len(),
        vm_hwm()
    );
}
