//! The checks of routes, as Kong's `routes.lua` and `routes_subschemas.lua` declare them:
//! the field rules of `protocols` and `headers`, the fields a protocol's subschema forbids,
//! the entity checks of the route, and those of its subschema (the fields each protocol
//! needs one of), with the expression rules of the `expressions` flavor.
//!
//! Kong picks a route's subschema by its first protocol; a subschema replaces some fields'
//! definitions (a stream route's `paths` must be null: any value, even an empty array, is
//! refused with the subschema's message) and adds its entity checks after the route's.
//! Neither is listed in the route's schema (`GET /schemas/routes`): here they are hidden
//! checks. Our `ws` and `wss` share the HTTP subschema (Kong Enterprise gives them their
//! own).

use serde_json::Value;

use crate::RouterFlavor;
use crate::checks::{
    Conditional, ConditionalAtLeastOneOf, EntityCheck, Match, Values, quoted_list,
};
use crate::schema::Errors;

const HTTP: &[&str] = &["http", "https", "ws", "wss"];
const GRPC: &[&str] = &["grpc", "grpcs"];
const STREAM: &[&str] = &["tcp", "tls", "udp"];
const PASSTHROUGH: &[&str] = &["tls_passthrough"];
/// The protocol groups a route's protocols must not mix (Kong's
/// `mutually_exclusive_subsets`, with our `ws` and `wss` among the HTTP ones).
const GROUPS: [&[&str]; 4] = [HTTP, STREAM, PASSTHROUGH, GRPC];

/// The traditional matching fields an expression route must not have.
const TRADITIONAL: [&str; 7] = [
    "methods",
    "hosts",
    "paths",
    "headers",
    "snis",
    "sources",
    "destinations",
];

/// The rule of the `protocols` field (Kong's `mutually_exclusive_subsets` validator): the
/// protocols are of one group; the message lists the groups used, in order of appearance.
pub(crate) fn check_protocols(v: &Value) -> Result<(), String> {
    // the groups used, in order of appearance (no allocation unless they are mixed)
    let mut order = [0usize; GROUPS.len()];
    let mut used = 0;
    for p in v.as_array().into_iter().flatten().filter_map(Value::as_str) {
        if let Some(g) = GROUPS.iter().position(|g| g.contains(&p))
            && !order[..used].contains(&g)
        {
            order[used] = g;
            used += 1;
        }
    }
    if used <= 1 {
        return Ok(());
    }
    let sets: Vec<String> = order[..used]
        .iter()
        .map(|g| format!("({})", quoted_list(GROUPS[*g])))
        .collect();
    Err(format!(
        "these sets are mutually exclusive: {}",
        sets.join(", ")
    ))
}

/// The rule of the `headers` field: no `host` header (Kong's rule on the map's keys), and
/// `~*` values that are regexes.
pub(crate) fn check_headers(v: &Value) -> Result<(), String> {
    for (name, values) in v.as_object().into_iter().flatten() {
        if name.eq_ignore_ascii_case("host") {
            return Err(
                "cannot contain 'host' header, which must be specified in the 'hosts' attribute"
                    .into(),
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
                return Err(format!("invalid regex: '{re}'"));
            }
        }
    }
    Ok(())
}

/// A route's subschema: the group of its first protocol that names one (Kong's
/// `get_subschema`, which also takes a single string).
fn subschema(v: &Values<'_>) -> Option<&'static [&'static str]> {
    let group = |p: &str| {
        [HTTP, GRPC, STREAM, PASSTHROUGH]
            .into_iter()
            .find(|g| g.contains(&p))
    };
    match v.get("protocols")? {
        Value::String(p) => group(p),
        Value::Array(a) => a.iter().filter_map(Value::as_str).find_map(group),
        _ => None,
    }
}

/// The checks of a route under `flavor`, in Kong's order.
pub(crate) fn checks(flavor: RouterFlavor) -> Vec<EntityCheck> {
    let expressions = flavor == RouterFlavor::Expressions;
    let mut checks = vec![
        // the fields the subschema forbids (Kong's subschema field definitions: errors of
        // those fields, over their own)
        EntityCheck::hidden(
            &[
                "protocols",
                "strip_path",
                "methods",
                "hosts",
                "paths",
                "headers",
                "sources",
                "destinations",
            ],
            move |v, e| {
                forbidden_fields(v, e, expressions);
                Ok(())
            },
        ),
        // Kong's `routes.lua` (with our `wss` among the protocols that allow `snis`)
        EntityCheck::conditional(Conditional {
            if_field: "protocols",
            if_match: Match::elements(Match::not_one_of(&[
                "grpcs",
                "https",
                "tls",
                "tls_passthrough",
                "wss",
            ])),
            then_field: "snis",
            then_match: Match {
                len_eq: Some(0),
                ..Default::default()
            },
            then_err: Some(
                "'snis' can only be set when 'protocols' is 'grpcs', 'https', 'tls' or 'tls_passthrough'",
            ),
        }),
        // (`path_handling: v1`: Kong's check only warns that it is deprecated; outside the
        // traditional flavor the upstream path is built by the v0 rules, as the router
        // builds it)
        EntityCheck::custom(&["path_handling"], |_, _| Ok(())),
    ];
    if expressions {
        checks.push(
            EntityCheck::custom(
                &[
                    "id",
                    "protocols",
                    "snis",
                    "sources",
                    "destinations",
                    "methods",
                    "hosts",
                    "paths",
                    "headers",
                    "expression",
                    "regex_priority",
                    "priority",
                ],
                check_expression,
            )
            .run_with_missing_fields(),
        );
    }
    checks.extend(subschema_checks(expressions));
    checks
}

/// The fields the route's subschema forbids, each with the subschema's message (any value
/// but null is refused).
fn forbidden_fields(v: &Values<'_>, e: &mut Errors, expressions: bool) {
    let Some(group) = subschema(v) else {
        return;
    };
    let forbid = |e: &mut Errors, f: &'static str, label: &str| {
        if v.get(f).is_some() {
            e.field(f, format!("cannot set '{f}' when 'protocols' is {label}"));
        }
    };
    if group == STREAM || group == PASSTHROUGH {
        for f in ["methods", "hosts", "paths", "headers"] {
            forbid(e, f, "'tcp', 'tls', 'tls_passthrough' or 'udp'");
        }
        return;
    }
    let label = if group == GRPC {
        "'grpc' or 'grpcs'"
    } else {
        "'http' or 'https'"
    };
    if group == GRPC {
        if v.get("strip_path") == Some(&Value::Bool(true)) {
            e.field(
                "strip_path",
                "cannot set 'strip_path' when 'protocols' is 'grpc' or 'grpcs'",
            );
        }
        forbid(e, "methods", label);
    }
    // (the `expressions` flavor lets HTTP and gRPC routes match on these)
    if !expressions {
        forbid(e, "sources", label);
        forbid(e, "destinations", label);
    }
}

