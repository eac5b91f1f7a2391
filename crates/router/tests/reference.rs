//! Property test: on randomized route sets and requests, the router picks exactly what a
//! naive reference picks. The reference is Kong's own pipeline, written out plainly: each
//! route is turned into Kong's ATC expression text and priority (as `kong/router/transform.lua`
//! does, split by path group), loaded into `atc-router`'s `Router` (Kong's engine, which walks
//! every matcher in (priority, uuid) order), and executed against a context filled as Kong's
//! `fields.lua` fills it.

mod common;

use std::collections::HashMap;

use atc_router::ast::Value;
use atc_router::context::Context;
use atc_router::router::Router as AtcRouter;
use common::Req;
use proptest::prelude::*;
use silverback_config::{Config, Route, RouterFlavor};
use uuid::Uuid;

const HOSTS: &[&str] = &["a.com", "b.com", "*.a.com", "x.*", "a.com:8080", "c.a.com"];
const PATHS: &[&str] = &[
    "/",
    "/a",
    "/a/b",
    "/ab",
    "/b",
    "~/a/\\d+",
    "~/a/[a-z]+",
    "~/b.*",
    "/a/1",
    "~/(?<x>a)/(b)?",
];
const METHODS: &[&str] = &["GET", "POST"];
const SNIS: &[&str] = &["a.com", "*.a.com", "x.*"];
const HEADER_VALUES: &[&str] = &["1", "~*^t.*", "two"];

#[derive(Debug, Clone)]
struct RouteSpec {
    hosts: Vec<&'static str>,
    paths: Vec<&'static str>,
    methods: Vec<&'static str>,
    snis: Vec<&'static str>,
    headers: Vec<(&'static str, Vec<&'static str>)>,
    regex_priority: i64,
    strip_path: bool,
    id_hi: u32,
}

fn route_spec() -> impl Strategy<Value = RouteSpec> {
    (
        proptest::sample::subsequence(HOSTS.to_vec(), 0..=2),
        proptest::sample::subsequence(PATHS.to_vec(), 0..=3),
        proptest::sample::subsequence(METHODS.to_vec(), 0..=1),
        proptest::sample::subsequence(SNIS.to_vec(), 0..=1),
        proptest::option::of((
            prop::sample::select(vec!["x-v", "X_W"]),
            proptest::sample::subsequence(HEADER_VALUES.to_vec(), 1..=2),
        )),
        0i64..3,
        any::<bool>(),
        any::<u32>(),
    )
        .prop_map(
            |(hosts, paths, methods, snis, header, regex_priority, strip_path, id_hi)| RouteSpec {
                hosts,
                paths,
                methods,
                snis,
                headers: header.into_iter().collect(),
                regex_priority,
                strip_path,
                id_hi,
            },
        )
        .prop_filter("a route needs a matching field", |r| {
            !(r.hosts.is_empty()
                && r.paths.is_empty()
                && r.methods.is_empty()
                && r.snis.is_empty()
                && r.headers.is_empty())
        })
}

fn document(specs: &[RouteSpec]) -> String {
    let mut routes = Vec::new();
    for (i, r) in specs.iter().enumerate() {
        let mut m = serde_json::Map::new();
        m.insert("name".into(), format!("r{i}").into());
        m.insert(
            "id".into(),
            format!("{:08x}-0000-4000-8000-{:012x}", r.id_hi, i).into(),
        );
        m.insert("strip_path".into(), r.strip_path.into());
        m.insert("regex_priority".into(), r.regex_priority.into());
        for (k, v) in [
            ("hosts", &r.hosts),
            ("paths", &r.paths),
            ("methods", &r.methods),
            ("snis", &r.snis),
        ] {
            if !v.is_empty() {
                m.insert(k.into(), serde_json::json!(v));
            }
        }
        if !r.headers.is_empty() {
            let h: serde_json::Map<String, serde_json::Value> = r
                .headers
                .iter()
                .map(|(k, v)| (k.to_string(), serde_json::json!(v)))
                .collect();
            m.insert("headers".into(), h.into());
        }
        routes.push(serde_json::Value::Object(m));
    }
    serde_json::json!({"_format_version": "3.0", "routes": routes}).to_string()
}

