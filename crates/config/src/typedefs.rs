//! Kong's common field types (`kong/db/schema/typedefs.lua`) as schema fields and value
//! validators, with Kong's error messages.

use std::net::IpAddr;

use crate::schema::{Field, Kind};
use crate::uri;

/// Every protocol a route or plugin may name.
pub const PROTOCOLS: &[&str] = &[
    "grpc",
    "grpcs",
    "http",
    "https",
    "tcp",
    "tls",
    "tls_passthrough",
    "udp",
    "ws",
    "wss",
];

/// Protocols a service may use.
pub const SERVICE_PROTOCOLS: &[&str] = &[
    "grpc",
    "grpcs",
    "http",
    "https",
    "tcp",
    "tls",
    "tls_passthrough",
    "udp",
    "ws",
    "wss",
];

/// A UUID string (Kong's `uuid` marker; an entity's `id` adds `auto`).
pub fn uuid(name: &'static str) -> Field {
    Field::string(name).uuid_marker().check_str(|s| {
        if uuid::Uuid::try_parse(s).is_ok() {
            Ok(())
        } else {
            Err("expected a valid UUID".into())
        }
    })
}

/// `created_at` / `updated_at` in seconds: any integer, set by the data plane when absent
/// (Kong's `auto_timestamp_s`).
pub fn auto_timestamp_s(name: &'static str) -> Field {
    Field::any_integer(name).timestamp_marker().auto()
}

/// A target's `created_at` / `updated_at` in seconds with milliseconds: any number (Kong's
/// `auto_timestamp_ms`).
pub fn auto_timestamp_ms(name: &'static str) -> Field {
    Field::new(name, Kind::Number { between: None })
        .timestamp_marker()
        .auto()
}

/// `tags`: a set of printable strings without `,` and `/`.
pub fn tags() -> Field {
    Field::set("tags", Field::string("").check_str(validate_tag))
}

/// Validates one tag.
pub fn validate_tag(t: &str) -> Result<(), String> {
    // byte by byte: every byte of a non-ASCII character is non-ASCII, and a `str` holds
    // only valid UTF-8, so this is the rule on characters
    if t.bytes()
        .all(|b| (b.is_ascii_graphic() || !b.is_ascii()) && b != b',' && b != b'/')
    {
        Ok(())
    } else {
        Err(format!(
            "invalid tag '{t}': expected printable ascii (except `,` and `/`) or valid utf-8 sequences"
        ))
    }
}

/// `utf8_name`: alphanumerics, `.`, `-`, `_`, `~` and non-ASCII characters.
pub fn utf8_name(name: &'static str) -> Field {
    Field::string(name).check_str(|s| {
        if s.chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-_~".contains(c) || !c.is_ascii())
        {
            Ok(())
        } else {
            Err(format!(
                "invalid value '{s}': it must only contain alphanumeric and '., -, _, ~' characters"
            ))
        }
    })
}

/// `port`: 0..65535.
pub fn port(name: &'static str) -> Field {
    Field::integer(name, 0, 65535)
}

/// Timeouts in milliseconds: 1..2^31-2.
pub fn timeout(name: &'static str) -> Field {
    Field::integer(name, 1, 2_147_483_646).default(60_000)
}

/// `header_name`.
pub fn header_name(name: &'static str) -> Field {
    Field::string(name).check_str(validate_header_name)
}

/// Validates a header name.
pub fn validate_header_name(h: &str) -> Result<(), String> {
    if !h.is_empty()
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        Ok(())
    } else {
        Err(format!(
            "bad header name '{h}', allowed characters are A-Z, a-z, 0-9, '_', and '-'"
        ))
    }
}

/// Whether `s` is a syntactically valid DNS hostname (labels of letters, digits, `-`, `_`).
pub fn is_hostname(s: &str) -> bool {
    let s = s.strip_suffix('.').unwrap_or(s);
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

/// A host split into name and optional port, as `utils.normalize_ip` does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort<'a> {
    /// Hostname or IP (IPv6 without brackets).
    pub host: &'a str,
    /// The port, when one was given.
    pub port: Option<u16>,
    /// Whether `host` is an IP address.
    pub is_ip: bool,
}

