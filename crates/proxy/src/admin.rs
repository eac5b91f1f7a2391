//! The admin API (DB-less semantics) and the status API.
//!
//! Admin listener: `GET /`, `GET /endpoints` (every admin path, as Kong lists them),
//! `GET /status`, `GET /status/ready`, `GET /metrics`,
//! `POST /config` (`check_hash`, `flatten_errors`), `GET /config`, read-only entity
//! collections and entities (`/services`, `/services/{id or name}`,
//! `/services/{id}/routes`, `/services/{id}/routes/{id}`, `/consumers/{c}/key-auth`, ... with
//! `size`/`offset`/`tags` paging; `/upstreams/{u}/health` paged too), `/plugins/enabled`, `/tags/{tag}`, the schema endpoints
//! (`/schemas/{entity}`, `/schemas/plugins/{name}`, `POST /schemas/{entity}/validate`...,
//! in [`crate::admin_schemas`]). Writes to entity
//! endpoints answer 405 with Kong's DB-less message, after Kong's checks of the path and the
//! body ([`crate::admin_writes`]). `POST /config` takes JSON, YAML, a form
//! field or a multipart part named `config`.
//!
//! Status listener: `GET /status`, `GET /status/ready`, `GET /metrics`, and the upstreams'
//! read-only routes.
//!
//! Both listeners dispatch through one route table (`admin_routes`), the one
//! `GET /endpoints` lists: a path no route matches is 404 `Not found`.
//!
//! Request bodies are read as nginx reads them for Kong: past the listener's
//! `client_max_body_size` (the admin server's; the status server's is the `http` block's),
//! or with broken chunked framing, nginx's own page (Kong's admin and status servers have no
//! `error_page`); stalled or cut off, no answer at all ([`crate::error::Unanswered`]). The handlers that
//! read a body of their own (writes) read it whole under one of a few upload permits
//! ([`read_body`]: 429 when none is free, and an overall deadline). Every handler Kong
//! attaches is wrapped in lapis's `json_params`, which reads a JSON body whatever the route
//! and fails (500) on one that decodes to a scalar ([`json_params`]); those bodies take no
//! permit and are read through a small buffer ([`read_params_body`]), so no read is ever
//! refused for uploads.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use md5::Digest;
use serde_json::{Map, Value, json};
use silverback_balancer::SetHealthError;
use silverback_config::config::YamlError;
use silverback_config::{ConfigError, EntityKind, LoadOptions};

use crate::admin_routes::{self, Endpoint, nested_kind_of};
use crate::admin_view::View;
use crate::body::ProxyBody;
use crate::gateway::{ListenerKind, Shared};
use crate::snapshot::Snapshot;

pub(crate) fn json_response(status: StatusCode, v: &Value) -> Response<ProxyBody> {
    let mut r = Response::new(ProxyBody::full(serde_json::to_vec(v).unwrap_or_default()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    r
}

pub(crate) fn message(status: StatusCode, m: &str) -> Response<ProxyBody> {
    json_response(status, &json!({ "message": m }))
}

/// Entry point of the admin and status listeners: `Err` closes the connection unanswered
/// ([`crate::error::Unanswered`]).
///
/// Kong's answers carry what Kong's admin header filter (`Kong.admin_header_filter`, the
/// status server's too) adds in `location /`, as `headers` says: `Server` and
/// `X-Kong-Admin-Latency`; and what its content handler sets before lapis runs:
/// `Access-Control-Allow-Origin`. nginx's own pages for a body it refuses in that location
/// get the header filter's headers too: a body announced past `client_max_body_size` is
/// refused before the content handler runs (no `Access-Control-Allow-Origin`), one that
/// grows past it, or breaks its chunked framing, while Kong reads it (with it).
pub(crate) async fn serve(
    sh: Arc<Shared>,
    (kind, remote, tls): (ListenerKind, HeaderValue, bool),
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, crate::error::Unanswered> {
    let start = std::time::Instant::now();
    // (nginx's `combined` line by default; Kong's admin and status servers have no
    // `realip`: the peer's address)
    let access = sh.access.get(kind).as_ref().map(|l| {
        let head_only = req.method() == http::Method::HEAD;
        let r = crate::access_log::Request {
            remote: remote.as_bytes(),
            line: crate::access_log::Line::Parsed(req.method(), req.uri(), req.version()),
            headers: Some(req.headers()),
            request_id: b"",
            tls: Some(tls),
            hostname: &sh.hostname,
        };
        (l.begin(&r), head_only)
    });
    // (nginx counts every request it reads, the admin and status servers' included)
    sh.metrics
        .requests
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    // (whether Kong's content handler ran)
    let (mut r, content) = match (&sh.settings.admin_token, kind) {
        // nginx's check of the announced length, at its `find_config` phase: before Kong's
        // content handler, in `location /` already (the status server's limit is the `http`
        // block's: none by default)
        _ if announces_too_large(&sh, kind, &req) => {
            tracing::debug!("admin or status request body announced past client_max_body_size");
            (nginx_refusal(StatusCode::PAYLOAD_TOO_LARGE), false)
        }
        (Some(token), ListenerKind::Admin)
            if !req
                .headers()
                .get("kong-admin-token")
                .is_some_and(|v| token.matches(v.as_bytes())) =>
        {
            // Kong Enterprise's answer to a request without valid RBAC credentials.
            let r = message(
                StatusCode::UNAUTHORIZED,
                "Invalid credentials. Token or User credentials required",
            );
            (r, true)
        }
        _ => (route(&sh, kind, req).await, true),
    };
    if crate::error::is_unanswered(&r) {
        return Err(crate::error::Unanswered);
    }
    let h = r.headers_mut();
    if sh.settings.headers.server {
        h.insert(header::SERVER, sh.server.clone());
    }
    // Kong's status API shares the admin API's header filter.
    if sh.settings.headers.admin_latency {
        h.insert(
            "x-kong-admin-latency",
            HeaderValue::from(start.elapsed().as_millis() as u64),
        );
    }
    if content {
        h.insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            HeaderValue::from_static("*"),
        );
    }
    if let Some((mut e, head_only)) = access {
        e.status = r.status().as_u16();
        e.finish(if head_only {
            0
        } else {
            r.body().complete_len()
        });
    }
    Ok(r)
}

/// The first value of a query argument, percent-decoded (`+` is a space, as Kong's
/// `ngx.req.get_uri_args` decodes).
fn query_param(q: Option<&str>, name: &str) -> Option<String> {
    q?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (decode_str(k, true) == name).then(|| decode_str(v, true))
    })
}

