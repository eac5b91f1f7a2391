//! The HTTP/1.1 fast path of proxy connections (cleartext, and TLS without ALPN `h2`).
//!
//! Most proxied requests are HTTP/1.1 requests without a body on a keep-alive connection.
//! For those, hyper's server machinery (its dispatcher, its encoder, a boxed service future
//! per request) costs more CPU than the proxying itself. This module serves them on its own
//! connection loop instead:
//!
//! 1. read a request head into the connection's buffer and parse it with `httparse` (the
//!    parser hyper uses, with the same defaults: no obs-fold, no spaces before colons);
//! 2. decide from the head alone whether the request is *simple*: `HTTP/1.1`, origin-form
//!    target, no body (`Content-Length` absent or `0`), no `Transfer-Encoding`, `Expect`,
//!    `Upgrade` or `HTTP2-Settings`, `Connection` absent or `keep-alive`, within the header
//!    count and size limits;
//! 3. a simple request goes through the very same phases as any other
//!    ([`crate::proxy::handle`]); its response is written here (`Date` added when missing,
//!    `Content-Length` or chunked framing, one `writev` for a buffered body). An upstream's
//!    headers keep the case they came in, as nginx keeps it; the headers the gateway writes
//!    itself are in the case Kong's nginx writes them (`Date`, `Content-Length`, `Via`,
//!    `X-Kong-Request-Id`: [`crate::h1_client::wire_name`]). The request head's bytes go
//!    with the request ([`crate::h1_client::ClientHead`]), so that the client's headers
//!    reach an HTTP/1.1 upstream as it sent them, as nginx copies them.
//!
//! A head that nginx refuses (unparsable, a request line nginx refuses (`request_line.rs`),
//! past nginx's head buffers ([`crate::header_buffers`]) or, with `max_headers` at most 64,
//! the count limit, a second `Content-Length` or one beside `Transfer-Encoding`, a length
//! that is not one number, a transfer coding other than `chunked`) is answered here as Kong
//! answers it ([`refusal_bytes`], [`crate::proxy::refusal`]): in Kong's error format, with a
//! request id, for the statuses Kong's `error_page` lines give its handler (400 with `Bad
//! request` or `Request header or cookie too large`, 405, 414), and with nginx's own HTML
//! page for the 501 of a transfer coding, which they leave to nginx; to a `HEAD` request,
//! the head of that answer only. The connection is then closed after a lingering read. The
//! framing guard in front of hyper applies the same rules ([`refusal_of`]) and gives the
//! same answer (on admin and status listeners, which have no fast path, nginx's own page
//! for every refusal); the parser and its configuration are hyper's.
//!
//! The first request that is not simple (or an HTTP/2 preface) hands the connection to hyper
//! for the rest of its life, with the bytes read so far put back in front of it
//! ([`Rewind`]). Hyper then sees exactly what it would have seen without this module, so
//! every rule of the hyper path (the framing guard, upgrades, bodies) is unchanged. A head
//! (or HTTP/2 preface) handed over before it is complete keeps the deadline this module
//! started for it ([`Outcome::Handoff`]), which the framing guard holds hyper to.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::SystemTime;

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderName};
use http::{HeaderValue, Method, Request, Response, StatusCode, Uri, Version};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::watch;

use crate::body::ProxyBody;
use crate::deadline::Deadline;
use crate::gateway::Shared;
use crate::h1_client::line;
use crate::header_buffers::HeaderBuffers;
use crate::metrics::RouteStats;
use crate::proxy::{Answer, ConnInfo, RawAnswer, Refusal};

/// Most headers the fast path parses; a request with more goes to hyper (which applies
/// `max_headers`).
const MAX_HEADERS: usize = 64;

/// The HTTP/2 connection preface (h2c with prior knowledge).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// How a connection left the fast path.
pub(crate) enum Outcome<T> {
    /// Closed (by either side, a timeout, or shutdown).
    Closed,
    /// To be served by hyper from here on, the unconsumed bytes first.
    Handoff {
        io: Rewind<T>,
        /// When the request head (or HTTP/2 preface) those bytes begin must be complete, if
        /// it is not yet: its `client_header_timeout` as the fast path timed it (for the
        /// first head, from the accept). Hyper's own header timer would start over at the
        /// hand-off, and its version detection has none; the framing guard holds it instead.
        /// `None` when the bytes hold a complete head (hyper times the heads after it).
        head_by: Option<std::time::Instant>,
    },
}

/// Where the spans of a parsed head are (offsets into the connection buffer).
#[derive(Default)]
struct Spans {
    method: (usize, usize),
    path: (usize, usize),
    headers: Vec<[usize; 4]>,
}

/// What a parse of the buffer found.
enum Parsed {
    /// A simple request whose head is this many bytes.
    Simple(usize),
    /// More bytes are needed.
    Partial,
    /// Anything else: hyper decides.
    Other,
    /// A head nginx (and so Kong) refuses, and so would hyper or the framing guard: the
    /// fast path answers it as Kong does ([`refusal_bytes`]).
    Refused(Refusal),
    /// More headers than the parser was given slots for.
    TooMany,
}

/// Where `part`, a slice of `buf` (as a parser returns it), lies in `buf`.
pub(crate) fn span(buf: &[u8], part: &[u8]) -> (usize, usize) {
    let start = part.as_ptr() as usize - buf.as_ptr() as usize;
    (start, start + part.len())
}

/// [`span`] of `part` if it lies in `buf`: a parser may also give a static empty slice
/// (`httparse` does for a status line without a reason phrase).
pub(crate) fn span_within(buf: &[u8], part: &[u8]) -> Option<(usize, usize)> {
    let start = (part.as_ptr() as usize).checked_sub(buf.as_ptr() as usize)?;
    let end = start.checked_add(part.len())?;
    (end <= buf.len()).then_some((start, end))
}

/// Parses a head at the start of `buf` and records its spans. `buffers` limit its lines
/// and size as nginx's buffers do. [`Parsed::TooMany`]: more headers than this parser holds
/// but within `max_headers` (hyper's to read; the head may not be complete yet).
fn parse(buf: &[u8], max_headers: usize, buffers: &HeaderBuffers, spans: &mut Spans) -> Parsed {
    // (slots left uninitialized: the parser writes those it fills, not all 64 each time)
    let mut hdrs = [const { std::mem::MaybeUninit::uninit() }; MAX_HEADERS];
    let limit = max_headers.clamp(1, MAX_HEADERS);
    match parse_in(buf, &mut hdrs[..limit], buffers, spans) {
        Parsed::TooMany if max_headers <= MAX_HEADERS => Parsed::Refused(Refusal::TooLarge),
        p => p,
    }
}

/// Whether `buf` holds a whole request head: its blank line after the request line (the
/// empty lines a client may send before a request skipped, as `httparse` skips them).
fn head_complete(buf: &[u8]) -> bool {
    let start = buf
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(buf.len());
    crate::h1_guard::find_head_end(&[], &buf[start..]).is_some()
}

