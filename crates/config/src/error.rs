//! Errors of loading a declarative configuration, in the shapes Kong's `POST /config` uses:
//! a nested `fields` table mirroring the input, and `flattened_errors` entries that name each
//! failing entity by type, name, id and tags (the controller maps them back to Kubernetes
//! objects through the tags).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

/// One error of a flattened entity entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlatError {
    /// `field` or `entity`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Dotted path of the field (absent for entity errors).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Kong's message.
    pub message: String,
}

/// The errors of one entity, as in Kong's `flattened_errors`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlattenedError {
    /// Singular entity type (`service`).
    pub entity_type: String,
    /// The entity's `name`, when it is a non-empty string (Kong reports no other key:
    /// a consumer's username or a target's address are not names).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entity_name: Option<String>,
    /// The entity's `id`, when it is a valid UUID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entity_id: Option<String>,
    /// The entity's tags, when they are all strings (left out otherwise, as in Kong). Read
    /// leniently: an empty list written by a Lua JSON encoder as `{}` is an empty list.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient_tags"
    )]
    pub entity_tags: Option<Vec<String>>,
    /// The entity as given (nested children removed, parent reference added).
    pub entity: Value,
    /// The errors.
    pub errors: Vec<FlatError>,
    /// The value of the entity's endpoint key (a consumer's username, a target's address),
    /// which readable reports name it by: not part of Kong's body.
    #[serde(skip)]
    pub key: Option<String>,
}

/// `entity_tags` as a Kong node may write it: a list of strings, `null`, or `{}` (Lua's empty
/// table); anything else reads as no tags rather than failing the whole entry.
fn lenient_tags<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::Array(a) => a
            .into_iter()
            .map(|t| match t {
                Value::String(s) => Some(s),
                _ => None,
            })
            .collect(),
        Value::Object(o) if o.is_empty() => Some(vec![]),
        _ => None,
    })
}

/// Why a configuration was rejected.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ConfigError {
    /// The document could not be parsed (not JSON/YAML, or not an object).
    #[error("failed parsing declarative configuration: {0}")]
    Parse(String),
    /// The document parsed but is invalid.
    #[error("declarative config is invalid: {}", .0.summary())]
    Invalid(Box<Invalid>),
}

/// All errors of an invalid document.
#[derive(Debug, Clone, Default)]
pub struct Invalid {
    /// Every error, nested like the input (Kong's `fields`).
    pub fields: Map<String, Value>,
    /// Errors not tied to an entity (top-level keys), nested like the input.
    pub top_level: Map<String, Value>,
    /// Per-entity errors, in the order of Kong's `flattened_errors`: the document's entity
    /// sections by name, descending (by bytes: `keys` before `key_sets`); a section's
    /// entities by position, descending (10 before 9); an entity's nested children before
    /// it, by position, ascending; each entry's errors by key, descending, at every level
    /// of the error table: a record's fields and a map's keys by bytes (`@entity` among them
    /// like any other key: after the letters and `_`, before the digits), an array's
    /// positions by value (see `kong_order` in `load.rs` and
    /// [`crate::schema::Errors::flatten`]).
    pub flattened: Vec<FlattenedError>,
    /// The same errors in the document's order, for people's reports
    /// ([`ConfigError::lines`]): for each entity with errors, as the document has them
    /// (a parent before its nested children), its entry in `flattened` and its errors as
    /// they were found (entity-level messages first, then the fields in schema order).
    pub in_document_order: Vec<(usize, Vec<FlatError>)>,
}

impl Invalid {
    fn summary(&self) -> String {
        lua_pretty(&Value::Object(self.fields.clone()))
    }
}

impl ConfigError {
    /// Kong's error code for declarative configuration errors.
    pub const CODE: i64 = 14;

    /// The body of Kong's 400 response. With `flatten`, entity errors move from `fields` to
    /// `flattened_errors`.
    pub fn kong_body(&self, flatten: bool) -> Value {
        match self {
            ConfigError::Parse(m) => {
                // Kong wraps the parser's message as any invalid document's fields
                let fields =
                    json!({"error": format!("failed parsing declarative configuration: {m}")});
                json!({
                    "code": Self::CODE,
                    "name": "invalid declarative configuration",
                    "message": format!("declarative config is invalid: {}", lua_pretty(&fields)),
                    "fields": fields,
                })
            }
            ConfigError::Invalid(inv) => {
                let fields = if flatten { &inv.top_level } else { &inv.fields };
                let fields = Value::Object(fields.clone());
                let mut body = json!({
                    "code": Self::CODE,
                    "name": "invalid declarative configuration",
                    "message": format!("declarative config is invalid: {}", lua_pretty(&fields)),
                    "fields": fields,
                });
                if flatten {
                    body["flattened_errors"] =
                        serde_json::to_value(&inv.flattened).unwrap_or(Value::Array(vec![]));
                }
                body
            }
        }
    }

