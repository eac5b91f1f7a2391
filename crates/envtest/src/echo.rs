//! A small HTTP/1.1 echo server for test backends.
//!
//! Every response is `200 OK` (or the status asked for by a `/status/<code>` path) with the
//! header `x-echo-backend: <name>` and a JSON body describing the request:
//!
//! ```json
//! {"backend": "backend-a", "method": "GET", "path": "/foo?x=1", "host": "example.com",
//!  "proto": "HTTP/1.1", "headers": {"host": ["example.com"], "...": ["..."]},
//!  "body_len": 0, "peer": "10.213.0.1:41234"}
//! ```
//!
//! The backend name identifies which backend answered, so a test can tell where a proxy sent a
//! request. Header names are lower case; a header sent several times has several values.
//! Serve it in-process with [`EchoServer`] / [`serve`], or as the binary
//! `silverback-envtest-echo` (`--listen ADDR:PORT --name NAME`).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;

use anyhow::Context as _;
use http_body_util::{BodyExt as _, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

/// The header naming the backend that answered.
pub const BACKEND_HEADER: &str = "x-echo-backend";

/// What the echo server saw, as returned in its JSON body.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EchoResponse {
    /// The server's name.
    pub backend: String,
    /// Request method.
    pub method: String,
    /// Path and query.
    pub path: String,
    /// The `Host` header, or empty.
    pub host: String,
    /// Protocol version, e.g. `HTTP/1.1`.
    pub proto: String,
    /// Request headers, names lower-cased, values in order.
    pub headers: BTreeMap<String, Vec<String>>,
    /// Length of the request body in bytes.
    pub body_len: usize,
    /// The peer's address as the server saw it.
    pub peer: String,
}

impl EchoResponse {
    /// The first value of header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name)?.first().map(String::as_str)
    }
}

async fn handle(
    req: Request<Incoming>,
    name: String,
    peer: SocketAddr,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let body_len = body
        .collect()
        .await
        .map(|b| b.to_bytes().len())
        .unwrap_or(0);
    let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (k, v) in &parts.headers {
        headers
            .entry(k.as_str().to_owned())
            .or_default()
            .push(String::from_utf8_lossy(v.as_bytes()).into_owned());
    }
    let path = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path().to_owned(), |pq| pq.as_str().to_owned());
    let status = parts
        .uri
        .path()
        .strip_prefix("/status/")
        .and_then(|code| code.parse::<u16>().ok())
        .and_then(|code| StatusCode::from_u16(code).ok())
        .unwrap_or(StatusCode::OK);
    let echo = EchoResponse {
        backend: name.clone(),
        method: parts.method.to_string(),
        path,
        host: parts
            .headers
            .get(hyper::header::HOST)
            .map(|h| String::from_utf8_lossy(h.as_bytes()).into_owned())
            .unwrap_or_default(),
        proto: format!("{:?}", parts.version),
        headers,
        body_len,
        peer: peer.to_string(),
    };
    let body = serde_json::to_vec(&echo).unwrap_or_default();
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    if let Ok(v) = hyper::header::HeaderValue::from_str(&name) {
        resp.headers_mut().insert(BACKEND_HEADER, v);
    }
    Ok(resp)
}

/// Serves the echo protocol on `listener` until the task is dropped or aborted.
pub async fn serve(listener: tokio::net::TcpListener, name: String) -> std::io::Result<()> {
    loop {
        let (stream, peer) = listener.accept().await?;
        let name = name.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| handle(req, name.clone(), peer));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// An echo server running on the current tokio runtime; stops when dropped.
#[derive(Debug)]
pub struct EchoServer {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl EchoServer {
    /// Starts serving on `listener` (a non-blocking std listener, e.g. from
    /// [`NetNs::bind_tcp`](crate::netns::NetNs::bind_tcp)). Must be called within a tokio
    /// runtime.
    pub fn start(listener: std::net::TcpListener, name: &str) -> anyhow::Result<Self> {
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let listener = tokio::net::TcpListener::from_std(listener)
            .context("registering the listener with tokio (is a runtime running?)")?;
        let task = tokio::spawn(serve(listener, name.to_owned()));
        Ok(Self { addr, task })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://<addr>` without a trailing slash.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
