//! The load path for valid documents: each entity goes input → validated → typed as soon as
//! it is read, so validated values never coexist for all entities. A parsed document is only
//! borrowed; a JSON document is parsed one top-level entity at a time ([`try_load_json`]),
//! so its whole value tree never exists either: each entity object is read into a plain list
//! of entries ([`Entity`]) rather than a hashed JSON map, its nested entity arrays too.
//!
//! It runs the same checks as the reporting path in [`crate::load`] (the same schemas, the
//! same normalisation, the same id, uniqueness and reference rules) but stops at the first
//! problem: [`try_load`] returns `None` on any error, and the caller then runs the reporting
//! path, which collects every error in Kong's shape. For a valid document both paths build
//! the same [`Config`] (`tests` below compare them).

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, hash_map::Entry};
use std::fmt;
use std::sync::Arc;

use rustc_hash::{FxHashMap, FxHashSet};
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::RouterFlavor;
use crate::config::Config;
use crate::direct::{self, Direct, Typed};
use crate::entities::{EntityKind, Healthchecks, schema};
use crate::ids;
use crate::load::{LoadOptions, expand_url, post_validate, push_typed};
use crate::schema::{Errors, Fields, Input, Overlay, Record};

const KINDS: usize = EntityKind::ALL.len();

fn ix(k: EntityKind) -> usize {
    k as usize
}

/// Loads a document that has no error; `None` when there is any (or anything unusual).
pub(crate) fn try_load(doc: &Value, opts: &LoadOptions<'_>) -> Option<Config> {
    let Value::Object(top) = doc else {
        return None;
    };
    let mut arrays: Vec<(EntityKind, &Value)> = Vec::new();
    for (k, v) in top {
        if !is_header_key(k) {
            arrays.push((EntityKind::from_plural(k)?, v));
        }
    }
    arrays.sort_by_key(|(k, _)| *k);
    let (migrate, transform) = header(top)?;
    let mut st = Fast::new(opts, migrate);
    for (kind, v) in arrays {
        st.collect(kind, v, None)?;
    }
    st.finish(transform)
}

/// Loads a JSON document (`{...}` after an optional BOM and whitespace) without building its
/// value tree: top-level entities are parsed and loaded one at a time. `None` when the
/// document has any error, or is not read this way.
pub(crate) fn try_load_json(bytes: &[u8], opts: &LoadOptions<'_>) -> Option<Config> {
    let text = std::str::from_utf8(crate::parse::json_text(bytes)?).ok()?;
    let mut one = OnePass::new(opts, estimate_entities(text));
    let mut de = serde_json::Deserializer::from_str(text);
    let loaded = de::Deserializer::deserialize_map(&mut de, &mut one).and_then(|()| de.end());
    match (loaded, one.unusual) {
        (Ok(()), _) => one.finish(),
        (Err(_), false) => None,
        (Err(_), true) => try_load_json_in_order(text, opts),
    }
}

/// [`try_load_json`] for a YAML document, read with the YAML parser's `options` (the limits of
/// a whole parse of the document): top-level entities are read and loaded one at a time, the
/// values of an entity as a whole parse would give them. `None` when the document has any
/// error, or is not read this way (top-level keys in another order: the caller then parses it
/// whole).
pub(crate) fn try_load_yaml(
    text: &str,
    options: serde_saphyr::Options,
    opts: &LoadOptions<'_>,
) -> Option<Config> {
    load_yaml(text, options, opts).0
}

/// [`try_load_yaml`], and whether the document was left to the caller as unusual.
fn load_yaml(
    text: &str,
    options: serde_saphyr::Options,
    opts: &LoadOptions<'_>,
) -> (Option<Config>, bool) {
    let mut one = OnePass::new(opts, estimate_yaml_entities(text));
    let loaded = serde_saphyr::with_deserializer_from_str_with_options(text, options, |d| {
        de::Deserializer::deserialize_map(d, &mut one)
    });
    match loaded {
        Ok(()) => (one.finish(), false),
        Err(_) => (None, one.unusual),
    }
}

/// The usual document read in one pass: its header keys first, then its entity arrays in
/// the order they are loaded in (each key once), each array loaded element by element as it
/// is read. Anything else is `unusual` (and read by [`try_load_json_in_order`]).
struct OnePass<'o, 'a> {
    opts: &'o LoadOptions<'a>,
    top: Map<String, Value>,
    /// Loading state, from the first entity array on.
    st: Option<Fast<'o, 'a>>,
    /// The kind of the last entity array.
    last: Option<EntityKind>,
    /// Whether reading stopped on an unusual document rather than an error.
    unusual: bool,
    /// About how many entities the document has (for reserving room).
    estimate: usize,
}

impl<'o, 'a> OnePass<'o, 'a> {
    fn new(opts: &'o LoadOptions<'a>, estimate: usize) -> Self {
        OnePass {
            opts,
            top: Map::new(),
            st: None,
            last: None,
            unusual: false,
            estimate,
        }
    }

    /// The configuration read, once the whole document is.
    fn finish(self) -> Option<Config> {
        let (migrate, transform) = header(&self.top)?;
        let st = match self.st {
            Some(st) => st,
            None => Fast::new(self.opts, migrate),
        };
        st.finish(transform)
    }

    /// Stops reading: the document is unusual, not wrong.
    fn unusual<E: de::Error>(&mut self) -> E {
        self.unusual = true;
        E::custom("unusual document")
    }
}

impl<'de> Visitor<'de> for &mut OnePass<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a declarative configuration")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(Key(key)) = map.next_key()? {
            if is_header_key(&key) {
                if self.st.is_some() || self.top.contains_key(key.as_ref()) {
                    return Err(self.unusual());
                }
                // the limits of one parse of the whole document: 127 nested levels
                let v: Value = map.next_value()?;
                if depth(&v) > 126 {
                    return Err(de::Error::custom("too deep"));
                }
                self.top.insert(key.into_owned(), v);
                continue;
            }
            let Some(kind) = EntityKind::from_plural(&key) else {
                return Err(de::Error::custom("unknown key"));
            };
            if self.last.is_some_and(|last| last >= kind) {
                return Err(self.unusual());
            }
            self.last = Some(kind);
            if self.st.is_none() {
                let Some((migrate, _)) = header(&self.top) else {
                    return Err(self.unusual());
                };
                let mut st = Fast::new(self.opts, migrate);
                // the arrays' sizes are not known yet: room for as many entities as the
                // document seems to have (untouched when too large)
                let n = self.estimate;
                st.ents.reserve(n);
                st.by_id.reserve(n);
                self.st = Some(st);
            }
            let Some(st) = self.st.as_mut() else {
                return Err(self.unusual());
            };
            // the array's size is not known either: the same room for its kind and the kinds
            // nested in it (capacity beyond what is used is never touched)
            let n = self.estimate;
            st.reserve(kind, n);
            for (child, _) in children_of(kind) {
                st.reserve(*child, n);
            }
            // name tables: grown step by step, each step a new table, so one at the outset
            for k in std::iter::once(kind).chain(children_of(kind).iter().map(|(c, _)| *c)) {
                if st.referenced[ix(k)] && st.by_key[ix(k)].capacity() == 0 {
                    st.by_key[ix(k)].reserve(n / 2);
                }
            }
            map.next_value_seed(ArraySeed { st, kind })?;
        }
        Ok(())
    }
}

/// A top-level entity array, loaded element by element.
struct ArraySeed<'s, 'o, 'a> {
    st: &'s mut Fast<'o, 'a>,
    kind: EntityKind,
}

impl<'de> DeserializeSeed<'de> for ArraySeed<'_, '_, '_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        // `any`, as a whole parse reads the value: a YAML parser may read other values as a
        // sequence when asked for one (`!!binary` as its bytes)
        d.deserialize_any(Elements {
            st: self.st,
            kind: self.kind,
        })
    }
}

/// [`try_load_json`] for any document: top-level keys read first (the last of repeated keys
/// wins), arrays then loaded in the order of their kinds.
fn try_load_json_in_order(text: &str, opts: &LoadOptions<'_>) -> Option<Config> {
    // Duplicate keys: the last one wins, as in a parsed `Value`.
    let raw: BTreeMap<String, &RawValue> = serde_json::from_str(text).ok()?;
    let mut top = Map::new();
    let mut arrays: Vec<(EntityKind, &RawValue)> = Vec::new();
    for (k, v) in raw {
        if is_header_key(&k) {
            // the limits of one parse of the whole document: 127 nested levels
            let v: Value = serde_json::from_str(v.get()).ok()?;
            if depth(&v) > 126 {
                return None;
            }
            top.insert(k, v);
        } else {
            arrays.push((EntityKind::from_plural(&k)?, v));
        }
    }
    arrays.sort_by_key(|(k, _)| *k);
    let (migrate, transform) = header(&top)?;
    let mut st = Fast::new(opts, migrate);
    // Room for every array at once (a table grown array by array is rebuilt each time).
    let sizes: Vec<(EntityKind, usize)> = arrays
        .iter()
        .map(|(kind, v)| (*kind, estimate_entities(v.get())))
        .collect();
    st.reserve_arrays(&sizes);
    for (kind, v) in arrays {
        // Each element is loaded as soon as it is read: the array is never held.
        let mut de = serde_json::Deserializer::from_str(v.get());
        de::Deserializer::deserialize_seq(&mut de, Elements { st: &mut st, kind }).ok()?;
        de.end().ok()?;
    }
    st.finish(transform)
}

