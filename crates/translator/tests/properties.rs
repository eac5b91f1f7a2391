//! Property tests: random clusters (valid and broken objects mixed) always translate into a
//! document the configuration model loads, with the same bytes whatever the input order,
//! and nothing panics on arbitrary input.

mod common;

use proptest::prelude::*;
use serde_json::{Value, json};
use silverback_config::RouterFlavor;
use silverback_translator::{Objects, TranslateOptions, translate};

const NAMESPACES: &[&str] = &["a", "b"];
const SERVICES: &[&str] = &["s1", "s2", "s3", "missing"];
const GOOD_HOSTS: &[&str] = &["", "a.example.com", "*.example.com", "b.example.com"];
const GOOD_PATHS: &[&str] = &["", "/", "/a", "/a/", "/a/b", "/~/x[0-9]+$"];
const HOSTS: &[&str] = &[
    "",
    "a.example.com",
    "*.example.com",
    "b.example.com",
    "bad host",
    "a.*.b",
    "x.example.*",
];
const PATHS: &[&str] = &[
    "",
    "/",
    "/a",
    "/a/",
    "/a/b",
    "/~/x[0-9]+$",
    "/~/(bad",
    "relative",
    "/a/../b",
    "/%zz",
    "/caf\u{e9}",
    "/a b",
];
const PATH_TYPES: &[&str] = &["Exact", "Prefix", "ImplementationSpecific", "Weird"];
const ANNOTATION_KEYS: &[&str] = &[
    "konghq.com/strip-path",
    "konghq.com/preserve-host",
    "konghq.com/protocols",
    "konghq.com/protocol",
    "konghq.com/methods",
    "konghq.com/headers.x-a",
    "konghq.com/headers.Host",
    "konghq.com/headers-separator",
    "konghq.com/host-aliases",
    "konghq.com/snis",
    "konghq.com/regex-priority",
    "konghq.com/https-redirect-status-code",
    "konghq.com/path-handling",
    "konghq.com/path",
    "konghq.com/tags",
    "konghq.com/read-timeout",
    "konghq.com/retries",
    "konghq.com/tls-verify",
    "konghq.com/tls-verify-depth",
    "konghq.com/client-cert",
    "konghq.com/ca-certificates-secrets",
    "konghq.com/host-header",
    "konghq.com/regex-prefix",
    "konghq.com/rewrite",
    "konghq.com/plugins",
    "ingress.kubernetes.io/force-ssl-redirect",
    "ingress.kubernetes.io/service-upstream",
    "kubernetes.io/ingress.class",
];
const ANNOTATION_VALUES: &[&str] = &[
    "true",
    "false",
    "maybe",
    "1",
    "-5",
    "3000000000",
    "http",
    "https",
    "grpc",
    "grpc,grpcs",
    "grpc,http",
    "tcp",
    "tls",
    "GET,post",
    "G3T",
    "x",
    "/a/b",
    "a//b",
    "v0",
    "v1",
    "kong",
    "other",
    "a.example.com",
    "*.a.example.com",
    "tls-a",
    "tls-bad",
    "ca",
    "a,b/c",
    "/api/$1",
    "|",
    "308",
    "200",
    "",
    "host:99999",
];
const ADDRESSES: &[&str] = &[
    "10.0.0.1",
    "10.0.0.2",
    "fd00::1",
    "node.example.com",
    "not an ip!",
    "10.0.0.1",
];

fn pick(pool: &'static [&'static str]) -> impl Strategy<Value = &'static str> {
    prop::sample::select(pool)
}

fn annotations() -> impl Strategy<Value = Value> {
    let kv = prop::collection::vec((pick(ANNOTATION_KEYS), pick(ANNOTATION_VALUES)), 1..3);
    prop_oneof![2 => Just(vec![]), 1 => kv].prop_map(|kv| {
        Value::Object(
            kv.into_iter()
                .map(|(k, v)| (k.to_string(), json!(v)))
                .collect(),
        )
    })
}

fn backend() -> impl Strategy<Value = Value> {
    (pick(SERVICES), prop_oneof![4 => Just(json!({"number": 80})), 2 => Just(json!({"number": 443})), 2 => Just(json!({"name": "http"})), 1 => Just(json!({"name": "nope"})), 1 => Just(json!({"number": 70000}))])
        .prop_map(|(s, port)| json!({"service": {"name": s, "port": port}}))
}

