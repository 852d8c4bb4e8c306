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
//! It also turns an absolute-form request target (`GET http://host/v1/proxy/...`) into origin
//! form before Pingora parses it: the gateway routes by path alone and is no forward proxy, and
//! Pingora 0.9 refuses such a target whose authority differs from `Host` (stricter than RFC
//! 9112 §3.2.2). The client's `Host` stays as sent.
//!
//! The same stream puts the gateway's JSON errors in place of the empty ones Pingora sends
//! itself, before any hook runs, for request heads it cannot parse (400) and for `CONNECT`
//! (405): every error a client gets from the gateway then has a body and a request id.
//!
//! And it checks chunked request bodies before anything is forwarded: when a head declares
//! `Transfer-Encoding: chunked`, the read that completes the head is held back from Pingora
//! (which cannot route what it has not parsed) while the guard reads the body ahead, up to
//! [`CHUNKED_LOOKAHEAD`], through a strict [`ChunkedCheck`]. A valid body is then released
//! to Pingora as if just read; an invalid one is answered 400 and the connection closed, so
//! neither its head nor any chunk reaches a backend. A body longer than the lookahead is
//! released unchecked past it (Pingora still refuses bad framing while streaming); a request
//! that expects `100 Continue` is not held, since its client waits for Pingora's answer.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
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

use crate::chunked::{ChunkedCheck, Framing};
use crate::config::ConnectionLimits;
use crate::proxy::{ErrorReply, RequestId};

/// How much of a chunked request body the guard reads ahead and checks before Pingora sees
/// the request.
pub const CHUNKED_LOOKAHEAD: usize = 64 * 1024;

/// The longest request head the guard keeps a copy of, to look for `Transfer-Encoding`.
const HEAD_COPY_LIMIT: usize = 64 * 1024;

/// A [`ServerApp`] that guards `A` (Pingora's HTTP proxy app).
#[derive(Debug)]
pub struct ConnectionGuard<A> {
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
            refuse(stream, ErrorReply::too_many_connections()).await;
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

/// Where a connection is in its current request, as far as the guard cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Between requests: no deadline of the guard's (Pingora's keep-alive timeout applies).
    Idle,
    /// A request head is arriving: the deadline is armed.
    Head,
    /// The head is in; body bytes may follow until the response starts.
    Body,
    /// The read that completed a chunked head is held back while the body is checked.
    Checking,
    /// Held-back bytes are being handed to Pingora.
    Releasing,
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
    /// The current head as read so far (up to [`HEAD_COPY_LIMIT`]).
    head: Vec<u8>,
    /// Bytes read but held back from Pingora, and how many of them it has been given.
    held: Vec<u8>,
    released: usize,
    /// The check of the chunked body being read ahead.
    chunked: ChunkedCheck,
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
            head: Vec::new(),
            held: Vec::new(),
            released: 0,
            chunked: ChunkedCheck::default(),
            substitute: None,
        }
    }

    /// Follows the bytes just read: a head starts, or ends. Returns where the body starts in
    /// `bytes` when they complete the head of a request whose chunked body is to be checked.
    fn observe_read(&mut self, bytes: &[u8]) -> Option<usize> {
        if bytes.is_empty() {
            return None;
        }
        if self.phase == Phase::Idle {
            self.phase = Phase::Head;
            self.last_two = [0; 2];
            self.head.clear();
            self.deadline = Instant::now() + self.header_timeout;
        }
        if self.phase != Phase::Head {
            return None;
        }
        let end = head_end_in(&mut self.last_two, bytes);
        let copied = end.unwrap_or(bytes.len());
        if self.head.len() + copied <= HEAD_COPY_LIMIT {
            self.head.extend_from_slice(&bytes[..copied]);
        }
        let end = end?;
        self.phase = Phase::Body;
        let complete = self.head.len() < HEAD_COPY_LIMIT;
        (complete && has_chunked_body_to_check(&self.head)).then_some(end)
    }

    /// Reads the held-back body further and decides: release, or refuse. Returns the error
    /// for Pingora once a refusal is written.
    fn poll_check(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            if let Some(substitute) = self.substitute.as_mut() {
                // A refusal is being written: finish it, then fail Pingora's read.
                ready!(poll_write_all(&mut self.inner, cx, substitute))?;
                ready!(Pin::new(&mut self.inner).poll_flush(cx))?;
                self.substitute = None;
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "invalid chunked request body, answered 400",
                )));
            }
            let mut chunk = [0u8; 8192];
            let mut read = ReadBuf::new(&mut chunk);
            ready!(Pin::new(&mut self.inner).poll_read(cx, &mut read))?;
            let bytes = read.filled();
            if bytes.is_empty() {
                // The client stopped sending: let Pingora see what there is, then the end.
                self.phase = Phase::Releasing;
                return Poll::Ready(Ok(()));
            }
            self.held.extend_from_slice(bytes);
            match self.chunked.feed(bytes) {
                Framing::Incomplete if self.held.len() <= CHUNKED_LOOKAHEAD => {}
                Framing::Incomplete | Framing::Complete(_) => {
                    self.phase = Phase::Releasing;
                    return Poll::Ready(Ok(()));
                }
                Framing::Invalid(why) => self.refuse_chunked(why),
            }
        }
    }

    /// Starts answering 400 for a chunked body that failed the check.
    fn refuse_chunked(&mut self, why: &str) {
        let reply = ErrorReply::ambiguous_request(&format!("invalid chunked body: {why}"));
        self.substitute = Some(Substitute {
            bytes: wire_reply(&reply, "a request with an invalid chunked body"),
            written: 0,
            replaces: 0,
        });
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
        if this.phase == Phase::Checking {
            ready!(this.arm_and_poll_deadline(cx))?;
            ready!(this.poll_check(cx))?;
        }
        if this.phase == Phase::Releasing {
            let rest = &this.held[this.released..];
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            this.released += n;
            if this.released == this.held.len() {
                this.held.clear();
                this.released = 0;
                this.phase = Phase::Body;
            }
            return Poll::Ready(Ok(()));
        }
        if this.phase == Phase::Head {
            ready!(this.arm_and_poll_deadline(cx))?;
        }
        let before = buf.filled().len();
        let starts_head =
            this.phase == Phase::Idle || (this.phase == Phase::Head && this.head.is_empty());
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        if starts_head {
            let kept = origin_form(&mut buf.filled_mut()[before..]);
            buf.set_filled(before + kept);
        }
        let Some(body_start) = this.observe_read(&buf.filled()[before..]) else {
            return Poll::Ready(Ok(()));
        };
        // A chunked head just completed: take this read back from Pingora and check the body.
        let read = &buf.filled()[before..];
        this.held.clear();
        this.held.extend_from_slice(read);
        this.released = 0;
        this.chunked = ChunkedCheck::default();
        let framing = this.chunked.feed(&read[body_start..]);
        buf.set_filled(before);
        this.phase = Phase::Checking;
        match framing {
            Framing::Incomplete => {}
            Framing::Complete(_) => this.phase = Phase::Releasing,
            Framing::Invalid(why) => this.refuse_chunked(why),
        }
        // Come back through the phases above with what has been decided so far.
        Pin::new(this).poll_read(cx, buf)
    }
}

