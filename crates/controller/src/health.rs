//! The controller's own HTTP endpoints: `/healthz`, `/readyz`, `/metrics` and, with
//! `--dump-config`, `/debug/config/{successful,failed,fallback}`.
//!
//! The diagnostics documents are served on the health address (KIC serves its
//! `/debug/config/*` on a diagnostics port of its own, `:10256`): `successful` is the last
//! configuration a data plane accepted, `failed` the last one rejected with the error, and
//! `fallback` the objects the last fallback left out and put back. As KIC's
//! `kongstate.SanitizedCopy`, sensitive values are replaced by `{vault://redacted-value}`
//! ([`REDACTED`]) unless `--dump-sensitive-config` is given: certificates' private keys and
//! consumer credentials' secrets (basic-auth passwords, HMAC and JWT secrets, OAuth2 client
//! secrets; key-auth keys get a placeholder of their own each, since keys must be unique).
//!
//! `/readyz` is 503 until every watch listed once; then, as in KIC, a replica that leads (or
//! runs without election) is ready only once a data plane accepted a configuration, and a
//! replica that does not lead is ready at once.
//!
//! They are served on the health address (`--health-probe-bind-address`); with
//! `--metrics-bind-address`, `/metrics` moves to a listener of its own, as in KIC.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::sync::watch;

use crate::metrics::Metrics;
use crate::store::Store;
use crate::sync::Diagnostics;

/// What the endpoints read.
#[derive(Debug, Clone)]
pub struct Endpoints {
    /// The object store (ready once every source listed).
    pub store: Arc<Store>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Diagnostics documents, and whether anything was configured yet.
    pub diagnostics: Arc<Diagnostics>,
    /// Whether this replica leads; set once election is set up (until then, and without
    /// election, it is taken as leading).
    pub leading: Arc<std::sync::OnceLock<watch::Receiver<bool>>>,
    /// Serve `/debug/config/*`.
    pub dump_config: bool,
    /// Serve them with sensitive values (private keys, credentials) instead of [`REDACTED`].
    pub dump_sensitive_config: bool,
    /// Serve `/healthz`, `/readyz` (and `/debug/config/*` with `dump_config`).
    pub probes: bool,
    /// Serve `/metrics`.
    pub metrics_endpoint: bool,
}

fn resp(status: StatusCode, ct: &str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    if let Ok(v) = http::HeaderValue::from_str(ct) {
        r.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    r
}

/// What sensitive values are replaced with in the diagnostics documents (KIC's placeholder:
/// a vault reference, so that the document still passes validation).
pub const REDACTED: &str = "{vault://redacted-value}";

/// `document` with its sensitive values replaced (see the [module documentation](self)).
pub fn sanitize(document: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    fn redact(o: &mut Value, fields: &[&str]) {
        if let Some(m) = o.as_object_mut() {
            for f in fields {
                if let Some(v) = m.get_mut(*f)
                    && !v.is_null()
                {
                    *v = Value::String(REDACTED.into());
                }
            }
        }
    }
    fn credentials(m: &mut serde_json::Map<String, Value>, keys: &mut usize) {
        for (list, fields) in [
            ("basicauth_credentials", &["password"][..]),
            ("hmacauth_credentials", &["secret"][..]),
            ("jwt_secrets", &["secret"][..]),
            ("oauth2_credentials", &["client_secret"][..]),
        ] {
            for c in m
                .get_mut(list)
                .and_then(Value::as_array_mut)
                .into_iter()
                .flatten()
            {
                redact(c, fields);
            }
        }
        for c in m
            .get_mut("keyauth_credentials")
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            if let Some(k) = c.get_mut("key") {
                *keys += 1;
                *k = Value::String(format!("{{vault://redacted-key-{keys}}}"));
            }
        }
    }
    let mut doc = document.clone();
    let mut keys = 0;
    if let Some(m) = doc.as_object_mut() {
        for c in m
            .get_mut("certificates")
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            redact(c, &["key", "key_alt"]);
        }
        credentials(m, &mut keys);
        for c in m
            .get_mut("consumers")
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            if let Some(cm) = c.as_object_mut() {
                credentials(cm, &mut keys);
            }
        }
    }
    doc
}

/// A diagnostics document as served: sanitized unless `sensitive`.
fn dumped(body: &[u8], sensitive: bool) -> serde_json::Value {
    let v = serde_json::from_slice::<serde_json::Value>(body).unwrap_or_default();
    if sensitive { v } else { sanitize(&v) }
}

