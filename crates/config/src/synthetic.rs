//! Synthetic configurations for benchmarks and load tests: `n` services, each with one route
//! and one upstream target, all distinct (hosts and paths), in Kong's nested JSON form.

use std::fmt::Write;

/// A nested declarative JSON document with `n` services, `n` routes, `n` upstreams and `n`
/// targets. Route `i` matches host `svc-<i>.example.test` and path `/svc-<i>`, and its service
/// points at upstream `up-<i>`, whose target is `backend` (host:port).
pub fn services_routes_targets(n: usize, backend: &str) -> String {
    let mut s = String::with_capacity(n * 420 + 64);
    s.push_str("{\"_format_version\":\"3.0\",\"services\":[");
    for i in 0..n {
        if i > 0 {
            s.push(',');
        }
        let _ = write!(
            s,
            "{{\"name\":\"svc-{i}\",\"host\":\"up-{i}\",\"port\":80,\"protocol\":\"http\",\
             \"tags\":[\"k8s-name:svc-{i}\",\"k8s-namespace:bench\",\"k8s-kind:Service\"],\
             \"routes\":[{{\"name\":\"route-{i}\",\"hosts\":[\"svc-{i}.example.test\"],\
             \"paths\":[\"/svc-{i}\"],\"strip_path\":false,\"preserve_host\":true,\
             \"tags\":[\"k8s-name:ing-{i}\",\"k8s-namespace:bench\",\"k8s-kind:Ingress\"]}}]}}"
        );
    }
    s.push_str("],\"upstreams\":[");
    for i in 0..n {
        if i > 0 {
            s.push(',');
        }
        let _ = write!(
            s,
            "{{\"name\":\"up-{i}\",\"targets\":[{{\"target\":\"{backend}\",\"weight\":100}}]}}"
        );
    }
    s.push_str("]}");
    s
}
