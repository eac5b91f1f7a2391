//! Synthetic route sets and requests for benchmarks and tests: a realistic mix of exact and
//! wildcard hosts, plain prefixes, regex paths (with captures), header and method
//! constraints, routes with several paths (split by group), and requests that hit each kind.

use std::fmt::Write;

/// A request of the synthetic workload, owned.
#[derive(Debug, Clone)]
pub struct SynthRequest {
    /// Method.
    pub method: &'static str,
    /// Host header.
    pub host: String,
    /// Path.
    pub path: String,
    /// Extra headers.
    pub headers: Vec<(&'static str, String)>,
    /// Index of the route expected to match (`None`: expected 404).
    pub route: Option<usize>,
}

/// A declarative JSON document (compat flavor) with `n` services and `n` routes of mixed
/// kinds; route `i` is named `r{i}`.
pub fn mixed_routes(n: usize) -> String {
    let mut s = String::with_capacity(n * 300 + 64);
    s.push_str("{\"_format_version\":\"3.0\",\"services\":[");
    for i in 0..n {
        if i > 0 {
            s.push(',');
        }
        let route = match i % 10 {
            0..=3 => format!("\"hosts\":[\"svc-{i}.example.test\"],\"paths\":[\"/svc-{i}\"]"),
            4 => format!("\"hosts\":[\"*.wild-{i}.test\"],\"paths\":[\"/w\"]"),
            5 => format!("\"paths\":[\"/api/v{i}/items\"],\"methods\":[\"GET\",\"POST\"]"),
            6 => format!(
                "\"hosts\":[\"re-{i}.example.test\"],\"paths\":[\"~/re-{i}/(?<id>\\\\d+)$\"]"
            ),
            7 => format!(
                "\"hosts\":[\"hdr-{}.example.test\"],\"paths\":[\"/h\"],\"headers\":{{\"x-tenant\":[\"t{i}\"]}}",
                (i / 10) % 100
            ),
            8 => format!("\"hosts\":[\"prefix-{i}.*\"],\"paths\":[\"/p\"]"),
            _ => format!(
                "\"hosts\":[\"multi-{i}.example.test\"],\"paths\":[\"/a\",\"/bb/{i}\",\"~/c/\\\\d+\"],\"methods\":[\"GET\"]"
            ),
        };
        let _ = write!(
            s,
            "{{\"name\":\"svc-{i}\",\"url\":\"http://10.0.{}.{}:8080/base\",\"routes\":[{{\"name\":\"r{i}\",{route}}}]}}",
            (i / 250) % 256,
            i % 250
        );
    }
    // a few host-less regex routes, always candidates
    s.push_str("],\"routes\":[");
    for k in 0..20 {
        if k > 0 {
            s.push(',');
        }
        let _ = write!(
            s,
            "{{\"name\":\"legacy-{k}\",\"paths\":[\"~/legacy-{k}/\\\\d+\"]}}"
        );
    }
    s.push_str("]}");
    s
}

/// `count` requests over the first `n` routes of [`mixed_routes`], cycling through the
/// route kinds; every 16th request matches nothing.
pub fn mixed_requests(n: usize, count: usize) -> Vec<SynthRequest> {
    let mut out = Vec::with_capacity(count);
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for k in 0..count {
        // xorshift for a spread of route indexes
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let i = (x % n as u64) as usize;
        if k % 16 == 15 {
            out.push(SynthRequest {
                method: "GET",
                host: format!("nothing-{i}.example.test"),
                path: format!("/nothing/{i}"),
                headers: vec![],
                route: None,
            });
            continue;
        }
        let (method, host, path, headers) = match i % 10 {
            0..=3 => (
                "GET",
                format!("svc-{i}.example.test"),
                format!("/svc-{i}/users/42"),
                vec![],
            ),
            4 => (
                "GET",
                format!("api.wild-{i}.test"),
                "/w/x".to_string(),
                vec![],
            ),
            5 => (
                "POST",
                "any.example.test".to_string(),
                format!("/api/v{i}/items/7"),
                vec![],
            ),
            6 => (
                "GET",
                format!("re-{i}.example.test"),
                format!("/re-{i}/12345"),
                vec![],
            ),
            7 => (
                "GET",
                format!("hdr-{}.example.test", (i / 10) % 100),
                "/h/x".to_string(),
                vec![("x-tenant", format!("T{i}"))],
            ),
            8 => (
                "GET",
                format!("prefix-{i}.example.org"),
                "/p/q".to_string(),
                vec![],
            ),
            _ => (
                "GET",
                format!("multi-{i}.example.test:8000"),
                format!("/bb/{i}/z"),
                vec![],
            ),
        };
        out.push(SynthRequest {
            method,
            host,
            path,
            headers,
            route: Some(i),
        });
    }
    out
}
