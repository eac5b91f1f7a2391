//! Invalid documents: each case asserts the exact error entries (entity type and name, field,
//! message), in Kong's wording.

mod common;

use common::{error_lines, load, load_value, load_with, pem};
use serde_json::json;
use silverback_config::RouterFlavor;

fn check(name: &str, doc: &str, expected: &[&str]) {
    let err = match load(doc) {
        Ok(_) => panic!("case {name}: expected an error"),
        Err(e) => e,
    };
    assert_eq!(error_lines(&err), expected, "case {name}");
}

fn check_value(name: &str, doc: serde_json::Value, expected: &[&str]) {
    let err = load_value(doc)
        .err()
        .unwrap_or_else(|| panic!("case {name}: expected an error"));
    assert_eq!(error_lines(&err), expected, "case {name}");
}

const HDR: &str = "_format_version: \"3.0\"\n";

fn doc(body: &str) -> String {
    format!("{HDR}{body}")
}

#[test]
fn top_level() {
    check(
        "missing version",
        "services: []\n",
        &["top _format_version: required field missing"],
    );
    check(
        "bad version",
        "_format_version: \"4.0\"\n",
        &["top _format_version: expected one of: 1.1, 2.1, 3.0"],
    );
    check(
        "unknown key",
        &doc("servces: []\n"),
        &["top servces: unknown field"],
    );
    check(
        "underscore key",
        &doc("_info: {}\n"),
        &["top _info: unknown field"],
    );
    check(
        "transform type",
        &doc("_transform: 1\n"),
        &["top _transform: expected a boolean"],
    );
    check(
        "not an array",
        &doc("services: {}\n"),
        &["top services: expected an array"],
    );
    check(
        "element not a record",
        &doc("services:\n- host: a.com\n- 12\n"),
        &["top services.2: expected a record"],
    );
    assert_eq!(
        error_lines(&load("a: [b").unwrap_err())[0]
            .split(':')
            .next(),
        Some("parse"),
        "yaml syntax"
    );
    assert_eq!(
        error_lines(&load("[]").unwrap_err()),
        ["parse: expected an object"]
    );
}

#[test]
fn services() {
    check(
        "missing host",
        &doc("services:\n- name: s\n"),
        &["service[s] host: required field missing"],
    );
    check(
        "port range",
        &doc("services:\n- name: s\n  host: a.com\n  port: 70000\n"),
        &["service[s] port: value should be between 0 and 65535"],
    );
    check(
        "protocol",
        &doc("services:\n- name: s\n  host: a.com\n  protocol: ftp\n"),
        &[
            "service[s] protocol: expected one of: grpc, grpcs, http, https, tcp, tls, tls_passthrough, udp, ws, wss",
        ],
    );
    check(
        "retries type",
        &doc("services:\n- name: s\n  host: a.com\n  retries: \"5\"\n"),
        &["service[s] retries: expected an integer"],
    );
    check(
        "unknown field",
        &doc("services:\n- name: s\n  host: a.com\n  hots: b\n"),
        &["service[s] hots: unknown field"],
    );
    check(
        "path with tcp",
        &doc("services:\n- name: s\n  host: a.com\n  protocol: tcp\n  path: /x\n"),
        &[
            "service[s] path: value must be null",
            "service[s] @entity: failed conditional validation given value of field 'protocol'",
        ],
    );
    check(
        "tls_verify with http",
        &doc("services:\n- name: s\n  host: a.com\n  tls_verify: true\n"),
        &[
            "service[s] tls_verify: value must be null",
            "service[s] @entity: failed conditional validation given value of field 'protocol'",
        ],
    );
    check(
        "timeout range",
        &doc("services:\n- name: s\n  host: a.com\n  connect_timeout: 0\n"),
        &["service[s] connect_timeout: value should be between 1 and 2147483646"],
    );
    check(
        "name characters",
        &doc("services:\n- name: a b\n  host: a.com\n"),
        &[
            "service[a b] name: invalid value 'a b': it must only contain alphanumeric and '., -, _, ~' characters",
        ],
    );
    check(
        "host syntax",
        &doc("services:\n- name: s\n  host: bad host\n"),
        &["service[s] host: invalid value: bad host"],
    );
    check(
        "url",
        &doc("services:\n- name: s\n  url: nope\n"),
        &[
            "service[s] url: invalid url: nope",
            "service[s] host: required field missing",
        ],
    );
    check(
        "duplicate name",
        &doc("services:\n- name: s\n  host: a.com\n- name: s\n  host: b.com\n"),
        &[
            "service[s] @entity: uniqueness violation: 'services' entity with primary key set to 'b268827a-8f7f-551f-8769-e6bceb2f3ec6' already declared",
            "service[s] @entity: uniqueness violation: 'services' entity with name set to 's' already declared",
        ],
    );
    check(
        "duplicate id",
        &doc(
            "services:\n- id: 4f1d9f06-4d2d-4b5e-9e7a-000000000001\n  host: a.com\n- id: 4f1d9f06-4d2d-4b5e-9e7a-000000000001\n  host: b.com\n",
        ),
        &[
            "service[-] @entity: uniqueness violation: 'services' entity with primary key set to '4f1d9f06-4d2d-4b5e-9e7a-000000000001' already declared",
        ],
    );
    check(
        "bad id",
        &doc("services:\n- id: not-a-uuid\n  name: s\n  host: a.com\n"),
        &["service[s] id: expected a valid UUID"],
    );
    check(
        "dangling ca certificate",
        &doc(
            "services:\n- name: s\n  url: https://a.com\n  ca_certificates: [4f1d9f06-4d2d-4b5e-9e7a-000000000009]\n",
        ),
        &[
            "service[s] @entity: invalid reference 'ca_certificates: 4f1d9f06-4d2d-4b5e-9e7a-000000000009' (no such entry in 'ca_certificates')",
        ],
    );
    check(
        "tags",
        &doc("services:\n- name: s\n  host: a.com\n  tags: [\"a,b\"]\n"),
        &[
            "service[s] tags.1: invalid tag 'a,b': expected printable ascii (except `,` and `/`) or valid utf-8 sequences",
        ],
    );
}