/// Why nginx (and so Kong) refuses the request head that `head` holds or begins, if it
/// does: the fast path's rules ([`parse`]) with room for `max_headers` headers. A head that
/// is not complete yet is refused only when it can no longer become acceptable. For the
/// framing guard in front of hyper ([`crate::h1_guard`]).
pub(crate) fn refusal_of(
    head: &[u8],
    max_headers: usize,
    buffers: &HeaderBuffers,
) -> Option<Refusal> {
    let mut spans = Spans::default();
    // (the fast path's slots on the stack first: a head with more lines than those gets room
    // for `max_headers` of them, which is not written out for every head)
    let parsed = match parse(head, max_headers, buffers, &mut spans) {
        Parsed::TooMany => {
            let mut hdrs = vec![std::mem::MaybeUninit::uninit(); max_headers];
            parse_in(head, &mut hdrs, buffers, &mut spans)
        }
        p => p,
    };
    match parsed {
        Parsed::Refused(why) => Some(why),
        Parsed::TooMany => Some(Refusal::TooLarge),
        Parsed::Simple(_) | Parsed::Partial | Parsed::Other => None,
    }
}

/// The check of a request head that arrives in pieces, a line at a time: each line is
/// looked at once, when it has arrived whole, so that a head trickled a line per read costs
/// work in proportion to its size (a [`refusal_of`] per line would parse the whole head each
/// time, with room for `max_headers` headers past the fast path's). Its verdict on a head
/// that is not complete yet is [`refusal_of`]'s on that head: each line alone as `httparse`
/// reads it in a head (the request line, then header lines), the lines counted against
/// `max_headers`, then nginx's buffers filled line by line
/// ([`crate::header_buffers::Fill`]); a complete head gets [`refusal_of`] itself, once (its
/// request line's target, its framing and host rules).
#[derive(Debug, Clone, Copy)]
pub(crate) struct HeadCheck {
    /// The head's complete lines before this offset were found acceptable.
    checked: usize,
    /// Header lines among them (the request line not counted).
    lines: usize,
    /// nginx's buffers as those lines filled them.
    fill: crate::header_buffers::Fill,
}

impl HeadCheck {
    /// For a new head, nothing of it checked.
    pub(crate) fn new(buffers: &HeaderBuffers) -> HeadCheck {
        HeadCheck {
            checked: 0,
            lines: 0,
            fill: crate::header_buffers::Fill::new(buffers),
        }
    }

    /// Why nginx refuses `head`, a request head not complete yet (no blank line ending it)
    /// that starts with its request line and extends the one this check last looked at, if
    /// it does: [`refusal_of`]'s verdict, from the lines completed since and the partial
    /// last line alone. The lines found acceptable are not looked at again.
    pub(crate) fn unfinished(
        &mut self,
        head: &[u8],
        max_headers: usize,
        buffers: &HeaderBuffers,
    ) -> Option<Refusal> {
        debug_assert!(!head.starts_with(b"\r") && !head.starts_with(b"\n"));
        // (the limit `parse` and `refusal_of` give httparse, which counts a header once its
        // line is read whole, and refuses the first line past it)
        let limit = max_headers.max(1);
        let (mut at, mut lines, mut fill) = (self.checked, self.lines, self.fill);
        // A line the buffers cannot take: the answer unless httparse refuses a later line
        // (it reads them all first).
        let mut too_large = None;
        while let Some(nl) = memchr::memchr(b'\n', &head[at..]) {
            let end = at + nl + 1;
            let line = &head[at..end];
            if !line_parses(line, at == 0) {
                return Some(Refusal::Bad);
            }
            if at != 0 {
                lines += 1;
                if lines > limit {
                    return Some(Refusal::TooLarge);
                }
            }
            if too_large.is_none()
                && let Err(why) = fill.line(buffers, line)
            {
                too_large = Some(why);
            }
            at = end;
        }
        let tail = &head[at..];
        if !tail.is_empty() && !line_parses(tail, at == 0) {
            return Some(Refusal::Bad);
        }
        if let Some(why) = too_large.or_else(|| fill.partial(buffers, tail.len())) {
            return Some(why);
        }
        *self = HeadCheck {
            checked: at,
            lines,
            fill,
        };
        None
    }
}

/// Whether `line`, one line of a head (its LF included), or the partial last line (without
/// one), is read by `httparse` without an error: as a request line (`request_line`), else as
/// a header line. (Alone, a line that parses is a head to be continued: `Partial`.)
fn line_parses(line: &[u8], request_line: bool) -> bool {
    #[cfg(test)]
    PARSED.with(|p| p.set(p.get() + line.len()));
    if request_line {
        matches!(
            httparse::Request::new(&mut []).parse(line),
            Ok(httparse::Status::Partial)
        )
    } else {
        header_line_parses(line)
    }
}

/// Whether `line`, one header line of a head (request or answer; its LF included, or the
/// partial last line without one), is read by `httparse` without an error (alone, a line
/// that parses is a head to be continued: `Partial`).
pub(crate) fn header_line_parses(line: &[u8]) -> bool {
    let mut one = [httparse::EMPTY_HEADER; 1];
    matches!(
        httparse::parse_headers(line, &mut one),
        Ok(httparse::Status::Partial)
    )
}

