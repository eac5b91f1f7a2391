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
//! | `MethodNotAllowed` | 405 | `Method not allowed` |
//! | `NotImplemented` | 501 | none: nginx's own HTML page ([`nginx_page`]) |
//! | `Resolver` | 500 | `failed the initial dns/balancer resolve for '<host>' with: <error>` |
//! | `Unavailable` | 503 | `The upstream server is currently unavailable` (nginx's, from Kong's error handler) |
//! | `Internal` | 500 | `An unexpected error occurred` |
//!
//! The errors nginx raises in Kong reach Kong's error handler only for the statuses of the
//! proxy server's `error_page` lines in `kong/templates/nginx_kong.lua` (400 404 405 408
//! 411 412 413 414 417, 494, and 500 502 503 504; [`kong_handles`]); any other status gets
//! nginx's built-in page ([`nginx_page`]). Of the statuses the gateway answers with, only
//! 501 (a transfer coding other than `chunked`) is outside that list. Kong's admin and status
//! servers have no `error_page` lines: there a head nginx refuses (400, 405, 414, 494 sent as
//! 400, 501) gets nginx's page whatever its status, and so does a body nginx refuses on the
//! admin server (413 past `client_max_body_size`, 400 for broken chunked framing).

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
    /// The client's connection ended (closed or reset) inside its body: nginx terminates
    /// the request without an answer, and logs and counts it as a 400.
    ClientLeft,
    /// The client's body uses a transfer coding other than `chunked`.
    NotImplemented,
    /// A method nginx does not serve (`TRACE`, `CONNECT`).
    MethodNotAllowed,
    /// The service's host did not resolve for another reason than its absence (a timeout, a
    /// name server's failure): Kong's 500 from its balancer, whose message (the error's
    /// cause) names the host and the resolver's error.
    Resolver,
    /// No peer on a retry: Kong's balancer phase ends the request with `ngx.exit(503)`,
    /// an nginx error (a name that does not resolve then is [`Kind::Internal`]'s 500).
    Unavailable,
    /// Anything else.
    Internal,
}

