//! Kong's entity checks (`entity_checks` of `kong/db/schema`): rules across the fields of a
//! record, run after its fields were validated, with the semantics of Kong's
//! `run_entity_check` (Kong 3.x, `kong/db/schema/init.lua`).
//!
//! Each check declares the fields it reads and which of them it requires, and carries its
//! checker's flags (`run_with_missing_fields`, `run_with_invalid_fields`). For each check, in
//! the record's order:
//!
//! - it reads the record's values as Kong's checkers do ([`Values`]): the validated value of
//!   a field that validated, the given value of one that did not, the default of one that was
//!   absent;
//! - a field without a value is *nil* only when it is required (Kong fills every other absent
//!   field with `null`, which is a value to this rule); a nil field the check requires counts
//!   as missing unless the checker runs with missing fields;
//! - the check is skipped when one of its fields has an error (a field message or one set by
//!   an earlier check) and its checker does not run with invalid fields; when every field is
//!   nil and it does not run with missing fields; and when one of its fields holds a vault
//!   reference in a referenceable field;
//! - missing fields get Kong's `field required for entity check` (over their own message);
//! - otherwise the check runs; a failure adds its message to `@entity` (and a `conditional`
//!   also sets the message of its `then_field`, over any message it had).
//!
//! The checkers are Kong's: [`EntityCheck::at_least_one_of`], [`EntityCheck::only_one_of`],
//! [`EntityCheck::distinct`], [`EntityCheck::mutually_required`],
//! [`EntityCheck::mutually_exclusive`], [`EntityCheck::mutually_exclusive_sets`],
//! [`EntityCheck::conditional`], [`EntityCheck::conditional_at_least_one_of`] and
//! [`EntityCheck::custom`] (Kong's `custom_entity_check`, a function over named fields).
//! [`EntityCheck::hidden`] holds what Kong declares elsewhere than in a schema's
//! `entity_checks` (a subschema's fields or checks): it runs as the others, and is not
//! rendered in the schema's JSON ([`EntityCheck::to_kong_json`]).

use std::sync::Arc;

use serde_json::{Map, Value, json};

use crate::keys::is_vault_reference;
use crate::schema::{Errors, Field, FieldError, Fields, Kind, Record, field_error, type_error};

/// Kong's `validation_errors.REQUIRED_FOR_ENTITY_CHECK`.
pub const REQUIRED_FOR_ENTITY_CHECK: &str = "field required for entity check";

/// The body of a custom check: `Err` carries the `@entity` message; it may also set field
/// messages in `errors`.
pub type CustomCheck = Arc<dyn Fn(&Values<'_>, &mut Errors) -> Result<(), String> + Send + Sync>;

/// A record's values as entity checks read them: the validated value of each field that
/// validated, the given value of each that did not, nothing for a field without a value.
#[derive(Clone, Copy)]
pub struct Values<'a> {
    record: &'a Record,
    out: &'a Fields,
    /// The given value of each field, by position (the reporting path only: on the load path
    /// every field validated).
    given: Option<&'a [Option<&'a Value>]>,
    /// Every field validated, none is nil, none is referenceable: the conditions on which a
    /// check is skipped cannot hold (the load path's usual case: no lookup of each field).
    plain: bool,
    /// With `plain`: the position in `out` of each field's value, by the field's position
    /// ([`ABSENT`] for none), for the lookups of checks bound to the record.
    index: Option<[u8; INDEXED]>,
    /// A partial record, checked as Kong checks an update (`full_check` off): a field left
    /// out is nil, whether required or not, and a check none of whose fields was given does
    /// not run ([`Values::updating`]).
    updating: bool,
}

/// The most fields of a record whose values [`Values`] indexes by position.
const INDEXED: usize = 64;
/// No value (in [`Values::index`]), or a field of no position (in [`EntityCheck::pos`]).
const ABSENT: u8 = u8::MAX;

impl<'a> Values<'a> {
    pub(crate) fn new(
        record: &'a Record,
        out: &'a Fields,
        given: Option<&'a [Option<&'a Value>]>,
    ) -> Self {
        let index = if given.is_none() {
            index(record, out)
        } else {
            None
        };
        let present = |i: usize, f: &Field| match &index {
            Some(index) => index[i] != ABSENT,
            None => out.contains_key(f.name),
        };
        let plain = given.is_none()
            && record
                .fields
                .iter()
                .enumerate()
                .all(|(i, f)| !f.referenceable && (!f.required || present(i, f)));
        Values {
            record,
            out,
            given,
            plain,
            index: if plain { index } else { None },
            updating: false,
        }
    }

    /// The values of an update (see [`Values`]'s `updating`); they must come with the given
    /// values (`given`), which tell a field left out from one given as `null`.
    pub(crate) fn updating(mut self, updating: bool) -> Self {
        self.updating = updating && self.given.is_some();
        self
    }

    /// The value of a field (`None`: no value, or `null`).
    pub fn get(&self, name: &str) -> Option<&'a Value> {
        self.lookup(name).0
    }

    /// The value of a field, and whether it is the validated one (or there is none).
    fn lookup(&self, name: &str) -> (Option<&'a Value>, bool) {
        if let Some(v) = self.out.get(name) {
            return (Some(v), true);
        }
        let Some(given) = self.given else {
            return (None, true);
        };
        let v = self
            .record
            .fields
            .iter()
            .position(|f| f.name == name)
            .and_then(|i| given.get(i).copied().flatten())
            .filter(|v| !v.is_null());
        (v, v.is_none())
    }

    /// The value of a field, when a string.
    pub fn str(&self, name: &str) -> Option<&'a str> {
        self.get(name).and_then(Value::as_str)
    }

    /// Whether the value of a field is its validated value (or it has none).
    pub fn is_valid(&self, name: &str) -> bool {
        self.lookup(name).1
    }

    /// Whether a field is nil to Kong: required, without a value; in an update, left out.
    fn is_nil(&self, name: &str) -> bool {
        if self.updating {
            let given = self
                .record
                .fields
                .iter()
                .position(|f| f.name == name)
                .and_then(|i| self.given.and_then(|g| g.get(i).copied().flatten()));
            return given.is_none();
        }
        self.get(name).is_none() && self.field(name).is_some_and(|f| f.required)
    }

    /// The definition of a field.
    pub fn field(&self, name: &str) -> Option<&'a Field> {
        self.record.field(name)
    }

    /// Kong's `is_nonempty` of a field's value as Kong's checkers see it: a record value
    /// has every field of its record filled in (`null` or its default) but the required
    /// ones without a default, so it is empty only when it has none of those.
    pub fn nonempty(&self, name: &str) -> bool {
        match self.get(name) {
            Some(Value::Object(o)) if o.is_empty() => match self.field(name).map(|f| &f.kind) {
                Some(Kind::Record(r)) => {
                    r.fields.iter().any(|f| !f.required || f.default.is_some())
                }
                _ => false,
            },
            v => is_nonempty(v),
        }
    }
}