#[cfg(test)]
thread_local! {
    /// Bytes this thread's head checks gave `httparse` ([`parse_in`], [`line_parses`]): for
    /// the tests that a head arriving in pieces is checked in linear work.
    pub(crate) static PARSED: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// [`parse`] with the header slots given: more headers than slots is [`Parsed::TooMany`].
fn parse_in<'b>(
    buf: &'b [u8],
    hdrs: &mut [std::mem::MaybeUninit<httparse::Header<'b>>],
    buffers: &HeaderBuffers,
    spans: &mut Spans,
) -> Parsed {
    #[cfg(test)]
    PARSED.with(|p| p.set(p.get() + buf.len()));
    let mut req = httparse::Request::new(&mut []);
    // (`Request::parse`'s configuration, the default; a head within nginx's first buffer is
    // within every limit: one comparison)
    let n = match httparse::ParserConfig::default()
        .parse_request_with_uninit_headers(&mut req, buf, hdrs)
    {
        Ok(httparse::Status::Complete(n)) => {
            if n > buffers.first
                && let Some(why) = buffers.refusal(&buf[..n])
            {
                return Parsed::Refused(why);
            }
            n
        }
        Ok(httparse::Status::Partial) => {
            if buf.len() > buffers.first
                && let Some(why) = buffers.refusal(buf)
            {
                return Parsed::Refused(why);
            }
            return Parsed::Partial;
        }
        Err(httparse::Error::TooManyHeaders) => return Parsed::TooMany,
        // (the parser and configuration hyper uses: it would refuse the head as well)
        Err(_) => return Parsed::Refused(Refusal::Bad),
    };
    let (Some(method), Some(path)) = (req.method, req.path) else {
        return Parsed::Other;
    };
    // the request line as nginx reads it (its method characters, the target's form, the
    // path's encoding and dot segments): refused before any header is looked at
    if !crate::request_line::accepted(method.as_bytes(), path.as_bytes()) {
        return Parsed::Refused(Refusal::Bad);
    }
    let mut simple = req.version == Some(1) && path.starts_with('/');
    if simple {
        spans.method = span(buf, method.as_bytes());
        spans.path = span(buf, path.as_bytes());
    }
    spans.headers.clear();
    // the framing rules nginx applies to every HTTP/1 head, in its order: a length that is
    // not one number, a second length, a transfer coding on HTTP/1.0 or given twice, a
    // length beside `chunked` (400), then a transfer coding other than `chunked` (501)
    let (mut lengths, mut codings, mut chunked) = (0u32, 0u32, false);
    for h in req.headers.iter() {
        let name = h.name.as_bytes();
        let plain = if name.eq_ignore_ascii_case(b"content-length") {
            // one decimal number up to 2^63 - 1, as nginx reads it ("3, 3", which hyper
            // merges, is not one)
            let number = h.value.iter().all(u8::is_ascii_digit)
                && std::str::from_utf8(h.value)
                    .ok()
                    .and_then(|v| v.parse::<u64>().ok())
                    .is_some_and(|n| i64::try_from(n).is_ok());
            if !number {
                return Parsed::Refused(Refusal::Bad);
            }
            lengths += 1;
            h.value == b"0"
        } else if name.eq_ignore_ascii_case(b"connection") {
            h.value.eq_ignore_ascii_case(b"keep-alive")
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            codings += 1;
            chunked = h.value.trim_ascii().eq_ignore_ascii_case(b"chunked");
            false
        } else {
            !(name.eq_ignore_ascii_case(b"expect")
                || name.eq_ignore_ascii_case(b"upgrade")
                || name.eq_ignore_ascii_case(b"http2-settings"))
        };
        simple &= plain;
        if simple {
            let (ns, ne) = span(buf, name);
            let (vs, ve) = span(buf, h.value);
            spans.headers.push([ns, ne, vs, ve]);
        }
    }
    if lengths > 1 || (codings > 0 && (req.version == Some(0) || codings > 1)) {
        Parsed::Refused(Refusal::Bad)
    } else if codings == 1 && !chunked {
        // (nginx refuses a missing or bad host first)
        Parsed::Refused(if host_refused(&req, path) {
            Refusal::Bad
        } else {
            Refusal::NotImplemented
        })
    } else if lengths == 1 && codings == 1 {
        Parsed::Refused(Refusal::Bad)
    } else if method == "CONNECT" || method == "TRACE" {
        // nginx serves neither (405), once the host passed
        Parsed::Refused(if host_refused(&req, path) {
            Refusal::Bad
        } else {
            Refusal::NotAllowed
        })
    } else if simple {
        Parsed::Simple(n)
    } else {
        Parsed::Other
    }
}

/// Whether nginx refuses a head for its host (before it looks at its framing or method):
/// two `Host` headers, one that is not a host, or none on an HTTP/1.1 request whose target
/// does not name one. (Other heads have their host checked when they are proxied.)
fn host_refused(req: &httparse::Request<'_, '_>, target: &str) -> bool {
    let mut hosts = req
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("host"));
    match (hosts.next(), hosts.next()) {
        (Some(_), Some(_)) => true,
        (Some(h), None) => !crate::proxy::valid_host(h.value),
        (None, _) => req.version == Some(1) && target.starts_with('/'),
    }
}

/// The value of the first header named `name` in the head at the start of `buf` (complete
/// or not), read leniently: for the format of a refusal only.
fn raw_header<'b>(buf: &'b [u8], name: &[u8]) -> Option<&'b [u8]> {
    for line in buf.split(|&b| b == b'\n').skip(1) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            break;
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        if line[..colon].eq_ignore_ascii_case(name) {
            return Some(line[colon + 1..].trim_ascii());
        }
    }
    None
}

/// Answers a refused head as Kong's proxy server does ([`refusal_bytes`]) and closes the
/// connection; `peer`: the client's address.
async fn refuse<T: AsyncRead + AsyncWrite + Unpin>(
    sh: &Shared,
    (io, peer): (&mut T, std::net::IpAddr),
    head: &[u8],
    why: Refusal,
) {
    let kind = crate::gateway::ListenerKind::Proxy;
    let answer = refusal_bytes(sh, head, why, (kind, peer));
    let mut closing = Closing::new(answer);
    std::future::poll_fn(|cx| closing.poll_close(io, cx)).await;
}

/// The whole answer to a refused head on a listener of `kind`, as bytes: Kong's refusal
/// ([`crate::proxy::refusal`]), its format taken from the head's `Accept` and
/// `Content-Type` where Kong's handler renders it. To a `HEAD` request only the head of it,
/// with the `Content-Length` of the body left out, as nginx answers a `HEAD` (whether its
/// error page or Kong's handler writes the answer).
pub(crate) fn refusal_bytes(
    sh: &Shared,
    head: &[u8],
    why: Refusal,
    (kind, peer): (crate::gateway::ListenerKind, std::net::IpAddr),
) -> Vec<u8> {
    let resp = crate::proxy::refusal(
        sh,
        raw_header(head, b"accept"),
        raw_header(head, b"content-type"),
        why,
        kind,
    );
    let (parts, body) = resp.into_parts();
    let mut out = Vec::with_capacity(512);
    head_lines(&mut out, &parts, false);
    let body = match body {
        ProxyBody::Full(b) => b.unwrap_or_default(),
        ProxyBody::Upstream(_) => Bytes::new(),
    };
    push_length(&mut out, body.len() as u64);
    let head_only = is_head_request(head);
    if !head_only {
        out.extend_from_slice(&body);
    }
    if let Some(log) = sh.access.get(kind) {
        let sent = if head_only { 0 } else { body.len() as u64 };
        let id = parts.headers.get("x-kong-request-id");
        let id = id.map_or(&b""[..], |v| v.as_bytes());
        log.refused(
            (peer, &sh.hostname),
            head,
            (parts.status.as_u16(), sent),
            id,
        );
    }
    out
}

/// Whether the request line `head` begins with (after the empty lines a client may send
/// first, which nginx skips) is a `HEAD` request's: nginx knows the method once the method
/// and the space after it are read, so a head refused for anything after them is a `HEAD`
/// request's (`head` is not one, nor `HEAD` followed by anything but a space).
fn is_head_request(head: &[u8]) -> bool {
    let start = head
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(head.len());
    head[start..].starts_with(b"HEAD ")
}

/// nginx's `lingering_time` (30 s, Kong leaves it): the longest a lingering close goes on
/// reading in all.
pub(crate) const LINGERING_TIME: std::time::Duration = std::time::Duration::from_secs(30);
/// nginx's `lingering_timeout` (5 s): the longest a lingering close waits for the client's
/// next bytes.
pub(crate) const LINGERING_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// nginx's `NGX_HTTP_LINGERING_BUFFER_SIZE`: what one lingering read takes and drops.
const LINGERING_BUFFER: usize = 4096;

