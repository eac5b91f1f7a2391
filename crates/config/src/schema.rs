//! A small schema engine in the style of Kong's (`kong/db/schema`): typed fields with
//! defaults and constraints, validated over JSON values, producing Kong-shaped errors.
//!
//! Entities and plugin configurations are both described with [`Record`]s, so a plugin
//! brings its own configuration schema (see [`crate::plugin`]).
//!
//! Semantics that follow Kong:
//! - a field that is absent (or `null`) gets its default; a required field without a value
//!   reports `required field missing`;
//! - strings must be non-empty unless `len_min` says otherwise;
//! - sets are arrays whose duplicates are dropped;
//! - unknown keys report `unknown field`;
//! - record-level checks (Kong's `entity_checks`, [`EntityCheck`]) run after the fields were
//!   validated, each by Kong's rule ([`crate::checks`]): a check declares the fields it reads
//!   and its checker's flags, sees the given value of a field that failed, and is skipped
//!   when one of its fields has an error unless its checker runs with invalid fields (so an
//!   `at_least_one_of` or a `conditional` reports beside field errors, a custom check does
//!   not).

use std::fmt;
use std::sync::Arc;

use serde_json::{Map, Value};

/// A check on a single value; `Err` carries Kong's message.
pub type ValueCheck = Arc<dyn Fn(&Value) -> Result<(), String> + Send + Sync>;

pub use crate::checks::EntityCheck;

/// The validated values of a record, in schema order: a small vector keyed by the schema's
/// static field names. Cheaper than a JSON map on the load path (no hashing, no key
/// allocation); [`Fields::into_map`] gives the JSON object.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Fields(Vec<(&'static str, Value)>);

impl Fields {
    /// No values.
    pub fn new() -> Self {
        Fields(Vec::new())
    }
    /// Room for `n` values.
    pub fn with_capacity(n: usize) -> Self {
        Fields(Vec::with_capacity(n))
    }
    /// The value of a field.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.0.iter().find(|(k, _)| *k == name).map(|(_, v)| v)
    }
    /// The value of a field, mutably.
    pub fn get_mut(&mut self, name: &str) -> Option<&mut Value> {
        self.0.iter_mut().find(|(k, _)| *k == name).map(|(_, v)| v)
    }
    /// Whether a field has a value.
    pub fn contains_key(&self, name: &str) -> bool {
        self.get(name).is_some()
    }
    /// Sets a field (replacing its value, or appending it).
    pub fn insert(&mut self, name: &'static str, value: Value) {
        match self.get_mut(name) {
            Some(v) => *v = value,
            None => self.0.push((name, value)),
        }
    }
    /// Removes a field.
    pub fn remove(&mut self, name: &str) -> Option<Value> {
        let i = self.0.iter().position(|(k, _)| *k == name)?;
        Some(self.0.remove(i).1)
    }
    /// Number of values.
    pub fn len(&self) -> usize {
        self.0.len()
    }
    /// Whether there is no value.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    /// The values, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, &Value)> {
        self.0.iter().map(|(k, v)| (*k, v))
    }
    /// The JSON object.
    pub fn into_map(self) -> Map<String, Value> {
        self.0
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect()
    }
    /// A copy as a JSON object.
    pub fn to_map(&self) -> Map<String, Value> {
        self.0
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }
    /// The `i`-th value, with its field's name.
    pub(crate) fn entry(&self, i: usize) -> Option<(&'static str, &Value)> {
        self.0.get(i).map(|(k, v)| (*k, v))
    }
    /// The values, moved out.
    pub(crate) fn into_entries(self) -> Vec<(&'static str, Value)> {
        self.0
    }
    /// Deserializes a typed value from the fields without building a JSON object.
    pub fn deserialize<T: serde::de::DeserializeOwned>(self) -> Result<T, serde_json::Error> {
        let de = serde::de::value::MapDeserializer::<_, serde_json::Error>::new(self.0.into_iter());
        T::deserialize(de)
    }
}

/// Read access to an input record: a parsed JSON object, or the loader's lighter list of
/// entries. Validation and id generation only look values up and walk the entries in order.
pub trait Input {
    /// The value of a key.
    fn get(&self, key: &str) -> Option<&Value>;
    /// The entries, in document order.
    fn entries(&self) -> impl Iterator<Item = (&str, &Value)>;
}

impl Input for Map<String, Value> {
    fn get(&self, key: &str) -> Option<&Value> {
        Map::get(self, key)
    }
    fn entries(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.iter().map(|(k, v)| (k.as_str(), v))
    }
}

/// The type of a field and its type-specific constraints.
#[derive(Clone)]
pub enum Kind {
    /// A string.
    String(StringRules),
    /// A whole number (JSON numbers with no fractional part).
    Integer {
        /// Inclusive range.
        between: Option<(i64, i64)>,
        /// Allowed values.
        one_of: Option<Vec<i64>>,
    },
    /// Any JSON number.
    Number {
        /// Inclusive range.
        between: Option<(f64, f64)>,
    },
    /// `true` or `false`.
    Boolean,
    /// An ordered list; with `set`, duplicates are dropped.
    Array {
        /// Schema of each element.
        elements: Box<Field>,
        /// Whether this is a set.
        set: bool,
        /// Minimum number of elements.
        len_min: Option<usize>,
        /// Maximum number of elements.
        len_max: Option<usize>,
    },
    /// A JSON object with arbitrary keys.
    Map {
        /// Schema of each key (always a string).
        keys: Box<Field>,
        /// Schema of each value.
        values: Box<Field>,
    },
    /// A nested record.
    Record(Arc<Record>),
    /// A reference to another entity (`{"id": ...}`, an id, or an endpoint key).
    Foreign(&'static str),
    /// Anything (no validation).
    Any,
}

/// Constraints on strings.
#[derive(Clone)]
pub struct StringRules {
    /// Minimum length in bytes (Kong's default is 1).
    pub len_min: usize,
    /// Maximum length in bytes.
    pub len_max: Option<usize>,
    /// Allowed values.
    pub one_of: Option<Vec<&'static str>>,
}

impl Default for StringRules {
    fn default() -> Self {
        StringRules {
            len_min: 1,
            len_max: None,
            one_of: None,
        }
    }
}

/// One field of a record.
#[derive(Clone)]
pub struct Field {
    /// The key in the record.
    pub name: &'static str,
    /// Its type.
    pub kind: Kind,
    /// Whether a value must be present (after defaults).
    pub required: bool,
    /// Value used when the field is absent.
    pub default: Option<Value>,
    /// Whether the data plane generates the value when absent (Kong's `auto`).
    pub auto: bool,
    /// Whether the value must be unique among entities of the same type.
    pub unique: bool,
    /// Extra validation run after the type checks passed.
    pub check: Option<ValueCheck>,
    /// Whether the value may be a vault reference (`{vault://...}`; Kong's `referenceable`):
    /// entity checks reading a reference are skipped.
    pub referenceable: bool,
    /// Kong's `uuid` marker: the string is a UUID (shown in `GET /schemas`; the check itself
    /// is the field's [`Field::check`]).
    pub uuid: bool,
    /// Kong's `timestamp` marker: the number is a creation or update time in (milli)seconds.
    pub timestamp: bool,
}

impl fmt::Debug for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Field")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// A record: ordered fields plus record-level checks.
#[derive(Clone, Default)]
pub struct Record {
    /// The fields, in output order.
    pub fields: Vec<Field>,
    /// Checks on the whole record (Kong's `entity_checks`), in Kong's order.
    pub checks: Vec<EntityCheck>,
}

impl fmt::Debug for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.fields.iter().map(|x| x.name))
            .finish()
    }
}