async fn route(
    sh: &Arc<Shared>,
    kind: ListenerKind,
    req: Request<Incoming>,
) -> Response<ProxyBody> {
    // Kong unescapes the path's segments (`+` stays a plus).
    let segs: Vec<String> = req
        .uri()
        .path()
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| decode_str(s, false))
        .collect();
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    let m = req.method().clone();
    // Kong's `before_filter` (lapis runs it ahead of every handler, the 404 and the 405s
    // included, on the admin and the status listeners): a `POST`, `PUT` or `PATCH` whose body
    // the admin API cannot read is a 415, with no body.
    if matches!(m, Method::POST | Method::PUT | Method::PATCH)
        && !crate::admin_schemas::readable(&req)
    {
        return crate::admin_schemas::unsupported_type();
    }
    let status_listener = kind == ListenerKind::Status;
    let Some((r, params)) = admin_routes::resolve(status_listener, &segs) else {
        return message(StatusCode::NOT_FOUND, "Not found");
    };
    // Kong's `OPTIONS` handler, which its admin API adds to every route that lacks one
    // (Kong 2.6+, `api_helpers`): 204 with the route's methods (a route Kong disables
    // answers its 404 below, as its `before` runs first). CORS preflights need it.
    if m == Method::OPTIONS && r.endpoint != Endpoint::Disabled {
        let methods = if status_listener {
            admin_routes::STATUS_METHODS
        } else {
            r.methods
        };
        let mut resp = no_content();
        let h = resp.headers_mut();
        let v = HeaderValue::from_static(methods);
        h.insert(header::ALLOW, v.clone());
        h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, v);
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("Content-Type"),
        );
        return resp;
    }
    // The status listener's routes are all read-only.
    if status_listener && m != Method::GET && m != Method::HEAD {
        return message(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed");
    }
    // The handlers that read the body themselves (lapis's `json_params` included).
    match (r.endpoint, params.as_slice(), segs.split_first()) {
        (Endpoint::Config, [], _) if m == Method::POST => return post_config(sh, req).await,
        (Endpoint::Validate, [entity], _) if m == Method::POST => {
            return crate::admin_schemas::validate(sh, entity, req).await;
        }
        (Endpoint::Entities(k), _, Some((_, rest))) if m != Method::GET && m != Method::HEAD => {
            return crate::admin_writes::write(sh, &m, k, rest, req).await;
        }
        _ => {}
    }
    let (parts, body) = req.into_parts();
    if runs_handler(r.endpoint, &m)
        && let Err(r) = json_params(sh, kind, &parts.headers, body).await
    {
        return r;
    }
    let q = parts.uri.query();
    match (r.endpoint, params.as_slice()) {
        (Endpoint::Status, []) => only_get(&m, || status(sh, q)),
        (Endpoint::Ready, []) => only_get(&m, || ready(sh)),
        (Endpoint::DnsStatus, []) => only_get(&m, || dns_status(sh)),
        // The background jobs (health checks, DNS refreshes, delayed reverts) and their runs,
        // as Kong reports its timers: one process, so worker 0 of 1.
        (Endpoint::Timers, []) => only_get(&m, || {
            json_response(
                StatusCode::OK,
                &json!({"worker": {"id": 0, "count": 1}, "stats": silverback_timers::global().stats()}),
            )
        }),
        // Kong's entity cache: entities are compiled in whole when a configuration loads and
        // nothing is cached on demand, so every probe misses and a purge has nothing to drop.
        (Endpoint::Cache, []) | (Endpoint::CacheKey, [_]) if m == Method::DELETE => no_content(),
        (Endpoint::CacheKey, [_]) => only_get(&m, || message(StatusCode::NOT_FOUND, "Not found")),
        (Endpoint::Cache, []) => message(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed"),
        (Endpoint::Metrics, []) => only_get(&m, || {
            let snap = sh.snapshot.load();
            let node_id = sh.node_id.to_string();
            let targets = snap.balancers.target_health_metrics();
            let text = sh.metrics.render(crate::metrics::Node {
                node_id: &node_id,
                version: crate::KONG_VERSION,
                config_hash: snap.hash(),
                timers: silverback_timers::global().counts(),
                target_health: &targets,
            });
            let mut r = Response::new(ProxyBody::full(text));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=UTF-8"),
            );
            r
        }),
        (Endpoint::Root, []) => only_get(&m, || root(sh)),
        (Endpoint::Endpoints, []) => only_get(&m, || {
            json_response(StatusCode::OK, &json!({ "data": admin_routes::listed() }))
        }),
        (Endpoint::Config, []) => match m {
            Method::GET => export_response(export(sh, &sh.snapshot.load())),
            _ => message(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed"),
        },
        (Endpoint::PluginsEnabled, []) => only_get(&m, || {
            let names: Vec<&str> = sh.settings.plugins.iter().map(|p| p.name).collect();
            json_response(StatusCode::OK, &json!({ "enabled_plugins": names }))
        }),
        (Endpoint::PluginConfigSchema, [name]) => {
            only_get(&m, || crate::admin_schemas::plugin_config_schema(sh, name))
        }
        (Endpoint::EntitySchema, [entity]) => {
            only_get(&m, || crate::admin_schemas::entity_schema(sh, entity))
        }
        (Endpoint::PluginSchema, [name]) => {
            only_get(&m, || crate::admin_schemas::plugin_schema(sh, name))
        }
        (Endpoint::VaultSchema, [name]) => {
            only_get(&m, || crate::admin_schemas::vault_schema(name))
        }
        (Endpoint::Validate, [_]) => message(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed"),
        (Endpoint::Tags, []) => only_get(&m, || all_tags(sh, q)),
        (Endpoint::Tagged, [tag]) => only_get(&m, || tagged(sh, tag, q)),
        (Endpoint::UpstreamHealth, [u]) => only_get(&m, || upstream_health(sh, u, q)),
        (Endpoint::AllTargets, [u]) => only_get(&m, || all_targets(sh, u, q)),
        (Endpoint::SetHealth { healthy }, [u, t]) => set_health(sh, &m, u, t, None, healthy),
        (Endpoint::SetHealth { healthy }, [u, t, a]) => set_health(sh, &m, u, t, Some(a), healthy),
        (Endpoint::LogLevel, []) => only_get(&m, || {
            let level = sh.settings.log_level.current();
            json_response(
                StatusCode::OK,
                &json!({ "message": format!("log level: {level}") }),
            )
        }),
        (Endpoint::SetLogLevel, [level]) if m == Method::PUT => set_log_level(sh, level, q),
        // (changing every node's level needs the cluster events of a database)
        (Endpoint::SetClusterLogLevel, [_]) if m == Method::PUT => message(
            StatusCode::METHOD_NOT_ALLOWED,
            "cannot change log level when not using a database",
        ),
        (Endpoint::SetLogLevel | Endpoint::SetClusterLogLevel, [_]) => {
            message(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed")
        }
        // Kong's `endpoints.disable`: whatever the method
        (Endpoint::Disabled, _) => message(StatusCode::NOT_FOUND, "Not found"),
        // (the writes went to their handler above)
        (Endpoint::Entities(k), _) => match segs.split_first() {
            Some((coll, rest)) => entities(sh, coll, k, rest, q),
            None => message(StatusCode::NOT_FOUND, "Not found"),
        },
        // A route whose parameters do not fit its endpoint (none: the table's tests and
        // the admin tests' probe of every listed path check it).
        _ => message(StatusCode::NOT_FOUND, "Not found"),
    }
}

/// Whether Kong runs a handler for `m` on a route serving `e`, among the routes whose
/// handlers read no body of their own: a method the route's handler table has. Kong wraps
/// each of them in lapis's `json_params` ([`json_params`]); lapis answers a method the table
/// lacks (405) without one, and a `HEAD` to a route without a `HEAD` handler with its
/// default answer (`respond_to`), without one either. The routes Kong disables
/// (`endpoints.disable`) run their `before`, wrapped the same way, whatever the method.
fn runs_handler(e: Endpoint, m: &Method) -> bool {
    use Endpoint as E;
    match e {
        E::Cache => m == Method::DELETE,
        E::CacheKey => m == Method::GET || m == Method::DELETE,
        E::SetHealth { .. } => m == Method::PUT,
        E::SetLogLevel | E::SetClusterLogLevel => m == Method::PUT,
        E::Disabled => true,
        // (their `POST` reads its body itself; no other method has a handler)
        E::Validate => false,
        // (`POST /config` and the entity writes read their bodies themselves)
        E::Config
        | E::Entities(_)
        | E::Root
        | E::Endpoints
        | E::Status
        | E::Ready
        | E::DnsStatus
        | E::Timers
        | E::Metrics
        | E::PluginsEnabled
        | E::PluginConfigSchema
        | E::EntitySchema
        | E::PluginSchema
        | E::VaultSchema
        | E::Tags
        | E::Tagged
        | E::UpstreamHealth
        | E::AllTargets
        | E::LogLevel => m == Method::GET,
    }
}

/// lapis's `json_params` (`lapis/application.lua`), which Kong wraps around every handler it
/// attaches (`parse_params`, `kong/api/api_helpers.lua`), for a handler that reads no body
/// of its own: a body whose `Content-Type` contains `application/json`, in any case, is read
/// whatever the method ([`read_params_body`]: its refusals apply), and one that decodes to
/// anything but an object or an array (`1`, `"x"`, `true`, `false`, `null`) fails lapis's
/// `add_params` (`pairs` of a non-table, a Lua error): Kong's 500 `An unexpected error
/// occurred` ([`crate::admin_schemas::json_scalar`]), before the handler. Any other body is
/// left unread.
async fn json_params(
    sh: &Shared,
    kind: ListenerKind,
    headers: &http::HeaderMap,
    body: Incoming,
) -> Result<(), Response<ProxyBody>> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let json = ct
        .as_deref()
        .is_some_and(|t| t.to_ascii_lowercase().contains("application/json"));
    if !json {
        return Ok(());
    }
    if let Some(bytes) = read_params_body(sh, kind, body).await?
        && crate::admin_schemas::json_scalar(ct.as_deref(), &bytes)
    {
        return Err(crate::admin_schemas::unexpected());
    }
    Ok(())
}

/// The most of a JSON body read for lapis's `json_params` on the admin listener that is kept
/// to be decoded ([`read_params_body`]). Kong's admin server keeps up to its
/// `client_body_buffer_size` (`nginx_admin_client_body_buffer_size`, 10m) in memory, so
/// lapis decodes any body within the limit; here a longer one that may still be a scalar
/// (a JSON string or number that long) is read to its end but not decoded, and the handler
/// answers instead of Kong's 500 (a deliberate deviation: such reads hold no upload permit,
/// so what they keep stays small).
const ADMIN_PARAMS_KEPT: usize = 64 * 1024;

/// The status server's `client_body_buffer_size`: Kong's `nginx_http_client_body_buffer_size`
/// (8k), from the `http` block, which the status server does not change. nginx writes a
/// longer body to a temporary file, where `ngx.req.get_body_data()` finds nothing, so lapis
/// decodes nothing: past this size, a status request's JSON body is read to its end and
/// dropped ([`read_params_body`]).
const STATUS_BODY_BUFFER: usize = 8 * 1024;

/// The body limit nginx holds a listener's requests to: the admin server's
/// `client_max_body_size` (`admin_client_max_body_size`), and for the status server the
/// `http` block's, which it does not change (`client_max_body_size`, Kong's
/// `nginx_http_client_max_body_size`, none by default). 0: none.
fn body_limit(sh: &Shared, kind: ListenerKind) -> u64 {
    match kind {
        ListenerKind::Status => sh.settings.client_max_body_size,
        _ => sh.settings.admin_client_max_body_size,
    }
}

/// A JSON body lapis's `json_params` reads for a handler that reads none of its own (every
/// read, on either listener, among them), as nginx reads it for Kong
/// (`ngx.req.read_body`): to its end, held to the listener's limit ([`body_limit`]) and to
/// `client_body_timeout` between its parts, its refusals those of [`read_body`] (413 page,
/// 400 page, no answer). It takes no upload permit: it keeps no more than a small buffer,
/// and a body already at its end (none, or `Content-Length: 0`) is not read at all, so no
/// read waits on uploads or is refused for them (Kong never answers a read with 429).
///
/// `Some(body)` when the body may decode to a scalar and was kept whole: up to
/// [`STATUS_BODY_BUFFER`] on the status listener (a longer body nginx keeps in a file, and
/// lapis decodes nothing), [`ADMIN_PARAMS_KEPT`] on the admin listener (a deviation, see
/// there); `None` when lapis would decode nothing that fails, or nothing at all: a body
/// whose first byte after whitespace opens an object or an array is no scalar (it decodes
/// to a table, or not at all), and is dropped as it arrives.
async fn read_params_body(
    sh: &Shared,
    kind: ListenerKind,
    body: Incoming,
) -> Result<Option<Bytes>, Response<ProxyBody>> {
    if http_body::Body::is_end_stream(&body) {
        return Ok(Some(Bytes::new()));
    }
    let keep = match kind {
        ListenerKind::Status => STATUS_BODY_BUFFER,
        _ => ADMIN_PARAMS_KEPT,
    };
    let mut body = crate::upstream::ClientBody::new(
        body,
        body_limit(sh, kind),
        sh.settings.client_body_timeout,
        None,
    );
    let watch = body.watch();
    let mut kept = Some(bytes::BytesMut::new());
    // (whether the first byte that is not JSON whitespace was seen)
    let mut started = false;
    while let Some(frame) = body.frame().await {
        let frame = match frame {
            Ok(f) => f,
            Err(e) => return Err(body_failure(&watch, &*e)),
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let Some(k) = kept.as_mut() else {
            continue;
        };
        if k.len() + data.len() > keep {
            kept = None;
            continue;
        }
        if !started
            && let Some(&first) = data
                .iter()
                .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
        {
            started = true;
            if first == b'{' || first == b'[' {
                kept = None;
                continue;
            }
        }
        k.extend_from_slice(&data);
    }
    Ok(kept.map(bytes::BytesMut::freeze))
}

/// `PUT /debug/node/log-level/{level}[?timeout=N]`: Kong's answers (200 `log level changed`
/// or `log level is already X`; 400 for an unknown level or a negative timeout).
fn set_log_level(sh: &Shared, level: &str, q: Option<&str>) -> Response<ProxyBody> {
    use crate::log_level::{Set, SetError, filter_of, parse_timeout};
    // (Kong checks the name, then the timeout)
    if filter_of(level).is_none() {
        let e = SetError::Unknown(level.to_string());
        return message(StatusCode::BAD_REQUEST, &e.to_string());
    }
    let timeout = query_param(q, "timeout");
    let timeout = match parse_timeout(timeout.as_deref()) {
        Ok(t) => t,
        Err(why) => return message(StatusCode::BAD_REQUEST, why),
    };
    match sh.settings.log_level.set(level, timeout) {
        Ok(Set::Changed) => message(StatusCode::OK, "log level changed"),
        Ok(Set::Already) => message(StatusCode::OK, &format!("log level is already {level}")),
        Err(e @ SetError::Unknown(_)) => message(StatusCode::BAD_REQUEST, &e.to_string()),
        // (as Kong answers where it cannot change the level)
        Err(e @ SetError::Fixed) => message(StatusCode::METHOD_NOT_ALLOWED, &e.to_string()),
        Err(e @ SetError::Failed(_)) => message(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

/// The balancer of an upstream given by name or id.
fn balancer_of(snap: &Snapshot, key: &str) -> Option<Arc<silverback_balancer::Balancer>> {
    let b = snap.balancers.get(key).or_else(|| {
        let u = snap
            .config
            .upstreams
            .iter()
            .find(|u| u.id.to_string() == key)?;
        snap.balancers.get(&u.name)
    })?;
    Some(b.clone())
}

/// `GET /upstreams/{u}/health`: the targets with a non-zero weight and their health, paged
/// as Kong pages it (`kong/api/routes/upstreams.lua`: `size`, `offset`, `next` to
/// `/upstreams/{u}/health?offset=...`, with the node's `node_id` beside them), or, with
/// `?balancer_health=1` (exactly `1`), the balancer's health, unpaged. 404 for an unknown
/// upstream first, then the page's errors, as for the other collections.
fn upstream_health(sh: &Shared, u: &str, q: Option<&str>) -> Response<ProxyBody> {
    let snap = sh.snapshot.load();
    let Some(b) = balancer_of(&snap, u) else {
        return message(StatusCode::NOT_FOUND, "Not found");
    };
    let h = b.health();
    let node_id = Value::from(sh.node_id.to_string());
    // (Kong: `tostring(self.params.balancer_health) == "1"`, the literal only)
    if query_param(q, "balancer_health").as_deref() == Some("1") {
        return json_response(
            StatusCode::OK,
            &json!({ "data": h.balancer, "next": null, "node_id": node_id }),
        );
    }
    let items: Vec<Value> = h
        .targets
        .iter()
        .filter(|t| t.weight > 0)
        .filter_map(|t| serde_json::to_value(t).ok())
        .collect();
    let base = path_of("upstreams", &[u, "health"]);
    match paged(items, (&base, Next::OffsetOnly), q, &Value::clone) {
        Ok(mut body) => {
            body.insert("node_id".into(), node_id);
            json_response(StatusCode::OK, &Value::Object(body))
        }
        Err(refused) => json_response(StatusCode::BAD_REQUEST, &refused),
    }
}

/// `GET /upstreams/{u}/targets/all`: every target entity of the upstream, weight 0
/// included.
fn all_targets(sh: &Shared, u: &str, q: Option<&str>) -> Response<ProxyBody> {
    let snap = sh.snapshot.load();
    let Some(up) = snap
        .config
        .upstreams
        .iter()
        .find(|x| x.name == u || x.id.to_string() == u)
    else {
        return message(StatusCode::NOT_FOUND, "Not found");
    };
    let id = up.id.to_string();
    let items: Vec<Value> = flat_list(&snap, EntityKind::Target)
        .into_iter()
        .filter(|t| {
            t.get("upstream")
                .and_then(|r| r.get("id"))
                .and_then(Value::as_str)
                == Some(&id)
        })
        .collect();
    let v = View::of(sh, &snap, EntityKind::Target);
    let base = path_of("upstreams", &[u, "targets", "all"]);
    page(items, (&base, Next::OffsetOnly), q, &|e| v.show(e))
}

/// `PUT /upstreams/{u}/targets/{t}[/{address}]/healthy|unhealthy` (Kong 3.x; `POST` in
/// Kong 2.x): Kong allows these in
/// DB-less mode (they change health state, not configuration). 204; 404 `Not found` for an
/// unknown upstream or target, then 400 for an upstream without health checks. An address
/// is `ip[:port]` (port 8000 when left out, as Kong reads it); one that is not the target's
/// changes nothing and still gets 204, as in Kong.
fn set_health(
    sh: &Shared,
    m: &Method,
    u: &str,
    t: &str,
    address: Option<&str>,
    healthy: bool,
) -> Response<ProxyBody> {
    if m != Method::PUT {
        return message(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed");
    }
    let snap = sh.snapshot.load();
    let Some(b) = balancer_of(&snap, u) else {
        return message(StatusCode::NOT_FOUND, "Not found");
    };
    match b.set_health(t, address, healthy) {
        Ok(_) => no_content(),
        Err(e @ SetHealthError::NoHealthchecker { .. }) => {
            message(StatusCode::BAD_REQUEST, &e.to_string())
        }
        Err(SetHealthError::TargetNotFound { .. }) => message(StatusCode::NOT_FOUND, "Not found"),
    }
}

pub(crate) fn only_get(m: &Method, f: impl FnOnce() -> Response<ProxyBody>) -> Response<ProxyBody> {
    if m == Method::GET || m == Method::HEAD {
        f()
    } else {
        message(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed")
    }
}

/// Kong's `is_valid_uuid`: the hyphenated form only (any case), not the other forms the
/// `uuid` crate reads (32 hex digits, braces, `urn:uuid:`).
pub(crate) fn is_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, &c)| match i {
            8 | 13 | 18 | 23 => c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

pub(crate) fn no_content() -> Response<ProxyBody> {
    let mut r = Response::new(ProxyBody::empty());
    *r.status_mut() = StatusCode::NO_CONTENT;
    r
}

pub(crate) fn flat_list(snap: &Snapshot, k: EntityKind) -> Vec<Value> {
    flat_items(snap, k).to_vec()
}

/// The names of each certificate's SNIs (by certificate id), sorted.
fn sni_names(snap: &Snapshot) -> std::collections::HashMap<String, Vec<String>> {
    let mut names: std::collections::HashMap<String, Vec<String>> = Default::default();
    for sni in flat_items(snap, EntityKind::Sni) {
        let cert = sni
            .get("certificate")
            .and_then(|c| c.get("id"))
            .and_then(Value::as_str);
        if let (Some(cert), Some(name)) = (cert, sni.get("name").and_then(Value::as_str)) {
            names
                .entry(cert.to_string())
                .or_default()
                .push(name.to_string());
        }
    }
    for list in names.values_mut() {
        list.sort();
    }
    names
}

/// The entities of kind `k` in the snapshot's flattened configuration, borrowed (for a
/// lookup: nothing is copied but what is found).
pub(crate) fn flat_items(snap: &Snapshot, k: EntityKind) -> &[Value] {
    match snap.flat().get(k.plural()) {
        Some(Value::Array(a)) => a,
        _ => &[],
    }
}

/// The ACL of `group` among `acls` (one consumer's: Kong looks it up by its cache key,
/// the consumer and the group).
pub(crate) fn find_acl<'a>(acls: &'a [Value], group: &str) -> Option<&'a Value> {
    acls.iter()
        .find(|a| a.get("group").and_then(Value::as_str) == Some(group))
}

pub(crate) fn find_entity<'a>(list: &'a [Value], k: EntityKind, key: &str) -> Option<&'a Value> {
    list.iter()
        .find(|e| e.get("id").and_then(Value::as_str) == Some(key))
        .or_else(|| {
            let f = k.endpoint_key()?;
            list.iter()
                .find(|e| e.get(f).and_then(Value::as_str) == Some(key))
        })
}

/// How a page's `next` link is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    /// A top-level collection (Kong's `get_collection_endpoint` without a parent), `/tags`
    /// included: the offset, then the client's `tags` and `size` when it gave them.
    Collection,
    /// Anything else (nested collections, `/tags/{tag}`, targets, an upstream's health): the
    /// offset alone.
    OffsetOnly,
}

/// One page of `items` (`size`, `offset`), each shown through `show`; `next` says how the
/// link to the next page is written from `base`.
fn page(
    items: Vec<Value>,
    base: (&str, Next),
    q: Option<&str>,
    show: &dyn Fn(&Value) -> Value,
) -> Response<ProxyBody> {
    match paged(items, base, q, show) {
        Ok(body) => json_response(StatusCode::OK, &Value::Object(body)),
        Err(refused) => json_response(StatusCode::BAD_REQUEST, &refused),
    }
}

/// The body of [`page`] (`data`, `next`, and `offset` when there is more), for an endpoint
/// that adds to it; `Err` is the body of the 400 answer to a bad `size` or `offset`.
fn paged(
    items: Vec<Value>,
    (base, next): (&str, Next),
    q: Option<&str>,
    show: &dyn Fn(&Value) -> Value,
) -> Result<Map<String, Value>, Value> {
    // Kong's errors (db/errors.lua): code 9 for the size (`tonumber` first, then the DAO's
    // range check), code 7 for the offset, neither with `fields`.
    let invalid_size = |m: &str| json!({"code": 9, "name": "invalid size", "message": m});
    let size = match query_param(q, "size") {
        None => 100,
        Some(s) => match lua_number(&s) {
            None => return Err(invalid_size("size must be a number")),
            Some(n) if n.fract() == 0.0 && (1.0..=1000.0).contains(&n) => n as usize,
            Some(_) => return Err(invalid_size("size must be an integer between 1 and 1000")),
        },
    };
    let offset = match query_param(q, "offset") {
        None => 0,
        Some(o) => match o.parse::<usize>() {
            Ok(n) => n,
            Err(_) => {
                return Err(json!({"code": 7, "name": "invalid offset",
                        "message": format!("'{o}' is not a valid offset: bad base64 encoding")}));
            }
        },
    };
    let total = items.len();
    let end = offset.saturating_add(size).min(total);
    let more = end < total;
    let data: Vec<Value> = items.iter().skip(offset).take(size).map(show).collect();
    let mut body = Map::new();
    body.insert("data".into(), Value::Array(data));
    if more {
        let mut link = format!("{base}?offset={end}");
        if next == Next::Collection {
            // Kong carries the client's filter and page size on (`&tags=<escaped>`, then
            // `&size=` as given)
            if let Some(t) = query_param(q, "tags") {
                link.push_str("&tags=");
                link.push_str(&escape_uri(&t));
            }
            if let Some(n) = query_param(q, "size") {
                link.push_str("&size=");
                link.push_str(&n);
            }
        }
        body.insert("next".into(), Value::from(link));
        body.insert("offset".into(), Value::from(end.to_string()));
    } else {
        body.insert("next".into(), Value::Null);
    }
    Ok(body)
}

/// A number as Lua's `tonumber` reads a decimal string (no `inf`/`nan` words).
pub(crate) fn lua_number(s: &str) -> Option<f64> {
    let s = s.trim();
    if s.bytes()
        .any(|b| b.is_ascii_alphabetic() && !matches!(b, b'e' | b'E'))
    {
        return None;
    }
    s.parse().ok()
}

/// `ngx.escape_uri`: every byte but the unreserved characters (`A-Za-z0-9-._~`)
/// percent-encoded, with uppercase hex digits.
fn escape_uri(s: &str) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// The path of an endpoint given by its (decoded) segments, escaped again: the base of a
/// page's `next`.
fn path_of(first: &str, rest: &[&str]) -> String {
    std::iter::once(first)
        .chain(rest.iter().copied())
        .fold(String::new(), |a, s| a + "/" + &escape_uri(s))
}

fn entities(
    sh: &Shared,
    coll: &str,
    k: EntityKind,
    rest: &[&str],
    q: Option<&str>,
) -> Response<ProxyBody> {
    let snap = sh.snapshot.load();
    let list = flat_list(&snap, k);
    // entities as Kong shows them (every field, defaults and nulls, timestamps)
    let view = |k| View::of(sh, &snap, k);
    let one = |k, e: &Value| json_response(StatusCode::OK, &view(k).show(e));
    // (a key that matched nothing: Kong's 400 for a key it cannot take, else 404)
    let missing = |k, key: &str| {
        crate::admin_writes::key_refusal(sh, k, key)
            .unwrap_or_else(|| message(StatusCode::NOT_FOUND, "Not found"))
    };
    // A certificate is also addressed by the name of one of its SNIs, as Kong's
    // `kong/api/routes/certificates.lua` resolves it first (`SNI not found` when none has it)
    // on `/certificates/{c}` and `/certificates/{c}/snis` (a page's `next` link then names
    // the certificate by id, as Kong's rewritten parameter does).
    let sni_cert;
    let rest: &[&str] = match rest {
        [id, more @ ..] if k == EntityKind::Certificate && !is_uuid(id) && more.len() <= 1 => {
            if let Some(r) = crate::admin_writes::key_refusal(sh, k, id) {
                return r;
            }
            let cert = flat_items(&snap, EntityKind::Sni)
                .iter()
                .find(|e| e.get("name").and_then(Value::as_str) == Some(*id))
                .and_then(|e| e.get("certificate")?.get("id")?.as_str());
            let Some(cert) = cert else {
                return message(StatusCode::NOT_FOUND, "SNI not found");
            };
            sni_cert = std::iter::once(cert)
                .chain(more.iter().copied())
                .collect::<Vec<_>>();
            &sni_cert
        }
        // (deeper, Kong's generated route looks the certificate up by id alone)
        [id, _, _] if k == EntityKind::Certificate && !is_uuid(id) => {
            return crate::admin_writes::invalid_primary_key();
        }
        _ => rest,
    };
    let base = path_of(coll, rest);
    // A certificate, listed or read by itself, carries the names of its SNIs, sorted, as
    // Kong's certificates DAO adds them in `page` and `select_with_name_list` (not where
    // another entity's reference is followed, `/snis/{s}/certificate`, a plain `select`).
    let names = (k == EntityKind::Certificate).then(|| sni_names(&snap));
    let with_snis = |mut shown: Value| {
        if let (Some(names), Value::Object(m)) = (&names, &mut shown) {
            let id = m.get("id").and_then(Value::as_str).unwrap_or("");
            let list = names.get(id).cloned().unwrap_or_default();
            m.insert("snis".to_string(), Value::from(list));
        }
        shown
    };
    match rest {
        [] => {
            if k == EntityKind::Consumer
                && let Some(r) = consumers_by_custom_id(q, &list, &view(k))
            {
                return r;
            }
            let mut items = list;
            match TagFilter::of(q) {
                Ok(Some(f)) => items.retain(|e| f.matches(e)),
                Ok(None) => {}
                Err(why) => return invalid_tags(why),
            }
            let v = view(k);
            // (Kong links the next page under the collection's own name)
            let base = format!("/{}", admin_routes::kong_name(k));
            page(items, (&base, Next::Collection), q, &|e| {
                with_snis(v.show(e))
            })
        }
        [id] => match find_entity(&list, k, id) {
            Some(e) => json_response(StatusCode::OK, &with_snis(view(k).show(e))),
            None => missing(k, id),
        },
        // One child under its parent (`/services/{s}/routes/{r}`,
        // `/upstreams/{u}/targets/{t}`, `/consumers/{c}/key-auth/{k}`): 404 when it belongs to
        // another parent.
        [id, child, cid] => {
            let Some(parent) = find_entity(&list, k, id) else {
                return missing(k, id);
            };
            let Some((ck, items)) = children(&snap, k, parent, child) else {
                return message(StatusCode::NOT_FOUND, "Not found");
            };
            // (an ACL under its consumer also by its group: `kong/plugins/acl/api.lua`)
            let acl_group = ck == EntityKind::Acl && !is_uuid(cid);
            let found = if acl_group {
                find_acl(&items, cid)
            } else {
                find_entity(&items, ck, cid)
            };
            match found {
                Some(e) => one(ck, e),
                // (a target under its upstream is looked up by its text, unchecked:
                // `kong/api/routes/upstreams.lua`)
                None if acl_group || ck == EntityKind::Target => {
                    message(StatusCode::NOT_FOUND, "Not found")
                }
                None => missing(ck, cid),
            }
        }
        [id, child] => {
            let Some(parent) = find_entity(&list, k, id) else {
                return missing(k, id);
            };
            // The parent reference of a child (`/routes/{r}/service`), or a child collection
            // (`/services/{s}/routes`).
            if let Some((fk, pk)) = k.foreign_keys().iter().find(|(f, _)| *f == *child) {
                let Some(rid) = parent
                    .get(*fk)
                    .and_then(|r| r.get("id"))
                    .and_then(Value::as_str)
                else {
                    return message(StatusCode::NOT_FOUND, "Not found");
                };
                return match find_entity(flat_items(&snap, *pk), *pk, rid) {
                    Some(e) => one(*pk, e),
                    None => message(StatusCode::NOT_FOUND, "Not found"),
                };
            }
            match children(&snap, k, parent, child) {
                Some((ck, mut items)) => {
                    match TagFilter::of(q) {
                        Ok(Some(f)) => items.retain(|c| f.matches(c)),
                        Ok(None) => {}
                        Err(why) => return invalid_tags(why),
                    }
                    let v = view(ck);
                    page(items, (&base, Next::OffsetOnly), q, &|e| v.show(e))
                }
                None => message(StatusCode::NOT_FOUND, "Not found"),
            }
        }
        _ => message(StatusCode::NOT_FOUND, "Not found"),
    }
}

/// `GET /consumers?custom_id=x` (Kong's `routes/consumers.lua`): the consumer with that
/// `custom_id`, if any, as a one-page list (no paging, no tags filter), or 400 when the
/// argument is empty, has no value or is given twice. `None` without the argument.
fn consumers_by_custom_id(
    q: Option<&str>,
    consumers: &[Value],
    view: &View<'_>,
) -> Option<Response<ProxyBody>> {
    let values: Vec<String> = q?
        .split('&')
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (decode_str(k, true) == "custom_id").then(|| decode_str(v, true))
        })
        .collect();
    let id = match values.as_slice() {
        [] => return None,
        // (Kong: not a string, as a repeated or value-less argument is, or an empty one)
        [id] if !id.is_empty() => id,
        _ => {
            return Some(message(
                StatusCode::BAD_REQUEST,
                "custom_id must be an unempty string",
            ));
        }
    };
    let found: Vec<Value> = consumers
        .iter()
        .filter(|c| c.get("custom_id").and_then(Value::as_str) == Some(id.as_str()))
        .take(1)
        .map(|c| view.show(c))
        .collect();
    Some(json_response(
        StatusCode::OK,
        &json!({ "data": found, "next": null }),
    ))
}

/// The entities of the child collection `child` that reference `parent` (of kind `k`).
pub(crate) fn children(
    snap: &Snapshot,
    k: EntityKind,
    parent: &Value,
    child: &str,
) -> Option<(EntityKind, Vec<Value>)> {
    let ck = nested_kind_of(child)?;
    let (fk, _) = ck.foreign_keys().iter().find(|(_, p)| *p == k)?;
    let pid = parent.get("id").and_then(Value::as_str)?;
    let items = flat_items(snap, ck)
        .iter()
        .filter(|c| c.get(*fk).and_then(|r| r.get("id")).and_then(Value::as_str) == Some(pid))
        .cloned()
        .collect();
    Some((ck, items))
}

/// A `?tags=` filter as Kong reads it (`kong/api/endpoints.lua`, then the DAO's option
/// checks): `a,b,c` asks for all of the tags, `a/b/c` for any; a tag is one or more bytes
/// of printable ASCII other than `,` and `/`, or of UTF-8 above it; at most 5 tags.
#[derive(Debug)]
struct TagFilter {
    tags: Vec<String>,
    all: bool,
}

impl TagFilter {
    /// The filter of a query, if it has `tags`; otherwise why Kong refuses it
    /// ([`invalid_tags`]).
    fn of(q: Option<&str>) -> Result<Option<TagFilter>, &'static str> {
        let Some(t) = query_param(q, "tags") else {
            return Ok(None);
        };
        let tag_byte = |b: u8| matches!(b, 0x20..=0x2B | 0x2D | 0x2E | 0x30..=0x7E | 0x80..=0xF4);
        // every separator-delimited piece non-empty (a trailing separator is allowed, as
        // Kong's pattern allows it), and only tag bytes besides the one separator
        let fits = |sep: u8| {
            let body = t.strip_suffix(char::from(sep)).unwrap_or(&t);
            !body.is_empty()
                && body
                    .split(char::from(sep))
                    .all(|p| !p.is_empty() && p.bytes().all(tag_byte))
        };
        let (all, sep) = if fits(b',') {
            (true, ',')
        } else if fits(b'/') {
            (false, '/')
        } else {
            return Err("invalid filter syntax");
        };
        let tags: Vec<String> = t
            .strip_suffix(sep)
            .unwrap_or(&t)
            .split(sep)
            .map(str::to_string)
            .collect();
        if tags.len() > 5 {
            return Err("cannot query more than 5 tags");
        }
        Ok(Some(TagFilter { tags, all }))
    }

    fn matches(&self, e: &Value) -> bool {
        let has = |t: &String| has_tag(e, t);
        if self.all {
            self.tags.iter().all(has)
        } else {
            self.tags.iter().any(has)
        }
    }
}

