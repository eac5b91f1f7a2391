//! Writes to the admin API's entity endpoints (`POST`, `PUT`, `PATCH`, `DELETE`), refused as
//! Kong 3.x refuses them in DB-less mode, after the checks Kong makes first, in Kong's order.
//!
//! Kong's generated endpoints (`kong/api/endpoints.lua`) look the entities of the path up,
//! then call the DAO (`kong/db/dao/init.lua`), which checks the entity before the `off`
//! strategy refuses the write (`kong/db/strategies/off/init.lua`: 405, code 12). In order:
//!
//! 1. before any endpoint (`kong/api/api_helpers.lua`): a `POST`, `PUT` or `PATCH` body of a
//!    type other than JSON, a form or multipart is 415 (the `Content-Type` read by its
//!    bytes, whatever they are); then, for a method the endpoint has, a JSON body that
//!    decodes to anything but a table is 500 `An unexpected error occurred` (lapis's
//!    `json_params` fails on it, a `DELETE`'s included), and one that does not parse (an
//!    empty one included) 400 `Cannot parse JSON body` ([`crate::admin_schemas::input`]).
//!    Form and multipart values are typed by the entity's schema (`kong/api/arguments.lua`:
//!    numbers, booleans, arrays; an empty value is `null`);
//! 2. the path: a segment that is no UUID addresses the entity by its endpoint key, whose
//!    value must pass that field's validation (400, `invalid unique <field>`, code 10), and
//!    is an invalid primary key (400, code 1) for a kind without one; a certificate is
//!    addressed by an SNI's name (`kong/api/routes/certificates.lua`: 404 `SNI not found`,
//!    but a `PUT` creates it with a new id and adds the name to its `snis`); a parent or an
//!    entity the endpoint reads first and does not find is 404 `Not found`;
//! 3. the DAO: the entity's shorthands (a service's `url`; their errors alone, a schema
//!    violation); for an update, the entity read first (for the kinds Kong reads before it
//!    updates: 404, code 6, when it does not exist) and the update merged into it;
//!    references given by another unique field of the entity they reference, looked up
//!    (400, `foreign keys unresolved`, code 13); then the schema (Kong's `validate_insert`,
//!    `validate_upsert`, `validate_update`: 400, `schema violation`, code 2, with `fields`,
//!    by [`silverback_config::validate_entity`] and
//!    [`silverback_config::validate_entity_update`]; a required field given as `null` is
//!    missing, where a declarative document's `null` takes the default; a reference is a
//!    primary key, where a document's may be a name); then the `ttl` option of key-auth
//!    credentials (400, `invalid options`, code 11);
//! 4. the refusal: 405, code 12, `cannot <verb> '<entities>' entities[ by '<field>'] when
//!    not using a database`.
//!
//! A nested collection (`POST /services/{s}/routes`) gives its parent as the child's
//! reference; a nested entity's `PUT` too, and its `PATCH` when the body names none. Kong's
//! own endpoints keep their shapes: `PUT /routes/{r}/service` upserts the referenced
//! service, a target under its upstream is updated (`PUT` too) or removed by primary key
//! (`kong/api/routes/upstreams.lua`), and a plugin's `PATCH` whose body lacks one of `name`,
//! `route`, `service`, `consumer` first reads the plugin (`kong/api/routes/plugins.lua`: 404
//! `Not found`). So do the plugins' endpoints of credentials under a consumer
//! (`kong/plugins/<name>/api.lua`): key-auth's, basic-auth's and hmac-auth's find the
//! credential under the consumer, then go on by its id for every method but `PUT` (their
//! refusals name no field); jwt's goes on by the path's value (`by 'key'`); acl's finds an
//! ACL under the consumer by its group (404 without one, but a `PUT` creates it, with the
//! path's group unless the body gives one).
//!
//! Left out, as checks against other entities that Kong's DAO makes with the database: the
//! uniqueness of fields and of a certificate's SNIs, a target already in its upstream, and a
//! plugin's protocols against its route's or service's. The referenced entities need not
//! exist (Kong does not look them up before the strategy's refusal either).

use std::sync::Arc;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::{Map, Value, json};
use silverback_config::schema::{Errors, FieldError, Kind, Record};
use silverback_config::{EntityKind, LoadOptions};

use crate::admin::{
    children, find_acl, find_entity, flat_items, is_uuid, json_response, lua_number, message,
    no_content, now_unix, read_body,
};
use crate::admin_routes::nested_kind_of;
use crate::admin_schemas::{Input, violation};
use crate::admin_view::View;
use crate::body::ProxyBody;
use crate::gateway::Shared;
use crate::snapshot::Snapshot;

