//! HTTP/1.1 to upstreams, driven by the request's own task.
//!
//! hyper's client runs every connection as a task of its own and hands each request to it
//! through a channel, with its answer coming back through another: two task wake-ups and
//! two channel operations per request, and a copy of the request head kept for retries.
//! Here the request's task writes the head (and body) itself and reads the answer's head;
//! the body is read through [`RawBody`], which gives the connection back to the
//! [`Pool`] when it is read to the end. The head is encoded from the borrowed request parts,
//! so a retry on another peer re-encodes them rather than keeping a copy.
//!
//! Parsing is `httparse`'s (hyper's parser, with its strict defaults). Response framing
//! follows RFC 9112 §6.3: no body for HEAD, 1xx, 204 and 304; chunked when it is the last
//! transfer coding; else `Content-Length` (every value equal, digits only); else until the
//! connection closes. Interim 1xx answers other than 101 are skipped.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderName};
use http::{HeaderMap, HeaderValue, Method, StatusCode, Version};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;

use crate::h1_fast::span;
use crate::upstream::{Conn, Io, Pool, WriteTimed};

/// Longest response head accepted (hyper's default buffer limit is about the same).
const MAX_HEAD: usize = 64 * 1024;
/// Most response headers accepted.
const MAX_HEADERS: usize = 100;
/// Longest chunk-size line or trailer section accepted.
const MAX_LINE: usize = 4096;

/// The headers the gateway sets on a message it forwards, kept beside the forwarded head
/// rather than put into a `HeaderMap` (each insertion or removal hashes): on the upstream
/// request, Kong's `proxy_set_header`s (Host, `X-Forwarded-*`, `X-Real-IP`, `Via`, ...), which
/// [`encode_head`] writes after the client's headers of other names; on an upstream's answer,
/// `Via`, `Server`, the latency headers and the request id, which the fast path writes after the
/// upstream's headers of other names ([`SetHeaders::replaces_raw`]). [`SetHeaders::apply`] puts
/// them into a `HeaderMap` where one is used (hyper's client and server). A name set to `None`
/// removes the header of that name; names not listed pass through.
#[derive(Debug, Clone, Default)]
pub struct SetHeaders {
    /// On the heap: the request phases move this value around.
    items: Vec<SetItem>,
    /// Bit `len % 64` set for the length of each replacing name: most names are told apart
    /// from all of them by their length alone.
    lens: u64,
    /// The upstream `Host`, set per try ([`SetHeaders::set_host`]); `None` leaves the
    /// client's.
    host: Option<HeaderValue>,
}

impl SetHeaders {
    /// Room for `n` headers.
    pub fn with_capacity(n: usize) -> Self {
        SetHeaders {
            items: Vec::with_capacity(n),
            lens: 0,
            host: None,
        }
    }

    /// Sets `name` (each name once) to `value`; `None` (or an empty value) removes the
    /// client's header.
    #[inline]
    pub fn set(&mut self, name: &'static HeaderName, value: Option<HeaderValue>) {
        debug_assert!(
            !self.items.iter().any(|i| i.name == name),
            "{name} set twice"
        );
        self.lens |= len_bit(name.as_str().len());
        self.items.push(SetItem {
            name,
            value: value.filter(|v| !v.is_empty()),
            append: false,
        });
    }

    /// Adds a `name` header after the others of that name (`Set-Cookie`).
    pub fn append(&mut self, name: &'static HeaderName, value: HeaderValue) {
        self.items.push(SetItem {
            name,
            value: Some(value),
            append: true,
        });
    }

    /// Sets the upstream `Host` (`None`: the client's stays).
    pub fn set_host(&mut self, host: Option<HeaderValue>) {
        self.host = host;
    }

    /// Whether the header `name` (any case) gives way to one set here.
    pub fn replaces_raw(&self, name: &[u8]) -> bool {
        (self.host.is_some() && name.eq_ignore_ascii_case(b"host"))
            || (self.lens & len_bit(name.len()) != 0
                && self
                    .items
                    .iter()
                    .any(|i| !i.append && name.eq_ignore_ascii_case(i.name.as_str().as_bytes())))
    }

    /// Puts the headers into `h` (`Host` too unless `with_host` is false).
    pub fn apply(&self, h: &mut HeaderMap, with_host: bool) {
        for i in &self.items {
            match (&i.value, i.append) {
                (Some(v), true) => {
                    h.append(i.name, v.clone());
                }
                (Some(v), false) => {
                    h.insert(i.name, v.clone());
                }
                (None, _) => {
                    h.remove(i.name);
                }
            }
        }
        if with_host && let Some(v) = &self.host {
            h.insert(header::HOST, v.clone());
        }
    }

