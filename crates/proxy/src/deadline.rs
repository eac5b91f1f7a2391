//! A deadline that can be moved on without touching the runtime's timer wheel.
//!
//! A per-request `tokio::time::timeout` registers a timer entry when the request first waits
//! and removes it when the request is done: about 800 instructions per request, a few percent
//! of a proxied request. A [`Deadline`] keeps one timer per connection instead. Setting a later
//! deadline only records it; the timer, armed at an earlier one, fires at that earlier time, and
//! is then moved to the deadline recorded (once per timeout period on a busy connection). So
//! the timer never fires after the deadline, and a request that finishes in time costs no timer
//! registration.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::time::{Instant, Sleep};

/// A deadline checked by a lazily moved timer (see the module documentation).
#[derive(Debug)]
pub struct Deadline {
    /// The deadline.
    at: Instant,
    /// Armed at or before `at`.
    timer: Pin<Box<Sleep>>,
}

impl Deadline {
    /// A deadline at `at`.
    pub fn new(at: Instant) -> Deadline {
        Deadline {
            at,
            timer: Box::pin(tokio::time::sleep_until(at)),
        }
    }

    /// Moves the deadline to `at`. A later one is only recorded; an earlier one re-arms the
    /// timer.
    pub fn set(&mut self, at: Instant) {
        if at < self.timer.deadline() {
            self.timer.as_mut().reset(at);
        }
        self.at = at;
    }

    /// Ready once the deadline has passed; registers `cx` to be woken then.
    pub fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            if self.timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            // The timer fired at its deadline: the deadline itself, or an earlier one it was
            // armed at before the deadline moved on.
            if self.timer.deadline() >= self.at {
                return Poll::Ready(());
            }
            self.timer.as_mut().reset(self.at);
        }
    }

    /// The deadline in `slot` moved to `timeout` from now, or a new one there.
    pub fn arm(slot: &mut Option<Deadline>, timeout: std::time::Duration) -> &mut Deadline {
        let at = Instant::now() + timeout;
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn fires_at_the_deadline_however_often_it_moves() {
        let start = Instant::now();
        let mut d = Deadline::new(start + Duration::from_secs(10));
        // moved on nine times before the first arming fires
        for i in 1..10 {
            tokio::time::sleep(Duration::from_secs(1)).await;
            d.set(start + Duration::from_secs(10 + i));
        }
        d.expired().await;
        assert_eq!(Instant::now() - start, Duration::from_secs(19));
        // an earlier deadline than the armed one is kept too
        let now = Instant::now();
        d.set(now + Duration::from_secs(30));
        d.set(now + Duration::from_secs(5));
        d.expired().await;
        assert_eq!(Instant::now() - now, Duration::from_secs(5));
        // a deadline already past: ready at once
        d.set(Instant::now());
        d.expired().await;
        assert_eq!(Instant::now() - now, Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn is_pending_before_the_deadline() {
        let start = Instant::now();
        let mut d = Deadline::new(start + Duration::from_secs(2));
        let r = tokio::time::timeout(Duration::from_millis(1999), d.expired()).await;
        assert!(r.is_err(), "expired early");
        d.expired().await;
        assert_eq!(Instant::now() - start, Duration::from_secs(2));
    }
}