impl GuardedStream {
    /// Fails once the current head's deadline has passed; sets the timer when a head takes
    /// more than one read.
    fn arm_and_poll_deadline(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.timer.deadline() != self.deadline {
            self.timer.as_mut().reset(self.deadline);
        }
        if self.timer.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the request did not arrive within request_header_timeout",
            )));
        }
        Poll::Ready(Ok(()))
    }
}

/// Writes the rest of `substitute` to `inner`.
fn poll_write_all(
    inner: &mut Stream,
    cx: &mut Context<'_>,
    substitute: &mut Substitute,
) -> Poll<io::Result<()>> {
    while substitute.written < substitute.bytes.len() {
        let rest = &substitute.bytes[substitute.written..];
        match ready!(Pin::new(&mut *inner).poll_write(cx, rest))? {
            0 => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
            n => substitute.written += n,
        }
    }
    Poll::Ready(Ok(()))
}

/// Whether the head declares a chunked body that the guard should check before Pingora sees
/// it: `Transfer-Encoding` names `chunked` and the client does not wait for `100 Continue`.
fn has_chunked_body_to_check(head: &[u8]) -> bool {
    let mut chunked = false;
    for line in head.split(|&b| b == b'\n').skip(1) {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], line[colon + 1..].to_ascii_lowercase());
        let contains = |needle: &[u8]| value.windows(needle.len()).any(|w| w == needle);
        if name.eq_ignore_ascii_case(b"transfer-encoding") && contains(b"chunked") {
            chunked = true;
        } else if name.eq_ignore_ascii_case(b"expect") && contains(b"100-continue") {
            return false;
        }
    }
    chunked
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
            let reply = ErrorReply::unreadable_request(status);
            this.substitute = Some(Substitute {
                bytes: wire_reply(&reply, "a request Pingora could not take"),
                written: 0,
                replaces: buf.len(),
            });
        }
        let Some(substitute) = this.substitute.as_mut() else {
            unreachable!("set above")
        };
        ready!(poll_write_all(&mut this.inner, cx, substitute))?;
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

