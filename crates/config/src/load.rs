//! Loading a declarative document into a [`Config`]:
//!
//! 1. top-level keys (`_format_version`, `_transform`, `_comment`, `_ignore`, entity arrays);
//!    1.1 and 2.1 documents are migrated to 3.0 (regex-looking route paths get `~`);
//! 2. nested entities are hoisted (a nested child's parent reference is filled in);
//! 3. ids are generated for entities given without one, with Kong's UUIDv5 rules;
//! 4. every entity is validated against its schema (plugins and vaults also against their
//!    own configuration schema), defaults filled;
//! 5. uniqueness and references are checked and resolved to ids;
//! 6. load-time transformations run (target default port, basic-auth password hashing,
//!    generated credential secrets, CA certificate digests).
//!
//! Every error is collected; none stops the others from being reported.

use std::collections::HashMap;

use rustc_hash::{FxHashMap, FxHashSet};

use serde_json::{Map, Value};
use uuid::Uuid;

use crate::config::Config;
use crate::entities::{EntityKind, normalize_target, schema};
use crate::error::{ConfigError, FlatError, FlattenedError, Invalid};
use crate::ids;
use crate::plugin::PluginRegistry;
use crate::schema::{Errors, FieldError, Fields, Input, Record, index_map_to_array};
use crate::{RouterFlavor, pki};

/// What loading depends on besides the document.
#[derive(Debug, Clone, Copy)]
pub struct LoadOptions<'a> {
    /// Router flavor: decides whether routes may carry `expression`/`priority`.
    pub router_flavor: RouterFlavor,
    /// Plugins the data plane implements.
    pub plugins: &'a PluginRegistry,
    /// Current time (Unix seconds) for CA expiry checks; `None` skips them.
    pub now_unix: Option<i64>,
}

/// Parses (JSON or YAML) and loads a document.
pub fn load_bytes(bytes: &[u8], opts: &LoadOptions<'_>) -> Result<Config, ConfigError> {
    if crate::parse::json_text(bytes).is_some() {
        if let Some(cfg) = crate::fast::try_load_json(bytes, opts) {
            return Ok(cfg);
        }
        // an error somewhere: parse it whole and report every error
        return load_reporting(crate::parse::parse_document(bytes)?, opts);
    }
    if let Some((text, options)) = crate::parse::yaml_text(bytes)
        && let Some(cfg) = crate::fast::try_load_yaml(text, options, opts)
    {
        return Ok(cfg);
    }
    load(crate::parse::parse_document(bytes)?, opts)
}