/// The position in `out` of each field's value, by the field's position: one walk of the two
/// (`out` holds the validated values in the record's order, keyed by the fields' own names:
/// compared as pointers first). `None` for a record of many fields, or values out of order.
fn index(record: &Record, out: &Fields) -> Option<[u8; INDEXED]> {
    if record.fields.len() > INDEXED || out.len() >= usize::from(ABSENT) {
        return None;
    }
    // the values are keyed by their fields' own names: pointers first, text if need be
    walk::<false>(record, out).or_else(|| walk::<true>(record, out))
}

/// [`index`] by one walk, comparing the names as pointers or as text.
#[inline]
fn walk<const TEXT: bool>(record: &Record, out: &Fields) -> Option<[u8; INDEXED]> {
    let mut index = [ABSENT; INDEXED];
    let mut j = 0;
    for (slot, f) in index.iter_mut().zip(&record.fields) {
        if let Some((k, _)) = out.entry(j)
            && (if TEXT {
                k == f.name
            } else {
                std::ptr::eq(k, f.name)
            })
        {
            // (`j` < `out.len()` < `ABSENT`)
            *slot = j as u8;
            j += 1;
        }
    }
    (j == out.len()).then_some(index)
}

/// A check's view of the values: the lookups of its own fields go by their positions when
/// the check is bound to the record and the values are indexed.
struct Scope<'s, 'a> {
    v: &'s Values<'a>,
    c: &'s EntityCheck,
}

impl<'a> Scope<'_, 'a> {
    fn lookup(&self, name: &str) -> (Option<&'a Value>, bool) {
        if let Some(index) = &self.v.index
            && let Some(i) = self.c.fields.iter().position(|f| std::ptr::eq(*f, name))
            && let Some(&p) = self.c.pos.get(i)
            && let Some(&j) = index.get(usize::from(p))
        {
            let v = if j == ABSENT {
                None
            } else {
                self.v.out.entry(usize::from(j)).map(|(_, v)| v)
            };
            return (v, true);
        }
        self.v.lookup(name)
    }
    fn get(&self, name: &str) -> Option<&'a Value> {
        self.lookup(name).0
    }
    fn nonempty(&self, name: &str) -> bool {
        match self.get(name) {
            Some(Value::Object(o)) if o.is_empty() => self.v.nonempty(name),
            v => is_nonempty(v),
        }
    }
    fn slot(&self, name: &str) -> (Option<&'a Value>, bool, Option<&'a Field>) {
        let (v, valid) = self.lookup(name);
        let field = if valid && v.is_some() {
            None
        } else {
            self.v.field(name)
        };
        (v, valid, field)
    }
}

/// Kong's `is_nonempty`: a value that is not null, not an empty string, array or object.
pub fn is_nonempty(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => false,
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Array(a)) => !a.is_empty(),
        Some(Value::Object(o)) => !o.is_empty(),
        Some(_) => true,
    }
}

/// Kong's `quoted_list`: `'a', 'b'`.
pub fn quoted_list(names: &[&str]) -> String {
    let mut s = String::new();
    for (i, n) in names.iter().enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        s.push('\'');
        s.push_str(n);
        s.push('\'');
    }
    s
}

/// A rule on one value, merged over the field's own definition: Kong's `if_match`,
/// `then_match` and `else_match` (the validators Kong's schemas use in them).
#[derive(Clone, Default)]
pub struct Match {
    /// `eq` (`Some(Value::Null)`: the value must be null).
    pub eq: Option<Value>,
    /// `ne`.
    pub ne: Option<Value>,
    /// `one_of`.
    pub one_of: Option<&'static [&'static str]>,
    /// `not_one_of`.
    pub not_one_of: Option<&'static [&'static str]>,
    /// `match`: a Lua pattern, here an anchored literal (`^header$`).
    pub pattern: Option<&'static str>,
    /// `match_any`'s patterns (anchored literals).
    pub match_any: Option<&'static [&'static str]>,
    /// `len_eq`.
    pub len_eq: Option<usize>,
    /// `contains`.
    pub contains: Option<&'static str>,
    /// `elements`: a rule each element (a string) must pass, in place of the field's own.
    pub elements: Option<Box<Match>>,
    /// `required`.
    pub required: bool,
    /// `err`: the message in place of the validators' own.
    pub err: Option<&'static str>,
}