// ---- Kong's transform, written out ------------------------------------------------------

fn raw(s: &str) -> String {
    format!("r#\"{s}\"#")
}

fn split_host_port(h: &str) -> (&str, Option<u16>) {
    match h.split_once(':') {
        Some((host, port)) => match port.parse::<u16>() {
            Ok(p) => (host, Some(p)),
            Err(_) => (h, None),
        },
        None => (h, None),
    }
}

fn kong_expression(route: &Route, paths: &[String]) -> String {
    let mut out: Vec<String> = Vec::new();
    if !route.snis.is_empty() {
        let alts: Vec<String> = route
            .snis
            .iter()
            .map(|s| {
                if let Some(p) = s.strip_suffix('*') {
                    format!("tls.sni ^= {}", raw(p))
                } else {
                    let s = if s.len() > 1 {
                        s.strip_suffix('.').unwrap_or(s)
                    } else {
                        s
                    };
                    match s.strip_prefix('*') {
                        Some(rest) => format!("tls.sni =^ {}", raw(rest)),
                        None => format!("tls.sni == {}", raw(s)),
                    }
                }
            })
            .collect();
        out.push(format!(
            "(net.protocol != r#\"https\"# || ({}))",
            alts.join(" || ")
        ));
    }
    if !route.methods.is_empty() {
        let alts: Vec<String> = route
            .methods
            .iter()
            .map(|m| format!("http.method == {}", raw(m)))
            .collect();
        out.push(format!("({})", alts.join(" || ")));
    }
    if !route.hosts.is_empty() {
        let alts: Vec<String> = route
            .hosts
            .iter()
            .map(|h| {
                let (host, port) = split_host_port(h);
                let e = if let Some(rest) = host.strip_prefix('*') {
                    format!("http.host =^ {}", raw(rest))
                } else if let Some(rest) = host.strip_suffix('*') {
                    format!("http.host ^= {}", raw(rest))
                } else {
                    format!("http.host == {}", raw(host))
                };
                match port {
                    Some(p) => format!("({e} && net.dst.port == {p})"),
                    None => e,
                }
            })
            .collect();
        out.push(format!("({})", alts.join(" || ")));
    }
    if !paths.is_empty() {
        let alts: Vec<String> = paths
            .iter()
            .map(|p| match p.strip_prefix('~') {
                Some(re) => format!(
                    "http.path ~ {}",
                    raw(&format!("^{}", re.replace("?<", "?P<")))
                ),
                None => format!("http.path ^= {}", raw(p)),
            })
            .collect();
        out.push(format!("({})", alts.join(" || ")));
    }
    for (name, values) in &route.headers {
        let field = format!(
            "any(lower(http.headers.{}))",
            name.replace('-', "_").to_ascii_lowercase()
        );
        let alts: Vec<String> = values
            .iter()
            .map(|v| match v.strip_prefix("~*") {
                Some(re) => format!("{field} ~ {}", raw(&re.to_ascii_lowercase())),
                None => format!("{field} == {}", raw(&v.to_ascii_lowercase())),
            })
            .collect();
        out.push(format!("({})", alts.join(" || ")));
    }
    out.join(" && ")
}

fn kong_priority(route: &Route, paths: &[String]) -> u64 {
    let weight = [
        !route.methods.is_empty(),
        !route.hosts.is_empty(),
        !route.headers.is_empty(),
        !route.snis.is_empty(),
        !paths.is_empty(),
    ]
    .iter()
    .filter(|b| **b)
    .count() as u64;
    let plain = !route.hosts.is_empty() && route.hosts.iter().all(|h| !h.contains('*'));
    let regex = paths.first().is_some_and(|p| p.starts_with('~'));
    let len = if regex {
        0
    } else {
        paths.first().map_or(0, |p| p.len() as u64)
    };
    let mut p = weight << 61 | (route.headers.len() as u64) << 52 | len;
    if plain {
        p |= 1 << 60;
    }
    if regex {
        p |= 1 << 51 | (route.regex_priority as u64) << 19;
    }
    p
}

