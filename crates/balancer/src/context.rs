//! What a request offers for hashing ([`PickContext`]) and how `hash_on` / `hash_fallback`
//! turn it into the value that consistent-hashing hashes.

use std::borrow::Cow;
use std::net::IpAddr;

use http::HeaderMap;
use http::header::{COOKIE, HeaderName};

/// Named or numbered captures of the route's regex path, for `hash_on: uri_capture`.
pub trait UriCaptures: Send + Sync {
    /// The capture by name, or by number (`"1"`, `"2"`, ...; `"0"` is the whole match).
    fn capture(&self, name: &str) -> Option<&str>;
}

impl UriCaptures for &[(&str, &str)] {
    fn capture(&self, name: &str) -> Option<&str> {
        self.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
    }
}

impl UriCaptures for Vec<(String, String)> {
    fn capture(&self, name: &str) -> Option<&str> {
        self.iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

impl UriCaptures for std::collections::HashMap<String, String> {
    fn capture(&self, name: &str) -> Option<&str> {
        self.get(name).map(String::as_str)
    }
}

/// The parts of a request a balancer may hash on. Fill what is cheap to have; fields the
/// upstream does not hash on are never read. `Default` is an empty context (round-robin,
/// least-connections and latency read nothing).
#[derive(Clone, Copy, Default)]
pub struct PickContext<'a> {
    /// The client address (`hash_on: ip`; Kong's `remote_addr`).
    pub client_ip: Option<IpAddr>,
    /// The authenticated consumer's id (`hash_on: consumer`).
    pub consumer_id: Option<&'a str>,
    /// The credential's id, used by `hash_on: consumer` when there is no consumer.
    pub credential_id: Option<&'a str>,
    /// The request headers (`header` and `cookie`).
    pub headers: Option<&'a HeaderMap>,
    /// The request path as received, without query (`hash_on: path`, which hashes it as
    /// nginx's `$uri`: [`silverback_config::uri::nginx_uri`]).
    pub path: &'a str,
    /// The raw query string, without `?` (`hash_on: query_arg`).
    pub query: Option<&'a str>,
    /// The route's regex captures (`hash_on: uri_capture`).
    pub uri_captures: Option<&'a dyn UriCaptures>,
    /// On a retry of a request whose first try generated the hash cookie: the generated
    /// value ([`crate::SetCookie::value`]), so that the retry hashes the same value.
    pub generated_cookie: Option<&'a str>,
}

impl std::fmt::Debug for PickContext<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PickContext")
            .field("client_ip", &self.client_ip)
            .field("consumer_id", &self.consumer_id)
            .field("path", &self.path)
            .field("query", &self.query)
            .finish_non_exhaustive()
    }
}

/// One hash input (`hash_on` or `hash_fallback`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HashOn {
    None,
    Consumer,
    Ip,
    Header(HeaderName),
    Cookie(String),
    Path,
    QueryArg(String),
    UriCapture(String),
}

impl HashOn {
    pub(crate) fn parse(kind: &str, arg: Option<&str>) -> Result<HashOn, String> {
        let need = |what: &str| {
            arg.filter(|a| !a.is_empty())
                .map(str::to_string)
                .ok_or_else(|| format!("hash on '{kind}' needs a {what}"))
        };
        Ok(match kind {
            "none" | "" => HashOn::None,
            "consumer" => HashOn::Consumer,
            "ip" => HashOn::Ip,
            "header" => HashOn::Header(
                HeaderName::from_bytes(need("header name")?.to_ascii_lowercase().as_bytes())
                    .map_err(|e| format!("invalid header name: {e}"))?,
            ),
            "cookie" => HashOn::Cookie(need("cookie name")?),
            "path" => HashOn::Path,
            "query_arg" => HashOn::QueryArg(need("query argument")?),
            "uri_capture" => HashOn::UriCapture(need("capture name")?),
            other => return Err(format!("unknown hash input '{other}'")),
        })
    }

