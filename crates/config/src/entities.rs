//! The entities of Kong's declarative format: their kinds and metadata ([`EntityKind`]), their
//! schemas (fields, defaults, checks), and the typed structs a validated configuration holds.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::RouterFlavor;
use crate::checks::{Conditional, EntityCheck, Match};
use crate::schema::{Field, Record};
use crate::typedefs as t;

/// Every entity type of the declarative format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EntityKind {
    /// `vaults`
    Vault,
    /// `certificates`
    Certificate,
    /// `ca_certificates`
    CaCertificate,
    /// `snis`
    Sni,
    /// `consumers`
    Consumer,
    /// `consumer_groups` (our extension; Kong Enterprise only)
    ConsumerGroup,
    /// `consumer_group_consumers` (our extension, as KIC emits it)
    ConsumerGroupConsumer,
    /// `services`
    Service,
    /// `routes`
    Route,
    /// `upstreams`
    Upstream,
    /// `targets`
    Target,
    /// `plugins`
    Plugin,
    /// `keyauth_credentials`
    KeyauthCredential,
    /// `basicauth_credentials`
    BasicauthCredential,
    /// `jwt_secrets`
    JwtSecret,
    /// `acls`
    Acl,
    /// `hmacauth_credentials`
    HmacauthCredential,
    /// `key_sets`
    KeySet,
    /// `keys`
    Key,
}

impl EntityKind {
    /// All kinds, parents before children (the canonical output order).
    pub const ALL: [EntityKind; 19] = [
        EntityKind::Vault,
        EntityKind::Certificate,
        EntityKind::CaCertificate,
        EntityKind::Sni,
        EntityKind::Consumer,
        EntityKind::ConsumerGroup,
        EntityKind::ConsumerGroupConsumer,
        EntityKind::Service,
        EntityKind::Route,
        EntityKind::Upstream,
        EntityKind::Target,
        EntityKind::Plugin,
        EntityKind::KeyauthCredential,
        EntityKind::BasicauthCredential,
        EntityKind::JwtSecret,
        EntityKind::Acl,
        EntityKind::HmacauthCredential,
        EntityKind::KeySet,
        EntityKind::Key,
    ];

    /// The key of the entity's array in a declarative file (`services`).
    pub fn plural(self) -> &'static str {
        use EntityKind::*;
        match self {
            Vault => "vaults",
            Certificate => "certificates",
            CaCertificate => "ca_certificates",
            Sni => "snis",
            Consumer => "consumers",
            ConsumerGroup => "consumer_groups",
            ConsumerGroupConsumer => "consumer_group_consumers",
            Service => "services",
            Route => "routes",
            Upstream => "upstreams",
            Target => "targets",
            Plugin => "plugins",
            KeyauthCredential => "keyauth_credentials",
            BasicauthCredential => "basicauth_credentials",
            JwtSecret => "jwt_secrets",
            Acl => "acls",
            HmacauthCredential => "hmacauth_credentials",
            KeySet => "key_sets",
            Key => "keys",
        }
    }

    /// The singular name used in `flattened_errors` (`service`).
    pub fn singular(self) -> &'static str {
        let p = self.plural();
        p.strip_suffix('s').unwrap_or(p)
    }

    /// Looks a kind up by its plural name.
    pub fn from_plural(s: &str) -> Option<EntityKind> {
        Self::ALL.iter().copied().find(|k| k.plural() == s)
    }

    /// The field that names the entity in references and error reports (Kong's `endpoint_key`).
    pub fn endpoint_key(self) -> Option<&'static str> {
        use EntityKind::*;
        match self {
            Vault => Some("prefix"),
            Sni | Service | Route | Upstream | ConsumerGroup | KeySet | Key => Some("name"),
            Consumer => Some("username"),
            Target => Some("target"),
            KeyauthCredential | JwtSecret => Some("key"),
            BasicauthCredential | HmacauthCredential => Some("username"),
            Plugin => Some("instance_name"),
            Certificate | CaCertificate | Acl | ConsumerGroupConsumer => None,
        }
    }

    /// Kong's `cache_key` fields, which also feed the deterministic id.
    pub fn cache_key(self) -> Option<&'static [&'static str]> {
        use EntityKind::*;
        match self {
            Target => Some(&["upstream", "target"]),
            Plugin => Some(&["name", "route", "service", "consumer"]),
            KeyauthCredential | JwtSecret => Some(&["key"]),
            BasicauthCredential | HmacauthCredential => Some(&["username"]),
            Acl => Some(&["consumer", "group"]),
            Vault => Some(&["prefix"]),
            CaCertificate => Some(&["cert_digest"]),
            Key => Some(&["kid", "set"]),
            _ => None,
        }
    }

    /// Whether the entity has an `id` primary key (all but the consumer-group join table).
    pub fn has_id(self) -> bool {
        self != EntityKind::ConsumerGroupConsumer
    }

    /// Foreign-key fields of this kind and the kinds they reference.
    pub fn foreign_keys(self) -> &'static [(&'static str, EntityKind)] {
        use EntityKind::*;
        match self {
            Service => &[("client_certificate", Certificate)],
            Route => &[("service", Service)],
            Upstream => &[("client_certificate", Certificate)],
            Target => &[("upstream", Upstream)],
            Plugin => &[
                ("route", Route),
                ("service", Service),
                ("consumer", Consumer),
                ("consumer_group", ConsumerGroup),
            ],
            Sni => &[("certificate", Certificate)],
            KeyauthCredential | BasicauthCredential | JwtSecret | Acl | HmacauthCredential => {
                &[("consumer", Consumer)]
            }
            ConsumerGroupConsumer => &[("consumer_group", ConsumerGroup), ("consumer", Consumer)],
            Key => &[("set", KeySet)],
            _ => &[],
        }
    }

    /// Kinds that may be nested inside this one, with the child's foreign-key field.
    pub fn nested_children(self) -> impl Iterator<Item = (EntityKind, &'static str)> {
        Self::ALL.into_iter().filter_map(move |child| {
            child
                .foreign_keys()
                .iter()
                .find(|(_, p)| *p == self)
                .map(|(f, _)| (child, *f))
        })
    }

    /// Fields whose values Kong generates at random when absent.
    pub fn auto_fields(self) -> &'static [&'static str] {
        use EntityKind::*;
        match self {
            KeyauthCredential => &["key"],
            JwtSecret => &["key", "secret"],
            HmacauthCredential => &["secret"],
            _ => &[],
        }
    }
}