impl Match {
    /// `eq = null`.
    pub fn null() -> Self {
        Match {
            eq: Some(Value::Null),
            ..Default::default()
        }
    }
    /// `required = true`.
    pub fn required() -> Self {
        Match {
            required: true,
            ..Default::default()
        }
    }
    /// `one_of`.
    pub fn one_of(values: &'static [&'static str]) -> Self {
        Match {
            one_of: Some(values),
            ..Default::default()
        }
    }
    /// `not_one_of`.
    pub fn not_one_of(values: &'static [&'static str]) -> Self {
        Match {
            not_one_of: Some(values),
            ..Default::default()
        }
    }
    /// `match` with an anchored literal pattern (`^header$`).
    pub fn pattern(pattern: &'static str) -> Self {
        Match {
            pattern: Some(pattern),
            ..Default::default()
        }
    }
    /// `contains`.
    pub fn contains(value: &'static str) -> Self {
        Match {
            contains: Some(value),
            ..Default::default()
        }
    }
    /// `elements = { type = "string", ... }`.
    pub fn elements(rule: Match) -> Self {
        Match {
            elements: Some(Box::new(rule)),
            ..Default::default()
        }
    }

    /// Kong's `validate_field` of the rule merged over `field`'s definition. `value`:
    /// `None` for null; `valid`: whether it is the field's validated value (a given value
    /// that failed the field's own validation meets the field's rules again here, as in
    /// Kong, except those the rule replaces).
    pub fn check(
        &self,
        field: Option<&Field>,
        value: Option<&Value>,
        valid: bool,
    ) -> Result<(), FieldError> {
        self.eval(field, value, valid, true)
            .map_err(|e| e.unwrap_or_else(|| msg("invalid value".into())))
    }

    /// Whether the value passes [`Match::check`] (no message is built: an `if_match` that
    /// does not apply costs no allocation).
    pub fn passes(&self, field: Option<&Field>, value: Option<&Value>, valid: bool) -> bool {
        self.eval(field, value, valid, false).is_ok()
    }

    /// [`Match::check`]; the error's message only when `messages`.
    fn eval(
        &self,
        field: Option<&Field>,
        value: Option<&Value>,
        valid: bool,
        messages: bool,
    ) -> Result<(), Option<FieldError>> {
        let fail = |m: &dyn Fn() -> String, own_err: bool| {
            Err(messages.then(|| match self.err {
                Some(e) if own_err => msg(e.into()),
                _ => msg(m()),
            }))
        };
        let Some(v) = value.filter(|v| !v.is_null()) else {
            if self.ne.as_ref().is_some_and(Value::is_null) {
                return fail(&|| "value must not be null".into(), true);
            }
            if let Some(eq) = self.eq.as_ref().filter(|e| !e.is_null()) {
                return fail(&|| format!("value must be {}", lua_tostring(eq)), false);
            }
            if self.required || field.is_some_and(|f| f.required) {
                return fail(&|| "required field missing".into(), false);
            }
            return Ok(());
        };
        if self.eq.as_ref().is_some_and(Value::is_null) {
            return fail(&|| "value must be null".into(), true);
        }
        // the field's own type (and, for arrays, its elements when the rule keeps them)
        let own = match field {
            Some(f) if !valid => field_error(f, v).map(|e| (f, e)),
            _ => None,
        };
        if let Some((f, e)) = &own {
            if let Some(t) = type_error(&f.kind, v) {
                return fail(&|| t.into(), false);
            }
            if matches!(f.kind, Kind::Array { .. })
                && self.elements.is_none()
                && matches!(e, FieldError::Nested(_))
            {
                return Err(Some(e.clone()));
            }
        }
        if let Some(rule) = &self.elements
            && let Value::Array(items) = v
        {
            let failed = |item: &Value| !item.is_string() || rule.failure(item).is_some();
            if !messages {
                if items.iter().any(failed) {
                    return Err(None);
                }
            } else {
                let mut errs = Errors::positions();
                for (i, item) in items.iter().enumerate().filter(|(_, x)| failed(x)) {
                    let m = match rule.failure(item) {
                        Some(f) if item.is_string() => rule.message(f, item),
                        _ => msg("expected a string".into()),
                    };
                    errs.fields.push(((i + 1).to_string(), m));
                }
                if !errs.is_empty() {
                    return Err(Some(FieldError::Nested(errs)));
                }
            }
        }
        if let Some(f) = self.failure(v) {
            return Err(messages.then(|| self.message(f, v)));
        }
        match own {
            // the rule's elements in place of the field's: the field's own rules on the
            // whole array remain
            Some((f, FieldError::Nested(_))) if self.elements.is_some() => {
                match array_rules(f, v) {
                    Some(m) => Err(Some(msg(m))),
                    None => Ok(()),
                }
            }
            Some((_, e)) => Err(Some(e)),
            None => Ok(()),
        }
    }

    /// The first of the rule's validators that fails on a non-null value, in Kong's order
    /// (`validators_order`).
    fn failure(&self, v: &Value) -> Option<Failure> {
        if let Some(eq) = self.eq.as_ref().filter(|e| !e.is_null())
            && v != eq
        {
            return Some(Failure::Eq);
        }
        if self.ne.as_ref().is_some_and(|ne| v == ne) {
            return Some(Failure::Ne);
        }
        if let Some(list) = self.not_one_of
            && v.as_str().is_some_and(|s| list.contains(&s))
        {
            return Some(Failure::NotOneOf);
        }
        if let Some(list) = self.one_of
            && !v.as_str().is_some_and(|s| list.contains(&s))
        {
            return Some(Failure::OneOf);
        }
        if let Some(n) = self.len_eq {
            let len = match v {
                Value::String(s) => Some(s.len()),
                Value::Array(a) => Some(a.len()),
                Value::Object(o) => Some(o.len()),
                _ => None,
            };
            if len != Some(n) {
                return Some(Failure::LenEq);
            }
        }
        if let Some(p) = self.pattern
            && v.as_str().is_none_or(|s| anchored_literal(p) != s)
        {
            return Some(Failure::Match);
        }
        if let Some(ps) = self.match_any
            && !v
                .as_str()
                .is_some_and(|s| ps.iter().any(|p| anchored_literal(p) == s))
        {
            return Some(Failure::Match);
        }
        if let Some(c) = self.contains
            && !v
                .as_array()
                .is_some_and(|a| a.iter().any(|x| x.as_str() == Some(c)))
        {
            return Some(Failure::Contains);
        }
        None
    }

    /// The message of a validator's failure (the rule's `err` in place of it).
    fn message(&self, f: Failure, v: &Value) -> FieldError {
        if let Some(e) = self.err {
            return msg(e.into());
        }
        msg(match f {
            Failure::Eq => format!(
                "value must be {}",
                self.eq.as_ref().map(lua_tostring).unwrap_or_default()
            ),
            Failure::Ne => format!("value must not be {}", lua_tostring(v)),
            Failure::NotOneOf => format!(
                "must not be one of: {}",
                self.not_one_of.unwrap_or_default().join(", ")
            ),
            Failure::OneOf => format!(
                "expected one of: {}",
                self.one_of.unwrap_or_default().join(", ")
            ),
            Failure::LenEq => format!("length must be {}", self.len_eq.unwrap_or_default()),
            Failure::Match => format!("invalid value: {}", lua_tostring(v)),
            Failure::Contains => {
                format!("expected to contain: {}", self.contains.unwrap_or_default())
            }
        })
    }

    /// The rule in Kong's JSON form.
    pub fn to_kong_json(&self) -> Value {
        let mut m = Map::new();
        if let Some(eq) = &self.eq {
            m.insert("eq".into(), eq.clone());
        }
        if let Some(ne) = &self.ne {
            m.insert("ne".into(), ne.clone());
        }
        if let Some(l) = self.one_of {
            m.insert("one_of".into(), json!(l));
        }
        if let Some(l) = self.not_one_of {
            m.insert("not_one_of".into(), json!(l));
        }
        if let Some(p) = self.pattern {
            m.insert("match".into(), json!(p));
        }
        if let Some(ps) = self.match_any {
            m.insert("match_any".into(), json!({ "patterns": ps }));
        }
        if let Some(n) = self.len_eq {
            m.insert("len_eq".into(), json!(n));
        }
        if let Some(c) = self.contains {
            m.insert("contains".into(), json!(c));
        }
        if let Some(e) = &self.elements {
            let mut el = match e.to_kong_json() {
                Value::Object(el) => el,
                _ => Map::new(),
            };
            el.insert("type".into(), json!("string"));
            m.insert("elements".into(), Value::Object(el));
        }
        if self.required {
            m.insert("required".into(), json!(true));
        }
        if let Some(err) = self.err {
            m.insert("err".into(), json!(err));
        }
        Value::Object(m)
    }
}

