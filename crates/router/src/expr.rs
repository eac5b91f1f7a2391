//! Expression routes (`router_flavor = expressions`): parsed, type-checked and evaluated with
//! Kong's own engine, the `atc-router` crate (its parser, AST and interpreter), so the
//! language's semantics are Kong's by construction.

use atc_router::ast::{BinaryOperator, Expression, LogicalExpression, Predicate, Value};
use atc_router::context::{Context, Match};
use atc_router::interpreter::Execute;
use atc_router::schema::Schema;
use atc_router::semantics::Validate;
use silverback_config::Route;

use crate::compile::{Entry, Hit, Kind, Prefix};
use crate::fields::Affix;
use crate::request::Prepared;
use crate::{Captures, RouterError, route_label};

/// A compiled expression route.
pub(crate) struct ExprMatcher {
    ast: Expression,
    /// A necessary condition on `http.host`, for the index.
    pub host_key: Option<Affix>,
    /// A necessary prefix of `http.path`, for the index.
    pub path_key: Option<Box<str>>,
}

impl std::fmt::Debug for ExprMatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ExprMatcher({:?})", self.ast)
    }
}

impl ExprMatcher {
    /// Parses `expression` as Kong builds it: `net.port` rewritten to `net.dst.port`, and, in
    /// the expressions flavor, `&& (net.protocol == ...)` appended unless protocols is
    /// exactly `[https]`.
    pub fn new(
        route: &Route,
        expression: &str,
        expressions_flavor: bool,
    ) -> Result<Self, RouterError> {
        let mut src = silverback_config::expression::rewrite_deprecated(expression).into_owned();
        if let Some(protocols) =
            crate::compile::protocol_clause(route).filter(|_| expressions_flavor)
        {
            let clause: Vec<String> = protocols
                .iter()
                .map(|p| format!("net.protocol == r#\"{p}\"#"))
                .collect();
            src = format!("{src} && ({})", clause.join(" || "));
        }
        let err = |message: String| RouterError::Expression {
            route: route_label(route),
            message,
        };
        let ast =
            atc_router::parser::parse(&src).map_err(|e| err(e.to_string().replace('\n', " ")))?;
        ast.validate(&silverback_config::expression::http_schema())
            .map_err(err)?;
        let mut host_key = None;
        let mut path_key = None;
        for p in conjuncts(&ast) {
            if !p.lhs.transformations.is_empty() {
                continue;
            }
            let Value::String(s) = &p.rhs else { continue };
            match (p.lhs.var_name.as_str(), &p.op) {
                ("http.host", BinaryOperator::Equals) if host_key.is_none() => {
                    host_key = Some(Affix::Exact(s.as_str().into()))
                }
                ("http.host", BinaryOperator::Postfix)
                    if host_key.is_none() && s.starts_with('.') =>
                {
                    host_key = Some(Affix::Suffix(s.as_str().into()))
                }
                ("http.host", BinaryOperator::Prefix) if host_key.is_none() && s.ends_with('.') => {
                    host_key = Some(Affix::Prefix(s.as_str().into()))
                }
                ("http.path", BinaryOperator::Equals | BinaryOperator::Prefix)
                    if path_key.is_none() =>
                {
                    path_key = Some(s.as_str().into())
                }
                _ => {}
            }
        }
        Ok(ExprMatcher {
            ast,
            host_key,
            path_key,
        })
    }

    pub fn eval(&self, ctx: &mut LazyContext<'_>, req: &Prepared<'_>) -> Option<Hit> {
        let c = ctx.get(req);
        let mut m = Match::new();
        if !self.ast.execute(c, &mut m) {
            return None;
        }
        let prefix = match m.matches.get("http.path") {
            Some(Value::String(s)) => Prefix::Owned(s.clone()),
            _ => Prefix::None,
        };
        let mut captures = Captures::default();
        if m.captures.len() >= 2 {
            let mut named: Vec<(String, String)> = Vec::new();
            for (k, v) in m.captures {
                match k.parse::<usize>() {
                    Ok(i) => {
                        if captures.positional.len() <= i {
                            captures.positional.resize(i + 1, None);
                        }
                        captures.positional[i] = Some(v);
                    }
                    Err(_) => named.push((k, v)),
                }
            }
            named.sort();
            captures.named = named;
        }
        Some(Hit {
            host: None,
            path: None,
            prefix,
            captures,
        })
    }
}

