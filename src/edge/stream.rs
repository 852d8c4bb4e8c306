//! A client connection as the edge sees it: [`GuardedStream`] sits between the socket and
//! Pingora's HTTP/1 session.
//!
//! When a request head starts (at the accept, or with the first byte after a response) a
//! deadline is armed; when the head's blank line has been read it is disarmed. A read still
//! waiting at the deadline fails, and Pingora closes the connection. Idle keep-alive
//! connections are left to Pingora's own keep-alive timeout, and between two requests the guard
//! keeps nothing of the last one (no timer, no copy of its head): an idle connection should cost
//! little more than its socket.
//!
//! When a head declares `Transfer-Encoding: chunked`, the read that completes the head is held
//! back from Pingora (which cannot route what it has not parsed) while the body is read ahead,
//! up to [`CHUNKED_LOOKAHEAD`], through a strict [`ChunkedCheck`]. A valid body is then released
//! to Pingora as if just read; an invalid one is answered 400 and the connection closed, so
//! neither its head nor any chunk reaches a backend. A body longer than the lookahead is
//! released unchecked past it (Pingora still refuses bad framing while streaming); a request
//! that expects `100 Continue` is not held, since its client waits for the gateway's answer.
//!
//! A request line with an absolute-form target is rewritten to origin form before Pingora
//! parses it: the gateway routes by path alone and is no forward proxy, and Pingora 0.9
//! refuses such a target whose authority differs from `Host` (stricter than RFC 9112 §3.2.2).
//! The client's `Host` stays as sent.
//!
//! The gateway's JSON errors are put in place of the empty ones Pingora sends itself, before
//! any hook runs, for request heads it cannot parse (400) and for `CONNECT` (405): every error
//! a client gets from the gateway then has a body and a request id.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use log::info;
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl, Stream,
    TimingDigest, UniqueID, UniqueIDType,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use super::chunked::{ChunkedCheck, Framing};
use super::head::{has_chunked_body_to_check, head_end_in, origin_form};
use crate::reply::ErrorReply;
use crate::request_id::RequestId;

/// How much of a chunked request body the guard reads ahead and checks before Pingora sees
/// the request.
pub(crate) const CHUNKED_LOOKAHEAD: usize = 64 * 1024;

/// The longest request head the guard keeps a copy of, to look for `Transfer-Encoding`.
const HEAD_COPY_LIMIT: usize = 64 * 1024;

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
    /// An HTTP/2 connection (h2c prior knowledge, or ALPN `h2`): its frames are Pingora's; the
    /// guard only counts it.
    Passthrough,
}

/// What an HTTP/2 client with prior knowledge sends first.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// A client connection whose request heads must each arrive within a deadline.
#[derive(Debug)]
pub(crate) struct GuardedStream {
    inner: Stream,
    header_timeout: Duration,
    phase: Phase,
    /// When the current head must be in (meaningful in [`Phase::Head`] and
    /// [`Phase::Checking`]): set when a head starts, unless the head is whole in the read that
    /// starts it and has no body to check (the usual case, which then reads no clock).
    deadline: Instant,
    /// A timer for `deadline`, made and polled only when a head takes more than one read
    /// (registering a timer for every request would cost more than the rest of the guard), and
    /// dropped when the request ends.
    timer: Option<Pin<Box<Sleep>>>,
    /// The last two bytes of the head read so far, to find its end across reads.
    last_two: [u8; 2],
    /// The current head as read so far (up to [`HEAD_COPY_LIMIT`]), when it takes more than
    /// one read.
    head: Vec<u8>,
    /// The chunked body being read ahead (in [`Phase::Checking`] and [`Phase::Releasing`]).
    lookahead: Option<Box<Lookahead>>,
    /// The gateway's reply being written in place of one of Pingora's.
    substitute: Option<Box<Substitute>>,
    /// Bytes read while Pingora peeked for the HTTP/2 preface, not yet handed to it.
    peeked: Vec<u8>,
}

