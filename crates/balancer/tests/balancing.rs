//! Distribution, stability, retries and state carry-over, through `Balancers::build` from
//! real declarative configurations.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use common::config;
use http::{HeaderMap, HeaderValue};
use silverback_balancer::{
    Algorithm, Balancers, HealthStatus, NoPeer, PickContext, SetHealthError,
};
use tokio::runtime::Handle;

fn targets_yaml(targets: &[(&str, u32)]) -> String {
    targets
        .iter()
        .map(|(t, w)| format!("  - target: {t}\n    weight: {w}\n"))
        .collect()
}

#[tokio::test]
async fn round_robin_follows_weights() {
    let cfg = config(&format!(
        "_format_version: '3.0'\nupstreams:\n- name: up\n  targets:\n{}",
        targets_yaml(&[
            ("127.0.0.1:1001", 100),
            ("127.0.0.2:1002", 300),
            ("127.0.0.3:1003", 0),
            ("127.0.0.4", 50)
        ])
    ));
    let bs = Balancers::build(&cfg, None, &Handle::current()).expect("build");
    let b = bs.get("up").expect("upstream");
    assert_eq!(b.algorithm(), Algorithm::RoundRobin);
    let mut counts: HashMap<SocketAddr, u32> = HashMap::new();
    let n = 9000;
    for _ in 0..n {
        *counts
            .entry(b.pick(&PickContext::default(), &[]).expect("peer").addr)
            .or_default() += 1;
    }
    let get = |a: &str| {
        counts
            .get(&a.parse::<SocketAddr>().expect("addr"))
            .copied()
            .unwrap_or(0)
    };
    // Shares 100:300:0:50 of 450; the default port is 8000.
    for (addr, share) in [
        ("127.0.0.1:1001", 100.0 / 450.0),
        ("127.0.0.2:1002", 300.0 / 450.0),
        ("127.0.0.4:8000", 50.0 / 450.0),
    ] {
        let got = f64::from(get(addr)) / f64::from(n);
        assert!((got - share).abs() < 0.01, "{addr}: {got} vs {share}");
    }
    assert_eq!(get("127.0.0.3:1003"), 0, "weight 0 takes no traffic");
}

fn hash_config(n: usize) -> String {
    let t: Vec<(String, u32)> = (0..n)
        .map(|i| (format!("127.0.1.{}:80", i + 1), 100))
        .collect();
    let t: Vec<(&str, u32)> = t.iter().map(|(s, w)| (s.as_str(), *w)).collect();
    format!(
        "_format_version: '3.0'\nupstreams:\n- name: up\n  hash_on: header\n  hash_on_header: x-user\n  hash_fallback: ip\n  targets:\n{}",
        targets_yaml(&t)
    )
}

fn assign(bs: &Balancers, keys: &[String]) -> Vec<SocketAddr> {
    let b = bs.get("up").expect("upstream");
    keys.iter()
        .map(|k| {
            let mut h = HeaderMap::new();
            h.insert("x-user", HeaderValue::from_str(k).expect("value"));
            b.pick(
                &PickContext {
                    headers: Some(&h),
                    ..Default::default()
                },
                &[],
            )
            .expect("peer")
            .addr
        })
        .collect()
}

#[tokio::test]
async fn consistent_hashing_moves_about_one_nth_when_a_target_is_added() {
    let keys: Vec<String> = (0..20_000).map(|i| format!("user-{i}")).collect();
    let ten = Balancers::build(&config(&hash_config(10)), None, &Handle::current()).expect("build");
    assert_eq!(
        ten.get("up").expect("up").algorithm(),
        Algorithm::ConsistentHashing
    );
    let before = assign(&ten, &keys);
    // Built again from scratch (another process): identical assignment.
    let again =
        Balancers::build(&config(&hash_config(10)), None, &Handle::current()).expect("build");
    assert_eq!(assign(&again, &keys), before);
    // Balance: every target within 40% of the mean.
    let mut per: HashMap<SocketAddr, usize> = HashMap::new();
    for a in &before {
        *per.entry(*a).or_default() += 1;
    }
    assert_eq!(per.len(), 10);
    for (a, c) in &per {
        assert!((1200..=2800).contains(c), "{a}: {c} of 20000");
    }
    let eleven =
        Balancers::build(&config(&hash_config(11)), Some(&ten), &Handle::current()).expect("build");
    let after = assign(&eleven, &keys);
    let new: SocketAddr = "127.0.1.11:80".parse().expect("addr");
    let moved: Vec<usize> = (0..keys.len()).filter(|&i| before[i] != after[i]).collect();
    let frac = moved.len() as f64 / keys.len() as f64;
    // Ideal 1/11 = 0.091.
    assert!((0.05..0.14).contains(&frac), "moved {frac}");
    assert!(
        moved.iter().all(|&i| after[i] == new),
        "a key moved between two old targets"
    );
}

