//! nginx's `log_format`, as the access logs ([`crate::access_log`]) write it: Kong's
//! `kong_log_format`, nginx's `combined`, and one format of the user's, given as Kong's
//! injected directive `nginx_http_log_format` (`NAME [escape=default|json|none] 'STRING'`).
//!
//! A format is compiled once into literal pieces and variables. A line is made in two steps:
//! the variables known from the request's head are written when the request begins
//! (`LogFormat::begin`), and a hole is left for each one known only at its end (`$status`,
//! `$body_bytes_sent`, the times), filled by `LogFormat::finish`.
//!
//! Variables read: `$remote_addr`, `$remote_user`, `$request`, `$request_method`,
//! `$request_uri`, `$uri`, `$args`, `$query_string`, `$server_protocol`, `$scheme`, `$host`,
//! `$http_NAME` (any request header), `$kong_request_id`, `$request_id`, `$hostname`,
//! `$status`, `$body_bytes_sent`, `$time_local`, `$time_iso8601`, `$msec`, `$request_time`,
//! and of the tries toward the upstream, as nginx lists them (`, ` between tries):
//! `$upstream_addr`, `$upstream_status`, `$upstream_response_time`.
//! Any other is written as nginx writes a variable without a value (`-`, or nothing with
//! `escape=json`), and named by [`LogFormat::unsupported`] so that the start can warn.

use std::time::{Duration, Instant, SystemTime};

use http::header::{self, HeaderMap, HeaderName};

/// Kong's `kong_log_format`.
const KONG: &str = "$remote_addr - $remote_user [$time_local] \"$request\" $status $body_bytes_sent \"$http_referer\" \"$http_user_agent\" kong_request_id: \"$kong_request_id\"";

/// nginx's `combined`.
const COMBINED: &str = "$remote_addr - $remote_user [$time_local] \"$request\" $status $body_bytes_sent \"$http_referer\" \"$http_user_agent\"";

/// How variable values are escaped (nginx's `escape=` parameter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Escape {
    /// `"`, `\`, control bytes and bytes past ASCII as `\xHH`; no value is `-`.
    Default,
    /// JSON string escapes (`\"`, `\\`, `\n`, `\u00XX`); no value is nothing.
    Json,
    /// Values as they are; no value is `-`.
    None,
}

/// A variable whose value is known only at the request's end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AtEnd {
    Status,
    BodyBytesSent,
    TimeLocal,
    TimeIso8601,
    Msec,
    RequestTime,
    UpstreamAddr,
    UpstreamStatus,
    UpstreamResponseTime,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Var {
    RemoteAddr,
    RemoteUser,
    Request,
    RequestMethod,
    RequestUri,
    Uri,
    Args,
    ServerProtocol,
    Scheme,
    Host,
    Header(HeaderName),
    RequestId,
    Hostname,
    End(AtEnd),
    Unsupported(String),
}

impl Var {
    fn named(name: &str) -> Var {
        match name {
            "remote_addr" => Var::RemoteAddr,
            "remote_user" => Var::RemoteUser,
            "request" => Var::Request,
            "request_method" => Var::RequestMethod,
            "request_uri" => Var::RequestUri,
            "uri" | "document_uri" => Var::Uri,
            "args" | "query_string" => Var::Args,
            "server_protocol" => Var::ServerProtocol,
            "scheme" => Var::Scheme,
            "host" => Var::Host,
            "kong_request_id" | "request_id" => Var::RequestId,
            "hostname" => Var::Hostname,
            "status" => Var::End(AtEnd::Status),
            "body_bytes_sent" => Var::End(AtEnd::BodyBytesSent),
            "time_local" => Var::End(AtEnd::TimeLocal),
            "time_iso8601" => Var::End(AtEnd::TimeIso8601),
            "msec" => Var::End(AtEnd::Msec),
            "request_time" => Var::End(AtEnd::RequestTime),
            "upstream_addr" => Var::End(AtEnd::UpstreamAddr),
            "upstream_status" => Var::End(AtEnd::UpstreamStatus),
            "upstream_response_time" => Var::End(AtEnd::UpstreamResponseTime),
            _ => name
                .strip_prefix("http_")
                .and_then(|h| HeaderName::from_bytes(h.replace('_', "-").as_bytes()).ok())
                .map_or_else(|| Var::Unsupported(name.to_string()), Var::Header),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Lit(Vec<u8>),
    Var(Var),
}

/// A compiled `log_format`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogFormat {
    name: String,
    escape: Escape,
    pieces: Vec<Piece>,
}

/// The most variables known only at a request's end one format may have.
pub const MAX_END_VARIABLES: usize = 16;

/// Where a line's end-time values go: their offsets in the text begun, in order.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Holes {
    at: [(u32, AtEnd); MAX_END_VARIABLES],
    len: u8,
}

