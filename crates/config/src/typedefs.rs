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
    // (Kong's pattern takes the space too: `^[ \033-\043\045\046\048-\126\128-\244]+$`)
    if t.bytes()
        .all(|b| (b.is_ascii_graphic() || b == b' ' || !b.is_ascii()) && b != b',' && b != b'/')
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

/// What Kong's `hostname_type` (`kong/tools/ip.lua`) makes of a value, by its characters
/// alone: two colons or more make an IPv6 address, digits and dots (colons aside) an IPv4
/// address, anything else a name. The kind says which parser reads the value, not that it is
/// valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostKind {
    /// Digits and dots, with at most one colon.
    Ipv4,
    /// Two colons or more.
    Ipv6,
    /// Anything else.
    Name,
}

/// Kong's `hostname_type` (see [`HostKind`]).
pub fn hostname_type(s: &str) -> HostKind {
    let colons = s.bytes().filter(|&b| b == b':').count();
    if colons > 1 {
        HostKind::Ipv6
    } else if s.len() > colons
        && s.bytes()
            .all(|b| b == b':' || b == b'.' || b.is_ascii_digit())
    {
        HostKind::Ipv4
    } else {
        HostKind::Name
    }
}

/// A host split into address and optional port, as Kong's `normalize_ip` accepts it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort<'a> {
    /// The name or address as written, without the port (and an IPv6 address without its
    /// brackets), in its spelling; [`HostPort::ip`] gives the address Kong reads in it
    /// (`010.0.0.1` is `10.0.0.1`).
    pub host: &'a str,
    /// The port, when one was given.
    pub port: Option<u16>,
    /// Which of Kong's parsers read it.
    pub kind: HostKind,
}

impl HostPort<'_> {
    /// Whether the host is an IP address (Kong's `type ~= "name"`).
    pub fn is_ip(&self) -> bool {
        self.kind != HostKind::Name
    }

    /// The address, read as Kong's `normalize_ip` reads it (see [`kong_ip`]); `None` for a
    /// name.
    pub fn ip(&self) -> Option<IpAddr> {
        match self.kind {
            HostKind::Name => None,
            _ => kong_ip(self.host),
        }
    }
}

/// An IP address (without port or brackets) read as Kong's `normalize_ip` reads it, where
/// Rust's parser is stricter: IPv4 octets in decimal with leading zeros (`010.0.0.1` is
/// `10.0.0.1`, as nginx's `ngx_inet_addr` reads it too), and IPv6 by Kong's expansion (a
/// leading or trailing `:` gets a `0`, the first `::` stands for the missing groups, even
/// none: `1:2:3:4:5:6:7::8` is `1:2:3:4:5:6:7:8`, `1::2:` is `1::2:0`). `None` when Kong
/// would refuse it, or it is a name.
pub fn kong_ip(s: &str) -> Option<IpAddr> {
    match hostname_type(s) {
        HostKind::Ipv4 => ipv4_octets(s).map(IpAddr::from),
        HostKind::Ipv6 => ipv6_groups(s).map(IpAddr::from),
        HostKind::Name => None,
    }
}

/// Four dot-separated decimal octets of 1 to 3 digits, each at most 255 (`normalize_ipv4`).
fn ipv4_octets(a: &str) -> Option<[u8; 4]> {
    let mut out = [0u8; 4];
    let mut n = 0;
    for o in a.split('.') {
        if n == 4 || !(1..=3).contains(&o.len()) || !all_digits(o) {
            return None;
        }
        out[n] = o.parse::<u8>().ok()?;
        n += 1;
    }
    (n == 4).then_some(out)
}

/// Why Kong's `normalize_ip` refuses a value; `Display` gives Kong's error string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostError<'a> {
    /// `invalid port number`: a port above 65535.
    Port,
    /// `invalid ipv4 address: <value>` (`normalize_ipv4`).
    Ipv4(&'a str),
    /// `invalid ipv6 address: <value>` (`normalize_ipv6`).
    Ipv6(&'a str),
    /// `invalid ipv6 address`, without the value: something other than `:<digits>` after a
    /// bracketed address (`normalize_ipv6`).
    Ipv6Suffix,
    /// `invalid hostname: <value>` (`check_hostname`).
    Hostname(&'a str),
}

impl std::fmt::Display for HostError<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HostError::Port => f.write_str("invalid port number"),
            HostError::Ipv4(s) => write!(f, "invalid ipv4 address: {s}"),
            HostError::Ipv6(s) => write!(f, "invalid ipv6 address: {s}"),
            HostError::Ipv6Suffix => f.write_str("invalid ipv6 address"),
            HostError::Hostname(s) => write!(f, "invalid hostname: {s}"),
        }
    }
}

