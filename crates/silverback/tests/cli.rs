//! The binary's command line, run as a process.
#![allow(clippy::unwrap_used)] // test helpers panic on setup failures

use std::process::{Command, Output};

fn silverback(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_silverback"));
    cmd.args(args);
    for var in [
        "SILVERBACK_ROUTER_FLAVOR",
        "KONG_ROUTER_FLAVOR",
        "SILVERBACK_LOG_LEVEL",
        "KONG_LOG_LEVEL",
    ] {
        cmd.env_remove(var);
    }
    cmd.envs(env.iter().copied());
    cmd.output().expect("the binary runs")
}

/// Runs the binary with `args` and `env`, which must stop it at start (status 1) with an
/// error that says `why`; its standard error.
fn refused_at_start(args: &[&str], env: &[(&str, &str)], why: &str) -> String {
    let out = silverback(args, env);
    assert_eq!(out.status.code(), Some(1), "{args:?} {env:?}");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(stderr.contains(why), "{why}: {stderr}");
    stderr
}

fn write(dir: &tempfile::TempDir, name: &str, body: &str) -> String {
    let p = dir.path().join(name);
    std::fs::write(&p, body).unwrap();
    p.to_string_lossy().into_owned()
}

const VALID: &str = r#"
_format_version: "3.0"
services:
- name: echo
  url: http://127.0.0.1:9000/api
  routes:
  - name: r
    paths: ["/echo"]
"#;

const INVALID: &str = r#"
_format_version: "3.0"
services:
- name: a
  host: bad_host!
  routes:
  - name: r1
    protocols: [http]
- name: b
  url: http://ok.test
  retries: -1
"#;

const EXPRESSION: &str = r#"
_format_version: "3.0"
services:
- name: echo
  url: http://127.0.0.1:9000
  routes:
  - name: r
    expression: 'http.path ^= "/x"'
"#;

#[test]
fn validate_accepts_a_valid_file() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(&dir, "kong.yaml", VALID);
    let out = silverback(&["validate", &f], &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("valid (2 entities"), "{stdout}");
}

#[test]
fn validate_prints_every_error_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(&dir, "kong.yaml", INVALID);
    let out = silverback(&["validate", &f], &[]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("service 'a': host: invalid value: bad_host!"),
        "{stdout}"
    );
    assert!(stdout.contains("route 'r1': must set one of 'methods', 'hosts', 'headers', 'paths' when 'protocols' is 'http'"), "{stdout}");
    assert!(
        stdout.contains("service 'b': retries: value should be between 0 and 32767"),
        "{stdout}"
    );
    assert_eq!(stdout.lines().count(), 3, "{stdout}");
    // in the document's order (the JSON body alone takes Kong's: see below)
    let at = |needle: &str| {
        stdout
            .find(needle)
            .unwrap_or_else(|| panic!("{needle}: {stdout}"))
    };
    assert!(at("service 'a'") < at("route 'r1'"), "{stdout}");
    assert!(at("route 'r1'") < at("service 'b'"), "{stdout}");
}

#[test]
fn validate_json_output_is_kongs_flattened_body() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(&dir, "kong.yaml", INVALID);
    let out = silverback(&["validate", "-o", "json", &f], &[]);
    assert_eq!(out.status.code(), Some(1));
    let body: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(body["code"], 14);
    assert_eq!(body["name"], "invalid declarative configuration");
    let names: Vec<&str> = body["flattened_errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["entity_name"].as_str().unwrap())
        .collect();
    // in Kong's order: the services from the last, a service's routes before it
    assert_eq!(names, ["b", "r1", "a"]);
}

