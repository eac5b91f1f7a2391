//! A byte-level guard in front of hyper's HTTP/1 server, for the heads nginx (and so Kong)
//! refuses where hyper would either accept them or refuse them with its own bare answer:
//!
//! - a request carrying both `Content-Length` and `Transfer-Encoding` (hyper drops the length
//!   and reads the body as chunked, RFC 9112 §6.1), `Content-Length` twice (hyper merges
//!   equal values), or a length that is not one number: nginx answers 400;
//! - heads that do not parse, or that pass the header size or count limits, which hyper
//!   answers with an empty 400 or 431.
//!
//! The guard follows the message framing of the bytes the client sends (heads, bodies by
//! `Content-Length` or by chunks), copying only heads, and checks every head, complete or
//! not, with the fast path's rules ([`crate::h1_fast::refusal_of`]; an unfinished head a
//! line at a time as its lines complete, [`crate::h1_fast::HeadCheck`], so that a head
//! trickled a line per read is not parsed whole for each). A head it refuses never
//! reaches hyper: the bytes before it do, and then hyper's reads wait. Once every answer
//! hyper owes has begun (its head seen written), the guard asks the task serving the
//! connection to shut hyper down gracefully (`close_after`): hyper finishes the answer it is
//! writing, then shuts the connection down. (The end of the stream would not do: hyper takes
//! it as the client gone and cuts an answer it is still writing short. Only when no request
//! was handed to hyper at all does it get the end of the stream.) On that shutdown the guard
//! writes Kong's answer to the refused head ([`crate::h1_fast::refusal_bytes`]): on a proxy
//! listener 400 with `Bad request` or `Request header or cookie too large`, or 405, 414, in
//! Kong's format chosen by the head's `Accept`, or, for a transfer coding other than
//! `chunked`, nginx's own 501 page, which Kong leaves to nginx; on an admin or status
//! listener nginx's own page for each of them; to a `HEAD` request the head alone. It then
//! closes with a lingering read as nginx does. (hyper shutting the connection down while the
//! client still owes a request's body, after an answer that refused the body or left it
//! unread, gets the same lingering read.) After a request that asks to close the
//! connection, or any HTTP/1.0 request (whose answer may be delimited by the end of the
//! connection), a refused head is withheld without an answer.
//!
//! Answers are counted by following their framing in the bytes the client takes, as the
//! requests are followed in the bytes it sends: each answer's head (an interim `1xx` pays
//! nothing), then its body by `Content-Length` or by chunks (none for `HEAD`, `204` and
//! `304`), wherever the writes cut them and however many one write holds. The answers pay the
//! requests handed to hyper in order, so each request's own answer decides its protocol
//! switch. After an answer that closes the connection (`Connection: close`), a refused head
//! gets no answer, as nginx sends nothing after one. An answer delimited by the end of the
//! connection, or bytes that cannot be followed (hyper writes neither to HTTP/1.1), end the
//! counting: a head refused gets no answer, and without one the guard stops following the
//! connection (it could no longer tell a protocol switch).
//!
//! Anything the guard cannot follow (HTTP/2, framing hyper itself rejects) turns it into a
//! pass-through, and so does a protocol switch: the guard watches the answers written back,
//! and only an upgrade request answered `101` ends the HTTP/1 messages (a `CONNECT` is
//! refused at its head, as nginx refuses it). An upgrade that is refused leaves the guard following the connection's next
//! requests. While a switch is undecided, the bytes after it may be the tunnel's rather than
//! a request: a head refused then is instead made unparsable for hyper (the last byte of its
//! blank line becomes a NUL), so that hyper refuses it if it reads it as HTTP at all.
//!
//! On a proxy listener the guard also hands a copy of each HTTP/1 head it passes to hyper to
//! the connection's service, through a small queue ([`Heads`]), so that the request's headers
//! go upstream in the case and order the client sent them (hyper's parser lowers the names
//! and groups them by name, and keeps no record of either that it would share). The service
//! takes the oldest head for each HTTP/1 request hyper gives it and checks it against the
//! request ([`crate::h1_client::ClientHead::matches`]); past a few heads queued (pipelined
//! requests hyper has not asked for yet), once the guard stops following the connection, or
//! after a head that does not match, the connection's requests go on with hyper's
//! `HeaderMap` (names in lower case).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::h1_client::ClientHead;
use crate::proxy::Refusal;

/// Most heads [`Heads`] holds: hyper serves one request at a time, so only pipelined ones
/// queue up; past this many the connection's later requests go without theirs.
const MAX_QUEUED_HEADS: usize = 4;

/// The HTTP/1 request heads a guard passed to hyper and the connection's service has not
/// taken yet, oldest first (shared by the two: see the module documentation). Once closed,
/// no head is added any more; the ones queued before still belong, in order, to the next
/// requests.
#[derive(Debug, Default)]
pub(crate) struct Heads {
    inner: std::sync::Mutex<Queued>,
}

#[derive(Debug, Default)]
struct Queued {
    heads: std::collections::VecDeque<Bytes>,
    closed: bool,
}

impl Heads {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queued> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Adds a head passed to hyper (closing the queue instead when it is full).
    fn push(&self, head: &[u8]) {
        let mut q = self.lock();
        if q.closed {
            return;
        }
        if q.heads.len() >= MAX_QUEUED_HEADS {
            q.closed = true;
            return;
        }
        q.heads.push_back(Bytes::copy_from_slice(head));
    }

    /// No head is added from now on (the guard no longer follows the requests).
    fn close(&self) {
        self.lock().closed = true;
    }

    /// The head of `req`, a request hyper parsed, if it is an HTTP/1 request and the oldest
    /// head queued is its own ([`ClientHead::matches`]). An HTTP/1 request without a head
    /// queued, or whose head does not match, closes the queue and empties it: the heads can
    /// no longer be told to belong to the requests that follow.
    pub(crate) fn take_for<B>(&self, req: &http::Request<B>) -> Option<ClientHead> {
        if !matches!(
            req.version(),
            http::Version::HTTP_10 | http::Version::HTTP_11
        ) {
            return None;
        }
        let mut q = self.lock();
        let Some(head) = q.heads.pop_front() else {
            q.closed = true;
            return None;
        };
        let head = ClientHead::new(head);
        if head.matches(req) {
            return Some(head);
        }
        q.heads.clear();
        q.closed = true;
        None
    }
}

/// Longest trailer line the guard follows; beyond it hyper's own limit answers.
const MAX_TRAILER_LINE: usize = 64 * 1024;

/// The limits on request heads, as configured.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Most header lines in a head.
    pub(crate) max_headers: usize,
    /// nginx's head buffers, which limit its lines and its size.
    pub(crate) buffers: crate::header_buffers::HeaderBuffers,
    /// Whether the connection may open with the HTTP/2 preface (h2c with prior knowledge,
    /// which turns the guard off): a plain connection of a listener kind with `http2`. Else
    /// the preface is an HTTP/1 head like any other, which nginx refuses (400), as it is
    /// anywhere but at the connection's first byte.
    pub(crate) h2c: bool,
}

impl Limits {
    /// Most bytes in a head.
    fn max_bytes(&self) -> usize {
        self.buffers.max_bytes()
    }
}

/// Renders the answer to a refused head (the head as read so far, why, and the client's
/// address, for the access log), as bytes.
pub(crate) type Answerer = Arc<dyn Fn(&[u8], Refusal, std::net::IpAddr) -> Vec<u8> + Send + Sync>;

#[derive(Debug)]
enum State {
    /// Reading a head, kept in `head`.
    Head,
    /// Skipping this many body bytes.
    Body(u64),
    /// Inside a chunked body.
    Chunk(Chunk),
    /// Not following any more (upgrade, HTTP/2, framing hyper rejects, or refused).
    Pass,
}

#[derive(Debug, Clone, Copy)]
enum Chunk {
    /// Reading the size line: size so far, whether in an extension, whether a CR was seen.
    Size {
        size: u64,
        ext: bool,
        cr: bool,
        digits: u8,
    },
    /// Skipping chunk data.
    Data(u64),
    /// The CRLF after chunk data (`true`: CR seen).
    DataEnd(bool),
    /// Trailer lines after the last chunk: bytes on the current line, whether a CR was seen.
    Trailer { line: usize, cr: bool },
}

/// A protocol switch a request asked for, decided by its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Switch {
    /// An `Upgrade` request: switches on `101`.
    Upgrade,
}

/// What the guard keeps of a request handed to hyper until its final answer is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Asked {
    /// A `HEAD` request: its answer has no body, whatever its head says.
    head: bool,
    /// The protocol switch it asks for.
    switch: Option<Switch>,
}

/// Where the answers hyper writes are, as the guard follows them.
#[derive(Debug)]
enum Writing {
    /// At or in an answer's head (what was written of it is kept in `wrote`).
    Head,
    /// Skipping this many body bytes.
    Body(u64),
    /// Inside a chunked body.
    Chunk(Chunk),
    /// No longer counting: an answer delimited by the end of the connection, or bytes that
    /// cannot be followed.
    Done,
}

/// Longest answer head the guard follows; hyper writes none near it.
const MAX_ANSWER_HEAD: usize = 1024 * 1024;