fn schema() -> &'static atc_router::schema::Schema {
    static SCHEMA: std::sync::OnceLock<atc_router::schema::Schema> = std::sync::OnceLock::new();
    SCHEMA.get_or_init(silverback_config::expression::http_schema)
}

struct Reference {
    /// matcher uuid -> route index
    owners: HashMap<Uuid, usize>,
    router: AtcRouter<'static>,
}

impl Reference {
    fn new(cfg: &Config) -> Self {
        let ns = Uuid::parse_str("7f145bf9-0dce-4f91-98eb-debbce4b9f6b").expect("ns");
        let mut owners = HashMap::new();
        let mut matchers = Vec::new();
        for (i, r) in cfg.routes.iter().enumerate() {
            // group paths: one group of regexes, one per prefix length, in order of appearance
            let mut groups: Vec<(Option<usize>, Vec<String>)> = Vec::new();
            for p in &r.paths {
                let k = if p.starts_with('~') {
                    None
                } else {
                    Some(p.len())
                };
                match groups.iter_mut().find(|(g, _)| *g == k) {
                    Some((_, v)) => v.push(p.clone()),
                    None => groups.push((k, vec![p.clone()])),
                }
            }
            if groups.len() <= 1 {
                let paths = groups.pop().map(|(_, v)| v).unwrap_or_default();
                owners.insert(r.id, i);
                matchers.push((kong_priority(r, &paths), r.id, kong_expression(r, &paths)));
            } else {
                for (g, (_, paths)) in groups.iter().enumerate() {
                    let id = Uuid::new_v5(&ns, format!("{}#{}", r.id, g + 1).as_bytes());
                    owners.insert(id, i);
                    matchers.push((kong_priority(r, paths), id, kong_expression(r, paths)));
                }
            }
        }
        Reference::from_matchers(owners, &matchers)
    }

    /// Kong's expressions flavor: each route's `expression`, with `&& (net.protocol == ...)`
    /// appended unless its protocols are exactly `[https]`, at the route's `priority`.
    fn expressions(cfg: &Config) -> Self {
        let mut owners = HashMap::new();
        let mut matchers = Vec::new();
        for (i, r) in cfg.routes.iter().enumerate() {
            let expr = r.expression.clone().expect("expression route");
            let names: Vec<&str> = r.protocols.iter().map(|p| p.as_str()).collect();
            let expr = if names == ["https"] {
                expr
            } else {
                let alts: Vec<String> = names
                    .iter()
                    .map(|p| format!("net.protocol == {}", raw(p)))
                    .collect();
                format!("({expr}) && ({})", alts.join(" || "))
            };
            owners.insert(r.id, i);
            matchers.push((r.priority.unwrap_or(0), r.id, expr));
        }
        Reference::from_matchers(owners, &matchers)
    }

    fn from_matchers(owners: HashMap<Uuid, usize>, matchers: &[(u64, Uuid, String)]) -> Self {
        let mut router = AtcRouter::new(schema());
        for (p, id, e) in matchers {
            router
                .add_matcher(*p as usize, *id, e)
                .unwrap_or_else(|err| panic!("{e}: {err}"));
        }
        Reference { owners, router }
    }