/// Splits `host[:port]` / `[v6]:port` / `v6` as Kong's `normalize_ip` reads them
/// (`kong/tools/ip.lua`): a value with two or more colons is an IPv6 address (bracketed when
/// it has a port); one whose characters other than colons are all digits and dots an IPv4
/// address (Kong's `hostname_type`); anything else a name as `check_hostname` sees it. Only
/// an all-digit suffix after the last colon is a port, so `example.com:` and
/// `example.com:abc` are invalid names, not names with a bad port. Errors: `"invalid port
/// number"` (a port above 65535) or `"invalid value"`.
pub fn split_host_port(s: &str) -> Result<HostPort<'_>, &'static str> {
    let colons = s.bytes().filter(|&b| b == b':').count();
    if colons >= 2 {
        if let Some(rest) = s.strip_prefix('[') {
            let (h, after) = rest.split_once(']').ok_or("invalid value")?;
            if h.parse::<std::net::Ipv6Addr>().is_err() {
                return Err("invalid value");
            }
            let port = match after {
                "" => None,
                p => Some(parse_port(p.strip_prefix(':').ok_or("invalid value")?)?),
            };
            return Ok(HostPort {
                host: h,
                port,
                is_ip: true,
            });
        }
        if s.parse::<std::net::Ipv6Addr>().is_err() {
            return Err("invalid value");
        }
        return Ok(HostPort {
            host: s,
            port: None,
            is_ip: true,
        });
    }
    let (h, port) = match s.rsplit_once(':') {
        Some((h, p)) => (h, Some(parse_port(p)?)),
        None => (s, None),
    };
    if h.parse::<std::net::Ipv4Addr>().is_ok() {
        return Ok(HostPort {
            host: h,
            port,
            is_ip: true,
        });
    }
    if looks_like_ipv4(h) || !is_kong_hostname(h) {
        return Err("invalid value");
    }
    Ok(HostPort {
        host: h,
        port,
        is_ip: false,
    })
}

fn looks_like_ipv4(h: &str) -> bool {
    !h.is_empty() && h.bytes().all(|b| b.is_ascii_digit() || b == b'.')
}

/// A name as Kong's `check_hostname` accepts it: letters, digits, `-`, `.` and `_`; no label
/// ending with `-`; no empty label but a last one (a trailing dot). Kong sets no length limit
/// and accepts a label starting with `-`, so this is looser than [`is_hostname`].
fn is_kong_hostname(h: &str) -> bool {
    let body = h.strip_suffix('.').unwrap_or(h);
    !body.is_empty()
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        && body.split('.').all(|l| !l.is_empty() && !l.ends_with('-'))
}

/// A port after a colon: all digits (else the value is no `host:port`) and at most 65535.
fn parse_port(p: &str) -> Result<u16, &'static str> {
    if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
        return Err("invalid value");
    }
    p.parse::<u16>().map_err(|_| "invalid port number")
}

/// `host`: a hostname or IP without port.
pub fn host(name: &'static str) -> Field {
    Field::string(name).check_str(validate_host)
}

/// Validates a `host` value.
pub fn validate_host(s: &str) -> Result<(), String> {
    match split_host_port(s) {
        Ok(hp) if hp.port.is_none() => Ok(()),
        Ok(_) => Err(format!("invalid value: {s}")),
        Err(_) => Err(format!("invalid value: {s}")),
    }
}

/// `host_with_optional_port`.
pub fn validate_host_with_optional_port(s: &str) -> Result<(), String> {
    match split_host_port(s) {
        Ok(_) => Ok(()),
        Err("invalid port number") => Err(format!("invalid port number: {s}")),
        Err(_) => Err(format!("invalid value: {s}")),
    }
}

fn check_wildcard(s: &str) -> Result<String, String> {
    let n = s.matches('*').count();
    if n > 1 {
        return Err("invalid wildcard: must have at most one wildcard".into());
    }
    if n == 1 {
        if let Some(rest) = s.strip_prefix("*.") {
            return Ok(format!("wildcard.{rest}"));
        }
        if let Some(rest) = s.strip_suffix(".*") {
            return Ok(format!("{rest}.wildcard"));
        }
        // `host.*:port`
        if let Some((h, p)) = s.rsplit_once(':')
            && let Some(rest) = h.strip_suffix(".*")
        {
            return Ok(format!("{rest}.wildcard:{p}"));
        }
        return Err("invalid wildcard: must be placed at leftmost or rightmost label".into());
    }
    Ok(s.to_string())
}

/// Route `hosts` element: a host with optional port and at most one wildcard label.
pub fn validate_route_host(s: &str) -> Result<(), String> {
    let plain = check_wildcard(s)?;
    match split_host_port(&plain) {
        Ok(hp) if hp.is_ip && s.contains('*') => Err(format!("invalid value: {s}")),
        Ok(_) => Ok(()),
        Err("invalid port number") => Err(format!("invalid port number: {s}")),
        Err(_) => Err(format!("invalid value: {s}")),
    }
}

