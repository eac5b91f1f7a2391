//! The typed load path of the entities a large configuration is made of: a service, route,
//! upstream or target read from JSON goes from its entries straight into its typed struct.
//! Each given value is checked by its schema field (the same [`validate_field_moving`] the
//! generic engine runs, so the per-field rules cannot drift) and moved into place; absent
//! fields keep the values of a template typed from the schema's own defaults; the record
//! checks that can apply to the supported shapes are written out for those shapes.
//!
//! Only the usual shapes come this way ([`supported`]): HTTP routes, upstreams without health
//! checks or hashing, nested targets, services without TLS settings or `url`. Anything else,
//! decided before an entry is touched, takes the generic path. A value that fails here makes
//! the whole document fall back to the reporting path, which finds and reports the error; so
//! this path may refuse more than the generic one, never accept more (`fast::tests` load
//! random entities both ways and compare).

use std::sync::Arc;

use rustc_hash::FxHashMap;
use serde_json::Value;
use uuid::Uuid;

use crate::RouterFlavor;
use crate::entities::{
    EntityKind, Healthchecks, PathHandling, Protocol, Route, Service, Target, Upstream,
};
use crate::schema::{Fields, Record, validate_field_moving};
use crate::typed::{boolean, string, strings, u16_of, u32_of};

/// An entity typed on this path.
pub(crate) enum Typed {
    Service(Service),
    Route(Route),
    Upstream(Upstream),
    Target(Target),
}

impl Typed {
    /// Its kind.
    pub(crate) fn kind(&self) -> EntityKind {
        match self {
            Typed::Service(_) => EntityKind::Service,
            Typed::Route(_) => EntityKind::Route,
            Typed::Upstream(_) => EntityKind::Upstream,
            Typed::Target(_) => EntityKind::Target,
        }
    }
    /// Its unique `name`, if any (the only unique field of the supported kinds).
    pub(crate) fn name(&self) -> Option<&str> {
        match self {
            Typed::Service(s) => s.name.as_deref(),
            Typed::Route(r) => r.name.as_deref(),
            Typed::Upstream(u) => Some(&u.name),
            Typed::Target(_) => None,
        }
    }
}

/// The keys each kind takes on this path (`id` is read before, by the loader).
fn keys(kind: EntityKind) -> &'static [&'static str] {
    match kind {
        EntityKind::Service => &[
            "id",
            "name",
            "retries",
            "protocol",
            "host",
            "port",
            "path",
            "connect_timeout",
            "write_timeout",
            "read_timeout",
            "tags",
            "enabled",
        ],
        EntityKind::Route => &[
            "id",
            "name",
            "protocols",
            "methods",
            "hosts",
            "paths",
            "https_redirect_status_code",
            "regex_priority",
            "strip_path",
            "path_handling",
            "preserve_host",
            "request_buffering",
            "response_buffering",
            "snis",
            "tags",
        ],
        EntityKind::Upstream => &[
            "id",
            "name",
            "algorithm",
            "slots",
            "tags",
            "host_header",
            "use_srv_name",
        ],
        EntityKind::Target => &["id", "target", "weight", "tags"],
        _ => &[],
    }
}

/// Whether an entity of `kind` with these entries is typed here; `nested`: whether it is
/// nested in its parent (a target must be: its upstream is set by the loader; a service must
/// not be).
pub(crate) fn supported<K: AsRef<str>>(
    kind: EntityKind,
    entries: &[(K, Value)],
    nested: bool,
    flavor: RouterFlavor,
) -> bool {
    let ok = match kind {
        // a service nested in a certificate gets it as `client_certificate`, which the
        // service's entity checks allow only with some protocols: the generic path checks it
        EntityKind::Service => !nested,
        EntityKind::Upstream => true,
        EntityKind::Route => flavor != RouterFlavor::Expressions,
        EntityKind::Target => nested,
        _ => false,
    };
    let keys = keys(kind);
    ok && entries.iter().all(|(k, v)| {
        let k = k.as_ref();
        keys.contains(&k)
            // HTTP routes only: the entity checks below are those of the HTTP subschema
            && (k != "protocols"
                || match v {
                    Value::Null => true,
                    Value::Array(a) => a
                        .iter()
                        .all(|p| matches!(p.as_str(), Some("http" | "https"))),
                    _ => false,
                })
    })
}