fn handle(e: &Endpoints, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    const TEXT: &str = "text/plain; charset=utf-8";
    const JSON: &str = "application/json";
    match req.uri().path() {
        "/healthz" if e.probes => resp(StatusCode::OK, TEXT, "ok"),
        "/readyz" if e.probes => {
            if !e.store.is_ready() {
                let pending = e.store.pending_sources().join(", ");
                resp(
                    StatusCode::SERVICE_UNAVAILABLE,
                    TEXT,
                    format!("waiting for the initial listing of: {pending}"),
                )
            } else if e.leading.get().is_none_or(|l| *l.borrow())
                && !e
                    .diagnostics
                    .configured
                    .load(std::sync::atomic::Ordering::Relaxed)
            {
                resp(
                    StatusCode::SERVICE_UNAVAILABLE,
                    TEXT,
                    "no configuration accepted by a data plane yet",
                )
            } else {
                resp(StatusCode::OK, TEXT, "ok")
            }
        }
        "/metrics" if e.metrics_endpoint => resp(
            StatusCode::OK,
            "text/plain; version=0.0.4",
            e.metrics.render(),
        ),
        "/debug/config/successful" if e.probes && e.dump_config => {
            let d = e
                .diagnostics
                .successful
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            match d {
                Some(b) => resp(
                    StatusCode::OK,
                    JSON,
                    dumped(&b, e.dump_sensitive_config).to_string(),
                ),
                None => resp(
                    StatusCode::NOT_FOUND,
                    TEXT,
                    "no successful configuration yet",
                ),
            }
        }
        "/debug/config/failed" if e.probes && e.dump_config => {
            let d = e
                .diagnostics
                .failed
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            match d {
                Some((b, err)) => {
                    let body = serde_json::json!({
                        "error": err,
                        "config": dumped(&b, e.dump_sensitive_config),
                    });
                    resp(StatusCode::OK, JSON, body.to_string())
                }
                None => resp(StatusCode::NOT_FOUND, TEXT, "no failed configuration"),
            }
        }
        "/debug/config/fallback" if e.probes && e.dump_config => {
            let d = e
                .diagnostics
                .fallback
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            let backfilled = e
                .diagnostics
                .backfilled
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            let body = serde_json::json!({ "excluded": d, "backfilled": backfilled });
            resp(StatusCode::OK, JSON, body.to_string())
        }
        _ => resp(StatusCode::NOT_FOUND, TEXT, "not found"),
    }
}

/// Binds `addr` and serves the endpoints until `shutdown`. Returns the bound address.
pub async fn serve(
    addr: SocketAddr,
    endpoints: Endpoints,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
    let local = listener.local_addr()?;
    let endpoints = Arc::new(endpoints);
    let task = tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                _ = crate::stopped(&mut shutdown) => return,
                a = listener.accept() => a,
            };
            let Ok((stream, _)) = accepted else { continue };
            let e = endpoints.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let r = handle(&e, &req);
                    async move { Ok::<_, Infallible>(r) }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc);
                let _ = tokio::time::timeout(std::time::Duration::from_secs(60), conn).await;
            });
        }
    });
    Ok((local, task))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sanitize_redacts_what_kics_sanitized_copy_redacts() {
        let doc = json!({
            "certificates": [{"cert": "C", "key": "K", "key_alt": "K2", "cert_alt": "C2"}],
            "consumers": [{"username": "u",
                "keyauth_credentials": [{"key": "k1"}, {"key": "k2"}],
                "basicauth_credentials": [{"username": "u", "password": "p"}],
                "hmacauth_credentials": [{"username": "u", "secret": "s"}],
                "jwt_secrets": [{"key": "iss", "secret": "s", "rsa_public_key": "pub"}],
                "oauth2_credentials": [{"client_id": "id", "client_secret": "s"}]}],
            "ca_certificates": [{"cert": "CA"}],
        });
        let s = sanitize(&doc);
        assert_eq!(s["certificates"][0]["cert"], "C");
        assert_eq!(s["certificates"][0]["key"], REDACTED);
        assert_eq!(s["certificates"][0]["key_alt"], REDACTED);
        let c = &s["consumers"][0];
        let (k1, k2) = (
            &c["keyauth_credentials"][0]["key"],
            &c["keyauth_credentials"][1]["key"],
        );
        assert!(k1.as_str().unwrap().starts_with("{vault://"), "{k1}");
        assert_ne!(k1, k2);
        assert_eq!(c["basicauth_credentials"][0]["password"], REDACTED);
        assert_eq!(c["basicauth_credentials"][0]["username"], "u");
        assert_eq!(c["hmacauth_credentials"][0]["secret"], REDACTED);
        assert_eq!(c["jwt_secrets"][0]["secret"], REDACTED);
        assert_eq!(c["jwt_secrets"][0]["key"], "iss");
        assert_eq!(c["jwt_secrets"][0]["rsa_public_key"], "pub");
        assert_eq!(c["oauth2_credentials"][0]["client_secret"], REDACTED);
        assert_eq!(s["ca_certificates"], doc["ca_certificates"]);
    }
}
