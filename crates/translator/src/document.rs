//! The typed Kong declarative document a translation produces.
//!
//! Every struct declares its fields in alphabetical order and leaves absent optional
//! fields out, so the derived serialization writes exactly the bytes of the sorted
//! `serde_json::Value` form in `Translation::config` (the golden test checks both JSON and
//! YAML). [`crate::translate_typed`] returns it without building that `Value` (a tree of
//! some 700,000 nodes at 10,000 Ingresses, as costly as the translation itself).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Serialize, Serializer};
use serde_json::Value;
use uuid::Uuid;

/// A shared list of tags (a Kubernetes Service's tags serve its Kong Service and Upstream,
/// an Ingress's tags all its routes).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Tags(pub Arc<[String]>);

impl Tags {
    /// The tags.
    pub fn as_slice(&self) -> &[String] {
        &self.0
    }
}

impl From<Vec<String>> for Tags {
    fn from(v: Vec<String>) -> Self {
        Tags(v.into())
    }
}

impl Serialize for Tags {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter())
    }
}

/// Serializes an id the way `Uuid::to_string` writes it (lower-case, hyphenated), whatever
/// the serializer's `is_human_readable`.
fn uuid_str<S: Serializer>(id: &Uuid, s: S) -> Result<S::Ok, S::Error> {
    let mut buf = Uuid::encode_buffer();
    s.serialize_str(id.hyphenated().encode_lower(&mut buf))
}

/// The whole document: `_format_version: "3.0"` and the entity lists, each sorted.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Document {
    /// Always `3.0`.
    #[serde(rename = "_format_version")]
    pub format_version: &'static str,
    /// CA certificates, by id.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ca_certificates: Vec<CaCertificate>,
    /// Certificates with their SNIs, by id.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub certificates: Vec<Certificate>,
    /// Services with their routes, by name.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<Service>,
    /// Upstreams with their targets, by name.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub upstreams: Vec<Upstream>,
}

impl Default for Document {
    fn default() -> Self {
        Document {
            format_version: "3.0",
            ca_certificates: vec![],
            certificates: vec![],
            services: vec![],
            upstreams: vec![],
        }
    }
}

impl Document {
    /// Whether the document holds no entity (only `_format_version`).
    pub fn is_empty(&self) -> bool {
        self.ca_certificates.is_empty()
            && self.certificates.is_empty()
            && self.services.is_empty()
            && self.upstreams.is_empty()
    }

    /// The document as a `serde_json::Value` with the same keys in the same order, built
    /// one entity at a time so that the typed and the `Value` forms are never both whole in
    /// memory.
    pub fn into_value(self) -> Value {
        fn list<T: Serialize>(m: &mut serde_json::Map<String, Value>, key: &str, v: Vec<T>) {
            if v.is_empty() {
                return;
            }
            // entities have only string keys: their serialization into a Value cannot fail
            let a: Vec<Value> = v
                .into_iter()
                .map(|e| serde_json::to_value(&e).unwrap_or_default())
                .collect();
            m.insert(key.to_string(), Value::Array(a));
        }
        let mut m = serde_json::Map::with_capacity(5);
        m.insert(
            "_format_version".to_string(),
            Value::String(self.format_version.to_string()),
        );
        list(&mut m, "ca_certificates", self.ca_certificates);
        list(&mut m, "certificates", self.certificates);
        if !self.services.is_empty() {
            let a = self.services.into_iter().map(Service::into_value).collect();
            m.insert("services".to_string(), Value::Array(a));
        }
        if !self.upstreams.is_empty() {
            let a = self
                .upstreams
                .into_iter()
                .map(Upstream::into_value)
                .collect();
            m.insert("upstreams".to_string(), Value::Array(a));
        }
        Value::Object(m)
    }
}

type Obj = serde_json::Map<String, Value>;

fn put(m: &mut Obj, k: &str, v: impl Into<Value>) {
    m.insert(k.to_string(), v.into());
}

fn strings(v: Vec<String>) -> Value {
    Value::Array(v.into_iter().map(Value::String).collect())
}

fn tags_value(t: &Tags) -> Value {
    Value::Array(t.0.iter().map(|s| Value::String(s.clone())).collect())
}

fn id_value(id: &Uuid) -> Value {
    let mut buf = Uuid::encode_buffer();
    Value::String(id.hyphenated().encode_lower(&mut buf).to_string())
}

// The builders below write the keys in the order of the derived serializations (the
// golden test compares the bytes), with objects allocated at their final size.

