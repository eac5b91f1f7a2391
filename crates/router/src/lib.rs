//! Kong's HTTP router, rebuilt: the `traditional_compatible` flavor (route fields compiled to
//! Kong's ATC semantics and 64-bit priorities), the `expressions` flavor (route `expression`
//! and `priority`, parsed and evaluated with Kong's own `atc-router` crate), and what Kong
//! computes right after a match (stripped prefix, upstream path, regex captures).
//!
//! A [`Router`] is compiled once per configuration, off the request path, and is immutable:
//! share it behind an `Arc` and call [`Router::find`] from any thread.
//!
//! ```
//! use std::sync::Arc;
//! use silverback_config::{LoadOptions, PluginRegistry, RouterFlavor, load_bytes};
//! use silverback_router::{RequestView, Router, Scheme};
//!
//! let plugins = PluginRegistry::new();
//! let opts = LoadOptions { router_flavor: RouterFlavor::TraditionalCompatible, plugins: &plugins, now_unix: None };
//! let cfg = load_bytes(br#"
//! _format_version: "3.0"
//! services:
//! - name: api
//!   url: http://127.0.0.1:9000/v1
//!   routes:
//!   - name: users
//!     hosts: ["api.example.com"]
//!     paths: ["/users"]
//! "#, &opts).unwrap();
//! let router = Router::new(Arc::new(cfg), RouterFlavor::TraditionalCompatible).unwrap();
//! let headers = http::HeaderMap::new();
//! let req = RequestView {
//!     method: "GET", scheme: Scheme::Http, host: "api.example.com:8000", port: 8000,
//!     path: "/users/42", headers: &headers, sni: None, src: None, dst: None, query: None,
//! };
//! let m = router.find(&req).expect("a route matches");
//! assert_eq!(m.route.name.as_deref(), Some("users"));
//! assert_eq!(m.upstream_path, "/v1/42"); // strip_path defaults to true
//! ```
//!
//! # Semantics (what Kong does, and so what we do)
//!
//! - **Request fields.** The path is normalized as Kong does (percent-decoding of every
//!   escape but a reserved character's, `.`/`..` resolution, merged slashes;
//!   [`silverback_config::uri::normalize`]); a path whose escapes decode to bytes that are
//!   not UTF-8 matches nothing when some route reads the path (atc-router refuses the value);
//!   so does a request with a value not UTF-8 of a header or query argument some route
//!   reads, or a host not UTF-8 when some route reads hosts ([`Router::reads_host`]).
//!   The host is the `Host` header with a numeric `:port` split off, compared case-sensitively
//!   as Kong does (it does not lowercase). The destination port is that `Host` port when
//!   present, else the listener port ([`RequestView::port`]).
//! - **Route fields** (traditional_compatible): `methods` (exact), `hosts` (exact, `*.x`
//!   suffix, `x.*` prefix, optional `:port` that must equal the destination port), `paths`
//!   (plain string prefix, not segment-aware; or `~regex` anchored at the start), `headers`
//!   (values compared lowercased; `~*re` is a regex over the lowercased value; any value of a
//!   repeated header may match), `snis` (checked only on TLS requests). All given fields must
//!   match.
//! - **Protocols.** In traditional_compatible, a route's `protocols` do not take part in
//!   matching: an `https`-only route also matches a plain-http request, so that the proxy can
//!   answer 426 or redirect, and gRPC routes match any request (the proxy answers 415/426).
//!   In the expressions flavor, Kong ANDs `net.protocol == ...` (grpc→http, grpcs→https,
//!   tls_passthrough→tcp; we also map ws→http, wss→https) unless `protocols` is exactly
//!   `[https]`. Routes whose protocols are stream protocols only are ignored, and so are
//!   routes of a disabled service.
//! - **Priority.** Kong's 64-bit priority (more fields, plain hosts, header count, regex over
//!   prefix, `regex_priority`, prefix length), one matcher per path group (all regex paths;
//!   each distinct prefix length), ties broken by the larger matcher UUID. See
//!   [`compat_priority`]. This is the layout Kong documents and `transform.lua` describes;
//!   Kong 3.x's code computes the field count, header count and `regex_priority` terms with
//!   LuaJIT's 32-bit `bit.lshift` (its `lshift_uint64` rebinds a local instead of converting
//!   to `uint64_t`), so in Kong a plain-host-only or regex route outranks one with more
//!   fields, and routes of four fields or more get priorities that depend on LuaJIT's
//!   conversion of negative numbers. Silverback keeps the documented order (a deviation).
//! - **After the match.** [`RouteMatch::upstream_path`] follows Kong's `path_handling` v0
//!   table (v1 under the `traditional` flavor only), [`RouteMatch::stripped_prefix`] is Kong's
//!   `match_t.prefix`, [`RouteMatch::captures`] Kong's `uri_captures`.
//! - **Traditional flavor.** Matched with the compatible engine (Kong's compat router is its
//!   drop-in replacement); the differences are `path_handling: v1` honoured, and tie-breaks by
//!   matcher UUID rather than `created_at`.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;