/// Splits and checks `name[:port]`, `ipv4[:port]`, `ipv6` or `[ipv6][:port]` as Kong's
/// `normalize_ip` (`kong/tools/ip.lua`) does: [`hostname_type`] picks the parser, then
/// - IPv4 (`normalize_ipv4`): four dot-separated octets of 1 to 3 digits, each at most 255
///   (`010.0.0.1` is valid), then `:<digits>` or nothing; octets are checked before the port;
/// - IPv6 (`normalize_ipv6`): an address in brackets (balanced, from the first character)
///   may be followed by `:<digits>`, checked before the address; an address without brackets
///   has no port. The address is read as Kong reads it: a leading or trailing `:` gets a `0`,
///   the first `::` is expanded to the missing groups, and eight groups of 1 to 4 hex digits
///   must result (so `1:2:3:4:5:6:7::8` is valid, and an embedded IPv4 address is not);
/// - a name (`check_hostname`): a trailing `:<digits>` is a port, checked first; the rest is
///   letters, digits, `-`, `.` and `_`, with no empty label but a last one (a trailing dot)
///   and no label ending with `-`. Kong sets no length limit and lets a label start with
///   `-`, so this is looser than [`is_hostname`].
///
/// A port is any number of digits up to 65535 (`0` and leading zeros included), else
/// [`HostError::Port`]. One difference: `[v6]:` with nothing after the colon makes Kong's
/// `normalize_ipv6` raise a Lua error (it compares `tonumber("")`, nil, with 65535); here it
/// is [`HostError::Ipv6Suffix`].
pub fn split_host_port(s: &str) -> Result<HostPort<'_>, HostError<'_>> {
    let kind = hostname_type(s);
    let (host, port) = match kind {
        HostKind::Ipv4 => normalize_ipv4(s)?,
        HostKind::Ipv6 => normalize_ipv6(s)?,
        HostKind::Name => check_hostname(s)?,
    };
    Ok(HostPort { host, port, kind })
}

/// A port Kong reads with `tonumber` and refuses above 65535; `p` is all ASCII digits.
fn port_number(p: &str) -> Result<u16, HostError<'static>> {
    p.parse::<u16>().map_err(|_| HostError::Port)
}

fn all_digits(p: &str) -> bool {
    !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())
}

fn normalize_ipv4(s: &str) -> Result<(&str, Option<u16>), HostError<'_>> {
    let (addr, port) = match s.split_once(':') {
        Some((a, p)) if all_digits(p) => (a, Some(p)),
        Some(_) => return Err(HostError::Ipv4(s)),
        None => (s, None),
    };
    if ipv4_octets(addr).is_none() {
        return Err(HostError::Ipv4(s));
    }
    Ok((addr, port.map(port_number).transpose()?))
}

/// The end (index of the closing `]`) of a balanced `[...]` starting at the first byte, as
/// Lua's `%b[]` finds it.
fn balanced_brackets(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    if b.first() != Some(&b'[') {
        return None;
    }
    let mut depth = 0usize;
    for (i, &c) in b.iter().enumerate() {
        match c {
            b'[' => depth += 1,
            b']' => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
    }
    None
}

fn normalize_ipv6(s: &str) -> Result<(&str, Option<u16>), HostError<'_>> {
    let (addr, port) = match balanced_brackets(s) {
        Some(end) => {
            let rest = &s[end + 1..];
            let port = if rest.is_empty() {
                None
            } else {
                let digits = rest
                    .strip_prefix(':')
                    .filter(|d| d.bytes().all(|b| b.is_ascii_digit()))
                    .ok_or(HostError::Ipv6Suffix)?;
                if digits.is_empty() {
                    // Kong: a Lua error (see `split_host_port`)
                    return Err(HostError::Ipv6Suffix);
                }
                Some(port_number(digits)?)
            };
            (&s[1..end], port)
        }
        None => (s, None),
    };
    if ipv6_groups(addr).is_some() {
        Ok((addr, port))
    } else {
        Err(HostError::Ipv6(s))
    }
}