/// The typed path of one kind: the entity its schema's defaults give.
pub(crate) struct Direct {
    template: Typed,
}

impl Direct {
    /// The typed path of `kind` with its `schema` (`None` for a kind it does not take).
    /// `healthchecks`: the shared default health checks of upstreams.
    pub(crate) fn new(
        kind: EntityKind,
        schema: &Record,
        healthchecks: Option<&Arc<Healthchecks>>,
    ) -> Option<Direct> {
        // the only unique field of these kinds is their name ([`Typed::name`])
        if schema.fields.iter().any(|f| f.unique && f.name != "name") {
            return None;
        }
        // The schema's defaults, typed by the generic path's builders: the required fields
        // without a default get a placeholder, overwritten or refused when building.
        let mut defaults = Fields::new();
        for (f, d) in schema.fields.iter().zip(schema.validated_defaults()) {
            match d {
                Some(v) if f.name != "healthchecks" => defaults.insert(f.name, v),
                _ if f.required => defaults.insert(f.name, Value::String(String::new())),
                _ => {}
            }
        }
        let id = Uuid::nil();
        let template = match kind {
            EntityKind::Service => Typed::Service(crate::typed::service(defaults, id)?),
            EntityKind::Route => Typed::Route(crate::typed::route(defaults, id)?),
            EntityKind::Upstream => Typed::Upstream(crate::typed::upstream(
                defaults,
                id,
                Some(Arc::clone(healthchecks?)),
            )?),
            EntityKind::Target => {
                defaults.remove("upstream");
                Typed::Target(crate::typed::target(defaults, id)?)
            }
            _ => return None,
        };
        Some(Direct { template })
    }

    /// Checks and types an entity whose entries [`supported`] took, with the `schema` this
    /// path was made with and its field positions (`index`); `None` when a value is invalid
    /// (or anything is unexpected).
    pub(crate) fn build<K: AsRef<str>>(
        &self,
        schema: &Record,
        index: &FxHashMap<&'static str, usize>,
        entries: Vec<(K, Value)>,
        id: Uuid,
    ) -> Option<Typed> {
        // each value checked by its field; absent and null are alike
        let checked = entries.into_iter().filter_map(|(k, v)| {
            let k = k.as_ref();
            if k == "id" || v.is_null() {
                return None;
            }
            Some(
                index
                    .get(k)
                    .and_then(|&i| Some((schema.fields.get(i)?, v)))
                    .and_then(|(f, v)| Some((f.name, validate_field_moving(f, v)?))),
            )
        });
        match &self.template {
            Typed::Service(t) => service(t.clone(), id, checked).map(Typed::Service),
            Typed::Route(t) => route(t.clone(), id, checked).map(Typed::Route),
            Typed::Upstream(t) => upstream(t.clone(), id, checked).map(Typed::Upstream),
            Typed::Target(t) => target(t.clone(), id, checked).map(Typed::Target),
        }
    }
}

