//! Response bodies sent to clients: a buffered body (errors, admin API), or an upstream body
//! streamed through, which enforces the read timeout between chunks and keeps the request's
//! log ([`Log`]: the bytes it passes on, recorded at its end). An upstream's connection goes
//! back to the pool at the end of its body: [`RawBody`] for HTTP/1.1, [`H2Body`] for HTTP/2.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::Sleep;

use crate::h1_client::RawBody;
use crate::metrics::Log;
use crate::upstream::{H2Conn, Pool, RequestSent};

/// Error type of [`ProxyBody`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A response body.
#[derive(Debug)]
pub enum ProxyBody {
    /// A complete body (possibly empty).
    Full(Option<Bytes>),
    /// An upstream body streamed through.
    Upstream(Box<UpstreamBody>),
}

impl ProxyBody {
    /// An empty body.
    pub fn empty() -> ProxyBody {
        ProxyBody::Full(None)
    }
    /// A complete body.
    pub fn full(b: impl Into<Bytes>) -> ProxyBody {
        let b = b.into();
        ProxyBody::Full(if b.is_empty() { None } else { Some(b) })
    }

    /// The length of a complete body; 0 for a streamed one, which counts its own bytes.
    pub fn complete_len(&self) -> u64 {
        match self {
            ProxyBody::Full(Some(b)) => b.len() as u64,
            _ => 0,
        }
    }

    /// Keeps the request's `log` until this body is sent: a streamed body records it at its
    /// end (or when dropped, the client gone), with the body bytes it passed on; a complete
    /// one at once.
    pub fn attach_log(&mut self, log: Log) {
        if let ProxyBody::Upstream(u) = self {
            u.log = Some(log);
        }
    }
}

/// An upstream response body: hyper's (upgraded connections), an HTTP/2 upstream's
/// ([`H2Body`]), or read from an HTTP/1.1 connection ([`RawBody`]); the last two give
/// their connection back to the pool at their end.
#[derive(Debug)]
pub enum UpBody {
    /// From hyper's client.
    Hyper(Incoming),
    /// From an HTTP/2 upstream.
    H2(H2Body),
    /// From [`crate::h1_client`].
    Raw(RawBody),
}

impl Body for UpBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            UpBody::Hyper(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            UpBody::H2(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            UpBody::Raw(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpBody::Hyper(b) => b.is_end_stream(),
            UpBody::H2(b) => b.inner.is_end_stream(),
            UpBody::Raw(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpBody::Hyper(b) => b.size_hint(),
            UpBody::H2(b) => b.inner.size_hint(),
            UpBody::Raw(b) => b.size_hint(),
        }
    }
}

/// An HTTP/2 upstream's answer body, holding the connection its stream is on: when the
/// stream's end is read (trailers included), the connection goes back to the pool if hyper
/// had taken the request body's last part by then ([`RequestSent`]), and is closed if not,
/// as nginx keeps a gRPC connection only once the request was sent whole (an upstream may
/// answer before it read the request, and leave the request's stream open: pooled, the
/// connection would carry the next call on a second stream, which an upstream taking one
/// stream at a time holds back). On an error, or dropped before its end (a timeout, a
/// client gone), the connection is dropped, which closes it, as nginx closes an upstream
/// connection whose request did not complete.
///
/// What remains: a last part taken by hyper is not yet sent. h2 may still hold less than
/// 32 KiB of the body (two parts, [`crate::upstream::H2ReqBody`]) for want of the
/// upstream's flow-control window, and an upstream that answered whole and then neither
/// opens that window nor resets the stream keeps that stream open on a pooled connection.
/// That is bounded: when the upstream takes one stream at a time, the next call on the
/// connection waits for it at most its read timeout, then fails (504) and closes the
/// connection; unused, the connection closes after the keep-alive idle timeout; and a
/// server that drops an unread request after answering resets its stream (RFC 9113 8.1:
/// `RST_STREAM` with `NO_ERROR`, as the h2 crate's servers do), which frees it.
#[derive(Debug)]
pub struct H2Body {
    inner: Incoming,
    /// (boxed: it keeps [`UpBody`], which moves through each phase of every request, as
    /// small as an HTTP/1.1 body)
    conn: Option<Box<(Arc<Pool>, H2Conn)>>,
    /// Whether hyper took the request body's last part.
    request: RequestSent,
}

impl H2Body {
    /// The body of an answer on `conn`; `request`: the request body's [`RequestSent`].
    pub fn new(inner: Incoming, pool: Arc<Pool>, conn: H2Conn, request: RequestSent) -> H2Body {
        let mut b = H2Body {
            inner,
            conn: Some(Box::new((pool, conn))),
            request,
        };
        if b.inner.is_end_stream() {
            b.finish();
        }
        b
    }

    /// The stream ended: the connection is kept if the request body's last part was taken
    /// by then too (as nginx keeps one only once the request body was sent), else closed.
    /// (A client body that failed never has its last part taken.)
    fn finish(&mut self) {
        if let Some(held) = self.conn.take()
            && self.request.taken()
        {
            let (pool, conn) = *held;
            pool.put_h2(conn);
        }
    }
}

impl Body for H2Body {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        let r = ready!(Pin::new(&mut this.inner).poll_frame(cx));
        match &r {
            None => this.finish(),
            Some(Ok(_)) if this.inner.is_end_stream() => this.finish(),
            Some(Ok(_)) => {}
            // (a reset stream, a connection lost: not kept)
            Some(Err(_)) => this.conn = None,
        }
        Poll::Ready(r)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A streamed upstream body.
pub struct UpstreamBody {
    inner: UpBody,
    read_timeout: Duration,
    sleep: Option<Pin<Box<Sleep>>>,
    /// The request's log, recorded when the body ends (or is dropped).
    log: Option<Log>,
    /// Data bytes passed on.
    bytes: u64,
    /// The balancer's peer: held until the response is finished (least-connections counts
    /// it as in flight until then).
    peer: Option<silverback_balancer::Peer>,
    /// A body that broke off while it was read ahead ([`UpstreamBody::broken`]).
    broken: Option<Box<Broken>>,
}

/// What was read of a body before it broke off, and how.
struct Broken {
    /// The bytes read, passed on first.
    read: Option<Bytes>,
    /// The failure, passed on after them (`None` once passed on).
    error: Option<BoxError>,
    /// The body's announced length, less what was passed on.
    left: u64,
    /// The writer was given a turn to flush what was passed on before the failure (hyper's
    /// server drops what it holds unwritten when a body fails; nginx flushes it first).
    flushed: bool,
}

impl std::fmt::Debug for UpstreamBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamBody")
            .field("bytes", &self.bytes)
            .finish_non_exhaustive()
    }
}

