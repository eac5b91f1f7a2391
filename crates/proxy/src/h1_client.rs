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
//! Parsing is `httparse`'s (hyper's parser, with its strict defaults). The answer's framing
//! is read as nginx 1.23+ reads it (`ngx_http_upstream_process_content_length` and
//! `_transfer_encoding`): no body for HEAD, 1xx, 204 and 304; one `Transfer-Encoding`,
//! exactly `chunked`; else one `Content-Length` of digits; else until the connection closes.
//! A second `Content-Length` (even an equal one), both headers, a second
//! `Transfer-Encoding` or another coding make the answer invalid ([`InvalidAnswer`]), as does
//! a head longer than nginx's `proxy_buffer_size` (the `limit` given; no count limit of its
//! own). Chunked bodies are read as `ngx_http_parse_chunked` reads them (lines end with LF,
//! alone or after CR; an extension starts at `;`, SP or HTAB). An answer below HTTP/1.1
//! closes its connection, whatever its `Connection` says. The headers nginx's proxy module
//! hides by default (`X-Pad`, `X-Accel-*`) are not forwarded. Interim 1xx answers other than
//! 101 are read past (nginx 1.27, which sends no `Expect`, takes one for the final answer).

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
pub use crate::h1_send::Sent;
use crate::upstream::{Conn, Io, Pool, WriteTimed};

/// nginx's default `proxy_buffer_size` (one memory page on x86-64), which Kong's template
/// leaves as it is: the longest answer head taken (`Settings::proxy_buffer_size`).
pub const DEFAULT_HEAD_LIMIT: usize = 4096;
/// Headers parsed without an allocation; a head with more is parsed again with room for as
/// many headers as it has lines (bounded by the head limit).
const INLINE_HEADERS: usize = 100;
/// Longest chunk-size line or trailer line accepted (nginx bounds neither; this keeps the
/// buffer bounded).
const MAX_LINE: usize = 4096;

/// The headers the gateway sets on a message it forwards, kept beside the forwarded head
/// rather than put into a `HeaderMap` (each insertion or removal hashes): on the upstream
/// request, Kong's `proxy_set_header`s (`TE`, `Via`, Host, `X-Forwarded-*`, `X-Real-IP`, ...),
/// which [`encode_head`] writes, in the order they were set, before the client's headers of
/// other names (as nginx writes them); on an upstream's answer,
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
    /// Where among the items the `Host` line is written ([`SetHeaders::host_here`]): before
    /// the item at this index (0 unless said otherwise).
    host_at: usize,
    /// An item replaces a forwarded line by its value's prefix
    /// ([`SetHeaders::replace_prefixed`]): only then are the lines compared.
    prefixed: bool,
}

impl SetHeaders {
    /// Room for `n` headers.
    pub fn with_capacity(n: usize) -> Self {
        SetHeaders {
            items: Vec::with_capacity(n),
            lens: 0,
            host: None,
            host_at: 0,
            prefixed: false,
        }
    }

    /// The upstream `Host` line goes here, after the headers set so far and before those
    /// set next (Kong's template sets `TE` and `Via` before it).
    pub fn host_here(&mut self) {
        self.host_at = self.items.len();
    }

    /// Sets `name` (each name once) to `value`; `None` (or an empty value) removes the
    /// client's header.
    #[inline]
    pub fn set(&mut self, name: &'static Named, value: Option<HeaderValue>) {
        debug_assert!(
            !self.items.iter().any(|i| i.name.name == name.name),
            "{} set twice",
            name.name
        );
        self.lens |= len_bit(name.wire.len());
        self.items.push(SetItem {
            name,
            value: value.filter(|v| !v.is_empty()),
            append: false,
            prefix: 0,
        });
    }

    /// Adds a `name` header after the others of that name (`Set-Cookie`).
    pub fn append(&mut self, name: &'static Named, value: HeaderValue) {
        self.items.push(SetItem {
            name,
            value: Some(value),
            append: true,
            prefix: 0,
        });
    }

    /// Adds a `name` header that replaces the first one of that name whose value starts
    /// with the same first `prefix` bytes, else comes after the others of that name: Kong's
    /// `set_cookie` for the hash cookie (`<name>=`). One such header at most.
    pub fn replace_prefixed(&mut self, name: &'static Named, value: HeaderValue, prefix: usize) {
        debug_assert!(prefix > 0 && prefix <= value.len());
        debug_assert!(!self.items.iter().any(|i| i.prefix > 0));
        // (a prefix past u32 is no cookie name: compared in whole, the value itself)
        let prefix = u32::try_from(prefix).unwrap_or(0);
        self.prefixed = prefix > 0;
        self.items.push(SetItem {
            name,
            value: Some(value),
            append: true,
            prefix,
        });
    }

    /// Whether the header line `name: value` of a forwarded head gives way to a header set
    /// with [`SetHeaders::replace_prefixed`] (the caller drops the first such line only).
    #[inline]
    pub fn replaced_line(&self, name: &[u8], value: &[u8]) -> bool {
        self.prefixed
            && self.items.iter().any(|i| {
                i.prefix > 0
                    && name.eq_ignore_ascii_case(i.name.wire)
                    && i.value
                        .as_ref()
                        .is_some_and(|v| value.starts_with(&v.as_bytes()[..i.prefix as usize]))
            })
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
                    .any(|i| !i.append && name.eq_ignore_ascii_case(i.name.wire)))
    }

    /// Puts the headers into `h` (`Host` too unless `with_host` is false).
    pub fn apply(&self, h: &mut HeaderMap, with_host: bool) {
        for i in &self.items {
            match (&i.value, i.append) {
                (Some(v), true) if i.prefix > 0 => replace_first_prefixed(h, i, v),
                (Some(v), true) => {
                    h.append(&i.name.name, v.clone());
                }
                (Some(v), false) => {
                    h.insert(&i.name.name, v.clone());
                }
                (None, _) => {
                    h.remove(&i.name.name);
                }
            }
        }
        if with_host && let Some(v) = &self.host {
            h.insert(header::HOST, v.clone());
        }
    }

    /// Writes the set headers (`name: value` lines) in the order they were set, the names in
    /// the case Kong's nginx writes them ([`Named`]), with the upstream `Host` line, if one is
    /// set, where [`SetHeaders::host_here`] put it (first by default).
    pub fn write(&self, out: &mut Vec<u8>) {
        let (before, after) = self.items.split_at(self.host_at.min(self.items.len()));
        let write = |out: &mut Vec<u8>, items: &[SetItem]| {
            for i in items {
                if let Some(v) = &i.value {
                    line(out, i.name.wire, v.as_bytes());
                }
            }
        };
        write(out, before);
        if let Some(v) = &self.host {
            line(out, b"Host", v.as_bytes());
        }
        write(out, after);
    }
}