/// The eight groups `normalize_ipv6` makes of `a` (no brackets), or `None` when it refuses
/// it: a leading or trailing `:` gets a `0`, the first `::` is expanded to the missing groups
/// (none, when eight are written), and eight groups of 1 to 4 hex digits must result.
fn ipv6_groups(a: &str) -> Option<[u16; 8]> {
    let mut c = String::with_capacity(a.len() + 20);
    if a.starts_with(':') {
        c.push('0');
    }
    c.push_str(a);
    if c.ends_with(':') {
        c.push('0');
    }
    if c.contains("::") {
        let colons = c.bytes().filter(|&b| b == b':').count();
        let ins = format!(":{}", "0:".repeat(8usize.saturating_sub(colons)));
        c = c.replacen("::", &ins, 1);
    }
    let mut out = [0u16; 8];
    let mut n = 0;
    for g in c.split(':') {
        if n == 8 || !(1..=4).contains(&g.len()) || !g.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        out[n] = u16::from_str_radix(g, 16).ok()?;
        n += 1;
    }
    (n == 8).then_some(out)
}

fn check_hostname(s: &str) -> Result<(&str, Option<u16>), HostError<'_>> {
    let (name, port) = match s.rsplit_once(':') {
        Some((n, p)) if all_digits(p) => (n, Some(port_number(p)?)),
        _ => (s, None),
    };
    let chars_ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_');
    // Penlight's `split(name, ".")` keeps a trailing empty label, which Kong allows last
    let labels = name.split('.').count();
    let labels_ok = name
        .split('.')
        .enumerate()
        .all(|(i, l)| !l.ends_with('-') && (!l.is_empty() || i + 1 == labels));
    if chars_ok && labels_ok {
        Ok((name, port))
    } else {
        Err(HostError::Hostname(s))
    }
}

/// `host`: a hostname or IP without port.
pub fn host(name: &'static str) -> Field {
    Field::string(name).check_str(validate_host)
}

/// Kong's `host` type (`validate_host` in `kong/db/schema/typedefs.lua`): what
/// [`split_host_port`] accepts, without a port. `must not have a port` for a port, and for
/// one above 65535 too; `invalid value: <value>` for any other refusal.
pub fn validate_host(s: &str) -> Result<(), String> {
    match split_host_port(s) {
        Ok(hp) if hp.port.is_none() => Ok(()),
        Ok(_) | Err(HostError::Port) => Err("must not have a port".into()),
        Err(_) => Err(format!("invalid value: {s}")),
    }
}

/// Kong's `host_with_optional_port` (`validate_host_with_optional_port`): what
/// [`split_host_port`] accepts, with its error string as the message (`invalid hostname:
/// …`, `invalid ipv4 address: …`, `invalid port number`, …).
pub fn validate_host_with_optional_port(s: &str) -> Result<(), String> {
    split_host_port(s).map(|_| ()).map_err(|e| e.to_string())
}

/// Kong's route `hosts` element (`typedefs.hosts`): at most one `*` (`match_all`), then a
/// `*` only as `*.` at the start or `.*` at the end (`match_any`, so `example.*:80` is
/// refused), then `host_with_optional_port` on the value with its `*` replaced by `abc`
/// (`validate_host_with_wildcards`), whose messages show that replacement.
pub fn validate_route_host(s: &str) -> Result<(), String> {
    let n = s.matches('*').count();
    if n > 1 {
        return Err("invalid wildcard: must have at most one wildcard".into());
    }
    if n == 1 && !s.starts_with("*.") && !s.ends_with(".*") {
        return Err("invalid wildcard: must be placed at leftmost or rightmost label".into());
    }
    validate_host_with_optional_port(&s.replace('*', "abc"))
}

