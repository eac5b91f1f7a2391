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
                return match serde_saphyr::from_slice::<Value>(bytes) {
                    Ok(v) => check_object(v),
                    Err(_) => Err(ConfigError::Parse(json_err.to_string())),
                };
            }
        }
    }
    let text = std::str::from_utf8(bytes)
        .map_err(|e| ConfigError::Parse(format!("invalid UTF-8: {e}")))?;
    match serde_saphyr::from_str::<Value>(text) {
        Ok(v) => check_object(v),
        Err(e) => Err(ConfigError::Parse(first_line(&e.to_string()))),
    }
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
}
