//! One error taxonomy for the proxy (pingora's model): every failure has a [`Source`]
//! (downstream client, upstream server, or ourselves), a [`Kind`] that decides the status
//! code Kong would answer with, and whether another attempt may be made.
//!
//! | kind | status | Kong message |
//! |---|---|---|
//! | `NoRoute` | 404 | `no Route matched with those values` |
//! | `NoService` | 503 | `no Service found with those values` |
//! | `NameResolution` | 503 | `name resolution failed` |
//! | `NoPeer` | 503 | `failure to get a peer from the ring-balancer` |
//! | `ConnectRefused`, `InvalidResponse`, `UpstreamTls` | 502 | `An invalid response was received from the upstream server` |
//! | `ConnectTimeout`, `ReadTimeout`, `WriteTimeout` | 504 | `The upstream server is timing out` |
//! | `BadRequest` | 400 | `Bad request` |
//! | `PayloadTooLarge` | 413 | `Payload too large` |
//! | `Internal` | 500 | `An unexpected error occurred` |

use std::fmt;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode, header};

/// Who caused a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The client (bad request, disconnect, too slow).
    Downstream,
    /// The upstream server (refused, reset, timed out, spoke garbage).
    Upstream,
    /// Ourselves (configuration, bug).
    Internal,
}

/// What went wrong; decides the status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// No route matched.
    NoRoute,
    /// The route has no service.
    NoService,
    /// The service host did not resolve.
    NameResolution,
    /// The upstream had no usable target.
    NoPeer,
    /// Connecting failed (refused, unreachable, reset).
    ConnectRefused,
    /// Connecting took longer than `connect_timeout`.
    ConnectTimeout,
    /// The upstream took longer than `read_timeout` to answer.
    ReadTimeout,
    /// Sending to the upstream took longer than `write_timeout`.
    WriteTimeout,
    /// The upstream closed or sent something that is not HTTP.
    InvalidResponse,
    /// The TLS handshake with the upstream failed.
    UpstreamTls,
    /// The client's request is malformed.
    BadRequest,
    /// The client's body is larger than allowed.
    PayloadTooLarge,
    /// The client stopped sending its body (`client_body_timeout`).
    RequestTimeout,
    /// The client's body uses a transfer coding other than `chunked`.
    NotImplemented,
    /// Anything else.
    Internal,
}

impl Kind {
    /// The status Kong answers with.
    pub fn status(self) -> StatusCode {
        match self {
            Kind::NoRoute => StatusCode::NOT_FOUND,
            Kind::NoService | Kind::NameResolution | Kind::NoPeer => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Kind::ConnectRefused | Kind::InvalidResponse | Kind::UpstreamTls => {
                StatusCode::BAD_GATEWAY
            }
            Kind::ConnectTimeout | Kind::ReadTimeout | Kind::WriteTimeout => {
                StatusCode::GATEWAY_TIMEOUT
            }
            Kind::BadRequest => StatusCode::BAD_REQUEST,
            Kind::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Kind::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            Kind::NotImplemented => StatusCode::NOT_IMPLEMENTED,
            Kind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Kong's message for this kind.
    pub fn message(self) -> &'static str {
        match self {
            Kind::NoRoute => "no Route matched with those values",
            Kind::NoService => "no Service found with those values",
            Kind::NameResolution => "name resolution failed",
            Kind::NoPeer => "failure to get a peer from the ring-balancer",
            _ => status_message(self.status()),
        }
    }
}

/// A failure while proxying one request.
#[derive(Debug)]
pub struct Error {
    /// What went wrong.
    pub kind: Kind,
    /// Who caused it.
    pub source: Source,
    /// Whether another attempt (to another or the same peer) may be made: true only when
    /// nothing of the request reached the upstream.
    pub retryable: bool,
    /// Detail for the log (never sent to the client).
    pub cause: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl Error {
    /// A new error.
    pub fn new(kind: Kind, source: Source) -> Error {
        Error {
            kind,
            source,
            retryable: false,
            cause: None,
        }
    }
    /// An upstream error.
    pub fn upstream(kind: Kind) -> Error {
        Error::new(kind, Source::Upstream)
    }
    /// A downstream error.
    pub fn downstream(kind: Kind) -> Error {
        Error::new(kind, Source::Downstream)
    }
    /// Marks the error as retryable.
    pub fn retryable(mut self) -> Error {
        self.retryable = true;
        self
    }
    /// Attaches a cause.
    pub fn because(mut self, e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Error {
        self.cause = Some(e.into());
        self
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} ({:?})", self.kind, self.source)?;
        if let Some(c) = &self.cause {
            write!(f, ": {c}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {}

/// Errors of starting or reconfiguring a [`crate::Gateway`].
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// The router rejected the configuration.
    #[error("cannot build the router: {0}")]
    Router(String),
    /// A certificate of the configuration is unusable.
    #[error("certificate {id}: {message}")]
    Certificate {
        /// Certificate id.
        id: String,
        /// Why.
        message: String,
    },
    /// TLS setup failed.
    #[error("TLS: {0}")]
    Tls(String),
    /// The configuration was rejected.
    #[error(transparent)]
    Config(#[from] silverback_config::ConfigError),
}

/// Kong's message for a status code it produces itself (`kong/tools/http.lua`).
pub fn status_message(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 | 494 => "Bad request",
        404 => "Not found",
        405 => "Method not allowed",
        408 => "Request timeout",
        411 => "Length required",
        412 => "Precondition failed",
        413 => "Payload too large",
        414 => "URI too long",
        417 => "Expectation failed",
        426 => "Please use HTTPS protocol",
        500 => "An unexpected error occurred",
        501 => "Not implemented",
        502 => "An invalid response was received from the upstream server",
        503 => "The upstream server is currently unavailable",
        504 => "The upstream server is timing out",
        _ => "The upstream server responded with an error",
    }
}

/// The body format of an error response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `application/json; charset=utf-8`
    Json,
    /// `text/plain; charset=utf-8`
    Text,
    /// `text/html; charset=utf-8`
    Html,
    /// `application/xml; charset=utf-8`
    Xml,
    /// gRPC: no body, `grpc-status`/`grpc-message` headers.
    Grpc,
}

impl Format {
    /// Picks the format from the request like Kong's `kong.response.error`: `Accept`
    /// (gRPC by content type first), JSON when Accept is missing or `*/*`.
    pub fn negotiate(headers: &HeaderMap) -> Format {
        if headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.starts_with("application/grpc"))
        {
            return Format::Grpc;
        }
        let Some(accept) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) else {
            return Format::Json;
        };
        // The first type listed that we know (q-values are not weighed, as in Kong).
        for t in accept.split(',') {
            let t = t.split(';').next().unwrap_or("").trim();
            match t {
                "application/json" | "*/*" => return Format::Json,
                "text/plain" => return Format::Text,
                "text/html" => return Format::Html,
                "application/xml" => return Format::Xml,
                _ => {}
            }
        }
        Format::Json
    }

    /// The `Content-Type` of the body.
    pub fn content_type(self) -> Option<&'static str> {
        match self {
            Format::Json => Some("application/json; charset=utf-8"),
            Format::Text => Some("text/plain; charset=utf-8"),
            Format::Html => Some("text/html; charset=utf-8"),
            Format::Xml => Some("application/xml; charset=utf-8"),
            Format::Grpc => None,
        }
    }

