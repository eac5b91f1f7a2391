//! Table-driven tests pinning Kong's documented router behaviour, case by case: priority
//! order, wildcard hosts, regex vs prefix, headers, SNIs, protocols, normalization, the
//! strip_path / path_handling table, captures, and the expressions flavor.

mod common;

use common::{Req, compat, must, route_name, router};
use http::{HeaderName, HeaderValue};
use silverback_config::RouterFlavor;

/// (request, expected route name or None)
fn check(doc: &str, cases: &[(Req, Option<&str>)]) {
    let r = compat(doc);
    for (req, want) in cases {
        assert_eq!(route_name(&r, req).as_deref(), *want, "request {req:?}");
    }
}

#[test]
fn priority_more_fields_win() {
    check(
        r#"
_format_version: "3.0"
routes:
- {name: path-only, paths: ["/foo"]}
- {name: path-method, paths: ["/foo"], methods: ["GET"]}
- {name: path-method-header, paths: ["/foo"], methods: ["GET"], headers: {x-v: ["1"]}}
"#,
        &[
            (Req::get("a.com", "/foo"), Some("path-method")),
            (Req::new("POST", "a.com", "/foo"), Some("path-only")),
            (
                Req::get("a.com", "/foo").header("x-v", "1"),
                Some("path-method-header"),
            ),
            (
                Req::new("PUT", "a.com", "/foo").header("x-v", "1"),
                Some("path-only"),
            ),
            (Req::get("a.com", "/bar"), None),
        ],
    );
}

#[test]
fn priority_plain_host_beats_wildcard_then_headers_then_regex() {
    check(
        r#"
_format_version: "3.0"
routes:
- {name: wild, hosts: ["*.example.com"], paths: ["/"]}
- {name: plain, hosts: ["api.example.com"], paths: ["/"]}
- {name: mixed, hosts: ["web.example.com", "*.example.org"], paths: ["/"]}
- {name: plain-web, hosts: ["web.example.com"], paths: ["/x"]}
"#,
        &[
            (Req::get("api.example.com", "/a"), Some("plain")),
            (Req::get("other.example.com", "/a"), Some("wild")),
            // a route with any wildcard host is not "plain host only"
            (Req::get("web.example.com", "/x"), Some("plain-web")),
            (Req::get("web.example.com", "/y"), Some("mixed")),
        ],
    );
    // more header names beat fewer, whatever the paths
    check(
        r#"
_format_version: "3.0"
routes:
- {name: one-header, headers: {x-a: ["1"]}, paths: ["/long/path/here"]}
- {name: two-headers, headers: {x-a: ["1"], x-b: ["2"]}, paths: ["/"]}
"#,
        &[
            (
                Req::get("h", "/long/path/here")
                    .header("x-a", "1")
                    .header("x-b", "2"),
                Some("two-headers"),
            ),
            (
                Req::get("h", "/long/path/here").header("x-a", "1"),
                Some("one-header"),
            ),
        ],
    );
}

#[test]
fn regex_beats_prefix_and_regex_priority_orders_regexes() {
    check(
        r#"
_format_version: "3.0"
routes:
- {name: long-prefix, paths: ["/users/42/profile/settings"]}
- {name: regex-low, paths: ["~/users/\\d+"]}
- {name: regex-high, paths: ["~/users/4"], regex_priority: 10}
- {name: short-prefix, paths: ["/users"]}
"#,
        &[
            (
                Req::get("h", "/users/42/profile/settings"),
                Some("regex-high"),
            ),
            (Req::get("h", "/users/7"), Some("regex-low")),
            (Req::get("h", "/users/x"), Some("short-prefix")),
        ],
    );
}

#[test]
fn longer_prefix_wins_and_prefixes_are_not_segment_aware() {
    check(
        r#"
_format_version: "3.0"
routes:
- {name: root, paths: ["/"]}
- {name: a, paths: ["/a"]}
- {name: ab, paths: ["/a/b"]}
"#,
        &[
            (Req::get("h", "/a/b/c"), Some("ab")),
            (Req::get("h", "/a/x"), Some("a")),
            (Req::get("h", "/abc"), Some("a")),
            (Req::get("h", "/a/bcd"), Some("ab")),
            (Req::get("h", "/z"), Some("root")),
        ],
    );
}