impl Service {
    fn into_value(self) -> Value {
        let n = 10
            + usize::from(!self.ca_certificates.is_empty())
            + usize::from(self.client_certificate.is_some())
            + usize::from(self.path.is_some())
            + usize::from(!self.routes.is_empty())
            + usize::from(self.tls_verify.is_some())
            + usize::from(self.tls_verify_depth.is_some());
        let mut m = Obj::with_capacity(n);
        if !self.ca_certificates.is_empty() {
            put(&mut m, "ca_certificates", strings(self.ca_certificates));
        }
        if let Some(c) = self.client_certificate {
            let mut r = Obj::with_capacity(1);
            put(&mut r, "id", c.id);
            put(&mut m, "client_certificate", r);
        }
        put(&mut m, "connect_timeout", self.connect_timeout);
        put(&mut m, "host", self.host);
        put(&mut m, "id", id_value(&self.id));
        put(&mut m, "name", self.name);
        if let Some(p) = self.path {
            put(&mut m, "path", p);
        }
        put(&mut m, "port", self.port);
        put(&mut m, "protocol", self.protocol);
        put(&mut m, "read_timeout", self.read_timeout);
        put(&mut m, "retries", self.retries);
        if !self.routes.is_empty() {
            let a: Vec<Value> = self.routes.into_iter().map(Route::into_value).collect();
            put(&mut m, "routes", a);
        }
        put(&mut m, "tags", tags_value(&self.tags));
        if let Some(v) = self.tls_verify {
            put(&mut m, "tls_verify", v);
        }
        if let Some(v) = self.tls_verify_depth {
            put(&mut m, "tls_verify_depth", v);
        }
        put(&mut m, "write_timeout", self.write_timeout);
        Value::Object(m)
    }
}

impl Route {
    fn into_value(self) -> Value {
        let n = 8
            + usize::from(self.expression.is_some())
            + usize::from(!self.headers.is_empty())
            + usize::from(!self.hosts.is_empty())
            + usize::from(!self.methods.is_empty())
            + usize::from(self.path_handling.is_some())
            + usize::from(self.paths.is_some())
            + usize::from(!self.plugins.is_empty())
            + usize::from(self.priority.is_some())
            + usize::from(self.protocols.is_some())
            + usize::from(self.regex_priority.is_some())
            + usize::from(!self.snis.is_empty());
        let mut m = Obj::with_capacity(n);
        if let Some(e) = self.expression {
            put(&mut m, "expression", e);
        }
        if !self.headers.is_empty() {
            let h: Obj = self
                .headers
                .into_iter()
                .map(|(k, v)| (k, strings(v)))
                .collect();
            put(&mut m, "headers", h);
        }
        if !self.hosts.is_empty() {
            put(&mut m, "hosts", strings(self.hosts));
        }
        put(
            &mut m,
            "https_redirect_status_code",
            self.https_redirect_status_code,
        );
        put(&mut m, "id", id_value(&self.id));
        if !self.methods.is_empty() {
            put(&mut m, "methods", strings(self.methods));
        }
        put(&mut m, "name", self.name);
        if let Some(p) = self.path_handling {
            put(&mut m, "path_handling", p);
        }
        if let Some(p) = self.paths {
            put(&mut m, "paths", strings(p));
        }
        if !self.plugins.is_empty() {
            let a: Vec<Value> = self
                .plugins
                .iter()
                .map(|p| serde_json::to_value(p).unwrap_or_default())
                .collect();
            put(&mut m, "plugins", a);
        }
        put(&mut m, "preserve_host", self.preserve_host);
        if let Some(p) = self.priority {
            put(&mut m, "priority", p);
        }
        if let Some(p) = self.protocols {
            put(&mut m, "protocols", strings(p));
        }
        if let Some(p) = self.regex_priority {
            put(&mut m, "regex_priority", p);
        }
        put(&mut m, "request_buffering", self.request_buffering);
        put(&mut m, "response_buffering", self.response_buffering);
        if !self.snis.is_empty() {
            put(&mut m, "snis", strings(self.snis));
        }
        put(&mut m, "strip_path", self.strip_path);
        put(&mut m, "tags", tags_value(&self.tags));
        Value::Object(m)
    }
}

impl Upstream {
    fn into_value(self) -> Value {
        let n = 3 + usize::from(self.host_header.is_some()) + usize::from(!self.targets.is_empty());
        let mut m = Obj::with_capacity(n);
        put(&mut m, "algorithm", self.algorithm);
        if let Some(h) = self.host_header {
            put(&mut m, "host_header", h);
        }
        put(&mut m, "name", self.name);
        put(&mut m, "tags", tags_value(&self.tags));
        if !self.targets.is_empty() {
            let a: Vec<Value> = self
                .targets
                .into_iter()
                .map(|t| {
                    let mut o = Obj::with_capacity(2);
                    put(&mut o, "target", t.target);
                    put(&mut o, "weight", t.weight);
                    Value::Object(o)
                })
                .collect();
            put(&mut m, "targets", a);
        }
        Value::Object(m)
    }
}