/// The end of a connection: an answer written (the answer to a refused head, or none when
/// hyper has written its own), the write side shut down, then a lingering read as nginx
/// makes it (`ngx_http_set_lingering_close`, `ngx_http_lingering_close_handler`, with
/// `lingering_close on` and nginx's defaults): what the client still sends is read through a
/// fixed buffer and dropped, however much it is, for as long as each read comes within
/// `lingering_timeout` (5 s) of the one before and `lingering_time` (30 s) has not passed
/// since the lingering began; the client's end of the stream, or an error, ends it at once.
/// So closing with unread bytes (a reset) does not destroy the answer before the client has
/// read it, even when the client writes a whole large body before it reads. Driven by
/// polls, for the fast path's task (after a refused head) and for the framing guard's
/// shutdown (after a refused head, or hyper closing inside a request's body) alike.
pub(crate) struct Closing {
    answer: Vec<u8>,
    written: usize,
    stage: Stage,
}

enum Stage {
    Write,
    Shutdown,
    /// Until the client closes, or the timer: it fires `lingering_timeout` after the last
    /// read, or at the end (`lingering_time` from the start), whichever is sooner.
    Linger {
        end: tokio::time::Instant,
        timer: Pin<Box<tokio::time::Sleep>>,
    },
    Done,
}

impl Closing {
    pub(crate) fn new(answer: Vec<u8>) -> Closing {
        Closing {
            answer,
            written: 0,
            stage: Stage::Write,
        }
    }

    /// The answer to be written.
    #[cfg(test)]
    pub(crate) fn answer(&self) -> &[u8] {
        &self.answer
    }

    /// Writes the answer, shuts the write side down, and lingers; always ends (an error
    /// ends it at once; otherwise within `lingering_time`).
    pub(crate) fn poll_close<T: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        io: &mut T,
        cx: &mut Context<'_>,
    ) -> Poll<()> {
        use std::future::Future as _;
        loop {
            match &mut self.stage {
                Stage::Write => {
                    if self.written == self.answer.len() {
                        self.stage = Stage::Shutdown;
                        continue;
                    }
                    match ready!(Pin::new(&mut *io).poll_write(cx, &self.answer[self.written..])) {
                        Ok(0) | Err(_) => self.stage = Stage::Done,
                        Ok(n) => self.written += n,
                    }
                }
                Stage::Shutdown => {
                    self.stage = match ready!(Pin::new(&mut *io).poll_shutdown(cx)) {
                        Ok(()) => {
                            let now = tokio::time::Instant::now();
                            Stage::Linger {
                                end: now + LINGERING_TIME,
                                timer: Box::pin(tokio::time::sleep_until(now + LINGERING_TIMEOUT)),
                            }
                        }
                        Err(_) => Stage::Done,
                    };
                }
                Stage::Linger { end, timer } => {
                    if timer.as_mut().poll(cx).is_ready() {
                        self.stage = Stage::Done;
                        continue;
                    }
                    let mut sink = [0u8; LINGERING_BUFFER];
                    let mut rb = ReadBuf::new(&mut sink);
                    match ready!(Pin::new(&mut *io).poll_read(cx, &mut rb)) {
                        Ok(()) if !rb.filled().is_empty() => {
                            // (dropped; the next read is waited for again, within what is
                            // left of the lingering time)
                            let next = tokio::time::Instant::now() + LINGERING_TIMEOUT;
                            timer.as_mut().reset(next.min(*end));
                        }
                        _ => self.stage = Stage::Done,
                    }
                }
                Stage::Done => return Poll::Ready(()),
            }
        }
    }
}

/// Makes `out` the request of a simple head `head` (its lines at `spans`; the head's bytes
/// are shared, not copied), in place: a head kept from the connection's request before is
/// reused, its header map's memory with it (the phases lend it, and take it only to send it
/// to an HTTP/2 upstream). `false`: a method, target, name or value that does not parse
/// (`out` then holds no request).
fn request(head: &Bytes, spans: &Spans, out: &mut Option<http::request::Parts>) -> bool {
    let parts = out.get_or_insert_with(|| Request::new(()).into_parts().0);
    let (Ok(method), Ok(uri)) = (
        Method::from_bytes(&head[spans.method.0..spans.method.1]),
        Uri::from_maybe_shared(head.slice(spans.path.0..spans.path.1)),
    ) else {
        *out = None;
        return false;
    };
    parts.method = method;
    parts.uri = uri;
    parts.version = Version::HTTP_11;
    parts.extensions.clear();
    // (the headers the proxy sets go beside it, not into it)
    let headers = &mut parts.headers;
    headers.clear();
    headers.reserve(spans.headers.len());
    for [ns, ne, vs, ve] in &spans.headers {
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&head[*ns..*ne]),
            HeaderValue::from_maybe_shared(head.slice(*vs..*ve)),
        ) else {
            *out = None;
            return false;
        };
        headers.append(name, value);
    }
    true
}