#[tokio::test]
async fn a_cookie_fallback_loads_and_generates_the_cookie() {
    // Kong takes `hash_fallback: cookie` with `hash_on_cookie` naming the cookie.
    let cfg = config(
        "_format_version: '3.0'\nupstreams:\n- name: up\n  hash_on: header\n  hash_on_header: x-a\n  hash_fallback: cookie\n  hash_on_cookie: sess\n  targets:\n  - target: 127.0.2.1:80\n  - target: 127.0.2.2:80\n  - target: 127.0.2.3:80\n",
    );
    let bs = Balancers::build(&cfg, None, &Handle::current()).expect("a cookie fallback loads");
    let b = bs.get("up").expect("upstream");
    // Neither the header nor the cookie: a cookie is generated, with the default path.
    let first = b.pick(&PickContext::default(), &[]).expect("peer");
    let cookie = first.set_cookie.clone().expect("a cookie is generated");
    let hv = cookie.header_value();
    assert!(
        hv.starts_with("sess=") && hv.ends_with("; Path=/; Same-Site=Lax; HttpOnly"),
        "{hv}"
    );
    assert!(uuid::Uuid::parse_str(&cookie.value).is_ok(), "{hv}");
    // The cookie then keeps the request on its peer, without a new cookie.
    let mut h = HeaderMap::new();
    h.insert(
        http::header::COOKIE,
        HeaderValue::from_str(&format!("sess={}", cookie.value)).expect("v"),
    );
    let ctx = PickContext {
        headers: Some(&h),
        ..Default::default()
    };
    for _ in 0..10 {
        let p = b.pick(&ctx, &[]).expect("peer");
        assert_eq!(p.addr, first.addr);
        assert!(p.set_cookie.is_none());
    }
    // The header, when present, comes first: no cookie is generated.
    let mut h = HeaderMap::new();
    h.insert("x-a", HeaderValue::from_static("k1"));
    let ctx = PickContext {
        headers: Some(&h),
        ..Default::default()
    };
    assert!(b.pick(&ctx, &[]).expect("peer").set_cookie.is_none());
}

#[tokio::test]
async fn hash_fallback_and_generated_cookie() {
    let cfg = config(
        "_format_version: '3.0'\nupstreams:\n- name: up\n  hash_on: cookie\n  hash_on_cookie: sticky\n  hash_on_cookie_path: /app\n  targets:\n  - target: 127.0.2.1:80\n  - target: 127.0.2.2:80\n  - target: 127.0.2.3:80\n",
    );
    let bs = Balancers::build(&cfg, None, &Handle::current()).expect("build");
    let b = bs.get("up").expect("upstream");
    let first = b.pick(&PickContext::default(), &[]).expect("peer");
    let cookie = first.set_cookie.clone().expect("a cookie is generated");
    assert_eq!(cookie.path.as_ref(), "/app");
    let hv = cookie.header_value();
    assert!(
        hv.starts_with("sticky=") && hv.ends_with("; Path=/app; Same-Site=Lax; HttpOnly"),
        "{hv}"
    );
    // The next request carries the cookie: same peer, no new cookie.
    let mut h = HeaderMap::new();
    h.insert(
        http::header::COOKIE,
        HeaderValue::from_str(&format!("sticky={}", cookie.value)).expect("v"),
    );
    for _ in 0..20 {
        let p = b
            .pick(
                &PickContext {
                    headers: Some(&h),
                    ..Default::default()
                },
                &[],
            )
            .expect("peer");
        assert_eq!(p.addr, first.addr);
        assert!(p.set_cookie.is_none());
    }
    // A retry of the first request hashes the generated value and walks on.
    let ctx = PickContext {
        generated_cookie: Some(&cookie.value),
        ..Default::default()
    };
    let retry = b.pick(&ctx, &[first.addr]).expect("peer");
    assert_ne!(retry.addr, first.addr);
    assert!(retry.set_cookie.is_none());

    // hash_on header falls back to ip.
    let cfg = config(&hash_config(5));
    let bs = Balancers::build(&cfg, None, &Handle::current()).expect("build");
    let b = bs.get("up").expect("upstream");
    let ip = "10.1.2.3".parse().expect("ip");
    let a = b
        .pick(
            &PickContext {
                client_ip: Some(ip),
                ..Default::default()
            },
            &[],
        )
        .expect("peer")
        .addr;
    for _ in 0..10 {
        assert_eq!(
            b.pick(
                &PickContext {
                    client_ip: Some(ip),
                    ..Default::default()
                },
                &[]
            )
            .expect("peer")
            .addr,
            a
        );
    }
}

