//! Valid documents: every entity in nested and flat form, defaults, ids, migrations, and
//! serialization round trips.

mod common;

use common::{load, load_value, load_with, pem};
use serde_json::json;
use silverback_config::ids::{basicauth_hash, kong_id};
use silverback_config::{Config, EntityKind, Protocol, RouterFlavor};

fn every_entity_nested() -> serde_json::Value {
    json!({
        "_format_version": "3.0",
        "_comment": "every entity, nested",
        "_ignore": [{"anything": true}],
        "vaults": [{"prefix": "my-env", "name": "env", "config": {"prefix": "SB_"}}],
        "certificates": [{
            "id": "6b1c1ef6-8bb4-4a4d-9cf0-8f1c1d1e0001",
            "cert": pem("rsa.crt"), "key": pem("rsa.key"),
            "cert_alt": pem("ec.crt"), "key_alt": pem("ec.key"),
            "snis": ["example.test", {"name": "*.example.test", "tags": ["wild"]}]
        }],
        "ca_certificates": [{"cert": pem("ca.crt"), "tags": ["ca"]}],
        "consumers": [{
            "username": "alice", "custom_id": "a-1",
            "keyauth_credentials": [{"key": "alice-key"}, {}],
            "basicauth_credentials": [{"username": "alice", "password": "s3cret"}],
            "jwt_secrets": [{"key": "alice-iss", "secret": "shh"}],
            "acls": [{"group": "admins"}],
            "hmacauth_credentials": [{"username": "alice-hmac", "secret": "hm"}],
            "plugins": [{"name": "example-limit", "config": {"minute": 5}}]
        }],
        "consumer_groups": [{"name": "gold"}],
        "consumer_group_consumers": [{"consumer_group": "gold", "consumer": "alice"}],
        "services": [{
            "name": "echo", "url": "https://backend.test:8443/api",
            "ca_certificates": [], "tls_verify": true,
            "client_certificate": {"id": "6b1c1ef6-8bb4-4a4d-9cf0-8f1c1d1e0001"},
            "routes": [{
                "name": "echo-route", "paths": ["/echo", "~/items/(?<id>\\d+)$"],
                "hosts": ["*.example.test", "api.example.test:8443"],
                "methods": ["GET", "POST"], "headers": {"x-env": ["prod", "~*can.+"]},
                "plugins": [{"name": "example-auth"}]
            }],
            "plugins": [{"name": "example-limit", "config": {"minute": 100, "policy": "redis"}}]
        }],
        "upstreams": [{
            "name": "backend.test", "hash_on": "header", "hash_on_header": "x-user",
            "healthchecks": {"active": {"healthy": {"interval": 5}}},
            "targets": [{"target": "10.0.0.1"}, {"target": "10.0.0.2:9000", "weight": 0}]
        }],
        "plugins": [{"name": "example-limit", "config": {"minute": 1000}, "tags": ["global"]}]
    })
}

/// SNI names as Kong's `wildcard_host` takes them: the catch-all `*` (Kong's default SNI,
/// looked up last), a wildcard at either end, the first or last character being `*`.
#[test]
fn sni_names_take_kongs_wildcards() {
    let names = [
        "*",
        "*.example.test",
        "example.*",
        "*foo.example.test",
        "example.te*",
    ];
    let cfg = load_value(json!({
        "_format_version": "3.0",
        "certificates": [{"cert": pem("rsa.crt"), "key": pem("rsa.key"), "snis": names}],
    }))
    .expect("valid");
    let loaded: Vec<&str> = cfg.snis.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(loaded, names);
}