/// Serves `io` until it closes or a request needs hyper. The first request head's
/// `client_header_timeout` runs from `accepted`, when the connection was accepted (as nginx
/// times it: a PROXY protocol header and a TLS handshake before it count); each later one's
/// from the end of the request before. `h2c`: whether the connection may open with the
/// HTTP/2 preface, which is handed to hyper's protocol detection (a plain connection of a
/// listener kind with `http2`); else, and anywhere but at the connection's first byte, the
/// preface is refused as a head that does not parse.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn serve<T>(
    sh: &Arc<Shared>,
    info: &ConnInfo,
    mut io: T,
    slot: Option<crate::batch_write::Slot>,
    accepted: std::time::Instant,
    h2c: bool,
    shutdown: &mut watch::Receiver<bool>,
) -> Outcome<T>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let mut buf = BytesMut::with_capacity(8192);
    let mut out: Vec<u8> = Vec::with_capacity(1024);
    let mut spans = Spans::default();
    // (the request's head, lent to the phases and kept for the next: no body comes this way)
    let mut parts: Option<http::request::Parts> = None;
    let mut first = true;
    let mut stop = Stop::new(shutdown, sh.drain.subscribe());
    let buffers = sh.settings.proxy_header_buffers;
    let mut header_deadline = None;
    loop {
        // --- a request head (the idle time before it counts, as with hyper; for the first,
        // the time since the accept) ---
        let since = if first {
            accepted
        } else {
            std::time::Instant::now()
        };
        let deadline = Deadline::arm(
            &mut header_deadline,
            since,
            sh.settings.client_header_timeout,
        );
        // (a head handed to hyper unfinished keeps this deadline: only on a hand-off)
        let unfinished = |done: bool| {
            (!done).then(|| crate::gateway::later(since, sh.settings.client_header_timeout))
        };
        let n = loop {
            if !buf.is_empty() {
                // (only where the listener's kind has `http2` and the connection is plain:
                // elsewhere nginx reads the preface as an HTTP/1 request line, and refuses it;
                // and only as the connection's very first bytes, as nginx compares its first
                // read with it (`ngx_http_wait_request_handler`): after a request, or after
                // empty lines, it is a request line that does not parse, refused below as
                // any other, 400)
                if first && h2c && H2_PREFACE.starts_with(&buf[..buf.len().min(H2_PREFACE.len())]) {
                    let head_by = unfinished(buf.len() >= H2_PREFACE.len());
                    let io = Rewind::new(io, buf.freeze());
                    return Outcome::Handoff { io, head_by };
                }
                match parse(&buf, sh.settings.max_headers, &buffers, &mut spans) {
                    Parsed::Simple(n) => break n,
                    Parsed::Refused(why) => {
                        refuse(sh, (&mut io, info.peer.ip()), &buf, why).await;
                        return Outcome::Closed;
                    }
                    // (a head with more headers than the fast path holds may not be
                    // complete yet; any other is)
                    Parsed::Other => {
                        let io = Rewind::new(io, buf.freeze());
                        return Outcome::Handoff { io, head_by: None };
                    }
                    Parsed::TooMany => {
                        let head_by = unfinished(head_complete(&buf));
                        let io = Rewind::new(io, buf.freeze());
                        return Outcome::Handoff { io, head_by };
                    }
                    Parsed::Partial => {}
                }
            }
            if buf.capacity() - buf.len() < 2048 {
                buf.reserve(8192);
            }
            let idle = buf.is_empty();
            let r = tokio::select! {
                biased;
                r = io.read_buf(&mut buf) => r,
                () = deadline.expired() => return Outcome::Closed,
                () = std::future::poll_fn(|cx| stop.poll(cx)), if idle => return Outcome::Closed,
            };
            match r {
                Ok(0) | Err(_) => return Outcome::Closed,
                Ok(_) => {}
            }
        };
        first = false;
        let head = buf.split_to(n).freeze();
        if !request(&head, &spans, &mut parts) {
            // A target or value hyper would refuse too.
            refuse(sh, (&mut io, info.peer.ip()), &head, Refusal::Bad).await;
            return Outcome::Closed;
        }
        let head_only = parts.as_ref().is_some_and(|p| p.method == Method::HEAD);
        // (kept with the request, shared, with the spans of its lines, lent to the phases:
        // its headers go upstream as received)
        let lines = std::mem::take(&mut spans.headers);
        let mut client = crate::h1_client::ClientHead::with_lines(head, lines);

        // --- the request, through every phase ---
        let (resp, stats) =
            crate::proxy::handle(sh, info, (&mut parts, None), n as u64, Some(&mut client)).await;
        // (the span list back, for the next head)
        spans.headers = client.into_lines();

        // --- the response ---
        // (nginx writes `Connection: keep-alive` on every answer it keeps the connection
        // for, and `close` once it is exiting)
        // (the request that reaches `keepalive_requests` is the connection's last, as
        // shutting down makes every one)
        let stopping = stop.requested() | info.last_request(sh.settings.keepalive_requests);
        let connection: &[u8] = if stopping {
            b"Connection: close\r\n"
        } else {
            b"Connection: keep-alive\r\n"
        };
        let (written, close) = match resp {
            Answer::Map(resp) => {
                let close = resp
                    .headers()
                    .get(header::CONNECTION)
                    .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
                // (an answer that closes the connection is written in place: the shutdown
                // after it would write it at once anyway)
                let slot = slot.as_ref().filter(|_| !close);
                (
                    write_response(&mut io, &mut out, slot, *resp, head_only, connection, stats)
                        .await,
                    close,
                )
            }
            Answer::Raw(a) => {
                let slot = slot.as_ref();
                (
                    write_raw(&mut io, &mut out, slot, a, head_only, connection, stats).await,
                    false,
                )
            }
        };
        if written.is_err() {
            // (nothing more can be written: no shutdown that would wait to)
            return Outcome::Closed;
        }
        if close {
            let _ = io.shutdown().await;
            return Outcome::Closed;
        }
        // (a shutdown requested since is seen at the next wait for a head)
        if stopping {
            return Outcome::Closed;
        }
    }
}

/// What an idle connection's task waits for between requests: the gateway's shutdown, or a
/// call for room under `worker_connections` (`Shared::drain`), either of which closes an
/// idle connection.
///
/// A `watch::Receiver::changed` future made per request registers and removes a waiter each
/// time (about 400 instructions). This one is made once per connection: it stays registered
/// with the task (whose waker is the same for all its life), and is polled again only when
/// a value has changed since. (A call for room made while the connection was busy closes
/// it at its next idle wait.)
struct Stop<'a> {
    /// Ready once the shutdown value is `true`, or the drain value changes; pending for ever
    /// if the senders are gone without either (the connection serves on).
    wait: Pin<Box<dyn std::future::Future<Output = ()> + Send + 'a>>,
    rx: &'a watch::Receiver<bool>,
    drain: watch::Receiver<u64>,
    polled: bool,
}

impl<'a> Stop<'a> {
    fn new(rx: &'a watch::Receiver<bool>, drain: watch::Receiver<u64>) -> Stop<'a> {
        let mut own = rx.clone();
        let mut own_drain = drain.clone();
        Stop {
            wait: Box::pin(async move {
                let mut draining = true;
                loop {
                    if *own.borrow_and_update() {
                        return;
                    }
                    tokio::select! {
                        r = own.changed() => if r.is_err() {
                            std::future::pending::<()>().await;
                        },
                        r = own_drain.changed(), if draining => match r {
                            Ok(()) => return,
                            Err(_) => draining = false,
                        },
                    }
                }
            }),
            rx,
            drain,
            polled: false,
        }
    }

    /// Ready once a shutdown is requested or room is called for; registers the task to be
    /// woken then.
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        // Polled before by this task and nothing sent since: still registered, still
        // pending. (A sender gone reads as a change: the future then waits for ever.)
        if self.polled
            && !self.rx.has_changed().unwrap_or(true)
            && !self.drain.has_changed().unwrap_or(false)
        {
            return Poll::Pending;
        }
        self.polled = true;
        // Outside the task's budget: `changed()` refused for want of budget would register
        // nothing, and the skip above would never poll it again.
        std::pin::pin!(tokio::task::unconstrained(self.wait.as_mut())).poll(cx)
    }

    /// Whether a shutdown has been requested.
    fn requested(&self) -> bool {
        *self.rx.borrow()
    }
}

/// Writes a response; an error means the connection cannot be reused.
/// `connection`: the `Connection` line to write unless the answer closes the connection
/// (`Connection: close`); another `Connection` of the answer's own (Kong's `Upgrade` on a
/// 426) is one more line, as nginx writes its own beside the ones Kong sets.
async fn write_response<T: AsyncWrite + Unpin>(
    io: &mut T,
    out: &mut Vec<u8>,
    slot: Option<&crate::batch_write::Slot>,
    resp: Response<ProxyBody>,
    head_only: bool,
    connection: &[u8],
    stats: Option<Arc<RouteStats>>,
) -> io::Result<()> {
    let (parts, body) = resp.into_parts();
    let no_body = no_body(parts.status, head_only);
    head_lines(out, &parts, no_body);
    if !parts
        .headers
        .get(header::CONNECTION)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"))
    {
        out.extend_from_slice(connection);
    }
    // An answer of the gateway's own to a `HEAD` keeps its body's length, as nginx keeps
    // the `Content-Length` Kong's `kong.response.exit` sets (an upstream's answer to a
    // `HEAD` has no body bytes, and its own length line was kept by `head_lines`).
    if no_body
        && let ProxyBody::Full(Some(b)) = &body
        && !parts.headers.contains_key(header::CONTENT_LENGTH)
    {
        length_line(out, b.len() as u64);
    }
    write_body_after(io, out, slot, body, no_body, stats).await
}