#[tokio::test]
async fn retries_land_on_another_target_for_every_algorithm() {
    for alg in [
        "round-robin",
        "least-connections",
        "latency",
        "consistent-hashing",
    ] {
        let hash = if alg == "consistent-hashing" {
            "  hash_on: path\n"
        } else {
            ""
        };
        let cfg = config(&format!(
            "_format_version: '3.0'\nupstreams:\n- name: up\n  algorithm: {alg}\n{hash}  targets:\n{}",
            targets_yaml(&[
                ("127.0.3.1:80", 100),
                ("127.0.3.2:80", 100),
                ("127.0.3.3:80", 100)
            ])
        ));
        let bs = Balancers::build(&cfg, None, &Handle::current()).expect("build");
        let b = bs.get("up").expect("upstream");
        for i in 0..30 {
            let path = format!("/p{i}");
            let ctx = PickContext {
                path: &path,
                ..Default::default()
            };
            let mut tried = Vec::new();
            for _ in 0..3 {
                let p = b.pick(&ctx, &tried).expect("peer");
                assert!(!tried.contains(&p.addr), "{alg}: retried {}", p.addr);
                tried.push(p.addr);
            }
            // All three tried: nothing left.
            assert_eq!(
                b.pick(&ctx, &tried).err(),
                Some(NoPeer::NoHealthyPeer),
                "{alg}"
            );
        }
    }
}

#[tokio::test]
async fn threshold_and_no_peer_is_503() {
    let cfg = config(&format!(
        "_format_version: '3.0'\nupstreams:\n- name: up\n  healthchecks:\n    threshold: 50\n    passive:\n      unhealthy:\n        http_failures: 1\n  targets:\n{}",
        targets_yaml(&[
            ("127.0.4.1:80", 100),
            ("127.0.4.2:80", 100),
            ("127.0.4.3:80", 100),
            ("127.0.4.4:80", 100)
        ])
    ));
    let bs = Balancers::build(&cfg, None, &Handle::current()).expect("build");
    let b = bs.get("up").expect("upstream");
    b.set_health("127.0.4.1:80", None, false).expect("set");
    assert!(
        b.pick(&PickContext::default(), &[]).is_ok(),
        "75% healthy > 50%"
    );
    b.set_health("127.0.4.2:80", None, false).expect("set");
    let err = b
        .pick(&PickContext::default(), &[])
        .expect_err("50% is not above the threshold");
    assert_eq!(
        (err.status(), err.kong_message().as_ref()),
        (503, "failure to get a peer from the ring-balancer")
    );
    let h = b.health();
    assert_eq!(h.balancer.health, HealthStatus::Unhealthy);
    b.set_health("127.0.4.2:80", None, true).expect("set");
    assert!(b.pick(&PickContext::default(), &[]).is_ok());
    assert!(matches!(
        b.set_health("127.0.9.9:80", None, false),
        Err(SetHealthError::TargetNotFound { .. })
    ));
    // one address, `ip[:port]` (8000 when left out); another changes nothing
    assert_eq!(
        b.set_health("127.0.4.2:80", Some("127.0.4.2:80"), true),
        Ok(1)
    );
    assert_eq!(b.set_health("127.0.4.2:80", Some("127.0.4.2"), true), Ok(0));
    assert_eq!(
        b.set_health("127.0.4.2:80", Some("127.0.4.1:80"), true),
        Ok(0)
    );
}