#[test]
fn routes() {
    let svc = "services:\n- name: s\n  host: a.com\n  routes:\n";
    check(
        "nothing to match",
        &doc(&format!("{svc}  - name: r\n")),
        &[
            "route[r] @entity: must set one of 'methods', 'hosts', 'headers', 'paths', 'snis' when 'protocols' is 'https'",
        ],
    );
    check(
        "path start",
        &doc(&format!("{svc}  - name: r\n    paths: [foo]\n")),
        &["route[r] paths.1: should start with: / (fixed path) or ~/ (regex path)"],
    );
    check(
        "non-normalized",
        &doc(&format!("{svc}  - name: r\n    paths: [/a/./b]\n")),
        &["route[r] paths.1: non-normalized path, consider use '/a/b' instead"],
    );
    // (an escape that decodes past ASCII is not normal either, UTF-8 or not)
    check(
        "non-normalized, not UTF-8",
        &doc(&format!("{svc}  - name: r\n    paths: [\"/%FF\"]\n")),
        &["route[r] paths.1: non-normalized path, consider use '/%FF' instead"],
    );
    check(
        "non-normalized, UTF-8",
        &doc(&format!("{svc}  - name: r\n    paths: [\"/caf%C3%A9\"]\n")),
        &["route[r] paths.1: non-normalized path, consider use '/café' instead"],
    );
    let err = load(&doc(&format!("{svc}  - name: r\n    paths: [\"~/a(\"]\n"))).unwrap_err();
    let lines = error_lines(&err);
    assert_eq!(lines.len(), 1);
    assert!(
        lines[0].starts_with("route[r] paths.1: invalid regex: '/a(' (PCRE returned: "),
        "{lines:?}"
    );
    check(
        "wildcard",
        &doc(&format!("{svc}  - name: r\n    hosts: [\"a.*.com\"]\n")),
        &["route[r] hosts.1: invalid wildcard: must be placed at leftmost or rightmost label"],
    );
    check(
        "method case",
        &doc(&format!("{svc}  - name: r\n    methods: [get]\n")),
        &["route[r] methods.1: invalid value: get"],
    );
    check(
        "host header",
        &doc(&format!(
            "{svc}  - name: r\n    headers: {{Host: [a.com]}}\n"
        )),
        &[
            "route[r] headers: cannot contain 'host' header, which must be specified in the 'hosts' attribute",
        ],
    );
    check(
        "redirect code",
        &doc(&format!(
            "{svc}  - name: r\n    paths: [/]\n    https_redirect_status_code: 300\n"
        )),
        &["route[r] https_redirect_status_code: expected one of: 426, 301, 302, 307, 308"],
    );
    check(
        "dangling service",
        &doc("routes:\n- name: r\n  paths: [/]\n  service: nope\n"),
        &["route[r] @entity: invalid reference 'service: nope' (no such entry in 'services')"],
    );
    check(
        "mixed protocols",
        &doc(&format!(
            "{svc}  - name: r\n    paths: [/]\n    protocols: [http, tcp]\n"
        )),
        &[
            "route[r] protocols: these sets are mutually exclusive: ('http', 'https', 'ws', 'wss'), ('tcp', 'tls', 'udp')",
        ],
    );
    check(
        "tcp with paths",
        &doc(&format!(
            "{svc}  - name: r\n    paths: [/]\n    protocols: [tcp]\n    destinations: [{{port: 9000}}]\n"
        )),
        &[
            "route[r] paths: cannot set 'paths' when 'protocols' is 'tcp', 'tls', 'tls_passthrough' or 'udp'",
        ],
    );
    check(
        "passthrough without snis",
        &doc(&format!(
            "{svc}  - name: r\n    protocols: [tls_passthrough]\n"
        )),
        &["route[r] @entity: must set snis when 'protocols' is 'tls_passthrough'"],
    );
    check(
        "grpc strip_path",
        &doc(&format!(
            "{svc}  - name: r\n    paths: [/]\n    protocols: [grpc]\n    strip_path: true\n"
        )),
        &["route[r] strip_path: cannot set 'strip_path' when 'protocols' is 'grpc' or 'grpcs'"],
    );
    check(
        "snis on http",
        &doc(&format!(
            "{svc}  - name: r\n    paths: [/]\n    protocols: [http]\n    snis: [a.com]\n"
        )),
        &[
            "route[r] snis: length must be 0",
            "route[r] @entity: 'snis' can only be set when 'protocols' is 'grpcs', 'https', 'tls' or 'tls_passthrough'",
        ],
    );
    check(
        "expression in compat",
        &doc(&format!(
            "{svc}  - name: r\n    expression: 'http.path == \"/\"'\n"
        )),
        // (the route's subschema check runs beside the unknown field, as in Kong's
        // `05-error-flattening_spec.lua`)
        &[
            "route[r] expression: unknown field",
            "route[r] @entity: must set one of 'methods', 'hosts', 'headers', 'paths', 'snis' when 'protocols' is 'https'",
        ],
    );
    check(
        "nested route with service",
        &doc(&format!(
            "{svc}  - name: r\n    paths: [/]\n    service: s\n"
        )),
        &["route[r] service: value must be null"],
    );
    check(
        "sources on http",
        &doc(&format!(
            "{svc}  - name: r\n    paths: [/]\n    sources: [{{ip: 10.0.0.1}}]\n"
        )),
        &["route[r] sources: cannot set 'sources' when 'protocols' is 'http' or 'https'"],
    );
    check(
        "source ip",
        &doc(&format!(
            "{svc}  - name: r\n    protocols: [tcp]\n    sources: [{{ip: 10.0.0.0/40}}]\n"
        )),
        &["route[r] sources.1.ip: invalid ip or cidr range: '10.0.0.0/40'"],
    );
}

