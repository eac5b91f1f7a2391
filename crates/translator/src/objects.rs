//! The translator's input: the Kubernetes objects it reads, typed with `k8s-openapi`, fed
//! either from YAML/JSON documents (files) or from JSON values (the API watch).
//!
//! Objects are kept in sorted maps keyed by namespace and name, so the order in which they
//! are inserted never shows in the output.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `namespace/name` key of a namespaced object.
pub type Key = (String, String);

/// Kong's `IngressClassParameters` (`configuration.konghq.com/v1alpha1`), the two fields the
/// translator uses.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct IngressClassParameters {
    /// Standard object metadata.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// The parameters.
    #[serde(default)]
    pub spec: IngressClassParametersSpec,
}

/// The `spec` of [`IngressClassParameters`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IngressClassParametersSpec {
    /// Targets are the Service's DNS name (kube-proxy balances) instead of endpoints.
    #[serde(default)]
    pub service_upstream: bool,
    /// Ingress paths that look like regexes under Kong 2.x's heuristic get the `~` prefix.
    #[serde(default)]
    pub enable_legacy_regex_detection: bool,
}

/// API group of Kong's CRDs.
pub const KONG_GROUP: &str = "configuration.konghq.com";

/// What an object is, for [`Objects::remove`] and problem reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// `networking.k8s.io/v1` Ingress
    Ingress,
    /// `networking.k8s.io/v1` IngressClass (cluster-scoped)
    IngressClass,
    /// `v1` Service
    Service,
    /// `v1` Secret
    Secret,
    /// `discovery.k8s.io/v1` EndpointSlice
    EndpointSlice,
    /// `configuration.konghq.com/v1alpha1` IngressClassParameters
    IngressClassParameters,
}

impl Kind {
    /// The Kubernetes kind name.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Ingress => "Ingress",
            Kind::IngressClass => "IngressClass",
            Kind::Service => "Service",
            Kind::Secret => "Secret",
            Kind::EndpointSlice => "EndpointSlice",
            Kind::IngressClassParameters => "IngressClassParameters",
        }
    }
    /// The `apiVersion` (`group/version`, or `v1` for the core group).
    pub fn api_version(self) -> &'static str {
        match self {
            Kind::Ingress | Kind::IngressClass => "networking.k8s.io/v1",
            Kind::Service | Kind::Secret => "v1",
            Kind::EndpointSlice => "discovery.k8s.io/v1",
            Kind::IngressClassParameters => "configuration.konghq.com/v1alpha1",
        }
    }
    /// Recognizes `apiVersion` + `kind`.
    pub fn from_type(api_version: &str, kind: &str) -> Option<Kind> {
        let k = match kind {
            "Ingress" => Kind::Ingress,
            "IngressClass" => Kind::IngressClass,
            "Service" => Kind::Service,
            "Secret" => Kind::Secret,
            "EndpointSlice" => Kind::EndpointSlice,
            "IngressClassParameters" => Kind::IngressClassParameters,
            _ => return None,
        };
        (k.api_version() == api_version).then_some(k)
    }
}

/// Why an object could not be taken in.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ObjectError {
    /// The bytes are not YAML/JSON.
    #[error("document {document}: {message}")]
    Syntax {
        /// 1-based document index in the stream.
        document: usize,
        /// Parser message.
        message: String,
    },
    /// A document of a kind we read does not have that kind's shape.
    #[error("{kind} {name}: {message}")]
    Invalid {
        /// `apiVersion/kind` as given.
        kind: String,
        /// `namespace/name` as given.
        name: String,
        /// Deserializer message.
        message: String,
    },
    /// The value is not an object with `apiVersion` and `kind`.
    #[error("not a Kubernetes object: {0}")]
    NotAnObject(String),
}

/// The set of Kubernetes objects the translator reads. Unknown kinds are ignored.
#[derive(Debug, Clone, Default)]
pub struct Objects {
    /// Ingresses by namespace/name.
    pub ingresses: BTreeMap<Key, Ingress>,
    /// IngressClasses by name.
    pub ingress_classes: BTreeMap<String, IngressClass>,
    /// Services by namespace/name.
    pub services: BTreeMap<Key, Service>,
    /// Secrets by namespace/name.
    pub secrets: BTreeMap<Key, Secret>,
    /// EndpointSlices by namespace/name.
    pub endpoint_slices: BTreeMap<Key, EndpointSlice>,
    /// IngressClassParameters by namespace/name.
    pub ingress_class_parameters: BTreeMap<Key, IngressClassParameters>,
}

fn key(meta: &ObjectMeta) -> Key {
    (
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    )
}

impl Objects {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses a stream of YAML documents (`---`-separated; JSON is YAML too) into a new set.
    /// `kind: List` documents contribute their `items`.
    pub fn from_yaml_documents(bytes: &[u8]) -> Result<Objects, ObjectError> {
        let mut o = Objects::new();
        o.add_yaml_documents(bytes)?;
        Ok(o)
    }