/// Checked values: (field name, value), or `None` for a value its field refused.
trait Checked: Iterator<Item = Option<(&'static str, Value)>> {}
impl<I: Iterator<Item = Option<(&'static str, Value)>>> Checked for I {}

fn service(mut s: Service, id: Uuid, values: impl Checked) -> Option<Service> {
    s.id = id;
    let mut host = false;
    for v in values {
        let (k, v) = v?;
        match k {
            "name" => s.name = Some(string(v)?),
            "retries" => s.retries = u16_of(&v)?,
            "protocol" => s.protocol = protocol(&v)?,
            "host" => {
                s.host = string(v)?;
                host = true;
            }
            "port" => s.port = u16_of(&v)?,
            "path" => s.path = Some(string(v)?),
            "connect_timeout" => s.connect_timeout = u32_of(&v)?,
            "write_timeout" => s.write_timeout = u32_of(&v)?,
            "read_timeout" => s.read_timeout = u32_of(&v)?,
            "tags" => s.tags = strings(v)?,
            "enabled" => s.enabled = boolean(&v)?,
            _ => return None,
        }
    }
    // the entity checks: no path for the protocols without one (the TLS-only fields are not
    // taken here)
    let no_path = matches!(
        s.protocol,
        Protocol::Tcp | Protocol::Tls | Protocol::Udp | Protocol::Grpc | Protocol::Grpcs
    );
    (host && !(no_path && s.path.is_some())).then_some(s)
}

fn route(mut r: Route, id: Uuid, values: impl Checked) -> Option<Route> {
    r.id = id;
    for v in values {
        let (k, v) = v?;
        match k {
            "name" => r.name = Some(string(v)?),
            "protocols" => {
                let Value::Array(items) = v else {
                    return None;
                };
                r.protocols = items.iter().map(protocol).collect::<Option<_>>()?;
            }
            "methods" => r.methods = strings(v)?,
            "hosts" => r.hosts = strings(v)?,
            "paths" => r.paths = strings(v)?,
            "https_redirect_status_code" => r.https_redirect_status_code = u16_of(&v)?,
            "regex_priority" => r.regex_priority = v.as_i64()?,
            "strip_path" => r.strip_path = boolean(&v)?,
            "path_handling" => {
                r.path_handling = match v.as_str()? {
                    "v0" => PathHandling::V0,
                    "v1" => PathHandling::V1,
                    _ => return None,
                }
            }
            "preserve_host" => r.preserve_host = boolean(&v)?,
            "request_buffering" => r.request_buffering = boolean(&v)?,
            "response_buffering" => r.response_buffering = boolean(&v)?,
            "snis" => r.snis = strings(v)?,
            "tags" => r.tags = strings(v)?,
            _ => return None,
        }
    }
    // the entity checks of an HTTP route (`route_checks`): only HTTP protocols come here
    if !r
        .protocols
        .iter()
        .all(|p| matches!(p, Protocol::Http | Protocol::Https))
    {
        return None;
    }
    let https = r.protocols.contains(&Protocol::Https);
    if !r.snis.is_empty() && !https {
        return None;
    }
    let matches_on = !r.methods.is_empty()
        || !r.hosts.is_empty()
        || !r.paths.is_empty()
        || (https && !r.snis.is_empty());
    matches_on.then_some(r)
}

fn upstream(mut u: Upstream, id: Uuid, values: impl Checked) -> Option<Upstream> {
    u.id = id;
    let mut name = false;
    for v in values {
        let (k, v) = v?;
        match k {
            "name" => {
                u.name = string(v)?;
                name = true;
            }
            "algorithm" => u.algorithm = string(v)?,
            "slots" => u.slots = u32_of(&v)?,
            "tags" => u.tags = strings(v)?,
            "host_header" => u.host_header = Some(string(v)?),
            "use_srv_name" => u.use_srv_name = boolean(&v)?,
            _ => return None,
        }
    }
    // the entity checks, with no hashing given: consistent hashing needs a `hash_on`
    (name
        && u.hash_on == "none"
        && u.hash_fallback == "none"
        && u.algorithm != "consistent-hashing")
        .then_some(u)
}

fn target(mut t: Target, id: Uuid, values: impl Checked) -> Option<Target> {
    t.id = id;
    let mut given = false;
    for v in values {
        let (k, v) = v?;
        match k {
            "target" => {
                t.target = crate::entities::normalize_target(v.as_str()?);
                given = true;
            }
            "weight" => t.weight = u32_of(&v)?,
            "tags" => t.tags = strings(v)?,
            _ => return None,
        }
    }
    given.then_some(t)
}

/// A protocol by its name.
fn protocol(v: &Value) -> Option<Protocol> {
    Some(match v.as_str()? {
        "http" => Protocol::Http,
        "https" => Protocol::Https,
        "grpc" => Protocol::Grpc,
        "grpcs" => Protocol::Grpcs,
        "tcp" => Protocol::Tcp,
        "tls" => Protocol::Tls,
        "tls_passthrough" => Protocol::TlsPassthrough,
        "udp" => Protocol::Udp,
        "ws" => Protocol::Ws,
        "wss" => Protocol::Wss,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entities::schema;
    use serde_json::json;

    fn entries(v: Value) -> Vec<(String, Value)> {
        match v {
            Value::Object(m) => m.into_iter().collect(),
            _ => panic!("not an object"),
        }
    }

    /// The entities the translator writes (every key it may write for these kinds, but the
    /// TLS settings of services and the header and expression matches of routes) take this
    /// path, and come out with the values given.
    #[test]
    fn the_translators_entities_are_typed_here() {
        let flavor = RouterFlavor::TraditionalCompatible;
        let hc = crate::config::default_healthchecks();
        let id = Uuid::from_u128(7);
        let cases = [
            (
                EntityKind::Service,
                json!({"connect_timeout": 60000, "host": "echo.default.80.svc", "id": id.to_string(),
                       "name": "default.echo.80", "path": "/", "port": 80, "protocol": "http",
                       "read_timeout": 60000, "retries": 5, "write_timeout": 60000,
                       "tags": ["k8s-name:echo", "k8s-namespace:default"]}),
                false,
            ),
            (
                EntityKind::Route,
                json!({"hosts": ["a.test"], "https_redirect_status_code": 426, "id": id.to_string(),
                       "methods": ["GET"], "name": "default.echo.a.test.00", "path_handling": "v0",
                       "paths": ["/echo", "~/echo/(?<id>\\d+)$"], "preserve_host": true,
                       "protocols": ["http", "https"], "regex_priority": 0,
                       "request_buffering": true, "response_buffering": true,
                       "snis": ["a.test"], "strip_path": false, "tags": ["k8s-kind:Ingress"]}),
                true,
            ),
            (
                EntityKind::Upstream,
                json!({"algorithm": "round-robin", "host_header": "echo.default.svc",
                       "name": "echo.default.80.svc", "tags": ["k8s-kind:Service"]}),
                false,
            ),
            (
                EntityKind::Target,
                json!({"target": "10.244.0.5:8080", "weight": 100}),
                true,
            ),
        ];
        for (kind, input, nested) in cases {
            let s = schema(kind, flavor);
            let index = s.positions();
            let e = entries(input.clone());
            assert!(supported(kind, &e, nested, flavor), "{input}");
            let direct = Direct::new(kind, &s, hc).expect("a typed path");
            let typed = direct.build(&s, &index, e, id).expect("valid");
            assert_eq!(typed.kind(), kind);
            // every value given is in the typed entity, as its serialization shows
            let out = match typed {
                Typed::Service(x) => serde_json::to_value(x),
                Typed::Route(x) => serde_json::to_value(x),
                Typed::Upstream(x) => serde_json::to_value(x),
                Typed::Target(x) => serde_json::to_value(x),
            }
            .expect("serializes");
            for (k, v) in input.as_object().into_iter().flatten() {
                assert_eq!(out.get(k), Some(v), "{kind:?}.{k}");
            }
        }
    }

    #[test]
    fn other_shapes_take_the_generic_path() {
        let flavor = RouterFlavor::TraditionalCompatible;
        for (kind, input, nested) in [
            (EntityKind::Service, json!({"url": "http://a.test"}), false),
            (
                EntityKind::Service,
                json!({"host": "a", "tls_verify": true}),
                false,
            ),
            (
                EntityKind::Route,
                json!({"paths": ["/"], "protocols": ["grpc"]}),
                true,
            ),
            (
                EntityKind::Route,
                json!({"paths": ["/"], "headers": {"x": ["1"]}}),
                true,
            ),
            (
                EntityKind::Route,
                json!({"paths": ["/"], "service": "s"}),
                false,
            ),
            (
                EntityKind::Upstream,
                json!({"name": "u", "hash_on": "ip"}),
                false,
            ),
            (
                EntityKind::Upstream,
                json!({"name": "u", "healthchecks": {}}),
                false,
            ),
            (EntityKind::Target, json!({"target": "a"}), false),
            (EntityKind::Consumer, json!({"username": "u"}), false),
        ] {
            assert!(
                !supported(kind, &entries(input.clone()), nested, flavor),
                "{input}"
            );
        }
        let route = entries(json!({"paths": ["/"]}));
        assert!(!supported(
            EntityKind::Route,
            &route,
            true,
            RouterFlavor::Expressions
        ));
    }
}