    /// One human-readable line per error, for the CLI: the errors not tied to an entity,
    /// then each entity's, in the document's order (not the order of Kong's
    /// `flattened_errors`, which [`ConfigError::kong_body`] keeps).
    pub fn lines(&self) -> Vec<String> {
        match self {
            ConfigError::Parse(_) => vec![self.to_string()],
            ConfigError::Invalid(inv) => {
                let mut out = Vec::new();
                flatten_value("", &Value::Object(inv.top_level.clone()), &mut out);
                let who = |fe: &FlattenedError| match (&fe.key, &fe.entity_id) {
                    (Some(n), _) => format!("{} '{n}'", fe.entity_type),
                    (None, Some(id)) => format!("{} {id}", fe.entity_type),
                    _ => fe.entity_type.clone(),
                };
                let mut line = |who: &str, e: &FlatError| match &e.field {
                    Some(f) => out.push(format!("{who}: {f}: {}", e.message)),
                    None => out.push(format!("{who}: {}", e.message)),
                };
                if inv.in_document_order.is_empty() {
                    // (errors read from elsewhere, a Kong node's: in the order they came)
                    for fe in &inv.flattened {
                        let who = who(fe);
                        fe.errors.iter().for_each(|e| line(&who, e));
                    }
                } else {
                    for (entry, errors) in &inv.in_document_order {
                        let who = inv.flattened.get(*entry).map(who).unwrap_or_default();
                        errors.iter().for_each(|e| line(&who, e));
                    }
                }
                out
            }
        }
    }

    /// The flattened entity errors (empty for parse errors).
    pub fn flattened(&self) -> &[FlattenedError] {
        match self {
            ConfigError::Parse(_) => &[],
            ConfigError::Invalid(inv) => &inv.flattened,
        }
    }
}

fn flatten_value(prefix: &str, v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten_value(&p, v, out);
            }
        }
        Value::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                flatten_value(&format!("{prefix}[{}]", i + 1), v, out);
            }
        }
        Value::Null => {}
        Value::String(s) => out.push(format!("{prefix}: {s}")),
        other => out.push(format!("{prefix}: {other}")),
    }
}

/// Renders a value like Penlight's `pretty.write(t, "")`, which Kong uses in its messages:
/// `{services={{host="required field missing"}}}`.
pub fn lua_pretty(v: &Value) -> String {
    let mut s = String::new();
    write_lua(v, &mut s);
    s
}

fn write_lua(v: &Value, s: &mut String) {
    match v {
        Value::Null => s.push_str("nil"),
        Value::Bool(b) => s.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => s.push_str(&n.to_string()),
        Value::String(x) => {
            s.push('"');
            for c in x.chars() {
                match c {
                    '"' => s.push_str("\\\""),
                    '\\' => s.push_str("\\\\"),
                    '\n' => s.push_str("\\n"),
                    c => s.push(c),
                }
            }
            s.push('"');
        }
        Value::Array(a) => {
            s.push('{');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    s.push(',');
                }
                write_lua(x, s);
            }
            s.push('}');
        }
        Value::Object(m) => {
            s.push('{');
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    s.push(',');
                }
                let ident = k
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                    && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                if ident {
                    s.push_str(k);
                } else {
                    s.push_str("[\"");
                    s.push_str(k);
                    s.push_str("\"]");
                }
                s.push('=');
                write_lua(&m[k], s);
            }
            s.push('}');
        }
    }
}

/// Renders a value like Penlight's `pretty.write(t)` with its default indent (two spaces, one
/// entry a line), which Kong's `schema violation` messages use for nested errors:
/// `{\n  on = "expected a boolean"\n}`. Keys are sorted; an array's entries come first,
/// unkeyed up to its first hole.
pub fn lua_pretty_indented(v: &Value) -> String {
    let mut p = Pretty::default();
    p.write(v, "", "  ");
    p.eat_last_comma();
    if !p.line.is_empty() {
        let line = std::mem::take(&mut p.line);
        p.lines.push(line);
    }
    p.lines.join("\n")
}

/// Penlight's line buffer: `put` extends the current line, `putln` ends it.
#[derive(Default)]
struct Pretty {
    lines: Vec<String>,
    line: String,
}

