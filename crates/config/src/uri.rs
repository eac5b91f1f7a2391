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

/// RFC 3986's reserved characters, which Kong's `normalize` leaves escaped (`%` included).
fn is_reserved(c: u8) -> bool {
    b"!*'();:@&=+$,/?%#[]".contains(&c)
}

/// Normalises a path as Kong does before routing (`kong/tools/uri.lua`): percent-decodes
/// every escape but those of reserved characters (`!*'();:@&=+$,/?%#[]`, whose escapes are
/// upper-cased), so unreserved characters and "others" (a space, `"`, `<`, bytes past
/// ASCII...) are read as themselves; merges repeated slashes when `merge_slashes` is set;
/// and resolves `.` and `..` segments. The bytes decoded may not be UTF-8 (`%FF`); then the
/// path is lossily decoded here (see [`try_normalize`]).
///
/// ```
/// use silverback_config::uri::normalize;
/// assert_eq!(normalize("/a/%62c/./d/../e", true), "/a/bc/e");
/// assert_eq!(normalize("/x%2fy//z%20", true), "/x%2Fy/z ");
/// ```
pub fn normalize(path: &str, merge_slashes: bool) -> String {
    try_normalize(path, merge_slashes).unwrap_or_else(|lossy| lossy)
}

/// [`normalize`], or `Err` when the decoded bytes are not UTF-8: Kong's router then matches
/// nothing (atc-router refuses a path that is not UTF-8). The `Err` holds the path
/// normalized with only the escapes of ASCII characters decoded, so that the others stay
/// escaped (`/%FF` goes upstream as it came, as Kong's `escape` writes the byte back).
pub fn try_normalize(path: &str, merge_slashes: bool) -> Result<String, String> {
    let decoded = if path.contains('%') {
        match String::from_utf8(decode_escapes(path, Decode::All)) {
            Ok(s) => s,
            Err(_) => {
                let ascii = String::from_utf8(decode_escapes(path, Decode::AsciiOnly))
                    .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
                return Err(normalize_decoded(ascii, merge_slashes));
            }
        }
    } else {
        path.to_string()
    };
    Ok(normalize_decoded(decoded, merge_slashes))
}

fn normalize_decoded(decoded: String, merge_slashes: bool) -> String {
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

/// nginx's `$uri` for a request path (what Kong hashes for an upstream's `hash_on: path`):
/// every `%XX` decoded, reserved characters too (`%2F` is a slash), then repeated slashes
/// merged (nginx's default `merge_slashes on`) and `.` / `..` segments resolved (a `..`
/// above the root stays at the root; nginx refuses such a request). Bytes that are not UTF-8
/// once decoded are replaced (`U+FFFD`). Borrowed when there is nothing to do.
///
/// ```
/// use silverback_config::uri::nginx_uri;
/// assert_eq!(nginx_uri("/a//%62%2Fc/./d/../e"), "/a/b/c/e");
/// ```
pub fn nginx_uri(path: &str) -> std::borrow::Cow<'_, str> {
    let b = path.as_bytes();
    let plain = !b.contains(&b'%')
        && !b.windows(2).any(|w| w == b"//" || w == b"/.")
        && !b.starts_with(b".");
    if plain {
        return std::borrow::Cow::Borrowed(path);
    }
    let decoded = String::from_utf8_lossy(&decode_escapes(path, Decode::Every)).into_owned();
    std::borrow::Cow::Owned(normalize_decoded(decoded, true))
}

/// How [`decode_escapes`] treats an escape.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Decode {
    /// Every escape decoded, a reserved character's too (nginx's `$uri`).
    Every,
    /// Decoded, but a reserved character's (Kong's `normalize_decode`).
    All,
    /// Decoded when ASCII; a byte past ASCII stays escaped as written.
    AsciiOnly,
    /// Decoded, a regex metacharacter escaped with `\` (Kong's `normalize_regex` of the 3.0
    /// path migration: `.`, `^`, `-`, `{`, `}`, `\`, `|`).
    Regex,
}