/// Kong's `sni` type (`validate_sni` in `kong/db/schema/typedefs.lua`): a hostname without
/// wildcard, port or IP. The type of route `snis` elements under the `traditional` router
/// flavor and of an upstream's `healthchecks.active.https_sni`. The checks and messages are
/// Kong 3.x's, in its order: `must not have a port` for a port above 65535 (whatever the
/// host), `invalid value: …` for any other refusal of [`split_host_port`] (a `*` among
/// them), then `must not be an IP` (`010.0.0.1` included), then `must not have a port`.
pub fn validate_sni(s: &str) -> Result<(), String> {
    match split_host_port(s) {
        Err(HostError::Port) => Err("must not have a port".into()),
        Err(_) => Err(format!("invalid value: {s}")),
        Ok(hp) if hp.is_ip() => Err("must not be an IP".into()),
        Ok(hp) if hp.port.is_some() => Err("must not have a port".into()),
        Ok(_) => Ok(()),
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
/// value` message shows, as Kong's does).
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

/// Kong's `validate_path`: the characters of RFC 3986's lists first, then the
/// percent-encoding. Returns `(message, is_percent_error)`.
fn check_rfc3986_and_percent(p: &str) -> Result<(), (String, bool)> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || ".-_~/%:@!$&'()*+,;=".contains(c);
    if !p.chars().all(allowed) {
        return Err((
            format!(
                "invalid path: '{p}' (characters outside of the reserved list of RFC 3986 found)"
            ),
            false,
        ));
    }
    let b = p.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let ok =
                b.len() > i + 2 && b[i + 1].is_ascii_hexdigit() && b[i + 2].is_ascii_hexdigit();
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
    // (Kong's `validate_path_with_regexes`: a regex's characters and escapes are the
    // regex's business; a prefix path with characters outside RFC 3986's lists is taken
    // when normal, as Kong's router matches it raw, and only a path within them is held to
    // its percent-encoding)
    if let Some(re) = p.strip_prefix('~') {
        if let Err(reason) = check_regex(&crate::router_regex(re)) {
            let reason = reason.lines().last().unwrap_or("").trim().to_string();
            return Err(format!("invalid regex: '{re}' (PCRE returned: {reason})"));
        }
        return Ok(());
    }
    if let Err((e, true)) = check_rfc3986_and_percent(p) {
        return Err(e);
    }
    // (escapes that decode to bytes that are not UTF-8 are not normal either: Kong's
    // `normalize` decodes them to raw bytes)
    let (n, normal) = match uri::try_normalize(p, true) {
        Ok(n) => {
            let same = n == p;
            (n, same)
        }
        Err(n) => (n, false),
    };
    if !normal {
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

    /// The address Kong reads in an IP host, where Rust's parser refuses the spelling.
    #[test]
    fn kong_ip_reads_kong_spellings() {
        let ok = [
            ("10.0.0.1", "10.0.0.1"),
            ("010.0.0.1", "10.0.0.1"),
            ("001.002.003.255", "1.2.3.255"),
            ("::1", "::1"),
            ("::", "::"),
            ("FE80::1", "fe80::1"),
            ("1:2:3:4:5:6:7::8", "1:2:3:4:5:6:7:8"),
            ("1::2:", "1::2:0"),
            ("1:2:3:4:5:6:7:", "1:2:3:4:5:6:7:0"),
            ("0001:0002::00ff", "1:2::ff"),
        ];
        for (value, want) in ok {
            let want: IpAddr = want.parse().unwrap();
            assert_eq!(kong_ip(value), Some(want), "{value}");
            let hp = split_host_port(value).unwrap();
            assert_eq!(hp.ip(), Some(want), "{value}");
        }
        for value in [
            "256.0.0.1",
            "1.2.3",
            "1.2.3.4.5",
            "1.2.3.4:80",
            "0010.0.0.1",
            "1:2:3:4:5:6:7:8:9",
            // the leading `0` makes nine groups
            "::1:2:3:4:5:6:7:8",
            "1::2::3",
            "::ffff:1.2.3.4",
            "12345::1",
            "example.com",
        ] {
            assert_eq!(kong_ip(value), None, "{value}");
        }
        assert_eq!(split_host_port("example.com:80").unwrap().ip(), None);
        assert_eq!(
            split_host_port("[1::2:]:80").unwrap().ip(),
            Some("1::2:0".parse().unwrap())
        );
    }

    /// Kong's `normalize_ip` (`kong/tools/ip.lua`): the parser `hostname_type` picks, the
    /// host and port it returns, and its error strings.
    #[test]
    fn normalize_ip() {
        use HostKind::*;
        let long = format!("{}.example.com", "a".repeat(70));
        for (value, kind, host, port) in [
            ("example.com", Name, "example.com", None),
            ("example.com.", Name, "example.com.", None),
            ("A.Example.COM", Name, "A.Example.COM", None),
            ("-a.example.com", Name, "-a.example.com", None),
            ("a_b.example", Name, "a_b.example", None),
            (long.as_str(), Name, long.as_str(), None),
            ("localhost", Name, "localhost", None),
            ("example.com:80", Name, "example.com", Some(80)),
            ("example.com.:80", Name, "example.com.", Some(80)),
            ("example.com:0", Name, "example.com", Some(0)),
            ("example.com:00080", Name, "example.com", Some(80)),
            ("example.com:65535", Name, "example.com", Some(65535)),
            ("10.0.0.1", Ipv4, "10.0.0.1", None),
            ("010.0.0.1", Ipv4, "010.0.0.1", None),
            ("001.2.3.4:123", Ipv4, "001.2.3.4", Some(123)),
            ("0.0.0.0:0", Ipv4, "0.0.0.0", Some(0)),
            (
                "255.255.255.255:65535",
                Ipv4,
                "255.255.255.255",
                Some(65535),
            ),
            ("::1", Ipv6, "::1", None),
            ("::", Ipv6, "::", None),
            ("FE80::1", Ipv6, "FE80::1", None),
            ("::1:80", Ipv6, "::1:80", None),
            ("1:2:3:4:5:6:7:8", Ipv6, "1:2:3:4:5:6:7:8", None),
            // a `::` standing for no group: Kong's expansion takes it
            ("1:2:3:4:5:6:7::8", Ipv6, "1:2:3:4:5:6:7::8", None),
            ("[::1]", Ipv6, "::1", None),
            ("[::1]:80", Ipv6, "::1", Some(80)),
            ("[2001:db8::1]:0", Ipv6, "2001:db8::1", Some(0)),
        ] {
            assert_eq!(
                split_host_port(value),
                Ok(HostPort { host, port, kind }),
                "{value}"
            );
        }
        for (value, message) in [
            ("", "invalid hostname: "),
            ("ex ample.com", "invalid hostname: ex ample.com"),
            ("example.com:", "invalid hostname: example.com:"),
            ("example.com:abc", "invalid hostname: example.com:abc"),
            ("example.com:-1", "invalid hostname: example.com:-1"),
            ("a-.example.com", "invalid hostname: a-.example.com"),
            ("a..example.com", "invalid hostname: a..example.com"),
            (".example.com", "invalid hostname: .example.com"),
            ("example.com..", "invalid hostname: example.com.."),
            ("[1.2.3.4]:80", "invalid hostname: [1.2.3.4]:80"),
            ("[]", "invalid hostname: []"),
            // the port is checked before the name
            ("example.com:65536", "invalid port number"),
            ("ex ample:99999", "invalid port number"),
            ("example.com:99999999999999999999", "invalid port number"),
            // digits and dots: an IPv4 address to `hostname_type`
            ("256.0.0.1", "invalid ipv4 address: 256.0.0.1"),
            ("1.2.3", "invalid ipv4 address: 1.2.3"),
            ("1.2.3.4.5", "invalid ipv4 address: 1.2.3.4.5"),
            ("0001.2.3.4", "invalid ipv4 address: 0001.2.3.4"),
            ("12345", "invalid ipv4 address: 12345"),
            ("1.2.3.4:", "invalid ipv4 address: 1.2.3.4:"),
            (":80", "invalid ipv4 address: :80"),
            ("1.2.3.4:65536", "invalid port number"),
            // the octets are checked before the port
            ("1.2.3.256:99999", "invalid ipv4 address: 1.2.3.256:99999"),
            // two colons or more: an IPv6 address to `hostname_type`
            ("a:b:c", "invalid ipv6 address: a:b:c"),
            (
                "example.com:80:90",
                "invalid ipv6 address: example.com:80:90",
            ),
            ("1::2::3", "invalid ipv6 address: 1::2::3"),
            (
                "1:2:3:4:5:6:7:8:9",
                "invalid ipv6 address: 1:2:3:4:5:6:7:8:9",
            ),
            ("::ffff:1.2.3.4", "invalid ipv6 address: ::ffff:1.2.3.4"),
            ("fe80::1%eth0", "invalid ipv6 address: fe80::1%eth0"),
            ("12345::1", "invalid ipv6 address: 12345::1"),
            ("[::1", "invalid ipv6 address: [::1"),
            ("[::g]:80", "invalid ipv6 address: [::g]:80"),
            ("*.[::1]", "invalid ipv6 address: *.[::1]"),
            ("[::1]:abc", "invalid ipv6 address"),
            ("[::1]x", "invalid ipv6 address"),
            ("[::1]]:80", "invalid ipv6 address"),
            // (Kong raises a Lua error here)
            ("[::1]:", "invalid ipv6 address"),
            ("[::1]:65536", "invalid port number"),
            // the port is checked before the address
            ("[::g]:99999", "invalid port number"),
        ] {
            let got = split_host_port(value).map_err(|e| e.to_string());
            assert_eq!(got, Err(message.to_string()), "{value}");
        }
    }

    /// Kong's `validate_host`: `must not have a port` for any port, `invalid value` else.
    #[test]
    fn service_hosts() {
        for ok in [
            "example.com",
            "example.com.",
            "-a.example.com",
            "10.0.0.1",
            "010.0.0.1",
            "::1",
            "[::1]",
        ] {
            assert_eq!(validate_host(ok), Ok(()), "{ok}");
        }
        for (bad, message) in [
            ("example.com:80", "must not have a port"),
            ("example.com:0", "must not have a port"),
            ("example.com:65536", "must not have a port"),
            ("example.com:99999", "must not have a port"),
            ("1.2.3.4:80", "must not have a port"),
            ("1.2.3.4:99999", "must not have a port"),
            ("[::1]:80", "must not have a port"),
            ("[::1]:99999", "must not have a port"),
            ("bad host", "invalid value: bad host"),
            ("example.com:", "invalid value: example.com:"),
            ("example.com:abc", "invalid value: example.com:abc"),
            ("a-.example.com", "invalid value: a-.example.com"),
            ("a:b:c", "invalid value: a:b:c"),
            ("256.0.0.1", "invalid value: 256.0.0.1"),
            ("[::1]:abc", "invalid value: [::1]:abc"),
            ("*.example.com", "invalid value: *.example.com"),
        ] {
            assert_eq!(validate_host(bad), Err(message.to_string()), "{bad}");
        }
    }

    /// Kong's `validate_host_with_optional_port`: `normalize_ip`'s error as the message.
    #[test]
    fn hosts_with_optional_port() {
        for ok in [
            "example.com",
            "example.com:8080",
            "example.com:0",
            "010.0.0.1:80",
            "::1",
            "[::1]:443",
        ] {
            assert_eq!(validate_host_with_optional_port(ok), Ok(()), "{ok}");
        }
        for (bad, message) in [
            ("example.com:abc", "invalid hostname: example.com:abc"),
            ("example.com:", "invalid hostname: example.com:"),
            ("example.com:65536", "invalid port number"),
            ("1.2.3.4.5:80", "invalid ipv4 address: 1.2.3.4.5:80"),
            ("a:b:c", "invalid ipv6 address: a:b:c"),
            ("[::1]:abc", "invalid ipv6 address"),
        ] {
            assert_eq!(
                validate_host_with_optional_port(bad),
                Err(message.to_string()),
                "{bad}"
            );
        }
    }

    /// Kong's `typedefs.hosts` element: its two patterns, then `host_with_optional_port`
    /// with `*` replaced by `abc`.
    #[test]
    fn route_hosts() {
        for ok in [
            "example.com",
            "*.example.com",
            "example.*",
            "*.example.com:80",
            "example.com:8080",
            "10.0.0.1",
            "010.0.0.1:80",
            "[::1]:80",
            "*.1.2.3",
            "1.2.3.*",
        ] {
            assert_eq!(validate_route_host(ok), Ok(()), "{ok}");
        }
        let label = "invalid wildcard: must be placed at leftmost or rightmost label";
        let one = "invalid wildcard: must have at most one wildcard";
        for (bad, message) in [
            ("a.*.com", label),
            ("*", label),
            ("*example.com", label),
            ("example*", label),
            ("example.*:80", label),
            ("*.a.*", one),
            ("**", one),
            ("ex ample", "invalid hostname: ex ample"),
            ("*.ex ample", "invalid hostname: abc.ex ample"),
            ("*.example.com:abc", "invalid hostname: abc.example.com:abc"),
            ("example.com:", "invalid hostname: example.com:"),
            ("example.com:99999", "invalid port number"),
            ("*.example.com:99999", "invalid port number"),
            ("256.0.0.1", "invalid ipv4 address: 256.0.0.1"),
            ("a:b:c", "invalid ipv6 address: a:b:c"),
            ("*.[::1]", "invalid ipv6 address: abc.[::1]"),
        ] {
            assert_eq!(validate_route_host(bad), Err(message.to_string()), "{bad}");
        }
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
            // `wildcard.1.2.3.4` is a name
            "*.1.2.3.4",
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
            ("010.0.0.1", "must not be an IP"),
            ("1.2.3.4:99999", "must not have a port"),
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
            ("010.0.0.1", "must not be an IP"),
            ("001.2.3.4:443", "must not be an IP"),
            ("1.2.3.4:99999", "must not have a port"),
            ("[::1]:99999", "must not have a port"),
            ("256.0.0.1", "invalid value: 256.0.0.1"),
            ("a:b:c", "invalid value: a:b:c"),
            ("[::1]:abc", "invalid value: [::1]:abc"),
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
            ("a b", true),
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
