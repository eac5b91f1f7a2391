//! A loaded configuration ([`Config`]): flat entity lists with resolved ids, serialization
//! back to Kong's declarative format (flat or nested), the flattened entity map that
//! `POST /config` returns, and the configuration hash.

use std::sync::Arc;

use serde::Serialize;
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::entities::*;

/// A validated configuration: every entity has an id and every reference is a resolved
/// [`ForeignKey`]. Entities are in canonical kind order, each list in input order.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Config {
    /// `vaults`
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub vaults: Vec<Vault>,
    /// `certificates`
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub certificates: Vec<Certificate>,
    /// `ca_certificates`
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ca_certificates: Vec<CaCertificate>,
    /// `snis`
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub snis: Vec<Sni>,
    /// `consumers`
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub consumers: Vec<Consumer>,
    /// `consumer_groups`
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub consumer_groups: Vec<ConsumerGroup>,
    /// `consumer_group_consumers`
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub consumer_group_consumers: Vec<ConsumerGroupConsumer>,
    /// `services`
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<Service>,
    /// `routes`
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
    /// `upstreams`
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub upstreams: Vec<Upstream>,
    /// `targets`
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<Target>,
    /// `plugins`
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub plugins: Vec<Plugin>,
    /// `keyauth_credentials`
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub keyauth_credentials: Vec<KeyauthCredential>,
    /// `basicauth_credentials`
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub basicauth_credentials: Vec<BasicauthCredential>,
    /// `jwt_secrets`
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub jwt_secrets: Vec<JwtSecret>,
    /// `acls`
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub acls: Vec<Acl>,
    /// `hmacauth_credentials`
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub hmacauth_credentials: Vec<HmacauthCredential>,
    /// `key_sets`
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub key_sets: Vec<KeySet>,
    /// `keys`
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<Key>,
    /// Whether load-time transformations (password hashing) are still to be applied:
    /// `false` for a loaded configuration, exported as `_transform`.
    #[serde(skip)]
    pub transform: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            vaults: vec![],
            certificates: vec![],
            ca_certificates: vec![],
            snis: vec![],
            consumers: vec![],
            consumer_groups: vec![],
            consumer_group_consumers: vec![],
            services: vec![],
            routes: vec![],
            upstreams: vec![],
            targets: vec![],
            plugins: vec![],
            keyauth_credentials: vec![],
            basicauth_credentials: vec![],
            jwt_secrets: vec![],
            acls: vec![],
            hmacauth_credentials: vec![],
            key_sets: vec![],
            keys: vec![],
            transform: true,
        }
    }
}

/// The hash of an empty configuration.
pub const EMPTY_HASH: &str = "00000000000000000000000000000000";

/// The configuration hash reported as Kong's (`configuration_hash`,
/// `kong_data_plane_config_hash`) for `config` loaded from `document`: the md5 (hex) of the
/// document exactly as received, or [`EMPTY_HASH`] when the configuration holds no entity.
/// Kong computes the same for YAML, `{"config": "..."}`, form and file input (`parse_string`
/// hashes the text); for a JSON body it hashes a cjson re-encoding of the flattened entities,
/// whose key order follows Lua's table iteration and cannot be reproduced, so the document's
/// bytes are used for every form here. The same bytes always hash the same; the same entities
/// written differently (YAML or JSON, other key order) do not, as in Kong.
pub fn config_hash(document: &[u8], config: &Config) -> String {
    use md5::Digest;
    if config.is_empty() {
        return EMPTY_HASH.to_string();
    }
    hex::encode(md5::Md5::digest(document))
}

/// A value the YAML serializer refused (the reason, as it gives it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot write the configuration as YAML: {0}")]
pub struct YamlError(pub String);

impl Config {
    /// Whether the configuration holds no entity at all.
    pub fn is_empty(&self) -> bool {
        self.entity_count() == 0
    }

    /// Total number of entities.
    pub fn entity_count(&self) -> usize {
        self.vaults.len()
            + self.certificates.len()
            + self.ca_certificates.len()
            + self.snis.len()
            + self.consumers.len()
            + self.consumer_groups.len()
            + self.consumer_group_consumers.len()
            + self.services.len()
            + self.routes.len()
            + self.upstreams.len()
            + self.targets.len()
            + self.plugins.len()
            + self.keyauth_credentials.len()
            + self.basicauth_credentials.len()
            + self.jwt_secrets.len()
            + self.acls.len()
            + self.hmacauth_credentials.len()
            + self.key_sets.len()
            + self.keys.len()
    }

    /// The flat declarative document (`_format_version: "3.0"`, every entity at top level,
    /// references as `{"id": ...}`).
    pub fn to_flat_value(&self) -> Value {
        let mut m = match serde_json::to_value(self) {
            Ok(Value::Object(m)) => m,
            _ => Map::new(),
        };
        let mut out = header(self.transform);
        out.append(&mut m);
        Value::Object(out)
    }