/// The status line and headers of an answer, without the blank line, the framing left to
/// the writer (and `Date` added when missing).
fn head_lines(out: &mut Vec<u8>, parts: &http::response::Parts, no_body: bool) {
    // (an answer made here, or by hyper's client, without a phrase of its own: nginx's)
    let reason = match parts.extensions.get::<hyper::ext::ReasonPhrase>() {
        Some(r) => r.as_bytes(),
        None => crate::error::nginx_reason(parts.status.as_u16()).as_bytes(),
    };
    status_line(out, parts.status, Some(reason));
    for (name, value) in &parts.headers {
        // The framing is this writer's, except where there is no body to frame (the
        // upstream's length of a HEAD or 304 answer stays).
        if name == header::TRANSFER_ENCODING || (name == header::CONTENT_LENGTH && !no_body) {
            continue;
        }
        // (the gateway's own answer: names in the case Kong's nginx writes them)
        crate::h1_client::line_named(out, name, value.as_bytes());
    }
    if !parts.headers.contains_key(header::DATE) {
        date_line(out);
    }
}

/// Writes an HTTP/1.1 upstream's answer as read (names in their case), with the headers
/// the gateway sets in place of the upstream's of the same names.
async fn write_raw<T: AsyncWrite + Unpin>(
    io: &mut T,
    out: &mut Vec<u8>,
    slot: Option<&crate::batch_write::Slot>,
    a: Box<RawAnswer>,
    head_only: bool,
    connection: &[u8],
    stats: Option<Arc<RouteStats>>,
) -> io::Result<()> {
    let status = a.head.status;
    let no_body = no_body(status, head_only);
    status_line(out, status, a.head.reason());
    // (the hash cookie replaces the first upstream cookie of its name, as Kong's set_cookie)
    let mut replaced = false;
    for (name, value) in a.head.iter() {
        // (the transfer coding was left out when the head was read)
        if (!no_body && name.eq_ignore_ascii_case(b"content-length")) || a.set.replaces_raw(name) {
            continue;
        }
        if !replaced && a.set.replaced_line(name, value) {
            replaced = true;
            continue;
        }
        line(out, name, value);
    }
    a.set.write(out);
    if !a.head.has_date() {
        date_line(out);
    }
    // (the upstream's own `Connection` was left out when its head was read)
    out.extend_from_slice(connection);
    write_body_after(io, out, slot, a.body, no_body, stats).await
}

fn no_body(status: StatusCode, head_only: bool) -> bool {
    head_only
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
}

/// Starts `out` with the status line: the code, then a space and `reason` when there is
/// one (an upstream's status line without one is passed on as it came, as nginx passes it).
fn status_line(out: &mut Vec<u8>, status: StatusCode, reason: Option<&[u8]>) {
    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    if let Some(r) = reason {
        out.push(b' ');
        out.extend_from_slice(r);
    }
    out.extend_from_slice(b"\r\n");
}

fn date_line(out: &mut Vec<u8>) {
    out.extend_from_slice(b"Date: ");
    date(out);
    out.extend_from_slice(b"\r\n");
}

/// Ends the head in `out` with the body's framing and writes both. With a `slot`, a small
/// complete answer is written at the end of the scheduler's batch ([`crate::batch_write`]):
/// `out` then holds the slot's empty buffer. The head's bytes, and a complete body's, count
/// on the route's `stats` as they are handed to the socket (or to the batch).
async fn write_body_after<T: AsyncWrite + Unpin>(
    io: &mut T,
    out: &mut Vec<u8>,
    slot: Option<&crate::batch_write::Slot>,
    body: ProxyBody,
    no_body: bool,
    stats: Option<Arc<RouteStats>>,
) -> io::Result<()> {
    if no_body {
        out.extend_from_slice(b"\r\n");
        if let Some(s) = &stats {
            s.egress(out.len() as u64);
        }
        if crate::batch_write::defer_message(slot, out, &[]) {
            return Ok(());
        }
        return io.write_all(out).await;
    }
    match body {
        ProxyBody::Full(b) => {
            let b = b.unwrap_or_default();
            push_length(out, b.len() as u64);
            if let Some(s) = &stats {
                s.egress((out.len() + b.len()) as u64);
            }
            if crate::batch_write::defer_message(slot, out, &b) {
                return Ok(());
            }
            io.write_all_buf(&mut Buf::chain(&out[..], b)).await
        }
        ProxyBody::Upstream(_) => {
            let exact = http_body::Body::size_hint(&body).exact();
            match exact {
                Some(n) => push_length(out, n),
                None => out.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n"),
            }
            // (the body counts its own bytes)
            if let Some(s) = &stats {
                s.egress(out.len() as u64);
            }
            io.write_all(out).await?;
            crate::h1_client::write_body(io, out, body, exact)
                .await
                .map_err(io::Error::from)
        }
    }
}

fn push_length(out: &mut Vec<u8>, n: u64) {
    length_line(out, n);
    out.extend_from_slice(b"\r\n");
}

/// A `Content-Length` line.
fn length_line(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(b"Content-Length: ");
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
    out.extend_from_slice(b"\r\n");
}

thread_local! {
    /// The `Date` value of the current second, rendered once per second per thread.
    static DATE: std::cell::RefCell<(u64, [u8; 29])> = const { std::cell::RefCell::new((0, [0; 29])) };
}

/// Appends the current time in IMF-fixdate form (`Sun, 06 Nov 1994 08:49:37 GMT`).
fn date(out: &mut Vec<u8>) {
    let now = SystemTime::now();
    let secs = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    DATE.with(|d| {
        let mut d = d.borrow_mut();
        if d.0 != secs {
            let s = httpdate::fmt_http_date(now);
            if s.len() == 29 {
                d.1.copy_from_slice(s.as_bytes());
                d.0 = secs;
            } else {
                out.extend_from_slice(s.as_bytes());
                return;
            }
        }
        out.extend_from_slice(&d.1);
    });
}

/// A stream with bytes already read put back in front of it.
pub(crate) struct Rewind<T> {
    pre: Bytes,
    inner: T,
}