/// Which validator of a [`Match`] failed.
#[derive(Clone, Copy)]
enum Failure {
    Eq,
    Ne,
    NotOneOf,
    OneOf,
    LenEq,
    Match,
    Contains,
}

fn msg(m: String) -> FieldError {
    FieldError::Message(m)
}

/// The literal of an anchored pattern without magic characters (`^header$` → `header`).
fn anchored_literal(p: &str) -> &str {
    let p = p.strip_prefix('^').unwrap_or(p);
    p.strip_suffix('$').unwrap_or(p)
}

/// A value as Lua's `tostring` writes it in a message.
fn lua_tostring(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "null".into(),
        other => other.to_string(),
    }
}

/// The rules of an array field on the whole array (its length, its value check), for a
/// value whose elements a rule replaced.
fn array_rules(f: &Field, v: &Value) -> Option<String> {
    let Kind::Array {
        len_min, len_max, ..
    } = &f.kind
    else {
        return None;
    };
    let n = v.as_array().map_or(0, Vec::len);
    if let Some(min) = len_min
        && n < *min
    {
        return Some(format!("length must be at least {min}"));
    }
    if let Some(max) = len_max
        && n > *max
    {
        return Some(format!("length must be at most {max}"));
    }
    f.check.as_ref().and_then(|c| c(v).err())
}