    /// The nested declarative document: routes inside services, targets inside upstreams,
    /// snis inside certificates, credentials inside consumers, keys inside key sets, and
    /// plugins inside their only parent. Entities with several parents stay at top level with their references.
    pub fn to_nested_value(&self) -> Value {
        let flat = self.to_flat_value();
        let Value::Object(mut doc) = flat else {
            return flat;
        };
        // (child kind, fk field, parent kind)
        let nestings: &[(&str, &str, &str)] = &[
            ("plugins", "route", "routes"),
            ("plugins", "service", "services"),
            ("plugins", "consumer", "consumers"),
            ("routes", "service", "services"),
            ("targets", "upstream", "upstreams"),
            ("snis", "certificate", "certificates"),
            ("keyauth_credentials", "consumer", "consumers"),
            ("basicauth_credentials", "consumer", "consumers"),
            ("jwt_secrets", "consumer", "consumers"),
            ("acls", "consumer", "consumers"),
            ("hmacauth_credentials", "consumer", "consumers"),
            ("keys", "set", "key_sets"),
        ];
        const PLUGIN_SCOPES: [&str; 4] = ["route", "service", "consumer", "consumer_group"];
        for (child, fk, parent) in nestings {
            let Some(Value::Array(children)) = doc.remove(*child) else {
                continue;
            };
            let Some(Value::Array(parents)) = doc.get_mut(*parent) else {
                doc.insert(child.to_string(), Value::Array(children));
                continue;
            };
            let index: std::collections::HashMap<String, usize> = parents
                .iter()
                .enumerate()
                .filter_map(|(i, p)| {
                    p.get("id")
                        .and_then(Value::as_str)
                        .map(|id| (id.to_string(), i))
                })
                .collect();
            let mut remaining = Vec::new();
            for mut c in children {
                let single_parent = *child != "plugins"
                    || PLUGIN_SCOPES
                        .iter()
                        .filter(|s| c.get(**s).is_some())
                        .count()
                        == 1;
                let pid = c
                    .get(*fk)
                    .and_then(|v| v.get("id"))
                    .and_then(Value::as_str)
                    .map(str::to_string);
                match (single_parent, pid.and_then(|p| index.get(&p).copied())) {
                    (true, Some(i)) => {
                        if let Value::Object(cm) = &mut c {
                            cm.remove(*fk);
                        }
                        if let Value::Object(pm) = &mut parents[i] {
                            let arr = pm
                                .entry(child.to_string())
                                .or_insert_with(|| Value::Array(vec![]));
                            if let Value::Array(a) = arr {
                                a.push(c);
                            }
                        }
                    }
                    _ => remaining.push(c),
                }
            }
            if !remaining.is_empty() {
                doc.insert(child.to_string(), Value::Array(remaining));
            }
        }
        Value::Object(doc)
    }

    /// The document as JSON text.
    pub fn to_json(&self, nested: bool) -> String {
        let v = if nested {
            self.to_nested_value()
        } else {
            self.to_flat_value()
        };
        serde_json::to_string(&v).unwrap_or_default()
    }

    /// The document as YAML text.
    pub fn to_yaml(&self, nested: bool) -> String {
        let v = if nested {
            self.to_nested_value()
        } else {
            self.to_flat_value()
        };
        serde_saphyr::to_string(&v).unwrap_or_default()
    }

    /// A value as YAML (the serializer of [`Config::to_yaml`]), or why it cannot be
    /// written.
    pub fn yaml_of(v: &Value) -> Result<String, YamlError> {
        serde_saphyr::to_string(v).map_err(|e| YamlError(e.to_string()))
    }

    /// The map `POST /config` answers with: `{"services": {"<id>": {...}}, ...}`.
    pub fn flattened_entities(&self) -> Value {
        let Value::Object(flat) = self.to_flat_value() else {
            return Value::Null;
        };
        let mut out = Map::new();
        for (k, v) in flat {
            if k.starts_with('_') {
                continue;
            }
            let Value::Array(items) = v else { continue };
            let mut by_id = Map::new();
            for (i, item) in items.into_iter().enumerate() {
                let key = item
                    .get("id")
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .unwrap_or_else(|| composite_key(&item, i));
                by_id.insert(key, item);
            }
            out.insert(k, Value::Object(by_id));
        }
        Value::Object(out)
    }

    /// Looks a service up by id.
    pub fn service(&self, id: Uuid) -> Option<&Service> {
        self.services.iter().find(|s| s.id == id)
    }
}

fn composite_key(item: &Value, i: usize) -> String {
    let part = |f: &str| {
        item.get(f)
            .and_then(|v| v.get("id"))
            .and_then(Value::as_str)
            .unwrap_or("")
    };
    let k = format!("{}:{}", part("consumer_group"), part("consumer"));
    if k == ":" { i.to_string() } else { k }
}

fn header(transform: bool) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("_format_version".into(), Value::from("3.0"));
    if !transform {
        m.insert("_transform".into(), Value::Bool(false));
    }
    m
}

/// The default upstream health checks: the one copy upstreams without health checks share.
pub(crate) fn default_healthchecks() -> Option<&'static Arc<Healthchecks>> {
    static DEFAULT: std::sync::OnceLock<Option<Arc<Healthchecks>>> = std::sync::OnceLock::new();
    DEFAULT
        .get_or_init(|| {
            let v = schema(EntityKind::Upstream, crate::RouterFlavor::default())
                .field("healthchecks")?
                .default_value()?;
            serde_json::from_value(v).ok().map(Arc::new)
        })
        .as_ref()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_is_the_documents_md5_or_zeros_when_empty() {
        let plugins = crate::PluginRegistry::new();
        let opts = crate::LoadOptions {
            router_flavor: crate::RouterFlavor::default(),
            plugins: &plugins,
            now_unix: None,
        };
        let empty = b"_format_version: '3.0'";
        let cfg = crate::load_bytes(empty, &opts).expect("valid");
        assert_eq!(config_hash(empty, &cfg), EMPTY_HASH);
        let doc = b"_format_version: '3.0'\nservices: [{name: s, host: a.test}]";
        let cfg = crate::load_bytes(doc, &opts).expect("valid");
        // md5sum of the same bytes, computed outside this code
        assert_eq!(config_hash(doc, &cfg), "2ca6dc40493c76868d3878e31ef7f5f4");
        assert!(default_healthchecks().is_some());
    }
}
