//! The access logs (`proxy_access_log`, `admin_access_log`, `status_access_log`) of a real
//! gateway serving real backends: one line per request in nginx's formats, written when the
//! answer ends.

mod support;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use silverback_proxy::access_log::{AccessLogSpec, LogFormat};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn routes(b: &Backend) -> String {
    format!(
        "_format_version: \"3.0\"\nservices:\n- name: echo\n  url: {}\n  routes:\n  - name: any\n    paths: [\"/any\"]\n    strip_path: false\n  - name: ws\n    paths: [\"/ws\"]\n    strip_path: false\n  - name: slow\n    paths: [\"/delay\"]\n    strip_path: false\n",
        b.url()
    )
}

fn spec(path: &Path, format: LogFormat) -> Option<AccessLogSpec> {
    Some(AccessLogSpec {
        path: path.to_path_buf(),
        format: Arc::new(format),
    })
}

/// The lines of `path` once it has `n` (within 5 s), each without its time, which is
/// checked to be nginx's `$time_local`.
async fn lines(path: &Path, n: usize) -> Vec<String> {
    let mut text = String::new();
    for _ in 0..250 {
        text = std::fs::read_to_string(path).unwrap_or_default();
        if text.lines().count() >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    text.lines()
        .map(|l| {
            let (a, rest) = l.split_once(" [").expect(l);
            let (time, b) = rest.split_once("] ").expect(l);
            assert_eq!(time.len(), 26, "{l}");
            assert!(
                time.ends_with(" +0000") && time.as_bytes()[2] == b'/',
                "{l}"
            );
            format!("{a} {b}")
        })
        .collect()
}

#[tokio::test]
async fn requests_are_logged_in_kongs_format_when_their_answers_end() {
    let b = Backend::start().await;
    let dir = TempDir::new("access");
    let log = dir.path().join("access.log");
    let mut s = silverback_proxy::Settings::loopback();
    s.proxy_access_log = spec(&log, LogFormat::kong());
    s.trusted_ips = silverback_proxy::Cidr::parse_list("127.0.0.0/8").unwrap();
    let g = Gw::start_with(s, Some(&routes(&b))).await;

    // proxied, with a user, a referrer and an agent; `$remote_addr` is realip's
    let mut c = H1::connect(g.http).await;
    let r = c
        .send(
            req("GET", "x", "/any/a?q=1")
                .header("authorization", "Basic YWxpY2U6c2VjcmV0") // alice:secret
                .header("referer", "http://from.example/")
                .header("user-agent", "agent \"7\"")
                .header("x-real-ip", "203.0.113.9")
                .body(Full::default())
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, 200);
    let id = r.header("x-kong-request-id").unwrap().to_string();
    let want = format!(
        "203.0.113.9 - alice \"GET /any/a?q=1 HTTP/1.1\" 200 {} \"http://from.example/\" \"agent \\x227\\x22\" kong_request_id: \"{id}\"",
        r.body.len()
    );
    assert_eq!(lines(&log, 1).await, std::slice::from_ref(&want));

    // no route: Kong's own 404; a `HEAD` sends no body bytes
    let r404 = c.get("x", "/nowhere").await;
    assert_eq!(r404.status, 404);
    let head = c
        .send(req("HEAD", "x", "/any/h").body(Full::default()).unwrap())
        .await;
    assert_eq!(head.status, 200);
    // HTTP/2 (h2c)
    let mut h2 = H2::h2c(g.http).await;
    assert_eq!(h2.get("http://x/any/2").await.status, 200);
    // a head refused before it was parsed: the request line as read
    let refused = raw(
        g.http,
        b"GET /a\x01b HTTP/1.1\r\nHost: x\r\n\r\n",
        Duration::from_secs(2),
    )
    .await;
    assert!(refused.starts_with("HTTP/1.1 400"), "{refused}");
    let refused_body = refused.split_once("\r\n\r\n").unwrap().1.len();
    let refused_id = refused
        .lines()
        .find_map(|l| l.strip_prefix("X-Kong-Request-Id: "))
        .unwrap()
        .to_string();

    let got = lines(&log, 5).await;
    assert_eq!(got.len(), 5, "{got:#?}");
    let id_of = |r: &Resp| r.header("x-kong-request-id").unwrap().to_string();
    assert_eq!(
        got[1],
        format!(
            "127.0.0.1 - - \"GET /nowhere HTTP/1.1\" 404 {} \"-\" \"-\" kong_request_id: \"{}\"",
            r404.body.len(),
            id_of(&r404)
        )
    );
    assert_eq!(
        got[2],
        format!(
            "127.0.0.1 - - \"HEAD /any/h HTTP/1.1\" 200 0 \"-\" \"-\" kong_request_id: \"{}\"",
            id_of(&head)
        )
    );
    assert!(
        got[3].starts_with("127.0.0.1 - - \"GET /any/2 HTTP/2.0\" 200 "),
        "{}",
        got[3]
    );
    assert_eq!(
        got[4],
        format!(
            "127.0.0.1 - - \"GET /a\\x01b HTTP/1.1\" 400 {refused_body} \"-\" \"-\" kong_request_id: \"{refused_id}\""
        )
    );
    assert_eq!(got[0], want);
    g.gw.shutdown().await;
}

/// A client that leaves before its answer is logged as nginx logs it, `499`; an upgraded
/// request is logged when its tunnel ends, with the bytes the tunnel sent the client.
#[tokio::test]
async fn a_client_gone_is_499_and_a_tunnel_is_logged_at_its_end() {
    let b = Backend::start().await;
    let dir = TempDir::new("access-end");
    let log = dir.path().join("logs/proxy.log");
    let mut s = silverback_proxy::Settings::loopback();
    // (relative: under the prefix, whose `logs/` is made)
    s.prefix = Some(dir.path().to_path_buf());
    s.proxy_access_log = Some(AccessLogSpec {
        path: "logs/proxy.log".into(),
        format: Arc::new(LogFormat::combined()),
    });
    let g = Gw::start_with(s, Some(&routes(&b))).await;

    let mut s = tokio::net::TcpStream::connect(g.http).await.unwrap();
    // (a chunked body: the connection is hyper's, which sees the client leave)
    s.write_all(
        b"POST /delay/800 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(s);
    assert_eq!(
        lines(&log, 1).await,
        ["127.0.0.1 - - \"POST /delay/800 HTTP/1.1\" 499 0 \"-\" \"-\""]
    );

    let (mut s, head) = websocket_open(g.http, "/ws").await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let mut buf = vec![0u8; 4096];
    s.write_all(b"ping").await.unwrap();
    let n = s.read(&mut buf).await.unwrap();
    assert_eq!(&buf[..n], b"echo:ping");
    tokio::time::sleep(Duration::from_millis(200)).await;
    // (nothing while the tunnel is open)
    assert_eq!(lines(&log, 1).await.len(), 1);
    drop(s);
    let got = lines(&log, 2).await;
    assert_eq!(
        got.get(1).map(String::as_str),
        Some("127.0.0.1 - - \"GET /ws HTTP/1.1\" 101 9 \"-\" \"-\""),
        "{got:#?}"
    );
    g.gw.shutdown().await;
}

/// The admin listener logs in nginx's `combined` format; the status listener logs nothing
/// unless asked; a file named by two settings gets both listeners' lines.
#[tokio::test]
async fn admin_and_status_logs() {
    let dir = TempDir::new("access-admin");
    let shared = dir.path().join("shared.log");
    let mut s = silverback_proxy::Settings::loopback();
    s.proxy_access_log = spec(&shared, LogFormat::kong());
    s.admin_access_log = spec(&shared, LogFormat::combined());
    let g = Gw::start(None).await;
    let quiet = get(g.status, "localhost", "/status").await;
    assert_eq!(quiet.status, 200);
    g.gw.shutdown().await;

    let g = Gw::start_with(s, None).await;
    assert_eq!(get(g.admin, "localhost", "/status").await.status, 200);
    assert_eq!(get(g.status, "localhost", "/status").await.status, 200);
    let r = get(g.http, "x", "/none").await;
    assert_eq!(r.status, 404);
    // (the gateway's end writes out what is buffered)
    g.gw.shutdown().await;
    let got = lines(&shared, 2).await;
    assert_eq!(got.len(), 2, "{got:#?}");
    assert!(
        got[0].starts_with("127.0.0.1 - - \"GET /status HTTP/1.1\" 200 ")
            && got[0].ends_with(" \"-\" \"-\""),
        "{}",
        got[0]
    );
    assert!(
        got[1].contains("\"GET /none HTTP/1.1\" 404 ") && got[1].contains(" kong_request_id: \""),
        "{}",
        got[1]
    );
}

/// A log that cannot be opened stops the start, naming the setting and the file.
#[tokio::test]
async fn an_unopenable_log_stops_the_start() {
    let dir = TempDir::new("access-bad");
    let mut s = silverback_proxy::Settings::loopback();
    let path = dir.path().join("missing/dir/a.log");
    s.status_access_log = spec(&path, LogFormat::combined());
    let e = silverback_proxy::Gateway::start(s, None)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(e.starts_with("status_access_log: cannot open "), "{e}");
    assert!(e.contains("missing/dir/a.log"), "{e}");
}

/// A format of one's own reads the tries toward the upstream as nginx lists them: each try's
/// address, status (a refused connection's 502) and time, `, ` between them.
#[tokio::test]
async fn a_format_of_ones_own_lists_the_tries() {
    let b = Backend::start().await;
    let dir = TempDir::new("access-tries");
    let log = dir.path().join("tries.log");
    let format = LogFormat::parse(
        "tries escape=json '$status|$upstream_addr|$upstream_status|$upstream_response_time|$request_uri'",
    )
    .unwrap();
    assert!(format.unsupported().is_empty());
    let mut s = silverback_proxy::Settings::loopback();
    s.proxy_access_log = spec(&log, format);
    let cfg = format!(
        "_format_version: \"3.0\"\nservices:\n- name: up\n  url: {}\n  routes:\n  - name: up\n    paths: [\"/up\"]\n- name: dead\n  url: http://127.0.0.1:1\n  retries: 1\n  routes:\n  - name: dead\n    paths: [\"/dead\"]\n",
        b.url()
    );
    let g = Gw::start_with(s, Some(&cfg)).await;
    assert_eq!(get(g.http, "x", "/up").await.status, 200);
    assert_eq!(get(g.http, "x", "/dead").await.status, 502);
    assert_eq!(get(g.http, "x", "/nowhere").await.status, 404);
    let mut text = String::new();
    for _ in 0..250 {
        text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.lines().count() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let lines: Vec<Vec<&str>> = text.lines().map(|l| l.split('|').collect()).collect();
    assert_eq!(lines.len(), 3, "{text}");
    let be = b.addr.to_string();
    assert_eq!(lines[0][..3], ["200", be.as_str(), "200"], "{text}");
    assert_eq!(
        lines[1][..3],
        ["502", "127.0.0.1:1, 127.0.0.1:1", "502, 502"],
        "{text}"
    );
    let times: Vec<&str> = lines[1][3].split(", ").collect();
    assert_eq!(times.len(), 2, "{text}");
    assert!(times.iter().all(|t| t.starts_with("0.")), "{text}");
    // (no upstream: empty, as escape=json writes a variable without a value)
    assert_eq!(lines[2], ["404", "", "", "", "/nowhere"], "{text}");
    g.gw.shutdown().await;
}
