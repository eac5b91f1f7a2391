//! URI path helpers with Kong's semantics (`kong/tools/uri.lua`): normalisation of request
//! paths for routing, and escaping of upstream paths.

/// Characters that stay percent-encoded when normalising (RFC 3986 reserved set plus `%`).
const RESERVED: &[u8] = b"!*'();:@&=+$,/?%#[]";

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Normalises a path as Kong does before routing: percent-decodes every character outside the
/// reserved set (upper-casing the escapes that stay), merges repeated slashes when
/// `merge_slashes` is set, and resolves `.` and `..` segments.
///
/// ```
/// use silverback_config::uri::normalize;
/// assert_eq!(normalize("/a/%62c/./d/../e", true), "/a/bc/e");
/// assert_eq!(normalize("/x%2fy//z", true), "/x%2Fy/z");
/// ```
pub fn normalize(path: &str, merge_slashes: bool) -> String {
    let decoded = if path.contains('%') { decode_unreserved(path) } else { path.to_string() };
    let merged = if merge_slashes && decoded.contains("//") {
        let mut s = String::with_capacity(decoded.len());
        let mut prev_slash = false;
        for c in decoded.chars() {
            if c == '/' {
                if prev_slash {
                    continue;
                }
                prev_slash = true;
            } else {
                prev_slash = false;
            }
            s.push(c);
        }
        s
    } else {
        decoded
    };
    if merged.contains('.') { remove_dot_segments(&merged) } else { merged }
}

fn decode_unreserved(path: &str) -> String {
    let decode = |ascii_only: bool| -> Vec<u8> {
        let b = path.as_bytes();
        let mut out = Vec::with_capacity(b.len());
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'%' && i + 2 < b.len() {
                if let (Some(h), Some(l)) = (hex_val(b[i + 1]), hex_val(b[i + 2])) {
                    let c = h * 16 + l;
                    if RESERVED.contains(&c) || (ascii_only && c >= 0x80) {
                        out.push(b'%');
                        out.push(b[i + 1].to_ascii_uppercase());
                        out.push(b[i + 2].to_ascii_uppercase());
                    } else {
                        out.push(c);
                    }
                    i += 3;
                    continue;
                }
            }
            out.push(b[i]);
            i += 1;
        }
        out
    };
    match String::from_utf8(decode(false)) {
        Ok(s) => s,
        Err(_) => String::from_utf8(decode(true)).unwrap_or_else(|_| path.to_string()),
    }
}

/// RFC 3986 §5.2.4 `remove_dot_segments`.
pub fn remove_dot_segments(path: &str) -> String {
    let mut input = path;
    let mut out: Vec<&str> = Vec::new();
    let absolute = input.starts_with('/');
    let trailing = input.ends_with("/.") || input.ends_with("/..") || input.ends_with('/');
    if absolute {
        input = &input[1..];
    }
    for seg in input.split('/') {
        match seg {
            "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    // `split` yields a trailing "" for a trailing slash; keep it exactly once.
    while out.len() > 1 && out.last() == Some(&"") && out[out.len() - 2].is_empty() {
        out.pop();
    }
    let mut s = String::with_capacity(path.len());
    if absolute {
        s.push('/');
    }
    s.push_str(&out.join("/"));
    if trailing && !s.ends_with('/') {
        s.push('/');
    }
    s
}

/// Percent-encodes every byte outside Kong's allowed set for upstream URIs
/// (`[!#$&'()*+,/:;=?@[\]A-Za-z0-9\-_.~%]`), as `kong/tools/uri.lua:escape` does.
pub fn escape(path: &str) -> std::borrow::Cow<'_, str> {
    fn allowed(b: u8) -> bool {
        b.is_ascii_alphanumeric() || b"!#$&'()*+,/:;=?@[]-_.~%".contains(&b)
    }
    if path.bytes().all(allowed) {
        return std::borrow::Cow::Borrowed(path);
    }
    let mut s = String::with_capacity(path.len() + 8);
    for b in path.bytes() {
        if allowed(b) {
            s.push(b as char);
        } else {
            s.push_str(&format!("%{b:02X}"));
        }
    }
    std::borrow::Cow::Owned(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalization_table() {
        let cases = [
            ("/", "/"),
            ("/foo/bar", "/foo/bar"),
            ("/foo//bar", "/foo/bar"),
            ("/foo/./bar", "/foo/bar"),
            ("/foo/../bar", "/bar"),
            ("/foo/bar/..", "/foo/"),
            ("/..", "/"),
            ("/a/b/", "/a/b/"),
            ("/%7Efoo", "/~foo"),
            ("/%2e%2e/x", "/x"),
            ("/a%2Fb", "/a%2Fb"),
            ("/a%2fb", "/a%2Fb"),
            ("/caf%C3%A9", "/café"),
            ("/bad%FF", "/bad%FF"),
            ("/100%", "/100%"),
        ];
        for (i, o) in cases {
            assert_eq!(normalize(i, true), o, "input {i}");
        }
        assert_eq!(normalize("/a//b", false), "/a//b");
    }

    #[test]
    fn escaping() {
        assert_eq!(escape("/a b"), "/a%20b");
        assert_eq!(escape("/ok/~x"), "/ok/~x");
        assert_eq!(escape("/é"), "/%C3%A9");
    }
}