/// Route `snis` elements (Kong 3.7+ `routes.lua`): `wildcard_host` under the
/// `traditional_compatible` and `expressions` flavors, `sni` (no wildcard) under
/// `traditional`; an upstream's `healthchecks.active.https_sni` is `sni` under every flavor.
#[test]
fn snis_follow_the_router_flavor() {
    let route = |snis: &str| {
        doc(&format!(
            "services:\n- name: s\n  host: a.com\n  routes:\n  - name: r\n    protocols: [https]\n    snis: {snis}\n"
        ))
    };
    let lines = |d: &str, flavor| match load_with(d, flavor) {
        Ok(_) => vec![],
        Err(e) => error_lines(&e),
    };
    let wild = route(r#"["*", "*.a.com", "*foo.a.com", "a.co*"]"#);
    for flavor in [
        RouterFlavor::TraditionalCompatible,
        RouterFlavor::Expressions,
    ] {
        assert_eq!(lines(&wild, flavor), Vec::<String>::new(), "{flavor:?}");
        assert_eq!(
            lines(&route(r#"["a.*.com"]"#), flavor),
            ["route[r] snis.1: wildcard must be leftmost or rightmost character"],
            "{flavor:?}"
        );
    }
    // (the entries in the loader's order, sorted here)
    let mut traditional = lines(
        &route(r#"["a.com", "*.a.com", "10.0.0.1", "a.com:443"]"#),
        RouterFlavor::Traditional,
    );
    traditional.sort();
    assert_eq!(
        traditional,
        [
            "route[r] snis.2: invalid value: *.a.com",
            "route[r] snis.3: must not be an IP",
            "route[r] snis.4: must not have a port",
        ]
    );
    let upstream = |sni: &str| {
        doc(&format!(
            "upstreams:\n- name: u\n  healthchecks:\n    active:\n      https_sni: \"{sni}\"\n"
        ))
    };
    for flavor in [
        RouterFlavor::TraditionalCompatible,
        RouterFlavor::Traditional,
    ] {
        assert_eq!(lines(&upstream("a.com"), flavor), Vec::<String>::new());
        assert_eq!(
            lines(&upstream("*.a.com"), flavor),
            ["upstream[u] healthchecks.active.https_sni: invalid value: *.a.com"],
            "{flavor:?}"
        );
    }
}

/// The host-like fields, each with Kong's verdicts and messages (`kong/db/schema/typedefs.lua`
/// over `normalize_ip` in `kong/tools/ip.lua`): service `host` (`host`), route `hosts`
/// elements (`typedefs.hosts`), an upstream's `host_header` (`host_with_optional_port`),
/// route `snis` elements (`sni` under the traditional router, `wildcard_host` under the
/// others) and an upstream's `healthchecks.active.https_sni` (`sni`).
#[test]
fn host_fields_give_kongs_verdicts() {
    type Doc = fn(&str) -> serde_json::Value;
    let service: Doc =
        |v| json!({"_format_version": "3.0", "services": [{"name": "s", "host": v}]});
    let route_hosts: Doc = |v| {
        json!({"_format_version": "3.0", "services": [{"name": "s", "host": "a.com",
            "routes": [{"name": "r", "hosts": [v]}]}]})
    };
    let host_header: Doc =
        |v| json!({"_format_version": "3.0", "upstreams": [{"name": "u", "host_header": v}]});
    let route_snis: Doc = |v| {
        json!({"_format_version": "3.0", "services": [{"name": "s", "host": "a.com",
            "routes": [{"name": "r", "protocols": ["https"], "snis": [v]}]}]})
    };
    let https_sni: Doc = |v| {
        json!({"_format_version": "3.0", "upstreams": [{"name": "u",
            "healthchecks": {"active": {"https_sni": v}}}]})
    };
    // (document, router flavor, error prefix, value, Kong's message or "" for valid)
    let trad = RouterFlavor::Traditional;
    let compat = RouterFlavor::TraditionalCompatible;
    let cases: &[(Doc, RouterFlavor, &str, &str, &str)] = &[
        // service `host`: `must not have a port` for any port, `invalid value` else
        (service, compat, "service[s] host", "example.com", ""),
        (service, compat, "service[s] host", "example.com.", ""),
        (service, compat, "service[s] host", "-a.example.com", ""),
        (service, compat, "service[s] host", "010.0.0.1", ""),
        (service, compat, "service[s] host", "::1", ""),
        (service, compat, "service[s] host", "[::1]", ""),
        (
            service,
            compat,
            "service[s] host",
            "a.com:80",
            "must not have a port",
        ),
        (
            service,
            compat,
            "service[s] host",
            "a.com:0",
            "must not have a port",
        ),
        (
            service,
            compat,
            "service[s] host",
            "a.com:99999",
            "must not have a port",
        ),
        (
            service,
            compat,
            "service[s] host",
            "[::1]:80",
            "must not have a port",
        ),
        (
            service,
            compat,
            "service[s] host",
            "a.com:",
            "invalid value: a.com:",
        ),
        (
            service,
            compat,
            "service[s] host",
            "a.com:abc",
            "invalid value: a.com:abc",
        ),
        (
            service,
            compat,
            "service[s] host",
            "a-.com",
            "invalid value: a-.com",
        ),
        (
            service,
            compat,
            "service[s] host",
            "a:b:c",
            "invalid value: a:b:c",
        ),
        (
            service,
            compat,
            "service[s] host",
            "256.0.0.1",
            "invalid value: 256.0.0.1",
        ),
        // route `hosts`: the wildcard patterns, then `normalize_ip`'s errors with `*` as `abc`
        (route_hosts, compat, "route[r] hosts.1", "*.a.com:80", ""),
        (route_hosts, compat, "route[r] hosts.1", "a.*", ""),
        (route_hosts, compat, "route[r] hosts.1", "010.0.0.1:80", ""),
        (route_hosts, compat, "route[r] hosts.1", "[::1]:80", ""),
        (route_hosts, compat, "route[r] hosts.1", "a.com:0", ""),
        (
            route_hosts,
            compat,
            "route[r] hosts.1",
            "a.*:80",
            "invalid wildcard: must be placed at leftmost or rightmost label",
        ),
        (
            route_hosts,
            compat,
            "route[r] hosts.1",
            "**",
            "invalid wildcard: must have at most one wildcard",
        ),
        (
            route_hosts,
            compat,
            "route[r] hosts.1",
            "a.com:abc",
            "invalid hostname: a.com:abc",
        ),
        (
            route_hosts,
            compat,
            "route[r] hosts.1",
            "a.com:",
            "invalid hostname: a.com:",
        ),
        (
            route_hosts,
            compat,
            "route[r] hosts.1",
            "*.a b",
            "invalid hostname: abc.a b",
        ),
        (
            route_hosts,
            compat,
            "route[r] hosts.1",
            "a.com:65536",
            "invalid port number",
        ),
        (
            route_hosts,
            compat,
            "route[r] hosts.1",
            "*.a.com:99999",
            "invalid port number",
        ),
        (
            route_hosts,
            compat,
            "route[r] hosts.1",
            "1.2.3:80",
            "invalid ipv4 address: 1.2.3:80",
        ),
        (
            route_hosts,
            compat,
            "route[r] hosts.1",
            "a:b:c",
            "invalid ipv6 address: a:b:c",
        ),
        (
            route_hosts,
            compat,
            "route[r] hosts.1",
            "[::1]:x",
            "invalid ipv6 address",
        ),
        // an upstream's `host_header`: `normalize_ip`'s errors as they are
        (
            host_header,
            compat,
            "upstream[u] host_header",
            "a.com:8080",
            "",
        ),
        (
            host_header,
            compat,
            "upstream[u] host_header",
            "001.2.3.4:80",
            "",
        ),
        (
            host_header,
            compat,
            "upstream[u] host_header",
            "[::1]:80",
            "",
        ),
        (
            host_header,
            compat,
            "upstream[u] host_header",
            "a.com:abc",
            "invalid hostname: a.com:abc",
        ),
        (
            host_header,
            compat,
            "upstream[u] host_header",
            "a.com:65536",
            "invalid port number",
        ),
        (
            host_header,
            compat,
            "upstream[u] host_header",
            "1.2.3.256",
            "invalid ipv4 address: 1.2.3.256",
        ),
        (
            host_header,
            compat,
            "upstream[u] host_header",
            "[::1",
            "invalid ipv6 address: [::1",
        ),
        // `sni`: `invalid value`, then `must not be an IP`, then `must not have a port`
        (route_snis, trad, "route[r] snis.1", "a.com.", ""),
        (
            route_snis,
            trad,
            "route[r] snis.1",
            "010.0.0.1",
            "must not be an IP",
        ),
        (
            route_snis,
            trad,
            "route[r] snis.1",
            "[::1]:443",
            "must not be an IP",
        ),
        (
            route_snis,
            trad,
            "route[r] snis.1",
            "a.com:443",
            "must not have a port",
        ),
        (
            route_snis,
            trad,
            "route[r] snis.1",
            "1.2.3.4:99999",
            "must not have a port",
        ),
        (
            route_snis,
            trad,
            "route[r] snis.1",
            "*.a.com",
            "invalid value: *.a.com",
        ),
        (
            route_snis,
            trad,
            "route[r] snis.1",
            "a.com:abc",
            "invalid value: a.com:abc",
        ),
        (
            https_sni,
            compat,
            "upstream[u] healthchecks.active.https_sni",
            "a.com",
            "",
        ),
        (
            https_sni,
            compat,
            "upstream[u] healthchecks.active.https_sni",
            "001.2.3.4",
            "must not be an IP",
        ),
        (
            https_sni,
            compat,
            "upstream[u] healthchecks.active.https_sni",
            "a.com:",
            "invalid value: a.com:",
        ),
        // `wildcard_host`: `*` replaced by `wildcard`, which an `invalid value` shows
        (route_snis, compat, "route[r] snis.1", "*.1.2.3.4", ""),
        (
            route_snis,
            compat,
            "route[r] snis.1",
            "010.0.0.1",
            "must not be an IP",
        ),
        (
            route_snis,
            compat,
            "route[r] snis.1",
            "*.a.com:99999",
            "must not have a port",
        ),
        (
            route_snis,
            compat,
            "route[r] snis.1",
            "*.a.com:x",
            "invalid value: wildcard.a.com:x",
        ),
    ];
    for &(make, flavor, prefix, value, message) in cases {
        let got = match load_with(&make(value).to_string(), flavor) {
            Ok(_) => vec![],
            Err(e) => error_lines(&e),
        };
        let want: Vec<String> = if message.is_empty() {
            vec![]
        } else {
            vec![format!("{prefix}: {message}")]
        };
        assert_eq!(got, want, "{prefix} = {value:?} ({flavor:?})");
    }
}

#[test]
fn expressions_flavor() {
    let case = |name: &str, route: &str, expected: &[&str]| {
        let d = doc(&format!(
            "services:\n- name: s\n  host: a.com\n  routes:\n  - name: r\n{route}"
        ));
        let err = load_with(&d, RouterFlavor::Expressions)
            .err()
            .unwrap_or_else(|| panic!("{name}"));
        assert_eq!(error_lines(&err), expected, "case {name}");
    };
    case(
        "unknown field in expression",
        "    expression: 'http.nope == \"x\"'\n",
        &["route[r] @entity: Router Expression failed validation: Unknown LHS field"],
    );
    case(
        "expression with paths",
        "    expression: 'http.path ^= \"/\"'\n    paths: [/]\n",
        &[
            "route[r] @entity: Router Expression failed validation: cannot set 'expression' together with 'paths'",
        ],
    );
    case(
        "priority range",
        "    expression: 'http.path ^= \"/\"'\n    priority: -1\n",
        &["route[r] priority: value should be between 0 and 70368744177663"],
    );
}

#[test]
fn upstreams_and_targets() {
    check(
        "name required",
        &doc("upstreams:\n- slots: 100\n"),
        &["upstream[-] name: required field missing"],
    );
    check(
        "ip name",
        &doc("upstreams:\n- name: 10.0.0.1\n"),
        &["upstream[10.0.0.1] name: Invalid name ('10.0.0.1'); no ip addresses allowed"],
    );
    check(
        "hash header",
        &doc("upstreams:\n- name: u\n  hash_on: header\n"),
        &[
            "upstream[u] hash_on_header: required field missing",
            "upstream[u] @entity: failed conditional validation given value of field 'hash_on'",
        ],
    );
    check(
        "slots",
        &doc("upstreams:\n- name: u\n  slots: 5\n"),
        &["upstream[u] slots: value should be between 10 and 65536"],
    );
    check(
        "healthcheck concurrency",
        &doc("upstreams:\n- name: u\n  healthchecks: {active: {concurrency: 0}}\n"),
        &["upstream[u] healthchecks.active.concurrency: value should be between 1 and 2147483648"],
    );
    check(
        "weight",
        &doc("upstreams:\n- name: u\n  targets:\n  - target: 10.0.0.1\n    weight: 70000\n"),
        &["target[10.0.0.1] weight: value should be between 0 and 65535"],
    );
    check(
        "target syntax",
        &doc("upstreams:\n- name: u\n  targets:\n  - target: a b\n"),
        &["target[a b] target: Invalid target ('a b'); not a valid hostname or ip address"],
    );
    check(
        "dangling upstream",
        &doc("targets:\n- target: 10.0.0.1\n  upstream: nope\n"),
        &[
            "target[10.0.0.1:8000] @entity: invalid reference 'upstream: nope' (no such entry in 'upstreams')",
        ],
    );
}

#[test]
fn consumers_plugins_credentials() {
    check(
        "consumer identity",
        &doc("consumers:\n- tags: [x]\n"),
        &[
            "consumer[-] @entity: at least one of these fields must be non-empty: 'custom_id', 'username'",
        ],
    );
    check(
        "duplicate username",
        &doc("consumers:\n- username: a\n- username: a\n"),
        &[
            "consumer[a] @entity: uniqueness violation: 'consumers' entity with primary key set to '0b2e2520-8980-505a-b7a2-769e8dde10c3' already declared",
            "consumer[a] @entity: uniqueness violation: 'consumers' entity with username set to 'a' already declared",
        ],
    );
    check(
        "unknown plugin",
        &doc("plugins:\n- name: nope\n"),
        &[
            "plugin[nope] name: plugin 'nope' not enabled; add it to the 'plugins' configuration property",
        ],
    );
    check(
        "plugin config",
        &doc("plugins:\n- name: example-limit\n  config: {minute: many, bogus: 1}\n"),
        &[
            "plugin[example-limit] config.minute: expected a number",
            "plugin[example-limit] config.bogus: unknown field",
        ],
    );
    check(
        "plugin protocols",
        &doc("plugins:\n- name: example-limit\n  protocols: [tcp]\n"),
        &["plugin[example-limit] protocols.1: expected one of: grpc, grpcs, http, https, ws, wss"],
    );
    check(
        "plugin no_consumer",
        &doc("consumers:\n- username: c\n  plugins:\n  - name: example-auth\n"),
        &["plugin[example-auth] consumer: value must be null"],
    );
    check(
        "duplicate plugin scope",
        &doc(
            "services:\n- name: s\n  host: a.com\n  plugins:\n  - name: example-limit\n  - name: example-limit\n",
        ),
        &[
            "plugin[example-limit] @entity: uniqueness violation: 'plugins' entity with primary key set to 'd449a4ef-a111-5767-8654-c34ed96b9fc7' already declared",
        ],
    );
    check(
        "keyauth consumer",
        &doc("keyauth_credentials:\n- key: k\n"),
        &["keyauth_credential[k] consumer: required field missing"],
    );
    check(
        "basicauth password",
        &doc("consumers:\n- username: c\n  basicauth_credentials:\n  - username: u\n"),
        &["basicauth_credential[u] password: required field missing"],
    );
    check(
        "jwt public key",
        &doc("consumers:\n- username: c\n  jwt_secrets:\n  - key: k\n    algorithm: RS256\n"),
        &[
            "jwt_secret[k] rsa_public_key: required field missing",
            "jwt_secret[k] @entity: failed conditional validation given value of field 'algorithm'",
        ],
    );
    check(
        "acl consumer",
        &doc("acls:\n- group: g\n  consumer: nobody\n"),
        &["acl[-] @entity: invalid reference 'consumer: nobody' (no such entry in 'consumers')"],
    );
    check(
        "vault prefix",
        &doc("vaults:\n- prefix: Bad\n  name: env\n"),
        &["vault[Bad] prefix: invalid value: Bad"],
    );
    check(
        "vault type",
        &doc("vaults:\n- prefix: my-vault\n  name: aws\n"),
        &["vault[my-vault] name: vault 'aws' is not installed"],
    );
}

#[test]
fn certificates() {
    let (rsa_c, rsa_k, ec_c, ec_k, other_k) = (
        pem("rsa.crt"),
        pem("rsa.key"),
        pem("ec.crt"),
        pem("ec.key"),
        pem("other.key"),
    );
    let v = "3.0";
    let err = load_value(
        json!({"_format_version": v, "certificates": [{"cert": "garbage", "key": rsa_k}]}),
    )
    .unwrap_err();
    let lines = error_lines(&err);
    assert_eq!(lines.len(), 1);
    assert!(
        lines[0].starts_with("certificate[-] cert: invalid certificate: "),
        "{lines:?}"
    );
    // (Kong resolves vault references in `cert` and `key`; Silverback says it has none)
    check_value(
        "vault reference",
        json!({"_format_version": v, "certificates": [{"cert": "{vault://env/tls-cert}", "key": rsa_k}]}),
        &[
            "certificate[-] cert: vault references are not supported by this gateway ('{vault://env/tls-cert}')",
        ],
    );
    check_value(
        "key mismatch",
        json!({"_format_version": v, "certificates": [{"cert": rsa_c, "key": other_k}]}),
        &["certificate[-] @entity: certificate does not match key"],
    );
    check_value(
        "alt pair incomplete",
        json!({"_format_version": v, "certificates": [{"cert": rsa_c, "key": rsa_k, "cert_alt": ec_c}]}),
        &["certificate[-] @entity: all or none of these fields must be set: 'cert_alt', 'key_alt'"],
    );
    check_value(
        "alt same type",
        json!({"_format_version": v, "certificates": [{"cert": ec_c, "key": ec_k, "cert_alt": ec_c, "key_alt": ec_k}]}),
        &[
            "certificate[-] @entity: certificate and alternative certificate need to have different type (e.g. RSA and ECDSA), the provided certificates were both of the same type",
        ],
    );
    check(
        "dangling sni",
        &doc("snis:\n- name: a.com\n  certificate: 4f1d9f06-4d2d-4b5e-9e7a-000000000001\n"),
        &["sni[a.com] @entity: invalid reference 'certificate: {\"id\":\"4f1d9f06-4d2d-4b5e-9e7a-000000000001\"}' (no such entry in 'certificates')"
            .replace("{\"id\":\"4f1d9f06-4d2d-4b5e-9e7a-000000000001\"}", "4f1d9f06-4d2d-4b5e-9e7a-000000000001")
            .as_str()],
    );
    check_value(
        "duplicate sni",
        json!({"_format_version": v, "certificates": [{"cert": rsa_c, "key": rsa_k, "snis": ["a.com", "a.com"]}]}),
        &[
            "sni[a.com] @entity: uniqueness violation: 'snis' entity with primary key set to '427e83db-cac4-51f7-b3e6-883bb69d6fed' already declared",
            "sni[a.com] @entity: uniqueness violation: 'snis' entity with name set to 'a.com' already declared",
        ],
    );
    // SNI names are Kong's `wildcard_host`: its messages, on the `name` field
    for (name, message) in [
        (
            "a.*.com",
            "wildcard must be leftmost or rightmost character",
        ),
        ("*.a.*", "only one wildcard must be specified"),
        ("10.0.0.1", "must not be an IP"),
        ("a.com:443", "must not have a port"),
        ("*.a b.com", "invalid value: wildcard.a b.com"),
    ] {
        check_value(
            name,
            json!({"_format_version": v, "certificates": [{"cert": rsa_c, "key": rsa_k, "snis": [name]}]}),
            &[format!("sni[{name}] name: {message}").as_str()],
        );
    }
    check_value(
        "not a CA",
        json!({"_format_version": v, "ca_certificates": [{"cert": rsa_c}]}),
        &[
            "ca_certificate[-] cert: certificate does not appear to be a CA because it is missing the \"CA\" basic constraint",
        ],
    );
    check_value(
        "expired CA",
        json!({"_format_version": v, "ca_certificates": [{"cert": pem("expired-ca.crt")}]}),
        &["ca_certificate[-] cert: certificate expired, \"Not After\" time is in the past"],
    );
    check_value(
        "two certificates in a CA entry",
        json!({"_format_version": v, "ca_certificates": [{"cert": format!("{}{}", pem("ca.crt"), pem("ca.crt"))}]}),
        &["ca_certificate[-] cert: please submit only one certificate at a time"],
    );
}

/// `rsa.key`'s public half as a JWK string with `kid`, and extra members.
fn jwk_with(kid: &str, extra: serde_json::Value) -> String {
    let mut v: serde_json::Value = serde_json::from_str(&pem("rsa.jwk")).expect("JSON fixture");
    v["kid"] = json!(kid);
    if let (Some(m), serde_json::Value::Object(x)) = (v.as_object_mut(), extra) {
        m.extend(x);
    }
    v.to_string()
}

#[test]
fn keys_and_key_sets() {
    let v = "3.0";
    let key = |k: serde_json::Value| json!({"_format_version": v, "keys": [k]});
    let pair = |private: &str, public: &str| {
        key(json!({"name": "p", "kid": "p",
                   "pem": {"private_key": pem(private), "public_key": pem(public)}}))
    };
    // the entity checks of keys.lua, in Kong's words
    check_value(
        "neither jwk nor pem",
        key(json!({"name": "k", "kid": "k"})),
        &["key[k] @entity: at least one of these fields must be non-empty: 'jwk', 'pem'"],
    );
    check_value(
        "both jwk and pem",
        key(
            json!({"name": "k", "kid": "k", "jwk": jwk_with("k", json!({})),
                   "pem": {"public_key": pem("rsa.pub")}}),
        ),
        &["key[k] @entity: only one or none of these fields must be set: 'jwk', 'pem'"],
    );
    check_value(
        "kid required",
        key(json!({"name": "k", "jwk": jwk_with("k", json!({}))})),
        &["key[k] kid: required field missing"],
    );
    check_value(
        "jwk not JSON",
        key(json!({"name": "k", "kid": "k", "jwk": "\"kid\":k"})),
        &["key[k] @entity: could not json decode jwk string"],
    );
    check_value(
        "kid differs",
        key(json!({"name": "k", "kid": "other", "jwk": jwk_with("k", json!({}))})),
        &["key[k] @entity: kid in jwk.kid must be equal to keys.kid"],
    );
    check_value(
        "jwk without key material",
        key(json!({"name": "k", "kid": "36", "jwk": "{\"kid\": \"36\"}"})),
        &["key[k] @entity: could not load JWK, likely not a valid key"],
    );
    check_value(
        "symmetric jwk",
        key(
            json!({"name": "k", "kid": "s", "jwk": "{\"kid\": \"s\", \"kty\": \"oct\", \"k\": \"AQAB\"}"}),
        ),
        &["key[k] @entity: could not load JWK, likely not a valid key"],
    );
    check_value(
        "jwk member Kong's record does not know",
        key(json!({"name": "k", "kid": "k", "jwk": jwk_with("k", json!({"ext": true}))})),
        &["key[k] @entity: Validation error: ext: unknown field"],
    );
    check_value(
        "jwk member of the wrong type",
        key(json!({"name": "k", "kid": "k", "jwk": jwk_with("k", json!({"alg": 256}))})),
        &["key[k] @entity: Validation error: alg: expected a string"],
    );
    check_value(
        "jwk not a string",
        key(json!({"name": "k", "kid": "k", "jwk": {"kid": "k"}})),
        &["key[k] jwk: expected a string"],
    );
    // the pem typedef
    check_value(
        "empty pem",
        key(json!({"name": "k", "kid": "k", "pem": {}})),
        // (the nested record's own check: an entity-level message, with no field, as Kong's
        // `categorize_errors` reports an `@entity` at any depth)
        &[
            "key[k] @entity: at least one of these fields must be non-empty: 'private_key', 'public_key'",
        ],
    );
    check_value(
        "pem field unknown",
        key(json!({"name": "k", "kid": "k", "pem": {"public": pem("rsa.pub")}})),
        // (the record's check runs beside the unknown field)
        &[
            "key[k] pem.public: unknown field",
            "key[k] @entity: at least one of these fields must be non-empty: 'private_key', 'public_key'",
        ],
    );
    check_value(
        "public key garbage",
        key(json!({"name": "k", "kid": "k", "pem": {"public_key": "garbage"}})),
        &["key[k] pem: could not load public key"],
    );
    check_value(
        "a certificate is no public key",
        key(json!({"name": "k", "kid": "k", "pem": {"public_key": pem("rsa.crt")}})),
        &["key[k] pem: could not load public key"],
    );
    check_value(
        "private key garbage",
        key(json!({"name": "k", "kid": "k", "pem": {"private_key": pem("rsa.pub")}})),
        &["key[k] pem: could not load private key"],
    );
    check_value(
        "encrypted private key",
        key(json!({"name": "k", "kid": "k", "pem": {"private_key": pem("rsa-encrypted.key")}})),
        &["key[k] pem: could not load private key"],
    );
    for (name, private, public) in [
        ("other rsa key", "rsa.key", "other.pub"),
        ("pkcs1 against another key", "rsa-pkcs1.key", "other.pub"),
        ("rsa key, ec public key", "rsa.key", "ec.pub"),
        ("ec key, rsa public key", "ec-sec1.key", "rsa.pub"),
        ("ec key, p-521 public key", "ec.key", "p521.pub"),
        ("other ed25519 key", "ed25519-other.key", "ed25519.pub"),
        // one EC point in two forms: OpenSSL writes each key's point in the form it read
        (
            "uncompressed point, compressed public key",
            "ec.key",
            "ec-compressed.pub",
        ),
        (
            "uncompressed point, hybrid public key",
            "ec-sec1.key",
            "ec-hybrid.pub",
        ),
        (
            "compressed point, uncompressed public key",
            "ec-compressed.key",
            "ec.pub",
        ),
        // without its point, OpenSSL computes it and writes it uncompressed
        (
            "no point, compressed public key",
            "ec-nopub.key",
            "ec-compressed.pub",
        ),
        ("no point, p-521 public key", "ec-nopub.key", "p521.pub"),
    ] {
        check_value(
            name,
            pair(private, public),
            &["key[p] pem: public key does not match private key"],
        );
    }
    // Kong skips the entity checks that read a vault reference in a referenceable field:
    // a `jwk` reference beside a `pem` is not refused (nor checked)
    assert!(
        load_value(key(json!({"kid": "a", "jwk": "{vault://env/jwk}",
                              "pem": {"private_key": "{vault://env/key}"}})))
        .is_ok(),
        "jwk reference and pem"
    );
    check_value(
        "jwk and pem",
        key(json!({"kid": "a", "jwk": "{\"kid\": \"a\"}",
                   "pem": {"private_key": "{vault://env/key}"}})),
        &[
            "key[-] @entity: only one or none of these fields must be set: 'jwk', 'pem'",
            "key[-] @entity: could not load JWK, likely not a valid key",
        ],
    );
    // what lua-resty-openssl cannot load: RSA factors or CRT parameters without the others
    // (OpenSSL's setters want them all), a JSON null (a value in Lua, and no base64url)
    for (name, extra) in [
        ("p without q", json!({"d": "AQAB", "p": "AQAB"})),
        ("dp and dq without qi", json!({"dp": "AQAB", "dq": "AQAB"})),
        ("null exponent", json!({"d": null})),
        ("null modulus", json!({"n": null})),
    ] {
        check_value(
            name,
            key(json!({"name": "k", "kid": "k", "jwk": jwk_with("k", extra)})),
            &["key[k] @entity: could not load JWK, likely not a valid key"],
        );
    }
    // `false` is no value to Lua: the key loads, and Kong's jwk record refuses the member
    check_value(
        "false member",
        key(json!({"name": "k", "kid": "k", "jwk": jwk_with("k", json!({"d": false}))})),
        &["key[k] @entity: Validation error: d: expected a string"],
    );
    // references and uniqueness
    check_value(
        "missing set",
        key(json!({"name": "k", "kid": "k", "set": "nope", "jwk": jwk_with("k", json!({}))})),
        &["key[k] @entity: invalid reference 'set: nope' (no such entry in 'key_sets')"],
    );
    check_value(
        "set named in a nested key",
        json!({"_format_version": v, "key_sets": [{"name": "s", "keys": [
            {"name": "k", "kid": "k", "set": "s", "jwk": jwk_with("k", json!({}))}]}]}),
        &["key[k] set: value must be null"],
    );
    check_value(
        "duplicate key set name",
        json!({"_format_version": v, "key_sets": [{"name": "s", "id": "0d5b6b34-5b7b-4bd4-8a43-5a7f6a4a0001"}, {"name": "s"}]}),
        &[
            "key_set[s] @entity: uniqueness violation: 'key_sets' entity with name set to 's' already declared",
        ],
    );
    check_value(
        "duplicate key name",
        json!({"_format_version": v, "keys": [
            {"name": "k", "kid": "a", "jwk": jwk_with("a", json!({}))},
            {"name": "k", "kid": "b", "jwk": jwk_with("b", json!({}))}]}),
        &[
            "key[k] @entity: uniqueness violation: 'keys' entity with name set to 'k' already declared",
        ],
    );
    // one kid twice in a set: the same id (Kong's cache key is kid and set)
    let err = load_value(
        json!({"_format_version": v, "key_sets": [{"name": "s", "keys": [
        {"kid": "a", "jwk": jwk_with("a", json!({}))},
        {"kid": "a", "pem": {"public_key": pem("rsa.pub")}}]}]}),
    )
    .unwrap_err();
    let lines = error_lines(&err);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].starts_with(
            "key[-] @entity: uniqueness violation: 'keys' entity with primary key set to '"
        ),
        "{lines:?}"
    );
    // the same kid in two sets is two keys
    assert!(
        load_value(json!({"_format_version": v, "key_sets": [
            {"name": "s", "keys": [{"kid": "a", "jwk": jwk_with("a", json!({}))}]},
            {"name": "t", "keys": [{"kid": "a", "jwk": jwk_with("a", json!({}))}]}]}))
        .is_ok()
    );
    check_value(
        "key set field",
        json!({"_format_version": v, "key_sets": [{"name": "s", "kid": "x"}]}),
        &["key_set[s] kid: unknown field"],
    );
}

/// Asserts `f` takes less than five seconds: the inputs below took from 20 seconds to minutes
/// of quadratic work each before (a debug build), and take well under one second.
fn quick<T>(what: &str, f: impl FnOnce() -> T) -> T {
    let started = std::time::Instant::now();
    let out = f();
    let took = started.elapsed();
    assert!(took < std::time::Duration::from_secs(5), "{what}: {took:?}");
    out
}

#[test]
fn a_jwk_with_many_key_ops_is_refused_quickly() {
    // 50,000 invalid `key_ops` elements: each is reported, in one pass over the errors, on
    // the fast path and again on the reporting path
    let n = 50_000;
    let jwk = jwk_with("k", json!({"key_ops": vec![0; n]}));
    let doc = json!({"_format_version": "3.0", "keys": [{"name": "k", "kid": "k", "jwk": jwk}]});
    let err = quick("load", || load_value(doc)).unwrap_err();
    let lines = error_lines(&err);
    assert_eq!(lines.len(), 1);
    assert!(
        lines[0].starts_with(
            "key[k] @entity: Validation error: key_ops: Validation error: expected a string; expected a string;"
        ),
        "{}",
        &lines[0][..200]
    );
    assert_eq!(lines[0].matches("expected a string").count(), n);
}

/// An object of `n` keys `k1`..`kn` (values 0).
fn many_keys(n: usize) -> serde_json::Map<String, serde_json::Value> {
    (1..=n).map(|i| (format!("k{i}"), json!(0))).collect()
}

#[test]
fn large_objects_and_sets_are_checked_in_linear_time() {
    // each of these was quadratic: a scan of the messages (or keys, or elements) so far for
    // each key (or element)
    let n = 50_000;
    // unknown keys of a foreign key's object
    let mut set = many_keys(n);
    set.insert("id".into(), json!("0d5b6b34-5b7b-4bd4-8a43-5a7f6a4a0001"));
    let doc = json!({"_format_version": "3.0",
                     "keys": [{"name": "k", "kid": "k", "set": set, "pem": {"public_key": pem("rsa.pub")}}]});
    let lines = error_lines(&quick("foreign key object", || load_value(doc)).unwrap_err());
    assert_eq!(lines.len(), n, "{:?}", &lines[..3]);
    // (in Kong's order: the keys by their bytes, descending)
    assert_eq!(lines[0], "key[k] set.k9999: unknown field");
    assert_eq!(lines[n - 1], "key[k] set.k1: unknown field");
    // unknown keys of an entity (read by the fast path first, then reported)
    let mut service = many_keys(n);
    service.insert("name".into(), json!("s"));
    service.insert("host".into(), json!("a.test"));
    let doc = json!({"_format_version": "3.0", "services": [service]});
    let lines = error_lines(&quick("entity object", || load_value(doc)).unwrap_err());
    assert_eq!(lines.len(), n);
    assert!(lines.contains(&format!("service[s] k{n}: unknown field")));
    // unknown top-level keys
    let mut top = many_keys(n);
    top.insert("_format_version".into(), json!("3.0"));
    let lines = error_lines(
        &quick("top-level object", || {
            load_value(serde_json::Value::Object(top))
        })
        .unwrap_err(),
    );
    assert_eq!(lines.len(), n);
    assert!(lines.contains(&format!("top k{n}: unknown field")));
    // a set's duplicates dropped, on the fast path (valid) and on the reporting path (the
    // service has another error)
    let tags: Vec<String> = (0..n + n / 2).map(|i| format!("t{}", i % n)).collect();
    let doc = json!({"_format_version": "3.0", "services": [{"name": "s", "host": "a.test", "tags": tags}]});
    let cfg = quick("long set", || load_value(doc.clone())).expect("valid");
    assert_eq!(cfg.services[0].tags.len(), n);
    assert_eq!(cfg.services[0].tags[n - 1], format!("t{}", n - 1));
    let mut bad = doc;
    bad["services"][0]["port"] = json!(-1);
    let lines = error_lines(&quick("long set, reported", || load_value(bad)).unwrap_err());
    assert_eq!(
        lines,
        ["service[s] port: value should be between 0 and 65535"]
    );
}

#[test]
fn flattened_entries_carry_identity_for_the_controller() {
    let d = doc(
        "services:\n- name: ns.svc.80\n  host: a.com\n  tags: [k8s-name:svc, k8s-namespace:ns, k8s-kind:Service]\n  routes:\n  - name: ns.ing.svc.a.com.80\n    paths: [bad]\n    tags: [k8s-name:ing, k8s-namespace:ns, k8s-kind:Ingress]\n",
    );
    let err = load(&d).unwrap_err();
    let body = err.kong_body(true);
    assert_eq!(body["code"], 14);
    assert_eq!(body["name"], "invalid declarative configuration");
    assert_eq!(body["message"], "declarative config is invalid: {}");
    let fe = &body["flattened_errors"][0];
    assert_eq!(fe["entity_type"], "route");
    assert_eq!(fe["entity_name"], "ns.ing.svc.a.com.80");
    assert_eq!(
        fe["entity_tags"],
        json!(["k8s-name:ing", "k8s-namespace:ns", "k8s-kind:Ingress"])
    );
    // Given without ids, neither the route nor its parent are named by id (Kong's
    // flattening sees the input before any id is generated).
    assert!(fe.get("entity_id").is_none(), "{fe}");
    assert!(fe["entity"].get("service").is_none(), "{fe}");
    assert_eq!(
        fe["errors"],
        json!([{"type": "field", "field": "paths.1", "message": "should start with: / (fixed path) or ~/ (regex path)"}])
    );
    // without flattening, the errors are nested like the input
    let body = err.kong_body(false);
    assert_eq!(
        body["fields"],
        json!({"services": [{"routes": [{"paths": ["should start with: / (fixed path) or ~/ (regex path)"]}]}]})
    );
    assert_eq!(
        body["message"],
        "declarative config is invalid: {services={{routes={{paths={\"should start with: / (fixed path) or ~/ (regex path)\"}}}}}}"
    );
    assert!(body.get("flattened_errors").is_none());

    // As the translator sends them, with ids: the route is named by its id, and its parent
    // service by the id it was given.
    let (sid, rid) = (
        "5b1f6a6e-41a8-5e0c-9c53-2d0f5f3c1a01",
        "0e8d2c1b-77f4-5c3e-8a6d-6b4f1e2d3c02",
    );
    let d = doc(&format!(
        "services:\n- name: ns.svc.80\n  id: {sid}\n  host: a.com\n  routes:\n  - name: ns.ing.svc.a.com.80\n    id: {rid}\n    paths: [bad]\n    tags: [k8s-name:ing, k8s-namespace:ns, k8s-kind:Ingress]\n"
    ));
    let body = load(&d).unwrap_err().kong_body(true);
    let fe = &body["flattened_errors"][0];
    assert_eq!(fe["entity_id"], rid, "{fe}");
    assert_eq!(fe["entity"]["service"], json!({"id": sid}), "{fe}");
}

/// (In the order of Kong's `flattened_errors`: the sections by name, descending, and their
/// entities by position, descending.)
#[test]
fn every_error_is_reported_at_once() {
    let d = doc(
        "services:\n- name: a\n- name: b\n  host: x.com\n  port: -1\nupstreams:\n- name: 1.2.3.4\n",
    );
    assert_eq!(
        error_lines(&load(&d).unwrap_err()),
        [
            "upstream[1.2.3.4] name: Invalid name ('1.2.3.4'); no ip addresses allowed",
            "service[b] port: value should be between 0 and 65535",
            "service[a] host: required field missing",
        ]
    );
}

/// Field errors and entity checks together, as Kong reports them: each entity check by its
/// checker's flags (`at_least_one_of`, `conditional` and the subschemas' checks run beside
/// invalid fields and see their given values; a custom check or `mutually_required` does not
/// run when one of its own fields is invalid). In the order of Kong's `flattened_errors`: the
/// field messages by field name, descending, then the `@entity` messages in the order of
/// Kong's `entity_checks`.
#[test]
fn entity_checks_beside_field_errors() {
    let (rsa_c, rsa_k, ec_c, other_k) = (
        pem("rsa.crt"),
        pem("rsa.key"),
        pem("ec.crt"),
        pem("other.key"),
    );
    let cases: Vec<(&str, serde_json::Value, Vec<&str>)> = vec![
        // services: Kong's `conditional` on `protocol` runs beside another field's error,
        // and its message replaces the `then_field`'s own
        (
            "grpc service with a path and a bad port",
            json!({"services": [{"name": "s", "host": "a.com", "protocol": "grpc",
                                 "path": "/x", "port": 99999}]}),
            vec![
                "service[s] port: value should be between 0 and 65535",
                "service[s] path: value must be null",
                "service[s] @entity: failed conditional validation given value of field 'protocol'",
            ],
        ),
        (
            "grpc service with a path of the wrong type",
            json!({"services": [{"name": "s", "host": "a.com", "protocol": "grpc", "path": 5}]}),
            vec![
                "service[s] path: value must be null",
                "service[s] @entity: failed conditional validation given value of field 'protocol'",
            ],
        ),
        (
            "http service with TLS settings, one of them invalid",
            json!({"services": [{"name": "s", "host": "a.com", "tls_verify": "yes",
                                 "tls_verify_depth": 3}]}),
            vec![
                "service[s] tls_verify_depth: value must be null",
                "service[s] tls_verify: value must be null",
                "service[s] @entity: failed conditional validation given value of field 'protocol'",
                "service[s] @entity: failed conditional validation given value of field 'protocol'",
            ],
        ),
        // `protocols` as one string: refused, yet it picks gRPC's subschema (as Kong's
        // `get_subschema` does), so `strip_path` defaults to false and draws no message
        (
            "grpc route whose protocols are a string",
            json!({"routes": [{"name": "r", "protocols": "grpc", "paths": ["/"]}]}),
            vec!["route[r] protocols: expected a set"],
        ),
        // (a counter-case: the conditionals' `if_match` fails on an invalid `protocol`)
        (
            "an invalid protocol decides no conditional",
            json!({"services": [{"name": "s", "host": "a.com", "protocol": "ftp", "path": "/x",
                                 "tls_verify": true}]}),
            vec![
                "service[s] protocol: expected one of: grpc, grpcs, http, https, tcp, tls, tls_passthrough, udp, ws, wss",
            ],
        ),
        // consumers, the `{ip, port}` records of routes: `at_least_one_of` sees an invalid
        // empty value as empty
        (
            "consumer with an empty username",
            json!({"consumers": [{"username": ""}]}),
            vec![
                "consumer[] username: length must be at least 1",
                "consumer[] @entity: at least one of these fields must be non-empty: 'custom_id', 'username'",
            ],
        ),
        (
            "stream route source with an empty ip",
            json!({"services": [{"name": "s", "host": "a.com", "routes": [
                {"name": "r", "protocols": ["tcp"], "sources": [{"ip": ""}]}]}]}),
            vec![
                "route[r] sources.1.ip: length must be at least 1",
                "route[r] @entity: at least one of these fields must be non-empty: 'ip', 'port'",
            ],
        ),
        // upstreams: a conditional's `then_field` meets its own rules again (its message
        // stays) and the check fails; another replaces the message with its rule's
        (
            "hashing on an invalid header name",
            json!({"upstreams": [{"name": "u", "hash_on": "header",
                                  "hash_on_header": "bad header"}]}),
            vec![
                "upstream[u] hash_on_header: bad header name 'bad header', allowed characters are A-Z, a-z, 0-9, '_', and '-'",
                "upstream[u] @entity: failed conditional validation given value of field 'hash_on'",
            ],
        ),
        (
            "hashing on a cookie with an unknown fallback",
            json!({"upstreams": [{"name": "u", "hash_on": "cookie", "hash_fallback": "bogus"}]}),
            vec![
                "upstream[u] hash_on_cookie: required field missing",
                "upstream[u] hash_fallback: expected one of: none",
                "upstream[u] @entity: failed conditional validation given value of field 'hash_on'",
                "upstream[u] @entity: failed conditional validation given value of field 'hash_on'",
            ],
        ),
        (
            "a fallback equal to hash_on, and the same headers",
            json!({"upstreams": [{"name": "u", "hash_on": "consumer", "hash_fallback": "consumer",
                                  "hash_on_header": "x-a", "hash_fallback_header": "x-a",
                                  "slots": 1}]}),
            vec![
                "upstream[u] slots: value should be between 10 and 65536",
                "upstream[u] hash_fallback: expected one of: none, ip, header, cookie, path, query_arg, uri_capture",
                "upstream[u] @entity: failed conditional validation given value of field 'hash_on'",
                "upstream[u] @entity: values of these fields must be distinct: 'hash_on_header', 'hash_fallback_header'",
            ],
        ),
        // routes: the fields a subschema forbids, and the subschemas' checks, beside other
        // errors
        (
            "tcp route with paths and nothing to match",
            json!({"services": [{"name": "s", "host": "a.com", "routes": [
                {"name": "r", "protocols": ["tcp"], "paths": ["/a"]}]}]}),
            vec![
                "route[r] paths: cannot set 'paths' when 'protocols' is 'tcp', 'tls', 'tls_passthrough' or 'udp'",
                "route[r] @entity: must set one of 'sources', 'destinations', 'snis' when 'protocols' is 'tcp', 'tls' or 'udp'",
            ],
        ),
        (
            "tcp route with an empty paths array (a value: the subschema wants null)",
            json!({"services": [{"name": "s", "host": "a.com", "routes": [
                {"name": "r", "protocols": ["tcp"], "paths": [],
                 "destinations": [{"port": 9000}]}]}]}),
            vec![
                "route[r] paths: cannot set 'paths' when 'protocols' is 'tcp', 'tls', 'tls_passthrough' or 'udp'",
            ],
        ),
        (
            "mixed protocols and sources (the first protocol's subschema)",
            json!({"services": [{"name": "s", "host": "a.com", "routes": [
                {"name": "r", "protocols": ["http", "tcp"], "paths": ["/"],
                 "sources": [{"ip": "10.0.0.1"}]}]}]}),
            vec![
                "route[r] sources: cannot set 'sources' when 'protocols' is 'http' or 'https'",
                "route[r] protocols: these sets are mutually exclusive: ('http', 'https', 'ws', 'wss'), ('tcp', 'tls', 'udp')",
            ],
        ),
        (
            "http route with snis and a bad path",
            json!({"services": [{"name": "s", "host": "a.com", "routes": [
                {"name": "r", "protocols": ["http"], "paths": ["bad"], "snis": ["a.com"]}]}]}),
            vec![
                "route[r] snis: length must be 0",
                "route[r] paths.1: should start with: / (fixed path) or ~/ (regex path)",
                "route[r] @entity: 'snis' can only be set when 'protocols' is 'grpcs', 'https', 'tls' or 'tls_passthrough'",
            ],
        ),
        (
            "grpc before http (the gRPC subschema: strip_path defaults to false)",
            json!({"services": [{"name": "s", "host": "a.com", "routes": [
                {"name": "r", "protocols": ["grpc", "http"], "paths": ["/"]}]}]}),
            vec![
                "route[r] protocols: these sets are mutually exclusive: ('grpc', 'grpcs'), ('http', 'https', 'ws', 'wss')",
            ],
        ),
        (
            "grpcs route with strip_path and nothing to match",
            json!({"services": [{"name": "s", "host": "a.com", "routes": [
                {"name": "r", "protocols": ["grpc", "grpcs"], "strip_path": true}]}]}),
            vec![
                "route[r] strip_path: cannot set 'strip_path' when 'protocols' is 'grpc' or 'grpcs'",
                "route[r] @entity: must set one of 'hosts', 'headers', 'paths', 'snis' when 'protocols' is 'grpcs'",
            ],
        ),
        // certificates: the key material is checked by the fields; a custom check does not
        // run when one of its fields failed; `@entity` in Kong's order
        (
            "garbage certificate, invalid tags",
            json!({"certificates": [{"cert": "garbage", "key": other_k, "tags": [1]}]}),
            vec![
                "certificate[-] tags.1: expected a string",
                "certificate[-] cert: invalid certificate: no PEM certificate found",
            ],
        ),
        (
            "mismatched key and an incomplete alternative pair",
            json!({"certificates": [{"cert": rsa_c, "key": other_k, "cert_alt": ec_c}]}),
            vec![
                "certificate[-] @entity: all or none of these fields must be set: 'cert_alt', 'key_alt'",
                "certificate[-] @entity: certificate does not match key",
            ],
        ),
        // (the alternative pair's checks do not run beside its invalid certificate; the
        // main pair's does)
        (
            "mismatched key beside an invalid alternative certificate",
            json!({"certificates": [{"cert": rsa_c, "key": other_k, "cert_alt": "garbage",
                                     "key_alt": rsa_k}]}),
            vec![
                "certificate[-] cert_alt: invalid certificate: no PEM certificate found",
                "certificate[-] @entity: certificate does not match key",
            ],
        ),
        // keys: the custom check runs beside other fields' errors, not beside its own
        (
            "jwk of another kid, invalid tags",
            json!({"keys": [{"name": "k", "kid": "a", "jwk": "{\"kid\": \"b\"}", "tags": [1]}]}),
            vec![
                "key[k] tags.1: expected a string",
                "key[k] @entity: kid in jwk.kid must be equal to keys.kid",
            ],
        ),
        // (a counter-case: the custom check reads `kid`, which failed)
        (
            "jwk of another kid, invalid kid",
            json!({"keys": [{"name": "k", "kid": 5, "jwk": "{\"kid\": \"b\"}"}]}),
            vec!["key[k] kid: expected a string"],
        ),
        // jwt credentials: the conditional's `then_field` is required
        (
            "RS256 credential without a key, with an invalid tag",
            json!({"consumers": [{"username": "c", "jwt_secrets": [
                {"key": "k", "algorithm": "RS256", "tags": [""]}]}]}),
            vec![
                "jwt_secret[k] tags.1: length must be at least 1",
                "jwt_secret[k] rsa_public_key: required field missing",
                "jwt_secret[k] @entity: failed conditional validation given value of field 'algorithm'",
            ],
        ),
    ];
    for (name, mut doc, expected) in cases {
        doc["_format_version"] = json!("3.0");
        check_value(name, doc, &expected);
    }
}

#[test]
fn flattened_entries_name_ids_and_parents_only_as_given() {
    let svc = "5d3a4c1e-0f4b-4c2a-9b7e-1a2b3c4d5e6f";
    let route = "0b6f1c7e-2a3d-4e5f-8a9b-c0d1e2f3a4b5";
    let d = doc(&format!(
        "services:\n- name: s\n  id: {svc}\n  host: a.com\n  routes:\n  - name: r\n    id: {route}\n    paths: [bad]\n    tags: [a, b]\nconsumers:\n- username: alice\n  nope: 1\n"
    ));
    let body = load(&d).unwrap_err().kong_body(true);
    let entries = body["flattened_errors"].as_array().unwrap();
    let route_entry = entries
        .iter()
        .find(|e| e["entity_type"] == "route")
        .unwrap();
    assert_eq!(route_entry["entity_id"], route);
    assert_eq!(route_entry["entity_name"], "r");
    assert_eq!(route_entry["entity_tags"], json!(["a", "b"]));
    assert_eq!(route_entry["entity"]["service"], json!({ "id": svc }));
    // A consumer has no `name`: Kong reports no entity_name (not the username), and no
    // entity_tags without tags.
    let consumer = entries
        .iter()
        .find(|e| e["entity_type"] == "consumer")
        .unwrap();
    assert!(consumer.get("entity_name").is_none(), "{consumer}");
    assert!(consumer.get("entity_tags").is_none(), "{consumer}");
    assert!(consumer.get("entity_id").is_none(), "{consumer}");
    assert_eq!(
        consumer["errors"],
        json!([{"type": "field", "field": "nope", "message": "unknown field"}])
    );
}

/// The order of `flattened_errors` (`POST /config?flatten_errors=1`), as Kong's
/// `flatten_errors` (`kong/db/errors.lua`) builds it: the document's sections by name,
/// descending (`upstreams`, `services`, `routes`, `plugins`, `consumers`); a section's
/// entities by position, descending; an entity's nested children before it, each kind of
/// children by position, ascending, a child's own children before the child; and within an
/// entry, the errors by field name, descending (nested ones in their field's place), the
/// entity-level messages (`@entity`, a key like the others, by its bytes) after the
/// lowercase names, before any name that starts with a digit.
#[test]
fn flattened_errors_come_in_kongs_order() {
    let d = doc(r#"
consumers:
- username: c1
  zz: 1
  aa: 1
- username: c2
  keyauth_credentials:
  - key: k1
    zz: 1
  - key: k2
  - key: k3
    aa: 1
- username: c3
plugins:
- name: example-limit
  config: {minute: -1, policy: nope}
routes:
- name: top-route
  paths: [bad]
services:
- name: s1
  host: a.test
  protocol: grpc
  path: /x
  port: 99999
  retries: -1
  routes:
  - name: r1
    paths: [bad]
    plugins:
    - name: example-limit
      config: {policy: nope}
  - name: r2
    paths: [/ok]
  - name: r3
    protocols: [http]
  plugins:
  - name: example-auth
    config: {hide_credentials: 1}
- name: s2
  host: b.test
- name: s3
  host: c.test
  tags: [1, ok, 2]
upstreams:
- name: u1
  slots: 1
  targets:
  - target: "hostname:1.0"
  - target: 10.0.0.1:80
  - target: 10.0.0.2:80
    weight: -1
"#);
    let body = load(&d).unwrap_err().kong_body(true);
    assert_eq!(body["fields"], json!({}), "{body}");
    // each entry as `type name: field, field, ...` (`@entity` for an entity-level message)
    let entries = flattened_summary(&body, |e| {
        e["entity_name"]
            .as_str()
            .or(e["entity"]["username"].as_str())
            .or(e["entity"]["key"].as_str())
            .or(e["entity"]["target"].as_str())
            .unwrap_or("-")
            .to_string()
    });
    assert_eq!(
        entries,
        [
            // upstreams: the targets first, by position
            "target hostname:1.0: target",
            "target 10.0.0.2:80: weight",
            "upstream u1: slots",
            // services, from the last: s3, then s1's routes (r1's plugin before r1), its
            // plugins, then s1 itself
            "service s3: tags.3, tags.1",
            "plugin example-limit: config.policy",
            "route r1: paths.1",
            "route r3: @entity",
            "plugin example-auth: config.hide_credentials",
            "service s1: retries, port, path, @entity",
            "route top-route: paths.1",
            "plugin example-limit: config.policy, config.minute",
            // consumers, from the last: c2's credentials, by position, then c1
            "keyauth_credential k1: zz",
            "keyauth_credential k3: aa",
            "consumer c1: zz, aa",
        ]
    );
}

/// Kong sorts each level of its error tables as LuaJIT sorts the keys, and the keys are of
/// two kinds: a section's entities and an array's elements are numbers (position 10 after
/// 9), while a document's section names, a record's fields and a map's keys are strings,
/// compared by their bytes (`"10"` before `"9"`, `keys` after `key_sets`: `s` > `_`), even
/// when all digits. `flattened_errors` takes each level's keys from the last; the readable
/// lines keep the document's order.
#[test]
fn flattened_errors_sort_positions_by_value_and_names_by_bytes() {
    let mut services = String::new();
    for i in 1..=11 {
        // the 9th and the 10th are invalid
        let retries = if i == 9 || i == 10 { -1 } else { 1 };
        services.push_str(&format!(
            "- name: s{i}\n  host: h{i}.test\n  retries: {retries}\n"
        ));
    }
    let paths: Vec<String> = (1..=11)
        .map(|i| {
            if i == 9 || i == 10 {
                "bad".into()
            } else {
                format!("/p{i}")
            }
        })
        .collect();
    let d = doc(&format!(
        r#"services:
{services}routes:
- name: r
  paths: [{}]
  headers:
    "9": []
    "10": []
    x: [a]
keys:
- name: k
  kid: k
key_sets:
- name: 1
"#,
        paths.join(", ")
    ));
    let err = load(&d).unwrap_err();
    let body = err.kong_body(true);
    let entries = flattened_summary(&body, |e| {
        e["entity_name"]
            .as_str()
            .or(e["entity"]["name"].as_str())
            .map(str::to_string)
            .unwrap_or_else(|| e["entity"]["name"].to_string())
    });
    assert_eq!(
        entries,
        [
            // services: position 10, then 9
            "service s10: retries",
            "service s9: retries",
            // routes: the header names "9" then "10" (bytes), the paths 10 then 9 (values)
            "route r: paths.10, paths.9, headers.9, headers.10",
            // `keys` before `key_sets`
            "key k: @entity",
            "key_set 1: name",
        ],
        "{body}"
    );
    // the readable lines: the document's order
    let lines = err.lines();
    let at = |needle: &str| {
        lines
            .iter()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("{needle} in {lines:#?}"))
    };
    assert!(at("service 's9'") < at("service 's10'"), "{lines:#?}");
    assert!(at("paths.9") < at("paths.10"), "{lines:#?}");
    assert!(at("service 's10'") < at("route 'r'"), "{lines:#?}");
}

/// Each entry of a body's `flattened_errors` as `type name: field, field, ...` (`@entity` for
/// an entity-level message), the name found by `name`.
fn flattened_summary(
    body: &serde_json::Value,
    name: impl Fn(&serde_json::Value) -> String,
) -> Vec<String> {
    body["flattened_errors"]
        .as_array()
        .expect("flattened_errors")
        .iter()
        .map(|e| {
            let errors: Vec<&str> = e["errors"]
                .as_array()
                .expect("errors")
                .iter()
                .map(|x| x["field"].as_str().unwrap_or("@entity"))
                .collect();
            format!(
                "{} {}: {}",
                e["entity_type"].as_str().expect("entity_type"),
                name(e),
                errors.join(", ")
            )
        })
        .collect()
}