    /// Adds every object of a YAML/JSON document stream; returns how many were recognized.
    pub fn add_yaml_documents(&mut self, bytes: &[u8]) -> Result<usize, ObjectError> {
        let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
        let text = std::str::from_utf8(bytes).map_err(|e| ObjectError::Syntax {
            document: 1,
            message: format!("invalid UTF-8: {e}"),
        })?;
        let docs: Vec<Value> = match serde_saphyr::from_multiple::<Value>(text) {
            Ok(d) => d,
            Err(e) => {
                let message = e.to_string();
                let message = message.lines().next().unwrap_or_default().to_string();
                return Err(ObjectError::Syntax {
                    document: 0,
                    message,
                });
            }
        };
        let mut n = 0;
        for doc in docs {
            if doc.is_null() {
                continue;
            }
            n += self.insert(doc)?;
        }
        Ok(n)
    }

    /// Adds (or replaces) one object given as a JSON value (as the API returns it). Returns
    /// the number of objects recognized: 0 for a kind the translator does not read, more
    /// than one for a `List`.
    pub fn insert(&mut self, mut value: Value) -> Result<usize, ObjectError> {
        let Some(obj) = value.as_object() else {
            return Err(ObjectError::NotAnObject(truncate(&value.to_string())));
        };
        let api_version = obj
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let kind_name = obj
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        if kind_name.is_empty() {
            return Err(ObjectError::NotAnObject(truncate(&value.to_string())));
        }
        if kind_name == "List" || kind_name.ends_with("List") && obj.contains_key("items") {
            let items = value
                .get_mut("items")
                .map(Value::take)
                .unwrap_or(Value::Null);
            let mut n = 0;
            for item in items.as_array().cloned().unwrap_or_default() {
                n += self.insert(item)?;
            }
            return Ok(n);
        }
        let Some(kind) = Kind::from_type(&api_version, &kind_name) else {
            return Ok(0);
        };
        stringify_metadata_maps(&mut value);
        let meta_name = || {
            let m = value.get("metadata");
            let ns = m
                .and_then(|m| m.get("namespace"))
                .and_then(Value::as_str)
                .unwrap_or_default();
            let name = m
                .and_then(|m| m.get("name"))
                .and_then(Value::as_str)
                .unwrap_or_default();
            if ns.is_empty() {
                name.to_string()
            } else {
                format!("{ns}/{name}")
            }
        };
        let invalid = |e: serde_json::Error, name: String| ObjectError::Invalid {
            kind: format!("{api_version}/{kind_name}"),
            name,
            message: e.to_string(),
        };
        let name = meta_name();
        if name.is_empty() || name.ends_with('/') {
            return Err(ObjectError::Invalid {
                kind: format!("{api_version}/{kind_name}"),
                name,
                message: "metadata.name is required".into(),
            });
        }
        match kind {
            Kind::Ingress => {
                self.insert_ingress(serde_json::from_value(value).map_err(|e| invalid(e, name))?)
            }
            Kind::IngressClass => self
                .insert_ingress_class(serde_json::from_value(value).map_err(|e| invalid(e, name))?),
            Kind::Service => {
                self.insert_service(serde_json::from_value(value).map_err(|e| invalid(e, name))?)
            }
            Kind::Secret => {
                self.insert_secret(serde_json::from_value(value).map_err(|e| invalid(e, name))?)
            }
            Kind::EndpointSlice => self.insert_endpoint_slice(
                serde_json::from_value(value).map_err(|e| invalid(e, name))?,
            ),
            Kind::IngressClassParameters => self.insert_ingress_class_parameters(
                serde_json::from_value(value).map_err(|e| invalid(e, name))?,
            ),
        }
        Ok(1)
    }

    /// Adds or replaces an Ingress.
    pub fn insert_ingress(&mut self, o: Ingress) {
        self.ingresses.insert(key(&o.metadata), o);
    }
    /// Adds or replaces an IngressClass.
    pub fn insert_ingress_class(&mut self, o: IngressClass) {
        self.ingress_classes
            .insert(o.metadata.name.clone().unwrap_or_default(), o);
    }
    /// Adds or replaces a Service.
    pub fn insert_service(&mut self, o: Service) {
        self.services.insert(key(&o.metadata), o);
    }
    /// Adds or replaces a Secret.
    pub fn insert_secret(&mut self, o: Secret) {
        self.secrets.insert(key(&o.metadata), o);
    }
    /// Adds or replaces an EndpointSlice.
    pub fn insert_endpoint_slice(&mut self, o: EndpointSlice) {
        self.endpoint_slices.insert(key(&o.metadata), o);
    }
    /// Adds or replaces an IngressClassParameters.
    pub fn insert_ingress_class_parameters(&mut self, o: IngressClassParameters) {
        self.ingress_class_parameters.insert(key(&o.metadata), o);
    }