use silverback_config::{Config, Route, RouterFlavor, Service};

mod compile;
mod expr;
mod fields;
mod index;
mod lazy_regex;
mod request;
pub mod synthetic;
mod upstream;

pub use compile::compat_priority;
pub use upstream::{sanitize_postfix, upstream_path};

/// The scheme of the listener a request arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// Plain-text listener.
    Http,
    /// TLS listener.
    Https,
}

impl Scheme {
    /// `"http"` or `"https"` (Kong's `net.protocol` for HTTP requests).
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// What the router looks at in a request. Borrowed from the proxy's request; nothing is
/// copied.
#[derive(Debug, Clone, Copy)]
pub struct RequestView<'a> {
    /// The request method, as received (`GET`).
    pub method: &'a str,
    /// The listener's scheme (TLS or not).
    pub scheme: Scheme,
    /// `Host` header or `:authority` as received, may carry `:port`; empty when absent.
    pub host: &'a str,
    /// The local listener port (after any port mapping); used for `host:port` route hosts
    /// when the `Host` header has no port.
    pub port: u16,
    /// The raw request path, without the query string. The router normalizes it.
    pub path: &'a str,
    /// The request headers.
    pub headers: &'a http::HeaderMap,
    /// The TLS server name, when the connection is TLS and the client sent one.
    pub sni: Option<&'a str>,
    /// The client address.
    pub src: Option<SocketAddr>,
    /// The local address the connection was accepted on.
    pub dst: Option<SocketAddr>,
    /// The raw query string (without `?`), if any. Only `http.queries.*` in expressions reads
    /// it.
    pub query: Option<&'a str>,
}

/// Regex captures of the matched path, as Kong exposes them to later phases
/// (`ngx.ctx.router_matches.uri_captures`): positional groups (0 is the whole match) and
/// named groups. Empty when the regex has no group (Kong then exposes none).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Captures {
    /// Positional groups; index 0 is the whole match; `None` for a group that did not
    /// participate.
    pub positional: Vec<Option<String>>,
    /// Named groups that participated, in the regex's order.
    pub named: Vec<(String, String)>,
}

impl Captures {
    /// Whether there is no capture at all.
    pub fn is_empty(&self) -> bool {
        self.positional.is_empty() && self.named.is_empty()
    }
    /// Positional group `i` (0 is the whole match).
    pub fn get(&self, i: usize) -> Option<&str> {
        self.positional.get(i).and_then(|c| c.as_deref())
    }
    /// Named group `name`.
    pub fn name(&self, name: &str) -> Option<&str> {
        self.named
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
    /// A group by Kong's key: a number for a positional group, else a name (as the
    /// `uri_capture` hash input of upstreams uses it).
    pub fn by_key(&self, key: &str) -> Option<&str> {
        match key.parse::<usize>() {
            Ok(i) => self.get(i),
            Err(_) => self.name(key),
        }
    }
}

/// The result of a successful match.
#[derive(Debug, Clone)]
pub struct RouteMatch<'r> {
    /// The matched route.
    pub route: &'r Route,
    /// Its service (`None`: Kong answers 503 `no Service found with those values`).
    pub service: Option<&'r Service>,
    /// The route host that matched, as configured (`*.example.com`, `a.com:8080`).
    pub matched_host: Option<&'r str>,
    /// The route path that matched, as configured (`/foo`, `~/items/(\d+)`).
    pub matched_path: Option<&'r str>,
    /// The part of the normalized request path that `strip_path` removes: the matched prefix,
    /// or the text a regex path matched (Kong's `match_t.prefix`, the default
    /// `X-Forwarded-Prefix`). `None` when `strip_path` is off or no path matched.
    pub stripped_prefix: Option<Cow<'r, str>>,
    /// Regex captures (positional and named), for later phases.
    pub captures: Captures,
    /// The path to send upstream: strip_path + service path + path_handling; not escaped,
    /// query string not included.
    pub upstream_path: String,
}

