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

/// CPU time (user + system) of this process in milliseconds, from `/proc/self/stat`
/// (clock ticks of 10 ms): wall time is meaningless on a shared, loaded machine.
fn cpu_ms() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let f: Vec<u64> = after
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // fields 14 and 15 of the line are the 12th and 13th after the command name
    (f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0)) * 10
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
    let cpu = cpu_ms();
    let t = translate(&objects, &TranslateOptions::default());
    let took = start.elapsed();
    let cpu = cpu_ms() - cpu;
    let json = t.to_json();
    println!(
        "translate: {took:?} wall, {cpu} ms CPU; services {}; problems {}; JSON {} bytes; VmHWM {}",
        t.config["services"].as_array().map_or(0, Vec::len),
        t.problems.len(),
        json.len(),
        vm_hwm()
    );
}