    /// Removes an object; `namespace` is ignored for IngressClasses. Returns whether it was
    /// present.
    pub fn remove(&mut self, kind: Kind, namespace: &str, name: &str) -> bool {
        let k = (namespace.to_string(), name.to_string());
        match kind {
            Kind::Ingress => self.ingresses.remove(&k).is_some(),
            Kind::IngressClass => self.ingress_classes.remove(name).is_some(),
            Kind::Service => self.services.remove(&k).is_some(),
            Kind::Secret => self.secrets.remove(&k).is_some(),
            Kind::EndpointSlice => self.endpoint_slices.remove(&k).is_some(),
            Kind::IngressClassParameters => self.ingress_class_parameters.remove(&k).is_some(),
        }
    }

    /// Total number of objects held.
    pub fn len(&self) -> usize {
        self.ingresses.len()
            + self.ingress_classes.len()
            + self.services.len()
            + self.secrets.len()
            + self.endpoint_slices.len()
            + self.ingress_class_parameters.len()
    }

    /// Whether no object is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn truncate(s: &str) -> String {
    if s.len() <= 80 {
        return s.to_string();
    }
    let mut end = 80;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

/// YAML turns `konghq.com/strip-path: true` into a boolean, which the API server would
/// refuse but a file may well contain: annotation and label values become strings.
fn stringify_metadata_maps(v: &mut Value) {
    let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) else {
        return;
    };
    for field in ["annotations", "labels"] {
        if let Some(Value::Object(m)) = meta.get_mut(field) {
            for val in m.values_mut() {
                match val {
                    Value::Bool(b) => *val = Value::String(b.to_string()),
                    Value::Number(n) => *val = Value::String(n.to_string()),
                    Value::Null => *val = Value::String(String::new()),
                    _ => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_documents_lists_and_ignores_unknown_kinds() {
        let yaml = br#"
apiVersion: v1
kind: Service
metadata: {name: a, namespace: ns, annotations: {konghq.com/strip-path: true, konghq.com/retries: 3}}
spec: {ports: [{port: 80}]}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: c, namespace: ns}
---
---
apiVersion: v1
kind: List
items:
- apiVersion: networking.k8s.io/v1
  kind: IngressClass
  metadata: {name: kong}
  spec: {controller: ingress-controllers.konghq.com/kong}
- apiVersion: configuration.konghq.com/v1alpha1
  kind: IngressClassParameters
  metadata: {name: p, namespace: ns}
  spec: {serviceUpstream: true}
"#;
        let o = Objects::from_yaml_documents(yaml).unwrap();
        assert_eq!(o.len(), 3);
        let svc = &o.services[&("ns".into(), "a".into())];
        let ann = svc.metadata.annotations.as_ref().unwrap();
        assert_eq!(ann["konghq.com/strip-path"], "true");
        assert_eq!(ann["konghq.com/retries"], "3");
        assert!(
            o.ingress_class_parameters[&("ns".into(), "p".into())]
                .spec
                .service_upstream
        );
        assert!(o.ingress_classes.contains_key("kong"));
    }

    #[test]
    fn errors_name_the_object() {
        let bad = br#"{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x", "namespace": "n"}, "spec": {"ports": "nope"}}"#;
        let e = Objects::from_yaml_documents(bad).unwrap_err();
        assert!(
            matches!(&e, ObjectError::Invalid { name, .. } if name == "n/x"),
            "{e}"
        );
        assert!(matches!(
            Objects::from_yaml_documents(b"a: [b"),
            Err(ObjectError::Syntax { .. })
        ));
        let unnamed = br#"{"apiVersion": "v1", "kind": "Service", "metadata": {"namespace": "n"}}"#;
        assert!(Objects::from_yaml_documents(unnamed).is_err());
        assert!(Objects::new().insert(Value::from(3)).is_err());
    }

    #[test]
    fn replace_and_remove() {
        let mut o = Objects::new();
        let svc = |port: i64| serde_json::json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "a", "namespace": "n"}, "spec": {"ports": [{"port": port}]}});
        assert_eq!(o.insert(svc(80)).unwrap(), 1);
        assert_eq!(o.insert(svc(81)).unwrap(), 1);
        assert_eq!(o.len(), 1);
        assert_eq!(
            o.services
                .values()
                .next()
                .unwrap()
                .spec
                .as_ref()
                .unwrap()
                .ports
                .as_ref()
                .unwrap()[0]
                .port,
            81
        );
        assert!(o.remove(Kind::Service, "n", "a"));
        assert!(!o.remove(Kind::Service, "n", "a"));
        assert!(o.is_empty());
    }
}