// === schemas ===

fn timestamps(fields: &mut Vec<Field>) {
    fields.push(t::auto_timestamp_s("created_at"));
    fields.push(t::auto_timestamp_s("updated_at"));
}

fn base(kind: EntityKind) -> Vec<Field> {
    let mut f = Vec::new();
    if kind.has_id() {
        // generated when absent (Kong's UUIDv5 rules, `ids.rs`)
        f.push(t::uuid("id").auto());
    }
    f
}

/// Kong's `conditional` on a service's `protocol`: when it passes `if_match`, `then_field`
/// must be null.
fn protocol_forbids(if_match: Match, then_field: &'static str) -> EntityCheck {
    EntityCheck::conditional(Conditional {
        if_field: "protocol",
        if_match,
        then_field,
        then_match: Match::null(),
        then_err: None,
    })
}

/// The schema of an entity kind under the given router flavor. Plugin `config` and vault
/// `config` are `Any` here: they are checked against the plugin's / vault's own schema.
///
/// The entity checks of services, routes, upstreams and targets are also written out in
/// `direct.rs` (the typed load path), for the shapes that path takes: change both.
pub fn schema(kind: EntityKind, flavor: RouterFlavor) -> Record {
    use EntityKind::*;
    let mut f = base(kind);
    let mut checks: Vec<EntityCheck> = Vec::new();
    match kind {
        Service => {
            f.push(t::utf8_name("name").unique());
            f.push(Field::integer("retries", 0, 32767).default(5));
            f.push(
                Field::one_of("protocol", t::SERVICE_PROTOCOLS)
                    .required()
                    .default("http"),
            );
            f.push(t::host("host").required());
            f.push(t::port("port").required().default(80));
            f.push(t::path("path"));
            f.push(t::timeout("connect_timeout"));
            f.push(t::timeout("write_timeout"));
            f.push(t::timeout("read_timeout"));
            f.push(t::tags());
            f.push(Field::foreign("client_certificate", "certificates"));
            f.push(Field::boolean("tls_verify"));
            f.push(Field::integer("tls_verify_depth", 0, 64));
            f.push(Field::array("ca_certificates", t::uuid("")));
            f.push(Field::boolean("enabled").default(true));
            timestamps(&mut f);
            // Kong's `services.lua` (with Kong Enterprise's `wss` where it lists it)
            checks.push(protocol_forbids(
                Match::one_of(&["tcp", "tls", "udp", "grpc", "grpcs"]),
                "path",
            ));
            for (tls, field) in [
                (&["https", "wss", "tls"][..], "client_certificate"),
                (&["https", "wss", "tls"], "tls_verify"),
                (&["https", "tls"], "tls_verify_depth"),
                (&["https", "tls"], "ca_certificates"),
            ] {
                checks.push(protocol_forbids(Match::not_one_of(tls), field));
            }
        }
        Route => {
            f.push(t::utf8_name("name").unique());
            f.push(
                t::protocols(t::PROTOCOLS, &["http", "https"])
                    .check(crate::route_checks::check_protocols),
            );
            f.push(Field::set(
                "methods",
                Field::string("").check_str(|s| {
                    if s.bytes().all(|b| b.is_ascii_uppercase()) {
                        Ok(())
                    } else {
                        Err(format!("invalid value: {s}"))
                    }
                }),
            ));
            f.push(Field::array(
                "hosts",
                Field::string("").check_str(t::validate_route_host),
            ));
            f.push(Field::array(
                "paths",
                Field::string("").check_str(t::validate_router_path),
            ));
            f.push(
                Field::map(
                    "headers",
                    t::header_name(""),
                    Field::array("", Field::string_any("")).len(1, None),
                )
                .check(crate::route_checks::check_headers),
            );
            f.push(
                Field::integer("https_redirect_status_code", 100, 999)
                    .int_one_of(&[426, 301, 302, 307, 308])
                    .default(426),
            );
            f.push(Field::integer("regex_priority", -(1 << 31), (1 << 31) - 1).default(0));
            f.push(Field::boolean("strip_path").default(true));
            f.push(Field::one_of("path_handling", &["v0", "v1"]).default("v0"));
            f.push(Field::boolean("preserve_host").default(false));
            f.push(Field::boolean("request_buffering").default(true));
            f.push(Field::boolean("response_buffering").default(true));
            // Kong 3.7+ `routes.lua`: `typedefs.sni` elements under the traditional router,
            // `typedefs.wildcard_host` under the others
            let sni_check = if flavor == RouterFlavor::Traditional {
                t::validate_sni
            } else {
                t::validate_wildcard_host
            };
            f.push(Field::set("snis", Field::string("").check_str(sni_check)));
            f.push(t::ip_port_set("sources"));
            f.push(t::ip_port_set("destinations"));
            f.push(t::tags());
            f.push(Field::foreign("service", "services"));
            if flavor == RouterFlavor::Expressions {
                f.push(Field::string("expression"));
                f.push(Field::integer("priority", 0, (1 << 46) - 1).default(0));
            }
            timestamps(&mut f);
            checks = crate::route_checks::checks(flavor);
        }
        Upstream => {
            let hash = &[
                "none",
                "consumer",
                "ip",
                "header",
                "cookie",
                "path",
                "query_arg",
                "uri_capture",
            ];
            f.push(
                Field::string("name")
                    .required()
                    .unique()
                    .check_str(validate_upstream_name),
            );
            f.push(
                Field::one_of(
                    "algorithm",
                    &[
                        "round-robin",
                        "consistent-hashing",
                        "least-connections",
                        "latency",
                    ],
                )
                .default("round-robin"),
            );
            f.push(Field::one_of("hash_on", hash).default("none"));
            f.push(Field::one_of("hash_fallback", hash).default("none"));
            f.push(t::header_name("hash_on_header"));
            f.push(t::header_name("hash_fallback_header"));
            f.push(Field::string("hash_on_cookie").check_str(validate_cookie_name));
            f.push(t::path("hash_on_cookie_path").default("/"));
            f.push(Field::string("hash_on_query_arg"));
            f.push(Field::string("hash_fallback_query_arg"));
            f.push(Field::string("hash_on_uri_capture"));
            f.push(Field::string("hash_fallback_uri_capture"));
            f.push(Field::integer("slots", 10, 1 << 16).default(10000));
            f.push(Field::record("healthchecks", healthchecks_schema()).default(json!({})));
            f.push(t::tags());
            f.push(Field::string("host_header").check_str(t::validate_host_with_optional_port));
            f.push(Field::foreign("client_certificate", "certificates"));
            f.push(Field::boolean("use_srv_name").default(false));
            timestamps(&mut f);
            checks = upstream_checks();
        }
        Target => {
            f.push(Field::foreign("upstream", "upstreams").required());
            f.push(
                Field::string("target")
                    .required()
                    .check_str(validate_target),
            );
            f.push(Field::integer("weight", 0, 65535).default(100));
            f.push(t::tags());
            f.push(t::auto_timestamp_ms("created_at"));
            f.push(t::auto_timestamp_ms("updated_at"));
        }
        Consumer => {
            f.push(Field::string("username").unique());
            f.push(Field::string("custom_id").unique());
            f.push(t::tags());
            timestamps(&mut f);
            checks.push(EntityCheck::at_least_one_of(&["custom_id", "username"]));
        }
        ConsumerGroup => {
            f.push(t::utf8_name("name").required().unique());
            f.push(t::tags());
            timestamps(&mut f);
        }
        ConsumerGroupConsumer => {
            f.push(Field::foreign("consumer_group", "consumer_groups").required());
            f.push(Field::foreign("consumer", "consumers").required());
        }
        Plugin => {
            f.push(Field::string("name").required());
            f.push(t::utf8_name("instance_name").unique());
            f.push(Field::foreign("route", "routes"));
            f.push(Field::foreign("service", "services"));
            f.push(Field::foreign("consumer", "consumers"));
            f.push(Field::foreign("consumer_group", "consumer_groups"));
            f.push(Field::any("config"));
            f.push(t::protocols(
                t::PROTOCOLS,
                &["grpc", "grpcs", "http", "https"],
            ));
            f.push(Field::boolean("enabled").default(true));
            f.push(t::tags());
            timestamps(&mut f);
        }
        Certificate => {
            f.push(crate::pki::certificate_field("cert").required());
            f.push(crate::pki::key_field("key").required());
            f.push(crate::pki::certificate_field("cert_alt"));
            f.push(crate::pki::key_field("key_alt"));
            f.push(t::tags());
            timestamps(&mut f);
            checks = crate::pki::certificate_checks();
        }
        Sni => {
            f.push(
                Field::string("name")
                    .required()
                    .unique()
                    .check_str(t::validate_wildcard_host),
            );
            f.push(Field::foreign("certificate", "certificates").required());
            f.push(t::tags());
            timestamps(&mut f);
        }
        CaCertificate => {
            f.push(Field::string("cert").required());
            f.push(Field::string("cert_digest").unique());
            f.push(t::tags());
            timestamps(&mut f);
        }
        Vault => {
            f.push(
                Field::string("prefix")
                    .required()
                    .unique()
                    .check_str(validate_vault_prefix),
            );
            f.push(Field::string("name").required());
            f.push(Field::string("description"));
            f.push(Field::any("config"));
            f.push(t::tags());
            timestamps(&mut f);
        }
        KeyauthCredential => {
            f.push(Field::foreign("consumer", "consumers").required());
            f.push(Field::string("key").unique().auto());
            f.push(Field::any_integer("ttl"));
            f.push(t::tags());
            f.push(t::auto_timestamp_s("created_at"));
        }
        BasicauthCredential => {
            f.push(Field::foreign("consumer", "consumers").required());
            f.push(Field::string("username").required().unique());
            f.push(Field::string("password").required());
            f.push(t::tags());
            f.push(t::auto_timestamp_s("created_at"));
        }
        JwtSecret => {
            f.push(Field::foreign("consumer", "consumers").required());
            f.push(Field::string("key").unique().auto());
            f.push(Field::string("secret").auto());
            f.push(Field::string("rsa_public_key"));
            f.push(
                Field::one_of(
                    "algorithm",
                    &[
                        "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "ES256", "ES384",
                        "ES512", "PS256", "PS384", "PS512", "EdDSA",
                    ],
                )
                .default("HS256"),
            );
            f.push(t::tags());
            f.push(t::auto_timestamp_s("created_at"));
            // (Kong's `jwt` plugin's `daos.lua`: the algorithms with a public key)
            checks.push(EntityCheck::conditional(Conditional {
                if_field: "algorithm",
                if_match: Match {
                    match_any: Some(&[
                        "^RS256$", "^RS384$", "^RS512$", "^PS256$", "^PS384$", "^PS512$",
                        "^ES256$", "^ES384$", "^ES512$", "^EdDSA$",
                    ]),
                    ..Default::default()
                },
                then_field: "rsa_public_key",
                then_match: Match::required(),
                then_err: None,
            }));
        }
        Acl => {
            f.push(Field::foreign("consumer", "consumers").required());
            f.push(Field::string("group").required());
            f.push(t::tags());
            f.push(t::auto_timestamp_s("created_at"));
        }
        HmacauthCredential => {
            f.push(Field::foreign("consumer", "consumers").required());
            f.push(Field::string("username").required().unique());
            f.push(Field::string("secret").auto());
            f.push(t::tags());
            f.push(t::auto_timestamp_s("created_at"));
        }
        KeySet => {
            f.push(Field::string("name").unique());
            f.push(t::tags());
            timestamps(&mut f);
        }
        Key => {
            f.push(Field::foreign("set", "key_sets"));
            f.push(Field::string("name").unique());
            f.push(Field::string("kid").required());
            // a JSON Web Key as a JSON string, checked by the entity checks below
            f.push(Field::string("jwk").referenceable());
            f.push(Field::record("pem", crate::keys::pem_record()).check(crate::keys::check_pem));
            f.push(t::tags());
            timestamps(&mut f);
            checks = crate::keys::key_checks();
        }
    }
    Record::with_checks(f, checks)
}

