//! Record-level checks of routes: protocol groups, the fields each protocol requires or
//! forbids, and the expression rules of the `expressions` flavor.

use serde_json::Value;

use crate::RouterFlavor;
use crate::schema::Errors;

const HTTP: &[&str] = &["http", "https", "ws", "wss"];
const GRPC: &[&str] = &["grpc", "grpcs"];
const STREAM: &[&str] = &["tcp", "tls", "udp"];
const PASSTHROUGH: &[&str] = &["tls_passthrough"];

fn non_empty(m: &crate::schema::Fields, k: &str) -> bool {
    match m.get(k) {
        None | Some(Value::Null) => false,
        Some(Value::Array(a)) => !a.is_empty(),
        Some(Value::Object(o)) => !o.is_empty(),
        Some(Value::String(s)) => !s.is_empty(),
        Some(_) => true,
    }
}

fn quote_list(items: &[&str]) -> String {
    items
        .iter()
        .map(|s| format!("'{s}'"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The checks; `m` is the validated route record.
pub(crate) fn check(m: &crate::schema::Fields, e: &mut Errors, flavor: RouterFlavor) {
    let protocols: Vec<&str> = m
        .get("protocols")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let groups = [HTTP, GRPC, STREAM, PASSTHROUGH];
    let used: Vec<&&[&str]> = groups
        .iter()
        .filter(|g| protocols.iter().any(|p| g.contains(p)))
        .collect();
    if used.len() > 1 {
        e.field(
            "protocols",
            "these sets are mutually exclusive: ('http', 'https', 'ws', 'wss'), ('tcp', 'tls', 'udp'), ('tls_passthrough'), ('grpc', 'grpcs')",
        );
        return;
    }
    let group: &[&str] = used.first().map(|g| **g).unwrap_or(HTTP);
    let has = |p: &str| protocols.contains(&p);

    if let Some(h) = m.get("headers").and_then(Value::as_object) {
        for (name, values) in h {
            if name.eq_ignore_ascii_case("host") {
                e.field(
                    "headers",
                    "cannot contain 'host' header, which must be specified in the 'hosts' attribute",
                );
            }
            for v in values
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
            {
                if let Some(re) = v.strip_prefix("~*")
                    && regex::Regex::new(re).is_err()
                {
                    e.field("headers", format!("invalid regex: '{re}'"));
                }
            }
        }
    }

    if non_empty(m, "snis")
        && !protocols
            .iter()
            .any(|p| matches!(*p, "https" | "grpcs" | "tls" | "tls_passthrough" | "wss"))
    {
        e.field(
            "snis",
            "'snis' can only be set when 'protocols' is 'grpcs', 'https', 'tls' or 'tls_passthrough'",
        );
    }

    if group == STREAM || group == PASSTHROUGH {
        for f in ["methods", "hosts", "paths", "headers"] {
            if non_empty(m, f) {
                e.field(
                    f,
                    format!("cannot set '{f}' when 'protocols' is 'tcp', 'tls', 'tls_passthrough' or 'udp'"),
                );
            }
        }
    } else {
        if flavor != RouterFlavor::Expressions {
            let label = if group == GRPC {
                "'grpc' or 'grpcs'"
            } else {
                "'http' or 'https'"
            };
            for f in ["sources", "destinations"] {
                if non_empty(m, f) {
                    e.field(f, format!("cannot set '{f}' when 'protocols' is {label}"));
                }
            }
        }
        if group == GRPC {
            if non_empty(m, "methods") {
                e.field(
                    "methods",
                    "cannot set 'methods' when 'protocols' is 'grpc' or 'grpcs'",
                );
            }
            if m.get("strip_path") == Some(&Value::Bool(true)) {
                e.field(
                    "strip_path",
                    "cannot set 'strip_path' when 'protocols' is 'grpc' or 'grpcs'",
                );
            }
        }
    }

    if m.get("path_handling").and_then(Value::as_str) == Some("v1")
        && flavor != RouterFlavor::Traditional
    {
        e.field(
            "path_handling",
            format!(
                "path_handling='v1' is not supported in the '{}' router flavor",
                flavor.as_str()
            ),
        );
    }

    if !e.is_empty() {
        return;
    }

    if let Some(expr) = m.get("expression").and_then(Value::as_str) {
        let traditional = [
            "methods",
            "hosts",
            "paths",
            "headers",
            "snis",
            "sources",
            "destinations",
        ];
        let set: Vec<&str> = traditional
            .iter()
            .copied()
            .filter(|f| non_empty(m, f))
            .collect();
        if !set.is_empty() {
            e.entity(format!(
                "Router Expression failed validation: cannot set 'expression' together with {}",
                quote_list(&set)
            ));
        }
        if m.get("regex_priority").and_then(Value::as_i64).unwrap_or(0) != 0 {
            e.entity("Router Expression failed validation: cannot set 'regex_priority' together with 'expression'");
        }
        if let Err(err) = crate::expression::validate(expr, group == STREAM || group == PASSTHROUGH)
        {
            e.entity(format!("Router Expression failed validation: {err}"));
        }
        return;
    }

    let (fields, label): (Vec<&str>, &str) = if group == GRPC {
        let mut f = vec!["hosts", "headers", "paths"];
        if has("grpcs") {
            f.push("snis");
        }
        (f, if has("grpc") { "'grpc'" } else { "'grpcs'" })
    } else if group == STREAM {
        (
            vec!["sources", "destinations", "snis"],
            "'tcp', 'tls' or 'udp'",
        )
    } else if group == PASSTHROUGH {
        if !non_empty(m, "snis") {
            e.entity("must set snis when 'protocols' is 'tls_passthrough'");
        }
        return;
    } else {
        let mut f = vec!["methods", "hosts", "headers", "paths"];
        if has("https") || has("wss") {
            f.push("snis");
        }
        let label = if has("http") {
            "'http'"
        } else if has("https") {
            "'https'"
        } else if has("ws") {
            "'ws'"
        } else {
            "'wss'"
        };
        (f, label)
    };
    if !fields.iter().any(|f| non_empty(m, f)) {
        e.entity(format!(
            "must set one of {} when 'protocols' is {label}",
            quote_list(&fields)
        ));
    }
}
