//! Field-based matchers: a route's methods, hosts, paths, headers, snis, sources and
//! destinations, compiled to the predicates Kong's `transform.get_expression` generates and
//! evaluated directly (no expression text, no allocation unless a regex must see a
//! lowercased header value or captures are returned).

use std::net::IpAddr;
use std::sync::Arc;

use regex::Regex;
use silverback_config::{IpPort, Route};
use smallvec::SmallVec;

use crate::compile::{Hit, Prefix};
use crate::lazy_regex::{Interner, LazyRegex};
use crate::request::{Prepared, method_bit, split_host_port};
use crate::{Captures, RouterError, Scheme, route_label};

/// `==`, `=^` (suffix) or `^=` (prefix) against a string.
#[derive(Debug, Clone)]
pub(crate) enum Affix {
    Exact(Box<str>),
    Suffix(Box<str>),
    Prefix(Box<str>),
}

impl Affix {
    /// Kong's reading of a route host pattern: a leading `*` means suffix, a trailing `*`
    /// prefix.
    fn wildcard(pattern: &str) -> Affix {
        if let Some(rest) = pattern.strip_prefix('*') {
            Affix::Suffix(rest.into())
        } else if let Some(rest) = pattern.strip_suffix('*') {
            Affix::Prefix(rest.into())
        } else {
            Affix::Exact(pattern.into())
        }
    }

    pub fn matches(&self, v: &str) -> bool {
        match self {
            Affix::Exact(s) => v == &**s,
            Affix::Suffix(s) => v.ends_with(&**s),
            Affix::Prefix(s) => v.starts_with(&**s),
        }
    }
}

/// Kong's reading of a route `snis` element (`sni_op_transform` and `sni_val_transform` in
/// `kong/router/transform.lua`, 3.7+): a leading `*` makes a suffix match (`=^`), else a
/// trailing `*` a prefix match (`^=`), else an exact one. The prefix keeps everything before
/// the `*`; otherwise one trailing dot is dropped (an FQDN's root, when more than one
/// character is left) before the leading `*` is. So `*` and `*.` match any SNI (suffix
/// `""`), `*foo.example.com` matches `foo.example.com` and `xfoo.example.com`, and
/// `example.co*` matches `example.com` and `example.co.uk`.
fn sni_affix(s: &str) -> Affix {
    if let Some(rest) = s.strip_prefix('*') {
        let rest = if s.len() > 1 {
            rest.strip_suffix('.').unwrap_or(rest)
        } else {
            rest
        };
        return Affix::Suffix(rest.into());
    }
    if let Some(p) = s.strip_suffix('*') {
        return Affix::Prefix(p.into());
    }
    let s = if s.len() > 1 {
        s.strip_suffix('.').unwrap_or(s)
    } else {
        s
    };
    Affix::Exact(s.into())
}

/// A piece of an entry's text (see [`crate::compile::Entry::text`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Span {
    start: u32,
    len: u32,
}

impl Span {
    /// Appends `s` to `text` and returns where it is.
    pub fn push(text: &mut String, s: &str) -> Span {
        let start = text.len() as u32;
        text.push_str(s);
        Span {
            start,
            len: s.len() as u32,
        }
    }

    #[inline]
    pub fn get(self, text: &str) -> &str {
        let start = self.start as usize;
        text.get(start..start + self.len as usize).unwrap_or("")
    }
}

/// How a host pattern compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AffixKind {
    Exact,
    Suffix,
    Prefix,
}

/// One route host: pattern plus optional port.
#[derive(Debug, Clone)]
pub(crate) struct HostRule {
    pub kind: AffixKind,
    pub port: Option<u16>,
    /// The text compared (the pattern without `*` and port).
    pub affix: Span,
    /// The host as configured (`RouteMatch::matched_host`).
    pub orig: Span,
}

impl HostRule {
    #[inline]
    fn matches(&self, text: &str, host: &str) -> bool {
        let a = self.affix.get(text);
        match self.kind {
            AffixKind::Exact => host == a,
            AffixKind::Suffix => host.ends_with(a),
            AffixKind::Prefix => host.starts_with(a),
        }
    }
}

/// One path of the matcher's group; `orig` is the path as configured.
#[derive(Debug)]
pub(crate) enum PathRule {
    Prefix {
        orig: Span,
    },
    Regex {
        re: Arc<LazyRegex>,
        /// Text every match starts with (may be empty).
        lit: Span,
        orig: Span,
    },
}