/// Loads the elements of a top-level array of `kind` entities one by one; fails at the first
/// element that is not loaded.
struct Elements<'s, 'o, 'a> {
    st: &'s mut Fast<'o, 'a>,
    kind: EntityKind,
}

impl<'de> Visitor<'de> for Elements<'_, '_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of entities")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(item) = seq.next_element_seed(ItemSeed(self.kind))? {
            if item.depth() > MAX_ITEM_DEPTH || self.st.parsed_item(self.kind, item, None).is_none()
            {
                return Err(de::Error::custom("not loaded"));
            }
        }
        Ok(())
    }
}

/// A guess at the number of entities in a JSON array of entities, for reserving room: its
/// objects (a quick count of `{`), which the usual entity, one object with nested entity
/// objects, does not overestimate by much. At most one per [`MIN_ENTITY_BYTES`] of text,
/// so that braces inside strings cannot make it reserve much more than the text's size.
fn estimate_entities(text: &str) -> usize {
    let braces = text.bytes().filter(|&b| b == b'{').count();
    braces.min(text.len() / MIN_ENTITY_BYTES)
}

/// Fewer bytes than the usual entity takes (the benchmark's average is 100): the most
/// entities a text is guessed to hold is its size divided by this. A larger document only
/// grows its tables as it loads.
const MIN_ENTITY_BYTES: usize = 32;

/// [`estimate_entities`] for YAML: the block mappings that are sequence items (`- key: ...`)
/// and the flow mappings.
fn estimate_yaml_entities(text: &str) -> usize {
    let block = text
        .lines()
        .filter(|l| {
            let t = l.trim_start();
            t.starts_with("- ") && (t.contains(": ") || t.ends_with(':'))
        })
        .count();
    (block + estimate_entities(text)).min(text.len() / MIN_ENTITY_BYTES)
}

/// The nesting limit of one parse of a whole document, for an element of a top-level array:
/// an element deeper than this would have failed that parse.
const MAX_ITEM_DEPTH: usize = 125;

/// An element of an entity array as read from JSON.
enum Item<'de> {
    /// An object.
    Entity(Entity<'de>),
    /// A string (`certificates[].snis` may list plain names).
    Name(String),
}

impl Item<'_> {
    /// Nesting depth, as [`depth`] counts it for the same JSON.
    fn depth(&self) -> usize {
        match self {
            Item::Entity(e) => e.depth(),
            Item::Name(_) => 0,
        }
    }
}

/// An entity object as read from JSON: its entries in document order (a repeated key
/// replaces the earlier value in place, as in a parsed object), and the arrays of the
/// entities nested in it, read as entities too.
struct Entity<'de> {
    entries: Entries<'de>,
    /// Nested entity arrays: (index in the kind's nested children, elements).
    nested: Vec<(usize, Vec<Item<'de>>)>,
}

impl Entity<'_> {
    fn depth(&self) -> usize {
        let values = self.entries.0.iter().map(|(_, v)| depth(v));
        let nested = self
            .nested
            .iter()
            .map(|(_, items)| 1 + items.iter().map(Item::depth).max().unwrap_or(0));
        1 + values.chain(nested).max().unwrap_or(0)
    }
}

/// The keys and values of an object, in order; keys borrow from the document when they can.
struct Entries<'de>(Vec<(Cow<'de, str>, Value)>);

impl Input for Entries<'_> {
    fn get(&self, key: &str) -> Option<&Value> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }
    fn entries(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.0.iter().map(|(k, v)| (k.as_ref(), v))
    }
}

/// An entity's input as the loader holds it: read by the checks that precede validation,
/// then validated, which moves the values out of owned input.
trait Source: Input {
    /// [`Record::validate_overlay`] of the input; `None` on any error. Owned input is left
    /// empty.
    fn validate(&mut self, schema: &Record, overlay: &Overlay<'_>) -> Option<Fields>;
    /// The entity typed straight from its entries ([`crate::direct`]) when they are of a
    /// shape that path takes: `None` when they are not (the input is left as it is),
    /// `Some(None)` when a value is invalid.
    fn typed(&mut self, _path: &TypedPath<'_>) -> Option<Option<Typed>> {
        None
    }
}

impl Source for Entries<'_> {
    fn validate(&mut self, schema: &Record, overlay: &Overlay<'_>) -> Option<Fields> {
        schema.validate_moving(std::mem::take(&mut self.0), overlay)
    }
    fn typed(&mut self, path: &TypedPath<'_>) -> Option<Option<Typed>> {
        if !direct::supported(path.kind, &self.0, path.nested, path.flavor) {
            return None;
        }
        let entries = std::mem::take(&mut self.0);
        Some(path.direct.build(path.schema, path.index, entries, path.id))
    }
}

/// What [`Source::typed`] needs to type an entity on the typed path.
struct TypedPath<'a> {
    kind: EntityKind,
    /// Whether the entity is nested in its parent.
    nested: bool,
    flavor: RouterFlavor,
    direct: &'a Direct,
    schema: &'a Record,
    index: &'a FxHashMap<&'static str, usize>,
    id: Uuid,
}

/// A parsed object, borrowed: validation copies its values.
struct Borrowed<'a>(&'a Map<String, Value>);

impl Input for Borrowed<'_> {
    fn get(&self, key: &str) -> Option<&Value> {
        self.0.get(key)
    }
    fn entries(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v))
    }
}

impl Source for Borrowed<'_> {
    fn validate(&mut self, schema: &Record, overlay: &Overlay<'_>) -> Option<Fields> {
        let (values, errors) = schema.validate_overlay(self.0, overlay);
        errors.is_empty().then_some(values)
    }
}

/// The nested children of each kind (indexed by kind), with their foreign-key fields.
fn children_of(kind: EntityKind) -> &'static [(EntityKind, &'static str)] {
    static TABLE: std::sync::OnceLock<Vec<Vec<(EntityKind, &'static str)>>> =
        std::sync::OnceLock::new();
    &TABLE.get_or_init(|| {
        EntityKind::ALL
            .iter()
            .map(|k| k.nested_children().collect())
            .collect()
    })[ix(kind)]
}

/// Reads one element of an array of `kind` entities.
#[derive(Clone, Copy)]
struct ItemSeed(EntityKind);

impl<'de> DeserializeSeed<'de> for ItemSeed {
    type Value = Item<'de>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Item<'de>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ItemSeed {
    type Value = Item<'de>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an entity")
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<Item<'de>, E> {
        Ok(Item::Name(s.to_string()))
    }
    fn visit_string<E: de::Error>(self, s: String) -> Result<Item<'de>, E> {
        Ok(Item::Name(s))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Item<'de>, A::Error> {
        let children = children_of(self.0);
        let mut e = Entity {
            entries: Entries(Vec::with_capacity(16)),
            nested: Vec::new(),
        };
        while let Some(Key(key)) = map.next_key()? {
            match children.iter().position(|(c, _)| c.plural() == key) {
                Some(i) => {
                    let items = map.next_value_seed(Children(children[i].0))?;
                    e.set_nested(i, items);
                }
                None => {
                    let v: Value = map.next_value()?;
                    // a repeated key replaces the value
                    match e.entries.0.iter_mut().find(|(k, _)| *k == key) {
                        Some((_, old)) => *old = v,
                        None => e.entries.0.push((key, v)),
                    }
                    // a scan of the keys for each key is quadratic in a large object
                    if e.entries.0.len() >= SCAN_MAX_KEYS {
                        return visit_large_entity(map, children, e);
                    }
                }
            }
        }
        Ok(Item::Entity(e))
    }
}

impl<'de> Entity<'de> {
    /// Sets the nested entities of child kind `i` (replacing those given before).
    fn set_nested(&mut self, i: usize, items: Vec<Item<'de>>) {
        match self.nested.iter_mut().find(|(j, _)| *j == i) {
            Some((_, old)) => *old = items,
            None => self.nested.push((i, items)),
        }
    }
}

/// The rest of an entity object with many keys (`e` has [`SCAN_MAX_KEYS`]): as
/// [`ItemSeed::visit_map`] reads it, with an index of the keys to find repeated ones.
#[inline(never)]
fn visit_large_entity<'de, A: MapAccess<'de>>(
    mut map: A,
    children: &[(EntityKind, &'static str)],
    mut e: Entity<'de>,
) -> Result<Item<'de>, A::Error> {
    let mut index: std::collections::HashMap<Cow<'de, str>, usize> = (e.entries.0.iter())
        .enumerate()
        .map(|(i, (k, _))| (k.clone(), i))
        .collect();
    while let Some(Key(key)) = map.next_key()? {
        match children.iter().position(|(c, _)| c.plural() == key) {
            Some(i) => {
                let items = map.next_value_seed(Children(children[i].0))?;
                e.set_nested(i, items);
            }
            None => {
                let v: Value = map.next_value()?;
                match index
                    .get(key.as_ref())
                    .and_then(|i| e.entries.0.get_mut(*i))
                {
                    Some((_, old)) => *old = v,
                    None => {
                        index.insert(key.clone(), e.entries.0.len());
                        e.entries.0.push((key, v));
                    }
                }
            }
        }
    }
    Ok(Item::Entity(e))
}

/// Keys of an entity object up to which a repeated key is found by a scan.
const SCAN_MAX_KEYS: usize = 32;

/// Reads a nested entity array (anything else is left to the reporting path).
struct Children(EntityKind);

impl<'de> DeserializeSeed<'de> for Children {
    type Value = Vec<Item<'de>>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Vec<Item<'de>>, D::Error> {
        // `any`, as for a top-level array
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Children {
    type Value = Vec<Item<'de>>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of entities")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<Item<'de>>, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(1));
        while let Some(item) = seq.next_element_seed(ItemSeed(self.0))? {
            items.push(item);
        }
        Ok(items)
    }
}

/// An object key, borrowed from the document unless it has escapes.
struct Key<'de>(Cow<'de, str>);