fn validate_upstream_name(s: &str) -> Result<(), String> {
    match t::split_host_port(s) {
        Ok(hp) if hp.is_ip() => Err(format!("Invalid name ('{s}'); no ip addresses allowed")),
        Ok(hp) if hp.port.is_some() => Err(format!("Invalid name ('{s}'); no port allowed")),
        Ok(_) => Ok(()),
        Err(_) => Err(format!("Invalid name ('{s}'); must be a valid hostname")),
    }
}

fn validate_target(s: &str) -> Result<(), String> {
    match t::split_host_port(s) {
        Ok(hp) if hp.port == Some(0) => Err(format!("Invalid target ('{s}'); invalid port number")),
        Ok(_) => Ok(()),
        Err(t::HostError::Port) => Err(format!("Invalid target ('{s}'); invalid port number")),
        Err(_) => Err(format!(
            "Invalid target ('{s}'); not a valid hostname or ip address"
        )),
    }
}

/// Adds Kong's default port (8000) to a target without one.
pub fn normalize_target(s: &str) -> String {
    match t::split_host_port(s) {
        Ok(hp) if hp.port.is_none() => {
            if hp.host.contains(':') {
                format!("[{}]:8000", hp.host)
            } else {
                format!("{}:8000", hp.host)
            }
        }
        _ => s.to_string(),
    }
}