#[derive(Debug, Clone)]
enum Seg {
    Key(&'static str),
    Index(usize),
}

struct Raw {
    kind: EntityKind,
    /// The entity as given, nested children removed (kept for error reports).
    input: Map<String, Value>,
    path: Vec<Seg>,
    /// Index of the parent raw and the foreign-key field it fills, for nested entities.
    parent: Option<(usize, &'static str)>,
    values: Fields,
    errors: Errors,
    id: Option<Uuid>,
    /// The input carried a valid UUID `id` (Kong names a nested child's parent in an error
    /// report only then).
    id_given: bool,
}

/// Loads a parsed document.
pub fn load(doc: Value, opts: &LoadOptions<'_>) -> Result<Config, ConfigError> {
    // A valid document loads without ever holding every entity's validated values; any
    // error sends it through the reporting path below, which collects all of them.
    if let Some(cfg) = crate::fast::try_load(&doc, opts) {
        return Ok(cfg);
    }
    load_reporting(doc, opts)
}

/// Loads a document entity kind by kind, collecting every error.
pub(crate) fn load_reporting(doc: Value, opts: &LoadOptions<'_>) -> Result<Config, ConfigError> {
    let Value::Object(mut top) = doc else {
        return Err(ConfigError::Parse("expected an object".into()));
    };
    let mut top_errors = Errors::default();
    let migrate = match top.remove("_format_version") {
        None | Some(Value::Null) => {
            top_errors.field("_format_version", "required field missing");
            false
        }
        Some(Value::String(s)) if s == "3.0" => false,
        Some(Value::String(s)) if s == "1.1" || s == "2.1" => true,
        Some(Value::String(_)) => {
            top_errors.field("_format_version", "expected one of: 1.1, 2.1, 3.0");
            false
        }
        Some(_) => {
            top_errors.field("_format_version", "expected a string");
            false
        }
    };
    let transform = match top.remove("_transform") {
        None | Some(Value::Null) => true,
        Some(Value::Bool(b)) => b,
        Some(_) => {
            top_errors.field("_transform", "expected a boolean");
            true
        }
    };
    match top.remove("_comment") {
        None | Some(Value::Null) | Some(Value::String(_)) => {}
        Some(_) => top_errors.field("_comment", "expected a string"),
    }
    match top.remove("_ignore") {
        None | Some(Value::Null) | Some(Value::Array(_)) => {}
        Some(_) => top_errors.field("_ignore", "expected an array"),
    }
    let mut arrays: Vec<(EntityKind, Value)> = Vec::new();
    for (k, v) in top {
        match EntityKind::from_plural(&k) {
            Some(kind) => arrays.push((kind, v)),
            // (the object's keys are distinct, and the header's were taken out above: pushed,
            // not replacing one another, which costs a scan of the messages each)
            None => top_errors
                .fields
                .push((k, FieldError::Message("unknown field".into()))),
        }
    }
    arrays.sort_by_key(|(k, _)| *k);

    let mut st = State {
        raws: Vec::new(),
        top: Map::new(),
        migrate,
        opts,
    };
    for (kind, v) in arrays {
        st.collect(kind, v, vec![Seg::Key(kind.plural())], None);
    }
    st.generate_ids();
    st.validate_all();
    st.check_unique_and_resolve();
    st.transform(transform);
    st.finish(top_errors)
}

struct State<'o, 'a> {
    raws: Vec<Raw>,
    /// Errors at positions that are not entities (`expected a record`...).
    top: Map<String, Value>,
    migrate: bool,
    opts: &'o LoadOptions<'a>,
}

impl State<'_, '_> {
    fn collect(
        &mut self,
        kind: EntityKind,
        value: Value,
        path: Vec<Seg>,
        parent: Option<(usize, &'static str)>,
    ) {
        let Value::Array(items) = value else {
            insert_at(
                &mut self.top,
                &path,
                Value::String("expected an array".into()),
            );
            return;
        };
        for (i, item) in items.into_iter().enumerate() {
            let mut p = path.clone();
            p.push(Seg::Index(i));
            let item = match (kind, item) {
                // `certificates[].snis` may list plain names.
                (EntityKind::Sni, Value::String(s)) if parent.is_some() => {
                    let mut m = Map::new();
                    m.insert("name".into(), Value::String(s));
                    Value::Object(m)
                }
                (_, item) => item,
            };
            let Value::Object(mut m) = item else {
                insert_at(&mut self.top, &p, Value::String("expected a record".into()));
                continue;
            };
            let mut nested = Vec::new();
            for (child, fk) in kind.nested_children() {
                if let Some(v) = m.remove(child.plural()) {
                    nested.push((child, fk, v));
                }
            }
            let mut errors = Errors::default();
            if let Some((_, fk)) = parent
                && m.get(fk).is_some_and(|v| !v.is_null())
            {
                errors.field(fk, "value must be null");
            }
            normalize_input(kind, &mut m, &mut errors, self.migrate);
            let idx = self.raws.len();
            self.raws.push(Raw {
                kind,
                input: m,
                path: p.clone(),
                parent,
                values: Fields::new(),
                errors,
                id: None,
                id_given: false,
            });
            for (child, fk, v) in nested {
                let mut cp = p.clone();
                cp.push(Seg::Key(child.plural()));
                self.collect(child, v, cp, Some((idx, fk)));
            }
        }
    }

    fn generate_ids(&mut self) {
        let mut positions: HashMap<EntityKind, usize> = HashMap::new();
        for i in 0..self.raws.len() {
            let pos = {
                let n = positions.entry(self.raws[i].kind).or_default();
                *n += 1;
                *n - 1
            };
            let raw = &self.raws[i];
            if !raw.kind.has_id() {
                continue;
            }
            if let Some(v) = raw.input.get("id")
                && !v.is_null()
            {
                // validated later; a malformed id leaves the entity without one
                self.raws[i].id = v.as_str().and_then(|s| Uuid::try_parse(s).ok());
                self.raws[i].id_given = self.raws[i].id.is_some();
                continue;
            }
            let parent = raw.parent.map(|(p, fk)| (self.raws[p].id, fk));
            let id = ids::generate(raw.kind, &raw.input, parent, pos);
            self.raws[i].id = Some(id);
        }
        // fill nested parent references
        for i in 0..self.raws.len() {
            if let Some((p, fk)) = self.raws[i].parent {
                let pid = self.raws[p].id.unwrap_or(Uuid::nil());
                let mut r = Map::new();
                r.insert("id".into(), Value::String(pid.to_string()));
                self.raws[i].input.insert(fk.into(), Value::Object(r));
            }
        }
    }

    fn validate_all(&mut self) {
        let flavor = self.opts.router_flavor;
        let schemas: HashMap<EntityKind, Record> = EntityKind::ALL
            .iter()
            .map(|k| (*k, schema(*k, flavor)))
            .collect();
        let plugins = self.opts.plugins;
        let now = self.opts.now_unix;
        for raw in &mut self.raws {
            let (values, errors) = schemas[&raw.kind].validate(&raw.input);
            raw.values = values;
            merge_errors(&mut raw.errors, errors);
            post_validate(
                raw.kind,
                &raw.input,
                &mut raw.values,
                &mut raw.errors,
                plugins,
                now,
            );
            if raw.errors.is_empty() && raw.kind.has_id() {
                // the input is no longer needed: report from the validated values
                raw.input = Map::new();
            }
        }
    }

    fn check_unique_and_resolve(&mut self) {
        // ids and unique fields
        let n = self.raws.len();
        let mut by_id: FxHashMap<(EntityKind, Uuid), usize> = FxHashMap::default();
        by_id.reserve(n);
        let mut by_key: FxHashMap<(EntityKind, &str), Uuid> = FxHashMap::default();
        by_key.reserve(n);
        let mut uniques: FxHashSet<(EntityKind, &'static str, &str)> = FxHashSet::default();
        uniques.reserve(n);
        let schemas: HashMap<EntityKind, Vec<&'static str>> = EntityKind::ALL
            .iter()
            .map(|k| {
                let s = schema(*k, self.opts.router_flavor);
                (
                    *k,
                    s.fields
                        .iter()
                        .filter(|f| f.unique)
                        .map(|f| f.name)
                        .collect(),
                )
            })
            .collect();
        let mut errs: Vec<(usize, String)> = Vec::new();
        for (i, raw) in self.raws.iter().enumerate() {
            if let Some(id) = raw.id
                && by_id.insert((raw.kind, id), i).is_some()
            {
                errs.push((
                        i,
                        format!(
                            "uniqueness violation: '{}' entity with primary key set to '{id}' already declared",
                            raw.kind.plural()
                        ),
                    ));
            }
            for f in &schemas[&raw.kind] {
                if let Some(v) = raw.values.get(f).and_then(Value::as_str)
                    && !uniques.insert((raw.kind, f, v))
                {
                    errs.push((
                            i,
                            format!(
                                "uniqueness violation: '{}' entity with {f} set to '{v}' already declared",
                                raw.kind.plural()
                            ),
                        ));
                }
            }
        }
        for raw in &self.raws {
            if let (Some(ek), Some(id)) = (raw.kind.endpoint_key(), raw.id)
                && let Some(v) = raw.values.get(ek).and_then(Value::as_str)
            {
                by_key.entry((raw.kind, v)).or_insert(id);
            }
        }
        // references
        let mut resolved: Vec<(usize, &'static str, Uuid)> = Vec::new();
        for (i, raw) in self.raws.iter().enumerate() {
            for (fk, target) in raw.kind.foreign_keys() {
                let nested = raw.parent.is_some_and(|(_, f)| f == *fk);
                let Some(v) = raw.values.get(fk) else {
                    continue;
                };
                let found = match v {
                    Value::String(s) => by_key.get(&(*target, s.as_str())).copied().or_else(|| {
                        Uuid::try_parse(s)
                            .ok()
                            .filter(|id| by_id.contains_key(&(*target, *id)))
                    }),
                    Value::Object(o) => o
                        .get("id")
                        .and_then(Value::as_str)
                        .and_then(|s| Uuid::try_parse(s).ok())
                        .filter(|id| nested || by_id.contains_key(&(*target, *id))),
                    _ => None,
                };
                match found {
                    Some(id) => resolved.push((i, fk, id)),
                    None if nested => {}
                    None => {
                        let shown = match v {
                            Value::String(s) => s.clone(),
                            other => other.to_string(),
                        };
                        errs.push((
                            i,
                            format!(
                                "invalid reference '{fk}: {shown}' (no such entry in '{}')",
                                target.plural()
                            ),
                        ));
                    }
                }
            }
            if raw.kind == EntityKind::Service {
                for ca in raw
                    .values
                    .get("ca_certificates")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    let ok = ca
                        .as_str()
                        .and_then(|s| Uuid::try_parse(s).ok())
                        .is_some_and(|id| by_id.contains_key(&(EntityKind::CaCertificate, id)));
                    if !ok {
                        errs.push((
                            i,
                            format!(
                                "invalid reference 'ca_certificates: {}' (no such entry in 'ca_certificates')",
                                ca.as_str().unwrap_or_default()
                            ),
                        ));
                    }
                }
            }
        }
        drop(by_key);
        for (i, fk, id) in resolved {
            let mut r = Map::new();
            r.insert("id".into(), Value::String(id.to_string()));
            self.raws[i].values.insert(fk, Value::Object(r));
        }
        // plugin scope uniqueness (also when ids were given explicitly)
        let mut scopes: HashMap<String, Option<Uuid>> = HashMap::new();
        for (i, raw) in self
            .raws
            .iter()
            .enumerate()
            .filter(|(_, r)| r.kind == EntityKind::Plugin)
        {
            let part = |f: &str| {
                raw.values
                    .get(f)
                    .and_then(|v| v.get("id"))
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string()
            };
            let name = raw.values.get("name").and_then(Value::as_str).unwrap_or("");
            let key = format!(
                "{name}|{}|{}|{}|{}",
                part("route"),
                part("service"),
                part("consumer"),
                part("consumer_group")
            );
            // equal ids were already reported as a primary-key violation
            if scopes
                .insert(key, raw.id)
                .is_some_and(|prev| prev != raw.id)
            {
                errs.push((
                    i,
                    format!("uniqueness violation: 'plugins' entity with name set to '{name}' already declared for the same route, service, consumer and consumer group"),
                ));
            }
        }
        for (i, e) in errs {
            self.raws[i].errors.entity(e);
        }
    }

    fn transform(&mut self, transform: bool) {
        if !transform {
            return;
        }
        for raw in &mut self.raws {
            if raw.kind != EntityKind::BasicauthCredential || !raw.errors.is_empty() {
                continue;
            }
            let consumer = raw
                .values
                .get("consumer")
                .and_then(|v| v.get("id"))
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            if let Some(Value::String(p)) = raw.values.get_mut("password") {
                *p = ids::basicauth_hash(p, &consumer);
            }
        }
    }

    fn finish(mut self, top_errors: Errors) -> Result<Config, ConfigError> {
        let failed = !top_errors.is_empty()
            || !self.top.is_empty()
            || self.raws.iter().any(|r| !r.errors.is_empty());
        if failed {
            return Err(self.into_error(top_errors));
        }
        let mut cfg = Config {
            transform: false,
            ..Config::default()
        };
        for raw in self.raws.drain(..) {
            let mut values = raw.values;
            if let Some(id) = raw.id {
                values.insert("id", Value::String(id.to_string()));
            }
            let res = push_typed(&mut cfg, raw.kind, values);
            if let Err(e) = res {
                let mut inv = Invalid::default();
                inv.top_level
                    .insert("error".into(), Value::String(format!("internal: {e}")));
                inv.fields = inv.top_level.clone();
                return Err(ConfigError::Invalid(Box::new(inv)));
            }
        }
        Ok(cfg)
    }

    fn into_error(self, top_errors: Errors) -> ConfigError {
        let mut fields = Map::new();
        let mut top_level = Map::new();
        if let Value::Object(m) = top_errors.to_json() {
            for (k, v) in m {
                fields.insert(k.clone(), v.clone());
                top_level.insert(k, v);
            }
        }
        for (k, v) in &self.top {
            merge_json(&mut fields, k, v.clone());
            merge_json(&mut top_level, k, v.clone());
        }
        for raw in &self.raws {
            if raw.errors.is_empty() {
                continue;
            }
            if let Value::Object(m) = raw.errors.to_json() {
                insert_at(&mut fields, &raw.path, Value::Object(m));
            }
        }
        let order = self.kong_order();
        let mut entry_of = vec![usize::MAX; self.raws.len()];
        for (n, &i) in order.iter().enumerate() {
            entry_of[i] = n;
        }
        let flattened = order
            .iter()
            .map(|&i| self.flattened_entry(&self.raws[i]))
            .collect();
        // (people's reports: the entities and their errors as the document has them)
        let in_document_order = self
            .raws
            .iter()
            .enumerate()
            .filter(|(_, raw)| !raw.errors.is_empty())
            .map(|(i, raw)| {
                (
                    entry_of[i],
                    flat_errors(raw.errors.flatten_in_document_order()),
                )
            })
            .collect();
        let fields = arrays_from_index_maps(fields);
        let top_level = arrays_from_index_maps(top_level);
        ConfigError::Invalid(Box::new(Invalid {
            fields,
            top_level,
            flattened,
            in_document_order,
        }))
    }

    /// The entities with errors (indices into `raws`), in the order of Kong's
    /// `flattened_errors` (`flatten_errors` and `add_entity_errors` in `kong/db/errors.lua`):
    ///
    /// 1. the document's entity sections (`services`, `consumers`...) by their names, in
    ///    descending byte order: Kong's `drain` sorts a table's keys, then pops them off the
    ///    end of the sorted list;
    /// 2. within a section, the entities by their position, descending (`drain` again);
    /// 3. an entity's nested children (a service's `routes`, a consumer's
    ///    `keyauth_credentials`...) before the entity itself, each kind of children by
    ///    position, ascending (`for i = 1, #field_value`), and each child's own children
    ///    before it.
    ///
    /// Kong takes the kinds of an entity's children in the order of its `relationships`
    /// table, built from `pairs(kong.db.daos)`, the iteration of a Lua hash: no order Kong
    /// defines or documents. Here they come in the order [`EntityKind::nested_children`]
    /// gives (the order of [`EntityKind::ALL`]), the order they are read in.
    fn kong_order(&self) -> Vec<usize> {
        let mut children: Vec<Vec<usize>> = vec![Vec::new(); self.raws.len()];
        let mut top = Vec::new();
        // (a parent is read before its children, a kind of children in the order of their
        // positions: each list is in the order wanted)
        for (i, raw) in self.raws.iter().enumerate() {
            match raw.parent {
                Some((p, _)) => children[p].push(i),
                None => top.push(i),
            }
        }
        let section = |i: usize| match self.raws[i].path.as_slice() {
            [Seg::Key(k), Seg::Index(pos), ..] => (*k, *pos),
            _ => ("", 0),
        };
        top.sort_by(|&a, &b| {
            let (sa, pa) = section(a);
            let (sb, pb) = section(b);
            sb.cmp(sa).then(pb.cmp(&pa))
        });
        fn visit(raws: &[Raw], children: &[Vec<usize>], i: usize, out: &mut Vec<usize>) {
            for &c in &children[i] {
                visit(raws, children, c, out);
            }
            if !raws[i].errors.is_empty() {
                out.push(i);
            }
        }
        let mut out = Vec::new();
        for i in top {
            visit(&self.raws, &children, i, &mut out);
        }
        out
    }

    fn flattened_entry(&self, raw: &Raw) -> FlattenedError {
        let values;
        let source = if raw.input.is_empty() {
            values = raw.values.to_map();
            &values
        } else {
            &raw.input
        };
        // (readable reports name an entity by its endpoint key)
        let key = raw
            .kind
            .endpoint_key()
            .and_then(|k| source.get(k))
            .or_else(|| {
                if raw.kind == EntityKind::Plugin {
                    source.get("name")
                } else {
                    None
                }
            })
            .and_then(Value::as_str)
            .map(str::to_string);
        let mut entity = source.clone();
        if let (Some(id), false) = (raw.id, entity.contains_key("id"))
            && raw.input.is_empty()
        {
            entity.insert("id".into(), Value::String(id.to_string()));
        }
        // Kong adds the parent's primary key to a hoisted child only when the parent came
        // with a valid `id` (`errors.lua`: `make_pk`).
        if let Some((p, fk)) = raw.parent
            && !self.raws[p].id_given
            && !raw.input.is_empty()
        {
            entity.remove(fk);
        }
        // Kong's identity of an entry (`declarative_config_flattened`): `entity_name` is
        // the `name` field when it is a non-empty string (whatever the endpoint key),
        // `entity_id` the `id` when it is a valid UUID, `entity_tags` the tags when they
        // are all strings; each is left out otherwise.
        let entity_name = entity
            .get("name")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .map(str::to_string);
        let entity_id = entity
            .get("id")
            .and_then(Value::as_str)
            .filter(|id| {
                Uuid::try_parse(id)
                    .is_ok_and(|u| u.hyphenated().to_string() == id.to_ascii_lowercase())
            })
            .map(str::to_string);
        let entity_tags = entity.get("tags").and_then(Value::as_array).and_then(|a| {
            a.iter()
                .map(|t| t.as_str().map(str::to_string))
                .collect::<Option<Vec<String>>>()
        });
        let errors = flat_errors(raw.errors.flatten());
        FlattenedError {
            entity_type: raw.kind.singular().to_string(),
            entity_name,
            entity_id,
            entity_tags,
            entity: Value::Object(entity),
            errors,
            key,
        }
    }
}

/// `flattened_errors` entries' errors of an entity's `(field path, message)` pairs: `field`
/// ones with their path, `entity` ones (no path) without.
fn flat_errors(pairs: Vec<(Option<String>, String)>) -> Vec<FlatError> {
    pairs
        .into_iter()
        .map(|(field, message)| FlatError {
            kind: if field.is_some() { "field" } else { "entity" }.into(),
            field,
            message,
        })
        .collect()
}

/// Whether a route's subschema is gRPC's: its first protocol (Kong picks the subschema by
/// it) is `grpc` or `grpcs`; its `strip_path` then defaults to false.
/// (`protocols` given as one string, which the set's check refuses, still picks it.)
pub(crate) fn grpc_subschema(protocols: Option<&Value>) -> bool {
    let first = match protocols {
        Some(Value::String(p)) => Some(p.as_str()),
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_str)
            .find(|p| crate::typedefs::PROTOCOLS.contains(p)),
        _ => None,
    };
    first.is_some_and(|p| matches!(p, "grpc" | "grpcs"))
}

/// Whether an upstream's `hash_on` hashes (its `algorithm` then defaults to
/// `consistent-hashing`).
pub(crate) fn hashes(hash_on: Option<&Value>) -> bool {
    hash_on.and_then(Value::as_str).is_some_and(|h| h != "none")
}

/// Expands an entity's shorthand fields (Kong's `shorthand_fields`: a service's `url`) into
/// the fields they stand for, as Kong's `process_auto_fields` does before anything is
/// validated; the errors are the shorthands' own (Kong reports them alone, as a schema
/// violation, before it looks at anything else). Whatever else the input holds is left as
/// it is.
pub fn expand_shorthands(kind: EntityKind, m: &mut Map<String, Value>) -> Errors {
    let mut errors = Errors::default();
    if kind == EntityKind::Service
        && let Some(url) = m.remove("url")
    {
        match url.as_str().map(expand_url) {
            Some(Ok(parts)) => {
                for (k, v) in parts {
                    m.insert(k.into(), v);
                }
            }
            Some(Err(e)) => errors.field("url", e),
            None if url.is_null() => {}
            None => errors.field("url", "expected a string"),
        }
    }
    errors
}

/// Shorthands and input-dependent defaults, applied before validation (`migrate`: the
/// document is of format 1.1 or 2.1, whose regex route paths get `~`).
fn normalize_input(
    kind: EntityKind,
    m: &mut Map<String, Value>,
    errors: &mut Errors,
    migrate: bool,
) {
    merge_errors(errors, expand_shorthands(kind, m));
    match kind {
        EntityKind::Route => {
            if migrate && let Some(Value::Array(paths)) = m.get_mut("paths") {
                for p in paths.iter_mut() {
                    if let Value::String(s) = p
                        && !s.starts_with('~')
                    {
                        *s = crate::uri::migrate_path(s);
                    }
                }
            }
            if grpc_subschema(m.get("protocols")) && !m.contains_key("strip_path") {
                m.insert("strip_path".into(), Value::Bool(false));
            }
        }
        EntityKind::Upstream => {
            let algorithm = m
                .get("algorithm")
                .and_then(Value::as_str)
                .map(str::to_string);
            match algorithm.as_deref() {
                None if hashes(m.get("hash_on")) => {
                    m.insert("algorithm".into(), "consistent-hashing".into());
                }
                Some("least-connections" | "latency" | "round-robin") => {
                    m.remove("hash_on");
                    m.remove("hash_fallback");
                }
                _ => {}
            }
        }
        _ => {}
    }
}

/// Validates one entity as Kong's `POST /schemas/{entity}/validate` does: the same rules as
/// a declarative document's entity (shorthands such as a service's `url`, the entity schema
/// and its checks, plugin and vault configurations), without uniqueness or references to
/// other entities. The errors are empty when the entity is valid.
pub fn validate_entity(
    kind: EntityKind,
    input: &Map<String, Value>,
    opts: &LoadOptions<'_>,
) -> Errors {
    let mut m = input.clone();
    let mut errors = Errors::default();
    normalize_input(kind, &mut m, &mut errors, false);
    let checked = schema(kind, opts.router_flavor).validate(&m);
    past_schema(kind, &m, checked, errors, opts)
}

/// Validates a partial entity as Kong's `validate_update` does (its `full_check` off), for
/// an admin API update (`PATCH`): each field given is validated, and a required one given
/// as `null` is missing, but a field left out is neither filled with its default nor
/// missing; an entity check runs only when one of its fields is given, a field it needs that
/// is left out is `field required for entity check when updating`, and the messages of
/// `at_least_one_of` (and a `conditional_at_least_one_of` without its own) begin with
/// `when updating, `. Shorthands are expanded first ([`expand_shorthands`]), with no other
/// input-dependent default. Plugin and vault configurations are checked as
/// [`validate_entity`] checks them, when the entity names its plugin or vault. Kong merges
/// an update into the entity it reads first (for most kinds): validating that merge checks
/// the whole entity with these rules. No uniqueness, no reference to another entity.
pub fn validate_entity_update(
    kind: EntityKind,
    input: &Map<String, Value>,
    opts: &LoadOptions<'_>,
) -> Errors {
    let mut m = input.clone();
    let errors = expand_shorthands(kind, &mut m);
    let checked = schema(kind, opts.router_flavor).validate_update(&m);
    past_schema(kind, &m, checked, errors, opts)
}

/// The last steps of [`validate_entity`] and [`validate_entity_update`]: the schema's
/// errors (`checked`, with the values it read) joined to those found before it, then the
/// checks past the schema ([`post_validate`]).
fn past_schema(
    kind: EntityKind,
    input: &Map<String, Value>,
    checked: (Fields, Errors),
    mut errors: Errors,
    opts: &LoadOptions<'_>,
) -> Errors {
    let (mut values, e) = checked;
    merge_errors(&mut errors, e);
    post_validate(
        kind,
        input,
        &mut values,
        &mut errors,
        opts.plugins,
        opts.now_unix,
    );
    errors
}

/// The schema of a vault type's `config` ([`crate::VAULT_TYPES`]); `None` for a type the
/// data plane does not implement.
pub fn vault_config_schema(name: &str) -> Option<Record> {
    match name {
        "env" => Some(Record::new(vec![
            crate::schema::Field::string("prefix").check_str(|s| {
                let mut cs = s.chars();
                let first_ok = cs
                    .next()
                    .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == '-');
                if first_ok && cs.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
                    Ok(())
                } else {
                    Err(format!("invalid value: {s}"))
                }
            }),
        ])),
        _ => None,
    }
}

/// Validation past the entity schema: plugin and vault configurations, CA certificate
/// digests, target default ports, generated secrets.
pub(crate) fn post_validate<I: Input + ?Sized>(
    kind: EntityKind,
    input: &I,
    values: &mut Fields,
    errors: &mut Errors,
    plugins: &PluginRegistry,
    now: Option<i64>,
) {
    match kind {
        EntityKind::Plugin => validate_plugin(input, values, errors, plugins),
        EntityKind::Vault => validate_vault(input, values, errors),
        EntityKind::CaCertificate => {
            if let Some(cert) = values.get("cert").and_then(Value::as_str) {
                match pki::check_ca_certificate(cert, now) {
                    Ok(digest) => {
                        values.insert("cert_digest", Value::String(digest));
                    }
                    Err(e) => errors.field("cert", e),
                }
            }
        }
        EntityKind::Target => {
            if let Some(Value::String(t)) = values.get_mut("target") {
                *t = normalize_target(t);
            }
        }
        _ => {}
    }
    for f in kind.auto_fields() {
        if !values.contains_key(f) {
            values.insert(f, Value::String(ids::random_secret()));
        }
    }
}

fn validate_plugin<I: Input + ?Sized>(
    input: &I,
    values: &mut Fields,
    errors: &mut Errors,
    plugins: &PluginRegistry,
) {
    let Some(name) = values.get("name").and_then(Value::as_str) else {
        return;
    };
    let Some(schema) = plugins.get(name) else {
        errors.field(
            "name",
            format!("plugin '{name}' not enabled; add it to the 'plugins' configuration property"),
        );
        return;
    };
    let input = match input.get("config") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m.clone(),
        Some(_) => {
            errors.field("config", "expected a record");
            return;
        }
    };
    let (config, config_errors) = schema.config.validate(&input);
    if !config_errors.is_empty() {
        errors.fields.retain(|(n, _)| n != "config");
        errors
            .fields
            .push(("config".into(), FieldError::Nested(config_errors)));
    }
    values.insert("config", Value::Object(config.into_map()));
    if let Some(Value::Array(ps)) = values.get("protocols") {
        let mut e = Errors::positions();
        for (i, p) in ps.iter().enumerate() {
            if let Some(p) = p.as_str()
                && !schema.protocols.contains(&p)
            {
                e.field(
                    (i + 1).to_string(),
                    format!("expected one of: {}", schema.protocols.join(", ")),
                );
            }
        }
        if !e.is_empty() {
            errors
                .fields
                .push(("protocols".into(), FieldError::Nested(e)));
        }
    }
    for (flag, field) in [
        (schema.no_consumer, "consumer"),
        (schema.no_route, "route"),
        (schema.no_service, "service"),
    ] {
        if flag && values.get(field).is_some_and(|v| !v.is_null()) {
            errors.field(field, "value must be null");
        }
    }
}

