//! Validated values to typed entities without serde's map machinery, for the entities a large
//! configuration is made of (services, routes, upstreams, targets): each value is moved into
//! its field, the id is given as a [`Uuid`] rather than as text.
//!
//! The result is what deserializing the same values (with the id as a string) gives: fields
//! the struct does not have are ignored, fields without a serde default must be present, and
//! every value is converted as serde would convert it. Anything else gives `None`, and the
//! caller then deserializes with serde (`fast::tests` compare both on every entity shape).

use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde_json::Value;
use uuid::Uuid;

use crate::entities::{Healthchecks, Route, Service, Target, Upstream};
use crate::schema::Fields;

/// A value deserialized by serde (for the less common shapes).
fn de<T: DeserializeOwned>(v: Value) -> Option<T> {
    T::deserialize(v).ok()
}

pub(crate) fn string(v: Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s),
        _ => None,
    }
}

pub(crate) fn strings(v: Value) -> Option<Vec<String>> {
    match v {
        Value::Array(items) => {
            // a list of its own size, as serde builds it (collecting in place would keep the
            // larger allocation of the values)
            let mut out = Vec::with_capacity(items.len());
            for v in items {
                out.push(string(v)?);
            }
            Some(out)
        }
        _ => None,
    }
}

pub(crate) fn boolean(v: &Value) -> Option<bool> {
    v.as_bool()
}

pub(crate) fn u16_of(v: &Value) -> Option<u16> {
    v.as_u64().and_then(|n| u16::try_from(n).ok())
}

pub(crate) fn u32_of(v: &Value) -> Option<u32> {
    v.as_u64().and_then(|n| u32::try_from(n).ok())
}

/// A service from its validated values.
pub(crate) fn service(values: Fields, id: Uuid) -> Option<Service> {
    let mut s = Service {
        id,
        name: None,
        retries: 0,
        protocol: crate::entities::Protocol::Http,
        host: String::new(),
        port: 0,
        path: None,
        connect_timeout: 0,
        write_timeout: 0,
        read_timeout: 0,
        tags: Vec::new(),
        client_certificate: None,
        tls_verify: None,
        tls_verify_depth: None,
        ca_certificates: Vec::new(),
        enabled: true,
        created_at: None,
        updated_at: None,
    };
    // the fields without a serde default, each seen once
    let mut required = 0u8;
    for (k, v) in values.into_entries() {
        match k {
            // the id is given
            "id" => {}
            "name" => s.name = Some(string(v)?),
            "retries" => {
                s.retries = u16_of(&v)?;
                required |= 1;
            }
            "protocol" => {
                s.protocol = de(v)?;
                required |= 2;
            }
            "host" => {
                s.host = string(v)?;
                required |= 4;
            }
            "port" => {
                s.port = u16_of(&v)?;
                required |= 8;
            }
            "path" => s.path = Some(string(v)?),
            "connect_timeout" => {
                s.connect_timeout = u32_of(&v)?;
                required |= 16;
            }
            "write_timeout" => {
                s.write_timeout = u32_of(&v)?;
                required |= 32;
            }
            "read_timeout" => {
                s.read_timeout = u32_of(&v)?;
                required |= 64;
            }
            "tags" => s.tags = strings(v)?,
            "client_certificate" => s.client_certificate = Some(de(v)?),
            "tls_verify" => s.tls_verify = Some(boolean(&v)?),
            "tls_verify_depth" => s.tls_verify_depth = Some(de(v)?),
            "ca_certificates" => s.ca_certificates = de(v)?,
            "enabled" => s.enabled = boolean(&v)?,
            "created_at" => s.created_at = Some(v.as_i64()?),
            "updated_at" => s.updated_at = Some(v.as_i64()?),
            _ => {}
        }
    }
    (required == 127).then_some(s)
}

