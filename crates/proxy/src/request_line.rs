//! nginx's checks of a request's method and target that `httparse` and hyper do not make.
//! Kong's proxy is nginx, so a request nginx refuses never reaches Kong's phases: it gets
//! Kong's 400 (`Bad request`) and the connection is closed. These are the cases:
//!
//! - a method of anything but `A`-`Z`, `_` and `-` (`get`, `G3T`);
//! - a target that is neither origin-form (`/...`) nor absolute-form (`scheme://host[:port]...`,
//!   the host of letters, digits, `.` and `-`, or an IPv6 literal, the port a number up to
//!   65535): `*`, `a/b`, a `CONNECT`'s `host:port`, `http://user@h/`, `http:///x`;
//! - a path (the target up to `?` or `#`) that nginx cannot normalize
//!   (`ngx_http_parse_complex_uri`, with `merge_slashes` on): a `%` not followed by two hex
//!   digits, a `%00`, or a `..` segment that climbs above the root (`/../a`,
//!   `/a/%2e%2e/../b`). nginx decodes `%XX` as it walks the path, so an encoded `.` or `/`
//!   counts as the character itself; an encoded `?`, `#` or `%` is an ordinary character.
//!
//! HTTP/2 requests have no request line; their method and `:path` get the same checks
//! ([`accepted_h2`]), as nginx's HTTP/2 module makes them.

use silverback_config::uri::hex_val as hex;

/// Whether nginx accepts an HTTP/1 request line's method and target.
pub(crate) fn accepted(method: &[u8], target: &[u8]) -> bool {
    method_ok(method) && target_ok(target)
}

/// Whether nginx accepts an HTTP/2 request's method and path (`:path` must be origin-form).
pub(crate) fn accepted_h2(method: &[u8], path: &[u8]) -> bool {
    method_ok(method) && path.first() == Some(&b'/') && path_ok(path)
}

/// nginx's method characters: upper-case letters, `_` and `-`.
fn method_ok(m: &[u8]) -> bool {
    !m.is_empty()
        && m.iter()
            .all(|&b| b.is_ascii_uppercase() || b == b'_' || b == b'-')
}

fn target_ok(t: &[u8]) -> bool {
    match t.first() {
        Some(b'/') => path_ok(t),
        Some(c) if c.is_ascii_alphabetic() => absolute_path(t).is_some_and(path_ok),
        _ => false,
    }
}

/// The part of an absolute-form target (`scheme://authority/path?query`) from its path on
/// (empty when it has none), or `None` when `t` is not absolute-form.
fn absolute_path(t: &[u8]) -> Option<&[u8]> {
    let colon = t.iter().position(|&b| b == b':')?;
    let scheme_ok = t[..colon]
        .iter()
        .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
    if !scheme_ok {
        return None;
    }
    let rest = t[colon + 1..].strip_prefix(b"//")?;
    let end = rest
        .iter()
        .position(|&b| matches!(b, b'/' | b'?' | b'#'))
        .unwrap_or(rest.len());
    authority_ok(&rest[..end]).then_some(&rest[end..])
}

