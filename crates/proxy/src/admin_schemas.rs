//! The admin API's schema endpoints, as Kong answers them in DB-less mode:
//!
//! - `GET /schemas/{entity}`: the entity's schema (`{"fields": [...]}`), 404
//!   `No entity named '<name>'`;
//! - `GET /schemas/plugins/{name}`: a plugin's schema, 404 `No plugin named '<name>'`; the
//!   older `GET /plugins/schema/{name}` gives its `config` record alone;
//! - `GET /schemas/vaults/{name}`: a vault type's schema, 404 `No vault named '<name>'`;
//! - `POST /schemas/{entity}/validate` (`/schemas/plugins/validate` included): 200
//!   `schema validation successful`, or 400 with Kong's `schema violation` body. The entity
//!   is checked by the rules `POST /config` applies to one entity
//!   ([`silverback_config::validate_entity`]), without uniqueness or references.
//!
//! The reading of a request body's parameters, which the entity writes
//! ([`crate::admin_writes`]) share, is here too: [`readable`], [`input`], [`violation`].
//!
//! The routes to these (and their 405 `Method not allowed` for other methods) are in
//! [`crate::admin_routes`] and [`crate::admin`].

use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::{Map, Value};
use silverback_config::schema::Errors;
use silverback_config::schema_json::{entity_schema_json, schema_violation, vault_schema_json};
use silverback_config::{EntityKind, LoadOptions, validate_entity};

use crate::admin::{
    decode_str, json_response, message, multipart_boundary, multipart_parts, now_unix,
};
use crate::body::ProxyBody;
use crate::gateway::Shared;

/// `GET /schemas/{entity}`: the entity's schema.
pub(crate) fn entity_schema(sh: &Shared, entity: &str) -> Response<ProxyBody> {
    match EntityKind::from_plural(entity) {
        Some(k) => json_response(
            StatusCode::OK,
            &entity_schema_json(k, sh.settings.router_flavor),
        ),
        None => no_entity(entity),
    }
}

/// `GET /schemas/plugins/{name}`: the plugin's schema.
pub(crate) fn plugin_schema(sh: &Shared, name: &str) -> Response<ProxyBody> {
    match sh.settings.plugins.get(name) {
        Some(p) => json_response(StatusCode::OK, &p.to_kong_json()),
        None => no_plugin(name),
    }
}

/// `GET /schemas/vaults/{name}`: the vault type's schema.
pub(crate) fn vault_schema(name: &str) -> Response<ProxyBody> {
    match vault_schema_json(name) {
        Some(s) => json_response(StatusCode::OK, &s),
        None => message(StatusCode::NOT_FOUND, &format!("No vault named '{name}'")),
    }
}

/// `GET /plugins/schema/{name}`: the plugin's `config` record.
pub(crate) fn plugin_config_schema(sh: &Shared, name: &str) -> Response<ProxyBody> {
    match sh.settings.plugins.get(name) {
        Some(p) => json_response(StatusCode::OK, &p.config_kong_json()),
        None => no_plugin(name),
    }
}

fn no_plugin(name: &str) -> Response<ProxyBody> {
    message(StatusCode::NOT_FOUND, &format!("No plugin named '{name}'"))
}

fn no_entity(name: &str) -> Response<ProxyBody> {
    message(StatusCode::NOT_FOUND, &format!("No entity named '{name}'"))
}

/// `POST /schemas/{entity}/validate`, in Kong's order: the body's type (415), its parameters
/// (400 `Cannot parse JSON body`), then the entity's name (404), then the schema
/// (`kong/api/routes/kong.lua`: `validate_schema`, with `schema:validate` of the parameters
/// given `process_auto_fields(params, "insert")`).
///
/// The body is read as the entity writes read it ([`readable`], [`input`]): a JSON array is a
/// table whose elements are the parameters 1 to n, each an unknown field to the schema (`[]`
/// is `{}`), and the errors of such a body are written as Kong writes them ([`violation`]).
/// Form values are not typed by the schema: this endpoint is attached without Kong's
/// `arguments.load`, which types the writes' form values. (Kong's `parse_params` still turns
/// a url-encoded body's `""`, `"true"` and `"false"` into null and booleans with
/// `decode_args`; not done here.)
pub(crate) async fn validate(
    sh: &Arc<Shared>,
    entity: &str,
    req: Request<Incoming>,
) -> Response<ProxyBody> {
    if !readable(&req) {
        return unsupported_type();
    }
    let ct = req
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = match crate::admin::read_body(sh, req.into_body()).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let input = match input(ct.as_deref(), &body) {
        Ok(i) => i,
        Err(r) => return *r,
    };
    let Some(kind) = EntityKind::from_plural(entity) else {
        return no_entity(entity);
    };
    let opts = LoadOptions {
        router_flavor: sh.settings.router_flavor,
        plugins: &sh.settings.plugins,
        now_unix: now_unix(),
    };
    let errors = validate_entity(kind, &input.params, &opts);
    if errors.is_empty() {
        message(StatusCode::OK, "schema validation successful")
    } else {
        violation(&errors, input.array)
    }
}