impl<'de> de::Deserialize<'de> for Key<'de> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(s)))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(s.to_string())))
            }
            fn visit_string<E: de::Error>(self, s: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(s)))
            }
        }
        d.deserialize_str(V)
    }
}

fn is_header_key(k: &str) -> bool {
    matches!(k, "_format_version" | "_transform" | "_comment" | "_ignore")
}

/// Nesting depth of a value (a scalar is 0, `[]` is 1).
fn depth(v: &Value) -> usize {
    match v {
        Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
        Value::Object(m) => 1 + m.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// `(migrate, transform)` from the top-level keys, or `None` on any error there.
fn header(top: &Map<String, Value>) -> Option<(bool, bool)> {
    let migrate = match top.get("_format_version") {
        Some(Value::String(s)) if s == "3.0" => false,
        Some(Value::String(s)) if s == "1.1" || s == "2.1" => true,
        _ => return None,
    };
    let transform = match top.get("_transform") {
        None | Some(Value::Null) => true,
        Some(Value::Bool(b)) => *b,
        Some(_) => return None,
    };
    match top.get("_comment") {
        None | Some(Value::Null) | Some(Value::String(_)) => {}
        Some(_) => return None,
    }
    match top.get("_ignore") {
        None | Some(Value::Null) | Some(Value::Array(_)) => {}
        Some(_) => return None,
    }
    Some((migrate, transform))
}

/// One entity read so far: its kind, its index in its kind's list, its id.
struct Ent {
    kind: EntityKind,
    index: usize,
    id: Option<Uuid>,
}

struct Fast<'o, 'a> {
    opts: &'o LoadOptions<'a>,
    migrate: bool,
    schemas: Vec<Record>,
    /// Each schema's [`Record::validated_defaults`].
    defaults: Vec<Vec<Option<Value>>>,
    /// Each schema's field positions by name.
    field_index: Vec<FxHashMap<&'static str, usize>>,
    unique_fields: Vec<Vec<&'static str>>,
    /// Kinds some foreign key points at (only their endpoint keys are looked up).
    referenced: [bool; KINDS],
    positions: [usize; KINDS],
    cfg: Config,
    ents: Vec<Ent>,
    by_id: FxHashSet<(EntityKind, Uuid)>,
    /// Endpoint key → id of the referenced kinds (the first entity with the key).
    by_key: Vec<FxHashMap<Box<str>, Uuid>>,
    /// Unique values other than those `by_key` already holds.
    uniques: Vec<FxHashSet<(&'static str, Box<str>)>>,
    /// References by name or id, resolved once every entity is known: (entity, field,
    /// referenced kind, value as given).
    refs: Vec<(usize, &'static str, EntityKind, Value)>,
    /// `services[].ca_certificates` entries, checked once every entity is known.
    ca_refs: Vec<Value>,
    /// The value a foreign key holds until it is resolved.
    placeholder: Value,
    /// Upstream health checks when none are given (the typed schema default, shared).
    healthchecks: Option<Arc<Healthchecks>>,
    /// The typed path of each kind that has one.
    direct: Vec<Option<Direct>>,
}

impl<'o, 'a> Fast<'o, 'a> {
    fn new(opts: &'o LoadOptions<'a>, migrate: bool) -> Self {
        let schemas: Vec<Record> = EntityKind::ALL
            .iter()
            .map(|k| schema(*k, opts.router_flavor))
            .collect();
        let defaults = schemas.iter().map(Record::validated_defaults).collect();
        let field_index = schemas.iter().map(Record::positions).collect();
        let unique_fields = schemas
            .iter()
            .map(|s| {
                s.fields
                    .iter()
                    .filter(|f| f.unique)
                    .map(|f| f.name)
                    .collect()
            })
            .collect();
        let mut referenced = [false; KINDS];
        for k in EntityKind::ALL {
            for (_, target) in k.foreign_keys() {
                referenced[ix(*target)] = true;
            }
        }
        let healthchecks = crate::config::default_healthchecks().map(Arc::clone);
        let direct = EntityKind::ALL
            .iter()
            .zip(&schemas)
            .map(|(k, s)| Direct::new(*k, s, healthchecks.as_ref()))
            .collect();
        let mut placeholder = Map::new();
        placeholder.insert("id".into(), Value::String(Uuid::nil().to_string()));
        Fast {
            opts,
            migrate,
            schemas,
            defaults,
            field_index,
            unique_fields,
            referenced,
            positions: [0; KINDS],
            cfg: Config {
                transform: false,
                ..Config::default()
            },
            ents: Vec::new(),
            by_id: FxHashSet::default(),
            by_key: (0..KINDS).map(|_| FxHashMap::default()).collect(),
            uniques: (0..KINDS).map(|_| FxHashSet::default()).collect(),
            refs: Vec::new(),
            ca_refs: Vec::new(),
            placeholder: Value::Object(placeholder),
            healthchecks,
            direct,
        }
    }

    fn collect(
        &mut self,
        kind: EntityKind,
        value: &Value,
        parent: Option<(usize, &'static str)>,
    ) -> Option<()> {
        let Value::Array(items) = value else {
            return None;
        };
        self.reserve(kind, items.len());
        for item in items {
            self.item(kind, item, parent)?;
        }
        Some(())
    }

    /// One element of an entity array (a parsed value), and its nested entities.
    fn item(
        &mut self,
        kind: EntityKind,
        item: &Value,
        parent: Option<(usize, &'static str)>,
    ) -> Option<()> {
        let m = match item {
            // `certificates[].snis` may list plain names.
            Value::String(s) if kind == EntityKind::Sni && parent.is_some() => {
                return self.parsed_item(kind, Item::Name(s.clone()), parent);
            }
            Value::Object(m) => m,
            _ => return None,
        };
        let mut nested: Vec<(EntityKind, &'static str, &Value)> = Vec::new();
        let mut skip: Vec<&'static str> = Vec::new();
        for (child, fk) in children_of(kind) {
            if let Some(v) = m.get(child.plural()) {
                nested.push((*child, fk, v));
                skip.push(child.plural());
            }
        }
        let ent = self.entity(kind, &mut Borrowed(m), parent, skip)?;
        for (child, fk, v) in nested {
            self.collect(child, v, Some((ent, fk)))?;
        }
        Some(())
    }

    /// One element of an entity array as read from JSON, and its nested entities.
    fn parsed_item(
        &mut self,
        kind: EntityKind,
        item: Item<'_>,
        parent: Option<(usize, &'static str)>,
    ) -> Option<()> {
        let mut e = match item {
            Item::Entity(e) => e,
            Item::Name(s) if kind == EntityKind::Sni && parent.is_some() => Entity {
                entries: Entries(vec![(Cow::Borrowed("name"), Value::String(s))]),
                nested: Vec::new(),
            },
            Item::Name(_) => return None,
        };
        let ent = self.entity(kind, &mut e.entries, parent, Vec::new())?;
        drop(e.entries);
        // in the order of the kind's children, as the reporting path takes them
        e.nested.sort_by_key(|(i, _)| *i);
        let children = children_of(kind);
        for (i, items) in e.nested {
            let (child, fk) = children[i];
            self.reserve(child, items.len());
            for item in items {
                self.parsed_item(child, item, Some((ent, fk)))?;
            }
        }
        Some(())
    }

    /// Room for the top-level arrays (about `n` entities, nested ones included, in the array
    /// of `kind`). The array's kind and its nested kinds each get room for as many: a guess,
    /// which saves the regrowth of large lists and tables while costing only untouched
    /// capacity when too large.
    fn reserve_arrays(&mut self, sizes: &[(EntityKind, usize)]) {
        let mut per_kind = [0usize; KINDS];
        let mut total = 0;
        for (kind, n) in sizes {
            let children = children_of(*kind);
            total += n;
            per_kind[ix(*kind)] += n;
            for (child, _) in children {
                per_kind[ix(*child)] += n;
            }
        }
        self.ents.reserve(total);
        self.by_id.reserve(total);
        for kind in EntityKind::ALL {
            let n = per_kind[ix(kind)];
            if n == 0 {
                continue;
            }
            self.reserve(kind, n);
            if self.referenced[ix(kind)] {
                self.by_key[ix(kind)].reserve(n);
            }
        }
    }

    fn reserve(&mut self, kind: EntityKind, n: usize) {
        let c = &mut self.cfg;
        match kind {
            EntityKind::Service => c.services.reserve(n),
            EntityKind::Route => c.routes.reserve(n),
            EntityKind::Upstream => c.upstreams.reserve(n),
            EntityKind::Target => c.targets.reserve(n),
            EntityKind::Consumer => c.consumers.reserve(n),
            EntityKind::Plugin => c.plugins.reserve(n),
            _ => {}
        }
    }

    /// Validates, checks and types one entity; returns its index in `ents`.
    fn entity<I: Source>(
        &mut self,
        kind: EntityKind,
        input: &mut I,
        parent: Option<(usize, &'static str)>,
        mut skip: Vec<&'static str>,
    ) -> Option<usize> {
        let k = ix(kind);
        if let Some((_, fk)) = parent
            && input.get(fk).is_some_and(|v| !v.is_null())
        {
            return None;
        }
        let mut extra: Vec<(&'static str, Value)> = Vec::new();
        self.normalize(kind, &*input, &mut skip, &mut extra)?;

        // id (from the input as given, as Kong does)
        let pos = self.positions[k];
        self.positions[k] += 1;
        let id = if !kind.has_id() {
            None
        } else if let Some(v) = input.get("id")
            && !v.is_null()
        {
            Some(Uuid::try_parse(v.as_str()?).ok()?)
        } else {
            let parent = parent.map(|(p, fk)| (self.ents[p].id, fk));
            Some(ids::generate(kind, &*input, parent, pos))
        };

        // the usual services, routes, upstreams and targets: typed straight from their entries
        if extra.is_empty()
            && let (Some(direct), Some(id)) = (&self.direct[k], id)
        {
            let path = TypedPath {
                kind,
                nested: parent.is_some(),
                flavor: self.opts.router_flavor,
                direct,
                schema: &self.schemas[k],
                index: &self.field_index[k],
                id,
            };
            if let Some(typed) = input.typed(&path) {
                return self.add_typed(typed?, id, parent);
            }
        }

        // validation
        let mut refs: Vec<(&str, &Value)> = extra.iter().map(|(k, v)| (*k, v)).collect();
        // at most one of the two: a nesting parent (routes, targets) or health checks (upstreams)
        let mut omit: Option<&str> = None;
        match parent {
            // typed below without their nesting parent, which is set at the end
            Some((_, fk)) if matches!(kind, EntityKind::Route | EntityKind::Target) => {
                omit = Some(fk)
            }
            Some((_, fk)) => refs.push((fk, &self.placeholder)),
            None => {}
        }
        // upstreams without health checks: the typed default, not the default's JSON
        let default_healthchecks = kind == EntityKind::Upstream
            && self.healthchecks.is_some()
            && input.get("healthchecks").is_none_or(Value::is_null);
        if default_healthchecks {
            omit = Some("healthchecks");
        }
        let overlay = Overlay {
            skip: &skip,
            extra: &refs,
            omit: omit.as_slice(),
            defaults: Some(&self.defaults[k]),
            index: Some(&self.field_index[k]),
            updating: false,
        };
        let mut values = if matches!(kind, EntityKind::Plugin | EntityKind::Vault) {
            // their checks read the input again
            let (values, errors) = self.schemas[k].validate_overlay(&*input, &overlay);
            if !errors.is_empty() {
                return None;
            }
            values
        } else {
            input.validate(&self.schemas[k], &overlay)?
        };
        let mut errors = Errors::default();
        post_validate(
            kind,
            &*input,
            &mut values,
            &mut errors,
            self.opts.plugins,
            self.opts.now_unix,
        );
        if !errors.is_empty() {
            return None;
        }
        let parent_id = match parent {
            Some((p, fk)) => Some((fk, self.ents[p].id?)),
            None => None,
        };

        // primary key and unique fields
        self.claim(kind, id, |f| values.get(f).and_then(Value::as_str))?;

        // references other than the nesting parent: resolved at the end
        let ent = self.ents.len();
        for (fk, target) in kind.foreign_keys() {
            if parent.is_some_and(|(_, f)| f == *fk) {
                continue;
            }
            if let Some(v) = values.get_mut(fk) {
                let given = std::mem::replace(v, self.placeholder.clone());
                self.refs.push((ent, fk, *target, given));
            }
        }
        if kind == EntityKind::Service
            && let Some(Value::Array(cas)) = values.get("ca_certificates")
        {
            self.ca_refs.extend(cas.iter().cloned());
        }

        // the usual entities of large documents typed without serde's map machinery
        match (kind, id) {
            (EntityKind::Service, Some(id)) => {
                self.cfg.services.push(crate::typed::service(values, id)?);
            }
            (EntityKind::Route, Some(id)) => {
                self.cfg.routes.push(crate::typed::route(values, id)?);
            }
            (EntityKind::Upstream, Some(id)) => {
                let hc = self.healthchecks.clone().filter(|_| default_healthchecks);
                self.cfg
                    .upstreams
                    .push(crate::typed::upstream(values, id, hc)?);
            }
            (EntityKind::Target, Some(id)) => {
                self.cfg.targets.push(crate::typed::target(values, id)?);
            }
            _ => {
                if let Some(id) = id {
                    values.insert("id", Value::String(uuid_string(id)));
                }
                push_typed(&mut self.cfg, kind, values).ok()?;
            }
        }
        let index = kind_len(&self.cfg, kind) - 1;
        // the nesting parent's reference, which validated as a placeholder
        if let Some((fk, pid)) = parent_id {
            set_fk(&mut self.cfg, kind, index, fk, pid)?;
        }
        self.ents.push(Ent { kind, index, id });
        Some(ent)
    }

    /// Records the entity's id and unique values (`get` gives a unique field's value);
    /// `None` when one is taken already.
    fn claim<'v>(
        &mut self,
        kind: EntityKind,
        id: Option<Uuid>,
        get: impl Fn(&str) -> Option<&'v str>,
    ) -> Option<()> {
        let k = ix(kind);
        if let Some(id) = id
            && !self.by_id.insert((kind, id))
        {
            return None;
        }
        let endpoint_key = kind.endpoint_key();
        let mut keyed = false;
        for f in &self.unique_fields[k] {
            let Some(v) = get(f) else {
                continue;
            };
            if self.referenced[k]
                && endpoint_key == Some(*f)
                && let Some(id) = id
            {
                // one table for both: the key → id table and the uniqueness check
                keyed = true;
                match self.by_key[k].entry(v.into()) {
                    Entry::Occupied(_) => return None,
                    Entry::Vacant(slot) => {
                        slot.insert(id);
                    }
                }
            } else if !self.uniques[k].insert((f, v.into())) {
                return None;
            }
        }
        if self.referenced[k]
            && !keyed
            && let (Some(ek), Some(id)) = (endpoint_key, id)
            && let Some(v) = get(ek)
            && !self.by_key[k].contains_key(v)
        {
            self.by_key[k].insert(v.into(), id);
        }
        Some(())
    }

    /// Adds an entity typed by [`crate::direct`]; returns its index in `ents`.
    fn add_typed(
        &mut self,
        typed: Typed,
        id: Uuid,
        parent: Option<(usize, &'static str)>,
    ) -> Option<usize> {
        let kind = typed.kind();
        let parent_id = match parent {
            Some((p, fk)) => Some((fk, self.ents[p].id?)),
            None => None,
        };
        self.claim(kind, Some(id), |f| {
            if f == "name" { typed.name() } else { None }
        })?;
        let ent = self.ents.len();
        let c = &mut self.cfg;
        let index = match typed {
            Typed::Service(s) => {
                c.services.push(s);
                c.services.len()
            }
            Typed::Route(r) => {
                c.routes.push(r);
                c.routes.len()
            }
            Typed::Upstream(u) => {
                c.upstreams.push(u);
                c.upstreams.len()
            }
            Typed::Target(t) => {
                c.targets.push(t);
                c.targets.len()
            }
        } - 1;
        if let Some((fk, pid)) = parent_id {
            set_fk(&mut self.cfg, kind, index, fk, pid)?;
        }
        self.ents.push(Ent {
            kind,
            index,
            id: Some(id),
        });
        Some(ent)
    }

    /// The shorthands and input-dependent defaults of `load`'s `normalize_input`, as keys to
    /// skip and values to set rather than edits of the input.
    fn normalize<I: Input>(
        &self,
        kind: EntityKind,
        m: &I,
        skip: &mut Vec<&'static str>,
        extra: &mut Vec<(&'static str, Value)>,
    ) -> Option<()> {
        match kind {
            EntityKind::Service => {
                if let Some(url) = m.get("url") {
                    skip.push("url");
                    match url {
                        Value::String(s) => extra.extend(expand_url(s).ok()?),
                        Value::Null => {}
                        _ => return None,
                    }
                }
            }
            EntityKind::Route => {
                if self.migrate
                    && let Some(Value::Array(paths)) = m.get("paths")
                {
                    let migrated = paths
                        .iter()
                        .map(|p| match p {
                            Value::String(s) if !s.starts_with('~') => {
                                Value::String(crate::uri::migrate_path(s))
                            }
                            other => other.clone(),
                        })
                        .collect();
                    extra.push(("paths", Value::Array(migrated)));
                }
                if crate::load::grpc_subschema(m.get("protocols")) && m.get("strip_path").is_none()
                {
                    extra.push(("strip_path", Value::Bool(false)));
                }
            }
            EntityKind::Upstream => match m.get("algorithm").and_then(Value::as_str) {
                None if crate::load::hashes(m.get("hash_on")) => {
                    extra.push(("algorithm", "consistent-hashing".into()));
                }
                Some("least-connections" | "latency" | "round-robin") => {
                    skip.push("hash_on");
                    skip.push("hash_fallback");
                }
                _ => {}
            },
            _ => {}
        }
        Some(())
    }

    fn finish(mut self, transform: bool) -> Option<Config> {
        for (ent, fk, target, v) in std::mem::take(&mut self.refs) {
            let found = match &v {
                Value::String(s) => {
                    self.by_key[ix(target)]
                        .get(s.as_str())
                        .copied()
                        .or_else(|| {
                            Uuid::try_parse(s)
                                .ok()
                                .filter(|id| self.by_id.contains(&(target, *id)))
                        })
                }
                Value::Object(o) => o
                    .get("id")
                    .and_then(Value::as_str)
                    .and_then(|s| Uuid::try_parse(s).ok())
                    .filter(|id| self.by_id.contains(&(target, *id))),
                _ => None,
            }?;
            let e = &self.ents[ent];
            set_fk(&mut self.cfg, e.kind, e.index, fk, found)?;
        }
        for ca in &self.ca_refs {
            let id = Uuid::try_parse(ca.as_str()?).ok()?;
            if !self.by_id.contains(&(EntityKind::CaCertificate, id)) {
                return None;
            }
        }
        // plugin scope uniqueness
        let mut scopes: HashMap<String, Uuid> = HashMap::new();
        for p in &self.cfg.plugins {
            let part = |f: &Option<crate::entities::ForeignKey>| {
                f.map(|f| f.id.to_string()).unwrap_or_default()
            };
            let key = format!(
                "{}|{}|{}|{}|{}",
                p.name,
                part(&p.route),
                part(&p.service),
                part(&p.consumer),
                part(&p.consumer_group)
            );
            if scopes.insert(key, p.id).is_some_and(|prev| prev != p.id) {
                return None;
            }
        }
        if transform {
            for c in &mut self.cfg.basicauth_credentials {
                c.password = ids::basicauth_hash(&c.password, &c.consumer.id.to_string());
            }
        }
        Some(self.cfg)
    }
}

/// An id in its hyphenated lowercase form, without the formatting machinery.
fn uuid_string(id: Uuid) -> String {
    let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
    id.hyphenated().encode_lower(&mut buf).to_string()
}

fn kind_len(cfg: &Config, kind: EntityKind) -> usize {
    use EntityKind::*;
    match kind {
        Vault => cfg.vaults.len(),
        Certificate => cfg.certificates.len(),
        CaCertificate => cfg.ca_certificates.len(),
        Sni => cfg.snis.len(),
        Consumer => cfg.consumers.len(),
        ConsumerGroup => cfg.consumer_groups.len(),
        ConsumerGroupConsumer => cfg.consumer_group_consumers.len(),
        Service => cfg.services.len(),
        Route => cfg.routes.len(),
        Upstream => cfg.upstreams.len(),
        Target => cfg.targets.len(),
        Plugin => cfg.plugins.len(),
        KeyauthCredential => cfg.keyauth_credentials.len(),
        BasicauthCredential => cfg.basicauth_credentials.len(),
        JwtSecret => cfg.jwt_secrets.len(),
        Acl => cfg.acls.len(),
        HmacauthCredential => cfg.hmacauth_credentials.len(),
        KeySet => cfg.key_sets.len(),
        Key => cfg.keys.len(),
    }
}

/// Sets a resolved reference of a typed entity.
fn set_fk(cfg: &mut Config, kind: EntityKind, i: usize, fk: &str, id: Uuid) -> Option<()> {
    use crate::entities::ForeignKey;
    use EntityKind::*;
    let key = ForeignKey { id };
    match (kind, fk) {
        (Service, "client_certificate") => cfg.services.get_mut(i)?.client_certificate = Some(key),
        (Route, "service") => cfg.routes.get_mut(i)?.service = Some(key),
        (Upstream, "client_certificate") => {
            cfg.upstreams.get_mut(i)?.client_certificate = Some(key)
        }
        (Target, "upstream") => cfg.targets.get_mut(i)?.upstream = key,
        (Plugin, "route") => cfg.plugins.get_mut(i)?.route = Some(key),
        (Plugin, "service") => cfg.plugins.get_mut(i)?.service = Some(key),
        (Plugin, "consumer") => cfg.plugins.get_mut(i)?.consumer = Some(key),
        (Plugin, "consumer_group") => cfg.plugins.get_mut(i)?.consumer_group = Some(key),
        (Sni, "certificate") => cfg.snis.get_mut(i)?.certificate = key,
        (KeyauthCredential, "consumer") => cfg.keyauth_credentials.get_mut(i)?.consumer = key,
        (BasicauthCredential, "consumer") => cfg.basicauth_credentials.get_mut(i)?.consumer = key,
        (JwtSecret, "consumer") => cfg.jwt_secrets.get_mut(i)?.consumer = key,
        (Acl, "consumer") => cfg.acls.get_mut(i)?.consumer = key,
        (HmacauthCredential, "consumer") => cfg.hmacauth_credentials.get_mut(i)?.consumer = key,
        (ConsumerGroupConsumer, "consumer_group") => {
            cfg.consumer_group_consumers.get_mut(i)?.consumer_group = key
        }
        (ConsumerGroupConsumer, "consumer") => {
            cfg.consumer_group_consumers.get_mut(i)?.consumer = key
        }
        (Key, "set") => cfg.keys.get_mut(i)?.set = Some(key),
        _ => return None,
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::Field;
    use crate::{PluginRegistry, PluginSchema, RouterFlavor};
    use serde_json::json;

    fn pem(name: &str) -> String {
        // (read when the test runs: a test binary reused from a checkout elsewhere would
        // carry that checkout's path)
        std::fs::read_to_string(format!(
            "{}/tests/fixtures/pki/{name}",
            std::env::var("CARGO_MANIFEST_DIR")
                .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string())
        ))
        .expect("fixture")
    }

    fn plugins() -> PluginRegistry {
        let mut r = PluginRegistry::new();
        let mut auth = PluginSchema::http(
            "example-auth",
            1250,
            Record::new(vec![
                Field::array("key_names", Field::string("")).default(vec!["apikey"]),
                Field::boolean("hide_credentials").default(false),
            ]),
        );
        auth.no_consumer = true;
        r.register(auth);
        r.register(PluginSchema::http(
            "example-limit",
            910,
            Record::new(vec![
                Field::number("minute", 0.0, 1e12),
                Field::one_of("policy", &["local", "redis"]).default("local"),
            ]),
        ));
        r
    }

    /// Both paths give the same configuration for a valid document, and the fast
    /// path refuses an invalid one.
    fn same(doc: Value, flavor: RouterFlavor) {
        let p = plugins();
        let opts = LoadOptions {
            router_flavor: flavor,
            plugins: &p,
            now_unix: Some(1_764_000_000),
        };
        let fast = try_load(&doc, &opts);
        let json = try_load_json(doc.to_string().as_bytes(), &opts);
        let slow = crate::load::load_reporting(doc.clone(), &opts);
        assert_eq!(fast, json, "{doc}");
        // the same document in YAML: read in one pass as the whole parse of it loads, unless
        // its top-level keys are in another order (then the caller parses it whole)
        let yaml = serde_saphyr::to_string(&doc).expect("YAML");
        let (text, options) = crate::parse::yaml_text(yaml.as_bytes()).expect("UTF-8");
        let whole = crate::parse::parse_document(yaml.as_bytes()).expect("parses");
        let expected = try_load(&whole, &opts);
        match load_yaml(text, options, &opts) {
            (Some(cfg), _) => assert_eq!(Some(cfg), expected, "{yaml}"),
            (None, unusual) => assert!(unusual || expected.is_none(), "{yaml}"),
        }
        match (fast, slow) {
            (Some(f), Ok(s)) => {
                assert_eq!(f, s, "{doc}");
            }
            (None, Err(_)) => {}
            (f, s) => panic!("paths disagree on {doc}: fast {f:?}, reporting {s:?}"),
        }
    }

    #[test]
    fn yaml_documents_load_in_one_pass_as_their_whole_parse_does() {
        let p = plugins();
        let opts = LoadOptions {
            router_flavor: RouterFlavor::TraditionalCompatible,
            plugins: &p,
            now_unix: None,
        };
        let json = crate::synthetic::services_routes_targets(50, "10.0.0.1:8080");
        let value: Value = serde_json::from_str(&json).expect("JSON");
        let from_json = try_load_json(json.as_bytes(), &opts).expect("loads");
        let block = serde_saphyr::to_string(&value).expect("YAML");
        // a hand-written file: comments, anchors and merge keys, flow style, quoting
        let hand = r#"# comment
_format_version: "3.0"
_comment: anchors and merges
services:
  - &base
    name: a
    host: a.test
    port: 8080
    tags: [team-x, "k8s-kind:Service"]
    routes:
      - {name: ra, paths: ["/a"], strip_path: false}
  - <<: *base
    name: b
    routes:
      - name: rb
        hosts:
          - b.test
upstreams:
  - name: up
    targets:
      - target: 10.0.0.1:80
        weight: 10
"#;
        for text in [block.as_str(), hand] {
            let (yaml, options) = crate::parse::yaml_text(text.as_bytes()).expect("UTF-8");
            let one_pass = try_load_yaml(yaml, options, &opts).expect("loads in one pass");
            let whole = crate::parse::parse_document(text.as_bytes()).expect("parses");
            assert_eq!(Some(&one_pass), try_load(&whole, &opts).as_ref(), "{text}");
            if text == block {
                assert_eq!(one_pass, from_json);
            }
        }
        // values a YAML parser may read as a sequence when asked for one (`!!binary`: its
        // bytes) are what a whole parse reads: not entity arrays
        for text in [
            "_format_version: '3.0'\nservices: !!binary ''\n",
            "_format_version: '3.0'\nservices:\n  - name: s\n    host: a.test\n    routes: !!binary ''\n",
        ] {
            let (yaml, options) = crate::parse::yaml_text(text.as_bytes()).expect("UTF-8");
            assert!(try_load_yaml(yaml, options, &opts).is_none(), "{text}");
            assert!(
                crate::load::load_bytes(text.as_bytes(), &opts).is_err(),
                "{text}"
            );
        }
        // a tagged string is a string
        let tagged = "_format_version: !!str 3.0\nservices:\n  - name: !!str s\n    host: a.test\n";
        let (yaml, options) = crate::parse::yaml_text(tagged.as_bytes()).expect("UTF-8");
        let whole = crate::parse::parse_document(tagged.as_bytes()).expect("parses");
        assert_eq!(try_load_yaml(yaml, options, &opts), try_load(&whole, &opts));
        // a YAML error anywhere: not loaded here (the caller reports it)
        let broken = format!("{block}\n  - : [\n");
        let (yaml, options) = crate::parse::yaml_text(broken.as_bytes()).expect("UTF-8");
        assert!(try_load_yaml(yaml, options, &opts).is_none());
    }

    #[test]
    fn kinds_index_their_tables() {
        for (i, k) in EntityKind::ALL.iter().enumerate() {
            assert_eq!(ix(*k), i);
            assert_eq!(
                ids::namespace(*k),
                Uuid::new_v5(&ids::NAMESPACE, k.plural().as_bytes())
            );
        }
    }

    #[test]
    fn a_repeated_key_replaces_the_value_in_small_and_large_objects() {
        // below and past the number of keys where an index takes over from the scan
        for n in [3, SCAN_MAX_KEYS - 1, SCAN_MAX_KEYS, 3 * SCAN_MAX_KEYS] {
            let keys: Vec<String> = (0..n).map(|i| format!("\"k{i}\": {i}")).collect();
            let text = format!(
                "{{{}, \"k0\": \"again\", \"routes\": [], \"k{}\": null, \"routes\": [{{}}]}}",
                keys.join(", "),
                n - 1
            );
            let mut de = serde_json::Deserializer::from_str(&text);
            let item = ItemSeed(EntityKind::Service)
                .deserialize(&mut de)
                .expect("an object");
            let Item::Entity(e) = item else {
                panic!("an entity")
            };
            let entries = &e.entries.0;
            assert_eq!(entries.len(), n, "{n}");
            assert_eq!(entries[0], (Cow::Borrowed("k0"), json!("again")));
            assert_eq!(entries[1].1, json!(1));
            assert_eq!(
                entries[n - 1],
                (Cow::Owned(format!("k{}", n - 1)), Value::Null)
            );
            assert_eq!(e.nested.len(), 1);
            assert_eq!(e.nested[0].1.len(), 1, "the last `routes` stays");
        }
    }

    #[test]
    fn unusual_key_orders_load_as_the_usual_one() {
        let p = plugins();
        let opts = LoadOptions {
            router_flavor: RouterFlavor::TraditionalCompatible,
            plugins: &p,
            now_unix: None,
        };
        let services =
            r#""services":[{"name":"s","host":"h","routes":[{"name":"r","paths":["/a"]}]}]"#;
        let routes = r#""routes":[{"name":"r2","paths":["/b"],"service":"s"}]"#;
        let usual = format!(r#"{{"_format_version":"3.0",{services},{routes}}}"#);
        let usual = try_load_json(usual.as_bytes(), &opts).expect("loads");
        for doc in [
            format!(r#"{{{routes},{services},"_format_version":"3.0"}}"#),
            format!(r#"{{"_format_version":"3.0",{routes},{services}}}"#),
            format!(r#"{{"_format_version":"1.1","_format_version":"3.0",{services},{routes}}}"#),
            format!(r#"{{"_format_version":"3.0",{services},"routes":[],{routes}}}"#),
        ] {
            let cfg = try_load_json(doc.as_bytes(), &opts).expect("loads");
            assert_eq!(
                serde_json::to_value(&cfg).ok(),
                serde_json::to_value(&usual).ok(),
                "{doc}"
            );
        }
    }

    #[test]
    fn json_path_keeps_the_limits_of_a_whole_parse() {
        let p = plugins();
        let opts = LoadOptions {
            router_flavor: RouterFlavor::TraditionalCompatible,
            plugins: &p,
            now_unix: None,
        };
        let nest = |n: usize| format!("{}1{}", "[".repeat(n), "]".repeat(n));
        for n in [125, 126, 127] {
            let doc = format!(r#"{{"_format_version":"3.0","_ignore":{}}}"#, nest(n));
            let whole = serde_json::from_str::<Value>(&doc).is_ok();
            assert_eq!(whole, n <= 126);
            assert_eq!(try_load_json(doc.as_bytes(), &opts).is_some(), whole, "{n}");
        }
        let doc = format!(
            r#"{{"_format_version":"3.0","services":[{{"name":"s","host":"h","tags":{}}}]}}"#,
            nest(125)
        );
        assert!(serde_json::from_str::<Value>(&doc).is_err());
        assert!(try_load_json(doc.as_bytes(), &opts).is_none());
    }

    #[test]
    fn fast_path_matches_the_reporting_path() {
        let mut jwk: Value = serde_json::from_str(&pem("rsa.jwk")).expect("JSON fixture");
        jwk["kid"] = json!("jwk-1");
        let jwk = jwk.to_string();
        let every = json!({
            "_format_version": "3.0",
            "_comment": "every entity, nested",
            "_ignore": [{"anything": true}],
            "vaults": [{"prefix": "my-env", "name": "env", "config": {"prefix": "SB_"}}],
            "certificates": [{
                "id": "6b1c1ef6-8bb4-4a4d-9cf0-8f1c1d1e0001",
                "cert": pem("rsa.crt"), "key": pem("rsa.key"),
                "cert_alt": pem("ec.crt"), "key_alt": pem("ec.key"),
                "snis": ["example.test", {"name": "*.example.test", "tags": ["wild"]}]
            }],
            "ca_certificates": [{"id": "6b1c1ef6-8bb4-4a4d-9cf0-8f1c1d1e0009",
                                 "cert": pem("ca.crt"), "tags": ["ca"]}],
            "consumers": [{
                "username": "alice", "custom_id": "a-1",
                "keyauth_credentials": [{"key": "alice-key"}],
                "basicauth_credentials": [{"username": "alice", "password": "s3cret"}],
                "jwt_secrets": [{"key": "alice-iss", "secret": "shh"}],
                "acls": [{"group": "admins"}],
                "hmacauth_credentials": [{"username": "alice-hmac", "secret": "hm"}],
                "plugins": [{"name": "example-limit", "config": {"minute": 5}}]
            }],
            "consumer_groups": [{"name": "gold"}],
            "consumer_group_consumers": [{"consumer_group": "gold", "consumer": "alice"}],
            "services": [{
                "name": "echo", "url": "https://backend.test:8443/api",
                "ca_certificates": ["6b1c1ef6-8bb4-4a4d-9cf0-8f1c1d1e0009"], "tls_verify": true,
                "client_certificate": {"id": "6b1c1ef6-8bb4-4a4d-9cf0-8f1c1d1e0001"},
                "routes": [{
                    "name": "echo-route", "paths": ["/echo", "~/items/(?<id>\\d+)$"],
                    "hosts": ["*.example.test", "api.example.test:8443"],
                    "methods": ["GET", "POST"], "headers": {"x-env": ["prod", "~*can.+"]},
                    "plugins": [{"name": "example-auth"}]
                }],
                "plugins": [{"name": "example-limit", "config": {"minute": 100, "policy": "redis"}}]
            }, {
                "name": "grpc", "protocol": "grpc", "host": "10.0.0.3", "url": null,
                "routes": [{"name": "g", "protocols": ["grpc", "grpcs"], "paths": ["/pkg.S/"]}]
            }],
            "upstreams": [{
                "name": "backend.test", "hash_on": "header", "hash_on_header": "x-user",
                "healthchecks": {"active": {"healthy": {"interval": 5}}},
                "targets": [{"target": "10.0.0.1"}, {"target": "10.0.0.2:9000", "weight": 0}]
            }, {"name": "rr", "algorithm": "round-robin", "hash_on": "ip"},
               {"name": "plain", "targets": [{"target": "10.0.0.1", "upstream": null}]},
               {"name": "full", "tags": ["t"], "host_header": "h.test", "use_srv_name": true,
                "client_certificate": {"id": "6b1c1ef6-8bb4-4a4d-9cf0-8f1c1d1e0001"},
                "hash_on": "cookie", "hash_on_cookie": "c", "created_at": 1700000000,
                "updated_at": 1700000001, "slots": 100,
                "healthchecks": {"passive": {"type": "tcp"}}},
               {"name": "args", "hash_on": "query_arg", "hash_on_query_arg": "a",
                "hash_fallback": "uri_capture", "hash_fallback_uri_capture": "c"},
               {"name": "headers", "hash_on": "header", "hash_on_header": "x-a",
                "hash_fallback": "header", "hash_fallback_header": "x-b"}],
            "plugins": [{"name": "example-limit", "config": {"minute": 1000}, "tags": ["global"]},
                        {"name": "example-limit", "route": "echo-route", "service": "echo",
                         "consumer_group": "gold"}],
            "key_sets": [{"name": "signing", "tags": ["ks"], "keys": [
                {"name": "jwk-1", "kid": "jwk-1", "jwk": jwk},
                {"name": "pem-1", "kid": "pem-1",
                 "pem": {"private_key": pem("rsa.key"), "public_key": pem("rsa.pub")}}]}],
            "keys": [{"name": "loose", "kid": "ec", "set": "signing", "pem": {"public_key": pem("ec.pub")}}]
        });
        same(every.clone(), RouterFlavor::TraditionalCompatible);
        same(every.clone(), RouterFlavor::Traditional);
        let mut no_transform = every.clone();
        no_transform["_transform"] = json!(false);
        same(no_transform, RouterFlavor::TraditionalCompatible);

        let flat = json!({
            "_format_version": "3.0",
            "services": [{"name": "a", "host": "a.test"},
                         {"id": "0D5B6B34-5b7b-4bd4-8a43-5a7f6a4a0001", "host": "b.test"}],
            "routes": [
                {"name": "r1", "paths": ["/a"], "service": "a"},
                {"name": "r2", "paths": ["/b"], "service": {"id": "0d5b6b34-5b7b-4bd4-8a43-5a7f6a4a0001"}},
                {"name": "r3", "hosts": ["c.test"], "service": "0d5b6b34-5b7b-4bd4-8a43-5a7f6a4a0001"}
            ],
            "upstreams": [{"name": "up"}],
            "targets": [{"target": "10.0.0.7:80", "upstream": "up"},
                        {"target": "10.0.0.7:80", "upstream": {"id": "60c1cb72-2e67-5a0e-8b67-9d0d3bd8d5b1"}}],
            "consumers": [{"username": "bob"}],
            "keyauth_credentials": [{"key": "bob-key", "consumer": "bob"}],
            "basicauth_credentials": [{"username": "b", "password": "p", "consumer": "bob"}],
            "plugins": [{"name": "example-limit", "service": "a", "route": "r1"},
                        {"name": "example-limit", "service": "a", "route": "r1"}]
        });
        same(flat.clone(), RouterFlavor::TraditionalCompatible);
        let mut ok = flat.clone();
        ok["plugins"] = json!([{"name": "example-limit", "service": "a", "route": "r1"}]);
        ok["targets"] = json!([{"target": "10.0.0.7:80", "upstream": "up"}]);
        same(ok.clone(), RouterFlavor::TraditionalCompatible);
        let mut dangling = ok.clone();
        dangling["routes"][0]["service"] = json!("nope");
        same(dangling, RouterFlavor::TraditionalCompatible);
        let mut no_set = ok.clone();
        no_set["keys"] = json!([{"kid": "k", "set": "nope", "pem": {"public_key": pem("ec.pub")}}]);
        same(no_set, RouterFlavor::TraditionalCompatible);
        let mut dup = ok.clone();
        dup["services"][1]["name"] = json!("a");
        same(dup, RouterFlavor::TraditionalCompatible);
        let mut unknown = ok.clone();
        unknown["services"][0]["bogus"] = json!(1);
        same(unknown, RouterFlavor::TraditionalCompatible);

        for version in ["1.1", "2.1", "3.0"] {
            same(
                json!({"_format_version": version, "services": [{"name": "s", "host": "a.test",
                       "routes": [{"name": "r", "paths": ["/plain/./path", "/items/\\d+"]}]}]}),
                RouterFlavor::TraditionalCompatible,
            );
        }
        same(
            json!({"_format_version": "3.0", "services": [{"name": "s", "host": "a.test",
                   "routes": [{"name": "r", "expression": "http.path ^= \"/api\"", "priority": 3},
                              {"name": "p", "paths": ["/"]}]}]}),
            RouterFlavor::Expressions,
        );
        same(
            json!({"_format_version": "3.0", "services": [{"name": "s", "host": "a.test",
                   "routes": [{"name": "r", "service": {"id": "0d5b6b34-5b7b-4bd4-8a43-5a7f6a4a0001"}}]}]}),
            RouterFlavor::TraditionalCompatible,
        );
        same(
            serde_json::from_str(&crate::synthetic::services_routes_targets(
                20,
                "10.0.0.1:8080",
            ))
            .expect("json"),
            RouterFlavor::TraditionalCompatible,
        );
    }

    /// Values each key of the kinds [`crate::direct`] types may take (JSON text), for random
    /// entities: (key, probability of being given, number of values valid on their own, which
    /// come first, values).
    type Pool = &'static [(&'static str, f64, usize, &'static [&'static str])];

    const TAGS: &[&str] = &[
        r#"["a","k8s-name:x"]"#,
        "[]",
        r#"["a","a"]"#,
        r#"["a,b"]"#,
        r#""a""#,
    ];
    const BOOLS: &[&str] = &["true", "false", "null", "1"];
    /// Ids: unique ones, then one id in its four forms (colliding), then an invalid one.
    const IDS: &[&str] = &[
        "\"@id\"",
        "\"0d5b6b34-5b7b-4bd4-8a43-5a7f6a4a0001\"",
        "\"{0d5b6b34-5b7b-4bd4-8a43-5a7f6a4a0001}\"",
        "\"0d5b6b345b7b4bd48a435a7f6a4a0001\"",
        "\"0D5B6B34-5B7B-4BD4-8A43-5A7F6A4A0001\"",
        "\"not-a-uuid\"",
    ];
    const TIMEOUTS: &[&str] = &["60000", "1", "2147483646", "0", "2147483647", "1.5"];
    const SERVICE: Pool = &[
        (
            "name",
            0.7,
            3,
            &["\"@\"", "null", "\"same\"", "\"bad name!\"", "\"\""],
        ),
        ("retries", 0.3, 2, &["0", "32767", "32768", "-1", "\"3\""]),
        (
            "protocol",
            0.4,
            5,
            &[
                "\"http\"",
                "\"https\"",
                "\"grpc\"",
                "\"tcp\"",
                "\"ws\"",
                "\"bogus\"",
            ],
        ),
        (
            "host",
            0.95,
            3,
            &[
                "\"a.test\"",
                "\"10.0.0.1\"",
                "\"[::1]\"",
                "\"bad host!\"",
                "\"\"",
                "null",
            ],
        ),
        ("port", 0.4, 3, &["80", "0", "65535", "65536", "\"80\""]),
        (
            "path",
            0.3,
            3,
            &["\"/p\"", "\"/a/b\"", "null", "\"bad\"", "\"/a//b\""],
        ),
        ("connect_timeout", 0.2, 3, TIMEOUTS),
        ("write_timeout", 0.2, 3, TIMEOUTS),
        ("read_timeout", 0.2, 3, TIMEOUTS),
        ("tags", 0.5, 2, TAGS),
        ("enabled", 0.2, 3, BOOLS),
        ("id", 0.3, 5, IDS),
        ("_comment", 0.05, 1, &["\"c\""]),
        ("url", 0.05, 1, &["\"http://u.test:81/x\""]),
        ("tls_verify", 0.05, 1, &["true"]),
    ];
    const ROUTE: Pool = &[
        ("name", 0.7, 2, &["\"@\"", "\"same\"", "\"bad name!\""]),
        (
            "protocols",
            0.6,
            5,
            &[
                r#"["http"]"#,
                r#"["https"]"#,
                r#"["https","http"]"#,
                r#"["grpc"]"#,
                "null",
                r#"["http","http"]"#,
                "[]",
                r#"["ws"]"#,
                r#""http""#,
            ],
        ),
        (
            "methods",
            0.3,
            2,
            &[r#"["GET","POST"]"#, "[]", r#"["get"]"#, r#"["GET","GET"]"#],
        ),
        (
            "hosts",
            0.5,
            4,
            &[
                r#"["a.test"]"#,
                r#"["*.a.test","b.*"]"#,
                r#"["a.test:8080"]"#,
                "[]",
                r#"["bad host!"]"#,
                r#"["*.*"]"#,
            ],
        ),
        (
            "paths",
            0.6,
            3,
            &[
                r#"["/"]"#,
                r#"["/a","~/b/(?<id>\\d+)$"]"#,
                "[]",
                r#"["~/(unclosed"]"#,
                r#"["a"]"#,
                r#"["/a//b"]"#,
            ],
        ),
        (
            "https_redirect_status_code",
            0.2,
            3,
            &["426", "301", "308", "200", "1000"],
        ),
        (
            "regex_priority",
            0.2,
            3,
            &["0", "5", "-3", "\"1\"", "2147483648"],
        ),
        ("strip_path", 0.3, 3, BOOLS),
        ("path_handling", 0.2, 2, &["\"v0\"", "\"v1\"", "\"v2\""]),
        ("preserve_host", 0.3, 3, BOOLS),
        ("request_buffering", 0.2, 3, BOOLS),
        ("response_buffering", 0.2, 3, BOOLS),
        (
            "snis",
            0.4,
            3,
            &[r#"["a.test"]"#, r#"["*.a.test"]"#, "[]", r#"["bad sni!"]"#],
        ),
        ("tags", 0.5, 2, TAGS),
        ("id", 0.2, 5, IDS),
        ("_comment", 0.05, 1, &["\"c\""]),
        ("headers", 0.05, 1, &[r#"{"x-a":["1"]}"#]),
        (
            "service",
            0.05,
            1,
            &["null", r#"{"id":"0d5b6b34-5b7b-4bd4-8a43-5a7f6a4a0001"}"#],
        ),
    ];
    const UPSTREAM: Pool = &[
        (
            "name",
            0.95,
            2,
            &["\"@\"", "\"same\"", "\"bad name!\"", "\"\""],
        ),
        (
            "algorithm",
            0.5,
            4,
            &[
                "\"round-robin\"",
                "\"least-connections\"",
                "\"latency\"",
                "\"consistent-hashing\"",
                "\"bogus\"",
            ],
        ),
        ("slots", 0.3, 2, &["10", "65536", "5", "65537", "100.5"]),
        ("tags", 0.5, 2, TAGS),
        (
            "host_header",
            0.2,
            2,
            &["\"h.test\"", "\"h.test:8080\"", "\"bad host!\""],
        ),
        ("use_srv_name", 0.2, 3, BOOLS),
        ("id", 0.2, 5, IDS),
        ("_comment", 0.05, 1, &["\"c\""]),
        ("hash_on", 0.05, 2, &["\"ip\"", "\"none\""]),
    ];
    const TARGET: Pool = &[
        (
            "target",
            0.95,
            3,
            &[
                "\"10.0.0.1:80\"",
                "\"a.test\"",
                "\"[::1]:8080\"",
                "\"a.test:0\"",
                "\"bad target!\"",
                "\"10.0.0.1:99999\"",
                "\"\"",
            ],
        ),
        ("weight", 0.4, 3, &["0", "100", "65535", "65536", "-1"]),
        ("tags", 0.4, 2, TAGS),
        ("id", 0.1, 5, IDS),
        ("upstream", 0.03, 1, &["null"]),
    ];

    const KEY_SET: Pool = &[
        ("name", 0.8, 2, &["\"@\"", "\"same\"", "\"\"", "5"]),
        ("tags", 0.4, 2, TAGS),
        ("id", 0.3, 5, IDS),
        ("_comment", 0.05, 1, &["\"c\""]),
    ];
    /// Keys: few kids (one kid twice in a set is one id twice), key material (`@material`:
    /// a `jwk` or a `pem` by its value; now and then both or neither), JWKs whose kid may not
    /// be the key's, PEM pairs, sets by name, by id (known or not) and malformed.
    const KEY: Pool = &[
        ("kid", 0.95, 2, &["\"k1\"", "\"k2\"", "\"\"", "1"]),
        ("name", 0.5, 2, &["\"@\"", "\"same\"", "\"\""]),
        (
            "@material",
            0.95,
            5,
            &[
                "\"@jwk\"",
                "\"@pem:rsa.pub\"",
                "\"@pem:ec.pub\"",
                "\"@pem:pair\"",
                "\"{vault://env/jwk}\"",
                "\"@jwk:k2\"",
                "\"@jwk:p\"",
                "\"@pem:other\"",
                "{}",
                r#"{"public_key":"x"}"#,
                "\"{\\\"kid\\\": \\\"k1\\\"}\"",
                "\"not json\"",
                "5",
            ],
        ),
        ("jwk", 0.05, 1, &["\"@jwk\""]),
        (
            "set",
            0.25,
            4,
            &[
                "null",
                "\"same\"",
                r#"{"id":"0d5b6b34-5b7b-4bd4-8a43-5a7f6a4a0001"}"#,
                "\"0d5b6b34-5b7b-4bd4-8a43-5a7f6a4a0001\"",
                "\"nope\"",
                r#"{"id":"7f1b8c2e-6a4d-4c1e-9d2b-3e5f7a9c0b1d"}"#,
                r#"{"name":"same"}"#,
            ],
        ),
        ("tags", 0.3, 2, TAGS),
        ("id", 0.1, 5, IDS),
    ];

    /// A random entity from `pool`: each key present with its probability, its value one of
    /// the pool's, one valid on its own nine times in ten. `@` becomes a name unique in the document, `@id` an id.
    fn arb_entity(pool: Pool) -> impl proptest::strategy::Strategy<Value = Picks> {
        use proptest::prelude::*;
        let keys: Vec<_> = pool
            .iter()
            .enumerate()
            .map(|(i, (_, p, valid, values))| {
                let n = values.len();
                prop::option::weighted(*p, prop_oneof![9 => 0..*valid, 1 => 0..n])
                    .prop_map(move |v| v.map(|v| (i, v)))
            })
            .collect();
        keys.prop_map(|ks| ks.into_iter().flatten().collect())
    }

    fn entity_value(pool: Pool, picks: &[(usize, usize)], n: &mut u32) -> Map<String, Value> {
        let mut m = Map::new();
        for (k, v) in picks {
            let (key, _, _, values) = pool[*k];
            *n += 1;
            let value = match values[*v] {
                "\"@\"" => Value::String(format!("e{n}")),
                "\"@id\"" => {
                    Value::String(Uuid::new_v5(&Uuid::nil(), &n.to_le_bytes()).to_string())
                }
                // `rsa.key`'s public half as a JWK with the key's kid, another kid (`:k2`), or
                // a factor alone (`:p`, which does not load)
                text if text.starts_with("\"@jwk") => {
                    let own = m.get("kid").and_then(Value::as_str).unwrap_or("k1");
                    let mut jwk: Value = serde_json::from_str(&pem("rsa.jwk")).expect("JWK");
                    jwk["kid"] = json!(own);
                    match text.trim_matches('"') {
                        "@jwk:k2" => jwk["kid"] = json!("k2"),
                        "@jwk:p" => jwk["p"] = json!("AQAB"),
                        _ => {}
                    }
                    Value::String(jwk.to_string())
                }
                text if text.starts_with("\"@pem:") => match text.trim_matches('"') {
                    "@pem:pair" => {
                        json!({"private_key": pem("rsa.key"), "public_key": pem("rsa.pub")})
                    }
                    "@pem:other" => {
                        json!({"private_key": pem("ec.key"), "public_key": pem("rsa.pub")})
                    }
                    file => json!({"public_key": pem(file.trim_start_matches("@pem:"))}),
                },
                text => serde_json::from_str(text).expect("pool JSON"),
            };
            // key material: a `pem` record, or a `jwk`
            let key = match key {
                "@material" if value.is_object() => "pem",
                "@material" => "jwk",
                key => key,
            };
            m.insert(key.to_string(), value);
        }
        m
    }

    /// The keys of an entity and the values picked for them (indices into its pool).
    type Picks = Vec<(usize, usize)>;

    /// Parent entities from `pool`, each with its children from `child_pool` nested under `key`.
    fn nest(
        pool: Pool,
        child_pool: Pool,
        key: &str,
        parents: &[(Picks, Vec<Picks>)],
        n: &mut u32,
    ) -> Vec<Value> {
        parents
            .iter()
            .map(|(parent, children)| {
                let mut m = entity_value(pool, parent, n);
                let children = children
                    .iter()
                    .map(|c| Value::Object(entity_value(child_pool, c, n)))
                    .collect();
                m.insert(key.into(), Value::Array(children));
                Value::Object(m)
            })
            .collect()
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config::with_cases(1000))]
        /// Random services, routes, upstreams and targets load the same on the typed path as
        /// on the generic one, and the typed path refuses exactly what the generic one does.
        #[test]
        fn the_typed_path_loads_what_the_generic_path_loads(
            services in proptest::collection::vec(
                (arb_entity(SERVICE), proptest::collection::vec(arb_entity(ROUTE), 0..3)), 0..3),
            upstreams in proptest::collection::vec(
                (arb_entity(UPSTREAM), proptest::collection::vec(arb_entity(TARGET), 0..3)), 0..3),
            flavor in proptest::prop_oneof![
                6 => proptest::strategy::Just(RouterFlavor::TraditionalCompatible),
                2 => proptest::strategy::Just(RouterFlavor::Traditional),
                1 => proptest::strategy::Just(RouterFlavor::Expressions),
            ],
            version in proptest::prop_oneof![
                8 => proptest::strategy::Just("3.0"),
                1 => proptest::strategy::Just("2.1"),
                1 => proptest::strategy::Just("1.1"),
            ],
            // services and upstreams nested in a certificate, which becomes their
            // `client_certificate`
            in_certificate in proptest::bool::weighted(0.15),
        ) {
            let mut n = 0;
            let services = nest(SERVICE, ROUTE, "routes", &services, &mut n);
            let upstreams = nest(UPSTREAM, TARGET, "targets", &upstreams, &mut n);
            let doc = if in_certificate {
                json!({"_format_version": version, "certificates": [{
                    "cert": pem("rsa.crt"), "key": pem("rsa.key"),
                    "services": services, "upstreams": upstreams}]})
            } else {
                json!({"_format_version": version, "services": services, "upstreams": upstreams})
            };
            same(doc, flavor);
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config::with_cases(200))]
        /// Random key sets with nested keys and top-level keys load the same on both paths:
        /// duplicate names, sets by name or id that may not exist, nested keys that also
        /// name a set, one (kid, set) twice, key material Kong refuses.
        #[test]
        fn keys_load_the_same_on_both_paths(
            key_sets in proptest::collection::vec(
                (arb_entity(KEY_SET), proptest::collection::vec(arb_entity(KEY), 0..3)), 0..3),
            keys in proptest::collection::vec(arb_entity(KEY), 0..4),
            version in proptest::prop_oneof![
                8 => proptest::strategy::Just("3.0"),
                1 => proptest::strategy::Just("2.1"),
            ],
        ) {
            let mut n = 0;
            let key_sets = nest(KEY_SET, KEY, "keys", &key_sets, &mut n);
            let keys: Vec<Value> = keys
                .iter()
                .map(|k| Value::Object(entity_value(KEY, k, &mut n)))
                .collect();
            let doc = json!({"_format_version": version, "key_sets": key_sets, "keys": keys});
            same(doc, RouterFlavor::TraditionalCompatible);
        }
    }
}
