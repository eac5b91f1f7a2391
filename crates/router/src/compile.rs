//! From configured routes to ordered matchers: filtering, the split by path group, Kong's
//! priorities and the matcher UUIDs.

use silverback_config::{Config, PathHandling, Protocol, Route, RouterFlavor};
use uuid::Uuid;

use crate::expr::{ExprMatcher, LazyContext};
use crate::fields::{FieldMatcher, Span};
use crate::lazy_regex::Interner;
use crate::request::Prepared;
use crate::{Captures, RouterError};

/// Namespace of the UUIDv5 ids Kong gives to the matchers of a split route
/// (`uuid_v5(ns, "<route id>#<group index>")`).
pub(crate) const SPLIT_NAMESPACE: Uuid = Uuid::from_u128(0x7f145bf9_0dce_4f91_98eb_debbce4b9f6b);

const MAX_HEADER_COUNT: u64 = 255;
const PLAIN_HOST_ONLY_BIT: u64 = 1 << 60;
const REGEX_URL_BIT: u64 = 1 << 51;
const EXPRESSION_ONLY_BITS: u64 = 0xFF << 56;

/// One matcher: a route, or one path group of a split route. (Its priority and UUID only
/// decide its place in the evaluation order.) It holds what evaluating it and finishing a
/// match need, so that a match does not read the configuration's route and service.
pub(crate) struct Entry {
    /// The matcher's strings (hosts, paths, service path), referred to by [`Span`]s.
    pub text: Box<str>,
    /// Index into `config.routes`.
    pub route: u32,
    /// Index into `config.services`.
    pub service: Option<u32>,
    /// The service's `path`.
    pub service_path: Option<Span>,
    /// The route's `strip_path`.
    pub strip_path: bool,
    /// The `path_handling` that applies (v0 unless the traditional flavor).
    pub handling: PathHandling,
    pub kind: Kind,
}

pub(crate) enum Kind {
    Fields(FieldMatcher),
    Expr(Box<ExprMatcher>),
}

/// An entry with its sort key.
struct Keyed {
    priority: u64,
    id: Uuid,
    entry: Entry,
}

/// What the stripped prefix is, when a path matched.
pub(crate) enum Prefix {
    None,
    /// The configured path (a plain prefix), in the entry's text.
    Route(Span),
    /// Text of the request path (a regex match, or an expression's `http.path` match).
    Owned(String),
}

/// A successful evaluation.
pub(crate) struct Hit {
    /// The route host that matched, as configured (in the entry's text).
    pub host: Option<Span>,
    /// The route path that matched, as configured (in the entry's text).
    pub path: Option<Span>,
    pub prefix: Prefix,
    pub captures: Captures,
}

impl Entry {
    pub fn eval(&self, req: &Prepared<'_>, ctx: &mut LazyContext<'_>) -> Option<Hit> {
        match &self.kind {
            Kind::Fields(f) => f.eval(&self.text, req),
            Kind::Expr(x) => x.eval(ctx, req),
        }
    }
}

fn is_stream(p: Protocol) -> bool {
    matches!(
        p,
        Protocol::Tcp | Protocol::Tls | Protocol::Udp | Protocol::TlsPassthrough
    )
}

/// Kong's priority of a field-based HTTP route (or of one path group of it), a 64-bit number
/// where higher wins:
///
/// | bits  | content |
/// |-------|---------|
/// | 61–63 | how many of sources, destinations, methods, hosts, headers, snis, paths are set |
/// | 60    | hosts set and none has a `*` |
/// | 52–59 | number of header names (at most 255) |
/// | 51    | the paths are regexes |
/// | 19–50 | `regex_priority` (regex paths only; a 64-bit shift, as Kong's) |
/// | 0–18  | length of the prefix paths (all paths of a group have the same length) |
///
/// `paths` must be one path group (all regex, or all prefixes of one length).
pub fn compat_priority(route: &Route, paths: &[String]) -> u64 {
    let mut weight: u64 = 0;
    for set in [
        !route.sources.is_empty(),
        !route.destinations.is_empty(),
        !route.methods.is_empty(),
        !route.hosts.is_empty(),
        !route.headers.is_empty(),
        !route.snis.is_empty(),
        !paths.is_empty(),
    ] {
        weight += u64::from(set);
    }
    let plain_host_only = !route.hosts.is_empty() && !route.hosts.iter().any(|h| h.contains('*'));
    let headers = (route.headers.len() as u64).min(MAX_HEADER_COUNT);
    let (regex, uri_len) = match paths.first() {
        Some(p) if p.starts_with('~') => (true, 0u64),
        Some(p) => (false, p.len() as u64),
        None => (false, 0),
    };
    let regex_priority = if regex {
        (route.regex_priority as u64) << 19
    } else {
        0
    };
    (weight << 61)
        | if plain_host_only {
            PLAIN_HOST_ONLY_BIT
        } else {
            0
        }
        | (headers << 52)
        | if regex { REGEX_URL_BIT } else { 0 }
        | regex_priority
        | (uri_len & 0x7FFFF)
}