/// Kong's `sni` type (`validate_sni` in `kong/db/schema/typedefs.lua`): a hostname without
/// wildcard, port or IP. The type of route `snis` elements under the `traditional` router
/// flavor and of an upstream's `healthchecks.active.https_sni`. The checks and messages are
/// Kong's, in its order: `invalid value: …` for what Kong's `normalize_ip` rejects (a `*`
/// among them), then `must not be an IP`, then `must not have a port` (a port above 65535
/// included).
pub fn validate_sni(s: &str) -> Result<(), String> {
    match split_host_port(s) {
        Ok(hp) if hp.is_ip => Err("must not be an IP".into()),
        Ok(hp) if hp.port.is_some() => Err("must not have a port".into()),
        Ok(_) => Ok(()),
        Err("invalid port number") => Err("must not have a port".into()),
        Err(_) => Err(format!("invalid value: {s}")),
    }
}

/// Kong's `wildcard_host` (`validate_wildcard_host` in `kong/db/schema/typedefs.lua`), the
/// type of an SNI entity's `name` and (Kong 3.7+, router flavors `traditional_compatible`
/// and `expressions`) of route `snis` elements: at most one `*`, as the first or the last
/// character (`*`, `*.example.com`, `example.*`, and also `*foo.example.com` or
/// `example.co*`, which the router matches as a suffix or a prefix but the certificate
/// lookup never asks for), and otherwise what [`validate_sni`] accepts. The checks and
/// messages are Kong's, in its order: the position of the first `*`, then their count, then
/// [`validate_sni`]'s on the name with its `*` replaced by `wildcard` (which an `invalid
/// value` message shows, as Kong's does). Names are read as Kong's `normalize_ip` reads them
/// (see [`split_host_port`]); Kong's `hostname_type` and `check_hostname` are followed for
/// the cases the tests pin (ports, IPv4/IPv6 look-alikes, label characters), not
/// necessarily for every IPv6 spelling Kong's own parser accepts or refuses.
pub fn validate_wildcard_host(s: &str) -> Result<(), String> {
    if let Some(i) = s.find('*') {
        if i != 0 && i != s.len() - 1 {
            return Err("wildcard must be leftmost or rightmost character".into());
        }
        if s.matches('*').count() > 1 {
            return Err("only one wildcard must be specified".into());
        }
        return validate_sni(&s.replace('*', "wildcard"));
    }
    validate_sni(s)
}

/// `path` (for services and cookie paths): starts with `/`, no empty segments, RFC 3986
/// characters and valid percent-encoding.
pub fn path(name: &'static str) -> Field {
    Field::string(name).check_str(validate_path)
}

/// Validates a `path` value.
pub fn validate_path(p: &str) -> Result<(), String> {
    if !p.starts_with('/') {
        return Err("should start with: /".into());
    }
    if p.contains("//") {
        return Err("must not have empty segments".into());
    }
    check_rfc3986_and_percent(p).map_err(|(e, _)| e)
}

