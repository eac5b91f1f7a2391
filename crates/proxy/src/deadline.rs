//! A deadline that can be moved on without touching the runtime's timer wheel.
//!
//! A per-request `tokio::time::timeout` registers a timer entry when the request first waits
//! and removes it when the request is done: about 800 instructions per request, a few percent
//! of a proxied request. A [`Deadline`] keeps one timer per connection instead. Setting a later
//! deadline only records it; the timer, armed at an earlier one, fires at that earlier time, and
//! is then moved to the deadline recorded (once per timeout period on a busy connection). So
//! the timer never fires after the deadline, and a request that finishes in time costs no timer
//! registration.
//!
//! A poll by the task whose waker the armed timer already holds, before it fires, returns at
//! once without touching the timer (most polls: a connection's task waits once per request).
//!
//! The cost: an armed timer holds the waker of the last task that waited on it. For a pooled
//! upstream connection that task may have finished, and its memory (a client connection's
//! task) stays allocated until the timer fires, at most one read timeout later (60 s by
//! default), or the connection is used again. That is bounded by the pool's idle connections.
//! A timer that fires early also wakes its task once for nothing, at most once per timeout
//! period.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use tokio::time::{Instant, Sleep};

/// A deadline checked by a lazily moved timer (see the module documentation).
#[derive(Debug)]
pub struct Deadline {
    /// The deadline.
    at: Instant,
    /// Armed at or before `at`.
    timer: Pin<Box<Sleep>>,
    /// The waker the armed timer was last polled with: polled again with the same one, and
    /// not fired, it is still pending (see [`Deadline::poll_expired`]).
    waker: Option<Waker>,
}

impl Deadline {
    /// A deadline at `at`.
    pub fn new(at: Instant) -> Deadline {
        Deadline {
            at,
            timer: Box::pin(tokio::time::sleep_until(at)),
            waker: None,
        }
    }

    /// Moves the deadline to `at`. A later one is only recorded; an earlier one re-arms the
    /// timer.
    pub fn set(&mut self, at: Instant) {
        if at < self.timer.deadline() {
            self.timer.as_mut().reset(at);
            self.waker = None;
        }
        self.at = at;
    }

