//! nginx's checks of a request's method and target that `httparse` and hyper do not make.
//! Kong's proxy is nginx, so a request nginx refuses never reaches Kong's phases: it gets
//! Kong's 400 (`Bad request`) and the connection is closed. These are the cases:
//!
//! - a method of anything but `A`-`Z`, `_` and `-` (`get`, `G3T`);
//! - a target that is neither origin-form (`/...`) nor absolute-form (`scheme://...`): `*`,
//!   `a/b`, and a `CONNECT`'s `host:port`;
//! - a path (the target up to `?` or `#`) that nginx cannot normalize
//!   (`ngx_http_parse_complex_uri`, with `merge_slashes` on): a `%` not followed by two hex
//!   digits, a `%00`, or a `..` segment that climbs above the root (`/../a`,
//!   `/a/%2e%2e/../b`). nginx decodes `%XX` as it walks the path, so an encoded `.` or `/`
//!   counts as the character itself, and an encoded `?` ends the path.
//!
//! HTTP/2 requests have no request line; their `:path` gets the path check
//! ([`path_ok`]), as nginx's HTTP/2 module applies it too.

use silverback_config::uri::hex_val as hex;

/// Whether nginx accepts an HTTP/1 request line's method and target.
pub(crate) fn accepted(method: &[u8], target: &[u8]) -> bool {
    method_ok(method) && target_ok(target)
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
    Some(&rest[end..])
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

/// Whether nginx can normalize the path that `p` begins with (it ends at `?`, `#`, or an
/// encoded `?`): every `%` starts two hex digits, none decodes to NUL, and no `..` climbs
/// above the root. Allocates nothing; one pass.
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
                    b'?' => break,
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
            "/a%3F/../../x",
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