impl<T> Rewind<T> {
    /// `inner`, whose reads give `pre` first.
    pub(crate) fn new(inner: T, pre: Bytes) -> Rewind<T> {
        Rewind { pre, inner }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Rewind<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.pre.is_empty() {
            let n = self.pre.len().min(buf.remaining());
            buf.put_slice(&self.pre[..n]);
            self.pre.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Rewind<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A head checked as it arrives ([`HeadCheck`]), however it is cut, gets the verdict
    /// [`refusal_of`] gives each unfinished prefix: the same refusal at the same byte.
    #[test]
    fn a_head_checked_line_by_line_is_judged_as_parsed_whole() {
        let small = HeaderBuffers {
            first: 64,
            count: 2,
            size: 512,
        };
        let long = "a".repeat(600);
        let mid = "b".repeat(300);
        let heads: Vec<String> = vec![
            "GET /a HTTP/1.1\r\nHost: x\r\nA: b\r\n\r\n".into(),
            "GET /a HTTP/1.1\nHost: x\nA:\tb \n\n".into(),
            "GET /a HTTP/1.1\r\nHost: x\r\nNo Colon\r\nA: b\r\n\r\n".into(),
            "GET /a HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n".into(),
            "GET /a HTTP/1.1\r\nHost: x\rA: b\r\n\r\n".into(),
            "GET /a HTTP/1.1\r\nHo\x01st: x\r\n\r\n".into(),
            "GET /a HTTP/1.1\r\nX: \x7f\r\n\r\n".into(),
            "GET /a HTTP/9.1\r\nHost: x\r\n\r\n".into(),
            "GET /a  HTTP/1.1\r\n\r\n".into(),
            "G\x00T /a HTTP/1.1\r\n\r\n".into(),
            "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".into(),
            format!("GET /{long} HTTP/1.1\r\nHost: x\r\n\r\n"),
            format!("GET / HTTP/1.1\r\nCookie: {long}\r\n\r\n"),
            format!("GET / HTTP/1.1\r\nA: {mid}\r\nB: {mid}\r\nC: {mid}\r\nD: {mid}\r\n\r\n"),
            format!("GET / HTTP/1.1\r\nA: {mid}\r\nB: {mid}\r\nC: {mid}\r\nBad Line\r\n\r\n"),
            format!("GET / HTTP/1.1\r\nA: {long}\r\nX Y: z\r\n\r\n"),
            "GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\nE: 5\r\n\r\n".into(),
            "GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\nD 4\r\nE: 5\r\n\r\n".into(),
        ];
        for head in &heads {
            let head = head.as_bytes();
            for (max_headers, buffers) in [(100, HeaderBuffers::default()), (3, small)] {
                for step in [1, 2, 3, 5, 7, 16, 64, head.len()] {
                    let mut check = HeadCheck::new(&buffers);
                    let mut at = 0;
                    while at < head.len() {
                        at = (at + step).min(head.len());
                        let prefix = &head[..at];
                        if head_complete(prefix) {
                            break;
                        }
                        let want = refusal_of(prefix, max_headers, &buffers);
                        let got = check.unfinished(prefix, max_headers, &buffers);
                        assert_eq!(
                            got,
                            want,
                            "{:?} cut at {at} by {step}, max {max_headers}",
                            String::from_utf8_lossy(prefix)
                        );
                        if got.is_some() {
                            break;
                        }
                    }
                }
            }
        }
    }

    /// A head handed to hyper is complete at its blank line, the empty lines before its
    /// request line skipped (they end no head: a client cannot pass an unfinished head off
    /// as complete with them), bare `LF`s as `httparse` reads them.
    #[test]
    fn a_head_is_complete_at_its_blank_line() {
        assert!(head_complete(b"GET / HTTP/1.1\r\nA: b\r\n\r\n"));
        assert!(head_complete(b"\r\nGET / HTTP/1.1\nA: b\n\nGET"));
        assert!(!head_complete(b"GET / HTTP/1.1\r\nA: b\r\n"));
        assert!(!head_complete(b"\r\n\r\n\n\nGET / HTTP/1.1\r\nA: b\r\n"));
        assert!(!head_complete(b"\r\n"));
    }

    #[tokio::test]
    async fn stop_polled_first_without_budget_still_sees_the_shutdown() {
        let (tx, rx) = watch::channel(false);
        let (_drain, drained) = watch::channel(0);
        let mut stop = Stop::new(&rx, drained);
        std::future::poll_fn(|cx| {
            crate::deadline::tests::exhaust_budget(cx);
            assert!(stop.poll(cx).is_pending());
            Poll::Ready(())
        })
        .await;
        assert!(!stop.requested());
        let start = std::time::Instant::now();
        tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            let _ = tx.send(true);
            // (kept open: a dropped sender would read as a change too)
            tokio::time::sleep(std::time::Duration::from_secs(5)).await;
        });
        tokio::time::timeout(
            std::time::Duration::from_secs(2),
            std::future::poll_fn(|cx| stop.poll(cx)),
        )
        .await
        .expect("woken by the shutdown");
        assert!(stop.requested());
        // woken by the send, not by the timeout's timer
        assert!(
            start.elapsed() < std::time::Duration::from_secs(1),
            "{:?}",
            start.elapsed()
        );
    }

    fn parsed(raw: &[u8]) -> Parsed {
        parse(raw, 100, &HeaderBuffers::default(), &mut Spans::default())
    }

    fn buffers(first: usize, count: usize, size: usize) -> HeaderBuffers {
        HeaderBuffers { first, count, size }
    }

    #[test]
    fn simple_heads_are_recognised() {
        assert!(matches!(
            parsed(b"GET /a?b=1 HTTP/1.1\r\nHost: x\r\n\r\n"),
            Parsed::Simple(32)
        ));
        assert!(matches!(
            parsed(b"DELETE / HTTP/1.1\r\nContent-Length: 0\r\nConnection: Keep-Alive\r\n\r\n"),
            Parsed::Simple(_)
        ));
        assert!(matches!(
            parsed(b"GET / HTTP/1.1\r\nHost: x\r\n"),
            Parsed::Partial
        ));
    }

    #[test]
    fn anything_else_goes_to_hyper() {
        for raw in [
            &b"GET / HTTP/1.0\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n",
            b"GET / HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
            b"PUT / HTTP/1.1\r\nExpect: 100-continue\r\n\r\n",
            b"GET http://x/ HTTP/1.1\r\n\r\n",
        ] {
            assert!(
                matches!(parsed(raw), Parsed::Other),
                "{}",
                String::from_utf8_lossy(raw)
            );
        }
    }

