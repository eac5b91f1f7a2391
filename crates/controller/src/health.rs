//! The controller's own HTTP endpoints: `/healthz`, `/readyz`, `/metrics` and, with
//! `--dump-config`, `/debug/config/{successful,failed,fallback}`.
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
                Some(b) => resp(StatusCode::OK, JSON, b),
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
                        "config": serde_json::from_slice::<serde_json::Value>(&b).unwrap_or_default(),
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