/// What hyper gets of the bytes just read.
#[derive(Debug, Default, PartialEq, Eq)]
struct Out {
    /// Bytes from earlier reads that go first: the start of a head held back until it was
    /// complete.
    carried: Vec<u8>,
    /// Hyper gets the read's bytes up to here (then a blank line when `spoiled`).
    end: usize,
    /// The head ending at `end` was made unparsable (a switch being undecided).
    spoiled: bool,
}

/// Wraps an HTTP/1 connection; see the [module documentation](self).
pub(crate) struct H1Guard<T> {
    inner: T,
    state: State,
    head: Vec<u8>,
    /// What of the unfinished head in `head` has been checked.
    check: crate::h1_fast::HeadCheck,
    /// Requests handed to hyper whose final answer has not been seen written yet, in order.
    asked: std::collections::VecDeque<Asked>,
    /// Where the answers written are.
    writing: Writing,
    /// The answer head being written, so far.
    wrote: Vec<u8>,
    limits: Limits,
    answerer: Answerer,
    /// The client's address (for the access log line of a refused head).
    peer: std::net::IpAddr,
    /// The answer to a refused head, written when hyper shuts the connection down.
    refused: Option<Box<crate::h1_fast::Closing>>,
    /// The lingering close of a connection hyper shuts down inside a request's body.
    lingering: Option<Box<crate::h1_fast::Closing>>,
    /// Bytes for hyper before any new read (a head held back, now complete), from
    /// `release_at` on.
    release: Vec<u8>,
    release_at: usize,
    /// Whether a request has been handed to hyper (it may then be writing an answer, and
    /// hyper-util has decided the protocol).
    handed: bool,
    /// Whether nothing has come through yet (no head handed to hyper, no empty line
    /// skipped): only then can the HTTP/2 preface come, as nginx looks for it at the start
    /// of the connection's first read (`ngx_http_wait_request_handler`, the raw bytes
    /// compared); later, or after empty lines, `PRI * HTTP/2.0` is a request line that does
    /// not parse (400). (A guard the fast path hands a connection to after requests it
    /// served gets a complete head first, never the start of the preface: the fast path
    /// refuses that itself.)
    fresh: bool,
    /// Whether a refused head gets no answer: a request handed to hyper closes the
    /// connection, or is HTTP/1.0 (see [`asks_close`]), or the answers are no longer
    /// counted.
    silent: bool,
    /// Tells the task serving the connection to shut hyper's side down gracefully (hyper
    /// finishes the answer it is writing, then closes): set once a head is refused and
    /// every answer owed has begun.
    close_after: Arc<tokio::sync::Notify>,
    /// When the first request head through the guard must have come (the connection's
    /// first: its `client_header_timeout` from the accept, as nginx times it; or one the fast
    /// path hands over unfinished: the timeout the fast path started for it), until it has:
    /// then hyper gets the end of the stream, and the connection closes unanswered.
    first_head_by: Option<crate::deadline::Deadline>,
    /// Where a copy of each HTTP/1 head passed to hyper goes, for the service (proxy
    /// listeners only).
    heads: Option<Arc<Heads>>,
}

impl<T> std::fmt::Debug for H1Guard<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H1Guard")
            .field("state", &self.state)
            .field("asked", &self.asked.len())
            .field("writing", &self.writing)
            .field("refused", &self.refused.is_some())
            .finish_non_exhaustive()
    }
}

impl<T> H1Guard<T> {
    /// Guards `inner`, a connection that starts with an HTTP/1 request (or the HTTP/2
    /// prior-knowledge preface, which turns the guard off), with the head limits of the
    /// listener; `answerer` renders the answer to a refused head, and `close_after` is
    /// notified when hyper must be shut down gracefully (see the module documentation).
    pub(crate) fn new(
        inner: T,
        limits: Limits,
        answerer: Answerer,
        close_after: Arc<tokio::sync::Notify>,
    ) -> H1Guard<T> {
        H1Guard {
            inner,
            state: State::Head,
            head: Vec::new(),
            check: crate::h1_fast::HeadCheck::new(&limits.buffers),
            asked: std::collections::VecDeque::new(),
            writing: Writing::Head,
            wrote: Vec::new(),
            limits,
            answerer,
            peer: std::net::Ipv4Addr::UNSPECIFIED.into(),
            refused: None,
            lingering: None,
            release: Vec::new(),
            release_at: 0,
            handed: false,
            fresh: true,
            silent: false,
            close_after,
            first_head_by: None,
            heads: None,
        }
    }

    /// Hands a copy of each HTTP/1 head passed to hyper to `heads` (see the module
    /// documentation).
    pub(crate) fn keeping_heads(mut self, heads: Option<Arc<Heads>>) -> H1Guard<T> {
        self.heads = heads;
        self
    }

    /// The client's address is `peer`.
    pub(crate) fn with_peer(mut self, peer: std::net::IpAddr) -> H1Guard<T> {
        self.peer = peer;
        self
    }

    /// Closes the connection at `at` if no request head (nor the HTTP/2 preface) has come by
    /// then.
    pub(crate) fn first_head_by(mut self, at: Option<std::time::Instant>) -> H1Guard<T> {
        self.first_head_by = at.map(|at| crate::deadline::Deadline::new(at.into()));
        self
    }

    /// Whether the client's bytes so far end inside a request's body (by its length or its
    /// chunks).
    fn inside_body(&self) -> bool {
        match self.state {
            State::Body(n) => n > 0,
            State::Chunk(_) => true,
            State::Head | State::Pass => false,
        }
    }

    /// Follows `buf` (bytes just read) and says what of it hyper gets: heads are held back
    /// until they are complete, and a refused head never goes (it ends what hyper gets, and
    /// [`H1Guard::refused`] holds the answer).
    fn scan(&mut self, buf: &mut [u8]) -> Out {
        let mut out = Out {
            end: buf.len(),
            ..Out::default()
        };
        let mut i = 0;
        while i < buf.len() {
            match &mut self.state {
                State::Pass => break,
                State::Body(n) => {
                    let take = (*n).min((buf.len() - i) as u64);
                    *n -= take;
                    i += take as usize;
                    if *n == 0 {
                        self.state = State::Head;
                    }
                }
                State::Chunk(c) => {
                    let (next, used) = step_chunk(*c, &buf[i..]);
                    i += used;
                    self.state = next;
                }
                State::Head => {
                    // Skip the empty lines a client may send between requests (RFC 9112 §2.2).
                    if self.head.is_empty() && (buf[i] == b'\r' || buf[i] == b'\n') {
                        self.fresh = false;
                        i += 1;
                        continue;
                    }
                    let rest = &buf[i..];
                    // The HTTP/2 preface (h2c prior knowledge) is not an HTTP/1 head, at
                    // the connection's start only (see `fresh`); its 24 bytes decide, as
                    // nginx compares them: while they match so far it is held back, though
                    // its first 18 bytes look like a complete head.
                    let preface = if self.limits.h2c && self.fresh {
                        preface_progress(&self.head, rest)
                    } else {
                        Preface::No
                    };
                    // (a held start of it that turns out not to be it, and holds a complete
                    // head: that head, `PRI * HTTP/2.0`, refused below; what came after it
                    // is never read)
                    let held_head = preface == Preface::No
                        && self.head.len() >= PREFACE_HEAD
                        && H2_PREFACE.starts_with(&self.head);
                    if held_head {
                        self.head.truncate(PREFACE_HEAD);
                    }
                    // (only the first head of a read can have begun in an earlier one)
                    let (start, earlier) = (i, self.head.len());
                    let end = match preface {
                        Preface::Partial => None,
                        Preface::Whole(n) => Some(n),
                        Preface::No if held_head => Some(0),
                        Preface::No => find_head_end(&self.head, rest),
                    };
                    let preface = preface != Preface::No;
                    let take = end.unwrap_or(rest.len());
                    self.head.extend_from_slice(&rest[..take]);
                    let line_ended = rest[..take].contains(&b'\n');
                    i += take;
                    // (a head that is not complete is parsed again only when a line of it
                    // ended or it reached the size limit: a head sent a byte at a time costs
                    // one parse per line, not one per byte)
                    // (and when the line being read has outgrown a large buffer: nginx
                    // refuses it then, whether or not it goes on)
                    let check = end.is_some()
                        || line_ended
                        || self.head.len() >= self.limits.max_bytes()
                        || (self.head.len() > self.limits.buffers.size
                            && !self.head[self.head.len() - self.limits.buffers.size..]
                                .contains(&b'\n'));
                    // (an unfinished head has only its lines completed since the last check
                    // looked at; a complete one is parsed whole, once)
                    let verdict = if preface || !check {
                        None
                    } else if end.is_some() {
                        crate::h1_fast::refusal_of(
                            &self.head,
                            self.limits.max_headers,
                            &self.limits.buffers,
                        )
                    } else {
                        self.check.unfinished(
                            &self.head,
                            self.limits.max_headers,
                            &self.limits.buffers,
                        )
                    };
                    if end.is_some() {
                        // (the next head is checked from its start)
                        self.check = crate::h1_fast::HeadCheck::new(&self.limits.buffers);
                    }
                    let framing = if end.is_some() {
                        framing(&self.head)
                    } else {
                        Framing::Pass
                    };
                    if let Some(why) = verdict {
                        let carried = std::mem::take(&mut out.carried);
                        return self.refuse(
                            buf,
                            (start, i),
                            (carried, earlier),
                            end.is_some(),
                            why,
                        );
                    }
                    if end.is_none() {
                        // held back: hyper gets it whole, or not at all
                        out.end = start;
                        return out;
                    }
                    if earlier > 0 {
                        out.carried = self.head[..earlier].to_vec();
                    }
                    if !preface && let Some(q) = &self.heads {
                        q.push(&self.head);
                    }
                    // (its own answer, followed in the writes, decides a switch)
                    self.asked.push_back(Asked {
                        head: self.head.starts_with(b"HEAD "),
                        switch: switch_of(&self.head),
                    });
                    self.handed = true;
                    self.fresh = false;
                    // After a request that closes the connection (hyper reads no further),
                    // or an HTTP/1.0 one (whose answer may end with the connection), a later
                    // refused head is withheld without an answer.
                    self.silent |= asks_close(&self.head);
                    match framing {
                        Framing::Pass => self.pass(),
                        Framing::None | Framing::Length(0) => self.next_head(),
                        Framing::Length(n) => {
                            self.head.clear();
                            self.state = State::Body(n);
                        }
                        Framing::Chunked => {
                            self.head.clear();
                            self.state = State::Chunk(Chunk::Size {
                                size: 0,
                                ext: false,
                                cr: false,
                                digits: 0,
                            });
                        }
                    }
                }
            }
        }
        out
    }