impl Default for Holes {
    fn default() -> Holes {
        Holes {
            at: [(0, AtEnd::Status); MAX_END_VARIABLES],
            len: 0,
        }
    }
}

/// What a line's request-time variables are read from.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// `$remote_addr`, as text.
    pub remote: &'a [u8],
    /// The request line: parsed, or as read (a head refused before it was parsed).
    pub line: Line<'a>,
    /// The request's headers (none for a head refused before it was parsed).
    pub headers: Option<&'a HeaderMap>,
    /// `$kong_request_id` (empty: none): the gateway's own hex id, written as it is.
    pub request_id: &'a [u8],
    /// Whether the connection is TLS (`$scheme`); `None`: not known.
    pub tls: Option<bool>,
    /// `$hostname`.
    pub hostname: &'a str,
}

/// A request line.
#[derive(Debug, Clone, Copy)]
pub enum Line<'a> {
    /// Parsed.
    Parsed(&'a http::Method, &'a http::Uri, http::Version),
    /// As read, up to its end or that of the bytes read.
    Raw(&'a [u8]),
}

/// What a line's end-time variables are read from.
#[derive(Debug, Clone, Copy)]
pub(crate) struct End<'a> {
    pub status: u16,
    pub body_bytes: u64,
    pub start: Instant,
    /// The tries toward the upstream: each one's address, status (the answer's, or the
    /// 502 or 504 of its failure) and time to the answer's head or the failure.
    pub tries: &'a [Try],
}

/// One try toward the upstream, as the `$upstream_*` variables list it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Try {
    /// The peer's address.
    pub addr: std::net::SocketAddr,
    /// The answer's status, or the 502 or 504 the try failed with.
    pub status: u16,
    /// From the try's start to the answer's head, or to its failure.
    pub time: Duration,
}

impl LogFormat {
    /// Kong's `kong_log_format`.
    pub fn kong() -> LogFormat {
        LogFormat::compile("kong_log_format", Escape::Default, KONG)
    }

    /// nginx's `combined`.
    pub fn combined() -> LogFormat {
        LogFormat::compile("combined", Escape::Default, COMBINED)
    }

    /// The format's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Parses the arguments of an nginx `log_format` directive (Kong's
    /// `nginx_http_log_format`): a name, an optional `escape=`, then the format's strings,
    /// quoted (`'...'`, `"..."`, with `\` escapes) or bare, joined as nginx joins them.
    pub fn parse(directive: &str) -> Result<LogFormat, String> {
        let words = nginx_words(directive)?;
        let mut words = words.iter();
        let name = words.next().ok_or("no format name given")?;
        if matches!(name.as_str(), "combined" | "kong_log_format") {
            return Err(format!("duplicate log format name '{name}'"));
        }
        let mut escape = Escape::Default;
        let mut text = String::new();
        for (i, w) in words.enumerate() {
            match w.strip_prefix("escape=") {
                Some(e) if i == 0 => {
                    escape = match e {
                        "default" => Escape::Default,
                        "json" => Escape::Json,
                        "none" => Escape::None,
                        _ => return Err(format!("unknown escape '{e}' (default, json, none)")),
                    };
                }
                _ => text.push_str(w),
            }
        }
        if text.is_empty() {
            return Err(format!("log format '{name}' has no text"));
        }
        let f = LogFormat::compile(name, escape, &text);
        let ends = f
            .pieces
            .iter()
            .filter(|p| matches!(p, Piece::Var(Var::End(_))))
            .count();
        if ends > MAX_END_VARIABLES {
            return Err(format!(
                "log format '{name}' has {ends} of $status, $body_bytes_sent, the times and $upstream_*: at most {MAX_END_VARIABLES}"
            ));
        }
        Ok(f)
    }

