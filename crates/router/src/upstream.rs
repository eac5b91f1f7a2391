//! The path sent upstream after a match (Kong's `get_upstream_uri_v0` and the `v1` rules of
//! the traditional router).
//!
//! Inputs, as Kong defines them:
//! - `req`: the normalized request path (no query string);
//! - `prefix`: the matched path text when the route has `strip_path`, else `/` (for a regex
//!   path it is the text the regex matched; with `strip_path` and no path matched it is `/`);
//! - `postfix`: `req` after `prefix`, sanitized (a leading `./` or `../` is dropped, `.` and
//!   `..` become empty);
//! - `base`: the service `path`, or `/`.
//!
//! The result is not escaped and carries no query string; the proxy appends the query.

use silverback_config::PathHandling;

/// Drops a leading `./` or `../`, and turns `.`/`..` into the empty string (Kong's
/// `sanitize_uri_postfix`).
pub fn sanitize_postfix(postfix: &str) -> &str {
    if postfix == "." || postfix == ".." {
        ""
    } else if let Some(rest) = postfix.strip_prefix("./") {
        rest
    } else if let Some(rest) = postfix.strip_prefix("../") {
        rest
    } else {
        postfix
    }
}

/// Computes the upstream path.
///
/// `req` is the normalized request path, `prefix` the stripped prefix (`None` when
/// `strip_path` is off or no path matched), `service_path` the service's `path`.
///
/// ```
/// use silverback_config::PathHandling;
/// use silverback_router::upstream_path;
/// // strip_path, service path "/api": "/foo/bar" matched by prefix "/foo"
/// assert_eq!(upstream_path(PathHandling::V0, true, Some("/api"), "/foo/bar", Some("/foo")), "/api/bar");
/// // no strip_path
/// assert_eq!(upstream_path(PathHandling::V0, false, Some("/api"), "/foo/bar", None), "/api/foo/bar");
/// ```
pub fn upstream_path(
    handling: PathHandling,
    strip_path: bool,
    service_path: Option<&str>,
    req: &str,
    prefix: Option<&str>,
) -> String {
    let base = service_path.unwrap_or("/");
    let prefix = if strip_path {
        prefix.unwrap_or("/")
    } else {
        "/"
    };
    let postfix = sanitize_postfix(req.get(prefix.len()..).unwrap_or(""));
    match handling {
        PathHandling::V0 => v0(strip_path, base, req, postfix),
        PathHandling::V1 => v1(strip_path, base, req, postfix),
    }
}

fn concat(a: &str, b: &str) -> String {
    let mut s = String::with_capacity(a.len() + b.len());
    s.push_str(a);
    s.push_str(b);
    s
}

fn v0(strip_path: bool, base: &str, req: &str, postfix: &str) -> String {
    let base_slash = base.ends_with('/');
    match (base_slash, strip_path) {
        (true, true) => {
            if postfix.is_empty() {
                if base == "/" {
                    "/".to_string()
                } else if req.ends_with('/') {
                    base.to_string()
                } else {
                    base[..base.len() - 1].to_string()
                }
            } else if postfix.starts_with('/') {
                concat(&base[..base.len() - 1], postfix)
            } else {
                concat(base, postfix)
            }
        }
        (true, false) => concat(base, req.get(1..).unwrap_or("")),
        (false, true) => {
            if postfix.is_empty() {
                if req.len() > 1 && req.ends_with('/') {
                    concat(base, "/")
                } else {
                    base.to_string()
                }
            } else if postfix.starts_with('/') {
                concat(base, postfix)
            } else {
                let mut s = String::with_capacity(base.len() + 1 + postfix.len());
                s.push_str(base);
                s.push('/');
                s.push_str(postfix);
                s
            }
        }
        (false, false) => {
            if req == "/" {
                base.to_string()
            } else {
                concat(base, req)
            }
        }
    }
}

fn v1(strip_path: bool, base: &str, req: &str, postfix: &str) -> String {
    if strip_path {
        if base.ends_with('/') && postfix.starts_with('/') {
            concat(&base[..base.len() - 1], postfix)
        } else {
            concat(base, postfix)
        }
    } else {
        concat(base, req.get(1..).unwrap_or(""))
    }
}
