//! Load balancing through `silverback-balancer`, end to end with real backends on several
//! loopback addresses: weighted distribution, passive ejection and active recovery, retries
//! on another target, 503 when no target is left, health surviving a configuration swap,
//! the hash cookie, and the admin API and metrics views of health.
#![allow(missing_docs, clippy::unwrap_used)]

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use support::*;

/// Sends `n` requests on one connection; counts answers by backend name (`x-backend`),
/// statuses other than 200 under `"<status>"`.
async fn tally(c: &mut H1, path: &str, n: usize) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for _ in 0..n {
        let r = c.get("x", path).await;
        let k = if r.status == 200 {
            r.header("x-backend").unwrap_or("?").to_string()
        } else {
            r.status.as_u16().to_string()
        };
        *m.entry(k).or_insert(0) += 1;
    }
    m
}

async fn health_of(g: &Gw, upstream: &str) -> serde_json::Value {
    get(
        g.admin,
        "localhost",
        &format!("/upstreams/{upstream}/health"),
    )
    .await
    .json()
}

fn target_state(h: &serde_json::Value, target: &str) -> String {
    h["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["target"] == target)
        .map(|t| t["health"].as_str().unwrap().to_string())
        .unwrap_or_default()
}

#[tokio::test]
async fn weighted_round_robin_distribution() {
    let a = Backend::builder().name("a").ip("127.0.0.2").run().await;
    let b = Backend::builder().name("b").ip("127.0.0.3").run().await;
    let z = Backend::builder().name("zero").ip("127.0.0.4").run().await;
    let cfg = format!(
        r#"
_format_version: "3.0"
upstreams:
- name: pool
  targets:
  - target: {a}
    weight: 25
  - target: {b}
    weight: 75
  - target: {z}
    weight: 0
services:
- name: lb
  host: pool
  routes:
  - name: lb
    paths: ["/"]
"#,
        a = a.addr,
        b = b.addr,
        z = z.addr
    );
    let g = Gw::start(Some(&cfg)).await;
    let mut c = H1::connect(g.http).await;
    let n = 400;
    let m = tally(&mut c, "/", n).await;
    let got_a = m.get("a").copied().unwrap_or(0) as f64;
    let got_b = m.get("b").copied().unwrap_or(0) as f64;
    assert_eq!(
        got_a + got_b,
        n as f64,
        "every request answered by a or b: {m:?}"
    );
    // Expected share 0.25; binomial sd for n=400 is ~0.022: allow about 3 sd.
    let share = got_a / n as f64;
    assert!((0.18..=0.32).contains(&share), "share of a {share}: {m:?}");
    assert_eq!(z.served(), 0, "weight 0 takes no traffic");

    // The admin API lists the weight-0 target under /targets/all only.
    let all = get(g.admin, "localhost", "/upstreams/pool/targets/all").await;
    assert_eq!(all.status, 200);
    assert_eq!(all.json()["data"].as_array().unwrap().len(), 3);
    let h = health_of(&g, "pool").await;
    assert_eq!(h["data"].as_array().unwrap().len(), 2);
    assert_eq!(target_state(&h, &a.addr.to_string()), "HEALTHCHECKS_OFF");
    assert!(h["node_id"].is_string());
    let h = get(
        g.admin,
        "localhost",
        "/upstreams/pool/health?balancer_health=1",
    )
    .await;
    // Kong's get_balancer_health: `balancer_health` and `details` with or without health
    // checks, the addresses' `healthy` as getTargetStatus gives it.
    let d = h.json()["data"].clone();
    assert_eq!(d["health"], "HEALTHCHECKS_OFF");
    assert_eq!(d["balancer_health"], "HEALTHY");
    assert!(d["id"].is_string(), "{d}");
    assert_eq!(d["details"]["healthy"], true, "{d}");
    assert_eq!(
        d["details"]["weight"],
        serde_json::json!({"total": 100, "unavailable": 0, "available": 100})
    );
    let hosts = d["details"]["hosts"].as_array().unwrap();
    assert_eq!(hosts.len(), 3, "{d}");
    let ha = hosts
        .iter()
        .find(|t| t["port"] == a.addr.port())
        .unwrap_or_else(|| panic!("{d}"));
    assert_eq!(
        ha,
        &serde_json::json!({"host": a.addr.ip().to_string(), "port": a.addr.port(), "dns": "A",
            "nodeWeight": 25, "weight": {"total": 25, "unavailable": 0, "available": 25},
            "addresses": [{"ip": a.addr.ip().to_string(), "port": a.addr.port(), "weight": 25,
                "healthy": true}]})
    );
    // Kong compares the parameter with "1" (`tostring(...) == "1"`, not its truthy()):
    // other values list the targets.
    for q in ["true", "yes", "on"] {
        let h = get(
            g.admin,
            "localhost",
            &format!("/upstreams/pool/health?balancer_health={q}"),
        )
        .await;
        assert_eq!(h.json()["data"].as_array().map(Vec::len), Some(2), "{q}");
    }
    assert_eq!(
        get(g.admin, "localhost", "/upstreams/nope/health")
            .await
            .status,
        404
    );
    g.gw.shutdown().await;
}

fn checked_upstream(a: &Backend, b: &Backend, extra_route: bool) -> String {
    let extra = if extra_route {
        "\n  - name: extra\n    paths: [\"/extra\"]"
    } else {
        ""
    };
    format!(
        r#"
_format_version: "3.0"
upstreams:
- name: pool
  healthchecks:
    active:
      http_path: /health
      healthy:
        interval: 0
        successes: 1
      unhealthy:
        interval: 0.1
    passive:
      unhealthy:
        http_failures: 3
        http_statuses: [500]
  targets:
  - target: {a}
  - target: {b}
services:
- name: lb
  host: pool
  retries: 0
  routes:
  - name: lb
    paths: ["/"]{extra}
"#,
        a = a.addr,
        b = b.addr,
    )
}

#[tokio::test]
async fn passive_ejection_active_recovery_and_swap_keeps_health() {
    let a = Backend::builder().name("a").ip("127.0.0.5").run().await;
    let b = Backend::builder().name("b").ip("127.0.0.6").run().await;
    let g = Gw::start(Some(&checked_upstream(&a, &b, false))).await;
    let mut c = H1::connect(g.http).await;
    let ta = a.addr.to_string();

    a.set_fail(500);
    // Round-robin over two targets: within 8 requests `a` answers 500 three times and is
    // ejected (5xx statuses pass through to the client; they are not retried).
    let m = tally(&mut c, "/", 8).await;
    assert!(m.get("500").copied().unwrap_or(0) >= 3, "{m:?}");
    assert_eq!(target_state(&health_of(&g, "pool").await, &ta), "UNHEALTHY");
    let served_a = a.served();
    let m = tally(&mut c, "/", 10).await;
    assert_eq!(
        m.get("b"),
        Some(&10),
        "ejected target gets no traffic: {m:?}"
    );

    // The metric reports it.
    let metrics = get(g.status, "localhost", "/metrics").await.text();
    let line = format!(
        "kong_upstream_target_health{{upstream=\"pool\",target=\"{ta}\",address=\"{ta}\",state=\"unhealthy\",subsystem=\"http\"}} 1"
    );
    assert!(metrics.contains(&line), "{metrics}");

    // A swap that leaves the upstream unchanged keeps its health state.
    let r = admin_post(
        g.admin,
        "/config",
        "application/x-www-form-urlencoded",
        checked_upstream(&a, &b, true),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(target_state(&health_of(&g, "pool").await, &ta), "UNHEALTHY");
    let m = tally(&mut c, "/extra", 4).await;
    assert_eq!(m.get("b"), Some(&4), "{m:?}");
    // Only active probes reach `a` meanwhile (none of the proxied requests). Probes run every
    // 0.1 s; allow a busy machine up to 5 s for the first one.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while a.served() <= served_a && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        a.served() > served_a,
        "active probes run against the unhealthy target"
    );

    // The backend recovers; the active checker brings it back.
    a.set_fail(0);
    let mut healthy = false;
    for _ in 0..100 {
        if target_state(&health_of(&g, "pool").await, &ta) == "HEALTHY" {
            healthy = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(healthy, "active checks bring the target back");
    let m = tally(&mut c, "/", 10).await;
    assert_eq!(m.get("a"), Some(&5), "{m:?}");
    assert_eq!(m.get("b"), Some(&5), "{m:?}");
    g.gw.shutdown().await;
}

#[tokio::test]
async fn retries_land_on_another_target_and_503_when_all_down() {
    let live = Backend::builder().name("live").ip("127.0.0.7").run().await;
    let dead = dead_addr("127.0.0.8").await;
    let dead2 = dead_addr("127.0.0.9").await;
    let cfg = format!(
        r#"
_format_version: "3.0"
upstreams:
- name: mixed
  targets:
  - target: {dead}
  - target: {live}
- name: down
  healthchecks:
    passive:
      unhealthy:
        tcp_failures: 1
  targets:
  - target: {dead}
  - target: {dead2}
- name: empty
services:
- name: mixed
  host: mixed
  routes:
  - name: mixed
    paths: ["/mixed"]
- name: down
  host: down
  routes:
  - name: down
    paths: ["/down"]
- name: empty
  host: empty
  routes:
  - name: empty
    paths: ["/empty"]
"#,
        live = live.addr,
    );
    let g = Gw::start(Some(&cfg)).await;
    let mut c = H1::connect(g.http).await;
    // Half of the first tries go to the dead target; each is retried on the live one.
    let m = tally(&mut c, "/mixed", 10).await;
    assert_eq!(m.get("live"), Some(&10), "{m:?}");
    assert_eq!(live.served(), 10);

    // Both targets refuse: the first request fails over to the second target, then both are
    // unhealthy (tcp_failures: 1) and no peer is left for its third try: Kong's balancer
    // phase ends it with `ngx.exit(503)`, an nginx error (text unless asked otherwise).
    let r = c.get("x", "/down").await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(
        r.text()
            .starts_with("The upstream server is currently unavailable\nrequest_id: "),
        "{}",
        r.text()
    );
    // the next request finds no peer in Kong's access phase: its own JSON answer
    let r = c.get("x", "/down").await;
    assert_eq!(r.status, 503);
    assert_eq!(
        r.json()["message"],
        "failure to get a peer from the ring-balancer"
    );
    let r = c.get("x", "/empty").await;
    assert_eq!(r.status, 503);
    assert_eq!(
        r.json()["message"],
        "failure to get a peer from the ring-balancer"
    );
    g.gw.shutdown().await;
}

/// Kong reports a retried try as what failed (its balancer phase) but the last try by the
/// status the request ends with (its log phase): a refused last connection is an HTTP 502,
/// not a TCP failure, and an upstream's own 504 is a timeout.
#[tokio::test]
async fn the_last_try_counts_as_the_final_status() {
    let dead = dead_addr("127.0.0.13").await;
    let dead2 = dead_addr("127.0.0.14").await;
    let gw504 = Backend::builder()
        .name("gw504")
        .ip("127.0.0.15")
        .run()
        .await;
    gw504.set_fail(504);
    let cfg = format!(
        r#"
_format_version: "3.0"
upstreams:
- name: tcp
  healthchecks:
    passive:
      unhealthy:
        tcp_failures: 1
  targets:
  - target: {dead}
- name: http502
  healthchecks:
    passive:
      unhealthy:
        http_statuses: [502]
        http_failures: 1
  targets:
  - target: {dead2}
- name: timeouts
  healthchecks:
    passive:
      unhealthy:
        timeouts: 1
  targets:
  - target: {gw504}
services:
- name: tcp
  host: tcp
  retries: 0
  routes:
  - name: tcp
    paths: ["/tcp"]
- name: http502
  host: http502
  retries: 0
  routes:
  - name: http502
    paths: ["/http502"]
- name: timeouts
  host: timeouts
  retries: 0
  routes:
  - name: timeouts
    paths: ["/timeouts"]
"#,
        gw504 = gw504.addr,
    );
    let g = Gw::start(Some(&cfg)).await;
    let mut c = H1::connect(g.http).await;
    // Refused, no retry: a 502, which counts as an HTTP 502, not as a TCP failure.
    for _ in 0..3 {
        assert_eq!(c.get("x", "/tcp").await.status, 502);
    }
    assert_eq!(
        target_state(&health_of(&g, "tcp").await, &dead.to_string()),
        "HEALTHY"
    );
    // With 502 among the unhealthy statuses, one refused last try is enough.
    assert_eq!(c.get("x", "/http502").await.status, 502);
    assert_eq!(
        target_state(&health_of(&g, "http502").await, &dead2.to_string()),
        "UNHEALTHY"
    );
    // The upstream's own 504 counts as a timeout.
    assert_eq!(c.get("x", "/timeouts").await.status, 504);
    assert_eq!(
        target_state(&health_of(&g, "timeouts").await, &gw504.addr.to_string()),
        "UNHEALTHY"
    );
    g.gw.shutdown().await;
}

#[tokio::test]
async fn hash_cookie_is_set_and_sticks() {
    let a = Backend::builder().name("a").ip("127.0.0.10").run().await;
    let b = Backend::builder().name("b").ip("127.0.0.11").run().await;
    let cfg = format!(
        r#"
_format_version: "3.0"
upstreams:
- name: sticky
  algorithm: consistent-hashing
  hash_on: cookie
  hash_on_cookie: sb
  hash_on_cookie_path: /app
  host_header: backend.internal
  targets:
  - target: {a}
  - target: {b}
services:
- name: sticky
  host: sticky
  routes:
  - name: sticky
    paths: ["/app"]
    strip_path: false
"#,
        a = a.addr,
        b = b.addr
    );
    let g = Gw::start(Some(&cfg)).await;
    let mut c = H1::connect(g.http).await;
    let r = c.get("x", "/app").await;
    assert_eq!(r.status, 200);
    let sc = r.header("set-cookie").unwrap().to_string();
    assert!(sc.starts_with("sb="), "{sc}");
    assert!(sc.contains("; Path=/app; Same-Site=Lax; HttpOnly"), "{sc}");
    // The upstream's host_header (with the target's port: not 80).
    let host = r.json()["headers"]["host"].as_str().unwrap().to_string();
    assert!(host.starts_with("backend.internal:"), "{host}");
    let first = r.header("x-backend").unwrap().to_string();
    let cookie = sc.split(';').next().unwrap().to_string();
    for _ in 0..6 {
        let r = c.get_with("x", "/app", &[("cookie", &cookie)]).await;
        assert_eq!(r.header("x-backend"), Some(first.as_str()));
        assert!(r.header("set-cookie").is_none());
    }
    g.gw.shutdown().await;
}

/// A service on one target behind an upstream hashing on the cookie `sb`, routed at `/app`
/// (`service_extra`: more lines of the service, indented as its fields).
fn sticky_config(target: std::net::SocketAddr, service_extra: &str) -> String {
    format!(
        r#"
_format_version: "3.0"
upstreams:
- name: sticky
  hash_on: cookie
  hash_on_cookie: sb
  targets:
  - target: {target}
services:
- name: sticky
  host: sticky
{service_extra}  routes:
  - name: sticky
    paths: ["/app"]
    strip_path: false
"#
    )
}

/// Kong's header filter sets the hash cookie on every answer past the access phase: on the
/// 502 nginx answers when no target can be reached too (its error page runs the filter with
/// the request's context), on HTTP/1.1 (the fast path and hyper's) and HTTP/2 alike. A
/// client that sent the cookie gets none.
#[tokio::test]
async fn the_hash_cookie_is_set_on_an_error_page_after_the_access_phase() {
    let dead = dead_addr("127.0.0.1").await;
    let g = Gw::start(Some(&sticky_config(dead, "  retries: 1\n"))).await;
    let check = |r: &Resp, what: &str| {
        assert_eq!(r.status, 502, "{what}: {}", r.text());
        let sc = r
            .header("set-cookie")
            .unwrap_or_else(|| panic!("{what}: no cookie"));
        assert!(sc.starts_with("sb="), "{what}: {sc}");
        assert!(
            sc.ends_with("; Path=/; Same-Site=Lax; HttpOnly"),
            "{what}: {sc}"
        );
        // (nginx's error, past the access phase: a proxied answer's headers)
        assert!(r.header("x-kong-upstream-latency").is_some(), "{what}");
    };
    let mut c = H1::connect(g.http).await;
    check(&c.get("x", "/app").await, "HTTP/1.1");
    // a body: hyper's path
    let r = c
        .send(
            req("POST", "x", "/app")
                .body(bytes::Bytes::from_static(b"data").into())
                .unwrap(),
        )
        .await;
    check(&r, "HTTP/1.1 with a body");
    let mut h2 = H2::h2c(g.http).await;
    let r = h2.get("http://x/app").await;
    check(&r, "HTTP/2");
    // the client's own cookie: nothing generated, nothing set
    let r = c.get_with("x", "/app", &[("cookie", "sb=mine")]).await;
    assert_eq!(r.status, 502);
    assert!(r.header("set-cookie").is_none());
    g.gw.shutdown().await;
}

#[tokio::test]
async fn a_cookie_hash_fallback_sets_the_cookie() {
    let a = Backend::builder().name("a").ip("127.0.0.10").run().await;
    let b = Backend::builder().name("b").ip("127.0.0.11").run().await;
    let cfg = pool_config(
        "  hash_on: header\n  hash_on_header: x-a\n  hash_fallback: cookie\n  hash_on_cookie: sess\n",
        &[&a, &b],
        "",
    );
    let g = Gw::start(Some(&cfg)).await;
    let mut c = H1::connect(g.http).await;
    // Neither `x-a` nor `sess`: Kong generates the cookie on the fallback pass.
    let r = c.get("x", "/").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let sc = r.header("set-cookie").unwrap().to_string();
    let (value, rest) = sc
        .strip_prefix("sess=")
        .and_then(|v| v.split_once(';'))
        .unwrap_or_else(|| panic!("{sc}"));
    assert_eq!(value.len(), 36, "a uuid: {sc}");
    assert_eq!(rest, " Path=/; Same-Site=Lax; HttpOnly");
    let first = r.header("x-backend").unwrap().to_string();
    for _ in 0..4 {
        let r = c
            .get_with("x", "/", &[("cookie", &format!("sess={value}"))])
            .await;
        assert_eq!(r.header("x-backend"), Some(first.as_str()));
        assert!(r.header("set-cookie").is_none());
    }
    // The header, when there is one, is hashed: no cookie.
    let r = c.get_with("x", "/", &[("x-a", "k")]).await;
    assert_eq!(r.status, 200);
    assert!(r.header("set-cookie").is_none());
    g.gw.shutdown().await;
}

/// Kong's `set_cookie` puts the hash cookie in place of an upstream's cookie of the same
/// name (a `Set-Cookie` starting with `<name>=`) rather than adding a second one; other
/// cookies stay. On the HTTP/1.1 answer as read and through hyper's (an HTTP/2 client).
#[tokio::test]
async fn the_hash_cookie_replaces_the_upstreams_cookie_of_that_name() {
    let up = RawBackend::builder()
        .answer(
            "/app",
            "HTTP/1.1 200 OK\r\nSet-Cookie: other=1\r\nSet-Cookie: sb=upstream; Path=/\r\nSet-Cookie: sbx=2\r\nContent-Length: 2\r\n\r\nok",
        )
        .run()
        .await;
    let g = Gw::start(Some(&sticky_config(up.addr, ""))).await;
    let check = |r: &Resp| {
        assert_eq!(r.status, 200, "{}", r.text());
        let mut got: Vec<&str> = r
            .headers
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        got.sort_unstable();
        assert_eq!(got.len(), 3, "{got:?}");
        assert_eq!(got[0], "other=1");
        assert!(
            got[1].starts_with("sb=") && got[1].ends_with("; Path=/; Same-Site=Lax; HttpOnly"),
            "{got:?}"
        );
        assert_eq!(got[2], "sbx=2");
    };
    let mut c = H1::connect(g.http).await;
    check(&c.get("x", "/app").await);
    let mut h2 = H2::h2c(g.http).await;
    check(&h2.get("http://x/app").await);
    g.gw.shutdown().await;
}

/// One upstream `pool` of `targets` (plus `upstream_fields`), and one service on it (plus
/// `service_fields`) with a route for every path. Fields are YAML lines indented by two.
fn pool_config(upstream_fields: &str, targets: &[&Backend], service_fields: &str) -> String {
    let mut t = String::new();
    for b in targets {
        t.push_str(&format!("  - target: {}\n", b.addr));
    }
    format!(
        r#"
_format_version: "3.0"
upstreams:
- name: pool
{upstream_fields}  targets:
{t}services:
- name: lb
  host: pool
{service_fields}  routes:
  - name: lb
    paths: ["/"]
"#
    )
}

fn hashed_pool(targets: &[&Backend]) -> String {
    pool_config(
        "  algorithm: consistent-hashing\n  hash_on: header\n  hash_on_header: x-user\n",
        targets,
        "",
    )
}

/// Which backend answers each of `users` (by `x-user`), on one connection.
async fn owners(c: &mut H1, users: usize) -> Vec<String> {
    let mut out = Vec::with_capacity(users);
    for u in 0..users {
        let r = c
            .send(
                req("GET", "x", "/")
                    .header("x-user", format!("user-{u}"))
                    .body(Default::default())
                    .unwrap(),
            )
            .await;
        assert_eq!(r.status, 200);
        out.push(r.header("x-backend").unwrap().to_string());
    }
    out
}

/// `hash_on: path` hashes nginx's `$uri` (Kong's `var.uri`): decoded, slashes merged, dot
/// segments resolved, so spellings of one path go to one target.
#[tokio::test]
async fn hash_on_path_hashes_the_normalized_path() {
    let a = Backend::builder().name("a").ip("127.0.0.10").run().await;
    let b = Backend::builder().name("b").ip("127.0.0.11").run().await;
    let c3 = Backend::builder().name("c").ip("127.0.0.12").run().await;
    let cfg = pool_config("  hash_on: path\n", &[&a, &b, &c3], "");
    let g = Gw::start(Some(&cfg)).await;
    let mut c = H1::connect(g.http).await;
    let mut owners = BTreeMap::new();
    for k in 0..24 {
        let plain = c.get("x", &format!("/p/k{k}")).await;
        assert_eq!(plain.status, 200);
        let plain = plain.header("x-backend").unwrap().to_string();
        let spelled = c.get("x", &format!("/p//x/../%6B{k}")).await;
        assert_eq!(spelled.status, 200);
        assert_eq!(spelled.header("x-backend"), Some(plain.as_str()), "key {k}");
        *owners.entry(plain).or_insert(0) += 1;
    }
    assert!(owners.len() > 1, "{owners:?}");
    g.gw.shutdown().await;
}

#[tokio::test]
async fn consistent_hashing_moves_few_keys_when_a_target_is_added() {
    let a = Backend::builder().name("a").ip("127.0.0.10").run().await;
    let b = Backend::builder().name("b").ip("127.0.0.11").run().await;
    let c3 = Backend::builder().name("c").ip("127.0.0.12").run().await;
    let d = Backend::builder().name("d").ip("127.0.0.13").run().await;
    let g = Gw::start(Some(&hashed_pool(&[&a, &b, &c3]))).await;
    let mut c = H1::connect(g.http).await;
    const USERS: usize = 300;
    let before = owners(&mut c, USERS).await;
    // Sticky: the same key lands on the same target again.
    assert_eq!(owners(&mut c, USERS).await, before);
    for name in ["a", "b", "c"] {
        let n = before.iter().filter(|o| *o == name).count();
        assert!(
            n > USERS / 6,
            "{name} owns {n} of {USERS} keys: spread too uneven"
        );
    }

    let r = admin_post(
        g.admin,
        "/config",
        "application/x-www-form-urlencoded",
        hashed_pool(&[&a, &b, &c3, &d]),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let after = owners(&mut c, USERS).await;
    let moved: Vec<usize> = (0..USERS).filter(|&u| before[u] != after[u]).collect();
    eprintln!("{} of {USERS} keys moved to the new target", moved.len());
    // About a quarter of the keys move, and only to the new target.
    assert!(
        (USERS / 10..=USERS * 2 / 5).contains(&moved.len()),
        "{} of {USERS} keys moved",
        moved.len()
    );
    assert!(
        moved.iter().all(|&u| after[u] == "d"),
        "keys moved between old targets"
    );
    g.gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_connections_prefers_the_target_that_answers_faster() {
    let slow = Backend::builder().name("slow").ip("127.0.0.14").run().await;
    let fast = Backend::builder().name("fast").ip("127.0.0.15").run().await;
    slow.set_delay(150);
    let cfg = pool_config("  algorithm: least-connections\n", &[&slow, &fast], "");
    let g = Gw::start(Some(&cfg)).await;
    // 6 clients x 15 requests each, concurrently: the slow target holds its connections
    // 150 ms, so new requests go to the target with fewer in flight.
    let mut clients = Vec::new();
    for _ in 0..6 {
        let addr = g.http;
        clients.push(tokio::spawn(async move {
            let mut c = H1::connect(addr).await;
            tally(&mut c, "/", 15).await
        }));
    }
    let mut total: BTreeMap<String, usize> = BTreeMap::new();
    for t in clients {
        for (k, v) in t.await.unwrap() {
            *total.entry(k).or_insert(0) += v;
        }
    }
    let (s, f) = (
        total.get("slow").copied().unwrap_or(0),
        total.get("fast").copied().unwrap_or(0),
    );
    eprintln!("least-connections: slow {s}, fast {f}");
    assert_eq!(s + f, 90, "every request answered: {total:?}");
    // Round-robin would give each 45; least-connections keeps the slow one to a few.
    assert!(s * 4 < f, "slow {s}, fast {f}");
    g.gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_retry_idempotent_requests_only() {
    let slow = Backend::builder().name("slow").ip("127.0.0.16").run().await;
    let fast = Backend::builder().name("fast").ip("127.0.0.17").run().await;
    slow.set_delay(1_000);
    let cfg = pool_config("", &[&slow, &fast], "  read_timeout: 200\n  retries: 3\n");
    let g = Gw::start(Some(&cfg)).await;
    let mut c = H1::connect(g.http).await;
    // GET: a read timeout on the slow target is retried on the fast one.
    let m = tally(&mut c, "/", 6).await;
    assert_eq!(m.get("fast"), Some(&6), "{m:?}");
    assert!(
        slow.served() >= 1,
        "some GETs went to the slow target first"
    );

    // POST with a body: once sent, it is never sent again; a timeout is a 504.
    let (slow0, fast0) = (slow.served(), fast.served());
    let mut statuses = BTreeMap::new();
    for i in 0..6 {
        let r = c
            .send(
                req("POST", "x", "/")
                    .body(http_body_util::Full::new(bytes::Bytes::from(format!(
                        "order {i}"
                    ))))
                    .unwrap(),
            )
            .await;
        *statuses.entry(r.status.as_u16()).or_insert(0usize) += 1;
    }
    let timeouts = statuses.get(&504).copied().unwrap_or(0);
    assert!(
        timeouts >= 1,
        "round-robin sent some POSTs to the slow target: {statuses:?}"
    );
    assert_eq!(
        statuses.get(&200).copied().unwrap_or(0) + timeouts,
        6,
        "{statuses:?}"
    );
    // Each POST reached exactly one backend exactly once.
    assert_eq!(
        slow.served() - slow0,
        timeouts,
        "timed-out POSTs were not re-sent"
    );
    assert_eq!(fast.served() - fast0, 6 - timeouts);
    g.gw.shutdown().await;
}

/// A client whose streamed body is malformed, cut short or stalled gets 400 or no answer
/// (nginx's 408, which closes the connection unanswered), and the
/// target it was being sent to stays healthy: the failure is the client's, not the peer's
/// (passive health counts `tcp_failures` and `timeouts` of the upstream only).
#[tokio::test]
async fn client_body_failures_do_not_count_against_the_target() {
    let live = Backend::builder().name("live").run().await;
    let cfg = format!(
        r#"
_format_version: "3.0"
upstreams:
- name: up
  healthchecks:
    passive:
      unhealthy:
        tcp_failures: 1
        timeouts: 1
  targets:
  - target: {live}
services:
- name: hc
  host: up
  read_timeout: 2000
  routes:
  - name: hc
    paths: ["/hc"]
    request_buffering: false
"#,
        live = live.addr,
    );
    let mut settings = silverback_proxy::Settings::loopback();
    settings.client_body_timeout = Duration::from_millis(300);
    let g = Gw::start_with(settings, Some(&cfg)).await;
    let wait = Duration::from_millis(1500);
    // invalid chunk size
    let r = raw(
        g.http,
        b"POST /hc/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\nhello\r\n0\r\n\r\n",
        wait,
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 400"), "{r}");
    // a chunked body cut short by the client (it closes its side)
    {
        use tokio::io::AsyncWriteExt;
        let mut s = tokio::net::TcpStream::connect(g.http).await.unwrap();
        s.write_all(
            b"POST /hc/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel",
        )
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        drop(s);
    }
    // a stalled body: closed unanswered after client_body_timeout (nginx's 408), not a 504
    // after the read timeout
    let t = std::time::Instant::now();
    let r = raw(
        g.http,
        b"POST /hc/x HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\nabc",
        Duration::from_secs(3),
    )
    .await;
    assert!(r.is_empty(), "{r}");
    assert!(
        (Duration::from_millis(300)..Duration::from_millis(1900)).contains(&t.elapsed()),
        "{:?}",
        t.elapsed()
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    let h = health_of(&g, "up").await;
    assert_eq!(h["data"][0]["health"], "HEALTHY", "{h}");
    let r = get(g.http, "x", "/hc/after").await;
    assert_eq!(r.status, 200, "{}", r.text());
    g.gw.shutdown().await;
}

/// Toward an HTTP/2 (gRPC) upstream too, the client's streamed body goes at the client's
/// pace: a slow upload that keeps coming is not the upstream's read timeout (which counts
/// from the body's end), and one that stalls is reset unanswered after `client_body_timeout`
/// (nginx's 408 terminates the request), without counting against the target.
#[tokio::test]
async fn client_bodies_toward_h2_upstreams_go_at_the_clients_pace() {
    let live = Backend::builder().name("live").run().await;
    let cfg = format!(
        r#"
_format_version: "3.0"
upstreams:
- name: up2
  healthchecks:
    passive:
      unhealthy:
        tcp_failures: 1
        timeouts: 1
  targets:
  - target: {live}
services:
- name: g
  protocol: grpc
  host: up2
  read_timeout: 500
  routes:
  - name: g
    paths: ["/grpc"]
    strip_path: false
    protocols: ["grpc"]
    request_buffering: false
"#,
        live = live.addr,
    );
    let mut settings = silverback_proxy::Settings::loopback();
    settings.client_body_timeout = Duration::from_millis(400);
    let g = Gw::start_with(settings, Some(&cfg)).await;
    let grpc =
        || http::Request::post("http://x/grpc.Echo/Say").header("content-type", "application/grpc");
    // six parts 200 ms apart: 1.2 s in all, over the 500 ms read timeout, no pause over
    // the 400 ms body timeout
    let (feed, answer) = h2c_fed(g.http, grpc()).await;
    for i in 0..6 {
        feed.send(bytes::Bytes::from(format!("part{i};")))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(feed);
    let r = answer.await.unwrap();
    assert_eq!(r.status, 200, "{:?} {}", r.headers, r.text());
    assert_eq!(r.text(), "part0;part1;part2;part3;part4;part5;");
    // a part, then nothing: the stream is reset after the body timeout, unanswered
    let t = std::time::Instant::now();
    let (feed, answer) = h2c_fed(g.http, grpc()).await;
    feed.send(bytes::Bytes::from_static(b"part0;"))
        .await
        .unwrap();
    let r = tokio::time::timeout(Duration::from_secs(3), answer)
        .await
        .expect("an end before the client gives up");
    drop(feed);
    assert!(r.is_err(), "reset, no answer: {:?}", r.map(|r| r.status));
    assert!(
        (Duration::from_millis(400)..Duration::from_millis(1500)).contains(&t.elapsed()),
        "{:?}",
        t.elapsed()
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    let h = health_of(&g, "up2").await;
    assert_eq!(h["data"][0]["health"], "HEALTHY", "{h}");
    g.gw.shutdown().await;
}

/// An HTTP/2 upstream that takes no more of a streamed body (its flow-control window full)
/// and never answers is the upstream's timeout: 504 after the read timeout without progress,
/// however long the client would go on sending.
#[tokio::test]
async fn an_h2_upstream_that_takes_no_body_times_out() {
    let hole = h2_black_hole().await;
    let cfg = format!(
        r#"
_format_version: "3.0"
services:
- name: g
  url: grpc://{hole}
  read_timeout: 500
  routes:
  - name: g
    paths: ["/grpc"]
    strip_path: false
    protocols: ["grpc"]
    request_buffering: false
"#
    );
    let g = Gw::start(Some(&cfg)).await;
    let req =
        http::Request::post("http://x/grpc.Echo/Say").header("content-type", "application/grpc");
    let (feed, answer) = h2c_fed(g.http, req).await;
    // the client would send 16 MiB: far more than any window takes
    let sender = tokio::spawn(async move {
        for _ in 0..1024 {
            if feed
                .send(bytes::Bytes::from(vec![b'x'; 16 * 1024]))
                .await
                .is_err()
            {
                return;
            }
        }
    });
    let t = std::time::Instant::now();
    let r = tokio::time::timeout(Duration::from_secs(10), answer)
        .await
        .expect("an answer, not a hang")
        .unwrap();
    assert_eq!(r.status, 504, "{:?}", r.headers);
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    sender.abort();
    g.gw.shutdown().await;
}

/// With a read timeout shorter than `client_body_timeout`, a client that pauses its body
/// toward an HTTP/2 upstream is still judged by the body timeout: the stream is reset
/// unanswered (nginx's 408), not answered 504, and the target stays healthy.
#[tokio::test]
async fn a_client_pause_longer_than_the_read_timeout_is_the_clients() {
    let live = Backend::builder().name("live").run().await;
    let cfg = format!(
        r#"
_format_version: "3.0"
upstreams:
- name: up3
  healthchecks:
    passive:
      unhealthy:
        timeouts: 1
  targets:
  - target: {live}
services:
- name: g
  protocol: grpc
  host: up3
  read_timeout: 200
  routes:
  - name: g
    paths: ["/grpc"]
    strip_path: false
    protocols: ["grpc"]
    request_buffering: false
"#,
        live = live.addr,
    );
    let mut settings = silverback_proxy::Settings::loopback();
    settings.client_body_timeout = Duration::from_millis(700);
    let g = Gw::start_with(settings, Some(&cfg)).await;
    let req =
        http::Request::post("http://x/grpc.Echo/Say").header("content-type", "application/grpc");
    let (feed, answer) = h2c_fed(g.http, req).await;
    feed.send(bytes::Bytes::from_static(b"part0;"))
        .await
        .unwrap();
    let t = std::time::Instant::now();
    let r = tokio::time::timeout(Duration::from_secs(5), answer)
        .await
        .expect("an end");
    drop(feed);
    assert!(r.is_err(), "reset, no answer: {:?}", r.map(|r| r.status));
    assert!(
        t.elapsed() >= Duration::from_millis(500),
        "{:?}",
        t.elapsed()
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    let h = health_of(&g, "up3").await;
    assert_eq!(h["data"][0]["health"], "HEALTHY", "{h}");
    g.gw.shutdown().await;
}

/// Addresses spelled as Kong reads them and Rust's parser does not (octets with leading
/// zeros, a `::` standing for no group, a trailing `:`) load, and reach the address Kong
/// reads: as a service host, and as upstream targets.
#[tokio::test]
async fn kong_address_spellings_reach_their_addresses() {
    let v4 = Backend::builder().name("v4").ip("127.0.0.2").run().await;
    let v6 = Backend::builder().name("v6").ip("::1").run().await;
    let (p4, p6) = (v4.addr.port(), v6.addr.port());
    let cfg = format!(
        r#"
_format_version: "3.0"
upstreams:
- name: zeros
  targets:
  - target: "127.000.0.02:{p4}"
- name: nogroup
  targets:
  - target: "[0:0:0:0:0:0:0::1]:{p6}"
services:
- name: literal
  host: "127.000.000.002"
  port: {p4}
  routes:
  - name: literal
    paths: ["/literal"]
- name: literal6
  host: "0:0:0:0:0:0:0::1"
  port: {p6}
  routes:
  - name: literal6
    paths: ["/literal6"]
- name: zeros
  host: zeros
  routes:
  - name: zeros
    paths: ["/zeros"]
- name: nogroup
  host: nogroup
  routes:
  - name: nogroup
    paths: ["/nogroup"]
"#
    );
    let g = Gw::start(Some(&cfg)).await;
    let mut c = H1::connect(g.http).await;
    for (path, backend) in [
        ("/literal", "v4"),
        ("/literal6", "v6"),
        ("/zeros", "v4"),
        ("/nogroup", "v6"),
    ] {
        let r = c.get("x", path).await;
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        assert_eq!(r.header("x-backend"), Some(backend), "{path}");
    }
}

/// The gateway's settings on loopback, resolving hostnames through the name server `ns`
/// with `timeout` per query.
fn resolving_through(ns: std::net::SocketAddr, timeout: Duration) -> silverback_proxy::Settings {
    let resolver = silverback_balancer::Resolver::new(silverback_balancer::ResolverOptions {
        nameservers: Some(vec![ns]),
        timeout,
        ..Default::default()
    });
    silverback_proxy::Settings {
        balancer: silverback_balancer::Options {
            resolver: Some(std::sync::Arc::new(resolver)),
            ..Default::default()
        },
        ..silverback_proxy::Settings::loopback()
    }
}

/// A name server on loopback that answers every query with `rcode` (2: SERVFAIL, 3:
/// NXDOMAIN), the question echoed, no records.
async fn failing_name_server(rcode: u8) -> std::net::SocketAddr {
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = sock.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 1500];
        while let Ok((n, peer)) = sock.recv_from(&mut buf).await {
            let q = &buf[..n];
            if q.len() < 12 {
                continue;
            }
            // the question: its name's labels up to the empty one, then type and class
            let mut end = 12;
            while end < q.len() && q[end] != 0 {
                end += 1 + usize::from(q[end]);
            }
            end += 5;
            if end > q.len() {
                continue;
            }
            let mut a = Vec::with_capacity(end);
            a.extend_from_slice(&q[..2]);
            // a response to a recursive query, recursion available, the error code
            a.extend_from_slice(&[0x81, 0x80 | rcode, 0, 1, 0, 0, 0, 0, 0, 0]);
            a.extend_from_slice(&q[12..end]);
            let _ = sock.send_to(&a, peer).await;
        }
    });
    addr
}

/// A service host whose lookup fails: a name that does not exist is Kong's 503 `name
/// resolution failed`; a name server's failure is Kong's 500, worded by its
/// `balancer_execute` with the resolver's error (both Kong's own answers: JSON by default).
#[tokio::test]
async fn a_failed_lookup_is_kongs_503_or_500() {
    for (rcode, status, message) in [
        (3u8, 503u16, "name resolution failed".to_string()),
        (
            2,
            500,
            "failed the initial dns/balancer resolve for 'api.test' with: dns server error: 2 server failure"
                .to_string(),
        ),
    ] {
        let ns = failing_name_server(rcode).await;
        let settings = resolving_through(ns, Duration::from_millis(500));
        let cfg = "_format_version: \"3.0\"\nservices:\n- {name: s, host: api.test, port: 80, routes: [{name: r, paths: [/]}]}\n";
        let g = Gw::start_with(settings, Some(cfg)).await;
        let r = H1::connect(g.http).await.get("x", "/").await;
        assert_eq!(r.status.as_u16(), status, "{}", r.text());
        let body = r.json();
        assert_eq!(body["message"], message.as_str());
        assert_eq!(
            body["request_id"].as_str(),
            r.header("x-kong-request-id"),
            "{body}"
        );
        g.gw.shutdown().await;
    }
}

/// A name server that answers every A query with `ip` after `delay` (SRV queries: no
/// records, after the same delay).
async fn slow_name_server(ip: [u8; 4], delay: Duration) -> std::net::SocketAddr {
    let sock = std::sync::Arc::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let addr = sock.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 1500];
        while let Ok((n, peer)) = sock.recv_from(&mut buf).await {
            let q = buf[..n].to_vec();
            if q.len() < 12 {
                continue;
            }
            let mut end = 12;
            while end < q.len() && q[end] != 0 {
                end += 1 + usize::from(q[end]);
            }
            end += 5;
            if end > q.len() {
                continue;
            }
            let is_a = q[end - 4..end - 2] == [0, 1];
            let sock = std::sync::Arc::clone(&sock);
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let mut a = Vec::with_capacity(end + 16);
                a.extend_from_slice(&q[..2]);
                a.extend_from_slice(&[0x81, 0x80, 0, 1, 0, u8::from(is_a), 0, 0, 0, 0]);
                a.extend_from_slice(&q[12..end]);
                if is_a {
                    // the name (a pointer to the question's), A, IN, TTL 60 s, 4 bytes
                    a.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
                    a.extend_from_slice(&ip);
                }
                let _ = sock.send_to(&a, peer).await;
            });
        }
    });
    addr
}

/// Kong resolves a new balancer's targets when it creates it, and a request that finds no
/// balancer waits for it: a request right after a configuration with a new hostname
/// target waits for its first answer (within the connect timeout) rather than getting a
/// 503.
#[tokio::test]
async fn a_new_hostname_target_is_waited_for() {
    let b = Backend::builder()
        .name("named")
        .ip("127.0.0.16")
        .run()
        .await;
    let ns = slow_name_server([127, 0, 0, 16], Duration::from_millis(300)).await;
    let settings = resolving_through(ns, Duration::from_secs(2));
    let cfg = format!(
        "_format_version: \"3.0\"\nupstreams:\n- name: pool\n  targets:\n  - target: slow.test:{}\nservices:\n- {{name: s, host: pool, routes: [{{name: r, paths: [/]}}]}}\n",
        b.addr.port()
    );
    let g = Gw::start_with(settings, Some(&cfg)).await;
    let r = H1::connect(g.http).await.get("x", "/").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-backend"), Some("named"));
    g.gw.shutdown().await;
}