fn validate_cookie_name(s: &str) -> Result<(), String> {
    let ok = s
        .bytes()
        .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b));
    if ok {
        Ok(())
    } else {
        Err("contains one or more invalid characters".into())
    }
}

fn validate_vault_prefix(s: &str) -> Result<(), String> {
    let re_ok = {
        let b = s.as_bytes();
        !b.is_empty()
            && b[0].is_ascii_lowercase()
            && b.iter()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
            && !s.ends_with('-')
    };
    if !re_ok {
        return Err(format!("invalid value: {s}"));
    }
    if crate::VAULT_TYPES.contains(&s) {
        return Err(format!(
            "must not be one of: {}",
            crate::VAULT_TYPES.join(", ")
        ));
    }
    Ok(())
}

fn http_statuses(default: &[u16]) -> Field {
    Field::array("http_statuses", Field::integer("", 100, 999)).default(default.to_vec())
}

fn healthchecks_schema() -> Record {
    let counter = |n: &'static str| Field::integer(n, 0, 255).default(0);
    let seconds = |n: &'static str, d: f64| Field::number(n, 0.0, 65535.0).default(d as i64);
    let active = Record::new(vec![
        Field::one_of("type", &["tcp", "http", "https", "grpc", "grpcs"]).default("http"),
        seconds("timeout", 1.0),
        Field::integer("concurrency", 1, 2_147_483_648).default(10),
        t::path("http_path").default("/"),
        Field::string("https_sni").check_str(t::validate_sni),
        Field::boolean("https_verify_certificate").default(true),
        Field::map(
            "headers",
            t::header_name(""),
            Field::array("", Field::string_any("")),
        ),
        Field::record(
            "healthy",
            Record::new(vec![
                seconds("interval", 0.0),
                http_statuses(&[200, 302]),
                counter("successes"),
            ]),
        )
        .default(json!({})),
        Field::record(
            "unhealthy",
            Record::new(vec![
                seconds("interval", 0.0),
                http_statuses(&[429, 404, 500, 501, 502, 503, 504, 505]),
                counter("tcp_failures"),
                counter("timeouts"),
                counter("http_failures"),
            ]),
        )
        .default(json!({})),
    ]);
    let mut passive_ok = vec![200, 201, 202, 203, 204, 205, 206, 207, 208, 226];
    passive_ok.extend(300..=308);
    let passive = Record::new(vec![
        Field::one_of("type", &["tcp", "http", "https", "grpc", "grpcs"]).default("http"),
        Field::record(
            "healthy",
            Record::new(vec![http_statuses(&passive_ok), counter("successes")]),
        )
        .default(json!({})),
        Field::record(
            "unhealthy",
            Record::new(vec![
                http_statuses(&[429, 500, 503]),
                counter("tcp_failures"),
                counter("timeouts"),
                counter("http_failures"),
            ]),
        )
        .default(json!({})),
    ]);
    Record::new(vec![
        Field::record("active", active).default(json!({})),
        Field::record("passive", passive).default(json!({})),
        Field::number("threshold", 0.0, 100.0).default(0),
    ])
}

