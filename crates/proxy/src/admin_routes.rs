//! The admin and status APIs' routes: one table that both listeners dispatch through
//! ([`resolve`]) and that `GET /endpoints` lists ([`listed`]), so that what is served and
//! what is listed cannot differ.
//!
//! Paths are written as Kong's `GET /endpoints` writes them: a parameter in braces, named
//! as Kong names it. An entity's parameter is its DAO name, whatever the collection is
//! called in the path (`/key-auths/{keyauth_credentials}`,
//! `/consumers/{consumers}/key-auth/{keyauth_credentials}`); the other routes keep
//! Kong's names (`/schemas/{db_entity_name}/validate`, `/tags/{tags}`,
//! `/upstreams/{upstreams}/targets/{targets}/{address}/healthy`).
//!
//! The first route that matches a path serves it: literal routes come before the entity
//! routes whose parameter they would also match (`/plugins/enabled` before
//! `/plugins/{plugins}`).

use std::cmp::Ordering;
use std::sync::LazyLock;

use silverback_config::EntityKind;

/// What a route serves: its handler in [`crate::admin`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Endpoint {
    /// `/`
    Root,
    /// `/endpoints`
    Endpoints,
    /// `/status`
    Status,
    /// `/status/ready`
    Ready,
    /// `/status/dns`
    DnsStatus,
    /// `/cache`
    Cache,
    /// `/timers`
    Timers,
    /// `/cache/{key}`
    CacheKey,
    /// `/metrics`
    Metrics,
    /// `/config`
    Config,
    /// `/plugins/enabled`
    PluginsEnabled,
    /// `/plugins/schema/{name}`
    PluginConfigSchema,
    /// `/schemas/{name}`
    EntitySchema,
    /// `/schemas/plugins/{name}`
    PluginSchema,
    /// `/schemas/vaults/{name}`
    VaultSchema,
    /// `/schemas/{db_entity_name}/validate`
    Validate,
    /// `/tags`
    Tags,
    /// `/tags/{tags}`
    Tagged,
    /// `/upstreams/{upstreams}/health`
    UpstreamHealth,
    /// `/upstreams/{upstreams}/targets/all`
    AllTargets,
    /// `/upstreams/{upstreams}/targets/{targets}[/{address}]/healthy` (or `unhealthy`)
    SetHealth {
        /// `healthy`, not `unhealthy`
        healthy: bool,
    },
    /// `/debug/node/log-level`
    LogLevel,
    /// `/debug/node/log-level/{log_level}`
    SetLogLevel,
    /// `/debug/cluster/log-level/{log_level}`
    SetClusterLogLevel,
    /// A route Kong lists but disables (`endpoints.disable`): 404 `Not found` whatever the
    /// method. The top-level targets routes (`/targets`, `/targets/{targets}`,
    /// `/targets/{targets}/upstream`, Kong's `routes/targets.lua`): targets are reached under
    /// their upstream.
    Disabled,
    /// An entity endpoint of this kind (the first segment names the collection): the
    /// collection, one entity, the entity a foreign key references, a child collection or
    /// one child.
    Entities(EntityKind),
}

/// One segment of a route's path.
#[derive(Debug)]
enum Seg {
    /// This segment, exactly.
    Lit(String),
    /// Any segment.
    Param,
}

/// One admin (and perhaps status) path.
#[derive(Debug)]
pub(crate) struct Route {
    /// The path as Kong's `GET /endpoints` writes it.
    pub(crate) path: String,
    segs: Vec<Seg>,
    /// What it serves.
    pub(crate) endpoint: Endpoint,
    /// Also served by the status listener (which serves nothing else).
    pub(crate) on_status: bool,
    /// Served by the status listener only (`/status/ready`, which only Kong's status API
    /// attaches).
    status_only: bool,
    /// Listed by `GET /endpoints`: a path Kong serves. (Served but not listed: the other
    /// names of a collection, `/keyauth_credentials`, `/consumers/{c}/key-auths`.)
    pub(crate) listed: bool,
    /// The methods Kong has a handler for on this path, `OPTIONS` included, sorted and
    /// joined as its `OPTIONS` answer lists them in `Allow`.
    pub(crate) methods: &'static str,
}