    /// Ready once the deadline has passed; registers `cx` to be woken then.
    pub fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        // A timer still in the wheel, registered with this waker by the last poll, wakes it
        // when it fires: polling it again would only register the same waker (the usual
        // case: a connection's own task waits on it once per request).
        if !self.timer.is_elapsed() && self.holds(cx.waker()) {
            return Poll::Pending;
        }
        loop {
            // Polled outside the task's budget (as `tokio::time::timeout` checks its
            // deadline): a poll refused for want of budget would register no waker, and the
            // skip above would then never poll it again.
            let polled = std::pin::pin!(tokio::task::unconstrained(self.timer.as_mut())).poll(cx);
            if polled.is_pending() {
                if !self.holds(cx.waker()) {
                    self.waker = Some(cx.waker().clone());
                }
                return Poll::Pending;
            }
            self.waker = None;
            // The timer fired at its deadline: the deadline itself, or an earlier one it was
            // armed at before the deadline moved on.
            if self.timer.deadline() >= self.at {
                return Poll::Ready(());
            }
            self.timer.as_mut().reset(self.at);
        }
    }

    /// Whether the timer was last polled with `waker` (or one waking the same task).
    fn holds(&self, waker: &Waker) -> bool {
        self.waker.as_ref().is_some_and(|w| w.will_wake(waker))
    }

    /// The deadline in `slot` moved to `timeout` after `now` (a clock reading the caller
    /// has at hand), or a new one there.
    pub fn arm(
        slot: &mut Option<Deadline>,
        now: std::time::Instant,
        timeout: std::time::Duration,
    ) -> &mut Deadline {
        let at = Instant::from_std(now) + timeout;
        match slot {
            Some(d) => {
                d.set(at);
                d
            }
            None => slot.insert(Deadline::new(at)),
        }
    }

    /// Completes once the deadline has passed.
    pub async fn expired(&mut self) {
        std::future::poll_fn(|cx| self.poll_expired(cx)).await
    }

    /// `fut`'s output, or `None` once the deadline has passed first: as
    /// `tokio::time::timeout` runs it, `fut` polled first and the deadline then checked
    /// outside the task's budget, so that a future that keeps making progress cannot starve
    /// the check. (`fut` is pinned by the caller: no future of its own around it.)
    pub fn within<'a, F: Future>(
        &'a mut self,
        mut fut: Pin<&'a mut F>,
    ) -> impl Future<Output = Option<F::Output>> + 'a {
        std::future::poll_fn(move |cx| {
            if let Poll::Ready(out) = fut.as_mut().poll(cx) {
                return Poll::Ready(Some(out));
            }
            let expired =
                std::pin::pin!(tokio::task::unconstrained(std::future::poll_fn(
                    |cx| self.poll_expired(cx)
                )));
            expired.poll(cx).map(|()| None)
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::time::Duration;

    const MS: Duration = Duration::from_millis(1);

    #[tokio::test]
    async fn fires_at_the_deadline_however_often_it_moves() {
        let start = Instant::now();
        let mut d = Deadline::new(start + 100 * MS);
        // moved on five times before the first arming fires
        for i in 1..=5 {
            tokio::time::sleep(15 * MS).await;
            d.set(start + (100 + 20 * i) * MS);
        }
        d.expired().await;
        let took = start.elapsed();
        assert!(took >= 200 * MS, "early: {took:?}");
        assert!(took < 1000 * MS, "late: {took:?}");
        // an earlier deadline than the armed one is kept too
        let now = Instant::now();
        d.set(now + 5000 * MS);
        d.set(now + 50 * MS);
        d.expired().await;
        let took = now.elapsed();
        assert!(took >= 50 * MS && took < 1000 * MS, "{took:?}");
        // a deadline already past: ready at once
        let now = Instant::now();
        d.set(now);
        d.expired().await;
        assert!(now.elapsed() < 500 * MS);
    }

    #[tokio::test]
    async fn wakes_the_task_that_waits_last_and_one_polled_often() {
        // Polled by one task, then awaited by another: the second is woken.
        let start = Instant::now();
        let mut d = Deadline::new(start + 150 * MS);
        let mut d = tokio::spawn(async move {
            assert!(tokio::time::timeout(20 * MS, d.expired()).await.is_err());
            d
        })
        .await
        .expect("first task");
        tokio::spawn(async move { d.expired().await })
            .await
            .expect("second task");
        let took = start.elapsed();
        assert!(took >= 150 * MS && took < 1000 * MS, "{took:?}");

        // Polled again and again by one task, woken by something else each time (the case
        // where a poll with the same waker is skipped): still fires at the deadline.
        let start = Instant::now();
        let mut d = Deadline::new(start + 100 * MS);
        let mut tick = tokio::time::interval(3 * MS);
        let mut polls = 0;
        loop {
            tokio::select! {
                biased;
                () = d.expired() => break,
                _ = tick.tick() => polls += 1,
            }
        }
        let took = start.elapsed();
        assert!(polls > 10, "only {polls} polls");
        assert!(took >= 100 * MS && took < 1000 * MS, "{took:?}");
    }

    /// Uses up the task's budget: cooperative operations then return `Pending` at once.
    pub(crate) fn exhaust_budget(cx: &mut Context<'_>) {
        while let Poll::Ready(r) = tokio::task::coop::poll_proceed(cx) {
            r.made_progress();
        }
    }

    #[tokio::test]
    async fn a_first_poll_without_budget_still_arms_the_timer() {
        let start = Instant::now();
        let mut d = Deadline::new(start + 100 * MS);
        std::future::poll_fn(|cx| {
            exhaust_budget(cx);
            assert!(d.poll_expired(cx).is_pending());
            Poll::Ready(())
        })
        .await;
        // polled again by the same task: woken at the deadline
        tokio::time::timeout(2000 * MS, d.expired())
            .await
            .expect("woken at the deadline");
        assert!(start.elapsed() >= 100 * MS);
    }

    #[tokio::test]
    async fn is_pending_before_the_deadline() {
        let start = Instant::now();
        let mut d = Deadline::new(start + 200 * MS);
        let r = tokio::time::timeout(150 * MS, d.expired()).await;
        assert!(r.is_err(), "expired early");
        d.expired().await;
        assert!(start.elapsed() >= 200 * MS);
    }
}

/// When something last happened (kept in an atomic, so several tasks or futures can mark it
/// cheaply), and a wait until nothing has happened for a while: the idle clocks of hyper's
/// connections and of WebSocket tunnels.
#[derive(Debug)]
pub(crate) struct IdleClock {
    started: std::time::Instant,
    /// Milliseconds since `started` at the last [`IdleClock::touch`].
    last: std::sync::atomic::AtomicU64,
}

impl IdleClock {
    /// A clock last touched now.
    pub(crate) fn new() -> IdleClock {
        IdleClock {
            started: std::time::Instant::now(),
            last: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Marks that something happened now.
    pub(crate) fn touch(&self) {
        let ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(ms, std::sync::atomic::Ordering::Relaxed);
    }

    /// Resolves once the clock has not been touched for `quiet` (never, if that time cannot
    /// be represented).
    pub(crate) async fn quiet_for(&self, quiet: std::time::Duration) {
        loop {
            let last = self.started
                + std::time::Duration::from_millis(
                    self.last.load(std::sync::atomic::Ordering::Relaxed),
                );
            let Some(due) = last.checked_add(quiet) else {
                return std::future::pending().await;
            };
            if std::time::Instant::now() >= due {
                return;
            }
            tokio::time::sleep_until(due.into()).await;
        }
    }
}