/// Kong's `invalid options` error for the `tags` option.
fn invalid_tags(why: &str) -> Response<ProxyBody> {
    json_response(
        StatusCode::BAD_REQUEST,
        &json!({
            "code": 11,
            "name": "invalid options",
            "message": format!("invalid option (tags: {why})"),
            // (Kong's `new_err_t` names them `options` for this code)
            "options": {"tags": why},
        }),
    )
}

/// Whether an entity carries `tag` (one tag: `/tags/{tag}` takes its segment whole).
fn has_tag(e: &Value, tag: &str) -> bool {
    e.get("tags")
        .and_then(Value::as_array)
        .is_some_and(|a| a.iter().any(|v| v.as_str() == Some(tag)))
}

fn tagged(sh: &Shared, tag: &str, q: Option<&str>) -> Response<ProxyBody> {
    let snap = sh.snapshot.load();
    let mut items = vec![];
    for k in EntityKind::ALL {
        for e in flat_list(&snap, k) {
            if has_tag(&e, tag)
                && let Some(id) = e.get("id")
            {
                items.push(json!({"entity_name": k.plural(), "entity_id": id, "tag": tag}));
            }
        }
    }
    page(
        items,
        (&path_of("tags", &[tag]), Next::OffsetOnly),
        q,
        &Value::clone,
    )
}