/// Kong's `conditional`: when `if_field` passes `if_match`, `then_field` must pass
/// `then_match`.
#[derive(Clone)]
pub struct Conditional {
    /// The field whose value decides.
    pub if_field: &'static str,
    /// The rule it must pass for the check to apply.
    pub if_match: Match,
    /// The field then checked.
    pub then_field: &'static str,
    /// The rule it must then pass.
    pub then_match: Match,
    /// The `@entity` message (`%s`: `if_field`) in place of Kong's.
    pub then_err: Option<&'static str>,
}

/// Kong's `conditional_at_least_one_of`: when `if_field` passes `if_match`, one of
/// `then_at_least_one_of` must be non-empty; else, when it passes `else_match`, one of
/// `else_then_at_least_one_of`.
#[derive(Clone)]
pub struct ConditionalAtLeastOneOf {
    /// The field whose value decides.
    pub if_field: &'static str,
    /// The rule of the `then` branch.
    pub if_match: Match,
    /// The fields of the `then` branch.
    pub then_at_least_one_of: Vec<&'static str>,
    /// The `then` branch's message (`%s`: the quoted list).
    pub then_err: Option<&'static str>,
    /// The rule of the `else` branch.
    pub else_match: Option<Match>,
    /// The fields of the `else` branch.
    pub else_then_at_least_one_of: Vec<&'static str>,
    /// The `else` branch's message (`%s`: the quoted list).
    pub else_then_err: Option<&'static str>,
}