#[test]
fn regex_paths_are_anchored_at_the_start_only() {
    check(
        r#"
_format_version: "3.0"
routes:
- {name: re, paths: ["~/x/\\d+"]}
"#,
        &[
            (Req::get("h", "/x/1/more"), Some("re")),
            (Req::get("h", "/a/x/1"), None),
            (Req::get("h", "/x/y"), None),
        ],
    );
}

#[test]
fn paths_are_split_by_group_so_each_group_has_its_own_priority() {
    // "split" has a short and a long prefix: each length is its own matcher, so "/abc"
    // (length 4) beats split's "/" group but loses to its "/abc/def" group.
    check(
        r#"
_format_version: "3.0"
routes:
- {name: split, paths: ["/", "/abc/def", "~/re/\\d+"]}
- {name: abc, paths: ["/abc"]}
- {name: re-prefix, paths: ["/re/1/2/3/4/5"]}
"#,
        &[
            (Req::get("h", "/abc/def/x"), Some("split")),
            (Req::get("h", "/abc/x"), Some("abc")),
            (Req::get("h", "/zzz"), Some("split")),
            (Req::get("h", "/re/1/2/3/4/5"), Some("split")),
        ],
    );
    let r = compat(
        r#"
_format_version: "3.0"
routes:
- {name: split, paths: ["/", "/abc/def", "~/re/\\d+"]}
"#,
    );
    assert_eq!(r.matcher_count(), 3);
    assert_eq!(
        must(&r, &Req::get("h", "/abc/def/x")).matched_path,
        Some("/abc/def")
    );
    assert_eq!(
        must(&r, &Req::get("h", "/re/9")).matched_path,
        Some("~/re/\\d+")
    );
    assert_eq!(must(&r, &Req::get("h", "/q")).matched_path, Some("/"));
}

#[test]
fn ties_go_to_the_larger_uuid() {
    let doc = |a: &str, b: &str| {
        format!(
            r#"
_format_version: "3.0"
routes:
- {{name: first, id: "{a}", paths: ["/same"]}}
- {{name: second, id: "{b}", paths: ["/same"]}}
"#
        )
    };
    let lo = "00000000-0000-4000-8000-000000000001";
    let hi = "ffffffff-0000-4000-8000-000000000001";
    check(&doc(lo, hi), &[(Req::get("h", "/same"), Some("second"))]);
    check(&doc(hi, lo), &[(Req::get("h", "/same"), Some("first"))]);
}

#[test]
fn wildcard_hosts() {
    check(
        r#"
_format_version: "3.0"
routes:
- {name: suffix, hosts: ["*.example.com"]}
- {name: prefix, hosts: ["example.*"]}
- {name: exact, hosts: ["exact.test"]}
"#,
        &[
            (Req::get("a.example.com", "/"), Some("suffix")),
            (Req::get("a.b.example.com", "/"), Some("suffix")),
            (Req::get("example.com", "/"), Some("prefix")),
            (Req::get("example.org", "/"), Some("prefix")),
            (Req::get("example.co.uk", "/"), Some("prefix")),
            (Req::get("www.example.org", "/"), None),
            (Req::get("exact.test", "/"), Some("exact")),
            (Req::get("exact.test:8443", "/"), Some("exact")),
            (Req::get("sub.exact.test", "/"), None),
            // Kong compares the Host as received (no lowercasing)
            (Req::get("Exact.test", "/"), None),
            (Req::get("", "/"), None),
        ],
    );
}

#[test]
fn host_with_port_uses_the_host_header_port_else_the_listener_port() {
    check(
        r#"
_format_version: "3.0"
routes:
- {name: p8080, hosts: ["api.test:8080"]}
- {name: any, hosts: ["api.test"], paths: ["/any"]}
"#,
        &[
            (Req::get("api.test:8080", "/"), Some("p8080")),
            (Req::get("api.test", "/").port(8080), Some("p8080")),
            (Req::get("api.test", "/").port(8000), None),
            (Req::get("api.test:8000", "/").port(8080), None),
            (Req::get("api.test:8000", "/any"), Some("any")),
        ],
    );
    let r = compat(
        "_format_version: \"3.0\"\nroutes:\n- {name: p, hosts: [\"x.test\", \"api.test:8080\"]}\n",
    );
    assert_eq!(
        must(&r, &Req::get("api.test:8080", "/")).matched_host,
        Some("api.test:8080")
    );
}

