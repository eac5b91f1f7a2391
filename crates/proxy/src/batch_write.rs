//! Small HTTP/1.1 messages written at the end of the scheduler's batch.
//!
//! On a current-thread runtime (one worker, as `nginx_worker_processes = 1`), a small
//! complete message on a plain TCP connection is not written at once: a request to an
//! upstream ([`crate::h1_client`]) and an answer to a client on the fast path
//! ([`crate::h1_fast`]). `defer` parks the bytes in the connection's [`WriteSlot`] and
//! queues the slot, and one flusher task per thread writes every queued slot when it runs:
//! after the tasks already in the run queue, that is at the end of the batch of events the
//! runtime is working through. The connection's task goes on to read what comes next (the
//! answer, or the client's next request), which cannot come before the message is written,
//! without waiting for the write: deferring costs it no extra wake-up.
//!
//! Why: a peer on the same machine that sleeps while it waits is woken by the first message
//! written to it, and preempts whatever runs on its CPU. Writing a batch's messages together,
//! at the end of the batch, wakes it once per batch rather than once per message, as nginx's
//! event loop (which handles a whole `epoll_wait` batch before it waits again) does. The
//! delay is bounded by the batch: the flusher is queued behind the tasks ready when the
//! first message of the batch was deferred, never behind tasks woken later.
//!
//! Failure modes:
//! - A write the flusher cannot finish (a full send buffer). An upstream's request is
//!   finished by the request's task, which the flusher wakes, within the read timeout that
//!   bounds the whole exchange. A client's answer is finished by a task of its own within
//!   `send_timeout` (the slot fails with `TimedOut` after it, and the connection with it),
//!   whether or not the connection's task is still there.
//! - A failed write is reported to the connection's task as an error of its next read or
//!   write; on an upstream, marked [`NotWritten`] when nothing was written, so a stale pooled
//!   connection is replaced as when the write fails in place.
//! - An upstream connection dropped, closed, or sending bytes before its request was written
//!   gets no request. A client connection dropped with an answer queued (a half-closed
//!   client, a shutdown) still gets it, then closes.
//!
//! Limits: multi-thread runtimes (more than one worker) write in place, as their tasks move
//! between threads and the flusher is per thread; so do TLS connections. One current-thread
//! runtime at a time per thread (`Local`).

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

/// Largest request (head and body) written at the end of the batch; a larger one is
/// written in place.
const MAX_DEFERRED: usize = 16 * 1024;

/// Where a connection's deferred bytes wait, with the socket's writing half.
#[derive(Debug)]
pub struct WriteSlot {
    half: OwnedWriteHalf,
    /// The bytes to write (from `at`).
    pending: Vec<u8>,
    at: usize,
    state: State,
    /// The task to wake when the flusher could not finish (or failed).
    waker: Option<Waker>,
    error: Option<io::Error>,
    /// A client's slot: what the flusher cannot finish is finished by a task of its own
    /// within this time (nginx's `send_timeout`), whether or not the connection's task is
    /// still there. `None`: an upstream's, finished by the request's task.
    drain_within: Option<std::time::Duration>,
    /// A [`drain`] task is finishing the pending bytes.
    draining: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Nothing pending.
    Idle,
    /// Queued for the flusher.
    Queued,
    /// The flusher wrote part (or none) of it and left the rest to the connection's task.
    Partial,
    /// The write failed (`error`).
    Failed,
    /// The connection is gone: nothing more is written.
    Closed,
}

/// A [`WriteSlot`] shared by a connection and the flusher.
#[derive(Debug)]
pub struct Shared {
    /// Whether the slot is anything but idle: read without the lock, so that the
    /// connection's reads and writes take it only while bytes are pending.
    busy: AtomicBool,
    slot: Mutex<WriteSlot>,
}

/// The shared handle of a [`WriteSlot`].
pub type Slot = Arc<Shared>;

/// The locked slot; its `busy` flag follows its state when the guard is dropped.
struct Locked<'a> {
    guard: MutexGuard<'a, WriteSlot>,
    busy: &'a AtomicBool,
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        self.busy
            .store(self.guard.state != State::Idle, Ordering::Release);
    }
}