#[derive(Clone)]
enum Checker {
    AtLeastOneOf(Vec<&'static str>),
    OnlyOneOf(Vec<&'static str>),
    Distinct(Vec<&'static str>),
    MutuallyRequired(Vec<&'static str>),
    MutuallyExclusive(Vec<&'static str>),
    MutuallyExclusiveSets(Vec<&'static str>, Vec<&'static str>),
    Conditional(Box<Conditional>),
    ConditionalAtLeastOneOf(Box<ConditionalAtLeastOneOf>),
    Custom(CustomCheck),
}

/// One entity check of a record: a checker, the fields it reads, which of them it
/// requires, and its flags.
#[derive(Clone)]
pub struct EntityCheck {
    checker: Checker,
    fields: Vec<&'static str>,
    required: Vec<bool>,
    /// The position of each field in the record the check is bound to (empty: unbound).
    pos: Vec<u8>,
    run_with_missing_fields: bool,
    run_with_invalid_fields: bool,
    rendered: bool,
}

impl EntityCheck {
    fn new(checker: Checker, fields: Vec<&'static str>, required: Vec<bool>) -> Self {
        let (missing, invalid) = match checker {
            Checker::AtLeastOneOf(_) | Checker::ConditionalAtLeastOneOf(_) => (true, true),
            Checker::OnlyOneOf(_) | Checker::Distinct(_) | Checker::Conditional(_) => (false, true),
            Checker::MutuallyRequired(_)
            | Checker::MutuallyExclusive(_)
            | Checker::MutuallyExclusiveSets(..) => (true, false),
            Checker::Custom(_) => (false, false),
        };
        EntityCheck {
            checker,
            fields,
            required,
            pos: Vec::new(),
            run_with_missing_fields: missing,
            run_with_invalid_fields: invalid,
            rendered: true,
        }
    }

    fn all_required(checker: Checker, fields: &[&'static str]) -> Self {
        Self::new(checker, fields.to_vec(), vec![true; fields.len()])
    }

    /// `at_least_one_of`: one of the fields is non-empty.
    pub fn at_least_one_of(fields: &[&'static str]) -> Self {
        Self::all_required(Checker::AtLeastOneOf(fields.to_vec()), fields)
    }
    /// `only_one_of`: exactly one of the fields is non-empty.
    pub fn only_one_of(fields: &[&'static str]) -> Self {
        Self::all_required(Checker::OnlyOneOf(fields.to_vec()), fields)
    }
    /// `distinct`: the non-empty values of the fields differ.
    pub fn distinct(fields: &[&'static str]) -> Self {
        Self::all_required(Checker::Distinct(fields.to_vec()), fields)
    }
    /// `mutually_required`: all of the fields are non-empty, or none.
    pub fn mutually_required(fields: &[&'static str]) -> Self {
        Self::all_required(Checker::MutuallyRequired(fields.to_vec()), fields)
    }
    /// `mutually_exclusive`: at most one of the fields is non-empty.
    pub fn mutually_exclusive(fields: &[&'static str]) -> Self {
        Self::all_required(Checker::MutuallyExclusive(fields.to_vec()), fields)
    }
    /// `mutually_exclusive_sets`: not fields of both sets are non-empty.
    pub fn mutually_exclusive_sets(set1: &[&'static str], set2: &[&'static str]) -> Self {
        let fields: Vec<&'static str> = set1.iter().chain(set2).copied().collect();
        // (Kong lists the checker's required sources as an array, which its lookup by
        // source name never finds: none is required)
        let required = vec![false; fields.len()];
        Self::new(
            Checker::MutuallyExclusiveSets(set1.to_vec(), set2.to_vec()),
            fields,
            required,
        )
    }
    /// `conditional`.
    pub fn conditional(c: Conditional) -> Self {
        let fields = vec![c.if_field, c.then_field];
        Self::new(Checker::Conditional(Box::new(c)), fields, vec![true, false])
    }
    /// `conditional_at_least_one_of`.
    pub fn conditional_at_least_one_of(c: ConditionalAtLeastOneOf) -> Self {
        let mut fields = vec![c.if_field];
        fields.extend(&c.then_at_least_one_of);
        fields.extend(&c.else_then_at_least_one_of);
        // (none required, as for `mutually_exclusive_sets`)
        let required = vec![false; fields.len()];
        Self::new(
            Checker::ConditionalAtLeastOneOf(Box::new(c)),
            fields,
            required,
        )
    }
    /// `custom_entity_check`: a function over `field_sources` (all required).
    pub fn custom(
        field_sources: &[&'static str],
        f: impl Fn(&Values<'_>, &mut Errors) -> Result<(), String> + Send + Sync + 'static,
    ) -> Self {
        Self::all_required(Checker::Custom(Arc::new(f)), field_sources)
    }
    /// A rule Kong declares elsewhere than in `entity_checks` (a subschema's field or
    /// check), as a function over `fields` that runs with missing and invalid fields and is
    /// not rendered.
    pub fn hidden(
        fields: &[&'static str],
        f: impl Fn(&Values<'_>, &mut Errors) -> Result<(), String> + Send + Sync + 'static,
    ) -> Self {
        let mut c = Self::custom(fields, f)
            .run_with_missing_fields()
            .run_with_invalid_fields();
        c.rendered = false;
        c
    }
    /// Not rendered in the schema's JSON (a subschema's check).
    pub fn unrendered(mut self) -> Self {
        self.rendered = false;
        self
    }
    /// Runs when fields are missing (Kong's argument-level `run_with_missing_fields`).
    pub fn run_with_missing_fields(mut self) -> Self {
        self.run_with_missing_fields = true;
        self
    }
    /// Runs when fields are invalid (Kong's argument-level `run_with_invalid_fields`).
    pub fn run_with_invalid_fields(mut self) -> Self {
        self.run_with_invalid_fields = true;
        self
    }

    /// The fields the check reads.
    pub fn fields(&self) -> &[&'static str] {
        &self.fields
    }

    /// Binds the check to the fields of its record (its lookups then go by position).
    pub(crate) fn bind(&mut self, fields: &[Field]) {
        self.pos = self
            .fields
            .iter()
            .map(|n| {
                fields
                    .iter()
                    .position(|f| f.name == *n)
                    .and_then(|p| u8::try_from(p).ok())
                    .unwrap_or(ABSENT)
            })
            .collect();
    }

    /// Runs the check as Kong's `run_entity_check` does, adding its messages to `errors`.
    pub(crate) fn run(&self, values: &Values<'_>, errors: &mut Errors) {
        let scope = Scope { v: values, c: self };
        if values.plain && errors.is_empty() {
            if let Err(m) = self.eval(&scope, errors) {
                errors.entity(m);
            }
            return;
        }
        let mut missing: Option<Vec<&'static str>> = None;
        let mut absent = 0;
        let mut all_ok = true;
        for (name, required) in self.fields.iter().zip(&self.required) {
            match scope.get(name) {
                None => {
                    absent += 1;
                    // missing: nil (required, without a value) and needed by the checker
                    if !self.run_with_missing_fields && *required && values.is_nil(name) {
                        missing.get_or_insert_with(Vec::new).push(name);
                    }
                }
                Some(Value::String(s))
                    if is_vault_reference(s)
                        && values.field(name).is_some_and(|f| f.referenceable) =>
                {
                    return;
                }
                Some(_) => {}
            }
            if errors.has_field(name) {
                all_ok = false;
            }
        }
        if !all_ok && !self.run_with_invalid_fields {
            return;
        }
        // every field nil (a field without a value that is not required is null to Kong; in
        // an update, Kong's `full_check` is off and the check does not run then, whatever
        // its checker)
        if (values.updating || !self.run_with_missing_fields)
            && absent == self.fields.len()
            && self.fields.iter().all(|n| values.is_nil(n))
        {
            return;
        }
        if let Some(missing) = missing {
            for name in missing {
                if values.updating {
                    errors.field(name, format!("{REQUIRED_FOR_ENTITY_CHECK} when updating"));
                } else {
                    errors.field(name, REQUIRED_FOR_ENTITY_CHECK);
                }
            }
            return;
        }
        if let Err(m) = self.eval(&scope, errors) {
            errors.entity(m);
        }
    }

    fn eval(&self, v: &Scope<'_, '_>, errors: &mut Errors) -> Result<(), String> {
        let nonempty = |n: &&str| v.nonempty(n);
        // (Kong's `validate_update` rewords these two messages while it runs)
        let updating = if v.v.updating { "when updating, " } else { "" };
        match &self.checker {
            Checker::AtLeastOneOf(names) => {
                if names.iter().any(nonempty) {
                    Ok(())
                } else {
                    Err(format!(
                        "{updating}at least one of these fields must be non-empty: {}",
                        quoted_list(names)
                    ))
                }
            }
            Checker::OnlyOneOf(names) => {
                if names.iter().filter(|n| nonempty(n)).count() == 1 {
                    Ok(())
                } else {
                    Err(format!(
                        "exactly one of these fields must be non-empty: {}",
                        quoted_list(names)
                    ))
                }
            }
            Checker::Distinct(names) => {
                // (Lua compares tables by identity: two arrays are never the same)
                let value = |n: &str| {
                    v.get(n)
                        .filter(|x| !x.is_array() && !x.is_object() && is_nonempty(Some(x)))
                };
                let repeated = names.iter().enumerate().any(|(i, a)| {
                    value(a).is_some_and(|x| names[..i].iter().any(|b| value(b) == Some(x)))
                });
                if repeated {
                    Err(format!(
                        "values of these fields must be distinct: {}",
                        quoted_list(names)
                    ))
                } else {
                    Ok(())
                }
            }
            Checker::MutuallyRequired(names) => {
                let n = names.iter().filter(|n| nonempty(n)).count();
                if n == 0 || n == names.len() {
                    Ok(())
                } else {
                    Err(format!(
                        "all or none of these fields must be set: {}",
                        quoted_list(names)
                    ))
                }
            }
            Checker::MutuallyExclusive(names) => {
                if names.iter().filter(|n| nonempty(n)).count() <= 1 {
                    Ok(())
                } else {
                    Err(format!(
                        "only one or none of these fields must be set: {}",
                        quoted_list(names)
                    ))
                }
            }
            Checker::MutuallyExclusiveSets(set1, set2) => {
                if !set1.iter().any(nonempty) || !set2.iter().any(nonempty) {
                    return Ok(());
                }
                let n1: Vec<&str> = set1.iter().copied().filter(|n| v.nonempty(n)).collect();
                let n2: Vec<&str> = set2.iter().copied().filter(|n| v.nonempty(n)).collect();
                Err(format!(
                    "these sets are mutually exclusive: ({}), ({})",
                    quoted_list(&n1),
                    quoted_list(&n2)
                ))
            }
            Checker::Conditional(c) => {
                let (if_value, valid, field) = v.slot(c.if_field);
                if !c.if_match.passes(field, if_value, valid) {
                    return Ok(());
                }
                let failed = || match c.then_err {
                    Some(e) => e.replace("%s", c.if_field),
                    None => format!(
                        "failed conditional validation given value of field '{}'",
                        c.if_field
                    ),
                };
                let (then_value, valid, field) = v.slot(c.then_field);
                if c.then_match.required && then_value.is_none() {
                    errors.field(c.then_field, "required field missing");
                    return Err(format!(
                        "failed conditional validation given value of field '{}'",
                        c.if_field
                    ));
                }
                match c.then_match.check(field, then_value, valid) {
                    Ok(()) => Ok(()),
                    Err(e) => {
                        errors.set(c.then_field, e);
                        Err(failed())
                    }
                }
            }
            Checker::ConditionalAtLeastOneOf(c) => {
                let (if_value, valid, field) = v.slot(c.if_field);
                // nil (a required field without a value; in an update, one left out):
                // nothing decides
                if if_value.is_none() && v.v.is_nil(c.if_field) {
                    return Ok(());
                }
                let (names, err) = if c.if_match.passes(field, if_value, valid) {
                    (&c.then_at_least_one_of, c.then_err)
                } else {
                    match &c.else_match {
                        Some(m) if m.passes(field, if_value, valid) => {
                            (&c.else_then_at_least_one_of, c.else_then_err)
                        }
                        _ => return Ok(()),
                    }
                };
                if names.iter().any(nonempty) {
                    return Ok(());
                }
                let list = quoted_list(names);
                Err(match err {
                    Some(e) => e.replace("%s", &list),
                    None => {
                        format!("{updating}at least one of these fields must be non-empty: {list}")
                    }
                })
            }
            Checker::Custom(f) => f(v.v, errors),
        }
    }

    /// The check in Kong's JSON form (`{"<checker>": <argument>}`), as Kong's admin API
    /// renders a schema's `entity_checks` (a custom check by its `field_sources`, Kong's
    /// encoder leaving functions out); `None` for a check Kong does not list there.
    pub fn to_kong_json(&self) -> Option<Value> {
        if !self.rendered {
            return None;
        }
        let (name, arg) = match &self.checker {
            Checker::AtLeastOneOf(n) => ("at_least_one_of", json!(n)),
            Checker::OnlyOneOf(n) => ("only_one_of", json!(n)),
            Checker::Distinct(n) => ("distinct", json!(n)),
            Checker::MutuallyRequired(n) => ("mutually_required", json!(n)),
            Checker::MutuallyExclusive(n) => ("mutually_exclusive", json!(n)),
            Checker::MutuallyExclusiveSets(s1, s2) => {
                ("mutually_exclusive_sets", json!({"set1": s1, "set2": s2}))
            }
            Checker::Conditional(c) => {
                let mut m = Map::new();
                m.insert("if_field".into(), json!(c.if_field));
                m.insert("if_match".into(), c.if_match.to_kong_json());
                m.insert("then_field".into(), json!(c.then_field));
                m.insert("then_match".into(), c.then_match.to_kong_json());
                if let Some(e) = c.then_err {
                    m.insert("then_err".into(), json!(e));
                }
                ("conditional", Value::Object(m))
            }
            Checker::ConditionalAtLeastOneOf(c) => {
                let mut m = Map::new();
                m.insert("if_field".into(), json!(c.if_field));
                m.insert("if_match".into(), c.if_match.to_kong_json());
                m.insert("then_at_least_one_of".into(), json!(c.then_at_least_one_of));
                if let Some(e) = c.then_err {
                    m.insert("then_err".into(), json!(e));
                }
                if let Some(e) = &c.else_match {
                    m.insert("else_match".into(), e.to_kong_json());
                    m.insert(
                        "else_then_at_least_one_of".into(),
                        json!(c.else_then_at_least_one_of),
                    );
                }
                if let Some(e) = c.else_then_err {
                    m.insert("else_then_err".into(), json!(e));
                }
                ("conditional_at_least_one_of", Value::Object(m))
            }
            Checker::Custom(_) => ("custom_entity_check", json!({"field_sources": self.fields})),
        };
        let mut m = Map::with_capacity(1);
        m.insert(name.into(), arg);
        Some(Value::Object(m))
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

    fn errors(r: &Record, input: Value) -> Value {
        r.validate(&obj(input)).1.to_json()
    }

    /// Kong's checkers' flags decide which checks run beside field errors: each case is a
    /// record, an input, and Kong's error table.
    #[test]
    fn checks_run_beside_field_errors_by_their_flags() {
        let ab = || {
            vec![
                Field::integer("a", 0, 10),
                Field::integer("b", 0, 10),
                Field::string("c"),
            ]
        };
        let cases: Vec<(Record, Value, Value)> = vec![
            // at_least_one_of runs with invalid fields (and sees the given value)
            (
                Record::new(ab()).check(EntityCheck::at_least_one_of(&["a", "b"])),
                json!({"a": 99}),
                json!({"a": "value should be between 0 and 10"}),
            ),
            (
                Record::new(ab()).check(EntityCheck::at_least_one_of(&["a", "b"])),
                json!({"c": 5}),
                json!({"c": "expected a string",
                       "@entity": ["at least one of these fields must be non-empty: 'a', 'b'"]}),
            ),
            // only_one_of and distinct too
            (
                Record::new(ab()).check(EntityCheck::only_one_of(&["a", "b"])),
                json!({"a": 1, "b": 99}),
                json!({"b": "value should be between 0 and 10",
                       "@entity": ["exactly one of these fields must be non-empty: 'a', 'b'"]}),
            ),
            (
                Record::new(ab()).check(EntityCheck::distinct(&["a", "b"])),
                json!({"a": 11, "b": 11}),
                json!({"a": "value should be between 0 and 10",
                       "b": "value should be between 0 and 10",
                       "@entity": ["values of these fields must be distinct: 'a', 'b'"]}),
            ),
            // mutually_required and custom checks do not
            (
                Record::new(ab()).check(EntityCheck::mutually_required(&["a", "b"])),
                json!({"a": 11}),
                json!({"a": "value should be between 0 and 10"}),
            ),
            (
                Record::new(ab()).check(EntityCheck::custom(&["a", "c"], |_, _| {
                    Err("custom".into())
                })),
                json!({"a": 11, "c": "x"}),
                json!({"a": "value should be between 0 and 10"}),
            ),
            (
                Record::new(ab()).check(EntityCheck::custom(&["a", "c"], |_, _| {
                    Err("custom".into())
                })),
                json!({"a": 1, "c": "x", "d": 1}),
                json!({"d": "unknown field", "@entity": ["custom"]}),
            ),
            // a required field without a value is missing for the checks that need it
            (
                Record::new(vec![Field::string("a").required(), Field::string("b")])
                    .check(EntityCheck::distinct(&["a", "b"])),
                json!({"b": "x"}),
                json!({"a": "field required for entity check"}),
            ),
            // a conditional sees the given value, and its message replaces the field's
            (
                Record::new(vec![
                    Field::one_of("p", &["x", "y"]).default("x"),
                    Field::string("path"),
                    Field::integer("n", 0, 5),
                ])
                .check(EntityCheck::conditional(Conditional {
                    if_field: "p",
                    if_match: Match::one_of(&["y"]),
                    then_field: "path",
                    then_match: Match::null(),
                    then_err: None,
                })),
                json!({"p": "y", "path": 5, "n": 9}),
                json!({"path": "value must be null", "n": "value should be between 0 and 5",
                       "@entity": ["failed conditional validation given value of field 'p'"]}),
            ),
            // an invalid `if_field` value fails its `if_match` (its own rules still apply)
            (
                Record::new(vec![
                    Field::one_of("p", &["x", "y"]).default("x"),
                    Field::string("path"),
                ])
                .check(EntityCheck::conditional(Conditional {
                    if_field: "p",
                    if_match: Match::not_one_of(&["x"]),
                    then_field: "path",
                    then_match: Match::null(),
                    then_err: None,
                })),
                json!({"p": "z", "path": "/"}),
                json!({"p": "expected one of: x, y"}),
            ),
        ];
        for (i, (r, input, expected)) in cases.into_iter().enumerate() {
            assert_eq!(errors(&r, input), expected, "case {i}");
        }
    }

    #[test]
    fn checks_render_as_kongs_entity_checks() {
        let c = EntityCheck::conditional(Conditional {
            if_field: "protocol",
            if_match: Match::one_of(&["tcp", "tls"]),
            then_field: "path",
            then_match: Match::null(),
            then_err: None,
        });
        assert_eq!(
            c.to_kong_json(),
            Some(json!({"conditional": {"if_field": "protocol",
                "if_match": {"one_of": ["tcp", "tls"]},
                "then_field": "path", "then_match": {"eq": null}}}))
        );
        let c = EntityCheck::custom(&["cert", "key"], |_, _| Ok(()));
        assert_eq!(
            c.to_kong_json(),
            Some(json!({"custom_entity_check": {"field_sources": ["cert", "key"]}}))
        );
        assert_eq!(
            EntityCheck::at_least_one_of(&["ip", "port"]).to_kong_json(),
            Some(json!({"at_least_one_of": ["ip", "port"]}))
        );
        assert_eq!(
            EntityCheck::hidden(&["a"], |_, _| Ok(())).to_kong_json(),
            None
        );
    }
}