/// Appends a `name: value` header line (both HTTP/1.1 writers' one way of writing it), the
/// name as given.
pub(crate) fn line(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// A header name the gateway sets, with the bytes Kong's nginx writes for it on HTTP/1.1 (the
/// same name in its case: [`wire_name`]'s), made once in a static so that writing it costs
/// no lookup.
#[derive(Debug)]
pub struct Named {
    name: HeaderName,
    wire: &'static [u8],
}

impl Named {
    /// `lower` (a lower-case header name), written as `wire`, the same name in another
    /// case (checked when the static is built: a mismatch does not compile).
    pub const fn new(lower: &'static str, wire: &'static [u8]) -> Named {
        assert!(
            same_name(lower.as_bytes(), wire),
            "a wire name is the name in another case"
        );
        Named {
            name: HeaderName::from_static(lower),
            wire,
        }
    }

    /// The name.
    pub fn name(&self) -> &HeaderName {
        &self.name
    }
}

/// Whether `wire` is `lower` in some case (`lower` all lower-case).
const fn same_name(lower: &[u8], wire: &[u8]) -> bool {
    if lower.len() != wire.len() {
        return false;
    }
    let mut i = 0;
    while i < lower.len() {
        if lower[i] != wire[i].to_ascii_lowercase() {
            return false;
        }
        i += 1;
    }
    true
}

/// Appends a `name: value` header line for a name the gateway itself sets (held lower-case
/// by `http`), in the case Kong's nginx writes it ([`wire_name`]).
pub(crate) fn line_named(out: &mut Vec<u8>, name: &HeaderName, value: &[u8]) {
    push_wire_name(out, name.as_str());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// The case in which Kong's nginx writes the headers the gateway sets: nginx's own names
/// (`ngx_http_header_filter_module`), the names in Kong's template (`proxy_set_header`) and
/// those Kong's Lua code sets (`kong/constants.lua`); `None` for a name not listed, which
/// [`push_wire_name`] writes in Title-Case.
pub(crate) fn wire_name(lower: &str) -> Option<&'static [u8]> {
    Some(match lower {
        "date" => b"Date",
        "server" => b"Server",
        "content-length" => b"Content-Length",
        "content-type" => b"Content-Type",
        "transfer-encoding" => b"Transfer-Encoding",
        "connection" => b"Connection",
        "via" => b"Via",
        "x-kong-upstream-latency" => b"X-Kong-Upstream-Latency",
        "x-kong-proxy-latency" => b"X-Kong-Proxy-Latency",
        "x-kong-response-latency" => b"X-Kong-Response-Latency",
        "x-kong-request-id" => b"X-Kong-Request-Id",
        "x-kong-upstream-status" => b"X-Kong-Upstream-Status",
        "x-kong-admin-latency" => b"X-Kong-Admin-Latency",
        "set-cookie" => b"Set-Cookie",
        "location" => b"Location",
        "www-authenticate" => b"WWW-Authenticate",
        "etag" => b"ETag",
        "te" => b"TE",
        "upgrade" => b"Upgrade",
        "x-real-ip" => b"X-Real-IP",
        "x-forwarded-for" => b"X-Forwarded-For",
        "x-forwarded-proto" => b"X-Forwarded-Proto",
        "x-forwarded-host" => b"X-Forwarded-Host",
        "x-forwarded-port" => b"X-Forwarded-Port",
        "x-forwarded-path" => b"X-Forwarded-Path",
        "x-forwarded-prefix" => b"X-Forwarded-Prefix",
        _ => return None,
    })
}

/// Appends a lower-case header name as Kong's nginx writes it: [`wire_name`]'s case, else
/// Title-Case (a capital at the start and after each `-`, as hyper's `title_case_headers`).
pub(crate) fn push_wire_name(out: &mut Vec<u8>, lower: &str) {
    if let Some(w) = wire_name(lower) {
        out.extend_from_slice(w);
        return;
    }
    let mut up = true;
    for &b in lower.as_bytes() {
        out.push(if up { b.to_ascii_uppercase() } else { b });
        up = b == b'-';
    }
}

#[inline]
fn len_bit(len: usize) -> u64 {
    1 << (len % 64)
}

/// One header of a [`SetHeaders`].
#[derive(Debug, Clone)]
struct SetItem {
    name: &'static Named,
    /// `None`: removed.
    value: Option<HeaderValue>,
    /// Added after the others of its name rather than replacing them.
    append: bool,
    /// Non-zero: replaces the first header of its name whose value starts with its own
    /// first `prefix` bytes ([`SetHeaders::replace_prefixed`]). (A `u32` keeps the item
    /// at 56 bytes, so that the usual list stays in the allocator's small sizes.)
    prefix: u32,
}

// (12 items, the usual request's list, stay within 672 bytes)
const _: () = assert!(std::mem::size_of::<SetItem>() <= 56);

/// Puts `v` in place of the first `i.name` header of `h` starting with `v`'s prefix, or
/// after the others when none does.
fn replace_first_prefixed(h: &mut HeaderMap, i: &SetItem, v: &HeaderValue) {
    let prefix = &v.as_bytes()[..i.prefix as usize];
    let values: Vec<HeaderValue> = h.get_all(&i.name.name).iter().cloned().collect();
    match values.iter().position(|x| x.as_bytes().starts_with(prefix)) {
        Some(at) => {
            h.remove(&i.name.name);
            for (k, x) in values.into_iter().enumerate() {
                h.append(&i.name.name, if k == at { v.clone() } else { x });
            }
        }
        None => {
            h.append(&i.name.name, v.clone());
        }
    }
}

/// A client's HTTP/1.x request head as it was received (request line, header lines, blank
/// line), kept with the request so that its headers go upstream as nginx copies them: each
/// name in its case, in the order received, each value as received (without the whitespace
/// around it). The headers the proxy removed from the request's `HeaderMap` after parsing
/// (hop-by-hop ones, those `Connection` names) are listed in `removed` and left out; the
/// `HeaderMap` stays the request's truth: [`encode_head`] writes from these bytes only when
/// the lines it would write account for every value in the map, else from the map.
///
/// On the fast path the head is the bytes the request was parsed from, with the spans of its
/// header lines as the parse found them (so nothing is scanned again); on hyper's path, a
/// copy the framing guard made of the head it passed to hyper, its lines found once
/// ([`ClientHead::new`]), checked against hyper's request ([`ClientHead::matches`]) before it
/// is used. The phases borrow it (`&mut`: [`ClientHead::removed`]), so that the futures that
/// carry the request stay small.
#[derive(Debug, Clone)]
pub struct ClientHead {
    head: Bytes,
    /// Each header line's name and value (without the whitespace around it) as spans of
    /// `head`: name start, name end, value start, value end; in order.
    lines: Vec<[usize; 4]>,
    /// Names removed from the request's headers since it was parsed.
    removed: Vec<HeaderName>,
}

impl ClientHead {
    /// The head in `head` (from the request line, or empty lines before it, to the blank
    /// line), already parsed by `httparse` (lines end with LF or CRLF, no obs-fold).
    pub fn new(head: Bytes) -> ClientHead {
        let rest = request_line(&head).map_or(&[][..], |(_, rest)| rest);
        let lines = HeaderLines { rest }
            .map(|(name, value)| {
                let (ns, ne) = crate::h1_fast::span(&head, name);
                let (vs, ve) = crate::h1_fast::span(&head, value);
                [ns, ne, vs, ve]
            })
            .collect();
        ClientHead::with_lines(head, lines)
    }

    /// [`ClientHead::new`] for a caller that has parsed the head already: `lines` holds
    /// each header line's name and value (without the whitespace around it) as spans of
    /// `head` (name start, name end, value start, value end), in order. The fast path gives
    /// its connection's span list, and takes it back afterwards ([`ClientHead::into_lines`]).
    pub fn with_lines(head: Bytes, lines: Vec<[usize; 4]>) -> ClientHead {
        ClientHead {
            head,
            lines,
            removed: Vec::new(),
        }
    }

    /// The span list given to [`ClientHead::with_lines`] (or made by [`ClientHead::new`]),
    /// for reuse.
    pub fn into_lines(self) -> Vec<[usize; 4]> {
        self.lines
    }

    /// Notes that the headers named `name` were removed from the request.
    pub fn removed(&mut self, name: HeaderName) {
        self.removed.push(name);
    }

    /// The request line's method, target and version.
    fn request_line(&self) -> Option<(&[u8], &[u8], &[u8])> {
        let (line, _) = request_line(&self.head)?;
        let mut parts = line.split(|&b| b == b' ');
        let method = parts.next()?;
        let target = parts.next()?;
        let version = parts.next()?;
        if parts.next().is_some() {
            return None;
        }
        Some((method, target, version))
    }

    /// The header lines, in order: (name, value), the value without the whitespace around
    /// it.
    fn lines(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.lines
            .iter()
            .map(|&[ns, ne, vs, ve]| (&self.head[ns..ne], &self.head[vs..ve]))
    }

    /// Whether this head is the one hyper parsed into `req`: the same method, target and
    /// version, as many header lines as values in its map, and the same lines (name without
    /// its case, and value) whatever their order, as far as a sum of a 64-bit hash of each
    /// tells. A head that does not match must not be used, for this request or any later
    /// one of its connection.
    pub fn matches<B>(&self, req: &http::Request<B>) -> bool {
        let Some((method, target, version)) = self.request_line() else {
            return false;
        };
        let version_ok = match req.version() {
            Version::HTTP_11 => version == b"HTTP/1.1",
            Version::HTTP_10 => version == b"HTTP/1.0",
            _ => false,
        };
        if !version_ok || method != req.method().as_str().as_bytes() {
            return false;
        }
        let uri = req.uri();
        let target_ok = match (uri.scheme(), uri.path_and_query()) {
            (None, Some(pq)) if uri.authority().is_none() => target == pq.as_str().as_bytes(),
            // absolute or authority form: as `http` writes it back (rare, not worth more)
            _ => target == uri.to_string().as_bytes(),
        };
        if !target_ok {
            return false;
        }
        let (mut n, mut sum) = (0usize, 0u64);
        for (name, value) in self.lines() {
            n += 1;
            sum = sum.wrapping_add(line_hash(name, value));
        }
        n == req.headers().len()
            && sum
                == req.headers().iter().fold(0u64, |s, (k, v)| {
                    s.wrapping_add(line_hash(k.as_str().as_bytes(), v.as_bytes()))
                })
    }
}

/// FNV-1a of a header line: its name in lower case, a NUL, its value.
fn line_hash(name: &[u8], value: &[u8]) -> u64 {
    const PRIME: u64 = 0x0100_0000_01b3;
    let step = |h: u64, b: u8| (h ^ u64::from(b)).wrapping_mul(PRIME);
    let h = name.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        step(h, b.to_ascii_lowercase())
    });
    value.iter().fold(step(h, 0), |h, &b| step(h, b))
}

