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
//!   ([`silverback_config::validate_entity`]), without uniqueness or references. What is
//!   checked is what Kong's handler checks, lapis's `self.params` as Kong's `parse_params`
//!   leaves them ([`request_params`]): the query's arguments, the form's on top, the path's
//!   entity name, a JSON body's members on top of all, nested by their keys.
//!
//! What every body of the admin API goes through, which the entity writes
//! ([`crate::admin_writes`]) share, is here too: Kong's `before_filter` ([`readable`]), the
//! `Content-Type` as Kong reads it ([`content_type`]), lapis's `json_params` and Kong's JSON
//! check ([`input`]), and the writes' and this endpoint's `schema violation` ([`violation`]).
//! (The writes read their parameters as Kong's `arguments.load` does, not as `self.params`.)
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

/// `POST /schemas/{entity}/validate` (`plugins`: `/schemas/plugins/validate`, Kong's route
/// of its own), as `kong/api/routes/kong.lua` answers it: the body's type (415), lapis's
/// reading of a JSON body (a decoded scalar: 500), Kong's JSON check (400 `Cannot parse JSON
/// body`), then the entity's name (404), then the schema (`validate_schema`: `schema:validate`
/// of the parameters given `process_auto_fields(params, "insert")`).
///
/// The parameters are lapis's `self.params` as Kong's `parse_params` leaves them
/// ([`request_params`]). On the generic route, the entity is the `db_entity_name` parameter,
/// which Kong takes out of them: the path's, unless a JSON body has a member of that name
/// (lapis adds the JSON body last, over the path's parameters). Its value is used as Kong
/// uses it: a string names the entity, a number names none (404 with its Lua text), anything
/// else fails Kong's message (500).
///
/// A JSON array's elements are the parameters 1 to n, numbers to Kong, each an unknown field
/// to the schema (`[]` is `{}`); Kong's `schema_violation` sorts the error table's keys and
/// fails (500) when those numbers sit beside a name ([`violation`]).
///
/// Form values are not typed by the schema: this endpoint is attached without Kong's
/// `arguments.load`, which types the writes' form values; a url-encoded body's parameters
/// get Kong's `decode_args` only.
pub(crate) async fn validate(
    sh: &Arc<Shared>,
    entity: &str,
    req: Request<Incoming>,
) -> Response<ProxyBody> {
    // (a body it cannot read was refused before: `admin::route`)
    let ct = content_type(&req);
    let query = req.uri().query().map(str::to_string);
    let body = match crate::admin::read_body(sh, req.into_body()).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    // (`/schemas/plugins/validate` is a route of its own: no `db_entity_name` there)
    let route_name = (entity != "plugins").then_some(entity);
    let mut p = match request_params(query.as_deref(), route_name, ct.as_deref(), &body) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let name = match route_name {
        None => "plugins".to_string(),
        Some(_) => match p.params.remove("db_entity_name") {
            Some(Value::String(s)) => s,
            // (`kong.db[1]` is no DAO; Lua writes the number into the message)
            Some(Value::Number(n)) => return no_entity(&lua_number(&n)),
            // (`"No entity named '" .. v .. "'"`: a Lua error for anything else)
            _ => return unexpected(),
        },
    };
    let Some(kind) = EntityKind::from_plural(&name) else {
        return no_entity(&name);
    };
    let opts = LoadOptions {
        router_flavor: sh.settings.router_flavor,
        plugins: &sh.settings.plugins,
        now_unix: now_unix(),
    };
    let array = !p.positions.is_empty();
    for (i, v) in p.positions.into_iter().enumerate() {
        p.params.insert((i + 1).to_string(), v);
    }
    let errors = validate_entity(kind, &p.params, &opts);
    if errors.is_empty() {
        message(StatusCode::OK, "schema validation successful")
    } else {
        violation(&errors, array)
    }
}

/// Kong's answer to a Lua error in a handler (`api_helpers.lua`'s `handle_error`).
pub(crate) fn unexpected() -> Response<ProxyBody> {
    message(
        StatusCode::INTERNAL_SERVER_ERROR,
        "An unexpected error occurred",
    )
}