// === builders ===

impl Field {
    /// A field of the given kind, optional, with no default.
    pub fn new(name: &'static str, kind: Kind) -> Self {
        Field {
            name,
            kind,
            required: false,
            default: None,
            auto: false,
            unique: false,
            check: None,
            referenceable: false,
            uuid: false,
            timestamp: false,
        }
    }
    /// A non-empty string.
    pub fn string(name: &'static str) -> Self {
        Self::new(name, Kind::String(StringRules::default()))
    }
    /// A string that may be empty.
    pub fn string_any(name: &'static str) -> Self {
        Self::new(
            name,
            Kind::String(StringRules {
                len_min: 0,
                ..Default::default()
            }),
        )
    }
    /// A string limited to the given values.
    pub fn one_of(name: &'static str, values: &[&'static str]) -> Self {
        Self::new(
            name,
            Kind::String(StringRules {
                one_of: Some(values.to_vec()),
                ..Default::default()
            }),
        )
    }
    /// An integer in an inclusive range.
    pub fn integer(name: &'static str, min: i64, max: i64) -> Self {
        Self::new(
            name,
            Kind::Integer {
                between: Some((min, max)),
                one_of: None,
            },
        )
    }
    /// An integer without range.
    pub fn any_integer(name: &'static str) -> Self {
        Self::new(
            name,
            Kind::Integer {
                between: None,
                one_of: None,
            },
        )
    }
    /// A number in an inclusive range.
    pub fn number(name: &'static str, min: f64, max: f64) -> Self {
        Self::new(
            name,
            Kind::Number {
                between: Some((min, max)),
            },
        )
    }
    /// A boolean.
    pub fn boolean(name: &'static str) -> Self {
        Self::new(name, Kind::Boolean)
    }
    /// An array of elements described by `elements` (its name is ignored).
    pub fn array(name: &'static str, elements: Field) -> Self {
        Self::new(
            name,
            Kind::Array {
                elements: Box::new(elements),
                set: false,
                len_min: None,
                len_max: None,
            },
        )
    }
    /// A set (duplicates dropped) of elements described by `elements`.
    pub fn set(name: &'static str, elements: Field) -> Self {
        Self::new(
            name,
            Kind::Array {
                elements: Box::new(elements),
                set: true,
                len_min: None,
                len_max: None,
            },
        )
    }
    /// A map from keys to values.
    pub fn map(name: &'static str, keys: Field, values: Field) -> Self {
        Self::new(
            name,
            Kind::Map {
                keys: Box::new(keys),
                values: Box::new(values),
            },
        )
    }
    /// A nested record.
    pub fn record(name: &'static str, record: Record) -> Self {
        Self::new(name, Kind::Record(Arc::new(record)))
    }
    /// A reference to another entity type (plural entity name, e.g. `services`).
    pub fn foreign(name: &'static str, entity: &'static str) -> Self {
        Self::new(name, Kind::Foreign(entity))
    }
    /// A value of any shape.
    pub fn any(name: &'static str) -> Self {
        Self::new(name, Kind::Any)
    }

    /// The value the field takes when absent (its validated default), if any.
    pub(crate) fn default_value(&self) -> Option<Value> {
        match validate_field(self, None) {
            Outcome::Ok(Value::Null) | Outcome::Err(_) => None,
            Outcome::Ok(v) => Some(v),
        }
    }

    /// Marks the field required.
    pub fn required(mut self) -> Self {
        self.required = true;
        self
    }
    /// Sets the default.
    pub fn default(mut self, v: impl Into<Value>) -> Self {
        self.default = Some(v.into());
        self
    }
    /// Marks the field as generated when absent.
    pub fn auto(mut self) -> Self {
        self.auto = true;
        self
    }
    /// Marks the field unique among entities of its type.
    pub fn unique(mut self) -> Self {
        self.unique = true;
        self
    }
    /// Sets Kong's `uuid` marker.
    pub fn uuid_marker(mut self) -> Self {
        self.uuid = true;
        self
    }
    /// Sets Kong's `timestamp` marker.
    pub fn timestamp_marker(mut self) -> Self {
        self.timestamp = true;
        self
    }
    /// Marks the field referenceable (its value may be a vault reference).
    pub fn referenceable(mut self) -> Self {
        self.referenceable = true;
        self
    }
    /// Adds a value check run after the type checks.
    pub fn check(
        mut self,
        f: impl Fn(&Value) -> Result<(), String> + Send + Sync + 'static,
    ) -> Self {
        self.check = Some(Arc::new(f));
        self
    }
    /// Adds a check on the string value.
    pub fn check_str(self, f: impl Fn(&str) -> Result<(), String> + Send + Sync + 'static) -> Self {
        self.check(move |v| match v.as_str() {
            Some(s) => f(s),
            None => Ok(()),
        })
    }
    /// Sets minimum/maximum lengths (strings: bytes; arrays: elements).
    pub fn len(mut self, min: usize, max: Option<usize>) -> Self {
        match &mut self.kind {
            Kind::String(r) => {
                r.len_min = min;
                r.len_max = max;
            }
            Kind::Array {
                len_min, len_max, ..
            } => {
                *len_min = Some(min);
                *len_max = max;
            }
            _ => {}
        }
        self
    }
    /// Restricts an integer field to the given values.
    pub fn int_one_of(mut self, values: &[i64]) -> Self {
        if let Kind::Integer { one_of, .. } = &mut self.kind {
            *one_of = Some(values.to_vec());
        }
        self
    }
}