/// The entity checks of `upstreams.lua`, in Kong's order: the hashing inputs each choice of
/// `hash_on` / `hash_fallback` needs, the fallbacks each `hash_on` allows, distinct headers,
/// query arguments and URI captures; then ours: consistent hashing needs a `hash_on`.
fn upstream_checks() -> Vec<EntityCheck> {
    let cond = |if_field, pattern, then_field, then_match| {
        EntityCheck::conditional(Conditional {
            if_field,
            if_match: Match::pattern(pattern),
            then_field,
            then_match,
            then_err: None,
        })
    };
    let required =
        |if_field, pattern, then_field| cond(if_field, pattern, then_field, Match::required());
    let fallback =
        |pattern, allowed| cond("hash_on", pattern, "hash_fallback", Match::one_of(allowed));
    vec![
        required("hash_on", "^header$", "hash_on_header"),
        required("hash_fallback", "^header$", "hash_fallback_header"),
        required("hash_on", "^cookie$", "hash_on_cookie"),
        required("hash_fallback", "^cookie$", "hash_on_cookie"),
        fallback("^none$", &["none"]),
        fallback("^cookie$", &["none"]),
        fallback(
            "^consumer$",
            &[
                "none",
                "ip",
                "header",
                "cookie",
                "path",
                "query_arg",
                "uri_capture",
            ],
        ),
        fallback(
            "^ip$",
            &[
                "none",
                "consumer",
                "header",
                "cookie",
                "path",
                "query_arg",
                "uri_capture",
            ],
        ),
        fallback(
            "^path$",
            &[
                "none",
                "consumer",
                "ip",
                "header",
                "cookie",
                "query_arg",
                "uri_capture",
            ],
        ),
        EntityCheck::distinct(&["hash_on_header", "hash_fallback_header"]),
        required("hash_on", "^query_arg$", "hash_on_query_arg"),
        required("hash_fallback", "^query_arg$", "hash_fallback_query_arg"),
        EntityCheck::distinct(&["hash_on_query_arg", "hash_fallback_query_arg"]),
        required("hash_on", "^uri_capture$", "hash_on_uri_capture"),
        required(
            "hash_fallback",
            "^uri_capture$",
            "hash_fallback_uri_capture",
        ),
        EntityCheck::distinct(&["hash_on_uri_capture", "hash_fallback_uri_capture"]),
        // (ours, not one of Kong's declared checks: a ring that hashes nothing; so it is not
        // rendered among Kong's `entity_checks`)
        EntityCheck::conditional(Conditional {
            if_field: "algorithm",
            if_match: Match::one_of(&["consistent-hashing"]),
            then_field: "hash_on",
            then_match: Match {
                ne: Some(Value::from("none")),
                err: Some("must not be 'none' when 'algorithm' is 'consistent-hashing'"),
                ..Default::default()
            },
            then_err: None,
        })
        .unrendered(),
    ]
}

// === typed entities ===

/// A protocol name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    /// `http`
    Http,
    /// `https`
    Https,
    /// `grpc`
    Grpc,
    /// `grpcs`
    Grpcs,
    /// `tcp`
    Tcp,
    /// `tls`
    Tls,
    /// `tls_passthrough`
    TlsPassthrough,
    /// `udp`
    Udp,
    /// `ws`
    Ws,
    /// `wss`
    Wss,
}