fn ingress(i: usize) -> impl Strategy<Value = Value> {
    let host = prop_oneof![4 => pick(GOOD_HOSTS), 1 => pick(HOSTS)];
    let path = prop_oneof![6 => pick(GOOD_PATHS), 1 => pick(PATHS)];
    let path_type = prop_oneof![6 => pick(&PATH_TYPES[..3]), 1 => pick(PATH_TYPES)];
    let rule = (
        host,
        prop::collection::vec((path, path_type, backend()), 1..3),
    )
        .prop_map(|(h, paths)| {
            let paths: Vec<Value> = paths
                .into_iter()
                .map(|(p, t, b)| json!({"path": p, "pathType": t, "backend": b}))
                .collect();
            json!({"host": h, "http": {"paths": paths}})
        });
    let tls = prop::collection::vec(
        (
            pick(&["tls-a", "tls-b", "tls-bad", "tls-missing"]),
            prop::collection::vec(
                prop_oneof![6 => pick(&GOOD_HOSTS[1..]), 1 => pick(HOSTS)],
                0..3,
            ),
        ),
        0..2,
    )
    .prop_map(|ts| {
        ts.into_iter()
            .map(|(s, hosts)| json!({"secretName": s, "hosts": hosts}))
            .collect::<Vec<_>>()
    });
    (
        pick(NAMESPACES),
        annotations(),
        prop_oneof![4 => Just(json!("kong")), 1 => Just(json!("other")), 1 => Just(Value::Null)],
        prop::collection::vec(rule, 0..3),
        tls,
        prop::option::of(backend()),
        0..4u8,
    )
        .prop_map(move |(ns, ann, class, rules, tls, default, ts)| {
            json!({
                "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
                "metadata": {"name": format!("ing-{i}"), "namespace": ns, "annotations": ann, "creationTimestamp": format!("2024-01-0{}T00:00:00Z", ts + 1)},
                "spec": {"ingressClassName": class, "rules": rules, "tls": tls, "defaultBackend": default}
            })
        })
}

fn service(ns: &'static str, name: &'static str) -> impl Strategy<Value = Value> {
    (
        annotations(),
        prop_oneof![4 => Just("ClusterIP"), 1 => Just("ExternalName")],
        pick(&["upstream.example.com", "bad host!"]),
        prop::collection::vec((pick(&["http", "grpc", ""]), pick(&["80", "443", "8080"])), 1..3),
    )
        .prop_map(move |(ann, ty, ext, ports)| {
            let ports: Vec<Value> = ports
                .into_iter()
                .map(|(n, p)| if n.is_empty() { json!({"port": p.parse::<i32>().unwrap_or(80)}) } else { json!({"name": n, "port": p.parse::<i32>().unwrap_or(80)}) })
                .collect();
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns, "annotations": ann},
                   "spec": {"type": ty, "externalName": ext, "ports": ports}})
        })
}

fn slice(ns: &'static str, svc: &'static str, i: usize) -> impl Strategy<Value = Value> {
    prop::collection::vec((pick(ADDRESSES), prop::option::of(any::<bool>()), prop::option::of(any::<bool>())), 0..4).prop_map(move |eps| {
        let eps: Vec<Value> = eps.into_iter().map(|(a, r, t)| json!({"addresses": [a], "conditions": {"ready": r, "terminating": t}})).collect();
        json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
               "metadata": {"name": format!("{svc}-{i}"), "namespace": ns, "labels": {"kubernetes.io/service-name": svc}},
               "addressType": "IPv4", "endpoints": eps, "ports": [{"name": "http", "port": 8080}, {"port": 80}]})
    })
}

fn secrets() -> Vec<Value> {
    let mut out = vec![];
    for ns in NAMESPACES {
        let text = common::expand(&format!(
            r#"[
{{"apiVersion": "v1", "kind": "Secret", "metadata": {{"name": "tls-a", "namespace": "{ns}"}}, "data": {{"tls.crt": "@A_CRT@", "tls.key": "@A_KEY@"}}}},
{{"apiVersion": "v1", "kind": "Secret", "metadata": {{"name": "tls-b", "namespace": "{ns}"}}, "data": {{"tls.crt": "@B_CRT@", "tls.key": "@B_KEY@"}}}},
{{"apiVersion": "v1", "kind": "Secret", "metadata": {{"name": "tls-bad", "namespace": "{ns}"}}, "data": {{"tls.crt": "@A_CRT@", "tls.key": "@B_KEY@"}}}},
{{"apiVersion": "v1", "kind": "Secret", "metadata": {{"name": "ca", "namespace": "{ns}", "labels": {{"konghq.com/ca-cert": "true"}}}}, "data": {{"cert": "@CA_CRT@"}}}}
]"#
        ));
        let v: Vec<Value> = serde_json::from_str(&text).expect("secret fixtures");
        out.extend(v);
    }
    out
}

