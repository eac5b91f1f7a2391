//! Upstream request heads written at the end of the scheduler's batch.
//!
//! On a current-thread runtime (one worker, as `nginx_worker_processes = 1`), a request
//! whose upstream request is small and complete (a head, and a body already read whole)
//! does not write it at once: [`defer`] parks the bytes in the connection's
//! [`WriteSlot`] and queues the slot, and one flusher task per thread writes every queued
//! slot when it runs: after the tasks already in the run queue, that is at the end of
//! the batch of events the runtime is working through. The request's task goes on to read
//! the answer (which cannot come before the request is written) without waiting for the
//! write, so deferring costs it no extra wake-up.
//!
//! Why: an upstream on the same machine that sleeps when it has no work is woken by the
//! first request written to it, and preempts whatever runs on its CPU (often the client
//! whose requests the proxy relays). Writing a batch's requests together, at the end of
//! the batch, wakes it once per batch rather than once per request, as nginx's event loop
//! (which handles a whole `epoll_wait` batch before it waits again) does. The delay is
//! bounded by the batch: the flusher is queued behind the tasks ready when the first
//! request of the batch was deferred, never behind tasks woken later.
//!
//! Failure modes. A write the socket cannot take whole (its send buffer full: not
//! expected for a head on a connection whose last answer was read) is finished by the
//! request's task, which the flusher wakes; it then waits for the socket to be writable,
//! within the read timeout that already bounds the answer. A failed write is reported to
//! the request's task the same way, as an error of its read, marked [`NotWritten`] when
//! nothing was written (so a stale pooled connection is replaced, as when the write fails
//! in place). A connection dropped before its slot is flushed is not written to.
//! Multi-thread runtimes (more than one worker) write in place: their tasks move between
//! threads, and the flusher is per thread.

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
pub(crate) const MAX_DEFERRED: usize = 16 * 1024;

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
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            match self.state {
                State::Idle => return Poll::Ready(Ok(())),
                State::Closed => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::NotConnected,
                        "upstream connection closed",
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
            .unwrap_or_else(|| io::Error::new(io::ErrorKind::BrokenPipe, "upstream write failed"))
    }

    /// The flusher's write: as much as the socket takes now.
    fn flush(&mut self) {
        if self.state != State::Queued {
            return;
        }
        while self.state == State::Queued {
            match self.half.try_write(&self.pending[self.at..]) {
                Ok(0) => self.fail(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.advance(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.state = State::Partial,
                Err(e) => self.fail(e),
            }
        }
        if self.state != State::Idle
            && let Some(w) = self.waker.take()
        {
            w.wake();
        }
    }
}

/// A plain TCP connection whose writes can be deferred ([`defer`]).
#[derive(Debug)]
pub struct Plain {
    read: OwnedReadHalf,
    slot: Slot,
    upstream: bool,
}

impl Plain {
    /// A connection to an upstream: `tcp`, split, and the handle of its slot (for
    /// [`defer`]). Dropped with a request still queued, the request is not written; an end
    /// of stream read while it is queued is an error ([`NotWritten`]).
    pub fn upstream(tcp: TcpStream) -> (Plain, Slot) {
        Plain::new(tcp, true)
    }

    /// A client's connection: as [`Plain::upstream`], but an answer queued when the
    /// connection is dropped is still written (then the socket closes), and a client's end
    /// of stream is only that.
    pub fn client(tcp: TcpStream) -> (Plain, Slot) {
        Plain::new(tcp, false)
    }

    fn new(tcp: TcpStream, upstream: bool) -> (Plain, Slot) {
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
        if queued && self.upstream && (r.is_err() || buf.filled().len() == before) {
            // The connection ended (or failed) before the request was written: it is not
            // written now, and the request may go on another connection.
            let mut s = lock(&self.slot);
            if s.state == State::Queued {
                s.state = State::Closed;
                s.pending.clear();
                let e = r.err().unwrap_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "upstream closed the connection",
                    )
                });
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
        l.queue.push(slot.clone());
        if l.queue.len() > 1 {
            return false;
        }
        match &l.flusher {
            Some(w) => {
                w.wake_by_ref();
                false
            }
            None => !std::mem::replace(&mut l.running, true),
        }
    });
    // (outside the borrow: a runtime shutting down drops the task at once)
    if spawn {
        tokio::spawn(Flusher { spare: Vec::new() });
    }
    true
}

/// This thread's queue of slots to write, and its flusher.
#[derive(Default)]
struct Local {
    queue: Vec<Slot>,
    flusher: Option<Waker>,
    /// A flusher task exists (it may not have been polled yet).
    running: bool,
}

thread_local! {
    static LOCAL: RefCell<Local> = RefCell::new(Local::default());
}

/// The task that writes the queued slots, one per thread that defers writes.
struct Flusher {
    /// The queue taken on the last run (empty; kept for its capacity).
    spare: Vec<Slot>,
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
            lock(&s).flush();
        }
        Poll::Pending
    }
}

impl Drop for Flusher {
    fn drop(&mut self) {
        // (the runtime is going away; a later one on this thread starts its own flusher)
        let _ = LOCAL.try_with(|l| {
            if let Ok(mut l) = l.try_borrow_mut() {
                l.flusher = None;
                l.running = false;
                l.queue.clear();
            }
        });
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
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let (c, s) = tokio::join!(
            TcpStream::connect(l.local_addr().expect("addr")),
            l.accept()
        );
        // (the gateway's end is the accepted one)
        let (plain, slot) = Plain::client(s.expect("accept").0);
        let mut client = c.expect("connect");
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
        let chunk = vec![b'a'; 64 * 1024];
        let mut sent = 0usize;
        loop {
            match lock(&slot).half.try_write(&chunk) {
                Ok(n) => sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("{e}"),
            }
        }
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

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn multi_thread_runtimes_write_in_place() {
        assert!(!available());
    }

    #[tokio::test]
    async fn current_thread_runtimes_defer() {
        assert!(available());
    }
}