    /// Writes the set headers (`name: value` lines).
    /// (The upstream `Host` is not among them: [`SetHeaders::write_host`].)
    pub fn write(&self, out: &mut Vec<u8>) {
        for i in &self.items {
            if let Some(v) = &i.value {
                line(out, i.name.as_str().as_bytes(), v.as_bytes());
            }
        }
    }

    /// Writes the upstream `Host` line, if one is set: first after the request line, where
    /// nginx and Kong put it (some upstreams and firewalls look for it there).
    pub fn write_host(&self, out: &mut Vec<u8>) {
        if let Some(v) = &self.host {
            line(out, header::HOST.as_str().as_bytes(), v.as_bytes());
        }
    }
}

/// Appends a `name: value` header line (both HTTP/1.1 writers' one way of writing it).
pub(crate) fn line(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

#[inline]
fn len_bit(len: usize) -> u64 {
    1 << (len % 64)
}

/// One header of a [`SetHeaders`].
#[derive(Debug, Clone)]
struct SetItem {
    name: &'static HeaderName,
    /// `None`: removed.
    value: Option<HeaderValue>,
    /// Added after the others of its name rather than replacing them.
    append: bool,
}

/// An HTTP/1.1 connection to an upstream.
pub struct H1Conn {
    io: WriteTimed<Box<dyn Io>>,
    buf: BytesMut,
    out: Vec<u8>,
    /// Where a small request waits to be written at the end of the batch
    /// ([`crate::batch_write`]); `None`: written in place.
    slot: Option<crate::batch_write::Slot>,
}

impl std::fmt::Debug for H1Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H1Conn")
            .field("buffered", &self.buf.len())
            .finish_non_exhaustive()
    }
}

/// How a response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body.
    Empty,
    /// This many bytes.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
    /// Until the connection closes.
    Eof,
}

/// Why an exchange failed.
#[derive(Debug)]
pub enum ExchangeError {
    /// Nothing of the request was written (a stream body is untouched): the request can go
    /// on another connection.
    NotSent(io::Error),
    /// The request was (at least partly) written; no usable answer came.
    Failed(io::Error),
    /// The client's body, streamed, failed (malformed, cut short, too large or stalled: its
    /// [`crate::upstream::BodyWatch`] says which): the client's fault, not the upstream's.
    /// Part of the request may have been written.
    Client(io::Error),
}

impl ExchangeError {
    /// The underlying error.
    pub fn io(&self) -> &io::Error {
        match self {
            ExchangeError::NotSent(e) | ExchangeError::Failed(e) | ExchangeError::Client(e) => e,
        }
    }
}