/// A write to an entity endpoint of kind `k` (the first segment's collection); `rest` are the
/// path's segments after the collection.
pub(crate) async fn write(
    sh: &Arc<Shared>,
    m: &Method,
    k: EntityKind,
    rest: &[&str],
    req: Request<Incoming>,
) -> Response<ProxyBody> {
    let verb = match *m {
        Method::POST => "create",
        Method::PUT => "create or update",
        Method::PATCH => "update",
        Method::DELETE => "remove",
        _ => return not_allowed(),
    };
    // the methods each endpoint has; the others are 405 `Method not allowed`
    let handled = match rest {
        [] => *m == Method::POST,
        [_] | [_, _, _] => *m != Method::POST,
        [_, fk] if k.foreign_keys().iter().any(|(f, _)| f == fk) => *m != Method::POST,
        [_, _] => *m == Method::POST,
        _ => true,
    };
    if !handled {
        return not_allowed();
    }
    // (the type as Kong reads it, whatever its bytes)
    let ct = crate::admin_schemas::content_type(&req);
    let json = ct
        .as_deref()
        .is_some_and(|t| t.to_ascii_lowercase().contains("application/json"));
    // (a DELETE's body matters only to lapis's `json_params`, which reads any method's JSON)
    let body = if *m == Method::DELETE && !json {
        Posted::default()
    } else {
        match read_body(sh, req.into_body()).await {
            Ok(bytes) => Posted { ct, bytes },
            Err(r) => return r,
        }
    };
    let w = Writer {
        sh,
        snap: sh.snapshot.load_full(),
        m,
        verb,
    };
    // (the JSON check wraps every handler: before the path is looked at)
    let input = match *m {
        Method::DELETE if crate::admin_schemas::json_scalar(body.ct.as_deref(), &body.bytes) => {
            return crate::admin_schemas::unexpected();
        }
        Method::DELETE => Input::default(),
        _ => match crate::admin_schemas::input(body.ct.as_deref(), &body.bytes) {
            Ok(i) => i,
            Err(r) => return *r,
        },
    };
    match w.run(k, rest, input) {
        Ok(r) => r,
        Err(r) => *r,
    }
}

/// A write's body and its `Content-Type`.
#[derive(Debug, Default)]
struct Posted {
    ct: Option<String>,
    bytes: bytes::Bytes,
}

fn not_allowed() -> Response<ProxyBody> {
    message(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed")
}

fn not_found() -> Response<ProxyBody> {
    message(StatusCode::NOT_FOUND, "Not found")
}

/// A step of a write: on to the next, or Kong's answer.
type Step<T> = Result<T, Box<Response<ProxyBody>>>;

/// How a path segment addresses an entity.
#[derive(Debug, Clone)]
struct Key {
    /// The id, or the value of the endpoint key.
    value: String,
    /// The endpoint key it is the value of (`None`: an id).
    by: Option<&'static str>,
    /// The SNI name a certificate was addressed by.
    sni: Option<String>,
}

/// One write, with the configuration it sees.
struct Writer<'a> {
    sh: &'a Shared,
    snap: Arc<Snapshot>,
    m: &'a Method,
    verb: &'static str,
}