    /// The value this input yields for a request, if any.
    pub(crate) fn value<'a>(&self, ctx: &PickContext<'a>) -> Option<Cow<'a, str>> {
        match self {
            HashOn::None => None,
            HashOn::Consumer => ctx.consumer_id.or(ctx.credential_id).map(Cow::Borrowed),
            HashOn::Ip => ctx.client_ip.map(|ip| Cow::Owned(ip.to_string())),
            HashOn::Header(name) => {
                let mut values = ctx.headers?.get_all(name).iter();
                let first = values.next()?;
                let first = String::from_utf8_lossy(first.as_bytes());
                match values.next() {
                    None => Some(Cow::Owned(first.into_owned())),
                    Some(second) => {
                        // Repeated headers are joined, as nginx does.
                        let mut s = first.into_owned();
                        for v in std::iter::once(second).chain(values) {
                            s.push_str(", ");
                            s.push_str(&String::from_utf8_lossy(v.as_bytes()));
                        }
                        Some(Cow::Owned(s))
                    }
                }
            }
            HashOn::Cookie(name) => ctx
                .headers
                .and_then(|h| cookie(h, name))
                .map(|v| Cow::Owned(v.to_string()))
                .or_else(|| ctx.generated_cookie.map(Cow::Borrowed)),
            HashOn::Path => Some(silverback_config::uri::nginx_uri(ctx.path)),
            HashOn::QueryArg(name) => query_arg(ctx.query?, name).map(Cow::Owned),
            HashOn::UriCapture(name) => ctx.uri_captures?.capture(name).map(Cow::Borrowed),
        }
    }
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub(crate) fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    for h in headers.get_all(COOKIE) {
        let Ok(s) = h.to_str() else { continue };
        for pair in s.split(';') {
            if let Some((k, v)) = pair.trim().split_once('=')
                && k.trim() == name
            {
                return Some(v.trim());
            }
        }
    }
    None
}

/// The value of query argument `name`: percent-decoded; several values are sorted and
/// joined with `,`; an argument without `=` is `true` (as Kong reads it).
pub(crate) fn query_arg(query: &str, name: &str) -> Option<String> {
    let mut values: Vec<String> = Vec::new();
    for part in query.split('&') {
        if part.is_empty() {
            continue;
        }
        let (k, v) = match part.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (part, None),
        };
        if decode(k) == name {
            values.push(v.map(decode).unwrap_or_else(|| "true".to_string()));
        }
    }
    match values.len() {
        0 => None,
        1 => values.pop(),
        _ => {
            values.sort();
            Some(values.join(","))
        }
    }
}

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = |c: u8| (c as char).to_digit(16);
                match (hex(b[i + 1]), hex(b[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn query_args() {
        assert_eq!(query_arg("a=2&b=x&a=1", "a").as_deref(), Some("1,2"));
        assert_eq!(query_arg("a=%41%2c&b", "b").as_deref(), Some("true"));
        assert_eq!(query_arg("a=%41%2c", "a").as_deref(), Some("A,"));
        assert_eq!(query_arg("a=1", "c"), None);
        assert_eq!(query_arg("x=a+b%", "x").as_deref(), Some("a b%"));
    }

    #[test]
    fn paths_hash_as_nginx_uri() {
        let ctx = PickContext {
            path: "/a//./x/../%62",
            ..Default::default()
        };
        assert_eq!(HashOn::Path.value(&ctx).as_deref(), Some("/a/b"));
    }

    #[test]
    fn headers_and_cookies() {
        let mut h = HeaderMap::new();
        h.append("x-user", HeaderValue::from_static("u1"));
        h.append("x-user", HeaderValue::from_static("u2"));
        h.append(COOKIE, HeaderValue::from_static("a=1; sess=abc ; z=2"));
        let ctx = PickContext {
            headers: Some(&h),
            ..Default::default()
        };
        let on = HashOn::parse("header", Some("X-User")).expect("valid");
        assert_eq!(on.value(&ctx).as_deref(), Some("u1, u2"));
        let on = HashOn::parse("cookie", Some("sess")).expect("valid");
        assert_eq!(on.value(&ctx).as_deref(), Some("abc"));
        let on = HashOn::parse("cookie", Some("none")).expect("valid");
        assert_eq!(on.value(&ctx), None);
        let caps: &[(&str, &str)] = &[("1", "x"), ("id", "42")];
        let ctx = PickContext {
            uri_captures: Some(&caps),
            ..Default::default()
        };
        let on = HashOn::parse("uri_capture", Some("id")).expect("valid");
        assert_eq!(on.value(&ctx).as_deref(), Some("42"));
        assert!(HashOn::parse("header", None).is_err());
    }
}