#[test]
fn nested_document_loads_every_entity() {
    let cfg = load_value(every_entity_nested()).expect("valid");
    assert_eq!(cfg.vaults.len(), 1);
    assert_eq!(cfg.certificates.len(), 1);
    assert_eq!(cfg.snis.len(), 2);
    assert_eq!(cfg.ca_certificates.len(), 1);
    assert_eq!(cfg.consumers.len(), 1);
    assert_eq!(cfg.consumer_groups.len(), 1);
    assert_eq!(cfg.consumer_group_consumers.len(), 1);
    assert_eq!(cfg.services.len(), 1);
    assert_eq!(cfg.routes.len(), 1);
    assert_eq!(cfg.upstreams.len(), 1);
    assert_eq!(cfg.targets.len(), 2);
    assert_eq!(cfg.plugins.len(), 4);
    assert_eq!(cfg.keyauth_credentials.len(), 2);
    assert_eq!(cfg.basicauth_credentials.len(), 1);
    assert_eq!(cfg.jwt_secrets.len(), 1);
    assert_eq!(cfg.acls.len(), 1);
    assert_eq!(cfg.hmacauth_credentials.len(), 1);

    // ids: Kong's UUIDv5 rules
    let svc = &cfg.services[0];
    assert_eq!(svc.id, kong_id(EntityKind::Service, "echo"));
    let route = &cfg.routes[0];
    assert_eq!(route.id, kong_id(EntityKind::Route, "echo-route"));
    assert_eq!(route.service.map(|f| f.id), Some(svc.id));
    let up = &cfg.upstreams[0];
    assert_eq!(up.id, kong_id(EntityKind::Upstream, "backend.test"));
    // a nested target's key holds the parent's id and the target as written
    assert_eq!(
        cfg.targets[0].id,
        kong_id(EntityKind::Target, &format!("targets:*:{}:10.0.0.1", up.id))
    );
    let consumer = &cfg.consumers[0];
    assert_eq!(consumer.id, kong_id(EntityKind::Consumer, "alice"));
    let acl = &cfg.acls[0];
    assert_eq!(
        acl.id,
        kong_id(EntityKind::Acl, &format!("acls:*:{}:admins", consumer.id))
    );

    // shorthand and defaults
    assert_eq!(svc.protocol, Protocol::Https);
    assert_eq!(
        (svc.host.as_str(), svc.port, svc.path.as_deref()),
        ("backend.test", 8443, Some("/api"))
    );
    assert_eq!(
        (
            svc.retries,
            svc.connect_timeout,
            svc.read_timeout,
            svc.write_timeout
        ),
        (5, 60000, 60000, 60000)
    );
    assert_eq!(route.protocols, vec![Protocol::Http, Protocol::Https]);
    assert!(
        route.strip_path
            && !route.preserve_host
            && route.request_buffering
            && route.response_buffering
    );
    assert_eq!(
        (route.https_redirect_status_code, route.regex_priority),
        (426, 0)
    );
    assert_eq!(
        up.algorithm, "consistent-hashing",
        "hash_on implies consistent hashing"
    );
    assert_eq!(up.slots, 10000);
    assert_eq!(up.healthchecks.active.healthy.interval, 5.0);
    assert_eq!(
        up.healthchecks.active.unhealthy.http_statuses,
        vec![429, 404, 500, 501, 502, 503, 504, 505]
    );
    assert_eq!(
        up.healthchecks.passive.unhealthy.http_statuses,
        vec![429, 500, 503]
    );
    assert_eq!(
        cfg.targets[0].target, "10.0.0.1:8000",
        "default target port"
    );
    assert_eq!(cfg.targets[1].weight, 0);

    // plugins: scopes from nesting, config defaults from the plugin's schema
    let on_route = cfg
        .plugins
        .iter()
        .find(|p| p.name == "example-auth")
        .expect("route plugin");
    assert_eq!(on_route.route.map(|f| f.id), Some(route.id));
    assert_eq!(
        on_route.config,
        json!({"key_names": ["apikey"], "hide_credentials": false})
    );
    let on_service = cfg
        .plugins
        .iter()
        .find(|p| p.service.is_some())
        .expect("service plugin");
    assert_eq!(on_service.config, json!({"minute": 100, "policy": "redis"}));
    let on_consumer = cfg
        .plugins
        .iter()
        .find(|p| p.consumer.is_some())
        .expect("consumer plugin");
    assert_eq!(on_consumer.consumer.map(|f| f.id), Some(consumer.id));
    let global = cfg
        .plugins
        .iter()
        .find(|p| p.tags == ["global"])
        .expect("global plugin");
    assert!(global.route.is_none() && global.service.is_none() && global.consumer.is_none());

    // load-time transformations
    assert_eq!(
        cfg.basicauth_credentials[0].password,
        basicauth_hash("s3cret", &consumer.id.to_string())
    );
    assert_eq!(cfg.keyauth_credentials[0].key, "alice-key");
    assert_eq!(cfg.keyauth_credentials[1].key.len(), 32, "a generated key");
    assert_eq!(cfg.ca_certificates[0].cert_digest.len(), 64);
    assert_eq!(cfg.snis[1].tags, vec!["wild"]);
    assert_eq!(
        cfg.snis[0].certificate.id.to_string(),
        "6b1c1ef6-8bb4-4a4d-9cf0-8f1c1d1e0001"
    );
    let cgc = &cfg.consumer_group_consumers[0];
    assert_eq!(cgc.consumer.id, consumer.id);
    assert_eq!(cgc.consumer_group.id, cfg.consumer_groups[0].id);
}