    fn compile(name: &str, escape: Escape, text: &str) -> LogFormat {
        let mut pieces = vec![];
        let mut lit = Vec::new();
        let b = text.as_bytes();
        let mut i = 0;
        let is_name = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
        while i < b.len() {
            if b[i] == b'$' {
                let (start, end, next) = if b.get(i + 1) == Some(&b'{') {
                    match b[i + 2..].iter().position(|&c| c == b'}') {
                        Some(n) => (i + 2, i + 2 + n, i + 3 + n),
                        None => (i + 1, i + 1, i + 1),
                    }
                } else {
                    let n = b[i + 1..].iter().take_while(|&&c| is_name(c)).count();
                    (i + 1, i + 1 + n, i + 1 + n)
                };
                if end > start {
                    if !lit.is_empty() {
                        pieces.push(Piece::Lit(std::mem::take(&mut lit)));
                    }
                    pieces.push(Piece::Var(Var::named(&text[start..end])));
                    i = next;
                    continue;
                }
            }
            lit.push(b[i]);
            i += 1;
        }
        if !lit.is_empty() {
            pieces.push(Piece::Lit(lit));
        }
        LogFormat {
            name: name.to_string(),
            escape,
            pieces,
        }
    }

    /// Whether the format reads the tries toward the upstream (`$upstream_*`), which are
    /// then recorded.
    pub fn reads_tries(&self) -> bool {
        self.pieces.iter().any(|p| {
            matches!(
                p,
                Piece::Var(Var::End(
                    AtEnd::UpstreamAddr | AtEnd::UpstreamStatus | AtEnd::UpstreamResponseTime
                ))
            )
        })
    }

    /// The variables of the format that are not read here (each written without a value).
    pub fn unsupported(&self) -> Vec<&str> {
        self.pieces
            .iter()
            .filter_map(|p| match p {
                Piece::Var(Var::Unsupported(n)) => Some(n.as_str()),
                _ => None,
            })
            .collect()
    }

    /// Writes the line of `r` but for its end-time values, whose places go to `holes`.
    pub(crate) fn begin(&self, r: &Request<'_>, out: &mut Vec<u8>, holes: &mut Holes) {
        for p in &self.pieces {
            match p {
                Piece::Lit(l) => out.extend_from_slice(l),
                Piece::Var(Var::End(e)) => {
                    if let Some(slot) = holes.at.get_mut(usize::from(holes.len)) {
                        *slot = (u32::try_from(out.len()).unwrap_or(u32::MAX), *e);
                        holes.len += 1;
                    }
                }
                Piece::Var(v) => self.request_var(v, r, out),
            }
        }
    }