impl Kind {
    /// The status Kong answers with.
    pub fn status(self) -> StatusCode {
        match self {
            Kind::NoRoute => StatusCode::NOT_FOUND,
            Kind::NoService | Kind::NameResolution | Kind::NoPeer | Kind::Unavailable => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Kind::ConnectRefused | Kind::InvalidResponse | Kind::UpstreamTls => {
                StatusCode::BAD_GATEWAY
            }
            Kind::ConnectTimeout | Kind::ReadTimeout | Kind::WriteTimeout => {
                StatusCode::GATEWAY_TIMEOUT
            }
            Kind::BadRequest | Kind::ClientLeft => StatusCode::BAD_REQUEST,
            Kind::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Kind::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            Kind::NotImplemented => StatusCode::NOT_IMPLEMENTED,
            Kind::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Kind::Resolver | Kind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Whether nginx raises this error in Kong (an `error_page` status rendered by
    /// `kong/error_handlers.lua`, whose body format falls back to `error_default_type`), as
    /// opposed to Kong's own phases (`kong.response.error`, JSON by default): the client's
    /// bad requests and every failure of proxying to the upstream.
    pub fn nginx_error(self) -> bool {
        !matches!(
            self,
            Kind::NoRoute | Kind::NoService | Kind::NameResolution | Kind::NoPeer | Kind::Resolver
        )
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
    /// Detail for the log (sent to the client only as [`Kind::Resolver`]'s message).
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
    /// What the client is told: the kind's message, or for [`Kind::Resolver`] its cause.
    pub fn client_message(&self) -> std::borrow::Cow<'_, str> {
        match (self.kind, &self.cause) {
            (Kind::Resolver, Some(c)) => c.to_string().into(),
            (kind, _) => kind.message().into(),
        }
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
    /// An access log file could not be opened.
    #[error("{setting}: cannot open {path}: {source}")]
    AccessLog {
        /// The setting that names it (`proxy_access_log`, ...).
        setting: &'static str,
        /// The file.
        path: std::path::PathBuf,
        /// The cause.
        source: std::io::Error,
    },
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
    /// `ssl_cert` / `ssl_cert_key` cannot be used.
    #[error(transparent)]
    SslCert(#[from] crate::default_certs::SslCertError),
    /// The default certificates kept in the prefix directory cannot be used or written.
    #[error(transparent)]
    Prefix(#[from] crate::default_certs::PrefixError),
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

/// Whether Kong's proxy server renders an nginx-level error of nginx's `code` with its own
/// error handler (`Kong.handle_error`, Kong's formats): the codes its template routes to
/// `/kong_error_handler` with `error_page`. nginx answers any other code itself
/// ([`nginx_page`]).
pub fn kong_handles(code: u16) -> bool {
    matches!(
        code,
        400 | 404 | 405 | 408 | 411 | 412 | 413 | 414 | 417 | 494 | 500 | 502 | 503 | 504
    )
}

/// The reason phrase nginx writes for `code` on an answer it makes (its header filter's
/// `ngx_http_status_lines`, which Kong's answers go through too): its own wording where it
/// differs from the standard one (`405 Not Allowed`, `503 Service Temporarily
/// Unavailable`, `504 Gateway Time-out`), and none at all (`HTTP/1.1 426 `) for the codes
/// its table leaves out.
pub fn nginx_reason(code: u16) -> &'static str {
    match code {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        206 => "Partial Content",
        301 => "Moved Permanently",
        302 => "Moved Temporarily",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        402 => "Payment Required",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Not Allowed",
        406 => "Not Acceptable",
        408 => "Request Time-out",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        412 => "Precondition Failed",
        413 => "Request Entity Too Large",
        414 => "Request-URI Too Large",
        415 => "Unsupported Media Type",
        416 => "Requested Range Not Satisfiable",
        421 => "Misdirected Request",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Temporarily Unavailable",
        504 => "Gateway Time-out",
        505 => "HTTP Version Not Supported",
        507 => "Insufficient Storage",
        _ => "",
    }
}

/// Gives an answer made here (one without a reason phrase of its own, as an upstream's
/// status line brings) nginx's reason phrase, for hyper to write, where it differs from the
/// standard one.
pub(crate) fn set_nginx_reason<B>(r: &mut http::Response<B>) {
    let status = r.status();
    let reason = nginx_reason(status.as_u16());
    if status.canonical_reason() != Some(reason)
        && r.extensions().get::<hyper::ext::ReasonPhrase>().is_none()
    {
        r.extensions_mut()
            .insert(hyper::ext::ReasonPhrase::from_static(reason.as_bytes()));
    }
}

/// nginx's built-in page for an error nginx raises with `code` (its own code: 494 for a
/// head past its buffers, sent as 400), for the codes the gateway refuses with: 400, 405,
/// 413, 414, 494 and 501. Kong's proxy server leaves only 501 to nginx ([`kong_handles`]);
/// its admin and status servers have no `error_page` at all, so every refusal nginx makes
/// there while it reads a head, or a body (413, and 400 for broken chunked framing), is one
/// of these pages.
///
/// As nginx's special responses write it: `<html>`, the status and nginx's title for it in
/// `<title>` and in a centered `<h1>` (for 494, the title names the cause and the `<h1>`
/// says `400 Bad Request`, the cause centered under it), then the tail, every line ending
/// with CRLF. Stock nginx puts its server token under a rule in that tail
/// (`<hr><center>nginx</center>`); Kong's OpenResty build removes that line
/// (`build/openresty/patches/nginx-*_02-remove-server-tokens-from-special-responses-output.patch`
/// in Kong's repository), so the tail is only `</body>` and `</html>`. (nginx appends
/// comments after the page as padding for MSIE and Chrome user agents, under
/// `msie_padding`; these pages never have them, a deliberate deviation.) Served as
/// `text/html`, whatever the request accepts. `None` for other codes.
pub fn nginx_page(code: u16) -> Option<&'static str> {
    // (the page of a code: its title, its heading, and lines under the heading)
    macro_rules! page {
        ($title:literal, $h1:literal, $($under:literal),*) => {
            concat!(
                "<html>\r\n",
                "<head><title>",
                $title,
                "</title></head>\r\n",
                "<body>\r\n",
                "<center><h1>",
                $h1,
                "</h1></center>\r\n",
                $($under, "\r\n",)*
                "</body>\r\n",
                "</html>\r\n",
            )
        };
        ($title:literal) => {
            page!($title, $title,)
        };
    }
    match code {
        400 => Some(page!("400 Bad Request")),
        405 => Some(page!("405 Not Allowed")),
        413 => Some(page!("413 Request Entity Too Large")),
        414 => Some(page!("414 Request-URI Too Large")),
        494 => Some(page!(
            "400 Request Header Or Cookie Too Large",
            "400 Bad Request",
            "<center>Request Header Or Cookie Too Large</center>"
        )),
        // plain HTTP on a TLS listener
        497 => Some(page!(
            "400 The plain HTTP request was sent to HTTPS port",
            "400 Bad Request",
            "<center>The plain HTTP request was sent to HTTPS port</center>"
        )),
        501 => Some(page!("501 Not Implemented")),
        _ => None,
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
    /// `{"message":"…"}` as `application/json; charset=utf-8`: what Kong's error handler
    /// sends to a request that asks for gRPC but is not one (not HTTP/2 with a gRPC
    /// `Content-Type`), as `kong.response.exit` encodes its `{ message = … }` table.
    Message,
}

impl Format {
    /// Picks the format of an error the gateway's own phases produce, as Kong's
    /// `kong.response.error` does: gRPC for a gRPC request (a gRPC `Content-Type` over
    /// HTTP/2: Kong's `is_grpc_request`), otherwise by `Accept` ([`Format::of_accept`]),
    /// JSON when it is missing.
    pub fn negotiate(headers: &HeaderMap, http2: bool) -> Format {
        if http2
            && headers
                .get(header::CONTENT_TYPE)
                .is_some_and(|v| is_grpc(v.as_bytes()))
        {
            return Format::Grpc;
        }
        // (every Accept header, as Kong joins them)
        Format::of_accept_values(
            headers
                .get_all(header::ACCEPT)
                .iter()
                .map(HeaderValue::as_bytes),
        )
    }

    /// Picks the format of an error nginx itself raises in Kong (a bad request, a body too
    /// large, an upstream that fails or times out: the `error_page` statuses Kong's
    /// `kong/error_handlers.lua` renders). The first `Accept` value, or else the first
    /// `Content-Type`, or else `error_default_type`, is read as an `Accept` list; one that
    /// starts with `application/grpc` means gRPC.
    /// That gRPC answer goes only to a gRPC request (HTTP/2 with a gRPC `Content-Type`,
    /// Kong's `is_grpc_request`); to any other it is [`Format::Message`].
    pub fn nginx_error(headers: &HeaderMap, default: Format, http2: bool) -> Format {
        Format::nginx_error_of(
            headers.get(header::ACCEPT).map(HeaderValue::as_bytes),
            headers.get(header::CONTENT_TYPE).map(HeaderValue::as_bytes),
            default,
            http2,
        )
    }

    /// [`Format::nginx_error`] from the raw `Accept` and `Content-Type` values.
    pub fn nginx_error_of(
        accept: Option<&[u8]>,
        content_type: Option<&[u8]>,
        default: Format,
        http2: bool,
    ) -> Format {
        match accept.or(content_type) {
            Some(v) if is_grpc(v) => {
                if http2 && content_type.is_some_and(is_grpc) {
                    Format::Grpc
                } else {
                    Format::Message
                }
            }
            Some(v) => Format::of_accept(v),
            None => default,
        }
    }

    /// Kong's `get_response_type` on an `Accept` value: among the media ranges listed, the
    /// first one with the highest `q` decides (`application/json` or `*/*` or `application/*`
    /// JSON, `text/plain` or `text/*` text, `text/html`, `application/xml`; any other type
    /// JSON). Entries that are not media ranges are skipped; JSON when none is left.
    pub fn of_accept(accept: &[u8]) -> Format {
        Format::of_accept_values(std::iter::once(accept))
    }

    /// [`Format::of_accept`] on several `Accept` values read as one list.
    pub fn of_accept_values<'a>(values: impl Iterator<Item = &'a [u8]>) -> Format {
        let mut best = Format::Json;
        let mut max_q = 0u16;
        for item in values.flat_map(|v| v.split(|&b| b == b',')) {
            let Some((range, q)) = media_range(item.trim_ascii()) else {
                continue;
            };
            if q > max_q {
                max_q = q;
                best = Format::of_media_type(range);
            }
        }
        best
    }

    /// Kong's `get_mime_type` (with its default): the format of one media type.
    fn of_media_type(t: &[u8]) -> Format {
        match t {
            b"*/*" | b"application/*" | b"application/json" => Format::Json,
            b"text/*" | b"text/plain" => Format::Text,
            b"text/html" => Format::Html,
            b"application/xml" => Format::Xml,
            b"application/grpc" => Format::Grpc,
            _ => Format::Json,
        }
    }

    /// Reads an `error_default_type` setting: one of `application/json`, `application/xml`,
    /// `text/html`, `text/plain` (Kong's choices).
    pub fn parse_default_type(s: &str) -> Result<Format, String> {
        match s.trim() {
            "application/json" => Ok(Format::Json),
            "application/xml" => Ok(Format::Xml),
            "text/html" => Ok(Format::Html),
            "text/plain" => Ok(Format::Text),
            other => Err(format!(
                "invalid error_default_type '{other}': expected one of application/json, application/xml, text/html, text/plain"
            )),
        }
    }

    /// The `Content-Type` of the body.
    pub fn content_type(self) -> Option<&'static str> {
        match self {
            Format::Json => Some("application/json; charset=utf-8"),
            Format::Text => Some("text/plain; charset=utf-8"),
            Format::Html => Some("text/html; charset=utf-8"),
            Format::Xml => Some("application/xml; charset=utf-8"),
            Format::Grpc => None,
            Format::Message => Some("application/json; charset=utf-8"),
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
            Format::Message => format!("{{\"message\":\"{message}\"}}").into(),
        }
    }
}

/// Whether a `Content-Type` (or `Accept`) value is gRPC's (starts with `application/grpc`).
fn is_grpc(v: &[u8]) -> bool {
    v.starts_with(b"application/grpc")
}

/// One `Accept` entry as Kong's pattern reads it: a media range (`type/subtype`, each a
/// token of two or more characters, or `*`) at the start, then `;` parameters, of which a
/// `q` gives the weight in thousandths (1000 without one). The pattern is anchored at the
/// start only: it stops at the first parameter it cannot read, and ignores the rest.
/// `None` when the entry does not start with a media range.
fn media_range(item: &[u8]) -> Option<(&[u8], u16)> {
    let a = token(item);
    if a == 0 || item.get(a) != Some(&b'/') {
        return None;
    }
    let b = token(&item[a + 1..]);
    if b == 0 {
        return None;
    }
    let end = a + 1 + b;
    let mut q = 1000;
    let mut rest = &item[end..];
    // `\s*;\s*`, then `q=<weight>` or `name[=value]`
    while let Some(p) = rest.trim_ascii_start().strip_prefix(b";") {
        let p = p.trim_ascii_start();
        let after = if let Some((w, n)) = p
            .strip_prefix(b"q=")
            .or_else(|| p.strip_prefix(b"Q="))
            .and_then(weight)
        {
            q = w;
            &p[2 + n..]
        } else {
            let n = token(p);
            if n < 2 {
                break;
            }
            match p[n..].strip_prefix(b"=") {
                Some(v) => &v[v.iter().position(|&b| b == b';').unwrap_or(v.len())..],
                None => &p[n..],
            }
        };
        rest = after;
    }
    Some((&item[..end], q))
}

/// The length of the token at the start of `s` in Kong's pattern: `*`, or an alphanumeric
/// followed by one or more of alphanumerics and `-!#$&^_+.`; 0 when there is none.
fn token(s: &[u8]) -> usize {
    match s.first() {
        Some(b'*') => 1,
        Some(b) if b.is_ascii_alphanumeric() => {
            let n = 1 + s[1..]
                .iter()
                .take_while(|b| b.is_ascii_alphanumeric() || b"-!#$&^_+.".contains(b))
                .count();
            if n >= 2 { n } else { 0 }
        }
        _ => 0,
    }
}

/// The `q` weight at the start of `w` (`1`, `1.000`, `0`, `0.5`, up to three decimals) in
/// thousandths, and its length; `None` when `w` does not start with one.
fn weight(w: &[u8]) -> Option<(u16, usize)> {
    let (&first, rest) = w.split_first()?;
    if first != b'0' && first != b'1' {
        return None;
    }
    let Some(frac) = rest.strip_prefix(b".") else {
        return Some((if first == b'1' { 1000 } else { 0 }, 1));
    };
    let digits = frac
        .iter()
        .take(3)
        .take_while(|b| {
            if first == b'1' {
                **b == b'0'
            } else {
                b.is_ascii_digit()
            }
        })
        .count();
    let mut t = 0u16;
    for (i, d) in frac[..digits].iter().enumerate() {
        t += u16::from(d - b'0') * [100, 10, 1][i];
    }
    Some((if first == b'1' { 1000 } else { t }, 2 + digits))
}

/// The gRPC status code for an HTTP status, by Kong's table (`kong.response`'s
/// `HTTP_TO_GRPC_STATUS`, then any other 5xx as 500, 4xx as 400, 2xx as 200, else Unknown).
pub fn grpc_status(status: StatusCode) -> &'static str {
    match status.as_u16() {
        200..=299 => "0",
        401 => "16",
        403 => "7",
        404 => "5",
        409 => "6",
        429 => "8",
        499 => "1",
        501 => "12",
        503 => "14",
        504 => "4",
        400..=498 => "3",
        500..=599 => "13",
        _ => "2",
    }
}

/// The name of a gRPC status code (Kong's `GRPC_MESSAGES`): what `kong.response.error`
/// sends as `grpc-message` to a gRPC request.
pub fn grpc_status_name(code: &str) -> &'static str {
    match code {
        "0" => "OK",
        "1" => "Canceled",
        "3" => "InvalidArgument",
        "4" => "DeadlineExceeded",
        "5" => "NotFound",
        "6" => "AlreadyExists",
        "7" => "PermissionDenied",
        "8" => "ResourceExhausted",
        "9" => "FailedPrecondition",
        "10" => "Aborted",
        "11" => "OutOfRange",
        "12" => "Unimplemented",
        "13" => "Internal",
        "14" => "Unavailable",
        "15" => "DataLoss",
        "16" => "Unauthenticated",
        _ => "Unknown",
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

    /// nginx's pages as Kong's nginx writes them, byte for byte: stock nginx's format
    /// (`ngx_http_special_response.c`: `<html>`, title, centered heading, CRLF lines) less
    /// the `<hr><center>…</center>` line Kong's OpenResty patch removes.
    #[test]
    fn nginx_pages_are_kongs_nginx_pages() {
        let plain = |status: &str| {
            format!(
                "<html>\r\n<head><title>{status}</title></head>\r\n<body>\r\n\
                 <center><h1>{status}</h1></center>\r\n</body>\r\n</html>\r\n"
            )
        };
        assert_eq!(
            nginx_page(501),
            Some(
                "<html>\r\n<head><title>501 Not Implemented</title></head>\r\n<body>\r\n\
                 <center><h1>501 Not Implemented</h1></center>\r\n</body>\r\n</html>\r\n"
            )
        );
        assert_eq!(nginx_page(400).unwrap(), plain("400 Bad Request"));
        assert_eq!(nginx_page(405).unwrap(), plain("405 Not Allowed"));
        assert_eq!(nginx_page(414).unwrap(), plain("414 Request-URI Too Large"));
        assert_eq!(
            nginx_page(413).unwrap(),
            plain("413 Request Entity Too Large")
        );
        assert_eq!(
            nginx_page(494),
            Some(
                "<html>\r\n<head><title>400 Request Header Or Cookie Too Large</title></head>\r\n\
                 <body>\r\n<center><h1>400 Bad Request</h1></center>\r\n\
                 <center>Request Header Or Cookie Too Large</center>\r\n</body>\r\n</html>\r\n"
            )
        );
        for code in [400, 405, 413, 414, 494, 501] {
            let page = nginx_page(code).unwrap();
            assert!(!page.contains("<hr>"), "{code}: no server token line");
            assert!(!page.contains("nginx"), "{code}");
        }
        assert_eq!(nginx_page(404), None);
        assert_eq!(nginx_page(500), None);
    }

    #[test]
    fn kong_handles_what_its_error_page_lines_route_to_it() {
        assert!(!kong_handles(501));
        // plain HTTP on a TLS port: nginx's 497, sent as 400 but not routed to Kong
        assert!(!kong_handles(497));
        // every other status the gateway refuses or fails with is Kong's to render
        for kind in [
            Kind::NoRoute,
            Kind::NoService,
            Kind::ConnectRefused,
            Kind::ConnectTimeout,
            Kind::BadRequest,
            Kind::PayloadTooLarge,
            Kind::RequestTimeout,
            Kind::MethodNotAllowed,
            Kind::Internal,
        ] {
            assert!(kong_handles(kind.status().as_u16()), "{kind:?}");
        }
        for status in [400, 405, 414, 494] {
            assert!(kong_handles(status));
        }
    }

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
        assert_eq!(Format::negotiate(&h, true), Format::Json);
        h.insert(
            header::ACCEPT,
            HeaderValue::from_static("text/html,application/xhtml+xml"),
        );
        assert_eq!(Format::negotiate(&h, true), Format::Html);
        h.insert(header::ACCEPT, HeaderValue::from_static("text/plain"));
        assert_eq!(Format::negotiate(&h, true), Format::Text);
        h.insert(header::ACCEPT, HeaderValue::from_static("image/png"));
        assert_eq!(Format::negotiate(&h, true), Format::Json);
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc+proto"),
        );
        assert_eq!(Format::negotiate(&h, true), Format::Grpc);
    }

    #[test]
    fn accept_lists_are_weighed_as_kong_weighs_them() {
        let cases: &[(&str, Format)] = &[
            ("", Format::Json),
            ("*/*", Format::Json),
            ("text/*", Format::Text),
            ("application/*", Format::Json),
            ("application/xml", Format::Xml),
            // the first of the highest weight wins; an unknown type counts as JSON
            ("text/plain;q=0.5, text/html", Format::Html),
            ("text/plain, text/html", Format::Text),
            ("image/png, text/html", Format::Json),
            ("text/html;q=0.2, application/xml;q=0.9", Format::Xml),
            ("text/html ; charset=utf-8 ; q=1, text/plain", Format::Html),
            (
                "text/plain;level=1;q=0.3, application/xml;q=0.2",
                Format::Text,
            ),
            // a weight of 0 never wins
            ("text/plain;q=0", Format::Json),
            // the pattern is anchored at the start only: what it cannot read is ignored
            ("text/html;q=0.5abc, text/plain;q=0.4", Format::Html),
            ("text/html;q=1.5, text/plain", Format::Html),
            ("text/html garbage;q=0.1, text/plain;q=0.5", Format::Html),
            ("text/html;x;q=0.1, text/plain;q=0.5", Format::Html),
            // not media ranges: skipped
            ("html, t/plain, text/plain", Format::Text),
            ("Text/HTML", Format::Json),
            ("text/plain;Q=0.001, text/html;q=0.0001", Format::Text),
        ];
        for (accept, want) in cases {
            assert_eq!(Format::of_accept(accept.as_bytes()), *want, "{accept:?}");
        }
    }

    #[test]
    fn several_accept_headers_are_one_list() {
        let mut h = HeaderMap::new();
        h.append(header::ACCEPT, HeaderValue::from_static("text/plain;q=0.1"));
        h.append(header::ACCEPT, HeaderValue::from_static("text/html"));
        assert_eq!(Format::negotiate(&h, true), Format::Html);
    }

    #[test]
    fn nginx_errors_fall_back_to_content_type_then_the_default() {
        let mut h = HeaderMap::new();
        let f = |h: &HeaderMap, d| Format::nginx_error(h, d, false);
        assert_eq!(f(&h, Format::Text), Format::Text);
        assert_eq!(f(&h, Format::Html), Format::Html);
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
        assert_eq!(f(&h, Format::Text), Format::Html);
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        );
        assert_eq!(f(&h, Format::Text), Format::Json);
        h.insert(header::ACCEPT, HeaderValue::from_static("application/xml"));
        assert_eq!(f(&h, Format::Text), Format::Xml);
        // asking for gRPC: gRPC's answer for a gRPC request only (HTTP/2, gRPC type)
        h.insert(header::ACCEPT, HeaderValue::from_static("application/grpc"));
        assert_eq!(f(&h, Format::Text), Format::Message);
        assert_eq!(Format::nginx_error(&h, Format::Text, true), Format::Message);
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc+proto"),
        );
        assert_eq!(f(&h, Format::Text), Format::Message);
        assert_eq!(Format::nginx_error(&h, Format::Text, true), Format::Grpc);
        assert_eq!(
            Format::Message.body(
                "An invalid response was received from the upstream server",
                "x"
            ),
            &b"{\"message\":\"An invalid response was received from the upstream server\"}"[..]
        );
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

/// A request that gets no answer at all: its body stalled past `client_body_timeout`, or
/// the client left while sending it. nginx ends such a request without a response
/// (`ngx_http_finalize_request` terminates a request finalized with 408, or with the
/// connection's error set, `ngx_http_request.c`) and closes the connection, on the proxy,
/// admin and status servers alike; so does hyper when a listener's service fails with this.
/// Over HTTP/2 hyper resets the stream instead, with the reason it finds in the error's
/// `source()` chain (`hyper::Error::h2_reason`, on the service's error and on a body's
/// alike), here `PROTOCOL_ERROR`: nginx's reason for the stream of a request it ends after a
/// client timeout (`ngx_http_v2_close_stream`: `PROTOCOL_ERROR` when the connection timed
/// out, `INTERNAL_ERROR` otherwise). (A client that left has reset the stream or closed the
/// connection itself: no reset is sent then, by nginx or by `h2`.) A phase that meets such a
/// body answers with [`unanswered`], which the listener's entry point turns into this error.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Unanswered;

impl fmt::Display for Unanswered {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the request body stalled or broke off: the request gets no answer")
    }
}

impl std::error::Error for Unanswered {
    /// The HTTP/2 stream reset nginx sends for such a request: `PROTOCOL_ERROR`.
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        static RESET: std::sync::LazyLock<h2::Error> =
            std::sync::LazyLock::new(|| h2::Error::from(h2::Reason::PROTOCOL_ERROR));
        Some(&*RESET)
    }
}

/// The mark of a request that gets no answer ([`Unanswered`]), in place of an answer.
pub(crate) fn unanswered() -> http::Response<crate::body::ProxyBody> {
    let mut r = http::Response::new(crate::body::ProxyBody::empty());
    r.extensions_mut().insert(Unanswered);
    r
}

/// Whether `r` is the mark of a request that gets no answer ([`unanswered`]).
pub(crate) fn is_unanswered<B>(r: &http::Response<B>) -> bool {
    r.extensions().get::<Unanswered>().is_some()
}