/// nginx's reading of an absolute-form target's authority: a host of letters, digits, `.`
/// and `-` (or an IPv6 literal in brackets), then an optional port of digits (none above
/// 65535, which no server could have). No user information.
fn authority_ok(a: &[u8]) -> bool {
    let (host, port) = match a.first() {
        Some(b'[') => match a.iter().position(|&b| b == b']') {
            Some(close) => {
                let literal = &a[1..close];
                let ok = !literal.is_empty()
                    && literal
                        .iter()
                        .all(|&b| b.is_ascii_hexdigit() || matches!(b, b':' | b'.'));
                if !ok {
                    return false;
                }
                (&a[..=close], &a[close + 1..])
            }
            None => return false,
        },
        _ => match a.iter().position(|&b| b == b':') {
            Some(c) => (&a[..c], &a[c..]),
            None => (a, &a[a.len()..]),
        },
    };
    let host_ok = host.first() == Some(&b'[')
        || (!host.is_empty()
            && host
                .iter()
                .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-')));
    let port_ok = match port.strip_prefix(b":") {
        None => port.is_empty(),
        Some(digits) => {
            digits.len() <= 5
                && digits.iter().all(u8::is_ascii_digit)
                && digits
                    .iter()
                    .fold(0u32, |n, d| n * 10 + u32::from(d - b'0'))
                    <= 65535
        }
    };
    host_ok && port_ok
}

/// What the path segment read so far is.
#[derive(Clone, Copy)]
enum Segment {
    Empty,
    Dot,
    DotDot,
    Other,
}

impl Segment {
    fn push(self, c: u8) -> Self {
        match (self, c) {
            (Segment::Empty, b'.') => Segment::Dot,
            (Segment::Dot, b'.') => Segment::DotDot,
            _ => Segment::Other,
        }
    }
}

/// Whether nginx can normalize the path that `p` begins with (it ends at `?` or `#`):
/// every `%` starts two hex digits, none decodes to NUL, and no `..` climbs above the root.
/// Allocates nothing; one pass.
pub(crate) fn path_ok(p: &[u8]) -> bool {
    // the segments kept so far (empty and `.` segments keep none: slashes are merged)
    let mut depth = 0usize;
    let mut seg = Segment::Empty;
    let mut i = 0;
    // ends a segment: false when it is a `..` with nothing left to remove
    let close = |seg: Segment, depth: &mut usize| match seg {
        Segment::DotDot if *depth == 0 => false,
        Segment::DotDot => {
            *depth -= 1;
            true
        }
        Segment::Other => {
            *depth += 1;
            true
        }
        Segment::Empty | Segment::Dot => true,
    };
    loop {
        let c = match p.get(i) {
            None | Some(b'?' | b'#') => break,
            Some(b'%') => {
                let (Some(hi), Some(lo)) = (
                    p.get(i + 1).copied().and_then(hex),
                    p.get(i + 2).copied().and_then(hex),
                ) else {
                    return false;
                };
                i += 3;
                match hi << 4 | lo {
                    0 => return false,
                    // (nginx writes these out as they are: not a separator, nor a dot)
                    b'?' | b'#' | b'%' => b'x',
                    d => d,
                }
            }
            Some(&c) => {
                i += 1;
                c
            }
        };
        if c == b'/' {
            if !close(seg, &mut depth) {
                return false;
            }
            seg = Segment::Empty;
        } else {
            seg = seg.push(c);
        }
    }
    close(seg, &mut depth)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_as_nginx_reads_them() {
        let ok: &[&str] = &[
            "/",
            "/a/b",
            "/a/..",
            "/a/../b",
            "/a/./b",
            "/a//..//b",
            "/...",
            "/..a",
            "/a..",
            "/.%2E.",
            "/a%2F..",
            "/%41%42",
            "/a?/../../x",
            "/a#/../../x",
            "/a%3F/..",
            "/a%23",
            "/a%2500",
            "",
            "?x",
        ];
        for p in ok {
            assert!(path_ok(p.as_bytes()), "{p} should pass");
        }
        let bad: &[&str] = &[
            "/..",
            "/../a",
            "/a/../..",
            "/a/../../b",
            "/./../a",
            "//../a",
            "/%2e%2e/a",
            "/%2E%2e",
            "/a%2F..%2F..%2Fb",
            "/..?x",
            "/a%3F/../../x",
            "/a%3F%00",
            "/x%3f%zz",
            "/..#x",
            "/a%00b",
            "/a%zzb",
            "/a%2",
            "/a%",
            "/a%g0",
        ];
        for p in bad {
            assert!(!path_ok(p.as_bytes()), "{p} should be refused");
        }
    }

    #[test]
    fn methods_and_targets_as_nginx_reads_them() {
        for (method, target, ok) in [
            ("GET", "/", true),
            ("M-SEARCH", "/", true),
            ("X_Y", "/", true),
            ("get", "/", false),
            ("G3T", "/", false),
            ("GET", "http://h/a", true),
            ("GET", "http://h", true),
            ("GET", "http://[::1]:8000/x", true),
            ("GET", "http://h:8000?q", true),
            ("GET", "http://a-b.c:/x", true),
            ("GET", "http://u:p@h/", false),
            ("GET", "http://a_b/", false),
            ("GET", "http:///x", false),
            ("GET", "http://h:99999/", false),
            ("GET", "http://h:x/", false),
            ("GET", "http://[zz]/", false),
            ("GET", "http://h?x", true),
            ("GET", "svn+ssh://h/a", true),
            ("GET", "http://h/../a", false),
            ("GET", "http:/h/a", false),
            ("GET", "*", false),
            ("OPTIONS", "*", false),
            ("CONNECT", "h:443", false),
            ("GET", "a/b", false),
            ("GET", "1http://h/", false),
        ] {
            assert_eq!(
                accepted(method.as_bytes(), target.as_bytes()),
                ok,
                "{method} {target}"
            );
        }
    }
}