    fn request_var(&self, v: &Var, r: &Request<'_>, out: &mut Vec<u8>) {
        let headers = r.headers;
        let header = |n: &HeaderName| headers.and_then(|h| h.get(n)).map(|v| v.as_bytes());
        let parsed = match r.line {
            Line::Parsed(m, u, v) => Some((m, u, v)),
            Line::Raw(_) => None,
        };
        let value: Option<&[u8]> = match v {
            Var::RemoteAddr => {
                // (an address needs no escape)
                out.extend_from_slice(r.remote);
                return;
            }
            Var::RemoteUser => {
                let user = headers.and_then(remote_user).unwrap_or_default();
                self.value(out, &user);
                return;
            }
            Var::Request => match r.line {
                Line::Parsed(m, u, ver) => {
                    // (written in parts: never empty)
                    self.part(out, m.as_str().as_bytes());
                    out.push(b' ');
                    self.part(out, &target(u, ver));
                    out.push(b' ');
                    out.extend_from_slice(version(ver).as_bytes());
                    return;
                }
                Line::Raw(raw) => Some(raw),
            },
            Var::RequestMethod => parsed.map(|(m, _, _)| m.as_str().as_bytes()),
            Var::RequestUri => {
                if let Some((_, u, ver)) = parsed {
                    self.value(out, &target(u, ver));
                    return;
                }
                None
            }
            Var::Uri => parsed.map(|(_, u, _)| u.path().as_bytes()),
            Var::Args => parsed.and_then(|(_, u, _)| u.query()).map(str::as_bytes),
            Var::ServerProtocol => parsed.map(|(_, _, ver)| version(ver).as_bytes()),
            Var::Scheme => r.tls.map(|t| if t { &b"https"[..] } else { b"http" }),
            Var::Host => {
                let authority = parsed.and_then(|(_, u, _)| u.host()).map(str::as_bytes);
                authority.or_else(|| header(&header::HOST).map(host_of))
            }
            Var::Header(n) => header(n),
            // (hex, the gateway's own: nothing to escape)
            Var::RequestId if !r.request_id.is_empty() => {
                out.extend_from_slice(r.request_id);
                return;
            }
            Var::RequestId => None,
            Var::Hostname => Some(r.hostname.as_bytes()),
            Var::End(_) | Var::Unsupported(_) => None,
        };
        self.value(out, value.unwrap_or_default());
    }

    /// Appends the finished line: the text begun, with `end`'s values in its holes.
    pub(crate) fn finish(&self, text: &[u8], holes: &Holes, end: &End<'_>, out: &mut Vec<u8>) {
        let mut from = 0;
        let mut n = itoa::Buffer::new();
        for &(at, var) in &holes.at[..usize::from(holes.len)] {
            let at = (at as usize).min(text.len());
            out.extend_from_slice(&text[from..at]);
            from = at;
            match var {
                AtEnd::Status => out.extend_from_slice(n.format(end.status).as_bytes()),
                AtEnd::BodyBytesSent => out.extend_from_slice(n.format(end.body_bytes).as_bytes()),
                AtEnd::TimeLocal => out.extend_from_slice(&clock().local),
                AtEnd::TimeIso8601 => out.extend_from_slice(&clock().iso8601),
                AtEnd::Msec => {
                    let now = SystemTime::now()
                        .duration_since(SystemTime::UNIX_EPOCH)
                        .unwrap_or_default();
                    seconds_ms(out, now);
                }
                AtEnd::RequestTime => seconds_ms(out, end.start.elapsed()),
                AtEnd::UpstreamAddr | AtEnd::UpstreamStatus | AtEnd::UpstreamResponseTime
                    if end.tries.is_empty() =>
                {
                    self.value(out, b"");
                }
                AtEnd::UpstreamAddr | AtEnd::UpstreamStatus | AtEnd::UpstreamResponseTime => {
                    for (i, t) in end.tries.iter().enumerate() {
                        if i > 0 {
                            out.extend_from_slice(b", ");
                        }
                        match var {
                            AtEnd::UpstreamAddr => {
                                out.extend_from_slice(t.addr.to_string().as_bytes());
                            }
                            AtEnd::UpstreamStatus => {
                                out.extend_from_slice(n.format(t.status).as_bytes());
                            }
                            _ => seconds_ms(out, t.time),
                        }
                    }
                }
            }
        }
        out.extend_from_slice(&text[from..]);
    }

    /// Appends a variable's value, escaped as the format says (`-` for none, but with
    /// `escape=json`).
    fn value(&self, out: &mut Vec<u8>, v: &[u8]) {
        if v.is_empty() && self.escape != Escape::Json {
            out.push(b'-');
        } else {
            self.part(out, v);
        }
    }

    /// Appends part of a value, escaped as the format says.
    fn part(&self, out: &mut Vec<u8>, v: &[u8]) {
        match self.escape {
            Escape::Json => escaped_json(out, v),
            Escape::Default => escaped(out, v),
            Escape::None => out.extend_from_slice(v),
        }
    }
}