#[tokio::test]
async fn state_survives_configuration_swaps() {
    let base = "_format_version: '3.0'\nupstreams:\n- name: up\n  healthchecks:\n    passive:\n      unhealthy:\n        tcp_failures: 2\n  targets:\n  - target: 127.0.5.1:80\n  - target: 127.0.5.2:80\n- name: other\n  targets:\n  - target: 127.0.5.9:80\n";
    let v1 = Balancers::build(&config(base), None, &Handle::current()).expect("build");
    let up = v1.get("up").expect("up");
    up.set_health("127.0.5.1:80", None, false).expect("set");
    // Unchanged: the very same balancer.
    let v2 = Balancers::build(&config(base), Some(&v1), &Handle::current()).expect("build");
    assert!(Arc::ptr_eq(
        v1.get("up").expect("up"),
        v2.get("up").expect("up")
    ));
    // Changed (a target added, another upstream's target changed): health of kept addresses
    // carries over.
    let changed = base.replace(
        "  - target: 127.0.5.2:80\n",
        "  - target: 127.0.5.2:80\n  - target: 127.0.5.3:80\n",
    );
    let v3 = Balancers::build(&config(&changed), Some(&v2), &Handle::current()).expect("build");
    let up3 = v3.get("up").expect("up");
    assert!(!Arc::ptr_eq(v2.get("up").expect("up"), up3));
    let h = up3.health();
    let state: HashMap<&str, HealthStatus> = h
        .targets
        .iter()
        .map(|t| (t.target.as_str(), t.health))
        .collect();
    assert_eq!(state["127.0.5.1:80"], HealthStatus::Unhealthy);
    assert_eq!(state["127.0.5.2:80"], HealthStatus::Healthy);
    assert_eq!(state["127.0.5.3:80"], HealthStatus::Healthy);
    for _ in 0..20 {
        assert_ne!(
            up3.pick(&PickContext::default(), &[])
                .expect("peer")
                .addr
                .to_string(),
            "127.0.5.1:80"
        );
    }
    // Health checks off: HEALTHCHECKS_OFF, and the override is refused (after the target
    // is found, as Kong checks them).
    let other = v3.get("other").expect("other").health();
    assert_eq!(other.targets[0].health, HealthStatus::HealthchecksOff);
    assert_eq!(other.balancer.health, HealthStatus::HealthchecksOff);
    let other = v3.get("other").expect("other");
    assert_eq!(
        other.set_health("127.0.5.9:80", None, false),
        Err(SetHealthError::NoHealthchecker {
            upstream: "other".into()
        })
    );
    assert!(matches!(
        other.set_health("127.0.5.8:80", None, false),
        Err(SetHealthError::TargetNotFound { .. })
    ));
    // Removed upstreams are gone.
    let v4 = Balancers::build(
        &config(&changed.replace("- name: other\n  targets:\n  - target: 127.0.5.9:80\n", "")),
        Some(&v3),
        &Handle::current(),
    )
    .expect("build");
    assert!(v4.get("other").is_none());
}

#[tokio::test]
async fn health_output_matches_kong_shapes() {
    let cfg = config(
        "_format_version: '3.0'\nupstreams:\n- name: up\n  healthchecks:\n    passive:\n      unhealthy:\n        http_failures: 1\n  targets:\n  - target: 127.0.6.1:80\n    weight: 20\n  - target: 127.0.6.2:81\n",
    );
    let bs = Balancers::build(&cfg, None, &Handle::current()).expect("build");
    let b = bs.get("up").expect("up");
    b.set_health("127.0.6.2:81", None, false).expect("set");
    let h = b.health();
    let v = serde_json::to_value(&h.targets).expect("json");
    assert_eq!(v[0]["target"], "127.0.6.1:80");
    assert_eq!(v[0]["health"], "HEALTHY");
    assert_eq!(v[0]["upstream"]["id"], b.id().to_string());
    assert_eq!(
        v[0]["data"]["addresses"][0],
        serde_json::json!({"ip": "127.0.6.1", "port": 80, "weight": 20, "health": "HEALTHY"})
    );
    assert_eq!(v[0]["data"]["nodeWeight"], 20);
    assert_eq!(v[1]["health"], "UNHEALTHY");
    assert_eq!(
        v[1]["data"]["weight"],
        serde_json::json!({"total": 100, "unavailable": 100, "available": 0})
    );
    let bh = serde_json::to_value(&h.balancer).expect("json");
    assert_eq!(bh["health"], "HEALTHY");
    assert_eq!(bh["balancer_health"], "HEALTHY");
    assert_eq!(
        bh["details"]["weight"],
        serde_json::json!({"total": 120, "unavailable": 100, "available": 20})
    );
    // Kong's getTargetStatus: the addresses' `healthy` (available), not `health`.
    assert_eq!(
        bh["details"]["hosts"][1],
        serde_json::json!({"host": "127.0.6.2", "port": 81, "dns": "A", "nodeWeight": 100,
            "weight": {"total": 100, "unavailable": 100, "available": 0},
            "addresses": [{"ip": "127.0.6.2", "port": 81, "weight": 100, "healthy": false}]})
    );
    let samples = bs.target_health_metrics();
    assert_eq!(samples.len(), 2);
    assert_eq!(
        (samples[1].address.as_str(), samples[1].state.metric_state()),
        ("127.0.6.2:81", "unhealthy")
    );
}