/// Errors compiling a router.
#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    /// A `~` path whose regex does not compile.
    #[error("route '{route}': invalid regex path '{path}': {message}")]
    PathRegex {
        /// Route name or id.
        route: String,
        /// The configured path.
        path: String,
        /// The regex engine's message.
        message: String,
    },
    /// A `~*` header value whose regex does not compile.
    #[error("route '{route}': invalid regex '{value}' for header '{header}': {message}")]
    HeaderRegex {
        /// Route name or id.
        route: String,
        /// Header name.
        header: String,
        /// The configured value.
        value: String,
        /// The regex engine's message.
        message: String,
    },
    /// A header name that is not a valid HTTP header name.
    #[error("route '{route}': invalid header name '{header}'")]
    HeaderName {
        /// Route name or id.
        route: String,
        /// Header name.
        header: String,
    },
    /// A `sources`/`destinations` entry that is not an IP or CIDR.
    #[error("route '{route}': invalid ip '{ip}' in {field}")]
    Ip {
        /// Route name or id.
        route: String,
        /// `sources` or `destinations`.
        field: &'static str,
        /// The configured value.
        ip: String,
    },
    /// An `expression` that does not parse or type-check.
    #[error("route '{route}': invalid expression: {message}")]
    Expression {
        /// Route name or id.
        route: String,
        /// The parser's message.
        message: String,
    },
}

pub(crate) fn route_label(r: &Route) -> String {
    r.name.clone().unwrap_or_else(|| r.id.to_string())
}

/// A compiled router over one configuration. Immutable, `Send + Sync`.
pub struct Router {
    config: Arc<Config>,
    flavor: RouterFlavor,
    /// Matchers in evaluation order: priority descending, then matcher UUID descending.
    entries: Vec<compile::Entry>,
    index: index::Index,
    exprs: expr::ExprSupport,
    /// Every distinct regex, compiled on first use (see [`Router::compile_regexes`]).
    regexes: Vec<Arc<lazy_regex::LazyRegex>>,
    /// Some matcher reads `http.path`: a request path whose escapes do not decode to UTF-8
    /// then matches nothing, as in Kong, where atc-router refuses to add the value.
    reads_path: bool,
    /// Some matcher reads `http.host` (see [`Router::reads_host`]).
    reads_host: bool,
    /// The other values some matcher reads that atc-router takes only as UTF-8.
    read_values: ReadValues,
}

/// The headers and query arguments some matcher reads (none in the `traditional` flavor,
/// which never goes through atc-router): a request with a value of one of them that is not
/// UTF-8 matches nothing, as Kong's context refuses such a value before any route is tried.
#[derive(Debug, Default)]
struct ReadValues {
    headers: Vec<http::HeaderName>,
    queries: Vec<String>,
}

impl ReadValues {
    fn new(entries: &[compile::Entry], exprs: &expr::ExprSupport) -> Self {
        let mut headers: Vec<http::HeaderName> = exprs.header_names().collect();
        for e in entries {
            if let compile::Kind::Fields(f) = &e.kind {
                headers.extend(f.headers.iter().map(|h| h.name.clone()));
            }
        }
        headers.sort_unstable_by(|a, b| a.as_str().cmp(b.as_str()));
        headers.dedup();
        let mut queries: Vec<String> = exprs.query_names().map(str::to_owned).collect();
        queries.sort_unstable();
        queries.dedup();
        ReadValues { headers, queries }
    }

    /// Whether one of the values read is not UTF-8 (nothing to check, inline, for the usual
    /// router, whose routes read neither).
    #[inline]
    fn refused(&self, req: &RequestView<'_>) -> bool {
        !(self.headers.is_empty() && self.queries.is_empty()) && self.refused_by(req)
    }

    #[inline(never)]
    fn refused_by(&self, req: &RequestView<'_>) -> bool {
        let header = self.headers.iter().any(|n| {
            req.headers
                .get_all(n)
                .iter()
                .any(|v| std::str::from_utf8(v.as_bytes()).is_err())
        });
        header
            || req
                .query
                .is_some_and(|q| self.queries.iter().any(|n| !expr::query_values_utf8(q, n)))
    }
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router")
            .field("flavor", &self.flavor)
            .field("matchers", &self.entries.len())
            .finish_non_exhaustive()
    }
}

impl Router {
    /// Compiles the routes of `config` for `flavor`.
    ///
    /// Regex paths and `~*` header values are checked here (an invalid one is an error), but
    /// each distinct pattern is compiled by the regex engine the first time a request needs
    /// it; call [`Router::compile_regexes`] off the request path to compile them all ahead.
    pub fn new(config: Arc<Config>, flavor: RouterFlavor) -> Result<Router, RouterError> {
        let mut regexes = lazy_regex::Interner::default();
        let entries = compile::compile(&config, flavor, &mut regexes)?;
        let index = index::Index::build(&entries);
        let exprs = expr::ExprSupport::new(&entries);
        // (Kong's `traditional` router matches bytes with PCRE, never through atc-router)
        let reads_path = flavor != RouterFlavor::Traditional
            && (exprs.reads_path()
                || entries
                    .iter()
                    .any(|e| matches!(&e.kind, compile::Kind::Fields(f) if !f.paths.is_empty())));
        let atc = flavor != RouterFlavor::Traditional;
        let reads_host = atc
            && (exprs.reads_host()
                || entries
                    .iter()
                    .any(|e| matches!(&e.kind, compile::Kind::Fields(f) if !f.hosts.is_empty())));
        let read_values = if atc {
            ReadValues::new(&entries, &exprs)
        } else {
            ReadValues::default()
        };
        Ok(Router {
            config,
            flavor,
            entries,
            index,
            exprs,
            regexes: regexes.into_vec(),
            reads_path,
            reads_host,
            read_values,
        })
    }