#[derive(Debug)]
pub(crate) enum ValueRule {
    /// Lowercased value (Lua `string.lower`: ASCII only), in the entry's text.
    Eq(Span),
    Regex(Arc<LazyRegex>),
}

#[derive(Debug)]
pub(crate) struct HeaderRule {
    pub name: http::HeaderName,
    pub values: SmallVec<[ValueRule; 1]>,
}

/// A route's `methods`: the standard ones as bits (see [`method_bit`]), others by name.
#[derive(Debug, Default)]
pub(crate) struct MethodSet {
    bits: u16,
    other: Box<[Box<str>]>,
}

impl MethodSet {
    fn new(methods: &[String]) -> Self {
        let mut bits = 0;
        let mut other = Vec::new();
        for m in methods {
            match method_bit(m) {
                0 => other.push(m.as_str().into()),
                b => bits |= b,
            }
        }
        MethodSet {
            bits,
            other: other.into(),
        }
    }

    fn is_empty(&self) -> bool {
        self.bits == 0 && self.other.is_empty()
    }

    fn matches(&self, bit: u16, method: &str) -> bool {
        self.bits & bit != 0 || self.other.iter().any(|m| &**m == method)
    }
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum IpRule {
    Addr(IpAddr),
    Cidr(IpAddr, u8),
}

impl IpRule {
    fn parse(s: &str) -> Option<IpRule> {
        match s.split_once('/') {
            None => s.parse().ok().map(IpRule::Addr),
            Some((a, m)) => {
                let addr: IpAddr = a.parse().ok()?;
                let len: u8 = m.parse().ok()?;
                let max = if addr.is_ipv4() { 32 } else { 128 };
                (len <= max).then_some(IpRule::Cidr(addr, len))
            }
        }
    }