/// The predicates of the top-level `&&` chain (each is a necessary condition).
fn conjuncts(e: &Expression) -> Vec<&Predicate> {
    let mut out = Vec::new();
    fn walk<'e>(e: &'e Expression, out: &mut Vec<&'e Predicate>) {
        match e {
            Expression::Predicate(p) => out.push(p),
            Expression::Logical(l) => {
                if let LogicalExpression::And(a, b) = l.as_ref() {
                    walk(a, out);
                    walk(b, out);
                }
            }
        }
    }
    walk(e, &mut out);
    out
}

fn fields_of(e: &Expression, out: &mut Vec<String>) {
    match e {
        Expression::Predicate(p) => {
            if !out.contains(&p.lhs.var_name) {
                out.push(p.lhs.var_name.clone());
            }
        }
        Expression::Logical(l) => match l.as_ref() {
            LogicalExpression::And(a, b) | LogicalExpression::Or(a, b) => {
                fields_of(a, out);
                fields_of(b, out);
            }
            LogicalExpression::Not(a) => fields_of(a, out),
        },
    }
}

/// What evaluating expressions needs: the schema and the fields some expression reads.
pub(crate) struct ExprSupport {
    schema: Schema,
    fields: Vec<String>,
}

impl ExprSupport {
    /// Whether some expression reads the path (`http.path`, `http.path.segments.*`).
    pub fn reads_path(&self) -> bool {
        self.fields.iter().any(|f| f.starts_with("http.path"))
    }

    /// Whether some expression reads the host (`http.host`).
    pub fn reads_host(&self) -> bool {
        self.fields.iter().any(|f| f == "http.host")
    }

    /// The header names some expression reads (`http.headers.x_y` reads `x-y`).
    pub fn header_names(&self) -> impl Iterator<Item = http::HeaderName> + '_ {
        self.fields.iter().filter_map(|f| {
            let name = f.strip_prefix("http.headers.")?;
            http::HeaderName::from_bytes(name.replace('_', "-").as_bytes()).ok()
        })
    }

    /// The query argument names some expression reads (`http.queries.x`).
    pub fn query_names(&self) -> impl Iterator<Item = &str> + '_ {
        self.fields
            .iter()
            .filter_map(|f| f.strip_prefix("http.queries."))
    }

    pub fn new(entries: &[Entry]) -> Self {
        let mut fields = Vec::new();
        for e in entries {
            if let Kind::Expr(x) = &e.kind {
                fields_of(&x.ast, &mut fields);
            }
        }
        ExprSupport {
            schema: silverback_config::expression::http_schema(),
            fields,
        }
    }
}

/// The ATC context of one request, built on first use.
pub(crate) struct LazyContext<'s> {
    support: &'s ExprSupport,
    ctx: Option<Context<'s>>,
}

impl<'s> LazyContext<'s> {
    pub fn new(support: &'s ExprSupport) -> Self {
        LazyContext { support, ctx: None }
    }

    fn get(&mut self, req: &Prepared<'_>) -> &mut Context<'s> {
        let support = self.support;
        self.ctx.get_or_insert_with(|| build_context(support, req))
    }
}

fn segments(path: &str) -> Vec<&str> {
    let rest = path.strip_prefix('/').unwrap_or(path);
    let mut v: Vec<&str> = rest.split('/').collect();
    if v.last() == Some(&"") {
        v.pop();
    }
    v
}

fn segment_value(segs: &[&str], range: &str) -> Option<String> {
    match range.split_once('_') {
        None => segs
            .get(range.parse::<usize>().ok()?)
            .map(|s| s.to_string()),
        Some((a, b)) => {
            let (a, b) = (a.parse::<usize>().ok()?, b.parse::<usize>().ok()?);
            let last = segs.len().checked_sub(1)?;
            if a >= b || a > last || b > last {
                return None;
            }
            Some(segs[a..=b].join("/"))
        }
    }
}

fn percent_decode(s: &str) -> String {
    String::from_utf8_lossy(&percent_decode_bytes(s)).into_owned()
}

/// A query argument's name or value decoded as nginx's `ngx.req.get_uri_args` decodes it
/// (`+` is a space), as bytes.
fn percent_decode_bytes(s: &str) -> Vec<u8> {
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
                        i += 3;
                        continue;
                    }
                    _ => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    out
}