impl Record {
    /// A record with the given fields and no checks.
    pub fn new(fields: Vec<Field>) -> Self {
        Record {
            fields,
            checks: Vec::new(),
        }
    }
    /// Adds an entity check (after the others).
    pub fn check(mut self, mut c: EntityCheck) -> Self {
        c.bind(&self.fields);
        self.checks.push(c);
        self
    }
    /// A record with the given fields and entity checks (in Kong's order).
    pub fn with_checks(fields: Vec<Field>, checks: Vec<EntityCheck>) -> Self {
        checks
            .into_iter()
            .fold(Record::new(fields), |r, c| r.check(c))
    }
    /// Looks a field up by name.
    pub fn field(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.name == name)
    }
    /// The record's defaults, as Kong fills them for an empty input.
    pub fn defaults(&self) -> Value {
        let (v, _) = self.validate(&Map::new());
        Value::Object(v.into_map())
    }
}

// === errors ===

/// Validation errors of one record, shaped like Kong's error tables: entity-level messages
/// (`@entity`) plus per-field errors, nested for records and arrays.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Errors {
    /// Entity-level messages.
    pub entity: Vec<String>,
    /// Field errors, in schema order; array elements are keyed by 1-based index.
    pub fields: Vec<(String, FieldError)>,
    /// The keys are the positions of an array's elements (numbers to Kong, whose Lua sorts
    /// them by value and whose cjson writes them as a JSON array) rather than names (a
    /// record's fields, a map's keys: strings, even when all digits, sorted by bytes and
    /// written as a JSON object).
    pub array: bool,
}

/// The error of one field.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldError {
    /// A message about the field itself.
    Message(String),
    /// Errors inside a record, map or array value.
    Nested(Errors),
}

impl Errors {
    /// No error yet, of an array's elements (keyed by position: [`Errors::array`]).
    pub fn positions() -> Self {
        Errors {
            array: true,
            ..Errors::default()
        }
    }
    /// Whether there is no error at all.
    pub fn is_empty(&self) -> bool {
        self.entity.is_empty() && self.fields.is_empty()
    }
    /// Adds an entity-level message.
    pub fn entity(&mut self, msg: impl Into<String>) {
        self.entity.push(msg.into());
    }
    /// Adds (or replaces) the message of a field.
    pub fn field(&mut self, name: impl Into<String>, msg: impl Into<String>) {
        self.set(name, FieldError::Message(msg.into()));
    }
    /// Sets (or replaces, in its place) the error of a field.
    pub fn set(&mut self, name: impl Into<String>, e: FieldError) {
        let name = name.into();
        match self.fields.iter_mut().find(|(n, _)| *n == name) {
            Some((_, old)) => *old = e,
            None => self.fields.push((name, e)),
        }
    }
    /// The error of a field.
    pub fn get(&self, name: &str) -> Option<&FieldError> {
        self.fields.iter().find(|(n, _)| n == name).map(|(_, e)| e)
    }
    /// Whether a field has an error.
    pub fn has_field(&self, name: &str) -> bool {
        self.fields.iter().any(|(n, _)| n == name)
    }
    /// Flattens to `(dotted field path, message)` pairs, as Kong's `categorize_errors`
    /// (`kong/db/errors.lua`) builds a `flattened_errors` entry's `errors`: a field's
    /// message with its path (`None`: an entity-level message, whether of `self` or of a
    /// nested record, which Kong reports as `{"type": "entity"}` with no field at any depth).
    ///
    /// The order is Kong's: at each level the keys of the error table, `@entity` among them,
    /// sorted as LuaJIT's `table.sort` sorts them ([`lua_key_order`]: an array's positions
    /// by value, names by their bytes, `@entity` like any other) and taken from the last
    /// (Kong's `drain` pops them off the end of the sorted list), so in descending order; a
    /// nested table's errors in its key's place, in the same order within; an `@entity`
    /// list's messages in their own order.
    pub fn flatten(&self) -> Vec<(Option<String>, String)> {
        let mut out = Vec::new();
        self.flatten_into("", &mut out);
        out
    }
    fn flatten_into(&self, prefix: &str, out: &mut Vec<(Option<String>, String)>) {
        const ENTITY: &str = "@entity";
        let mut keys: Vec<(&str, Option<&FieldError>)> = self
            .fields
            .iter()
            .map(|(name, e)| (name.as_str(), Some(e)))
            .collect();
        if !self.entity.is_empty() {
            keys.push((ENTITY, None));
        }
        keys.sort_by(|a, b| lua_key_order(b.0, a.0, self.array));
        for (name, e) in keys {
            let path = || {
                if prefix.is_empty() {
                    name.to_string()
                } else {
                    format!("{prefix}.{name}")
                }
            };
            match e {
                None => out.extend(self.entity.iter().map(|m| (None, m.clone()))),
                Some(FieldError::Message(m)) => out.push((Some(path()), m.clone())),
                Some(FieldError::Nested(n)) => n.flatten_into(&path(), out),
            }
        }
    }
    /// Flattens to `(dotted field path, message)` pairs in the order the errors were found
    /// (the document's): each level's entity-level messages, then its fields in schema
    /// order, a nested table's errors in its field's place (`None`: an entity-level message,
    /// as in [`Errors::flatten`]). For reports read by people.
    pub fn flatten_in_document_order(&self) -> Vec<(Option<String>, String)> {
        fn walk(e: &Errors, prefix: &str, out: &mut Vec<(Option<String>, String)>) {
            out.extend(e.entity.iter().map(|m| (None, m.clone())));
            for (name, fe) in &e.fields {
                let path = if prefix.is_empty() {
                    name.clone()
                } else {
                    format!("{prefix}.{name}")
                };
                match fe {
                    FieldError::Message(m) => out.push((Some(path), m.clone())),
                    FieldError::Nested(n) => walk(n, &path, out),
                }
            }
        }
        let mut out = Vec::new();
        walk(self, "", &mut out);
        out
    }
    /// Kong's nested error table as JSON (`{"field": "msg", "@entity": [..]}`); an array's
    /// errors ([`Errors::array`]) become a JSON array with `null` holes when dense enough
    /// (cjson's rule), every other level an object, whatever its keys.
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        for (name, e) in &self.fields {
            let v = match e {
                FieldError::Message(s) => Value::String(s.clone()),
                FieldError::Nested(n) => n.to_json(),
            };
            m.insert(name.clone(), v);
        }
        if !self.entity.is_empty() {
            m.insert(
                "@entity".into(),
                Value::Array(self.entity.iter().cloned().map(Value::String).collect()),
            );
        }
        if self.array {
            index_map_to_array(m)
        } else {
            Value::Object(m)
        }
    }
}