#[test]
fn flat_document_resolves_references_by_name_and_id() {
    let doc = r#"
_format_version: "3.0"
services:
- name: a
  host: a.test
- id: 0d5b6b34-5b7b-4bd4-8a43-5a7f6a4a0001
  host: b.test
routes:
- name: r1
  paths: [/a]
  service: a
- name: r2
  paths: [/b]
  service: {id: 0d5b6b34-5b7b-4bd4-8a43-5a7f6a4a0001}
- name: r3
  hosts: [c.test]
  service: 0d5b6b34-5b7b-4bd4-8a43-5a7f6a4a0001
upstreams:
- name: up
targets:
- target: 10.0.0.7:80
  upstream: up
consumers:
- username: bob
keyauth_credentials:
- key: bob-key
  consumer: bob
plugins:
- name: example-limit
  service: a
  route: r1
"#;
    let cfg = load(doc).expect("valid");
    let a = kong_id(EntityKind::Service, "a");
    assert_eq!(cfg.routes[0].service.unwrap().id, a);
    assert_eq!(
        cfg.routes[1].service.unwrap().id.to_string(),
        "0d5b6b34-5b7b-4bd4-8a43-5a7f6a4a0001"
    );
    assert_eq!(
        cfg.routes[2].service.unwrap().id.to_string(),
        "0d5b6b34-5b7b-4bd4-8a43-5a7f6a4a0001"
    );
    // top-level target: the key holds the reference as written
    assert_eq!(
        cfg.targets[0].id,
        kong_id(EntityKind::Target, "targets:*:up:10.0.0.7:80")
    );
    assert_eq!(
        cfg.targets[0].upstream.id,
        kong_id(EntityKind::Upstream, "up")
    );
    assert_eq!(
        cfg.keyauth_credentials[0].consumer.id,
        kong_id(EntityKind::Consumer, "bob")
    );
    let p = &cfg.plugins[0];
    assert_eq!(
        p.id,
        kong_id(EntityKind::Plugin, "plugins:*:example-limit:r1:a:")
    );
    assert_eq!(
        (p.service.unwrap().id, p.route.unwrap().id),
        (a, kong_id(EntityKind::Route, "r1"))
    );
}

#[test]
fn json_and_yaml_give_the_same_configuration() {
    let v = every_entity_nested();
    let from_json = load(&v.to_string()).expect("json");
    let from_yaml = load(&serde_saphyr::to_string(&v).expect("yaml")).expect("yaml");
    // generated credential keys are random; compare the rest
    let strip = |mut c: Config| {
        c.keyauth_credentials.truncate(1);
        c
    };
    assert_eq!(strip(from_json), strip(from_yaml));
}