    /// The body for `message` and `request_id` in this format (Kong's templates; the
    /// message is inserted as is).
    pub fn body(self, message: &str, request_id: &str) -> Bytes {
        match self {
            Format::Json => format!("{{\n  \"message\":\"{message}\",\n  \"request_id\":\"{request_id}\"\n}}").into(),
            Format::Text => format!("{message}\nrequest_id: {request_id}\n").into(),
            Format::Html => format!(
                "<!doctype html>\n<html>\n  <head>\n    <meta charset=\"utf-8\">\n    <title>Error</title>\n  </head>\n  <body>\n    <h1>Error</h1>\n    <p>{message}.</p>\n    <p>request_id: {request_id}</p>\n  </body>\n</html>\n"
            )
            .into(),
            Format::Xml => format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<error>\n  <message>{message}</message>\n  <requestid>{request_id}</requestid>\n</error>\n"
            )
            .into(),
            Format::Grpc => Bytes::new(),
        }
    }
}

/// The gRPC status code for an HTTP status (used for gRPC error responses).
pub fn grpc_status(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "3",
        401 => "16",
        403 => "7",
        404 => "12",
        408 | 504 => "4",
        413 | 429 => "8",
        502 | 503 => "14",
        _ => "2",
    }
}

/// Adds the gRPC error headers for `message`.
pub fn grpc_headers(h: &mut HeaderMap, status: StatusCode, message: &str) {
    h.insert("grpc-status", HeaderValue::from_static(grpc_status(status)));
    if let Ok(v) = HeaderValue::from_str(message) {
        h.insert("grpc-message", v);
    }
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_map_to_kong_statuses() {
        assert_eq!(Kind::NoRoute.status(), 404);
        assert_eq!(Kind::ConnectRefused.status(), 502);
        assert_eq!(Kind::ReadTimeout.status(), 504);
        assert_eq!(Kind::ConnectTimeout.status(), 504);
        assert_eq!(Kind::NameResolution.status(), 503);
        assert_eq!(
            Kind::NoRoute.message(),
            "no Route matched with those values"
        );
        assert_eq!(
            Kind::ReadTimeout.message(),
            "The upstream server is timing out"
        );
    }

    #[test]
    fn negotiates_like_kong() {
        let mut h = HeaderMap::new();
        assert_eq!(Format::negotiate(&h), Format::Json);
        h.insert(
            header::ACCEPT,
            HeaderValue::from_static("text/html,application/xhtml+xml"),
        );
        assert_eq!(Format::negotiate(&h), Format::Html);
        h.insert(header::ACCEPT, HeaderValue::from_static("text/plain"));
        assert_eq!(Format::negotiate(&h), Format::Text);
        h.insert(header::ACCEPT, HeaderValue::from_static("image/png"));
        assert_eq!(Format::negotiate(&h), Format::Json);
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc+proto"),
        );
        assert_eq!(Format::negotiate(&h), Format::Grpc);
    }

    #[test]
    fn bodies_follow_kong_templates() {
        let j = Format::Json.body("no Route matched with those values", "abc");
        assert_eq!(&j[..], b"{\n  \"message\":\"no Route matched with those values\",\n  \"request_id\":\"abc\"\n}");
        let v: serde_json::Value = serde_json::from_slice(&j).unwrap();
        assert_eq!(v["request_id"], "abc");
        assert_eq!(
            &Format::Text.body("Bad request", "1f")[..],
            b"Bad request\nrequest_id: 1f\n"
        );
    }
}
