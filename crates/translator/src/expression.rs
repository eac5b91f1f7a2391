//! Routes for `router_flavor = expressions`: ATC expression text and route priorities.
//!
//! An Ingress path becomes one of:
//! - `Exact /a`: `http.path == "/a"`;
//! - `Prefix /a`: `(http.path == "/a" || http.path ^= "/a/")`, and `Prefix /`: `http.path ^= "/"`;
//! - `ImplementationSpecific /a`: `http.path ^= "/a"`, or for a regex `http.path ~ "^re"`.
//!
//! Priority (46 bits, the most Kong's route `priority` takes; higher wins), chosen so that the
//! more specific Ingress rule wins as the Ingress specification asks:
//!
//! | bits  | content |
//! |-------|---------|
//! | 43–45 | number of matched fields among paths, hosts, headers, methods and SNIs (0–5), as KIC counts them |
//! | 42    | every host is plain (no wildcard) |
//! | 34–41 | number of header matches (at most 255) |
//! | 33    | the path is a regex |
//! | 1–32  | path length (at most 2^32 - 1) |
//! | 0     | the path is Exact |

/// How an Ingress path matches.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PathMatch {
    /// The path equals the value.
    Exact(String),
    /// Segment prefix: the value or anything below `value/`.
    SegmentPrefix(String),
    /// Plain string prefix.
    Prefix(String),
    /// Regex (without Kong's `~`), anchored at the start.
    Regex(String),
}

impl PathMatch {
    /// The priority bits of this path (bits 0–33).
    pub fn priority_bits(&self) -> u64 {
        let len = |s: &str| (s.len() as u64).min((1 << 32) - 1);
        match self {
            PathMatch::Exact(p) => (len(p) << 1) | 1,
            PathMatch::SegmentPrefix(p) | PathMatch::Prefix(p) => len(p) << 1,
            PathMatch::Regex(r) => (1 << 33) | (len(r) << 1),
        }
    }

    /// The predicate.
    pub fn predicate(&self) -> String {
        match self {
            PathMatch::Exact(p) => format!("http.path == {}", quote(p)),
            PathMatch::SegmentPrefix(p) if p == "/" => format!("http.path ^= {}", quote(p)),
            PathMatch::SegmentPrefix(p) => {
                format!(
                    "(http.path == {} || http.path ^= {})",
                    quote(p),
                    quote(&format!("{p}/"))
                )
            }
            PathMatch::Prefix(p) => format!("http.path ^= {}", quote(p)),
            PathMatch::Regex(r) => format!("http.path ~ {}", quote(&format!("^{r}"))),
        }
    }
}

/// An ATC string literal.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The host predicate (`*.a.com` matches by suffix, `a.*` by prefix).
pub fn host_predicate(host: &str) -> String {
    if let Some(rest) = host.strip_prefix('*') {
        format!("http.host =^ {}", quote(rest))
    } else if let Some(rest) = host.strip_suffix('*') {
        format!("http.host ^= {}", quote(rest))
    } else {
        format!("http.host == {}", quote(host))
    }
}

/// The non-path parts of a route's match.
#[derive(Debug, Clone, Default)]
pub struct Matchers<'a> {
    /// Hosts (with aliases).
    pub hosts: &'a [String],
    /// Methods (upper case).
    pub methods: &'a [String],
    /// Header name -> accepted values.
    pub headers: &'a [(String, Vec<String>)],
    /// SNIs.
    pub snis: &'a [String],
}

fn or(parts: Vec<String>) -> String {
    if parts.len() == 1 {
        parts.into_iter().next().unwrap_or_default()
    } else {
        format!("({})", parts.join(" || "))
    }
}

