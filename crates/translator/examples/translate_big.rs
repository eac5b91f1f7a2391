//! Time and peak memory of translating a generated cluster: builds `N` (default 10,000)
//! Ingresses, Services and EndpointSlices, translates them `R` times (default 1), serializes
//! the last document, and prints the CPU time of each step and the process's peak resident
//! memory (VmHWM).
//!
//! `cargo run --release -p silverback-translator --example translate_big -- 10000 [R] [expressions] [typed]`
//!
//! `typed` measures `translate_typed` (the typed document, no `serde_json::Value`).
//!
//! CPU time is this thread's time on a CPU (`/proc/thread-self/schedstat`, nanoseconds):
//! wall time is meaningless on a shared, loaded machine. With `R` > 1 the minimum and the
//! median of the runs are printed.

use std::time::Instant;

use silverback_translator::{
    RouterFlavor, TranslateOptions, synthetic, translate, translate_typed,
};

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

/// CPU time of this thread in nanoseconds (first field of `/proc/thread-self/schedstat`).
fn cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|x| x.parse().ok()))
        .unwrap_or(0)
}

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

fn objects_for(n: usize) -> silverback_translator::Objects {
    let objects = synthetic::cluster(n, 3);
    println!(
        "objects: {} (VmHWM after building them: {})",
        objects.len(),
        vm_hwm()
    );
    objects
}

fn typed(objects: &silverback_translator::Objects, flavor: RouterFlavor, runs: usize) {
    let opts = TranslateOptions {
        router_flavor: flavor,
        ..Default::default()
    };
    let mut cpu = Vec::with_capacity(runs);
    let mut drop_cpu = 0;
    let mut last = None;
    for _ in 0..runs {
        let d = cpu_ns();
        drop(last.take());
        drop_cpu = drop_cpu.max(cpu_ns() - d);
        let c = cpu_ns();
        let t = translate_typed(objects, &opts);
        cpu.push(cpu_ns() - c);
        last = Some(t);
    }
    let Some(t) = last else { return };
    let hwm_translated = vm_hwm();
    let c = cpu_ns();
    let json = t.to_json();
    let json_cpu = cpu_ns() - c;
    let d = cpu_ns();
    let (services, problems, json_len) = (t.document.services.len(), t.problems.len(), json.len());
    drop((t, json));
    drop_cpu = drop_cpu.max(cpu_ns() - d);
    cpu.sort_unstable();
    println!(
        "translate_typed ({} runs, {}): CPU min {:.1} ms, median {:.1} ms; to_json {:.1} ms CPU; drop max {:.1} ms CPU",
        runs,
        flavor.as_str(),
        ms(cpu[0]),
        ms(cpu[runs / 2]),
        ms(json_cpu),
        ms(drop_cpu),
    );
    println!(
        "services {services}; problems {problems}; JSON {json_len} bytes; VmHWM {hwm_translated} after translating, {} at the end",
        vm_hwm()
    );
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let runs: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1).max(1);
    let rest: Vec<String> = args.collect();
    let flavor = match rest.iter().any(|a| a == "expressions") {
        true => RouterFlavor::Expressions,
        false => RouterFlavor::TraditionalCompatible,
    };
    // `typed`: `translate_typed` (no `serde_json::Value` document)
    if rest.iter().any(|a| a == "typed") {
        return typed(&objects_for(n), flavor, runs);
    }
    let objects = objects_for(n);
    let opts = TranslateOptions {
        router_flavor: flavor,
        ..Default::default()
    };
    let mut cpu = Vec::with_capacity(runs);
    let mut drop_cpu = Vec::with_capacity(runs);
    let mut wall = Vec::with_capacity(runs);
    let mut last = None;
    for _ in 0..runs {
        // the previous translation is freed outside the timed section
        let d = cpu_ns();
        drop(last.take());
        drop_cpu.push(cpu_ns() - d);
        let start = Instant::now();
        let c = cpu_ns();
        let t = translate(&objects, &opts);
        cpu.push(cpu_ns() - c);
        wall.push(start.elapsed());
        last = Some(t);
    }
    let Some(t) = last else { return };
    let hwm_translated = vm_hwm();
    let c = cpu_ns();
    let json = t.to_json();
    let json_cpu = cpu_ns() - c;
    let c = cpu_ns();
    let json_len = json.len();
    drop(json);
    let services = t.config["services"].as_array().map_or(0, Vec::len);
    let problems = t.problems.len();
    drop(t);
    drop_cpu.push(cpu_ns() - c);
    cpu.sort_unstable();
    wall.sort_unstable();
    println!(
        "translate ({} runs, {}): CPU min {:.1} ms, median {:.1} ms; wall min {:?}; to_json {:.1} ms CPU; drop max {:.1} ms CPU",
        runs,
        flavor.as_str(),
        ms(cpu[0]),
        ms(cpu[runs / 2]),
        wall[0],
        ms(json_cpu),
        ms(drop_cpu.iter().copied().max().unwrap_or(0)),
    );
    println!(
        "services {services}; problems {problems}; JSON {json_len} bytes; VmHWM {hwm_translated} after translating, {} at the end",
        vm_hwm()
    );
}