/// Each `%XX` (hex in either case) becomes its byte, unless the byte is reserved (and `how`
/// is not [`Decode::Every`]), when the escape stays, upper-cased; `how` says what becomes of
/// the others.
fn decode_escapes(path: &str, how: Decode) -> Vec<u8> {
    let b = path.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(h), Some(l)) = (hex_val(b[i + 1]), hex_val(b[i + 2]))
        {
            let c = h * 16 + l;
            if how != Decode::Every && is_reserved(c) {
                out.extend_from_slice(&[
                    b'%',
                    b[i + 1].to_ascii_uppercase(),
                    b[i + 2].to_ascii_uppercase(),
                ]);
            } else if how == Decode::AsciiOnly && !c.is_ascii() {
                out.extend_from_slice(&b[i..i + 3]);
            } else {
                if how == Decode::Regex && b".^-{}\\|".contains(&c) {
                    out.push(b'\\');
                }
                out.push(c);
            }
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

/// Kong's 3.0 migration of an old (1.x/2.x) route path (`migrate_path_280_300.lua`): a
/// path of `[A-Za-z0-9./_~%-]` only is a prefix, normalised; any other becomes a regex
/// (`~`), its escapes decoded as [`normalize`] decodes them, a decoded regex metacharacter
/// escaped with `\` ([`Decode::Regex`]).
pub fn migrate_path(path: &str) -> String {
    let plain = path
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"./-_~%".contains(&b));
    if plain {
        return normalize(path, true);
    }
    format!(
        "~{}",
        String::from_utf8_lossy(&decode_escapes(path, Decode::Regex))
    )
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
            // "others" are decoded too; reserved characters stay escaped
            ("/caf%c3%a9", "/café"),
            ("/a%20b", "/a b"),
            ("/%22%3c%7C%5e", "/\"<|^"),
            (
                "/%21%2a%27%28%29%3b%3a%40%26%3d%2b%24%2c%2f%3f%25%23%5b%5d",
                "/%21%2A%27%28%29%3B%3A%40%26%3D%2B%24%2C%2F%3F%25%23%5B%5D",
            ),
            ("/%41%2d%5f", "/A-_"),
            ("/100%", "/100%"),
        ];
        for (i, o) in cases {
            assert_eq!(normalize(i, true), o, "input {i}");
        }
        assert_eq!(normalize("/a//b", false), "/a//b");
        // bytes that are not UTF-8: the escapes past ASCII stay as written
        assert_eq!(
            try_normalize("/%FF/x%20y/%c3", true),
            Err("/%FF/x y/%c3".to_string())
        );
        assert_eq!(try_normalize("/%C3%A9", true), Ok("/é".to_string()));
        assert_eq!(migrate_path("/a/%62"), "/a/b");
        assert_eq!(migrate_path("/v[12]/%2e"), "~/v[12]/\\.");
        assert_eq!(migrate_path("/v[12]/%5e%20%2F%7c"), "~/v[12]/\\^ %2F\\|");
    }

    #[test]
    fn escaping() {
        assert_eq!(escape("/a b"), "/a%20b");
        assert_eq!(escape("/ok/~x"), "/ok/~x");
        assert_eq!(escape("/é"), "/%C3%A9");
    }

    #[test]
    fn nginx_uri_decodes_every_escape_merges_and_resolves() {
        for (raw, uri) in [
            ("/a/b", "/a/b"),
            ("/a/b/", "/a/b/"),
            ("/", "/"),
            ("/a//b", "/a/b"),
            ("/a/./b/../c", "/a/c"),
            ("/a/%62%2Fc", "/a/b/c"),
            ("/a/%2e%2E/b", "/b"),
            ("/a/.", "/a/"),
            ("/a/b/..", "/a/"),
            ("/%41%20b%25", "/A b%"),
            ("/x%zz%4", "/x%zz%4"),
            ("/../a", "/a"),
        ] {
            assert_eq!(nginx_uri(raw), uri, "{raw}");
        }
        assert!(matches!(
            nginx_uri("/a/b.c/d"),
            std::borrow::Cow::Borrowed(_)
        ));
    }
}