/// Keys of one level of an error table as LuaJIT's `table.sort` orders them: an array's
/// positions (`array`: [`Errors::array`]) by value, as the numbers they are to Kong; any
/// other level's keys (a record's fields, `@entity`, a map's keys, which come from JSON or
/// YAML objects and are strings even when all digits) by their bytes, as LuaJIT compares
/// strings (`"10"` before `"9"`; `@entity` after the digits and the punctuation below `@`,
/// before the letters and `_`). Kong's levels never mix the two (a table that did would fail
/// to sort in Kong: see the admin API's answer to such a body).
pub(crate) fn lua_key_order(a: &str, b: &str, array: bool) -> std::cmp::Ordering {
    if array && let (Ok(x), Ok(y)) = (a.parse::<u64>(), b.parse::<u64>()) {
        return x.cmp(&y);
    }
    a.as_bytes().cmp(b.as_bytes())
}

/// Turns `{"1": a, "3": b}` into `[a, null, b]` when the keys are all indices and the array
/// is not too sparse (the rule cjson applies to Lua tables).
pub(crate) fn index_map_to_array(m: Map<String, Value>) -> Value {
    if m.is_empty() {
        return Value::Object(m);
    }
    let mut max = 0usize;
    for k in m.keys() {
        match k.parse::<usize>() {
            Ok(i) if i >= 1 => max = max.max(i),
            _ => return Value::Object(m),
        }
    }
    if max > 10 && max > 2 * m.len() {
        return Value::Object(m);
    }
    let mut arr = vec![Value::Null; max];
    for (k, v) in m {
        if let Ok(i) = k.parse::<usize>() {
            arr[i - 1] = v;
        }
    }
    Value::Array(arr)
}

// === validation ===

enum Outcome {
    Ok(Value),
    Err(FieldError),
}

impl Record {
    /// Validates `input` against the record: fills defaults, normalises values (integers,
    /// sets) and reports every error. The returned map holds only known fields; `input` is
    /// left untouched so that callers can report it alongside the errors.
    pub fn validate(&self, input: &Map<String, Value>) -> (Fields, Errors) {
        self.validate_overlay(input, &Overlay::default())
    }

    /// [`Record::validate`] of a partial record, as Kong's `validate_update` checks an
    /// update (`full_check` off): only the fields given are validated (none is filled with
    /// its default; a required one given as `null` is missing), and the checks see a field
    /// left out as nil (see [`crate::checks`]).
    pub fn validate_update(&self, input: &Map<String, Value>) -> (Fields, Errors) {
        let overlay = Overlay {
            updating: true,
            ..Overlay::default()
        };
        self.validate_overlay(input, &overlay)
    }

    /// Each field's position in [`Record::fields`], by name (for [`Overlay::index`]).
    pub(crate) fn positions(&self) -> rustc_hash::FxHashMap<&'static str, usize> {
        self.fields
            .iter()
            .enumerate()
            .map(|(i, f)| (f.name, i))
            .collect()
    }

    /// The validated default of each field (`None` where there is none, or where it does
    /// not validate), for [`Overlay::defaults`].
    pub(crate) fn validated_defaults(&self) -> Vec<Option<Value>> {
        self.fields
            .iter()
            .map(|f| match f.default {
                Some(_) => f.default_value(),
                None => None,
            })
            .collect()
    }

    /// [`Record::validate`] of `input` changed as `overlay` says, without copying the input.
    pub(crate) fn validate_overlay<I: Input + ?Sized>(
        &self,
        input: &I,
        overlay: &Overlay<'_>,
    ) -> (Fields, Errors) {
        let Overlay {
            skip,
            extra,
            omit,
            defaults,
            index: _,
            updating,
        } = *overlay;
        let mut errors = Errors::default();
        // One pass over the input (usually a few keys) rather than one map lookup per schema
        // field (usually many, most absent).
        let mut given: Vec<Option<&Value>> = vec![None; self.fields.len()];
        let mut unknown: Vec<&str> = Vec::new();
        for (k, v) in input.entries() {
            match self.fields.iter().position(|f| f.name == k) {
                _ if skip.contains(&k) => {}
                Some(i) => given[i] = Some(v),
                None if k == "_comment" || k == "_ignore" => {}
                None => unknown.push(k),
            }
        }
        for (k, v) in extra {
            match self.fields.iter().position(|f| f.name == *k) {
                Some(i) => given[i] = Some(v),
                None => {
                    unknown.retain(|u| u != k);
                    unknown.push(k);
                }
            }
        }
        let mut out = Fields::with_capacity(self.fields.len());
        for (i, (f, v)) in self.fields.iter().zip(given.iter().copied()).enumerate() {
            if omit.contains(&f.name) {
                continue;
            }
            if updating {
                match v {
                    // (Kong's update leaves it nil: no default, not missing)
                    None => continue,
                    // (and a `null` stays one: missing when required)
                    Some(Value::Null) => {
                        if f.required {
                            errors.fields.push((
                                f.name.to_string(),
                                FieldError::Message("required field missing".into()),
                            ));
                        }
                        continue;
                    }
                    Some(_) => {}
                }
            }
            if v.is_none_or(Value::is_null)
                && let Some(Some(d)) = defaults.and_then(|d| d.get(i))
            {
                out.0.push((f.name, d.clone()));
                continue;
            }
            match validate_field(f, v) {
                Outcome::Ok(Value::Null) => {}
                Outcome::Ok(v) => out.0.push((f.name, v)),
                Outcome::Err(e) => errors.fields.push((f.name.to_string(), e)),
            }
        }
        for k in unknown {
            errors
                .fields
                .push((k.to_string(), FieldError::Message("unknown field".into())));
        }
        if !self.checks.is_empty() {
            let values = crate::checks::Values::new(self, &out, Some(&given)).updating(updating);
            for c in &self.checks {
                c.run(&values, &mut errors);
            }
        }
        (out, errors)
    }
}