fn unsupported_type() -> Response<ProxyBody> {
    let mut r = Response::new(ProxyBody::empty());
    *r.status_mut() = StatusCode::UNSUPPORTED_MEDIA_TYPE;
    r
}

// === request bodies, as Kong's admin API reads them (the entity writes share this) ===

/// Kong's `before_filter` (`kong/api/api_helpers.lua`), which every `POST`, `PUT` and
/// `PATCH` of the admin API passes first: a body the admin API reads, by its `Content-Type`
/// (compared as Kong compares it, case and all), or no body. Otherwise 415.
pub(crate) fn readable<B>(req: &Request<B>) -> bool {
    let h = req.headers();
    match h.get(http::header::CONTENT_TYPE) {
        Some(ct) => {
            let ct = ct.as_bytes();
            ct.starts_with(b"application/json")
                || ct.starts_with(b"multipart/form-data")
                || ct.starts_with(b"application/x-www-form-urlencoded")
        }
        None => match h.get(http::header::CONTENT_LENGTH) {
            Some(n) => n.as_bytes() == b"0",
            None => !h.contains_key(http::header::TRANSFER_ENCODING),
        },
    }
}

/// The parameters of a request body, before any schema types them.
#[derive(Debug, Default)]
pub(crate) struct Input {
    pub(crate) params: Map<String, Value>,
    /// The values are text (a form or multipart body).
    pub(crate) text: bool,
    /// The body was a JSON array (its elements the parameters 1, 2, ...: integer keys to
    /// Kong, whose errors cjson writes as an array).
    pub(crate) array: bool,
}

/// A body's parameters, as Kong's admin API reads them (`Err`: Kong's 400 answer).
///
/// A JSON body (any `Content-Type` containing `application/json`, as Kong's `parse_params`
/// finds it) is decoded by lapis (`json_params`), and Kong's handlers take any table: an
/// object's members are the parameters, an array's elements the parameters 1, 2, ..., which
/// no schema has (`[]` is `{}`). Nothing, a body that does not parse, or a scalar, is 400
/// `Cannot parse JSON body` (Kong's parameter merge fails on a scalar, an unexpected error:
/// a 400 here). A form or multipart body gives [`form_params`]; anything else (no body) no
/// parameter.
pub(crate) fn input(
    content_type: Option<&str>,
    body: &Bytes,
) -> Result<Input, Box<Response<ProxyBody>>> {
    let raw = content_type.unwrap_or("");
    let ct = raw.to_ascii_lowercase();
    if ct.contains("application/json") {
        return match serde_json::from_slice(body) {
            Ok(Value::Object(params)) => Ok(Input {
                params,
                text: false,
                array: false,
            }),
            Ok(Value::Array(items)) => Ok(Input {
                params: items
                    .into_iter()
                    .enumerate()
                    .map(|(i, v)| ((i + 1).to_string(), v))
                    .collect(),
                text: false,
                array: true,
            }),
            _ => Err(Box::new(message(
                StatusCode::BAD_REQUEST,
                "Cannot parse JSON body",
            ))),
        };
    }
    let text = ct.starts_with("application/x-www-form-urlencoded")
        || ct.starts_with("multipart/form-data");
    if !text {
        return Ok(Input::default());
    }
    match form_params(raw, body) {
        Ok(params) => Ok(Input {
            params,
            text,
            array: false,
        }),
        Err(m) => Err(Box::new(message(StatusCode::BAD_REQUEST, &m))),
    }
}