fn validate_vault<I: Input + ?Sized>(input: &I, values: &mut Fields, errors: &mut Errors) {
    let Some(name) = values.get("name").and_then(Value::as_str) else {
        return;
    };
    let Some(record) = vault_config_schema(name) else {
        errors.field("name", format!("vault '{name}' is not installed"));
        return;
    };
    let input = match input.get("config") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m.clone(),
        Some(_) => {
            errors.field("config", "expected a record");
            return;
        }
    };
    let (config, config_errors) = record.validate(&input);
    if !config_errors.is_empty() {
        errors
            .fields
            .push(("config".into(), FieldError::Nested(config_errors)));
    }
    values.insert("config", Value::Object(config.into_map()));
}

pub(crate) fn push_typed(
    cfg: &mut Config,
    kind: EntityKind,
    v: Fields,
) -> Result<(), serde_json::Error> {
    fn f<T: serde::de::DeserializeOwned>(v: Fields) -> Result<T, serde_json::Error> {
        v.deserialize()
    }
    match kind {
        EntityKind::Vault => cfg.vaults.push(f(v)?),
        EntityKind::Certificate => cfg.certificates.push(f(v)?),
        EntityKind::CaCertificate => cfg.ca_certificates.push(f(v)?),
        EntityKind::Sni => cfg.snis.push(f(v)?),
        EntityKind::Consumer => cfg.consumers.push(f(v)?),
        EntityKind::ConsumerGroup => cfg.consumer_groups.push(f(v)?),
        EntityKind::ConsumerGroupConsumer => cfg.consumer_group_consumers.push(f(v)?),
        EntityKind::Service => cfg.services.push(f(v)?),
        EntityKind::Route => cfg.routes.push(f(v)?),
        EntityKind::Upstream => cfg.upstreams.push(f(v)?),
        EntityKind::Target => cfg.targets.push(f(v)?),
        EntityKind::Plugin => cfg.plugins.push(f(v)?),
        EntityKind::KeyauthCredential => cfg.keyauth_credentials.push(f(v)?),
        EntityKind::BasicauthCredential => cfg.basicauth_credentials.push(f(v)?),
        EntityKind::JwtSecret => cfg.jwt_secrets.push(f(v)?),
        EntityKind::Acl => cfg.acls.push(f(v)?),
        EntityKind::HmacauthCredential => cfg.hmacauth_credentials.push(f(v)?),
        EntityKind::KeySet => cfg.key_sets.push(f(v)?),
        EntityKind::Key => cfg.keys.push(f(v)?),
    }
    Ok(())
}