fn cluster() -> impl Strategy<Value = Vec<Value>> {
    let ingresses = (0..4usize).map(ingress).collect::<Vec<_>>();
    let mut services = vec![];
    let mut slices = vec![];
    for ns in NAMESPACES {
        for (i, s) in ["s1", "s2", "s3"].iter().enumerate() {
            services.push(service(ns, s));
            slices.push(slice(ns, s, i));
        }
    }
    let class = prop_oneof![
        Just(Value::Null),
        Just(
            json!({"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass", "metadata": {"name": "kong", "annotations": {"ingressclass.kubernetes.io/is-default-class": "true"}},
                    "spec": {"controller": "ingress-controllers.konghq.com/kong", "parameters": {"apiGroup": "configuration.konghq.com", "kind": "IngressClassParameters", "name": "p", "namespace": "a", "scope": "Namespace"}}})
        ),
    ];
    let params = (any::<bool>(), any::<bool>()).prop_map(|(su, legacy)| {
        json!({"apiVersion": "configuration.konghq.com/v1alpha1", "kind": "IngressClassParameters", "metadata": {"name": "p", "namespace": "a"},
               "spec": {"serviceUpstream": su, "enableLegacyRegexDetection": legacy}})
    });
    (ingresses, services, slices, class, params).prop_map(|(i, s, e, c, p)| {
        let mut all: Vec<Value> = i.into_iter().chain(s).chain(e).collect();
        if !c.is_null() {
            all.push(c);
        }
        all.push(p);
        all.extend(secrets());
        all
    })
}

fn objects(values: &[Value]) -> Objects {
    let mut o = Objects::new();
    for v in values {
        o.insert(v.clone()).unwrap_or_else(|e| panic!("{e}: {v}"));
    }
    o
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn output_loads_and_ignores_order(values in cluster().prop_flat_map(|v| { let s = Just(v.clone()).prop_shuffle(); (Just(v), s) }),
                                      drain in any::<bool>(), rewrite in any::<bool>()) {
        let (values, shuffled) = values;
        let a = objects(&values);
        let b = objects(&shuffled);
        for flavor in [RouterFlavor::TraditionalCompatible, RouterFlavor::Expressions] {
            let opts = TranslateOptions { router_flavor: flavor, enable_drain_support: drain, rewrite_uris: rewrite, ..Default::default() };
            let ta = translate(&a, &opts);
            let tb = translate(&b, &opts);
            common::assert_loads(&ta, flavor);
            prop_assert_eq!(ta.to_json(), tb.to_json());
            prop_assert_eq!(&ta.problems, &tb.problems);
            prop_assert_eq!(&ta.configured, &tb.configured);
        }
    }

    #[test]
    fn no_panic_on_arbitrary_specs(kind in pick(&["Ingress", "Service", "EndpointSlice", "IngressClass", "Secret"]),
                                   spec in arbitrary_json(), meta in arbitrary_json()) {
        let api = match kind { "Ingress" | "IngressClass" => "networking.k8s.io/v1", "EndpointSlice" => "discovery.k8s.io/v1", _ => "v1" };
        let mut o = Objects::new();
        let mut v = json!({"apiVersion": api, "kind": kind, "metadata": {"name": "x", "namespace": "n"}, "spec": spec.clone()});
        if let (Some(m), Value::Object(extra)) = (v.get_mut("metadata").and_then(Value::as_object_mut), meta) {
            m.extend(extra);
        }
        if kind == "EndpointSlice" {
            v["addressType"] = json!("IPv4");
            v["endpoints"] = spec;
        }
        let _ = o.insert(v);
        for flavor in [RouterFlavor::TraditionalCompatible, RouterFlavor::Expressions] {
            let t = translate(&o, &TranslateOptions { router_flavor: flavor, ..Default::default() });
            common::assert_loads(&t, flavor);
        }
    }

    #[test]
    fn no_panic_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let _ = Objects::from_yaml_documents(&bytes);
    }
}

fn arbitrary_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i32>().prop_map(|n| json!(n)),
        pick(&[
            "",
            "kong",
            "/a",
            "http",
            "a.example.com",
            "80",
            "Prefix",
            "ExternalName",
            "true"
        ])
        .prop_map(|s| json!(s)),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec(
                (
                    pick(&[
                        "rules",
                        "http",
                        "paths",
                        "path",
                        "pathType",
                        "backend",
                        "service",
                        "name",
                        "port",
                        "number",
                        "host",
                        "tls",
                        "hosts",
                        "secretName",
                        "ports",
                        "type",
                        "externalName",
                        "annotations",
                        "konghq.com/protocol",
                        "addresses",
                        "conditions",
                        "ingressClassName",
                        "defaultBackend",
                        "controller"
                    ]),
                    inner
                ),
                0..4
            )
            .prop_map(|kv| Value::Object(
                kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
            )),
        ]
    })
}
