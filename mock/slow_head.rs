//! `--slow-head-ms`: a socket that writes the first response head on a connection a line at a
//! time, pausing after each line, then everything else at once. It sits under hyper, which
//! writes a head in one go; the answers it carries close their connection after them.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A connection whose first written head trickles out.
pub(crate) struct SlowHead<S> {
    inner: S,
    pause: Duration,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    /// The last four bytes written, to see the head's end (an empty line).
    tail: [u8; 4],
    head_done: bool,
}

impl<S> SlowHead<S> {
    pub(crate) fn new(inner: S, pause: Duration) -> Self {
        SlowHead {
            inner,
            pause,
            sleep: None,
            tail: [0; 4],
            head_done: false,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for SlowHead<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for SlowHead<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Some(sleep) = &mut this.sleep {
            ready!(sleep.as_mut().poll(cx));
            this.sleep = None;
        }
        if this.head_done {
            return Pin::new(&mut this.inner).poll_write(cx, buf);
        }
        let line = buf
            .iter()
            .position(|&b| b == b'\n')
            .map_or(buf.len(), |i| i + 1);
        let written = ready!(Pin::new(&mut this.inner).poll_write(cx, &buf[..line]))?;
        for &byte in &buf[..written] {
            this.tail.rotate_left(1);
            this.tail[3] = byte;
        }
        if buf[..written].ends_with(b"\n") {
            this.head_done = &this.tail == b"\r\n\r\n";
            this.sleep = Some(Box::pin(tokio::time::sleep(this.pause)));
        }
        Poll::Ready(Ok(written))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