/// The expression and priority of a route matching `paths` (all of one priority class)
/// and `m`.
pub fn route(paths: &[PathMatch], m: &Matchers<'_>) -> (String, u64) {
    let mut clauses = Vec::new();
    let mut fields = 0u64;
    if !m.snis.is_empty() {
        let mut p = vec![r#"net.protocol != "https""#.to_string()];
        p.extend(m.snis.iter().map(|s| sni_predicate(s)));
        clauses.push(or(p));
        fields += 1;
    }
    if !m.methods.is_empty() {
        clauses.push(or(m
            .methods
            .iter()
            .map(|x| format!("http.method == {}", quote(x)))
            .collect()));
        fields += 1;
    }
    if !m.hosts.is_empty() {
        clauses.push(or(m.hosts.iter().map(|h| host_predicate(h)).collect()));
        fields += 1;
    }
    for (name, values) in m.headers {
        let field = format!(
            "http.headers.{}",
            name.to_ascii_lowercase().replace('-', "_")
        );
        clauses.push(or(values
            .iter()
            .map(|v| header_predicate(&field, v))
            .collect()));
    }
    if !m.headers.is_empty() {
        fields += 1;
    }
    if !paths.is_empty() {
        clauses.push(or(paths.iter().map(PathMatch::predicate).collect()));
        fields += 1;
    }
    let expr = if clauses.len() == 1 {
        clauses.pop().unwrap_or_default()
    } else {
        clauses
            .iter()
            .map(|c| {
                if c.starts_with('(') {
                    c.clone()
                } else {
                    format!("({c})")
                }
            })
            .collect::<Vec<_>>()
            .join(" && ")
    };
    let plain_hosts = !m.hosts.is_empty() && m.hosts.iter().all(|h| !h.contains('*'));
    let headers = (m.headers.len() as u64).min(255);
    let path_bits = paths
        .iter()
        .map(PathMatch::priority_bits)
        .max()
        .unwrap_or(0);
    // at most 5 fields: 3 bits, and the whole below Kong's 2^46
    let priority = (fields << 43) | (u64::from(plain_hosts) << 42) | (headers << 34) | path_bits;
    (expr, priority)
}

/// A header value's predicate: `~*re` is a regex match (KIC's `headerMatcherFromHeaders`),
/// anything else a case-insensitive comparison. `any(...)`: a request may repeat the header,
/// and one matching value is enough.
fn header_predicate(field: &str, value: &str) -> String {
    match value.strip_prefix("~*") {
        Some(re) => format!("any({field}) ~ {}", quote(re)),
        None => format!("any(lower({field})) == {}", quote(&value.to_lowercase())),
    }
}

fn sni_predicate(s: &str) -> String {
    let s = s.strip_suffix('.').unwrap_or(s);
    if let Some(rest) = s.strip_prefix('*') {
        format!("tls.sni =^ {}", quote(rest))
    } else if let Some(rest) = s.strip_suffix('*') {
        format!("tls.sni ^= {}", quote(rest))
    } else {
        format!("tls.sni == {}", quote(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use silverback_config::expression::validate;

    #[test]
    fn expressions_parse() {
        let hosts = vec!["a.example.com".to_string(), "*.example.com".to_string()];
        let headers = vec![(
            "X-Env".to_string(),
            vec!["Prod".to_string(), "qa".to_string()],
        )];
        let methods = vec!["GET".to_string()];
        let snis = vec!["a.example.com".to_string()];
        let m = Matchers {
            hosts: &hosts,
            methods: &methods,
            headers: &headers,
            snis: &snis,
        };
        let paths = vec![
            PathMatch::Exact("/a\"b".into()),
            PathMatch::SegmentPrefix("/p".into()),
            PathMatch::Prefix("/i".into()),
            PathMatch::Regex(r"/r/\d+$".into()),
        ];
        for p in &paths {
            let (e, _) = route(std::slice::from_ref(p), &m);
            validate(&e, false).unwrap_or_else(|err| panic!("{e}: {err}"));
        }
        let (e, _) = route(&paths, &Matchers::default());
        validate(&e, false).unwrap();
        assert_eq!(
            route(
                &[PathMatch::SegmentPrefix("/".into())],
                &Matchers::default()
            )
            .0,
            r#"http.path ^= "/""#
        );
        let (e, _) = route(
            &[PathMatch::Exact("/x".into())],
            &Matchers {
                hosts: &hosts[..1],
                ..Default::default()
            },
        );
        assert_eq!(
            e,
            r#"(http.host == "a.example.com") && (http.path == "/x")"#
        );
    }

    /// `~*` header values are regexes, as in KIC; other values compare case-insensitively.
    #[test]
    fn header_regex() {
        let headers = vec![(
            "x-version".to_string(),
            vec![r"~*^v\d+$".to_string(), "Beta".to_string()],
        )];
        let m = Matchers {
            headers: &headers,
            ..Default::default()
        };
        let (e, _) = route(&[PathMatch::Prefix("/".into())], &m);
        assert_eq!(
            e,
            r#"(any(http.headers.x_version) ~ "^v\\d+$" || any(lower(http.headers.x_version)) == "beta") && (http.path ^= "/")"#
        );
        validate(&e, false).unwrap_or_else(|err| panic!("{e}: {err}"));
    }

    #[test]
    fn priorities_order_specificity() {
        let none = Matchers::default();
        let p = |pm: PathMatch| route(&[pm], &none).1;
        assert!(p(PathMatch::Exact("/a".into())) > p(PathMatch::SegmentPrefix("/a".into())));
        assert!(p(PathMatch::SegmentPrefix("/ab".into())) > p(PathMatch::Exact("/a".into())));
        assert!(p(PathMatch::Regex("/a".into())) > p(PathMatch::Exact("/a/very/long/path".into())));
        let plain = vec!["a.com".to_string()];
        let wild = vec!["*.a.com".to_string()];
        let host = |h: &[String]| {
            route(
                &[PathMatch::Prefix("/".into())],
                &Matchers {
                    hosts: h,
                    ..Default::default()
                },
            )
            .1
        };
        assert!(host(&plain) > host(&wild));
        assert!(host(&wild) > p(PathMatch::Regex("/long/regex/path".into())));
        assert!(host(&plain) < (1 << 46));
    }

    /// Every matched field counts (KIC: up to 5), so a route matching a method on top of
    /// host, headers and path wins over the same route without it; the whole priority stays
    /// below 2^46, the most Kong's route `priority` takes.
    #[test]
    fn priorities_count_all_fields() {
        let hosts = vec!["a.com".to_string()];
        let headers = vec![("x".to_string(), vec!["1".to_string()])];
        let methods = vec!["GET".to_string()];
        let snis = vec!["a.com".to_string()];
        let path = [PathMatch::Prefix("/".into())];
        let three = Matchers {
            hosts: &hosts,
            headers: &headers,
            ..Default::default()
        };
        let four = Matchers {
            methods: &methods,
            ..three.clone()
        };
        let five = Matchers {
            snis: &snis,
            ..four.clone()
        };
        let (p3, p4, p5) = (
            route(&path, &three).1,
            route(&path, &four).1,
            route(&path, &five).1,
        );
        assert!(p3 < p4 && p4 < p5, "{p3} {p4} {p5}");
        assert_eq!((p3 >> 43, p4 >> 43, p5 >> 43), (3, 4, 5));
        // the largest priority: 5 fields, plain hosts, 255 headers, a regex path of maximal length
        let many: Vec<(String, Vec<String>)> = (0..300)
            .map(|i| (format!("h{i}"), vec!["v".to_string()]))
            .collect();
        let long = "a".repeat(1 << 12);
        let max = route(
            &[PathMatch::Regex(long)],
            &Matchers {
                headers: &many,
                ..five.clone()
            },
        )
        .1;
        assert!(max >> 43 == 5 && max < (1 << 46), "{max}");
    }
}