/// A route from its validated values.
pub(crate) fn route(values: Fields, id: Uuid) -> Option<Route> {
    let mut r = Route {
        id,
        name: None,
        protocols: Vec::new(),
        methods: Vec::new(),
        hosts: Vec::new(),
        paths: Vec::new(),
        headers: Default::default(),
        https_redirect_status_code: 0,
        regex_priority: 0,
        strip_path: false,
        path_handling: Default::default(),
        preserve_host: false,
        request_buffering: false,
        response_buffering: false,
        snis: Vec::new(),
        sources: Vec::new(),
        destinations: Vec::new(),
        tags: Vec::new(),
        service: None,
        expression: None,
        priority: None,
        created_at: None,
        updated_at: None,
    };
    let mut required = 0u8;
    for (k, v) in values.into_entries() {
        match k {
            // the id is given
            "id" => {}
            "name" => r.name = Some(string(v)?),
            "protocols" => {
                r.protocols = de(v)?;
                required |= 1;
            }
            "methods" => r.methods = strings(v)?,
            "hosts" => r.hosts = strings(v)?,
            "paths" => r.paths = strings(v)?,
            "headers" => r.headers = de(v)?,
            "https_redirect_status_code" => {
                r.https_redirect_status_code = u16_of(&v)?;
                required |= 2;
            }
            "regex_priority" => {
                r.regex_priority = v.as_i64()?;
                required |= 4;
            }
            "strip_path" => {
                r.strip_path = boolean(&v)?;
                required |= 8;
            }
            "path_handling" => {
                r.path_handling = de(v)?;
                required |= 16;
            }
            "preserve_host" => {
                r.preserve_host = boolean(&v)?;
                required |= 32;
            }
            "request_buffering" => {
                r.request_buffering = boolean(&v)?;
                required |= 64;
            }
            "response_buffering" => {
                r.response_buffering = boolean(&v)?;
                required |= 128;
            }
            "snis" => r.snis = strings(v)?,
            "sources" => r.sources = de(v)?,
            "destinations" => r.destinations = de(v)?,
            "tags" => r.tags = strings(v)?,
            "service" => r.service = Some(de(v)?),
            "expression" => r.expression = Some(string(v)?),
            "priority" => r.priority = Some(v.as_u64()?),
            "created_at" => r.created_at = Some(v.as_i64()?),
            "updated_at" => r.updated_at = Some(v.as_i64()?),
            _ => {}
        }
    }
    (required == 255).then_some(r)
}

/// An upstream from its validated values; `healthchecks`: the shared health checks, for values
/// that have none.
pub(crate) fn upstream(
    values: Fields,
    id: Uuid,
    healthchecks: Option<Arc<Healthchecks>>,
) -> Option<Upstream> {
    let given_healthchecks = healthchecks.is_some();
    let mut u = Upstream {
        id,
        name: String::new(),
        algorithm: String::new(),
        hash_on: String::new(),
        hash_fallback: String::new(),
        hash_on_header: None,
        hash_fallback_header: None,
        hash_on_cookie: None,
        hash_on_cookie_path: String::new(),
        hash_on_query_arg: None,
        hash_fallback_query_arg: None,
        hash_on_uri_capture: None,
        hash_fallback_uri_capture: None,
        slots: 0,
        healthchecks: match healthchecks {
            Some(h) => h,
            None => Arc::clone(crate::config::default_healthchecks()?),
        },
        tags: Vec::new(),
        host_header: None,
        client_certificate: None,
        use_srv_name: false,
        created_at: None,
        updated_at: None,
    };
    let mut required = 0u8;
    for (k, v) in values.into_entries() {
        match k {
            "id" => {}
            "healthchecks" => {
                u.healthchecks = Arc::new(de(v)?);
                required |= 64;
            }
            "name" => {
                u.name = string(v)?;
                required |= 1;
            }
            "algorithm" => {
                u.algorithm = string(v)?;
                required |= 2;
            }
            "hash_on" => {
                u.hash_on = string(v)?;
                required |= 4;
            }
            "hash_fallback" => {
                u.hash_fallback = string(v)?;
                required |= 8;
            }
            "hash_on_header" => u.hash_on_header = Some(string(v)?),
            "hash_fallback_header" => u.hash_fallback_header = Some(string(v)?),
            "hash_on_cookie" => u.hash_on_cookie = Some(string(v)?),
            "hash_on_cookie_path" => {
                u.hash_on_cookie_path = string(v)?;
                required |= 16;
            }
            "hash_on_query_arg" => u.hash_on_query_arg = Some(string(v)?),
            "hash_fallback_query_arg" => u.hash_fallback_query_arg = Some(string(v)?),
            "hash_on_uri_capture" => u.hash_on_uri_capture = Some(string(v)?),
            "hash_fallback_uri_capture" => u.hash_fallback_uri_capture = Some(string(v)?),
            "slots" => {
                u.slots = u32_of(&v)?;
                required |= 32;
            }
            "tags" => u.tags = strings(v)?,
            "host_header" => u.host_header = Some(string(v)?),
            "client_certificate" => u.client_certificate = Some(de(v)?),
            "use_srv_name" => u.use_srv_name = boolean(&v)?,
            "created_at" => u.created_at = Some(v.as_i64()?),
            "updated_at" => u.updated_at = Some(v.as_i64()?),
            _ => {}
        }
    }
    // health checks: given, or shared ones
    ((required & 63) == 63 && ((required & 64) != 0 || given_healthchecks)).then_some(u)
}

