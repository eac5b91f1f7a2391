//! The typed Kong declarative document a translation produces, and [`KongConfig`], the
//! `Translation::config` field that holds it.
//!
//! Every struct declares its fields in alphabetical order and leaves absent optional
//! fields out, so the derived serialization writes exactly the bytes of the sorted
//! `serde_json::Value` document the translator used to build (golden tests and the
//! `typed_document_serializes_like_its_value` test check this). Serializing the typed
//! document directly avoids building and freeing a `Value` tree of some 700,000 nodes at
//! 10,000 Ingresses: the `Value` form is built only if someone asks for it.

use std::collections::BTreeMap;
use std::ops::Deref;
use std::sync::{Arc, OnceLock};

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

/// `Translation::config`: the typed [`Document`], serialized directly by
/// `Translation::to_json`/`to_yaml` and by `Serialize`, and readable as a
/// `serde_json::Value` through `Deref` (`t.config["services"]`, `t.config.as_object()`).
///
/// The `Value` is built on the first dereference and kept; it costs about as much time
/// and memory as the translation itself at 10,000 Ingresses, so hot paths should use
/// [`KongConfig::document`], [`KongConfig::is_empty`] or serialization instead.
#[derive(Debug, Clone, Default)]
pub struct KongConfig {
    doc: Document,
    value: OnceLock<Value>,
}

impl KongConfig {
    /// Wraps a document.
    pub fn new(doc: Document) -> Self {
        KongConfig {
            doc,
            value: OnceLock::new(),
        }
    }
    /// The typed document.
    pub fn document(&self) -> &Document {
        &self.doc
    }
    /// Whether the document holds no entity (only `_format_version`), without building
    /// the `Value`.
    pub fn is_empty(&self) -> bool {
        self.doc.is_empty()
    }
    /// The document as a `serde_json::Value` (a new tree).
    pub fn to_value(&self) -> Value {
        match self.value.get() {
            Some(v) => v.clone(),
            None => build_value(&self.doc),
        }
    }
    /// The document as a `serde_json::Value`.
    pub fn into_value(self) -> Value {
        match self.value.into_inner() {
            Some(v) => v,
            None => build_value(&self.doc),
        }
    }
    /// The typed document.
    pub fn into_document(self) -> Document {
        self.doc
    }
}

fn build_value(doc: &Document) -> Value {
    // the document has only string keys: serialization into a Value cannot fail
    serde_json::to_value(doc).unwrap_or_default()
}

impl From<Document> for KongConfig {
    fn from(doc: Document) -> Self {
        KongConfig::new(doc)
    }
}

impl From<KongConfig> for Value {
    fn from(c: KongConfig) -> Self {
        c.into_value()
    }
}

impl Deref for KongConfig {
    type Target = Value;
    fn deref(&self) -> &Value {
        self.value.get_or_init(|| build_value(&self.doc))
    }
}

impl PartialEq for KongConfig {
    fn eq(&self, other: &Self) -> bool {
        self.doc == other.doc
    }
}

impl PartialEq<Value> for KongConfig {
    fn eq(&self, other: &Value) -> bool {
        **self == *other
    }
}

impl Serialize for KongConfig {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.doc.serialize(s)
    }
}