fn invalid(msg: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// The request body to send.
pub enum SendBody<'a> {
    /// A complete body (possibly empty), kept by the caller for retries.
    Full(&'a Bytes),
    /// The client's body, streamed; taken when its first byte is about to be written.
    Stream(&'a mut Option<crate::upstream::ClientBody>),
}

impl H1Conn {
    /// A connection over `io`.
    pub fn new(io: WriteTimed<Box<dyn Io>>) -> H1Conn {
        H1Conn::with_slot(io, None)
    }

    /// A connection over `io`, whose small complete requests are written at the end of the
    /// scheduler's batch through `slot` (the slot of the [`crate::batch_write::Plain`]
    /// stream inside `io`).
    pub fn with_slot(
        io: WriteTimed<Box<dyn Io>>,
        slot: Option<crate::batch_write::Slot>,
    ) -> H1Conn {
        H1Conn {
            io,
            buf: BytesMut::with_capacity(8192),
            out: Vec::with_capacity(1024),
            slot,
        }
    }

    /// Whether an idle connection can no longer be used: the peer closed it, it failed, or
    /// it sent bytes nobody asked for. No system call unless the socket became readable.
    pub fn is_closed(&mut self) -> bool {
        if !self.buf.is_empty() {
            return true;
        }
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut probe = [0u8; 1];
        let mut rb = tokio::io::ReadBuf::new(&mut probe);
        // Ready means end of stream, an error, or unexpected bytes: unusable either way.
        tokio::io::AsyncRead::poll_read(Pin::new(&mut self.io), &mut cx, &mut rb).is_ready()
    }

    /// Whether bytes beyond the last answer were received (the connection is then not
    /// reused).
    pub fn has_leftover(&self) -> bool {
        !self.buf.is_empty()
    }

    /// Writes a request and reads its answer's head ([`send_request`](Self::send_request),
    /// then [`read_answer`](Self::read_answer)).
    pub async fn exchange(
        &mut self,
        parts: &http::request::Parts,
        set: &SetHeaders,
        body: SendBody<'_>,
    ) -> Result<(RawHead, Framing, bool), ExchangeError> {
        // (the two steps inline, not through the two methods below: one state machine less
        // on every request of the fast path)
        let mut out = std::mem::take(&mut self.out);
        out.clear();
        let r = self.send(&mut out, parts, set, body).await;
        self.out = out;
        r?;
        let head_req = parts.method == Method::HEAD;
        loop {
            let (rp, framing, reusable) = self.read_head(head_req).await.map_err(|e| {
                // (a request written at the end of the batch reports its write's failure here)
                if crate::batch_write::is_not_written(&e) {
                    ExchangeError::NotSent(e)
                } else {
                    ExchangeError::Failed(e)
                }
            })?;
            if !rp.status.is_informational() || rp.status == StatusCode::SWITCHING_PROTOCOLS {
                return Ok((rp, framing, reusable));
            }
        }
    }

    /// Writes a request (a streamed client body at the client's pace: the body itself holds
    /// the client to `client_body_timeout`, [`crate::upstream::ClientBody`]).
    pub async fn send_request(
        &mut self,
        parts: &http::request::Parts,
        set: &SetHeaders,
        body: SendBody<'_>,
    ) -> Result<(), ExchangeError> {
        let mut out = std::mem::take(&mut self.out);
        out.clear();
        let r = self.send(&mut out, parts, set, body).await;
        self.out = out;
        r
    }

    /// Reads the head of the answer to the request just sent, past informational answers.
    /// `head_req`: the request is a HEAD (its answer has no body whatever its headers say).
    pub async fn read_answer(
        &mut self,
        head_req: bool,
    ) -> Result<(RawHead, Framing, bool), ExchangeError> {
        loop {
            let (rp, framing, reusable) = self
                .read_head(head_req)
                .await
                .map_err(ExchangeError::Failed)?;
            if rp.status.is_informational() && rp.status != StatusCode::SWITCHING_PROTOCOLS {
                continue;
            }
            return Ok((rp, framing, reusable));
        }
    }

    async fn send(
        &mut self,
        out: &mut Vec<u8>,
        parts: &http::request::Parts,
        set: &SetHeaders,
        body: SendBody<'_>,
    ) -> Result<(), ExchangeError> {
        use tokio::io::AsyncWriteExt;
        match body {
            SendBody::Full(b) => {
                let framing = if !b.is_empty() || expects_body(&parts.method) {
                    Some(b.len() as u64)
                } else {
                    None
                };
                encode_head(
                    out,
                    parts,
                    set,
                    framing.map_or(ReqFraming::None, ReqFraming::Length),
                );
                if crate::batch_write::defer_message(self.slot.as_ref(), out, b) {
                    return Ok(());
                }
                let mut buf = Buf::chain(&out[..], b.clone());
                let total = buf.remaining();
                self.io.write_all_buf(&mut buf).await.map_err(|e| {
                    if buf.remaining() == total {
                        ExchangeError::NotSent(e)
                    } else {
                        ExchangeError::Failed(e)
                    }
                })
            }
            SendBody::Stream(slot) => {
                let exact = slot.as_ref().and_then(|b| b.size_hint().exact());
                let framing = match exact {
                    Some(n) => ReqFraming::Length(n),
                    None => ReqFraming::Chunked,
                };
                encode_head(out, parts, set, framing);
                self.io
                    .write_all(out)
                    .await
                    .map_err(ExchangeError::NotSent)?;
                let Some(body) = slot.take() else {
                    return Ok(());
                };
                write_body(&mut self.io, out, body, exact)
                    .await
                    .map_err(|e| match e {
                        BodyError::Read(e) => ExchangeError::Client(e),
                        BodyError::Write(e) => ExchangeError::Failed(e),
                    })
            }
        }
    }

    /// Reads more bytes into the buffer; `Ok(0)` at the end of the stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.buf.capacity() - self.buf.len() < 4096 {
            self.buf.reserve(8192);
        }
        tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.buf)
    }

    async fn fill(&mut self) -> io::Result<usize> {
        std::future::poll_fn(|cx| self.poll_fill(cx)).await
    }

    async fn read_head(&mut self, head_req: bool) -> io::Result<(RawHead, Framing, bool)> {
        let mut lines: Vec<[usize; 4]> = Vec::with_capacity(16);
        let mut length: Option<u64> = None;
        let mut chunked = false;
        let mut te = false;
        let mut close;
        // names listed in `Connection` besides close, keep-alive and upgrade: removed too
        let mut named: Vec<(usize, usize)> = Vec::new();
        // `Upgrade` lines, and where the last one's value is
        let mut upgrades = 0usize;
        let mut upgrade_value = (0usize, 0usize);
        let mut cl_lines = 0usize;
        let mut bad_length = false;
        let mut seen = Seen::default();
        let (n, status, version, reason) = loop {
            if !self.buf.is_empty() {
                let mut hdrs = [httparse::EMPTY_HEADER; MAX_HEADERS];
                let mut r = httparse::Response::new(&mut hdrs);
                match r.parse(&self.buf) {
                    Ok(httparse::Status::Complete(n)) => {
                        let version = if r.version == Some(0) {
                            Version::HTTP_10
                        } else {
                            Version::HTTP_11
                        };
                        close = version == Version::HTTP_10;
                        // One pass over the lines: the framing and hop-by-hop headers are
                        // read and left out, the others kept (as spans of the head).
                        for h in r.headers.iter() {
                            let name = h.name.as_bytes();
                            let value = h.value;
                            let (vs, ve) = span(&self.buf, value);
                            let keep = match classify(name) {
                                Name::ContentLength => {
                                    cl_lines += 1;
                                    match parse_length(value) {
                                        Some(n) if length.is_none_or(|l| l == n) => {
                                            length = Some(n);
                                        }
                                        // invalid or conflicting: refused below
                                        _ => bad_length = true,
                                    }
                                    true
                                }
                                Name::TransferEncoding => {
                                    // hop-by-hop (the coding is this connection's, read
                                    // into `framing`)
                                    te = true;
                                    chunked =
                                        value.rsplit(|b| *b == b',').next().is_some_and(|t| {
                                            t.trim_ascii().eq_ignore_ascii_case(b"chunked")
                                        });
                                    false
                                }
                                Name::Connection => {
                                    let mut at = vs;
                                    for t in value.split(|b| *b == b',') {
                                        let start = at + (t.len() - t.trim_ascii_start().len());
                                        at += t.len() + 1;
                                        let t = t.trim_ascii();
                                        if t.eq_ignore_ascii_case(b"close") {
                                            close = true;
                                        } else if t.eq_ignore_ascii_case(b"keep-alive") {
                                            if version == Version::HTTP_10 {
                                                close = false;
                                            }
                                        } else if !t.is_empty()
                                            && !t.eq_ignore_ascii_case(b"upgrade")
                                        {
                                            named.push((start, start + t.len()));
                                        }
                                    }
                                    false
                                }
                                Name::Upgrade => {
                                    // decided below, once every line is read
                                    upgrades += 1;
                                    upgrade_value = (vs, ve);
                                    true
                                }
                                class => {
                                    seen.note(class, (vs, ve), value);
                                    class != Name::HopByHop
                                }
                            };
                            if keep {
                                let (ns, ne) = span(&self.buf, name);
                                lines.push([ns, ne, vs, ve]);
                            }
                        }
                        // (`HTTP/1.1 200` with no reason phrase: httparse's reason is a
                        // static empty string, not a part of the buffer)
                        let reason = r
                            .reason
                            .and_then(|s| crate::h1_fast::span_within(&self.buf, s.as_bytes()));
                        let code = r.code.unwrap_or(0);
                        break (n, code, version, reason);
                    }
                    Ok(httparse::Status::Partial) if self.buf.len() < MAX_HEAD => {}
                    Ok(httparse::Status::Partial) => {
                        return Err(invalid("upstream response head too large"));
                    }
                    Err(_) => return Err(invalid("invalid upstream response head")),
                }
            }
            if self.fill().await? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "upstream closed the connection before a complete response head",
                ));
            }
        };
        let head = self.buf.split_to(n).freeze();
        let status =
            StatusCode::from_u16(status).map_err(|_| invalid("invalid upstream status"))?;
        if bad_length {
            return Err(invalid("invalid or conflicting upstream Content-Length"));
        }
        if !named.is_empty() {
            lines.retain(|&[ns, ne, _, _]| {
                !named
                    .iter()
                    .any(|&(s, e)| head[s..e].eq_ignore_ascii_case(&head[ns..ne]))
            });
            // what is left of the headers noted
            seen = Seen::default();
            for &[ns, ne, vs, ve] in &lines {
                seen.note(classify(&head[ns..ne]), (vs, ve), &head[vs..ve]);
            }
        }
        // Kong's header filter drops an `Upgrade` that is not the one asked upstream
        // (`$upstream_upgrade`); requests sent here never ask for one
        if upgrades > 0 && !keeps_upgrade(upgrades, &head[upgrade_value.0..upgrade_value.1], b"") {
            lines.retain(|&[ns, ne, _, _]| !head[ns..ne].eq_ignore_ascii_case(b"upgrade"));
        }
        if te && cl_lines > 0 {
            // The transfer coding overrides the length, which is not forwarded (RFC 9112
            // §6.3: a sender must remove it).
            lines.retain(|&[ns, ne, _, _]| !head[ns..ne].eq_ignore_ascii_case(b"content-length"));
        }
        let framing = if head_req
            || status.is_informational()
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED
        {
            Framing::Empty
        } else if te {
            if chunked {
                Framing::Chunked
            } else {
                Framing::Eof
            }
        } else {
            match length {
                Some(0) => Framing::Empty,
                Some(n) => Framing::Length(n),
                None => Framing::Eof,
            }
        };
        // A message with both a transfer coding and a length may have been meant to smuggle
        // one into the other: its connection is not reused (RFC 9112 §6.3).
        let smuggling = te && length.is_some();
        let reusable = !close
            && !smuggling
            && framing != Framing::Eof
            && status != StatusCode::SWITCHING_PROTOCOLS;
        let head = RawHead {
            status,
            version,
            head,
            reason,
            lines,
            seen,
        };
        Ok((head, framing, reusable))
    }
}