impl Writer<'_> {
    fn opts(&self) -> LoadOptions<'_> {
        LoadOptions {
            router_flavor: self.sh.settings.router_flavor,
            plugins: &self.sh.settings.plugins,
            now_unix: now_unix(),
        }
    }

    fn schema(&self, k: EntityKind) -> Record {
        silverback_config::entities::schema(k, self.sh.settings.router_flavor)
    }

    fn run(&self, k: EntityKind, rest: &[&str], input: Input) -> Step<Response<ProxyBody>> {
        let m = self.m;
        match rest {
            [] => self.insert(k, input, None),
            [id] => {
                let key = self.key(k, id)?;
                let stored = self.find(k, &key);
                let mut input = input;
                if k == EntityKind::Certificate {
                    prepare_snis(&mut input.params, key.sni.as_deref(), *m == Method::PUT);
                }
                match *m {
                    // (the DAO selects first: nothing to remove is done)
                    Method::DELETE if stored.is_none() => Ok(no_content()),
                    Method::DELETE => Ok(unsupported(self.verb, k, key.by)),
                    Method::PUT => self.upsert(k, &key, input, None),
                    _ => self.update(k, &key, stored, input, None),
                }
            }
            [id, child] => {
                if let Some((fk, pk)) = k.foreign_keys().iter().find(|(f, _)| f == child) {
                    return self.referenced(k, id, (fk, *pk), input);
                }
                let Some(ck) = nested_kind_of(child)
                    .filter(|ck| ck.foreign_keys().iter().any(|(_, p)| *p == k))
                else {
                    return Ok(not_found());
                };
                let key = self.key(k, id)?;
                let Some(parent) = self.find(k, &key) else {
                    return Ok(not_found());
                };
                let fk = fk_to(ck, k);
                self.insert(ck, input, Some((fk, id_of(&parent))))
            }
            [id, child, cid] => self.nested(k, (id, child, cid), input),
            _ => Ok(not_found()),
        }
    }

    /// `/routes/{r}/service`: the entity a reference of `k` names.
    fn referenced(
        &self,
        k: EntityKind,
        id: &str,
        (fk, pk): (&str, EntityKind),
        input: Input,
    ) -> Step<Response<ProxyBody>> {
        let key = self.key(k, id)?;
        let Some(entity) = self.find(k, &key) else {
            return Ok(not_found());
        };
        let rid = entity
            .get(fk)
            .and_then(|r| r.get("id"))
            .and_then(Value::as_str)
            .map(str::to_string);
        let by_id = |v: String| Key {
            value: v,
            by: None,
            sni: None,
        };
        match (self.m, rid) {
            // (an entity without one gets a new one: still an upsert, by a new id)
            (&Method::PUT, rid) => {
                let rid = rid.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
                self.upsert(pk, &by_id(rid), input, None)
            }
            (_, None) => Ok(not_found()),
            (&Method::DELETE, Some(_)) => Ok(not_allowed()),
            (_, Some(rid)) => {
                let key = by_id(rid);
                let stored = self.find(pk, &key);
                self.update(pk, &key, stored, input, None)
            }
        }
    }

    /// `/services/{s}/routes/{r}`: one child under its parent.
    fn nested(
        &self,
        k: EntityKind,
        (id, child, cid): (&str, &str, &str),
        input: Input,
    ) -> Step<Response<ProxyBody>> {
        let Some(ck) =
            nested_kind_of(child).filter(|ck| ck.foreign_keys().iter().any(|(_, p)| *p == k))
        else {
            return Ok(not_found());
        };
        let key = self.key(k, id)?;
        let Some(parent) = self.find(k, &key) else {
            return Ok(not_found());
        };
        let Some((_, items)) = children(&self.snap, k, &parent, child) else {
            return Ok(not_found());
        };
        let fk = fk_to(ck, k);
        let pid = id_of(&parent);
        if ck == EntityKind::Target {
            // Kong's own target endpoint (`kong/api/routes/upstreams.lua`): the target by id
            // or address under that upstream for every method, then an update (a `PUT`
            // too) or a removal by primary key
            let Some(target) = find_entity(&items, ck, cid).cloned() else {
                return Ok(not_found());
            };
            let key = Key {
                value: id_of(&target),
                by: None,
                sni: None,
            };
            if *self.m == Method::DELETE {
                return Ok(unsupported("remove", ck, None));
            }
            let w = Writer {
                verb: "update",
                m: &Method::PATCH,
                sh: self.sh,
                snap: self.snap.clone(),
            };
            return w.update(ck, &key, Some(target), input, None);
        }
        let mut input = input;
        if ck == EntityKind::Acl && !is_uuid(cid) {
            // an ACL under its consumer by its group (`kong/plugins/acl/api.lua`): by the id
            // of the one found; a `PUT` of none creates one with a new id, and the group of
            // the path unless the body gives one
            let under = find_acl(&items, cid).cloned();
            let value = match (&under, self.m) {
                (Some(acl), _) => id_of(acl),
                (None, &Method::PUT) => uuid::Uuid::new_v4().to_string(),
                (None, _) => return Ok(not_found()),
            };
            if *self.m == Method::PUT && !input.params.contains_key("group") {
                input.params.insert("group".into(), Value::from(cid));
            }
            let ckey = Key {
                value,
                by: None,
                sni: None,
            };
            return match *self.m {
                Method::PUT => self.upsert(ck, &ckey, input, Some((fk, pid))),
                Method::DELETE => Ok(unsupported(self.verb, ck, None)),
                _ => self.update(ck, &ckey, under, input, Some((fk, pid))),
            };
        }
        let mut ckey = self.key(ck, cid)?;
        let under = find_entity(&items, ck, &ckey.value).cloned();
        if let Some(found) = &under
            && *self.m != Method::PUT
            && by_id_once_found(ck)
        {
            // (the plugin's own endpoint goes on by the id of the credential it found)
            ckey = Key {
                value: id_of(found),
                by: None,
                sni: None,
            };
        }
        match *self.m {
            // an upsert: the parent is its reference, whatever the body says
            Method::PUT => self.upsert(ck, &ckey, input, Some((fk, pid))),
            _ if under.is_none() => Ok(not_found()),
            Method::DELETE => Ok(unsupported(self.verb, ck, ckey.by)),
            // (the parent is the reference when the body gives none)
            _ => self.update(ck, &ckey, under, input, Some((fk, pid))),
        }
    }

    /// How the segment `key` addresses an entity of `k` (Kong's `query_entity`, and the
    /// certificates' `prepare_params`).
    fn key(&self, k: EntityKind, key: &str) -> Step<Key> {
        if is_uuid(key) {
            return Ok(Key {
                value: key.to_string(),
                by: None,
                sni: None,
            });
        }
        if k == EntityKind::Certificate {
            // by the name of one of its SNIs
            self.unique_value(EntityKind::Sni, "name", key)?;
            let sni = flat_items(&self.snap, EntityKind::Sni)
                .iter()
                .find(|s| s.get("name").and_then(Value::as_str) == Some(key));
            let cert = sni.and_then(|s| {
                s.get("certificate")
                    .and_then(|c| c.get("id"))
                    .and_then(Value::as_str)
            });
            let sni = Some(key.to_string());
            return match (cert, self.m) {
                (Some(c), _) => Ok(Key {
                    value: c.to_string(),
                    by: None,
                    sni,
                }),
                // (a `PUT` creates it, with a new id)
                (None, &Method::PUT) => Ok(Key {
                    value: uuid::Uuid::new_v4().to_string(),
                    by: None,
                    sni,
                }),
                (None, _) => Err(Box::new(message(StatusCode::NOT_FOUND, "SNI not found"))),
            };
        }
        let Some(by) = k.endpoint_key() else {
            return Err(Box::new(invalid_primary_key()));
        };
        self.unique_value(k, by, key)?;
        Ok(Key {
            value: key.to_string(),
            by: Some(by),
            sni: None,
        })
    }

    /// The DAO's check of a value that addresses an entity by a unique field
    /// ([`unique_value`]).
    fn unique_value(&self, k: EntityKind, field: &'static str, value: &str) -> Step<()> {
        match unique_value(self.sh, k, field, value) {
            Some(refused) => Err(Box::new(refused)),
            None => Ok(()),
        }
    }

    /// The entity `key` addresses, as the configuration holds it (only it copied).
    fn find(&self, k: EntityKind, key: &Key) -> Option<Value> {
        let field = key.by.unwrap_or("id");
        flat_items(&self.snap, k)
            .iter()
            .find(|e| e.get(field).and_then(Value::as_str) == Some(&key.value))
            .cloned()
    }

    /// `POST`: a new entity (`parent`: the reference a nested collection gives it).
    fn insert(
        &self,
        k: EntityKind,
        input: Input,
        parent: Option<(&'static str, String)>,
    ) -> Step<Response<ProxyBody>> {
        let mut b = self.entity(k, input, None)?;
        if let Some((fk, pid)) = parent {
            b.entity.insert(fk.into(), json!({ "id": pid }));
        }
        self.check(k, b, Mode::Full)?;
        Ok(unsupported("create", k, None))
    }

    /// `PUT`: an entity created or replaced (`parent`: the reference a nested endpoint
    /// gives it, over the body's).
    fn upsert(
        &self,
        k: EntityKind,
        key: &Key,
        input: Input,
        parent: Option<(&'static str, String)>,
    ) -> Step<Response<ProxyBody>> {
        let mut b = self.entity(k, input, None)?;
        if let Some((fk, pid)) = parent {
            b.entity.insert(fk.into(), json!({ "id": pid }));
        }
        // (an upsert by endpoint key checks the entity with the key's value)
        let by = key.by.map(|f| (f, Value::from(key.value.clone())));
        self.check(k, b, Mode::Upsert(by))?;
        Ok(unsupported(self.verb, k, key.by))
    }

    /// `PATCH` (and a target's `PUT`): an update of the entity `key` addresses, `stored`
    /// when it exists (`parent`: the reference a nested endpoint gives when the body gives
    /// none).
    fn update(
        &self,
        k: EntityKind,
        key: &Key,
        stored: Option<Value>,
        input: Input,
        parent: Option<(&'static str, String)>,
    ) -> Step<Response<ProxyBody>> {
        if k == EntityKind::Plugin
            && stored.is_none()
            && ["name", "route", "service", "consumer"]
                .iter()
                .any(|f| !input.params.contains_key(*f))
        {
            // (`kong/api/routes/plugins.lua` reads the plugin first, for its name)
            return Err(Box::new(not_found()));
        }
        let stored_name = stored
            .as_ref()
            .and_then(|s| s.get("name"))
            .and_then(Value::as_str)
            .map(str::to_string);
        let mut b = self.entity(k, input, stored_name.as_deref())?;
        if let Some((fk, pid)) = parent
            && !b.entity.contains_key(fk)
        {
            b.entity.insert(fk.into(), json!({ "id": pid }));
        }
        let shorthands = silverback_config::expand_shorthands(k, &mut b.entity);
        if !shorthands.is_empty() {
            return Err(Box::new(violation(&shorthands, b.array)));
        }
        if reads_before_update(k) {
            // the entity read first, the update merged into it
            let Some(stored) = stored else {
                return Err(Box::new(dao_not_found(&key.value, key.by)));
            };
            let shown = View::of(self.sh, &self.snap, k).show(&stored);
            let Value::Object(shown) = shown else {
                return Err(Box::new(dao_not_found(&key.value, key.by)));
            };
            let schema = self.schema(k);
            let config = self.config_schema(k, &b.entity, &shown);
            b.entity = merge(b.entity, &shown, &schema, config.as_ref());
        }
        self.check(k, b, Mode::Update)?;
        Ok(unsupported(self.verb, k, key.by))
    }

    /// The body as the entity of kind `k` Kong's DAO gets: typed by the schema when it was a
    /// form, with the `ttl` option (key-auth credentials) and a certificate's `snis` taken
    /// apart (`plugin`: the name of the plugin an update is of, for its `config`).
    fn entity(&self, k: EntityKind, input: Input, plugin: Option<&str>) -> Step<Body> {
        let input_array = input.array;
        let mut entity = input.params;
        // (Kong takes the option out before it types the rest)
        let ttl = (k == EntityKind::KeyauthCredential)
            .then(|| entity.remove("ttl"))
            .flatten();
        if input.text {
            let schema = self.schema(k);
            let name = entity
                .get("name")
                .and_then(Value::as_str)
                .or(plugin)
                .map(str::to_string);
            let config = name.and_then(|n| self.config_of(k, &n));
            infer_record(&mut entity, &schema, config.as_ref());
            if k == EntityKind::Certificate
                && let Some(snis) = entity.get_mut("snis")
            {
                let sni = self.schema(EntityKind::Sni);
                if let Some(f) = sni.field("name") {
                    let elements = silverback_config::schema::Field::array("snis", f.clone());
                    *snis = infer_value(std::mem::take(snis), &elements);
                }
            }
        }
        let snis = (k == EntityKind::Certificate)
            .then(|| entity.remove("snis"))
            .flatten();
        Ok(Body {
            entity,
            ttl,
            snis,
            array: input_array,
        })
    }

    /// The schema of the `config` of the plugin or vault `name`.
    fn config_of(&self, k: EntityKind, name: &str) -> Option<Record> {
        match k {
            EntityKind::Plugin => self.sh.settings.plugins.get(name).map(|p| p.config.clone()),
            EntityKind::Vault => silverback_config::load::vault_config_schema(name),
            _ => None,
        }
    }

    /// [`Writer::config_of`] the plugin or vault an update (merged into `stored`) is of.
    fn config_schema(
        &self,
        k: EntityKind,
        update: &Map<String, Value>,
        stored: &Map<String, Value>,
    ) -> Option<Record> {
        let name = update
            .get("name")
            .or_else(|| stored.get("name"))
            .and_then(Value::as_str)?;
        self.config_of(k, name)
    }

    /// The DAO's checks of an entity, in Kong's order: its shorthands, the references given
    /// by a unique field, the schema, the `ttl` option.
    fn check(&self, k: EntityKind, mut b: Body, mode: Mode) -> Step<()> {
        if !matches!(mode, Mode::Update) {
            let shorthands = silverback_config::expand_shorthands(k, &mut b.entity);
            if !shorthands.is_empty() {
                return Err(Box::new(violation(&shorthands, b.array)));
            }
        }
        if let Mode::Upsert(Some((f, v))) = &mode {
            b.entity.insert((*f).to_string(), v.clone());
        }
        self.resolve_foreign(k, &mut b.entity)?;
        // what the entity schema of the declarative format reads differently
        let mut aside = Errors::default();
        for (fk, target) in k.foreign_keys() {
            if let Some(e) = self.reference_error(*target, b.entity.get(*fk)) {
                b.entity.remove(*fk);
                aside.set(*fk, e);
            } else if let Some(Value::Object(r)) = b.entity.get_mut(*fk) {
                // (Kong reads the primary key and leaves the rest)
                r.retain(|key, _| key == "id");
            }
        }
        for declarative in ["_comment", "_ignore"] {
            if b.entity.remove(declarative).is_some() {
                aside.field(declarative, "unknown field");
            }
        }
        if !matches!(mode, Mode::Update) {
            // (a `null` stays one in Kong's insert, where a document's takes the default: a
            // required field given as `null` is missing)
            let schema = self.schema(k);
            for (name, v) in &b.entity {
                if v.is_null() && schema.field(name).is_some_and(|f| f.required) {
                    aside.field(name.as_str(), "required field missing");
                }
            }
        }
        if let Some(snis) = &b.snis
            && let Some(e) = self.snis_error(snis)
        {
            aside.set("snis", e);
        }
        let opts = self.opts();
        let mut errors = match mode {
            Mode::Update => silverback_config::validate_entity_update(k, &b.entity, &opts),
            _ => silverback_config::validate_entity(k, &b.entity, &opts),
        };
        for (f, e) in aside.fields {
            errors.set(f, e);
        }
        if !errors.is_empty() {
            return Err(Box::new(violation(&errors, b.array)));
        }
        // the `ttl` option (Kong's `validate_options_value`)
        if let Some(ttl) = b.ttl.filter(|t| !t.is_null())
            && !silverback_config::schema::as_integer(&ttl)
                .is_some_and(|t| (0..=100_000_000).contains(&t))
        {
            let why = "must be an integer between 0 and 100000000";
            return Err(Box::new(json_response(
                StatusCode::BAD_REQUEST,
                &json!({"code": 11, "name": "invalid options",
                        "message": format!("invalid option (ttl: {why})"),
                        "options": {"ttl": why}}),
            )));
        }
        Ok(())
    }

    /// Kong's `resolve_foreign`: a reference given by another unique field of the entity it
    /// references (`{"name": "svc"}`) is looked up and replaced by its primary key; one that
    /// names no entity is Kong's `foreign keys unresolved` (400, code 13).
    fn resolve_foreign(&self, k: EntityKind, entity: &mut Map<String, Value>) -> Step<()> {
        let mut unresolved: Vec<(&str, Vec<Unresolved>)> = Vec::new();
        for (fk, target) in k.foreign_keys() {
            let Some(Value::Object(given)) = entity.get(*fk) else {
                continue;
            };
            if given.get("id").and_then(Value::as_str).is_some_and(is_uuid) {
                continue;
            }
            let schema = self.schema(*target);
            let mut errors = Vec::new();
            let mut found = None;
            let unique = schema
                .fields
                .iter()
                .filter(|f| f.unique || target.endpoint_key() == Some(f.name));
            for f in unique {
                let Some(v) = given.get(f.name).filter(|v| !v.is_null()) else {
                    continue;
                };
                if field_error(f, v).is_some() {
                    continue;
                }
                let hit = flat_items(&self.snap, *target)
                    .iter()
                    .find(|e| e.get(f.name) == Some(v));
                match hit {
                    Some(e) => {
                        found = Some(id_of(e));
                        break;
                    }
                    None => errors.push((f.name, v.clone(), *target)),
                }
            }
            if let Some(id) = found {
                entity.insert((*fk).to_string(), json!({ "id": id }));
            }
            if !errors.is_empty() {
                unresolved.push((fk, errors));
            }
        }
        if unresolved.is_empty() {
            return Ok(());
        }
        // (Kong's `foreign_keys_unresolved`: by field and subfield names, sorted)
        unresolved.sort_by(|a, b| a.0.cmp(b.0));
        let mut fields = Map::new();
        let mut parts = Vec::new();
        for (fk, mut errors) in unresolved {
            errors.sort_by(|a, b| a.0.cmp(b.0));
            let mut sub = Map::new();
            for (name, value, parent) in errors {
                let pretty = silverback_config::error::lua_pretty(&json!({ name: value }));
                let why = format!(
                    "the foreign key cannot be resolved with '{pretty}' for an existing '{}' entity",
                    parent.plural()
                );
                parts.push(format!("{fk}.{name}: {why}"));
                sub.insert(name.to_string(), Value::from(why));
            }
            fields.insert(fk.to_string(), Value::Object(sub));
        }
        let message = match parts.as_slice() {
            [one] => format!("foreign key unresolved ({one})"),
            _ => format!(
                "{} foreign keys unresolved ({})",
                parts.len(),
                parts.join("; ")
            ),
        };
        Err(Box::new(json_response(
            StatusCode::BAD_REQUEST,
            &json!({"code": 13, "name": "foreign keys unresolved",
                    "message": message, "fields": fields}),
        )))
    }

    /// Kong's check of a reference (a `foreign` field: its primary key, else the errors of
    /// the value as a partial entity of the kind it references), where the entity schema of
    /// the declarative format reads one otherwise (a name, any id); `None` when it is a
    /// valid primary key, or `null`.
    fn reference_error(&self, target: EntityKind, v: Option<&Value>) -> Option<FieldError> {
        let pk = |why: &str| {
            let mut e = Errors::default();
            e.field("id", why);
            Some(FieldError::Nested(e))
        };
        match v? {
            Value::Null => None,
            Value::Object(r) => {
                let pk_error = match r.get("id") {
                    Some(Value::String(id)) if is_uuid(id) => return None,
                    None => "missing primary key",
                    Some(Value::Null) => "required field missing",
                    Some(Value::String(_)) => "expected a valid UUID",
                    Some(_) => "expected a string",
                };
                let errors = silverback_config::validate_entity_update(target, r, &self.opts());
                if errors.is_empty() {
                    pk(pk_error)
                } else {
                    Some(FieldError::Nested(errors))
                }
            }
            // (a string has no key to Lua: no primary key)
            _ => pk("missing primary key"),
        }
    }

    /// The errors of a certificate's `snis` (an array of SNI names), if any.
    fn snis_error(&self, snis: &Value) -> Option<FieldError> {
        let schema = self.schema(EntityKind::Sni);
        let name = schema.field("name")?;
        let f = silverback_config::schema::Field::array("snis", name.clone());
        field_error(&f, snis)
    }
}

/// An entity on its way to the DAO's checks, with what Kong takes apart from it.
#[derive(Debug)]
struct Body {
    entity: Map<String, Value>,
    /// The `ttl` option of a key-auth credential.
    ttl: Option<Value>,
    /// A certificate's `snis` (a transient field, not in the declarative schema).
    snis: Option<Value>,
    /// The body was a JSON array ([`Input::array`]).
    array: bool,
}

/// A reference's unique field whose value names no entity: the field, the value, and the
/// kind referenced.
type Unresolved = (&'static str, Value, EntityKind);

/// Which of Kong's schema validations a write gets.
#[derive(Debug)]
enum Mode {
    /// `validate_insert`.
    Full,
    /// `validate_upsert`, by an endpoint key and its value if the path gave one.
    Upsert(Option<(&'static str, Value)>),
    /// `validate_update`.
    Update,
}

/// The error of `v` as the value of the field `f`, if any (the field's own validation).
fn field_error(f: &silverback_config::schema::Field, v: &Value) -> Option<FieldError> {
    let mut one = f.clone();
    one.required = false;
    let record = Record::new(vec![one]);
    let mut m = Map::new();
    m.insert(f.name.to_string(), v.clone());
    let (_, mut e) = record.validate(&m);
    e.fields.pop().map(|(_, e)| e)
}

/// Kong's `prepare_args` of `/certificates/{c}` (`kong/api/routes/certificates.lua`): one
/// SNI name as `snis` is a list of it, and a `PUT` by an SNI's name adds the name to the
/// list it gives.
fn prepare_snis(params: &mut Map<String, Value>, name: Option<&str>, put: bool) {
    let Some(snis) = params.get_mut("snis") else {
        return;
    };
    match snis {
        Value::Array(a) => {
            if let Some(name) = name.filter(|n| put && !a.iter().any(|s| s.as_str() == Some(n))) {
                a.push(Value::from(name));
            }
        }
        Value::String(s) => {
            *snis = match name {
                Some(n) if put && n != s => json!([s.clone(), n]),
                _ => json!([s.clone()]),
            };
        }
        _ => {}
    }
}

/// The id of an entity, as the configuration holds it.
fn id_of(e: &Value) -> String {
    e.get("id")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// The reference of kind `ck` to its parent `k` (`service` of routes).
fn fk_to(ck: EntityKind, k: EntityKind) -> &'static str {
    ck.foreign_keys()
        .iter()
        .find(|(_, p)| *p == k)
        .map_or("", |(f, _)| f)
}

/// Kong's `merge_values`: `top` over `bottom`, a record field merged field by field (a
/// plugin's or vault's `config` by `config`'s schema), anything else replaced.
fn merge(
    top: Map<String, Value>,
    bottom: &Map<String, Value>,
    schema: &Record,
    config: Option<&Record>,
) -> Map<String, Value> {
    let mut out = bottom.clone();
    for (k, v) in top {
        let record = match schema.field(&k).map(|f| &f.kind) {
            Some(Kind::Record(r)) => Some(&**r),
            Some(Kind::Any) if k == "config" => config,
            _ => None,
        };
        let v = match (record, v, bottom.get(&k)) {
            (Some(r), Value::Object(t), Some(Value::Object(b))) => {
                Value::Object(merge(t, b, r, None))
            }
            (Some(r), Value::Object(t), _) => Value::Object(merge(t, &Map::new(), r, None)),
            (_, v, _) => v,
        };
        out.insert(k, v);
    }
    out
}

/// Kong's `arguments.infer` of a form's values (text) by the fields of `schema` they are
/// given for (`config`: the schema of a plugin's or vault's `config`).
fn infer_record(m: &mut Map<String, Value>, schema: &Record, config: Option<&Record>) {
    for f in &schema.fields {
        let Some(v) = m.get_mut(f.name) else {
            continue;
        };
        let v0 = std::mem::take(v);
        *v = match (&f.kind, config) {
            (Kind::Any, Some(c)) if f.name == "config" => match v0 {
                Value::Object(mut o) => {
                    infer_record(&mut o, c, None);
                    Value::Object(o)
                }
                other => infer_value(other, f),
            },
            _ => infer_value(v0, f),
        };
    }
}

/// Kong's `arguments.infer_value`: text typed by its field (an empty text is `null`; a
/// number or a boolean where the field is one; one text where an array is, an array of it;
/// the fields of a record or a reference by theirs). A map's values stay text, as Kong
/// leaves them.
fn infer_value(v: Value, f: &silverback_config::schema::Field) -> Value {
    if v.as_str() == Some("") {
        return Value::Null;
    }
    match (&f.kind, v) {
        (Kind::Integer { .. } | Kind::Number { .. }, Value::String(s)) => {
            match lua_number(&s).and_then(serde_json::Number::from_f64) {
                Some(n) => match n.as_f64() {
                    Some(x) if x.fract() == 0.0 && x.abs() < 9.0e15 => Value::from(x as i64),
                    _ => Value::Number(n),
                },
                None => Value::String(s),
            }
        }
        (Kind::Boolean, Value::String(s)) if s == "true" => Value::Bool(true),
        (Kind::Boolean, Value::String(s)) if s == "false" => Value::Bool(false),
        (Kind::Array { elements, .. }, v) => {
            let items = match v {
                Value::Array(a) => a,
                one => vec![one],
            };
            Value::Array(
                items
                    .into_iter()
                    .map(|i| infer_value(i, elements))
                    .collect(),
            )
        }
        (Kind::Record(r), Value::Object(mut o)) => {
            infer_record(&mut o, r, None);
            Value::Object(o)
        }
        (_, v) => v,
    }
}

/// The `off` strategy's refusal (`kong/db/strategies/off/init.lua`): 405 with the DAO
/// error, `by '<field>'` when the entity was addressed by its endpoint key.
fn unsupported(verb: &str, k: EntityKind, by: Option<&str>) -> Response<ProxyBody> {
    let by = by.map(|f| format!(" by '{f}'")).unwrap_or_default();
    json_response(
        StatusCode::METHOD_NOT_ALLOWED,
        &json!({
            "code": 12,
            "name": "operation unsupported",
            "message": format!("cannot {verb} '{}' entities{by} when not using a database", k.plural()),
        }),
    )
}

/// A path segment that is no UUID, addressing a kind without endpoint key: the DAO's
/// `invalid primary key` (`kong/db/errors.lua`, code 1), answered 400 as it is.
/// The DAO's check of a value that addresses an entity by a unique field: it must pass
/// the field's validation, else Kong's `invalid unique` error (400), returned.
fn unique_value(
    sh: &Shared,
    k: EntityKind,
    field: &'static str,
    value: &str,
) -> Option<Response<ProxyBody>> {
    let schema = silverback_config::entities::schema(k, sh.settings.router_flavor);
    let message = match field_error(schema.field(field)?, &Value::from(value))? {
        FieldError::Message(why) => why,
        FieldError::Nested(e) => e.to_json().to_string(),
    };
    Some(json_response(
        StatusCode::BAD_REQUEST,
        &json!({"code": 10, "name": format!("invalid unique {field}"), "message": message}),
    ))
}

/// Why a path segment `key` that matched no entity of `k` is Kong's 400 rather than a 404,
/// as Kong's `query_entity` checks it before looking it up: a key that is not a UUID must
/// pass the validation of the kind's endpoint key (`invalid unique <field>`), and a kind
/// without one takes UUIDs alone (`invalid primary key`). `None`: a 404 it is.
pub(crate) fn key_refusal(sh: &Shared, k: EntityKind, key: &str) -> Option<Response<ProxyBody>> {
    if is_uuid(key) {
        return None;
    }
    // (a certificate is also addressed by the name of one of its SNIs)
    let (k, field) = match (k, k.endpoint_key()) {
        (EntityKind::Certificate, _) => (EntityKind::Sni, "name"),
        (_, Some(f)) => (k, f),
        (_, None) => return Some(invalid_primary_key()),
    };
    unique_value(sh, k, field, key)
}

pub(crate) fn invalid_primary_key() -> Response<ProxyBody> {
    let fields = json!({"id": "expected a valid UUID"});
    json_response(
        StatusCode::BAD_REQUEST,
        &json!({
            "code": 1,
            "name": "invalid primary key",
            "message": format!("invalid primary key: '{}'", silverback_config::error::lua_pretty(&fields)),
            "fields": fields,
        }),
    )
}

/// Whether the endpoint of this kind under a consumer (`/consumers/{c}/key-auth/{k}`: the
/// plugin's own, `kong/plugins/<name>/api.lua`) addresses a credential it found by its id,
/// whatever the path gave, for every method but `PUT`: its `before` handler replaces the
/// path's parameter with the id, so that a `PATCH` or `DELETE` of one addressed by its key
/// is refused without `by '<field>'`. The key-auth, basic-auth and hmac-auth endpoints do;
/// jwt's sets another parameter (`keyauth_jwt_secrets`), so its endpoint goes on by the
/// path's value, as the generic nested endpoints do (`by 'key'`). ACLs have no endpoint key.
fn by_id_once_found(k: EntityKind) -> bool {
    use EntityKind::*;
    matches!(
        k,
        KeyauthCredential | BasicauthCredential | HmacauthCredential
    )
}

/// Whether Kong's DAO reads an entity of this kind before it updates it: a schema with
/// entity checks or subschemas (`Schema:process_auto_fields` asks for a read-before-write
/// then), so a PATCH of one that does not exist is the DAO's 404 before the strategy's 405,
/// and an update is checked merged into the entity read.
fn reads_before_update(k: EntityKind) -> bool {
    use EntityKind::*;
    matches!(
        k,
        Service | Route | Consumer | Plugin | Upstream | Certificate | CaCertificate | Key | Vault
    )
}

/// The DAO's `not found` error (`kong/db/errors.lua`, code 6), which the endpoints answer
/// as it is: by primary key, or by the endpoint key the entity was addressed by.
fn dao_not_found(key: &str, by: Option<&str>) -> Response<ProxyBody> {
    let fields = json!({ by.unwrap_or("id"): key });
    let pretty = silverback_config::error::lua_pretty(&fields);
    let message = match by {
        None => format!("could not find the entity with primary key '{pretty}'"),
        Some(_) => format!("could not find the entity with '{pretty}'"),
    };
    json_response(
        StatusCode::NOT_FOUND,
        &json!({"code": 6, "name": "not found", "message": message, "fields": fields}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use silverback_config::schema::Field;

    #[test]
    fn form_values_are_typed_by_their_fields() {
        let schema = silverback_config::entities::schema(
            EntityKind::Service,
            silverback_config::RouterFlavor::TraditionalCompatible,
        );
        let mut m = match json!({"port": "8080", "retries": "x", "enabled": "false",
                                 "path": "", "host": "h", "tags": "one",
                                 "ca_certificates": ["a"], "bogus": "1"})
        {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        infer_record(&mut m, &schema, None);
        assert_eq!(
            Value::Object(m),
            json!({"port": 8080, "retries": "x", "enabled": false, "path": null, "host": "h",
                   "tags": ["one"], "ca_certificates": ["a"], "bogus": "1"})
        );
        // a map's values stay text (Kong's `infer_value` looks for `elements` there)
        let f = Field::map("m", Field::string(""), Field::integer("", 0, 9));
        assert_eq!(infer_value(json!({"a": "1"}), &f), json!({"a": "1"}));
        let f = Field::number("n", 0.0, 9.0);
        assert_eq!(infer_value(json!("1.5"), &f), json!(1.5));
    }

    #[test]
    fn updates_merge_records_field_by_field() {
        let schema = silverback_config::entities::schema(
            EntityKind::Upstream,
            silverback_config::RouterFlavor::TraditionalCompatible,
        );
        let bottom = match json!({"name": "u", "slots": 10, "tags": ["a"],
                                  "healthchecks": {"threshold": 0, "active": {"timeout": 1, "type": "http"}}})
        {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        let top = match json!({"slots": 20, "tags": null,
                               "healthchecks": {"active": {"timeout": 2}}})
        {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        assert_eq!(
            Value::Object(merge(top, &bottom, &schema, None)),
            json!({"name": "u", "slots": 20, "tags": null,
                   "healthchecks": {"threshold": 0, "active": {"timeout": 2, "type": "http"}}})
        );
    }
}
