//! The proxy listener's first line of defence, under Pingora: a cap on the connections served
//! at once, and one deadline for each whole request head.
//!
//! Pingora 0.9 has neither: it times each read of a request head separately (60 s), so a
//! client that trickles a byte a minute holds its connection forever, and it serves as many
//! connections as arrive. So the gateway wraps Pingora's HTTP app in a [`ServerApp`] of its
//! own, which sees every connection first: past the cap it answers 503 and closes; otherwise
//! it hands Pingora the connection wrapped in a [`GuardedStream`], which watches the bytes
//! going by. When a request head starts (at the accept, or with the first byte after a
//! response) a deadline is armed; when the head's blank line has been read it is disarmed. A
//! read still waiting at the deadline fails, and Pingora closes the connection. Idle
//! keep-alive connections are left to Pingora's own keep-alive timeout.
//!
//! The same stream puts the gateway's JSON errors in place of the empty ones Pingora sends
//! itself, before any hook runs, for request heads it cannot parse (400) and for `CONNECT`
//! (405): every error a client gets from the gateway then has a body and a request id.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use log::info;
use pingora::apps::ServerApp;
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl, Stream,
    TimingDigest, UniqueID, UniqueIDType,
};
use pingora::server::ShutdownWatch;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::time::{Instant, Sleep};

use crate::proxy::{ErrorReply, RequestId};

/// What the guard enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuardSettings {
    /// Connections served at once; more are answered 503 and closed.
    pub max_connections: usize,
    /// How long a request head may take to arrive, whole: from the accept for a connection's
    /// first request, from its first byte for the next ones.
    pub header_timeout: Duration,
}

/// A [`ServerApp`] that guards `A` (Pingora's HTTP proxy app).
#[derive(Debug)]
pub struct ConnectionGuard<A> {
    app: Arc<A>,
    settings: GuardSettings,
    active: AtomicUsize,
}

impl<A> ConnectionGuard<A> {
    /// Guards `app` with `settings`.
    pub fn new(app: A, settings: GuardSettings) -> Self {
        Self {
            app: Arc::new(app),
            settings,
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
        let Some(_slot) = Slot::take(&self.active, self.settings.max_connections) else {
            refuse(stream, ErrorReply::too_many_connections()).await;
            return None;
        };
        // Pingora serves every request of an HTTP/1 connection in this one call.
        let guarded = GuardedStream::new(stream, self.settings.header_timeout);
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

/// Where a connection is in its current request, as far as the guard cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Between requests: no deadline of the guard's (Pingora's keep-alive timeout applies).
    Idle,
    /// A request head is arriving: the deadline is armed.
    Head,
    /// The head is in; body bytes may follow until the response starts.
    Body,
}

/// A client connection whose request heads must each arrive within a deadline.
#[derive(Debug)]
pub struct GuardedStream {
    inner: Stream,
    header_timeout: Duration,
    phase: Phase,
    /// When the current head must be in (meaningful in [`Phase::Head`]).
    deadline: Instant,
    /// A timer for `deadline`, set and polled only when a head takes more than one read:
    /// registering a timer for every request would cost more than the rest of the guard.
    timer: Pin<Box<Sleep>>,
    /// The last two bytes of the head read so far, to find its end across reads.
    last_two: [u8; 2],
    /// The gateway's reply being written in place of one of Pingora's.
    substitute: Option<Substitute>,
}

/// A reply written in place of another: its bytes, how many of them are out, and how long the
/// replaced write was (what the writer is told was written).
#[derive(Debug)]
struct Substitute {
    bytes: Vec<u8>,
    written: usize,
    replaces: usize,
}

impl GuardedStream {
    /// Guards `inner`, whose first request head starts now.
    pub fn new(inner: Stream, header_timeout: Duration) -> Self {
        Self {
            inner,
            header_timeout,
            phase: Phase::Head,
            deadline: Instant::now() + header_timeout,
            timer: Box::pin(tokio::time::sleep(header_timeout)),
            last_two: [0; 2],
            substitute: None,
        }
    }

    /// Follows the bytes just read: a head starts, or ends.
    fn observe_read(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        if self.phase == Phase::Idle {
            self.phase = Phase::Head;
            self.last_two = [0; 2];
            self.deadline = Instant::now() + self.header_timeout;
        }
        if self.phase == Phase::Head && head_ends_in(&mut self.last_two, bytes) {
            self.phase = Phase::Body;
        }
    }

    /// Follows bytes being written: a response (not an interim 1xx one) ends the request.
    fn observe_write(&mut self, bytes: &[u8]) {
        if self.phase == Phase::Body && !bytes.is_empty() && !bytes.starts_with(b"HTTP/1.1 1") {
            self.phase = Phase::Idle;
        }
    }
}

impl AsyncRead for GuardedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.phase == Phase::Head {
            if this.timer.deadline() != this.deadline {
                this.timer.as_mut().reset(this.deadline);
            }
            if this.timer.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the request head did not arrive within request_header_timeout",
                )));
            }
        }
        let before = buf.filled().len();
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = result {
            this.observe_read(&buf.filled()[before..]);
        }
        result
    }
}