/// Response header names the client and the proxy look at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Name {
    ContentLength,
    TransferEncoding,
    Connection,
    /// `Upgrade`: forwarded only when it names the protocol asked for ([`keeps_upgrade`]).
    Upgrade,
    /// `Keep-Alive`: not forwarded (nginx's upstream module never passes it on).
    HopByHop,
    Via,
    Server,
    Date,
    AccelBuffering,
    Other,
}

/// Whether an answer's `Upgrade` passes Kong's header filter (3.x `kong/runloop/handler.lua`,
/// `header_filter.before`), which drops it unless it is, without regard to case, the
/// protocol the request asked the upstream for (`$upstream_upgrade`: `websocket` for a
/// WebSocket upgrade, else empty). `lines`: how many `Upgrade` lines the answer has, `value`:
/// the last one's. Several lines are one value to nginx (joined by `, `), which equals no
/// single protocol name.
pub(crate) fn keeps_upgrade(lines: usize, value: &[u8], asked: &[u8]) -> bool {
    lines == 1 && value.trim_ascii().eq_ignore_ascii_case(asked)
}

/// The [`Name`] of a header name as read (any case): one comparison at most.
fn classify(name: &[u8]) -> Name {
    let is = |s: &[u8]| name.eq_ignore_ascii_case(s);
    match name.len() {
        3 if is(b"via") => Name::Via,
        4 if is(b"date") => Name::Date,
        6 if is(b"server") => Name::Server,
        7 if is(b"upgrade") => Name::Upgrade,
        10 if is(b"connection") => Name::Connection,
        10 if is(b"keep-alive") => Name::HopByHop,
        14 if is(b"content-length") => Name::ContentLength,
        17 if is(b"transfer-encoding") => Name::TransferEncoding,
        17 if is(b"x-accel-buffering") => Name::AccelBuffering,
        _ => Name::Other,
    }
}