/// The request line of a head (empty lines before it skipped, its line end removed), and
/// the bytes after it.
fn request_line(head: &[u8]) -> Option<(&[u8], &[u8])> {
    let start = head.iter().position(|&b| b != b'\r' && b != b'\n')?;
    let head = &head[start..];
    let end = memchr::memchr(b'\n', head)?;
    let line = &head[..end];
    Some((line.strip_suffix(b"\r").unwrap_or(line), &head[end + 1..]))
}

/// The header lines of a head after its request line (for [`ClientHead::new`]).
struct HeaderLines<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for HeaderLines<'a> {
    type Item = (&'a [u8], &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        // One pass over the line (a loop beats `memchr` on lines this short): the name up
        // to the colon, then the value up to the LF. The blank line (or, not in a head
        // httparse accepted, a line without a colon) ends the head.
        let rest = self.rest;
        let colon = rest.iter().position(|&b| b == b':' || b == b'\n');
        let Some(colon) = colon.filter(|&c| rest[c] == b':') else {
            self.rest = &[];
            return None;
        };
        let after = &rest[colon + 1..];
        let Some(end) = after.iter().position(|&b| b == b'\n') else {
            self.rest = &[];
            return None;
        };
        self.rest = &after[end + 1..];
        let mut value = &after[..end];
        while let [rest @ .., b' ' | b'\t' | b'\r'] = value {
            value = rest;
        }
        while let [b' ' | b'\t', rest @ ..] = value {
            value = rest;
        }
        Some((&rest[..colon], value))
    }
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
    /// The request was (at least partly) written; no answer came: the connection failed,
    /// was closed before an answer's head was complete, or timed out (nginx's `error` and
    /// `timeout`, which Kong's `proxy_next_upstream` retries).
    Failed(io::Error),
    /// The request was written and the answer is one nginx refuses ([`InvalidAnswer`]:
    /// nginx's `invalid_header`, which Kong's `proxy_next_upstream` does not retry).
    Invalid(io::Error),
    /// The client's body, streamed, failed (malformed, cut short, too large or stalled: its
    /// [`crate::upstream::BodyWatch`] says which): the client's fault, not the upstream's.
    /// Part of the request may have been written.
    Client(io::Error),
}

impl ExchangeError {
    /// The underlying error.
    pub fn io(&self) -> &io::Error {
        match self {
            ExchangeError::NotSent(e)
            | ExchangeError::Failed(e)
            | ExchangeError::Invalid(e)
            | ExchangeError::Client(e) => e,
        }
    }

    /// The error of reading an answer's head after the request was written: an invalid
    /// answer is told apart from a failed connection.
    fn of_read(e: io::Error) -> ExchangeError {
        if is_invalid_answer(&e) {
            ExchangeError::Invalid(e)
        } else {
            ExchangeError::Failed(e)
        }
    }

    /// [`ExchangeError::of_read`], but a request written at the end of the batch reports
    /// its write's failure here: not sent.
    fn of_answer_read(e: io::Error) -> ExchangeError {
        if crate::batch_write::is_not_written(&e) {
            ExchangeError::NotSent(e)
        } else {
            ExchangeError::of_read(e)
        }
    }
}

/// An upstream answer nginx would not take: its head is not HTTP/1 as nginx reads it, is
/// longer than `proxy_buffer_size`, or frames its body in two ways or in a way nginx does not
/// know (nginx's `NGX_HTTP_UPSTREAM_FT_INVALID_HEADER`: a 502, not retried under Kong's
/// `proxy_next_upstream`, nginx's default `error timeout`).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct InvalidAnswer(&'static str);

/// An [`InvalidAnswer`] as an I/O error.
fn invalid_answer(msg: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, InvalidAnswer(msg))
}

/// Whether `e` is an [`InvalidAnswer`] (rather than a failed connection).
pub fn is_invalid_answer(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|i| i.is::<InvalidAnswer>())
}