#[test]
fn serialization_round_trips_and_is_byte_stable() {
    let mut v = every_entity_nested();
    // no generated secrets, so that two loads are identical
    v["consumers"][0]["keyauth_credentials"] = json!([{"key": "alice-key"}]);
    let cfg = load_value(v.clone()).expect("valid");
    let again = load_value(v).expect("valid");
    assert_eq!(cfg, again);
    assert_eq!(cfg.to_json(false), again.to_json(false));
    assert_eq!(cfg.to_json(true), again.to_json(true));

    for nested in [false, true] {
        let text = cfg.to_json(nested);
        let reloaded = load(&text).expect("exported document loads");
        assert_eq!(reloaded, cfg, "round trip (nested: {nested})");
        let yaml = cfg.to_yaml(nested);
        assert_eq!(load(&yaml).expect("yaml export loads"), cfg);
    }
    // exported passwords are already hashed
    assert!(cfg.to_json(false).contains("\"_transform\":false"));
    let nested = cfg.to_nested_value();
    assert_eq!(nested["services"][0]["routes"][0]["name"], "echo-route");
    assert!(nested["services"][0]["routes"][0].get("service").is_none());
    assert_eq!(
        nested["upstreams"][0]["targets"].as_array().map(Vec::len),
        Some(2)
    );
    assert_eq!(nested["consumers"][0]["acls"][0]["group"], "admins");
}

#[test]
fn hash_is_the_documents_md5_and_zero_when_empty() {
    use silverback_config::config_hash;
    let e = "_format_version: \"3.0\"\n";
    let empty = load(e).expect("empty");
    assert!(empty.is_empty());
    assert_eq!(
        config_hash(e.as_bytes(), &empty),
        "00000000000000000000000000000000"
    );
    let a = "_format_version: \"3.0\"\nservices:\n- name: s\n  host: a.test\n";
    let b = "_format_version: \"3.0\"\nservices:\n- name: s\n  host: b.test\n";
    let (ha, hb) = (
        config_hash(a.as_bytes(), &load(a).expect("a")),
        config_hash(b.as_bytes(), &load(b).expect("b")),
    );
    assert_ne!(ha, hb);
    assert_eq!(ha.len(), 32);
    assert!(ha.bytes().all(|c| c.is_ascii_hexdigit()));
    // Kong hashes the document as received: the same entities written as JSON load the
    // same but hash differently
    let json = r#"{"_format_version": "3.0", "services": [{"name": "s", "host": "a.test"}]}"#;
    let from_json = load(json).expect("json");
    assert_eq!(from_json, load(a).expect("a"));
    assert_ne!(config_hash(json.as_bytes(), &from_json), ha);
}

#[test]
fn flattened_entities_are_keyed_by_id() {
    let cfg = load("_format_version: \"3.0\"\nservices:\n- name: s\n  host: a.test\n  routes:\n  - name: r\n    paths: [/]\n").expect("valid");
    let flat = cfg.flattened_entities();
    let sid = kong_id(EntityKind::Service, "s").to_string();
    let rid = kong_id(EntityKind::Route, "r").to_string();
    assert_eq!(flat["services"][&sid]["host"], "a.test");
    assert_eq!(flat["routes"][&rid]["service"]["id"], sid.as_str());
}

#[test]
fn migrates_old_format_versions() {
    for version in ["1.1", "2.1"] {
        let doc = format!(
            "_format_version: \"{version}\"\nservices:\n- name: s\n  host: a.test\n  routes:\n  - name: r\n    paths: [/plain/./path, \"/items/\\\\d+\", /with%7Etilde]\nroutes:\n- name: top\n  service: s\n  paths: [\"/v[12]/x\"]\n"
        );
        let cfg = load(&doc).expect("migrated");
        assert_eq!(
            cfg.routes[0].paths,
            vec!["/plain/path", "~/items/\\d+", "/with~tilde"]
        );
        // (Kong's `normalize` decodes every escape but a reserved character's: a migrated
        // `%20` is a space, which a prefix path may hold raw, as Kong 3.x's
        // `validate_path_with_regexes` takes any normal path)
        let spaced = load(&format!(
            "_format_version: \"{version}\"\nroutes:\n- name: r\n  paths: [/with%20escape]\n"
        ))
        .expect("a space in a path");
        assert_eq!(spaced.routes[0].paths, vec!["/with escape"]);
        assert_eq!(cfg.routes[1].paths, vec!["~/v[12]/x"]);
        assert!(
            cfg.to_json(false)
                .starts_with("{\"_format_version\":\"3.0\"")
        );
    }
    // 3.0 documents are taken literally: a prefix path, however regex-like (Kong 3.x
    // takes a normal prefix path whatever its characters)
    let cfg = load("_format_version: \"3.0\"\nroutes:\n- name: r\n  paths: [\"/items/\\\\d+\"]\n")
        .expect("a literal prefix");
    assert_eq!(cfg.routes[0].paths, vec!["/items/\\d+"]);
}