/// `GET /config`: the running configuration as Kong exports it (`_transform: false`, every
/// entity with all its fields as the entity endpoints show them, `null`s written out, and
/// foreign keys as plain ids).
fn export(sh: &Shared, snap: &Snapshot) -> Result<String, YamlError> {
    let mut out = Map::new();
    out.insert("_format_version".into(), Value::from("3.0"));
    out.insert("_transform".into(), Value::Bool(false));
    if let Value::Object(flat) = snap.flat() {
        for (key, v) in flat {
            if key.starts_with('_') {
                continue;
            }
            let (Some(k), Value::Array(items)) = (EntityKind::from_plural(key), v) else {
                out.insert(key.clone(), v.clone());
                continue;
            };
            let view = View::of(sh, snap, k);
            let rows = items.iter().map(|e| {
                let mut e = view.show(e);
                if let Value::Object(m) = &mut e {
                    for (fk, _) in k.foreign_keys() {
                        if let Some(id) = m.get(*fk).and_then(|r| r.get("id")).cloned() {
                            m.insert((*fk).to_string(), id);
                        }
                    }
                }
                e
            });
            out.insert(key.clone(), Value::Array(rows.collect()));
        }
    }
    silverback_config::Config::yaml_of(&Value::Object(out))
}

/// The answer to `GET /config`: 200 `{"config": "<YAML>"}`, or, when the export fails,
/// Kong's 500 (`kong/api/routes/config.lua` logs the error and answers
/// `An unexpected error occurred`), never an empty document.
fn export_response(yaml: Result<String, YamlError>) -> Response<ProxyBody> {
    match yaml {
        Ok(y) => json_response(StatusCode::OK, &json!({ "config": y })),
        Err(e) => {
            tracing::error!(error = %e, "failed exporting the configuration");
            message(
                StatusCode::INTERNAL_SERVER_ERROR,
                "An unexpected error occurred",
            )
        }
    }
}

