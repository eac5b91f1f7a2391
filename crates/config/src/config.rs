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
            transform: true,
        }
    }
}

/// The hash of an empty configuration.
pub const EMPTY_HASH: &str = "00000000000000000000000000000000";

/// Feeds md5 in large blocks: entities are serialized one at a time into a byte buffer (cheap
/// appends to a `Vec`), which is hashed and emptied whenever it holds [`MD5_CHUNK`] bytes.
struct Md5Sink {
    md5: md5::Md5,
    buf: Vec<u8>,
    /// Buffer size that triggers hashing.
    chunk: usize,
}

const MD5_CHUNK: usize = 64 * 1024;

impl Md5Sink {
    fn new() -> Self {
        Md5Sink {
            md5: md5::Md5::default(),
            // room for one chunk plus the largest usual entity
            buf: Vec::with_capacity(MD5_CHUNK + 16 * 1024),
            chunk: MD5_CHUNK,
        }
    }
    /// Hashes the buffer once it is large enough.
    fn maybe_flush(&mut self) {
        if self.buf.len() >= self.chunk {
            use md5::Digest;
            self.md5.update(&self.buf);
            self.buf.clear();
        }
    }
    fn finish(mut self) -> String {
        use md5::Digest;
        self.md5.update(&self.buf);
        hex::encode(self.md5.finalize())
    }
}

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
    }

    /// The configuration hash: md5 (hex) of the canonical flat JSON serialization, or
    /// [`EMPTY_HASH`] for an empty configuration. The same input always hashes the same.
    pub fn hash(&self) -> String {
        if self.is_empty() {
            return EMPTY_HASH.to_string();
        }
        let mut sink = Md5Sink::new();
        if self.write_hashed(&mut sink, true).is_ok() {
            return sink.finish();
        }
        // A value the fast writer refuses: everything again, written by serde_json (which
        // cannot fail on plain structs and JSON values written into a `Vec`).
        let mut sink = Md5Sink::new();
        if self.write_hashed(&mut sink, false).is_err() {
            return EMPTY_HASH.to_string();
        }
        sink.finish()
    }

    /// Writes what [`Config::hash`] hashes: byte for byte `Config`'s own JSON serialization
    /// (`{"services":[...],...}`, empty lists left out), produced entity by entity so that
    /// the buffer never holds more than a chunk. Health checks equal to the schema default
    /// (most upstreams') are copied from one cached rendering instead of written field by
    /// field. `fast`: written by [`crate::hash_json`] (the same bytes, faster) rather than by
    /// serde_json.
    fn write_hashed(&self, sink: &mut Md5Sink, fast: bool) -> serde_json::Result<()> {
        fn list<T>(
            sink: &mut Md5Sink,
            first: &mut bool,
            name: &str,
            items: &[T],
            mut write: impl FnMut(&mut Vec<u8>, &T) -> serde_json::Result<()>,
        ) -> serde_json::Result<()> {
            if items.is_empty() {
                return Ok(());
            }
            sink.buf.push(if *first { b'{' } else { b',' });
            *first = false;
            sink.buf.push(b'"');
            sink.buf.extend_from_slice(name.as_bytes());
            sink.buf.extend_from_slice(b"\":[");
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    sink.buf.push(b',');
                }
                write(&mut sink.buf, item)?;
                sink.maybe_flush();
            }
            sink.buf.push(b']');
            Ok(())
        }
        fn put<T: Serialize>(buf: &mut Vec<u8>, item: &T, fast: bool) -> serde_json::Result<()> {
            if fast {
                crate::hash_json::write(buf, item)
            } else {
                serde_json::to_writer(buf, item)
            }
        }
        let Config {
            vaults,
            certificates,
            ca_certificates,
            snis,
            consumers,
            consumer_groups,
            consumer_group_consumers,
            services,
            routes,
            upstreams,
            targets,
            plugins,
            keyauth_credentials,
            basicauth_credentials,
            jwt_secrets,
            acls,
            hmacauth_credentials,
            transform: _,
        } = self;
        let first = &mut true;
        list(sink, first, "vaults", vaults, |b, x| put(b, x, fast))?;
        list(sink, first, "certificates", certificates, |b, x| {
            put(b, x, fast)
        })?;
        list(sink, first, "ca_certificates", ca_certificates, |b, x| {
            put(b, x, fast)
        })?;
        list(sink, first, "snis", snis, |b, x| put(b, x, fast))?;
        list(sink, first, "consumers", consumers, |b, x| put(b, x, fast))?;
        list(sink, first, "consumer_groups", consumer_groups, |b, x| {
            put(b, x, fast)
        })?;
        list(
            sink,
            first,
            "consumer_group_consumers",
            consumer_group_consumers,
            |b, x| put(b, x, fast),
        )?;
        list(sink, first, "services", services, |b, x| put(b, x, fast))?;
        list(sink, first, "routes", routes, |b, x| put(b, x, fast))?;
        list(sink, first, "upstreams", upstreams, |buf, u| {
            put(buf, &UpstreamView(u), fast)
        })?;
        list(sink, first, "targets", targets, |b, x| put(b, x, fast))?;
        list(sink, first, "plugins", plugins, |b, x| put(b, x, fast))?;
        list(
            sink,
            first,
            "keyauth_credentials",
            keyauth_credentials,
            |b, x| put(b, x, fast),
        )?;
        list(
            sink,
            first,
            "basicauth_credentials",
            basicauth_credentials,
            |b, x| put(b, x, fast),
        )?;
        list(sink, first, "jwt_secrets", jwt_secrets, |b, x| {
            put(b, x, fast)
        })?;
        list(sink, first, "acls", acls, |b, x| put(b, x, fast))?;
        list(
            sink,
            first,
            "hmacauth_credentials",
            hmacauth_credentials,
            |b, x| put(b, x, fast),
        )?;
        sink.buf.push(if *first { b'{' } else { b'}' });
        if *first {
            sink.buf.push(b'}');
        }
        Ok(())
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
    /// snis inside certificates, credentials inside consumers, and plugins inside their only
    /// parent. Entities with several parents stay at top level with their references.
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