    /// Refuses the head being read: it began at `start` in `buf` (after `earlier` bytes of
    /// it from earlier reads) and ends, or when not `complete` breaks off, at `end`.
    /// `carried` holds what hyper must get first: the earlier part of a head, before this
    /// one, that completed in this read.
    fn refuse(
        &mut self,
        buf: &mut [u8],
        (start, end): (usize, usize),
        (mut carried, earlier): (Vec<u8>, usize),
        complete: bool,
        why: Refusal,
    ) -> Out {
        if self.asked.iter().any(|a| a.switch.is_some()) {
            // What follows a switch request may be the tunnel's: hyper reads it as a
            // request only if the switch is refused, and then refuses a complete head made
            // unparsable here. (One that is not complete goes on as it is: hyper's own
            // limits decide.)
            if earlier > 0 {
                carried = self.head[..earlier].to_vec();
            }
            self.pass();
            if !complete {
                return Out {
                    carried,
                    end: buf.len(),
                    spoiled: false,
                };
            }
            buf[end - 1] = 0;
            return Out {
                carried,
                end,
                spoiled: true,
            };
        }
        let answer = if self.silent {
            Vec::new()
        } else {
            (self.answerer)(&self.head, why, self.peer)
        };
        self.pass();
        self.refused = Some(Box::new(crate::h1_fast::Closing::new(answer)));
        Out {
            carried,
            end: start,
            spoiled: false,
        }
    }

    fn next_head(&mut self) {
        self.head.clear();
        self.state = State::Head;
    }

    fn pass(&mut self) {
        self.head = Vec::new();
        self.state = State::Pass;
        if let Some(q) = &self.heads {
            q.close();
        }
    }

    /// Stops following, handing hyper the start of a head held back (after a protocol
    /// switch it is the tunnel's first bytes).
    fn pass_releasing(&mut self) {
        if matches!(self.state, State::Head) && !self.head.is_empty() {
            let held = std::mem::take(&mut self.head);
            self.release.extend_from_slice(&held);
        }
        self.pass();
    }

    /// A refused head goes without an answer from now on (and so does one refused already).
    fn hush(&mut self) {
        self.silent = true;
        if let Some(r) = self.refused.as_mut() {
            **r = crate::h1_fast::Closing::new(Vec::new());
        }
    }

    /// Whether every request handed to hyper has had its final answer begin (or the
    /// answers are no longer counted).
    fn answered(&self) -> bool {
        // (counting stopped empties it for good)
        self.asked.is_empty()
    }

    /// Follows bytes the client has taken (a write that succeeded): each final answer's
    /// head pays the first request owed, and the answer to a request that asked for a
    /// protocol switch says whether the connection leaves HTTP/1.
    fn observe(&mut self, mut written: &[u8]) {
        if matches!(self.state, State::Pass) && self.refused.is_none() {
            return;
        }
        while !written.is_empty() {
            match &mut self.writing {
                Writing::Done => return,
                Writing::Body(n) => {
                    let take = (*n).min(written.len() as u64);
                    *n -= take;
                    written = &written[take as usize..];
                    if *n == 0 {
                        self.writing = Writing::Head;
                    }
                }
                Writing::Chunk(c) => {
                    let (next, used) = step_chunk(*c, written);
                    written = &written[used..];
                    match next {
                        State::Chunk(c) => self.writing = Writing::Chunk(c),
                        State::Head => self.writing = Writing::Head,
                        _ => return self.stop_counting(),
                    }
                }
                Writing::Head => {
                    let end = find_head_end(&self.wrote, written);
                    let take = end.unwrap_or(written.len());
                    self.wrote.extend_from_slice(&written[..take]);
                    written = &written[take..];
                    const START: &[u8] = b"HTTP/1.";
                    let seen = self.wrote.len().min(START.len());
                    if self.wrote[..seen] != START[..seen] || self.wrote.len() > MAX_ANSWER_HEAD {
                        return self.stop_counting();
                    }
                    if end.is_some() {
                        self.answer_head();
                    }
                }
            }
        }
    }

    /// An answer's head, in `wrote`, is complete: what it pays, and how its body is framed.
    fn answer_head(&mut self) {
        let head = std::mem::take(&mut self.wrote);
        let code = head
            .get(8..13)
            .filter(|s| s[0] == b' ' && s[1..4].iter().all(u8::is_ascii_digit))
            .map(|s| {
                s[1..4]
                    .iter()
                    .fold(0u16, |n, &d| n * 10 + u16::from(d - b'0'))
            });
        let framing = framing(&head);
        let closes = has_close_token(&head);
        if head.capacity() <= 64 * 1024 {
            // (kept for the next head, unless an unusually large one grew it)
            self.wrote = head;
            self.wrote.clear();
        }
        let Some(code) = code else {
            return self.stop_counting();
        };
        if (100..200).contains(&code) && code != 101 {
            // an interim answer (100 Continue): the final one follows
            return;
        }
        let Some(asked) = self.asked.pop_front() else {
            // an answer to nothing handed: not followed
            return self.stop_counting();
        };
        match (asked.switch, code) {
            (Some(Switch::Upgrade), 101) => {
                return self.pass_releasing();
            }
            (_, 101) => return self.stop_counting(),
            _ => {}
        }
        self.writing = if asked.head || code == 204 || code == 304 {
            Writing::Head
        } else {
            match framing {
                Framing::Length(0) => Writing::Head,
                Framing::Length(n) => Writing::Body(n),
                Framing::Chunked => Writing::Chunk(Chunk::Size {
                    size: 0,
                    ext: false,
                    cr: false,
                    digits: 0,
                }),
                // delimited by the end of the connection (nothing follows it), or framed
                // in a way hyper does not write
                Framing::None | Framing::Pass => return self.stop_counting(),
            }
        };
        if closes {
            // hyper closes the connection after this answer: nothing may follow it (nginx
            // sends nothing after an answer that closes)
            self.hush();
        }
        if self.refused.is_some() && self.asked.is_empty() {
            self.close_after.notify_one();
        }
    }

    /// Stops counting answers. With a head refused, the refusal goes unanswered (where the
    /// answers end is not known), and hyper is shut down when it next reads (`poll_read`),
    /// once the requests it holds are answered. Without one, the guard stops following the
    /// connection altogether: it could not tell a protocol switch any more. (Hyper writes
    /// nothing the guard cannot follow but an answer delimited by the end of the
    /// connection, after which nothing is read.)
    fn stop_counting(&mut self) {
        self.writing = Writing::Done;
        self.wrote = Vec::new();
        self.asked.clear();
        if self.refused.is_none() {
            self.pass_releasing();
        }
        self.hush();
    }
}

/// The HTTP/2 connection preface (h2c with prior knowledge).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Whether nothing may be answered after the request whose head is `head`: it asks for
/// `Connection: close` (hyper may not agree, reading the header strictly, but then the guard
/// only withholds more than needed), or it is HTTP/1.0, whose answer may be delimited by the
/// end of the connection.
fn asks_close(head: &[u8]) -> bool {
    let http10 = head
        .split(|&b| b == b'\n')
        .next()
        .is_some_and(|l| l.strip_suffix(b"\r").unwrap_or(l).ends_with(b" HTTP/1.0"));
    http10 || has_close_token(head)
}

/// Whether a head (a request's or an answer's) has `close` among its `Connection` tokens.
fn has_close_token(head: &[u8]) -> bool {
    head.split(|&b| b == b'\n').skip(1).any(|line| {
        line.iter().position(|&b| b == b':').is_some_and(|colon| {
            line[..colon].eq_ignore_ascii_case(b"connection")
                && line[colon + 1..]
                    .split(|&b| b == b',')
                    .any(|t| trim(t).eq_ignore_ascii_case(b"close"))
        })
    })
}

/// The protocol switch a request head asks for, if any.
fn switch_of(head: &[u8]) -> Option<Switch> {
    head.split(|&b| b == b'\n').skip(1).find_map(|line| {
        let colon = line.iter().position(|&b| b == b':')?;
        line[..colon]
            .eq_ignore_ascii_case(b"upgrade")
            .then_some(Switch::Upgrade)
    })
}