/// `GET /tags`: one `{entity_name, entity_id, tag}` per tag of every entity, paged.
fn all_tags(sh: &Shared, q: Option<&str>) -> Response<ProxyBody> {
    let snap = sh.snapshot.load();
    let mut items = vec![];
    for k in EntityKind::ALL {
        for e in flat_list(&snap, k) {
            let (Some(id), Some(tags)) = (e.get("id"), e.get("tags").and_then(Value::as_array))
            else {
                continue;
            };
            for t in tags {
                items.push(json!({"entity_name": k.plural(), "entity_id": id, "tag": t}));
            }
        }
    }
    page(items, ("/tags", Next::Collection), q, &Value::clone)
}

fn root(sh: &Shared) -> Response<ProxyBody> {
    let s = &sh.settings;
    let (running, pending) = silverback_timers::global().counts();
    let mut available = Map::new();
    for p in s.plugins.iter() {
        available.insert(
            p.name.into(),
            json!({"version": p.version, "priority": p.priority}),
        );
    }
    let snap = sh.snapshot.load();
    let mut enabled: Vec<&str> = snap
        .config
        .plugins
        .iter()
        .map(|p| p.name.as_str())
        .collect();
    enabled.sort_unstable();
    enabled.dedup();
    let listeners = sh.listeners.lock().map(|l| l.clone()).unwrap_or_default();
    let describe = |kind: ListenerKind| -> Vec<Value> {
        listeners
            .iter()
            .filter(|l| l.kind == kind)
            .map(|l| listener_json(l.addr, &l.listen))
            .collect()
    };
    let strs = |v: &[crate::Listen]| v.iter().map(ToString::to_string).collect::<Vec<_>>();
    let body = json!({
        "tagline": "Welcome to kong",
        "version": crate::KONG_VERSION,
        "edition": "community",
        "hostname": sh.hostname,
        "node_id": sh.node_id.to_string(),
        "timers": {"running": running, "pending": pending},
        "plugins": {"available_on_server": available, "enabled_in_cluster": enabled},
        "lua_version": "silverback",
        "pids": {"master": std::process::id(), "workers": [std::process::id()]},
        "configuration": {
            "database": "off",
            "role": "traditional",
            "router_flavor": s.router_flavor.as_str(),
            "proxy_listen": strs(&s.proxy_listen),
            "admin_listen": strs(&s.admin_listen),
            "status_listen": strs(&s.status_listen),
            "proxy_listeners": describe(ListenerKind::Proxy),
            "admin_listeners": describe(ListenerKind::Admin),
            "status_listeners": describe(ListenerKind::Status),
            "trusted_ips": s.trusted_ips.iter().map(|c| format!("{}/{}", c.addr, c.prefix)).collect::<Vec<_>>(),
            "real_ip_header": s.real_ip_header,
            "real_ip_recursive": if s.real_ip_recursive { "on" } else { "off" },
            "plugins": s.plugins.iter().map(|p| p.name).collect::<Vec<_>>(),
            "headers": s.headers.tokens.as_ref(),
            "enabled_headers": s.headers.enabled().iter().map(|(n, on)| (n.to_string(), serde_json::Value::Bool(*on))).collect::<serde_json::Map<_, _>>(),
            "error_default_type": s.error_default_type.content_type().and_then(|t| t.split(';').next()),
            "headers_upstream": s.headers_upstream.tokens.as_ref(),
            "enabled_headers_upstream": {"X-Kong-Request-Id": s.headers_upstream.request_id},
            "upstream_keepalive_pool_size": s.upstream_keepalive_pool_size,
            "upstream_keepalive_max_requests": s.upstream_keepalive_max_requests,
            "upstream_keepalive_idle_timeout": s.upstream_keepalive_idle_timeout.as_secs(),
            "nginx_worker_processes": s.worker_threads.map(|n| n.to_string()).unwrap_or_else(|| "auto".into()),
        },
    });
    json_response(StatusCode::OK, &body)
}

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|p| p.parse::<u64>().ok())
        })
        .map(|pages| pages * 4096)
        .unwrap_or(0)
}

/// How `GET /status` reports memory figures (`?unit=` and `?scale=`, as Kong's
/// `kong.node.get_memory_stats` and `utils.bytes_to_str` read them).
#[derive(Debug, Clone, Copy, PartialEq)]
enum MemoryUnit {
    /// `b`/`B`: whole bytes, as JSON numbers.
    Bytes,
    /// An empty `unit`: whole bytes, as strings (Kong's `%d`).
    BytesText,
    /// `k`, `m` or `g` (either case): the amount in KiB, MiB or GiB with `scale` decimals
    /// and the unit's suffix.
    Scaled {
        /// 2^10, 2^20 or 2^30.
        divisor: f64,
        /// `KiB`, `MiB`, `GiB`.
        suffix: &'static str,
        /// Digits after the decimal point.
        scale: usize,
    },
}

impl MemoryUnit {
    /// The unit and scale of a `GET /status` query (unit `m`, scale 2 by default; a scale
    /// that is no number counts as left out, as Lua's `tonumber` gives nothing), or Kong's
    /// message for a bad one.
    fn of(q: Option<&str>) -> Result<MemoryUnit, String> {
        let unit = query_param(q, "unit").unwrap_or_else(|| "m".into());
        if unit.is_empty() {
            return Ok(MemoryUnit::BytesText);
        }
        if unit.eq_ignore_ascii_case("b") {
            return Ok(MemoryUnit::Bytes);
        }
        let scale = query_param(q, "scale")
            .and_then(|s| lua_number(&s))
            .unwrap_or(2.0);
        if scale < 0.0 {
            return Err("scale must be equal or greater than 0".into());
        }
        let (divisor, suffix) = match unit.to_ascii_lowercase().as_str() {
            "k" => (1024.0, "KiB"),
            "m" => (1048576.0, "MiB"),
            "g" => (1073741824.0, "GiB"),
            _ => {
                return Err(format!(
                    "invalid unit '{unit}' (expected 'k/K', 'm/M', or 'g/G')"
                ));
            }
        };
        // Lua's `string.format` takes at most two digits of precision (`%.99f`); a larger
        // one fails there, so the client cannot ask for megabytes of zeros.
        if scale >= 100.0 {
            return Err(format!("invalid option '%.{scale}f' to 'format'"));
        }
        Ok(MemoryUnit::Scaled {
            divisor,
            suffix,
            scale: scale.trunc() as usize,
        })
    }

    /// An amount of memory in this unit.
    fn show(self, bytes: u64) -> Value {
        match self {
            MemoryUnit::Bytes => Value::from(bytes),
            MemoryUnit::BytesText => Value::from(bytes.to_string()),
            MemoryUnit::Scaled {
                divisor,
                suffix,
                scale,
            } => Value::from(format!("{:.scale$} {suffix}", bytes as f64 / divisor)),
        }
    }
}

/// `GET /status`: the server's counters, the memory figures (`?unit=b|k|m|g`,
/// `?scale=N`; 400 with Kong's message for a bad unit or a negative scale) and the
/// configuration hash. The process's resident memory stands for Kong's one worker's Lua VM;
/// there are no shared dictionaries. (`database` is left out in DB-less mode since Kong
/// 3.4.)
fn status(sh: &Shared, q: Option<&str>) -> Response<ProxyBody> {
    let unit = match MemoryUnit::of(q) {
        Ok(u) => u,
        Err(why) => return message(StatusCode::BAD_REQUEST, &why),
    };
    let c = sh.metrics.connections();
    let body = json!({
        "server": {
            "connections_active": c.active,
            "connections_reading": c.reading,
            "connections_writing": c.writing,
            "connections_waiting": c.waiting,
            "connections_accepted": c.accepted,
            "connections_handled": c.handled,
            "total_requests": c.requests,
        },
        "memory": {
            "workers_lua_vms": [{"pid": std::process::id(), "http_allocated_gc": unit.show(rss_bytes())}],
            "lua_shared_dicts": {},
        },
        "configuration_hash": sh.snapshot.load().hash(),
    });
    json_response(StatusCode::OK, &body)
}