#[test]
fn validate_reports_an_unreadable_file() {
    let out = silverback(&["validate", "/nonexistent/kong.yaml"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read /nonexistent/kong.yaml"));
}

#[test]
fn kong_env_aliases_apply_and_silverback_vars_win() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(&dir, "kong.yaml", EXPRESSION);
    // traditional_compatible rejects `expression` routes
    assert_eq!(silverback(&["validate", &f], &[]).status.code(), Some(1));
    // KONG_ROUTER_FLAVOR is honoured
    let out = silverback(&["validate", &f], &[("KONG_ROUTER_FLAVOR", "expressions")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // SILVERBACK_ROUTER_FLAVOR wins over the alias
    let out = silverback(
        &["validate", &f],
        &[
            ("KONG_ROUTER_FLAVOR", "expressions"),
            ("SILVERBACK_ROUTER_FLAVOR", "traditional_compatible"),
        ],
    );
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn version_prints_the_crate_version() {
    let out = silverback(&["version"], &[]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("silverback {}", env!("CARGO_PKG_VERSION"))
    );
}

/// A free loopback port (bound and released; the race with other processes is acceptable in tests).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Kills the child when dropped, so a failing test leaves no process behind.
struct Child(std::process::Child);
impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The first answer to `GET path` on `port`, retried while the process starts (20 s at most).
fn wait_for(port: u16, path: &str) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        if let Some(r) = http_get(port, path) {
            return r;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the proxy did not come up"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

fn http_get(port: u16, path: &str) -> Option<String> {
    http_get_with(port, path, "")
}

/// `extra`: more header lines, each ending in `\r\n`.
fn http_get_with(port: u16, path: &str, extra: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{extra}\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

#[test]
fn proxy_serves_a_declarative_file_with_kong_settings_from_the_environment() {
    let (proxy, admin, status) = (free_port(), free_port(), free_port());
    let dir = tempfile::tempdir().unwrap();
    let f = write(
        &dir,
        "kong.yaml",
        &format!(
            "_format_version: \"3.0\"\nservices:\n- name: s\n  url: http://127.0.0.1:{status}\n  routes:\n  - name: r\n    paths: [\"/status\"]\n    strip_path: false\n"
        ),
    );
    let token_file = write(&dir, "admin-token", "tok-123\n");
    let child = Command::new(env!("CARGO_BIN_EXE_silverback"))
        .args(["proxy", "--config", &f])
        .env("KONG_PROXY_LISTEN", format!("127.0.0.1:{proxy}"))
        .env("KONG_ADMIN_LISTEN", format!("127.0.0.1:{admin}"))
        .env("SILVERBACK_STATUS_LISTEN", format!("127.0.0.1:{status}"))
        .env("KONG_NGINX_WORKER_PROCESSES", "1")
        .env("SILVERBACK_ADMIN_TOKEN_FILE", &token_file)
        .env("KONG_HEADERS", "server_tokens")
        .env("KONG_NGINX_HTTP_LARGE_CLIENT_HEADER_BUFFERS", "4 4k")
        .env("KONG_NGINX_PROXY_LARGE_CLIENT_HEADER_BUFFERS", "2 16k")
        .env("KONG_NGINX_ADMIN_CLIENT_MAX_BODY_SIZE", "1k")
        .env("KONG_UPSTREAM_KEEPALIVE_POOL_SIZE", "7")
        .env("KONG_UPSTREAM_KEEPALIVE_MAX_REQUESTS", "0")
        .env("KONG_UPSTREAM_KEEPALIVE_IDLE_TIMEOUT", "15")
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let _child = Child(child);
    let resp = wait_for(proxy, "/status");
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(
        resp.contains("\"configuration_hash\""),
        "proxied to the status API: {resp}"
    );
    // The admin API wants the token from the file (the newline is not part of it).
    let refused = http_get(admin, "/").unwrap();
    assert!(refused.starts_with("HTTP/1.1 401"), "{refused}");
    let admin_root = http_get_with(admin, "/", "Kong-Admin-Token: tok-123\r\n").unwrap();
    assert!(
        admin_root.contains("\"router_flavor\":\"traditional_compatible\""),
        "{admin_root}"
    );
    for setting in [
        "\"upstream_keepalive_pool_size\":7",
        "\"upstream_keepalive_max_requests\":0",
        "\"upstream_keepalive_idle_timeout\":15",
    ] {
        assert!(admin_root.contains(setting), "{setting}: {admin_root}");
    }
    let miss = http_get(proxy, "/other").unwrap();
    assert!(miss.starts_with("HTTP/1.1 404"), "{miss}");
    // KONG_HEADERS=server_tokens: Server, but no request id or latency.
    let lower = miss.to_ascii_lowercase();
    assert!(lower.contains("\r\nserver: kong/"), "{miss}");
    assert!(!lower.contains("x-kong-request-id"), "{miss}");
    assert!(!lower.contains("x-kong-response-latency"), "{miss}");
    // Head buffers: the proxy's (2 x 16k) take a 12 KiB cookie that nginx's default 8k
    // would refuse, not a 17 KiB one; the admin API has the http-level ones (4 x 4k).
    let cookie = |n: usize| format!("Cookie: {}\r\n", "c".repeat(n));
    // (on a path no route takes: the status API behind `/status` has the http-level ones)
    let big = http_get_with(proxy, "/other", &cookie(12_000)).unwrap();
    assert!(big.starts_with("HTTP/1.1 404"), "{big}");
    let too_big = http_get_with(proxy, "/other", &cookie(17_000)).unwrap();
    assert!(too_big.starts_with("HTTP/1.1 400"), "{too_big}");
    assert!(
        too_big.contains("Request header or cookie too large"),
        "{too_big}"
    );
    let admin_big = http_get_with(
        admin,
        "/",
        &format!("Kong-Admin-Token: tok-123\r\n{}", cookie(5_000)),
    )
    .unwrap();
    assert!(admin_big.starts_with("HTTP/1.1 400"), "{admin_big}");
    // The admin API's body limit (1k here): a larger announced body is refused at once, with
    // nginx's own page (Kong's admin server has no `error_page`).
    let post = |n: usize| {
        http_raw(
            admin,
            &format!(
                "POST /config HTTP/1.1\r\nHost: localhost\r\nKong-Admin-Token: tok-123\r\n\
                 Content-Type: application/json\r\nContent-Length: {n}\r\n\r\n"
            ),
        )
        .unwrap()
    };
    let over = post(1025);
    assert!(over.starts_with("HTTP/1.1 413"), "{over}");
    assert!(
        over.to_ascii_lowercase()
            .contains("\r\ncontent-type: text/html; charset=utf-8\r\n"),
        "{over}"
    );
    assert!(
        over.ends_with(
            "\r\n\r\n<html>\r\n<head><title>413 Request Entity Too Large</title></head>\r\n\
             <body>\r\n<center><h1>413 Request Entity Too Large</h1></center>\r\n\
             </body>\r\n</html>\r\n"
        ),
        "{over}"
    );
}

#[test]
fn proxy_rejects_bad_header_buffer_settings() {
    for (var, value, message) in [
        (
            "KONG_NGINX_HTTP_LARGE_CLIENT_HEADER_BUFFERS",
            "8k",
            "nginx_http_large_client_header_buffers: '8k': expected a number of buffers and their size",
        ),
        (
            "KONG_NGINX_PROXY_LARGE_CLIENT_HEADER_BUFFERS",
            "0 8k",
            "nginx_proxy_large_client_header_buffers: '0 8k': the number of buffers must be a positive integer",
        ),
        (
            "KONG_NGINX_HTTP_CLIENT_HEADER_BUFFER_SIZE",
            "1 k",
            "nginx_http_client_header_buffer_size: '1 k': invalid buffer size '1 k'",
        ),
    ] {
        let out = silverback(&["proxy"], &[(var, value)]);
        assert_eq!(out.status.code(), Some(1), "{var}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(message), "{var}: {stderr}");
    }
}

/// Sends `request` as is, returns the answer (read until the server closes, at most 5 s).
fn http_raw(port: u16, request: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .ok()?;
    s.write_all(request.as_bytes()).ok()?;
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    Some(out)
}

/// `/debug/node/log-level`: the level given at start (in Kong's names), changed through the
/// admin API for a timeout, changes what is logged, then the configured level returns.
#[test]
fn the_log_level_changes_through_the_admin_api_for_its_timeout() {
    let (proxy, admin, status) = (free_port(), free_port(), free_port());
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("stderr.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_silverback"))
        .args(["proxy"])
        .env("KONG_LOG_LEVEL", "notice")
        .env("KONG_PROXY_LISTEN", format!("127.0.0.1:{proxy}"))
        .env("KONG_ADMIN_LISTEN", format!("127.0.0.1:{admin}"))
        .env("KONG_STATUS_LISTEN", format!("127.0.0.1:{status}"))
        .env("KONG_NGINX_WORKER_PROCESSES", "1")
        .stderr(log)
        .spawn()
        .unwrap();
    let _child = Child(child);
    let level = wait_for(admin, "/debug/node/log-level");
    assert!(
        level.ends_with("{\"message\":\"log level: notice\"}"),
        "{level}"
    );
    // a refused head is logged at debug level only
    let refused = || {
        let r = http_raw(proxy, "GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n").unwrap();
        assert!(r.starts_with("HTTP/1.1 400"), "{r}");
    };
    let logged = || {
        std::fs::read_to_string(&log_path)
            .unwrap()
            .matches("request head refused")
            .count()
    };
    let put = |path: &str| {
        http_raw(
            admin,
            &format!("PUT {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"),
        )
        .unwrap()
    };
    refused();
    let r = put("/debug/node/log-level/verbose");
    assert!(
        r.starts_with("HTTP/1.1 400") && r.ends_with("\"unknown log level: verbose\"}"),
        "{r}"
    );
    let r = put("/debug/node/log-level/debug?timeout=2");
    assert!(
        r.starts_with("HTTP/1.1 200") && r.ends_with("\"log level changed\"}"),
        "{r}"
    );
    let r = http_get(admin, "/debug/node/log-level").unwrap();
    assert!(r.ends_with("\"log level: debug\"}"), "{r}");
    // the pending revert is a one-shot job in `GET /timers`
    let timers = http_get(admin, "/timers").unwrap();
    assert!(
        timers.contains("\"log-level-revert\":{\"name\":\"log-level-revert\""),
        "{timers}"
    );
    refused();
    // the change lasts its timeout: then notice again, and debug lines stop
    std::thread::sleep(std::time::Duration::from_millis(2500));
    let r = http_get(admin, "/debug/node/log-level").unwrap();
    assert!(r.ends_with("\"log level: notice\"}"), "{r}");
    let timers = http_get(admin, "/timers").unwrap();
    assert!(!timers.contains("log-level-revert"), "{timers}");
    refused();
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert_eq!(
        logged(),
        1,
        "{}",
        std::fs::read_to_string(&log_path).unwrap()
    );
}

#[test]
fn an_invalid_log_level_is_refused_at_start() {
    // a malformed filter, and a single word that is not a level (a filter would take it
    // for a target and log nothing else)
    for bad in ["loud==", "warning"] {
        let out = silverback(&["--log-level", bad, "version"], &[]);
        assert_eq!(out.status.code(), Some(2), "{bad}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&format!("invalid log level '{bad}'")),
            "{stderr}"
        );
    }
    let out = silverback(&["version"], &[("KONG_LOG_LEVEL", "crit")]);
    assert!(out.status.success());
}

#[test]
fn proxy_refuses_an_invalid_file_naming_the_error() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(&dir, "kong.yaml", INVALID);
    refused_at_start(
        &[
            "proxy",
            "--config",
            &f,
            "--proxy-listen",
            "127.0.0.1:0",
            "--admin-listen",
            "off",
            "--status-listen",
            "off",
        ],
        &[],
        "service 'a': host: invalid value: bad_host!",
    );
}

#[test]
fn proxy_rejects_a_bad_headers_setting() {
    refused_at_start(
        &["proxy", "--headers", "server_tokens, X-Bogus"],
        &[],
        "headers: invalid entry 'X-Bogus'",
    );
    refused_at_start(
        &["proxy"],
        &[("KONG_HEADERS_UPSTREAM", "via")],
        "headers_upstream: invalid entry 'via'",
    );
}

#[test]
fn proxy_rejects_a_bad_body_size_setting() {
    refused_at_start(
        &["proxy"],
        &[("KONG_NGINX_HTTP_CLIENT_MAX_BODY_SIZE", "8 mb")],
        "nginx_http_client_max_body_size: invalid size '8 mb'",
    );
    refused_at_start(
        &["proxy"],
        &[("KONG_NGINX_ADMIN_CLIENT_MAX_BODY_SIZE", "10 m")],
        "nginx_admin_client_max_body_size: invalid size '10 m'",
    );
}

#[test]
fn proxy_rejects_a_bad_proxy_buffer_size() {
    for (v, why) in [
        ("160 k", "invalid size '160 k'"),
        ("0", "must be more than 0"),
    ] {
        refused_at_start(
            &["proxy"],
            &[("KONG_NGINX_PROXY_PROXY_BUFFER_SIZE", v)],
            &format!("nginx_proxy_proxy_buffer_size: {why}"),
        );
    }
}

/// A process's open-file limits (soft, hard) from `/proc`; `None` stands for unlimited.
fn open_file_limits(pid: u32) -> (Option<u64>, Option<u64>) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let mut v = line["Max open files".len()..]
        .split_whitespace()
        .map(|n| n.parse().ok());
    (v.next().unwrap(), v.next().unwrap())
}

/// Starts `silverback proxy` (one worker, listeners on free loopback ports, `env`) under a
/// shell that first runs `ulimit` with `limit` (`-Sn 256`); returns it with its proxy and
/// admin ports.
fn proxy_under_ulimit(
    limit: &str,
    env: &[(&str, &str)],
    stderr: std::process::Stdio,
) -> (std::process::Child, u16, u16) {
    let (proxy, admin, status) = (free_port(), free_port(), free_port());
    let child = Command::new("sh")
        .args([
            "-c",
            &format!("ulimit {limit} && exec \"$0\" \"$@\""),
            env!("CARGO_BIN_EXE_silverback"),
            "proxy",
        ])
        .env("KONG_PROXY_LISTEN", format!("127.0.0.1:{proxy}"))
        .env("KONG_ADMIN_LISTEN", format!("127.0.0.1:{admin}"))
        .env("KONG_STATUS_LISTEN", format!("127.0.0.1:{status}"))
        .env("KONG_NGINX_WORKER_PROCESSES", "1")
        .envs(env.iter().copied())
        .stderr(stderr)
        .spawn()
        .unwrap();
    (child, proxy, admin)
}

/// [`proxy_under_ulimit`] with the soft open-file limit at 256, once its admin API answers.
fn proxy_with_low_soft_limit(env: &[(&str, &str)]) -> Child {
    let (child, _, admin) = proxy_under_ulimit("-Sn 256", env, std::process::Stdio::null());
    let child = Child(child);
    let up = wait_for(admin, "/status");
    assert!(up.starts_with("HTTP/1.1 200"), "{up}");
    child
}

/// Kong's `nginx_main_worker_rlimit_nofile`: `auto` (the default) takes the soft limit up to
/// the hard one, so a shell's low `ulimit -n` does not cap the connections; a number sets
/// both limits, as nginx's `worker_rlimit_nofile`.
#[test]
fn proxy_sets_the_open_file_limit() {
    let (_, hard) = open_file_limits(std::process::id());
    let nr_open: u64 = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let auto = proxy_with_low_soft_limit(&[]);
    let (soft_now, hard_now) = open_file_limits(auto.0.id());
    assert_eq!(hard_now, hard, "the hard limit is left as it was");
    assert_eq!(
        soft_now,
        Some(hard.unwrap_or(nr_open)),
        "the soft limit is raised from 256"
    );
    drop(auto);

    // A number, at most the hard limit (lowering it needs no privilege).
    let n = hard.unwrap_or(u64::MAX).min(2048);
    let set =
        proxy_with_low_soft_limit(&[("KONG_NGINX_MAIN_WORKER_RLIMIT_NOFILE", &n.to_string())]);
    assert_eq!(open_file_limits(set.0.id()), (Some(n), Some(n)));
}

/// Out of file descriptors, a listener stops accepting for 500 ms at a time, as nginx does
/// (one log line per wait, not a flood), and serves again once connections close.
#[test]
fn proxy_waits_out_a_full_file_table_and_recovers() {
    use std::io::BufRead;
    // Both limits at 48: the gateway cannot raise them.
    let (mut child, proxy, _) = proxy_under_ulimit(
        "-n 48",
        &[("SILVERBACK_LOG_FORMAT", "text")],
        std::process::Stdio::piped(),
    );
    let stderr = child.stderr.take().unwrap();
    let _child = Child(child);
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let sink = lines.clone();
    std::thread::spawn(move || {
        for l in std::io::BufReader::new(stderr).lines() {
            let Ok(l) = l else { break };
            sink.lock().unwrap().push(l);
        }
    });
    let up = wait_for(proxy, "/");
    assert!(up.starts_with("HTTP/1.1 404"), "{up}");
    let failures = || {
        lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains("accept failed"))
            .count()
    };
    assert_eq!(failures(), 0);
    // More connections than descriptors: the gateway accepts until its table is full.
    let held: Vec<_> = (0..80)
        .map(|_| std::net::TcpStream::connect(("127.0.0.1", proxy)).unwrap())
        .collect();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while failures() == 0 {
        assert!(std::time::Instant::now() < deadline, "no accept failed");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let first = failures();
    std::thread::sleep(std::time::Duration::from_millis(1600));
    let more = failures() - first;
    // 500 ms apart: three or four more in 1.6 s (at 20 ms apart, about eighty).
    assert!(
        (1..=5).contains(&more),
        "{more} more accept failures in 1.6 s"
    );
    assert!(
        lines
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("accept failed") && l.contains("Too many open files")),
        "the log names the cause"
    );
    drop(held);
    // Serves again once the connections are gone.
    let again = wait_for(proxy, "/");
    assert!(again.starts_with("HTTP/1.1 404"), "{again}");
}

#[test]
fn proxy_rejects_a_bad_open_file_limit() {
    for v in ["0", "many"] {
        refused_at_start(
            &["proxy"],
            &[("KONG_NGINX_MAIN_WORKER_RLIMIT_NOFILE", v)],
            &format!("invalid nginx_main_worker_rlimit_nofile '{v}'"),
        );
    }
}

/// The access logs as Kong's Kubernetes charts set them, by default: the proxy's lines (in
/// Kong's format) and the admin API's (nginx's `combined`) on stdout, none of the status
/// listener's; `off` turns a log off.
/// What the proxy writes on stdout, with `env`, for a request to its admin API, one to its
/// proxy (`GET /none`, answered 404) and one to its status listener.
fn stdout_of_three_requests(env: &[(&str, &str)]) -> String {
    use std::io::Read;
    let (proxy, admin, status) = (free_port(), free_port(), free_port());
    let mut child = Child(
        Command::new(env!("CARGO_BIN_EXE_silverback"))
            .arg("proxy")
            .env("KONG_PROXY_LISTEN", format!("127.0.0.1:{proxy}"))
            .env("KONG_ADMIN_LISTEN", format!("127.0.0.1:{admin}"))
            .env("KONG_STATUS_LISTEN", format!("127.0.0.1:{status}"))
            .envs(env.iter().copied())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let up = wait_for(admin, "/status");
    assert!(up.starts_with("HTTP/1.1 200"), "{up}");
    let none = http_get_with(proxy, "/none", "User-Agent: probe/1\r\n").unwrap();
    assert!(none.starts_with("HTTP/1.1 404"), "{none}");
    assert!(
        http_get(status, "/status")
            .unwrap()
            .starts_with("HTTP/1.1 200")
    );
    // (lines are written within 50 ms)
    std::thread::sleep(std::time::Duration::from_millis(500));
    let _ = child.0.kill();
    let mut out = String::new();
    child
        .0
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    out
}

#[test]
fn proxy_writes_access_logs_to_stdout_by_default() {
    let out = stdout_of_three_requests(&[]);
    let lines: Vec<&str> = out.lines().collect();
    // (the admin API answered once it was up: its earlier tries were refused connections)
    assert_eq!(lines.len(), 2, "{out}");
    assert!(lines[0].starts_with("127.0.0.1 - - ["), "{out}");
    assert!(
        lines[0].contains("] \"GET /status HTTP/1.1\" 200 "),
        "{out}"
    );
    assert!(lines[0].ends_with(" \"-\" \"-\""), "{out}");
    assert!(
        lines[1].contains("] \"GET /none HTTP/1.1\" 404 ")
            && lines[1].contains(" \"-\" \"probe/1\" kong_request_id: \""),
        "{out}"
    );
    let quiet = stdout_of_three_requests(&[
        ("KONG_PROXY_ACCESS_LOG", "off"),
        ("KONG_ADMIN_ACCESS_LOG", "off"),
    ]);
    assert_eq!(quiet, "");
}

/// On SIGUSR1 the access logs are opened again, as nginx reopens them: once a rotation moved
/// the file away, new lines go to a new file.
#[test]
fn proxy_reopens_its_access_log_on_usr1() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let (proxy, admin, status) = (free_port(), free_port(), free_port());
    let child = Child(
        Command::new(env!("CARGO_BIN_EXE_silverback"))
            .arg("proxy")
            .env("KONG_PROXY_LISTEN", format!("127.0.0.1:{proxy}"))
            .env("KONG_ADMIN_LISTEN", format!("127.0.0.1:{admin}"))
            .env("KONG_STATUS_LISTEN", format!("127.0.0.1:{status}"))
            .env("KONG_PROXY_ACCESS_LOG", &log)
            .env("KONG_ADMIN_ACCESS_LOG", "off")
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for(admin, "/status");
    let read = |p: &std::path::Path| std::fs::read_to_string(p).unwrap_or_default();
    let until = |what: &dyn Fn() -> bool| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !what() {
            assert!(std::time::Instant::now() < deadline, "timed out");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    };
    http_get(proxy, "/before").unwrap();
    until(&|| read(&log).contains("GET /before "));
    let moved = dir.path().join("access.log.1");
    std::fs::rename(&log, &moved).unwrap();
    let killed = Command::new("kill")
        .args(["-USR1", &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    // (the reopening happens once the signal is handled: requests until a new file has one)
    until(&|| {
        http_get(proxy, "/after").unwrap();
        read(&log).contains("GET /after ")
    });
    assert!(read(&moved).contains("GET /before "));
    assert!(!read(&log).contains("GET /before "));
}

/// Kong's `nginx_http_log_format` defines a format the access logs can name: here JSON lines.
#[test]
fn proxy_writes_access_logs_in_a_format_of_ones_own() {
    let format = r#"json escape=json '{"method":"$request_method","uri":"$request_uri","status":$status,'
        '"bytes":$body_bytes_sent,"agent":"$http_user_agent","id":"$kong_request_id","took":$request_time}'"#;
    let out = stdout_of_three_requests(&[
        ("KONG_NGINX_HTTP_LOG_FORMAT", format),
        ("KONG_PROXY_ACCESS_LOG", "/dev/stdout json"),
        ("KONG_ADMIN_ACCESS_LOG", "off"),
    ]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 1, "{out}");
    let v: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(v["method"], "GET", "{out}");
    assert_eq!(v["uri"], "/none", "{out}");
    assert_eq!(v["status"], 404, "{out}");
    assert_eq!(v["agent"], "probe/1", "{out}");
    assert!(v["bytes"].as_u64().unwrap() > 0, "{out}");
    assert_eq!(v["id"].as_str().unwrap().len(), 32, "{out}");
    assert!(v["took"].as_f64().unwrap() < 5.0, "{out}");
    refused_at_start(
        &["proxy"],
        &[("KONG_NGINX_HTTP_LOG_FORMAT", "json escape=yaml '$status'")],
        "nginx_http_log_format: unknown escape 'yaml'",
    );
}

#[test]
fn proxy_rejects_a_bad_access_log() {
    refused_at_start(
        &["proxy"],
        &[("KONG_PROXY_ACCESS_LOG", "/tmp/a.log main")],
        "proxy_access_log: unknown log format 'main'",
    );
    refused_at_start(
        &["proxy", "--admin-access-log", "/nonexistent-dir/admin.log"],
        &[],
        "admin_access_log: cannot open /nonexistent-dir/admin.log",
    );
}

#[test]
fn proxy_rejects_a_bad_worker_connections() {
    for v in ["0", "many"] {
        refused_at_start(
            &["proxy"],
            &[("KONG_NGINX_EVENTS_WORKER_CONNECTIONS", v)],
            &format!("invalid nginx_events_worker_connections '{v}'"),
        );
    }
}

#[test]
fn proxy_rejects_a_bad_ssl_cipher_suite_or_protocols() {
    for (env, why) in [
        (
            [
                ("KONG_SSL_CIPHER_SUITE", "strong"),
                ("KONG_SSL_PROTOCOLS", ""),
            ],
            "invalid ssl_cipher_suite 'strong'",
        ),
        (
            [
                ("KONG_SSL_CIPHER_SUITE", "custom"),
                ("KONG_SSL_PROTOCOLS", "TLSv1.1"),
            ],
            "invalid ssl_protocols 'TLSv1.1': names neither TLSv1.2 nor TLSv1.3",
        ),
    ] {
        refused_at_start(&["proxy"], &env, why);
    }
}

#[test]
fn proxy_rejects_a_bad_error_default_type() {
    refused_at_start(
        &["proxy"],
        &[("KONG_ERROR_DEFAULT_TYPE", "text/csv")],
        "invalid error_default_type 'text/csv'",
    );
}

/// A bad `ssl_cert` / `ssl_cert_key` (Kong's names and variables) stops the start with an
/// error naming the setting and the file; key material given inline is never printed.
#[test]
fn proxy_rejects_a_bad_ssl_cert_without_printing_keys() {
    let dir = tempfile::tempdir().unwrap();
    let pki = format!(
        "{}/../config/tests/fixtures/pki",
        std::env::var("CARGO_MANIFEST_DIR")
            .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string())
    );
    let missing = dir.path().join("missing.crt").display().to_string();
    refused_at_start(
        &["proxy"],
        &[
            ("KONG_SSL_CERT", &missing),
            ("KONG_SSL_CERT_KEY", &format!("{pki}/rsa.key")),
        ],
        &format!("ssl_cert: failed loading certificate from {missing}: no such file"),
    );
    // The ECDSA key, given as PEM text, for the RSA certificate.
    let key = std::fs::read_to_string(format!("{pki}/ec.key")).unwrap();
    let stderr = refused_at_start(
        &["proxy", "--ssl-cert", &format!("{pki}/rsa.crt")],
        &[("SILVERBACK_SSL_CERT_KEY", &key)],
        &format!("ssl_cert_key entry 1 (PEM text) does not match ssl_cert {pki}/rsa.crt"),
    );
    let secret_line = key.lines().nth(1).unwrap();
    assert!(!stderr.contains(secret_line), "{stderr}");
    // The key as a flag's value (PEM text starts with `-`) and on one line, as environment
    // variables often carry it: the error names the entry and never quotes the text.
    let one_line = key.replace('\n', "");
    let rsa = format!("{pki}/rsa.crt");
    let stderr = refused_at_start(
        &["proxy", "--ssl-cert", &rsa, "--ssl-cert-key", &one_line],
        &[],
        "ssl_cert_key: failed loading key from entry 1 (PEM text): invalid key",
    );
    assert!(!stderr.contains(secret_line), "{stderr}");
    let as_numbers = secret_line
        .bytes()
        .take(8)
        .map(|b| b.to_string())
        .collect::<Vec<_>>();
    assert!(!stderr.contains(&as_numbers.join(", ")), "{stderr}");
}

/// `KONG_PREFIX` (Kong's `prefix`) is where the default certificates are kept, a relative
/// path taken from the working directory: a pair there that cannot be used stops the start
/// with an error naming the file by its absolute path, never quoting the key.
#[test]
fn proxy_reads_default_certificates_from_the_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let ssl = dir.path().join("kong").join("ssl");
    std::fs::create_dir_all(&ssl).unwrap();
    let pki = format!(
        "{}/../config/tests/fixtures/pki",
        std::env::var("CARGO_MANIFEST_DIR")
            .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string())
    );
    std::fs::copy(format!("{pki}/rsa.crt"), ssl.join("kong-default.crt")).unwrap();
    let secret = "c2VjcmV0IGtleSBtYXRlcmlhbA";
    std::fs::write(
        ssl.join("kong-default.key"),
        format!("-----BEGIN PRIVATE KEY-----\n{secret}\n-----END PRIVATE KEY-----\n"),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_silverback"))
        .args(["proxy", "--proxy-listen", "127.0.0.1:0 ssl"])
        .current_dir(dir.path())
        .env_remove("SILVERBACK_PREFIX")
        .env("KONG_PREFIX", "kong")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let key = dir
        .path()
        .canonicalize()
        .unwrap()
        .join("kong/ssl/kong-default.key");
    assert!(
        stderr.contains(&format!(
            "default certificate file {}: invalid key",
            key.display()
        )),
        "{stderr}"
    );
    assert!(!stderr.contains(secret), "{stderr}");
}

#[test]
fn proxy_rejects_a_bad_listen_setting() {
    let out = silverback(&["proxy", "--proxy-listen", "127.0.0.1:8000 sslx"], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("invalid proxy_listen '127.0.0.1:8000 sslx'")
    );
}

#[test]
fn run_serves_kubernetes_manifests_from_a_directory_and_follows_changes() {
    let (proxy, admin, status, health) = (free_port(), free_port(), free_port(), free_port());
    let dir = tempfile::tempdir().unwrap();
    let manifests = |path: &str| {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: st, namespace: default}}\nspec:\n  ports: [{{name: http, port: {status}}}]\n---\n\
             apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: st-1\n  namespace: default\n  labels: {{kubernetes.io/service-name: st}}\n\
             addressType: IPv4\nports: [{{name: http, port: {status}}}]\nendpoints: [{{addresses: [127.0.0.1], conditions: {{ready: true}}}}]\n---\n\
             apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: st, namespace: default}}\nspec:\n  ingressClassName: kong\n  rules:\n  - http:\n      paths:\n      - path: {path}\n        pathType: Prefix\n        backend: {{service: {{name: st, port: {{number: {status}}}}}}}\n"
        )
    };
    write(&dir, "app.yaml", &manifests("/status"));
    let child = Command::new(env!("CARGO_BIN_EXE_silverback"))
        .args(["run", "--manifests", &dir.path().to_string_lossy()])
        .env("SILVERBACK_PROXY_LISTEN", format!("127.0.0.1:{proxy}"))
        .env("SILVERBACK_ADMIN_LISTEN", format!("127.0.0.1:{admin}"))
        .env("SILVERBACK_STATUS_LISTEN", format!("127.0.0.1:{status}"))
        .env(
            "SILVERBACK_HEALTH_PROBE_BIND_ADDRESS",
            format!("127.0.0.1:{health}"),
        )
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let _child = Child(child);
    let wait_for = |path: &str, want: &str| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let r = http_get(proxy, path).unwrap_or_default();
            if r.starts_with(want) {
                return r;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{path}: wanted {want}, last answer: {r}"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    };
    let resp = wait_for("/status", "HTTP/1.1 200");
    assert!(
        resp.contains("\"configuration_hash\""),
        "proxied to the status API: {resp}"
    );
    // An edit of the manifests is picked up without a restart.
    write(&dir, "app.yaml", &manifests("/metrics"));
    let resp = wait_for("/metrics", "HTTP/1.1 200");
    assert!(resp.contains("kong_"), "{resp}");
    wait_for("/status", "HTTP/1.1 404");
}