#[test]
fn methods_are_exact() {
    check(
        r#"
_format_version: "3.0"
routes:
- {name: m, methods: ["GET", "HEAD"]}
"#,
        &[
            (Req::new("GET", "h", "/"), Some("m")),
            (Req::new("HEAD", "h", "/"), Some("m")),
            (Req::new("POST", "h", "/"), None),
            (Req::new("get", "h", "/"), None),
        ],
    );
}

#[test]
fn headers_values_lowercased_any_value_regex() {
    check(
        r#"
_format_version: "3.0"
routes:
- {name: h, headers: {X-Version: ["V1", "v2"], x_tenant: ["~*^ACME-\\d+$"]}}
"#,
        &[
            (
                Req::get("h", "/")
                    .header("x-version", "v1")
                    .header("x-tenant", "acme-1"),
                Some("h"),
            ),
            (
                Req::get("h", "/")
                    .header("x-version", "V2")
                    .header("x-tenant", "ACME-22"),
                Some("h"),
            ),
            // one of several values of a repeated header is enough
            (
                Req::get("h", "/")
                    .header("x-version", "v9")
                    .header("x-version", "v1")
                    .header("x-tenant", "acme-3"),
                Some("h"),
            ),
            (
                Req::get("h", "/")
                    .header("x-version", "v3")
                    .header("x-tenant", "acme-1"),
                None,
            ),
            (
                Req::get("h", "/")
                    .header("x-version", "v1")
                    .header("x-tenant", "acme-x"),
                None,
            ),
            (Req::get("h", "/").header("x-version", "v1"), None),
        ],
    );
}

#[test]
fn snis_only_apply_to_tls_requests() {
    check(
        r#"
_format_version: "3.0"
routes:
- {name: tls, snis: ["api.test", "*.wild.test"], paths: ["/s"], protocols: ["https"]}
"#,
        &[
            (Req::get("h", "/s").https(Some("api.test")), Some("tls")),
            (Req::get("h", "/s").https(Some("a.wild.test")), Some("tls")),
            (Req::get("h", "/s").https(Some("other.test")), None),
            (Req::get("h", "/s").https(None), None),
            // plain http: the SNI clause does not apply (and the https-only route still
            // matches so that the proxy can answer 426)
            (Req::get("h", "/s"), Some("tls")),
        ],
    );
}

/// Kong 3.7+ (`kong/router/transform.lua`): a route SNI with a leading `*` is a suffix match
/// of what follows it (the catch-all `*` matches every SNI), one with a trailing `*` a prefix
/// match of what precedes it; a trailing dot is dropped from the other forms.
#[test]
fn sni_wildcards_are_kongs_suffix_and_prefix_matches() {
    let doc = r#"
_format_version: "3.0"
routes:
- {name: exact, snis: ["api.test."], paths: ["/s"], protocols: ["https"]}
- {name: suffix, snis: ["*foo.example.com"], paths: ["/s"], protocols: ["https"]}
- {name: label, snis: ["*.wild.test."], paths: ["/s"], protocols: ["https"]}
- {name: prefix, snis: ["example.co*"], paths: ["/s"], protocols: ["https"]}
- {name: any, snis: ["*"], paths: ["/any"], protocols: ["https"]}
"#;
    let cases = [
        (Req::get("h", "/s").https(Some("api.test")), Some("exact")),
        (
            Req::get("h", "/s").https(Some("foo.example.com")),
            Some("suffix"),
        ),
        (
            Req::get("h", "/s").https(Some("xfoo.example.com")),
            Some("suffix"),
        ),
        (
            Req::get("h", "/s").https(Some("a.b.foo.example.com")),
            Some("suffix"),
        ),
        (Req::get("h", "/s").https(Some("oo.example.com")), None),
        (
            Req::get("h", "/s").https(Some("a.wild.test")),
            Some("label"),
        ),
        (Req::get("h", "/s").https(Some("wild.test")), None),
        (
            Req::get("h", "/s").https(Some("example.com")),
            Some("prefix"),
        ),
        (
            Req::get("h", "/s").https(Some("example.co.uk")),
            Some("prefix"),
        ),
        (Req::get("h", "/s").https(Some("example.c")), None),
        (
            Req::get("h", "/any").https(Some("anything.test")),
            Some("any"),
        ),
        (Req::get("h", "/any").https(Some("x")), Some("any")),
        // no SNI: the catch-all does not apply
        (Req::get("h", "/any").https(None), None),
    ];
    for flavor in [
        RouterFlavor::TraditionalCompatible,
        RouterFlavor::Expressions,
    ] {
        let r = router(flavor, doc);
        for (req, want) in &cases {
            assert_eq!(
                route_name(&r, req).as_deref(),
                *want,
                "{flavor:?} request {req:?}"
            );
        }
    }
}