/// `GET /status/dns`: the resolver's counters, as Kong's DNS client reports them. One
/// process serves every connection here and its resolver is shared by all threads, so the
/// figures are the node's, reported as worker 0 of 1 (as `GET /` lists one worker pid).
/// (Kong answers 501 unless `new_dns_client` is on: our resolver is always the caching one.)
fn dns_status(sh: &Shared) -> Response<ProxyBody> {
    let stats = sh.snapshot.load().balancers.resolver().stats();
    json_response(
        StatusCode::OK,
        &json!({"worker": {"id": 0, "count": 1}, "stats": stats}),
    )
}

fn ready(sh: &Shared) -> Response<ProxyBody> {
    let snap = sh.snapshot.load();
    // (before the first load the hash is the empty configuration's, as `/status` reports
    // it and as Kong's DB-less node starts with an empty configuration)
    if snap.config.is_empty() {
        return message(
            StatusCode::SERVICE_UNAVAILABLE,
            "no configuration available (empty configuration present)",
        );
    }
    message(StatusCode::OK, "ready")
}

/// Kong's `truthy` of a request parameter (lowercased first).
fn truthy(v: Option<&str>) -> bool {
    v.is_some_and(|v| {
        ["1", "true", "on", "yes"]
            .iter()
            .any(|t| v.eq_ignore_ascii_case(t))
    })
}

/// Percent-decodes `s` (a `%` not followed by two hex digits stays as it is). With
/// `plus_is_space` (form encoding and query strings), `+` is a space; in a path it is a
/// plus.
fn percent_decode(s: &str, plus_is_space: bool) -> Vec<u8> {
    let hex = |i: usize| {
        s.as_bytes()
            .get(i)
            .and_then(|&h| char::from(h).to_digit(16))
            .and_then(|d| u8::try_from(d).ok())
    };
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        match (c, hex(i + 1), hex(i + 2)) {
            (b'%', Some(hi), Some(lo)) => {
                out.push(hi << 4 | lo);
                i += 3;
                continue;
            }
            (b'+', ..) if plus_is_space => out.push(b' '),
            _ => out.push(c),
        }
        i += 1;
    }
    out
}

/// [`percent_decode`] to a string (invalid UTF-8 replaced).
pub(crate) fn decode_str(s: &str, plus_is_space: bool) -> String {
    String::from_utf8_lossy(&percent_decode(s, plus_is_space)).into_owned()
}

/// What a `POST /config` body carries: the declarative document, and the parameters
/// sent beside it (form fields, multipart parts, JSON keys), which Kong reads like the
/// query's (`check_hash`, `flatten_errors`).
#[derive(Debug, Default, PartialEq)]
struct Posted {
    doc: Bytes,
    params: Vec<(String, String)>,
    /// The document is a JSON body's own keys (`_format_version` among them), which lapis
    /// decodes into the request's parameters: Kong loads those as a table
    /// (`dc:parse_table(self.params)`), with no hash compared first, so `check_hash` never
    /// answers 304 for them.
    table: bool,
}

impl Posted {
    fn raw(doc: Bytes) -> Posted {
        Posted {
            doc,
            params: vec![],
            table: false,
        }
    }

    fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The declarative document of a `POST /config` body, as Kong finds it: the `config`
/// parameter (form field, multipart part, JSON key) when there is one, else the raw body.
/// `Err` is the message of a 400 answer.
fn document(content_type: &str, body: Bytes) -> Result<Posted, String> {
    let ct = content_type.to_ascii_lowercase();
    if ct.starts_with("multipart/form-data") {
        let boundary = multipart_boundary(content_type)
            .ok_or("invalid multipart body: no boundary in the content type")?;
        let parts =
            multipart_parts(&body, boundary).map_err(|e| format!("invalid multipart body: {e}"))?;
        let mut posted = Posted::default();
        for (name, data) in parts {
            if name == "config" {
                posted.doc = data;
            } else {
                posted
                    .params
                    .push((name, String::from_utf8_lossy(&data).into_owned()));
            }
        }
        return Ok(posted);
    }
    if ct.starts_with("application/x-www-form-urlencoded") {
        let s = String::from_utf8_lossy(&body);
        let mut posted = Posted::default();
        let mut config = None;
        for kv in s.split('&') {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            let k = decode_str(k, true);
            if k == "config" {
                config.get_or_insert_with(|| Bytes::from(percent_decode(v, true)));
            } else {
                posted.params.push((k, decode_str(v, true)));
            }
        }
        // Without a `config` field (`curl --data-binary @kong.yml` sends this content
        // type), Kong takes the raw body, unless the fields are the document itself.
        posted.doc = match config {
            Some(doc) => doc,
            None if posted.param("_format_version").is_some() => Bytes::new(),
            None => body,
        };
        return Ok(posted);
    }
    let is_json = ct.contains("application/json");
    let looks_json = body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
    if !is_json && !looks_json {
        return Ok(Posted::raw(body));
    }
    let parsed = serde_json::from_slice::<Value>(&body);
    if is_json && parsed.is_err() {
        // Kong's api_helpers, before the endpoint runs: lapis decoded nothing (an empty
        // body included, which lapis reads as no body at all).
        return Err("Cannot parse JSON body".into());
    }
    let Ok(Value::Object(m)) = parsed else {
        return Ok(Posted::raw(body));
    };
    let params = ["check_hash", "flatten_errors"]
        .into_iter()
        .filter_map(|k| {
            let v = match m.get(k)? {
                Value::String(s) => s.clone(),
                v @ (Value::Number(_) | Value::Bool(_)) => v.to_string(),
                _ => return None,
            };
            Some((k.to_string(), v))
        })
        .collect();
    let table = is_json && m.contains_key("_format_version");
    let doc = match m.get("config") {
        Some(Value::String(doc)) if !m.contains_key("_format_version") => Bytes::from(doc.clone()),
        _ => body,
    };
    Ok(Posted { doc, params, table })
}

/// The `boundary` parameter of a `multipart/form-data` content type (RFC 2046: 1 to 70
/// characters, possibly quoted).
pub(crate) fn multipart_boundary(content_type: &str) -> Option<&str> {
    content_type.split(';').skip(1).find_map(|p| {
        let (k, v) = p.trim().split_once('=')?;
        if !k.trim().eq_ignore_ascii_case("boundary") {
            return None;
        }
        let v = v.trim();
        let v = v
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(v);
        (1..=70).contains(&v.len()).then_some(v)
    })
}

/// Where `needle` first occurs in `hay` (in linear time: the body is the client's, up to
/// `admin_client_max_body_size`, or of any size).
fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memmem::find(hay, needle)
}

/// The parts of a `multipart/form-data` body, each by the `name` of its
/// `Content-Disposition`. Strict: CRLF line ends, a closing delimiter, at most
/// `MAX_PARTS` parts with at most 8 KiB of headers each.
pub(crate) fn multipart_parts(
    body: &Bytes,
    boundary: &str,
) -> Result<Vec<(String, Bytes)>, String> {
    const MAX_PARTS: usize = 32;
    const MAX_HEADERS: usize = 8192;
    let delim = format!("--{boundary}");
    let next_delim = format!("\r\n--{boundary}");
    // A preamble before the first delimiter is allowed (and ignored).
    let first = if body.starts_with(delim.as_bytes()) {
        0
    } else {
        find(body, next_delim.as_bytes()).ok_or("the boundary is not in the body")? + 2
    };
    let mut pos = first + delim.len();
    let mut parts = vec![];
    loop {
        let rest = &body[pos..];
        if rest.starts_with(b"--") {
            return Ok(parts);
        }
        if !rest.starts_with(b"\r\n") {
            return Err("a delimiter is not followed by CRLF".into());
        }
        if parts.len() == MAX_PARTS {
            return Err(format!("more than {MAX_PARTS} parts"));
        }
        let start = pos + 2;
        let rest = &body[start..];
        let (headers, content) = if rest.starts_with(b"\r\n") {
            ("", start + 2)
        } else {
            let end = find(&rest[..rest.len().min(MAX_HEADERS + 4)], b"\r\n\r\n")
                .ok_or("a part's headers do not end (or are over 8 KiB)")?;
            let h =
                std::str::from_utf8(&rest[..end]).map_err(|_| "a part's headers are not UTF-8")?;
            (h, start + end + 4)
        };
        let len = find(&body[content..], next_delim.as_bytes()).ok_or("no closing delimiter")?;
        let name = headers
            .split("\r\n")
            .find_map(|line| {
                let (k, v) = line.split_once(':')?;
                k.trim()
                    .eq_ignore_ascii_case("content-disposition")
                    .then_some(v)
            })
            .and_then(disposition_name)
            .ok_or("a part has no Content-Disposition name")?;
        parts.push((name, body.slice(content..content + len)));
        pos = content + len + next_delim.len();
    }
}