/// What a [`RawHead`] holds of the headers the proxy looks at, noted while it is read.
#[derive(Debug, Clone, Copy, Default)]
struct Seen {
    /// The first `Via` value.
    via: Option<(usize, usize)>,
    server: bool,
    date: bool,
    /// `X-Accel-Buffering: no`
    unbuffered: bool,
}

impl Seen {
    fn note(&mut self, class: Name, span: (usize, usize), value: &[u8]) {
        match class {
            Name::Via if self.via.is_none() => self.via = Some(span),
            Name::Server => self.server = true,
            Name::Date => self.date = true,
            Name::AccelBuffering => {
                self.unbuffered = self.unbuffered || value.eq_ignore_ascii_case(b"no");
            }
            _ => {}
        }
    }
}

/// An upstream response head as read: its status, its bytes, and where each header to
/// forward is in them. Left out, as nginx and Kong's header filter leave them out:
/// `Connection`, `Keep-Alive` and the transfer coding, the headers `Connection` names (but
/// `close`, `keep-alive` and `upgrade`), and an `Upgrade` ([`keeps_upgrade`]: the requests
/// sent here never ask for one); `Proxy-Authenticate`, `Proxy-Connection` and the other
/// headers pass, as Kong 3.x passes them. The proxy forwards it without building a `HeaderMap`
/// ([`RawHead::into_parts`] builds one where one is needed).
#[derive(Debug, Clone)]
pub struct RawHead {
    /// The status.
    pub status: StatusCode,
    /// The upstream's HTTP version.
    pub version: Version,
    head: Bytes,
    reason: Option<(usize, usize)>,
    /// name start, name end, value start, value end
    lines: Vec<[usize; 4]>,
    seen: Seen,
}

