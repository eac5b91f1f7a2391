//! A byte-level guard in front of hyper's HTTP/1 server for what hyper tolerates but a proxy
//! must refuse: a request carrying both `Content-Length` and `Transfer-Encoding` (hyper
//! drops the length and reads the body as chunked, RFC 9112 §6.1; nginx, and so Kong,
//! answers 400, and so do we), or `Content-Length` twice (hyper merges equal values; nginx
//! answers 400).
//!
//! The guard follows the message framing of the bytes the client sends (heads, bodies by
//! `Content-Length` or by chunks) without copying them. When a complete head breaks a rule,
//! it changes the last byte of that head's blank line before hyper sees it, so hyper's own
//! strict parser refuses the head: the client gets hyper's 400 and the connection closes,
//! exactly as for any other malformed head. Anything the guard cannot follow (HTTP/2,
//! framing hyper itself rejects) turns it into a pass-through, and so does a protocol switch:
//! the guard watches the answers written back, and only an upgrade request answered `101`
//! (or a `CONNECT` answered `2xx`) ends the HTTP/1 messages. An upgrade that is refused leaves
//! the guard following the connection's next requests.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Longest head the guard follows; beyond it hyper's own limit answers (431/400).
const MAX_HEAD: usize = 64 * 1024;

#[derive(Debug)]
enum State {
    /// Reading a head; `tail` keeps the last bytes seen so that a blank line split
    /// across reads is found, `head` the head so far.
    Head,
    /// Skipping this many body bytes.
    Body(u64),
    /// Inside a chunked body.
    Chunk(Chunk),
    /// Not following any more (upgrade, HTTP/2, framing hyper rejects, or rejected).
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

/// A protocol switch the last request asked for, decided by its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Switch {
    /// An `Upgrade` request: switches on `101`.
    Upgrade,
    /// A `CONNECT`: switches on `2xx`.
    Connect,
}

/// Wraps an HTTP/1 connection; see the [module documentation](self).
#[derive(Debug)]
pub struct H1Guard<T> {
    inner: T,
    state: State,
    head: Vec<u8>,
    /// The switch asked for by the request whose answer is the next one written.
    pending: Option<Switch>,
    /// Requests read whose final answer has not been seen written yet.
    owed: u32,
}

impl<T> H1Guard<T> {
    /// Guards `inner`, a connection that starts with an HTTP/1 request (or the HTTP/2
    /// prior-knowledge preface, which turns the guard off).
    pub fn new(inner: T) -> H1Guard<T> {
        H1Guard {
            inner,
            state: State::Head,
            head: Vec::new(),
            pending: None,
            owed: 0,
        }
    }