/// Rewrites a request line at the start of `bytes` whose target is in absolute form
/// (`http://authority/path?query`, any method but `CONNECT`) into origin form (`/path?query`)
/// in place; returns how many bytes are left. Anything else, or a request line not whole in
/// `bytes`, is left as it is.
fn origin_form(bytes: &mut [u8]) -> usize {
    let len = bytes.len();
    let Some(line_end) = bytes.iter().position(|&b| b == b'\n') else {
        return len;
    };
    let line = &bytes[..line_end];
    let Some(method_end) = line.iter().position(|&b| b == b' ') else {
        return len;
    };
    if &line[..method_end] == b"CONNECT" {
        return len;
    }
    let target_start = method_end + 1;
    let target = &line[target_start..];
    let scheme = [&b"http://"[..], b"https://"].into_iter().find(|scheme| {
        target.len() >= scheme.len() && target[..scheme.len()].eq_ignore_ascii_case(scheme)
    });
    let Some(scheme) = scheme else {
        return len;
    };
    let authority_end = target[scheme.len()..]
        .iter()
        .position(|&b| matches!(b, b'/' | b'?' | b' '))
        .map_or(target.len(), |i| scheme.len() + i);
    // What is cut: the scheme and authority, less one byte kept for a `/` when the target
    // has no path of its own.
    let mut cut = authority_end;
    if target.get(authority_end) != Some(&b'/') {
        cut -= 1;
        bytes[target_start + cut] = b'/';
    }
    bytes.copy_within(target_start + cut.., target_start);
    len - cut
}

/// Where in `bytes` the head ends (just past its blank line: CRLF CRLF, or a bare-LF one,
/// which is refused later with an answer), if it does; `last_two` carries the bytes before
/// them across reads.
fn head_end_in(last_two: &mut [u8; 2], bytes: &[u8]) -> Option<usize> {
    for (i, &b) in bytes.iter().enumerate() {
        let [before, last] = *last_two;
        *last_two = [last, b];
        if b == b'\n' && (last == b'\n' || (last == b'\r' && before == b'\n')) {
            return Some(i + 1);
        }
    }
    None
}

/// `reply` as a whole HTTP/1.1 response under a new request id, logged with `what` it answers.
fn wire_reply(reply: &ErrorReply, what: &str) -> Vec<u8> {
    let request_id = RequestId::next();
    info!(
        "answered {} to {what}, request id {request_id}",
        reply.status
    );
    reply.to_http1(request_id)
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
    fn the_end_of_a_head_is_found_across_reads() {
        let ends = |chunks: &[&[u8]]| {
            let mut last_two = [0; 2];
            chunks
                .iter()
                .position(|c| head_end_in(&mut last_two, c).is_some())
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
    fn absolute_form_targets_become_origin_form() {
        let rewritten = |line: &str| {
            let mut bytes = line.as_bytes().to_vec();
            let kept = origin_form(&mut bytes);
            String::from_utf8(bytes[..kept].to_vec()).unwrap()
        };
        for (line, expected) in [
            (
                "GET http://example.com/v1/proxy/a/x?q=1 HTTP/1.1\r\nHost: b\r\n\r\n",
                "GET /v1/proxy/a/x?q=1 HTTP/1.1\r\nHost: b\r\n\r\n",
            ),
            ("GET HTTPS://h:1 HTTP/1.1\r\n", "GET / HTTP/1.1\r\n"),
            ("GET http://h?q HTTP/1.1\r\n", "GET /?q HTTP/1.1\r\n"),
            (
                "GET /v1/proxy/a HTTP/1.1\r\n",
                "GET /v1/proxy/a HTTP/1.1\r\n",
            ),
            (
                "CONNECT http://h:1 HTTP/1.1\r\n",
                "CONNECT http://h:1 HTTP/1.1\r\n",
            ),
            ("GET http://h/a HTTP/1.1", "GET http://h/a HTTP/1.1"),
            ("GET ftp://h/a HTTP/1.1\r\n", "GET ftp://h/a HTTP/1.1\r\n"),
        ] {
            assert_eq!(rewritten(line), expected, "{line:?}");
        }
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
    fn only_chunked_heads_without_expect_continue_are_held() {
        assert!(has_chunked_body_to_check(
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n"
        ));
        assert!(!has_chunked_body_to_check(
            b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\n"
        ));
        assert!(!has_chunked_body_to_check(
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n"
        ));
        assert!(!has_chunked_body_to_check(
            b"POST /transfer-encoding:chunked HTTP/1.1\r\n\r\n"
        ));
        let mut last_two = [0; 2];
        assert_eq!(
            head_end_in(&mut last_two, b"GET / HTTP/1.1\r\n\r\nbody"),
            Some(18)
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