impl RawHead {
    /// The headers in order, as `(name, value)` bytes.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.lines
            .iter()
            .map(|&[ns, ne, vs, ve]| (&self.head[ns..ne], &self.head[vs..ve]))
    }

    /// The first `Via` value.
    pub fn via(&self) -> Option<&[u8]> {
        self.seen.via.map(|(s, e)| &self.head[s..e])
    }

    /// Whether it has a `Server` header.
    pub fn has_server(&self) -> bool {
        self.seen.server
    }

    /// Whether it has a `Date` header.
    pub fn has_date(&self) -> bool {
        self.seen.date
    }

    /// Whether it says `X-Accel-Buffering: no` (not to be buffered).
    pub fn unbuffered(&self) -> bool {
        self.seen.unbuffered
    }

    /// The reason phrase as sent (possibly empty), as [`RawHead::into_parts`] keeps it.
    pub fn reason(&self) -> Option<&[u8]> {
        self.reason.map(|(s, e)| &self.head[s..e])
    }

    /// The head as `http` parts (names lower-cased, values shared with the head's bytes).
    pub fn into_parts(self) -> io::Result<http::response::Parts> {
        let (mut rp, ()) = http::Response::new(()).into_parts();
        rp.status = self.status;
        rp.version = self.version;
        if let Some((s, e)) = self.reason
            && self.status.canonical_reason().map(str::as_bytes) != Some(&self.head[s..e])
            && let Ok(r) = hyper::ext::ReasonPhrase::try_from(self.head.slice(s..e))
        {
            rp.extensions.insert(r);
        }
        let mut headers = HeaderMap::with_capacity(self.lines.len() + 6);
        for &[ns, ne, vs, ve] in &self.lines {
            let name = HeaderName::from_bytes(&self.head[ns..ne])
                .map_err(|_| invalid("invalid upstream header name"))?;
            let value = HeaderValue::from_maybe_shared(self.head.slice(vs..ve))
                .map_err(|_| invalid("invalid upstream header value"))?;
            headers.append(name, value);
        }
        rp.headers = headers;
        Ok(rp)
    }
}

/// Why [`write_body`] failed.
#[derive(Debug)]
pub(crate) enum BodyError {
    /// Reading the body failed: its source failed, or it did not match its announced length.
    Read(io::Error),
    /// Writing it out failed.
    Write(io::Error),
}

impl From<BodyError> for io::Error {
    fn from(e: BodyError) -> io::Error {
        match e {
            BodyError::Read(e) | BodyError::Write(e) => e,
        }
    }
}

/// Writes a body's data frames after a head that announced `length` (`Some`: the frames as
/// they are, which must add up to exactly that many bytes; nothing beyond it is written) or
/// chunked coding (`None`: each frame one chunk, then the last chunk). The request bodies sent upstream and the answers of
/// the fast path ([`crate::h1_fast`]) both go through here.
pub(crate) async fn write_body<W, B>(
    io: &mut W,
    out: &mut Vec<u8>,
    mut body: B,
    length: Option<u64>,
) -> Result<(), BodyError>
where
    W: tokio::io::AsyncWrite + Unpin,
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    use tokio::io::AsyncWriteExt;
    let mut sent = 0u64;
    loop {
        let Some(frame) = body.frame().await else {
            break;
        };
        let Ok(data) = frame
            .map_err(|e| BodyError::Read(io::Error::other(e)))?
            .into_data()
        else {
            continue;
        };
        if data.is_empty() {
            continue;
        }
        sent += data.len() as u64;
        match length {
            Some(n) if sent > n => {
                return Err(BodyError::Read(invalid(
                    "body longer than its Content-Length",
                )));
            }
            Some(_) => io.write_all(&data).await.map_err(BodyError::Write)?,
            None => {
                out.clear();
                out.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
                let mut b = Buf::chain(Buf::chain(&out[..], data), &b"\r\n"[..]);
                io.write_all_buf(&mut b).await.map_err(BodyError::Write)?;
            }
        }
    }
    match length {
        Some(n) if n != sent => Err(BodyError::Read(invalid(
            "body shorter than its Content-Length",
        ))),
        Some(_) => Ok(()),
        None => io.write_all(b"0\r\n\r\n").await.map_err(BodyError::Write),
    }
}

/// Whether a method's request carries `Content-Length: 0` when its body is empty (as
/// hyper's client sends it).
fn expects_body(m: &Method) -> bool {
    matches!(*m, Method::POST | Method::PUT | Method::PATCH)
}