/// Checks that `re` is a valid regex without compiling it when a parse is enough: the
/// router compiles route regexes lazily, so a load of many regex routes should not pay for
/// compiling each one here. Patterns that might exceed the compiled-size limit (counted
/// repetitions, long patterns) are still compiled, so the same patterns are rejected.
fn check_regex(re: &str) -> Result<(), String> {
    if let Err(e) = regex_syntax::Parser::new().parse(re) {
        return Err(e.to_string());
    }
    if re.contains('{') || re.len() > 128 {
        regex::Regex::new(re).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Returns `(message, is_percent_error)`.
fn check_rfc3986_and_percent(p: &str) -> Result<(), (String, bool)> {
    let b = p.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let ok = i + 2 < b.len() + 1
                && b.len() > i + 2
                && b[i + 1].is_ascii_hexdigit()
                && b[i + 2].is_ascii_hexdigit();
            if !ok {
                let end = (i + 3).min(b.len());
                let frag = String::from_utf8_lossy(&b[i..end]);
                return Err((format!("invalid url-encoded value: '{frag}'"), true));
            }
            i += 3;
            continue;
        }
        i += 1;
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || ".-_~/%:@!$&'()*+,;=".contains(c);
    if !p.chars().all(allowed) {
        return Err((
            format!(
                "invalid path: '{p}' (characters outside of the reserved list of RFC 3986 found)"
            ),
            false,
        ));
    }
    Ok(())
}

/// Validates a route path: a normalised prefix (`/...`) or a regex (`~/...`).
pub fn validate_router_path(p: &str) -> Result<(), String> {
    if !(p.starts_with('/') || p.starts_with("~/")) {
        return Err("should start with: / (fixed path) or ~/ (regex path)".into());
    }
    if p.contains("//") {
        return Err("must not have empty segments".into());
    }
    if let Some(re) = p.strip_prefix('~') {
        if let Err((e, true)) = check_rfc3986_and_percent(re) {
            return Err(e);
        }
        if let Err(reason) = check_regex(&crate::router_regex(re)) {
            let reason = reason.lines().last().unwrap_or("").trim().to_string();
            return Err(format!("invalid regex: '{re}' (PCRE returned: {reason})"));
        }
        return Ok(());
    }
    check_rfc3986_and_percent(p).map_err(|(e, _)| e)?;
    let n = uri::normalize(p, true);
    if n != p {
        return Err(format!("non-normalized path, consider use '{n}' instead"));
    }
    Ok(())
}

/// Validates an IP address or CIDR range.
pub fn validate_ip_or_cidr(s: &str) -> Result<(), String> {
    let ok = match s.split_once('/') {
        Some((ip, bits)) => match (ip.parse::<IpAddr>(), bits.parse::<u8>()) {
            (Ok(IpAddr::V4(_)), Ok(b)) => b <= 32,
            (Ok(IpAddr::V6(_)), Ok(b)) => b <= 128,
            _ => false,
        },
        None => s.parse::<IpAddr>().is_ok(),
    };
    if ok {
        Ok(())
    } else {
        Err(format!("invalid ip or cidr range: '{s}'"))
    }
}

/// `sources`/`destinations` elements: `{ip, port}` with at least one of the two.
pub fn ip_port_set(name: &'static str) -> Field {
    use crate::schema::Record;
    Field::set(
        name,
        Field::record(
            "",
            Record::new(vec![
                Field::string("ip").check_str(validate_ip_or_cidr),
                port("port"),
            ])
            .check(crate::checks::EntityCheck::at_least_one_of(&["ip", "port"])),
        ),
    )
}

/// A protocol set (`protocols`) limited to `allowed`.
pub fn protocols(allowed: &'static [&'static str], default: &[&str]) -> Field {
    Field::set("protocols", Field::one_of("", allowed))
        .len(1, None)
        .default(serde_json::Value::from(default.to_vec()))
}

