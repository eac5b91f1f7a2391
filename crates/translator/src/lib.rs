//! The translator: a pure, deterministic function from Kubernetes objects (Ingress,
//! IngressClass, Service, EndpointSlice, Secret, Kong's IngressClassParameters) to one Kong
//! declarative configuration, plus a list of per-object [`Problem`]s.
//!
//! It follows KIC's conventions so that users moving from KIC see the same entities: Kong
//! Services `<ns>.<svc>.<port>` with host = Upstream `<svc>.<ns>.<port>.svc`, routes
//! `<ns>.<ingress>.<svc>.<host>.<port>` combined per (Ingress, backend, host), UUIDv5 ids,
//! `k8s-*` tags, KIC's defaults and annotations (see [`annotations`]).
//!
//! Every problem is reported (the controller turns it into a Warning Event on the object); the
//! output always passes `silverback_config::load`:
//! - an annotation value KIC ignores (`strip-path: "1"`, `read-timeout: 30s`, an unknown
//!   protocol, ...) keeps KIC's default, and the object is still translated; so does a Service
//!   whose client certificate or CA certificate Secret cannot be used (translated without it);
//! - a value Kong would refuse, or a bad host, path or TLS host, leaves the whole Ingress out;
//!   on a Service, its Kong Services and the routes to them;
//! - a missing backend Service or port keeps the Kong Service and its routes, with an upstream
//!   without targets (requests get 503, as with KIC, rather than falling to another route);
//! - another dangling reference (missing or unusable TLS Secret, conflicting SNI, second
//!   default backend) leaves out only what needs it.
//!
//! ```
//! use silverback_translator::{Objects, TranslateOptions, translate};
//!
//! let objects = Objects::from_yaml_documents(br#"
//! apiVersion: networking.k8s.io/v1
//! kind: Ingress
//! metadata: {name: web, namespace: default}
//! spec:
//!   ingressClassName: kong
//!   rules:
//!   - host: example.com
//!     http:
//!       paths:
//!       - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}
//! ---
//! apiVersion: v1
//! kind: Service
//! metadata: {name: web, namespace: default}
//! spec: {ports: [{port: 80}]}
//! "#).unwrap();
//! let t = translate(&objects, &TranslateOptions::default());
//! assert!(t.problems.is_empty());
//! assert_eq!(t.config["services"][0]["name"], "default.web.80");
//! assert_eq!(t.config["services"][0]["routes"][0]["name"], "default.web.web.example.com.80");
//! ```

pub mod annotations;
pub mod document;
pub mod expression;
pub mod manifests;
pub mod objects;
pub mod problem;
pub mod synthetic;
pub mod translate;

pub use document::Document;
pub use objects::{IngressClassParameters, IngressClassParametersSpec, Kind, ObjectError, Objects};
pub use problem::{ObjectRef, Problem, problems_from_flattened};
pub use silverback_config::RouterFlavor;
pub use translate::{
    PluginAttachment, TranslateOptions, Translation, TypedTranslation, translate, translate_typed,
};