/// Kong's schema violation (400, code 2) of `errors`; `array`: the body was a JSON array.
pub(crate) fn violation(errors: &Errors, array: bool) -> Response<ProxyBody> {
    let mut body = schema_violation(errors);
    // Errors keyed 1 to n come out as an array, as cjson writes a Lua sequence: right for a
    // JSON array's elements (the parameters 1 to n, each an unknown field), but an object's
    // or a form's keys "1", "2" stay strings to Kong, and their errors an object. (Kong fails
    // to sort an array's errors beside named ones, `errors.lua`'s `schema_violation`
    // comparing a number with a string, an unexpected error (500): they are listed together
    // here, in a 400.)
    if !array && let Some(Value::Array(items)) = body.get("fields") {
        let fields: Map<String, Value> = items
            .iter()
            .enumerate()
            .filter(|(_, v)| !v.is_null())
            .map(|(i, v)| ((i + 1).to_string(), v.clone()))
            .collect();
        body["fields"] = Value::Object(fields);
    }
    json_response(StatusCode::BAD_REQUEST, &body)
}

/// The parameters of a form or multipart body, as Kong's admin API reads them: their keys
/// nested by `a.b` and `a[]` / `a[1]`, their values strings. Another type of body gives
/// none.
///
/// Deliberately stricter than Kong (hardening; see ARCHITECTURE.md): a multipart body that
/// does not parse is 400 `invalid multipart body: ...` (Kong logs it and reads no parameter),
/// and a key nested more than [`MAX_KEY_STEPS`] levels, or an array position more than
/// [`MAX_INDEX_GAP`] past its array's end, is 400 (Kong follows any depth, fills any gap).
/// Kong sends none of these messages (`Err`: the 400's message).
pub(crate) fn form_params(content_type: &str, body: &Bytes) -> Result<Map<String, Value>, String> {
    let ct = content_type.to_ascii_lowercase();
    let mut out = Map::new();
    if ct.starts_with("application/x-www-form-urlencoded") {
        let text = String::from_utf8_lossy(body);
        for kv in text.split('&').filter(|kv| !kv.is_empty()) {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            insert_param(
                &mut out,
                &decode_str(k, true),
                Value::String(decode_str(v, true)),
            )?;
        }
        return Ok(out);
    }
    if ct.starts_with("multipart/form-data") {
        let parts = multipart_boundary(content_type)
            .ok_or_else(|| "no boundary in the content type".to_string())
            .and_then(|b| multipart_parts(body, b));
        return match parts {
            Ok(parts) => {
                for (k, v) in parts {
                    let v = String::from_utf8_lossy(&v).into_owned();
                    insert_param(&mut out, &k, Value::String(v))?;
                }
                Ok(out)
            }
            Err(e) => Err(format!("invalid multipart body: {e}")),
        };
    }
    Ok(out)
}

/// One step of a parameter's key: a name, or an array position (1-based; `None`: appended).
#[derive(Debug, PartialEq)]
enum Step {
    Key(String),
    Index(Option<usize>),
}

/// Splits `a.b[1].c` / `a[]` into steps, as Kong's `normalize_nested_params` does.
fn key_path(key: &str, out: &mut Vec<Step>) {
    if let Some(open) = key.strip_suffix(']').and_then(|k| k.rfind('['))
        && open > 0
    {
        let idx = &key[open + 1..key.len() - 1];
        if idx.bytes().all(|b| b.is_ascii_digit()) {
            key_path(&key[..open], out);
            out.push(Step::Index(idx.parse().ok().filter(|&n| n > 0)));
            return;
        }
    }
    if let Some(dot) = key.rfind('.')
        && dot > 0
        && dot + 1 < key.len()
    {
        key_path(&key[..dot], out);
        key_path(&key[dot + 1..], out);
        return;
    }
    out.push(Step::Key(key.to_string()));
}

/// Most `.`/`[` steps a parameter's key may have (the steps are followed recursively).
const MAX_KEY_STEPS: usize = 32;
/// Farthest an array position may lie beyond the array's end (the gap is filled with nulls).
const MAX_INDEX_GAP: usize = 64;

fn insert_param(root: &mut Map<String, Value>, key: &str, value: Value) -> Result<(), String> {
    if key.bytes().filter(|b| matches!(b, b'.' | b'[')).count() > MAX_KEY_STEPS {
        return Err(format!(
            "parameter key nested more than {MAX_KEY_STEPS} levels"
        ));
    }
    let mut steps = Vec::new();
    key_path(key, &mut steps);
    let mut node = Value::Object(std::mem::take(root));
    let r = set_path(&mut node, &steps, value);
    if let Value::Object(m) = node {
        *root = m;
    }
    r
}