impl Pretty {
    fn put(&mut self, s: &str) {
        self.line.push_str(s);
    }
    fn putln(&mut self, s: &str) {
        let mut line = std::mem::take(&mut self.line);
        line.push_str(s);
        self.lines.push(line);
    }
    fn eat_last_comma(&mut self) {
        if let Some(last) = self.lines.last_mut()
            && last.ends_with(',')
        {
            last.pop();
        }
    }
    fn write(&mut self, v: &Value, old_indent: &str, indent: &str) {
        match v {
            Value::Object(_) | Value::Array(_) => {}
            Value::String(x) => {
                let mut q = String::new();
                write_lua(&Value::String(x.clone()), &mut q);
                q.push(',');
                self.putln(&q);
                return;
            }
            other => {
                let mut q = String::new();
                write_lua(other, &mut q);
                q.push(',');
                self.putln(&q);
                return;
            }
        }
        let new_indent = format!("{indent}  ");
        self.putln("{");
        match v {
            Value::Array(items) => {
                // `ipairs` stops at the first hole; later entries are written with their index
                let run = items.iter().take_while(|x| !x.is_null()).count();
                for x in &items[..run] {
                    self.put(indent);
                    self.write(x, indent, &new_indent);
                }
                for (i, x) in items.iter().enumerate().skip(run) {
                    if !x.is_null() {
                        self.put(&format!("{indent}[{}] = ", i + 1));
                        self.write(x, indent, &new_indent);
                    }
                }
            }
            Value::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                for k in keys {
                    let key = if is_lua_identifier(k) {
                        k.clone()
                    } else {
                        let mut q = String::from("[");
                        write_lua(&Value::String(k.clone()), &mut q);
                        q.push(']');
                        q
                    };
                    self.put(&format!("{indent}{key} = "));
                    self.write(&m[k], indent, &new_indent);
                }
            }
            _ => {}
        }
        self.eat_last_comma();
        self.putln(&format!("{old_indent}}},"));
    }
}

fn is_lua_identifier(k: &str) -> bool {
    const KEYWORDS: &[&str] = &[
        "and", "break", "do", "else", "elseif", "end", "false", "for", "function", "goto", "if",
        "in", "local", "nil", "not", "or", "repeat", "return", "then", "true", "until", "while",
    ];
    k.chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !KEYWORDS.contains(&k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flattened_entries_read_tags_leniently() {
        let entry = |tags: &str| -> FlattenedError {
            serde_json::from_str(&format!(
                r#"{{"entity_type":"route","entity":{{}},"errors":[],"entity_tags":{tags}}}"#
            ))
            .unwrap()
        };
        assert_eq!(
            entry(r#"["a","b"]"#).entity_tags,
            Some(vec!["a".into(), "b".into()])
        );
        assert_eq!(entry("{}").entity_tags, Some(vec![]));
        assert_eq!(entry("null").entity_tags, None);
        assert_eq!(entry(r#"["a",1]"#).entity_tags, None);
        assert_eq!(entry(r#"{"a":1}"#).entity_tags, None);
        let none: FlattenedError =
            serde_json::from_str(r#"{"entity_type":"route","entity":{},"errors":[]}"#).unwrap();
        assert_eq!(none.entity_tags, None);
    }

    #[test]
    fn a_parse_error_has_kongs_body() {
        let e = ConfigError::Parse("expected an object".into());
        let m = "failed parsing declarative configuration: expected an object";
        let want = json!({
            "code": 14,
            "name": "invalid declarative configuration",
            "message": format!("declarative config is invalid: {{error=\"{m}\"}}"),
            "fields": {"error": m},
        });
        assert_eq!(e.kong_body(false), want);
        assert_eq!(e.kong_body(true), want);
    }

    #[test]
    fn lua_pretty_matches_penlight_shape() {
        let v = json!({"services": [{"host": "required field missing", "@entity": ["x"]}]});
        assert_eq!(
            lua_pretty(&v),
            r#"{services={{["@entity"]={"x"},host="required field missing"}}}"#
        );
        assert_eq!(lua_pretty(&json!({})), "{}");
    }

    #[test]
    fn indented_pretty_matches_penlight_layout() {
        assert_eq!(
            lua_pretty_indented(&json!({"b": {"on": "x"}, "a": ["y", "z"], "@entity": ["w"]})),
            "{\n  [\"@entity\"] = {\n    \"w\"\n  },\n  a = {\n    \"y\",\n    \"z\"\n  },\n  b = {\n    on = \"x\"\n  }\n}"
        );
        assert_eq!(
            lua_pretty_indented(&json!([null, "b"])),
            "{\n  [2] = \"b\"\n}"
        );
        assert_eq!(
            lua_pretty_indented(&json!({"end": 1})),
            "{\n  [\"end\"] = 1\n}"
        );
    }
}