/// Expands a service `url` into protocol, host, port and path.
pub(crate) fn expand_url(url: &str) -> Result<Vec<(&'static str, Value)>, String> {
    let bad = || format!("invalid url: {url}");
    let (scheme, rest) = url.split_once("://").ok_or_else(bad)?;
    let scheme = scheme.to_ascii_lowercase();
    if !crate::typedefs::SERVICE_PROTOCOLS.contains(&scheme.as_str()) {
        return Err(bad());
    }
    // As LuaSocket's `url.parse` splits it for Kong's shorthand: the authority runs to the
    // first `/`, without its user information (up to the first `@`); the path loses its
    // `#fragment`, then its `?query`, then its `;params`, and is left out when nothing is
    // left of it.
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], Some(&rest[i..])),
        None => (rest, None),
    };
    let authority = authority.split_once('@').map_or(authority, |(_, a)| a);
    let path = path
        .map(|p| p.split('#').next().unwrap_or(p))
        .map(|p| p.split('?').next().unwrap_or(p))
        .map(|p| p.split(';').next().unwrap_or(p))
        .filter(|p| !p.is_empty());
    let hp = crate::typedefs::split_host_port(authority).map_err(|_| bad())?;
    // (Kong's shorthand gives 80 and 443 to `http` and `https` only, else the schema's
    // default, 80: `grpcs://` and `tls://` come to port 80; `wss` as Kong Enterprise's)
    let default_port = match scheme.as_str() {
        "https" | "wss" => 443,
        _ => 80,
    };
    let mut out = vec![
        ("protocol", Value::String(scheme.clone())),
        ("host", Value::String(hp.host.to_string())),
        ("port", Value::from(hp.port.unwrap_or(default_port))),
    ];
    if let Some(p) = path {
        out.push(("path", Value::String(p.to_string())));
    }
    Ok(out)
}

