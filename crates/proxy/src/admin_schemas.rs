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
//! The routes to these (and their 405 `Method not allowed` for other methods) are in
//! [`crate::admin_routes`] and [`crate::admin`].

use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::{Map, Value};
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

/// `POST /schemas/{entity}/validate`.
pub(crate) async fn validate(
    sh: &Arc<Shared>,
    entity: &str,
    req: Request<Incoming>,
) -> Response<ProxyBody> {
    let Some(kind) = EntityKind::from_plural(entity) else {
        return no_entity(entity);
    };
    let ct = crate::admin::content_type(&req);
    let body = match crate::admin::read_body(sh, req.into_body()).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let params = match params(&ct, body) {
        Ok(p) => p,
        Err(Refused::BadRequest(m)) => return message(StatusCode::BAD_REQUEST, &m),
        Err(Refused::UnsupportedType) => {
            let mut r = Response::new(ProxyBody::empty());
            *r.status_mut() = StatusCode::UNSUPPORTED_MEDIA_TYPE;
            return r;
        }
    };
    let opts = LoadOptions {
        router_flavor: sh.settings.router_flavor,
        plugins: &sh.settings.plugins,
        now_unix: now_unix(),
    };
    let errors = validate_entity(kind, &params, &opts);
    if errors.is_empty() {
        message(StatusCode::OK, "schema validation successful")
    } else {
        json_response(StatusCode::BAD_REQUEST, &schema_violation(&errors))
    }
}

/// Why a body gives no parameters.
#[derive(Debug, PartialEq)]
pub(crate) enum Refused {
    /// 400 with this message.
    BadRequest(String),
    /// 415 (no body), as Kong's admin API answers a content type it does not read.
    UnsupportedType,
}

/// The request's parameters, as Kong's admin API reads a body: a JSON object, form fields or
/// multipart parts (their keys nested by `a.b` and `a[]` / `a[1]`, their values strings). A
/// body of another type is 415, as in Kong; an empty body is no parameter.
///
/// Deliberately stricter than Kong (hardening; see ARCHITECTURE.md): a multipart body that
/// does not parse is 400 `invalid multipart body: ...` (Kong logs it and reads no parameter),
/// and a key nested more than [`MAX_KEY_STEPS`] levels, or an array position more than
/// [`MAX_INDEX_GAP`] past its array's end, is 400 (Kong follows any depth, fills any gap).
/// Kong sends none of these messages.
pub(crate) fn params(content_type: &str, body: Bytes) -> Result<Map<String, Value>, Refused> {
    let ct = content_type.to_ascii_lowercase();
    let mut out = Map::new();
    if ct.contains("application/json") {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(out);
        }
        return match serde_json::from_slice(&body) {
            Ok(Value::Object(m)) => Ok(m),
            _ => Err(Refused::BadRequest("Cannot parse JSON body".into())),
        };
    }
    if ct.starts_with("application/x-www-form-urlencoded") {
        let text = String::from_utf8_lossy(&body);
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
            .and_then(|b| multipart_parts(&body, b));
        return match parts {
            Ok(parts) => {
                for (k, v) in parts {
                    let v = String::from_utf8_lossy(&v).into_owned();
                    insert_param(&mut out, &k, Value::String(v))?;
                }
                Ok(out)
            }
            Err(e) => Err(Refused::BadRequest(format!("invalid multipart body: {e}"))),
        };
    }
    if body.is_empty() {
        return Ok(out);
    }
    Err(Refused::UnsupportedType)
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

fn insert_param(root: &mut Map<String, Value>, key: &str, value: Value) -> Result<(), Refused> {
    if key.bytes().filter(|b| matches!(b, b'.' | b'[')).count() > MAX_KEY_STEPS {
        return Err(Refused::BadRequest(format!(
            "parameter key nested more than {MAX_KEY_STEPS} levels"
        )));
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

fn set_path(node: &mut Value, steps: &[Step], value: Value) -> Result<(), Refused> {
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
                return Err(Refused::BadRequest(format!(
                    "parameter index {} is too far past the end of its array",
                    pos + 1
                )));
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
        assert!(matches!(
            params("application/x-www-form-urlencoded", Bytes::from(deep)),
            Err(Refused::BadRequest(_))
        ));
        assert!(matches!(
            params(
                "application/x-www-form-urlencoded",
                Bytes::from_static(b"paths[1000000000000]=x")
            ),
            Err(Refused::BadRequest(_))
        ));
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

    #[test]
    fn bodies_by_content_type() {
        let p = params(
            "application/json; charset=utf-8",
            Bytes::from_static(br#"{"a":1}"#),
        );
        assert_eq!(
            p.ok(),
            Some(json!({"a": 1}).as_object().cloned().unwrap_or_default())
        );
        let p = params(
            "application/x-www-form-urlencoded",
            Bytes::from_static(b"host=x.test&port=80"),
        );
        assert_eq!(
            p.ok().map(Value::Object),
            Some(json!({"host": "x.test", "port": "80"}))
        );
        let bad = params("application/json", Bytes::from_static(b"[1]"));
        assert_eq!(
            bad.err(),
            Some(Refused::BadRequest("Cannot parse JSON body".into()))
        );
        let other = params("text/plain", Bytes::from_static(b"x"));
        assert_eq!(other.err(), Some(Refused::UnsupportedType));
        assert_eq!(params("", Bytes::new()).ok(), Some(Map::new()));
    }
}