#[test]
fn protocols_do_not_filter_in_compat_but_do_in_expressions() {
    let doc = r#"
_format_version: "3.0"
routes:
- {name: http-only, protocols: ["http"], paths: ["/h"]}
- {name: https-only, protocols: ["https"], paths: ["/s"]}
- {name: grpc, protocols: ["grpc"], paths: ["/g"], strip_path: false}
- {name: stream, protocols: ["tcp"], destinations: [{port: 9000}]}
"#;
    check(
        doc,
        &[
            (Req::get("h", "/h").https(None), Some("http-only")),
            (Req::get("h", "/s"), Some("https-only")),
            (Req::get("h", "/g"), Some("grpc")),
        ],
    );
    let r = router(RouterFlavor::Expressions, doc);
    assert_eq!(
        route_name(&r, &Req::get("h", "/h")).as_deref(),
        Some("http-only")
    );
    assert_eq!(route_name(&r, &Req::get("h", "/h").https(None)), None);
    // https-only: no protocol clause, so the proxy can redirect
    assert_eq!(
        route_name(&r, &Req::get("h", "/s")).as_deref(),
        Some("https-only")
    );
    // grpc maps to http
    assert_eq!(
        route_name(&r, &Req::get("h", "/g")).as_deref(),
        Some("grpc")
    );
    assert_eq!(route_name(&r, &Req::get("h", "/g").https(None)), None);
    // stream routes are not HTTP routes
    assert_eq!(r.matcher_count(), 3);
}

#[test]
fn disabled_services_and_serviceless_routes() {
    let r = compat(
        r#"
_format_version: "3.0"
services:
- name: "off"
  url: http://127.0.0.1:1
  enabled: false
  routes: [{name: off-route, paths: ["/off"]}]
- name: "on"
  url: http://127.0.0.1:2/base
  routes: [{name: on-route, paths: ["/on"]}]
routes:
- {name: lonely, paths: ["/lonely"]}
"#,
    );
    assert_eq!(route_name(&r, &Req::get("h", "/off")), None);
    assert_eq!(
        must(&r, &Req::get("h", "/on"))
            .service
            .map(|s| s.name.as_deref()),
        Some(Some("on"))
    );
    let m = must(&r, &Req::get("h", "/lonely/x"));
    assert!(m.service.is_none());
    assert_eq!(m.upstream_path, "/x");
}

#[test]
fn request_paths_are_normalized_before_matching() {
    check(
        r#"
_format_version: "3.0"
routes:
- {name: bar, paths: ["/bar"]}
- {name: foobar, paths: ["/foo/bar"]}
- {name: tilde, paths: ["/~user"]}
"#,
        &[
            (Req::get("h", "/foo/../bar"), Some("bar")),
            (Req::get("h", "/foo//bar"), Some("foobar")),
            (Req::get("h", "/foo/./bar"), Some("foobar")),
            (Req::get("h", "/%66oo/bar"), Some("foobar")),
            (Req::get("h", "/%7Euser"), Some("tilde")),
            // reserved characters stay encoded
            (Req::get("h", "/foo%2Fbar"), None),
        ],
    );
    let r = compat("_format_version: \"3.0\"\nroutes:\n- {name: f, paths: [\"/foo\"]}\n");
    assert_eq!(
        must(&r, &Req::get("h", "/x/../foo//a/./b")).upstream_path,
        "/a/b"
    );
}