    /// (route index, the `http.path` text that matched)
    fn find(&self, req: &Req) -> Option<(usize, Option<String>)> {
        let router = &self.router;
        let mut c = Context::new(schema());
        let (host, port) = split_host_port(&req.host);
        // (a path whose escapes are not UTF-8 fails the match where a route reads it, as
        // atc-router refuses the value in Kong)
        let (path, utf8) = match silverback_config::uri::try_normalize(&req.path, true) {
            Ok(p) => (p, true),
            Err(lossy) => (lossy, false),
        };
        if !utf8 && router.fields.keys().any(|f| f.starts_with("http.path")) {
            return None;
        }
        for f in router.fields.keys() {
            match f.as_str() {
                "http.method" => c.add_value(f, Value::String(req.method.clone())),
                "http.host" if !host.is_empty() => c.add_value(f, Value::String(host.to_string())),
                "http.path" => c.add_value(f, Value::String(path.clone())),
                "net.dst.port" => c.add_value(f, Value::Int(i64::from(port.unwrap_or(req.port)))),
                "net.protocol" => c.add_value(f, Value::String(req.scheme.as_str().to_string())),
                "tls.sni" => {
                    if let Some(s) = &req.sni {
                        c.add_value(f, Value::String(s.clone()))
                    }
                }
                other => {
                    if let Some(h) = other.strip_prefix("http.headers.") {
                        for v in req.headers.get_all(h.replace('_', "-")) {
                            c.add_value(f, Value::String(v.to_str().expect("ascii").to_string()));
                        }
                    }
                }
            }
        }
        if !router.execute(&mut c) {
            return None;
        }
        let m = c.result.expect("result");
        let path = match m.matches.get("http.path") {
            Some(Value::String(s)) => Some(s.clone()),
            _ => None,
        };
        Some((self.owners[&m.uuid], path))
    }
}

fn request() -> impl Strategy<Value = Req> {
    (
        prop::sample::select(vec!["GET", "POST"]),
        prop::sample::select(vec![
            "a.com",
            "b.com",
            "c.a.com",
            "x.org",
            "a.com:8080",
            "",
            "A.com",
            "d.c.a.com",
            "x.a.com:8000",
        ]),
        prop::sample::select(vec![8000u16, 8080]),
        prop::sample::select(vec![
            "/",
            "/a",
            "/a/b",
            "/a/1",
            "/ab",
            "/b/x",
            "/a/./b",
            "/a//b",
            "/A",
            "/a/zz",
            "/bb",
            "/a/b/../1",
            "/%61/2",
            "/ab/",
        ]),
        prop::option::of(prop::sample::select(vec![
            "a.com", "q.a.com", "z.com", "x.y",
        ])),
        any::<bool>(),
        prop::option::of(prop::sample::select(vec!["1", "T1", "two", "Two"])),
        prop::option::of(prop::sample::select(vec!["1", "t", "x"])),
    )
        .prop_map(|(method, host, port, path, sni, https, xv, xw)| {
            let mut r = Req::new(method, host, path).port(port);
            if https {
                r = r.https(sni);
            }
            if let Some(v) = xv {
                r = r.header("x-v", v);
            }
            if let Some(v) = xw {
                r = r.header("x-w", v).header("x-w", "other");
            }
            r
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 160, ..ProptestConfig::default() })]

    #[test]
    fn router_equals_kong_reference(specs in prop::collection::vec(route_spec(), 1..30), reqs in prop::collection::vec(request(), 1..20)) {
        let doc = document(&specs);
        let cfg = common::load(RouterFlavor::TraditionalCompatible, &doc);
        let router = silverback_router::Router::new(cfg.clone(), RouterFlavor::TraditionalCompatible).expect("router");
        let reference = Reference::new(&cfg);
        for req in &reqs {
            let ours = router.find(&req.view());
            let linear = router.find_linear(&req.view());
            prop_assert_eq!(ours.as_ref().map(|m| m.route.id), linear.as_ref().map(|m| m.route.id));
            let want = reference.find(req);
            prop_assert_eq!(
                ours.as_ref().map(|m| m.route.name.clone().unwrap_or_default()),
                want.as_ref().map(|(i, _)| format!("r{i}")),
                "request {:?}\ndoc {}", req, doc
            );
            if let (Some(m), Some((_, path))) = (&ours, &want)
                && m.route.strip_path
            {
                prop_assert_eq!(m.stripped_prefix.as_deref(), path.as_deref(), "prefix for {:?}", req);
            }
        }
    }
}

// ---- expressions flavor -----------------------------------------------------------------