/// The rules of an expression route (Kong's `validate_route` of the `expressions` flavor):
/// an `expression` is neither combined with the traditional fields nor with a
/// `regex_priority`, and it parses.
fn check_expression(v: &Values<'_>, e: &mut Errors) -> Result<(), String> {
    let Some(expr) = v.str("expression") else {
        return Ok(());
    };
    if TRADITIONAL.iter().any(|f| v.nonempty(f)) {
        let set: Vec<&str> = TRADITIONAL.into_iter().filter(|f| v.nonempty(f)).collect();
        e.entity(format!(
            "Router Expression failed validation: cannot set 'expression' together with {}",
            quoted_list(&set)
        ));
    }
    if v.get("regex_priority").and_then(Value::as_i64).unwrap_or(0) != 0 {
        e.entity(
            "Router Expression failed validation: cannot set 'regex_priority' together with 'expression'",
        );
    }
    let stream = matches!(subschema(v), Some(g) if g == STREAM || g == PASSTHROUGH);
    crate::expression::validate(expr, stream)
        .map_err(|err| format!("Router Expression failed validation: {err}"))
}

/// The entity checks of the subschemas (`routes_subschemas.lua`): the fields a route of
/// each protocol must set one of (the `expressions` flavor adds `expression` to each list).
fn subschema_checks(expressions: bool) -> Vec<EntityCheck> {
    let list = move |fields: &[&'static str]| {
        let mut v = fields.to_vec();
        if expressions {
            v.push("expression");
        }
        v
    };
    let at_least_one_of =
        |if_match: Match,
         then: &[&'static str],
         then_err: &'static str,
         otherwise: Option<(Match, &[&'static str], &'static str)>| {
            let (else_match, else_then, else_then_err) = match otherwise {
                Some((m, l, err)) => (Some(m), list(l), Some(err)),
                None => (None, Vec::new(), None),
            };
            EntityCheck::conditional_at_least_one_of(ConditionalAtLeastOneOf {
                if_field: "protocols",
                if_match,
                then_at_least_one_of: list(then),
                then_err: Some(then_err),
                else_match,
                else_then_at_least_one_of: else_then,
                else_then_err,
            })
            .unrendered()
        };
    let mut checks = vec![
        at_least_one_of(
            Match::contains("https"),
            &["methods", "hosts", "headers", "paths", "snis"],
            "must set one of %s when 'protocols' is 'https'",
            Some((
                Match::contains("http"),
                &["methods", "hosts", "headers", "paths"],
                "must set one of %s when 'protocols' is 'http'",
            )),
        ),
        at_least_one_of(
            Match::contains("grpcs"),
            &["hosts", "headers", "paths", "snis"],
            "must set one of %s when 'protocols' is 'grpcs'",
            Some((
                Match::contains("grpc"),
                &["hosts", "headers", "paths"],
                "must set one of %s when 'protocols' is 'grpc'",
            )),
        ),
        at_least_one_of(
            Match::elements(Match::one_of(STREAM)),
            &["sources", "destinations", "snis"],
            "must set one of %s when 'protocols' is 'tcp', 'tls' or 'udp'",
            None,
        ),
        at_least_one_of(
            Match::elements(Match::one_of(PASSTHROUGH)),
            &["snis"],
            "must set snis when 'protocols' is 'tls_passthrough'",
            None,
        ),
    ];
    // our `ws` and `wss` routes (without `http` or `https`): the HTTP fields
    checks.push(EntityCheck::hidden(
        &[
            "protocols",
            "methods",
            "hosts",
            "headers",
            "paths",
            "snis",
            "expression",
        ],
        move |v, _| {
            let has = |p: &str| {
                v.get("protocols")
                    .and_then(Value::as_array)
                    .is_some_and(|a| a.iter().any(|x| x.as_str() == Some(p)))
            };
            if !v.is_valid("protocols") || has("http") || has("https") {
                return Ok(());
            }
            let (fields, label): (&[&'static str], _) = if has("wss") {
                (&["methods", "hosts", "headers", "paths", "snis"], "wss")
            } else if has("ws") {
                (&["methods", "hosts", "headers", "paths"], "ws")
            } else {
                return Ok(());
            };
            if fields.iter().any(|f| v.nonempty(f)) || (expressions && v.nonempty("expression")) {
                return Ok(());
            }
            Err(format!(
                "must set one of {} when 'protocols' is '{label}'",
                quoted_list(&list(fields))
            ))
        },
    ));
    checks
}
