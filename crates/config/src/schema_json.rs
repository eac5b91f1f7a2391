//! Schemas in the JSON form of Kong's admin API (`GET /schemas/{entity}`,
//! `GET /schemas/plugins/{name}`, `GET /plugins/schema/{name}`): `{"fields": [{"<name>":
//! {attributes}}, ...]}` with Kong's attribute names (`type`, `required`, `default`, `one_of`,
//! `between`, `len_min`, `len_max`, `elements`, `keys`, `values`, `fields`, `reference`,
//! `auto`, `unique`), and the body of Kong's `schema violation` error.
//!
//! Only what the schema engine declares is rendered: a record's entity checks as Kong's
//! `entity_checks` (a custom check by its `field_sources`, as Kong's encoder leaves its
//! function out; the checks Kong declares in a subschema are not listed, as Kong lists no
//! subschema). Value checks written as code (such as a host's syntax) have no declarative
//! form here and are left out, as Kong leaves out its function validators.

use serde_json::{Map, Value, json};

use crate::entities::{EntityKind, schema};
use crate::error::lua_pretty_indented;
use crate::plugin::PluginSchema;
use crate::schema::{Errors, Field, FieldError, Kind, Record, lua_key_order};
use crate::{RouterFlavor, load};

/// Kong's error code of a schema violation.
pub const SCHEMA_VIOLATION_CODE: i64 = 2;

impl Record {
    /// The record in Kong's JSON form: `{"fields": [{"<name>": {attributes}}, ...]}`.
    pub fn to_kong_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("fields".into(), fields_json(&self.fields));
        if let Some(checks) = self.entity_checks_json() {
            m.insert("entity_checks".into(), checks);
        }
        Value::Object(m)
    }

    /// Kong's `entity_checks` of the record, when it lists any.
    fn entity_checks_json(&self) -> Option<Value> {
        let checks: Vec<Value> = self
            .checks
            .iter()
            .filter_map(|c| c.to_kong_json())
            .collect();
        (!checks.is_empty()).then_some(Value::Array(checks))
    }
}

fn fields_json(fields: &[Field]) -> Value {
    Value::Array(
        fields
            .iter()
            .map(|f| {
                let mut m = Map::with_capacity(1);
                m.insert(f.name.to_string(), f.to_kong_json());
                Value::Object(m)
            })
            .collect(),
    )
}

/// A number as Kong's JSON encoder writes it: whole values without a fraction.
fn number(n: f64) -> Value {
    if n.fract() == 0.0 && n.abs() < 9.0e15 {
        Value::from(n as i64)
    } else {
        Value::from(n)
    }
}