/// Index in `rest` just past the blank line ending the head that `head` began, if any
/// (`CRLF CRLF`, or a bare `LF` ending an empty line, as hyper accepts).
/// How far the connection's first bytes (`head`, held, then `rest`) are the HTTP/2 preface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Preface {
    /// They differ from it: an HTTP/1 head.
    No,
    /// All so far match it, and it is not complete.
    Partial,
    /// It is complete with this many bytes of `rest`.
    Whole(usize),
}

fn preface_progress(head: &[u8], rest: &[u8]) -> Preface {
    let Some(want) = H2_PREFACE.get(head.len()..) else {
        return Preface::No;
    };
    let n = want.len().min(rest.len());
    if !H2_PREFACE.starts_with(head) || rest[..n] != want[..n] {
        Preface::No
    } else if n == want.len() {
        Preface::Whole(n)
    } else {
        Preface::Partial
    }
}

/// The length of the preface's part that reads as an HTTP/1 head (`PRI * HTTP/2.0` and an
/// empty line).
const PREFACE_HEAD: usize = 18;

pub(crate) fn find_head_end(head: &[u8], rest: &[u8]) -> Option<usize> {
    let mut p1 = head.last().copied().unwrap_or(0);
    let mut p2 = head.len().checked_sub(2).map_or(0, |i| head[i]);
    for (j, &b) in rest.iter().enumerate() {
        if b == b'\n' && (p1 == b'\n' || (p1 == b'\r' && p2 == b'\n')) {
            return Some(j + 1);
        }
        p2 = p1;
        p1 = b;
    }
    None
}

#[derive(Debug, PartialEq, Eq)]
enum Framing {
    /// No body: a request without a length, an answer delimited by the end of the
    /// connection.
    None,
    /// A body of this many bytes.
    Length(u64),
    /// A chunked body.
    Chunked,
    /// Stop following (hyper decides, or the connection changes protocol).
    Pass,
}

/// How the message (a request, or an answer that may have a body) whose head is `head` is
/// framed. (A request head with two lengths, or a length and a transfer coding, never gets
/// here: [`crate::h1_fast::refusal_of`] refuses it.)
fn framing(head: &[u8]) -> Framing {
    if head.starts_with(b"PRI * HTTP/2.0") {
        return Framing::Pass;
    }
    let mut lines = head.split(|&b| b == b'\n');
    if lines.next().is_none() {
        return Framing::Pass;
    }
    let (mut cl, mut te) = (None::<&[u8]>, None::<&[u8]>);
    for line in lines {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], trim(&line[colon + 1..]));
        if name.eq_ignore_ascii_case(b"content-length") {
            cl = Some(value);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            te = Some(value);
        }
    }
    match (cl, te) {
        (Some(_), Some(_)) => Framing::Pass,
        (None, None) => Framing::None,
        (Some(v), None) => match std::str::from_utf8(v).ok().and_then(|s| s.parse().ok()) {
            Some(n) => Framing::Length(n),
            None => Framing::Pass,
        },
        (None, Some(v)) => {
            let last = v.rsplit(|&b| b == b',').next().map(trim).unwrap_or(v);
            if last.eq_ignore_ascii_case(b"chunked") {
                Framing::Chunked
            } else {
                Framing::Pass
            }
        }
    }
}

fn trim(v: &[u8]) -> &[u8] {
    let s = v
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(v.len());
    let e = v
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(s, |e| e + 1);
    &v[s..e]
}