/// Kong's `normalize` decodes every escape but a reserved character's: "others" (a space,
/// `"`, bytes past ASCII) are matched, captured and stripped as themselves (the upstream
/// path is escaped again by the proxy); a path whose escapes are not UTF-8 matches nothing
/// where a route reads the path, as atc-router refuses the value.
#[test]
fn escapes_of_other_characters_are_decoded_before_matching() {
    let doc = r#"
_format_version: "3.0"
routes:
- {name: words, paths: ["~/search/(?<q>[a-z]+ [a-z]+)$"], strip_path: false}
- {name: cafe, paths: ["~/café/(?<rest>.+)"]}
- {name: any, paths: ["/"]}
"#;
    let r = compat(doc);
    let m = must(&r, &Req::get("h", "/search/foo%20bar"));
    assert_eq!(
        route_name(&r, &Req::get("h", "/search/foo%20bar")).as_deref(),
        Some("words")
    );
    assert_eq!(m.captures.by_key("q"), Some("foo bar"));
    assert_eq!(m.upstream_path, "/search/foo bar");
    let m = must(&r, &Req::get("h", "/caf%C3%A9/%22x%22"));
    assert_eq!(m.captures.by_key("rest"), Some("\"x\""));
    // (strip_path takes off what the regex matched)
    assert_eq!(m.upstream_path, "/");
    // reserved characters stay escaped
    let m = must(&r, &Req::get("h", "/search/a%2Fb"));
    assert_eq!(m.upstream_path, "/search/a%2Fb");
    // not UTF-8 once decoded: nothing matches, not even `/`
    for p in ["/%FF", "/caf%E9/x", "/a%C3"] {
        assert_eq!(route_name(&r, &Req::get("h", p)), None, "{p}");
    }
    // ...unless no route reads the path
    let hosts = compat("_format_version: \"3.0\"\nroutes:\n- {name: h, hosts: [a.test]}\n");
    assert_eq!(
        route_name(&hosts, &Req::get("a.test", "/%FF")).as_deref(),
        Some("h")
    );
    // (and the escapes past ASCII go upstream as they came, those of ASCII decoded)
    assert_eq!(
        must(&hosts, &Req::get("a.test", "/%FF/a%20b")).upstream_path,
        "/%FF/a b"
    );
}

/// atc-router takes only UTF-8 values: a request whose value of a header or query argument
/// some route reads is not UTF-8 matches nothing (Kong's context refuses the value before any
/// route is tried), nor does one whose host is not when some route reads hosts (the caller
/// checks that one: `Router::reads_host`). The `traditional` flavor reads bytes.
#[test]
fn values_that_are_not_utf8_match_nothing_where_they_are_read() {
    let doc = r#"
_format_version: "3.0"
routes:
- {name: v2, paths: ["/"], headers: {x-version: ["2"]}}
- {name: any, paths: ["/"]}
"#;
    let r = compat(doc);
    let latin1 = |name: &str| {
        let mut q = Req::get("h", "/");
        q.headers.append(
            HeaderName::from_bytes(name.as_bytes()).expect("name"),
            HeaderValue::from_bytes(b"caf\xe9").expect("value"),
        );
        q
    };
    assert_eq!(route_name(&r, &Req::get("h", "/")).as_deref(), Some("any"));
    assert_eq!(route_name(&r, &latin1("x-version")), None);
    // a header no route reads does not count
    assert_eq!(route_name(&r, &latin1("x-other")).as_deref(), Some("any"));
    // UTF-8 past ASCII is a value like any other
    assert_eq!(
        route_name(&r, &Req::get("h", "/").header("x-version", "café")).as_deref(),
        Some("any")
    );
    let trad = router(RouterFlavor::Traditional, doc);
    assert_eq!(
        route_name(&trad, &latin1("x-version")).as_deref(),
        Some("any")
    );
    assert!(!r.reads_host() && !trad.reads_host());
    let hosts = compat("_format_version: \"3.0\"\nroutes:\n- {name: h, hosts: [a.test]}\n");
    assert!(hosts.reads_host());

    let q = router(
        RouterFlavor::Expressions,
        r#"
_format_version: "3.0"
routes:
- {name: beta, expression: 'http.queries.beta == "1"', priority: 2}
- {name: rest, expression: 'http.path ^= "/"', priority: 1}
"#,
    );
    assert_eq!(
        route_name(&q, &Req::get("h", "/").query("beta=1")).as_deref(),
        Some("beta")
    );
    assert_eq!(route_name(&q, &Req::get("h", "/").query("beta=%FF")), None);
    assert_eq!(
        route_name(&q, &Req::get("h", "/").query("beta=1&beta=%E9")),
        None
    );
    assert_eq!(
        route_name(&q, &Req::get("h", "/").query("other=%FF&beta=caf%C3%A9")).as_deref(),
        Some("rest")
    );
    let h = router(
        RouterFlavor::Expressions,
        "_format_version: \"3.0\"\nroutes:\n- {name: x, expression: 'http.host == \"a\"'}\n",
    );
    assert!(h.reads_host());
}

