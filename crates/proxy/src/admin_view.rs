//! Entities as Kong's admin API shows them: every field of the entity's schema, in schema
//! order, a value left out of the configuration given its default or `null` (Kong reads
//! entities with `nulls = true`), and the timestamps of the load that brought them
//! (`created_at`, `updated_at`: Kong sets them when a declarative configuration is loaded).
//! A plugin's `config` is shown the same way against the plugin's own schema.

use serde_json::{Map, Value};
use silverback_config::schema::{Field, Kind, Record};
use silverback_config::{EntityKind, PluginRegistry, RouterFlavor};

/// How entities of one kind are shown; made once per admin request.
pub(crate) struct View<'a> {
    record: Record,
    plugins: Option<&'a PluginRegistry>,
    loaded_unix: i64,
}

impl<'a> View<'a> {
    /// The view of `kind` under `flavor`; `loaded_unix` is when the configuration was loaded.
    pub(crate) fn new(
        kind: EntityKind,
        flavor: RouterFlavor,
        plugins: &'a PluginRegistry,
        loaded_unix: i64,
    ) -> View<'a> {
        View {
            record: silverback_config::entities::schema(kind, flavor),
            plugins: (kind == EntityKind::Plugin).then_some(plugins),
            loaded_unix,
        }
    }

    /// The view of `kind` for the gateway `sh`, whose configuration `snap` is.
    pub(crate) fn of(
        sh: &'a crate::gateway::Shared,
        snap: &crate::snapshot::Snapshot,
        kind: EntityKind,
    ) -> View<'a> {
        View::new(
            kind,
            sh.settings.router_flavor,
            &sh.settings.plugins,
            snap.built_unix,
        )
    }

    /// `entity` (as the flat configuration holds it) as Kong shows it.
    pub(crate) fn show(&self, entity: &Value) -> Value {
        let Value::Object(m) = entity else {
            return entity.clone();
        };
        let mut out = fill(&self.record, m);
        for ts in ["created_at", "updated_at"] {
            if out.get(ts).is_some_and(Value::is_null) {
                out.insert(ts.to_string(), Value::from(self.loaded_unix));
            }
        }
        if let Some(schema) = self
            .plugins
            .and_then(|p| p.get(m.get("name").and_then(Value::as_str).unwrap_or("")))
        {
            let config = match m.get("config") {
                Some(Value::Object(c)) => fill(&schema.config, c),
                _ => fill(&schema.config, &Map::new()),
            };
            out.insert("config".to_string(), Value::Object(config));
        }
        Value::Object(out)
    }
}

/// `m` with every field of `record` in its order (absent ones given their default, or
/// `null`), nested records filled alike, then any other keys `m` has.
fn fill(record: &Record, m: &Map<String, Value>) -> Map<String, Value> {
    let mut out = Map::with_capacity(record.fields.len().max(m.len()));
    for f in &record.fields {
        let v = match (m.get(f.name), &f.kind) {
            (Some(Value::Object(inner)), Kind::Record(r)) => Value::Object(fill(r, inner)),
            (Some(v), _) => v.clone(),
            (None, _) => absent(f),
        };
        out.insert(f.name.to_string(), v);
    }
    for (k, v) in m {
        if !out.contains_key(k) {
            out.insert(k.clone(), v.clone());
        }
    }
    out
}

/// The value Kong shows for a field that was not given: its default, or for a record
/// without one the record of its fields' defaults when any has one, else `null`.
fn absent(f: &Field) -> Value {
    if let Some(d) = &f.default {
        return d.clone();
    }
    match &f.kind {
        Kind::Record(r) if r.fields.iter().any(|x| x.default.is_some()) => {
            Value::Object(fill(r, &Map::new()))
        }
        _ => Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn absent_fields_show_their_default_or_null_in_schema_order() {
        let plugins = PluginRegistry::new();
        let v = View::new(
            EntityKind::Service,
            RouterFlavor::TraditionalCompatible,
            &plugins,
            1_700_000_000,
        );
        let shown =
            v.show(&json!({"id": "x", "name": "s", "host": "h", "port": 80, "protocol": "http"}));
        let keys: Vec<&str> = shown
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys.first(), Some(&"id"));
        assert_eq!(shown["enabled"], true);
        assert_eq!(shown["retries"], 5);
        assert_eq!(shown["tags"], Value::Null);
        assert_eq!(shown["client_certificate"], Value::Null);
        assert_eq!(shown["created_at"], 1_700_000_000);
        assert_eq!(shown["updated_at"], 1_700_000_000);
        // given values are kept as given
        let shown = v.show(&json!({"id": "x", "host": "h", "tags": ["a"], "created_at": 5}));
        assert_eq!(shown["tags"], json!(["a"]));
        assert_eq!(shown["created_at"], 5);
    }
}
