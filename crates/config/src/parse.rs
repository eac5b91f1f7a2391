//! Parsing declarative documents from bytes: JSON, or YAML (a superset of JSON).

use serde_json::Value;

use crate::error::ConfigError;

/// Parses JSON or YAML into a JSON value. Documents starting with `{` are tried as JSON
/// first; everything else (and JSON that fails) is parsed as YAML.
pub fn parse_document(bytes: &[u8]) -> Result<Value, ConfigError> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let trimmed = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .map(|i| &bytes[i..]);
    let Some(trimmed) = trimmed else {
        return Err(ConfigError::Parse("expected an object".into()));
    };
    if trimmed[0] == b'{' {
        match serde_json::from_slice::<Value>(trimmed) {
            Ok(v) => return check_object(v),
            Err(json_err) => {
                // YAML flow mappings (`{a: 1}`) are not JSON
                return match serde_saphyr::from_slice_with_options::<Value>(
                    bytes,
                    yaml_options(bytes.len()),
                ) {
                    Ok(v) => check_object(v),
                    Err(_) => Err(ConfigError::Parse(json_err.to_string())),
                };
            }
        }
    }
    let text = std::str::from_utf8(bytes)
        .map_err(|e| ConfigError::Parse(format!("invalid UTF-8: {e}")))?;
    match serde_saphyr::from_str_with_options::<Value>(text, yaml_options(text.len())) {
        Ok(v) => check_object(v),
        Err(e) => Err(ConfigError::Parse(first_line(&e.to_string()))),
    }
}

/// The text of a document that is read as YAML (not JSON: see [`json_text`]), and the
/// options [`parse_document`] parses it with; `None` when it is not UTF-8.
pub(crate) fn yaml_text(bytes: &[u8]) -> Option<(&str, serde_saphyr::Options)> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let text = std::str::from_utf8(bytes).ok()?;
    Some((text, yaml_options(text.len())))
}

/// The YAML parser's options: its defaults, except that the node and event budgets grow with
/// the document. The default budget (250,000 nodes, 1,000,000 events) would turn down a
/// configuration of a few thousand services (each service, route, upstream and target is
/// a dozen nodes or more). Without aliases a node takes at least one byte of input and
/// gives at most two events, so these limits never turn down a plain document, while alias
/// expansion stays bounded (by the limits proportional to the input, and by the alias and
/// anchor limits, which are left as they are).
fn yaml_options(len: usize) -> serde_saphyr::Options {
    let mut options = serde_saphyr::Options::default();
    if let Some(budget) = options.budget.as_mut() {
        budget.max_nodes = budget.max_nodes.max(len.saturating_add(16));
        budget.max_events = budget
            .max_events
            .max(len.saturating_mul(2).saturating_add(16));
    }
    options
}

/// The text of a document that is read as JSON first: after an optional BOM and whitespace,
/// it starts with `{`.
pub(crate) fn json_text(bytes: &[u8]) -> Option<&[u8]> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let i = bytes.iter().position(|b| !b.is_ascii_whitespace())?;
    (bytes[i] == b'{').then(|| &bytes[i..])
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or(s).to_string()
}

fn check_object(v: Value) -> Result<Value, ConfigError> {
    if v.is_object() {
        Ok(v)
    } else {
        Err(ConfigError::Parse("expected an object".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert!(parse_document(br#"{"_format_version":"3.0"}"#).is_ok());
        assert!(parse_document(b"_format_version: '3.0'\nservices: []\n").is_ok());
        assert!(parse_document(b"{_format_version: '3.0'}").is_ok());
        assert!(matches!(
            parse_document(b"[1,2]"),
            Err(ConfigError::Parse(_))
        ));
        assert!(matches!(parse_document(b""), Err(ConfigError::Parse(_))));
        assert!(matches!(
            parse_document(b"a: [b"),
            Err(ConfigError::Parse(_))
        ));
        assert!(matches!(
            parse_document(b"{\"a\": 1"),
            Err(ConfigError::Parse(_))
        ));
    }

    /// A large YAML document is read whole: the parser's default budget (250,000 nodes)
    /// grows with the document.
    #[test]
    fn large_yaml() {
        let mut yaml = String::from("_format_version: '3.0'\n_ignore:\n");
        for _ in 0..260_000 {
            yaml.push_str("- 0\n");
        }
        assert!(
            serde_saphyr::from_str::<Value>(&yaml).is_err(),
            "over the default budget"
        );
        let doc = parse_document(yaml.as_bytes()).expect("parses");
        assert_eq!(doc["_ignore"].as_array().map(Vec::len), Some(260_000));
        // alias bombs are still turned down
        let mut bomb = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 0..9 {
            let prev = if i == 0 {
                "a".to_string()
            } else {
                format!("b{}", i - 1)
            };
            bomb.push_str(&format!(
                "b{i}: &b{i} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n"
            ));
        }
        assert!(parse_document(bomb.as_bytes()).is_err());
    }
}