fn parse_length(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    v.iter().try_fold(0u64, |n, d| {
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

/// The framing written after a request head.
#[derive(Debug, Clone, Copy)]
enum ReqFraming {
    None,
    Length(u64),
    Chunked,
}

/// Encodes a request head: the parts' headers except those `set` replaces, then `set`'s; the
/// parts' own framing headers give way to `framing`.
fn encode_head(out: &mut Vec<u8>, p: &http::request::Parts, set: &SetHeaders, framing: ReqFraming) {
    out.extend_from_slice(p.method.as_str().as_bytes());
    out.push(b' ');
    match p.uri.path_and_query() {
        Some(pq) => out.extend_from_slice(pq.as_str().as_bytes()),
        None => out.push(b'/'),
    }
    out.extend_from_slice(b" HTTP/1.1\r\n");
    set.write_host(out);
    for (name, value) in &p.headers {
        if name == header::CONTENT_LENGTH
            || name == header::TRANSFER_ENCODING
            || set.replaces_raw(name.as_str().as_bytes())
        {
            continue;
        }
        line(out, name.as_str().as_bytes(), value.as_bytes());
    }
    set.write(out);
    match framing {
        ReqFraming::None => {}
        ReqFraming::Length(n) => {
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        ReqFraming::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
    }
    out.extend_from_slice(b"\r\n");
}

#[derive(Debug, Clone, Copy)]
enum State {
    /// This many bytes left.
    Length(u64),
    /// At a chunk-size line.
    ChunkSize,
    /// This many bytes of chunk data left.
    ChunkData(u64),
    /// At the CRLF after chunk data.
    ChunkEnd,
    /// In the trailer section after the last chunk.
    Trailers,
    /// Until the connection closes.
    Eof,
    /// Finished.
    Done,
}

/// A response body read from an [`H1Conn`]; the connection goes back to the pool when the
/// body is read to the end (when the connection can be reused).
pub struct RawBody {
    conn: Option<(Arc<Pool>, Conn)>,
    state: State,
    reusable: bool,
    remaining: Option<u64>,
}

impl std::fmt::Debug for RawBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawBody")
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl RawBody {
    /// The body of an answer read from `conn` with `framing`.
    pub fn new(pool: Arc<Pool>, conn: Conn, framing: Framing, reusable: bool) -> RawBody {
        let (state, remaining) = match framing {
            Framing::Empty => (State::Done, Some(0)),
            Framing::Length(n) => (State::Length(n), Some(n)),
            Framing::Chunked => (State::ChunkSize, None),
            Framing::Eof => (State::Eof, None),
        };
        let mut b = RawBody {
            conn: Some((pool, conn)),
            state,
            reusable,
            remaining,
        };
        if matches!(b.state, State::Done) {
            b.finish();
        }
        b
    }

    fn finish(&mut self) {
        self.state = State::Done;
        if let Some((pool, conn)) = self.conn.take()
            && self.reusable
            && !conn.h1.has_leftover()
        {
            pool.put(conn);
        }
    }

    fn fail(&mut self, e: io::Error) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        self.conn = None;
        self.state = State::Done;
        Poll::Ready(Some(Err(e)))
    }
}

/// Parses a chunk-size line (`1a;ext=v`), without its CRLF.
fn chunk_size(line: &[u8]) -> Option<u64> {
    let hex = line.split(|b| *b == b';').next()?.trim_ascii_end();
    if hex.is_empty() || hex.len() > 15 {
        return None;
    }
    hex.iter().try_fold(0u64, |n, b| {
        let d = (*b as char).to_digit(16)?;
        Some(n * 16 + u64::from(d))
    })
}

impl Body for RawBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        loop {
            let Some((_, conn)) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            let c = &mut conn.h1;
            match this.state {
                State::Done => {
                    this.finish();
                    return Poll::Ready(None);
                }
                State::Length(0) => {
                    this.finish();
                    return Poll::Ready(None);
                }
                State::Length(n) | State::ChunkData(n) if !c.buf.is_empty() => {
                    let take = (c.buf.len() as u64).min(n) as usize;
                    let data = c.buf.split_to(take).freeze();
                    let left = n - take as u64;
                    this.state = match this.state {
                        State::Length(_) => State::Length(left),
                        _ if left == 0 => State::ChunkEnd,
                        _ => State::ChunkData(left),
                    };
                    if matches!(this.state, State::Length(0)) {
                        this.finish();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                State::Eof if !c.buf.is_empty() => {
                    let data = c.buf.split().freeze();
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                State::ChunkSize if c.buf.len() >= 2 => {
                    match c.buf.windows(2).position(|w| w == b"\r\n") {
                        Some(i) => {
                            let Some(size) = chunk_size(&c.buf[..i]) else {
                                return this.fail(invalid("invalid chunk size in upstream body"));
                            };
                            c.buf.advance(i + 2);
                            this.state = if size == 0 {
                                State::Trailers
                            } else {
                                State::ChunkData(size)
                            };
                            continue;
                        }
                        None if c.buf.len() > MAX_LINE => {
                            return this.fail(invalid("chunk size line too long"));
                        }
                        None => {}
                    }
                }
                State::ChunkEnd if c.buf.len() >= 2 => {
                    if &c.buf[..2] != b"\r\n" {
                        return this.fail(invalid("missing CRLF after chunk data"));
                    }
                    c.buf.advance(2);
                    this.state = State::ChunkSize;
                    continue;
                }
                State::Trailers if c.buf.len() >= 2 => {
                    // Trailer fields are dropped (HTTP/1.1 clients rarely ask for them);
                    // the section ends with an empty line.
                    match c.buf.windows(2).position(|w| w == b"\r\n") {
                        Some(0) => {
                            c.buf.advance(2);
                            this.finish();
                            return Poll::Ready(None);
                        }
                        Some(i) => {
                            c.buf.advance(i + 2);
                            continue;
                        }
                        None if c.buf.len() > MAX_LINE => {
                            return this.fail(invalid("upstream trailer too long"));
                        }
                        None => {}
                    }
                }
                _ => {}
            }
            // More bytes are needed.
            match ready!(c.poll_fill(cx)) {
                Ok(0) if matches!(this.state, State::Eof) => {
                    // The end of a body delimited by the connection closing.
                    this.reusable = false;
                    this.finish();
                    return Poll::Ready(None);
                }
                Ok(0) => {
                    return this.fail(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "upstream closed the connection in the middle of the body",
                    ));
                }
                Ok(_) => {}
                Err(e) => return this.fail(e),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.state, State::Done | State::Length(0))
    }

    fn size_hint(&self) -> SizeHint {
        match (self.state, self.remaining) {
            (State::Done, _) => SizeHint::with_exact(0),
            (State::Length(n), Some(_)) => SizeHint::with_exact(n),
            _ => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_sizes() {
        assert_eq!(chunk_size(b"1a"), Some(26));
        assert_eq!(chunk_size(b"0"), Some(0));
        assert_eq!(chunk_size(b"A;name=value"), Some(10));
        assert_eq!(chunk_size(b""), None);
        assert_eq!(chunk_size(b"g"), None);
        assert_eq!(chunk_size(b"-1"), None);
        assert_eq!(chunk_size(b"1111111111111111"), None);
    }

    #[test]
    fn lengths() {
        assert_eq!(parse_length(b"12"), Some(12));
        assert_eq!(parse_length(b""), None);
        assert_eq!(parse_length(b"+1"), None);
        assert_eq!(parse_length(b"1 "), None);
        assert_eq!(parse_length(b"99999999999999999999"), None);
    }

    #[test]
    fn heads_are_encoded_with_the_callers_framing() {
        let req = http::Request::post("/a?b")
            .header("host", "h")
            .header("content-length", "99")
            .header("transfer-encoding", "chunked")
            .body(())
            .expect("request");
        let (p, ()) = req.into_parts();
        let mut out = Vec::new();
        let none = SetHeaders::default();
        encode_head(&mut out, &p, &none, ReqFraming::Length(3));
        assert_eq!(
            out,
            b"POST /a?b HTTP/1.1\r\nhost: h\r\ncontent-length: 3\r\n\r\n"
        );
        out.clear();
        encode_head(&mut out, &p, &none, ReqFraming::Chunked);
        assert!(out.ends_with(b"transfer-encoding: chunked\r\n\r\n"));
        out.clear();
        encode_head(&mut out, &p, &none, ReqFraming::None);
        assert!(!out.windows(7).any(|w| w.eq_ignore_ascii_case(b"content")));
    }

    #[test]
    fn set_headers_replace_remove_or_add_and_the_rest_passes() {
        static XA: HeaderName = HeaderName::from_static("x-a");
        static XB: HeaderName = HeaderName::from_static("x-b");
        static XC: HeaderName = HeaderName::from_static("x-c");
        static XD: HeaderName = HeaderName::from_static("x-d");
        let req = http::Request::get("/")
            .header("host", "client.test")
            .header("x-a", "from client")
            .header("x-b", "from client")
            .header("x-d", "from client")
            .header("x-keep", "1")
            .body(())
            .expect("request");
        let (p, ()) = req.into_parts();
        let mut set = SetHeaders::default();
        set.set(&XA, Some(HeaderValue::from_static("ours")));
        set.set(&XB, None);
        set.set(&XC, Some(HeaderValue::from_static("new")));
        set.set(&XD, Some(HeaderValue::from_static("")));
        let mut out = Vec::new();
        encode_head(&mut out, &p, &set, ReqFraming::None);
        assert_eq!(
            String::from_utf8_lossy(&out),
            "GET / HTTP/1.1\r\nhost: client.test\r\nx-keep: 1\r\nx-a: ours\r\nx-c: new\r\n\r\n"
        );
        set.set_host(Some(HeaderValue::from_static("upstream.test")));
        out.clear();
        encode_head(&mut out, &p, &set, ReqFraming::None);
        assert_eq!(
            String::from_utf8_lossy(&out),
            "GET / HTTP/1.1\r\nhost: upstream.test\r\nx-keep: 1\r\nx-a: ours\r\nx-c: new\r\n\r\n"
        );
        // the same, put into a HeaderMap (hyper's client)
        let mut h = p.headers.clone();
        set.apply(&mut h, true);
        assert_eq!(h["host"], "upstream.test");
        assert_eq!(h["x-a"], "ours");
        assert!(!h.contains_key("x-b"));
        assert_eq!(h["x-c"], "new");
        assert!(!h.contains_key("x-d"));
        assert_eq!(h["x-keep"], "1");
        set.apply(&mut h, false);
    }
}