const MANIFESTS: &str = r#"
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: web, namespace: shop, uid: 7d1e0f7c-0000-4000-8000-000000000001}
spec:
  ingressClassName: kong
  rules:
  - host: shop.test
    http:
      paths:
      - {path: /cart, pathType: Prefix, backend: {service: {name: cart, port: {number: 80}}}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: orphan, namespace: shop}
spec:
  ingressClassName: kong
  rules:
  - http:
      paths:
      - {path: /nowhere, pathType: Prefix, backend: {service: {name: missing, port: {number: 80}}}}
---
apiVersion: v1
kind: Service
metadata: {name: cart, namespace: shop}
spec:
  ports: [{port: 80, targetPort: 8080}]
"#;

#[test]
fn translate_prints_the_configuration_and_the_problems() {
    let dir = tempfile::tempdir().unwrap();
    write(&dir, "app.yaml", MANIFESTS);
    let path = dir.path().to_string_lossy().into_owned();

    // YAML by default; a missing Service is a problem naming the Ingress, and (as KIC) its
    // route stays, to an upstream without targets (503).
    let out = silverback(&["translate", "-f", &path], &[]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let yaml = String::from_utf8(out.stdout).unwrap();
    assert!(
        yaml.contains("_format_version: '3.0'") || yaml.contains("_format_version: \"3.0\""),
        "{yaml}"
    );
    assert!(yaml.contains("shop.web.cart.shop.test.80"), "{yaml}");
    assert!(
        yaml.contains("/nowhere"),
        "the Ingress to a missing Service keeps its route: {yaml}"
    );
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("orphan") && err.contains("missing"), "{err}");

    // JSON with the expressions flavor: a valid document with expression routes.
    let out = silverback(
        &[
            "translate",
            "-f",
            &path,
            "-o",
            "json",
            "--router-flavor",
            "expressions",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let route = &doc["services"][0]["routes"][0];
    assert!(
        route["expression"]
            .as_str()
            .is_some_and(|e| e.contains("/cart")),
        "{doc}"
    );

    // The output is accepted by `validate`, and without problems the exit code is 0.
    std::fs::write(
        dir.path().join("app.yaml"),
        MANIFESTS
            .split("---")
            .filter(|d| !d.contains("orphan"))
            .collect::<Vec<_>>()
            .join("---"),
    )
    .unwrap();
    let out = silverback(&["translate", "-f", &path], &[]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let file = write(
        &dir,
        "kong.yaml.out",
        &String::from_utf8(out.stdout).unwrap(),
    );
    let out = silverback(&["validate", &file], &[]);
    assert!(out.status.success(), "{out:?}");
}