/// `1795834352.123`, nginx's `$msec` and `$request_time` (seconds, milliseconds).
fn seconds_ms(out: &mut Vec<u8>, d: Duration) {
    let mut n = itoa::Buffer::new();
    out.extend_from_slice(n.format(d.as_secs()).as_bytes());
    let ms = d.subsec_millis();
    out.extend_from_slice(&[
        b'.',
        b'0' + (ms / 100) as u8,
        b'0' + (ms / 10 % 10) as u8,
        b'0' + (ms % 10) as u8,
    ]);
}

/// A request's target as it came: an HTTP/1 absolute form whole, else the path and query.
fn target(uri: &http::Uri, version: http::Version) -> std::borrow::Cow<'_, [u8]> {
    if uri.scheme().is_some() && version != http::Version::HTTP_2 {
        std::borrow::Cow::Owned(uri.to_string().into_bytes())
    } else {
        let t = uri.path_and_query().map_or("/", |p| p.as_str());
        std::borrow::Cow::Borrowed(t.as_bytes())
    }
}

/// nginx's name for an HTTP version (`$server_protocol`).
fn version(v: http::Version) -> &'static str {
    match v {
        http::Version::HTTP_09 => "HTTP/0.9",
        http::Version::HTTP_10 => "HTTP/1.0",
        http::Version::HTTP_2 => "HTTP/2.0",
        http::Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/1.1",
    }
}

/// A `Host` header's host, without its port (nginx's `$host`, lower-cased there too).
fn host_of(h: &[u8]) -> &[u8] {
    if h.starts_with(b"[") {
        return h.iter().position(|&b| b == b']').map_or(h, |i| &h[..=i]);
    }
    h.iter().position(|&b| b == b':').map_or(h, |i| &h[..i])
}

/// nginx's `$remote_user`: the user of a `Basic` `Authorization` header (before the first
/// `:` of the decoded credentials; none without one).
fn remote_user(h: &HeaderMap) -> Option<Vec<u8>> {
    use base64::Engine as _;
    let v = h.get(header::AUTHORIZATION)?.as_bytes();
    let (scheme, rest) = v.split_at(v.iter().position(|&b| b == b' ')?);
    if !scheme.eq_ignore_ascii_case(b"basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(rest.trim_ascii())
        .ok()?;
    let colon = decoded.iter().position(|&b| b == b':')?;
    let mut user = decoded;
    user.truncate(colon);
    Some(user)
}

/// The bytes nginx's default log escaping leaves as they are.
static PLAIN: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0x20;
    while b < 0x7f {
        t[b] = b != b'"' as usize && b != b'\\' as usize;
        b += 1;
    }
    t
};

const HEX: &[u8; 16] = b"0123456789ABCDEF";

/// Appends `v` as nginx's default log escaping writes a value: `"`, `\`, control bytes and
/// bytes past ASCII as `\xHH`.
pub(crate) fn escaped(out: &mut Vec<u8>, v: &[u8]) {
    // (most values need no escape: copied whole)
    let mut rest = v;
    while let Some(i) = rest.iter().position(|b| !PLAIN[usize::from(*b)]) {
        let b = rest[i];
        out.extend_from_slice(&rest[..i]);
        let hex = [HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]];
        out.extend_from_slice(&[b'\\', b'x', hex[0], hex[1]]);
        rest = &rest[i + 1..];
    }
    out.extend_from_slice(rest);
}

/// Appends `v` as nginx's `escape=json` writes a value: `"` and `\` behind a `\`, control
/// bytes as `\n`, `\r`, `\t`, `\b`, `\f` or `\u00XX`; other bytes as they are.
fn escaped_json(out: &mut Vec<u8>, v: &[u8]) {
    let mut rest = v;
    while let Some(i) = rest
        .iter()
        .position(|&b| b < 0x20 || b == b'"' || b == b'\\')
    {
        let b = rest[i];
        out.extend_from_slice(&rest[..i]);
        match b {
            b'"' | b'\\' => out.extend_from_slice(&[b'\\', b]),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0c => out.extend_from_slice(b"\\f"),
            _ => out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 15)],
            ]),
        }
        rest = &rest[i + 1..];
    }
    out.extend_from_slice(rest);
}

