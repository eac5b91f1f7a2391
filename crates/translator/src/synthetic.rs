//! Generated clusters for benchmarks and tests: `n` Ingresses, `n` Services and `n`
//! EndpointSlices spread over namespaces, with a mix of path types and annotations.

use serde_json::json;

use crate::objects::Objects;

/// A cluster of `n` Ingresses (class `kong`), each with one rule routing two paths to port 80
/// of its own Service, `n` Services and `n` EndpointSlices of `endpoints` ready endpoints
/// each: `n` Kong Services, routes and upstreams.
pub fn cluster(n: usize, endpoints: usize) -> Objects {
    let mut o = Objects::new();
    for i in 0..n {
        let ns = format!("ns-{}", i % 100);
        let svc = format!("svc-{i}");
        let (path_type, path) = match i % 3 {
            0 => ("Prefix", format!("/app-{i}")),
            1 => ("Exact", format!("/app-{i}/exact")),
            _ => ("ImplementationSpecific", format!("/app-{i}/impl")),
        };
        let mut annotations = serde_json::Map::new();
        if i % 4 == 0 {
            annotations.insert("konghq.com/strip-path".into(), json!("true"));
        }
        if i % 5 == 0 {
            annotations.insert("konghq.com/methods".into(), json!("GET,POST"));
        }
        let ingress = json!({
            "apiVersion": "networking.k8s.io/v1",
            "kind": "Ingress",
            "metadata": {"name": format!("ing-{i}"), "namespace": ns, "uid": format!("00000000-0000-4000-8000-{i:012}"), "annotations": annotations},
            "spec": {
                "ingressClassName": "kong",
                "rules": [{
                    "host": format!("host-{i}.example.com"),
                    "http": {"paths": [
                        {"path": path, "pathType": path_type, "backend": {"service": {"name": svc, "port": {"number": 80}}}},
                        {"path": "/api", "pathType": "Prefix", "backend": {"service": {"name": svc, "port": {"number": 80}}}}
                    ]}
                }]
            }
        });
        let service = json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": svc, "namespace": ns, "uid": format!("00000000-0000-4000-9000-{i:012}")},
            "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080}]}
        });
        let eps: Vec<_> = (0..endpoints)
            .map(|e| {
                json!({"addresses": [format!("10.{}.{}.{}", (i >> 8) & 255, i & 255, e + 1)], "conditions": {"ready": true}})
            })
            .collect();
        let slice = json!({
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {"name": format!("{svc}-abcde"), "namespace": ns, "labels": {"kubernetes.io/service-name": svc}},
            "addressType": "IPv4",
            "endpoints": eps,
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]
        });
        for v in [ingress, service, slice] {
            // generated objects are well-formed
            let _ = o.insert(v);
        }
    }
    o
}