impl Protocol {
    /// Kong's name of the protocol.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::Https => "https",
            Protocol::Grpc => "grpc",
            Protocol::Grpcs => "grpcs",
            Protocol::Tcp => "tcp",
            Protocol::Tls => "tls",
            Protocol::TlsPassthrough => "tls_passthrough",
            Protocol::Udp => "udp",
            Protocol::Ws => "ws",
            Protocol::Wss => "wss",
        }
    }
    /// Whether the protocol is carried over TLS to the upstream.
    pub fn is_tls(self) -> bool {
        matches!(
            self,
            Protocol::Https | Protocol::Grpcs | Protocol::Tls | Protocol::Wss
        )
    }
    /// Whether this is a stream (L4) protocol.
    pub fn is_stream(self) -> bool {
        matches!(
            self,
            Protocol::Tcp | Protocol::Tls | Protocol::TlsPassthrough | Protocol::Udp
        )
    }
}

/// A reference to another entity, serialized as `{"id": "..."}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ForeignKey {
    /// The referenced entity's id.
    pub id: Uuid,
}

fn is_false(b: &bool) -> bool {
    !*b
}
fn is_true(b: &bool) -> bool {
    *b
}
fn yes() -> bool {
    true
}

/// Serializes whole floats without a fractional part, as Kong's JSON does.
fn ser_num<S: serde::Serializer>(n: &f64, s: S) -> Result<S::Ok, S::Error> {
    if n.fract() == 0.0 && n.abs() < 9.0e15 {
        s.serialize_i64(*n as i64)
    } else {
        s.serialize_f64(*n)
    }
}

/// A Kong Service: where requests go.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Service {
    /// Primary key.
    pub id: Uuid,
    /// Unique name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Retries on failure (default 5).
    pub retries: u16,
    /// Upstream protocol.
    pub protocol: Protocol,
    /// Upstream host (or the name of an upstream entity).
    pub host: String,
    /// Upstream port.
    pub port: u16,
    /// Path prefix sent upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Connect timeout, ms.
    pub connect_timeout: u32,
    /// Write timeout, ms.
    pub write_timeout: u32,
    /// Read timeout, ms.
    pub read_timeout: u32,
    /// Tags.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Client certificate for mTLS to the upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificate: Option<ForeignKey>,
    /// Whether to verify the upstream certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_verify: Option<bool>,
    /// Verification depth.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_verify_depth: Option<u8>,
    /// CA certificates (ids) trusted for the upstream.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ca_certificates: Vec<Uuid>,
    /// Whether the service (and its routes) is active.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub enabled: bool,
    /// Creation time, s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<i64>,
    /// Update time, s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<i64>,
}

/// `{ip, port}` of a stream route's sources/destinations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpPort {
    /// IP or CIDR.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// Port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
}

/// How the upstream path is built (`path_handling`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum PathHandling {
    /// The default.
    #[default]
    V0,
    /// Deprecated; `traditional` flavor only.
    V1,
}

/// A Kong Route: how requests are matched.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Route {
    /// Primary key.
    pub id: Uuid,
    /// Unique name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Protocols the route serves.
    pub protocols: Vec<Protocol>,
    /// HTTP methods.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    /// Hosts (exact, `*.suffix`, `prefix.*`, optional `:port`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// Paths (prefix, or `~` regex).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    /// Header matches.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, Vec<String>>,
    /// Status for https-only routes reached over http.
    pub https_redirect_status_code: u16,
    /// Priority among regex paths.
    pub regex_priority: i64,
    /// Whether the matched prefix is stripped.
    pub strip_path: bool,
    /// Path joining rules.
    pub path_handling: PathHandling,
    /// Whether the client Host is sent upstream.
    pub preserve_host: bool,
    /// Whether request bodies are buffered.
    pub request_buffering: bool,
    /// Whether response bodies are buffered.
    pub response_buffering: bool,
    /// TLS server names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub snis: Vec<String>,
    /// Stream sources.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<IpPort>,
    /// Stream destinations.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub destinations: Vec<IpPort>,
    /// Tags.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// The service requests go to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<ForeignKey>,
    /// ATC expression (expressions flavor).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expression: Option<String>,
    /// Expression priority (expressions flavor).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u64>,
    /// Creation time, s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<i64>,
    /// Update time, s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<i64>,
}

/// Health-check settings of an upstream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Healthchecks {
    /// Active probing.
    pub active: ActiveHealthcheck,
    /// Passive checks on proxied traffic.
    pub passive: PassiveHealthcheck,
    /// Minimum healthy percentage of the balancer.
    #[serde(serialize_with = "ser_num")]
    pub threshold: f64,
}

/// Active health checks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActiveHealthcheck {
    /// `http`, `https`, `tcp`, `grpc` or `grpcs`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Probe timeout, s.
    #[serde(serialize_with = "ser_num")]
    pub timeout: f64,
    /// Concurrent probes.
    pub concurrency: u32,
    /// Probe path.
    pub http_path: String,
    /// SNI for https probes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub https_sni: Option<String>,
    /// Whether https probes verify the certificate.
    pub https_verify_certificate: bool,
    /// Extra probe headers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<BTreeMap<String, Vec<String>>>,
    /// Rules for healthy targets.
    pub healthy: ActiveHealthy,
    /// Rules for unhealthy targets.
    pub unhealthy: ActiveUnhealthy,
}

/// Active probing of healthy targets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActiveHealthy {
    /// Probe interval, s (0 = off).
    #[serde(serialize_with = "ser_num")]
    pub interval: f64,
    /// Statuses that count as success.
    pub http_statuses: Vec<u16>,
    /// Successes that mark a target healthy.
    pub successes: u8,
}