fn invalid(msg: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// The request body to send.
pub enum SendBody<'a> {
    /// None, and no framing header either: the client's request had no body (neither a
    /// `Content-Length` nor a chunked body; on HTTP/2, its headers ended the stream), and
    /// nginx then sends no `Content-Length`, whatever the method.
    Empty,
    /// A complete body (possibly empty, sent with `Content-Length: 0`), kept by the caller
    /// for retries.
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
    /// `head_limit`: the longest answer head taken (nginx's `proxy_buffer_size`).
    pub async fn exchange(
        &mut self,
        parts: &http::request::Parts,
        client: Option<&ClientHead>,
        set: &SetHeaders,
        body: SendBody<'_>,
        head_limit: usize,
    ) -> Result<(RawHead, Framing, bool), ExchangeError> {
        // (the two steps inline, not through the two methods below: one state machine less
        // on every request of the fast path)
        let mut out = std::mem::take(&mut self.out);
        out.clear();
        let r = self
            .send(&mut out, (parts, client), set, body, head_limit)
            .await;
        self.out = out;
        let whole = r? == Sent::Whole;
        let head_req = parts.method == Method::HEAD;
        loop {
            let (rp, framing, reusable) = self
                .read_head(head_req, head_limit)
                .await
                .map_err(ExchangeError::of_answer_read)?;
            if !rp.status.is_informational() || rp.status == StatusCode::SWITCHING_PROTOCOLS {
                return Ok((rp, framing, reusable && whole));
            }
        }
    }

    /// Writes a request (a streamed client body at the client's pace: the body itself holds
    /// the client to `client_body_timeout`, [`crate::upstream::ClientBody`]). Sending stops
    /// early when the answer comes first ([`crate::h1_send`]; `head_limit` as for
    /// [`read_answer`](Self::read_answer)): the connection then cannot carry another
    /// request, whatever its answer says.
    pub async fn send_request(
        &mut self,
        parts: &http::request::Parts,
        client: Option<&ClientHead>,
        set: &SetHeaders,
        body: SendBody<'_>,
        head_limit: usize,
    ) -> Result<Sent, ExchangeError> {
        let mut out = std::mem::take(&mut self.out);
        out.clear();
        let r = self
            .send(&mut out, (parts, client), set, body, head_limit)
            .await;
        self.out = out;
        r
    }

    /// Reads the head of the answer to the request just sent, past informational answers.
    /// `head_req`: the request is a HEAD (its answer has no body whatever its headers say);
    /// `head_limit`: the longest head taken (nginx's `proxy_buffer_size`).
    pub async fn read_answer(
        &mut self,
        head_req: bool,
        head_limit: usize,
    ) -> Result<(RawHead, Framing, bool), ExchangeError> {
        loop {
            let (rp, framing, reusable) = self
                .read_head(head_req, head_limit)
                .await
                .map_err(ExchangeError::of_answer_read)?;
            if rp.status.is_informational() && rp.status != StatusCode::SWITCHING_PROTOCOLS {
                continue;
            }
            return Ok((rp, framing, reusable));
        }
    }

    /// Writes the request: `parts` (and the client's head as received, if kept) with `set`.
    /// A request with a body stops being written when its answer comes first
    /// ([`crate::h1_send`]).
    async fn send(
        &mut self,
        out: &mut Vec<u8>,
        (parts, client): (&http::request::Parts, Option<&ClientHead>),
        set: &SetHeaders,
        body: SendBody<'_>,
        head_limit: usize,
    ) -> Result<Sent, ExchangeError> {
        static NONE: Bytes = Bytes::new();
        let req = match body {
            SendBody::Empty | SendBody::Full(_) => {
                let (b, framing) = match body {
                    SendBody::Full(b) => (b, ReqFraming::Length(b.len() as u64)),
                    _ => (&NONE, ReqFraming::None),
                };
                encode_head(out, parts, client, set, framing);
                if crate::batch_write::defer_message(self.slot.as_ref(), out, b) {
                    return Ok(Sent::Whole);
                }
                crate::h1_send::Request {
                    head: out,
                    data: b.clone(),
                    stream: None,
                    length: None,
                }
            }
            SendBody::Stream(slot) => {
                let exact = slot.as_ref().and_then(|b| b.size_hint().exact());
                let framing = match exact {
                    Some(n) => ReqFraming::Length(n),
                    None => ReqFraming::Chunked,
                };
                encode_head(out, parts, client, set, framing);
                crate::h1_send::Request {
                    head: out,
                    data: Bytes::new(),
                    stream: Some(slot),
                    length: exact,
                }
            }
        };
        // (boxed: the common requests, written at the end of the batch above, keep a small
        // future)
        Box::pin(crate::h1_send::send(
            &mut self.io,
            &mut self.buf,
            req,
            head_limit,
        ))
        .await
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

    /// Reads an answer's head (interim ones included) of at most `limit` bytes.
    async fn read_head(
        &mut self,
        head_req: bool,
        limit: usize,
    ) -> io::Result<(RawHead, Framing, bool)> {
        // How far the buffer is known to hold no head end: after the first try (which
        // parses what the first read brought, so a head in one read is parsed once), a
        // head that arrives in pieces is parsed whole again only once its end is in, and
        // meanwhile each line is checked once as it completes ([`check_lines`]), so an
        // invalid line is refused as soon as it is in (as nginx, which parses as bytes
        // come) and a head trickled byte by byte costs linear time, not a parse per read.
        let mut scanned: Option<usize> = None;
        // the complete lines found valid (the status line first)
        let mut checked = 0;
        let parsed = loop {
            if !self.buf.is_empty() {
                match scanned {
                    Some(from) if !head_end_from(&self.buf, from) => {
                        check_lines(&self.buf, &mut checked, from)?;
                    }
                    _ => {
                        if let Some(p) = parse_answer(&self.buf, limit)? {
                            break p;
                        }
                        checked = self
                            .buf
                            .iter()
                            .rposition(|&b| b == b'\n')
                            .map_or(0, |i| i + 1);
                    }
                }
                scanned = Some(self.buf.len());
                // nginx reads a head into one buffer of `proxy_buffer_size` bytes: one that
                // fills it unfinished is too big
                if self.buf.len() >= limit {
                    return Err(invalid_answer("upstream sent too big header"));
                }
            }
            if self.fill().await? == 0 {
                // (nginx's `error`: "upstream prematurely closed connection")
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "upstream closed the connection before a complete response head",
                ));
            }
        };
        let Parsed {
            len,
            status,
            version,
            reason,
            mut lines,
            mut seen,
            length,
            chunked,
            close,
            named,
        } = parsed;
        let head = self.buf.split_to(len).freeze();
        if !named.is_empty() {
            lines.retain(|&[ns, ne, _, _]| {
                !named
                    .iter()
                    .any(|&(s, e)| head[s..e].eq_ignore_ascii_case(&head[ns..ne]))
            });
            // what is left of the headers noted (`X-Accel-Buffering`, not forwarded, was
            // read by nginx whatever `Connection` names)
            seen = Seen {
                unbuffered: seen.unbuffered,
                ..Seen::default()
            };
            for &[ns, ne, vs, ve] in &lines {
                seen.note(classify(&head[ns..ne]), (vs, ve), &head[vs..ve]);
            }
        }
        let framing = if head_req
            || status.is_informational()
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED
        {
            Framing::Empty
        } else if chunked {
            Framing::Chunked
        } else {
            match length {
                Some(0) => Framing::Empty,
                Some(n) => Framing::Length(n),
                None => Framing::Eof,
            }
        };
        let reusable =
            !close && framing != Framing::Eof && status != StatusCode::SWITCHING_PROTOCOLS;
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

/// Checks each line of a head in `buf` completed past `checked` (the status line when only
/// empty lines come before it, which httparse skips, else a header line), alone, as
/// [`parse_answer`] reads it, and moves `checked` past those found valid: an invalid one is
/// the answer's error. `from`: where the bytes not looked at yet begin (a line's end is
/// looked for there, so that a long line arriving in pieces is scanned once).
fn check_lines(buf: &[u8], checked: &mut usize, from: usize) -> io::Result<()> {
    let mut search = (*checked).max(from);
    while let Some(nl) = buf[search..].iter().position(|&b| b == b'\n') {
        let end = search + nl + 1;
        let line = &buf[*checked..end];
        let status_line = buf[..*checked].iter().all(|&b| b == b'\r' || b == b'\n');
        let valid = if status_line {
            matches!(
                httparse::Response::new(&mut []).parse(line),
                Ok(httparse::Status::Partial)
            )
        } else {
            crate::h1_fast::header_line_parses(line)
        };
        if !valid {
            return Err(invalid_answer("upstream sent invalid header"));
        }
        *checked = end;
        search = end;
    }
    Ok(())
}

/// Whether `buf` holds the end of a head (an empty line: `\n\n` or `\n\r\n`) that ends
/// past `from` (the bytes before it were already looked at, and held none).
fn head_end_from(buf: &[u8], from: usize) -> bool {
    let start = from.saturating_sub(2);
    buf.get(start..).is_some_and(|tail| {
        tail.windows(2).any(|w| w == b"\n\n") || tail.windows(3).any(|w| w == b"\n\r\n")
    })
}

/// The length and status of the answer head complete at the start of `buf`, if one is
/// (`None`: not yet); an error where [`parse_answer`] refuses it, or for an unfinished head
/// that fills `limit` bytes.
pub(crate) fn parse_answer_head(
    buf: &[u8],
    limit: usize,
) -> io::Result<Option<(usize, StatusCode)>> {
    if buf.is_empty() {
        return Ok(None);
    }
    if !head_end_from(buf, 0) {
        if buf.len() >= limit {
            return Err(invalid_answer("upstream sent too big header"));
        }
        return Ok(None);
    }
    Ok(parse_answer(buf, limit)?.map(|p| (p.len, p.status)))
}

/// An answer head as [`parse_answer`] read it (spans are of the bytes parsed).
struct Parsed {
    /// The head's length.
    len: usize,
    status: StatusCode,
    version: Version,
    reason: Option<(usize, usize)>,
    /// The headers to forward: name start, name end, value start, value end.
    lines: Vec<[usize; 4]>,
    seen: Seen,
    /// The `Content-Length`.
    length: Option<u64>,
    /// `Transfer-Encoding: chunked`.
    chunked: bool,
    /// The connection ends with this answer.
    close: bool,
    /// Names listed in `Connection` besides close and keep-alive: not forwarded either.
    named: Vec<(usize, usize)>,
}

/// Parses an answer's head at the start of `buf`: `None` while it is incomplete, an
/// [`InvalidAnswer`] where nginx refuses it (`limit`: nginx's `proxy_buffer_size`).
fn parse_answer(buf: &[u8], limit: usize) -> io::Result<Option<Parsed>> {
    // (slots left uninitialized: the parser writes those it fills, not all 100 each time;
    // `Response::parse`'s configuration, the default)
    let mut inline = [const { std::mem::MaybeUninit::uninit() }; INLINE_HEADERS];
    let mut more;
    let config = httparse::ParserConfig::default();
    let mut r = httparse::Response::new(&mut []);
    let mut status = config.parse_response_with_uninit_headers(&mut r, buf, &mut inline);
    if let Err(httparse::Error::TooManyHeaders) = status {
        // No count limit (nginx has none): room for as many headers as the head can hold
        // lines (one too many means the head does not fit the buffer).
        let lines = buf[..buf.len().min(limit)]
            .iter()
            .filter(|b| **b == b'\n')
            .count();
        more = vec![std::mem::MaybeUninit::uninit(); lines];
        r = httparse::Response::new(&mut []);
        status = config.parse_response_with_uninit_headers(&mut r, buf, &mut more);
    }
    let len = match status {
        Ok(httparse::Status::Complete(n)) if n <= limit => n,
        Ok(httparse::Status::Complete(_)) | Err(httparse::Error::TooManyHeaders) => {
            return Err(invalid_answer("upstream sent too big header"));
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(invalid_answer("upstream sent invalid header")),
    };
    let version = if r.version == Some(0) {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    // an answer below HTTP/1.1 closes its connection whatever it says
    // (`ngx_http_proxy_process_status_line`)
    let mut close = version == Version::HTTP_10;
    let mut lines: Vec<[usize; 4]> = Vec::with_capacity(r.headers.len());
    let mut seen = Seen::default();
    // names listed in `Connection` besides close, keep-alive and upgrade: removed too
    let mut named: Vec<(usize, usize)> = Vec::new();
    // `Upgrade` lines, and where the last one's value is
    let mut upgrades = 0usize;
    let mut upgrade_value = (0usize, 0usize);
    let mut length: Option<u64> = None;
    let mut te = false;
    // nginx's header filters (HTTP/1 and HTTP/2) write a 204 without `Content-Type` or
    // `Content-Length` (`ngx_http_header_filter`: `ngx_str_null(&content_type)`,
    // `content_length_n = -1`)
    let no_content = r.code == Some(204);
    // One pass over the lines: the framing and hop-by-hop headers are read and left out,
    // the others kept (as spans of the head).
    for h in r.headers.iter() {
        let name = h.name.as_bytes();
        let value = h.value;
        let (vs, ve) = span(buf, value);
        let keep = match classify(name) {
            Name::ContentLength => {
                if length.is_some() {
                    return Err(invalid_answer("upstream sent duplicate Content-Length"));
                }
                if te {
                    return Err(invalid_answer(
                        "upstream sent Content-Length and Transfer-Encoding",
                    ));
                }
                length = Some(
                    parse_length(value.trim_ascii())
                        .ok_or_else(|| invalid_answer("upstream sent invalid Content-Length"))?,
                );
                !no_content
            }
            // (looked for on a 204 only: most answers have one)
            Name::Other if no_content && name.eq_ignore_ascii_case(b"content-type") => false,
            Name::TransferEncoding => {
                if te {
                    return Err(invalid_answer("upstream sent duplicate Transfer-Encoding"));
                }
                if length.is_some() {
                    return Err(invalid_answer(
                        "upstream sent Content-Length and Transfer-Encoding",
                    ));
                }
                if !value.trim_ascii().eq_ignore_ascii_case(b"chunked") {
                    return Err(invalid_answer("upstream sent unknown Transfer-Encoding"));
                }
                te = true;
                // hop-by-hop (the coding is this connection's, read into the framing)
                false
            }
            Name::Connection => {
                // (nginx looks for "close" anywhere in the value)
                if value.windows(5).any(|w| w.eq_ignore_ascii_case(b"close")) {
                    close = true;
                }
                let mut at = vs;
                for t in value.split(|b| *b == b',') {
                    let start = at + (t.len() - t.trim_ascii_start().len());
                    at += t.len() + 1;
                    let t = t.trim_ascii();
                    if !t.is_empty()
                        && !t.eq_ignore_ascii_case(b"close")
                        && !t.eq_ignore_ascii_case(b"keep-alive")
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
                !matches!(class, Name::HopByHop | Name::Hidden | Name::AccelBuffering)
            }
        };
        if keep {
            let (ns, ne) = span(buf, name);
            lines.push([ns, ne, vs, ve]);
        }
    }
    // Kong's header filter drops an `Upgrade` that is not the one asked upstream
    // (`$upstream_upgrade`); requests sent here never ask for one
    if upgrades > 0 && !keeps_upgrade(upgrades, &buf[upgrade_value.0..upgrade_value.1], b"") {
        lines.retain(|&[ns, ne, _, _]| !buf[ns..ne].eq_ignore_ascii_case(b"upgrade"));
    }
    // (`HTTP/1.1 200` with no reason phrase: httparse's reason is a static empty string,
    // not a part of the buffer)
    let reason = r
        .reason
        .and_then(|s| crate::h1_fast::span_within(buf, s.as_bytes()));
    let status = StatusCode::from_u16(r.code.unwrap_or(0))
        .map_err(|_| invalid_answer("upstream sent invalid status"))?;
    Ok(Some(Parsed {
        len,
        status,
        version,
        reason,
        lines,
        seen,
        length,
        chunked: te,
        close,
        named,
    }))
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
    /// The headers nginx's proxy module hides by default (`ngx_http_proxy_hide_headers`
    /// but `Date` and `Server`, which Kong's `proxy_pass_header` passes): not forwarded.
    Hidden,
    Via,
    Server,
    Date,
    /// `X-Accel-Buffering`: read (it turns buffering off), and hidden as nginx hides it.
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

/// Whether nginx's proxy module hides an answer header of this name by default
/// (`ngx_http_proxy_hide_headers`: `X-Pad`, `X-Accel-*`; `Date` and `Server` are passed by
/// Kong's `proxy_pass_header`).
pub(crate) fn hidden_by_nginx(name: &[u8]) -> bool {
    matches!(classify(name), Name::Hidden | Name::AccelBuffering)
}

/// The [`Name`] of a header name as read (any case): one comparison at most.
fn classify(name: &[u8]) -> Name {
    let is = |s: &[u8]| name.eq_ignore_ascii_case(s);
    match name.len() {
        3 if is(b"via") => Name::Via,
        4 if is(b"date") => Name::Date,
        5 if is(b"x-pad") => Name::Hidden,
        6 if is(b"server") => Name::Server,
        7 if is(b"upgrade") => Name::Upgrade,
        10 if is(b"connection") => Name::Connection,
        10 if is(b"keep-alive") => Name::HopByHop,
        14 if is(b"content-length") => Name::ContentLength,
        15 if is(b"x-accel-expires") || is(b"x-accel-charset") => Name::Hidden,
        16 if is(b"x-accel-redirect") => Name::Hidden,
        17 if is(b"transfer-encoding") => Name::TransferEncoding,
        17 if is(b"x-accel-buffering") => Name::AccelBuffering,
        18 if is(b"x-accel-limit-rate") => Name::Hidden,
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
/// `close`, `keep-alive` and `upgrade`), an `Upgrade` ([`keeps_upgrade`]: the requests sent
/// here never ask for one), and the headers nginx's proxy module hides; `Proxy-Authenticate`,
/// `Proxy-Connection` and the other headers pass, as Kong 3.x passes them. The proxy
/// forwards it without building a `HeaderMap` ([`RawHead::into_parts`] builds one where one
/// is needed).
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
        // (the upstream's phrase, kept wherever it differs from the one the answer would
        // otherwise get, nginx's: `crate::error::set_nginx_reason`)
        if let Some((s, e)) = self.reason
            && crate::error::nginx_reason(self.status.as_u16()).as_bytes() != &self.head[s..e]
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
    let mut counted = Counted::new(length);
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
        counted.part(data.len()).map_err(BodyError::Read)?;
        match length {
            Some(_) => io.write_all(&data).await.map_err(BodyError::Write)?,
            None => {
                out.clear();
                out.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
                let mut b = Buf::chain(Buf::chain(&out[..], data), &b"\r\n"[..]);
                io.write_all_buf(&mut b).await.map_err(BodyError::Write)?;
            }
        }
    }
    counted.end().map_err(BodyError::Read)?;
    if length.is_none() {
        io.write_all(b"0\r\n\r\n").await.map_err(BodyError::Write)?;
    }
    Ok(())
}

/// A body's bytes counted against the length its head announced (`None`: chunked coding,
/// any length): a body must add up to exactly what it announced.
pub(crate) struct Counted {
    length: Option<u64>,
    sent: u64,
}

impl Counted {
    pub(crate) fn new(length: Option<u64>) -> Counted {
        Counted { length, sent: 0 }
    }

    /// Counts a part of `n` bytes: an error once the parts pass the announced length.
    pub(crate) fn part(&mut self, n: usize) -> io::Result<()> {
        self.sent += n as u64;
        match self.length {
            Some(l) if self.sent > l => Err(invalid("body longer than its Content-Length")),
            _ => Ok(()),
        }
    }

    /// At the body's end: an error when the parts fell short of the announced length.
    pub(crate) fn end(&self) -> io::Result<()> {
        match self.length {
            Some(l) if self.sent != l => Err(invalid("body shorter than its Content-Length")),
            _ => Ok(()),
        }
    }
}

/// A `Content-Length` value as `ngx_atoof` reads it: digits only (leading zeros allowed),
/// at most `NGX_MAX_OFF_T_VALUE`.
fn parse_length(v: &[u8]) -> Option<u64> {
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    v.iter()
        .try_fold(0u64, |n, d| {
            n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
        })
        .filter(|n| *n <= i64::MAX as u64)
}

/// [`encode_head`] with no set headers and no framing, for other modules' tests.
#[cfg(test)]
pub(crate) fn tests_encode(
    out: &mut Vec<u8>,
    p: &http::request::Parts,
    client: Option<&ClientHead>,
) {
    encode_head(out, p, client, &SetHeaders::default(), ReqFraming::None);
}

/// The framing written in a request head.
#[derive(Debug, Clone, Copy)]
enum ReqFraming {
    None,
    Length(u64),
    Chunked,
}

/// Encodes a request head in the order nginx's proxy module writes it
/// (`ngx_http_proxy_create_request`): the request line; the headers `set` holds (Kong's
/// `proxy_set_header`s, in its template's order, Host among them); the framing (nginx's own
/// `Content-Length` or `Transfer-Encoding`, after the configured ones); then the client's
/// headers but those `set` replaces and the client's own framing headers. The client's
/// headers are written from its head as received (`client`: names in their case, in their
/// order, [`ClientHead`]) when it accounts for every value left in `p`'s headers, else from
/// `p`'s `HeaderMap` (names in lower case, those of one name together).
fn encode_head(
    out: &mut Vec<u8>,
    p: &http::request::Parts,
    client: Option<&ClientHead>,
    set: &SetHeaders,
    framing: ReqFraming,
) {
    out.extend_from_slice(p.method.as_str().as_bytes());
    out.push(b' ');
    match p.uri.path_and_query() {
        Some(pq) => out.extend_from_slice(pq.as_str().as_bytes()),
        None => out.push(b'/'),
    }
    out.extend_from_slice(b" HTTP/1.1\r\n");
    set.write(out);
    match framing {
        ReqFraming::None => {}
        ReqFraming::Length(n) => {
            out.extend_from_slice(b"Content-Length: ");
            out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        ReqFraming::Chunked => out.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
    }
    if !client.is_some_and(|c| client_lines(out, c, p, set)) {
        for (name, value) in &p.headers {
            if skipped(name.as_str().as_bytes(), set) {
                continue;
            }
            line(out, name.as_str().as_bytes(), value.as_bytes());
        }
    }
    out.extend_from_slice(b"\r\n");
}

/// Whether a client's header `name` is left out of the upstream request: its framing
/// (written by the gateway) and the names `set` replaces.
#[inline]
fn skipped(name: &[u8], set: &SetHeaders) -> bool {
    (name.len() == 14 && name.eq_ignore_ascii_case(b"content-length"))
        || (name.len() == 17 && name.eq_ignore_ascii_case(b"transfer-encoding"))
        || set.replaces_raw(name)
}

/// Writes the client's header lines from its head as received, but those [`skipped`] and
/// those removed since it was parsed; `false` (nothing written) when the lines kept do not
/// account for exactly the values in `p`'s headers (the map changed otherwise, or the head
/// is not this request's): the caller writes from the map then.
fn client_lines(
    out: &mut Vec<u8>,
    c: &ClientHead,
    p: &http::request::Parts,
    set: &SetHeaders,
) -> bool {
    let mark = out.len();
    let mut in_map = 0usize;
    for (name, value) in c.lines() {
        if !c.removed.is_empty()
            && c.removed
                .iter()
                .any(|r| name.eq_ignore_ascii_case(r.as_str().as_bytes()))
        {
            continue;
        }
        in_map += 1;
        if skipped(name, set) {
            continue;
        }
        line(out, name, value);
    }
    if in_map != p.headers.len() {
        out.truncate(mark);
        return false;
    }
    true
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

/// The largest chunk size nginx takes (`ngx_http_parse_chunked` refuses a size past
/// `NGX_MAX_OFF_T_VALUE / 16` before reading on).
const MAX_CHUNK: u64 = i64::MAX as u64 / 16;

/// Parses a chunk-size line (`1a;ext=v`) up to its LF (excluded), as
/// `ngx_http_parse_chunked` reads it: hex digits (leading zeros allowed), then the line's
/// end or an extension, which starts at `;`, SP or HTAB and runs to the end of the line;
/// a CR only right before the LF.
fn chunk_size(line: &[u8]) -> Option<u64> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.contains(&b'\r') {
        return None;
    }
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 {
        return None;
    }
    if let Some(b) = line.get(digits)
        && !matches!(b, b';' | b' ' | b'\t')
    {
        return None;
    }
    line[..digits]
        .iter()
        .try_fold(0u64, |n, b| {
            if n > MAX_CHUNK {
                return None;
            }
            let d = (*b as char).to_digit(16)?;
            Some(n * 16 + u64::from(d))
        })
        .filter(|n| *n <= MAX_CHUNK)
}

/// A line of the trailer section up to its LF (excluded): whether it is the empty line
/// that ends the section (`Some(true)`), another line (`Some(false)`), or invalid (a CR
/// other than right before the LF).
fn trailer_line(line: &[u8]) -> Option<bool> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.contains(&b'\r') {
        return None;
    }
    Some(line.is_empty())
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
                State::ChunkSize if !c.buf.is_empty() => {
                    match c.buf.iter().position(|b| *b == b'\n') {
                        Some(i) => {
                            let Some(size) = chunk_size(&c.buf[..i]) else {
                                return this.fail(invalid("invalid chunk size in upstream body"));
                            };
                            c.buf.advance(i + 1);
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
                // the end of the chunk's data: CRLF, or LF alone
                State::ChunkEnd if c.buf.first() == Some(&b'\n') => {
                    c.buf.advance(1);
                    this.state = State::ChunkSize;
                    continue;
                }
                State::ChunkEnd if c.buf.len() >= 2 => {
                    if &c.buf[..2] != b"\r\n" {
                        return this.fail(invalid("missing line end after chunk data"));
                    }
                    c.buf.advance(2);
                    this.state = State::ChunkSize;
                    continue;
                }
                State::ChunkEnd if c.buf.first().is_some_and(|b| *b != b'\r') => {
                    return this.fail(invalid("missing line end after chunk data"));
                }
                State::Trailers if !c.buf.is_empty() => {
                    // Trailer fields are dropped (nginx's `proxy_pass_trailers` is off in
                    // Kong); the section ends with an empty line.
                    match c.buf.iter().position(|b| *b == b'\n') {
                        Some(i) => {
                            let Some(last) = trailer_line(&c.buf[..i]) else {
                                return this.fail(invalid("invalid upstream trailer"));
                            };
                            c.buf.advance(i + 1);
                            if last {
                                this.finish();
                                return Poll::Ready(None);
                            }
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

    /// A head's end is found wherever it falls, also across the bytes already looked at, in
    /// every line-ending style httparse takes; a head still without one is not parsed again.
    #[test]
    fn a_heads_end_is_found_across_reads() {
        let head = b"HTTP/1.1 200 OK\r\nA: b\r\n\r\n";
        for from in 0..head.len() {
            assert!(head_end_from(head, from), "from {from}");
        }
        assert!(!head_end_from(b"HTTP/1.1 200 OK\r\nA: b\r\n", 0));
        assert!(!head_end_from(b"HTTP/1.1 200 OK\r\nA: b\r\n\r", 20));
        assert!(head_end_from(b"HTTP/1.1 200 OK\nA: b\n\n", 22));
        assert!(head_end_from(b"HTTP/1.1 200 OK\nA: b\n\r\n", 22));
        assert!(!head_end_from(b"HTTP/1.1 200 OK\r\nA: b\r\n\r\n", 99));
    }

    /// Lines checked one by one as they complete are valid or not as the whole head's parse
    /// finds them.
    #[test]
    fn lines_are_checked_as_the_whole_parse_checks_them() {
        let mut checked = 0;
        let head = b"HTTP/1.1 200 OK\r\nX-A: b\r\nX-B:c\nX-C: \r\nX-D";
        check_lines(head, &mut checked, 0).unwrap();
        assert_eq!(checked, head.len() - 3, "up to the last complete line");
        // empty lines before the status line (httparse skips them), the status line in a
        // later read
        let mut checked = 2;
        check_lines(b"\r\nHTTP/1.1 200 OK\r\nA: b\r\n", &mut checked, 2).unwrap();
        assert_eq!(checked, 25);
        // a line arriving in pieces is looked for from where the last read ended
        let mut checked = 17;
        let long = b"HTTP/1.1 200 OK\r\nX-A: 0123456789\r\n";
        check_lines(&long[..25], &mut checked, 17).unwrap();
        assert_eq!(checked, 17, "no line completed yet");
        check_lines(long, &mut checked, 25).unwrap();
        assert_eq!(checked, long.len());
        for bad in [
            &b"HTTP/1.1 200 OK\r\nX-\0: b\r\n"[..],
            b"HTTP/1.1 200 OK\r\nX-A\r\n",
            b"HTTP/1.1 200 OK\r\n folded\r\n",
            b"HTTP/1.1 abc OK\r\n",
            b"HTTP/1.1 200 OK\r\nX-A: b\rc\r\n",
        ] {
            let mut checked = 0;
            assert!(check_lines(bad, &mut checked, 0).is_err(), "{bad:?}");
            let mut whole = bad.to_vec();
            whole.extend_from_slice(b"\r\n");
            assert!(parse_answer(&whole, 4096).is_err(), "{bad:?} whole");
        }
    }

    #[test]
    fn chunk_sizes_as_nginx_reads_them() {
        assert_eq!(chunk_size(b"1a"), Some(26));
        assert_eq!(chunk_size(b"1a\r"), Some(26));
        assert_eq!(chunk_size(b"0"), Some(0));
        assert_eq!(chunk_size(b"A;name=value"), Some(10));
        assert_eq!(chunk_size(b"A;name=value\r"), Some(10));
        // SP and HTAB start an extension too
        assert_eq!(chunk_size(b"3 x"), Some(3));
        assert_eq!(chunk_size(b"3\t;x"), Some(3));
        assert_eq!(chunk_size(b"3 "), Some(3));
        // leading zeros are only digits
        assert_eq!(chunk_size(b"0000000000000000000000001f"), Some(31));
        assert_eq!(chunk_size(b""), None);
        assert_eq!(chunk_size(b"\r"), None);
        assert_eq!(chunk_size(b" 3"), None);
        assert_eq!(chunk_size(b"g"), None);
        assert_eq!(chunk_size(b"3g"), None);
        assert_eq!(chunk_size(b"-1"), None);
        assert_eq!(chunk_size(b"3\rx"), None);
        assert_eq!(chunk_size(b"3;a\rb"), None);
        assert_eq!(chunk_size(b"7ffffffffffffff"), Some(MAX_CHUNK));
        assert_eq!(chunk_size(b"800000000000000"), None);
        assert_eq!(chunk_size(b"1111111111111111"), None);
    }

    #[test]
    fn trailer_lines_end_with_lf_alone_or_after_cr() {
        assert_eq!(trailer_line(b""), Some(true));
        assert_eq!(trailer_line(b"\r"), Some(true));
        assert_eq!(trailer_line(b"X-T: 1"), Some(false));
        assert_eq!(trailer_line(b"X-T: 1\r"), Some(false));
        assert_eq!(trailer_line(b"X-T: \r1"), None);
    }

    #[test]
    fn lengths_as_ngx_atoof_reads_them() {
        assert_eq!(parse_length(b"12"), Some(12));
        assert_eq!(parse_length(b"0000000000000000000012"), Some(12));
        assert_eq!(parse_length(b"9223372036854775807"), Some(i64::MAX as u64));
        assert_eq!(parse_length(b"9223372036854775808"), None);
        assert_eq!(parse_length(b""), None);
        assert_eq!(parse_length(b"+1"), None);
        assert_eq!(parse_length(b"1 "), None);
        assert_eq!(parse_length(b"1,1"), None);
        assert_eq!(parse_length(b"99999999999999999999"), None);
    }

    /// Whether `raw` is refused as an invalid answer (anything else panics).
    fn refused(raw: &[u8]) -> bool {
        match parse_answer(raw, DEFAULT_HEAD_LIMIT) {
            Ok(Some(_)) => false,
            Ok(None) => panic!("incomplete: {raw:?}"),
            Err(e) => {
                assert!(is_invalid_answer(&e), "{e}");
                true
            }
        }
    }

    fn parsed(raw: &[u8]) -> Parsed {
        match parse_answer(raw, DEFAULT_HEAD_LIMIT) {
            Ok(Some(p)) => p,
            Ok(None) => panic!("incomplete: {raw:?}"),
            Err(e) => panic!("refused ({e}): {raw:?}"),
        }
    }

    #[test]
    fn framing_is_refused_as_nginx_1_23_refuses_it() {
        for raw in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok",
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nok",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\nok",
            b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\nok",
            b"HTTP/1.1 200 OK\r\nContent-Length: 9223372036854775808\r\n\r\n",
            // (also on answers without a body)
            b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n",
        ] {
            assert!(refused(raw), "{}", String::from_utf8_lossy(raw));
        }
        // Deviations (ARCHITECTURE.md): nginx takes a line without a colon as a header with
        // an empty value, and a status line it cannot read as the start of an HTTP/0.9 body;
        // both are refused here.
        for raw in [
            &b"HTTP/1.1 200 OK\r\nX-A\r\n\r\n"[..],
            b"HTTP/1.1 abc OK\r\n\r\n",
        ] {
            assert!(refused(raw), "{}", String::from_utf8_lossy(raw));
        }
        let p = parsed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked\r\n\r\n");
        assert!(p.chunked && p.length.is_none());
        assert!(p.lines.is_empty(), "the coding is not forwarded");
        let p = parsed(b"HTTP/1.1 200 OK\r\nContent-Length: 0002 \r\n\r\nok");
        assert_eq!(p.length, Some(2));
        assert_eq!(p.lines.len(), 1, "the length is kept");
    }

    #[test]
    fn the_head_limit_is_the_whole_head_and_the_count_is_free() {
        let head = b"HTTP/1.1 200 OK\r\nX-A: 1234\r\nContent-Length: 0\r\n\r\n";
        let n = head.len();
        assert!(matches!(parse_answer(head, n), Ok(Some(p)) if p.len == n));
        let e = parse_answer(head, n - 1).err().expect("too big");
        assert!(is_invalid_answer(&e), "{e}");
        // 150 small headers, within the default 4k: no count limit
        let mut many = b"HTTP/1.1 200 OK\r\n".to_vec();
        for i in 0..150 {
            many.extend_from_slice(format!("X-H{i}: v\r\n").as_bytes());
        }
        many.extend_from_slice(b"Content-Length: 0\r\n\r\n");
        assert!(many.len() < DEFAULT_HEAD_LIMIT);
        let p = parsed(&many);
        assert_eq!(p.lines.len(), 151);
        assert_eq!(p.len, many.len());
        // the same headers past a smaller limit
        let e = parse_answer(&many, 1024).err().expect("too big");
        assert!(is_invalid_answer(&e), "{e}");
        // an incomplete head is waited for
        assert!(matches!(
            parse_answer(&many[..many.len() - 2], DEFAULT_HEAD_LIMIT),
            Ok(None)
        ));
    }

    #[test]
    fn nginx_hidden_headers_are_left_out() {
        let raw = b"HTTP/1.1 200 OK\r\nX-Pad: avoid browser bug\r\nX-Accel-Expires: 10\r\n\
X-Accel-Redirect: /x\r\nX-Accel-Limit-Rate: 1\r\nX-Accel-Buffering: no\r\n\
X-Accel-Charset: utf-8\r\nX-Kept: 1\r\nContent-Length: 0\r\n\r\n";
        let p = parsed(raw);
        let names: Vec<&[u8]> = p.lines.iter().map(|l| &raw[l[0]..l[1]]).collect();
        assert_eq!(names, [&b"X-Kept"[..], b"Content-Length"]);
        assert!(p.seen.unbuffered, "X-Accel-Buffering is still read");
    }

    #[test]
    fn answers_below_http_1_1_close_their_connection() {
        assert!(
            parsed(b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n").close
        );
        assert!(!parsed(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").close);
        // (nginx finds "close" anywhere in the value)
        assert!(parsed(b"HTTP/1.1 200 OK\r\nConnection: keep-alive, Close\r\n\r\n").close);
    }

    #[test]
    fn names_the_gateway_sets_are_written_in_kongs_case() {
        let mut out = Vec::new();
        for n in [
            "date",
            "x-kong-request-id",
            "x-real-ip",
            "www-authenticate",
            "x-some-plugin-header",
        ] {
            push_wire_name(&mut out, n);
            out.push(b' ');
        }
        assert_eq!(
            String::from_utf8_lossy(&out),
            "Date X-Kong-Request-Id X-Real-IP WWW-Authenticate X-Some-Plugin-Header "
        );
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
        encode_head(&mut out, &p, None, &none, ReqFraming::Length(3));
        // (the framing before the client's headers, as nginx writes its own)
        assert_eq!(
            out,
            b"POST /a?b HTTP/1.1\r\nContent-Length: 3\r\nhost: h\r\n\r\n"
        );
        out.clear();
        encode_head(&mut out, &p, None, &none, ReqFraming::Chunked);
        assert_eq!(
            out,
            b"POST /a?b HTTP/1.1\r\nTransfer-Encoding: chunked\r\nhost: h\r\n\r\n"
        );
        out.clear();
        encode_head(&mut out, &p, None, &none, ReqFraming::None);
        assert!(!out.windows(7).any(|w| w.eq_ignore_ascii_case(b"content")));
    }

    #[test]
    fn set_headers_replace_remove_or_add_and_the_rest_passes() {
        static XA: Named = Named::new("x-a", b"X-A");
        static XB: Named = Named::new("x-b", b"X-B");
        static XC: Named = Named::new("x-c", b"X-C");
        static XD: Named = Named::new("x-d", b"X-D");
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
        encode_head(&mut out, &p, None, &set, ReqFraming::None);
        assert_eq!(
            String::from_utf8_lossy(&out),
            "GET / HTTP/1.1\r\nX-A: ours\r\nX-C: new\r\nhost: client.test\r\nx-keep: 1\r\n\r\n"
        );
        set.set_host(Some(HeaderValue::from_static("upstream.test")));
        out.clear();
        encode_head(&mut out, &p, None, &set, ReqFraming::None);
        assert_eq!(
            String::from_utf8_lossy(&out),
            "GET / HTTP/1.1\r\nHost: upstream.test\r\nX-A: ours\r\nX-C: new\r\nx-keep: 1\r\n\r\n"
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

    /// A request as hyper (or the fast path) would make it from `head`.
    fn request_of(head: &'static [u8]) -> http::Request<()> {
        let mut hdrs = [httparse::EMPTY_HEADER; 16];
        let mut r = httparse::Request::new(&mut hdrs);
        assert!(r.parse(head).expect("parses").is_complete());
        let mut b = http::Request::builder()
            .method(r.method.expect("method"))
            .uri(r.path.expect("target"))
            .version(if r.version == Some(0) {
                Version::HTTP_10
            } else {
                Version::HTTP_11
            });
        for h in r.headers.iter() {
            b = b.header(h.name, h.value);
        }
        b.body(()).expect("request")
    }

    static XB: Named = Named::new("x-b", b"X-B");
    static XF: Named = Named::new("x-forwarded-for", b"X-Forwarded-For");

    #[test]
    fn client_headers_go_as_received_after_the_set_ones() {
        const HEAD: &[u8] = b"\r\nGET /p?q HTTP/1.1\r\nHost: client.test\r\nX-Aa: 1\r\nx-bb:2\n\
            X-AA:  \t3 \t\r\nX-Forwarded-For: 9.9.9.9\r\nContent-Length: 0\r\n\
            X-B: client\r\nUser-Agent: ua/1\r\n\r\n";
        let req = request_of(HEAD);
        let client = ClientHead::new(Bytes::from_static(HEAD));
        assert!(client.matches(&req));
        let (p, ()) = req.into_parts();
        let mut set = SetHeaders::default();
        set.set(&XB, None);
        set.host_here();
        set.set(&XF, Some(HeaderValue::from_static("1.2.3.4")));
        set.set_host(Some(HeaderValue::from_static("upstream.test")));
        let mut out = Vec::new();
        encode_head(&mut out, &p, Some(&client), &set, ReqFraming::Length(0));
        assert_eq!(
            String::from_utf8_lossy(&out),
            "GET /p?q HTTP/1.1\r\nHost: upstream.test\r\nX-Forwarded-For: 1.2.3.4\r\n\
             Content-Length: 0\r\nX-Aa: 1\r\nx-bb: 2\r\nX-AA: 3\r\nUser-Agent: ua/1\r\n\r\n"
        );
        // without the head: the same headers from the map, lower case, grouped by name
        out.clear();
        encode_head(&mut out, &p, None, &set, ReqFraming::Length(0));
        assert_eq!(
            String::from_utf8_lossy(&out),
            "GET /p?q HTTP/1.1\r\nHost: upstream.test\r\nX-Forwarded-For: 1.2.3.4\r\n\
             Content-Length: 0\r\nx-aa: 1\r\nx-aa: 3\r\nx-bb: 2\r\nuser-agent: ua/1\r\n\r\n"
        );
    }

    #[test]
    fn names_removed_from_the_map_are_left_out_and_other_changes_fall_back() {
        const HEAD: &[u8] = b"GET / HTTP/1.1\r\nHost: h\r\nConnection: X-Gone, keep-alive\r\n\
            X-Keep: 1\r\nX-GONE: 2\r\nKeep-Alive: 5\r\n\r\n";
        let req = request_of(HEAD);
        let mut client = ClientHead::new(Bytes::from_static(HEAD));
        let (mut p, ()) = req.into_parts();
        let none = SetHeaders::default();
        for n in ["connection", "x-gone", "keep-alive"] {
            p.headers.remove(n);
            client.removed(HeaderName::from_static(n));
        }
        let mut out = Vec::new();
        encode_head(&mut out, &p, Some(&client), &none, ReqFraming::None);
        assert_eq!(
            String::from_utf8_lossy(&out),
            "GET / HTTP/1.1\r\nHost: h\r\nX-Keep: 1\r\n\r\n"
        );
        // A removal not noted in the head (or anything else that changes the number of
        // values): the map is written instead, never a header it no longer has.
        p.headers.remove("x-keep");
        out.clear();
        encode_head(&mut out, &p, Some(&client), &none, ReqFraming::None);
        assert_eq!(
            String::from_utf8_lossy(&out),
            "GET / HTTP/1.1\r\nhost: h\r\n\r\n"
        );
        p.headers.append("x-added", HeaderValue::from_static("a"));
        p.headers.append("x-added", HeaderValue::from_static("b"));
        out.clear();
        encode_head(&mut out, &p, Some(&client), &none, ReqFraming::None);
        assert_eq!(
            String::from_utf8_lossy(&out),
            "GET / HTTP/1.1\r\nhost: h\r\nx-added: a\r\nx-added: b\r\n\r\n"
        );
    }

    #[test]
    fn a_head_matches_only_its_own_request() {
        const HEAD: &[u8] = b"POST /a?b HTTP/1.1\r\nHost: h\r\nX-A: 1\r\nContent-Length: 2\r\n\r\n";
        let head = ClientHead::new(Bytes::from_static(HEAD));
        assert!(head.matches(&request_of(HEAD)));
        for other in [
            &b"PUT /a?b HTTP/1.1\r\nHost: h\r\nX-A: 1\r\nContent-Length: 2\r\n\r\n"[..],
            b"POST /a?c HTTP/1.1\r\nHost: h\r\nX-A: 1\r\nContent-Length: 2\r\n\r\n",
            b"POST /a?b HTTP/1.0\r\nHost: h\r\nX-A: 1\r\nContent-Length: 2\r\n\r\n",
            b"POST /a?b HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\n",
            b"POST /a?b HTTP/1.1\r\nHost: h\r\nX-A: 12\r\nContent-Length: 2\r\n\r\n",
            b"POST /a?b HTTP/1.1\r\nHost: h\r\nX-AB: 1\r\nContent-Length: 2\r\n\r\n",
        ] {
            assert!(
                !head.matches(&request_of(other)),
                "{}",
                String::from_utf8_lossy(other)
            );
        }
        // absolute form
        const ABS: &[u8] = b"GET http://h/x HTTP/1.1\r\nHost: h\r\n\r\n";
        assert!(ClientHead::new(Bytes::from_static(ABS)).matches(&request_of(ABS)));
    }
}