#[test]
fn expressions_flavor_accepts_expression_routes() {
    let doc = "_format_version: \"3.0\"\nservices:\n- name: s\n  host: a.test\n  routes:\n  - name: r\n    expression: 'http.path ^= \"/api\" && http.headers.x_team == \"a\"'\n    priority: 100\n  - name: plain\n    paths: [/]\n";
    let cfg = load_with(doc, RouterFlavor::Expressions).expect("valid");
    assert_eq!(cfg.routes[0].priority, Some(100));
    assert_eq!(cfg.routes[1].priority, Some(0));
    assert!(cfg.routes[0].expression.is_some());
    // traditional_compatible knows no `priority`
    assert!(load(doc).is_err());
}

#[test]
fn stream_and_grpc_routes() {
    let doc = r#"
_format_version: "3.0"
services:
- name: tcp
  protocol: tcp
  host: 10.0.0.1
  port: 5432
  routes:
  - name: pg
    protocols: [tcp]
    destinations: [{port: 5432}]
    sources: [{ip: 10.0.0.0/8}]
- name: pass
  protocol: tcp
  host: 10.0.0.2
  routes:
  - name: pt
    protocols: [tls_passthrough]
    snis: [db.example.test]
- name: grpc
  protocol: grpc
  host: 10.0.0.3
  routes:
  - name: g
    protocols: [grpc, grpcs]
    paths: [/pkg.Service/]
"#;
    let cfg = load(doc).expect("valid");
    assert_eq!(cfg.routes.len(), 3);
    assert!(
        !cfg.routes[2].strip_path,
        "grpc routes default to strip_path: false"
    );
    assert_eq!(cfg.routes[0].destinations[0].port, Some(5432));
}

/// Configurations Kong 3.x loads that an earlier, stricter reading refused, and the values
/// Kong gives them.
#[test]
fn what_kong_accepts_loads_with_kongs_values() {
    let doc = r#"
_format_version: "3.0"
services:
- name: q
  url: http://u:pw@b.test/api;v=1?version=2#top
  tags: ["team payments"]
  routes:
  - name: v1
    paths: [/api]
    path_handling: v1
  - name: raw
    paths: ["/café", "/a b", "/users/{id}", "~/rate/100%$"]
- name: g
  url: grpcs://grpc.internal
- name: bare
  url: http://b.test
"#;
    let cfg = load(doc).expect("Kong loads it");
    let q = &cfg.services[0];
    assert_eq!(q.host, "b.test");
    assert_eq!(q.port, 80);
    assert_eq!(q.path.as_deref(), Some("/api"));
    assert_eq!(q.tags, vec!["team payments"]);
    // (kept as written: outside the traditional flavor it is built by the v0 rules)
    assert_eq!(
        cfg.routes[0].path_handling,
        silverback_config::PathHandling::V1
    );
    assert_eq!(cfg.routes[1].paths.len(), 4);
    // (Kong's shorthand gives 443 to `https` only)
    assert_eq!(cfg.services[1].port, 80);
    assert_eq!(cfg.services[2].path, None);

    // still refused: a badly escaped prefix path within RFC 3986's characters, and one
    // that is not in its normal form
    for (path, why) in [
        ("/a%zz", "invalid url-encoded value: '%zz'"),
        ("/a%7Eb", "non-normalized path, consider use '/a~b' instead"),
    ] {
        let err = load(&format!(
            "_format_version: \"3.0\"\nroutes:\n- name: r\n  paths: [\"{path}\"]\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains(why), "{path}: {err}");
    }
}