impl Field {
    /// The field's attributes in Kong's JSON form (`{"type": "string", "required": true,
    /// ...}`), without its name. A default is rendered as validation fills it in (a record's
    /// default with its fields' defaults). [`Kind::Any`] stands for Kong's abstract records
    /// (plugin and vault `config`, checked against the plugin's or vault's own schema) and is
    /// rendered as one.
    pub fn to_kong_json(&self) -> Value {
        let mut m = Map::new();
        let ty = match &self.kind {
            Kind::String(_) => "string",
            Kind::Integer { .. } => "integer",
            Kind::Number { .. } => "number",
            Kind::Boolean => "boolean",
            Kind::Array { set: true, .. } => "set",
            Kind::Array { set: false, .. } => "array",
            Kind::Map { .. } => "map",
            Kind::Record(_) | Kind::Any => "record",
            Kind::Foreign(_) => "foreign",
        };
        m.insert("type".into(), ty.into());
        if self.required {
            m.insert("required".into(), true.into());
        }
        if self.default.is_some() {
            let d = self.default_value().or_else(|| self.default.clone());
            if let Some(d) = d {
                m.insert("default".into(), d);
            }
        }
        match &self.kind {
            Kind::String(r) => {
                if let Some(one_of) = &r.one_of {
                    m.insert("one_of".into(), one_of.clone().into());
                }
                // Kong's strings are non-empty unless the schema says otherwise
                if r.len_min != 1 {
                    m.insert("len_min".into(), r.len_min.into());
                }
                if let Some(max) = r.len_max {
                    m.insert("len_max".into(), max.into());
                }
            }
            Kind::Integer { between, one_of } => {
                if let Some((lo, hi)) = between {
                    m.insert("between".into(), json!([lo, hi]));
                }
                if let Some(one_of) = one_of {
                    m.insert("one_of".into(), one_of.clone().into());
                }
            }
            Kind::Number { between } => {
                if let Some((lo, hi)) = between {
                    m.insert("between".into(), json!([number(*lo), number(*hi)]));
                }
            }
            Kind::Boolean => {}
            Kind::Array {
                elements,
                len_min,
                len_max,
                ..
            } => {
                m.insert("elements".into(), elements.to_kong_json());
                if let Some(min) = len_min {
                    m.insert("len_min".into(), (*min).into());
                }
                if let Some(max) = len_max {
                    m.insert("len_max".into(), (*max).into());
                }
            }
            Kind::Map { keys, values } => {
                m.insert("keys".into(), keys.to_kong_json());
                m.insert("values".into(), values.to_kong_json());
            }
            Kind::Record(r) => {
                m.insert("fields".into(), fields_json(&r.fields));
                if let Some(checks) = r.entity_checks_json() {
                    m.insert("entity_checks".into(), checks);
                }
            }
            Kind::Any => {
                m.insert("abstract".into(), true.into());
            }
            Kind::Foreign(entity) => {
                m.insert("reference".into(), (*entity).into());
            }
        }
        if self.uuid {
            m.insert("uuid".into(), true.into());
        }
        if self.timestamp {
            m.insert("timestamp".into(), true.into());
        }
        if self.auto {
            m.insert("auto".into(), true.into());
        }
        if self.unique {
            m.insert("unique".into(), true.into());
        }
        if self.referenceable {
            m.insert("referenceable".into(), true.into());
        }
        Value::Object(m)
    }
}

/// `GET /schemas/{entity}`: the schema of an entity kind under a router flavor.
pub fn entity_schema_json(kind: EntityKind, flavor: RouterFlavor) -> Value {
    schema(kind, flavor).to_kong_json()
}

impl PluginSchema {
    /// `GET /schemas/plugins/{name}`: the plugin's schema as Kong gives a plugin subschema.
    /// A scope the plugin refuses is a foreign key that must be `null` (`"eq": null`, Kong's
    /// `typedefs.no_consumer` and its kin); `protocols` is the set the plugin supports, with
    /// the default a plugin instance gets; `config` is the plugin's configuration record
    /// (always present once validated: an absent one gets its defaults).
    pub fn to_kong_json(&self) -> Value {
        let mut fields = Vec::new();
        for (refused, name, reference) in [
            (self.no_consumer, "consumer", "consumers"),
            (self.no_service, "service", "services"),
            (self.no_route, "route", "routes"),
        ] {
            if refused {
                fields
                    .push(json!({ name: {"type": "foreign", "reference": reference, "eq": null} }));
            }
        }
        let default = schema(EntityKind::Plugin, RouterFlavor::default())
            .field("protocols")
            .and_then(Field::default_value);
        let mut protocols = json!({
            "type": "set",
            "required": true,
            "elements": {"type": "string", "one_of": self.protocols},
        });
        if let Some(d) = default {
            protocols["default"] = d;
        }
        fields.push(json!({ "protocols": protocols }));
        let mut config = self.config.to_kong_json();
        config["type"] = "record".into();
        config["required"] = true.into();
        fields.push(json!({ "config": config }));
        json!({ "fields": fields })
    }

    /// `GET /plugins/schema/{name}` (Kong's older endpoint): the `config` record alone.
    pub fn config_kong_json(&self) -> Value {
        self.config.to_kong_json()
    }
}

/// `GET /schemas/vaults/{name}`: the schema of a vault type (`None` when the data plane does
/// not implement it).
pub fn vault_schema_json(name: &str) -> Option<Value> {
    let config = load::vault_config_schema(name)?;
    let mut config = config.to_kong_json();
    config["type"] = "record".into();
    config["required"] = true.into();
    Some(json!({ "fields": [{ "config": config }] }))
}

