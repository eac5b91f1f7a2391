//! Problems: what the translator could not translate, naming the object and the field; and
//! the way back from Kong's `flattened_errors` to objects through the `k8s-*` tags every
//! generated entity carries.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};
use silverback_config::FlattenedError;

use crate::objects::Kind;

/// A reference to a Kubernetes object.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ObjectRef {
    /// Kind (`Ingress`).
    pub kind: String,
    /// Namespace; empty for cluster-scoped objects.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// `apiVersion` (`networking.k8s.io/v1`, `v1`).
    pub api_version: String,
    /// UID; empty when unknown (objects read from files often have none).
    pub uid: String,
}

impl ObjectRef {
    /// The reference to an object of `kind` with this metadata.
    pub fn new(kind: Kind, meta: &ObjectMeta) -> Self {
        ObjectRef {
            kind: kind.as_str().to_string(),
            namespace: meta.namespace.clone().unwrap_or_default(),
            name: meta.name.clone().unwrap_or_default(),
            api_version: kind.api_version().to_string(),
            uid: meta.uid.clone().unwrap_or_default(),
        }
    }

    /// KIC's tags for entities generated from this object: `k8s-name`, `k8s-namespace`,
    /// `k8s-kind`, `k8s-group` (not for the core group), `k8s-version`, `k8s-uid` (when
    /// known), in that order.
    pub fn tags(&self) -> Vec<String> {
        let mut t = Vec::with_capacity(6);
        t.push(format!("k8s-name:{}", self.name));
        if !self.namespace.is_empty() {
            t.push(format!("k8s-namespace:{}", self.namespace));
        }
        t.push(format!("k8s-kind:{}", self.kind));
        let (group, version) = match self.api_version.split_once('/') {
            Some((g, v)) => (g, v),
            None => ("", self.api_version.as_str()),
        };
        if !group.is_empty() {
            t.push(format!("k8s-group:{group}"));
        }
        if !version.is_empty() {
            t.push(format!("k8s-version:{version}"));
        }
        if !self.uid.is_empty() {
            t.push(format!("k8s-uid:{}", self.uid));
        }
        t
    }

    /// Reads the object back from an entity's tags. Needs at least `k8s-kind` and
    /// `k8s-name`; other tags fill what they can.
    pub fn from_tags<S: AsRef<str>>(tags: &[S]) -> Option<ObjectRef> {
        let mut r = ObjectRef::default();
        let (mut group, mut version) = (String::new(), String::new());
        for t in tags {
            let t = t.as_ref();
            let Some((k, v)) = t.split_once(':') else {
                continue;
            };
            match k {
                "k8s-name" => r.name = v.to_string(),
                "k8s-namespace" => r.namespace = v.to_string(),
                "k8s-kind" => r.kind = v.to_string(),
                "k8s-group" => group = v.to_string(),
                "k8s-version" => version = v.to_string(),
                "k8s-uid" => r.uid = v.to_string(),
                _ => {}
            }
        }
        if r.kind.is_empty() || r.name.is_empty() {
            return None;
        }
        r.api_version = if group.is_empty() {
            version
        } else {
            format!("{group}/{version}")
        };
        Some(r)
    }
}

impl std::fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{} {}", self.kind, self.name)
        } else {
            write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
        }
    }
}

/// Something about one object that kept (part of) it out of the configuration.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Problem {
    /// The object at fault.
    pub object: ObjectRef,
    /// The field, in Kubernetes' notation (`spec.rules[0].http.paths[1].path`,
    /// `metadata.annotations[konghq.com/strip-path]`); empty for the whole object.
    pub field: String,
    /// What is wrong, and what was left out or ignored because of it.
    pub reason: String,
    /// Only a value was ignored (one KIC ignores too): the object was translated without it,
    /// so it does not count as a broken object.
    pub ignored: bool,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}: {}", self.object, self.reason)
        } else {
            write!(f, "{}: {}: {}", self.object, self.field, self.reason)
        }
    }
}

/// Maps Kong's `flattened_errors` back to objects through the entities' `k8s-*` tags.
/// Returns the problems (one per error, `field` prefixed with the Kong entity type and
/// name so the user sees which generated entity failed) and the entries that carry no
/// usable tags (to be logged).
pub fn problems_from_flattened(errors: &[FlattenedError]) -> (Vec<Problem>, Vec<&FlattenedError>) {
    let mut problems = Vec::new();
    let mut unmapped = Vec::new();
    for fe in errors {
        let Some(object) = ObjectRef::from_tags(fe.entity_tags.as_deref().unwrap_or_default())
        else {
            unmapped.push(fe);
            continue;
        };
        let who = match (&fe.entity_name, &fe.entity_id) {
            (Some(n), _) => format!("Kong {} '{n}'", fe.entity_type),
            (None, Some(id)) => format!("Kong {} {id}", fe.entity_type),
            _ => format!("Kong {}", fe.entity_type),
        };
        for e in &fe.errors {
            let reason = match &e.field {
                Some(f) => format!("{who}: {f}: {}", e.message),
                None => format!("{who}: {}", e.message),
            };
            problems.push(Problem {
                object: object.clone(),
                field: String::new(),
                reason,
                ignored: false,
            });
        }
    }
    problems.sort();
    problems.dedup();
    (problems, unmapped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use silverback_config::FlatError;

    #[test]
    fn tags_round_trip() {
        let r = ObjectRef {
            kind: "Ingress".into(),
            namespace: "ns".into(),
            name: "web".into(),
            api_version: "networking.k8s.io/v1".into(),
            uid: "u-1".into(),
        };
        assert_eq!(
            r.tags(),
            [
                "k8s-name:web",
                "k8s-namespace:ns",
                "k8s-kind:Ingress",
                "k8s-group:networking.k8s.io",
                "k8s-version:v1",
                "k8s-uid:u-1"
            ]
        );
        assert_eq!(ObjectRef::from_tags(&r.tags()), Some(r));
        let core = ObjectRef {
            kind: "Service".into(),
            name: "s".into(),
            api_version: "v1".into(),
            ..Default::default()
        };
        assert_eq!(
            core.tags(),
            ["k8s-name:s", "k8s-kind:Service", "k8s-version:v1"]
        );
        assert_eq!(ObjectRef::from_tags(&core.tags()), Some(core));
        assert_eq!(ObjectRef::from_tags(&["k8s-name:x", "user-tag"]), None);
    }

    #[test]
    fn flattened_errors_map_back() {
        let tagged = FlattenedError {
            entity_type: "route".into(),
            entity_name: Some("ns.web.svc.a.80".into()),
            entity_id: None,
            entity_tags: Some(vec![
                "k8s-name:web".into(),
                "k8s-namespace:ns".into(),
                "k8s-kind:Ingress".into(),
            ]),
            entity: serde_json::json!({}),
            errors: vec![FlatError {
                kind: "field".into(),
                field: Some("paths.1".into()),
                message: "bad".into(),
            }],
            key: None,
        };
        let untagged = FlattenedError {
            entity_tags: Some(vec!["other".into()]),
            ..tagged.clone()
        };
        let binding = [tagged, untagged];
        let (p, unmapped) = problems_from_flattened(&binding);
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].object.name, "web");
        assert_eq!(p[0].object.namespace, "ns");
        assert_eq!(p[0].reason, "Kong route 'ns.web.svc.a.80': paths.1: bad");
        assert_eq!(unmapped.len(), 1);
    }
}