/// A CA certificate (from a Secret labeled `konghq.com/ca-cert`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CaCertificate {
    /// PEM.
    pub cert: String,
    /// Id (the Secret's `id`, its UID, or a UUIDv5).
    pub id: String,
    /// `k8s-*` tags of the Secret.
    pub tags: Tags,
}

/// A certificate (from a TLS Secret) and the SNIs it serves.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Certificate {
    /// PEM certificate chain.
    pub cert: String,
    /// Id (the Secret's UID or a UUIDv5).
    pub id: String,
    /// PEM private key.
    pub key: String,
    /// SNIs, sorted.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub snis: Vec<Sni>,
    /// `k8s-*` tags of the Secret.
    pub tags: Tags,
}

/// An SNI of a certificate.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sni {
    /// The server name.
    pub name: String,
    /// The certificate's tags.
    pub tags: Tags,
}

/// A reference to another entity by id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IdRef {
    /// The entity's id.
    pub id: String,
}

/// A Kong Service: one per Kubernetes Service port used by an Ingress.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Service {
    /// `konghq.com/ca-certificates-secrets` as CA certificate ids, sorted.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ca_certificates: Vec<String>,
    /// `konghq.com/client-cert`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_certificate: Option<IdRef>,
    /// Milliseconds.
    pub connect_timeout: i64,
    /// The Upstream's name.
    pub host: String,
    /// UUIDv5 of the name.
    #[serde(serialize_with = "uuid_str")]
    pub id: Uuid,
    /// `<namespace>.<service>.<port>`.
    pub name: String,
    /// `konghq.com/path`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Always 80 (the Upstream's targets carry the ports).
    pub port: u16,
    /// `konghq.com/protocol`.
    pub protocol: String,
    /// Milliseconds.
    pub read_timeout: i64,
    /// Retries.
    pub retries: i64,
    /// Routes, by name.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
    /// Tags of the Kubernetes Service.
    pub tags: Tags,
    /// `konghq.com/tls-verify`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_verify: Option<bool>,
    /// `konghq.com/tls-verify-depth`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_verify_depth: Option<i64>,
    /// Milliseconds.
    pub write_timeout: i64,
}

/// A route: Kong's matching fields (traditional_compatible), or `expression` + `priority`
/// (expressions).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Route {
    /// The expression (expressions router).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expression: Option<String>,
    /// Header matches, by header name (traditional router).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, Vec<String>>,
    /// Hosts (traditional router).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// `konghq.com/https-redirect-status-code`.
    pub https_redirect_status_code: i64,
    /// UUIDv5 of the name.
    #[serde(serialize_with = "uuid_str")]
    pub id: Uuid,
    /// Methods (traditional router).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    /// `<namespace>.<ingress>.<service>.<host>.<port>` (plus `_<n>` with expressions).
    pub name: String,
    /// `konghq.com/path-handling` (traditional router).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path_handling: Option<String>,
    /// Paths (traditional router).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paths: Option<Vec<String>>,
    /// `request-transformer` for `konghq.com/rewrite`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub plugins: Vec<RoutePlugin>,
    /// `konghq.com/preserve-host`.
    pub preserve_host: bool,
    /// Priority (expressions router).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub priority: Option<u64>,
    /// `konghq.com/protocols` (or `http`, `https` for the default backend).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocols: Option<Vec<String>>,
    /// `konghq.com/regex-priority` (traditional router).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub regex_priority: Option<i64>,
    /// `konghq.com/request-buffering`.
    pub request_buffering: bool,
    /// `konghq.com/response-buffering`.
    pub response_buffering: bool,
    /// SNIs (traditional router).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub snis: Vec<String>,
    /// `konghq.com/strip-path`.
    pub strip_path: bool,
    /// Tags of the Ingress.
    pub tags: Tags,
}

/// A plugin on a route (the `request-transformer` of `konghq.com/rewrite`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RoutePlugin {
    /// The plugin's configuration.
    pub config: Value,
    /// The plugin's name.
    pub name: String,
    /// The route's tags.
    pub tags: Tags,
}

/// An Upstream and its targets.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Upstream {
    /// Always `round-robin`.
    pub algorithm: &'static str,
    /// `konghq.com/host-header`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_header: Option<String>,
    /// `<service>.<namespace>.<port>.svc`.
    pub name: String,
    /// Tags of the Kubernetes Service.
    pub tags: Tags,
    /// Targets, by address.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<Target>,
}

/// A target of an Upstream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Target {
    /// `host:port`.
    pub target: String,
    /// 100, or 0 for a terminating endpoint with drain support.
    pub weight: u16,
}
