//! URI path helpers with Kong's semantics (`kong/tools/uri.lua`): normalisation of request
//! paths for routing, and escaping of upstream paths.

/// The value of a hex digit (either case).
pub fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn is_unreserved(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~')
}

/// Normalises a path as Kong does before routing (RFC 3986 §6.2.2): percent-decodes the
/// escapes of unreserved characters (upper-casing the escapes that stay), merges repeated
/// slashes when `merge_slashes` is set, and resolves `.` and `..` segments.
///
/// ```
/// use silverback_config::uri::normalize;
/// assert_eq!(normalize("/a/%62c/./d/../e", true), "/a/bc/e");
/// assert_eq!(normalize("/x%2fy//z%20", true), "/x%2Fy/z%20");
/// ```
pub fn normalize(path: &str, merge_slashes: bool) -> String {
    let decoded = if path.contains('%') {
        decode_unreserved(path, false)
    } else {
        path.to_string()
    };
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
    if merged.contains('.') {
        remove_dot_segments(&merged)
    } else {
        merged
    }
}

/// Decodes escapes of unreserved characters and upper-cases the others. With
/// `escape_regex_meta`, decoded regex metacharacters (`.`, `-`) are escaped with `\`, as
/// Kong's path migration does for regex paths.
fn decode_unreserved(path: &str, escape_regex_meta: bool) -> String {
    let b = path.as_bytes();
    let mut out = String::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(h), Some(l)) = (hex_val(b[i + 1]), hex_val(b[i + 2]))
        {
            let c = h * 16 + l;
            if is_unreserved(c) {
                if escape_regex_meta && matches!(c, b'.' | b'-') {
                    out.push('\\');
                }
                out.push(c as char);
            } else {
                out.push('%');
                out.push(b[i + 1].to_ascii_uppercase() as char);
                out.push(b[i + 2].to_ascii_uppercase() as char);
            }
            i += 3;
            continue;
        }
        // copy one UTF-8 character
        let ch_len = path[i..].chars().next().map_or(1, char::len_utf8);
        out.push_str(&path[i..i + ch_len]);
        i += ch_len;
    }
    out
}

/// Kong's 3.0 migration of an old (1.x/2.x) route path: plain paths are normalised, others
/// become regexes (`~`), with unreserved escapes decoded.
pub fn migrate_path(path: &str) -> String {
    let plain = path
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"./-_~%".contains(&b));
    if plain {
        normalize(path, true)
    } else {
        format!("~{}", decode_unreserved(path, true))
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
            ("/caf%c3%a9", "/caf%C3%A9"),
            ("/a%20b", "/a%20b"),
            ("/%41%2d%5f", "/A-_"),
            ("/100%", "/100%"),
        ];
        for (i, o) in cases {
            assert_eq!(normalize(i, true), o, "input {i}");
        }
        assert_eq!(normalize("/a//b", false), "/a//b");
        assert_eq!(migrate_path("/a/%62"), "/a/b");
        assert_eq!(migrate_path("/v[12]/%2e"), "~/v[12]/\\.");
    }

    #[test]
    fn escaping() {
        assert_eq!(escape("/a b"), "/a%20b");
        assert_eq!(escape("/ok/~x"), "/ok/~x");
        assert_eq!(escape("/é"), "/%C3%A9");
    }
}