/// (service path, route path, strip_path, request path, upstream path)
const STRIP_PATH_V0: &[(Option<&str>, &str, bool, &str, &str)] = &[
    (None, "/foo", true, "/foo", "/"),
    (None, "/foo", true, "/foo/", "/"),
    (None, "/foo", true, "/foo/bar", "/bar"),
    (None, "/foo", true, "/foobar", "/bar"),
    (None, "/foo/", true, "/foo/bar", "/bar"),
    (None, "/foo", false, "/foo", "/foo"),
    (None, "/foo", false, "/foo/bar", "/foo/bar"),
    (None, "/", true, "/", "/"),
    (None, "/", true, "/x/y", "/x/y"),
    (None, "/", false, "/", "/"),
    (Some("/api"), "/foo", true, "/foo", "/api"),
    (Some("/api"), "/foo", true, "/foo/", "/api/"),
    (Some("/api"), "/foo", true, "/foo/bar", "/api/bar"),
    (Some("/api"), "/foo", true, "/foobar", "/api/bar"),
    (Some("/api"), "/foo/", true, "/foo/bar", "/api/bar"),
    (Some("/api"), "/foo", false, "/foo", "/api/foo"),
    (Some("/api"), "/foo", false, "/foo/bar/", "/api/foo/bar/"),
    (Some("/api"), "/", true, "/", "/api"),
    (Some("/api"), "/", false, "/", "/api"),
    (Some("/api/"), "/foo", true, "/foo", "/api"),
    (Some("/api/"), "/foo", true, "/foo/", "/api/"),
    (Some("/api/"), "/foo", true, "/foo/bar", "/api/bar"),
    (Some("/api/"), "/foo", true, "/foobar", "/api/bar"),
    (Some("/api/"), "/foo/", true, "/foo/bar", "/api/bar"),
    (Some("/api/"), "/foo", false, "/foo", "/api/foo"),
    (Some("/api/"), "/foo", false, "/foo/bar", "/api/foo/bar"),
    (Some("/api/"), "/", true, "/", "/api/"),
    (Some("/api/"), "/", false, "/", "/api/"),
    // regex paths strip what the regex matched
    (None, "~/users/\\d+", true, "/users/42/profile", "/profile"),
    (Some("/v2"), "~/users/\\d+", true, "/users/42", "/v2"),
    (
        Some("/v2"),
        "~/users/\\d+",
        false,
        "/users/42",
        "/v2/users/42",
    ),
    // a postfix starting with ./ or ../ is sanitized
    (None, "/foo", true, "/foo./bar", "/bar"),
];

fn strip_doc(service_path: Option<&str>, route_path: &str, strip: bool, handling: &str) -> String {
    let url = match service_path {
        Some(p) => format!("http://127.0.0.1:9{p}"),
        None => "http://127.0.0.1:9".to_string(),
    };
    format!(
        "_format_version: \"3.0\"\nservices:\n- name: s\n  url: {url}\n  routes:\n  - name: r\n    paths: [{route_path:?}]\n    strip_path: {strip}\n    path_handling: {handling}\n"
    )
}

#[test]
fn strip_path_table_v0() {
    for &(service_path, route_path, strip, req, want) in STRIP_PATH_V0 {
        let r = compat(&strip_doc(service_path, route_path, strip, "v0"));
        let m = must(&r, &Req::get("h", req));
        assert_eq!(
            m.upstream_path, want,
            "service.path={service_path:?} route.path={route_path} strip_path={strip} request={req}"
        );
        // the stripped prefix is Kong's match_t.prefix
        if strip {
            let p = m.stripped_prefix.as_deref().expect("prefix");
            assert!(req.starts_with(p), "{p} is a prefix of {req}");
        } else {
            assert!(m.stripped_prefix.is_none());
        }
    }
}