/// Whether every value of the query argument `name` decodes to UTF-8 (atc-router refuses
/// any other value, and Kong's router then matches nothing).
pub(crate) fn query_values_utf8(query: &str, name: &str) -> bool {
    query.split('&').all(|part| match part.split_once('=') {
        Some((k, v)) if !k.is_empty() && percent_decode(k) == name => {
            std::str::from_utf8(&percent_decode_bytes(v)).is_ok()
        }
        _ => true,
    })
}

fn query_values(query: &str, name: &str) -> Vec<String> {
    let mut out = Vec::new();
    for part in query.split('&') {
        if part.is_empty() {
            continue;
        }
        let (k, v) = match part.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (part, None),
        };
        if k.is_empty() || percent_decode(k) != name {
            continue;
        }
        out.push(v.map(percent_decode).unwrap_or_default());
    }
    out
}

fn build_context<'s>(support: &'s ExprSupport, req: &Prepared<'_>) -> Context<'s> {
    let mut c = Context::new(&support.schema);
    let view = req.view;
    let mut segs: Option<Vec<&str>> = None;
    for f in &support.fields {
        match f.as_str() {
            "net.protocol" => c.add_value(f, Value::String(view.scheme.as_str().to_string())),
            "tls.sni" => {
                if let Some(s) = view.sni {
                    c.add_value(f, Value::String(s.to_string()))
                }
            }
            "http.method" => c.add_value(f, Value::String(view.method.to_string())),
            "http.host" => {
                if let Some(h) = req.host {
                    c.add_value(f, Value::String(h.to_string()))
                }
            }
            "http.path" => c.add_value(f, Value::String(req.path.to_string())),
            "net.src.ip" => {
                if let Some(a) = view.src {
                    c.add_value(f, Value::IpAddr(a.ip()))
                }
            }
            "net.src.port" => {
                if let Some(a) = view.src {
                    c.add_value(f, Value::Int(i64::from(a.port())))
                }
            }
            "net.dst.ip" => {
                if let Some(a) = view.dst {
                    c.add_value(f, Value::IpAddr(a.ip()))
                }
            }
            "net.dst.port" => c.add_value(f, Value::Int(i64::from(req.dst_port))),
            "http.path.segments.len" => {
                let s = segs.get_or_insert_with(|| segments(&req.path));
                c.add_value(f, Value::Int(s.len() as i64));
            }
            other => {
                if let Some(range) = other.strip_prefix("http.path.segments.") {
                    let s = segs.get_or_insert_with(|| segments(&req.path));
                    if let Some(v) = segment_value(s, range) {
                        c.add_value(f, Value::String(v));
                    }
                } else if let Some(name) = other.strip_prefix("http.headers.") {
                    let hname = name.replace('_', "-");
                    for v in view.headers.get_all(hname.as_str()) {
                        c.add_value(
                            f,
                            Value::String(String::from_utf8_lossy(v.as_bytes()).into_owned()),
                        );
                    }
                } else if let (Some(name), Some(q)) =
                    (other.strip_prefix("http.queries."), view.query)
                {
                    {
                        for v in query_values(q, name) {
                            c.add_value(f, Value::String(v));
                        }
                    }
                }
                // any other field is not in the HTTP schema: validation rejected it
            }
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_fields() {
        let s = segments("/a/b/c/");
        assert_eq!(s, vec!["a", "b", "c"]);
        assert_eq!(segment_value(&s, "1").as_deref(), Some("b"));
        assert_eq!(segment_value(&s, "0_1").as_deref(), Some("a/b"));
        assert_eq!(segment_value(&s, "1_1"), None);
        assert_eq!(segment_value(&s, "1_3"), None);
        assert_eq!(segment_value(&s, "3"), None);
        assert!(segments("/").is_empty());
    }

    #[test]
    fn queries() {
        assert_eq!(query_values("a=1&b&a=x%20y+z&=q", "a"), vec!["1", "x y z"]);
        assert_eq!(query_values("a=1&b&a=2", "b"), vec![""]);
        assert!(query_values("a=1", "c").is_empty());
    }
}