/// Adds `from`'s errors to `into`'s; a field's first error stays.
fn merge_errors(into: &mut Errors, from: Errors) {
    into.entity.extend(from.entity);
    // a scan of the fields so far for each field while they are few; a set of their names
    // when many (a scan each is quadratic: an entity may have thousands of unknown fields;
    // randomly keyed hashing, as the names are the input's)
    if into.fields.len() + from.fields.len() <= 32 {
        for (k, e) in from.fields {
            if !into.has_field(&k) {
                into.fields.push((k, e));
            }
        }
        return;
    }
    let mut seen: std::collections::HashSet<String> =
        into.fields.iter().map(|(k, _)| k.clone()).collect();
    for (k, e) in from.fields {
        if seen.insert(k.clone()) {
            into.fields.push((k, e));
        }
    }
}

fn seg_key(s: &Seg) -> String {
    match s {
        Seg::Key(k) => (*k).to_string(),
        Seg::Index(i) => (i + 1).to_string(),
    }
}

/// Inserts `v` at `path` in a tree of objects (indices as 1-based keys), merging objects.
fn insert_at(root: &mut Map<String, Value>, path: &[Seg], v: Value) {
    let Some((last, init)) = path.split_last() else {
        return;
    };
    let mut node = root;
    for s in init {
        let entry = node
            .entry(seg_key(s))
            .or_insert_with(|| Value::Object(Map::new()));
        if !entry.is_object() {
            *entry = Value::Object(Map::new());
        }
        let Value::Object(m) = entry else { return };
        node = m;
    }
    merge_json(node, &seg_key(last), v);
}

fn merge_json(node: &mut Map<String, Value>, key: &str, v: Value) {
    match (node.get_mut(key), v) {
        (Some(Value::Object(existing)), Value::Object(new)) => {
            for (k, v) in new {
                merge_json(existing, &k, v);
            }
        }
        (_, v) => {
            node.insert(key.to_string(), v);
        }
    }
}

fn arrays_from_index_maps(m: Map<String, Value>) -> Map<String, Value> {
    fn conv(v: Value) -> Value {
        match v {
            Value::Object(m) => {
                let m: Map<String, Value> = m.into_iter().map(|(k, v)| (k, conv(v))).collect();
                index_map_to_array(m)
            }
            other => other,
        }
    }
    m.into_iter().map(|(k, v)| (k, conv(v))).collect()
}