impl AsyncWrite for GuardedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.substitute.is_none() {
            let Some(status) = pingora_error_status(buf) else {
                this.observe_write(buf);
                return Pin::new(&mut this.inner).poll_write(cx, buf);
            };
            let request_id = RequestId::next();
            info!(
                "answered a request Pingora could not take with {status}, request id {request_id}"
            );
            this.substitute = Some(Substitute {
                bytes: ErrorReply::unreadable_request(status).to_http1(request_id),
                written: 0,
                replaces: buf.len(),
            });
        }
        let Some(substitute) = this.substitute.as_mut() else {
            unreachable!("set above")
        };
        while substitute.written < substitute.bytes.len() {
            let rest = &substitute.bytes[substitute.written..];
            match Pin::new(&mut this.inner).poll_write(cx, rest) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => substitute.written += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        let replaced = substitute.replaces;
        this.substitute = None;
        Poll::Ready(Ok(replaced))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Some(first) = bufs.iter().find(|b| !b.is_empty()) {
            this.observe_write(first);
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

// The rest of Pingora's IO traits: all the inner stream's. The proxy listener is plain TCP,
// so the TLS trait keeps its defaults (no TLS).
#[async_trait]
impl Shutdown for GuardedStream {
    async fn shutdown(&mut self) {
        Shutdown::shutdown(self.inner.as_mut()).await;
    }
}

impl UniqueID for GuardedStream {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for GuardedStream {}

impl GetTimingDigest for GuardedStream {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }

    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for GuardedStream {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }

    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        self.inner.set_proxy_digest(digest);
    }
}

impl GetSocketDigest for GuardedStream {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }

    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.inner.set_socket_digest(digest);
    }
}

#[async_trait]
impl Peek for GuardedStream {
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        self.inner.try_peek(buf).await
    }
}

/// The status of `buf` if it is one of the empty error responses Pingora makes itself (a 4xx
/// with `Server: Pingora`, `Content-Length: 0` and `Cache-Control: private, no-store`: the
/// gateway's own replies carry none of these).
fn pingora_error_status(buf: &[u8]) -> Option<u16> {
    let status = buf.strip_prefix(b"HTTP/1.1 4")?;
    let contains = |needle: &[u8]| buf.windows(needle.len()).any(|w| w == needle);
    if !(contains(b"\r\nServer: Pingora\r\n")
        && contains(b"\r\nContent-Length: 0\r\n")
        && contains(b"\r\nCache-Control: private, no-store\r\n"))
    {
        return None;
    }
    let digits = std::str::from_utf8(status.get(..2)?).ok()?;
    Some(400 + digits.parse::<u16>().ok()?)
}

/// Whether the head's blank line (CRLF CRLF, or a bare-LF one, which is refused later with an
/// answer) is in `bytes`; `last_two` carries the bytes before them across reads.
fn head_ends_in(last_two: &mut [u8; 2], bytes: &[u8]) -> bool {
    for &b in bytes {
        let [before, last] = *last_two;
        *last_two = [last, b];
        if b == b'\n' && (last == b'\n' || (last == b'\r' && before == b'\n')) {
            return true;
        }
    }
    false
}

/// Answers a connection the guard refuses, with a request id, and closes it.
async fn refuse(mut stream: Stream, reply: ErrorReply) {
    let request_id = RequestId::next();
    info!(
        "refused a client connection with {}, request id {request_id}",
        reply.status
    );
    let response = reply.to_http1(request_id);
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
    fn the_end_of_a_head_is_found_across_reads() {
        let ends = |chunks: &[&[u8]]| {
            let mut last_two = [0; 2];
            chunks.iter().position(|c| head_ends_in(&mut last_two, c))
        };
        assert_eq!(ends(&[b"GET / HTTP/1.1\r\nHost: a\r\n\r\nbody"]), Some(0));
        assert_eq!(
            ends(&[b"GET / HTTP/1.1\r\nHost: a\r", b"\n", b"\r", b"\n"]),
            Some(3)
        );
        assert_eq!(ends(&[b"GET / HTTP/1.1\nHost: a\n", b"\n"]), Some(1));
        assert_eq!(
            ends(&[b"GET / HTTP/1.1\r\nHost: a\r\n", b"X: \r\r\n"]),
            None
        );
    }

    #[test]
    fn pingoras_own_error_responses_are_recognised() {
        let pingora = b"HTTP/1.1 400 Bad Request\r\nServer: Pingora\r\nDate: x\r\n\
                        Content-Length: 0\r\nCache-Control: private, no-store\r\n\r\n";
        assert_eq!(pingora_error_status(pingora), Some(400));
        let connect =
            String::from_utf8_lossy(pingora).replace("400 Bad Request", "405 Method Not Allowed");
        assert_eq!(pingora_error_status(connect.as_bytes()), Some(405));
        let ours = ErrorReply::unreadable_request(400).to_http1(RequestId::next());
        assert_eq!(pingora_error_status(&ours), None);
        assert_eq!(
            pingora_error_status(b"HTTP/1.1 200 OK\r\nServer: Pingora\r\n"),
            None
        );
    }

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