impl std::ops::Deref for Locked<'_> {
    type Target = WriteSlot;
    fn deref(&self) -> &WriteSlot {
        &self.guard
    }
}

impl std::ops::DerefMut for Locked<'_> {
    fn deref_mut(&mut self) -> &mut WriteSlot {
        &mut self.guard
    }
}

fn lock(shared: &Shared) -> Locked<'_> {
    Locked {
        // (no code panics while holding the lock; a poisoned lock's data is still whole)
        guard: shared
            .slot
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
        busy: &shared.busy,
    }
}

impl Shared {
    fn idle(&self) -> bool {
        !self.busy.load(Ordering::Acquire)
    }
}

/// An error of a deferred write of which nothing was written: the request can go on
/// another connection.
#[derive(Debug, thiserror::Error)]
#[error("upstream write failed before any byte was sent: {0}")]
pub struct NotWritten(#[source] pub io::Error);

/// Whether `e` is a [`NotWritten`].
pub(crate) fn is_not_written(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|i| i.is::<NotWritten>())
}

impl WriteSlot {
    /// Writes what is pending, in the task that owns the connection; ready once nothing is.
    /// While a [`drain`] task finishes a client's answer, it alone writes (the socket wakes
    /// one writer): the connection's task waits to be woken by it.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.draining
            && let Poll::Ready(r) = self.poll_write_pending(cx)
        {
            return Poll::Ready(r);
        }
        // (woken by the socket, or by a drain task that takes the write over and finishes)
        self.wait(cx);
        Poll::Pending
    }

    /// Remembers the connection's task, to be woken when the write it waits for is done
    /// (or has failed).
    fn wait(&mut self, cx: &mut Context<'_>) {
        if !self.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            self.waker = Some(cx.waker().clone());
        }
    }

    fn poll_write_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            match self.state {
                State::Idle => return Poll::Ready(Ok(())),
                State::Closed => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::NotConnected,
                        "connection closed",
                    )));
                }
                State::Failed => return Poll::Ready(Err(self.take_error())),
                State::Queued | State::Partial => {}
            }
            let n = match ready!(Pin::new(&mut self.half).poll_write(cx, &self.pending[self.at..]))
            {
                Ok(0) => Err(io::ErrorKind::WriteZero.into()),
                r => r,
            };
            match n {
                Ok(n) => self.advance(n),
                Err(e) => self.fail(e),
            }
        }
    }

    fn advance(&mut self, n: usize) {
        self.at += n;
        if self.at >= self.pending.len() {
            self.pending.clear();
            self.at = 0;
            self.state = State::Idle;
        }
    }

    fn fail(&mut self, e: io::Error) {
        let e = if self.at == 0 {
            io::Error::new(e.kind(), NotWritten(e))
        } else {
            e
        };
        self.error = Some(e);
        self.state = State::Failed;
    }

    fn take_error(&mut self) -> io::Error {
        self.error
            .take()
            .unwrap_or_else(|| io::Error::new(io::ErrorKind::BrokenPipe, "write failed"))
    }

    /// The flusher's write: as much as the socket takes now. `Some(limit)`: a client's
    /// answer is left, to be finished within `limit` by a task of its own.
    fn flush(&mut self) -> Option<std::time::Duration> {
        if self.state != State::Queued {
            return None;
        }
        while self.state == State::Queued {
            match self.half.try_write(&self.pending[self.at..]) {
                Ok(0) => self.fail(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.advance(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.state = State::Partial,
                Err(e) => self.fail(e),
            }
        }
        if self.state == State::Partial
            && let Some(limit) = self.drain_within
        {
            self.draining = true;
            return Some(limit);
        }
        if self.state != State::Idle
            && let Some(w) = self.waker.take()
        {
            w.wake();
        }
        None
    }
}

/// Finishes a client's answer the flusher could not write whole, within `limit` (else the
/// slot fails with `TimedOut`, and the connection with it); then wakes the connection's
/// task if it waits.
///
/// A zero `limit` is no limit, as a zero timeout is for [`crate::upstream::WriteTimed`].
/// The runtime's end (after a shutdown's grace period) cancels a drain still running.
async fn drain(slot: Slot, limit: std::time::Duration) {
    let write = std::future::poll_fn(|cx| {
        let mut s = lock(&slot);
        match s.poll_write_pending(cx) {
            // (the error stays in the slot, for the connection's task)
            Poll::Ready(Err(e)) => {
                s.error = Some(e);
                Poll::Ready(())
            }
            Poll::Ready(Ok(())) => Poll::Ready(()),
            Poll::Pending => Poll::Pending,
        }
    });
    let done = if limit.is_zero() {
        write.await;
        Ok(())
    } else {
        tokio::time::timeout(limit, write).await
    };
    let mut s = lock(&slot);
    s.draining = false;
    if done.is_err() && s.state == State::Partial {
        s.error = Some(io::Error::new(
            io::ErrorKind::TimedOut,
            "client did not take the answer within send_timeout",
        ));
        s.state = State::Failed;
    }
    if let Some(w) = s.waker.take() {
        w.wake();
    }
}

/// A plain TCP connection whose writes can be deferred (`defer`).
#[derive(Debug)]
pub struct Plain {
    read: OwnedReadHalf,
    slot: Slot,
    upstream: bool,
}

impl Plain {
    /// A connection to an upstream: `tcp`, split, and the handle of its slot (for
    /// `defer`). Dropped with a request still queued, the request is not written; an end
    /// of stream read while it is queued is an error ([`NotWritten`]).
    pub fn upstream(tcp: TcpStream) -> (Plain, Slot) {
        Plain::new(tcp, None)
    }

    /// A client's connection: as [`Plain::upstream`], but an answer queued when the
    /// connection is dropped is still written (then the socket closes), what the flusher
    /// cannot write at once is finished by a task of its own within `send_timeout`, and a
    /// client's end of stream is only that.
    pub fn client(tcp: TcpStream, send_timeout: std::time::Duration) -> (Plain, Slot) {
        Plain::new(tcp, Some(send_timeout))
    }

    fn new(tcp: TcpStream, drain_within: Option<std::time::Duration>) -> (Plain, Slot) {
        let upstream = drain_within.is_none();
        let (read, half) = tcp.into_split();
        let slot = Arc::new(Shared {
            busy: AtomicBool::new(false),
            slot: Mutex::new(WriteSlot {
                half,
                pending: Vec::new(),
                at: 0,
                state: State::Idle,
                waker: None,
                error: None,
                drain_within,
                draining: false,
            }),
        });
        (
            Plain {
                read,
                slot: slot.clone(),
                upstream,
            },
            slot,
        )
    }
}

impl Drop for Plain {
    fn drop(&mut self) {
        if !self.upstream {
            // (the flusher writes what is queued, and the socket closes when it lets go)
            return;
        }
        let mut s = lock(&self.slot);
        s.state = State::Closed;
        s.pending = Vec::new();
        s.waker = None;
    }
}

impl AsyncRead for Plain {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.slot.idle() {
            return Pin::new(&mut self.read).poll_read(cx, buf);
        }
        let queued = {
            let mut s = lock(&self.slot);
            match s.state {
                State::Idle => false,
                // not written yet: the answer cannot have come; be woken if the flusher
                // cannot finish
                State::Queued => {
                    if !s.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                        s.waker = Some(cx.waker().clone());
                    }
                    true
                }
                _ => {
                    ready!(s.poll_drain(cx))?;
                    false
                }
            }
        };
        let before = buf.filled().len();
        let r = ready!(Pin::new(&mut self.read).poll_read(cx, buf));
        if queued && self.upstream {
            // The connection ended, failed, or brought bytes nobody asked for before the
            // request was written: it is not written now (nor the connection reused), and
            // the request may go on another connection.
            let mut s = lock(&self.slot);
            if s.state == State::Queued {
                s.state = State::Closed;
                s.pending.clear();
                let e = match r {
                    Err(e) => e,
                    Ok(()) if buf.filled().len() == before => io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "upstream closed the connection",
                    ),
                    Ok(()) => io::Error::new(
                        io::ErrorKind::InvalidData,
                        "upstream sent bytes before the request was written",
                    ),
                };
                return Poll::Ready(Err(io::Error::new(e.kind(), NotWritten(e))));
            }
        }
        Poll::Ready(r)
    }
}