/// Predicates over what the requests vary; wildcard hosts with and without a label
/// boundary, prefixes, equality, anchored and unanchored regexes (some with captures),
/// transformations, ports.
const PREDICATES: &[&str] = &[
    r##"http.host == "a.com""##,
    r##"http.host == "b.com""##,
    r##"http.host =^ ".a.com""##,
    r##"http.host =^ "a.com""##,
    r##"http.host ^= "x.""##,
    r##"http.path ^= "/a""##,
    r##"http.path ^= "/a/b""##,
    r##"http.path ^= "/b""##,
    r##"http.path == "/a""##,
    r##"http.path ~ r#"^/a/\d+"#"##,
    r##"http.path ~ r#"^/(?P<x>a)/(b)?"#"##,
    r##"http.path ~ r#"/b"#"##,
    r##"http.method == "GET""##,
    r##"http.headers.x_v == "1""##,
    r##"lower(http.headers.x_v) == "two""##,
    r##"net.dst.port == 8080"##,
];

#[derive(Debug, Clone)]
struct ExprSpec {
    /// Conjuncts; each is one predicate or an `||` of two, possibly negated.
    terms: Vec<(usize, Option<usize>, bool)>,
    priority: u64,
    protocols: Option<&'static [&'static str]>,
    strip_path: bool,
    id_hi: u32,
}

impl ExprSpec {
    fn expression(&self) -> String {
        let terms: Vec<String> = self
            .terms
            .iter()
            .map(|&(a, b, not)| {
                let t = match b {
                    Some(b) => format!("({} || {})", PREDICATES[a], PREDICATES[b]),
                    None => PREDICATES[a].to_string(),
                };
                if not { format!("!({t})") } else { t }
            })
            .collect();
        terms.join(" && ")
    }
}

fn expr_spec() -> impl Strategy<Value = ExprSpec> {
    let n = PREDICATES.len();
    let term = (
        0..n,
        prop::option::weighted(0.25, 0..n),
        prop::bool::weighted(0.1),
    );
    (
        prop::collection::vec(term, 1..=3),
        0u64..3,
        prop::option::of(prop::sample::select(vec![
            &["https"][..],
            &["http"][..],
            &["http", "https"][..],
        ])),
        any::<bool>(),
        any::<u32>(),
    )
        .prop_map(|(terms, priority, protocols, strip_path, id_hi)| ExprSpec {
            terms,
            priority,
            protocols,
            strip_path,
            id_hi,
        })
}

fn expr_document(specs: &[ExprSpec]) -> String {
    let routes: Vec<serde_json::Value> = specs
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let mut m = serde_json::json!({
                "name": format!("r{i}"),
                "id": format!("{:08x}-0000-4000-8000-{:012x}", r.id_hi, i),
                "expression": r.expression(),
                "priority": r.priority,
                "strip_path": r.strip_path,
            });
            if let Some(p) = r.protocols {
                m["protocols"] = serde_json::json!(p);
            }
            m
        })
        .collect();
    serde_json::json!({"_format_version": "3.0", "routes": routes}).to_string()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 160, ..ProptestConfig::default() })]

    #[test]
    fn expressions_router_equals_kong_reference(specs in prop::collection::vec(expr_spec(), 1..25), reqs in prop::collection::vec(request(), 1..20)) {
        let doc = expr_document(&specs);
        let cfg = common::load(RouterFlavor::Expressions, &doc);
        let router = silverback_router::Router::new(cfg.clone(), RouterFlavor::Expressions).expect("router");
        let reference = Reference::expressions(&cfg);
        for req in &reqs {
            let ours = router.find(&req.view());
            let linear = router.find_linear(&req.view());
            prop_assert_eq!(ours.as_ref().map(|m| m.route.id), linear.as_ref().map(|m| m.route.id));
            let want = reference.find(req);
            prop_assert_eq!(
                ours.as_ref().map(|m| m.route.name.clone().unwrap_or_default()),
                want.as_ref().map(|(i, _)| format!("r{i}")),
                "request {:?}\ndoc {}", req, doc
            );
            if let (Some(m), Some((_, path))) = (&ours, &want)
                && m.route.strip_path
            {
                prop_assert_eq!(m.stripped_prefix.as_deref(), path.as_deref(), "prefix for {:?}", req);
            }
        }
    }
}