/// A chunked body read ahead of Pingora: the bytes held back from it (starting with the read
/// that completed the head), how many of them it has been given, and the check they go
/// through. Boxed, like [`Substitute`], and only while it is in use: a connection (and every
/// idle one) holds a pointer's room for each, not their state.
#[derive(Debug, Default)]
struct Lookahead {
    held: Vec<u8>,
    released: usize,
    chunked: ChunkedCheck,
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
        let h2 = inner.selected_alpn_proto() == Some(pingora::protocols::ALPN::H2);
        Self {
            inner,
            header_timeout,
            phase: if h2 { Phase::Passthrough } else { Phase::Head },
            deadline: Instant::now() + header_timeout,
            timer: None,
            last_two: [0; 2],
            head: Vec::new(),
            lookahead: None,
            substitute: None,
            peeked: Vec::new(),
        }
    }

    /// Follows the bytes just read: a head starts, or ends. Returns where the body starts in
    /// `bytes` when they complete the head of a request whose chunked body is to be checked.
    fn observe_read(&mut self, bytes: &[u8]) -> Option<usize> {
        if bytes.is_empty() {
            return None;
        }
        let starts = self.phase == Phase::Idle;
        if starts {
            self.phase = Phase::Head;
            self.last_two = [0; 2];
            self.head.clear();
        }
        if self.phase != Phase::Head {
            return None;
        }
        let end = head_end_in(&mut self.last_two, bytes);
        if let (Some(end), true) = (end, self.head.is_empty()) {
            // The whole head in this one read, the usual case: looked at where it lies.
            self.phase = Phase::Body;
            let head = &bytes[..end];
            let check = end <= HEAD_COPY_LIMIT && has_chunked_body_to_check(head);
            if starts && check {
                // The body's check is bounded by the head's deadline.
                self.deadline = Instant::now() + self.header_timeout;
            }
            return check.then_some(end);
        }
        if starts {
            // The head goes on in later reads: its deadline counts from this, its first.
            self.deadline = Instant::now() + self.header_timeout;
        }
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
            let Some(lookahead) = self.lookahead.as_mut() else {
                // Nothing is held back: there is nothing to check.
                self.phase = Phase::Body;
                return Poll::Ready(Ok(()));
            };
            let mut chunk = [0u8; 8192];
            let mut read = ReadBuf::new(&mut chunk);
            ready!(Pin::new(&mut self.inner).poll_read(cx, &mut read))?;
            let bytes = read.filled();
            if bytes.is_empty() {
                // The client stopped sending: let Pingora see what there is, then the end.
                self.phase = Phase::Releasing;
                return Poll::Ready(Ok(()));
            }
            lookahead.held.extend_from_slice(bytes);
            match lookahead.chunked.feed(bytes) {
                Framing::Incomplete if lookahead.held.len() <= CHUNKED_LOOKAHEAD => {}
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
        self.substitute = Some(Box::new(Substitute {
            bytes: wire_reply(&reply, "a request with an invalid chunked body"),
            written: 0,
            replaces: 0,
        }));
    }

    /// Follows bytes being written: a response (not an interim 1xx one) ends the request, and
    /// the guard gives back what it kept for it: a keep-alive connection waiting for its next
    /// request holds no head copy and no timer.
    fn observe_write(&mut self, bytes: &[u8]) {
        if self.phase == Phase::Body && !bytes.is_empty() && !bytes.starts_with(b"HTTP/1.1 1") {
            self.phase = Phase::Idle;
            self.head = Vec::new();
            self.timer = None;
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
        if this.phase == Phase::Passthrough {
            if this.peeked.is_empty() {
                return Pin::new(&mut this.inner).poll_read(cx, buf);
            }
            this.take_peeked(buf);
            return Poll::Ready(Ok(()));
        }
        if this.phase == Phase::Checking {
            ready!(this.arm_and_poll_deadline(cx))?;
            ready!(this.poll_check(cx))?;
        }
        if this.phase == Phase::Releasing {
            if let Some(lookahead) = this.lookahead.as_mut() {
                let rest = &lookahead.held[lookahead.released..];
                let n = rest.len().min(buf.remaining());
                buf.put_slice(&rest[..n]);
                lookahead.released += n;
                if lookahead.released == lookahead.held.len() {
                    // Up to the whole lookahead: given back, not kept for the connection's life.
                    this.lookahead = None;
                    this.phase = Phase::Body;
                }
                return Poll::Ready(Ok(()));
            }
            this.phase = Phase::Body;
        }
        if this.phase == Phase::Head {
            ready!(this.arm_and_poll_deadline(cx))?;
        }
        let before = buf.filled().len();
        let starts_head =
            this.phase == Phase::Idle || (this.phase == Phase::Head && this.head.is_empty());
        if this.peeked.is_empty() {
            ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        } else {
            this.take_peeked(buf);
        }
        if starts_head {
            let kept = origin_form(&mut buf.filled_mut()[before..]);
            buf.set_filled(before + kept);
        }
        let Some(body_start) = this.observe_read(&buf.filled()[before..]) else {
            return Poll::Ready(Ok(()));
        };
        // A chunked head just completed: take this read back from Pingora and check the body.
        let read = &buf.filled()[before..];
        let mut lookahead = Box::new(Lookahead {
            held: read.to_vec(),
            ..Lookahead::default()
        });
        let framing = lookahead.chunked.feed(&read[body_start..]);
        this.lookahead = Some(lookahead);
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
    /// Hands Pingora what was read while it peeked, as much as `buf` takes.
    fn take_peeked(&mut self, buf: &mut ReadBuf<'_>) {
        let n = self.peeked.len().min(buf.remaining());
        buf.put_slice(&self.peeked[..n]);
        self.peeked.drain(..n);
        if self.peeked.is_empty() {
            self.peeked = Vec::new();
        }
    }

    /// Fails once the current head's deadline has passed; sets the timer when a head takes
    /// more than one read.
    fn arm_and_poll_deadline(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let deadline = self.deadline;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if timer.deadline() != deadline {
            timer.as_mut().reset(deadline);
        }
        if timer.as_mut().poll(cx).is_ready() {
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

impl AsyncWrite for GuardedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.phase == Phase::Passthrough {
            return Pin::new(&mut this.inner).poll_write(cx, buf);
        }
        if this.substitute.is_none() {
            let Some(status) = pingora_error_status(buf) else {
                this.observe_write(buf);
                return Pin::new(&mut this.inner).poll_write(cx, buf);
            };
            let reply = ErrorReply::unreadable_request(status);
            this.substitute = Some(Box::new(Substitute {
                bytes: wire_reply(&reply, "a request Pingora could not take"),
                written: 0,
                replaces: buf.len(),
            }));
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

// The rest of Pingora's IO traits: all the inner stream's (on the TLS listener, the inner
// stream is the TLS session, and the proxy reads its digest through `Ssl`).
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

impl Ssl for GuardedStream {
    fn get_ssl(&self) -> Option<&pingora::tls::ssl::SslRef> {
        self.inner.get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<pingora::protocols::tls::SslDigest>> {
        self.inner.get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<pingora::protocols::ALPN> {
        self.inner.selected_alpn_proto()
    }
}

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

/// Pingora peeks at a plaintext connection for the HTTP/2 preface (h2c with prior knowledge).
/// Its own peek waits for the whole 24 bytes with no timeout, so a client that sends nothing,
/// or a whole HTTP/1 request shorter than that (`GET / HTTP/1.0\r\n\r\n`), would hold it. This
/// one reads what arrives, within the head's deadline, only until the bytes can no longer be
/// the preface; they are kept and handed to Pingora by the next reads.
#[async_trait]
impl Peek for GuardedStream {
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        use tokio::io::AsyncReadExt;
        while self.peeked.len() < buf.len() && H2_PREFACE.starts_with(&self.peeked) {
            let mut chunk = [0u8; 1024];
            let read = tokio::time::timeout_at(self.deadline, self.inner.read(&mut chunk))
                .await
                .map_err(|_| {
                    io::Error::new(
                        io::ErrorKind::TimedOut,
                        "no request within request_header_timeout",
                    )
                })??;
            if read == 0 {
                break;
            }
            self.peeked.extend_from_slice(&chunk[..read]);
        }
        let n = self.peeked.len().min(buf.len());
        buf[..n].copy_from_slice(&self.peeked[..n]);
        buf[n..].fill(0);
        if self.peeked.starts_with(H2_PREFACE) {
            self.phase = Phase::Passthrough;
        }
        Ok(true)
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

/// `reply` as a whole HTTP/1.1 response under a new request id, logged with `what` it answers.
pub(super) fn wire_reply(reply: &ErrorReply, what: &str) -> Vec<u8> {
    let request_id = RequestId::next();
    info!(
        "answered {} to {what}, request id {request_id}",
        reply.status
    );
    reply.to_http1(request_id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A guard on one end of a pipe, and the client's end.
    fn guarded_pipe() -> (tokio::io::DuplexStream, GuardedStream) {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let guarded = GuardedStream::new(Box::new(server), Duration::from_secs(5));
        (client, guarded)
    }

    /// Reads `n` bytes through the guard.
    async fn read_through(guarded: &mut GuardedStream, n: usize) -> Vec<u8> {
        let mut read = vec![0; n];
        guarded.read_exact(&mut read).await.unwrap();
        read
    }

    #[tokio::test]
    async fn between_requests_the_guard_keeps_nothing_of_the_last_one() {
        let (mut client, mut guarded) = guarded_pipe();
        // A head in one read is looked at where it lies: nothing copied.
        let request = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        client.write_all(request).await.unwrap();
        assert_eq!(read_through(&mut guarded, request.len()).await, request);
        assert_eq!(guarded.head.capacity(), 0);
        guarded
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(guarded.phase, Phase::Idle);
        // A head in two reads is copied until it ends.
        let (start, rest) = request.split_at(16);
        client.write_all(start).await.unwrap();
        assert_eq!(read_through(&mut guarded, start.len()).await, start);
        client.write_all(rest).await.unwrap();
        assert_eq!(read_through(&mut guarded, rest.len()).await, rest);
        assert!(
            guarded.head.capacity() > 0,
            "the head is copied while it is read"
        );
        assert!(
            guarded.timer.is_some(),
            "the first head's deadline is armed"
        );
        guarded
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(guarded.phase, Phase::Idle);
        assert_eq!(guarded.head.capacity(), 0);
        assert!(guarded.timer.is_none());
        assert_eq!(guarded.peeked.capacity(), 0);
    }

    #[tokio::test]
    async fn a_checked_chunked_body_is_not_kept_once_released() {
        let (mut client, mut guarded) = guarded_pipe();
        let request = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n\
                        5\r\nhello\r\n0\r\n\r\n";
        client.write_all(request).await.unwrap();
        assert_eq!(read_through(&mut guarded, request.len()).await, request);
        assert_eq!(guarded.phase, Phase::Body);
        assert!(guarded.lookahead.is_none());
    }

    #[test]
    fn a_guard_keeps_its_rarely_used_state_out_of_line() {
        // Every connection holds one for its whole life, idle ones too (200 bytes with the
        // chunked lookahead and the substitute reply inline).
        assert!(std::mem::size_of::<GuardedStream>() <= 128);
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
}