impl AsyncWrite for Plain {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut s = lock(&self.slot);
        ready!(s.poll_drain(cx))?;
        Pin::new(&mut s.half).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let mut s = lock(&self.slot);
        ready!(s.poll_drain(cx))?;
        Pin::new(&mut s.half).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut s = lock(&self.slot);
        ready!(s.poll_drain(cx))?;
        Pin::new(&mut s.half).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut s = lock(&self.slot);
        ready!(s.poll_drain(cx))?;
        Pin::new(&mut s.half).poll_shutdown(cx)
    }
}

/// Whether writes made on this thread can be deferred: a current-thread runtime runs it.
pub(crate) fn available() -> bool {
    tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::CurrentThread)
}

/// Queues a message, the head in `out` and then `body`, when there is a `slot` and the
/// message is at most [`MAX_DEFERRED`] bytes: `true` when queued (`out` then holds the slot's
/// empty buffer), else `out` is as it was and the caller writes in place.
pub(crate) fn defer_message(slot: Option<&Slot>, out: &mut Vec<u8>, body: &[u8]) -> bool {
    let Some(slot) = slot else {
        return false;
    };
    if out.len() + body.len() > MAX_DEFERRED {
        return false;
    }
    let head = out.len();
    out.extend_from_slice(body);
    if defer(slot, out) {
        return true;
    }
    out.truncate(head);
    false
}