/// The words of an nginx directive's arguments: split on blanks, quoted strings (`'` or `"`)
/// taken whole with `\` escaping the next character.
fn nginx_words(s: &str) -> Result<Vec<String>, String> {
    let mut words = vec![];
    let mut chars = s.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        let mut w = String::new();
        if c == '\'' || c == '"' {
            chars.next();
            loop {
                match chars.next() {
                    None => return Err(format!("unterminated {c}-quoted string")),
                    Some(q) if q == c => break,
                    Some('\\') => match chars.next() {
                        Some('n') => w.push('\n'),
                        Some('t') => w.push('\t'),
                        Some('r') => w.push('\r'),
                        Some(o) => w.push(o),
                        None => return Err(format!("unterminated {c}-quoted string")),
                    },
                    Some(o) => w.push(o),
                }
            }
        } else {
            while let Some(&o) = chars.peek() {
                if o.is_whitespace() {
                    break;
                }
                w.push(o);
                chars.next();
            }
        }
        words.push(w);
    }
    Ok(words)
}

/// The second's times, made once a second per thread.
#[derive(Clone, Copy)]
struct Clock {
    at: u64,
    /// nginx's `$time_local` (in UTC): `28/Nov/2026:02:52:32 +0000`.
    local: [u8; 26],
    /// nginx's `$time_iso8601` (in UTC): `2026-11-28T02:52:32+00:00`.
    iso8601: [u8; 25],
}

fn clock() -> Clock {
    use std::cell::Cell;
    thread_local! {
        static NOW: Cell<Clock> = const {
            Cell::new(Clock { at: u64::MAX, local: [0; 26], iso8601: [0; 25] })
        };
    }
    let secs = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    NOW.with(|c| {
        let now = c.get();
        if now.at == secs {
            return now;
        }
        let now = clock_at(secs);
        c.set(now);
        now
    })
}