/// `GET` alone (and `OPTIONS`).
const READ: &str = "GET, OPTIONS";
/// A collection: read it, add to it.
const COLLECTION: &str = "GET, OPTIONS, POST";
/// One entity: read, replace, update, delete.
const ENTITY: &str = "DELETE, GET, OPTIONS, PATCH, PUT";
/// The methods of a route Kong's status API serves: its `GET` handlers only.
pub(crate) const STATUS_METHODS: &str = READ;

/// The methods of a literal route serving `e`.
fn methods_of(e: Endpoint) -> &'static str {
    use Endpoint as E;
    match e {
        E::Cache => "DELETE, OPTIONS",
        E::CacheKey => "DELETE, GET, OPTIONS",
        E::Config => COLLECTION,
        E::Validate => "OPTIONS, POST",
        E::SetHealth { .. } | E::SetLogLevel | E::SetClusterLogLevel => "OPTIONS, PUT",
        _ => READ,
    }
}

impl Route {
    fn new(
        path: String,
        endpoint: Endpoint,
        on_status: bool,
        listed: bool,
        methods: &'static str,
    ) -> Route {
        let segs = path
            .split('/')
            .filter(|s| !s.is_empty())
            .map(|s| {
                if s.starts_with('{') {
                    Seg::Param
                } else {
                    Seg::Lit(s.to_string())
                }
            })
            .collect();
        // (`/status/ready`: Kong attaches it to its status API alone, so the admin API
        // neither serves nor lists it)
        let status_only = endpoint == Endpoint::Ready;
        Route {
            status_only,
            path,
            segs,
            endpoint,
            on_status,
            listed: listed && !status_only,
            methods,
        }
    }

    /// The parameters of `path` (its percent-decoded segments), in order, if it is this
    /// route's.
    fn params<'a>(&self, path: &[&'a str]) -> Option<Vec<&'a str>> {
        if path.len() != self.segs.len() {
            return None;
        }
        let mut params = Vec::new();
        for (seg, s) in self.segs.iter().zip(path) {
            match seg {
                Seg::Lit(l) if l == s => {}
                Seg::Lit(_) => return None,
                Seg::Param => params.push(*s),
            }
        }
        Some(params)
    }
}

/// Kong's admin names of the collections whose path is not their entity name
/// (`admin_api_name`: the credentials, and `/key-sets`); every kind also answers to its
/// declarative plural (`/keyauth_credentials`, `/key_sets`, `/acls`).
const ADMIN_NAMES: [(&str, EntityKind); 5] = [
    ("key-auths", EntityKind::KeyauthCredential),
    ("basic-auths", EntityKind::BasicauthCredential),
    ("jwts", EntityKind::JwtSecret),
    ("hmac-auths", EntityKind::HmacauthCredential),
    ("key-sets", EntityKind::KeySet),
];

/// The names Kong gives credentials under their consumer (`admin_api_nested_name`:
/// `/consumers/{c}/key-auth`), besides the collection names.
const NESTED_NAMES: [(&str, EntityKind); 4] = [
    ("key-auth", EntityKind::KeyauthCredential),
    ("basic-auth", EntityKind::BasicauthCredential),
    ("hmac-auth", EntityKind::HmacauthCredential),
    ("jwt", EntityKind::JwtSecret),
];

/// Every entity collection's name in a path, with its kind.
fn collections() -> impl Iterator<Item = (&'static str, EntityKind)> {
    ADMIN_NAMES
        .into_iter()
        .chain(EntityKind::ALL.into_iter().map(|k| (k.plural(), k)))
}

/// Kong's name of a kind's collection (`admin_api_name`, else the declarative plural).
pub(crate) fn kong_name(k: EntityKind) -> &'static str {
    ADMIN_NAMES
        .into_iter()
        .find(|(_, ak)| *ak == k)
        .map_or(k.plural(), |(n, _)| n)
}