/// A target from its validated values.
pub(crate) fn target(values: Fields, id: Uuid) -> Option<Target> {
    let mut t = Target {
        id,
        upstream: crate::entities::ForeignKey { id: Uuid::nil() },
        target: String::new(),
        weight: 0,
        tags: Vec::new(),
        created_at: None,
        updated_at: None,
    };
    let mut required = 0u8;
    for (k, v) in values.into_entries() {
        match k {
            // the id is given
            "id" => {}
            // when nested, the upstream is left out and set by the caller
            "upstream" => t.upstream = de(v)?,
            "target" => {
                t.target = string(v)?;
                required |= 1;
            }
            "weight" => {
                t.weight = u32_of(&v)?;
                required |= 2;
            }
            "tags" => t.tags = strings(v)?,
            "created_at" => t.created_at = Some(v.as_f64()?),
            "updated_at" => t.updated_at = Some(v.as_f64()?),
            _ => {}
        }
    }
    (required == 3).then_some(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entities::{EntityKind, schema};
    use crate::{RouterFlavor, config::default_healthchecks};
    use serde_json::json;

    /// The validated values of `input` as an entity of `kind`.
    fn validated(kind: EntityKind, flavor: RouterFlavor, input: Value) -> Fields {
        let Value::Object(m) = input else {
            panic!("not an object")
        };
        let (values, errors) = schema(kind, flavor).validate(&m);
        assert!(errors.is_empty(), "{errors:?}");
        values
    }

    /// What serde gives for the same values, with the id as text.
    fn by_serde<T: DeserializeOwned>(mut values: Fields, id: Uuid) -> T {
        values.insert("id", Value::String(id.to_string()));
        values.deserialize().expect("deserializes")
    }

    const ID: Uuid = uuid::uuid!("0d5b6b34-5b7b-4bd4-8a43-5a7f6a4a0001");
    const OTHER: &str = "0d5b6b34-5b7b-4bd4-8a43-5a7f6a4a0002";

    #[test]
    fn typed_entities_are_what_serde_gives() {
        let flavor = RouterFlavor::TraditionalCompatible;
        for input in [
            json!({"host": "h"}),
            json!({"id": OTHER, "name": "s", "retries": 3, "protocol": "https", "host": "h",
                   "port": 8443, "path": "/p", "connect_timeout": 1, "write_timeout": 2,
                   "read_timeout": 3, "tags": ["a", "b"], "client_certificate": {"id": OTHER},
                   "tls_verify": true, "tls_verify_depth": 2, "ca_certificates": [OTHER],
                   "enabled": false, "created_at": 1, "updated_at": 2}),
        ] {
            let v = validated(EntityKind::Service, flavor, input);
            assert_eq!(service(v.clone(), ID), Some(by_serde(v, ID)));
        }
        for input in [
            json!({"paths": ["/"]}),
            json!({"id": OTHER, "name": "r", "protocols": ["https", "http"], "methods": ["GET"],
                   "hosts": ["a.test", "*.b.test"], "paths": ["/a", "~/b$"],
                   "headers": {"x-a": ["1", "2"]}, "https_redirect_status_code": 301,
                   "regex_priority": -2, "strip_path": false, "path_handling": "v0",
                   "preserve_host": true, "request_buffering": false,
                   "response_buffering": false, "tags": ["t"], "service": {"id": OTHER},
                   "created_at": 1, "updated_at": 2}),
            json!({"protocols": ["tls"], "snis": ["a.test"]}),
            json!({"protocols": ["tcp"], "sources": [{"ip": "10.0.0.0/8"}],
                   "destinations": [{"ip": "10.0.0.1", "port": 80}]}),
        ] {
            let v = validated(EntityKind::Route, flavor, input);
            assert_eq!(route(v.clone(), ID), Some(by_serde(v, ID)));
        }
        let v = validated(
            EntityKind::Route,
            RouterFlavor::Expressions,
            json!({"expression": "http.path == \"/\"", "priority": 7}),
        );
        assert_eq!(route(v.clone(), ID), Some(by_serde(v, ID)));
        let hc = default_healthchecks().map(Arc::clone);
        for input in [
            json!({"name": "u"}),
            json!({"id": OTHER, "name": "u", "algorithm": "consistent-hashing",
                   "hash_on": "header", "hash_on_header": "x-a", "hash_fallback": "cookie",
                   "hash_on_cookie": "c", "hash_on_cookie_path": "/c", "slots": 100,
                   "tags": ["t"], "host_header": "h", "client_certificate": {"id": OTHER},
                   "use_srv_name": true, "created_at": 1, "updated_at": 2}),
            json!({"name": "u", "hash_on": "query_arg", "hash_on_query_arg": "q",
                   "hash_fallback": "uri_capture", "hash_fallback_uri_capture": "c"}),
            json!({"name": "u", "hash_on": "uri_capture", "hash_on_uri_capture": "c",
                   "hash_fallback": "query_arg", "hash_fallback_query_arg": "q"}),
            json!({"name": "u", "hash_on": "header", "hash_on_header": "a",
                   "hash_fallback": "header", "hash_fallback_header": "b"}),
        ] {
            let v = validated(EntityKind::Upstream, flavor, input);
            // health checks given (here the default, validated)
            assert_eq!(upstream(v.clone(), ID, None), Some(by_serde(v.clone(), ID)));
            // health checks left out, the shared ones filled in
            let mut sans = v.clone();
            sans.remove("healthchecks");
            let u = upstream(sans, ID, hc.clone()).expect("typed");
            assert_eq!(u, by_serde(v, ID));
        }
        for input in [
            json!({"target": "10.0.0.1:80", "upstream": {"id": OTHER}}),
            json!({"id": OTHER, "target": "a.test:8000", "upstream": {"id": OTHER},
                   "weight": 0, "tags": ["t"], "created_at": 1.5, "updated_at": 2}),
        ] {
            let v = validated(EntityKind::Target, flavor, input);
            assert_eq!(target(v.clone(), ID), Some(by_serde(v, ID)));
        }
    }

    #[test]
    fn missing_required_values_are_refused() {
        let v = validated(
            EntityKind::Target,
            RouterFlavor::TraditionalCompatible,
            json!({"target": "10.0.0.1:80", "upstream": {"id": OTHER}}),
        );
        let mut without = v.clone();
        without.remove("weight");
        assert_eq!(target(without, ID), None);
        let mut wrong = v;
        wrong.insert("weight", json!("heavy"));
        assert_eq!(target(wrong, ID), None);
    }
}