fn clock_at(secs: u64) -> Clock {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let t = i64::try_from(secs)
        .ok()
        .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let (y, d, h, mi, s) = (t.year(), t.day(), t.hour(), t.minute(), t.second());
    let m = u8::from(t.month());
    let local = format!(
        "{d:02}/{}/{y:04}:{h:02}:{mi:02}:{s:02} +0000",
        MONTHS[usize::from(m) - 1]
    );
    let iso = format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}+00:00");
    let mut c = Clock {
        at: secs,
        local: [b' '; 26],
        iso8601: [b' '; 25],
    };
    let n = local.len().min(26);
    c.local[..n].copy_from_slice(&local.as_bytes()[..n]);
    let n = iso.len().min(25);
    c.iso8601[..n].copy_from_slice(&iso.as_bytes()[..n]);
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(f: &LogFormat, req: &http::Request<()>, end: End<'_>) -> String {
        let r = Request {
            remote: b"10.0.0.1",
            line: Line::Parsed(req.method(), req.uri(), req.version()),
            headers: Some(req.headers()),
            request_id: b"abc123",
            tls: Some(true),
            hostname: "node-1",
        };
        let (mut text, mut holes) = (vec![], Holes::default());
        f.begin(&r, &mut text, &mut holes);
        let mut out = vec![];
        f.finish(&text, &holes, &end, &mut out);
        String::from_utf8(out).unwrap()
    }

    fn end() -> End<'static> {
        End {
            status: 201,
            body_bytes: 17,
            start: Instant::now(),
            tries: &[],
        }
    }

    #[test]
    fn escaping_is_nginxs() {
        let mut out = vec![];
        escaped(&mut out, b"a\"b\\c\x01\x7f\xc3\xa9 d");
        assert_eq!(out, b"a\\x22b\\x5Cc\\x01\\x7F\\xC3\\xA9 d");
        out.clear();
        escaped_json(&mut out, b"a\"b\\c\n\x01\xc3\xa9");
        assert_eq!(out, b"a\\\"b\\\\c\\n\\u0001\xc3\xa9");
    }

    #[test]
    fn times_are_nginxs() {
        // 2026-11-28T02:52:32Z
        let c = clock_at(1_795_834_352);
        assert_eq!(&c.local, b"28/Nov/2026:02:52:32 +0000");
        assert_eq!(&c.iso8601, b"2026-11-28T02:52:32+00:00");
        assert_eq!(&clock_at(0).local, b"01/Jan/1970:00:00:00 +0000");
        let mut out = vec![];
        seconds_ms(&mut out, Duration::from_millis(3_004));
        assert_eq!(out, b"3.004");
    }

    #[test]
    fn a_json_format_of_the_users() {
        let f = LogFormat::parse(
            r#"json_fmt escape=json '{"addr":"$remote_addr","req":"$request","st":$status,'
               '"ua":"$http_user_agent","x":"$http_x_custom_thing","host":"$host",'
               '"up":"$upstream_addr","pid":"$pid","args":"$args","uri":"$uri","sch":"$scheme","id":"${request_id}","n":"$hostname"}'"#,
        )
        .unwrap();
        assert_eq!(f.name(), "json_fmt");
        assert_eq!(f.unsupported(), ["pid"]);
        let req = http::Request::get("/p/a%20b?x=1&y=2")
            .header("host", "api.example:8443")
            .header("user-agent", "curl \"8\"\t")
            .header("x-custom-thing", "v")
            .body(())
            .unwrap();
        assert_eq!(
            line(&f, &req, end()),
            r#"{"addr":"10.0.0.1","req":"GET /p/a%20b?x=1&y=2 HTTP/1.1","st":201,"ua":"curl \"8\"\t","x":"v","host":"api.example","up":"","pid":"","args":"x=1&y=2","uri":"/p/a%20b","sch":"https","id":"abc123","n":"node-1"}"#
        );
    }

    #[test]
    fn the_built_in_formats() {
        let req = http::Request::post("/a")
            .header("referer", "http://r/")
            .header("authorization", "Basic Ym9iOnB3") // bob:pw
            .body(())
            .unwrap();
        let kong = line(&LogFormat::kong(), &req, end());
        let (a, rest) = kong.split_once(" [").unwrap();
        assert_eq!(a, "10.0.0.1 - bob");
        assert_eq!(
            rest.split_once("] ").unwrap().1,
            r#""POST /a HTTP/1.1" 201 17 "http://r/" "-" kong_request_id: "abc123""#
        );
        let combined = line(&LogFormat::combined(), &req, end());
        assert!(
            combined.ends_with(r#"] "POST /a HTTP/1.1" 201 17 "http://r/" "-""#),
            "{combined}"
        );
    }

    #[test]
    fn formats_parse_as_nginx_reads_log_format() {
        let f = LogFormat::parse("plain '$request_time|$msec|$time_iso8601 done'").unwrap();
        let req = http::Request::get("/").body(()).unwrap();
        let l = line(&f, &req, end());
        let (t, rest) = l.split_once('|').unwrap();
        assert!(t.starts_with("0.0") && t.len() == 5, "{l}");
        let (msec, iso) = rest.split_once('|').unwrap();
        assert_eq!(msec.split_once('.').unwrap().1.len(), 3, "{l}");
        assert!(iso.ends_with("+00:00 done"), "{l}");
        let none = LogFormat::parse("raw escape=none '\"$http_x\" $http_missing'").unwrap();
        let req = http::Request::get("/")
            .header("x", "a\"b")
            .body(())
            .unwrap();
        assert_eq!(line(&none, &req, end()), "\"a\"b\" -");
        assert!(LogFormat::parse("").is_err());
        assert!(LogFormat::parse("name").unwrap_err().contains("no text"));
        assert!(
            LogFormat::parse("combined '$status'")
                .unwrap_err()
                .contains("duplicate")
        );
        assert!(
            LogFormat::parse("x escape=xml '$status'")
                .unwrap_err()
                .contains("xml")
        );
        assert!(
            LogFormat::parse("x 'open")
                .unwrap_err()
                .contains("unterminated")
        );
        let many = format!("x '{}'", "$status ".repeat(MAX_END_VARIABLES + 1));
        assert!(LogFormat::parse(&many).unwrap_err().contains("at most"));
    }
}