/// A number as Lua's `tostring` writes it (`%.14g`): `1`, `1.5`, `1e+20`.
fn lua_number(n: &serde_json::Number) -> String {
    let f = n.as_f64().unwrap_or(0.0);
    if f.is_nan() {
        return if f.is_sign_negative() { "-nan" } else { "nan" }.into();
    }
    if f.is_infinite() {
        return if f < 0.0 { "-inf" } else { "inf" }.into();
    }
    if f == f.trunc() && f.abs() < 1e15 {
        return format!("{}", f as i64);
    }
    // 14 significant digits, then `%g`'s choice of notation and its trailing zeros dropped
    let sci = format!("{f:.13e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let trim = |s: &str| -> String {
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s.to_string()
        }
    };
    if !(-4..14).contains(&exp) {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{}e{sign}{:02}", trim(mantissa), exp.abs())
    } else {
        trim(&format!("{f:.prec$}", prec = (13 - exp) as usize))
    }
}

/// Kong's 415 of its `before_filter`: no body.
pub(crate) fn unsupported_type() -> Response<ProxyBody> {
    let mut r = Response::new(ProxyBody::empty());
    *r.status_mut() = StatusCode::UNSUPPORTED_MEDIA_TYPE;
    r
}

// === request bodies, as Kong's admin API reads them (the entity writes share this) ===

/// Kong's `before_filter` (`kong/api/api_helpers.lua`), which every `POST`, `PUT` and
/// `PATCH` of the admin API passes first (`admin::route` checks it): a body the admin API reads, by its `Content-Type`
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