/// Kong's name of a kind's collection under its parent (`admin_api_nested_name`, else its
/// collection name: `/consumers/{c}/key-auth`, `/services/{s}/routes`).
fn kong_nested_name(k: EntityKind) -> &'static str {
    NESTED_NAMES
        .into_iter()
        .find(|(_, nk)| *nk == k)
        .map_or(kong_name(k), |(n, _)| n)
}

/// Admin collection name → entity kind.
pub(crate) fn kind_of(name: &str) -> Option<EntityKind> {
    collections().find(|(n, _)| *n == name).map(|(_, k)| k)
}

/// The kind of a child collection under a parent: a collection name, or the singular one
/// Kong uses for credentials under a consumer (`/consumers/{c}/key-auth`).
pub(crate) fn nested_kind_of(child: &str) -> Option<EntityKind> {
    kind_of(child).or_else(|| {
        NESTED_NAMES
            .into_iter()
            .find(|(n, _)| *n == child)
            .map(|(_, k)| k)
    })
}

/// The route table, in the order paths are matched.
static ROUTES: LazyLock<Vec<Route>> = LazyLock::new(build);

fn build() -> Vec<Route> {
    use Endpoint as E;
    let mut t: Vec<Route> = Vec::new();
    let mut add = |path: String, e: Endpoint, on_status: bool, listed: bool, m: &'static str| {
        t.push(Route::new(path, e, on_status, listed, m));
    };
    for (path, e, on_status) in [
        ("/status", E::Status, true),
        ("/status/ready", E::Ready, true),
        ("/status/dns", E::DnsStatus, true),
        ("/cache", E::Cache, false),
        ("/timers", E::Timers, false),
        ("/cache/{key}", E::CacheKey, false),
        ("/metrics", E::Metrics, true),
        ("/", E::Root, false),
        ("/endpoints", E::Endpoints, false),
        ("/config", E::Config, false),
        ("/plugins/enabled", E::PluginsEnabled, false),
        ("/plugins/schema/{name}", E::PluginConfigSchema, false),
        ("/schemas/{db_entity_name}/validate", E::Validate, false),
        ("/schemas/plugins/{name}", E::PluginSchema, false),
        ("/schemas/vaults/{name}", E::VaultSchema, false),
        ("/schemas/{name}", E::EntitySchema, false),
        ("/tags", E::Tags, false),
        ("/tags/{tags}", E::Tagged, false),
        ("/debug/node/log-level", E::LogLevel, false),
        ("/debug/node/log-level/{log_level}", E::SetLogLevel, false),
        (
            "/debug/cluster/log-level/{log_level}",
            E::SetClusterLogLevel,
            false,
        ),
        // In DB-less mode Kong's status API also serves the upstreams' read-only routes.
        ("/upstreams/{upstreams}/health", E::UpstreamHealth, true),
        ("/upstreams/{upstreams}/targets/all", E::AllTargets, true),
        (
            "/upstreams/{upstreams}/targets/{targets}/healthy",
            E::SetHealth { healthy: true },
            false,
        ),
        (
            "/upstreams/{upstreams}/targets/{targets}/unhealthy",
            E::SetHealth { healthy: false },
            false,
        ),
        (
            "/upstreams/{upstreams}/targets/{targets}/{address}/healthy",
            E::SetHealth { healthy: true },
            false,
        ),
        (
            "/upstreams/{upstreams}/targets/{targets}/{address}/unhealthy",
            E::SetHealth { healthy: false },
            false,
        ),
    ] {
        add(path.to_string(), e, on_status, true, methods_of(e));
    }
    // The entity endpoints, for every name of every collection (listed under Kong's names).
    for (coll, k) in collections() {
        let e = E::Entities(k);
        let upstreams = k == EntityKind::Upstream;
        let listed = coll == kong_name(k);
        let one = format!("/{coll}/{{{}}}", k.plural());
        // (`/targets...`: listed, disabled)
        let top = if k == EntityKind::Target {
            E::Disabled
        } else {
            e
        };
        // (the status API has the upstreams' routes of Kong's `routes/upstreams.lua` only:
        // health and targets, not the collection or the entity)
        add(format!("/{coll}"), top, false, listed, COLLECTION);
        add(one.clone(), top, false, listed, ENTITY);
        // `/routes/{routes}/service`: the entity a foreign key references
        for (fk, _) in k.foreign_keys() {
            add(format!("{one}/{fk}"), top, false, listed, ENTITY);
        }
        // `/services/{services}/routes[/{routes}]`: the children under their parent
        for (child, ck) in collections().chain(NESTED_NAMES) {
            if ck.foreign_keys().iter().any(|(_, p)| *p == k) {
                let listed = listed && child == kong_nested_name(ck);
                add(format!("{one}/{child}"), e, upstreams, listed, COLLECTION);
                let one_child = format!("{one}/{child}/{{{}}}", ck.plural());
                add(one_child, e, upstreams, listed, ENTITY);
            }
        }
    }
    t
}