/// One step of chunked-body framing over `buf`: the next state and the bytes used.
fn step_chunk(c: Chunk, buf: &[u8]) -> (State, usize) {
    match c {
        Chunk::Data(n) => {
            let take = n.min(buf.len() as u64);
            let next = if take == n {
                Chunk::DataEnd(false)
            } else {
                Chunk::Data(n - take)
            };
            (State::Chunk(next), take as usize)
        }
        Chunk::DataEnd(cr) => match (cr, buf[0]) {
            (false, b'\r') => (State::Chunk(Chunk::DataEnd(true)), 1),
            (true, b'\n') => (
                State::Chunk(Chunk::Size {
                    size: 0,
                    ext: false,
                    cr: false,
                    digits: 0,
                }),
                1,
            ),
            _ => (State::Pass, 0),
        },
        Chunk::Size {
            size,
            ext,
            cr,
            digits,
        } => {
            let b = buf[0];
            let next = match (cr, b) {
                (true, b'\n') if digits > 0 && size == 0 => {
                    State::Chunk(Chunk::Trailer { line: 0, cr: false })
                }
                (true, b'\n') if digits > 0 => State::Chunk(Chunk::Data(size)),
                (true, _) => State::Pass,
                (false, b'\r') => State::Chunk(Chunk::Size {
                    size,
                    ext,
                    cr: true,
                    digits,
                }),
                (false, _) if ext => State::Chunk(c),
                // whitespace after the size, which hyper accepts: up to the line's end it is
                // skipped like an extension (hyper refuses what it does not accept there)
                (false, b';') => State::Chunk(Chunk::Size {
                    size,
                    ext: true,
                    cr,
                    digits,
                }),
                (false, b' ' | b'\t') if digits > 0 => State::Chunk(Chunk::Size {
                    size,
                    ext: true,
                    cr,
                    digits,
                }),
                (false, _) => match (b as char).to_digit(16) {
                    Some(d) if digits < 16 => State::Chunk(Chunk::Size {
                        size: size * 16 + u64::from(d),
                        ext,
                        cr,
                        digits: digits + 1,
                    }),
                    _ => State::Pass,
                },
            };
            (next, 1)
        }
        Chunk::Trailer { line, cr } => {
            let next = match (cr, buf[0]) {
                (true, b'\n') if line == 0 => State::Head,
                (true, b'\n') => State::Chunk(Chunk::Trailer { line: 0, cr: false }),
                (false, b'\r') => State::Chunk(Chunk::Trailer { line, cr: true }),
                (true, _) => State::Pass,
                (false, _) if line > MAX_TRAILER_LINE => State::Pass,
                (false, _) => State::Chunk(Chunk::Trailer {
                    line: line + 1,
                    cr: false,
                }),
            };
            (next, 1)
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for H1Guard<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.release_at < this.release.len() {
                let n = buf.remaining().min(this.release.len() - this.release_at);
                buf.put_slice(&this.release[this.release_at..this.release_at + n]);
                this.release_at += n;
                if this.release_at == this.release.len() {
                    this.release = Vec::new();
                    this.release_at = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if this.refused.is_some() {
                // Nothing more for hyper. When it has had no request, it is idle: the end of
                // the stream closes it. Otherwise it may be writing an answer (which the end
                // of the stream would cut short): it waits here until the serving task, told
                // by `close_after` once every answer owed has begun, shuts it down gracefully
                // (hyper then finishes the answer it is writing, and closes).
                if !this.handed {
                    return Poll::Ready(Ok(()));
                }
                if this.answered() {
                    this.close_after.notify_one();
                }
                return Poll::Pending;
            }
            if let Some(by) = &mut this.first_head_by {
                if this.handed || matches!(this.state, State::Pass) {
                    this.first_head_by = None;
                } else if by.poll_expired(cx).is_ready() {
                    // (no head handed to hyper yet: it takes the end of the stream as the
                    // client gone, and closes without an answer, as nginx does on the
                    // timeout; an expired deadline stays expired, so every later read ends
                    // here too)
                    return Poll::Ready(Ok(()));
                }
            }
            let before = buf.filled().len();
            ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
            if matches!(this.state, State::Pass) || buf.filled().len() == before {
                // (at the end of the stream, a head held back is dropped: the client left
                // before it was complete)
                return Poll::Ready(Ok(()));
            }
            let out = this.scan(&mut buf.filled_mut()[before..]);
            // What follows a spoiled head is never read as HTTP: in its place goes a blank
            // line, so that hyper, which looks for one before it parses a head, parses this
            // one now (and refuses it) instead of waiting.
            let blank: &[u8] = if out.spoiled { b"\r\n\r\n" } else { b"" };
            if out.carried.is_empty()
                && buf.remaining() + (buf.filled().len() - before - out.end) >= blank.len()
            {
                buf.set_filled(before + out.end);
                buf.put_slice(blank);
            } else {
                let mut release = out.carried;
                release.extend_from_slice(&buf.filled()[before..before + out.end]);
                release.extend_from_slice(blank);
                buf.set_filled(before);
                this.release = release;
            }
            if buf.filled().len() > before {
                return Poll::Ready(Ok(()));
            }
            // nothing of this read for hyper yet: the answers owed, the bytes released, or
            // another read
        }
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncWrite for H1Guard<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = ready!(Pin::new(&mut this.inner).poll_write(cx, buf));
        if let Ok(n) = r
            && n > 0
        {
            this.observe(&buf[..n]);
        }
        Poll::Ready(r)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = ready!(Pin::new(&mut this.inner).poll_write_vectored(cx, bufs));
        if let Ok(n) = r {
            let mut left = n;
            for b in bufs {
                if left == 0 {
                    break;
                }
                let k = left.min(b.len());
                this.observe(&b[..k]);
                left -= k;
            }
        }
        Poll::Ready(r)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.refused.is_none() && this.lingering.is_none() && this.inside_body() {
            // hyper closes the connection with the client still owing body bytes (an answer
            // that refused the body, or one that did not read it): a lingering close, as
            // nginx makes after refusing a body, so that the bytes the client still sends do
            // not reset the connection before it has read the answer
            this.lingering = Some(Box::new(crate::h1_fast::Closing::new(Vec::new())));
        }
        match this.refused.as_mut().or(this.lingering.as_mut()) {
            // Kong's answer to the refused head, once hyper is done, or the lingering close
            Some(r) => {
                ready!(r.poll_close(&mut this.inner, cx));
                Poll::Ready(Ok(()))
            }
            None => Pin::new(&mut this.inner).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard() -> H1Guard<()> {
        H1Guard::new(
            (),
            Limits {
                max_headers: 100,
                buffers: crate::header_buffers::HeaderBuffers {
                    first: 1024,
                    count: 2,
                    size: 8 * 1024,
                },
                h2c: true,
            },
            Arc::new(|head: &[u8], why, _| {
                let mut a = format!("{why:?} ").into_bytes();
                a.extend_from_slice(head);
                a
            }),
            Arc::new(tokio::sync::Notify::new()),
        )
    }

    /// What hyper gets of `read` as the guard's next read.
    fn pass_on(g: &mut H1Guard<()>, read: &[u8]) -> Vec<u8> {
        if g.refused.is_some() {
            return Vec::new();
        }
        let mut b = read.to_vec();
        if matches!(g.state, State::Pass) {
            return b;
        }
        let out = g.scan(&mut b);
        let mut got = out.carried;
        got.extend_from_slice(&b[..out.end]);
        if out.spoiled {
            got.extend_from_slice(b"\r\n\r\n");
        }
        got
    }

    /// Feeds `input` in pieces of `step` bytes; returns what hyper would read.
    fn run(input: &[u8], step: usize) -> (Vec<u8>, H1Guard<()>) {
        let mut g = guard();
        let mut out = Vec::new();
        for piece in input.chunks(step) {
            out.extend(pass_on(&mut g, piece));
        }
        (out, g)
    }

    /// The answer the guard holds for a refused head.
    fn answer(g: &H1Guard<()>) -> String {
        String::from_utf8_lossy(g.refused.as_ref().expect("a refusal").answer()).into_owned()
    }

    /// The first head's deadline: hyper gets the end of the stream when no head has come by
    /// then, and nothing changes once one has.
    #[tokio::test]
    async fn the_first_head_must_come_by_its_deadline() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let limits = guard().limits;
        let guarded = |io| {
            let soon = std::time::Instant::now() + std::time::Duration::from_millis(100);
            H1Guard::new(
                io,
                limits,
                guard().answerer,
                Arc::new(tokio::sync::Notify::new()),
            )
            .first_head_by(Some(soon))
        };
        let mut buf = [0u8; 256];
        // a head begun but not done by the deadline: the end of the stream
        let (mut client, server) = tokio::io::duplex(1024);
        let mut g = guarded(server);
        client.write_all(b"GET / HTTP/1.1\r\nHo").await.unwrap();
        let start = std::time::Instant::now();
        assert_eq!(g.read(&mut buf).await.unwrap(), 0);
        assert!(start.elapsed() >= std::time::Duration::from_millis(80));
        assert_eq!(g.read(&mut buf).await.unwrap(), 0, "and it stays ended");
        // a head in time: later heads are not held to it
        let (mut client, server) = tokio::io::duplex(1024);
        let mut g = guarded(server);
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let n = g.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        tokio::time::sleep(std::time::Duration::from_millis(150)).await;
        client.write_all(b"GET /2 HTTP/1.1\r\n").await.unwrap();
        let wait = std::time::Duration::from_millis(100);
        assert!(tokio::time::timeout(wait, g.read(&mut buf)).await.is_err());
        client.write_all(b"Host: x\r\n\r\n").await.unwrap();
        let n = g.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"GET /2 HTTP/1.1\r\nHost: x\r\n\r\n");
    }

    const PIPELINE: &[u8] = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n\
POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello\
POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\n0\r\nX-T: 1\r\n\r\n\
GET /d HTTP/1.1\r\nHost: x\r\n\r\n";

    #[test]
    fn follows_valid_messages_untouched_whatever_the_reads() {
        for step in [1, 2, 3, 7, 64, PIPELINE.len()] {
            let (out, g) = run(PIPELINE, step);
            assert_eq!(out, PIPELINE, "step {step}");
            assert!(matches!(g.state, State::Head), "step {step}: {:?}", g.state);
            assert!(g.head.is_empty());
        }
    }

    #[test]
    fn length_and_chunked_together_are_refused_in_any_order() {
        for head in [
            &b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
            b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\nHost: x\r\ncontent-length: 3\r\n\r\n",
        ] {
            // After a valid request, in any split.
            let first = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
            let mut input = first.to_vec();
            input.extend_from_slice(head);
            input.extend_from_slice(b"0\r\n\r\n");
            for step in [1, 5, input.len()] {
                let (out, g) = run(&input, step);
                // hyper gets the valid request alone; the refused head is answered
                assert_eq!(out, first, "step {step}");
                assert!(matches!(g.state, State::Pass));
                assert!(answer(&g).starts_with("Bad POST /x"), "{}", answer(&g));
            }
        }
    }

    #[test]
    fn heads_are_held_back_until_complete_and_refused_as_soon_as_they_cannot_pass() {
        // a head in pieces reaches hyper whole, with what follows it
        let mut g = guard();
        assert_eq!(pass_on(&mut g, b"GET /a HTTP/1.1\r\nHo"), b"");
        assert_eq!(pass_on(&mut g, b"st: x\r\n"), b"");
        assert_eq!(
            pass_on(&mut g, b"\r\nGET /b HTTP/1.1\r\n\r\nGET /c"),
            b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\n\r\n"
        );
        assert_eq!(g.asked.len(), 2);
        // a bad header line refuses the head before its end
        assert_eq!(pass_on(&mut g, b" HTTP/1.1\r\nNo Colon\r\n"), b"");
        assert!(answer(&g).starts_with("Bad GET /c"), "{}", answer(&g));
        // too many headers, or too many bytes, before the end
        for (piece, n) in [("X: 1\r\n", 101), ("X: 1234567890\r\n", 2000)] {
            let mut input = b"GET / HTTP/1.1\r\n".to_vec();
            for _ in 0..n {
                input.extend_from_slice(piece.as_bytes());
            }
            let (out, g) = run(&input, 7);
            assert_eq!(out, b"");
            assert!(answer(&g).starts_with("TooLarge "), "{piece}");
        }
        // exactly at the count limit it passes
        let mut input = b"GET / HTTP/1.1\r\n".to_vec();
        for _ in 0..100 {
            input.extend_from_slice(b"X: 1\r\n");
        }
        input.extend_from_slice(b"\r\n");
        let (out, g) = run(&input, 13);
        assert_eq!(out, input);
        assert!(g.refused.is_none());
        // the HTTP/2 preface is not refused (it passes, in pieces too)
        let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
        let (out, g) = run(preface, 3);
        assert_eq!(out, preface);
        assert!(g.refused.is_none());
        // ...unless the listener's kind has no `http2`: then it is an HTTP/1 head, which
        // does not parse (nginx: 400), whole or in pieces
        for step in [preface.len(), 3] {
            let mut g = guard();
            g.limits.h2c = false;
            let mut out = Vec::new();
            for piece in preface.chunks(step) {
                out.extend(pass_on(&mut g, piece));
            }
            assert_eq!(out, b"", "step {step}");
            assert!(
                answer(&g).starts_with("Bad "),
                "step {step}: {}",
                answer(&g)
            );
        }
    }

    /// The HTTP/2 preface passes only as the connection's first bytes (nginx compares its
    /// first read with it): after a request handed to hyper, or after empty lines, it is a
    /// request line that does not parse, refused (400) as any other.
    #[test]
    fn the_preface_is_one_only_at_the_connections_start() {
        let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
        for step in [preface.len(), 5, 1] {
            // after a request
            let mut g = guard();
            assert_eq!(
                pass_on(&mut g, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
                b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
            );
            let mut out = Vec::new();
            for piece in preface.chunks(step) {
                out.extend(pass_on(&mut g, piece));
            }
            assert_eq!(out, b"", "step {step}");
            assert!(
                answer(&g).starts_with("Bad PRI * HTTP/2.0"),
                "step {step}: {}",
                answer(&g)
            );
            // after empty lines
            for lead in [&b"\r\n"[..], b"\n", b"\r\n\r\n"] {
                let mut input = lead.to_vec();
                input.extend_from_slice(preface);
                let (out, g) = run(&input, step);
                // (hyper gets the empty lines at most)
                assert!(out.iter().all(|&b| b == b'\r' || b == b'\n'), "{out:?}");
                assert!(
                    answer(&g).starts_with("Bad PRI * HTTP/2.0"),
                    "step {step}: {}",
                    answer(&g)
                );
            }
            // at the start it passes
            let (out, g) = run(preface, step);
            assert_eq!(out, preface);
            assert!(g.refused.is_none());
        }
    }

    /// The preface's 24 bytes decide: its first 18 (`PRI * HTTP/2.0` and an empty line) are
    /// held back, not handed to hyper as a complete head, and when what follows differs
    /// they are the HTTP/1 head they look like, refused as nginx refuses it.
    #[test]
    fn the_preface_is_decided_by_all_its_bytes() {
        for tail in [&b"XX\r\n\r\n"[..], b"SM\r\n\r\r", b"GET / HTTP/1.1\r\n\r\n"] {
            let mut input = b"PRI * HTTP/2.0\r\n\r\n".to_vec();
            input.extend_from_slice(tail);
            for step in [input.len(), 18, 20, 5, 1] {
                let (out, g) = run(&input, step);
                assert_eq!(out, b"", "{tail:?} step {step}");
                assert!(
                    answer(&g).starts_with("Bad PRI * HTTP/2.0"),
                    "{tail:?} step {step}: {}",
                    answer(&g)
                );
            }
        }
        // held back while it matches, then passed whole
        let mut g = guard();
        assert_eq!(pass_on(&mut g, b"PRI * HTTP/2.0\r\n\r\n"), b"");
        assert_eq!(pass_on(&mut g, b"SM\r\n"), b"");
        assert_eq!(
            pass_on(&mut g, b"\r\n\0\0"),
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0"
        );
        assert!(g.refused.is_none());
    }

    #[test]
    fn a_held_head_completed_in_the_read_that_refuses_the_next_goes_to_hyper_first() {
        let mut g = guard();
        assert_eq!(pass_on(&mut g, b"GET /a HTTP/1.1\r\nX: "), b"");
        let got = pass_on(
            &mut g,
            b"1\r\n\r\nGET /b HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nZ",
        );
        assert_eq!(got, b"GET /a HTTP/1.1\r\nX: 1\r\n\r\n");
        assert!(answer(&g).starts_with("Bad GET /b"), "{}", answer(&g));
        assert_eq!(g.asked.len(), 1);
    }

    #[test]
    fn a_head_after_a_closing_or_http10_request_is_withheld_without_an_answer() {
        for first in [
            &b"GET /a HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, close\r\n\r\n"[..],
            b"GET /a HTTP/1.0\r\n\r\n",
            b"GET /a HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n",
        ] {
            let mut g = guard();
            let mut input = first.to_vec();
            input.extend_from_slice(SMUGGLE);
            // hyper gets the first request only; the refused head gets no answer (hyper
            // closes after the first, or its answer may end with the connection)
            assert_eq!(pass_on(&mut g, &input), first);
            assert_eq!(answer(&g), "");
        }
    }

    /// The answers to a `HEAD`, to an upload (after `100 Continue`), a chunked one, an empty
    /// one and a `304`, as hyper may write them.
    const ANSWERS: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 31\r\n\r\n\
HTTP/1.1 100 Continue\r\n\r\n\
HTTP/1.1 200 OK\r\nContent-Length: 28\r\n\r\nHTTP/1.1 200 OK\r\nX: y\r\n\r\nabc\
HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n1b\r\nHTTP/1.1 204 No Content\r\n\r\n\r\n0\r\n\r\n\
HTTP/1.1 204 No Content\r\n\r\n\
HTTP/1.1 304 Not Modified\r\ncontent-length: 9\r\n\r\n";

    fn asked_for_answers() -> H1Guard<()> {
        let mut g = guard();
        pass_on(
            &mut g,
            b"HEAD /a HTTP/1.1\r\n\r\n\
POST /b HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\nZ\
GET /c HTTP/1.1\r\n\r\nGET /d HTTP/1.1\r\n\r\nGET /e HTTP/1.1\r\n\r\n",
        );
        assert_eq!(g.asked.len(), 5);
        // (a refusal makes the guard count answers once its reads are over)
        assert!(feed(&mut g, SMUGGLE));
        g
    }

    #[test]
    fn answers_are_followed_by_their_framing_whatever_the_writes() {
        // two answers in one write, heads and bodies cut anywhere, status lines inside
        // bodies: each final answer pays one request, in order
        for step in [1, 2, 5, 13, 64, ANSWERS.len()] {
            let mut g = asked_for_answers();
            for piece in ANSWERS.chunks(step) {
                g.observe(piece);
            }
            assert_eq!(g.asked.len(), 0, "step {step}");
            assert!(
                matches!(g.writing, Writing::Head),
                "step {step}: {:?}",
                g.writing
            );
            assert!(!g.silent, "step {step}");
        }
        // a body that looks like answers is not counted as answers
        let mut g = guard();
        pass_on(&mut g, &b"GET / HTTP/1.1\r\n\r\n".repeat(3));
        g.observe(b"HTTP/1.1 200 OK\r\ncontent-length: 54\r\n\r\n");
        g.observe(b"HTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n");
        assert_eq!(g.asked.len(), 2);
        // the length in the answer to a HEAD request is not a body's
        let mut g = guard();
        pass_on(&mut g, b"HEAD / HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n\r\n");
        g.observe(b"HTTP/1.1 200 OK\r\ncontent-length: 31\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
        assert_eq!(g.asked.len(), 0);
    }

    #[test]
    fn answers_that_cannot_be_followed_end_the_counting_and_the_refusals_answer() {
        for written in [
            // delimited by the end of the connection
            &b"HTTP/1.1 200 OK\r\ncontent-length: 31\r\n\r\nHTTP/1.1 200 OK\r\n\r\nbody"[..],
            // not an answer
            b"HTTP/1.1 200 OK\r\ncontent-length: 31\r\n\r\nhello",
            // a length beside a transfer coding, a chunk size that is not one
            b"HTTP/1.1 200 OK\r\ncontent-length: 31\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: 31\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        ] {
            let mut g = asked_for_answers();
            g.observe(written);
            assert!(matches!(g.writing, Writing::Done), "{:?}", g.writing);
            assert!(g.answered());
            assert_eq!(answer(&g), "", "{}", String::from_utf8_lossy(written));
        }
        // while answers are followed, the refusal keeps its answer
        let mut g = asked_for_answers();
        g.observe(b"HTTP/1.1 200 OK\r\ncontent-length: 31\r\n\r\n");
        assert!(!g.answered());
        assert!(answer(&g).starts_with("Bad POST /s"), "{}", answer(&g));
    }

    #[test]
    fn a_head_refused_while_a_switch_is_undecided_is_spoiled_not_answered() {
        let mut g = guard();
        let up = b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n";
        assert_eq!(pass_on(&mut g, up), up);
        let got = pass_on(&mut g, SMUGGLE);
        assert!(g.refused.is_none());
        // the head up to its last byte, that byte a NUL, then a blank line
        assert_eq!(got.len(), SMUGGLE.len() + 4);
        assert_eq!(&got[..SMUGGLE.len() - 1], &SMUGGLE[..SMUGGLE.len() - 1]);
        assert_eq!(got[SMUGGLE.len() - 1], 0);
    }

    #[test]
    fn framing_decisions() {
        let f = |h: &str| framing(h.as_bytes());
        assert_eq!(f("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), Framing::None);
        assert_eq!(
            f("POST / HTTP/1.1\r\nContent-Length:  12 \r\n\r\n"),
            Framing::Length(12)
        );
        assert_eq!(
            f("POST / HTTP/1.1\r\nTransfer-Encoding: gzip, Chunked\r\n\r\n"),
            Framing::Chunked
        );
        assert_eq!(
            f("POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n"),
            Framing::Pass
        );
        // (an upgrade is framed as any request; its answer decides the switch)
        assert_eq!(
            f("GET /ws HTTP/1.1\r\nUpgrade: websocket\r\n\r\n"),
            Framing::None
        );
        assert_eq!(f("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), Framing::Pass);
        // two lengths (even equal ones, which hyper would merge), or a length beside a
        // transfer coding, are refused before framing is asked: nginx answers 400
        for head in [
            "POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 1\r\ncontent-length: 1\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 1\r\n\r\n",
        ] {
            assert_eq!(
                crate::h1_fast::refusal_of(head.as_bytes(), 100, &Default::default()),
                Some(Refusal::Bad),
                "{head}"
            );
        }
    }

    const SMUGGLE: &[u8] =
        b"POST /s HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n";

    /// Scans `bytes` as one read; whether a head in them was refused.
    fn feed(g: &mut H1Guard<()>, bytes: &[u8]) -> bool {
        let refused = g.refused.is_some();
        pass_on(g, bytes);
        !refused && g.refused.is_some()
    }

    /// A head trickled a line per read (up to nginx's 1000 header lines) is checked in
    /// linear work: each line once as it completes, the whole head parsed once at its end
    /// (not a parse of all of it per line); and a bad line among them is refused as soon as
    /// it is in.
    #[test]
    fn a_head_trickled_a_line_per_read_is_checked_in_linear_work() {
        // (the head sent a line per read; what was sent, parsed, and the line refused)
        let trickled = |g: &mut H1Guard<()>, lines: usize, bad_at: Option<usize>| {
            let before = crate::h1_fast::PARSED.with(std::cell::Cell::get);
            let mut sent = 0;
            let mut refused_at = None;
            for i in 0..=lines + 1 {
                let line = match i {
                    0 => b"GET / HTTP/1.1\r\n".to_vec(),
                    i if i == lines + 1 => b"\r\n".to_vec(),
                    i if bad_at == Some(i) => b"Not A Header\r\n".to_vec(),
                    i => format!("X-Header-{i:04}: {i}\r\n").into_bytes(),
                };
                sent += line.len();
                if feed(g, &line) {
                    refused_at = Some(i);
                    break;
                }
            }
            let parsed = crate::h1_fast::PARSED.with(std::cell::Cell::get) - before;
            (sent, parsed, refused_at)
        };
        let big = |g: &mut H1Guard<()>| {
            g.limits.max_headers = 1000;
            g.limits.buffers = crate::header_buffers::HeaderBuffers::default();
            g.check = crate::h1_fast::HeadCheck::new(&g.limits.buffers);
        };
        let mut g = guard();
        big(&mut g);
        let (sent, parsed, refused_at) = trickled(&mut g, 1000, None);
        assert_eq!(refused_at, None);
        assert!(g.refused.is_none());
        assert_eq!(g.asked.len(), 1, "the head went to hyper");
        // each line once, then the complete head (twice: past the fast path's 64 slots,
        // with room for `max_headers`); a parse of the head per line would be ~500 times it
        assert!(parsed <= 3 * sent, "{parsed} bytes parsed for {sent} sent");
        // one line more than the limit is refused when that line completes
        let mut g = guard();
        big(&mut g);
        let (_, _, refused_at) = trickled(&mut g, 1001, None);
        assert_eq!(refused_at, Some(1001));
        assert!(answer(&g).starts_with("TooLarge "), "{}", answer(&g));
        // a bad line in the middle: refused as soon as it completes
        let mut g = guard();
        big(&mut g);
        let (sent, parsed, refused_at) = trickled(&mut g, 1000, Some(500));
        assert_eq!(refused_at, Some(500));
        assert!(
            answer(&g).starts_with("Bad GET / HTTP/1.1\r\n"),
            "{}",
            answer(&g)
        );
        assert!(parsed <= 2 * sent, "{parsed} bytes parsed for {sent} sent");
    }

    #[test]
    fn a_line_outgrowing_a_large_buffer_is_refused_before_it_ends() {
        // (the guard's buffers: 1k, then 2 x 8k) a header line still being sent, once past
        // 8 KiB, is refused at once, as nginx refuses it: not when it ends, nor at the header
        // timeout
        let mut g = guard();
        assert!(!feed(&mut g, b"GET / HTTP/1.1\r\nHost: x\r\nCookie: "));
        assert!(!feed(&mut g, &[b'c'; 8000]));
        assert!(feed(&mut g, &[b'c'; 400]));
        assert!(answer(&g).starts_with("TooLarge "));
    }

    #[test]
    fn a_refused_switch_keeps_the_guard_on() {
        for (req, answer) in [
            (
                &b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: foo\r\n\r\n"[..],
                &b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"[..],
            ),
            (
                b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
                b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n",
            ),
        ] {
            let mut g = guard();
            assert!(!feed(&mut g, req));
            let undecided = |g: &H1Guard<()>| g.asked.front().is_some_and(|a| a.switch.is_some());
            assert!(undecided(&g));
            // an interim answer does not decide
            g.observe(b"HTTP/1.1 100 Continue\r\n\r\n");
            assert!(undecided(&g));
            g.observe(answer);
            assert!(g.asked.is_empty());
            assert!(
                feed(&mut g, SMUGGLE),
                "the next smuggling head is still refused"
            );
        }
    }

    #[test]
    fn an_accepted_switch_ends_the_guard() {
        let mut g = guard();
        assert!(!feed(
            &mut g,
            b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n"
        ));
        g.observe(b"HTTP/1.1 101 Switching Protocols\r\n\r\n");
        assert!(matches!(g.state, State::Pass));
        // tunnel bytes, whatever they look like, are not touched
        assert!(!feed(&mut g, SMUGGLE));
        // a `CONNECT` never gets that far: nginx refuses it at its head (405), so does the guard
        let mut g = guard();
        assert!(feed(&mut g, b"CONNECT /x HTTP/1.1\r\nHost: x\r\n\r\n"));
    }

    #[tokio::test]
    async fn an_answer_that_closes_the_connection_is_the_last() {
        for closing in [
            &b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nConnection: keep-alive, Close\r\ncontent-length: 2\r\n\r\nok",
        ] {
            let mut g = guard();
            pass_on(
                &mut g,
                b"POST /a HTTP/1.1\r\nContent-Length: 1\r\n\r\nxGET /b HTTP/1.1\r\n\r\n",
            );
            assert!(feed(&mut g, SMUGGLE));
            assert!(!answer(&g).is_empty());
            g.observe(closing);
            // hyper closes after it: no 400 follows (a client would take it for /b's)
            assert_eq!(answer(&g), "", "{}", String::from_utf8_lossy(closing));
        }
    }

    #[tokio::test]
    async fn a_refused_head_waits_for_the_answers_hyper_still_owes_when_counting_stops() {
        let mut g = guard();
        pass_on(&mut g, b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n");
        assert!(feed(&mut g, SMUGGLE));
        let notified = |g: &H1Guard<()>| {
            let n = Arc::clone(&g.close_after);
            async move {
                tokio::time::timeout(std::time::Duration::from_millis(20), n.notified())
                    .await
                    .is_ok()
            }
        };
        // an answer that cannot be followed: /b may still be in hyper's hands, so hyper is
        // not shut down from the write side (its next read is the signal)
        g.observe(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n");
        assert!(g.answered());
        assert_eq!(answer(&g), "");
        assert!(!notified(&g).await);
        // while counted answers pay the last one owed at once
        let mut g = guard();
        pass_on(&mut g, b"GET /a HTTP/1.1\r\n\r\n");
        assert!(feed(&mut g, SMUGGLE));
        g.observe(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
        assert!(notified(&g).await);
    }

    #[test]
    fn bytes_held_back_go_to_hyper_when_the_guard_stops_following() {
        // the tunnel's first bytes, sent before the switch was answered
        let mut g = guard();
        assert!(!feed(
            &mut g,
            b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n\x81\x05hel"
        ));
        assert!(g.release.is_empty());
        g.observe(b"HTTP/1.1 101 Switching Protocols\r\n\r\n");
        assert!(matches!(g.state, State::Pass));
        assert_eq!(g.release, b"\x81\x05hel");
        // the start of a head, when answers can no longer be followed
        let mut g = guard();
        assert!(!feed(&mut g, b"GET /a HTTP/1.1\r\n\r\nGET /b HT"));
        g.observe(b"HTTP/1.1 200 OK\r\n\r\n");
        assert!(matches!(g.state, State::Pass));
        assert_eq!(g.release, b"GET /b HT");
        assert!(g.asked.is_empty());
    }

    #[test]
    fn a_switch_pipelined_behind_another_request_is_decided_by_its_own_answer() {
        for (pipelined, first_answer) in [
            (
                &b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\naGET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n"[..],
                &b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"[..],
            ),
            (
                b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n",
                // (a 101 to a request that asked for no switch is not followed)
                b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
            ),
        ] {
            let mut g = guard();
            assert!(!feed(&mut g, pipelined));
            // the first request's answer (whatever it says) does not switch
            g.observe(first_answer);
            if matches!(g.writing, Writing::Done) {
                // (a 101 to a request that asked for no switch cannot be followed: the guard
                // stops following the connection, as it could not tell the switch any more)
                assert!(matches!(g.state, State::Pass));
                assert!(!feed(&mut g, SMUGGLE));
                continue;
            }
            assert!(!matches!(g.state, State::Pass));
            // a refusal of the switch keeps the guard on
            let mut refused = guard();
            assert!(!feed(&mut refused, pipelined));
            refused.observe(first_answer);
            refused.observe(b"HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n");
            assert!(feed(&mut refused, SMUGGLE), "the next smuggling head is refused");
            // its acceptance ends it
            g.observe(b"HTTP/1.1 101 Switching Protocols\r\n\r\n");
            assert!(matches!(g.state, State::Pass));
            assert!(!feed(&mut g, SMUGGLE));
        }
    }

    #[test]
    fn whitespace_after_a_chunk_size_is_followed() {
        for body in [
            &b"5 \r\nhello\r\n0\r\n\r\n"[..],
            b"5\t;x=1\r\nhello\r\n0 \r\n\r\n",
        ] {
            let mut g = guard();
            let mut input =
                b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
            input.extend_from_slice(body);
            assert!(!feed(&mut g, &input));
            assert!(matches!(g.state, State::Head), "{:?}", g.state);
            assert!(feed(&mut g, SMUGGLE));
        }
    }

    #[test]
    fn stops_following_what_it_cannot() {
        let (_, g) = run(
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            4,
        );
        assert!(matches!(g.state, State::Pass));
        assert!(g.refused.is_none());
    }

    /// A guard on the server's end of a real loopback connection, and the client's end.
    async fn guarded_socket() -> (tokio::net::TcpStream, H1Guard<tokio::net::TcpStream>) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = tokio::net::TcpStream::connect(l.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = l.accept().await.unwrap();
        let g = guard();
        let g = H1Guard::new(server, g.limits, g.answerer, g.close_after);
        (client, g)
    }

    /// Sends `bytes` from the client and reads them through the guard, as hyper would,
    /// until `want` bytes came through (or the guard ends the stream).
    async fn through(
        client: &mut tokio::net::TcpStream,
        g: &mut H1Guard<tokio::net::TcpStream>,
        bytes: &[u8],
        want: usize,
    ) -> Vec<u8> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        client.write_all(bytes).await.unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while got.len() < want {
            let n = g.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        got
    }

    /// hyper shutting the connection down while the client still owes body bytes (by its
    /// length or its chunks): the write side is shut at once, then the guard reads and drops
    /// what the client goes on sending, however much (no cap on the bytes, as nginx's
    /// lingering close has none), and ends on the client's end of the stream.
    #[tokio::test]
    async fn a_shutdown_inside_a_body_lingers_until_the_client_closes() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        for start in [
            &b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\nab"[..],
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
        ] {
            let (mut client, mut g) = guarded_socket().await;
            let got = through(&mut client, &mut g, start, start.len()).await;
            assert_eq!(got, start);
            assert!(g.inside_body(), "{:?}", g.state);
            let shut = tokio::spawn(async move { g.shutdown().await });
            // the server's end of the stream comes at once
            let mut buf = [0u8; 16];
            let n = tokio::time::timeout(std::time::Duration::from_secs(2), client.read(&mut buf))
                .await
                .expect("the write side is shut at once")
                .unwrap();
            assert_eq!(n, 0);
            // 4 MiB more, all taken
            let piece = [b'x'; 64 * 1024];
            for i in 0..64 {
                assert!(client.write_all(&piece).await.is_ok(), "write {i}");
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            assert!(!shut.is_finished(), "still lingering");
            client.shutdown().await.unwrap();
            let r = tokio::time::timeout(std::time::Duration::from_secs(2), shut)
                .await
                .expect("ends on the client's end of the stream");
            assert!(r.unwrap().is_ok());
        }
    }

    /// Once the guard stops following (an upgrade answered 101, the HTTP/2 preface), the
    /// bytes that come are not a request's body: a shutdown does not linger.
    #[tokio::test]
    async fn a_shutdown_after_a_protocol_switch_is_at_once() {
        use tokio::io::AsyncWriteExt;
        let upgrade =
            b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n";
        let (mut client, mut g) = guarded_socket().await;
        through(&mut client, &mut g, upgrade, upgrade.len()).await;
        g.write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n")
            .await
            .unwrap();
        assert!(matches!(g.state, State::Pass), "{:?}", g.state);
        through(&mut client, &mut g, b"tunnel bytes", 12).await;
        let r = tokio::time::timeout(std::time::Duration::from_millis(500), g.shutdown()).await;
        assert!(r.expect("at once").is_ok());
        // h2c prior knowledge
        let (mut client, mut g) = guarded_socket().await;
        let mut preface = H2_PREFACE.to_vec();
        preface.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
        through(&mut client, &mut g, &preface, preface.len()).await;
        assert!(matches!(g.state, State::Pass), "{:?}", g.state);
        let r = tokio::time::timeout(std::time::Duration::from_millis(500), g.shutdown()).await;
        assert!(r.expect("at once").is_ok());
        drop(client);
    }

    /// A refused head's answer is what a shutdown writes, before its own lingering read,
    /// whatever state the guard is in: the empty lingering close of a body does not take
    /// its place.
    #[tokio::test]
    async fn a_refused_head_is_answered_before_the_linger() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut client, mut g) = guarded_socket().await;
        assert!(through(&mut client, &mut g, SMUGGLE, 1).await.is_empty());
        let answer =
            String::from_utf8_lossy(g.refused.as_ref().expect("a refusal").answer()).into_owned();
        assert!(!answer.is_empty());
        // (as if hyper were still owed a body)
        g.state = State::Body(1000);
        let shut = tokio::spawn(async move { g.shutdown().await });
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let n = tokio::time::timeout(std::time::Duration::from_secs(2), client.read(&mut buf))
                .await
                .expect("the answer, then the end of the stream")
                .unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(String::from_utf8_lossy(&got), answer);
        assert!(!shut.is_finished(), "lingering after the answer");
        client.write_all(b"more").await.unwrap();
        client.shutdown().await.unwrap();
        let r = tokio::time::timeout(std::time::Duration::from_secs(2), shut)
            .await
            .expect("ends on the client's end of the stream");
        assert!(r.unwrap().is_ok());
    }

    /// hyper closing a keep-alive connection between requests (a head awaited, nothing of
    /// it read): the client owes nothing, and the shutdown is at once.
    #[tokio::test]
    async fn a_keep_alive_close_between_requests_is_at_once() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let get = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        let (mut client, mut g) = guarded_socket().await;
        through(&mut client, &mut g, get, get.len()).await;
        let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
        g.write_all(answer).await.unwrap();
        assert!(matches!(g.state, State::Head), "{:?}", g.state);
        let r = tokio::time::timeout(std::time::Duration::from_millis(500), g.shutdown()).await;
        assert!(r.expect("at once").is_ok());
        let mut got = Vec::new();
        tokio::time::timeout(
            std::time::Duration::from_secs(2),
            client.read_to_end(&mut got),
        )
        .await
        .expect("the end of the stream")
        .unwrap();
        assert_eq!(got, answer);
    }

    /// The request hyper would make of `head`.
    fn hyper_request(head: &[u8]) -> http::Request<()> {
        let mut hdrs = [httparse::EMPTY_HEADER; 16];
        let mut r = httparse::Request::new(&mut hdrs);
        assert!(r.parse(head).expect("parses").is_complete());
        let mut b = http::Request::builder()
            .method(r.method.expect("method"))
            .uri(r.path.expect("target"));
        for h in r.headers.iter() {
            b = b.header(h.name, h.value);
        }
        b.body(()).expect("request")
    }

    /// Every head passed to hyper is queued for the service, pipelined ones in order, body
    /// bytes never; each request takes its own, checked.
    #[test]
    fn the_heads_passed_are_kept_in_order_for_their_requests() {
        let heads = Arc::new(Heads::default());
        let mut g = guard().keeping_heads(Some(heads.clone()));
        let a: &[u8] = b"POST /a HTTP/1.1\r\nHost: x\r\nX-Aa: 1\r\nContent-Length: 5\r\n\r\n";
        let b: &[u8] = b"GET /b HTTP/1.1\r\nHost: x\r\nx-BB: 2\r\n\r\n";
        let mut input = a.to_vec();
        input.extend_from_slice(b"GET /");
        input.extend_from_slice(b);
        for piece in input.chunks(7) {
            pass_on(&mut g, piece);
        }
        let got = heads.take_for(&hyper_request(a)).expect("the first head");
        assert!(got.matches(&hyper_request(a)));
        let got = heads.take_for(&hyper_request(b)).expect("the second head");
        assert!(got.matches(&hyper_request(b)));
        // an HTTP/2 request never takes one (nor closes the queue)
        let mut h2 = hyper_request(b);
        *h2.version_mut() = http::Version::HTTP_2;
        assert!(heads.take_for(&h2).is_none());
        pass_on(&mut g, b);
        assert!(heads.take_for(&hyper_request(b)).is_some());
    }

    /// A head that is not the request's (hyper would have served a request the guard did
    /// not see, say): neither it nor any later head is used on the connection; the requests
    /// go on with hyper's `HeaderMap`.
    #[test]
    fn a_mismatched_head_falls_back_to_the_header_map_for_good() {
        let heads = Arc::new(Heads::default());
        let mut g = guard().keeping_heads(Some(heads.clone()));
        let a: &[u8] = b"GET /a HTTP/1.1\r\nHost: x\r\nX-Aa: 1\r\n\r\n";
        let b: &[u8] = b"GET /a HTTP/1.1\r\nHost: x\r\nX-Aa: 2\r\n\r\n";
        pass_on(&mut g, a);
        pass_on(&mut g, a);
        // the same method, target and count: the value's bytes still tell them apart
        assert!(heads.take_for(&hyper_request(b)).is_none());
        // the queue is emptied and closed: the next request (whose head was queued) and
        // those after it go without
        assert!(heads.take_for(&hyper_request(a)).is_none());
        pass_on(&mut g, a);
        assert!(heads.take_for(&hyper_request(a)).is_none());
        // the encoder then writes from the map (lower case)
        let (p, ()) = hyper_request(a).into_parts();
        let mut out = Vec::new();
        crate::h1_client::tests_encode(&mut out, &p, None);
        assert!(
            out.windows(7).any(|w| w == b"x-aa: 1"),
            "{}",
            String::from_utf8_lossy(&out)
        );
    }

    /// Past a few heads queued (pipelined requests hyper has not asked for yet), no more
    /// are kept: those queued still serve their requests, the later ones go without.
    #[test]
    fn the_queue_is_bounded() {
        let heads = Arc::new(Heads::default());
        let mut g = guard().keeping_heads(Some(heads.clone()));
        let heads_of = |i: usize| format!("GET /{i} HTTP/1.1\r\nHost: x\r\n\r\n").into_bytes();
        let mut input = Vec::new();
        for i in 0..MAX_QUEUED_HEADS + 2 {
            input.extend(heads_of(i));
        }
        pass_on(&mut g, &input);
        for i in 0..MAX_QUEUED_HEADS {
            assert!(
                heads.take_for(&hyper_request(&heads_of(i))).is_some(),
                "{i}"
            );
        }
        let later = heads_of(MAX_QUEUED_HEADS);
        assert!(heads.take_for(&hyper_request(&later)).is_none());
        pass_on(&mut g, &later);
        assert!(heads.take_for(&hyper_request(&later)).is_none());
    }

    /// The HTTP/2 preface is no head; once the guard stops following (here: the preface),
    /// nothing more is queued.
    #[test]
    fn no_head_is_kept_past_the_preface() {
        let heads = Arc::new(Heads::default());
        let mut g = guard().keeping_heads(Some(heads.clone()));
        pass_on(&mut g, H2_PREFACE);
        assert!(heads.lock().heads.is_empty());
        assert!(heads.lock().closed);
    }
}