/// Active probing of unhealthy targets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActiveUnhealthy {
    /// Probe interval, s (0 = off).
    #[serde(serialize_with = "ser_num")]
    pub interval: f64,
    /// Statuses that count as failure.
    pub http_statuses: Vec<u16>,
    /// TCP failures that mark a target unhealthy.
    pub tcp_failures: u8,
    /// Timeouts that mark a target unhealthy.
    pub timeouts: u8,
    /// HTTP failures that mark a target unhealthy.
    pub http_failures: u8,
}

/// Passive health checks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PassiveHealthcheck {
    /// `http`, `https`, `tcp`, `grpc` or `grpcs`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Rules for counting successes.
    pub healthy: PassiveHealthy,
    /// Rules for counting failures.
    pub unhealthy: PassiveUnhealthy,
}

/// Passive success rules.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PassiveHealthy {
    /// Statuses that count as success.
    pub http_statuses: Vec<u16>,
    /// Successes that mark a target healthy.
    pub successes: u8,
}

/// Passive failure rules.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PassiveUnhealthy {
    /// Statuses that count as failure.
    pub http_statuses: Vec<u16>,
    /// TCP failures that mark a target unhealthy.
    pub tcp_failures: u8,
    /// Timeouts that mark a target unhealthy.
    pub timeouts: u8,
    /// HTTP failures that mark a target unhealthy.
    pub http_failures: u8,
}

/// Serializes a shared value as the value itself.
fn serialize_shared<T: Serialize, S: serde::Serializer>(
    v: &Arc<T>,
    s: S,
) -> Result<S::Ok, S::Error> {
    T::serialize(v, s)
}

/// Deserializes a value into a new shared one.
fn deserialize_shared<'de, T: Deserialize<'de>, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Arc<T>, D::Error> {
    T::deserialize(d).map(Arc::new)
}

/// A Kong Upstream: a load-balanced set of targets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Upstream {
    /// Primary key.
    pub id: Uuid,
    /// Name, matched against service hosts.
    pub name: String,
    /// Balancing algorithm.
    pub algorithm: String,
    /// Hash input.
    pub hash_on: String,
    /// Fallback hash input.
    pub hash_fallback: String,
    /// Header for `hash_on: header`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash_on_header: Option<String>,
    /// Header for `hash_fallback: header`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash_fallback_header: Option<String>,
    /// Cookie for `hash_on: cookie`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash_on_cookie: Option<String>,
    /// Path of the generated hash cookie.
    pub hash_on_cookie_path: String,
    /// Query argument for `hash_on: query_arg`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash_on_query_arg: Option<String>,
    /// Query argument for `hash_fallback: query_arg`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash_fallback_query_arg: Option<String>,
    /// Capture for `hash_on: uri_capture`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash_on_uri_capture: Option<String>,
    /// Capture for `hash_fallback: uri_capture`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash_fallback_uri_capture: Option<String>,
    /// Ring size for consistent hashing.
    pub slots: u32,
    /// Health checks, shared: upstreams that give none hold one copy of the schema default.
    #[serde(
        serialize_with = "serialize_shared",
        deserialize_with = "deserialize_shared"
    )]
    pub healthchecks: Arc<Healthchecks>,
    /// Tags.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Host header sent to targets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_header: Option<String>,
    /// Client certificate for mTLS to targets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificate: Option<ForeignKey>,
    /// Whether the SRV name is used as the TLS/Host name.
    #[serde(default, skip_serializing_if = "is_false")]
    pub use_srv_name: bool,
    /// Creation time, s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<i64>,
    /// Update time, s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<i64>,
}

/// A Kong Target: one backend of an upstream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Target {
    /// Primary key.
    pub id: Uuid,
    /// The upstream.
    pub upstream: ForeignKey,
    /// `host:port` (the default port 8000 is added when missing).
    pub target: String,
    /// Weight, 0..65535 (0 = no traffic).
    pub weight: u32,
    /// Tags.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Creation time, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<f64>,
    /// Update time, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<f64>,
}

/// A Kong Consumer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Consumer {
    /// Primary key.
    pub id: Uuid,
    /// Unique username.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Unique custom id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_id: Option<String>,
    /// Tags.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Creation time, s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<i64>,
    /// Update time, s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<i64>,
}

/// A consumer group (our extension).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConsumerGroup {
    /// Primary key.
    pub id: Uuid,
    /// Unique name.
    pub name: String,
    /// Tags.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Creation time, s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<i64>,
    /// Update time, s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<i64>,
}

/// Membership of a consumer in a consumer group (our extension).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConsumerGroupConsumer {
    /// The group.
    pub consumer_group: ForeignKey,
    /// The consumer.
    pub consumer: ForeignKey,
}

/// A plugin instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plugin {
    /// Primary key.
    pub id: Uuid,
    /// Plugin name.
    pub name: String,
    /// Unique instance name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_name: Option<String>,
    /// Scope: route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<ForeignKey>,
    /// Scope: service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<ForeignKey>,
    /// Scope: consumer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumer: Option<ForeignKey>,
    /// Scope: consumer group (our extension).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumer_group: Option<ForeignKey>,
    /// Configuration, validated and defaulted by the plugin's schema.
    pub config: Value,
    /// Protocols (selects the subsystem).
    pub protocols: Vec<Protocol>,
    /// Whether the plugin runs.
    pub enabled: bool,
    /// Tags.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Creation time, s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<i64>,
    /// Update time, s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<i64>,
}