/// Queues `out` (swapped with the slot's empty buffer, so no byte is copied) to be written
/// at the end of the batch. `false` (and `out` untouched) when the slot still has bytes
/// pending, or is closed or failed: the caller writes in place.
pub(crate) fn defer(slot: &Slot, out: &mut Vec<u8>) -> bool {
    {
        let mut s = lock(slot);
        if s.state != State::Idle {
            return false;
        }
        std::mem::swap(&mut s.pending, out);
        s.at = 0;
        s.state = State::Queued;
    }
    let spawn = LOCAL.with_borrow_mut(|l| {
        l.deferred += 1;
        l.queue.push(slot.clone());
        // A flusher whose runtime is gone (dropped here or on another thread) is replaced.
        if l.alive.strong_count() == 0 {
            let alive = Arc::new(());
            l.alive = Arc::downgrade(&alive);
            l.flusher = None;
            return Some(alive);
        }
        if l.queue.len() == 1
            && let Some(w) = &l.flusher
        {
            w.wake_by_ref();
        }
        None
    });
    // (outside the borrow: a runtime shutting down drops the task at once)
    if let Some(alive) = spawn {
        tokio::spawn(Flusher {
            spare: Vec::new(),
            _alive: alive,
        });
    }
    true
}

/// How many writes were deferred on this thread (for tests and diagnostics).
pub fn deferred_on_this_thread() -> u64 {
    LOCAL.with_borrow(|l| l.deferred)
}

/// This thread's queue of slots to write, and its flusher.
///
/// One current-thread runtime at a time per thread: a second runtime driven on the same
/// thread while the first is alive would queue its slots for the first one's flusher.
#[derive(Default)]
struct Local {
    queue: Vec<Slot>,
    /// The flusher's waker, once it has been polled.
    flusher: Option<Waker>,
    /// Alive while the flusher task is (it may not have been polled yet).
    alive: std::sync::Weak<()>,
    deferred: u64,
}

thread_local! {
    static LOCAL: RefCell<Local> = RefCell::new(Local::default());
}

/// The task that writes the queued slots, one per thread that defers writes.
struct Flusher {
    /// The queue taken on the last run (empty; kept for its capacity).
    spare: Vec<Slot>,
    /// Dropped with the task: [`Local::alive`] then tells `defer` to start another.
    _alive: Arc<()>,
}