fn set_path(node: &mut Value, steps: &[Step], value: Value) -> Result<(), String> {
    let Some((first, rest)) = steps.split_first() else {
        *node = value;
        return Ok(());
    };
    let child = match first {
        Step::Key(k) => {
            if !node.is_object() {
                *node = Value::Object(Map::new());
            }
            let Value::Object(m) = node else {
                return Ok(());
            };
            m.entry(k.clone()).or_insert(Value::Null)
        }
        Step::Index(i) => {
            if !node.is_array() {
                *node = Value::Array(Vec::new());
            }
            let Value::Array(a) = node else {
                return Ok(());
            };
            let pos = match i {
                Some(n) => n - 1,
                None => a.len(),
            };
            if pos > a.len() + MAX_INDEX_GAP {
                return Err(format!(
                    "parameter index {} is too far past the end of its array",
                    pos + 1
                ));
            }
            if pos >= a.len() {
                a.resize(pos + 1, Value::Null);
            }
            &mut a[pos]
        }
    };
    set_path(child, rest, value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn form_keys_nest_like_kongs() {
        let mut m = Map::new();
        insert_param(&mut m, "name", json!("key-auth")).unwrap();
        insert_param(&mut m, "config.key_names[]", json!("a")).unwrap();
        insert_param(&mut m, "config.key_names[]", json!("b")).unwrap();
        insert_param(&mut m, "protocols[2]", json!("https")).unwrap();
        insert_param(&mut m, "protocols[1]", json!("http")).unwrap();
        assert_eq!(
            Value::Object(m),
            json!({"name": "key-auth", "config": {"key_names": ["a", "b"]},
                   "protocols": ["http", "https"]})
        );
    }

    #[test]
    fn hostile_keys_are_refused_not_followed() {
        // a key with a step per byte would recurse that deep; a far index would allocate
        // that many nulls
        let deep = format!("a{}=1", ".a".repeat(100_000));
        assert!(form_params("application/x-www-form-urlencoded", &Bytes::from(deep)).is_err());
        assert!(
            form_params(
                "application/x-www-form-urlencoded",
                &Bytes::from_static(b"paths[1000000000000]=x")
            )
            .is_err()
        );
        // within the bounds: kept
        let mut m = Map::new();
        insert_param(
            &mut m,
            &format!("a{}", ".b".repeat(MAX_KEY_STEPS)),
            json!(1),
        )
        .unwrap();
        insert_param(&mut m, "p[3]", json!("x")).unwrap();
        assert_eq!(m["p"], json!([null, null, "x"]));
    }

    /// The parameters of a body (`Err`: the status and message of the refusal).
    fn read(ct: Option<&str>, body: &'static [u8]) -> Result<(Value, bool, bool), String> {
        match input(ct, &Bytes::from_static(body)) {
            Ok(i) => Ok((Value::Object(i.params), i.text, i.array)),
            Err(r) => Err(r.status().to_string()),
        }
    }

    #[test]
    fn bodies_by_content_type() {
        let json = Some("application/json; charset=utf-8");
        assert_eq!(
            read(json, br#"{"a":1}"#),
            Ok((json!({"a": 1}), false, false))
        );
        // a JSON array is a table whose elements are the parameters 1 to n; `[]` is `{}`
        assert_eq!(
            read(json, br#"[{"a":1},"x"]"#),
            Ok((json!({"1": {"a": 1}, "2": "x"}), false, true))
        );
        assert_eq!(read(json, b"[]"), Ok((json!({}), false, true)));
        // nothing, a body that does not parse, a scalar: `Cannot parse JSON body`
        for bad in [&b""[..], b"  ", b"{", b"1", b"\"x\"", b"null"] {
            assert_eq!(read(json, bad), Err("400 Bad Request".into()), "{bad:?}");
        }
        // Kong finds JSON in any case, anywhere in the type (its `before_filter`, which
        // answers 415 first, is not this function's)
        assert_eq!(
            read(Some("text/x; Application/JSON"), b"{}"),
            Ok((json!({}), false, false))
        );
        assert_eq!(
            read(
                Some("application/x-www-form-urlencoded"),
                b"host=x.test&port=80"
            ),
            Ok((json!({"host": "x.test", "port": "80"}), true, false))
        );
        assert_eq!(read(None, b""), Ok((json!({}), false, false)));
    }
}
