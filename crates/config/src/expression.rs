//! ATC expressions (`router_flavor = expressions`): the field schema Kong's router exposes,
//! and validation through Kong's own parser (the `atc-router` crate).

use atc_router::ast::Type;
use atc_router::schema::Schema;
use atc_router::semantics::Validate;

/// The schema of fields available to HTTP routes.
pub fn http_schema() -> Schema {
    let mut s = Schema::default();
    for f in [
        "net.protocol",
        "tls.sni",
        "http.method",
        "http.host",
        "http.path",
        "http.path.segments.*",
        "http.headers.*",
        "http.queries.*",
    ] {
        s.add_field(f, Type::String);
    }
    for f in ["net.src.port", "net.dst.port", "http.path.segments.len"] {
        s.add_field(f, Type::Int);
    }
    for f in ["net.src.ip", "net.dst.ip"] {
        s.add_field(f, Type::IpAddr);
    }
    s
}

/// The schema of fields available to stream routes.
pub fn stream_schema() -> Schema {
    let mut s = Schema::default();
    for f in ["net.protocol", "tls.sni"] {
        s.add_field(f, Type::String);
    }
    for f in ["net.src.port", "net.dst.port"] {
        s.add_field(f, Type::Int);
    }
    for f in ["net.src.ip", "net.dst.ip"] {
        s.add_field(f, Type::IpAddr);
    }
    s
}

/// Rewrites the deprecated `net.port` field to `net.dst.port`, as Kong does.
pub fn rewrite_deprecated(expr: &str) -> std::borrow::Cow<'_, str> {
    if expr.contains("net.port") {
        std::borrow::Cow::Owned(expr.replace("net.port", "net.dst.port"))
    } else {
        std::borrow::Cow::Borrowed(expr)
    }
}

/// Parses and type-checks an expression.
pub fn validate(expr: &str, stream: bool) -> Result<(), String> {
    let expr = rewrite_deprecated(expr);
    let ast = atc_router::parser::parse(&expr).map_err(|e| e.to_string().replace('\n', " "))?;
    let schema = if stream {
        stream_schema()
    } else {
        http_schema()
    };
    ast.validate(&schema)
}

#[cfg(test)]
mod tests {
    #[test]
    fn validates() {
        assert!(super::validate(r#"http.path ^= "/foo" && http.host == "a.com""#, false).is_ok());
        assert!(super::validate(r#"http.headers.x_foo ~ "^a+$""#, false).is_ok());
        assert!(super::validate(r#"net.port == 80"#, false).is_ok());
        assert!(super::validate(r#"http.path == 1"#, false).is_err());
        assert!(super::validate(r#"http.nope == "x""#, false).is_err());
        assert!(super::validate(r#"http.path ^= "#, false).is_err());
        assert!(super::validate(r#"http.path == "/""#, true).is_err());
    }
}