    fn matches(&self, ip: IpAddr) -> bool {
        match *self {
            IpRule::Addr(a) => a == ip,
            IpRule::Cidr(net, len) => match (net, ip) {
                (IpAddr::V4(n), IpAddr::V4(i)) => {
                    let mask = if len == 0 {
                        0
                    } else {
                        u32::MAX << (32 - u32::from(len))
                    };
                    (u32::from(n) & mask) == (u32::from(i) & mask)
                }
                (IpAddr::V6(n), IpAddr::V6(i)) => {
                    let mask = if len == 0 {
                        0
                    } else {
                        u128::MAX << (128 - u32::from(len))
                    };
                    (u128::from(n) & mask) == (u128::from(i) & mask)
                }
                _ => false,
            },
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct NetRule {
    ip: Option<IpRule>,
    port: Option<u16>,
}

impl NetRule {
    fn compile(route: &Route, field: &'static str, v: &IpPort) -> Result<NetRule, RouterError> {
        let ip = match &v.ip {
            None => None,
            Some(s) => Some(IpRule::parse(s).ok_or_else(|| RouterError::Ip {
                route: route_label(route),
                field,
                ip: s.clone(),
            })?),
        };
        Ok(NetRule { ip, port: v.port })
    }

    fn matches(&self, addr: Option<std::net::SocketAddr>, port: Option<u16>) -> bool {
        let ip_ok = match self.ip {
            None => true,
            Some(r) => addr.is_some_and(|a| r.matches(a.ip())),
        };
        let port_ok = match self.port {
            None => true,
            Some(p) => port == Some(p),
        };
        ip_ok && port_ok
    }
}

/// A compiled field-based matcher. Strings live in the entry's text; one host and one path
/// are inline and the fields few routes use are boxed together, so that an evaluation
/// touches few cache lines.
#[derive(Debug)]
pub(crate) struct FieldMatcher {
    pub methods: MethodSet,
    pub hosts: SmallVec<[HostRule; 1]>,
    pub paths: SmallVec<[PathRule; 1]>,
    pub headers: Box<[HeaderRule]>,
    pub rare: Option<Box<RareFields>>,
}

/// Fields few routes set.
#[derive(Debug, Default)]
pub(crate) struct RareFields {
    pub snis: Vec<Affix>,
    pub sources: Vec<NetRule>,
    pub destinations: Vec<NetRule>,
    /// `net.protocol` values (expressions flavor only).
    pub protocols: Option<Vec<&'static str>>,
}

/// Lua's `string.lower` (ASCII only).
fn lua_lower(s: &str) -> String {
    s.to_ascii_lowercase()
}

impl FieldMatcher {
    /// Compiles `route` restricted to the paths at `path_idx`; strings go to `text`.
    pub fn new(
        route: &Route,
        path_idx: &[usize],
        protocols: Option<Vec<&'static str>>,
        regexes: &mut Interner,
        text: &mut String,
    ) -> Result<Self, RouterError> {
        let snis: Vec<Affix> = route.snis.iter().map(|s| sni_affix(s)).collect();
        let sources: Vec<NetRule> = route
            .sources
            .iter()
            .map(|v| NetRule::compile(route, "sources", v))
            .collect::<Result<_, _>>()?;
        let destinations: Vec<NetRule> = route
            .destinations
            .iter()
            .map(|v| NetRule::compile(route, "destinations", v))
            .collect::<Result<_, _>>()?;
        let methods = MethodSet::new(&route.methods);
        let hosts = route
            .hosts
            .iter()
            .map(|h| {
                let (host, port) = split_host_port(h);
                let orig = Span::push(text, h);
                let (kind, affix) = match Affix::wildcard(host) {
                    Affix::Exact(s) => (AffixKind::Exact, s),
                    Affix::Suffix(s) => (AffixKind::Suffix, s),
                    Affix::Prefix(s) => (AffixKind::Prefix, s),
                };
                HostRule {
                    kind,
                    port,
                    affix: Span::push(text, &affix),
                    orig,
                }
            })
            .collect();
        let mut paths = SmallVec::with_capacity(path_idx.len());
        for &idx in path_idx {
            let p = &route.paths[idx];
            if let Some(re) = p.strip_prefix('~') {
                // Kong: strip `~`, anchor with `^`, and rewrite `?<` to `?P<`.
                let src = format!("^{}", re.replace("?<", "?P<"));
                let re = regexes
                    .get(&src)
                    .map_err(|message| RouterError::PathRegex {
                        route: route_label(route),
                        path: p.clone(),
                        message,
                    })?;
                let orig = Span::push(text, p);
                let lit = Span::push(text, &re.prefix);
                paths.push(PathRule::Regex { re, lit, orig });
            } else {
                paths.push(PathRule::Prefix {
                    orig: Span::push(text, p),
                });
            }
        }
        let mut headers = Vec::with_capacity(route.headers.len());
        for (name, values) in &route.headers {
            let hname = regexes
                .header_name(&name.replace('_', "-").to_ascii_lowercase())
                .ok_or_else(|| RouterError::HeaderName {
                    route: route_label(route),
                    header: name.clone(),
                })?;
            let mut rules = SmallVec::with_capacity(values.len());
            for v in values {
                if let Some(re) = v.strip_prefix("~*") {
                    let lowered = lua_lower(re);
                    let re = regexes
                        .get(&lowered)
                        .map_err(|message| RouterError::HeaderRegex {
                            route: route_label(route),
                            header: name.clone(),
                            value: v.clone(),
                            message,
                        })?;
                    rules.push(ValueRule::Regex(re));
                } else {
                    rules.push(ValueRule::Eq(Span::push(text, &lua_lower(v))));
                }
            }
            headers.push(HeaderRule {
                name: hname,
                values: rules,
            });
        }
        let rare = (!snis.is_empty()
            || !sources.is_empty()
            || !destinations.is_empty()
            || protocols.is_some())
        .then(|| {
            Box::new(RareFields {
                snis,
                sources,
                destinations,
                protocols,
            })
        });
        Ok(FieldMatcher {
            methods,
            hosts,
            paths,
            headers: headers.into(),
            rare,
        })
    }

    /// Evaluates the matcher (`text`: its entry's text); on success returns what matched.
    pub fn eval(&self, text: &str, req: &Prepared<'_>) -> Option<Hit> {
        let view = req.view;
        if !self.methods.is_empty() && !self.methods.matches(req.method_bit, view.method) {
            return None;
        }
        let mut host_hit = None;
        if !self.hosts.is_empty() {
            let host = req.host?;
            host_hit = Some(
                self.hosts
                    .iter()
                    .find(|h| h.matches(text, host) && h.port.is_none_or(|p| p == req.dst_port))?
                    .orig,
            );
        }
        if let Some(rare) = &self.rare
            && !rare.matches(req)
        {
            return None;
        }
        // Plain prefixes first (cheap); regex paths are searched after the headers passed.
        let mut path_hit = None;
        let mut prefix = Prefix::None;
        let path: &str = &req.path;
        let mut has_regex = false;
        for p in &*self.paths {
            match p {
                PathRule::Prefix { orig } => {
                    if path.starts_with(orig.get(text)) {
                        path_hit = Some(*orig);
                        prefix = Prefix::Route(*orig);
                        break;
                    }
                }
                // a regex whose literal start the path lacks cannot match
                PathRule::Regex { lit, .. } => has_regex |= path.starts_with(lit.get(text)),
            }
        }
        if path_hit.is_none() && !has_regex && !self.paths.is_empty() {
            return None;
        }
        // Headers: every header name must match one of its values (on any request value).
        let mut header_regex_hits: Vec<(&Regex, String)> = Vec::new();
        for h in &*self.headers {
            let mut ok = false;
            let all = view.headers.get_all(&h.name);
            'values: for rule in &*h.values {
                for v in &all {
                    let Ok(v) = std::str::from_utf8(v.as_bytes()) else {
                        continue;
                    };
                    match rule {
                        ValueRule::Eq(want) => {
                            let want = want.get(text);
                            let eq = if v.is_ascii() {
                                v.eq_ignore_ascii_case(want)
                            } else {
                                v.to_lowercase() == want
                            };
                            if eq {
                                ok = true;
                                break 'values;
                            }
                        }
                        ValueRule::Regex(re) => {
                            let re = re.get();
                            let lowered = v.to_lowercase();
                            if re.is_match(&lowered) {
                                header_regex_hits.push((re, lowered));
                                ok = true;
                                break 'values;
                            }
                        }
                    }
                }
            }
            if !ok {
                return None;
            }
        }
        let mut captures = Captures::default();
        if path_hit.is_none() && has_regex {
            // The first regex of the group that matches, in configured order (one search each:
            // captures only run the capture engine once the fast engines found a match).
            for p in &*self.paths {
                if let PathRule::Regex { re, lit, orig } = p
                    && path.starts_with(lit.get(text))
                    && let re = re.get()
                    && let Some(c) = re.captures(path)
                {
                    path_hit = Some(*orig);
                    prefix = Prefix::Owned(c.get(0).map_or("", |m| m.as_str()).to_string());
                    if re.captures_len() > 1 {
                        captures = collect_captures(re, &c);
                    }
                    break;
                }
            }
            path_hit?;
        }
        // Kong's engine records header regex captures in the same map, after the path's.
        for (re, v) in &header_regex_hits {
            if let Some(c) = re.captures(v) {
                overlay_captures(&mut captures, re, &c);
            }
        }
        if captures.positional.iter().flatten().count() + captures.named.len() < 2 {
            // Kong exposes uri_captures only when there is more than the whole match.
            captures = Captures::default();
        }
        Some(Hit {
            host: host_hit,
            path: path_hit,
            prefix,
            captures,
        })
    }
}

impl RareFields {
    fn matches(&self, req: &Prepared<'_>) -> bool {
        let view = req.view;
        if !self.snis.is_empty() && view.scheme == Scheme::Https {
            let Some(sni) = view.sni else { return false };
            if !self.snis.iter().any(|a| a.matches(sni)) {
                return false;
            }
        }
        if !self.sources.is_empty()
            && !self
                .sources
                .iter()
                .any(|r| r.matches(view.src, view.src.map(|a| a.port())))
        {
            return false;
        }
        if !self.destinations.is_empty()
            && !self
                .destinations
                .iter()
                .any(|r| r.matches(view.dst, Some(req.dst_port)))
        {
            return false;
        }
        self.protocols
            .as_ref()
            .is_none_or(|p| p.contains(&view.scheme.as_str()))
    }
}

pub(crate) fn collect_captures(re: &Regex, c: &regex::Captures<'_>) -> Captures {
    let mut out = Captures::default();
    overlay_captures(&mut out, re, c);
    out
}

/// Inserts captures of `c` into `out`, replacing entries with the same key (positional index
/// or name), as Kong's engine does when several regexes of one route match.
fn overlay_captures(out: &mut Captures, re: &Regex, c: &regex::Captures<'_>) {
    for (i, m) in c.iter().enumerate() {
        if let Some(m) = m {
            if out.positional.len() <= i {
                out.positional.resize(i + 1, None);
            }
            out.positional[i] = Some(m.as_str().to_string());
        }
    }
    for name in re.capture_names().flatten() {
        if let Some(m) = c.name(name) {
            match out.named.iter_mut().find(|(n, _)| n == name) {
                Some(slot) => slot.1 = m.as_str().to_string(),
                None => out.named.push((name.to_string(), m.as_str().to_string())),
            }
        }
    }
}