    /// Follows `buf` (bytes just read); may change one byte of it to make hyper reject a
    /// head that breaks a rule, and then says where that head ends in `buf`.
    fn scan(&mut self, buf: &mut [u8]) -> Option<usize> {
        let mut i = 0;
        while i < buf.len() {
            match &mut self.state {
                State::Pass => return None,
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
                        i += 1;
                        continue;
                    }
                    let rest = &buf[i..];
                    let end = find_head_end(&self.head, rest);
                    let take = end.unwrap_or(rest.len());
                    self.head.extend_from_slice(&rest[..take]);
                    i += take;
                    if end.is_none() {
                        if self.head.len() > MAX_HEAD {
                            self.pass();
                        }
                        continue;
                    }
                    let framing = framing(&self.head);
                    if framing != Framing::Reject {
                        // Only a switch request whose answer is the next one written can be
                        // decided by it; one pipelined behind others (whose answers could be
                        // taken for its own) leaves the guard on.
                        if self.owed == 0 {
                            self.pending = switch_of(&self.head);
                        }
                        self.owed = self.owed.saturating_add(1);
                    }
                    match framing {
                        Framing::Reject => {
                            // The head's last byte is in this read (the blank line just
                            // completed): a NUL there is invalid wherever it falls, so
                            // hyper refuses the head with 400.
                            buf[i - 1] = 0;
                            self.pass();
                            return Some(i);
                        }
                        Framing::Pass => self.pass(),
                        Framing::None => self.next_head(),
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
        None
    }

    fn next_head(&mut self) {
        self.head.clear();
        self.state = State::Head;
    }

    fn pass(&mut self) {
        self.head = Vec::new();
        self.state = State::Pass;
        self.pending = None;
    }

    /// Looks at the start of bytes written back to the client: the answer to a request that
    /// asked for a protocol switch says whether the connection leaves HTTP/1.
    fn observe(&mut self, written: &[u8]) {
        if matches!(self.state, State::Pass) {
            return;
        }
        // a status line: `HTTP/1.x NNN`
        if written.len() < 12 || !written.starts_with(b"HTTP/1.") || written[8] != b' ' {
            return;
        }
        let code = &written[9..12];
        // an interim answer (100 Continue): the final one decides
        if code[0] == b'1' && code != b"101" {
            return;
        }
        self.owed = self.owed.saturating_sub(1);
        match self.pending.take() {
            Some(Switch::Upgrade) if code == b"101" => self.pass(),
            Some(Switch::Connect) if code[0] == b'2' => self.pass(),
            _ => {}
        }
    }
}

/// The protocol switch a request head asks for, if any.
fn switch_of(head: &[u8]) -> Option<Switch> {
    if head.starts_with(b"CONNECT ") {
        return Some(Switch::Connect);
    }
    head.split(|&b| b == b'\n').skip(1).find_map(|line| {
        let colon = line.iter().position(|&b| b == b':')?;
        line[..colon]
            .eq_ignore_ascii_case(b"upgrade")
            .then_some(Switch::Upgrade)
    })
}

/// Index in `rest` just past the blank line ending the head that `head` began, if any
/// (`CRLF CRLF`, or a bare `LF` ending an empty line, as hyper accepts).
fn find_head_end(head: &[u8], rest: &[u8]) -> Option<usize> {
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
    /// No body.
    None,
    /// A body of this many bytes.
    Length(u64),
    /// A chunked body.
    Chunked,
    /// Refuse the head.
    Reject,
    /// Stop following (hyper decides, or the connection changes protocol).
    Pass,
}

/// How the request whose head is `head` is framed.
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
            if cl.is_some() {
                // a second length, even an equal one (which hyper would merge): nginx
                // answers "duplicate header line", 400
                return Framing::Reject;
            }
            cl = Some(value);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            te = Some(value);
        }
    }
    match (cl, te) {
        (Some(_), Some(_)) => Framing::Reject,
        (None, None) => Framing::None,
        (Some(v), None) => match std::str::from_utf8(v).ok().and_then(|s| s.parse().ok()) {
            Some(0) => Framing::None,
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
                (false, _) if line > MAX_HEAD => State::Pass,
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
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = r
            && !matches!(this.state, State::Pass)
        {
            let new = &mut buf.filled_mut()[before..];
            if let Some(end) = this.scan(new) {
                // What follows a refused head is never read as HTTP: in its place goes a
                // blank line, so that hyper, which looks for one before it parses a head that
                // came in pieces, parses this one now (and refuses it) instead of waiting.
                buf.set_filled(before + end);
                if buf.remaining() >= 4 {
                    buf.put_slice(b"\r\n\r\n");
                }
            }
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for H1Guard<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.observe(buf);
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Some(first) = bufs.iter().find(|b| !b.is_empty()) {
            this.observe(first);
        }
        Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` in pieces of `step` bytes; returns what hyper would read.
    fn run(input: &[u8], step: usize) -> (Vec<u8>, H1Guard<()>) {
        let mut g = H1Guard::new(());
        let mut out = Vec::new();
        for piece in input.chunks(step) {
            let mut p = piece.to_vec();
            if !matches!(g.state, State::Pass) {
                g.scan(&mut p);
            }
            out.extend_from_slice(&p);
        }
        (out, g)
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
            let mut input = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
            input.extend_from_slice(head);
            input.extend_from_slice(b"0\r\n\r\n");
            let last = input.len() - b"0\r\n\r\n".len() - 1;
            for step in [1, 5, input.len()] {
                let (out, g) = run(&input, step);
                assert!(matches!(g.state, State::Pass));
                // Only the last byte of the offending head changed, to a NUL.
                let diff: Vec<usize> = (0..input.len()).filter(|&k| out[k] != input[k]).collect();
                assert_eq!(diff, vec![last], "step {step}");
                assert_eq!(out[last], 0);
            }
        }
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
        assert_eq!(
            f("POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"),
            Framing::Reject
        );
        assert_eq!(
            f("POST / HTTP/1.1\r\nContent-Length: 1\r\ncontent-length: 1\r\n\r\n"),
            Framing::Reject
        );
    }

    const SMUGGLE: &[u8] =
        b"POST /s HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n";

    /// Scans `bytes` as one read; whether they came out changed.
    fn feed(g: &mut H1Guard<()>, bytes: &[u8]) -> bool {
        let mut b = bytes.to_vec();
        if !matches!(g.state, State::Pass) {
            g.scan(&mut b);
        }
        b != bytes
    }

    #[test]
    fn a_refused_switch_keeps_the_guard_on() {
        for (req, answer) in [
            (
                &b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: foo\r\n\r\n"[..],
                &b"HTTP/1.1 200 OK\r\n"[..],
            ),
            (
                b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
                b"HTTP/1.1 404 Not Found\r\n",
            ),
            (
                b"CONNECT x:443 HTTP/1.1\r\nHost: x:443\r\n\r\n",
                b"HTTP/1.1 405 Method Not Allowed\r\n",
            ),
        ] {
            let mut g = H1Guard::new(());
            assert!(!feed(&mut g, req));
            assert!(g.pending.is_some());
            // an interim answer does not decide
            g.observe(b"HTTP/1.1 100 Continue\r\n\r\n");
            assert!(g.pending.is_some());
            g.observe(answer);
            assert_eq!(g.pending, None);
            assert!(
                feed(&mut g, SMUGGLE),
                "the next smuggling head is still refused"
            );
        }
    }

    #[test]
    fn an_accepted_switch_ends_the_guard() {
        for (req, answer) in [
            (
                &b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n"[..],
                &b"HTTP/1.1 101 Switching Protocols\r\n"[..],
            ),
            (
                b"CONNECT x:443 HTTP/1.1\r\nHost: x:443\r\n\r\n",
                b"HTTP/1.1 200 Connection Established\r\n",
            ),
        ] {
            let mut g = H1Guard::new(());
            assert!(!feed(&mut g, req));
            g.observe(answer);
            assert!(matches!(g.state, State::Pass));
            // tunnel bytes, whatever they look like, are not touched
            assert!(!feed(&mut g, SMUGGLE));
        }
    }

    #[test]
    fn a_switch_pipelined_behind_another_request_is_not_decided_by_its_answer() {
        for (first_answer, pipelined) in [
            (
                &b"HTTP/1.1 200 OK\r\n"[..],
                &b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\naCONNECT x:1 HTTP/1.1\r\nHost: x:1\r\n\r\n"[..],
            ),
            (
                b"HTTP/1.1 101 Switching Protocols\r\n",
                b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n",
            ),
        ] {
            let mut g = H1Guard::new(());
            assert!(!feed(&mut g, pipelined));
            // the first request's answer (whatever it says) does not switch
            g.observe(first_answer);
            assert!(!matches!(g.state, State::Pass));
            // nor does the switch request's own: it was pipelined
            g.observe(b"HTTP/1.1 200 OK\r\n");
            assert!(!matches!(g.state, State::Pass));
            assert!(feed(&mut g, SMUGGLE), "the next smuggling head is still refused");
        }
        // once the earlier answers are out, a switch request is decided by its own answer
        let mut g = H1Guard::new(());
        assert!(!feed(&mut g, b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"));
        g.observe(b"HTTP/1.1 200 OK\r\n");
        assert!(!feed(
            &mut g,
            b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n"
        ));
        g.observe(b"HTTP/1.1 101 Switching Protocols\r\n");
        assert!(matches!(g.state, State::Pass));
    }

    #[test]
    fn whitespace_after_a_chunk_size_is_followed() {
        for body in [
            &b"5 \r\nhello\r\n0\r\n\r\n"[..],
            b"5\t;x=1\r\nhello\r\n0 \r\n\r\n",
        ] {
            let mut g = H1Guard::new(());
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
        let mut big = b"GET / HTTP/1.1\r\n".to_vec();
        big.extend(std::iter::repeat_n(b'a', MAX_HEAD + 10));
        let (out, g) = run(&big, 1000);
        assert_eq!(out, big);
        assert!(matches!(g.state, State::Pass));
    }
}
