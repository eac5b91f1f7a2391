//! DNS: hostname targets expand to every address and follow TTLs; services by hostname
//! resolve through the cache.

mod common;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{DnsServer, config, eventually};
use silverback_balancer::{
    Balancers, HealthStatus, NoPeer, Options, PickContext, Resolver, ResolverOptions,
};
use tokio::runtime::Handle;

/// Balancer options resolving through `dns` ([`resolver`]).
fn options(dns: &DnsServer) -> Options {
    Options {
        resolver: Some(resolver(dns)),
        ..Default::default()
    }
}

fn resolver(dns: &DnsServer) -> Arc<Resolver> {
    Arc::new(Resolver::new(ResolverOptions {
        nameservers: Some(vec![dns.addr]),
        timeout: Duration::from_millis(500),
        not_found_ttl: Duration::from_millis(300),
        ..Default::default()
    }))
}

fn addrs(bs: &Balancers, n: usize) -> HashSet<SocketAddr> {
    let b = bs.get("up").expect("up");
    (0..n)
        .filter_map(|_| b.pick(&PickContext::default(), &[]).ok())
        .map(|p| p.addr)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostname_targets_follow_dns() {
    let dns = DnsServer::start(1).await;
    dns.set("svc.test", &["127.0.20.1", "127.0.20.2"]);
    let cfg = config(
        "_format_version: '3.0'\nupstreams:\n- name: up\n  targets:\n  - target: svc.test:9000\n    weight: 10\n  - target: missing.test:9000\n",
    );
    let opts = options(&dns);
    let bs = Balancers::build_with(&cfg, None, &Handle::current(), &opts).expect("build");
    assert!(
        bs.ready(Duration::from_secs(5)).await,
        "targets not resolved"
    );
    let want: HashSet<SocketAddr> = ["127.0.20.1:9000", "127.0.20.2:9000"]
        .iter()
        .map(|s| s.parse().expect("addr"))
        .collect();
    assert_eq!(addrs(&bs, 20), want);
    let h = bs.get("up").expect("up").health();
    let svc = h
        .targets
        .iter()
        .find(|t| t.target == "svc.test:9000")
        .expect("svc");
    assert_eq!(svc.data.dns, "A");
    assert_eq!(svc.data.addresses.len(), 2);
    assert_eq!(svc.data.addresses[0].weight, 10);
    let missing = h
        .targets
        .iter()
        .find(|t| t.target == "missing.test:9000")
        .expect("missing");
    assert_eq!(missing.health, HealthStatus::DnsError);
    // Kong's `get_dns_source`: the DNS client's own error.
    assert_eq!(missing.data.dns, "dns server error: 3 name error");
    let p = bs
        .get("up")
        .expect("up")
        .pick(&PickContext::default(), &[])
        .expect("peer");
    assert_eq!(p.hostname(), "svc.test");
    assert_eq!(p.host_header_value(false), "svc.test:9000");
    assert_eq!(p.sni(), Some("svc.test"));

    // The record changes; after the 1 s TTL the balancer follows.
    dns.set("svc.test", &["127.0.20.3"]);
    let want: HashSet<SocketAddr> = ["127.0.20.3:9000".parse().expect("addr")]
        .into_iter()
        .collect();
    assert!(
        eventually(Duration::from_secs(5), || addrs(&bs, 10) == want).await,
        "balancer did not follow the DNS change"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_hosts_resolve_through_the_ttl_cache() {
    let dns = DnsServer::start(2).await;
    dns.set("api.test", &["127.0.21.1", "127.0.21.2"]);
    let cfg = config(
        "_format_version: '3.0'\nupstreams:\n- name: up\n  targets:\n  - target: 127.0.0.1:1\n",
    );
    let opts = options(&dns);
    let bs = Balancers::build_with(&cfg, None, &Handle::current(), &opts).expect("build");
    let ctx = PickContext::default();
    let p1 = bs.peer("api.test", 8080, &ctx, &[]).await.expect("peer");
    let queries = dns.queries.load(Ordering::SeqCst);
    // A retry avoids the first address.
    let p2 = bs
        .peer("api.test", 8080, &ctx, &[p1.addr])
        .await
        .expect("peer");
    assert_ne!(p1.addr, p2.addr);
    assert_eq!(p1.addr.port(), 8080);
    for _ in 0..50 {
        bs.peer("api.test", 8080, &ctx, &[]).await.expect("peer");
    }
    assert_eq!(
        dns.queries.load(Ordering::SeqCst),
        queries,
        "cached answers were re-queried"
    );
    // Past the TTL a query goes out again (served stale meanwhile).
    tokio::time::sleep(Duration::from_millis(2100)).await;
    bs.peer("api.test", 8080, &ctx, &[]).await.expect("peer");
    assert!(
        eventually(Duration::from_secs(3), || dns
            .queries
            .load(Ordering::SeqCst)
            > queries)
        .await
    );
    // Unknown names: 503 "name resolution failed".
    let err = bs.peer("nope.test", 80, &ctx, &[]).await.expect_err("nx");
    assert_eq!(
        (err.status(), err.kong_message().as_ref()),
        (503, "name resolution failed")
    );
    assert_eq!(err, NoPeer::NameResolution);
    // A name server's failure: 500, worded as Kong's `balancer_execute` words it, with the
    // error as Kong's resolver gives it.
    let err = bs
        .peer("servfail.test", 80, &ctx, &[])
        .await
        .expect_err("servfail");
    assert_eq!(
        (err.status(), err.kong_message().as_ref()),
        (
            500,
            "failed the initial dns/balancer resolve for 'servfail.test' with: dns server error: 2 server failure"
        )
    );
    // IPs need no DNS.
    let p = bs.peer("127.0.0.9", 81, &ctx, &[]).await.expect("ip");
    assert_eq!(p.addr, "127.0.0.9:81".parse::<SocketAddr>().expect("addr"));
    assert_eq!(p.sni(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn srv_targets_use_record_ports_weights_and_names() {
    let dns = DnsServer::start(30).await;
    dns.set("a.test", &["127.0.22.1"]);
    dns.set("b.test", &["127.0.22.2"]);
    dns.set_srv("srv.test", &[(0, 9001, "a.test"), (3, 9002, "b.test")]);
    let opts = options(&dns);
    for use_srv_name in [false, true] {
        let cfg = config(&format!(
            "_format_version: '3.0'\nupstreams:\n- name: up\n  use_srv_name: {use_srv_name}\n  targets:\n  - target: srv.test:80\n"
        ));
        let bs = Balancers::build_with(&cfg, None, &Handle::current(), &opts).expect("build");
        assert!(bs.ready(Duration::from_secs(5)).await);
        let h = bs.get("up").expect("up").health();
        assert_eq!(h.targets[0].data.dns, "SRV");
        let got: Vec<(String, u16, u32)> = h.targets[0]
            .data
            .addresses
            .iter()
            .map(|a| (a.ip.clone(), a.port, a.weight))
            .collect();
        // SRV weight 0 counts as 1.
        assert_eq!(
            got,
            vec![
                ("127.0.22.1".into(), 9001, 1),
                ("127.0.22.2".into(), 9002, 3)
            ]
        );
        let b = bs.get("up").expect("up");
        let mut counts = std::collections::HashMap::new();
        for _ in 0..400 {
            let p = b.pick(&PickContext::default(), &[]).expect("peer");
            let want = match (use_srv_name, p.addr.port()) {
                (false, _) => "srv.test",
                (true, 9001) => "a.test",
                (true, _) => "b.test",
            };
            assert_eq!(p.hostname(), want);
            *counts.entry(p.addr.port()).or_insert(0) += 1;
        }
        assert_eq!((counts[&9001], counts[&9002]), (100, 300));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookups_and_queries_are_counted_as_kongs_client_counts_them() {
    let dns = DnsServer::start(30).await;
    dns.set("api.test", &["127.0.23.1"]);
    let r = resolver(&dns);
    assert!(r.stats().is_empty());
    for _ in 0..3 {
        r.pick("api.test", 80, &[]).await.expect("api.test");
    }
    r.pick("nope.test", 80, &[]).await.expect_err("nx");
    r.pick("127.0.0.7", 80, &[]).await.expect("ip");
    let stats = r.stats();
    let get = |key: &str| {
        stats
            .get(key)
            .unwrap_or_else(|| panic!("no {key} in {stats:?}"))
            .iter()
            .map(|(k, v)| (k.as_str(), *v))
            .collect::<Vec<_>>()
    };
    // The first lookup asked the server (SRV first: no records, then A); the next two
    // were answered from the cache.
    assert_eq!(
        get("api.test:all"),
        [("hit_lru", 2), ("miss", 1), ("runs", 3)]
    );
    let srv = get("api.test:SRV");
    assert!(srv.contains(&("query", 1)), "{srv:?}");
    assert!(
        srv.contains(&("query_fail:empty record received", 1)),
        "{srv:?}"
    );
    let a = get("api.test:A");
    assert!(
        a.contains(&("query", 1)) && a.contains(&("query_succ", 1)),
        "{a:?}"
    );
    assert!(a.iter().any(|(k, _)| *k == "query_last_time"), "{a:?}");
    // A name that does not exist is an answer (a miss), cached like any other.
    assert_eq!(get("nope.test:all"), [("miss", 1), ("runs", 1)]);
    assert!(get("nope.test:SRV").contains(&("query_fail:name error", 1)));
    // An IP literal is looked up but never queried.
    assert_eq!(get("127.0.0.7:all"), [("miss", 1), ("runs", 1)]);
    assert!(
        !stats
            .keys()
            .any(|k| k.starts_with("127.0.0.7:") && k != "127.0.0.7:all")
    );
    // The cached "not found" answers the next lookup without a query.
    r.pick("nope.test", 80, &[]).await.expect_err("nx");
    let again = r.stats();
    assert_eq!(again["nope.test:all"]["hit_lru"], 1);
    assert_eq!(again["nope.test:all"]["runs"], 2);
    assert_eq!(again["nope.test:SRV"]["query"], 1);

    // No name server answering: a failed lookup, and a name-server failure per query.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let r = Arc::new(Resolver::new(ResolverOptions {
        nameservers: Some(vec![silent.local_addr().expect("addr")]),
        timeout: Duration::from_millis(200),
        ..Default::default()
    }));
    let e = r.pick("quiet.test", 80, &[]).await.expect_err("no answer");
    // worded as Kong's DNS client words it: the server, lua-resty-dns's reason, the time
    let m = NoPeer::from(&e).kong_message().into_owned();
    let want = format!(
        "failed the initial dns/balancer resolve for 'quiet.test' with: DNS server error: failed to receive reply from UDP server {}: timeout, took ",
        silent.local_addr().expect("addr")
    );
    assert!(m.starts_with(&want) && m.ends_with(" ms"), "{m}");
    let stats = r.stats();
    assert_eq!(stats["quiet.test:all"]["fail"], 1, "{stats:?}");
    assert!(!stats["quiet.test:all"].contains_key("miss"), "{stats:?}");
    assert!(
        stats["quiet.test:SRV"]["query_fail_nameserver"] >= 1,
        "{stats:?}"
    );
}

/// The DNS refresher is a job in the timer statistics (`GET /timers`): a pass where a target
/// did not resolve is a failed run that names it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dns_refresher_reports_its_runs_as_a_timer() {
    let dns = DnsServer::start(1).await;
    dns.set("ok.test", &["127.0.24.1"]);
    let cfg = config(
        "_format_version: '3.0'\nupstreams:\n- name: refresh-timer\n  targets:\n  - target: ok.test:9000\n  - target: gone.test:9000\n",
    );
    let opts = options(&dns);
    let bs = Balancers::build_with(&cfg, None, &Handle::current(), &opts).expect("build");
    assert!(bs.ready(Duration::from_secs(5)).await);
    let job = || {
        silverback_timers::global()
            .stats()
            .timers
            .get("dns-refresh:refresh-timer")
            .cloned()
    };
    let ok = eventually(Duration::from_secs(5), || {
        job().is_some_and(|j| j.stats.runs >= 1 && !j.stats.last_err_msg.is_empty())
    })
    .await;
    let j = job().expect("the refresher is listed");
    assert!(ok, "{j:?}");
    assert!(
        j.stats.last_err_msg.contains("gone.test:9000"),
        "{}",
        j.stats.last_err_msg
    );
    assert_eq!(j.stats.finish, 0, "every pass had a failing target");
    drop(bs);
    assert!(
        eventually(Duration::from_secs(5), || job().is_none()).await,
        "the job leaves with its balancer"
    );
}

/// Kong's default `dns_order` (`LAST,SRV,A,CNAME`) asks no AAAA: a name with both A and
/// AAAA records gives its IPv4 addresses only, as a target and as a service host, and
/// `localhost` is 127.0.0.1 (not also `::1`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_resolve_to_ipv4_only() {
    let dns = DnsServer::start(30).await;
    dns.set("dual.test", &["127.0.26.1"]);
    dns.set6("dual.test", &["fd00::26:1"]);
    let cfg = config(
        "_format_version: '3.0'\nupstreams:\n- name: up\n  targets:\n  - target: dual.test:9000\n  - target: localhost:9001\n",
    );
    let r = resolver(&dns);
    let opts = Options {
        resolver: Some(Arc::clone(&r)),
        ..Default::default()
    };
    let bs = Balancers::build_with(&cfg, None, &Handle::current(), &opts).expect("build");
    assert!(bs.ready(Duration::from_secs(5)).await);
    let want: HashSet<SocketAddr> = ["127.0.26.1:9000", "127.0.0.1:9001"]
        .iter()
        .map(|s| s.parse().expect("addr"))
        .collect();
    assert_eq!(addrs(&bs, 20), want);
    let ctx = PickContext::default();
    for host in ["dual.test", "localhost"] {
        let a = r.resolve(host).await.expect("resolves");
        assert!(a.records.iter().all(|x| x.ip.is_ipv4()), "{host}: {a:?}");
        for _ in 0..4 {
            let p = bs.peer(host, 8080, &ctx, &[]).await.expect("peer");
            assert!(p.addr.is_ipv4(), "{host}: {}", p.addr);
        }
    }
    assert_eq!(dns.aaaa_queries.load(Ordering::SeqCst), 0, "AAAA was asked");
}

/// A `dns_order` that asks AAAA (`--dns-order`, Kong's setting) resolves names that have
/// only IPv6 addresses, and prefers the family it names first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dns_order_with_aaaa_resolves_ipv6() {
    let dns = DnsServer::start(30).await;
    dns.set6("six.test", &["fd00::28:1"]);
    dns.set("dual.test", &["127.0.28.1"]);
    dns.set6("dual.test", &["fd00::28:2"]);
    for (order, dual) in [
        ("LAST,SRV,A,AAAA,CNAME", "127.0.28.1"),
        ("aaaa,a", "fd00::28:2"),
    ] {
        let (families, srv) = silverback_balancer::Families::from_dns_order(order).expect(order);
        let r = Arc::new(Resolver::new(ResolverOptions {
            nameservers: Some(vec![dns.addr]),
            timeout: Duration::from_millis(500),
            families,
            srv,
            ..Default::default()
        }));
        let six = r.resolve("six.test").await.expect("six.test resolves");
        let ip: std::net::IpAddr = "fd00::28:1".parse().unwrap();
        assert_eq!(
            six.records.iter().map(|x| x.ip).collect::<Vec<_>>(),
            [ip],
            "{order}"
        );
        let d = r.resolve("dual.test").await.expect("dual.test resolves");
        let want: std::net::IpAddr = dual.parse().unwrap();
        assert_eq!(
            d.records.iter().map(|x| x.ip).collect::<Vec<_>>(),
            [want],
            "{order}"
        );
    }
    // Kong's default asks A only; an order without either, or with another word, is refused
    use silverback_balancer::Families;
    assert_eq!(
        Families::from_dns_order("LAST,SRV,A,CNAME"),
        Ok((Families::V4, true))
    );
    assert_eq!(Families::from_dns_order("AAAA"), Ok((Families::V6, false)));
    assert!(Families::from_dns_order("LAST,SRV,CNAME").is_err());
    assert!(Families::from_dns_order("A,MX").is_err());
}

/// Kong keeps one address per SRV record, so a record's weight counts once however many
/// addresses its target has (here split over them), and only the records of the best
/// (lowest) priority are used.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn srv_weights_count_once_per_record_and_only_the_best_priority() {
    let dns = DnsServer::start(30).await;
    dns.set("one.test", &["127.0.27.1"]);
    dns.set("two.test", &["127.0.27.2", "127.0.27.3"]);
    dns.set("backup.test", &["127.0.27.9"]);
    dns.set_srv_prio(
        "srv.test",
        &[
            (10, 10, 9001, "one.test"),
            (10, 10, 9002, "two.test"),
            (20, 50, 9003, "backup.test"),
        ],
    );
    let opts = options(&dns);
    let cfg = config(
        "_format_version: '3.0'\nupstreams:\n- name: up\n  targets:\n  - target: srv.test:80\n",
    );
    let bs = Balancers::build_with(&cfg, None, &Handle::current(), &opts).expect("build");
    assert!(bs.ready(Duration::from_secs(5)).await);
    let h = bs.get("up").expect("up").health();
    let got: Vec<(String, u16, u32)> = h.targets[0]
        .data
        .addresses
        .iter()
        .map(|a| (a.ip.clone(), a.port, a.weight))
        .collect();
    assert_eq!(
        got,
        vec![
            ("127.0.27.1".into(), 9001, 10),
            ("127.0.27.2".into(), 9002, 5),
            ("127.0.27.3".into(), 9002, 5),
        ]
    );
    assert_eq!(h.targets[0].data.weight.total, 20);
    let b = bs.get("up").expect("up");
    let mut counts = std::collections::HashMap::new();
    for _ in 0..400 {
        let p = b.pick(&PickContext::default(), &[]).expect("peer");
        *counts.entry(p.addr.port()).or_insert(0) += 1;
    }
    assert_eq!((counts[&9001], counts[&9002]), (200, 200), "{counts:?}");
    assert!(!counts.contains_key(&9003), "{counts:?}");
}

/// A request right after a new balancer is built waits for its hostname targets' first
/// answers instead of finding no peer, and a target whose name server does not answer does
/// not hold its resolved siblings out of the ring meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_hostname_targets_are_waited_for_and_resolved_apart() {
    let dns = DnsServer::start(30).await;
    dns.set("fast.test", &["127.0.28.1"]);
    // (sorted first: a pass in order would look it up first)
    let cfg = config(
        "_format_version: '3.0'\nupstreams:\n- name: up\n  targets:\n  - target: a.silent.test:9000\n  - target: fast.test:9000\n",
    );
    let opts = options(&dns);
    let bs = Balancers::build_with(&cfg, None, &Handle::current(), &opts).expect("build");
    let started = std::time::Instant::now();
    let p = bs
        .peer("up", 80, &PickContext::default(), &[])
        .await
        .expect("a peer once fast.test resolved");
    assert_eq!(
        p.addr,
        "127.0.28.1:9000".parse::<SocketAddr>().expect("addr")
    );
    // (the silent name's queries time out after 500 ms, each tried twice)
    assert!(
        started.elapsed() < Duration::from_millis(400),
        "{:?}",
        started.elapsed()
    );
    assert!(
        !bs.get("up").expect("up").resolved(),
        "silent.test answered?"
    );
    // A bound of zero does not wait for anything.
    let cfg2 = config(
        "_format_version: '3.0'\nupstreams:\n- name: up\n  targets:\n  - target: other.silent.test:9000\n",
    );
    let bs2 = Balancers::build_with(&cfg2, None, &Handle::current(), &opts).expect("build");
    let started = std::time::Instant::now();
    let e = bs2
        .peer_within(
            "up",
            80,
            &PickContext::default(),
            &[],
            Duration::from_millis(100),
        )
        .await
        .expect_err("nothing resolved");
    assert!(matches!(e, NoPeer::NoHealthyPeer), "{e:?}");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(100) && took < Duration::from_millis(400),
        "{took:?}"
    );
}