/// The `name` parameter of a `form-data` Content-Disposition value (quotes honoured, so a
/// `;` inside a quoted filename is not a separator).
fn disposition_name(v: &str) -> Option<String> {
    let mut params = vec![];
    let (mut cur, mut quoted, mut escaped) = (String::new(), false, false);
    for c in v.chars() {
        match c {
            _ if escaped => {
                cur.push(c);
                escaped = false;
            }
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ';' if !quoted => params.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    params.push(cur);
    let mut it = params.into_iter();
    if !it.next()?.trim().eq_ignore_ascii_case("form-data") {
        return None;
    }
    it.find_map(|p| {
        let (k, v) = p.trim().split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("name")
            .then(|| v.trim().to_string())
    })
}

/// An admin request's whole body, for the handlers that read one of their own (`POST
/// /config`, the schema validations, the entity writes), as nginx reads it for Kong
/// (`ngx.req.read_body`): held to `admin_client_max_body_size` (the admin server's
/// `client_max_body_size`) and to `client_body_timeout` between its parts
/// ([`crate::upstream::ClientBody`]). A body already at its end (none, or `Content-Length:
/// 0`) is not read. Any other is read whole into memory under one of the
/// [`crate::gateway::CONFIG_UPLOADS`] upload permits: when none is free, 429 (ours, as Kong
/// answers a `POST /config` during a load; these handlers serve writes only, never a `GET`
/// or `HEAD`), and a read that holds one must end within `admin_upload_timeout` in all (60
/// s; nginx has no such bound, only its timeout between reads), or it is ended as a stalled
/// body is, without an answer, so that slow clients cannot hold the permits for long.
/// (The JSON bodies lapis reads for the other handlers, reads included, take no permit:
/// [`read_params_body`].)
///
/// What ends a read early is answered as nginx answers it in Kong's admin server
/// (`ngx_http_request_body.c`; lua-nginx-module's `ngx.req.read_body` finalizes the request
/// with nginx's code, `ngx_http_lua_req_body.c`):
/// - past the limit (a body announced larger was refused before, in [`serve`]; this is a
///   chunked one growing past it): nginx's 413 page ([`nginx_refusal`]);
/// - chunked framing nginx's parser refuses (`client sent invalid chunked body`): its 400
///   page;
/// - a pause past `client_body_timeout` (nginx's 408, which terminates the request), or the
///   client gone (the connection's error set): no answer, the connection closed
///   ([`unanswered`]).
pub(crate) async fn read_body(sh: &Shared, body: Incoming) -> Result<Bytes, Response<ProxyBody>> {
    if http_body::Body::is_end_stream(&body) {
        return Ok(Bytes::new());
    }
    let Ok(_permit) = sh.uploads.try_acquire() else {
        return Err(busy());
    };
    let body = crate::upstream::ClientBody::new(
        body,
        sh.settings.admin_client_max_body_size,
        sh.settings.client_body_timeout,
        None,
    );
    let watch = body.watch();
    match tokio::time::timeout(sh.settings.admin_upload_timeout, body.collect()).await {
        Ok(Ok(b)) => Ok(b.to_bytes()),
        Ok(Err(e)) => Err(body_failure(&watch, &*e)),
        Err(_) => {
            tracing::debug!("admin request body not read whole within admin_upload_timeout");
            Err(crate::error::unanswered())
        }
    }
}

/// The answer to a body whose read failed with `e` ([`read_body`] lists them).
fn body_failure(
    watch: &crate::upstream::BodyWatch,
    e: &(dyn std::error::Error + 'static),
) -> Response<ProxyBody> {
    let failure = watch.failure();
    tracing::debug!(error = %e, ?failure, "admin request body not read whole");
    match failure {
        Some(crate::error::Kind::PayloadTooLarge) => nginx_refusal(StatusCode::PAYLOAD_TOO_LARGE),
        Some(crate::error::Kind::BadRequest) => nginx_refusal(StatusCode::BAD_REQUEST),
        _ => crate::error::unanswered(),
    }
}

/// nginx's own answer to a request body it refuses in Kong's admin server, which has no
/// `error_page`: its page for `status` (413, or 400 for broken chunked framing;
/// [`crate::error::nginx_page`]) as `text/html; charset=UTF-8` (the server's `charset
/// UTF-8`), the connection closed (nginx keeps no connection alive after a 400 or a 413:
/// `ngx_http_special_response_handler`). [`serve`] adds the headers Kong's header filter
/// adds to it.
fn nginx_refusal(status: StatusCode) -> Response<ProxyBody> {
    let page = crate::error::nginx_page(status.as_u16()).unwrap_or_default();
    crate::proxy::page_answer(status, page, "text/html; charset=UTF-8")
}

/// Whether a request announces a body over its listener's `client_max_body_size`
/// ([`body_limit`]; nginx refuses it before any handler runs, without reading the body).
fn announces_too_large<B>(sh: &Shared, kind: ListenerKind, req: &Request<B>) -> bool {
    let max = body_limit(sh, kind);
    max > 0
        && req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok())
            .is_some_and(|n| n > max)
}

/// Kong's answer to a `POST /config` while another is being loaded (also ours while too
/// many bodies are being read).
fn busy() -> Response<ProxyBody> {
    let mut r = message(
        StatusCode::TOO_MANY_REQUESTS,
        "Currently loading previous configuration",
    );
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    r
}

/// A request's `Content-Type` ("" when absent or not text).
pub(crate) fn content_type<B>(req: &Request<B>) -> String {
    req.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

/// `POST /config`, in Kong's order (`kong/api/routes/config.lua` behind `parse_params`):
/// lapis's `json_params` first (a JSON body decoding to anything but an object or an array
/// is a Lua error, 500), then Kong's JSON check (a JSON type whose body does not decode,
/// an empty one included: 400 `Cannot parse JSON body`), then the handler's own checks
/// (400 `expected a declarative configuration` without a document, `check_hash`'s 304, the
/// loading lock's 429, the document's 400) and the load (201).
async fn post_config(sh: &Arc<Shared>, req: Request<Incoming>) -> Response<ProxyBody> {
    let q = req.uri().query().map(str::to_string);
    let q = q.as_deref();
    let ct = content_type(&req);
    // (the type as lapis reads it, whatever its bytes)
    let lapis_ct = crate::admin_schemas::content_type(&req);
    let body = match read_body(sh, req.into_body()).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    if crate::admin_schemas::json_scalar(lapis_ct.as_deref(), &body) {
        return crate::admin_schemas::unexpected();
    }
    let posted = match document(&ct, body) {
        Ok(p) => p,
        Err(m) => return message(StatusCode::BAD_REQUEST, &m),
    };
    // Parameters sent in the body count like the query's (and win, as in Lapis).
    let param = |name: &str| {
        posted
            .param(name)
            .map(str::to_string)
            .or_else(|| query_param(q, name))
    };
    // (a JSON document's own keys are loaded as a table, never compared: [`Posted::table`])
    let check_hash = param("check_hash").as_deref() == Some("1") && !posted.table;
    let flatten = truthy(param("flatten_errors").as_deref());
    let doc = posted.doc;
    if doc.iter().all(u8::is_ascii_whitespace) {
        return message(
            StatusCode::BAD_REQUEST,
            "expected a declarative configuration",
        );
    }
    // Kong's configuration hash: the md5 of the document as received. With `check_hash`,
    // the document running already (as text: YAML, or JSON inside a `config` parameter or
    // in a body of another type) is answered 304 before anything is parsed, and before
    // the loading lock (as Kong compares the hashes before it loads): re-posting it while
    // another document loads is "not modified", not "busy".
    let raw_md5 = hex::encode(md5::Md5::digest(&doc));
    if check_hash && sh.snapshot.load().hash() == raw_md5 {
        return not_modified();
    }
    // The loading lock is taken once the body is in: a slow upload does not hold it. The
    // load owns the guard: if the client goes away (and this future is dropped), the lock
    // is held until the load ends, and another POST still answers 429 meanwhile.
    let Ok(guard) = sh.loading.clone().try_lock_owned() else {
        return busy();
    };
    let sh2 = sh.clone();
    // Parsing, validation and compilation run off the request path.
    let res =
        tokio::task::spawn_blocking(move || -> Result<Vec<u8>, Result<ConfigError, String>> {
            let _loading = guard;
            let opts = LoadOptions {
                router_flavor: sh2.settings.router_flavor,
                plugins: &sh2.settings.plugins,
                now_unix: now_unix(),
            };
            let cfg = silverback_config::load_bytes(&doc, &opts).map_err(Ok)?;
            let hash = if cfg.is_empty() {
                silverback_config::EMPTY_HASH.to_string()
            } else {
                raw_md5
            };
            // The answer is serialized after the new configuration is serving.
            let snap = sh2.apply(cfg, hash).map_err(|e| Err(e.to_string()))?;
            Ok(snap.flattened_json())
        })
        .await;
    match res {
        Ok(Ok(entities)) => {
            let mut r = Response::new(ProxyBody::full(entities));
            *r.status_mut() = StatusCode::CREATED;
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json; charset=utf-8"),
            );
            r
        }
        Ok(Err(Ok(e))) => json_response(StatusCode::BAD_REQUEST, &e.kong_body(flatten)),
        Ok(Err(Err(e))) => json_response(
            StatusCode::BAD_REQUEST,
            &json!({
                "code": ConfigError::CODE,
                "name": "invalid declarative configuration",
                "message": format!("declarative config is invalid: {e}"),
                "fields": {"error": e},
            }),
        ),
        Err(e) => {
            tracing::error!(error = %e, "configuration load panicked");
            message(
                StatusCode::INTERNAL_SERVER_ERROR,
                "An unexpected error occurred",
            )
        }
    }
}

fn not_modified() -> Response<ProxyBody> {
    let mut r = Response::new(ProxyBody::empty());
    *r.status_mut() = StatusCode::NOT_MODIFIED;
    r
}

pub(crate) fn now_unix() -> Option<i64> {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()
        .map(|d| d.as_secs() as i64)
}

/// A listener as Kong's `conf_loader` describes it in `GET /` (`parse_listeners`): its
/// address (IPv6 in brackets, expanded as `normalize_ip` writes it) and port, a boolean for
/// each of the http subsystem's flags (a pattern flag given, `backlog=N` or
/// `so_keepalive=a:b:c`, keyed by its text), and `listener`, the address with the flags
/// given, in Kong's order.
fn listener_json(addr: std::net::SocketAddr, l: &crate::Listen) -> Value {
    // (an IPv6 address as Kong's `normalize_ip` writes it: every group, four digits each)
    let ip = match addr.ip() {
        std::net::IpAddr::V6(v6) => {
            let groups: Vec<String> = v6.segments().iter().map(|g| format!("{g:04x}")).collect();
            format!("[{}]", groups.join(":"))
        }
        v4 => v4.to_string(),
    };
    let mut m = serde_json::Map::new();
    m.insert("ip".into(), json!(ip));
    m.insert("port".into(), json!(addr.port()));
    let mut given: Vec<String> = Vec::new();
    let mut flag = |m: &mut serde_json::Map<String, Value>, name: &str, on: bool| {
        m.insert(name.into(), json!(on));
        if on {
            given.push(name.into());
        }
    };
    flag(&mut m, "ssl", l.ssl);
    flag(&mut m, "http2", l.http2);
    let inert = |name: &str| l.inert.iter().any(|f| f == name);
    flag(&mut m, "proxy_protocol", l.proxy_protocol);
    flag(&mut m, "deferred", inert("deferred"));
    flag(&mut m, "bind", inert("bind"));
    flag(&mut m, "reuseport", l.reuseport);
    // (a pattern flag given is keyed by its text)
    if l.backlog_given {
        flag(&mut m, &format!("backlog={}", l.backlog), true);
    } else {
        flag(&mut m, "backlog=%d+", false);
    }
    for name in [
        "ipv6only=on",
        "ipv6only=off",
        "so_keepalive=on",
        "so_keepalive=off",
    ] {
        flag(&mut m, name, inert(name));
    }
    match l
        .inert
        .iter()
        .find(|f| f.starts_with("so_keepalive=") && f.contains(':'))
    {
        Some(given) => flag(&mut m, given, true),
        None => flag(&mut m, "so_keepalive=%w*:%w*:%d*", false),
    }
    let mut listener = format!("{ip}:{}", addr.port());
    for g in &given {
        listener.push(' ');
        listener.push_str(g);
    }
    m.insert("listener".into(), json!(listener));
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `GET /`'s listener entries: a given backlog keyed by its text, IPv6 in brackets, the
    /// flags given in Kong's order in `listener`.
    #[test]
    fn listeners_are_described_as_kongs_conf_loader_does() {
        let l = crate::Listen::parse_list(
            "[::1]:8000 so_keepalive=30m::10 reuseport deferred backlog=16384",
        )
        .unwrap()
        .remove(0);
        let v = listener_json(l.addr, &l);
        assert_eq!(v["ip"], "[0000:0000:0000:0000:0000:0000:0000:0001]");
        assert_eq!(v["backlog=16384"], true);
        assert!(v.get("backlog=%d+").is_none(), "{v}");
        assert_eq!(v["reuseport"], true);
        assert_eq!(v["deferred"], true);
        assert_eq!(v["bind"], false);
        assert_eq!(v["so_keepalive=30m::10"], true);
        assert!(v.get("so_keepalive=%w*:%w*:%d*").is_none(), "{v}");
        assert_eq!(
            v["listener"],
            "[0000:0000:0000:0000:0000:0000:0000:0001]:8000 deferred reuseport backlog=16384 so_keepalive=30m::10"
        );
    }

    #[test]
    fn uuids_as_kong_reads_them() {
        assert!(is_uuid("a4f1c2d3-0b1e-4c5d-9e8f-123456789abc"));
        assert!(is_uuid("A4F1C2D3-0B1E-4C5D-9E8F-123456789ABC"));
        for not in [
            "a4f1c2d30b1e4c5d9e8f123456789abc",
            "{a4f1c2d3-0b1e-4c5d-9e8f-123456789abc}",
            "urn:uuid:a4f1c2d3-0b1e-4c5d-9e8f-123456789abc",
            "a4f1c2d3-0b1e-4c5d-9e8f-123456789ab",
            "g4f1c2d3-0b1e-4c5d-9e8f-123456789abc",
        ] {
            assert!(!is_uuid(not), "{not}");
        }
    }

    fn doc_of(ct: &str, body: &'static [u8]) -> Result<Bytes, String> {
        document(ct, Bytes::from_static(body)).map(|p| p.doc)
    }

    #[test]
    fn documents_from_bodies() {
        let ok = |b: &'static [u8]| Ok(Bytes::from_static(b));
        assert_eq!(
            doc_of("application/json", b"{\"config\":\"a: 1\"}"),
            ok(b"a: 1")
        );
        let raw = b"{\"_format_version\":\"3.0\",\"config\":\"x\"}";
        assert_eq!(doc_of("application/json", raw), ok(raw));
        assert_eq!(
            doc_of("application/x-www-form-urlencoded", b"x=1&config=a%3A+1"),
            ok(b"a: 1")
        );
        assert_eq!(doc_of("text/yaml", b"a: 1"), ok(b"a: 1"));
    }

    #[test]
    fn form_bodies_without_a_config_field_are_the_document() {
        let yaml = b"_format_version: \"3.0\"\nservices: []\n";
        assert_eq!(
            doc_of("application/x-www-form-urlencoded", yaml),
            Ok(Bytes::from_static(yaml))
        );
        // Fields that are the document itself are not supported: no document.
        assert_eq!(
            doc_of("application/x-www-form-urlencoded", b"_format_version=3.0"),
            Ok(Bytes::new())
        );
    }

    #[test]
    fn invalid_json_is_refused_before_the_document_is_read() {
        for body in [&b"{nope"[..], b"a: 1", b"{\"config\": "] {
            assert_eq!(
                document("Application/JSON; charset=utf-8", Bytes::from_static(body)),
                Err("Cannot parse JSON body".into())
            );
        }
        // (nothing to decode is no JSON either)
        for body in [&b""[..], b" \r\n"] {
            assert_eq!(
                document("application/json", Bytes::from_static(body)),
                Err("Cannot parse JSON body".into())
            );
        }
        // Not declared JSON: the parser of the document reports it.
        assert_eq!(
            doc_of("text/plain", b"{nope"),
            Ok(Bytes::from_static(b"{nope"))
        );
    }

    #[test]
    fn multipart_bodies() {
        let ct = "multipart/form-data; boundary=------XyZ";
        let body =
            b"--------XyZ\r\nContent-Disposition: form-data; name=\"check_hash\"\r\n\r\n1\r\n\
--------XyZ\r\ncontent-disposition: form-data; name=\"config\"; filename=\"k;ong.yml\"\r\n\
Content-Type: application/octet-stream\r\n\r\na: 1\r\n--x\r\n\r\n--------XyZ--\r\n";
        let p = document(ct, Bytes::from_static(body)).map_err(|e| e.to_string());
        let p = p.unwrap_or_default();
        assert_eq!(&p.doc[..], b"a: 1\r\n--x\r\n");
        assert_eq!(p.param("check_hash"), Some("1"));
        // A quoted boundary, a preamble, an empty part.
        let body =
            b"preamble\r\n--b\r\nContent-Disposition: form-data; name=config\r\n\r\n\r\n--b--";
        assert_eq!(
            doc_of("multipart/form-data; boundary=\"b\"", body),
            Ok(Bytes::new())
        );
        let bad: [(&str, &[u8]); 6] = [
            ("multipart/form-data", b"--b\r\n\r\nx\r\n--b--"),
            ("multipart/form-data; boundary=b", b"a: 1"),
            (
                "multipart/form-data; boundary=b",
                b"--b\r\nContent-Disposition: form-data; name=config\r\n\r\na: 1",
            ),
            (
                "multipart/form-data; boundary=b",
                b"--b\r\nContent-Disposition: form-data\r\n\r\nx\r\n--b--",
            ),
            (
                "multipart/form-data; boundary=b",
                b"--b\r\nContent-Disposition: form-data; name=config",
            ),
            ("multipart/form-data; boundary=b", b"--bxx"),
        ];
        for (ct, body) in bad {
            let e = doc_of(ct, body).err().unwrap_or_default();
            assert!(e.starts_with("invalid multipart body: "), "{body:?}: {e}");
        }
        let many = "--b\r\nContent-Disposition: form-data; name=x\r\n\r\n\r\n".repeat(40) + "--b--";
        let e = document("multipart/form-data; boundary=b", Bytes::from(many)).err();
        assert_eq!(
            e.as_deref(),
            Some("invalid multipart body: more than 32 parts")
        );
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(decode_str("bob%20smith+x", false), "bob smith+x");
        assert_eq!(decode_str("bob%20smith+x", true), "bob smith x");
        assert_eq!(decode_str("caf%C3%A9", false), "café");
        assert_eq!(decode_str("k8s-name%3afoo", true), "k8s-name:foo");
        // Not escapes: kept as they are.
        assert_eq!(decode_str("100%", true), "100%");
        assert_eq!(decode_str("%+5%2", true), "% 5%2");
        assert_eq!(decode_str("%zz", true), "%zz");
        assert_eq!(
            query_param(Some("a=1&tags=even%2Call&tags=x"), "tags").as_deref(),
            Some("even,all")
        );
        assert_eq!(
            query_param(Some("t%61gs=a+b"), "tags").as_deref(),
            Some("a b")
        );
        assert_eq!(query_param(Some("tags"), "tags").as_deref(), Some(""));
        assert_eq!(query_param(None, "tags"), None);
    }

    #[tokio::test]
    async fn a_failed_export_is_kongs_500() {
        let r = export_response(Err(YamlError("no".into())));
        assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = r.into_body().collect().await.map(|b| b.to_bytes());
        let body: Value = serde_json::from_slice(&body.unwrap_or_default()).unwrap_or_default();
        assert_eq!(body, json!({"message": "An unexpected error occurred"}));
        let r = export_response(Ok("_format_version: '3.0'\n".into()));
        assert_eq!(r.status(), StatusCode::OK);
    }

    #[test]
    fn memory_units_as_kong_formats_them() {
        let show = |q: &str, bytes| MemoryUnit::of(Some(q)).map(|u| u.show(bytes));
        assert_eq!(show("", 3 << 20), Ok(json!("3.00 MiB")));
        assert_eq!(show("unit=k&scale=1", 1536), Ok(json!("1.5 KiB")));
        assert_eq!(show("unit=G&scale=0", 3 << 30), Ok(json!("3 GiB")));
        assert_eq!(show("unit=m&scale=1.9", 1 << 20), Ok(json!("1.0 MiB")));
        assert_eq!(show("unit=b", 1234), Ok(json!(1234)));
        assert_eq!(show("unit=B&scale=-1", 1234), Ok(json!(1234)));
        assert_eq!(show("unit=", 1234), Ok(json!("1234")));
        assert_eq!(show("unit=k&scale=abc", 2048), Ok(json!("2.00 KiB")));
        let bad = |q: &str| MemoryUnit::of(Some(q)).err();
        assert_eq!(
            bad("unit=t").as_deref(),
            Some("invalid unit 't' (expected 'k/K', 'm/M', or 'g/G')")
        );
        assert_eq!(
            bad("scale=-1").as_deref(),
            Some("scale must be equal or greater than 0")
        );
        // (the scale is checked before the unit, as in Kong)
        assert_eq!(
            bad("unit=t&scale=-1").as_deref(),
            Some("scale must be equal or greater than 0")
        );
        assert!(bad("scale=100").is_some());
    }

    #[test]
    fn truthy_ignores_case() {
        for v in ["1", "true", "TRUE", "True", "on", "ON", "yes", "Yes"] {
            assert!(truthy(Some(v)), "{v}");
        }
        for v in ["0", "false", "", "y", "truex"] {
            assert!(!truthy(Some(v)), "{v}");
        }
        assert!(!truthy(None));
        assert!(truthy(
            query_param(Some("flatten_errors=TRUE"), "flatten_errors").as_deref()
        ));
    }

    #[test]
    fn escapes_like_ngx_escape_uri() {
        assert_eq!(escape_uri("a-b_c.d~e"), "a-b_c.d~e");
        assert_eq!(
            escape_uri("k8s-name:foo,x/y z"),
            "k8s-name%3Afoo%2Cx%2Fy%20z"
        );
        assert_eq!(escape_uri("café"), "caf%C3%A9");
    }
}