    /// Compiles every regex not compiled yet, so that no request pays for a first use
    /// (a few thousand regexes take about a second). Optional: meant for a background task
    /// right after a new router is published. Returns how many regexes it compiled.
    pub fn compile_regexes(&self) -> usize {
        self.compile_regexes_while(|| true)
    }

    /// [`Router::compile_regexes`], checking `go` before each regex and stopping when it
    /// answers `false` (for example because a newer router replaced this one).
    pub fn compile_regexes_while(&self, mut go: impl FnMut() -> bool) -> usize {
        let mut n = 0;
        for r in &self.regexes {
            if !go() {
                break;
            }
            if !r.is_compiled() {
                r.get();
                n += 1;
            }
        }
        n
    }

    /// How many distinct regexes the router holds, and how many of them are compiled.
    pub fn regex_counts(&self) -> (usize, usize) {
        let compiled = self.regexes.iter().filter(|r| r.is_compiled()).count();
        (self.regexes.len(), compiled)
    }

    /// The configuration this router was compiled from.
    pub fn config(&self) -> &Arc<Config> {
        &self.config
    }

    /// The flavor this router was compiled for.
    pub fn flavor(&self) -> RouterFlavor {
        self.flavor
    }

    /// Whether some matcher reads the request's host (a route with `hosts`, or an expression
    /// reading `http.host`; never in the `traditional` flavor). A host that is not UTF-8
    /// then matches nothing, as Kong's atc-router refuses the value; [`RequestView::host`]
    /// being a `str`, the caller checks it: `!router.reads_host()` or a UTF-8 host.
    pub fn reads_host(&self) -> bool {
        self.reads_host
    }

    /// Number of matchers (routes after the split by path group).
    pub fn matcher_count(&self) -> usize {
        self.entries.len()
    }

    /// Finds the route for a request: the highest-priority matcher that matches.
    pub fn find<'r>(&'r self, req: &RequestView<'_>) -> Option<RouteMatch<'r>> {
        let (prepared, utf8) = request::Prepared::new(req);
        if !utf8 && self.reads_path || self.read_values.refused(req) {
            return None;
        }
        let mut ctx = expr::LazyContext::new(&self.exprs);
        let mut it = self.index.candidates(&prepared);
        while let Some(i) = it.next_rank() {
            let e = &self.entries[i as usize];
            if let Some(hit) = e.eval(&prepared, &mut ctx) {
                return Some(self.finish(e, hit, &prepared));
            }
        }
        None
    }

    /// Like [`Router::find`], but walks every matcher in priority order without the index.
    /// Slow; for tests that check the index against the plain priority walk.
    pub fn find_linear<'r>(&'r self, req: &RequestView<'_>) -> Option<RouteMatch<'r>> {
        let (prepared, utf8) = request::Prepared::new(req);
        if !utf8 && self.reads_path || self.read_values.refused(req) {
            return None;
        }
        let mut ctx = expr::LazyContext::new(&self.exprs);
        for e in &self.entries {
            if let Some(hit) = e.eval(&prepared, &mut ctx) {
                return Some(self.finish(e, hit, &prepared));
            }
        }
        None
    }

    fn finish<'r>(
        &'r self,
        e: &'r compile::Entry,
        hit: compile::Hit,
        req: &request::Prepared<'_>,
    ) -> RouteMatch<'r> {
        // Only the entry is read: the route and service are handed out by reference.
        let route = &self.config.routes[e.route as usize];
        let service = e.service.map(|i| &self.config.services[i as usize]);
        let text: &'r str = &e.text;
        let prefix: Option<Cow<'r, str>> = match hit.prefix {
            compile::Prefix::None => None,
            compile::Prefix::Route(p) => Some(Cow::Borrowed(p.get(text))),
            compile::Prefix::Owned(s) => Some(Cow::Owned(s)),
        };
        let upstream_path = upstream_path(
            e.handling,
            e.strip_path,
            e.service_path.map(|p| p.get(text)),
            &req.path,
            prefix.as_deref(),
        );
        RouteMatch {
            route,
            service,
            matched_host: hit.host.map(|h| h.get(text)),
            matched_path: hit.path.map(|p| p.get(text)),
            stripped_prefix: if e.strip_path { prefix } else { None },
            captures: hit.captures,
            upstream_path,
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn router_is_send_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<super::Router>();
    }
}
