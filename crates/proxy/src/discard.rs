//! Request bodies answered without being read, discarded as nginx discards them.
//!
//! Kong answers many requests without reading their bodies: no route (404), an https-only
//! route (426), a gRPC check (415), no service, and every answer of its own
//! (`kong.response.exit`). nginx then discards the body (`ngx_http_discard_request_body`):
//! it reads what the client sends and drops it, and the connection is kept for the next
//! request once the body is in. The discarding goes on after the answer for as long as
//! each read comes within `lingering_timeout` (5 s) of the one before and `lingering_time`
//! (30 s) has not passed; past either, or on a body nginx cannot read, the connection is
//! closed.
//!
//! [`Unread`] carries an HTTP/1.x request's body through the phases. A phase that reads the
//! body takes it ([`Unread::take`]); when the request is dropped with its body untaken, the
//! body goes back to the connection's request loop ([`Returned`]), which discards it
//! ([`discard`]) if the answer keeps the connection. (hyper reads the rest of the body for
//! the task that discards it and reads the next request only after it; with the body
//! dropped instead, hyper would close the connection after the answer, which says
//! `keep-alive`.) One difference from nginx: a client that sent `Expect: 100-continue`
//! gets no `100 Continue` before the answer (hyper sends one only before an answer's
//! head), where nginx sends one as it starts discarding; such a client may then send its
//! next request rather than the body, so its connection is closed after the answer
//! (`Connection: close`) instead.

use std::sync::{Arc, Mutex};

use http_body_util::BodyExt;
use hyper::body::Incoming;

/// Where an untaken body goes back to: the connection's request loop.
pub(crate) type Returned = Arc<Mutex<Option<Incoming>>>;

/// A request's body, and where it goes back to if no phase takes it.
#[derive(Debug)]
pub(crate) struct Unread {
    body: Option<Incoming>,
    back: Option<Returned>,
}

impl Unread {
    /// `body`, going back to `back` if untaken (`None`: dropped with the request, as an
    /// HTTP/2 stream's body or one already at its end is).
    pub(crate) fn new(body: Incoming, back: Option<Returned>) -> Unread {
        Unread {
            body: Some(body),
            back,
        }
    }

    /// The body, for a phase that reads it.
    pub(crate) fn get(&self) -> Option<&Incoming> {
        self.body.as_ref()
    }

    /// Takes the body to read it: it no longer goes back.
    pub(crate) fn take(mut self) -> Option<Incoming> {
        self.body.take()
    }
}

impl Drop for Unread {
    fn drop(&mut self) {
        if let (Some(body), Some(back)) = (self.body.take(), self.back.as_ref())
            && let Ok(mut slot) = back.lock()
        {
            *slot = Some(body);
        }
    }
}

/// Reads `body` to its end and drops what it reads, as nginx's
/// `ngx_http_discarded_request_body_handler`: each part within `LINGERING_TIMEOUT` of the
/// one before, all within `LINGERING_TIME`. Dropping a body not read to its end (too slow,
/// or malformed) makes hyper close the connection.
pub(crate) async fn discard(mut body: Incoming) {
    use crate::h1_fast::{LINGERING_TIME, LINGERING_TIMEOUT};
    let end = tokio::time::Instant::now() + LINGERING_TIME;
    loop {
        let next = tokio::time::timeout(LINGERING_TIMEOUT, body.frame());
        // (at the body's end, hyper goes on to the next request)
        if !matches!(
            tokio::time::timeout_at(end, next).await,
            Ok(Ok(Some(Ok(_))))
        ) {
            return;
        }
    }
}