impl std::future::Future for Flusher {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        LOCAL.with_borrow_mut(|l| {
            std::mem::swap(&mut l.queue, &mut this.spare);
            if !l.flusher.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                l.flusher = Some(cx.waker().clone());
            }
        });
        for s in this.spare.drain(..) {
            let left = lock(&s).flush();
            if let Some(limit) = left {
                tokio::spawn(drain(s, limit));
            }
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A connected pair: our deferring end and the server's end.
    async fn pair() -> (Plain, Slot, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        let (c, s) = tokio::join!(TcpStream::connect(addr), l.accept());
        let (plain, slot) = Plain::upstream(c.expect("connect"));
        (plain, slot, s.expect("accept").0)
    }

    /// A client's connection as the gateway holds it (`send_timeout`: `limit`), and the
    /// client's end.
    async fn client_pair(limit: Duration) -> (Plain, Slot, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        let (c, s) = tokio::join!(TcpStream::connect(addr), l.accept());
        let (plain, slot) = Plain::client(s.expect("accept").0, limit);
        (plain, slot, c.expect("connect"))
    }

    /// Bytes the server end has received so far, without waiting.
    fn received(s: &TcpStream) -> Vec<u8> {
        let mut all = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match s.try_read(&mut buf) {
                Ok(0) => return all,
                Ok(n) => all.extend_from_slice(&buf[..n]),
                Err(_) => return all,
            }
        }
    }

    /// Waits (bounded) until the server end has `n` bytes, and returns them.
    async fn receive(s: &mut TcpStream, n: usize) -> Vec<u8> {
        let mut got = vec![0u8; n];
        tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut got))
            .await
            .expect("in time")
            .expect("read");
        got
    }

    /// Fills the slot's socket, in place, until it takes no more; the bytes written.
    fn fill(slot: &Slot) -> usize {
        let chunk = vec![b'a'; 64 * 1024];
        let mut sent = 0usize;
        loop {
            match lock(slot).half.try_write(&chunk) {
                Ok(n) => sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return sent,
                Err(e) => panic!("{e}"),
            }
        }
    }

    #[tokio::test]
    async fn a_batch_is_written_together_at_its_end() {
        let mut conns = Vec::new();
        for _ in 0..3 {
            conns.push(pair().await);
        }
        for round in 0..2 {
            // One task defers on every connection: nothing goes out while it runs on...
            for (i, (_, slot, _)) in conns.iter().enumerate() {
                let mut out = format!("{round}:{i};").into_bytes();
                assert!(defer(slot, &mut out));
                assert!(out.is_empty(), "the slot's empty buffer comes back");
            }
            std::thread::sleep(Duration::from_millis(20));
            for (_, _, server) in &conns {
                assert!(
                    received(server).is_empty(),
                    "written before the batch ended"
                );
            }
            // ...and all of it once the task gives the runtime back.
            tokio::task::yield_now().await;
            for (i, (_, slot, server)) in conns.iter_mut().enumerate() {
                let want = format!("{round}:{i};").into_bytes();
                assert_eq!(receive(server, want.len()).await, want);
                assert!(slot.idle());
            }
        }
    }

    #[tokio::test]
    async fn the_answer_is_read_after_the_deferred_write() {
        let (mut plain, slot, mut server) = pair().await;
        let mut out = b"ping".to_vec();
        assert!(defer(&slot, &mut out));
        let echo = async {
            assert_eq!(receive(&mut server, 4).await, b"ping");
            server.write_all(b"pong").await.expect("write");
            server
        };
        let mut got = [0u8; 4];
        let (_server, r) = tokio::join!(echo, plain.read_exact(&mut got));
        r.expect("read");
        assert_eq!(&got, b"pong");
        assert!(slot.idle());
    }

    #[tokio::test]
    async fn a_write_behind_a_deferred_one_comes_after_it() {
        let (mut plain, slot, mut server) = pair().await;
        let mut out = b"first,".to_vec();
        assert!(defer(&slot, &mut out));
        // a second request on the same slot is refused while the first waits
        let mut again = b"x".to_vec();
        assert!(!defer(&slot, &mut again));
        assert_eq!(again, b"x");
        // an in-place write drains the pending bytes first
        plain.write_all(b"second").await.expect("write");
        assert_eq!(receive(&mut server, 12).await, b"first,second");
    }

    #[tokio::test]
    async fn a_connection_closed_before_the_flush_reports_nothing_written() {
        let (mut plain, slot, server) = pair().await;
        drop(server);
        // the peer's FIN is in before the request is deferred
        tokio::time::sleep(Duration::from_millis(20)).await;
        let mut out = b"GET / HTTP/1.1\r\n\r\n".to_vec();
        assert!(defer(&slot, &mut out));
        let mut buf = [0u8; 16];
        let e = plain.read(&mut buf).await.expect_err("no answer can come");
        assert!(is_not_written(&e), "{e}");
        // and the flusher leaves it alone
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(lock(&slot).state, State::Closed);
    }

    #[tokio::test]
    async fn a_connection_dropped_before_the_flush_is_not_written_to() {
        let (plain, slot, mut server) = pair().await;
        let mut out = b"GET / HTTP/1.1\r\n\r\n".to_vec();
        assert!(defer(&slot, &mut out));
        drop(plain);
        drop(slot);
        let mut rest = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), server.read_to_end(&mut rest))
            .await
            .expect("in time")
            .expect("read");
        assert!(rest.is_empty(), "wrote {rest:?}");
    }

    #[tokio::test]
    async fn a_clients_answer_is_written_after_its_connection_is_dropped() {
        let (plain, slot, mut client) = client_pair(Duration::from_secs(5)).await;
        // the client has sent its request and its end of stream
        client.shutdown().await.expect("shutdown");
        let mut out = b"answer".to_vec();
        assert!(defer(&slot, &mut out));
        let mut plain = plain;
        let mut buf = [0u8; 8];
        // the client's end of stream is only that: no error for the answer queued
        assert_eq!(plain.read(&mut buf).await.expect("eof"), 0);
        drop(plain);
        drop(slot);
        let mut all = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut all))
            .await
            .expect("in time")
            .expect("read");
        assert_eq!(all, b"answer");
    }

    #[tokio::test]
    async fn a_full_socket_is_finished_by_the_connections_task() {
        let (mut plain, slot, mut server) = pair().await;
        // Fill the socket's buffers, in place, until it takes no more.
        let sent = fill(&slot);
        let mut out = b"tail".to_vec();
        assert!(defer(&slot, &mut out));
        tokio::task::yield_now().await;
        // the flusher could write nothing and handed the rest back
        assert_eq!(lock(&slot).state, State::Partial);
        let reader = async move {
            let mut all = Vec::new();
            tokio::time::timeout(Duration::from_secs(10), async {
                let mut buf = vec![0u8; 64 * 1024];
                while all.len() < sent + 4 {
                    let n = server.read(&mut buf).await.expect("read");
                    assert!(n > 0, "closed early");
                    all.extend_from_slice(&buf[..n]);
                }
            })
            .await
            .expect("in time");
            server.write_all(b"done").await.expect("answer");
            all
        };
        let mut answer = [0u8; 4];
        let (all, r) = tokio::join!(reader, plain.read_exact(&mut answer));
        r.expect("read");
        assert_eq!(&answer, b"done");
        assert_eq!(&all[all.len() - 4..], b"tail");
        assert!(all[..all.len() - 4].iter().all(|b| *b == b'a'));
    }

    #[tokio::test]
    async fn a_clients_answer_left_by_the_flusher_is_finished_without_its_connection() {
        let (plain, slot, mut client) = client_pair(Duration::from_secs(10)).await;
        let sent = fill(&slot);
        let mut out = b"tail".to_vec();
        assert!(defer(&slot, &mut out));
        tokio::task::yield_now().await;
        assert_eq!(lock(&slot).state, State::Partial);
        // the connection's task is gone: its answer is still written whole, then closed
        drop(plain);
        drop(slot);
        let mut all = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), client.read_to_end(&mut all))
            .await
            .expect("in time")
            .expect("read");
        assert_eq!(all.len(), sent + 4);
        assert_eq!(&all[sent..], b"tail");
    }

    #[tokio::test]
    async fn a_client_that_takes_nothing_fails_its_slot_after_the_send_timeout() {
        let (mut plain, slot, _client) = client_pair(Duration::from_millis(100)).await;
        fill(&slot);
        let mut out = b"tail".to_vec();
        assert!(defer(&slot, &mut out));
        // the connection's task waits for the client's next request meanwhile
        let mut buf = [0u8; 8];
        let e = tokio::time::timeout(Duration::from_secs(5), plain.read(&mut buf))
            .await
            .expect("woken when the drain gives up")
            .expect_err("the answer could not be written");
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
    }

    #[tokio::test]
    async fn an_upstream_that_speaks_first_gets_no_request() {
        let (mut plain, slot, mut server) = pair().await;
        server
            .write_all(b"HTTP/1.1 200 OK\r\n\r\n")
            .await
            .expect("write");
        tokio::time::sleep(Duration::from_millis(20)).await;
        let mut out = b"GET / HTTP/1.1\r\n\r\n".to_vec();
        assert!(defer(&slot, &mut out));
        let mut buf = [0u8; 64];
        let e = plain.read(&mut buf).await.expect_err("unsolicited bytes");
        assert!(is_not_written(&e), "{e}");
        drop(plain);
        drop(slot);
        let mut rest = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), server.read_to_end(&mut rest))
            .await
            .expect("in time")
            .expect("read");
        assert!(rest.is_empty(), "wrote {rest:?}");
    }

    #[test]
    fn a_runtime_after_another_on_the_same_thread_gets_a_flusher_of_its_own() {
        for _ in 0..3 {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                let (_plain, slot, mut server) = pair().await;
                let mut out = b"hello".to_vec();
                assert!(defer(&slot, &mut out));
                assert_eq!(receive(&mut server, 5).await, b"hello");
            });
            drop(rt);
        }
    }

    #[tokio::test]
    async fn a_write_waiting_behind_a_drain_is_woken_when_it_ends() {
        let (mut plain, slot, mut client) = client_pair(Duration::from_secs(10)).await;
        let sent = fill(&slot);
        let mut out = b"a".to_vec();
        assert!(defer(&slot, &mut out));
        // the connection's task writes the next answer in place: it waits behind "a"
        let mut second = std::pin::pin!(plain.write_all(b"b"));
        assert!(futures_poll(second.as_mut()).await.is_pending());
        // the flusher leaves "a" to a drain task, which takes the socket over
        tokio::task::yield_now().await;
        tokio::task::yield_now().await;
        assert!(lock(&slot).draining);
        let reader = async move {
            let mut all = vec![0u8; sent + 2];
            client.read_exact(&mut all).await.expect("read");
            all
        };
        let (all, w) = tokio::time::timeout(Duration::from_secs(2), async {
            tokio::join!(reader, second)
        })
        .await
        .expect("the waiting write is woken when the drain ends");
        w.expect("write");
        assert_eq!(&all[sent..], b"ab");
    }

    /// Polls `f` once.
    async fn futures_poll<F: std::future::Future + Unpin>(f: F) -> Poll<F::Output> {
        let mut f = f;
        std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut f).poll(cx))).await
    }

    #[tokio::test]
    async fn a_shutdown_behind_an_answer_the_client_does_not_take_is_timed() {
        let (plain, slot, _client) = client_pair(Duration::from_secs(30)).await;
        fill(&slot);
        let mut out = b"tail".to_vec();
        assert!(defer(&slot, &mut out));
        let mut io = crate::upstream::WriteTimed::new(plain, Duration::from_millis(100));
        let e = tokio::time::timeout(Duration::from_secs(5), io.shutdown())
            .await
            .expect("within the write timeout")
            .expect_err("the client takes nothing");
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
    }

    #[test]
    fn a_runtime_dropped_on_another_thread_leaves_this_one_a_working_flusher() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let (_plain, slot, mut server) = pair().await;
            let mut out = b"one".to_vec();
            assert!(defer(&slot, &mut out));
            assert_eq!(receive(&mut server, 3).await, b"one");
        });
        std::thread::spawn(move || drop(rt))
            .join()
            .expect("dropped");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let (_plain, slot, mut server) = pair().await;
            let mut out = b"two".to_vec();
            assert!(defer(&slot, &mut out));
            assert_eq!(receive(&mut server, 3).await, b"two");
        });
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn multi_thread_runtimes_write_in_place() {
        assert!(!available());
    }

    #[tokio::test]
    async fn current_thread_runtimes_defer() {
        assert!(available());
    }
}