#[test]
fn path_handling_v1_under_traditional_only() {
    // (service path, route path, strip, request, v1 result)
    let cases: &[(Option<&str>, &str, bool, &str, &str)] = &[
        (Some("/api/"), "/foo", true, "/foo", "/api/"),
        (Some("/api/"), "/foo", true, "/foo/bar", "/api/bar"),
        (Some("/api"), "/foo", true, "/foobar", "/apibar"),
        (Some("/api"), "/foo", true, "/foo/bar", "/api/bar"),
        (Some("/api"), "/foo", false, "/foo/bar", "/apifoo/bar"),
        (Some("/api/"), "/foo", false, "/foo/bar", "/api/foo/bar"),
        (None, "/foo", true, "/foo", "/"),
    ];
    for &(service_path, route_path, strip, req, want) in cases {
        let r = router(
            RouterFlavor::Traditional,
            &strip_doc(service_path, route_path, strip, "v1"),
        );
        assert_eq!(
            must(&r, &Req::get("h", req)).upstream_path,
            want,
            "{service_path:?} {route_path} {strip} {req}"
        );
    }
    // under traditional, v0 routes keep v0
    let r = router(
        RouterFlavor::Traditional,
        &strip_doc(Some("/api/"), "/foo", true, "v0"),
    );
    assert_eq!(must(&r, &Req::get("h", "/foo")).upstream_path, "/api");
}

#[test]
fn regex_captures_positional_and_named() {
    let r = compat(
        r#"
_format_version: "3.0"
routes:
- {name: caps, paths: ["~/users/(?<id>\\d+)/(\\w+)"], strip_path: false}
- {name: nogroup, paths: ["~/plain/\\d+"]}
- {name: prefix, paths: ["/p"]}
"#,
    );
    let m = must(&r, &Req::get("h", "/users/42/posts/7"));
    assert_eq!(m.captures.get(0), Some("/users/42/posts"));
    assert_eq!(m.captures.get(1), Some("42"));
    assert_eq!(m.captures.get(2), Some("posts"));
    assert_eq!(m.captures.name("id"), Some("42"));
    assert_eq!(m.captures.by_key("id"), Some("42"));
    assert_eq!(m.captures.by_key("2"), Some("posts"));
    assert_eq!(m.upstream_path, "/users/42/posts/7");
    assert!(must(&r, &Req::get("h", "/plain/1")).captures.is_empty());
    assert!(must(&r, &Req::get("h", "/p/1")).captures.is_empty());
}

#[test]
fn invalid_regex_is_an_error_naming_the_route() {
    use std::sync::Arc;
    let mut cfg = (*common::load(
        RouterFlavor::TraditionalCompatible,
        "_format_version: \"3.0\"\nroutes:\n- {name: bad, paths: [\"/x\"]}\n",
    ))
    .clone();
    cfg.routes[0].paths = vec!["~/(unclosed".into()];
    let err = silverback_router::Router::new(Arc::new(cfg), RouterFlavor::TraditionalCompatible)
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("route 'bad'") && msg.contains("~/(unclosed"),
        "{msg}"
    );
}

const EXPR_DOC: &str = r##"
_format_version: "3.0"
services:
- name: s
  url: http://127.0.0.1:9/up
  routes:
  - name: low
    expression: 'http.path ^= "/api"'
    priority: 1
  - name: high
    expression: 'http.path ^= "/api" && http.method == "POST"'
    priority: 5
  - name: re
    expression: 'http.path ~ r#"^/items/(?P<id>\d+)$"# && http.host == "shop.test"'
    priority: 3
  - name: q
    expression: 'http.queries.debug == "1" && http.path.segments.0 == "q" && http.path.segments.len == 2'
    priority: 2
  - name: hdr
    expression: 'lower(http.headers.x_env) == "prod" && net.dst.port == 8443'
    priority: 4
  - name: fields
    paths: ["/api/v2"]
    methods: ["POST"]
    hosts: ["a.test"]
"##;