/// A TLS certificate with its key (and optionally a second one of another key type).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct Certificate {
    /// Primary key.
    pub id: Uuid,
    /// PEM certificate chain.
    pub cert: String,
    /// PEM private key.
    pub key: String,
    /// Alternative PEM certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_alt: Option<String>,
    /// Alternative PEM key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_alt: Option<String>,
    /// Tags.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Creation time, s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<i64>,
    /// Update time, s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<i64>,
}

impl std::fmt::Debug for Certificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Keys are secrets: never print them.
        f.debug_struct("Certificate")
            .field("id", &self.id)
            .field("tags", &self.tags)
            .finish_non_exhaustive()
    }
}

/// A server name pointing at a certificate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sni {
    /// Primary key.
    pub id: Uuid,
    /// Name (exact or wildcard).
    pub name: String,
    /// The certificate.
    pub certificate: ForeignKey,
    /// Tags.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Creation time, s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<i64>,
    /// Update time, s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<i64>,
}

/// A trusted CA certificate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaCertificate {
    /// Primary key.
    pub id: Uuid,
    /// PEM certificate.
    pub cert: String,
    /// SHA-256 hex of the DER certificate.
    pub cert_digest: String,
    /// Tags.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Creation time, s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<i64>,
    /// Update time, s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<i64>,
}

/// A secret vault.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Vault {
    /// Primary key.
    pub id: Uuid,
    /// Reference prefix (`{vault://<prefix>/...}`).
    pub prefix: String,
    /// Vault type (`env`).
    pub name: String,
    /// Description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Type-specific configuration.
    pub config: Value,
    /// Tags.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Creation time, s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<i64>,
    /// Update time, s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<i64>,
}

/// A key-auth credential.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyauthCredential {
    /// Primary key.
    pub id: Uuid,
    /// The consumer.
    pub consumer: ForeignKey,
    /// The API key.
    pub key: String,
    /// Time to live, s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<i64>,
    /// Tags.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Creation time, s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<i64>,
}

/// A basic-auth credential (password stored as Kong's salted SHA-1 when transformed).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct BasicauthCredential {
    /// Primary key.
    pub id: Uuid,
    /// The consumer.
    pub consumer: ForeignKey,
    /// Username.
    pub username: String,
    /// `sha1_hex(password .. consumer_id)`.
    pub password: String,
    /// Tags.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Creation time, s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<i64>,
}

/// A JWT credential.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct JwtSecret {
    /// Primary key.
    pub id: Uuid,
    /// The consumer.
    pub consumer: ForeignKey,
    /// Key (matched against the `iss` claim by default).
    pub key: String,
    /// HMAC secret.
    pub secret: String,
    /// Public key for asymmetric algorithms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rsa_public_key: Option<String>,
    /// Algorithm.
    pub algorithm: String,
    /// Tags.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Creation time, s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<i64>,
}

/// An ACL group membership.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Acl {
    /// Primary key.
    pub id: Uuid,
    /// The consumer.
    pub consumer: ForeignKey,
    /// Group name.
    pub group: String,
    /// Tags.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Creation time, s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<i64>,
}

/// An HMAC-auth credential.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct HmacauthCredential {
    /// Primary key.
    pub id: Uuid,
    /// The consumer.
    pub consumer: ForeignKey,
    /// Username.
    pub username: String,
    /// Shared secret.
    pub secret: String,
    /// Tags.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Creation time, s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<i64>,
}

macro_rules! redacted_debug {
    ($($t:ident),*) => {$(
        impl std::fmt::Debug for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                // Credentials are secrets: never print them.
                f.debug_struct(stringify!($t)).field("id", &self.id).field("consumer", &self.consumer).finish_non_exhaustive()
            }
        }
    )*};
}
redacted_debug!(
    KeyauthCredential,
    BasicauthCredential,
    JwtSecret,
    HmacauthCredential
);

/// A set of keys (Kong 3.x `key_sets`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeySet {
    /// Primary key.
    pub id: Uuid,
    /// Unique name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Tags.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Creation time, s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<i64>,
    /// Update time, s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<i64>,
}

/// A key pair in PEM form (a `keys` entity's `pem`): at least one of the two.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyPem {
    /// PEM private key (or a vault reference).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key: Option<String>,
    /// PEM public key (or a vault reference).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
}

/// A key (Kong 3.x `keys`): a JSON Web Key or a PEM pair, named by `kid`, optionally in a
/// key set.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct Key {
    /// Primary key.
    pub id: Uuid,
    /// The key set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set: Option<ForeignKey>,
    /// Unique name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Key id.
    pub kid: String,
    /// The JSON Web Key, as a JSON string (or a vault reference).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwk: Option<String>,
    /// The PEM pair.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pem: Option<KeyPem>,
    /// Tags.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Creation time, s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<i64>,
    /// Update time, s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<i64>,
}

impl std::fmt::Debug for KeyPem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A private key is a secret: never print it.
        f.debug_struct("KeyPem")
            .field("public_key", &self.public_key)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A JWK may hold private members: never print it.
        f.debug_struct("Key")
            .field("id", &self.id)
            .field("set", &self.set)
            .field("name", &self.name)
            .field("kid", &self.kid)
            .field("pem", &self.pem)
            .finish_non_exhaustive()
    }
}