/// Kong's path groups: all regex paths form one group, prefixes are grouped by length; groups
/// are in order of first appearance.
pub(crate) fn path_groups(paths: &[String]) -> Vec<Vec<usize>> {
    let mut keys: Vec<Option<usize>> = Vec::new(); // None = regex
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for (i, p) in paths.iter().enumerate() {
        let k = if p.starts_with('~') {
            None
        } else {
            Some(p.len())
        };
        match keys.iter().position(|x| *x == k) {
            Some(g) => groups[g].push(i),
            None => {
                keys.push(k);
                groups.push(vec![i]);
            }
        }
    }
    groups
}

/// The `net.protocol` values an expressions-flavor route requires, or `None` when Kong adds
/// no protocol clause (protocols exactly `[https]`).
pub(crate) fn protocol_clause(route: &Route) -> Option<Vec<&'static str>> {
    if route.protocols.len() == 1
        && matches!(
            route.protocols[0],
            Protocol::Https | Protocol::Tls | Protocol::TlsPassthrough
        )
    {
        return None;
    }
    if route.protocols.is_empty() {
        return None;
    }
    let mut v: Vec<&'static str> = route
        .protocols
        .iter()
        .map(|p| match p {
            Protocol::TlsPassthrough => "tcp",
            Protocol::Grpc | Protocol::Ws => "http",
            Protocol::Grpcs | Protocol::Wss => "https",
            other => other.as_str(),
        })
        .collect();
    v.dedup();
    Some(v)
}

/// Compiles every HTTP route of the configuration into matchers, in evaluation order.
/// Regexes go through `regexes` (checked now, compiled on first use, shared when equal).
pub(crate) fn compile(
    config: &Config,
    flavor: RouterFlavor,
    regexes: &mut Interner,
) -> Result<Vec<Entry>, RouterError> {
    let service_index: std::collections::HashMap<Uuid, usize> = config
        .services
        .iter()
        .enumerate()
        .map(|(i, s)| (s.id, i))
        .collect();
    let mut out = Vec::with_capacity(config.routes.len());
    for (ri, route) in config.routes.iter().enumerate() {
        if !route.protocols.is_empty() && route.protocols.iter().all(|p| is_stream(*p)) {
            continue;
        }
        let service = route
            .service
            .and_then(|fk| service_index.get(&fk.id).copied());
        if service.is_some_and(|si| !config.services[si].enabled) {
            continue;
        }
        let protocols = if flavor == RouterFlavor::Expressions {
            protocol_clause(route)
        } else {
            None
        };
        let service_path = service.and_then(|si| config.services[si].path.as_deref());
        let entry = |text: String, service_path: Option<Span>, kind: Kind| Entry {
            text: text.into(),
            route: ri as u32,
            service: service.map(|s| s as u32),
            service_path,
            strip_path: route.strip_path,
            handling: if flavor == RouterFlavor::Traditional {
                route.path_handling
            } else {
                PathHandling::V0
            },
            kind,
        };
        if let Some(expression) = &route.expression {
            let m = ExprMatcher::new(route, expression, flavor == RouterFlavor::Expressions)?;
            let priority = EXPRESSION_ONLY_BITS | route.priority.unwrap_or(0);
            let mut text = String::new();
            let sp = service_path.map(|p| Span::push(&mut text, p));
            out.push(Keyed {
                priority,
                id: route.id,
                entry: entry(text, sp, Kind::Expr(Box::new(m))),
            });
            continue;
        }
        let groups = path_groups(&route.paths);
        if groups.len() <= 1 {
            let all: Vec<usize> = (0..route.paths.len()).collect();
            let mut text = String::new();
            let m = FieldMatcher::new(route, &all, protocols, regexes, &mut text)?;
            let sp = service_path.map(|p| Span::push(&mut text, p));
            out.push(Keyed {
                priority: compat_priority(route, &route.paths),
                id: route.id,
                entry: entry(text, sp, Kind::Fields(m)),
            });
        } else {
            for (g, idx) in groups.iter().enumerate() {
                let paths: Vec<String> = idx.iter().map(|&i| route.paths[i].clone()).collect();
                let id = Uuid::new_v5(
                    &SPLIT_NAMESPACE,
                    format!("{}#{}", route.id, g + 1).as_bytes(),
                );
                let mut text = String::new();
                let m = FieldMatcher::new(route, idx, protocols.clone(), regexes, &mut text)?;
                let sp = service_path.map(|p| Span::push(&mut text, p));
                out.push(Keyed {
                    priority: compat_priority(route, &paths),
                    id,
                    entry: entry(text, sp, Kind::Fields(m)),
                });
            }
        }
    }
    // Kong's engine walks (priority, uuid) in descending order; the first match wins.
    out.sort_by_key(|e| std::cmp::Reverse((e.priority, e.id)));
    Ok(out.into_iter().map(|k| k.entry).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_in_first_appearance_order() {
        let p = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            path_groups(&p(&["/a", "~/x", "/bb", "/c", "~/y"])),
            vec![vec![0, 3], vec![1, 4], vec![2]]
        );
        assert_eq!(path_groups(&p(&["/a", "/b"])), vec![vec![0, 1]]);
        assert!(path_groups(&[]).is_empty());
    }
}