/// Kong's `get_balancer_health` without health checks: `health` HEALTHCHECKS_OFF, but
/// `balancer_health` and `details` still given; an IPv6 target's host and address in
/// brackets, its DNS source `AAAA`.
#[tokio::test]
async fn balancer_health_without_healthchecks_and_ipv6() {
    let cfg = config(
        "_format_version: '3.0'\nupstreams:\n- name: up\n  targets:\n  - target: '[::1]:8080'\n  - target: 127.0.6.3\n- name: empty\n",
    );
    let bs = Balancers::build(&cfg, None, &Handle::current()).expect("build");
    let bh = serde_json::to_value(bs.get("up").expect("up").health().balancer).expect("json");
    assert_eq!(bh["health"], "HEALTHCHECKS_OFF");
    assert_eq!(bh["balancer_health"], "HEALTHY");
    assert_eq!(bh["details"]["healthy"], true);
    assert_eq!(
        bh["details"]["hosts"][0],
        serde_json::json!({"host": "127.0.6.3", "port": 8000, "dns": "A", "nodeWeight": 100,
            "weight": {"total": 100, "unavailable": 0, "available": 100},
            "addresses": [{"ip": "127.0.6.3", "port": 8000, "weight": 100, "healthy": true}]})
    );
    assert_eq!(
        bh["details"]["hosts"][1],
        serde_json::json!({"host": "[::1]", "port": 8080, "dns": "AAAA", "nodeWeight": 100,
            "weight": {"total": 100, "unavailable": 0, "available": 100},
            "addresses": [{"ip": "[::1]", "port": 8080, "weight": 100, "healthy": true}]})
    );
    let samples = bs.target_health_metrics();
    assert!(
        samples.iter().any(|s| s.address == "[::1]:8080"),
        "{samples:?}"
    );
    // No target: no weight, an unhealthy balancer.
    let bh = serde_json::to_value(bs.get("empty").expect("empty").health().balancer).expect("json");
    assert_eq!(bh["health"], "HEALTHCHECKS_OFF");
    assert_eq!(bh["balancer_health"], "UNHEALTHY");
    assert_eq!(
        bh["details"],
        serde_json::json!({"healthy": false, "hosts": [],
            "weight": {"total": 0, "unavailable": 0, "available": 0}})
    );
}

/// The Host header values made once (per upstream address, per IP service host and port) are
/// the ones made per request: with and without the scheme's default port, IPv6, the
/// upstream's `host_header`.
#[tokio::test]
async fn host_header_values_made_once_are_the_per_request_ones() {
    let cfg = config(
        "_format_version: '3.0'
services:
- {name: a, host: 10.0.0.1, port: 8080}
- {name: b, host: 10.0.0.1, port: 80}
- {name: c, host: 10.0.0.1, port: 443, protocol: https}
- {name: d, host: '[::1]', port: 81}
- {name: e, host: up}
- {name: f, host: front}
- {name: g, host: 10.0.0.9}
upstreams:
- name: up
  targets: [{target: '10.0.0.2:8000'}, {target: '10.0.0.3'}]
- name: front
  host_header: front.test
  targets: [{target: '10.0.0.4:8443'}]
",
    );
    let bs = Balancers::build(&cfg, None, &Handle::current()).expect("build");
    let mut seen = 0;
    for s in &cfg.services {
        // more than once: later picks of an upstream address use the value the first made
        for _ in 0..4 {
            let p = bs
                .peer(&s.host, s.port, &PickContext::default(), &[])
                .await
                .expect("peer");
            for tls in [false, true] {
                let want = HeaderValue::from_str(&p.host_header_value(tls)).ok();
                assert_eq!(p.host_header(tls), want, "{} tls={tls}", s.host);
                seen += 1;
            }
        }
    }
    assert_eq!(seen, cfg.services.len() * 8);
    // the values themselves, for an IP service host: with and without the default port, and
    // for a port no service gives (made per request)
    for (port, tls, want) in [
        (8080, false, "10.0.0.1:8080"),
        (80, false, "10.0.0.1"),
        (80, true, "10.0.0.1:80"),
        (9999, false, "10.0.0.1:9999"),
    ] {
        let p = bs
            .peer("10.0.0.1", port, &PickContext::default(), &[])
            .await
            .expect("peer");
        assert_eq!(p.addr.port(), port);
        assert_eq!(
            p.host_header(tls).as_ref().map(|v| v.as_bytes()),
            Some(want.as_bytes()),
            "{port} tls={tls}"
        );
    }
}