/// A request's `Content-Type` as Kong reads it: its bytes, whatever they are (a value with
/// bytes past ASCII is still the type, which lapis and Kong search for `application/json`
/// and the form types; lossily decoded here, which keeps those ASCII words as they are).
pub(crate) fn content_type<B>(req: &Request<B>) -> Option<String> {
    req.headers()
        .get(http::header::CONTENT_TYPE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
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

/// A body's parameters, as Kong's entity writes read them (`Err`: Kong's answer, 400 or
/// 500).
///
/// A JSON body (any `Content-Type` containing `application/json`, in any case, as lapis's
/// `json_params` and Kong's `parse_params` find it) is decoded by lapis, and Kong's handlers
/// take any table: an object's members are the parameters, an array's elements the
/// parameters 1, 2, ..., which no schema has (`[]` is `{}`). Nothing, or a body that does not
/// parse, is 400 `Cannot parse JSON body` (Kong's check). A body that decodes to anything but
/// a table (a string, a number, `true`, `false`, `null`) is 500 `An unexpected error
/// occurred`: lapis adds what it decoded to the request's parameters with `pairs`, a Lua
/// error on a non-table, before Kong's check ([`json_scalar`]). A form or multipart body
/// gives [`form_params`]; anything else (no body) no parameter.
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
            Ok(_) => Err(Box::new(unexpected())),
            Err(_) => Err(Box::new(message(
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

/// Whether a body makes lapis fail: `json_params` wraps every handler whatever the method,
/// and adds a JSON body that decodes to anything but a table with `pairs`, a Lua error
/// (500). For the bodies Kong checks no further (a `DELETE`'s, a read's: one that does not
/// parse is no error), and for `POST /config`, whose JSON check comes after.
/// ([`crate::admin::json_params`] applies it to the routes whose handlers read no body of
/// their own.)
pub(crate) fn json_scalar(content_type: Option<&str>, body: &Bytes) -> bool {
    content_type.is_some_and(|ct| ct.to_ascii_lowercase().contains("application/json"))
        && serde_json::from_slice::<Value>(body).is_ok_and(|v| !v.is_object() && !v.is_array())
}

/// The answer to the parameters' `schema violation` (`errors`; `array`: the parameters were
/// a JSON array's elements, the numbers 1 to n to Kong).
///
/// Kong's `errors.lua` builds the message from the error table's keys sorted by Lua's
/// `table.sort`, which cannot compare a number with a string: a JSON array's positions
/// beside any named error (a field's, `@entity`) make that sort a Lua error, and Kong
/// answers 500 `An unexpected error occurred`. Alone, the positions sort as numbers and
/// their errors are a Lua sequence, an array in the answer (400, code 2); an object's or a
/// form's keys "1", "2" are strings, and their errors an object.
pub(crate) fn violation(errors: &Errors, array: bool) -> Response<ProxyBody> {
    let position = |k: &str| !k.starts_with('0') && k.bytes().all(|b| b.is_ascii_digit());
    // (`[]`, or elements without errors: names alone)
    if !array || !errors.fields.iter().any(|(k, _)| position(k)) {
        return json_response(StatusCode::BAD_REQUEST, &schema_violation(errors));
    }
    if !errors.entity.is_empty() || errors.fields.iter().any(|(k, _)| !position(k)) {
        return unexpected();
    }
    let positions = Errors {
        array: true,
        ..errors.clone()
    };
    json_response(StatusCode::BAD_REQUEST, &schema_violation(&positions))
}

// === lapis's `self.params`, as Kong's `parse_params` leaves them ===

/// The parameters of a request as Kong's handlers built on `self.params` see them: the
/// string-keyed ones, and a JSON array body's elements, which are the parameters 1 to n,
/// numbers to Lua (kept apart: a query argument named `1` is another parameter).
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Params {
    pub(crate) params: Map<String, Value>,
    pub(crate) positions: Vec<Value>,
}

/// lapis's `self.params` for a request to a route with the parameter `db_entity_name`
/// (`route_name`), as Kong's `parse_params` (`kong/api/api_helpers.lua`) hands them to the
/// handler (`Err`: the answer instead):
///
/// 1. lapis adds, in this order, each over the ones before: the query's arguments, the
///    body's form arguments (url-encoded, or multipart parts), the route's path parameter
///    (`add_params` of `params_get`, `params_post`, `url_params`), then, in `json_params`,
///    a JSON body's members (a JSON array's elements at the positions 1 to n; anything but a
///    table: a Lua error, 500). An argument given twice counts once, its last value
///    (`flatten_params`); one without `=` is `true` (ngx's argument parser). A key with a
///    `[` after its first character is nested by its bracketed parts, strings all
///    (`a[b][]` sets `a.b[""]`), by [`lapis_add`];
/// 2. Kong answers 400 `Cannot parse JSON body` to a JSON type whose body did not decode;
///    for a url-encoded body it passes the parameters through `decode_args` (each top-level
///    `""` is `null`, `"true"` and `"false"` are booleans, a table keyed `"1"` to `"n"` is an
///    array; nothing deeper);
/// 3. `normalize_nested_params` then nests every string key, at any depth, by its dots and
///    its trailing `[n]` / `[]` ([`normalize`]), for every type of body.
///
/// Hardening (as [`form_params`]): a key of more than [`MAX_KEY_STEPS`] steps, or an array
/// position more than [`MAX_INDEX_GAP`] past its array's end, is 400 where Kong follows it.
pub(crate) fn request_params(
    query: Option<&str>,
    route_name: Option<&str>,
    content_type: Option<&str>,
    body: &Bytes,
) -> Result<Params, Box<Response<ProxyBody>>> {
    let ct = content_type.unwrap_or("").to_ascii_lowercase();
    let bad = |m: String| Box::new(message(StatusCode::BAD_REQUEST, &m));
    let mut p = Params::default();
    let add = |p: &mut Params, k: &str, v: Value| -> Result<(), Box<Response<ProxyBody>>> {
        match lapis_add(&mut p.params, k, v) {
            Ok(()) => Ok(()),
            Err(Fault::Lua) => Err(Box::new(unexpected())),
            Err(Fault::Refused(m)) => Err(bad(m)),
        }
    };
    for (k, v) in ngx_args(query.unwrap_or("")) {
        add(&mut p, &k, v)?;
    }
    if ct.contains("multipart/form-data") {
        let parts = multipart_boundary(content_type.unwrap_or(""))
            .ok_or_else(|| "no boundary in the content type".to_string())
            .and_then(|b| multipart_parts(body, b))
            .map_err(|e| bad(format!("invalid multipart body: {e}")))?;
        let mut last: Vec<(String, Value)> = Vec::new();
        for (k, v) in parts {
            let v = Value::String(String::from_utf8_lossy(&v).into_owned());
            last.retain(|(n, _)| *n != k);
            last.push((k, v));
        }
        for (k, v) in last {
            add(&mut p, &k, v)?;
        }
    } else if ct.contains("application/x-www-form-urlencoded") {
        for (k, v) in ngx_args(&String::from_utf8_lossy(body)) {
            add(&mut p, &k, v)?;
        }
    }
    if let Some(name) = route_name {
        p.params
            .insert("db_entity_name".into(), Value::String(name.to_string()));
    }
    if ct.contains("application/json") {
        match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(m)) => {
                for (k, v) in m {
                    add(&mut p, &k, v)?;
                }
            }
            Ok(Value::Array(items)) => p.positions = items,
            Ok(_) => return Err(Box::new(unexpected())),
            Err(_) => return Err(bad("Cannot parse JSON body".into())),
        }
    } else if ct.contains("application/x-www-form-urlencode") {
        decode_args(&mut p.params);
    }
    let params = std::mem::take(&mut p.params);
    p.params = normalize(params).map_err(|f| match f {
        Fault::Lua => Box::new(unexpected()),
        Fault::Refused(m) => bad(m),
    })?;
    for v in &mut p.positions {
        if let Value::Object(m) = v {
            *v = Value::Object(normalize(std::mem::take(m)).map_err(|f| match f {
                Fault::Lua => Box::new(unexpected()),
                Fault::Refused(m) => bad(m),
            })?);
        }
    }
    // (a string key that reads as a position is another key to Lua, and an unknown field
    // beside the positions: Kong's sort of the errors fails)
    if !p.positions.is_empty() && p.params.keys().any(|k| k.parse::<usize>().is_ok()) {
        return Err(Box::new(unexpected()));
    }
    Ok(p)
}

/// Why parameters could not be built: a Lua error in Kong (500), or this gateway's refusal
/// (hardening: a 400 with the message).
#[derive(Debug, PartialEq)]
enum Fault {
    Lua,
    Refused(String),
}

/// A query's or a url-encoded body's arguments as ngx's parser and lapis's `flatten_params`
/// give them: the first [`NGX_MAX_ARGS`] (ngx's `get_uri_args` and `get_post_args` read no
/// more), split at `&`, decoded (`+` a space), an argument without `=` `true`, one with an
/// empty name left out, and a name given twice once, with its last value, where it came
/// last.
fn ngx_args(s: &str) -> Vec<(String, Value)> {
    let mut out: Vec<(String, Value)> = Vec::new();
    for kv in s.split('&').filter(|kv| !kv.is_empty()).take(NGX_MAX_ARGS) {
        let (k, v) = match kv.split_once('=') {
            Some((k, v)) => (decode_str(k, true), Value::String(decode_str(v, true))),
            None => (decode_str(kv, true), Value::Bool(true)),
        };
        if k.is_empty() {
            continue;
        }
        out.retain(|(n, _)| *n != k);
        out.push((k, v));
    }
    out
}

/// lapis's `add_params` of one parameter: a key with a `[` after its first character is
/// nested, its part before the `[` first, then each bracketed part (`a[b][]`: `a`, `b`,
/// `""`; all strings), the tables on the way made or reused; any other key is set as it
/// is. A value on the way that is no table is a Lua error in lapis (`Fault::Lua`).
fn lapis_add(root: &mut Map<String, Value>, key: &str, v: Value) -> Result<(), Fault> {
    let open = match key.find('[') {
        Some(i) if i > 0 => i,
        _ => {
            root.insert(key.to_string(), v);
            return Ok(());
        }
    };
    if key.bytes().filter(|&b| b == b'[').count() > MAX_KEY_STEPS {
        return Err(Fault::Refused(format!(
            "parameter key nested more than {MAX_KEY_STEPS} levels"
        )));
    }
    let mut steps = vec![&key[..open]];
    let mut rest = &key[open..];
    while let Some(o) = rest.find('[') {
        let after = &rest[o + 1..];
        let Some(c) = after.find(']') else { break };
        steps.push(&after[..c]);
        rest = &after[c + 1..];
    }
    let (last, init) = steps.split_last().expect("the part before the bracket");
    let mut node = root;
    for step in init {
        let entry = node
            .entry(step.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
        node = lua_table(entry)?;
    }
    node.insert(last.to_string(), v);
    Ok(())
}

/// A value lapis or Kong is about to index as a table: a JSON object; an array (a Lua table
/// too, whose positions become string keys here: a table mixing numbers and names has no
/// JSON form); anything else is a Lua error.
fn lua_table(v: &mut Value) -> Result<&mut Map<String, Value>, Fault> {
    if let Value::Array(items) = v {
        let m = std::mem::take(items)
            .into_iter()
            .enumerate()
            .map(|(i, x)| ((i + 1).to_string(), x))
            .collect();
        *v = Value::Object(m);
    }
    match v {
        Value::Object(m) => Ok(m),
        _ => Err(Fault::Lua),
    }
}

/// Kong's `decode_args` (`kong/tools/utils.lua`) of the top-level parameters: `""` is
/// `null`, `"true"` and `"false"` are booleans, a table whose keys are `"1"` to `"n"` is the
/// array of its values; nothing deeper is touched.
fn decode_args(params: &mut Map<String, Value>) {
    for v in params.values_mut() {
        match v {
            Value::String(s) if s.is_empty() => *v = Value::Null,
            Value::String(s) if s == "true" => *v = Value::Bool(true),
            Value::String(s) if s == "false" => *v = Value::Bool(false),
            Value::Object(m) if !m.is_empty() => {
                let n = m.len();
                let array: Option<Vec<Value>> =
                    (1..=n).map(|i| m.get(&i.to_string()).cloned()).collect();
                if let Some(items) = array {
                    *v = Value::Array(items);
                }
            }
            _ => {}
        }
    }
}

/// One step of a key's path in Kong's `key_to_path`: a name, or an array position
/// (`Index(None)`: `[]`, the position after the array's last).
#[derive(Debug, PartialEq)]
enum PathStep {
    Key(String),
    Index(Option<usize>),
}

/// Kong's `key_to_path`: `x[1].y` is `x`, 1, `y`: a trailing `[digits]` or `[]` after a
/// non-empty left part is a position; else the last `.` with a non-empty part on each side
/// splits the key; else the key is one name.
fn key_to_path(key: &str, out: &mut Vec<PathStep>) {
    if let Some(open) = key.strip_suffix(']').and_then(|k| k.rfind('['))
        && open > 0
    {
        let idx = &key[open + 1..key.len() - 1];
        if idx.bytes().all(|b| b.is_ascii_digit()) {
            key_to_path(&key[..open], out);
            out.push(PathStep::Index(idx.parse().ok()));
            return;
        }
    }
    if key.len() >= 3
        && let Some(dot) = key[..key.len() - 1].rfind('.')
        && dot > 0
    {
        key_to_path(&key[..dot], out);
        key_to_path(&key[dot + 1..], out);
        return;
    }
    out.push(PathStep::Key(key.to_string()));
}

/// Kong's `normalize_nested_params` of a table: each value that is a table normalized in
/// turn (an array kept as it is, its elements untouched), then set at the path of its key
/// ([`key_to_path`]), the tables on the way made or reused; `[]` at the end of the path sets
/// the array itself when the value is one, else appends the value. A value on the way that
/// is no table is a Lua error (`Fault::Lua`). Positions are 1-based; position 0 or `[]`
/// into an object, or a name into an array, mix numbers and names in one Lua table, which
/// has no JSON form: the positions are names here.
fn normalize(obj: Map<String, Value>) -> Result<Map<String, Value>, Fault> {
    let mut out = Map::new();
    for (k, v) in obj {
        let (v, is_array) = match v {
            Value::Object(m) if m.is_empty() => (Value::Object(m), true),
            Value::Object(m) => (Value::Object(normalize(m)?), false),
            Value::Array(a) => (Value::Array(a), true),
            other => (other, false),
        };
        // (the key is split recursively: bounded before)
        if k.bytes().filter(|b| matches!(b, b'.' | b'[')).count() > MAX_KEY_STEPS {
            return Err(Fault::Refused(format!(
                "parameter key nested more than {MAX_KEY_STEPS} levels"
            )));
        }
        let mut path = Vec::new();
        key_to_path(&k, &mut path);
        let mut node = Value::Object(std::mem::take(&mut out));
        let r = set_kong_path(&mut node, &path, v, is_array);
        if let Value::Object(m) = node {
            out = m;
        }
        r?;
    }
    Ok(out)
}

/// Sets `v` at `path` under the table `node`, as `normalize_nested_params` does.
fn set_kong_path(
    node: &mut Value,
    path: &[PathStep],
    v: Value,
    is_array: bool,
) -> Result<(), Fault> {
    let (first, rest) = path.split_first().expect("a key has a step");
    let slot = slot(node, first)?;
    if rest.is_empty() {
        *slot = v;
        return Ok(());
    }
    // (`node[e] = node[e] or {}`: a hole is a new table)
    if slot.is_null() && !matches!(first, PathStep::Key(_)) {
        *slot = Value::Object(Map::new());
    }
    // (`x[] = {...}`: the array is the value of `x` itself)
    if let [PathStep::Index(None)] = rest
        && is_array
    {
        *slot = v;
        return Ok(());
    }
    if !slot.is_object() && !slot.is_array() {
        return Err(Fault::Lua);
    }
    set_kong_path(slot, rest, v, is_array)
}

/// The place of one step under the table `node` (a name's made `{}` when absent; a
/// position's grown to with nulls, bounded by [`MAX_INDEX_GAP`]). An empty table takes a
/// position as an array; a table of names takes it as a name (a Lua table mixing numbers
/// and names has no JSON form), as an array takes a name (its positions then names too).
fn slot<'a>(node: &'a mut Value, step: &PathStep) -> Result<&'a mut Value, Fault> {
    if matches!(node, Value::Object(m) if m.is_empty())
        && matches!(step, PathStep::Index(Some(1..) | None))
    {
        *node = Value::Array(Vec::new());
    }
    let name = match step {
        PathStep::Key(k) => k.clone(),
        PathStep::Index(i) if node.is_array() && *i != Some(0) => {
            let Value::Array(items) = node else {
                unreachable!("an array")
            };
            let pos = match i {
                Some(n) => n - 1,
                None => items.len(),
            };
            if pos > items.len() + MAX_INDEX_GAP {
                return Err(Fault::Refused(format!(
                    "parameter index {} is too far past the end of its array",
                    pos + 1
                )));
            }
            if pos >= items.len() {
                items.resize(pos + 1, Value::Null);
            }
            return Ok(&mut items[pos]);
        }
        // (`#t` of a table of names is 0)
        PathStep::Index(i) => i.unwrap_or(1).to_string(),
    };
    Ok(lua_table(node)?
        .entry(name)
        .or_insert_with(|| Value::Object(Map::new())))
}

/// The parameters of a form or multipart body, as the entity writes read them before
/// Kong's `arguments.load` types them: their keys nested by `a.b` and `a[]` / `a[1]`, their
/// values strings. Another type of body gives none. (The validate endpoint reads lapis's
/// `self.params` instead: [`request_params`].)
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

/// How many arguments ngx's `get_uri_args` and `get_post_args` read by default (lapis asks
/// for no other number unless configured to, and Kong does not).
const NGX_MAX_ARGS: usize = 100;
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
        // nothing, a body that does not parse: `Cannot parse JSON body`
        for bad in [&b""[..], b"  ", b"{"] {
            assert_eq!(read(json, bad), Err("400 Bad Request".into()), "{bad:?}");
        }
        // a scalar: lapis's `pairs` on it, a Lua error
        for scalar in [&b"1"[..], b"\"x\"", b"null", b"true", b"false"] {
            assert_eq!(
                read(json, scalar),
                Err("500 Internal Server Error".into()),
                "{scalar:?}"
            );
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

    /// lapis's `self.params` as Kong's `parse_params` leaves them (`Err`: the status).
    fn params(
        query: &str,
        name: Option<&str>,
        ct: &str,
        body: &'static [u8],
    ) -> Result<(Value, Vec<Value>), String> {
        match request_params(Some(query), name, Some(ct), &Bytes::from_static(body)) {
            Ok(p) => Ok((Value::Object(p.params), p.positions)),
            Err(r) => Err(r.status().as_str().to_string()),
        }
    }

    #[test]
    fn params_merge_query_form_path_and_json_as_lapis_does() {
        let form = "application/x-www-form-urlencoded";
        let json = "application/json";
        // the query's, the form's over them, the path's over both, the JSON body's over all
        assert_eq!(
            params(
                "a=q&b=q&db_entity_name=q",
                Some("services"),
                form,
                b"b=f&db_entity_name=f"
            ),
            Ok((
                json!({"a": "q", "b": "f", "db_entity_name": "services"}),
                vec![]
            ))
        );
        assert_eq!(
            params(
                "a=q",
                Some("services"),
                json,
                br#"{"a": 1, "db_entity_name": "routes"}"#
            ),
            Ok((json!({"a": 1, "db_entity_name": "routes"}), vec![]))
        );
        // an argument twice: its last value; without `=`: true; an empty name: none
        assert_eq!(
            params("a=1&a=2&flag&=x", None, json, b"{}"),
            Ok((json!({"a": "2", "flag": true}), vec![]))
        );
        // a url-encoded body's `decode_args`, top level only (the query's too); not JSON's
        assert_eq!(
            params(
                "q=",
                None,
                form,
                b"e=&t=true&f=false&s=x&n[x]=&l[1]=a&l[2]=b"
            ),
            Ok((
                json!({"q": null, "e": null, "t": true, "f": false, "s": "x",
                       "n": {"x": ""}, "l": ["a", "b"]}),
                vec![]
            ))
        );
        assert_eq!(
            params("", None, json, br#"{"e": "", "t": "true"}"#),
            Ok((json!({"e": "", "t": "true"}), vec![]))
        );
        // keys nested for every type of body: lapis's brackets (strings), Kong's dots and
        // trailing positions, at any depth
        assert_eq!(
            params(
                "",
                None,
                json,
                br#"{"config.key_names": ["k"], "c[hide_credentials]": true,
                     "r": {"a.b": 1, "p[2]": "y", "p[1]": "x", "q[]": [1, 2]}, "m[1]": "s"}"#
            ),
            Ok((
                json!({"config": {"key_names": ["k"]}, "c": {"hide_credentials": true},
                       "r": {"a": {"b": 1}, "p": ["x", "y"], "q": [1, 2]},
                       "m": {"1": "s"}}),
                vec![]
            ))
        );
        assert_eq!(
            params("tags[]=a&x.y=1", None, json, b"{}"),
            Ok((json!({"tags": {"": "a"}, "x": {"y": "1"}}), vec![]))
        );
        // a JSON array: its elements are the positions, apart from the names
        assert_eq!(
            params("a=1", None, json, br#"[{"k.v": 1}, "x"]"#),
            Ok((json!({"a": "1"}), vec![json!({"k": {"v": 1}}), json!("x")]))
        );
        // Lua errors: a scalar body, a name that reads as a position beside the positions, a
        // key through a value that is no table
        for (q, ct, body) in [
            ("", json, &b"\"x\""[..]),
            ("1=a", json, b"[1]"),
            ("", json, br#"{"a": "s", "a[b]": 1}"#),
            ("", json, br#"{"a": 1, "a.b": 1}"#),
        ] {
            assert_eq!(params(q, None, ct, body), Err("500".into()), "{q} {body:?}");
        }
        // the JSON check
        assert_eq!(params("", None, json, b"{"), Err("400".into()));
    }

    #[test]
    fn numbers_are_written_as_lua_writes_them() {
        let n = |v: Value| match v {
            Value::Number(n) => lua_number(&n),
            _ => unreachable!(),
        };
        assert_eq!(n(json!(1)), "1");
        assert_eq!(n(json!(1.0)), "1");
        assert_eq!(n(json!(-2.5)), "-2.5");
        assert_eq!(n(json!(1e20)), "1e+20");
        assert_eq!(n(json!(0.1)), "0.1");
        assert_eq!(n(json!(1.0e-5)), "1e-05");
        assert_eq!(n(json!(123456789012345678u64)), "1.2345678901235e+17");
    }
}