/// The default upstream health checks (the one copy upstreams without health checks share)
/// and their JSON rendering.
pub(crate) fn default_healthchecks()
-> Option<&'static (Arc<Healthchecks>, Box<serde_json::value::RawValue>)> {
    type Default = Option<(Arc<Healthchecks>, Box<serde_json::value::RawValue>)>;
    static DEFAULT: std::sync::OnceLock<Default> = std::sync::OnceLock::new();
    DEFAULT
        .get_or_init(|| {
            let v = schema(EntityKind::Upstream, crate::RouterFlavor::default())
                .field("healthchecks")?
                .default_value()?;
            let typed: Healthchecks = serde_json::from_value(v).ok()?;
            let raw = serde_json::value::to_raw_value(&typed).ok()?;
            Some((Arc::new(typed), raw))
        })
        .as_ref()
}

/// An upstream as `Upstream`'s derived `Serialize` writes it (same fields, order and skips).
struct UpstreamView<'a>(&'a Upstream);

impl Serialize for UpstreamView<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let Upstream {
            id,
            name,
            algorithm,
            hash_on,
            hash_fallback,
            hash_on_header,
            hash_fallback_header,
            hash_on_cookie,
            hash_on_cookie_path,
            hash_on_query_arg,
            hash_fallback_query_arg,
            hash_on_uri_capture,
            hash_fallback_uri_capture,
            slots,
            healthchecks,
            tags,
            host_header,
            client_certificate,
            use_srv_name,
            created_at,
            updated_at,
        } = self.0;
        let len = 8 + [
            hash_on_header.is_some(),
            hash_fallback_header.is_some(),
            hash_on_cookie.is_some(),
            hash_on_query_arg.is_some(),
            hash_fallback_query_arg.is_some(),
            hash_on_uri_capture.is_some(),
            hash_fallback_uri_capture.is_some(),
            !tags.is_empty(),
            host_header.is_some(),
            client_certificate.is_some(),
            *use_srv_name,
            created_at.is_some(),
            updated_at.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        let mut st = s.serialize_struct("Upstream", len)?;
        macro_rules! opt {
            ($f:ident) => {
                if let Some(v) = $f {
                    st.serialize_field(stringify!($f), v)?;
                }
            };
        }
        st.serialize_field("id", id)?;
        st.serialize_field("name", name)?;
        st.serialize_field("algorithm", algorithm)?;
        st.serialize_field("hash_on", hash_on)?;
        st.serialize_field("hash_fallback", hash_fallback)?;
        opt!(hash_on_header);
        opt!(hash_fallback_header);
        opt!(hash_on_cookie);
        st.serialize_field("hash_on_cookie_path", hash_on_cookie_path)?;
        opt!(hash_on_query_arg);
        opt!(hash_fallback_query_arg);
        opt!(hash_on_uri_capture);
        opt!(hash_fallback_uri_capture);
        st.serialize_field("slots", slots)?;
        match default_healthchecks() {
            Some((default, raw))
                if Arc::ptr_eq(default, healthchecks) || default == healthchecks =>
            {
                st.serialize_field("healthchecks", raw)?
            }
            _ => st.serialize_field("healthchecks", &**healthchecks)?,
        }
        if !tags.is_empty() {
            st.serialize_field("tags", tags)?;
        }
        opt!(host_header);
        opt!(client_certificate);
        if *use_srv_name {
            st.serialize_field("use_srv_name", use_srv_name)?;
        }
        opt!(created_at);
        opt!(updated_at);
        st.end()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// `hash()` is the md5 of `Config`'s own serialization.
    pub(crate) fn check_hash(cfg: &Config) {
        use md5::Digest;
        let plain = serde_json::to_vec(cfg).expect("serializes");
        for fast in [true, false] {
            let mut sink = Md5Sink::new();
            sink.chunk = usize::MAX;
            cfg.write_hashed(&mut sink, fast).expect("serializes");
            let view = sink.buf;
            assert_eq!(
                String::from_utf8_lossy(&view),
                String::from_utf8_lossy(&plain)
            );
        }
        if !cfg.is_empty() {
            assert_eq!(cfg.hash(), hex::encode(md5::Md5::digest(&plain)));
        }
    }

    #[test]
    fn hash_view_writes_the_plain_serialization() {
        check_hash(&Config::default());
        assert!(default_healthchecks().is_some());
    }
}