/// The route serving `path` (percent-decoded segments) on the admin listener, or on the
/// status listener when `status`; with the path's parameters, in order.
pub(crate) fn resolve<'a>(
    status: bool,
    path: &[&'a str],
) -> Option<(&'static Route, Vec<&'a str>)> {
    ROUTES
        .iter()
        .filter(|r| if status { r.on_status } else { !r.status_only })
        .find_map(|r| r.params(path).map(|p| (r, p)))
}

/// Kong's order of `GET /endpoints`: bytewise, with `/` before every other byte, so that
/// a path's sub-paths follow it before any longer name (`/a`, `/a/z`, `/ab`).
fn kong_order(a: &str, b: &str) -> Ordering {
    let key = |c: u8| if c == b'/' { 0 } else { c };
    a.bytes().map(key).cmp(b.bytes().map(key))
}

static LISTED: LazyLock<Vec<&'static str>> = LazyLock::new(|| {
    let mut paths: Vec<&'static str> = ROUTES
        .iter()
        .filter(|r| r.listed)
        .map(|r| r.path.as_str())
        .collect();
    paths.sort_by(|a, b| kong_order(a, b));
    paths.dedup();
    paths
});

/// Every path the admin listener serves under Kong's names, as `GET /endpoints` lists them.
pub(crate) fn listed() -> &'static [&'static str] {
    &LISTED
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `path` with every parameter given the value `v`, as segments.
    fn instance<'a>(path: &'a str, v: &'a str) -> Vec<&'a str> {
        path.split('/')
            .filter(|s| !s.is_empty())
            .map(|s| if s.starts_with('{') { v } else { s })
            .collect()
    }

    #[test]
    fn every_route_serves_its_own_paths() {
        // No route is hidden behind an earlier one: each is the first match of its paths
        // (a parameter's value that is no literal of the table).
        for r in ROUTES.iter() {
            let segs = instance(&r.path, "v0");
            if r.status_only {
                assert!(resolve(false, &segs).is_none(), "{}", r.path);
                assert_eq!(resolve(true, &segs).map(|(f, _)| &f.path), Some(&r.path));
                continue;
            }
            let (found, params) = resolve(false, &segs).expect(&r.path);
            assert_eq!(found.path, r.path);
            assert!(params.iter().all(|p| *p == "v0"), "{}", r.path);
            assert_eq!(params.len(), r.path.matches('{').count(), "{}", r.path);
            if r.on_status {
                assert_eq!(resolve(true, &segs).map(|(f, _)| &f.path), Some(&r.path));
            } else {
                assert!(resolve(true, &segs).is_none(), "{}", r.path);
            }
        }
    }

    #[test]
    fn paths_are_written_as_kong_writes_them() {
        let l = listed();
        for p in [
            "/",
            "/endpoints",
            "/services/{services}/routes/{routes}",
            "/routes/{routes}/service",
            "/key-auths/{keyauth_credentials}",
            "/consumers/{consumers}/key-auth/{keyauth_credentials}",
            "/schemas/{db_entity_name}/validate",
            "/plugins/schema/{name}",
            "/tags/{tags}",
            "/upstreams/{upstreams}/targets/{targets}/{address}/unhealthy",
            "/key-sets",
            "/key-sets/{key_sets}",
            "/key-sets/{key_sets}/keys",
            "/key-sets/{key_sets}/keys/{keys}",
            "/keys",
            "/keys/{keys}",
            "/keys/{keys}/set",
        ] {
            assert!(l.contains(&p), "{p} in {l:?}");
        }
        assert!(
            l.windows(2)
                .all(|w| kong_order(w[0], w[1]) == Ordering::Less)
        );
        assert_eq!(
            l.len(),
            ROUTES.iter().filter(|r| r.listed).count(),
            "one route per path"
        );
        // the other names of collections are served, not listed
        for p in [
            "/keyauth_credentials",
            "/keyauth_credentials/{keyauth_credentials}",
            "/key_sets/{key_sets}/keys",
            "/consumers/{consumers}/key-auths",
            "/consumers/{consumers}/keyauth_credentials/{keyauth_credentials}",
        ] {
            assert!(!l.contains(&p), "{p} listed");
            assert!(
                ROUTES.iter().any(|r| r.path == p && !r.listed),
                "{p} served"
            );
        }
        // the status listener serves its own few
        let status: Vec<&str> = ROUTES
            .iter()
            .filter(|r| r.on_status)
            .map(|r| r.path.as_str())
            .collect();
        assert_eq!(
            status,
            [
                "/status",
                "/status/ready",
                "/status/dns",
                "/metrics",
                "/upstreams/{upstreams}/health",
                "/upstreams/{upstreams}/targets/all",
                "/upstreams/{upstreams}/targets",
                "/upstreams/{upstreams}/targets/{targets}",
            ]
        );
    }

    #[test]
    fn kongs_order_puts_sub_paths_first() {
        let mut v = vec!["/ab/a", "/a/z", "/ab", "/a", "/a-b", "/a/b"];
        v.sort_by(|a, b| kong_order(a, b));
        assert_eq!(v, ["/a", "/a/b", "/a/z", "/a-b", "/ab", "/ab/a"]);
    }

    /// Whether `path` is one of `template`'s.
    fn fits(template: &str, path: &str) -> bool {
        let t: Vec<&str> = template.split('/').filter(|s| !s.is_empty()).collect();
        let p: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        t.len() == p.len() && t.iter().zip(&p).all(|(t, p)| t.starts_with('{') || t == p)
    }

    #[test]
    fn literal_routes_come_first() {
        let at = |p: &str| {
            let segs: Vec<&str> = p.split('/').filter(|s| !s.is_empty()).collect();
            resolve(false, &segs).map(|(r, _)| r.endpoint)
        };
        assert_eq!(at("/plugins/enabled"), Some(Endpoint::PluginsEnabled));
        assert_eq!(
            at("/plugins/x"),
            Some(Endpoint::Entities(EntityKind::Plugin))
        );
        assert_eq!(at("/upstreams/u/targets/all"), Some(Endpoint::AllTargets));
        assert_eq!(at("/schemas/plugins/validate"), Some(Endpoint::Validate));
        assert_eq!(at("/services/s/nope"), None);
        // Kong disables the top-level targets routes; under their upstream they are served
        for p in ["/targets", "/targets/t", "/targets/t/upstream"] {
            assert_eq!(at(p), Some(Endpoint::Disabled), "{p}");
            assert!(listed().iter().any(|l| fits(l, p)), "{p} listed");
        }
        assert_eq!(
            at("/upstreams/u/targets/t"),
            Some(Endpoint::Entities(EntityKind::Upstream))
        );
        assert_eq!(at("/services/s/routes/r/x"), None);
    }

    #[test]
    fn names_map_to_kinds() {
        assert_eq!(kind_of("services"), Some(EntityKind::Service));
        assert_eq!(kind_of("key-auths"), Some(EntityKind::KeyauthCredential));
        assert_eq!(kind_of("key-auth"), None);
        assert_eq!(kind_of("key-sets"), Some(EntityKind::KeySet));
        assert_eq!(kind_of("keys"), Some(EntityKind::Key));
        assert_eq!(nested_kind_of("keys"), Some(EntityKind::Key));
        assert_eq!(
            nested_kind_of("key-auth"),
            Some(EntityKind::KeyauthCredential)
        );
        assert_eq!(kind_of("nope"), None);
    }
}