impl Record {
    /// [`Record::validate_overlay`] of owned entries, for the load path of valid documents:
    /// the values are moved into the result rather than copied. `None` on any error (the
    /// result of a success is the same as `validate_overlay`'s).
    pub(crate) fn validate_moving<K: AsRef<str>>(
        &self,
        entries: Vec<(K, Value)>,
        overlay: &Overlay<'_>,
    ) -> Option<Fields> {
        let Overlay {
            skip,
            extra,
            omit,
            defaults,
            index,
            updating: _,
        } = *overlay;
        let position = |k: &str| match index {
            Some(index) => index.get(k).copied(),
            None => self.fields.iter().position(|f| f.name == k),
        };
        // absent and `null` are alike to validation
        let mut given: Vec<Value> = (0..self.fields.len()).map(|_| Value::Null).collect();
        for (k, v) in entries {
            let k = k.as_ref();
            if skip.contains(&k) {
                continue;
            }
            match position(k) {
                Some(i) => given[i] = v,
                None if k == "_comment" || k == "_ignore" => {}
                None => return None,
            }
        }
        for (k, v) in extra {
            given[position(k)?] = (*v).clone();
        }
        let mut out = Fields::with_capacity(self.fields.len());
        for (i, (f, v)) in self.fields.iter().zip(given).enumerate() {
            if omit.contains(&f.name) {
                continue;
            }
            if v.is_null()
                && let Some(Some(d)) = defaults.and_then(|d| d.get(i))
            {
                out.0.push((f.name, d.clone()));
                continue;
            }
            match validate_field_moving(f, v)? {
                Value::Null => {}
                v => out.0.push((f.name, v)),
            }
        }
        // every field validated: the checks see the validated values (no allocation unless
        // one fails)
        if !self.checks.is_empty() {
            let values = crate::checks::Values::new(self, &out, None);
            let mut errors = Errors::default();
            for c in &self.checks {
                c.run(&values, &mut errors);
                if !errors.is_empty() {
                    return None;
                }
            }
        }
        Some(out)
    }
}

/// [`validate_field`] of an owned value: the value itself when valid (strings and arrays are
/// not copied), `None` on an error.
pub(crate) fn validate_field_moving(f: &Field, v: Value) -> Option<Value> {
    if v.is_null() {
        return match validate_field(f, None) {
            Outcome::Ok(v) => Some(v),
            Outcome::Err(_) => None,
        };
    }
    let out = validate_kind_moving(&f.kind, v)?;
    if let Some(c) = &f.check {
        c(&out).ok()?;
    }
    Some(out)
}

/// [`validate_kind`] of an owned value, `None` on an error.
fn validate_kind_moving(kind: &Kind, v: Value) -> Option<Value> {
    match kind {
        Kind::Any => Some(v),
        Kind::Number { .. } => match validate_kind(kind, &v) {
            Outcome::Ok(_) => Some(v),
            Outcome::Err(_) => None,
        },
        Kind::String(r) => {
            let Value::String(s) = &v else {
                return None;
            };
            if s.len() < r.len_min
                || r.len_max.is_some_and(|max| s.len() > max)
                || r.one_of.as_ref().is_some_and(|o| !o.contains(&s.as_str()))
            {
                return None;
            }
            Some(v)
        }
        Kind::Boolean => v.is_boolean().then_some(v),
        Kind::Array {
            elements,
            set,
            len_min,
            len_max,
        } => {
            let Value::Array(mut items) = v else {
                return None;
            };
            if len_min.is_some_and(|min| items.len() < min)
                || len_max.is_some_and(|max| items.len() > max)
            {
                return None;
            }
            // in place: element `r` validated into slot `w` (`w <= r`)
            let mut w = 0;
            let mut r = 0;
            while r < items.len() {
                let item = std::mem::take(&mut items[r]);
                r += 1;
                if item.is_null() {
                    return None;
                }
                let v = validate_field_moving(elements, item)?;
                if *set && items[..w].contains(&v) {
                    continue;
                }
                items[w] = v;
                w += 1;
                // a scan of the kept elements for each element is quadratic in a long set
                if *set && w == SetSeen::SCAN_MAX {
                    w = validate_set_rest_moving(elements, &mut items, w, r)?;
                    break;
                }
            }
            items.truncate(w);
            Some(Value::Array(items))
        }
        // valid as given: kept, not copied
        Kind::Foreign(_) => match validate_kind(kind, &v) {
            Outcome::Ok(_) => Some(v),
            Outcome::Err(_) => None,
        },
        Kind::Integer { .. } | Kind::Map { .. } | Kind::Record(_) => {
            match validate_kind(kind, &v) {
                Outcome::Ok(v) => Some(v),
                Outcome::Err(_) => None,
            }
        }
    }
}

