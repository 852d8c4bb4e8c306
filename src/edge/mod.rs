//! The edge: everything about a client connection and its request heads, before a request is
//! routed.
//!
//! Pingora 0.9 times each read of a request head separately (60 s), so a client that trickles
//! a byte a minute holds its connection forever, and it serves as many connections as arrive.
//! So the gateway wraps Pingora's HTTP app in a [`ServerApp`] of its own, `ConnectionGuard`,
//! which sees every connection first: past the cap it answers 503 and closes; otherwise it
//! hands Pingora the connection wrapped in a `GuardedStream` (see `stream`), which watches
//! the bytes going by: one deadline for each whole request head, chunked bodies checked before
//! anything is forwarded, absolute-form targets turned into origin form, and the gateway's JSON
//! errors in place of Pingora's empty ones.
//!
//! - `stream`: the guarded connection.
//! - [`head`]: what is read from a request head's bytes: where it ends, whether its chunked body
//!   is to be checked, its target's form, and the strict checks on the head Pingora parsed.
//! - [`chunked`]: a strict, incremental check of chunked framing.
//! - [`tls`]: TLS termination: certificates by SNI, versions, ALPN.

pub mod chunked;
pub mod head;
mod stream;
pub mod tls;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;
use tokio::io::AsyncWriteExt;

use crate::config::ConnectionLimits;
use crate::reply::ErrorReply;

use stream::wire_reply;
pub(crate) use stream::GuardedStream;

/// A [`ServerApp`] that guards `A` (Pingora's HTTP proxy app).
#[derive(Debug)]
pub(crate) struct ConnectionGuard<A> {
    app: Arc<A>,
    limits: ConnectionLimits,
    active: AtomicUsize,
}

impl<A> ConnectionGuard<A> {
    /// Guards `app` with `limits`.
    pub fn new(app: A, limits: ConnectionLimits) -> Self {
        Self {
            app: Arc::new(app),
            limits,
            active: AtomicUsize::new(0),
        }
    }
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for ConnectionGuard<A> {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let Some(_slot) = Slot::take(&self.active, self.limits.max_connections) else {
            // Boxed: inline, the refusal's state (its reply, its timer) would make the future
            // every admitted connection holds for its whole life that much bigger.
            Box::pin(refuse(stream, ErrorReply::too_many_connections())).await;
            return None;
        };
        // Pingora serves every request of an HTTP/1 connection in this one call.
        let guarded = GuardedStream::new(stream, self.limits.request_header_timeout);
        self.app.process_new(Box::new(guarded), shutdown).await
    }

    async fn cleanup(&self) {
        self.app.cleanup().await;
    }
}

/// One of the listener's connection slots, given back when dropped (also when the task is).
struct Slot<'a>(&'a AtomicUsize);

impl<'a> Slot<'a> {
    fn take(active: &'a AtomicUsize, max: usize) -> Option<Self> {
        active
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| Slot(active))
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Answers a connection the guard refuses, and closes it.
async fn refuse(mut stream: Stream, reply: ErrorReply) {
    let response = wire_reply(&reply, "a connection over the limit");
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        stream.write_all(&response).await?;
        stream.flush().await
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_bounded_and_given_back() {
        let active = AtomicUsize::new(0);
        let first = Slot::take(&active, 2).unwrap();
        let _second = Slot::take(&active, 2).unwrap();
        assert!(Slot::take(&active, 2).is_none());
        drop(first);
        assert!(Slot::take(&active, 2).is_some());
    }
}
