//! Sending a request with a body to an HTTP/1.1 upstream while watching for its answer.
//!
//! nginx reads an upstream's answer as soon as it comes, also while the request's body is
//! still being sent: `ngx_http_upstream_process_header` is the connection's read handler
//! from the connect on. An upstream that refuses an upload from its head (a 401, a 413)
//! is answered to the client; the rest of the body is not sent (once the answer's head is
//! passed on, `ngx_http_upstream_send_request_handler` does nothing more), and the
//! connection is not kept (`request_body_sent` is unset, and the keepalive module closes a
//! connection whose request was not sent whole). An upstream that closes its connection
//! meanwhile ends the try as a connection closed before the answer.
//!
//! [`send`] does the same. While a write waits on the upstream (its socket buffers full)
//! or the body waits on the client, the connection's read side is polled too; once a final
//! answer's head is complete (an interim `100 Continue` is read past), or the connection
//! ends or fails, sending stops ([`Sent::Cut`]) and the caller reads the answer
//! ([`crate::h1_client::H1Conn::read_answer`]), which then finds it buffered. A request
//! whose head and body are written at once (the usual case) never reaches that point:
//! watching costs only requests whose bytes wait.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http::StatusCode;
use http_body::Body;
use tokio::io::AsyncWrite;

use crate::h1_client::{ExchangeError, parse_answer_head};
use crate::upstream::{ClientBody, Io, WriteTimed};

/// How sending a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    /// All of it was written.
    Whole,
    /// The upstream answered (or closed the connection, or it failed) first: the rest was
    /// not written, and the connection must not carry another request.
    Cut,
}

/// What a request sends.
pub(crate) struct Request<'a, 'b> {
    /// The request's head, encoded.
    pub head: &'a [u8],
    /// A complete body (empty for none, or when the body is `stream`).
    pub data: Bytes,
    /// The client's body, streamed: taken out once the head is written (a request not
    /// written at all keeps it for the next connection).
    pub stream: Option<&'b mut Option<ClientBody>>,
    /// The length the head announced for `stream`; `None`: chunked coding.
    pub length: Option<u64>,
}

/// The bytes still to write, in order: the head, a chunk's size line, data, and what
/// follows the data (a chunk's CRLF, or the last chunk).
struct Outgoing<'a> {
    head: &'a [u8],
    /// A chunk's size line (at most 16 hex digits and CRLF); `line[at..end]` is left.
    line: [u8; 18],
    line_at: usize,
    line_end: usize,
    data: Bytes,
    tail: &'static [u8],
}

impl Outgoing<'_> {
    fn is_empty(&self) -> bool {
        self.head.is_empty()
            && self.line_at == self.line_end
            && self.data.is_empty()
            && self.tail.is_empty()
    }

    /// Writes what it can of the bytes left, in one call.
    fn poll_write<W: AsyncWrite + Unpin>(
        &self,
        io: &mut W,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<usize>> {
        let parts = [
            self.head,
            &self.line[self.line_at..self.line_end],
            &self.data[..],
            self.tail,
        ];
        let mut slices = [IoSlice::new(&[]); 4];
        let mut n = 0;
        for p in parts.into_iter().filter(|p| !p.is_empty()) {
            slices[n] = IoSlice::new(p);
            n += 1;
        }
        Pin::new(io).poll_write_vectored(cx, &slices[..n])
    }

    /// Drops the first `n` bytes left.
    fn advance(&mut self, mut n: usize) {
        let k = n.min(self.head.len());
        self.head = &self.head[k..];
        n -= k;
        let k = n.min(self.line_end - self.line_at);
        self.line_at += k;
        n -= k;
        let k = n.min(self.data.len());
        self.data.advance(k);
        n -= k;
        let k = n.min(self.tail.len());
        self.tail = &self.tail[k..];
    }

    /// Queues a chunk of `data` (chunked coding).
    fn chunk(&mut self, data: Bytes) {
        let mut end = 0;
        let mut digits = [0u8; 16];
        let mut v = data.len();
        loop {
            digits[end] = b"0123456789abcdef"[v & 0xf];
            end += 1;
            v >>= 4;
            if v == 0 {
                break;
            }
        }
        for (i, d) in digits[..end].iter().rev().enumerate() {
            self.line[i] = *d;
        }
        self.line[end] = b'\r';
        self.line[end + 1] = b'\n';
        self.line_at = 0;
        self.line_end = end + 2;
        self.data = data;
        self.tail = b"\r\n";
    }
}

