//! The admin and status API contract (DB-less semantics).

mod support;

use bytes::Bytes;
use http_body_util::Full;
use serde_json::{Value, json};
use silverback_proxy::{AdminToken, Settings};
use support::*;

fn doc(b: &Backend, extra_route: &str) -> String {
    format!(
        r#"{{"_format_version":"3.0","services":[{{"name":"svc","url":"{url}","tags":["t1"],
          "routes":[{{"name":"r1","paths":["/one"],"tags":["t1","t2"]}},{{"name":"{extra_route}","paths":["/{extra_route}"]}}]}},
          {{"name":"other","url":"{url}","routes":[{{"name":"r3","paths":["/three"]}}]}}],
          "upstreams":[{{"name":"up","targets":[{{"target":"10.0.0.1:80"}}]}}]}}"#,
        url = b.url()
    )
}

#[tokio::test]
async fn node_status_and_readiness() {
    let g = Gw::start(None).await;
    let r = get(g.admin, "localhost", "/").await;
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["version"], "3.10.0");
    assert_eq!(v["configuration"]["database"], "off");
    assert_eq!(
        v["configuration"]["router_flavor"],
        "traditional_compatible"
    );
    assert!(v["plugins"]["available_on_server"].is_object());
    assert_eq!(
        v["configuration"]["proxy_listeners"][0]["port"],
        g.http.port()
    );
    assert_eq!(v["configuration"]["proxy_listeners"][1]["ssl"], true);
    // each listener as Kong's conf_loader describes it: every flag of the http subsystem a
    // boolean, `backlog=%d+` false when none is given, and the entry's text
    let plain = &v["configuration"]["proxy_listeners"][0];
    for flag in [
        "ssl",
        "http2",
        "proxy_protocol",
        "deferred",
        "bind",
        "reuseport",
        "backlog=%d+",
        "ipv6only=on",
        "ipv6only=off",
        "so_keepalive=on",
        "so_keepalive=off",
        "so_keepalive=%w*:%w*:%d*",
    ] {
        assert_eq!(plain[flag], false, "{flag}: {plain}");
    }
    assert_eq!(plain["ip"], "127.0.0.1");
    assert_eq!(plain["listener"], format!("127.0.0.1:{}", g.http.port()));
    let tls = &v["configuration"]["proxy_listeners"][1];
    assert_eq!(
        tls["listener"],
        format!("127.0.0.1:{} ssl http2", g.https.port())
    );

    let r = get(g.status, "localhost", "/status").await;
    assert_eq!(
        r.json()["configuration_hash"],
        "00000000000000000000000000000000"
    );
    assert!(r.json()["server"]["total_requests"].is_number());
    // Not ready until a non-empty configuration is loaded.
    let r = get(g.status, "localhost", "/status/ready").await;
    assert_eq!(r.status, 503);
    assert_eq!(
        r.json()["message"],
        "no configuration available (empty configuration present)"
    );
    let r = admin_post(
        g.admin,
        "/config",
        "application/json",
        r#"{"_format_version":"3.0"}"#,
    )
    .await;
    assert_eq!(r.status, 201);
    let r = get(g.status, "localhost", "/status/ready").await;
    assert_eq!(r.status, 503);
    assert_eq!(
        r.json()["message"],
        "no configuration available (empty configuration present)"
    );
    let b = Backend::start().await;
    load_config(g.admin, doc(&b, "r2")).await;
    let r = get(g.status, "localhost", "/status/ready").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), json!({"message": "ready"}));
    // The status listener serves nothing else.
    assert_eq!(get(g.status, "localhost", "/config").await.status, 404);
    // and the readiness probe is the status listener's alone, as Kong attaches it to its
    // status API only: the admin listener neither serves nor lists it
    let r = get(g.admin, "localhost", "/status/ready").await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json(), json!({"message": "Not found"}));
    let listed = get(g.admin, "localhost", "/endpoints").await.json();
    assert!(
        !listed["data"]
            .as_array()
            .unwrap()
            .contains(&json!("/status/ready")),
        "{listed}"
    );
    g.gw.shutdown().await;
}

#[tokio::test]
async fn post_config_applies_and_failures_change_nothing() {
    let b = Backend::start().await;
    let g = Gw::start(None).await;
    let r = admin_post(
        g.admin,
        "/config?check_hash=1&flatten_errors=1",
        "application/json",
        doc(&b, "r2"),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let v = r.json();
    assert_eq!(
        v,
        load(&doc(&b, "r2")).flattened_entities(),
        "201 answers the flattened entities"
    );
    assert_eq!(v["services"].as_object().unwrap().len(), 2);
    assert_eq!(v["routes"].as_object().unwrap().len(), 3);
    let (rid, route) = v["routes"]
        .as_object()
        .unwrap()
        .iter()
        .find(|(_, r)| r["name"] == "r1")
        .unwrap();
    assert_eq!(route["id"], rid.as_str());
    let hash = g.gw.config_hash();
    assert_eq!(hash.len(), 32);
    assert_eq!(
        get(g.admin, "localhost", "/status").await.json()["configuration_hash"],
        hash.as_str()
    );
    assert_eq!(get(g.http, "x", "/one").await.status, 200);

    // Same document with check_hash=1, as text (a form body is taken raw): 304, nothing
    // reloaded.
    let r = admin_post(
        g.admin,
        "/config?check_hash=1",
        "application/x-www-form-urlencoded",
        doc(&b, "r2"),
    )
    .await;
    assert_eq!(r.status, 304);
    // As a JSON body, Kong loads its keys as a table and compares no hash: loaded again.
    let r = admin_post(
        g.admin,
        "/config?check_hash=1",
        "application/json",
        doc(&b, "r2"),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(g.gw.config_hash(), hash);

    // Invalid document: Kong's 400 body, and the running configuration keeps serving.
    let bad =
        r#"{"_format_version":"3.0","services":[{"name":"x","tags":["k8s-name:x"],"port":70000}]}"#;
    let r = admin_post(g.admin, "/config", "application/json", bad).await;
    assert_eq!(r.status, 400);
    let e = r.json();
    assert_eq!(e["code"], 14);
    assert_eq!(e["name"], "invalid declarative configuration");
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .starts_with("declarative config is invalid: ")
    );
    assert!(e["fields"]["services"].is_array(), "{e}");
    assert!(e.get("flattened_errors").is_none());
    let r = admin_post(g.admin, "/config?flatten_errors=1", "application/json", bad).await;
    let e = r.json();
    let fe = &e["flattened_errors"][0];
    assert_eq!(fe["entity_type"], "service");
    assert_eq!(fe["entity_name"], "x");
    assert_eq!(fe["entity_tags"], json!(["k8s-name:x"]));
    assert!(!fe["errors"].as_array().unwrap().is_empty());
    // Unparseable and empty bodies.
    let r = admin_post(g.admin, "/config", "application/json", "{nope").await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json(), json!({"message": "Cannot parse JSON body"}));
    let r = admin_post(
        g.admin,
        "/config",
        "application/x-www-form-urlencoded",
        "{nope",
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["code"], 14);
    // (a JSON type with nothing to decode fails Kong's JSON check; no type, no document)
    for empty in ["", " \n"] {
        let r = admin_post(g.admin, "/config", "application/json", empty).await;
        assert_eq!(r.status, 400);
        assert_eq!(r.json(), json!({"message": "Cannot parse JSON body"}));
    }
    let r = admin_send(g.admin, "POST", "/config", "", "").await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json(),
        json!({"message": "expected a declarative configuration"})
    );
    assert_eq!(g.gw.config_hash(), hash);
    assert_eq!(get(g.http, "x", "/one").await.status, 200);

    // YAML body, and the {"config": "..."} form.
    let yaml = format!(
        "_format_version: \"3.0\"\nservices:\n- name: yamlsvc\n  url: {}\n  routes:\n  - name: ry\n    paths: [/yaml]\n",
        b.url()
    );
    let r = admin_post(
        g.admin,
        "/config",
        "application/x-www-form-urlencoded",
        yaml.clone(),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(get(g.http, "x", "/yaml").await.status, 200);
    assert_eq!(get(g.http, "x", "/one").await.status, 404);
    let wrapped = json!({ "config": doc(&b, "r2") }).to_string();
    load_config(g.admin, wrapped).await;
    assert_eq!(get(g.http, "x", "/one").await.status, 200);

    // GET /config exports YAML that loads back to the same entities; posted back, it is
    // another document, so it gets its own hash (Kong's: the md5 of the document).
    let r = get(g.admin, "localhost", "/config").await;
    let exported = r.json()["config"].as_str().unwrap().to_string();
    assert!(exported.contains("_format_version"));
    // Kong's export: every field (nulls written out), foreign keys as plain ids, and the
    // load's timestamps, which are the only difference once loaded again
    assert!(exported.contains("_transform: false"), "{exported}");
    let doc_yaml = silverback_config::parse::parse_document(exported.as_bytes()).unwrap();
    let route = &doc_yaml["routes"][0];
    assert!(route["service"].is_string(), "{exported}");
    assert!(
        route["hosts"].is_null() && route.get("hosts").is_some(),
        "{exported}"
    );
    assert!(route["created_at"].is_i64(), "{exported}");
    fn untimed(v: Value) -> Value {
        match v {
            Value::Object(m) => Value::Object(
                m.into_iter()
                    .filter(|(k, _)| k != "created_at" && k != "updated_at")
                    .map(|(k, v)| (k, untimed(v)))
                    .collect(),
            ),
            Value::Array(a) => Value::Array(a.into_iter().map(untimed).collect()),
            v => v,
        }
    }
    let running = load(&doc(&b, "r2"));
    assert_eq!(
        untimed(load(&exported).to_flat_value()),
        untimed(running.to_flat_value())
    );
    let r = admin_post(
        g.admin,
        "/config?check_hash=1",
        "application/x-www-form-urlencoded",
        exported.clone(),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(g.gw.config_hash(), doc_hash(&exported));
    assert_ne!(g.gw.config_hash(), doc_hash(&doc(&b, "r2")));
    g.gw.shutdown().await;
}

#[tokio::test]
async fn entity_endpoints_are_read_only() {
    let b = Backend::start().await;
    let g = Gw::start(None).await;
    load_config(g.admin, doc(&b, "r2")).await;
    let a = g.admin;
    let v = get(a, "localhost", "/services").await.json();
    assert_eq!(v["data"].as_array().unwrap().len(), 2);
    assert_eq!(v["next"], Value::Null);
    let svc_id = v["data"][0]["id"].as_str().unwrap().to_string();
    // By id and by name.
    assert_eq!(
        get(a, "localhost", &format!("/services/{svc_id}"))
            .await
            .json()["name"],
        "svc"
    );
    assert_eq!(
        get(a, "localhost", "/services/svc").await.json()["id"],
        svc_id.as_str()
    );
    assert_eq!(get(a, "localhost", "/services/nope").await.status, 404);
    // Nested collections and parent references.
    let v = get(a, "localhost", "/services/svc/routes").await.json();
    let names: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["r1", "r2"]);
    assert_eq!(
        get(a, "localhost", "/routes/r3/service").await.json()["name"],
        "other"
    );
    let target = get(a, "localhost", "/upstreams/up/targets").await.json()["data"][0].clone();
    assert_eq!(target["target"], "10.0.0.1:80");
    // Kong disables the top-level targets routes, whatever the method (`routes/targets.lua`).
    let tid = target["id"].as_str().unwrap();
    for (m, p) in [
        ("GET", "/targets".to_string()),
        ("POST", "/targets".to_string()),
        ("GET", format!("/targets/{tid}")),
        ("DELETE", format!("/targets/{tid}")),
        ("PATCH", format!("/targets/{tid}")),
        ("GET", format!("/targets/{tid}/upstream")),
    ] {
        let r = H1::connect(a)
            .await
            .send(req(m, "localhost", &p).body(Full::default()).unwrap())
            .await;
        assert_eq!(r.status, 404, "{m} {p}: {}", r.text());
        assert_eq!(r.json(), json!({"message": "Not found"}), "{m} {p}");
    }
    // Paging.
    let p1 = get(a, "localhost", "/routes?size=2").await.json();
    assert_eq!(p1["data"].as_array().unwrap().len(), 2);
    let next = p1["next"].as_str().unwrap().to_string();
    assert_eq!(p1["offset"], "2");
    let p2 = get(a, "localhost", &next).await.json();
    assert_eq!(p2["data"].as_array().unwrap().len(), 1);
    assert_eq!(p2["next"], Value::Null);
    assert_eq!(get(a, "localhost", "/routes?size=0").await.status, 400);
    // Tags.
    let v = get(a, "localhost", "/routes?tags=t2").await.json();
    assert_eq!(v["data"].as_array().unwrap().len(), 1);
    let v = get(a, "localhost", "/tags/t1").await.json();
    assert_eq!(v["data"].as_array().unwrap().len(), 2);
    // every tag of every entity: those of t1 among them, and others
    let all = get(a, "localhost", "/tags").await.json();
    let all = all["data"].as_array().unwrap().clone();
    let t1: Vec<&Value> = all.iter().filter(|e| e["tag"] == "t1").collect();
    assert_eq!(t1.len(), 2, "{all:?}");
    assert!(t1.iter().all(|e| v["data"].as_array().unwrap().contains(e)));
    assert!(all.iter().any(|e| e["tag"] == "t2"), "{all:?}");
    // `/tags` is a top-level collection to Kong: its `next` keeps the page size
    let p1 = get(a, "localhost", "/tags?size=1").await.json();
    assert_eq!(p1["next"], "/tags?offset=1&size=1", "{p1}");
    // Writes: 405 with Kong's DB-less messages (valid entities: an invalid one is refused
    // before, see `writes_check_the_body_before_the_refusal`).
    let route = r#"{"paths": ["/x"]}"#;
    let r = admin_post(a, "/routes", "application/json", route).await;
    assert_eq!(r.status, 405);
    assert_eq!(
        r.json(),
        json!({"code": 12, "name": "operation unsupported", "message": "cannot create 'routes' entities when not using a database"})
    );
    let mut c = H1::connect(a).await;
    let r = c
        .send(
            req("DELETE", "localhost", "/services/svc")
                .body(Default::default())
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, 405);
    assert_eq!(
        r.json()["message"],
        "cannot remove 'services' entities by 'name' when not using a database"
    );
    let mut send = async |method: &str, path: &str| {
        c.send(
            req(method, "localhost", path)
                .body(Default::default())
                .unwrap(),
        )
        .await
    };
    // By id, the message names no key.
    let r = send("PATCH", &format!("/services/{svc_id}")).await;
    assert_eq!(
        r.json()["message"],
        "cannot update 'services' entities when not using a database"
    );
    let r = admin_send(a, "PUT", "/routes/r1", "application/json", route).await;
    assert_eq!(
        r.json()["message"],
        "cannot create or update 'routes' entities by 'name' when not using a database"
    );
    // Kong's DAO selects before deleting: nothing to delete is a success.
    let r = send("DELETE", "/routes/nope").await;
    assert_eq!(r.status, 204);
    assert!(r.body.is_empty());
    // Collections: only POST is an operation; an entity takes no POST.
    for (method, path) in [
        ("PUT", "/services/svc/routes"),
        ("PATCH", "/routes"),
        ("DELETE", "/routes"),
        ("POST", "/routes/r1"),
    ] {
        let r = send(method, path).await;
        assert_eq!(r.status, 405, "{method} {path}");
        assert_eq!(
            r.json(),
            json!({"message": "Method not allowed"}),
            "{method} {path}"
        );
    }
    let r = admin_send(a, "POST", "/services/svc/routes", "application/json", route).await;
    assert_eq!(
        r.json()["message"],
        "cannot create 'routes' entities when not using a database"
    );
    let r = c
        .send(
            req("DELETE", "localhost", "/status")
                .body(Default::default())
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, 405);
    assert_eq!(r.json(), json!({"message": "Method not allowed"}));
    g.gw.shutdown().await;
}