    #[test]
    fn heads_nginx_refuses_are_refused_here() {
        for (raw, why) in [
            (
                &b"GET / HTTP/1.1\r\nContent-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
                Refusal::Bad,
            ),
            (
                b"POST / HTTP/1.1\r\nContent-Length: 1\r\ncontent-length: 1\r\n\r\nab",
                Refusal::Bad,
            ),
            (b"GET / HTTP/1.1\r\nA: b\r\n  folded\r\n\r\n", Refusal::Bad),
            (
                b"POST / HTTP/1.1\r\nContent-Length: 3, 3\r\n\r\nabc",
                Refusal::Bad,
            ),
            (
                b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
                Refusal::Bad,
            ),
            (
                b"POST / HTTP/1.1\r\nContent-Length: +1\r\n\r\n",
                Refusal::Bad,
            ),
            (
                b"POST / HTTP/1.1\r\nContent-Length: 9223372036854775808\r\n\r\n",
                Refusal::Bad,
            ),
            (b"GET / HTTP/1.1\r\nBad Name: v\r\n\r\n", Refusal::Bad),
            (b"GET / HTTP/2.0\r\n\r\n", Refusal::Bad),
            // the request line as nginx reads it (`request_line`)
            (b"get / HTTP/1.1\r\n\r\n", Refusal::Bad),
            (b"OPTIONS * HTTP/1.1\r\n\r\n", Refusal::Bad),
            (b"CONNECT x:443 HTTP/1.1\r\n\r\n", Refusal::Bad),
            (b"GET /a/../../b HTTP/1.1\r\n\r\n", Refusal::Bad),
            (b"GET http://x/%2e%2e/b HTTP/1.1\r\n\r\n", Refusal::Bad),
            (b"GET /a%zz HTTP/1.1\r\n\r\n", Refusal::Bad),
            (b"GET /a%3F/../../b HTTP/1.1\r\n\r\n", Refusal::Bad),
            (b"GET http://u@x/ HTTP/1.1\r\n\r\n", Refusal::Bad),
            (b"GET http://x:99999/ HTTP/1.1\r\n\r\n", Refusal::Bad),
            (b"CONNECT /x HTTP/1.1\r\nHost: x\r\n\r\n", Refusal::NotAllowed),
            (b"TRACE / HTTP/1.1\r\nHost: x\r\n\r\n", Refusal::NotAllowed),
            (b"TRACE http://x/ HTTP/1.1\r\n\r\n", Refusal::NotAllowed),
            (b"TRACE / HTTP/1.0\r\n\r\n", Refusal::NotAllowed),
            // (nginx refuses a missing or bad host before the method or the coding)
            (b"TRACE / HTTP/1.1\r\n\r\n", Refusal::Bad),
            (b"TRACE / HTTP/1.1\r\nHost: a b\r\n\r\n", Refusal::Bad),
            (
                b"TRACE / HTTP/1.1\r\nHost: x\r\nHost: x\r\n\r\n",
                Refusal::Bad,
            ),
            (
                b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
                Refusal::Bad,
            ),
            // transfer codings, in nginx's order
            (
                b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
                Refusal::Bad,
            ),
            (
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
                Refusal::Bad,
            ),
            (
                b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
                Refusal::NotImplemented,
            ),
            (
                b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity\r\n\r\n",
                Refusal::NotImplemented,
            ),
            (
                b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nTransfer-Encoding: gzip\r\n\r\na",
                Refusal::NotImplemented,
            ),
        ] {
            let got = parse(raw, 100, &buffers(200, 1, 200), &mut Spans::default());
            assert!(
                matches!(got, Parsed::Refused(w) if w == why),
                "{}",
                String::from_utf8_lossy(raw)
            );
        }
        // an incomplete head already past nginx's buffers, and a complete one (the request
        // line takes the one large buffer, the next line finds none left); a request line
        // longer than a large buffer
        assert!(matches!(
            parse(
                b"GET / HTTP/1.1\r\nA: b\r\n",
                100,
                &buffers(8, 1, 16),
                &mut Spans::default()
            ),
            Parsed::Refused(Refusal::TooLarge)
        ));
        assert!(matches!(
            parse(
                b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
                100,
                &buffers(8, 1, 20),
                &mut Spans::default()
            ),
            Parsed::Refused(Refusal::TooLarge)
        ));
        assert!(matches!(
            parse(
                b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
                100,
                &buffers(8, 4, 10),
                &mut Spans::default()
            ),
            Parsed::Refused(Refusal::UriTooLong)
        ));
    }

    #[test]
    fn long_lengths_within_range_go_to_hyper() {
        for cl in ["0000000000000000005", "9223372036854775807"] {
            let raw = format!("POST / HTTP/1.1\r\nContent-Length: {cl}\r\n\r\n");
            assert!(matches!(parsed(raw.as_bytes()), Parsed::Other), "{cl}");
        }
    }

    #[test]
    fn too_many_headers_are_refused_unless_hyper_may_take_them() {
        let mut raw = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..5 {
            raw.extend_from_slice(format!("h{i}: v\r\n").as_bytes());
        }
        raw.extend_from_slice(b"\r\n");
        assert!(matches!(
            parse(&raw, 4, &HeaderBuffers::default(), &mut Spans::default()),
            Parsed::Refused(Refusal::TooLarge)
        ));
        assert!(matches!(
            parse(&raw, 5, &HeaderBuffers::default(), &mut Spans::default()),
            Parsed::Simple(_)
        ));
        // more than the fast path holds, within the limit: hyper reads them, whether or not
        // the head is complete yet (the hand-off tells which)
        let mut raw = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..(MAX_HEADERS + 1) {
            raw.extend_from_slice(format!("h{i}: v\r\n").as_bytes());
        }
        assert!(matches!(
            parse(&raw, 100, &HeaderBuffers::default(), &mut Spans::default()),
            Parsed::TooMany
        ));
        assert!(!head_complete(&raw));
        raw.extend_from_slice(b"\r\n");
        assert!(matches!(
            parse(&raw, 100, &HeaderBuffers::default(), &mut Spans::default()),
            Parsed::TooMany
        ));
        assert!(head_complete(&raw));
    }

    #[test]
    fn requests_share_the_head_bytes() {
        let raw = Bytes::from_static(b"GET /p?q HTTP/1.1\r\nHost: h\r\nX-A: 1\r\nx-a: 2\r\n\r\n");
        let mut spans = Spans::default();
        let Parsed::Simple(n) = parse(&raw, 100, &HeaderBuffers::default(), &mut spans) else {
            panic!("not simple")
        };
        assert_eq!(n, raw.len());
        let mut req = None;
        assert!(request(&raw, &spans, &mut req));
        let req = req.expect("request");
        assert_eq!(req.method, Method::GET);
        assert_eq!(req.uri.path(), "/p");
        assert_eq!(req.uri.query(), Some("q"));
        assert_eq!(req.headers["host"], "h");
        let all: Vec<_> = req.headers.get_all("x-a").iter().collect();
        assert_eq!(all, ["1", "2"]);
    }

    #[test]
    fn rewind_replays_then_reads_on() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let inner: &[u8] = b" world";
            let mut r = Rewind::new(inner, Bytes::from_static(b"hello"));
            let mut s = String::new();
            r.read_to_string(&mut s).await.expect("read");
            assert_eq!(s, "hello world");
        });
    }

    #[test]
    fn date_is_imf_fixdate() {
        let mut out = Vec::new();
        date(&mut out);
        let s = String::from_utf8(out).expect("ascii");
        assert_eq!(s.len(), 29);
        assert!(s.ends_with(" GMT"), "{s}");
        assert!(httpdate::parse_http_date(&s).is_ok(), "{s}");
    }
}