/// Writes `req` on `io` while watching for the answer in `buf` (whose head may be at most
/// `limit` bytes: past it, sending stops and the read that follows refuses it). A write
/// that fails before anything was written is [`ExchangeError::NotSent`]; a write that times
/// out after, [`ExchangeError::Failed`]; one that fails otherwise after, [`Sent::Cut`] (the
/// read that follows finds the answer, or the connection's error); the streamed body's own
/// failure is [`ExchangeError::Client`].
pub(crate) async fn send(
    io: &mut WriteTimed<Box<dyn Io>>,
    buf: &mut BytesMut,
    req: Request<'_, '_>,
    limit: usize,
) -> Result<Sent, ExchangeError> {
    let Request {
        head,
        data,
        mut stream,
        length,
    } = req;
    let mut out = Outgoing {
        head,
        line: [0; 18],
        line_at: 0,
        line_end: 0,
        data,
        tail: &[],
    };
    let mut body: Option<ClientBody> = None;
    // the streamed body's bytes so far, and whether its end is queued
    let mut counted = crate::h1_client::Counted::new(length);
    let mut ended = stream.is_none();
    let mut written = 0usize;
    std::future::poll_fn(|cx| {
        loop {
            if !out.is_empty() {
                match out.poll_write(io, cx) {
                    Poll::Ready(Ok(0)) => {
                        let e = io::Error::new(io::ErrorKind::WriteZero, "upstream took no bytes");
                        return Poll::Ready(Err(failed(written, e)));
                    }
                    Poll::Ready(Ok(n)) => {
                        out.advance(n);
                        written += n;
                        continue;
                    }
                    // An upstream that answered and closed (a reset, as it left bytes
                    // unread) may have its answer in before the reset: the connection's
                    // read side tells, at once (its readiness may not be known yet here).
                    // nginx, woken for both, reads first.
                    Poll::Ready(Err(e)) if written > 0 && e.kind() != io::ErrorKind::TimedOut => {
                        return Poll::Ready(Ok(Sent::Cut));
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(failed(written, e))),
                    Poll::Pending => {
                        if written > 0 && answered(io, buf, cx, limit) {
                            return Poll::Ready(Ok(Sent::Cut));
                        }
                        return Poll::Pending;
                    }
                }
            }
            if ended {
                return Poll::Ready(Ok(Sent::Whole));
            }
            if body.is_none() {
                body = stream.as_mut().and_then(|s| s.take());
                if body.is_none() {
                    return Poll::Ready(Ok(Sent::Whole));
                }
            }
            let Some(b) = body.as_mut() else {
                return Poll::Ready(Ok(Sent::Whole));
            };
            match Pin::new(b).poll_frame(cx) {
                Poll::Pending => {
                    if answered(io, buf, cx, limit) {
                        return Poll::Ready(Ok(Sent::Cut));
                    }
                    return Poll::Pending;
                }
                Poll::Ready(Some(Err(e))) => {
                    return Poll::Ready(Err(ExchangeError::Client(io::Error::other(e))));
                }
                Poll::Ready(Some(Ok(frame))) => {
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    if data.is_empty() {
                        continue;
                    }
                    if let Err(e) = counted.part(data.len()) {
                        return Poll::Ready(Err(ExchangeError::Client(e)));
                    }
                    match length {
                        Some(_) => out.data = data,
                        None => out.chunk(data),
                    }
                }
                Poll::Ready(None) => {
                    ended = true;
                    if let Err(e) = counted.end() {
                        return Poll::Ready(Err(ExchangeError::Client(e)));
                    }
                    if length.is_none() {
                        out.tail = b"0\r\n\r\n";
                    }
                }
            }
        }
    })
    .await
}

fn failed(written: usize, e: io::Error) -> ExchangeError {
    if written == 0 {
        ExchangeError::NotSent(e)
    } else {
        ExchangeError::Failed(e)
    }
}

/// Whether the upstream's answer came, reading what the connection has: a final answer's
/// head complete in `buf` (an interim one is dropped), a head nginx would refuse or one
/// past `limit`, or the connection's end or failure. Registers `cx` for more otherwise.
fn answered(
    io: &mut WriteTimed<Box<dyn Io>>,
    buf: &mut BytesMut,
    cx: &mut Context<'_>,
    limit: usize,
) -> bool {
    loop {
        match parse_answer_head(buf, limit) {
            Ok(Some((len, status)))
                if status.is_informational() && status != StatusCode::SWITCHING_PROTOCOLS =>
            {
                buf.advance(len);
                continue;
            }
            Ok(Some(_)) | Err(_) => return true,
            Ok(None) => {}
        }
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(8192);
        }
        match tokio_util::io::poll_read_buf(Pin::new(&mut *io), cx, buf) {
            Poll::Ready(Ok(0) | Err(_)) => return true,
            Poll::Ready(Ok(_)) => {}
            Poll::Pending => return false,
        }
    }
}