/// The rest of a long set from element `r` on, as [`validate_kind_moving`] validates it
/// (`items[..w]` kept so far), with an index of the kept elements; the number kept.
#[inline(never)]
fn validate_set_rest_moving(
    elements: &Field,
    items: &mut [Value],
    mut w: usize,
    r: usize,
) -> Option<usize> {
    let mut seen = SetSeen::default();
    for r in r..items.len() {
        let item = std::mem::take(&mut items[r]);
        if item.is_null() {
            return None;
        }
        let v = validate_field_moving(elements, item)?;
        if !seen.is_new(&items[..w], &v) {
            continue;
        }
        items[w] = v;
        w += 1;
    }
    Some(w)
}

/// How [`Record::validate_overlay`] changes its input.
#[derive(Clone, Copy, Default)]
pub(crate) struct Overlay<'a> {
    /// Keys of the input to leave out.
    pub skip: &'a [&'a str],
    /// Values to set, replacing given ones.
    pub extra: &'a [(&'a str, &'a Value)],
    /// Fields left out of the result altogether (the caller fills them).
    pub omit: &'a [&'a str],
    /// The record's [`Record::validated_defaults`], to copy rather than validate again.
    pub defaults: Option<&'a [Option<Value>]>,
    /// The position of each field by name ([`Record::validate_moving`] only).
    pub index: Option<&'a rustc_hash::FxHashMap<&'static str, usize>>,
    /// A partial record, validated as an update ([`Record::validate_update`]; the
    /// reporting path only).
    pub updating: bool,
}

/// The error of a field's given (non-null) value, if any.
pub(crate) fn field_error(f: &Field, v: &Value) -> Option<FieldError> {
    match validate_field(f, Some(v)) {
        Outcome::Ok(_) => None,
        Outcome::Err(e) => Some(e),
    }
}

/// Kong's type error of a value for a kind (`expected a string`, ...), if any: the first
/// error Kong's `validate_field` gives, before any validator.
pub(crate) fn type_error(kind: &Kind, v: &Value) -> Option<&'static str> {
    let ok = match kind {
        Kind::String(_) => v.is_string(),
        Kind::Integer { .. } => as_integer(v).is_some(),
        Kind::Number { .. } => v.is_number(),
        Kind::Boolean => v.is_boolean(),
        Kind::Array { .. } => v.is_array(),
        Kind::Map { .. } | Kind::Record(_) => v.is_object(),
        Kind::Foreign(_) | Kind::Any => true,
    };
    if ok {
        return None;
    }
    Some(match kind {
        Kind::String(_) => "expected a string",
        Kind::Integer { .. } => "expected an integer",
        Kind::Number { .. } => "expected a number",
        Kind::Boolean => "expected a boolean",
        Kind::Array { set: true, .. } => "expected a set",
        Kind::Array { set: false, .. } => "expected an array",
        Kind::Map { .. } => "expected a map",
        _ => "expected a record",
    })
}

fn msg(s: impl Into<String>) -> Outcome {
    Outcome::Err(FieldError::Message(s.into()))
}

fn validate_field(f: &Field, v: Option<&Value>) -> Outcome {
    let out = match v {
        None | Some(Value::Null) => match &f.default {
            Some(d) => match validate_kind(&f.kind, d) {
                Outcome::Ok(v) => v,
                e => return e,
            },
            None if f.required => return msg("required field missing"),
            None => return Outcome::Ok(Value::Null),
        },
        Some(v) => match validate_kind(&f.kind, v) {
            Outcome::Ok(v) => v,
            e => return e,
        },
    };
    if let Some(c) = &f.check
        && let Err(e) = c(&out)
    {
        return msg(e);
    }
    Outcome::Ok(out)
}

