//! The request fields the matchers read, computed once per request.

use std::borrow::Cow;

use crate::RequestView;

/// A request prepared for matching.
pub(crate) struct Prepared<'a> {
    /// The original view.
    pub view: &'a RequestView<'a>,
    /// `http.host`: the Host header without a numeric `:port`; `None` when absent.
    pub host: Option<&'a str>,
    /// `net.dst.port`: the Host header's port, else the listener port.
    pub dst_port: u16,
    /// `http.path`: the normalized path.
    pub path: Cow<'a, str>,
    /// [`method_bit`] of the method.
    pub method_bit: u16,
}

impl<'a> Prepared<'a> {
    /// The request prepared, and whether its path decoded to UTF-8: when its escapes decode
    /// to bytes that are not (`/%FF`), the path is read lossily, and a router that reads
    /// paths matches nothing (Kong's atc-router refuses such a value).
    pub fn new(view: &'a RequestView<'a>) -> (Self, bool) {
        let (host, port) = split_host_port(view.host);
        let (path, utf8) = normalize_path(view.path);
        let p = Prepared {
            view,
            host: if host.is_empty() { None } else { Some(host) },
            dst_port: port.unwrap_or(view.port),
            path,
            method_bit: method_bit(view.method),
        };
        (p, utf8)
    }
}

/// A bit per standard method (methods compare case-sensitively, as Kong's `==`); 0 for
/// any other method.
pub(crate) fn method_bit(m: &str) -> u16 {
    match m {
        "GET" => 1,
        "POST" => 1 << 1,
        "PUT" => 1 << 2,
        "DELETE" => 1 << 3,
        "PATCH" => 1 << 4,
        "HEAD" => 1 << 5,
        "OPTIONS" => 1 << 6,
        "CONNECT" => 1 << 7,
        "TRACE" => 1 << 8,
        _ => 0,
    }
}

/// Kong's `split_host_port`: the part after the first `:` is a port only when it is a
/// number; otherwise the whole string is the host.
pub(crate) fn split_host_port(h: &str) -> (&str, Option<u16>) {
    match h.find(':') {
        None => (h, None),
        Some(p) => {
            let rest = &h[p + 1..];
            if !rest.is_empty() && rest.len() <= 5 && rest.bytes().all(|b| b.is_ascii_digit()) {
                match rest.parse::<u32>() {
                    // a port above 65535 can never equal a route port: keep it out of range
                    Ok(n) if n <= u32::from(u16::MAX) => (&h[..p], Some(n as u16)),
                    _ => (&h[..p], None),
                }
            } else {
                (h, None)
            }
        }
    }
}

/// Kong's normalization of the request path (`normalize(uri, true)`), without allocating
/// when the path is already normal, and whether its escapes decoded to UTF-8 (else the
/// path is decoded lossily).
pub(crate) fn normalize_path(path: &str) -> (Cow<'_, str>, bool) {
    if needs_normalization(path) {
        match silverback_config::uri::try_normalize(path, true) {
            Ok(p) => (Cow::Owned(p), true),
            Err(lossy) => (Cow::Owned(lossy), false),
        }
    } else {
        (Cow::Borrowed(path), true)
    }
}

fn needs_normalization(path: &str) -> bool {
    let b = path.as_bytes();
    let mut prev_slash = false;
    let mut seg_start = 0usize;
    for (i, &c) in b.iter().enumerate() {
        match c {
            b'%' => return true,
            b'/' => {
                if prev_slash {
                    return true;
                }
                prev_slash = true;
                let seg = &b[seg_start..i];
                if seg == b"." || seg == b".." {
                    return true;
                }
                seg_start = i + 1;
            }
            _ => prev_slash = false,
        }
    }
    let seg = &b[seg_start..];
    seg == b"." || seg == b".."
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_split() {
        assert_eq!(split_host_port("a.com"), ("a.com", None));
        assert_eq!(split_host_port("a.com:8080"), ("a.com", Some(8080)));
        assert_eq!(split_host_port("a.com:x"), ("a.com:x", None));
        assert_eq!(split_host_port("[::1]:80"), ("[::1]:80", None));
        assert_eq!(split_host_port("a.com:99999"), ("a.com", None));
    }

    #[test]
    fn normalization_fast_path_agrees() {
        for p in [
            "/", "/a/b", "/a//b", "/a/./b", "/a/../b", "/a/b/..", "/a/.", "/%41", "/a.b/c.",
            "/..a/b", "", "*", "/a/b/", "/.", "/..", "a/./b", "/a%20b", "/%C3%A9",
        ] {
            assert_eq!(
                normalize_path(p).0,
                silverback_config::uri::normalize(p, true),
                "{p}"
            );
        }
    }
}