/// Whether a field's kind is a reference (used when hoisting nested entities).
pub fn is_foreign(f: &Field) -> Option<&'static str> {
    match f.kind {
        Kind::Foreign(e) => Some(e),
        _ => None,
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn regexes_are_checked_by_parsing_and_oversized_ones_by_compiling() {
        assert!(check_regex("^/a(").unwrap_err().contains("unclosed group"));
        assert!(check_regex("^/a[0-9]+/(?<id>\\d+)$").is_ok());
        let huge = check_regex("^/(a{1000}){1000}").unwrap_err();
        assert!(huge.contains("size limit"), "{huge}");
    }

    use super::*;

    #[test]
    fn hosts() {
        assert!(validate_route_host("example.com").is_ok());
        assert!(validate_route_host("*.example.com").is_ok());
        assert!(validate_route_host("example.*").is_ok());
        assert!(validate_route_host("example.com:8080").is_ok());
        assert!(validate_route_host("10.0.0.1").is_ok());
        assert_eq!(
            validate_route_host("a.*.com").unwrap_err(),
            "invalid wildcard: must be placed at leftmost or rightmost label"
        );
        assert_eq!(
            validate_route_host("*.a.*").unwrap_err(),
            "invalid wildcard: must have at most one wildcard"
        );
        assert_eq!(
            validate_route_host("ex ample").unwrap_err(),
            "invalid value: ex ample"
        );
        assert_eq!(
            validate_route_host("a.com:99999").unwrap_err(),
            "invalid port number: a.com:99999"
        );
        assert!(validate_host("10.0.0.1").is_ok());
        assert!(validate_host("::1").is_ok());
        assert!(validate_host("a.com:80").is_err());
    }

    /// Kong's `validate_wildcard_host`: what it accepts, and its messages in its order.
    #[test]
    fn wildcard_hosts() {
        for ok in [
            "*",
            "*.example.com",
            "example.*",
            "*foo.example.com",
            "example.co*",
            "example.com",
            "example.com.",
            "A.Example.COM",
        ] {
            assert_eq!(validate_wildcard_host(ok), Ok(()), "{ok}");
        }
        for (bad, message) in [
            (
                "a.*.com",
                "wildcard must be leftmost or rightmost character",
            ),
            ("a*b", "wildcard must be leftmost or rightmost character"),
            ("*.a.*", "only one wildcard must be specified"),
            ("**", "only one wildcard must be specified"),
            ("1.2.3.4", "must not be an IP"),
            ("::1", "must not be an IP"),
            ("[::1]:80", "must not be an IP"),
            ("example.com:80", "must not have a port"),
            ("*.example.com:80", "must not have a port"),
            ("example.com:99999", "must not have a port"),
            ("ex ample.com", "invalid value: ex ample.com"),
            // the name as Kong checks it, `*` replaced
            ("*.ex ample.com", "invalid value: wildcard.ex ample.com"),
            // only an all-digit suffix is a port (Kong's `check_hostname`)
            ("example.com:", "invalid value: example.com:"),
            ("example.com:abc", "invalid value: example.com:abc"),
            (
                "*.example.com:abc",
                "invalid value: wildcard.example.com:abc",
            ),
            // two colons: an IPv6 address for Kong's `hostname_type`, and not a valid one
            ("a:b:c", "invalid value: a:b:c"),
            ("[::1]:abc", "invalid value: [::1]:abc"),
            ("1.2.3.4:", "invalid value: 1.2.3.4:"),
            ("1.2.3.4:80", "must not be an IP"),
            ("a-.example.com", "invalid value: a-.example.com"),
            ("a..example.com", "invalid value: a..example.com"),
        ] {
            assert_eq!(
                validate_wildcard_host(bad),
                Err(message.to_string()),
                "{bad}"
            );
        }
        // Kong's `check_hostname` sets no label length and lets a label start with `-`
        let long = format!("{}.example.com", "a".repeat(70));
        for ok in ["-a.example.com", long.as_str(), "*.-a.example.com"] {
            assert_eq!(validate_wildcard_host(ok), Ok(()), "{ok}");
        }
    }

    /// Kong's `validate_sni`: `wildcard_host` without the wildcard step, so a `*` is an
    /// invalid name.
    #[test]
    fn snis() {
        for ok in [
            "example.com",
            "example.com.",
            "A.Example.COM",
            "a_b.example",
        ] {
            assert_eq!(validate_sni(ok), Ok(()), "{ok}");
        }
        for (bad, message) in [
            ("*", "invalid value: *"),
            ("*.example.com", "invalid value: *.example.com"),
            ("example.*", "invalid value: example.*"),
            ("1.2.3.4", "must not be an IP"),
            ("::1", "must not be an IP"),
            ("[::1]:443", "must not be an IP"),
            ("example.com:443", "must not have a port"),
            ("example.com:99999", "must not have a port"),
            ("example.com:", "invalid value: example.com:"),
            ("ex ample.com", "invalid value: ex ample.com"),
        ] {
            assert_eq!(validate_sni(bad), Err(message.to_string()), "{bad}");
        }
    }

    #[test]
    fn paths() {
        assert!(validate_router_path("/foo").is_ok());
        assert!(validate_router_path("~/foo/(?<id>\\d+)$").is_ok());
        assert_eq!(
            validate_router_path("foo").unwrap_err(),
            "should start with: / (fixed path) or ~/ (regex path)"
        );
        assert_eq!(
            validate_router_path("/foo/../bar").unwrap_err(),
            "non-normalized path, consider use '/bar' instead"
        );
        assert!(
            validate_router_path("~/foo(")
                .unwrap_err()
                .starts_with("invalid regex: '/foo('")
        );
        assert_eq!(
            validate_path("/a%zz").unwrap_err(),
            "invalid url-encoded value: '%zz'"
        );
        assert!(
            validate_path("/a b")
                .unwrap_err()
                .starts_with("invalid path")
        );
        assert_eq!(
            validate_path("/a//b").unwrap_err(),
            "must not have empty segments"
        );
    }

    #[test]
    fn misc() {
        assert!(validate_ip_or_cidr("10.0.0.0/8").is_ok());
        assert!(validate_ip_or_cidr("10.0.0.0/33").is_err());
        assert!(validate_header_name("x-foo_1").is_ok());
        assert!(validate_header_name("x foo").is_err());
        assert!(validate_tag("a/b").is_err());
        assert!(validate_tag("k8s-name:foo").is_ok());
        for (tag, ok) in [
            ("é-ü", true),
            ("日本", true),
            ("a b", false),
            ("a,b", false),
            ("tab\t", false),
            ("del\u{7f}", false),
            ("nbsp\u{a0}", true),
            ("", true),
        ] {
            assert_eq!(validate_tag(tag).is_ok(), ok, "{tag:?}");
        }
    }
}