fn validate_kind(kind: &Kind, v: &Value) -> Outcome {
    match kind {
        Kind::Any => Outcome::Ok(v.clone()),
        Kind::String(r) => {
            let Value::String(s) = v else {
                return msg("expected a string");
            };
            if s.len() < r.len_min {
                return msg(format!("length must be at least {}", r.len_min));
            }
            if let Some(max) = r.len_max
                && s.len() > max
            {
                return msg(format!("length must be at most {max}"));
            }
            if let Some(one_of) = &r.one_of
                && !one_of.contains(&s.as_str())
            {
                return msg(format!("expected one of: {}", one_of.join(", ")));
            }
            Outcome::Ok(v.clone())
        }
        Kind::Integer { between, one_of } => {
            let Some(i) = as_integer(v) else {
                return msg("expected an integer");
            };
            if let Some(one_of) = one_of
                && !one_of.contains(&i)
            {
                let list: Vec<String> = one_of.iter().map(|x| x.to_string()).collect();
                return msg(format!("expected one of: {}", list.join(", ")));
            }
            if let Some((lo, hi)) = between
                && (i < *lo || i > *hi)
            {
                return msg(format!("value should be between {lo} and {hi}"));
            }
            Outcome::Ok(Value::from(i))
        }
        Kind::Number { between } => {
            let Some(n) = v.as_f64() else {
                return msg("expected a number");
            };
            if let Some((lo, hi)) = between
                && (n < *lo || n > *hi)
            {
                return msg(format!(
                    "value should be between {} and {}",
                    fmt_num(*lo),
                    fmt_num(*hi)
                ));
            }
            Outcome::Ok(v.clone())
        }
        Kind::Boolean => match v {
            Value::Bool(_) => Outcome::Ok(v.clone()),
            _ => msg("expected a boolean"),
        },
        Kind::Array {
            elements,
            set,
            len_min,
            len_max,
        } => {
            let Value::Array(items) = v else {
                return msg(if *set {
                    "expected a set"
                } else {
                    "expected an array"
                });
            };
            if let Some(min) = len_min
                && items.len() < *min
            {
                return msg(format!("length must be at least {min}"));
            }
            if let Some(max) = len_max
                && items.len() > *max
            {
                return msg(format!("length must be at most {max}"));
            }
            let mut errs = Errors::positions();
            let mut out: Vec<Value> = Vec::with_capacity(items.len());
            let mut seen = SetSeen::default();
            for (i, item) in items.iter().enumerate() {
                if item.is_null() {
                    errs.fields.push((
                        (i + 1).to_string(),
                        FieldError::Message("required field missing".into()),
                    ));
                    continue;
                }
                match validate_field(elements, Some(item)) {
                    Outcome::Ok(v) => {
                        if !*set || seen.is_new(&out, &v) {
                            out.push(v)
                        }
                    }
                    Outcome::Err(e) => errs.fields.push(((i + 1).to_string(), e)),
                }
            }
            if errs.is_empty() {
                Outcome::Ok(Value::Array(out))
            } else {
                Outcome::Err(FieldError::Nested(errs))
            }
        }
        Kind::Map { keys, values } => {
            let Value::Object(m) = v else {
                return msg("expected a map");
            };
            let mut errs = Errors::default();
            let mut out = Map::with_capacity(m.len());
            for (k, val) in m {
                if let Outcome::Err(e) = validate_field(keys, Some(&Value::String(k.clone()))) {
                    errs.fields.push((k.clone(), e));
                    continue;
                }
                match validate_field(values, Some(val)) {
                    Outcome::Ok(v) => {
                        out.insert(k.clone(), v);
                    }
                    Outcome::Err(e) => errs.fields.push((k.clone(), e)),
                }
            }
            if errs.is_empty() {
                Outcome::Ok(Value::Object(out))
            } else {
                Outcome::Err(FieldError::Nested(errs))
            }
        }
        Kind::Record(r) => {
            let Value::Object(m) = v else {
                return msg("expected a record");
            };
            let (out, errs) = r.validate(m);
            if errs.is_empty() {
                Outcome::Ok(Value::Object(out.into_map()))
            } else {
                Outcome::Err(FieldError::Nested(errs))
            }
        }
        Kind::Foreign(_) => match v {
            Value::String(s) if !s.is_empty() => Outcome::Ok(v.clone()),
            Value::Object(m) => match m.get("id") {
                Some(Value::String(_)) if m.len() == 1 => Outcome::Ok(v.clone()),
                _ => {
                    let mut e = Errors::default();
                    // (an object's keys are distinct: pushed, not replacing one another, which
                    // costs a scan of the messages each)
                    for k in m.keys().filter(|k| *k != "id") {
                        e.fields
                            .push((k.clone(), FieldError::Message("unknown field".into())));
                    }
                    match m.get("id") {
                        None | Some(Value::Null) => e.field("id", "required field missing"),
                        Some(Value::String(_)) => {}
                        Some(_) => e.field("id", "expected a string"),
                    }
                    Outcome::Err(FieldError::Nested(e))
                }
            },
            _ => msg("expected a record"),
        },
    }
}

/// The elements a set keeps, to drop duplicates as they come: a scan of the kept ones while
/// they are few (most sets: no hashing), a hash index of them once they are many (a scan for
/// each element of a long set is quadratic).
#[derive(Default)]
struct SetSeen(Option<Box<SetIndex>>);

/// The kept elements' positions by hash (randomly keyed: inputs cannot be made to collide).
struct SetIndex {
    at: std::collections::HashMap<u64, Vec<usize>>,
    state: std::hash::RandomState,
}

impl SetSeen {
    /// Kept elements up to which a scan is used.
    const SCAN_MAX: usize = 16;

    /// Whether `v` is none of `kept`; when it is new, the caller keeps it next (`kept` is
    /// the same list each call, grown by the new elements).
    #[inline]
    fn is_new(&mut self, kept: &[Value], v: &Value) -> bool {
        if kept.len() < Self::SCAN_MAX {
            return !kept.contains(v);
        }
        self.is_new_indexed(kept, v)
    }

    #[inline(never)]
    fn is_new_indexed(&mut self, kept: &[Value], v: &Value) -> bool {
        let index = self.0.get_or_insert_with(|| {
            let state = std::hash::RandomState::new();
            let mut at = std::collections::HashMap::with_capacity(2 * kept.len());
            for (i, k) in kept.iter().enumerate() {
                at.entry(hash_value(&state, k))
                    .or_insert_with(Vec::new)
                    .push(i);
            }
            Box::new(SetIndex { at, state })
        });
        let at = index.at.entry(hash_value(&index.state, v)).or_default();
        if at.iter().any(|i| kept.get(*i) == Some(v)) {
            return false;
        }
        at.push(kept.len());
        true
    }
}

/// A hash of a JSON value consistent with its equality: equal values hash alike (objects
/// by their size alone: equal maps may list their keys in other orders).
fn hash_value(state: &std::hash::RandomState, v: &Value) -> u64 {
    use std::hash::{BuildHasher, Hash, Hasher};
    fn feed(v: &Value, h: &mut impl Hasher) {
        match v {
            Value::Null => 0u8.hash(h),
            Value::Bool(b) => (1u8, b).hash(h),
            // equal numbers are of one kind and value; 0.0 == -0.0
            Value::Number(n) => {
                let bits = n.as_f64().map(|f| if f == 0.0 { 0 } else { f.to_bits() });
                (2u8, bits).hash(h)
            }
            Value::String(s) => (3u8, s).hash(h),
            Value::Array(a) => {
                (4u8, a.len()).hash(h);
                for x in a {
                    feed(x, h);
                }
            }
            Value::Object(m) => (5u8, m.len()).hash(h),
        }
    }
    let mut h = state.build_hasher();
    feed(v, &mut h);
    h.finish()
}

fn fmt_num(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e15 {
        format!("{}", n as i64)
    } else {
        format!("{n}")
    }
}