impl UpstreamBody {
    /// Wraps an upstream body.
    pub fn wrap(
        inner: UpBody,
        read_timeout: Duration,
        peer: Option<silverback_balancer::Peer>,
    ) -> ProxyBody {
        let mut b = UpstreamBody {
            inner,
            read_timeout,
            sleep: None,
            log: None,
            bytes: 0,
            peer,
            broken: None,
        };
        if b.inner.is_end_stream() {
            b.release();
        }
        ProxyBody::Upstream(Box::new(b))
    }

    /// A body of `len` bytes (announced) that broke off with `error` after `read` was read
    /// ahead of sending it (`response_buffering`): passed on as nginx passes such a body on,
    /// what was read, then the failure, which ends the client's connection (short of the
    /// announced length).
    pub fn broken(inner: UpBody, read: Bytes, error: BoxError, len: u64) -> ProxyBody {
        let mut b = UpstreamBody {
            inner,
            read_timeout: Duration::ZERO,
            sleep: None,
            log: None,
            bytes: 0,
            peer: None,
            broken: Some(Box::new(Broken {
                read: (!read.is_empty()).then_some(read),
                error: Some(error),
                left: len,
                flushed: false,
            })),
        };
        b.release();
        ProxyBody::Upstream(Box::new(b))
    }

    fn release(&mut self) {
        self.peer = None;
    }
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        if let Some(mut log) = self.log.take() {
            log.egress(self.bytes);
        }
    }
}

/// The upstream went silent for longer than `read_timeout` in the middle of a body.
#[derive(Debug, thiserror::Error)]
#[error("upstream read timeout in response body")]
pub struct BodyTimeout;

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ProxyBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            ProxyBody::Upstream(u) => {
                let u = &mut **u;
                if let Some(b) = &mut u.broken {
                    if let Some(d) = b.read.take() {
                        u.bytes += d.len() as u64;
                        b.left = b.left.saturating_sub(d.len() as u64);
                        return Poll::Ready(Some(Ok(Frame::data(d))));
                    }
                    if !b.flushed {
                        b.flushed = true;
                        cx.waker().wake_by_ref();
                        return Poll::Pending;
                    }
                    return Poll::Ready(b.error.take().map(Err));
                }
                match Pin::new(&mut u.inner).poll_frame(cx) {
                    Poll::Ready(r) => {
                        u.sleep = None;
                        match r {
                            Some(Ok(f)) => {
                                if let Some(d) = f.data_ref() {
                                    u.bytes += d.len() as u64;
                                }
                                if u.inner.is_end_stream() {
                                    u.release();
                                }
                                Poll::Ready(Some(Ok(f)))
                            }
                            Some(Err(e)) => Poll::Ready(Some(Err(e))),
                            None => {
                                u.release();
                                Poll::Ready(None)
                            }
                        }
                    }
                    Poll::Pending => {
                        let t = u.read_timeout;
                        let sleep = u
                            .sleep
                            .get_or_insert_with(|| Box::pin(tokio::time::sleep(t)));
                        ready!(sleep.as_mut().poll(cx));
                        Poll::Ready(Some(Err(Box::new(BodyTimeout))))
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Full(b) => b.is_none(),
            ProxyBody::Upstream(u) => match &u.broken {
                Some(b) => b.error.is_none(),
                None => u.inner.is_end_stream(),
            },
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Full(b) => {
                SizeHint::with_exact(b.as_ref().map(|b| b.len() as u64).unwrap_or(0))
            }
            ProxyBody::Upstream(u) => match &u.broken {
                Some(b) => SizeHint::with_exact(b.left),
                None => u.inner.size_hint(),
            },
        }
    }
}