#[test]
fn expressions_flavor() {
    let r = router(RouterFlavor::Expressions, EXPR_DOC);
    let name = |req: &Req| route_name(&r, req);
    assert_eq!(name(&Req::get("h", "/api/x")).as_deref(), Some("low"));
    // expression routes outrank every field-based route
    assert_eq!(
        name(&Req::new("POST", "a.test", "/api/v2")).as_deref(),
        Some("high")
    );
    assert_eq!(
        name(&Req::get("shop.test", "/items/12")).as_deref(),
        Some("re")
    );
    assert_eq!(name(&Req::get("other.test", "/items/12")), None);
    assert_eq!(
        name(&Req::get("h", "/q/x").query("a=2&debug=1")).as_deref(),
        Some("q")
    );
    assert_eq!(name(&Req::get("h", "/q/x/y").query("debug=1")), None);
    assert_eq!(name(&Req::get("h", "/q/x")), None);
    assert_eq!(
        name(&Req::get("h", "/z").header("X-Env", "PROD").port(8443)).as_deref(),
        Some("hdr")
    );
    assert_eq!(name(&Req::get("h", "/z").header("X-Env", "PROD")), None);

    // strip_path strips what `http.path` matched; captures come from the expression's regex
    let m = must(&r, &Req::get("h", "/api/users"));
    assert_eq!(m.upstream_path, "/up/users");
    assert_eq!(m.stripped_prefix.as_deref(), Some("/api"));
    let m = must(&r, &Req::get("shop.test", "/items/12"));
    assert_eq!(m.captures.get(1), Some("12"));
    assert_eq!(m.captures.name("id"), Some("12"));
    assert_eq!(m.upstream_path, "/up");
}

#[test]
fn expression_errors_name_the_route() {
    use std::sync::Arc;
    let mut cfg = (*common::load(RouterFlavor::Expressions, EXPR_DOC)).clone();
    cfg.routes[0].expression = Some("http.path ^= ".into());
    let err = silverback_router::Router::new(Arc::new(cfg), RouterFlavor::Expressions).unwrap_err();
    assert!(err.to_string().contains("route 'low'"), "{err}");
}

#[test]
fn regexes_compile_on_first_use_and_are_shared() {
    let r = compat(
        r#"
_format_version: "3.0"
routes:
- {name: a, paths: ["~/a/\\d+$"], hosts: ["a.com"]}
- {name: b, paths: ["~/a/\\d+$"], hosts: ["b.com"]}
- {name: c, paths: ["~/c/(?<id>\\w+)"], headers: {x-v: ["~*^t"]}}
"#,
    );
    // two distinct path patterns and one header pattern; nothing compiled yet
    assert_eq!(r.regex_counts(), (3, 0));
    assert_eq!(
        route_name(&r, &Req::get("b.com", "/a/12")).as_deref(),
        Some("b")
    );
    assert_eq!(r.regex_counts(), (3, 1));
    // a path without the regex's literal start never reaches the regex
    assert_eq!(
        route_name(&r, &Req::get("x.com", "/d/1").header("x-v", "t")),
        None
    );
    assert_eq!(r.regex_counts(), (3, 1));
    let m = must(&r, &Req::get("x.com", "/c/zz").header("x-v", "T1"));
    assert_eq!(m.route.name.as_deref(), Some("c"));
    assert_eq!(m.captures.name("id"), Some("zz"));
    assert_eq!(r.regex_counts(), (3, 3));
    assert_eq!(r.compile_regexes(), 0);

    let r = compat(
        r#"
_format_version: "3.0"
routes:
- {name: a, paths: ["~/a/\\d+$"]}
- {name: num, paths: ["~/n/\\d{2}"]}
"#,
    );
    // counted repetitions are compiled when the router is built (size limit checked)
    assert_eq!(r.regex_counts(), (2, 1));
    // a stopped warm-up compiles nothing
    assert_eq!(r.compile_regexes_while(|| false), 0);
    assert_eq!(r.regex_counts(), (2, 1));
    assert_eq!(r.compile_regexes(), 1);
    assert_eq!(r.regex_counts(), (2, 2));
}

/// A host is any UTF-8 string to atc-router: one past ASCII matches wildcards as any name.
#[test]
fn hosts_past_ascii_match_as_names() {
    check(
        r#"
_format_version: "3.0"
routes:
- {name: w, hosts: ["*.wild"], paths: ["/"]}
- {name: any, paths: ["/"]}
"#,
        &[
            (Req::get("caf\u{e9}.wild", "/x"), Some("w")),
            (Req::get("caf\u{e9}.other", "/x"), Some("any")),
        ],
    );
}