/// The value as an integer when it is a whole JSON number.
pub fn as_integer(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Some(i)
            } else if let Some(f) = n.as_f64() {
                if f.fract() == 0.0 && f.abs() < 9.0e15 {
                    Some(f as i64)
                } else {
                    None
                }
            } else {
                None
            }
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => panic!("not an object"),
        }
    }

    #[test]
    fn defaults_types_and_unknown_fields() {
        let r = Record::new(vec![
            Field::string("name").required(),
            Field::integer("port", 0, 65535).default(80),
            Field::set("tags", Field::string("")),
            Field::record(
                "inner",
                Record::new(vec![Field::boolean("on").default(true)]),
            ),
        ]);
        let (out, e) = r.validate(&obj(
            json!({"name": "a", "tags": ["x", "x", "y"], "inner": {}}),
        ));
        assert!(e.is_empty(), "{e:?}");
        assert_eq!(
            Value::Object(out.into_map()),
            json!({"name": "a", "port": 80, "tags": ["x", "y"], "inner": {"on": true}})
        );

        let (_, e) = r.validate(&obj(
            json!({"port": 70000, "bogus": 1, "tags": [1], "inner": {"on": "yes"}}),
        ));
        assert_eq!(
            e.flatten(),
            // Kong's order: the keys descending
            vec![
                (Some("tags.1".to_string()), "expected a string".to_string()),
                (
                    Some("port".into()),
                    "value should be between 0 and 65535".into()
                ),
                (Some("name".into()), "required field missing".into()),
                (Some("inner.on".into()), "expected a boolean".into()),
                (Some("bogus".into()), "unknown field".into()),
            ]
        );
        // in the document's order: the schema's, then the unknown fields
        assert_eq!(
            e.flatten_in_document_order()
                .into_iter()
                .map(|(f, _)| f.unwrap_or_default())
                .collect::<Vec<_>>(),
            ["name", "port", "tags.1", "inner.on", "bogus"]
        );
        assert_eq!(
            e.to_json(),
            json!({"name": "required field missing", "port": "value should be between 0 and 65535",
                   "tags": ["expected a string"], "inner": {"on": "expected a boolean"}, "bogus": "unknown field"})
        );
    }

    #[test]
    fn an_arrays_positions_sort_by_value_and_other_keys_by_bytes() {
        // Kong's error tables: an array's errors keyed by the positions (numbers: 10 after
        // 9), a map's by its keys (strings from JSON or YAML, even all digits: "10" before
        // "9"), a record's by the field names; `@entity` sorts by its bytes among them (after
        // the digits, before the letters and `_`). `flatten` takes each level's keys from
        // the last.
        let r = Record::new(vec![
            Field::array("a", Field::integer("", 0, 9)),
            Field::map("m", Field::string(""), Field::integer("", 0, 9)),
            Field::record(
                "r",
                Record::new(vec![Field::integer("x", 0, 9), Field::integer("_y", 0, 9)]),
            ),
        ]);
        let mut items = vec![json!(0); 11];
        items[8] = json!(99); // position 9
        items[9] = json!(99); // position 10
        let (_, mut e) = r.validate(&obj(json!({
            "a": items,
            "m": {"9": 99, "10": 99, "1": 1},
            "r": {"x": 99, "_y": 99},
        })));
        assert!(!e.array);
        // (an entity-level message of the nested record, as its checks would add)
        if let Some((_, FieldError::Nested(n))) = e.fields.iter_mut().find(|(k, _)| k == "r") {
            n.entity("whole record");
            n.field("9", "a digit's name");
        }
        let got: Vec<(Option<String>, String)> = e.flatten();
        let paths: Vec<Option<&str>> = got.iter().map(|(f, _)| f.as_deref()).collect();
        assert_eq!(
            paths,
            [
                // "r" > "m" > "a"; within `r`: "x" > "_y" > "@entity" > "9"
                Some("r.x"),
                Some("r._y"),
                None,
                Some("r.9"),
                Some("m.9"),
                Some("m.10"),
                Some("a.10"),
                Some("a.9"),
            ]
        );
        // the JSON of the errors: an array's a JSON array, a map's an object
        let j = e.to_json();
        assert!(j["a"].is_array(), "{j}");
        assert_eq!(
            j["m"],
            json!({"9": "value should be between 0 and 9", "10": "value should be between 0 and 9"})
        );
    }

    #[test]
    fn integers_accept_whole_floats_only() {
        let r = Record::new(vec![Field::any_integer("n")]);
        assert!(r.validate(&obj(json!({"n": 5.0}))).1.is_empty());
        assert_eq!(
            r.validate(&obj(json!({"n": 5.5}))).1.flatten()[0].1,
            "expected an integer"
        );
        assert_eq!(
            r.validate(&obj(json!({"n": "5"}))).1.flatten()[0].1,
            "expected an integer"
        );
    }

    #[test]
    fn sets_drop_duplicates_short_and_long() {
        // below and past the scan's limit, in both validations, with values equal in
        // several spellings (numbers, objects in another key order)
        let r = Record::new(vec![Field::set("s", Field::any(""))]);
        for n in [3, SetSeen::SCAN_MAX, 5 * SetSeen::SCAN_MAX] {
            let mut items: Vec<Value> = (0..n).map(|i| json!(format!("v{i}"))).collect();
            let unique = items.clone();
            items.extend(unique.iter().rev().cloned());
            items.extend([json!(0.0), json!(-0.0), json!(1), json!(1)]);
            items.extend([json!({"a": 1, "b": 2}), json!({"b": 2, "a": 1})]);
            items.extend([json!([1, 2]), json!([2, 1]), json!([1, 2]), json!(null)]);
            let mut expected = unique;
            expected.extend([json!(0.0), json!(1)]);
            expected.extend([json!({"a": 1, "b": 2}), json!([1, 2]), json!([2, 1])]);
            // (`null` elements are refused)
            items.pop();
            let input = obj(json!({ "s": items }));
            let (out, e) = r.validate(&input);
            assert!(e.is_empty(), "{e:?}");
            assert_eq!(out.get("s"), Some(&Value::Array(expected.clone())), "{n}");
            let moved = r
                .validate_moving(input.into_iter().collect(), &Overlay::default())
                .expect("valid");
            assert_eq!(moved.get("s"), Some(&Value::Array(expected)), "{n}");
        }
    }

    #[test]
    fn sparse_index_maps_stay_objects() {
        let mut m = Map::new();
        m.insert("20".into(), json!("x"));
        assert!(index_map_to_array(m).is_object());
        let mut m = Map::new();
        m.insert("2".into(), json!("x"));
        assert_eq!(index_map_to_array(m), json!([null, "x"]));
    }
}