/// Kong's `schema violation` error body (`kong/db/errors.lua`):
/// `{"code": 2, "name": "schema violation", "message": "...", "fields": {...}}`. The message
/// lists the entity-level messages, then each field's (sorted as Lua sorts the keys: names
/// by bytes, an array's positions by value, [`lua_key_order`]; a nested field's
/// messages one level down as `field.sub: message`, deeper ones in Penlight's layout), as
/// `schema violation (x)` for one and `N schema violations (x; y)` for more.
pub fn schema_violation(errors: &Errors) -> Value {
    let mut parts: Vec<String> = errors.entity.clone();
    let mut fields: Vec<&(String, FieldError)> = errors.fields.iter().collect();
    fields.sort_by(|a, b| lua_key_order(&a.0, &b.0, errors.array));
    for (name, e) in fields {
        match e {
            FieldError::Message(msg) => parts.push(format!("{name}: {msg}")),
            FieldError::Nested(sub) => {
                let mut subs: Vec<(String, Value)> = sub
                    .fields
                    .iter()
                    .map(|(k, e)| {
                        let v = match e {
                            FieldError::Message(s) => Value::String(s.clone()),
                            FieldError::Nested(n) => n.to_json(),
                        };
                        (k.clone(), v)
                    })
                    .collect();
                if !sub.entity.is_empty() {
                    subs.push((
                        "@entity".into(),
                        Value::Array(sub.entity.iter().cloned().map(Value::String).collect()),
                    ));
                }
                subs.sort_by(|a, b| lua_key_order(&a.0, &b.0, sub.array));
                for (k, v) in subs {
                    let v = match v {
                        Value::String(s) => s,
                        other => lua_pretty_indented(&other),
                    };
                    parts.push(format!("{name}.{k}: {v}"));
                }
            }
        }
    }
    let message = if parts.len() == 1 {
        format!("schema violation ({})", parts[0])
    } else {
        format!("{} schema violations ({})", parts.len(), parts.join("; "))
    };
    json!({
        "code": SCHEMA_VIOLATION_CODE,
        "name": "schema violation",
        "message": message,
        "fields": errors.to_json(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::PluginRegistry;
    use crate::{LoadOptions, load::validate_entity, load::validate_entity_update};

    fn field<'a>(schema: &'a Value, name: &str) -> &'a Value {
        schema["fields"]
            .as_array()
            .expect("fields array")
            .iter()
            .find_map(|f| f.get(name))
            .unwrap_or_else(|| panic!("no field {name} in {schema}"))
    }

    #[test]
    fn service_schema_has_kongs_attribute_names() {
        let s = entity_schema_json(EntityKind::Service, RouterFlavor::TraditionalCompatible);
        assert_eq!(
            field(&s, "id"),
            &json!({"type": "string", "uuid": true, "auto": true})
        );
        assert_eq!(
            field(&s, "created_at"),
            &json!({"type": "integer", "timestamp": true, "auto": true})
        );
        assert_eq!(
            field(&s, "ca_certificates"),
            &json!({"type": "array", "elements": {"type": "string", "uuid": true}})
        );
        let target = entity_schema_json(EntityKind::Target, RouterFlavor::TraditionalCompatible);
        assert_eq!(
            field(&target, "updated_at"),
            &json!({"type": "number", "timestamp": true, "auto": true})
        );
        let protocol = field(&s, "protocol");
        assert_eq!(protocol["type"], "string");
        assert_eq!(protocol["required"], true);
        assert_eq!(protocol["default"], "http");
        assert!(
            protocol["one_of"]
                .as_array()
                .expect("one_of")
                .contains(&json!("https"))
        );
        assert_eq!(
            field(&s, "port"),
            &json!({"type": "integer", "required": true, "default": 80, "between": [0, 65535]})
        );
        assert_eq!(
            field(&s, "tags"),
            &json!({"type": "set", "elements": {"type": "string"}})
        );
        assert_eq!(
            field(&s, "client_certificate"),
            &json!({"type": "foreign", "reference": "certificates"})
        );
        assert_eq!(field(&s, "name")["unique"], true);
        assert_eq!(
            field(&s, "enabled"),
            &json!({"type": "boolean", "default": true})
        );
        // the order is the schema's
        let names: Vec<&String> = s["fields"]
            .as_array()
            .expect("fields")
            .iter()
            .filter_map(|f| f.as_object()?.keys().next())
            .collect();
        assert_eq!(names[..4], ["id", "name", "retries", "protocol"]);
    }

    #[test]
    fn records_maps_numbers_and_expressions() {
        let s = entity_schema_json(EntityKind::Upstream, RouterFlavor::TraditionalCompatible);
        let hc = field(&s, "healthchecks");
        assert_eq!(hc["type"], "record");
        // the default is the record as validation fills it in
        assert_eq!(
            hc["default"]["active"]["healthy"]["http_statuses"],
            json!([200, 302])
        );
        assert_eq!(hc["default"]["threshold"], 0);
        let threshold = field(hc, "threshold");
        assert_eq!(
            threshold,
            &json!({"type": "number", "default": 0, "between": [0, 100]})
        );
        let active = field(hc, "active");
        let headers = field(active, "headers");
        assert_eq!(headers["type"], "map");
        assert_eq!(headers["keys"], json!({"type": "string"}));
        assert_eq!(headers["values"]["type"], "array");

        let r = entity_schema_json(EntityKind::Route, RouterFlavor::TraditionalCompatible);
        assert_eq!(
            field(&r, "https_redirect_status_code")["one_of"],
            json!([426, 301, 302, 307, 308])
        );
        assert_eq!(field(&r, "protocols")["len_min"], 1);
        assert!(
            r["fields"]
                .as_array()
                .expect("fields")
                .iter()
                .all(|f| f.get("expression").is_none())
        );
        let e = entity_schema_json(EntityKind::Route, RouterFlavor::Expressions);
        assert_eq!(field(&e, "expression")["type"], "string");

        let p = entity_schema_json(EntityKind::Plugin, RouterFlavor::TraditionalCompatible);
        assert_eq!(
            field(&p, "config"),
            &json!({"type": "record", "abstract": true})
        );
        let k = entity_schema_json(EntityKind::KeyauthCredential, RouterFlavor::Traditional);
        assert_eq!(
            field(&k, "key"),
            &json!({"type": "string", "auto": true, "unique": true})
        );
        assert_eq!(
            field(&k, "consumer"),
            &json!({"type": "foreign", "required": true, "reference": "consumers"})
        );
    }

    #[test]
    fn key_and_key_set_schemas() {
        let ks = entity_schema_json(EntityKind::KeySet, RouterFlavor::TraditionalCompatible);
        let names = |s: &Value| -> Vec<String> {
            s["fields"]
                .as_array()
                .expect("fields")
                .iter()
                .filter_map(|f| f.as_object()?.keys().next().cloned())
                .collect()
        };
        assert_eq!(
            names(&ks),
            ["id", "name", "tags", "created_at", "updated_at"]
        );
        assert_eq!(
            field(&ks, "name"),
            &json!({"type": "string", "unique": true})
        );
        let k = entity_schema_json(EntityKind::Key, RouterFlavor::TraditionalCompatible);
        assert_eq!(
            names(&k),
            [
                "id",
                "set",
                "name",
                "kid",
                "jwk",
                "pem",
                "tags",
                "created_at",
                "updated_at"
            ]
        );
        assert_eq!(
            field(&k, "set"),
            &json!({"type": "foreign", "reference": "key_sets"})
        );
        assert_eq!(
            field(&k, "kid"),
            &json!({"type": "string", "required": true})
        );
        assert_eq!(
            field(&k, "jwk"),
            &json!({"type": "string", "referenceable": true})
        );
        assert_eq!(
            field(&k, "pem"),
            &json!({"type": "record", "fields": [
                {"private_key": {"type": "string", "referenceable": true}},
                {"public_key": {"type": "string", "referenceable": true}},
            ], "entity_checks": [{"at_least_one_of": ["private_key", "public_key"]}]})
        );
        assert_eq!(
            k["entity_checks"],
            json!([
                {"mutually_exclusive": ["jwk", "pem"]},
                {"at_least_one_of": ["jwk", "pem"]},
                {"custom_entity_check": {"field_sources": ["jwk", "pem", "kid"]}},
            ])
        );
        assert!(ks.get("entity_checks").is_none());
    }

    /// Each entity's `entity_checks` as Kong's admin API lists them: its checkers and their
    /// arguments, custom checks by their `field_sources`, nothing of the subschemas.
    #[test]
    fn entity_checks_are_kongs() {
        let checks = |kind, flavor| entity_schema_json(kind, flavor)["entity_checks"].clone();
        let compat = RouterFlavor::TraditionalCompatible;
        let service = checks(EntityKind::Service, compat);
        assert_eq!(
            service[0],
            json!({"conditional": {"if_field": "protocol",
                "if_match": {"one_of": ["tcp", "tls", "udp", "grpc", "grpcs"]},
                "then_field": "path", "then_match": {"eq": null}}})
        );
        assert_eq!(
            service[4],
            json!({"conditional": {"if_field": "protocol",
                "if_match": {"not_one_of": ["https", "tls"]},
                "then_field": "ca_certificates", "then_match": {"eq": null}}})
        );
        assert_eq!(service.as_array().map(Vec::len), Some(5));
        assert_eq!(
            checks(EntityKind::Route, compat),
            json!([
                {"conditional": {"if_field": "protocols",
                    "if_match": {"elements": {"type": "string",
                        "not_one_of": ["grpcs", "https", "tls", "tls_passthrough", "wss"]}},
                    "then_field": "snis", "then_match": {"len_eq": 0},
                    "then_err": "'snis' can only be set when 'protocols' is 'grpcs', 'https', 'tls' or 'tls_passthrough'"}},
                {"custom_entity_check": {"field_sources": ["path_handling"]}},
            ])
        );
        let upstream = checks(EntityKind::Upstream, compat);
        assert_eq!(
            upstream[0],
            json!({"conditional": {"if_field": "hash_on", "if_match": {"match": "^header$"},
                "then_field": "hash_on_header", "then_match": {"required": true}}})
        );
        assert!(
            upstream
                .as_array()
                .expect("checks")
                .contains(&json!({"distinct": ["hash_on_header", "hash_fallback_header"]}))
        );
        assert_eq!(
            checks(EntityKind::Consumer, compat),
            json!([{"at_least_one_of": ["custom_id", "username"]}])
        );
        assert_eq!(
            checks(EntityKind::Certificate, compat),
            json!([
                {"mutually_required": ["cert_alt", "key_alt"]},
                {"custom_entity_check": {"field_sources": ["cert", "key"]}},
                {"custom_entity_check": {"field_sources": ["cert_alt", "key_alt"]}},
                {"custom_entity_check": {"field_sources": ["cert", "cert_alt"]}},
            ])
        );
        let sources = field(&entity_schema_json(EntityKind::Route, compat), "sources")["elements"]
            ["entity_checks"]
            .clone();
        assert_eq!(sources, json!([{"at_least_one_of": ["ip", "port"]}]));
        assert!(
            entity_schema_json(EntityKind::Target, compat)
                .get("entity_checks")
                .is_none()
        );
    }

    #[test]
    fn key_violations_read_as_kongs() {
        let plugins = PluginRegistry::new();
        let opts = LoadOptions {
            router_flavor: RouterFlavor::TraditionalCompatible,
            plugins: &plugins,
            now_unix: None,
        };
        let obj = |v: Value| match v {
            Value::Object(m) => m,
            _ => panic!("not an object"),
        };
        // Kong's admin API answers these (spec 21-admin-api-keys): the same rules here
        for (key, message) in [
            (
                json!({"kid": "35", "jwk": "\"kid\":test"}),
                "schema violation (could not json decode jwk string)",
            ),
            (
                json!({"kid": "36", "jwk": "{\"kid\": \"36\"}"}),
                "schema violation (could not load JWK, likely not a valid key)",
            ),
            (
                json!({"kid": "a", "jwk": "{\"kid\": \"b\"}"}),
                "schema violation (kid in jwk.kid must be equal to keys.kid)",
            ),
            (
                json!({"pem": {}}),
                "2 schema violations (kid: required field missing; pem.@entity: {\n  \"at least one of these fields must be non-empty: 'private_key', 'public_key'\"\n})",
            ),
        ] {
            let e = validate_entity(EntityKind::Key, &obj(key.clone()), &opts);
            assert_eq!(schema_violation(&e)["message"], message, "{key}");
        }
        assert!(validate_entity(EntityKind::KeySet, &obj(json!({"name": "s"})), &opts).is_empty());
    }

    fn example_plugin() -> PluginSchema {
        let mut p = PluginSchema::http(
            "example-auth",
            1000,
            Record::new(vec![
                Field::array("key_names", Field::string("")).default(vec!["apikey"]),
                Field::string("anonymous"),
                Field::string_any("realm").len(0, Some(64)),
            ]),
        );
        p.no_consumer = true;
        p
    }

    #[test]
    fn plugin_schema_is_kongs_subschema_shape() {
        let s = example_plugin().to_kong_json();
        assert_eq!(
            s,
            json!({"fields": [
                {"consumer": {"type": "foreign", "reference": "consumers", "eq": null}},
                {"protocols": {
                    "type": "set", "required": true,
                    "elements": {"type": "string", "one_of": ["grpc", "grpcs", "http", "https", "ws", "wss"]},
                    "default": ["grpc", "grpcs", "http", "https"],
                }},
                {"config": {"type": "record", "required": true, "fields": [
                    {"key_names": {"type": "array", "default": ["apikey"], "elements": {"type": "string"}}},
                    {"anonymous": {"type": "string"}},
                    {"realm": {"type": "string", "len_min": 0, "len_max": 64}},
                ]}},
            ]})
        );
        assert_eq!(
            example_plugin().config_kong_json()["fields"][0]["key_names"]["default"],
            json!(["apikey"])
        );
        let v = vault_schema_json("env").expect("env vault");
        assert_eq!(field(&v, "config")["fields"][0]["prefix"]["type"], "string");
        assert!(vault_schema_json("aws").is_none());
    }

    #[test]
    fn violation_bodies_follow_kongs_message_rules() {
        let mut plugins = PluginRegistry::new();
        plugins.register(example_plugin());
        let opts = LoadOptions {
            router_flavor: RouterFlavor::TraditionalCompatible,
            plugins: &plugins,
            now_unix: None,
        };
        let obj = |v: Value| match v {
            Value::Object(m) => m,
            _ => panic!("not an object"),
        };
        // valid: the same rules as a document's entity (the url shorthand included)
        let e = validate_entity(
            EntityKind::Service,
            &obj(json!({"url": "https://example.com/api"})),
            &opts,
        );
        assert!(e.is_empty(), "{e:?}");

        let e = validate_entity(
            EntityKind::Service,
            &obj(json!({"host": "example.com", "port": 70000})),
            &opts,
        );
        assert_eq!(
            schema_violation(&e),
            json!({"code": 2, "name": "schema violation",
                   "message": "schema violation (port: value should be between 0 and 65535)",
                   "fields": {"port": "value should be between 0 and 65535"}})
        );

        let e = validate_entity(
            EntityKind::Plugin,
            &obj(json!({"name": "example-auth", "protocols": ["tcp"],
                        "config": {"key_names": "apikey", "bogus": 1}})),
            &opts,
        );
        let body = schema_violation(&e);
        assert_eq!(
            body["message"],
            "3 schema violations (config.bogus: unknown field; config.key_names: expected an array; protocols.1: expected one of: grpc, grpcs, http, https, ws, wss)"
        );
        assert_eq!(body["fields"]["config"]["key_names"], "expected an array");
        assert_eq!(
            body["fields"]["protocols"],
            json!(["expected one of: grpc, grpcs, http, https, ws, wss"])
        );

        let e = validate_entity(EntityKind::Plugin, &obj(json!({"name": "nope"})), &opts);
        assert_eq!(
            schema_violation(&e)["message"],
            "schema violation (name: plugin 'nope' not enabled; add it to the 'plugins' configuration property)"
        );

        // entity-level messages come first; deeper errors in Penlight's layout; a
        // conditional check runs beside a field's error
        let e = validate_entity(
            EntityKind::Upstream,
            &obj(json!({"name": "u", "hash_on": "header",
                        "healthchecks": {"active": {"healthy": {"successes": -1}}}})),
            &opts,
        );
        assert_eq!(
            schema_violation(&e)["message"],
            "3 schema violations (failed conditional validation given value of field 'hash_on'; hash_on_header: required field missing; healthchecks.active: {\n  healthy = {\n    successes = \"value should be between 0 and 255\"\n  }\n})"
        );
        let e = validate_entity(
            EntityKind::Upstream,
            &obj(json!({"name": "u", "hash_on": "header"})),
            &opts,
        );
        assert_eq!(
            schema_violation(&e)["message"],
            "2 schema violations (failed conditional validation given value of field 'hash_on'; hash_on_header: required field missing)"
        );
    }

    /// Kong's `validate_update` (`full_check` off): only what is given is checked, a
    /// check none of whose fields is given does not run, and its messages say so.
    #[test]
    fn updates_check_what_they_give() {
        let plugins = PluginRegistry::new();
        let opts = LoadOptions {
            router_flavor: RouterFlavor::TraditionalCompatible,
            plugins: &plugins,
            now_unix: None,
        };
        let obj = |v: Value| match v {
            Value::Object(m) => m,
            _ => panic!("not an object"),
        };
        let update = |k, v| validate_entity_update(k, &obj(v), &opts);
        let message = |e: &Errors| schema_violation(e)["message"].clone();
        // required fields left out, defaults not filled in: nothing to say
        assert!(update(EntityKind::Service, json!({"retries": 3})).is_empty());
        assert!(update(EntityKind::Target, json!({})).is_empty());
        // what is given is checked; a required field given as null is missing (a document's
        // null takes the default)
        assert_eq!(
            message(&update(
                EntityKind::Service,
                json!({"port": null, "retries": -1, "bogus": 1})
            )),
            json!(
                "3 schema violations (bogus: unknown field; port: required field missing; retries: value should be between 0 and 32767)"
            )
        );
        assert!(
            validate_entity(
                EntityKind::Service,
                &obj(json!({"host": "h", "port": null})),
                &opts
            )
            .is_empty()
        );
        // the url shorthand is expanded
        assert!(update(EntityKind::Service, json!({"url": "https://h.test/p"})).is_empty());
        assert_eq!(
            message(&update(EntityKind::Service, json!({"url": "nope"}))),
            json!("schema violation (url: invalid url: nope)")
        );
        // a check runs when one of its fields is given, with Kong's update wording
        assert_eq!(
            message(&update(
                EntityKind::Consumer,
                json!({"username": null, "custom_id": null})
            )),
            json!(
                "schema violation (when updating, at least one of these fields must be non-empty: 'custom_id', 'username')"
            )
        );
        assert!(update(EntityKind::Consumer, json!({"tags": ["a"]})).is_empty());
        // a field a check needs, left out: required for the check, when updating
        assert_eq!(
            message(&update(
                EntityKind::JwtSecret,
                json!({"rsa_public_key": "k"})
            )),
            json!("schema violation (algorithm: field required for entity check when updating)")
        );
        assert_eq!(
            message(&update(
                EntityKind::JwtSecret,
                json!({"algorithm": "RS256"})
            )),
            json!(
                "2 schema violations (failed conditional validation given value of field 'algorithm'; rsa_public_key: required field missing)"
            )
        );
        // a whole entity (an update merged into the entity read first) is checked in full
        let e = update(
            EntityKind::Service,
            json!({"name": "s", "protocol": "tcp", "host": "h", "port": 80, "path": "/p",
                   "retries": 5, "connect_timeout": 1, "write_timeout": 1, "read_timeout": 1,
                   "tags": null, "client_certificate": null, "tls_verify": null,
                   "tls_verify_depth": null, "ca_certificates": null, "enabled": true}),
        );
        assert_eq!(
            message(&e),
            json!(
                "2 schema violations (failed conditional validation given value of field 'protocol'; path: value must be null)"
            )
        );
    }
}