#[tokio::test]
async fn metrics_use_kong_names() {
    let b = Backend::start().await;
    let g = Gw::start(None).await;
    load_config(g.admin, doc(&b, "r2")).await;
    let mut c = H1::connect(g.http).await;
    for _ in 0..3 {
        assert_eq!(c.get("x", "/one").await.status, 200);
    }
    assert_eq!(c.get("x", "/missing").await.status, 404);
    // A refused head is answered on the proxy as Kong answers it, and on the admin API as
    // nginx does (Kong's admin server has no `error_page`); neither matched a route.
    let bad = b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n";
    let out = raw(g.http, bad, std::time::Duration::from_millis(300)).await;
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
    assert!(out.contains("\r\n\r\nBad request\nrequest_id: "), "{out}");
    let out = raw(g.admin, bad, std::time::Duration::from_millis(300)).await;
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
    assert!(
        out.ends_with("\r\n\r\n<html>\r\n<head><title>400 Bad Request</title></head>\r\n<body>\r\n<center><h1>400 Bad Request</h1></center>\r\n</body>\r\n</html>\r\n"),
        "{out}"
    );
    let root = get(g.admin, "localhost", "/").await.json();
    let node = root["node_id"].as_str().unwrap().to_string();
    let r = get(g.status, "localhost", "/metrics").await;
    assert_eq!(r.status, 200);
    let t = r.text();
    assert!(
        t.contains(r#"kong_http_requests_total{service="svc",route="r1",code="200",source="service",workspace="default",consumer=""} 3"#),
        "{t}"
    );
    // As Kong's exporter (3.6+): a request that matched no route (the router's 404, a
    // refused head) has no per-route series at all, only nginx's request count.
    assert!(!t.contains(r#"route="""#), "{t}");
    assert!(!t.contains(r#"code="404""#), "{t}");
    assert!(!t.contains(r#"code="400""#), "{t}");
    // every request nginx read: 3 + 404 + two refused heads + the POST /config + this scrape
    let requests = t
        .lines()
        .find_map(|l| l.strip_prefix(r#"kong_nginx_requests_total{node_id=""#))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no request count in {t}"));
    assert!(requests >= 8, "{requests} in {t}");
    assert!(
        t.contains(&format!(
            r#"kong_nginx_connections_total{{node_id="{node}",subsystem="http",state="total"}} {requests}"#
        )),
        "{t}"
    );
    assert!(
        t.contains(
            r#"kong_request_latency_ms_count{service="svc",route="r1",workspace="default"} 3"#
        ),
        "{t}"
    );
    // Kong's buckets per histogram, `le` as Kong prints it
    assert!(
        t.contains(r#"kong_request_latency_ms_bucket{service="svc",route="r1",workspace="default",le="25"} "#),
        "{t}"
    );
    assert!(
        t.contains(r#"kong_upstream_latency_ms_bucket{service="svc",route="r1",workspace="default",le="60000"} 3"#),
        "{t}"
    );
    assert!(
        t.contains(r#"kong_kong_latency_ms_bucket{service="svc",route="r1",workspace="default",le="6000"} 3"#),
        "{t}"
    );
    assert!(
        t.contains(r#"kong_kong_latency_ms_bucket{service="svc",route="r1",workspace="default",le="+Inf"} 3"#),
        "{t}"
    );
    assert!(!t.contains(r#"le="0"#), "{t}");
    assert!(
        t.contains(r#"kong_bandwidth_bytes{service="svc",route="r1",direction="egress""#),
        "{t}"
    );
    assert!(
        t.contains(r#"kong_bandwidth_bytes{service="svc",route="r1",direction="ingress""#),
        "{t}"
    );
    // the node's own families
    assert!(
        t.contains(&format!(
            "# HELP kong_node_info Kong Node metadata information\n# TYPE kong_node_info gauge\nkong_node_info{{node_id=\"{node}\",version=\"3.10.0\"}} 1\n"
        )),
        "{t}"
    );
    assert!(t.contains("\nkong_datastore_reachable 1\n"), "{t}");
    assert!(t.contains("\nkong_nginx_metric_errors_total 0\n"), "{t}");
    assert!(t.contains("\nkong_nginx_timers{state=\"running\"} "), "{t}");
    assert!(
        t.contains("\nkong_nginx_timers{state=\"pending\"} 0\n"),
        "{t}"
    );
    for state in [
        "accepted", "handled", "active", "reading", "writing", "waiting",
    ] {
        assert!(
            t.contains(&format!(
                r#"kong_nginx_connections_total{{node_id="{node}",subsystem="http",state="{state}"}} "#
            )),
            "{state}: {t}"
        );
    }
    // the configuration hash as a number, without the hash as a label (a new series per
    // load); the gateway's own swap count under its own prefix
    let hash = u128::from_str_radix(&g.gw.config_hash(), 16).unwrap() as f64;
    let shown: f64 = t
        .lines()
        .find_map(|l| {
            l.strip_prefix(&format!(
                r#"kong_data_plane_config_hash{{node_id="{node}"}} "#
            ))
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no config hash in {t}"));
    assert!((shown - hash).abs() <= hash * 1e-13, "{shown} vs {hash}");
    assert!(!t.contains("hash=\""), "{t}");
    assert!(t.contains("\nsilverback_config_swaps_total 1\n"), "{t}");
    assert!(!t.contains("kong_data_plane_config_swaps_total"), "{t}");
    // Also on the admin listener.
    assert!(
        get(g.admin, "localhost", "/metrics")
            .await
            .text()
            .contains("kong_http_requests_total")
    );
    g.gw.shutdown().await;
}

/// `kong_nginx_connections_total` and `/status` agree: `handled` is counted at the accept
/// (as many as accepted: none is dropped for a limit), `writing` is every open connection.
#[tokio::test]
async fn connection_counts_agree_with_status() {
    let g = Gw::start(None).await;
    let _open = H1::connect(g.http).await;
    let s = get(g.admin, "localhost", "/status").await.json();
    let server = &s["server"];
    assert_eq!(
        server["connections_handled"],
        server["connections_accepted"]
    );
    assert_eq!(server["connections_reading"], 0);
    assert_eq!(server["connections_waiting"], 0);
    assert_eq!(server["connections_writing"], server["connections_active"]);
    let t = get(g.status, "localhost", "/metrics").await.text();
    let state = |st: &str| -> u64 {
        t.lines()
            .find(|l| l.contains(&format!(r#"state="{st}"}}"#)))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no {st} in {t}"))
    };
    assert_eq!(state("handled"), state("accepted"));
    assert!(state("accepted") >= 3, "{t}");
    assert_eq!(state("writing"), state("active"));
    assert_eq!(state("reading"), 0);
    g.gw.shutdown().await;
}

/// `kong_bandwidth_bytes` as Kong counts it: ingress the request's head and body bytes
/// (`request_length`), egress the answer's head and body bytes (`bytes_sent`), on the fast
/// path and on hyper's.
#[tokio::test]
async fn bandwidth_counts_heads_and_bodies() {
    let b = Backend::start().await;
    let g = Gw::start(None).await;
    load_config(g.admin, doc(&b, "r2")).await;
    let wait = std::time::Duration::from_millis(400);
    // the fast path: a keep-alive GET without a body
    let fast = b"GET /one HTTP/1.1\r\nHost: x\r\n\r\n";
    let out1 = raw(g.http, fast, wait).await;
    assert!(out1.starts_with("HTTP/1.1 200"), "{out1}");
    // hyper's path: a body (and the connection closed)
    let slow =
        b"POST /one HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello";
    let out2 = raw(g.http, slow, wait).await;
    assert!(out2.starts_with("HTTP/1.1 200"), "{out2}");
    let t = get(g.status, "localhost", "/metrics").await.text();
    let bytes = |dir: &str| -> u64 {
        t.lines()
            .find_map(|l| {
                l.strip_prefix(&format!(
                    r#"kong_bandwidth_bytes{{service="svc",route="r1",direction="{dir}",workspace="default",consumer=""}} "#
                ))
            })
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no {dir} in {t}"))
    };
    assert_eq!(bytes("ingress"), (fast.len() + slow.len()) as u64, "{t}");
    assert_eq!(
        bytes("egress"),
        (out1.len() + out2.len()) as u64,
        "{out1}{out2}"
    );
    g.gw.shutdown().await;
}

/// The `service` label is the service's name, or its host when it has none (Kong's
/// `service.name or service.host`); `route` the route's name or id.
#[tokio::test]
async fn metrics_name_an_unnamed_service_by_its_host() {
    let b = Backend::start().await;
    let g = Gw::start(None).await;
    let cfg = format!(
        r#"{{"_format_version":"3.0","services":[{{"url":"{}","routes":[{{"name":"r9","paths":["/nine"]}}]}}]}}"#,
        b.url()
    );
    load_config(g.admin, cfg).await;
    assert_eq!(get(g.http, "x", "/nine").await.status, 200);
    let t = get(g.status, "localhost", "/metrics").await.text();
    assert!(
        t.contains(r#"kong_http_requests_total{service="127.0.0.1",route="r9",code="200",source="service",workspace="default",consumer=""} 1"#),
        "{t}"
    );
    g.gw.shutdown().await;
}

/// Kong's `headers` on the admin and status APIs, and as `GET /` reports it.
#[tokio::test]
async fn headers_setting_on_the_admin_and_status_apis() {
    let g = Gw::start(None).await;
    let r = get(g.admin, "localhost", "/").await;
    assert_eq!(r.header("server"), Some("kong/3.10.0"));
    assert!(r.header("x-kong-admin-latency").is_some());
    assert!(
        get(g.status, "localhost", "/status")
            .await
            .header("x-kong-admin-latency")
            .is_some()
    );
    let c = &r.json()["configuration"];
    assert_eq!(
        c["headers"],
        json!(["server_tokens", "latency_tokens", "X-Kong-Request-Id"])
    );
    assert_eq!(c["enabled_headers"]["server_tokens"], true);
    assert_eq!(c["enabled_headers"]["X-Kong-Upstream-Status"], false);
    assert_eq!(c["headers_upstream"], json!(["X-Kong-Request-Id"]));
    assert_eq!(c["enabled_headers_upstream"]["X-Kong-Request-Id"], true);
    g.gw.shutdown().await;

    let mut s = Settings::loopback();
    s.headers = silverback_proxy::Headers::parse("off").unwrap();
    s.headers_upstream = silverback_proxy::UpstreamHeaders::parse("off").unwrap();
    let g = Gw::start_with(s, None).await;
    for r in [
        get(g.admin, "localhost", "/").await,
        get(g.status, "localhost", "/status").await,
    ] {
        assert_eq!(r.status, 200);
        assert_eq!(r.header("server"), None);
        assert_eq!(r.header("x-kong-admin-latency"), None);
    }
    let c = &get(g.admin, "localhost", "/").await.json()["configuration"];
    assert_eq!(c["headers"], json!(["off"]));
    assert_eq!(c["enabled_headers"]["Server"], false);
    assert_eq!(c["enabled_headers_upstream"]["X-Kong-Request-Id"], false);
    g.gw.shutdown().await;
}

#[tokio::test]
async fn admin_token_is_required_when_configured() {
    let settings = Settings {
        admin_token: AdminToken::new("s3cret-token"),
        ..Settings::loopback()
    };
    assert!(
        !format!("{settings:?}").contains("s3cret-token"),
        "the token never appears in debug output"
    );
    let g = Gw::start_with(settings, None).await;
    let with = |token: Option<&str>, method: &str, path: &str| {
        let mut r = req(method, "localhost", path).header("content-type", "application/json");
        if let Some(t) = token {
            r = r.header("kong-admin-token", t);
        }
        r.body(Full::new(Bytes::from_static(
            br#"{"_format_version":"3.0","services":[{"name":"s","url":"http://127.0.0.1:9"}]}"#,
        )))
        .unwrap()
    };
    for token in [
        None,
        Some("wrong"),
        Some("s3cret-toke"),
        Some("S3CRET-TOKEN"),
    ] {
        for (method, path) in [("GET", "/"), ("GET", "/status"), ("POST", "/config")] {
            let r = H1::connect(g.admin)
                .await
                .send(with(token, method, path))
                .await;
            assert_eq!(r.status, 401, "{method} {path} with {token:?}");
            assert_eq!(
                r.json()["message"],
                "Invalid credentials. Token or User credentials required"
            );
        }
    }
    // Nothing was applied by the refused POST.
    let r = H1::connect(g.admin)
        .await
        .send(with(Some("s3cret-token"), "GET", "/services"))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["data"].as_array().map(Vec::len), Some(0));
    let r = H1::connect(g.admin)
        .await
        .send(with(Some("s3cret-token"), "POST", "/config"))
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    // The status listener needs no token.
    assert_eq!(get(g.status, "localhost", "/status").await.status, 200);
    g.gw.shutdown().await;
}

#[tokio::test]
async fn the_configuration_hash_is_the_posted_documents_md5() {
    // Kong's configuration_hash is the md5 of the document as posted: /status and /metrics
    // report it by the time the 201 is sent, and an empty configuration reports zeros.
    let b = Backend::start().await;
    let g = Gw::start(None).await;
    for route in ["r2", "r4", "r2"] {
        let r = admin_post(g.admin, "/config", "application/json", doc(&b, route)).await;
        assert_eq!(r.status, 201, "{}", r.text());
        let want = hex_md5(doc(&b, route).as_bytes());
        assert_eq!(g.gw.config_hash(), want);
        assert_eq!(
            get(g.admin, "localhost", "/status").await.json()["configuration_hash"],
            want.as_str()
        );
        // (as a number: Kong's `tonumber("0x" .. hash)`, printed as Lua prints it)
        let metrics = get(g.status, "localhost", "/metrics").await.text();
        let number =
            silverback_proxy::metrics::lua_number(u128::from_str_radix(&want, 16).unwrap() as f64);
        assert!(
            metrics.contains(&format!("}} {number}\n"))
                && metrics.contains("kong_data_plane_config_hash{"),
            "{number} in {metrics}"
        );
    }
    // The same document again with check_hash=1, as text (a form body): nothing to do.
    let r = admin_post(
        g.admin,
        "/config?check_hash=1",
        "application/x-www-form-urlencoded",
        doc(&b, "r2"),
    )
    .await;
    assert_eq!(r.status, 304);
    // the {"config": ...} form hashes the document inside it
    let wrapped = json!({ "config": doc(&b, "r4") }).to_string();
    let r = admin_post(g.admin, "/config", "application/json", wrapped).await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(g.gw.config_hash(), hex_md5(doc(&b, "r4").as_bytes()));
    let empty = "_format_version: \"3.0\"\n";
    let r = admin_post(
        g.admin,
        "/config",
        "application/x-www-form-urlencoded",
        empty,
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(g.gw.config_hash(), "0".repeat(32));
    g.gw.shutdown().await;
}

/// md5 (hex) computed by the md5 crate, independently of the gateway's code path.
fn hex_md5(b: &[u8]) -> String {
    use md5::Digest;
    hex::encode(md5::Md5::digest(b))
}

/// Follows `next` from `first` to the end, collecting `field` of every entity.
async fn walk(a: std::net::SocketAddr, first: &str, field: &str) -> Vec<String> {
    let mut out = vec![];
    let mut path = first.to_string();
    for _ in 0..20 {
        let r = get(a, "localhost", &path).await;
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        let v = r.json();
        for e in v["data"].as_array().expect("data is an array") {
            out.push(e[field].as_str().expect("a string field").to_string());
        }
        match v["next"].as_str() {
            Some(n) => path = n.to_string(),
            None => return out,
        }
    }
    panic!("paging from {first} does not end");
}

#[tokio::test]
async fn tag_filters_survive_paging() {
    // Kong appends `&tags=<escaped tags>`, then the client's `&size=`, to a top-level
    // collection's `next`: following it keeps the filter.
    let services: Vec<Value> = (0..6)
        .map(|i| {
            let tag = if i % 2 == 0 { "even" } else { "odd" };
            json!({"name": format!("s{i}"), "url": "http://127.0.0.1:9", "tags": [tag, "all"],
                   "routes": [{"name": format!("r{i}"), "paths": [format!("/{i}")], "tags": [tag]},
                              {"name": format!("q{i}"), "paths": [format!("/q{i}")], "tags": ["even"]}]})
        })
        .collect();
    let d = json!({"_format_version": "3.0", "services": services}).to_string();
    let g = Gw::start(None).await;
    let a = g.admin;
    assert_eq!(
        admin_post(a, "/config", "application/json", d).await.status,
        201
    );
    let p1 = get(a, "localhost", "/services?tags=even&size=2")
        .await
        .json();
    assert_eq!(p1["next"], "/services?offset=2&tags=even&size=2");
    assert_eq!(
        walk(a, "/services?tags=even&size=2", "name").await,
        ["s0", "s2", "s4"]
    );
    // The escaped form of a filter with Kong's separators.
    let p1 = get(a, "localhost", "/services?tags=even,all&size=1")
        .await
        .json();
    assert_eq!(p1["next"], "/services?offset=1&tags=even%2Call&size=1");
    assert_eq!(
        walk(a, "/services?tags=even%2Call&size=1", "name").await,
        ["s0", "s2", "s4"]
    );
    // Nested collections filter by tags too (their `next` carries the offset alone, as
    // Kong writes it).
    assert_eq!(
        walk(a, "/services/s1/routes?tags=even&size=1", "name").await,
        ["q1"]
    );
    assert_eq!(
        walk(a, "/services/s0/routes?tags=even&size=1", "name").await,
        ["r0", "q0"]
    );
    // /tags/{tag}: the tag is in the path, so `next` keeps it.
    let n = walk(a, "/tags/odd?size=2", "entity_id").await.len();
    assert_eq!(n, 6, "3 services and 3 routes are tagged odd");
    // Filters Kong refuses: both separators, an empty one, more than 5 tags.
    for (q, why) in [
        ("even,all/odd", "invalid filter syntax"),
        ("even/all,odd", "invalid filter syntax"),
        ("", "invalid filter syntax"),
        ("a,,b", "invalid filter syntax"),
        ("a,b,c,d,e,f", "cannot query more than 5 tags"),
    ] {
        let r = get(a, "localhost", &format!("/services?tags={q}")).await;
        assert_eq!(r.status, 400, "{q}");
        assert_eq!(
            r.json(),
            json!({"code": 11, "name": "invalid options",
                   "message": format!("invalid option (tags: {why})"), "options": {"tags": why}}),
            "{q}"
        );
    }
    // OR of tags, and a trailing separator.
    assert_eq!(walk(a, "/services?tags=odd/even", "name").await.len(), 6);
    assert_eq!(
        walk(a, "/services?tags=odd,", "name").await,
        ["s1", "s3", "s5"]
    );
    g.gw.shutdown().await;
}

#[tokio::test]
async fn escaped_paths_and_query_arguments_are_decoded() {
    let d = json!({"_format_version": "3.0",
        "consumers": [{"username": "bob smith"}, {"username": "a+b"}],
        "services": [{"name": "café", "url": "http://127.0.0.1:9", "tags": ["k8s-name:foo"],
                      "routes": [{"name": "r~1", "paths": ["/a"], "tags": ["k8s-name:foo"]},
                                 {"name": "r2", "paths": ["/b"]}]}]})
    .to_string();
    let g = Gw::start(None).await;
    let a = g.admin;
    let r = admin_post(a, "/config", "application/json", d).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let name = |p: &'static str, f: &'static str| async move {
        let r = get(a, "localhost", p).await;
        assert_eq!(r.status, 200, "{p}: {}", r.text());
        r.json()[f].as_str().unwrap().to_string()
    };
    assert_eq!(
        name("/consumers/bob%20smith", "username").await,
        "bob smith"
    );
    // In a path, '+' is a plus.
    assert_eq!(name("/consumers/a+b", "username").await, "a+b");
    assert_eq!(name("/services/caf%C3%A9", "name").await, "café");
    assert_eq!(name("/routes/r%7E1", "name").await, "r~1");
    assert_eq!(name("/routes/r%7e1/service", "name").await, "café");
    let v = get(a, "localhost", "/services/caf%C3%A9/routes?size=1")
        .await
        .json();
    assert_eq!(v["data"][0]["name"], "r~1");
    assert_eq!(v["next"], "/services/caf%C3%A9/routes?offset=1");
    assert_eq!(
        walk(a, "/services/caf%C3%A9/routes?size=1", "name").await,
        ["r~1", "r2"]
    );
    // Query arguments.
    let v = get(a, "localhost", "/routes?tags=k8s-name%3Afoo")
        .await
        .json();
    assert_eq!(v["data"].as_array().unwrap().len(), 1);
    let v = get(a, "localhost", "/tags/k8s-name%3Afoo").await.json();
    assert_eq!(v["data"].as_array().unwrap().len(), 2, "{v}");
    assert_eq!(v["data"][0]["tag"], "k8s-name:foo");
    let v = get(a, "localhost", "/tags/k8s-name%3Afoo?size=1")
        .await
        .json();
    assert_eq!(v["next"], "/tags/k8s-name%3Afoo?offset=1");
    let v = get(a, "localhost", "/consumers?size=%31").await.json();
    assert_eq!(v["data"].as_array().unwrap().len(), 1);
    g.gw.shutdown().await;
}

/// `curl -F config=@kong.yml` and `curl --data-binary @kong.yml` (form content type, no
/// `config=` field) post a document as Kong accepts it.
#[tokio::test]
async fn post_config_from_multipart_and_raw_form_bodies() {
    let b = Backend::start().await;
    let g = Gw::start(None).await;
    let a = g.admin;
    let yaml = format!(
        "_format_version: \"3.0\"\nservices:\n- name: s\n  url: {}\n  routes:\n  - name: r\n    paths: [/mp]\n",
        b.url()
    );
    let multipart = |doc: &str, extra: &str| {
        format!(
            "--XyZ\r\nContent-Disposition: form-data; name=\"config\"; filename=\"kong.yml\"\r\n\
             Content-Type: application/octet-stream\r\n\r\n{doc}\r\n{extra}--XyZ--\r\n"
        )
    };
    let ct = "multipart/form-data; boundary=XyZ";
    let r = admin_post(a, "/config", ct, multipart(&yaml, "")).await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(get(g.http, "x", "/mp").await.status, 200);
    assert_eq!(g.gw.config_hash(), doc_hash(&yaml), "the hash of the part");
    // A check_hash part counts like the query argument.
    let check = "--XyZ\r\nContent-Disposition: form-data; name=\"check_hash\"\r\n\r\n1\r\n";
    let r = admin_post(a, "/config", ct, multipart(&yaml, check)).await;
    assert_eq!(r.status, 304, "{}", r.text());
    let r = admin_post(a, "/config", ct, "--XyZ\r\nno end").await;
    assert_eq!(r.status, 400);
    assert!(
        r.json()["message"]
            .as_str()
            .unwrap()
            .starts_with("invalid multipart body: "),
        "{}",
        r.text()
    );
    // curl's default content type with the raw document as the body.
    let form = yaml.replace("/mp", "/form");
    let r = admin_post(
        a,
        "/config",
        "application/x-www-form-urlencoded",
        form.clone(),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(get(g.http, "x", "/form").await.status, 200);
    assert_eq!(g.gw.config_hash(), doc_hash(&form));
    g.gw.shutdown().await;
}

/// A slow upload does not hold the loading lock: a concurrent POST /config is served.
#[tokio::test]
async fn a_slow_upload_does_not_block_another_post_config() {
    use tokio::io::AsyncWriteExt;
    let g = Gw::start(None).await;
    let mut slow = tokio::net::TcpStream::connect(g.admin).await.unwrap();
    slow.write_all(
        b"POST /config HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\n\
          content-length: 1000\r\n\r\n_format_version: \"3.0\"\n",
    )
    .await
    .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let r = admin_post(
        g.admin,
        "/config",
        "application/json",
        r#"{"_format_version":"3.0","services":[{"name":"s","url":"http://127.0.0.1:9"}]}"#,
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    drop(slow);
    g.gw.shutdown().await;
}

/// Only a few `POST /config` bodies are buffered at once: with four slow uploads under way a
/// fifth gets 429 at once; once they are gone, uploads are served again.
#[tokio::test]
async fn concurrent_config_uploads_are_bounded() {
    use tokio::io::AsyncWriteExt;
    let g = Gw::start(None).await;
    let mut slow = vec![];
    for _ in 0..4 {
        let mut s = tokio::net::TcpStream::connect(g.admin).await.unwrap();
        s.write_all(
            b"POST /config HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\n\
              content-length: 1000\r\n\r\n_format_version: \"3.0\"\n",
        )
        .await
        .unwrap();
        slow.push(s);
    }
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let doc = r#"{"_format_version":"3.0","services":[{"name":"s","url":"http://127.0.0.1:9"}]}"#;
    let r = admin_post(g.admin, "/config", "application/json", doc).await;
    assert_eq!(r.status, 429, "{}", r.text());
    assert_eq!(
        r.json()["message"],
        "Currently loading previous configuration"
    );
    assert_eq!(r.header("retry-after"), Some("1"));
    drop(slow);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let r = admin_post(g.admin, "/config", "application/json", doc).await;
    assert_eq!(r.status, 201, "{}", r.text());
    g.gw.shutdown().await;
}

/// A document the loader refuses: posted, it answers 400 while no load is under way and 429
/// during one, and changes nothing either way.
const INVALID_DOC: &str = r#"{"_format_version":"3.0","services":"not a list"}"#;

/// Whether a configuration load is under way, asked without changing anything (but the
/// probe holds the loading lock for a moment: a POST arriving then gets 429).
async fn loading(admin: std::net::SocketAddr) -> bool {
    let r = admin_post(admin, "/config", "application/json", INVALID_DOC).await;
    assert!(
        r.status == 400 || r.status == 429,
        "{} {}",
        r.status,
        r.text()
    );
    r.status == 429
}

/// Configurations applied so far (`silverback_config_swaps_total`).
async fn swaps(status: std::net::SocketAddr) -> u64 {
    let text = get(status, "localhost", "/metrics").await.text();
    text.lines()
        .find_map(|l| l.strip_prefix("silverback_config_swaps_total "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no swap count in {text}"))
}

/// A large configuration (about 4 MB): its load takes over a second in a debug build.
fn slow_doc() -> String {
    silverback_config::synthetic::services_routes_targets(10_000, "127.0.0.1:9")
}

/// A small configuration, `n` telling them apart.
fn small_doc(n: u32) -> String {
    format!(
        r#"{{"_format_version":"3.0","services":[{{"name":"s{n}","url":"http://127.0.0.1:9"}}]}}"#
    )
}

/// A load whose client goes away is not abandoned half-way, and holds the loading lock until
/// it is done: a POST /config sent meanwhile is refused (429) rather than loaded beside it,
/// and the configuration left serving is the one posted last.
///
/// (Timing: the client leaves 500 ms after sending, while the load (over a second in a debug
/// build) is under way. Where it is quicker, as in a release build, the test passes without
/// testing anything.)
#[tokio::test]
async fn a_load_whose_client_left_still_holds_the_lock() {
    use tokio::io::AsyncWriteExt;
    let g = Gw::start(None).await;
    let first = slow_doc();
    let mut s = tokio::net::TcpStream::connect(g.admin).await.unwrap();
    let head = format!(
        "POST /config HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n\r\n",
        first.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(first.as_bytes()).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    // The client leaves while its configuration loads.
    drop(s);
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let second = small_doc(2);
    let t = std::time::Instant::now();
    loop {
        let r = admin_post(g.admin, "/config", "application/json", second.clone()).await;
        if r.status != 429 {
            assert_eq!(r.status, 201, "{}", r.text());
            break;
        }
        assert!(t.elapsed().as_secs() < 120, "still loading");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // The first is loaded too by now (before the second), unless it was dropped before it
    // began: whatever is left of it may not replace the second.
    let t = std::time::Instant::now();
    while swaps(g.status).await < 2 && t.elapsed().as_secs() < 20 {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(g.gw.config_hash(), doc_hash(&second));
    g.gw.shutdown().await;
}

/// With `check_hash=1`, re-posting the running configuration as text while another load is
/// under way answers 304 (Kong compares the hashes before it takes the loading lock), while
/// a different document, or the same as a JSON body (loaded without a comparison), gets 429, and a JSON body that decodes to a scalar lapis's 500 (its
/// `json_params` fails before Kong's handler runs).
#[tokio::test]
async fn an_unchanged_config_is_not_modified_even_during_a_load() {
    let g = Gw::start(None).await;
    let running = small_doc(1);
    // (a probe may take the lock just as the slow POST wants it: that one is tried again)
    for attempt in 0.. {
        assert!(attempt < 5, "no load was seen under way");
        load_config(g.admin, running.clone()).await;
        let admin = g.admin;
        let slow = tokio::spawn(async move {
            admin_post(admin, "/config", "application/json", slow_doc()).await
        });
        while !slow.is_finished() && !loading(g.admin).await {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        if slow.is_finished() {
            continue;
        }
        let r = admin_post(
            g.admin,
            "/config?check_hash=1",
            "application/x-www-form-urlencoded",
            running.clone(),
        )
        .await;
        assert_eq!(r.status, 304, "{}", r.text());
        // (a JSON body is loaded whatever its hash: busy)
        let r = admin_post(
            g.admin,
            "/config?check_hash=1",
            "application/json",
            running.clone(),
        )
        .await;
        assert_eq!(r.status, 429, "{}", r.text());
        let r = admin_post(g.admin, "/config?check_hash=1", "application/json", "7").await;
        assert_eq!(r.status, 500, "{}", r.text());
        assert_eq!(r.json(), json!({"message": "An unexpected error occurred"}));
        // (the load was still under way: the 304 and the 500 did not come after it)
        assert!(loading(g.admin).await);
        assert_eq!(slow.await.unwrap().status, 201);
        break;
    }
    g.gw.shutdown().await;
}

/// The admin API's body limit (Kong's `nginx_admin_client_max_body_size`, 10m by default),
/// answered as nginx answers it in Kong's admin server, which has no `error_page`: nginx's
/// own 413 page (`text/html; charset=UTF-8`), the connection closed, with the headers Kong's
/// header filter of `location /` adds (`Server`, `X-Kong-Admin-Latency`). A larger announced
/// body is refused at once, without waiting for it, before Kong's content handler (no
/// `Access-Control-Allow-Origin`), on any route, to a `HEAD` with the head alone; a chunked
/// one once it grows past the limit while Kong reads it (with that header); the running
/// configuration is untouched. The status server does not have this limit: it keeps the
/// `http` block's (`client_max_body_size`, none by default; see
/// `status_bodies_keep_the_http_blocks_limit_and_buffer`).
#[tokio::test]
async fn admin_bodies_over_the_limit_get_nginxs_413_page() {
    let g = Gw::start(None).await;
    let head = |n: u64| {
        format!(
            "POST /config HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\n\
             content-length: {n}\r\n\r\n"
        )
    };
    let announced = NginxPage::admin_body("413", NGINX_413, false);
    // 10 MiB is let in (the body is waited for), a byte more is not.
    let t = std::time::Instant::now();
    let over = raw(
        g.admin,
        head(10 * 1024 * 1024 + 1).as_bytes(),
        std::time::Duration::from_secs(5),
    )
    .await;
    assert!(
        // (nginx's own phrase)
        over.starts_with("HTTP/1.1 413 Request Entity Too Large\r\n"),
        "{over}"
    );
    announced.check(&over, 0);
    assert!(
        t.elapsed() < std::time::Duration::from_secs(5),
        "answered at once"
    );
    let at = raw(
        g.admin,
        head(10 * 1024 * 1024).as_bytes(),
        std::time::Duration::from_millis(300),
    )
    .await;
    assert_eq!(at, "", "the body is waited for");
    // whatever the route and the method (nginx checks before any handler)
    for line in ["GET /status", "DELETE /nope", "PUT /services/x"] {
        let out = raw(
            g.admin,
            format!("{line} HTTP/1.1\r\nhost: x\r\ncontent-length: 10485761\r\n\r\n").as_bytes(),
            std::time::Duration::from_secs(5),
        )
        .await;
        announced.check(&out, 0);
    }
    let out = raw(
        g.admin,
        b"HEAD /status HTTP/1.1\r\nhost: x\r\ncontent-length: 10485761\r\n\r\n",
        std::time::Duration::from_secs(5),
    )
    .await;
    announced.to_head().check(&out, 0);
    // the status server has no limit of its own (the `http` block's, none here): a body
    // announced past the admin server's is no refusal
    let out = raw(
        g.status,
        b"GET /status HTTP/1.1\r\nhost: x\r\ncontent-length: 10485761\r\n\r\n",
        std::time::Duration::from_secs(5),
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
    g.gw.shutdown().await;

    let settings = Settings {
        admin_client_max_body_size: 1024,
        ..Settings::loopback()
    };
    let g = Gw::start_with(settings, None).await;
    let running = small_doc(1);
    load_config(g.admin, running.clone()).await;
    let big = silverback_config::synthetic::services_routes_targets(10, "127.0.0.1:9");
    assert!(big.len() > 1024);
    let over = raw(
        g.admin,
        head(big.len() as u64).as_bytes(),
        std::time::Duration::from_secs(5),
    )
    .await;
    announced.check(&over, 0);
    // chunked: refused once past the limit, while Kong reads it
    let chunked = |line: &str, body: &[u8]| {
        let mut out = format!(
            "{line} HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\n\
             transfer-encoding: chunked\r\n\r\n"
        )
        .into_bytes();
        for c in body.chunks(100) {
            out.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
            out.extend_from_slice(c);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"0\r\n\r\n");
        out
    };
    let grown = NginxPage::admin_body("413", NGINX_413, true);
    let over = raw(
        g.admin,
        &chunked("POST /config", big.as_bytes()),
        std::time::Duration::from_secs(5),
    )
    .await;
    grown.check(&over, 0);
    assert_eq!(g.gw.config_hash(), doc_hash(&running));
    // the limit applies to the admin listener's other bodies too: the validations', the
    // writes', and the JSON bodies lapis reads for any route
    let over = raw(
        g.admin,
        b"POST /schemas/services/validate HTTP/1.1\r\nhost: localhost\r\ncontent-length: 2000\r\n\r\n",
        std::time::Duration::from_secs(5),
    )
    .await;
    announced.check(&over, 0);
    for line in [
        "POST /schemas/services/validate",
        "POST /services",
        "GET /status",
    ] {
        let over = raw(
            g.admin,
            &chunked(line, big.as_bytes()),
            std::time::Duration::from_secs(5),
        )
        .await;
        grown.check(&over, 0);
    }
    // behind an answered request on the same connection
    let mut two = b"GET /status HTTP/1.1\r\nhost: x\r\n\r\n".to_vec();
    two.extend_from_slice(&chunked("POST /config", big.as_bytes()));
    let out = raw(g.admin, &two, std::time::Duration::from_secs(5)).await;
    assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
    grown.check(&out, 1);
    g.gw.shutdown().await;
}

/// After refusing a body the client is still sending, the admin listener closes as nginx
/// does, with a lingering read: the answer goes whole, then what the client goes on sending
/// is read and dropped, so that its writes do not fail on a reset connection (nor a reset
/// destroy the answer before the client has read it).
#[tokio::test]
async fn a_refused_body_still_arriving_does_not_reset_the_answer() {
    use tokio::io::AsyncWriteExt;
    let settings = Settings {
        admin_client_max_body_size: 1024,
        ..Settings::loopback()
    };
    let g = Gw::start_with(settings, None).await;
    for (head, page) in [
        (
            // announced: refused before a byte of it is read
            format!(
                "POST /config HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
                 content-length: {}\r\n\r\n",
                512 * 1024
            ),
            NginxPage::admin_body("413", NGINX_413, false),
        ),
        (
            // chunked: refused past the limit
            "POST /config HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
             transfer-encoding: chunked\r\n\r\n"
                .to_string(),
            NginxPage::admin_body("413", NGINX_413, true),
        ),
    ] {
        let s = tokio::net::TcpStream::connect(g.admin).await.unwrap();
        let (mut rd, mut wr) = s.into_split();
        let chunked = head.contains("chunked");
        let writer = tokio::spawn(async move {
            let _ = wr.write_all(head.as_bytes()).await;
            // 512 KiB more, in pieces, while the answer comes back
            for _ in 0..64 {
                let piece = if chunked {
                    let mut c = b"2000\r\n".to_vec();
                    c.extend_from_slice(&[b'x'; 0x2000]);
                    c.extend_from_slice(b"\r\n");
                    c
                } else {
                    vec![b'x'; 0x2000]
                };
                if wr.write_all(&piece).await.is_err() {
                    return false;
                }
                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            }
            true
        });
        let (got, closed) = read_to_close(&mut rd, std::time::Duration::from_secs(10)).await;
        let out = String::from_utf8_lossy(&got);
        assert!(closed, "{out}");
        page.check(&out, 0);
        assert!(writer.await.unwrap(), "the client's bytes were all taken");
    }
    g.gw.shutdown().await;
}

/// A client that writes its whole large body before it reads gets the whole 413: nginx's
/// lingering close reads and drops what the client sends for as long as it keeps sending
/// (each read within `lingering_timeout`, 5 s, all within `lingering_time`, 30 s), however
/// many bytes that is, so none of the client's writes fails on a reset connection.
#[tokio::test]
async fn a_large_refused_body_written_before_reading_gets_the_whole_413() {
    let settings = Settings {
        admin_client_max_body_size: 1024,
        ..Settings::loopback()
    };
    let g = Gw::start_with(settings, None).await;
    const BODY: usize = 32 * 1024 * 1024;
    for chunked in [false, true] {
        let head = "POST /config HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n";
        let mut s = send_whole_body(g.admin, head, BODY, chunked, b' ').await;
        let (got, closed) = read_to_close(&mut s, std::time::Duration::from_secs(10)).await;
        let out = String::from_utf8_lossy(&got);
        assert!(closed, "{out}");
        NginxPage::admin_body("413", NGINX_413, chunked).check(&out, 0);
    }
    g.gw.shutdown().await;
}

/// Reads never wait on uploads, and Kong never answers one with 429: with every upload
/// permit held by a stalled `POST /config`, a JSON-typed read (a `GET` or a `HEAD`, with no
/// body, an empty one, or a small one) is answered as ever, on the admin and status
/// listeners alike; a JSON scalar body still fails lapis's `json_params` (500). Only a
/// further upload is refused (429).
#[tokio::test]
async fn json_reads_are_answered_while_uploads_hold_every_permit() {
    use tokio::io::AsyncWriteExt;
    let g = Gw::start(None).await;
    let mut slow = vec![];
    for _ in 0..4 {
        let mut s = tokio::net::TcpStream::connect(g.admin).await.unwrap();
        s.write_all(
            b"POST /config HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\n\
              content-length: 1000\r\n\r\n{\"_format_version\"",
        )
        .await
        .unwrap();
        slow.push(s);
    }
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let doc = r#"{"_format_version":"3.0"}"#;
    let r = admin_post(g.admin, "/config", "application/json", doc).await;
    assert_eq!(r.status, 429, "{}", r.text());
    let ask = |addr, line: &str, framing: &str, body: &str| {
        let bytes = format!(
            "{line} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n{framing}\
             connection: close\r\n\r\n{body}"
        );
        async move { raw(addr, bytes.as_bytes(), std::time::Duration::from_secs(5)).await }
    };
    for addr in [g.admin, g.status] {
        for line in ["GET /status", "HEAD /status", "GET /status/ready"] {
            if addr == g.admin && line == "GET /status/ready" {
                continue;
            }
            let want = if line == "GET /status/ready" {
                "HTTP/1.1 503 "
            } else {
                "HTTP/1.1 200 OK\r\n"
            };
            for (framing, body) in [
                ("", ""),
                ("content-length: 0\r\n", ""),
                ("content-length: 2\r\n", "{}"),
                ("transfer-encoding: chunked\r\n", "2\r\n[]\r\n0\r\n\r\n"),
            ] {
                let out = ask(addr, line, framing, body).await;
                assert!(out.starts_with(want), "{line} {framing}: {out}");
            }
        }
        let out = ask(addr, "GET /status", "content-length: 1\r\n", "1").await;
        assert!(
            out.starts_with("HTTP/1.1 500 Internal Server Error\r\n"),
            "{out}"
        );
    }
    // a read on a route whose handler Kong wraps, on the admin listener too
    let out = ask(g.admin, "GET /services", "content-length: 2\r\n", "{}").await;
    assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
    drop(slow);
    g.gw.shutdown().await;
}

/// The status listener's bodies take none of the admin listener's upload permits: clients
/// trickling JSON bodies to it, each part within `client_body_timeout`, leave `POST
/// /config` free to load.
#[tokio::test]
async fn trickling_status_bodies_do_not_hold_off_config_uploads() {
    use tokio::io::AsyncWriteExt;
    let settings = Settings {
        client_body_timeout: std::time::Duration::from_millis(500),
        ..Settings::loopback()
    };
    let g = Gw::start_with(settings, None).await;
    let mut trickles = vec![];
    for _ in 0..4 {
        let mut s = tokio::net::TcpStream::connect(g.status).await.unwrap();
        s.write_all(
            b"GET /status HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
              content-length: 1000\r\n\r\n{",
        )
        .await
        .unwrap();
        trickles.push(tokio::spawn(async move {
            for _ in 0..999 {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                if s.write_all(b" ").await.is_err() {
                    return;
                }
            }
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    for (i, doc) in [small_doc(1), small_doc(2)].into_iter().enumerate() {
        let r = admin_post(g.admin, "/config", "application/json", doc.clone()).await;
        assert_eq!(r.status, 201, "{i}: {}", r.text());
        assert_eq!(g.gw.config_hash(), doc_hash(&doc));
    }
    for t in &trickles {
        assert!(!t.is_finished(), "the status bodies were still arriving");
    }
    for t in trickles {
        t.abort();
    }
    g.gw.shutdown().await;
}

/// An upload that holds a permit must end within `admin_upload_timeout` in all, not only
/// keep each pause within `client_body_timeout`: a body trickled slowly enough to take
/// longer is ended as a stalled one is (no answer, the connection closed), and its permit is
/// free again, so clients that trickle cannot hold the uploads off for long.
#[tokio::test]
async fn an_upload_holding_a_permit_has_an_overall_deadline() {
    use tokio::io::AsyncWriteExt;
    let settings = Settings {
        client_body_timeout: std::time::Duration::from_millis(500),
        admin_upload_timeout: std::time::Duration::from_millis(1500),
        ..Settings::loopback()
    };
    let g = Gw::start_with(settings, None).await;
    let t = std::time::Instant::now();
    let mut trickles = vec![];
    for _ in 0..4 {
        let s = tokio::net::TcpStream::connect(g.admin).await.unwrap();
        let (mut rd, mut wr) = s.into_split();
        wr.write_all(
            b"POST /config HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
              content-length: 1000\r\n\r\n{",
        )
        .await
        .unwrap();
        let writer = tokio::spawn(async move {
            for _ in 0..999 {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                if wr.write_all(b" ").await.is_err() {
                    return;
                }
            }
        });
        trickles.push((
            tokio::spawn(async move {
                read_to_close(&mut rd, std::time::Duration::from_secs(10)).await
            }),
            writer,
        ));
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let doc = small_doc(1);
    let r = admin_post(g.admin, "/config", "application/json", doc.clone()).await;
    assert_eq!(r.status, 429, "the permits are held: {}", r.text());
    for (reader, writer) in trickles {
        let (got, closed) = reader.await.unwrap();
        assert!(closed, "ended at the deadline");
        assert_eq!(String::from_utf8_lossy(&got), "", "without an answer");
        writer.abort();
    }
    let waited = t.elapsed();
    assert!(
        waited >= std::time::Duration::from_millis(1300)
            && waited < std::time::Duration::from_secs(8),
        "{waited:?}"
    );
    let r = admin_post(g.admin, "/config", "application/json", doc.clone()).await;
    assert_eq!(r.status, 201, "the permits are free again: {}", r.text());
    assert_eq!(g.gw.config_hash(), doc_hash(&doc));
    g.gw.shutdown().await;
}

/// The status server keeps the `http` block's body settings, as Kong leaves them: its limit
/// is `client_max_body_size` (Kong's `nginx_http_client_max_body_size`, none by default; the
/// admin server's own limit is not its), refused with nginx's 413 page; and a JSON body past
/// `client_body_buffer_size` (8k) goes to a temporary file in nginx, where lapis finds
/// nothing to decode, so even a scalar that long fails nothing. Bodies are read through a
/// small buffer, so neither listener holds a long one in memory: on the admin listener a
/// JSON body that may be a scalar is decoded up to 64 KiB only (a deviation: Kong's admin
/// server keeps up to 10m in memory and decodes it all).
#[tokio::test]
async fn status_bodies_keep_the_http_blocks_limit_and_buffer() {
    let settings = Settings {
        client_max_body_size: 16 * 1024,
        admin_client_max_body_size: 1024 * 1024,
        ..Settings::loopback()
    };
    let g = Gw::start_with(settings, None).await;
    let get = |addr, body: &str| {
        let bytes = format!(
            "GET /status HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
             content-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        async move { raw(addr, bytes.as_bytes(), std::time::Duration::from_secs(5)).await }
    };
    let string = |n: usize| format!("\"{}\"", "x".repeat(n - 2));
    // within the buffer a scalar fails lapis; past it nothing is decoded
    let out = get(g.status, &string(8 * 1024)).await;
    assert!(out.starts_with("HTTP/1.1 500 "), "{out}");
    let out = get(g.status, &string(8 * 1024 + 1)).await;
    assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
    // the admin listener decodes up to 64 KiB
    let out = get(g.admin, &string(64 * 1024)).await;
    assert!(out.starts_with("HTTP/1.1 500 "), "{out}");
    let out = get(g.admin, &string(64 * 1024 + 1)).await;
    assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
    // the status server's limit is the `http` block's
    let out = get(g.status, &" ".repeat(16 * 1024)).await;
    assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
    let out = raw(
        g.status,
        b"GET /status HTTP/1.1\r\nhost: x\r\ncontent-length: 16385\r\n\r\n",
        std::time::Duration::from_secs(5),
    )
    .await;
    NginxPage::admin_body("413", NGINX_413, false).check(&out, 0);
    let mut chunked = b"GET /status HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
                        transfer-encoding: chunked\r\n\r\n"
        .to_vec();
    for _ in 0..17 {
        chunked.extend_from_slice(b"400\r\n");
        chunked.extend_from_slice(&[b' '; 0x400]);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let out = raw(g.status, &chunked, std::time::Duration::from_secs(5)).await;
    NginxPage::admin_body("413", NGINX_413, true).check(&out, 0);
    g.gw.shutdown().await;
}

/// A body that stalls past `client_body_timeout` (nginx's 408, which terminates the
/// request) or that the client cuts off (the connection's error set) gets no answer at all:
/// the connection closes with nothing written. The timeout is between the body's parts, not
/// over the whole body. Broken chunked framing gets nginx's 400 page (no `error_page` in
/// Kong's admin server), the connection closed. The running configuration is untouched.
#[tokio::test]
async fn stalled_and_broken_admin_bodies_are_ended_as_nginx_ends_them() {
    use tokio::io::AsyncWriteExt;
    let settings = Settings {
        client_body_timeout: std::time::Duration::from_millis(400),
        ..Settings::loopback()
    };
    let g = Gw::start_with(settings, None).await;
    let running = small_doc(1);
    load_config(g.admin, running.clone()).await;
    let json_post = |path: &str, framing: &str| {
        format!(
            "POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n{framing}\r\n\r\n"
        )
    };
    // stalled, by length or by chunks, on every route whose handler reads the body
    for start in [
        json_post("/config", "content-length: 100") + "{\"_format",
        json_post("/config", "transfer-encoding: chunked") + "5\r\n{\"_fo",
        json_post("/schemas/services/validate", "content-length: 100") + "{",
        json_post("/services", "content-length: 100") + "{",
        "GET /status HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
         content-length: 10\r\n\r\n{"
            .to_string(),
    ] {
        let t = std::time::Instant::now();
        let mut s = tokio::net::TcpStream::connect(g.admin).await.unwrap();
        s.write_all(start.as_bytes()).await.unwrap();
        let (got, closed) = read_to_close(&mut s, std::time::Duration::from_secs(5)).await;
        assert!(closed, "{start}");
        assert_eq!(String::from_utf8_lossy(&got), "", "{start}");
        let waited = t.elapsed();
        assert!(
            waited >= std::time::Duration::from_millis(350)
                && waited < std::time::Duration::from_secs(3),
            "{start}: {waited:?}"
        );
    }
    // the timeout is a pause's: a body whose parts keep coming is read whole
    let doc = small_doc(2);
    let mut s = tokio::net::TcpStream::connect(g.admin).await.unwrap();
    let start = tokio::time::Instant::now();
    let head = json_post("/config", &format!("content-length: {}", doc.len()));
    let third = doc.len() / 3;
    let pieces: Vec<(std::time::Duration, &[u8])> = vec![
        (std::time::Duration::ZERO, head.as_bytes()),
        (
            std::time::Duration::from_millis(250),
            &doc.as_bytes()[..third],
        ),
        (
            std::time::Duration::from_millis(500),
            &doc.as_bytes()[third..2 * third],
        ),
        (
            std::time::Duration::from_millis(750),
            &doc.as_bytes()[2 * third..],
        ),
    ];
    assert!(dribble(&mut s, start, &pieces).await);
    let (got, _) = read_to_close(&mut s, std::time::Duration::from_millis(1500)).await;
    let out = String::from_utf8_lossy(&got);
    assert!(out.starts_with("HTTP/1.1 201 Created\r\n"), "{out}");
    assert_eq!(g.gw.config_hash(), doc_hash(&doc));
    let running = doc;
    // cut off: the client's end of the stream inside the body
    for start in [
        json_post("/config", "content-length: 100") + "{\"_format",
        json_post("/config", "transfer-encoding: chunked") + "5\r\n{\"_fo",
        "GET /status HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
         content-length: 10\r\n\r\n{"
            .to_string(),
    ] {
        let mut s = tokio::net::TcpStream::connect(g.admin).await.unwrap();
        s.write_all(start.as_bytes()).await.unwrap();
        s.shutdown().await.unwrap();
        let (got, closed) = read_to_close(&mut s, std::time::Duration::from_secs(5)).await;
        assert!(closed, "{start}");
        assert_eq!(String::from_utf8_lossy(&got), "", "{start}");
    }
    // broken chunked framing: nginx's 400 page, after Kong's content handler began
    let broken = NginxPage::admin_body("400", NGINX_400, true);
    for bad in [
        json_post("/config", "transfer-encoding: chunked") + "zz\r\n{}\r\n0\r\n\r\n",
        json_post("/config", "transfer-encoding: chunked") + "2\r\n{}XX0\r\n\r\n",
        json_post("/schemas/services/validate", "transfer-encoding: chunked")
            + "2\r\n{}\r\nq\r\n\r\n",
        "GET /services HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
         transfer-encoding: chunked\r\n\r\n2\r\n{}\r\n-1\r\n\r\n"
            .to_string(),
    ] {
        let out = raw(g.admin, bad.as_bytes(), std::time::Duration::from_secs(3)).await;
        assert!(
            out.starts_with("HTTP/1.1 400 Bad Request\r\n"),
            "{bad}: {out}"
        );
        broken.check(&out, 0);
    }
    assert_eq!(g.gw.config_hash(), doc_hash(&running));
    g.gw.shutdown().await;
}

/// A JSON body that decodes to anything but an object or an array (`1`, `"x"`, `null`,
/// `true`, `false`) fails lapis's `json_params`, which Kong wraps around every handler it
/// attaches (`parse_params`): `add_params` iterates it with `pairs`, a Lua error, and Kong's
/// `handle_error` answers 500 `{"message":"An unexpected error occurred"}`, a JSON answer
/// with Kong's headers, the connection kept. So on `POST /config` (before its checks: no
/// document is read, nothing loads) and on every route and method that has a handler,
/// reads included, on the admin and status listeners alike. Not where lapis runs no handler:
/// no route (404), a method the route lacks (405), a `HEAD` (lapis's default answer); nor
/// for a body not declared JSON, or JSON objects and arrays.
#[tokio::test]
async fn json_scalar_bodies_are_kongs_500_wherever_a_handler_runs() {
    let g = Gw::start(None).await;
    let running = small_doc(1);
    load_config(g.admin, running.clone()).await;
    load_config(
        g.admin,
        r#"{"_format_version":"3.0","upstreams":[{"name":"u","targets":[{"target":"127.0.0.1:9"}]}]}"#,
    )
    .await;
    let running_hash = g.gw.config_hash();
    let scalars = ["1", "\"x\"", "null", "true", "false", " 2.5 "];
    let with_body = |method: &str, path: &str, ct: &str, body: &str| {
        req(method, "localhost", path)
            .header("content-type", ct)
            .body(Full::new(Bytes::from(body.to_string())))
            .unwrap()
    };
    let handled = [
        (g.admin, "POST", "/config"),
        (g.admin, "POST", "/config?check_hash=1&flatten_errors=1"),
        (g.admin, "GET", "/config"),
        (g.admin, "GET", "/"),
        (g.admin, "GET", "/status"),
        (g.admin, "GET", "/endpoints"),
        (g.admin, "GET", "/services"),
        (g.admin, "GET", "/services/nope"),
        (g.admin, "GET", "/upstreams/u/targets/all"),
        (g.admin, "GET", "/schemas/services"),
        (g.admin, "GET", "/tags"),
        (g.admin, "GET", "/metrics"),
        (g.admin, "GET", "/targets"),
        (g.admin, "DELETE", "/cache"),
        (g.admin, "PUT", "/upstreams/u/targets/127.0.0.1:9/healthy"),
        (g.admin, "PUT", "/debug/node/log-level/debug"),
        (g.admin, "PUT", "/debug/cluster/log-level/debug"),
        (g.status, "GET", "/status"),
        (g.status, "GET", "/status/ready"),
        (g.status, "GET", "/upstreams/u/health"),
    ];
    for (addr, method, path) in handled {
        // one connection for all the bodies: the 500 keeps it
        let mut c = H1::connect(addr).await;
        for body in scalars {
            for ct in ["application/json", "Application/JSON; charset=utf-8"] {
                let r = c.send(with_body(method, path, ct, body)).await;
                // (Kong's `before_filter` compares the type's case, for the writes)
                if ct != "application/json" && matches!(method, "POST" | "PUT" | "PATCH") {
                    assert_eq!(r.status, 415, "{method} {path} {ct} {body}: {}", r.text());
                    continue;
                }
                assert_eq!(r.status, 500, "{method} {path} {ct} {body}: {}", r.text());
                assert_eq!(
                    r.body,
                    &b"{\"message\":\"An unexpected error occurred\"}"[..],
                    "{method} {path}"
                );
                assert_eq!(
                    r.header("content-type"),
                    Some("application/json; charset=utf-8")
                );
                assert_eq!(r.header("content-length"), Some("42"));
                assert_eq!(
                    r.header("server"),
                    Some(format!("kong/{}", silverback_proxy::KONG_VERSION).as_str())
                );
                assert!(r.header("x-kong-admin-latency").is_some());
                assert_eq!(r.header("access-control-allow-origin"), Some("*"));
                assert_eq!(r.header("connection"), None);
            }
        }
    }
    assert_eq!(g.gw.config_hash(), running_hash);
    assert_eq!(
        get(g.admin, "localhost", "/debug/node/log-level")
            .await
            .json()["message"],
        "log level: notice"
    );
    // no handler runs: the route's own answer
    for (method, path, status) in [
        ("GET", "/nope", 404),
        ("DELETE", "/status", 405),
        ("PATCH", "/config", 405),
        ("GET", "/schemas/services/validate", 405),
        ("HEAD", "/status", 200),
        ("HEAD", "/services", 200),
    ] {
        let r = admin_send(g.admin, method, path, "application/json", "1").await;
        assert_eq!(r.status, status, "{method} {path}: {}", r.text());
    }
    // a body not declared JSON is not decoded, and tables are parameters; a body that does
    // not decode is no error on a read (Kong checks JSON for the writes alone)
    for (ct, body) in [
        ("text/plain", "1"),
        ("application/x-www-form-urlencoded", "1"),
        ("application/json", "{}"),
        ("application/json", "[1, 2]"),
        ("application/json", "{nope"),
    ] {
        let r = admin_send(g.admin, "GET", "/status", ct, body).await;
        assert_eq!(r.status, 200, "{ct} {body}: {}", r.text());
    }
    g.gw.shutdown().await;
}

/// `GET /consumers?custom_id=x` (Kong's `routes/consumers.lua`): the consumer with that
/// `custom_id` as a one-page list, or none; an empty, value-less or repeated argument is 400.
#[tokio::test]
async fn consumers_are_found_by_custom_id() {
    let g = Gw::start(None).await;
    let a = g.admin;
    load_config(
        a,
        r#"{"_format_version":"3.0","consumers":[{"username":"alice","custom_id":"c 1"},
            {"username":"bob","custom_id":"c2","tags":["t"]},{"username":"carol"}]}"#,
    )
    .await;
    let alice = get(a, "localhost", "/consumers/alice").await.json();
    for q in ["custom_id=c%201", "custom_id=c+1"] {
        let r = get(a, "localhost", &format!("/consumers?{q}")).await;
        assert_eq!(r.status, 200, "{q}: {}", r.text());
        assert_eq!(r.json(), json!({"data": [alice], "next": null}), "{q}");
    }
    // no paging and no tags filter: the consumer whatever they say
    let r = get(
        a,
        "localhost",
        "/consumers?custom_id=c2&size=abc&tags=other",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["data"][0]["username"], "bob");
    let r = get(a, "localhost", "/consumers?custom_id=nope").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), r#"{"data":[],"next":null}"#);
    for q in ["custom_id=", "custom_id", "custom_id=c2&custom_id=c2"] {
        let r = get(a, "localhost", &format!("/consumers?{q}")).await;
        assert_eq!(r.status, 400, "{q}");
        assert_eq!(
            r.json(),
            json!({"message": "custom_id must be an unempty string"}),
            "{q}"
        );
    }
    // without it, the collection
    let r = get(a, "localhost", "/consumers?tags=t").await.json();
    assert_eq!(r["data"].as_array().unwrap().len(), 1);
    assert_eq!(r["data"][0]["username"], "bob");
    assert_eq!(
        get(a, "localhost", "/consumers").await.json()["data"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    g.gw.shutdown().await;
}

/// Health overrides (`/upstreams/{u}/targets/{t}[/{address}]/healthy|unhealthy`) as Kong's
/// `routes/upstreams.lua` checks them: the upstream, then the target (404 `Not found`), then
/// the health checker (400). An address is `ip[:port]`, the port 8000 when left out (Kong's
/// default port); one that is not the target's changes nothing and still gets 204.
#[tokio::test]
async fn health_overrides_check_the_target_before_the_health_checker() {
    let g = Gw::start(None).await;
    let a = g.admin;
    load_config(
        a,
        r#"{"_format_version":"3.0","upstreams":[
            {"name":"checked","healthchecks":{"passive":{"unhealthy":{"http_failures":1}}},
             "targets":[{"target":"127.0.0.1:8000"},{"target":"127.0.0.2:81"}]},
            {"name":"plain","targets":[{"target":"127.0.0.3:80"}]}]}"#,
    )
    .await;
    let post = |p: &'static str| admin_send(a, "PUT", p, "application/json", "");
    // (Kong 3.x takes `PUT` only; 2.x took `POST`)
    let r = admin_post(
        a,
        "/upstreams/checked/targets/127.0.0.2:81/healthy",
        "application/json",
        "",
    )
    .await;
    assert_eq!(r.status, 405, "{}", r.text());
    let health = || async {
        let v = get(a, "localhost", "/upstreams/checked/health")
            .await
            .json();
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                (
                    t["target"].as_str().unwrap().to_string(),
                    t["health"].as_str().unwrap().to_string(),
                )
            })
            .collect::<std::collections::BTreeMap<String, String>>()
    };
    for p in [
        "/upstreams/nope/targets/127.0.0.3:80/unhealthy",
        "/upstreams/plain/targets/127.0.0.9:80/unhealthy",
        "/upstreams/plain/targets/127.0.0.9:80/127.0.0.9:80/healthy",
        "/upstreams/checked/targets/127.0.0.3:80/unhealthy",
    ] {
        let r = post(p).await;
        assert_eq!(r.status, 404, "{p}: {}", r.text());
        assert_eq!(r.json(), json!({"message": "Not found"}), "{p}");
    }
    let r = post("/upstreams/plain/targets/127.0.0.3:80/unhealthy").await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(
        r.json(),
        json!({"message": "no healthchecker found for plain"})
    );

    let r = post("/upstreams/checked/targets/127.0.0.2:81/127.0.0.2:81/unhealthy").await;
    assert_eq!(r.status, 204, "{}", r.text());
    // an IP without a port: port 8000
    let r = post("/upstreams/checked/targets/127.0.0.1:8000/127.0.0.1/unhealthy").await;
    assert_eq!(r.status, 204, "{}", r.text());
    let both_down = health().await;
    assert_eq!(both_down["127.0.0.1:8000"], "UNHEALTHY", "{both_down:?}");
    assert_eq!(both_down["127.0.0.2:81"], "UNHEALTHY", "{both_down:?}");
    // addresses that are not the target's (port 8000 is not 81; another IP; a name):
    // accepted, nothing changes
    for p in [
        "/upstreams/checked/targets/127.0.0.2:81/127.0.0.2/healthy",
        "/upstreams/checked/targets/127.0.0.2:81/127.0.0.9:81/healthy",
        "/upstreams/checked/targets/127.0.0.2:81/localhost:81/healthy",
    ] {
        let r = post(p).await;
        assert_eq!(r.status, 204, "{p}: {}", r.text());
    }
    assert_eq!(health().await, both_down);
    // without an address: every address of the target
    let r = post("/upstreams/checked/targets/127.0.0.2:81/healthy").await;
    assert_eq!(r.status, 204, "{}", r.text());
    assert_eq!(health().await["127.0.0.2:81"], "HEALTHY");
    g.gw.shutdown().await;
}

/// Kong's paging errors: code 9 for the size, code 7 for the offset, no `fields`.
#[tokio::test]
async fn paging_errors_use_kongs_codes_and_messages() {
    let g = Gw::start(None).await;
    let a = g.admin;
    let between = "size must be an integer between 1 and 1000";
    for (q, m) in [
        ("size=abc", "size must be a number"),
        ("size=2.5", between),
        ("size=0", between),
        ("size=1001", between),
        ("size=-1", between),
    ] {
        let r = get(a, "localhost", &format!("/services?{q}")).await;
        assert_eq!(r.status, 400, "{q}");
        assert_eq!(
            r.json(),
            json!({"code": 9, "name": "invalid size", "message": m}),
            "{q}"
        );
    }
    assert_eq!(get(a, "localhost", "/services?size=1000").await.status, 200);
    let r = get(a, "localhost", "/routes?offset=n%21pe").await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json(),
        json!({"code": 7, "name": "invalid offset",
               "message": "'n!pe' is not a valid offset: bad base64 encoding"})
    );
    g.gw.shutdown().await;
}

/// `GET /upstreams/{u}/health` pages as Kong's `kong/api/routes/upstreams.lua` does: `size`
/// and `offset` with the other collections' limits and errors, `next` to
/// `/upstreams/{u}/health?offset=...` (the offset alone), `node_id` on every page; targets of
/// weight 0 are left out; `balancer_health=1` is one unpaged answer. On both listeners.
#[tokio::test]
async fn upstream_health_is_paged() {
    let mut targets = String::new();
    for i in 1..=5 {
        targets.push_str(&format!("  - target: 10.0.0.{i}:80\n"));
    }
    targets.push_str("  - target: 10.0.0.9:80\n    weight: 0\n");
    let cfg =
        format!("_format_version: \"3.0\"\nupstreams:\n- name: up.pool\n  targets:\n{targets}");
    let g = Gw::start(Some(&cfg)).await;
    for a in [g.admin, g.status] {
        let node_id = get(a, "localhost", "/upstreams/up.pool/health")
            .await
            .json()["node_id"]
            .clone();
        assert!(node_id.is_string(), "{node_id}");
        // every target once, in pages of two, each page with the node id
        let mut seen = vec![];
        let mut path = "/upstreams/up.pool/health?size=2".to_string();
        let mut pages = vec![];
        loop {
            let r = get(a, "localhost", &path).await;
            assert_eq!(r.status, 200, "{path}: {}", r.text());
            let v = r.json();
            assert_eq!(v["node_id"], node_id, "{path}");
            let data = v["data"].as_array().expect("data");
            assert!(data.len() <= 2, "{path}: {v}");
            for t in data {
                assert_eq!(t["health"], "HEALTHCHECKS_OFF", "{t}");
                seen.push(t["target"].as_str().expect("target").to_string());
            }
            pages.push((v["offset"].clone(), v["next"].clone()));
            match v["next"].as_str() {
                Some(n) => path = format!("{n}&size=2"),
                None => break,
            }
        }
        seen.sort();
        let want: Vec<String> = (1..=5).map(|i| format!("10.0.0.{i}:80")).collect();
        assert_eq!(seen, want, "weight 0 left out, nothing twice");
        assert_eq!(
            pages,
            vec![
                (json!("2"), json!("/upstreams/up.pool/health?offset=2")),
                (json!("4"), json!("/upstreams/up.pool/health?offset=4")),
                (Value::Null, Value::Null),
            ]
        );
        // without `size`, one page of up to 100
        let v = get(a, "localhost", "/upstreams/up.pool/health")
            .await
            .json();
        assert_eq!(v["data"].as_array().map(Vec::len), Some(5));
        assert_eq!(v["next"], Value::Null);
        assert!(v.get("offset").is_none(), "{v}");
        // past the end: an empty page
        let v = get(a, "localhost", "/upstreams/up.pool/health?offset=9")
            .await
            .json();
        assert_eq!(v["data"], json!([]));
        // the collections' errors
        let r = get(a, "localhost", "/upstreams/up.pool/health?size=0").await;
        assert_eq!(r.status, 400);
        assert_eq!(
            r.json(),
            json!({"code": 9, "name": "invalid size",
                   "message": "size must be an integer between 1 and 1000"})
        );
        let r = get(a, "localhost", "/upstreams/up.pool/health?size=x").await;
        assert_eq!(
            (r.status.as_u16(), r.json()["message"].clone()),
            (400, json!("size must be a number"))
        );
        let r = get(a, "localhost", "/upstreams/up.pool/health?offset=n%21pe").await;
        assert_eq!(r.status, 400);
        assert_eq!(
            r.json(),
            json!({"code": 7, "name": "invalid offset",
                   "message": "'n!pe' is not a valid offset: bad base64 encoding"})
        );
        // an unknown upstream is 404 before the page is read; the balancer's health is not
        // paged (Kong answers it before reading the page's arguments)
        let r = get(a, "localhost", "/upstreams/nope/health?size=0").await;
        assert_eq!(r.status, 404);
        let r = get(
            a,
            "localhost",
            "/upstreams/up.pool/health?balancer_health=1&size=0",
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["data"]["health"], "HEALTHCHECKS_OFF");
        assert_eq!(r.json()["next"], Value::Null);
    }
    g.gw.shutdown().await;
}

/// One child under its parent, as Kong's admin API addresses it: a route under its service,
/// a target under its upstream (by id or `host:port`), credentials under their consumer by
/// the singular names Kong uses there (`/consumers/{c}/key-auth`).
#[tokio::test]
async fn children_under_their_parent() {
    let b = Backend::start().await;
    let g = Gw::start(None).await;
    let cfg = format!(
        r#"_format_version: "3.0"
services:
- name: svc
  url: {url}
  routes:
  - name: r1
    paths: ["/one"]
- name: other
  url: {url}
  routes:
  - name: r3
    paths: ["/three"]
upstreams:
- name: up
  targets:
  - target: 10.0.0.1:80
consumers:
- username: alice
  keyauth_credentials:
  - key: alice-key
  acls:
  - group: admins
- username: bob
"#,
        url = b.url()
    );
    let r = admin_post(g.admin, "/config", "application/x-www-form-urlencoded", cfg).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let a = g.admin;
    let r1 = get(a, "localhost", "/services/svc/routes/r1").await;
    assert_eq!(r1.status, 200, "{}", r1.text());
    let id = r1.json()["id"].as_str().unwrap().to_string();
    assert_eq!(
        get(a, "localhost", &format!("/services/svc/routes/{id}"))
            .await
            .json()["name"],
        "r1"
    );
    // a route of another service is not found under this one
    assert_eq!(
        get(a, "localhost", "/services/svc/routes/r3").await.status,
        404
    );
    assert_eq!(
        get(a, "localhost", "/services/nope/routes/r1").await.status,
        404
    );
    let t = get(a, "localhost", "/upstreams/up/targets/10.0.0.1:80").await;
    assert_eq!(t.status, 200, "{}", t.text());
    let tid = t.json()["id"].as_str().unwrap().to_string();
    assert_eq!(
        get(a, "localhost", &format!("/upstreams/up/targets/{tid}"))
            .await
            .status,
        200
    );
    let keys = get(a, "localhost", "/consumers/alice/key-auth").await;
    assert_eq!(keys.status, 200, "{}", keys.text());
    assert_eq!(keys.json()["data"][0]["key"], "alice-key");
    assert_eq!(
        get(a, "localhost", "/consumers/alice/key-auth/alice-key")
            .await
            .json()["key"],
        "alice-key"
    );
    assert_eq!(
        get(a, "localhost", "/consumers/bob/key-auth").await.json()["data"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
    assert_eq!(
        get(a, "localhost", "/consumers/alice/acls").await.json()["data"][0]["group"],
        "admins"
    );
    // writes there are refused as Kong's DB-less mode refuses them
    let r = admin_post(g.admin, "/services/svc/routes/r1", "application/json", "{}").await;
    assert_eq!(r.status, 405);
    g.gw.shutdown().await;
}

/// A gateway whose registry has one plugin with key-auth's configuration defaults (a
/// schema of our own: the data plane's plugins bring theirs the same way).
async fn with_schema_plugin() -> Gw {
    use silverback_config::schema::{Field, Record};
    use silverback_config::{PluginRegistry, PluginSchema};
    let mut auth = PluginSchema::http(
        "key-auth",
        1250,
        Record::new(vec![
            Field::array("key_names", Field::string(""))
                .required()
                .default(vec!["apikey"]),
            Field::boolean("hide_credentials").default(false),
            Field::string("anonymous"),
        ]),
    );
    auth.no_consumer = true;
    let mut plugins = PluginRegistry::new();
    plugins.register(auth);
    let settings = Settings {
        plugins: std::sync::Arc::new(plugins),
        ..Settings::loopback()
    };
    Gw::start_with(settings, None).await
}

/// The field `name` of a schema body (`{"fields": [{"<name>": {...}}, ...]}`).
fn schema_field<'a>(schema: &'a Value, name: &str) -> &'a Value {
    schema["fields"]
        .as_array()
        .unwrap_or_else(|| panic!("no fields in {schema}"))
        .iter()
        .find_map(|f| f.get(name))
        .unwrap_or_else(|| panic!("no field {name} in {schema}"))
}

async fn send(addr: std::net::SocketAddr, method: &str, path: &str) -> Resp {
    H1::connect(addr)
        .await
        .send(
            req(method, "localhost", path)
                .body(Full::new(Bytes::new()))
                .expect("request"),
        )
        .await
}

#[tokio::test]
async fn schema_endpoints_render_kongs_shapes() {
    let g = with_schema_plugin().await;
    let a = g.admin;

    // a plugin's schema: what KIC fills plugin defaults from
    let r = get(a, "localhost", "/schemas/plugins/key-auth").await;
    assert_eq!(r.status, 200);
    assert!(
        r.header("content-type")
            .unwrap()
            .starts_with("application/json")
    );
    let s = r.json();
    assert_eq!(
        schema_field(&s, "consumer"),
        &json!({"type": "foreign", "reference": "consumers", "eq": null})
    );
    let protocols = schema_field(&s, "protocols");
    assert_eq!(protocols["type"], "set");
    assert_eq!(
        protocols["default"],
        json!(["grpc", "grpcs", "http", "https"])
    );
    let config = schema_field(&s, "config");
    assert_eq!(config["type"], "record");
    assert_eq!(config["required"], true);
    assert_eq!(
        schema_field(config, "key_names"),
        &json!({"type": "array", "required": true, "default": ["apikey"], "elements": {"type": "string"}})
    );
    assert_eq!(
        schema_field(config, "hide_credentials"),
        &json!({"type": "boolean", "default": false})
    );
    // the older endpoint: the config record alone
    let r = get(a, "localhost", "/plugins/schema/key-auth").await;
    assert_eq!(r.status, 200);
    assert_eq!(
        schema_field(&r.json(), "key_names")["default"],
        json!(["apikey"])
    );

    // entity schemas
    let s = get(a, "localhost", "/schemas/services").await.json();
    let protocol = schema_field(&s, "protocol");
    assert_eq!(protocol["type"], "string");
    assert_eq!(protocol["default"], "http");
    assert_eq!(protocol["required"], true);
    let one_of: Vec<&str> = protocol["one_of"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(one_of.contains(&"https") && one_of.contains(&"grpc") && one_of.contains(&"tcp"));
    assert_eq!(schema_field(&s, "port")["default"], 80);
    assert_eq!(schema_field(&s, "port")["between"], json!([0, 65535]));
    assert_eq!(schema_field(&s, "read_timeout")["default"], 60000);
    let s = get(a, "localhost", "/schemas/routes").await.json();
    assert_eq!(
        schema_field(&s, "service"),
        &json!({"type": "foreign", "reference": "services"})
    );
    assert_eq!(schema_field(&s, "methods")["type"], "set");
    assert_eq!(schema_field(&s, "headers")["type"], "map");
    for entity in [
        "upstreams",
        "targets",
        "consumers",
        "plugins",
        "certificates",
        "snis",
        "ca_certificates",
        "vaults",
        "keyauth_credentials",
        "basicauth_credentials",
        "acls",
    ] {
        let r = get(a, "localhost", &format!("/schemas/{entity}")).await;
        assert_eq!(r.status, 200, "{entity}");
        assert!(r.json()["fields"].as_array().is_some_and(|f| !f.is_empty()));
    }
    let r = get(a, "localhost", "/schemas/vaults/env").await;
    assert_eq!(r.status, 200);
    assert_eq!(schema_field(&r.json(), "config")["type"], "record");

    // unknown names
    let r = get(a, "localhost", "/schemas/nope").await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json(), json!({"message": "No entity named 'nope'"}));
    for path in ["/schemas/plugins/nope", "/plugins/schema/nope"] {
        let r = get(a, "localhost", path).await;
        assert_eq!(r.status, 404, "{path}");
        assert_eq!(r.json(), json!({"message": "No plugin named 'nope'"}));
    }
    let r = get(a, "localhost", "/schemas/vaults/nope").await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json(), json!({"message": "No vault named 'nope'"}));
    let r = admin_post(a, "/schemas/nope/validate", "application/json", "{}").await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json(), json!({"message": "No entity named 'nope'"}));

    // methods Kong does not route there
    for (method, path) in [
        ("POST", "/schemas/services"),
        ("DELETE", "/schemas/plugins/key-auth"),
        ("PUT", "/plugins/schema/key-auth"),
        ("GET", "/schemas/plugins/validate"),
        ("GET", "/schemas/services/validate"),
    ] {
        let r = send(a, method, path).await;
        assert_eq!(r.status, 405, "{method} {path}");
        assert_eq!(r.json(), json!({"message": "Method not allowed"}));
    }
}

#[tokio::test]
async fn validate_endpoints_use_the_configuration_rules() {
    let g = with_schema_plugin().await;
    let a = g.admin;
    let ok = json!({"message": "schema validation successful"});

    // plugins: KIC's admission webhook
    let r = admin_post(
        a,
        "/schemas/plugins/validate",
        "application/json",
        r#"{"name":"key-auth","config":{"key_names":["x-key"]},"protocols":["http"]}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), ok);
    let r = admin_post(
        a,
        "/schemas/plugins/validate",
        "application/json",
        r#"{"name":"key-auth","config":{"key_names":"x-key"}}"#,
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json(),
        json!({"code": 2, "name": "schema violation",
               "message": "schema violation (config.key_names: expected an array)",
               "fields": {"config": {"key_names": "expected an array"}}})
    );
    // the plugin's scope limits and protocols are the loader's too
    let r = admin_post(
        a,
        "/schemas/plugins/validate",
        "application/json",
        r#"{"name":"key-auth","consumer":{"id":"6b2a4b4e-3f2f-4b39-9c2f-1d1b8e2b3a41"}}"#,
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json()["fields"],
        json!({"consumer": "value must be null"})
    );
    let r = admin_post(
        a,
        "/schemas/plugins/validate",
        "application/json",
        r#"{"name":"rate-limiting"}"#,
    )
    .await;
    assert_eq!(r.status, 400);
    let m = "plugin 'rate-limiting' not enabled; add it to the 'plugins' configuration property";
    assert_eq!(
        r.json(),
        json!({"code": 2, "name": "schema violation",
               "message": format!("schema violation (name: {m})"),
               "fields": {"name": m}})
    );

    // entities, with their shorthands and record checks
    let r = admin_post(
        a,
        "/schemas/services/validate",
        "application/json",
        r#"{"name":"s","url":"https://example.test:8443/api"}"#,
    )
    .await;
    assert_eq!((r.status.as_u16(), r.json()), (200, ok.clone()));
    let r = admin_post(
        a,
        "/schemas/services/validate",
        "application/json",
        r#"{"host":"example.test","port":70000,"protocol":"tcp","path":"/x"}"#,
    )
    .await;
    assert_eq!(r.status, 400);
    let v = r.json();
    // the protocol's conditional check runs beside the port's error, as in Kong
    assert_eq!(
        v["fields"],
        json!({"port": "value should be between 0 and 65535", "path": "value must be null",
               "@entity": ["failed conditional validation given value of field 'protocol'"]})
    );
    assert_eq!(
        v["message"],
        "3 schema violations (failed conditional validation given value of field 'protocol'; path: value must be null; port: value should be between 0 and 65535)"
    );
    let r = admin_post(
        a,
        "/schemas/routes/validate",
        "application/json",
        r#"{"protocols":["http"]}"#,
    )
    .await;
    assert_eq!(r.status, 400);
    let v = r.json();
    assert_eq!(v["code"], 2);
    assert!(
        v["fields"]["@entity"][0]
            .as_str()
            .unwrap()
            .contains("must set one of"),
        "{v}"
    );
    // references to other entities are not looked up
    let r = admin_post(
        a,
        "/schemas/routes/validate",
        "application/json",
        r#"{"paths":["/a"],"service":{"id":"6b2a4b4e-3f2f-4b39-9c2f-1d1b8e2b3a41"}}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = admin_post(
        a,
        "/schemas/targets/validate",
        "application/x-www-form-urlencoded",
        "target=10.0.0.1%3A80",
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json()["fields"],
        json!({"upstream": "required field missing"})
    );
    let r = admin_post(a, "/schemas/consumers/validate", "application/json", "{").await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json(), json!({"message": "Cannot parse JSON body"}));
}

/// `POST /schemas/{entity}/validate` reads a JSON body as Kong's admin API reads every body
/// (`api_helpers.lua`'s `before_filter` and `parse_params`, lapis's `json_params`), before
/// its handler (`kong/api/routes/kong.lua`, `validate_schema`) looks the entity up: a JSON
/// array is a table whose elements are the parameters 1 to n, numbers to Lua, each an
/// unknown field to the schema, and `[]` is `{}`.
#[tokio::test]
async fn validate_reads_a_json_array_as_kong_does() {
    let g = Gw::start(None).await;
    let a = g.admin;
    let json_ct = "application/json";
    let violation = |message: &str, fields: Value| json!({"code": 2, "name": "schema violation", "message": message, "fields": fields});
    let unexpected = json!({"message": "An unexpected error occurred"});
    let cases: Vec<(&str, &str, &str, u16, Value)> = vec![
        // `[]` is `{}`: the entity's own checks, or success when it needs nothing
        (
            "/schemas/services/validate",
            json_ct,
            "[]",
            400,
            violation(
                "schema violation (host: required field missing)",
                json!({"host": "required field missing"}),
            ),
        ),
        (
            "/schemas/key_sets/validate",
            json_ct,
            "[]",
            200,
            json!({"message": "schema validation successful"}),
        ),
        // each element is an unknown field; alone, their errors are a Lua sequence (an array
        // in the answer)
        (
            "/schemas/key_sets/validate",
            json_ct,
            r#"[1, {"name": "x"}]"#,
            400,
            violation(
                "2 schema violations (1: unknown field; 2: unknown field)",
                json!(["unknown field", "unknown field"]),
            ),
        ),
        // the positions are numbers to Lua: 10 after 9
        (
            "/schemas/key_sets/validate",
            json_ct,
            "[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]",
            400,
            violation(
                &format!(
                    "11 schema violations ({})",
                    (1..=11)
                        .map(|i| format!("{i}: unknown field"))
                        .collect::<Vec<_>>()
                        .join("; ")
                ),
                json!(vec!["unknown field"; 11]),
            ),
        ),
        // beside a named error (`name: required field missing`, `host: ...`), Kong's
        // `schema_violation` (`errors.lua`) sorts the error table's keys with `table.sort`,
        // which fails comparing a number with a string: a Lua error, which Kong's
        // `handle_error` answers 500 `An unexpected error occurred`
        (
            "/schemas/plugins/validate",
            json_ct,
            r#"["key-auth"]"#,
            500,
            unexpected.clone(),
        ),
        (
            "/schemas/services/validate",
            json_ct,
            r#"[{"host": "y"}]"#,
            500,
            unexpected.clone(),
        ),
        // an object's keys "1", "2" stay strings to Kong: its errors are an object, and
        // sorted by their bytes ("10" before "9")
        (
            "/schemas/key_sets/validate",
            json_ct,
            r#"{"1": "x", "2": "y"}"#,
            400,
            violation(
                "2 schema violations (1: unknown field; 2: unknown field)",
                json!({"1": "unknown field", "2": "unknown field"}),
            ),
        ),
        (
            "/schemas/key_sets/validate",
            json_ct,
            r#"{"9": "x", "10": "y"}"#,
            400,
            violation(
                "2 schema violations (10: unknown field; 9: unknown field)",
                json!({"9": "unknown field", "10": "unknown field"}),
            ),
        ),
        // nothing is no JSON body: Kong's check, 400
        (
            "/schemas/services/validate",
            json_ct,
            "",
            400,
            json!({"message": "Cannot parse JSON body"}),
        ),
        // a scalar decodes, and lapis's `json_params` adds it to the parameters with
        // `pairs("x")`, a Lua error before Kong's check: 500 `An unexpected error occurred`
        (
            "/schemas/services/validate",
            json_ct,
            "\"x\"",
            500,
            unexpected.clone(),
        ),
        (
            "/schemas/nope/validate",
            json_ct,
            "null",
            500,
            unexpected.clone(),
        ),
        // the body is read before the entity is looked up
        (
            "/schemas/nope/validate",
            json_ct,
            "[",
            400,
            json!({"message": "Cannot parse JSON body"}),
        ),
        (
            "/schemas/nope/validate",
            "text/plain",
            "{}",
            415,
            Value::Null,
        ),
        (
            "/schemas/nope/validate",
            json_ct,
            "[]",
            404,
            json!({"message": "No entity named 'nope'"}),
        ),
        // Kong's `before_filter` compares the type's case
        (
            "/schemas/services/validate",
            "Application/JSON",
            "{}",
            415,
            Value::Null,
        ),
        // form values stay text here (this endpoint does not type them by the schema)
        (
            "/schemas/services/validate",
            "application/x-www-form-urlencoded",
            "host=x.test&port=80",
            400,
            violation(
                "schema violation (port: expected an integer)",
                json!({"port": "expected an integer"}),
            ),
        ),
    ];
    for (path, ct, body, status, want) in cases {
        let r = admin_post(a, path, ct, body).await;
        assert_eq!(r.status, status, "{path} {ct} {body}: {}", r.text());
        if want.is_null() {
            assert!(r.text().is_empty(), "{path} {ct} {body}: {}", r.text());
        } else {
            assert_eq!(r.json(), want, "{path} {ct} {body}");
        }
    }
    g.gw.shutdown().await;
}

/// `POST /schemas/{entity}/validate` checks lapis's `self.params` as Kong's `parse_params`
/// leaves them (`kong/api/routes/kong.lua`): the query's arguments, the form's over them, the
/// path's entity name, a JSON body's members over all; a url-encoded body's values through
/// Kong's `decode_args`; every key nested by its dots and brackets, whatever the body.
#[tokio::test]
async fn validate_reads_kongs_request_parameters() {
    let g = with_schema_plugin().await;
    let a = g.admin;
    let json_ct = "application/json";
    let form = "application/x-www-form-urlencoded";
    let ok = json!({"message": "schema validation successful"});
    let violation = |message: &str, fields: Value| json!({"code": 2, "name": "schema violation", "message": message, "fields": fields});
    let unexpected = json!({"message": "An unexpected error occurred"});
    let cases: Vec<(&str, &str, &str, u16, Value)> = vec![
        // the query's arguments are parameters, under any body's
        (
            "/schemas/services/validate?host=q.test",
            json_ct,
            "{}",
            200,
            ok.clone(),
        ),
        (
            "/schemas/services/validate?host=bad_host!",
            json_ct,
            r#"{"host": "x.test"}"#,
            200,
            ok.clone(),
        ),
        (
            "/schemas/services/validate?host=x.test",
            form,
            "host=bad_host!",
            400,
            violation(
                "schema violation (host: invalid value: bad_host!)",
                json!({"host": "invalid value: bad_host!"}),
            ),
        ),
        // a url-encoded body's `decode_args`: "true" and "false" are booleans, "" null, also
        // under a dotted key (decoded before it is nested)
        (
            "/schemas/plugins/validate",
            form,
            "name=key-auth&enabled=false&config.hide_credentials=true&tags=",
            200,
            ok.clone(),
        ),
        // dotted and bracketed keys nest, in a JSON body too (a key's bracket by lapis, a
        // key's dots and trailing position at any depth by Kong)
        (
            "/schemas/plugins/validate",
            json_ct,
            r#"{"name": "key-auth", "config.hide_credentials": 1}"#,
            400,
            violation(
                "schema violation (config.hide_credentials: expected a boolean)",
                json!({"config": {"hide_credentials": "expected a boolean"}}),
            ),
        ),
        (
            "/schemas/plugins/validate",
            json_ct,
            r#"{"name": "key-auth", "config[hide_credentials]": 1}"#,
            400,
            violation(
                "schema violation (config.hide_credentials: expected a boolean)",
                json!({"config": {"hide_credentials": "expected a boolean"}}),
            ),
        ),
        (
            "/schemas/plugins/validate",
            json_ct,
            r#"{"name": "key-auth", "config": {"key_names[1]": "k", "anonymous": "a"}}"#,
            200,
            ok.clone(),
        ),
        // the entity is the `db_entity_name` parameter: the path's over the query's and the
        // form's, a JSON body's over the path's
        (
            "/schemas/services/validate?db_entity_name=key_sets",
            json_ct,
            "{}",
            400,
            violation(
                "schema violation (host: required field missing)",
                json!({"host": "required field missing"}),
            ),
        ),
        (
            "/schemas/services/validate",
            json_ct,
            r#"{"db_entity_name": "key_sets"}"#,
            200,
            ok.clone(),
        ),
        (
            "/schemas/services/validate",
            json_ct,
            r#"{"db_entity_name": "nope"}"#,
            404,
            json!({"message": "No entity named 'nope'"}),
        ),
        // a number names no DAO, and Lua writes it into the message; anything else fails
        // the message's concatenation
        (
            "/schemas/services/validate",
            json_ct,
            r#"{"db_entity_name": 1.50}"#,
            404,
            json!({"message": "No entity named '1.5'"}),
        ),
        (
            "/schemas/services/validate",
            json_ct,
            r#"{"db_entity_name": true}"#,
            500,
            unexpected.clone(),
        ),
        (
            "/schemas/true/validate",
            form,
            "a=1",
            500,
            unexpected.clone(),
        ),
        // `/schemas/plugins/validate` is a route of its own: there the name is a parameter
        (
            "/schemas/plugins/validate",
            json_ct,
            r#"{"name": "key-auth", "db_entity_name": "services"}"#,
            400,
            violation(
                "schema violation (db_entity_name: unknown field)",
                json!({"db_entity_name": "unknown field"}),
            ),
        ),
        // a query's argument beside a JSON array's positions: a name beside numbers
        (
            "/schemas/key_sets/validate?x=1",
            json_ct,
            "[1]",
            500,
            unexpected.clone(),
        ),
    ];
    let mut wrong = vec![];
    for (path, ct, body, status, want) in cases {
        let r = admin_post(a, path, ct, body).await;
        let got = if r.body.is_empty() {
            Value::Null
        } else {
            r.json()
        };
        if (r.status.as_u16(), &got) != (status, &want) {
            wrong.push(format!(
                "{path} {ct} {body}: {} {got}\n  want {status} {want}",
                r.status
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    g.gw.shutdown().await;
}

/// A `Content-Type` with bytes past ASCII is still the type Kong reads (lapis and Kong
/// search its lowercased bytes for `application/json`), for the validate endpoint and the
/// writes alike: the body is read as JSON, not ignored.
#[tokio::test]
async fn a_content_type_past_ascii_is_still_read() {
    let g = Gw::start(None).await;
    let ct = http::HeaderValue::from_bytes(b"application/json; charset=\xe9").unwrap();
    let send = |method: &'static str, path: &'static str, body: &'static str| {
        let ct = ct.clone();
        async move {
            H1::connect(g.admin)
                .await
                .send(
                    req(method, "localhost", path)
                        .header("content-type", ct)
                        .body(Full::new(Bytes::from_static(body.as_bytes())))
                        .unwrap(),
                )
                .await
        }
    };
    let r = send(
        "POST",
        "/schemas/services/validate",
        r#"{"host": "x.test"}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = send("POST", "/schemas/services/validate", "{").await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json(), json!({"message": "Cannot parse JSON body"}));
    // a write: the body's own errors, not those of `{}`
    let r = send("POST", "/services", r#"{"host": "bad_host!"}"#).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(
        r.json()["fields"],
        json!({"host": "invalid value: bad_host!"})
    );
    g.gw.shutdown().await;
}

/// Entities read back as Kong shows them: every field of the schema, left-out ones with
/// their default or `null`, and the load's timestamps; in lists, under a parent and alone.
#[tokio::test]
async fn entities_show_every_field_with_defaults_nulls_and_timestamps() {
    let g = Gw::start(None).await;
    let cfg = r#"_format_version: "3.0"
services:
- name: svc
  url: http://127.0.0.1:9/p
  tags: [a]
  routes:
  - name: r1
    paths: ["/one"]
upstreams:
- name: up
  targets:
  - target: 10.0.0.1:80
consumers:
- username: alice
  keyauth_credentials:
  - key: alice-key
"#;
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let r = admin_post(g.admin, "/config", "application/x-www-form-urlencoded", cfg).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let a = g.admin;
    let s = get(a, "localhost", "/services/svc").await.json();
    assert_eq!(s["enabled"], true, "{s}");
    assert_eq!(s["tags"], serde_json::json!(["a"]));
    for null in [
        "client_certificate",
        "tls_verify",
        "tls_verify_depth",
        "ca_certificates",
    ] {
        assert!(s[null].is_null(), "{null}: {s}");
        assert!(s.as_object().unwrap().contains_key(null), "{null}: {s}");
    }
    let created = s["created_at"].as_i64().expect("created_at");
    assert!(created >= before && created <= before + 60, "{s}");
    assert_eq!(s["updated_at"], s["created_at"]);
    // the same shape in a list, under a parent, and through a child's reference
    let list = get(a, "localhost", "/services").await.json();
    assert_eq!(list["data"][0], s);
    let via_route = get(a, "localhost", "/routes/r1/service").await.json();
    assert_eq!(via_route, s);
    let r = get(a, "localhost", "/services/svc/routes").await.json();
    let route = &r["data"][0];
    for null in [
        "hosts",
        "methods",
        "headers",
        "snis",
        "sources",
        "destinations",
        "tags",
    ] {
        assert!(route[null].is_null(), "{null}: {route}");
    }
    assert_eq!(route["service"]["id"], s["id"]);
    assert_eq!(route["created_at"], s["created_at"]);
    let cred = get(a, "localhost", "/consumers/alice/key-auth")
        .await
        .json();
    assert_eq!(cred["data"][0]["key"], "alice-key");
    assert!(cred["data"][0]["tags"].is_null(), "{cred}");
    let t = get(a, "localhost", "/upstreams/up/targets/all")
        .await
        .json();
    assert_eq!(t["data"][0]["weight"], 100, "{t}");
    assert!(t["data"][0]["tags"].is_null(), "{t}");
    // DB-less: the status API serves the upstreams' health and targets routes too
    // (Kong's `routes/upstreams.lua`), and nothing else
    let st = g.status;
    for path in [
        "/upstreams/up/health",
        "/upstreams/up/targets",
        "/upstreams/up/targets/all",
        "/upstreams/up/targets/10.0.0.1:80",
    ] {
        let r = get(st, "localhost", path).await;
        assert_eq!(r.status, 200, "{path}: {}", r.text());
    }
    let health = get(st, "localhost", "/upstreams/up/health").await.json();
    assert_eq!(health["data"][0]["target"], "10.0.0.1:80", "{health}");
    for path in [
        "/services",
        "/upstreams",
        "/upstreams/up",
        "/upstreams/up/targets/10.0.0.1:80/healthy",
        "/config",
    ] {
        assert_eq!(get(st, "localhost", path).await.status, 404, "{path}");
    }
    let r = admin_post(st, "/upstreams/up/targets", "application/json", "{}").await;
    assert_eq!(r.status, 405, "{}", r.text());
    g.gw.shutdown().await;
}

/// The segments of a path.
fn segments(path: &str) -> Vec<&str> {
    path.split('/').filter(|s| !s.is_empty()).collect()
}

/// Whether `path` is one of `template`'s (as `GET /endpoints` writes it: a `{parameter}`
/// takes any segment).
fn fits(template: &str, path: &str) -> bool {
    let (t, p) = (segments(template), segments(path));
    t.len() == p.len() && t.iter().zip(&p).all(|(t, p)| t.starts_with('{') || t == p)
}

/// `GET /endpoints` lists every path the admin API serves, and only those, as Kong writes
/// and sorts them; other methods are refused as on the other read-only endpoints.
#[tokio::test]
async fn endpoints_lists_exactly_the_served_paths() {
    // A credential collection under its consumer by its collection name, rather than
    // Kong's nested name (`/consumers/{c}/key-auths` for `/consumers/{c}/key-auth`): served,
    // not listed.
    fn other_name(p: &str) -> bool {
        let s: Vec<&str> = p.split('/').filter(|s| !s.is_empty()).collect();
        s.len() >= 3
            && s.len() <= 4
            && s[0] == "consumers"
            && ["key-auths", "basic-auths", "hmac-auths", "jwts"].contains(&s[2])
    }
    let g = Gw::start(None).await;
    let a = g.admin;
    let r = get(a, "localhost", "/endpoints").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.header("content-type"),
        Some("application/json; charset=utf-8")
    );
    let v = r.json();
    assert_eq!(v.as_object().unwrap().len(), 1, "only data: {v}");
    let listed: Vec<String> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_string())
        .collect();
    // Kong's format: parameters in braces, an entity's named by its DAO name.
    for p in [
        "/",
        "/endpoints",
        "/config",
        "/status",
        "/services",
        "/services/{services}",
        "/services/{services}/routes",
        "/services/{services}/routes/{routes}",
        "/routes/{routes}/service",
        "/consumers/{consumers}/key-auth/{keyauth_credentials}",
        "/key-auths/{keyauth_credentials}",
        "/plugins/enabled",
        "/plugins/schema/{name}",
        "/schemas/{name}",
        "/schemas/{db_entity_name}/validate",
        "/schemas/plugins/{name}",
        "/tags/{tags}",
        "/upstreams/{upstreams}/health",
        "/upstreams/{upstreams}/targets/all",
        "/upstreams/{upstreams}/targets/{targets}/{address}/healthy",
    ] {
        assert!(listed.iter().any(|l| l == p), "{p} not in {listed:?}");
    }
    assert!(!listed.iter().any(|l| l.contains(':')), "{listed:?}");
    // Kong's order: bytewise with `/` before every other byte; no path twice.
    let mut sorted = listed.clone();
    sorted.sort_by_key(|p| p.replace('/', "\0"));
    sorted.dedup();
    assert_eq!(listed, sorted);

    // Served exactly when listed, but for the other names of collections, which are served
    // and not listed (Kong has them not): a method no admin route takes answers 405 on a
    // served path and 404 on any other. Probed: every listed path with its parameters filled in,
    // with one segment more, with a literal segment changed, with a parameter given each
    // word of the listed paths (the literal routes' precedence), and every path of one or
    // two of those words.
    let mut words: std::collections::BTreeSet<&str> = listed
        .iter()
        .flat_map(|p| segments(p))
        .filter(|s| !s.starts_with('{'))
        .collect();
    words.insert("x");
    let path = |segs: &[&str]| format!("/{}", segs.join("/"));
    let mut probes = std::collections::BTreeSet::new();
    for t in &listed {
        let t = segments(t);
        let filled: Vec<&str> = t
            .iter()
            .map(|s| if s.starts_with('{') { "x" } else { *s })
            .collect();
        probes.insert(path(&filled));
        probes.insert(path(&[&filled[..], &["x"]].concat()));
        for (i, s) in t.iter().enumerate() {
            let mut p = filled.clone();
            if s.starts_with('{') {
                for w in &words {
                    p[i] = w;
                    probes.insert(path(&p));
                }
            } else {
                p[i] = "x";
                probes.insert(path(&p));
            }
        }
    }
    for w1 in &words {
        probes.insert(path(&[w1]));
        for w2 in &words {
            probes.insert(path(&[w1, w2]));
        }
    }
    let mut c = H1::connect(a).await;
    let mut served = 0;
    for p in &probes {
        let r = c
            .send(
                req("PROPFIND", "localhost", p)
                    .body(Full::default())
                    .unwrap(),
            )
            .await;
        if [
            "/targets",
            "/targets/{targets}",
            "/targets/{targets}/upstream",
        ]
        .iter()
        .any(|t| fits(t, p))
        {
            // listed, but disabled (Kong's `routes/targets.lua`): 404 whatever the method
            assert!(listed.iter().any(|t| fits(t, p)), "{p}");
            assert_eq!(r.status, 404, "PROPFIND {p}: {}", r.text());
            assert_eq!(r.json(), json!({"message": "Not found"}), "{p}");
        } else if listed.iter().any(|t| fits(t, p)) || other_name(p) {
            served += 1;
            assert_eq!(r.status, 405, "PROPFIND {p}: {}", r.text());
            assert_eq!(r.json(), json!({"message": "Method not allowed"}), "{p}");
        } else {
            assert_eq!(r.status, 404, "PROPFIND {p} is served but not listed");
            assert_eq!(r.json(), json!({"message": "Not found"}), "{p}");
        }
    }
    assert!(
        served + 3 >= listed.len(),
        "{served} of {} probes",
        probes.len()
    );
    // and a listed path answers GET
    let r = get(a, "localhost", "/upstreams").await;
    assert_eq!(r.status, 200);
    // the other names are served (a method no route takes: 405), not listed
    for (p, unlisted) in [
        ("/keyauth_credentials", "/keyauth_credentials"),
        ("/key_sets/x", "/key_sets/{key_sets}"),
        ("/consumers/x/key-auths", "/consumers/{consumers}/key-auths"),
        (
            "/consumers/x/jwt_secrets/y",
            "/consumers/{consumers}/jwt_secrets/{jwt_secrets}",
        ),
    ] {
        let r = c
            .send(
                req("PROPFIND", "localhost", p)
                    .body(Full::default())
                    .unwrap(),
            )
            .await;
        assert_eq!(r.status, 405, "PROPFIND {p}: {}", r.text());
        assert!(!listed.iter().any(|l| l == unlisted), "{unlisted} listed");
    }

    // Read-only, as the other read-only endpoints.
    for m in ["POST", "PUT", "PATCH", "DELETE"] {
        let r = c
            .send(
                req(m, "localhost", "/endpoints")
                    .body(Full::default())
                    .unwrap(),
            )
            .await;
        assert_eq!(r.status, 405, "{m}");
        assert_eq!(r.json(), json!({"message": "Method not allowed"}), "{m}");
    }
    let r = c
        .send(
            req("HEAD", "localhost", "/endpoints")
                .body(Full::default())
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, 200);
    // The status listener serves its own few paths, not this one.
    assert_eq!(get(g.status, "localhost", "/endpoints").await.status, 404);
    let mut s = H1::connect(g.status).await;
    for (p, status) in [
        ("/status", 405),
        ("/upstreams/x/targets/all", 405),
        ("/upstreams/x/client_certificate", 404),
        ("/services", 404),
    ] {
        let r = s
            .send(
                req("PROPFIND", "localhost", p)
                    .body(Full::default())
                    .unwrap(),
            )
            .await;
        assert_eq!(r.status, status, "status listener: PROPFIND {p}");
    }
    g.gw.shutdown().await;
}

/// A fixture of the configuration crate's test PKI.
fn pki(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/../config/tests/fixtures/pki/{name}",
        std::env::var("CARGO_MANIFEST_DIR")
            .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string())
    ))
    .expect("fixture")
}

/// Kong 3.x `key_sets` and `keys` (keys nested in their set, or naming it) through
/// `POST /config`, read back through their endpoints (`/key-sets`, `/keys`, the keys of a
/// set, a key's set), the schema endpoints and the export; writes refused as Kong's
/// DB-less mode refuses them.
#[tokio::test]
async fn key_sets_and_keys_are_read_through_their_endpoints() {
    let g = Gw::start(None).await;
    let a = g.admin;
    let jwk = |kid: &str| {
        let mut v: Value = serde_json::from_str(&pki("rsa.jwk")).expect("JSON fixture");
        v["kid"] = json!(kid);
        v.to_string()
    };
    let cfg = json!({
        "_format_version": "3.0",
        "key_sets": [
            {"name": "signing", "tags": ["ks"], "keys": [
                {"name": "jwk-1", "kid": "jwk-1", "jwk": jwk("jwk-1"), "tags": ["k8s-name:a"]},
                {"name": "pem-1", "kid": "pem-1", "pem": {"public_key": pki("ec.pub")}}
            ]},
            {"name": "empty"}
        ],
        "keys": [
            {"name": "loose", "kid": "loose", "jwk": jwk("loose")},
            {"name": "named", "kid": "named", "set": "signing", "jwk": jwk("named")}
        ]
    });
    let r = admin_post(a, "/config", "application/json", cfg.to_string()).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let posted = r.json();
    assert_eq!(posted, load(&cfg.to_string()).flattened_entities());
    assert_eq!(posted["key_sets"].as_object().map(|m| m.len()), Some(2));
    assert_eq!(posted["keys"].as_object().map(|m| m.len()), Some(4));

    // the collections, every field shown
    let sets = get(a, "localhost", "/key-sets").await;
    assert_eq!(sets.status, 200, "{}", sets.text());
    let sets = sets.json();
    let data = sets["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    let signing = &data[0];
    assert_eq!(signing["name"], "signing");
    assert_eq!(signing["tags"], json!(["ks"]));
    assert!(signing["created_at"].is_i64() && signing["updated_at"].is_i64());
    assert!(data[1]["tags"].is_null() && data[1].get("tags").is_some());
    let set_id = signing["id"].as_str().unwrap().to_string();
    let keys = get(a, "localhost", "/keys").await.json();
    assert_eq!(keys["data"].as_array().unwrap().len(), 4);
    // by name and by id
    let loose = get(a, "localhost", "/keys/loose").await.json();
    assert_eq!(loose["kid"], "loose");
    assert_eq!(loose["jwk"], jwk("loose"));
    assert!(
        loose["set"].is_null() && loose.get("set").is_some(),
        "{loose}"
    );
    assert!(
        loose["pem"].is_null() && loose.get("pem").is_some(),
        "{loose}"
    );
    let loose_id = loose["id"].as_str().unwrap().to_string();
    assert_eq!(
        get(a, "localhost", &format!("/keys/{loose_id}"))
            .await
            .json()["name"],
        "loose"
    );
    assert_eq!(
        get(a, "localhost", &format!("/key-sets/{set_id}"))
            .await
            .json()["name"],
        "signing"
    );
    assert_eq!(get(a, "localhost", "/key-sets/nope").await.status, 404);
    let pem_1 = get(a, "localhost", "/keys/pem-1").await.json();
    assert_eq!(pem_1["pem"]["public_key"], pki("ec.pub"));
    assert!(pem_1["pem"]["private_key"].is_null(), "{pem_1}");
    assert_eq!(pem_1["set"], json!({"id": set_id}));

    // the keys of a set: the nested ones and the one naming it
    let of_set = get(a, "localhost", "/key-sets/signing/keys").await.json();
    let names: Vec<&str> = of_set["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["jwk-1", "pem-1", "named"]);
    let none = get(a, "localhost", "/key-sets/empty/keys").await.json();
    assert_eq!(none["data"], json!([]));
    assert_eq!(
        get(a, "localhost", "/key-sets/signing/keys/jwk-1")
            .await
            .json()["kid"],
        "jwk-1"
    );
    assert_eq!(
        get(a, "localhost", "/key-sets/empty/keys/jwk-1")
            .await
            .status,
        404
    );
    // a key's set
    assert_eq!(
        get(a, "localhost", "/keys/named/set").await.json()["id"],
        set_id.as_str()
    );
    assert_eq!(get(a, "localhost", "/keys/loose/set").await.status, 404);
    // tags
    let tagged = get(a, "localhost", "/keys?tags=k8s-name:a").await.json();
    assert_eq!(tagged["data"][0]["name"], "jwk-1");
    let t = get(a, "localhost", "/tags/ks").await.json();
    assert_eq!(
        t["data"],
        json!([{"entity_name": "key_sets", "entity_id": set_id, "tag": "ks"}])
    );

    // writes: Kong's DB-less answers (to valid entities)
    let new_key = json!({"kid": "new", "jwk": jwk("new")}).to_string();
    let r = admin_post(a, "/keys", "application/json", new_key.clone()).await;
    assert_eq!(r.status, 405);
    assert_eq!(
        r.json(),
        json!({"code": 12, "name": "operation unsupported", "message": "cannot create 'keys' entities when not using a database"})
    );
    let r = admin_post(a, "/key-sets", "application/json", "{}").await;
    assert_eq!(
        r.json()["message"],
        "cannot create 'key_sets' entities when not using a database"
    );
    let r = send(a, "PATCH", "/keys/loose").await;
    assert_eq!(r.status, 405);
    assert_eq!(
        r.json()["message"],
        "cannot update 'keys' entities by 'name' when not using a database"
    );
    let r = send(a, "DELETE", &format!("/key-sets/{set_id}")).await;
    assert_eq!(
        r.json()["message"],
        "cannot remove 'key_sets' entities when not using a database"
    );
    let r = admin_post(a, "/key-sets/signing/keys", "application/json", new_key).await;
    assert_eq!(
        r.json()["message"],
        "cannot create 'keys' entities when not using a database"
    );

    // schemas
    let s = get(a, "localhost", "/schemas/keys").await;
    assert_eq!(s.status, 200, "{}", s.text());
    let s = s.json();
    assert_eq!(
        schema_field(&s, "kid"),
        &json!({"type": "string", "required": true})
    );
    assert_eq!(
        schema_field(&s, "set"),
        &json!({"type": "foreign", "reference": "key_sets"})
    );
    assert_eq!(
        schema_field(
            &get(a, "localhost", "/schemas/key_sets").await.json(),
            "name"
        ),
        &json!({"type": "string", "unique": true})
    );
    let r = admin_post(
        a,
        "/schemas/keys/validate",
        "application/json",
        json!({"kid": "a", "jwk": "{\"kid\": \"b\"}"}).to_string(),
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json()["message"],
        "schema violation (kid in jwk.kid must be equal to keys.kid)"
    );

    // the export: keys with their set as a plain id, and it loads again
    let exported = get(a, "localhost", "/config").await.json()["config"]
        .as_str()
        .unwrap()
        .to_string();
    let v = silverback_config::parse::parse_document(exported.as_bytes()).unwrap();
    let named = v["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "named")
        .unwrap();
    assert_eq!(named["set"], set_id.as_str(), "{exported}");
    assert_eq!(load(&exported).keys.len(), 4);

    // /endpoints lists them
    let listed = get(a, "localhost", "/endpoints").await.json();
    let listed = listed["data"].as_array().unwrap();
    for p in [
        "/key-sets",
        "/key-sets/{key_sets}",
        "/key-sets/{key_sets}/keys",
        "/key-sets/{key_sets}/keys/{keys}",
        "/keys",
        "/keys/{keys}",
        "/keys/{keys}/set",
    ] {
        assert!(listed.iter().any(|l| l == p), "{p} not in {listed:?}");
    }

    // a bad key is refused with Kong's message, tied to the key; the configuration stays
    let bad = json!({"_format_version": "3.0", "key_sets": [{"name": "s", "keys": [
        {"name": "bad", "kid": "a", "jwk": jwk("b"), "tags": ["k8s-name:bad"]}]}]});
    let r = admin_post(
        a,
        "/config?flatten_errors=1",
        "application/json",
        bad.to_string(),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text());
    let fe = &r.json()["flattened_errors"][0];
    assert_eq!(fe["entity_type"], "key");
    assert_eq!(fe["entity_name"], "bad");
    assert_eq!(fe["entity_tags"], json!(["k8s-name:bad"]));
    assert_eq!(
        fe["errors"],
        json!([{"type": "entity", "message": "kid in jwk.kid must be equal to keys.kid"}])
    );
    assert_eq!(
        get(a, "localhost", "/keys").await.json()["data"]
            .as_array()
            .unwrap()
            .len(),
        4
    );
    g.gw.shutdown().await;
}

/// `GET /status/dns` on both listeners: the resolver's counters by Kong's keys, after a
/// service by hostname (`localhost`, from the hosts file) has been proxied to.
#[tokio::test]
async fn dns_status_counts_the_resolvers_lookups() {
    let g = Gw::start(None).await;
    let r = get(g.status, "localhost", "/status/dns").await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json(),
        json!({"worker": {"id": 0, "count": 1}, "stats": {}})
    );
    let b = Backend::start().await;
    let doc = format!(
        r#"{{"_format_version":"3.0","services":[{{"name":"s","url":"http://localhost:{}","routes":[{{"paths":["/"]}}]}}]}}"#,
        b.addr.port()
    );
    load_config(g.admin, doc).await;
    for _ in 0..3 {
        assert_eq!(get(g.http, "x.test", "/").await.status, 200);
    }
    for port in [g.status, g.admin] {
        let r = get(port, "localhost", "/status/dns").await;
        assert_eq!(r.status, 200);
        let v = r.json();
        let all = &v["stats"]["localhost:all"];
        // One lookup per request: `localhost` is 127.0.0.1 only (no AAAA is asked, as with
        // Kong's default `dns_order`), so no try goes to `::1` and needs another.
        assert_eq!(all["runs"], 3, "{v}");
        assert_eq!(all["miss"], 1, "{v}");
        assert_eq!(all["hit_lru"], 2, "{v}");
        assert_eq!(v["stats"]["localhost:A"]["query_succ"], 1, "{v}");
    }
    // Read-only: other methods are refused on the admin listener.
    let r = admin_post(g.admin, "/status/dns", "application/json", "{}").await;
    assert_eq!(r.status, 405);
    g.gw.shutdown().await;
}

/// Kong's `/cache` routes: nothing is cached on demand here, so a probe misses and purges
/// answer 204; other methods are refused.
#[tokio::test]
async fn cache_routes_answer_as_for_an_empty_cache() {
    let g = Gw::start(None).await;
    let r = get(g.admin, "localhost", "/cache/services:abc:::::").await;
    assert_eq!(
        (r.status.as_u16(), r.json()),
        (404, json!({"message": "Not found"}))
    );
    for path in ["/cache", "/cache/some-key"] {
        let r = H1::connect(g.admin)
            .await
            .send(
                req("DELETE", "localhost", path)
                    .body(Default::default())
                    .unwrap(),
            )
            .await;
        assert_eq!(r.status, 204, "DELETE {path}");
        assert!(r.body.is_empty());
    }
    let r = get(g.admin, "localhost", "/cache").await;
    assert_eq!(
        (r.status.as_u16(), r.json()),
        (405, json!({"message": "Method not allowed"}))
    );
    assert_eq!(
        admin_post(g.admin, "/cache/k", "application/json", "{}")
            .await
            .status,
        405
    );
    // Not on the status listener.
    assert_eq!(get(g.status, "localhost", "/cache/k").await.status, 404);
    assert!(
        get(g.admin, "localhost", "/endpoints").await.json()["data"]
            .as_array()
            .expect("data")
            .contains(&json!("/cache/{key}"))
    );
    g.gw.shutdown().await;
}

/// `GET /timers`: the background jobs of the running configuration (an upstream's active
/// checker and its DNS refresher) with their runs, in Kong's shape; they leave with the
/// configuration that started them.
#[tokio::test]
async fn timers_list_the_background_jobs_and_their_runs() {
    let g = Gw::start(None).await;
    let b = Backend::start().await;
    let doc = format!(
        r#"{{"_format_version":"3.0","upstreams":[{{"name":"timed","healthchecks":{{"active":{{"healthy":{{"interval":0.05}}}}}},
            "targets":[{{"target":"localhost:{}"}}]}}]}}"#,
        b.addr.port()
    );
    load_config(g.admin, doc).await;
    let job = |v: &Value, name: &str| v["stats"]["timers"][name].clone();
    let mut v = Value::Null;
    for _ in 0..100 {
        v = get(g.admin, "localhost", "/timers").await.json();
        if job(&v, "healthcheck:timed")["stats"]["finish"].as_u64() >= Some(2) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(v["worker"], json!({"id": 0, "count": 1}));
    let check = job(&v, "healthcheck:timed");
    assert!(check["stats"]["finish"].as_u64() >= Some(2), "{v}");
    assert!(check["is_running"].is_boolean(), "{v}");
    // timed runs: the figures have left timer-ng's initial ones (min 9999999, max -1)
    let t = &check["stats"]["elapsed_time"];
    let figure = |k: &str| t[k].as_f64().unwrap_or(-1.0);
    let (min, avg, max) = (figure("min"), figure("avg"), figure("max"));
    assert!(0.0 <= min && min <= avg && avg <= max && max < 60.0, "{v}");
    assert!(
        check["meta"]["name"]
            .as_str()
            .is_some_and(|n| n.starts_with("silverback_balancer::checker")),
        "{v}"
    );
    let dns = job(&v, "dns-refresh:timed");
    assert!(dns["stats"]["runs"].as_u64() >= Some(1), "{v}");
    assert_eq!(dns["stats"]["last_err_msg"], "", "localhost resolves: {v}");
    assert!(v["stats"]["sys"]["runs"].as_u64() >= Some(3), "{v}");
    let root = get(g.admin, "localhost", "/").await.json();
    assert!(root["timers"]["running"].is_u64() && root["timers"]["pending"] == 0);

    // A configuration without the upstream stops its jobs.
    load_config(g.admin, r#"{"_format_version":"3.0"}"#).await;
    let mut gone = false;
    for _ in 0..100 {
        let v = get(g.admin, "localhost", "/timers").await.json();
        if job(&v, "healthcheck:timed").is_null() && job(&v, "dns-refresh:timed").is_null() {
            gone = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        gone,
        "the jobs of a replaced configuration are no longer listed"
    );
    g.gw.shutdown().await;
}

/// Kong's generated endpoints look up every entity of a write's path before the DB-less
/// strategy refuses the write (`kong/api/endpoints.lua`, `kong/db/dao/init.lua`): a
/// missing parent, a missing child or a child of another parent is 404 `Not found`; a PATCH
/// of an entity that does not exist is the DAO's 404 where it reads before updating; a key
/// that is no UUID for a kind without endpoint key is an invalid primary key.
#[tokio::test]
async fn writes_look_up_their_path_before_the_refusal() {
    let b = Backend::start().await;
    let g = Gw::start(None).await;
    let cfg = format!(
        r#"_format_version: "3.0"
services:
- name: svc
  url: {url}
  routes:
  - name: r1
    paths: ["/one"]
- name: other
  url: {url}
  routes:
  - name: r3
    paths: ["/three"]
routes:
- name: lone
  paths: ["/lone"]
upstreams:
- name: up
  targets:
  - target: 10.0.0.1:80
- name: up2
"#,
        url = b.url()
    );
    let r = admin_post(g.admin, "/config", "application/x-www-form-urlencoded", cfg).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let not_found = json!({"message": "Not found"});
    let not_allowed = json!({"message": "Method not allowed"});
    let refused = |verb: &str, what: &str, by: &str| {
        json!({"code": 12, "name": "operation unsupported",
               "message": format!("cannot {verb} '{what}' entities{by} when not using a database")})
    };
    let missing = "8a7b1e0c-5a43-4a4c-9c55-2a1f4e2b9d11";
    let targets = |c: &str| format!("/upstreams/{c}");
    let mut cases: Vec<(&str, String, u16, Value)> = vec![
        // Kong's own target endpoint: the target under that upstream for every method, then
        // an update (PUT too) or a removal by primary key
        (
            "PUT",
            targets("up/targets/10.0.0.1:80"),
            405,
            refused("update", "targets", ""),
        ),
        (
            "PATCH",
            targets("up/targets/10.0.0.1:80"),
            405,
            refused("update", "targets", ""),
        ),
        (
            "DELETE",
            targets("up/targets/10.0.0.1:80"),
            405,
            refused("remove", "targets", ""),
        ),
        (
            "PUT",
            targets("up/targets/10.0.0.2:80"),
            404,
            not_found.clone(),
        ),
        (
            "DELETE",
            targets("up2/targets/10.0.0.1:80"),
            404,
            not_found.clone(),
        ),
        (
            "PATCH",
            targets("nope/targets/10.0.0.1:80"),
            404,
            not_found.clone(),
        ),
    ];
    cases.extend(vec![
        // top-level entities: PATCH reads first (routes have entity checks), snis do not
        (
            "PATCH",
            "/routes/nope".into(),
            404,
            json!({"code": 6, "name": "not found",
                   "message": "could not find the entity with '{name=\"nope\"}'",
                   "fields": {"name": "nope"}}),
        ),
        (
            "PATCH",
            format!("/routes/{missing}"),
            404,
            json!({"code": 6, "name": "not found",
                   "message": format!("could not find the entity with primary key '{{id=\"{missing}\"}}'"),
                   "fields": {"id": missing}}),
        ),
        (
            "PATCH",
            "/routes/r1".into(),
            405,
            refused("update", "routes", " by 'name'"),
        ),
        (
            "PATCH",
            "/snis/nope".into(),
            405,
            refused("update", "snis", " by 'name'"),
        ),
        (
            "PUT",
            "/routes/nope".into(),
            405,
            refused("create or update", "routes", " by 'name'"),
        ),
        // a certificate is addressed by an SNI's name (`kong/api/routes/certificates.lua`)
        (
            "DELETE",
            "/certificates/not-a-uuid".into(),
            404,
            json!({"message": "SNI not found"}),
        ),
        (
            "DELETE",
            "/key-sets/not-a-uuid/keys/nope".into(),
            404,
            not_found.clone(),
        ),
        // a kind without an endpoint key, by something that is no UUID
        (
            "DELETE",
            "/ca_certificates/not-a-uuid".into(),
            400,
            json!({"code": 1, "name": "invalid primary key",
                   "message": "invalid primary key: '{id=\"expected a valid UUID\"}'",
                   "fields": {"id": "expected a valid UUID"}}),
        ),
        // one child under its parent
        (
            "DELETE",
            "/services/nope/routes/r1".into(),
            404,
            not_found.clone(),
        ),
        (
            "DELETE",
            "/services/svc/routes/nope".into(),
            404,
            not_found.clone(),
        ),
        (
            "DELETE",
            "/services/svc/routes/r3".into(),
            404,
            not_found.clone(),
        ),
        (
            "PATCH",
            "/services/svc/routes/nope".into(),
            404,
            not_found.clone(),
        ),
        (
            "DELETE",
            "/services/svc/routes/r1".into(),
            405,
            refused("remove", "routes", " by 'name'"),
        ),
        (
            "PATCH",
            "/services/svc/routes/r1".into(),
            405,
            refused("update", "routes", " by 'name'"),
        ),
        // PUT is an upsert: only the parent is looked up
        (
            "PUT",
            "/services/svc/routes/nope".into(),
            405,
            refused("create or update", "routes", " by 'name'"),
        ),
        (
            "PUT",
            "/services/nope/routes/r1".into(),
            404,
            not_found.clone(),
        ),
        (
            "POST",
            "/services/nope/routes/r1".into(),
            405,
            not_allowed.clone(),
        ),
        // a child collection: POST checks the parent
        (
            "POST",
            "/services/nope/routes".into(),
            404,
            not_found.clone(),
        ),
        (
            "DELETE",
            "/services/nope/routes".into(),
            405,
            not_allowed.clone(),
        ),
        // the entity a route references
        (
            "PATCH",
            "/routes/nope/service".into(),
            404,
            not_found.clone(),
        ),
        ("PUT", "/routes/nope/service".into(), 404, not_found.clone()),
        (
            "PATCH",
            "/routes/lone/service".into(),
            404,
            not_found.clone(),
        ),
        (
            "DELETE",
            "/routes/lone/service".into(),
            404,
            not_found.clone(),
        ),
        (
            "DELETE",
            "/routes/r1/service".into(),
            405,
            not_allowed.clone(),
        ),
        (
            "PATCH",
            "/routes/r1/service".into(),
            405,
            refused("update", "services", ""),
        ),
        (
            "PUT",
            "/routes/lone/service".into(),
            405,
            refused("create or update", "services", ""),
        ),
    ]);
    // (the PUTs carry bodies the schema accepts: an invalid one is refused before the
    // DB-less refusal, see `writes_check_the_body_before_the_refusal`)
    let valid_body = |p: &str| match p {
        p if p.ends_with("/service") => r#"{"host":"example.test"}"#,
        p if p.contains("/routes/") => r#"{"paths":["/x"]}"#,
        _ => "{}",
    };
    for (m, p, status, body) in cases {
        let r = if m == "PUT" {
            let ct = "application/json";
            let mut c = H1::connect(g.admin).await;
            let rq = req(m, "localhost", &p).header("content-type", ct);
            c.send(rq.body(Full::new(Bytes::from(valid_body(&p)))).unwrap())
                .await
        } else {
            send(g.admin, m, &p).await
        };
        assert_eq!(r.status, status, "{m} {p}: {}", r.text());
        assert_eq!(r.json(), body, "{m} {p}");
    }
    g.gw.shutdown().await;
}

/// The credential endpoints under a consumer are the plugins' own (`kong/plugins/<name>/
/// api.lua`): key-auth's, basic-auth's and hmac-auth's find the credential, then go on by
/// its id for every method but `PUT` (their refusals name no field), where jwt's goes on by
/// the path's value (`by 'key'`, as the generic nested endpoints and the top-level ones).
/// An ACL is addressed under its consumer by its group too: found, by its id; not found,
/// 404, but a `PUT` creates it (with the path's group).
#[tokio::test]
async fn credential_writes_under_a_consumer_go_by_the_credential_found() {
    let g = Gw::start(None).await;
    let cfg = json!({
        "_format_version": "3.0",
        "consumers": [{"username": "c",
                       "keyauth_credentials": [{"key": "k"}],
                       "basicauth_credentials": [{"username": "u", "password": "p"}],
                       "jwt_secrets": [{"key": "j", "secret": "s"}],
                       "hmacauth_credentials": [{"username": "h", "secret": "s"}],
                       "acls": [{"group": "g"}]},
                      {"username": "d"}],
    });
    let r = admin_post(g.admin, "/config", "application/json", cfg.to_string()).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let refused = |verb: &str, what: &str, by: &str| {
        json!({"code": 12, "name": "operation unsupported",
               "message": format!("cannot {verb} '{what}' entities{by} when not using a database")})
    };
    let not_found = json!({"message": "Not found"});
    let cases = [
        // found under the consumer, then by its id
        (
            "DELETE",
            "/consumers/c/key-auth/k",
            refused("remove", "keyauth_credentials", ""),
        ),
        (
            "PATCH",
            "/consumers/c/key-auth/k",
            refused("update", "keyauth_credentials", ""),
        ),
        (
            "DELETE",
            "/consumers/c/basic-auth/u",
            refused("remove", "basicauth_credentials", ""),
        ),
        (
            "PATCH",
            "/consumers/c/basic-auth/u",
            refused("update", "basicauth_credentials", ""),
        ),
        (
            "DELETE",
            "/consumers/c/hmac-auth/h",
            refused("remove", "hmacauth_credentials", ""),
        ),
        (
            "PATCH",
            "/consumers/c/hmac-auth/h",
            refused("update", "hmacauth_credentials", ""),
        ),
        (
            "DELETE",
            "/consumers/c/acls/g",
            refused("remove", "acls", ""),
        ),
        (
            "PATCH",
            "/consumers/c/acls/g",
            refused("update", "acls", ""),
        ),
        // jwt's endpoint, the top-level ones, and a PUT go by the key
        (
            "DELETE",
            "/consumers/c/jwt/j",
            refused("remove", "jwt_secrets", " by 'key'"),
        ),
        (
            "PATCH",
            "/consumers/c/jwt/j",
            refused("update", "jwt_secrets", " by 'key'"),
        ),
        (
            "DELETE",
            "/key-auths/k",
            refused("remove", "keyauth_credentials", " by 'key'"),
        ),
        (
            "PATCH",
            "/basic-auths/u",
            refused("update", "basicauth_credentials", " by 'username'"),
        ),
        (
            "PUT",
            "/consumers/c/key-auth/k",
            refused("create or update", "keyauth_credentials", " by 'key'"),
        ),
        (
            "PUT",
            "/consumers/c/acls/new",
            refused("create or update", "acls", ""),
        ),
        // not under this consumer, or nowhere
        ("DELETE", "/consumers/d/key-auth/k", not_found.clone()),
        ("PATCH", "/consumers/d/acls/g", not_found.clone()),
        ("DELETE", "/consumers/c/acls/nope", not_found.clone()),
    ];
    for (m, p, want) in cases {
        let r = admin_send(g.admin, m, p, "application/json", "{}").await;
        let status = if want == not_found { 404 } else { 405 };
        assert_eq!(r.status, status, "{m} {p}: {}", r.text());
        assert_eq!(r.json(), want, "{m} {p}");
    }
    // a PUT of an ACL checks the group the path gives it, unless the body gives one
    let r = admin_send(
        g.admin,
        "PUT",
        "/consumers/c/acls/g2",
        "application/json",
        r#"{"group": null}"#,
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(
        r.json()["fields"],
        json!({"group": "required field missing"})
    );
    // and the read of one by its group
    let r = get(g.admin, "localhost", "/consumers/c/acls/g").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["group"], "g");
    let r = get(g.admin, "localhost", "/consumers/d/acls/g").await;
    assert_eq!(r.status, 404, "{}", r.text());
    g.gw.shutdown().await;
}

/// DB-less writes check what Kong's DAO checks before the `off` strategy refuses them
/// (`kong/db/dao/init.lua`: shorthands, the entity read first for an update, references
/// given by a unique field, the schema, the `ttl` option): an invalid body is Kong's 400
/// (a schema violation, code 2, with `fields`), a valid one the DB-less 405. A nested
/// collection gives the child its parent; an update is checked merged into the entity.
#[tokio::test]
async fn writes_check_the_body_before_the_refusal() {
    use silverback_config::schema::{Field, Record};
    use silverback_config::{PluginRegistry, PluginSchema};
    let mut plugins = PluginRegistry::new();
    plugins.register(PluginSchema::http(
        "rate-limiting",
        910,
        Record::new(vec![
            Field::integer("minute", 0, 1_000_000),
            Field::boolean("fault_tolerant").default(true),
        ]),
    ));
    let settings = Settings {
        plugins: std::sync::Arc::new(plugins),
        ..Settings::loopback()
    };
    let g = Gw::start_with(settings, None).await;
    let cfg = r#"_format_version: "3.0"
services:
- name: svc
  url: http://backend.test:8080/base
  routes:
  - name: r1
    paths: ["/one"]
- name: other
  host: other.test
consumers:
- username: c
plugins:
- name: rate-limiting
  id: 5c4b4f3e-9c1d-4d8e-8a55-3b8f2c1d0e01
  config:
    minute: 5
upstreams:
- name: up
  targets:
  - target: 10.0.0.1:80
"#;
    let r = admin_post(g.admin, "/config", "application/x-www-form-urlencoded", cfg).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let json_ct = "application/json";
    let form = "application/x-www-form-urlencoded";
    let refused = |verb: &str, what: &str, by: &str| {
        json!({"code": 12, "name": "operation unsupported",
               "message": format!("cannot {verb} '{what}' entities{by} when not using a database")})
    };
    let violation = |message: &str, fields: Value| json!({"code": 2, "name": "schema violation", "message": message, "fields": fields});
    let missing = "8a7b1e0c-5a43-4a4c-9c55-2a1f4e2b9d11";
    let by_id = format!(r#"{{"paths": ["/x"], "service": {{"id": "{missing}"}}}}"#);
    let cases: Vec<(&str, String, &str, &str, u16, Value)> = vec![
        // a new entity: the schema, then the refusal
        (
            "POST",
            "/services".into(),
            json_ct,
            r#"{"port": 70000}"#,
            400,
            violation(
                "2 schema violations (host: required field missing; port: value should be between 0 and 65535)",
                json!({"host": "required field missing", "port": "value should be between 0 and 65535"}),
            ),
        ),
        (
            "POST",
            "/services".into(),
            json_ct,
            r#"{"url": "http://a.test/x", "name": "n"}"#,
            405,
            refused("create", "services", ""),
        ),
        // a shorthand's error alone, before the rest
        (
            "POST",
            "/services".into(),
            json_ct,
            r#"{"url": "nope", "port": 70000}"#,
            400,
            violation(
                "schema violation (url: invalid url: nope)",
                json!({"url": "invalid url: nope"}),
            ),
        ),
        // a form's values typed by the schema (an empty one is null)
        (
            "POST",
            "/services".into(),
            form,
            "host=a.test&port=8080&enabled=false&path=",
            405,
            refused("create", "services", ""),
        ),
        (
            "POST",
            "/services".into(),
            form,
            "host=a.test&port=x",
            400,
            violation(
                "schema violation (port: expected an integer)",
                json!({"port": "expected an integer"}),
            ),
        ),
        // the parent of a nested collection is the child's reference, whatever the body says
        (
            "POST",
            "/services/svc/routes".into(),
            json_ct,
            r#"{"paths": ["/x"], "service": {"name": "nope"}}"#,
            405,
            refused("create", "routes", ""),
        ),
        (
            "POST",
            "/services/svc/routes".into(),
            json_ct,
            r#"{"protocols": ["tcp"], "paths": ["/x"]}"#,
            400,
            violation(
                "2 schema violations (must set one of 'sources', 'destinations', 'snis' when 'protocols' is 'tcp', 'tls' or 'udp'; paths: cannot set 'paths' when 'protocols' is 'tcp', 'tls', 'tls_passthrough' or 'udp')",
                json!({"@entity": ["must set one of 'sources', 'destinations', 'snis' when 'protocols' is 'tcp', 'tls' or 'udp'"],
                       "paths": "cannot set 'paths' when 'protocols' is 'tcp', 'tls', 'tls_passthrough' or 'udp'"}),
            ),
        ),
        // references: by a unique field, looked up (an unknown one is Kong's code 13); by
        // a primary key, not looked up; as anything else, Kong's errors
        (
            "POST",
            "/routes".into(),
            json_ct,
            r#"{"paths": ["/x"], "service": {"name": "nope"}}"#,
            400,
            json!({"code": 13, "name": "foreign keys unresolved",
                   "message": "foreign key unresolved (service.name: the foreign key cannot be resolved with '{name=\"nope\"}' for an existing 'services' entity)",
                   "fields": {"service": {"name": "the foreign key cannot be resolved with '{name=\"nope\"}' for an existing 'services' entity"}}}),
        ),
        (
            "POST",
            "/routes".into(),
            json_ct,
            r#"{"paths": ["/x"], "service": {"name": "svc"}}"#,
            405,
            refused("create", "routes", ""),
        ),
        (
            "POST",
            "/routes".into(),
            json_ct,
            &by_id,
            405,
            refused("create", "routes", ""),
        ),
        (
            "POST",
            "/routes".into(),
            json_ct,
            r#"{"paths": ["/x"], "service": "svc"}"#,
            400,
            violation(
                "schema violation (service.id: missing primary key)",
                json!({"service": {"id": "missing primary key"}}),
            ),
        ),
        (
            "POST",
            "/routes".into(),
            json_ct,
            r#"{"paths": ["/x"], "service": {"id": "x"}, "_comment": "hi"}"#,
            400,
            violation(
                "2 schema violations (_comment: unknown field; service.id: expected a valid UUID)",
                json!({"_comment": "unknown field", "service": {"id": "expected a valid UUID"}}),
            ),
        ),
        // an upsert: by the path's name, checked in full
        (
            "PUT",
            "/services/new".into(),
            json_ct,
            r#"{"host": "a.test", "name": "ignored"}"#,
            405,
            refused("create or update", "services", " by 'name'"),
        ),
        (
            "PUT",
            "/services/new".into(),
            json_ct,
            r#"{"retries": 1}"#,
            400,
            violation(
                "schema violation (host: required field missing)",
                json!({"host": "required field missing"}),
            ),
        ),
        // a required field given as null is missing, default or not
        (
            "POST",
            "/services".into(),
            json_ct,
            r#"{"host": "a.test", "port": null, "retries": null}"#,
            400,
            violation(
                "schema violation (port: required field missing)",
                json!({"port": "required field missing"}),
            ),
        ),
        (
            "PUT",
            "/services/bad%20name".into(),
            json_ct,
            r#"{"host": "a.test"}"#,
            400,
            json!({"code": 10, "name": "invalid unique name",
                   "message": "invalid value 'bad name': it must only contain alphanumeric and '., -, _, ~' characters"}),
        ),
        // an update: merged into the entity read first, then checked
        (
            "PATCH",
            "/services/svc".into(),
            json_ct,
            r#"{"retries": 1}"#,
            405,
            refused("update", "services", " by 'name'"),
        ),
        (
            "PATCH",
            "/services/svc".into(),
            json_ct,
            r#"{"protocol": "tcp"}"#,
            400,
            violation(
                "2 schema violations (failed conditional validation given value of field 'protocol'; path: value must be null)",
                json!({"@entity": ["failed conditional validation given value of field 'protocol'"],
                       "path": "value must be null"}),
            ),
        ),
        (
            "PATCH",
            "/services/svc".into(),
            json_ct,
            r#"{"port": null}"#,
            400,
            violation(
                "schema violation (port: required field missing)",
                json!({"port": "required field missing"}),
            ),
        ),
        (
            "PATCH",
            "/consumers/c".into(),
            json_ct,
            r#"{"username": null}"#,
            400,
            violation(
                "schema violation (when updating, at least one of these fields must be non-empty: 'custom_id', 'username')",
                json!({"@entity": ["when updating, at least one of these fields must be non-empty: 'custom_id', 'username'"]}),
            ),
        ),
        // not there: the DAO's 404 before the schema, after the shorthands
        (
            "PATCH",
            "/services/nope".into(),
            json_ct,
            r#"{"port": 70000}"#,
            404,
            json!({"code": 6, "name": "not found",
                   "message": "could not find the entity with '{name=\"nope\"}'",
                   "fields": {"name": "nope"}}),
        ),
        (
            "PATCH",
            "/services/nope".into(),
            json_ct,
            r#"{"url": "nope"}"#,
            400,
            violation(
                "schema violation (url: invalid url: nope)",
                json!({"url": "invalid url: nope"}),
            ),
        ),
        // a kind Kong does not read first: the update alone
        (
            "PATCH",
            "/snis/nope".into(),
            json_ct,
            r#"{"name": "a..b"}"#,
            400,
            violation(
                "schema violation (name: invalid value: a..b)",
                json!({"name": "invalid value: a..b"}),
            ),
        ),
        (
            "PATCH",
            "/snis/nope".into(),
            json_ct,
            "{}",
            405,
            refused("update", "snis", " by 'name'"),
        ),
        // nested: the child under its parent, then the same checks
        (
            "PATCH",
            "/services/svc/routes/r1".into(),
            json_ct,
            r#"{"paths": ["one"]}"#,
            400,
            violation(
                "schema violation (paths.1: should start with: / (fixed path) or ~/ (regex path))",
                json!({"paths": ["should start with: / (fixed path) or ~/ (regex path)"]}),
            ),
        ),
        (
            "PATCH",
            "/services/svc/routes/r1".into(),
            json_ct,
            r#"{"service": {"name": "other"}}"#,
            405,
            refused("update", "routes", " by 'name'"),
        ),
        (
            "PUT",
            "/routes/r1/service".into(),
            json_ct,
            r#"{"host": 5}"#,
            400,
            violation(
                "schema violation (host: expected a string)",
                json!({"host": "expected a string"}),
            ),
        ),
        // a target under its upstream: updated, a PUT too
        (
            "PUT",
            "/upstreams/up/targets/10.0.0.1:80".into(),
            json_ct,
            r#"{"weight": 70000}"#,
            400,
            violation(
                "schema violation (weight: value should be between 0 and 65535)",
                json!({"weight": "value should be between 0 and 65535"}),
            ),
        ),
        (
            "POST",
            "/upstreams/up/targets".into(),
            json_ct,
            r#"{"target": "10.0.0.2:80"}"#,
            405,
            refused("create", "targets", ""),
        ),
        // the `ttl` option of key-auth credentials, after the schema
        (
            "POST",
            "/consumers/c/key-auth".into(),
            json_ct,
            r#"{"ttl": -1}"#,
            400,
            json!({"code": 11, "name": "invalid options",
                   "message": "invalid option (ttl: must be an integer between 0 and 100000000)",
                   "options": {"ttl": "must be an integer between 0 and 100000000"}}),
        ),
        (
            "POST",
            "/consumers/c/key-auth".into(),
            json_ct,
            r#"{"ttl": 10, "key": "k"}"#,
            405,
            refused("create", "keyauth_credentials", ""),
        ),
        // a plugin's update: its config merged, checked by its plugin's schema
        (
            "PATCH",
            "/plugins/5c4b4f3e-9c1d-4d8e-8a55-3b8f2c1d0e01".into(),
            json_ct,
            r#"{"config": {"minute": -1}}"#,
            400,
            violation(
                "schema violation (config.minute: value should be between 0 and 1000000)",
                json!({"config": {"minute": "value should be between 0 and 1000000"}}),
            ),
        ),
        (
            "PATCH",
            "/plugins/5c4b4f3e-9c1d-4d8e-8a55-3b8f2c1d0e01".into(),
            form,
            "config.minute=7",
            405,
            refused("update", "plugins", ""),
        ),
        // one that does not exist: Kong's plugin endpoint reads it first for its name
        (
            "PATCH",
            format!("/plugins/{missing}"),
            json_ct,
            "{}",
            404,
            json!({"message": "Not found"}),
        ),
        (
            "PATCH",
            format!("/plugins/{missing}"),
            json_ct,
            r#"{"name": "rate-limiting", "route": null, "service": null, "consumer": null}"#,
            404,
            json!({"code": 6, "name": "not found",
                   "message": format!("could not find the entity with primary key '{{id=\"{missing}\"}}'"),
                   "fields": {"id": missing}}),
        ),
        // certificates by an SNI's name: a PUT creates it, and the name joins its SNIs
        (
            "PUT",
            "/certificates/new.test".into(),
            json_ct,
            r#"{"snis": ["a..b"]}"#,
            400,
            violation(
                "3 schema violations (cert: required field missing; key: required field missing; snis.1: invalid value: a..b)",
                json!({"cert": "required field missing", "key": "required field missing",
                       "snis": ["invalid value: a..b"]}),
            ),
        ),
        (
            "PATCH",
            "/certificates/new.test".into(),
            json_ct,
            "{}",
            404,
            json!({"message": "SNI not found"}),
        ),
        // the body's type, before anything (Kong's `before_filter`), and JSON that does not
        // parse, for a method the endpoint has
        (
            "POST",
            "/services".into(),
            "text/plain",
            "host=x",
            415,
            Value::Null,
        ),
        (
            "POST",
            "/services/svc".into(),
            "text/plain",
            "host=x",
            415,
            Value::Null,
        ),
        (
            "POST",
            "/services".into(),
            json_ct,
            "",
            400,
            json!({"message": "Cannot parse JSON body"}),
        ),
        (
            "PATCH",
            "/services/nope".into(),
            json_ct,
            "{",
            400,
            json!({"message": "Cannot parse JSON body"}),
        ),
        (
            "POST",
            "/services/svc".into(),
            json_ct,
            "{",
            405,
            json!({"message": "Method not allowed"}),
        ),
        // a JSON array is a table to Kong too: `[]` is `{}`, and each element a parameter
        // at its position, a number to Lua, which no schema has; alone, the errors are a Lua
        // sequence (an array in the answer); beside a named one, the DAO's
        // `schema_violation` (`errors.lua`) fails to sort them (`table.sort` comparing a
        // number with a string, a Lua error): 500 `An unexpected error occurred`
        (
            "POST",
            "/services".into(),
            json_ct,
            "[]",
            400,
            violation(
                "schema violation (host: required field missing)",
                json!({"host": "required field missing"}),
            ),
        ),
        (
            "PATCH",
            "/services/svc".into(),
            json_ct,
            "[]",
            405,
            refused("update", "services", " by 'name'"),
        ),
        (
            "PATCH",
            "/services/svc".into(),
            json_ct,
            r#"["x", {"host": "y"}]"#,
            400,
            violation(
                "2 schema violations (1: unknown field; 2: unknown field)",
                json!(["unknown field", "unknown field"]),
            ),
        ),
        (
            "POST",
            "/services".into(),
            json_ct,
            r#"[{"host": "y"}]"#,
            500,
            json!({"message": "An unexpected error occurred"}),
        ),
        // an object's keys "1", "2" stay strings to Kong: its errors are an object
        (
            "PATCH",
            "/services/svc".into(),
            json_ct,
            r#"{"1": "x", "2": "y"}"#,
            400,
            violation(
                "2 schema violations (1: unknown field; 2: unknown field)",
                json!({"1": "unknown field", "2": "unknown field"}),
            ),
        ),
        // a scalar decodes, and lapis's `json_params` adds it to the parameters with
        // `pairs`, a Lua error before Kong's JSON check: 500, whatever the method (a
        // DELETE's JSON is read too, though not checked: one that does not parse is none)
        (
            "POST",
            "/services".into(),
            json_ct,
            "1",
            500,
            json!({"message": "An unexpected error occurred"}),
        ),
        (
            "DELETE",
            "/services/svc".into(),
            json_ct,
            "\"x\"",
            500,
            json!({"message": "An unexpected error occurred"}),
        ),
        (
            "DELETE",
            "/services/svc".into(),
            json_ct,
            "{",
            405,
            refused("remove", "services", " by 'name'"),
        ),
        // no body at all: nothing given
        (
            "DELETE",
            "/services/svc".into(),
            "",
            "",
            405,
            refused("remove", "services", " by 'name'"),
        ),
    ];
    let mut wrong = vec![];
    for (m, p, ct, body, status, want) in cases {
        let r = admin_send(g.admin, m, &p, ct, body.to_string()).await;
        let got = if r.body.is_empty() {
            Value::Null
        } else {
            r.json()
        };
        if (r.status.as_u16(), &got) != (status, &want) {
            wrong.push(format!(
                "{m} {p} {body}: {} {got}\n  want {status} {want}",
                r.status
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    // nothing changed
    let svc = get(g.admin, "localhost", "/services/svc").await.json();
    assert_eq!(svc["port"], 8080);
    assert_eq!(get(g.admin, "localhost", "/services/new").await.status, 404);
    g.gw.shutdown().await;
}

/// Every kind's entities, as the admin API shows them, pass the checks a write gets before
/// the refusal: an update that changes nothing (merged into the entity, for the kinds Kong
/// reads first) and an upsert of the entity as shown are refused as DB-less Kong refuses
/// them, not as invalid.
#[tokio::test]
async fn unchanged_entities_of_every_kind_pass_the_checks() {
    use silverback_config::schema::{Field, Record};
    use silverback_config::{PluginRegistry, PluginSchema};
    let mut plugins = PluginRegistry::new();
    plugins.register(PluginSchema::http(
        "rate-limiting",
        910,
        Record::new(vec![
            Field::integer("minute", 0, 1_000_000),
            Field::boolean("fault_tolerant").default(true),
        ]),
    ));
    let settings = Settings {
        plugins: std::sync::Arc::new(plugins),
        ..Settings::loopback()
    };
    let g = Gw::start_with(settings, None).await;
    let (cert, key) = cert(&["a.test"]);
    let mut jwk: Value = serde_json::from_str(&pki("rsa.jwk")).expect("JSON fixture");
    jwk["kid"] = json!("k1");
    let cfg = json!({
        "_format_version": "3.0",
        "services": [{"name": "svc", "url": "https://backend.test:8443/base", "tags": ["t"],
                      "routes": [{"name": "r", "paths": ["/r"], "hosts": ["a.test"]}],
                      "plugins": [{"name": "rate-limiting", "config": {"minute": 5}}]}],
        "consumers": [{"username": "c", "custom_id": "cid",
                       "keyauth_credentials": [{"key": "k"}],
                       "basicauth_credentials": [{"username": "u", "password": "p"}],
                       "jwt_secrets": [{"key": "j", "secret": "s"}],
                       "hmacauth_credentials": [{"username": "h", "secret": "s"}],
                       "acls": [{"group": "g"}]}],
        "upstreams": [{"name": "up", "algorithm": "consistent-hashing", "hash_on": "ip",
                       "healthchecks": {"active": {"healthy": {"interval": 5}}},
                       "targets": [{"target": "10.0.0.1:80", "weight": 5}]}],
        "certificates": [{"cert": cert, "key": key, "snis": [{"name": "a.test"}]}],
        "ca_certificates": [{"cert": pki("ca.crt")}],
        "vaults": [{"name": "env", "prefix": "my-env", "config": {"prefix": "SECRET_"}}],
        "key_sets": [{"name": "ks", "keys": [{"name": "k1", "kid": "k1", "jwk": jwk.to_string()}]}],
    });
    let r = admin_post(g.admin, "/config", "application/json", cfg.to_string()).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let kinds = [
        "services",
        "routes",
        "plugins",
        "consumers",
        "keyauth_credentials",
        "basicauth_credentials",
        "jwt_secrets",
        "hmacauth_credentials",
        "acls",
        "upstreams",
        "certificates",
        "snis",
        "ca_certificates",
        "vaults",
        "key_sets",
        "keys",
    ];
    let mut wrong = vec![];
    for kind in kinds {
        let list = get(g.admin, "localhost", &format!("/{kind}")).await.json();
        let items = list["data"].as_array().cloned().unwrap_or_default();
        assert_eq!(items.len(), 1, "{kind}: {list}");
        let shown = &items[0];
        let id = shown["id"].as_str().expect("an id");
        let path = format!("/{kind}/{id}");
        let cases = [
            ("PATCH", "{}".to_string(), "update"),
            ("PUT", shown.to_string(), "create or update"),
        ];
        for (m, body, verb) in cases {
            let r = admin_send(g.admin, m, &path, "application/json", body).await;
            let want = format!("cannot {verb} '{kind}' entities when not using a database");
            if r.status != 405 || r.json()["message"] != want.as_str() {
                wrong.push(format!("{m} {path}: {} {}", r.status, r.text()));
            }
        }
    }
    // a target, under its upstream
    let t = get(g.admin, "localhost", "/upstreams/up/targets")
        .await
        .json();
    let r = admin_send(
        g.admin,
        "PUT",
        "/upstreams/up/targets/10.0.0.1:80",
        "application/json",
        t["data"][0].to_string(),
    )
    .await;
    if r.status != 405 {
        wrong.push(format!("PUT a target: {} {}", r.status, r.text()));
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    g.gw.shutdown().await;
}

/// `GET /status?unit=&scale=`: the memory figures in Kong's units (`kong/api/routes/health.lua`,
/// `kong.node.get_memory_stats`), on both listeners; a bad unit or a negative scale is 400
/// with Kong's message.
#[tokio::test]
async fn status_memory_units_and_scale() {
    let g = Gw::start(None).await;
    for port in [g.admin, g.status] {
        let gc = |v: &Value| v["memory"]["workers_lua_vms"][0]["http_allocated_gc"].clone();
        let r = get(port, "localhost", "/status").await;
        assert_eq!(r.status, 200);
        let v = r.json();
        assert!(v["memory"]["lua_shared_dicts"].is_object(), "{v}");
        assert!(v["memory"]["workers_lua_vms"][0]["pid"].is_number(), "{v}");
        assert!(v.get("database").is_none(), "{v}");
        let mib = gc(&v);
        let mib = mib.as_str().unwrap();
        let (n, suffix) = mib.split_once(' ').unwrap();
        assert_eq!(suffix, "MiB");
        assert_eq!(n.split_once('.').unwrap().1.len(), 2, "{mib}");

        let v = get(port, "localhost", "/status?unit=k&scale=1")
            .await
            .json();
        let kib = gc(&v);
        let (n, suffix) = kib.as_str().unwrap().split_once(' ').unwrap();
        assert_eq!(suffix, "KiB");
        assert_eq!(n.split_once('.').unwrap().1.len(), 1, "{kib}");
        assert!(n.parse::<f64>().unwrap() > 0.0);

        let v = get(port, "localhost", "/status?unit=B").await.json();
        assert!(gc(&v).as_u64().unwrap() > 0, "{v}");

        for (q, why) in [
            (
                "unit=t",
                "invalid unit 't' (expected 'k/K', 'm/M', or 'g/G')",
            ),
            ("unit=k&scale=-2", "scale must be equal or greater than 0"),
        ] {
            let r = get(port, "localhost", &format!("/status?{q}")).await;
            assert_eq!(r.status, 400, "{q}");
            assert_eq!(r.json(), json!({ "message": why }), "{q}");
        }
    }
    g.gw.shutdown().await;
}

/// `POST /config?flatten_errors=1`: each entry names its entity as Kong's
/// `declarative_config_flattened` does: `entity_name` only from a `name`, `entity_id` only
/// from an `id` given as a UUID, `entity_tags` only when there are tags; a hoisted child
/// names its parent only by an id the parent was given.
#[tokio::test]
async fn flattened_errors_name_entities_as_kong_does() {
    let g = Gw::start(None).await;
    let bad = r#"{"_format_version":"3.0",
      "services":[{"name":"s","host":"a.com","routes":[{"name":"r","paths":["bad"]}]}],
      "consumers":[{"username":"alice","nope":1}]}"#;
    let r = admin_post(g.admin, "/config?flatten_errors=1", "application/json", bad).await;
    assert_eq!(r.status, 400, "{}", r.text());
    let body = r.json();
    assert_eq!(body["fields"], json!({}));
    let entries = body["flattened_errors"].as_array().unwrap();
    let of = |t: &str| entries.iter().find(|e| e["entity_type"] == t).unwrap();
    let route = of("route");
    assert_eq!(route["entity_name"], "r");
    assert_eq!(route["entity"], json!({"name": "r", "paths": ["bad"]}));
    for key in ["entity_id", "entity_tags"] {
        assert!(route.get(key).is_none(), "{key}: {route}");
    }
    let consumer = of("consumer");
    assert_eq!(
        consumer,
        &json!({"entity_type": "consumer", "entity": {"username": "alice", "nope": 1},
                "errors": [{"type": "field", "field": "nope", "message": "unknown field"}]})
    );
    g.gw.shutdown().await;
}

/// A client that goes away before its answer (here on hyper's path, which drops the
/// request then) is counted as nginx logs it: 499, from the `service` once past Kong's
/// access phase.
#[tokio::test]
async fn a_client_gone_before_its_answer_counts_499() {
    use tokio::io::AsyncWriteExt;
    let b = Backend::start().await;
    let g = Gw::start(None).await;
    load_config(g.admin, doc(&b, "r2")).await;
    let mut s = tokio::net::TcpStream::connect(g.http).await.unwrap();
    // (a chunked body: not the fast path)
    s.write_all(
        b"POST /one/delay/800 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    )
    .await
    .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    drop(s);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let t = get(g.status, "localhost", "/metrics").await.text();
    assert!(
        t.contains(r#"kong_http_requests_total{service="svc",route="r1",code="499",source="service",workspace="default",consumer=""} 1"#),
        "{t}"
    );
    assert!(
        t.contains(
            r#"kong_request_latency_ms_count{service="svc",route="r1",workspace="default"} 1"#
        ),
        "{t}"
    );
    g.gw.shutdown().await;
}

/// Latencies as Kong 3.7+'s log serializer gives them to its exporter: a body streamed for
/// about 200 ms counts in `request` (nginx's `request_time`, to the answer's end), not in
/// `kong` (Kong's proxy latency, to the end of the balancer phase; the streaming is
/// `latencies.receive`) nor in `upstream` (Kong's waiting time, to the upstream's answer
/// head). An upstream that times out is waited for in `upstream` (Kong's error page after
/// the access phase still sets the waiting time), not in `kong`.
#[tokio::test]
async fn latencies_are_kongs_proxy_and_waiting_times() {
    let b = Backend::start().await;
    let g = Gw::start(None).await;
    let d = format!(
        "_format_version: \"3.0\"\nservices:\n- name: svc\n  url: {url}\n  routes:\n  - name: r1\n    paths: [/one]\n- name: t\n  url: {url}\n  read_timeout: 100\n  retries: 0\n  routes:\n  - name: rt\n    paths: [/t]\n",
        url = b.url()
    );
    let r = admin_post(g.admin, "/config", "application/x-www-form-urlencoded", d).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let r = get(g.http, "x", "/one/slow/10").await;
    assert_eq!(r.status, 200);
    let r = get(g.http, "x", "/t/delay/400").await;
    assert_eq!(r.status, 504);
    let t = get(g.status, "localhost", "/metrics").await.text();
    let sum = |name: &str, svc: &str, route: &str| -> u64 {
        t.lines()
            .find_map(|l| {
                l.strip_prefix(&format!(
                    r#"{name}_sum{{service="{svc}",route="{route}",workspace="default"}} "#
                ))
            })
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no {name} of {route} in {t}"))
    };
    assert!(sum("kong_request_latency_ms", "svc", "r1") >= 150, "{t}");
    assert!(sum("kong_kong_latency_ms", "svc", "r1") < 150, "{t}");
    assert!(sum("kong_upstream_latency_ms", "svc", "r1") < 150, "{t}");
    assert!(sum("kong_upstream_latency_ms", "t", "rt") >= 90, "{t}");
    assert!(sum("kong_kong_latency_ms", "t", "rt") < 90, "{t}");
    assert!(sum("kong_request_latency_ms", "t", "rt") >= 90, "{t}");
    g.gw.shutdown().await;
}

/// Kong's `before_filter` runs ahead of every handler of the admin and status listeners: a
/// `POST`, `PUT` or `PATCH` with a body of a type the admin API does not read (or a body
/// without a type) is a 415 with no body, before the 404 of an unknown path, the 405 of a
/// method an endpoint lacks, and `POST /config` itself (YAML goes as a form or a raw form
/// body, not as `text/yaml`); the configuration is left as it was.
#[tokio::test]
async fn bodies_the_admin_api_cannot_read_are_415_everywhere() {
    let cfg = "_format_version: \"3.0\"\nservices:\n- name: s\n  url: http://127.0.0.1:9\n";
    let g = Gw::start(Some(cfg)).await;
    let hash = g.gw.config_hash();
    let yaml = "_format_version: \"3.0\"\n";
    for (addr, method, path, ct, body) in [
        (g.admin, "POST", "/config", "text/yaml", yaml),
        (g.admin, "POST", "/config", "", yaml),
        (g.admin, "POST", "/nope", "text/plain", "x"),
        (g.admin, "PUT", "/", "text/plain", "x"),
        (g.admin, "PATCH", "/services/s", "text/plain", "x"),
        (g.status, "PUT", "/status", "text/plain", "x"),
        (g.status, "POST", "/nope", "text/plain", "x"),
    ] {
        let r = admin_send(addr, method, path, ct, body.to_string()).await;
        assert_eq!(r.status, 415, "{method} {path} {ct:?}: {}", r.text());
        assert!(r.body.is_empty(), "{method} {path}: {}", r.text());
    }
    assert_eq!(g.gw.config_hash(), hash);
    // the readable types and an empty body pass on to the handlers
    for (method, path, ct, body, status) in [
        ("POST", "/nope", "", "", 404),
        ("PUT", "/", "application/json", "{}", 405),
        (
            "POST",
            "/config",
            "application/x-www-form-urlencoded",
            yaml,
            201,
        ),
    ] {
        let r = admin_send(g.admin, method, path, ct, body.to_string()).await;
        assert_eq!(r.status, status, "{method} {path} {ct:?}: {}", r.text());
    }
    g.gw.shutdown().await;
}

/// A path key that matches nothing is Kong's 400 when Kong cannot take it as a key (its
/// `query_entity` validates it first): a name that fails the endpoint key's validation is
/// `invalid unique <field>` (code 10), a kind addressed by id alone takes UUIDs only
/// (`invalid primary key`, code 1); else 404. On nested paths too.
#[tokio::test]
async fn keys_kong_cannot_take_are_400_on_reads() {
    let cfg = "_format_version: \"3.0\"\nupstreams:\n- name: u\nservices:\n- name: s\n  url: http://127.0.0.1:9\n  routes:\n  - name: r\n    paths: [\"/\"]\n";
    let g = Gw::start(Some(cfg)).await;
    for (path, status, code) in [
        // (a target under its upstream is looked up by its text, unchecked)
        ("/upstreams/u/targets/bad%20target", 404, None),
        ("/services/bad%20name", 400, Some(10)),
        ("/services/bad%20name/routes", 400, Some(10)),
        ("/services/s/routes/bad%20name", 400, Some(10)),
        ("/routes/bad%20name/service", 400, Some(10)),
        ("/ca_certificates/not-a-uuid", 400, Some(1)),
        ("/services/missing", 404, None),
        ("/services/s/routes/missing", 404, None),
        ("/services/00000000-0000-4000-8000-000000000000", 404, None),
        ("/services/s", 200, None),
    ] {
        let r = get(g.admin, "localhost", path).await;
        assert_eq!(r.status, status, "{path}: {}", r.text());
        if let Some(code) = code {
            assert_eq!(r.json()["code"], code, "{path}: {}", r.text());
        }
    }
    let r = get(g.admin, "localhost", "/services/bad%20name").await;
    assert_eq!(r.json()["name"], "invalid unique name");
    g.gw.shutdown().await;
}

/// A certificate is also read by the name of one of its SNIs, as Kong's certificates
/// routes resolve it first: 404 `SNI not found` when no SNI has that name, 400 when Kong
/// cannot take it as an SNI name.
#[tokio::test]
async fn certificates_are_read_by_the_name_of_an_sni() {
    let (c, k) = cert(&["example.test"]);
    let indent = |p: &str| p.lines().map(|l| format!("    {l}\n")).collect::<String>();
    let cfg = format!(
        "_format_version: \"3.0\"\ncertificates:\n- id: 8e0a2a3a-5b7f-4a57-9a43-2f0d9a0c0042\n  cert: |\n{}  key: |\n{}  snis:\n  - name: example.test\n  - name: a.example.test\n- id: 8e0a2a3a-5b7f-4a57-9a43-2f0d9a0c0043\n  cert: |\n{}  key: |\n{}\nservices:\n- name: s\n  url: https://127.0.0.1:1\n  client_certificate: 8e0a2a3a-5b7f-4a57-9a43-2f0d9a0c0043\n",
        indent(&c),
        indent(&k),
        indent(&c),
        indent(&k)
    );
    let g = Gw::start(Some(&cfg)).await;
    let r = get(g.admin, "localhost", "/certificates/example.test").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["id"], "8e0a2a3a-5b7f-4a57-9a43-2f0d9a0c0042");
    // Listed or read by itself, a certificate shows its SNIs' names, sorted (Kong's
    // certificates DAO adds them); reached through another entity's reference, it does not.
    assert_eq!(r.json()["snis"], json!(["a.example.test", "example.test"]));
    let by_id = get(
        g.admin,
        "localhost",
        "/certificates/8e0a2a3a-5b7f-4a57-9a43-2f0d9a0c0042",
    )
    .await;
    assert_eq!(by_id.json(), r.json());
    let all = get(g.admin, "localhost", "/certificates").await.json();
    let snis: Vec<&Value> = all["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| &c["snis"])
        .collect();
    assert_eq!(
        snis,
        [&json!(["a.example.test", "example.test"]), &json!([])],
        "{all}"
    );
    let r = get(g.admin, "localhost", "/services/s/client_certificate").await;
    assert_eq!(r.json()["id"], "8e0a2a3a-5b7f-4a57-9a43-2f0d9a0c0043");
    assert!(r.json().get("snis").is_none(), "{}", r.text());
    let r = get(g.admin, "localhost", "/certificates/example.test/snis").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["data"][0]["name"], "example.test");
    let r = get(g.admin, "localhost", "/certificates/other.test").await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json(), serde_json::json!({"message": "SNI not found"}));
    let r = get(g.admin, "localhost", "/certificates/bad%20name").await;
    assert_eq!(r.status, 400, "{}", r.text());
    // (one level deeper Kong's generated route takes an id only)
    let r = get(
        g.admin,
        "localhost",
        "/certificates/example.test/snis/example.test",
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["code"], 1);
    g.gw.shutdown().await;
}

/// A client whose connection ends inside its body (its write side shut, a length not
/// reached) gets no answer: nginx terminates the request (`c->error`), and logs and counts
/// it as a 400, from the `service` once past Kong's access phase (was answered 400). A
/// malformed body is still answered 400.
#[tokio::test]
async fn a_client_gone_inside_its_body_gets_no_answer_and_counts_400() {
    use tokio::io::AsyncWriteExt;
    let b = Backend::start().await;
    let g = Gw::start(None).await;
    load_config(g.admin, doc(&b, "r2")).await;
    let mut s = tokio::net::TcpStream::connect(g.http).await.unwrap();
    s.write_all(b"POST /one/x HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
        .await
        .unwrap();
    s.shutdown().await.unwrap();
    let (out, closed) = read_to_close(&mut s, std::time::Duration::from_secs(5)).await;
    assert!(closed, "closed");
    assert!(out.is_empty(), "{}", String::from_utf8_lossy(&out));
    let mut s = tokio::net::TcpStream::connect(g.http).await.unwrap();
    s.write_all(b"POST /one/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcXX")
        .await
        .unwrap();
    let (out, _) = read_to_close(&mut s, std::time::Duration::from_secs(5)).await;
    let out = String::from_utf8_lossy(&out);
    assert!(out.starts_with("HTTP/1.1 400 "), "{out}");
    // (the unanswered one from the service, as nginx's terminated request; the answered
    // one from Kong's error page)
    let t = get(g.status, "localhost", "/metrics").await.text();
    for source in ["service", "kong"] {
        let line = format!(
            r#"kong_http_requests_total{{service="svc",route="r1",code="400",source="{source}",workspace="default",consumer=""}} 1"#
        );
        assert!(t.contains(&line), "{line}\n{t}");
    }
    g.gw.shutdown().await;
}

/// `OPTIONS` (a CORS preflight) on an admin route is answered as Kong's admin API answers it
/// since Kong 2.6: 204 with the route's methods in `Allow` and
/// `Access-Control-Allow-Methods`; an unknown or disabled route is 404. The status API's
/// routes list `GET` only.
#[tokio::test]
async fn options_lists_a_routes_methods() {
    let g = Gw::start(None).await;
    for (addr, path, methods) in [
        (g.admin, "/services", "GET, OPTIONS, POST"),
        (g.admin, "/services/s", "DELETE, GET, OPTIONS, PATCH, PUT"),
        (g.admin, "/services/s/routes", "GET, OPTIONS, POST"),
        (
            g.admin,
            "/routes/r/service",
            "DELETE, GET, OPTIONS, PATCH, PUT",
        ),
        (g.admin, "/config", "GET, OPTIONS, POST"),
        (g.admin, "/status", "GET, OPTIONS"),
        (g.admin, "/", "GET, OPTIONS"),
        (g.admin, "/upstreams/u/targets/t/healthy", "OPTIONS, PUT"),
        (g.status, "/status", "GET, OPTIONS"),
        (g.status, "/upstreams/u/targets", "GET, OPTIONS"),
    ] {
        let r = admin_send(addr, "OPTIONS", path, "application/json", "").await;
        assert_eq!(r.status, 204, "{path}: {}", r.text());
        assert_eq!(r.header("allow"), Some(methods), "{path}");
        assert_eq!(
            r.header("access-control-allow-methods"),
            Some(methods),
            "{path}"
        );
        assert_eq!(
            r.header("access-control-allow-headers"),
            Some("Content-Type"),
            "{path}"
        );
        assert!(r.body.is_empty(), "{path}");
    }
    for (addr, path) in [
        (g.admin, "/nope"),
        (g.admin, "/targets"),
        (g.status, "/services"),
    ] {
        let r = admin_send(addr, "OPTIONS", path, "application/json", "").await;
        assert_eq!(r.status, 404, "{path}: {}", r.text());
    }
    g.gw.shutdown().await;
}
