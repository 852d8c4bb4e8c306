// Copyright 2026 Cloudflare, Inc.
//
// Licensed under the Apache License, Version 2.0 (the "License");
// you may not use this file except in compliance with the License.
// You may obtain a copy of the License at
//
// http://www.apache.org/licenses/LICENSE-2.0
//
// Unless required by applicable law or agreed to in writing, software
// distributed under the License is distributed on an "AS IS" BASIS,
// WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
// See the License for the specific language governing permissions and
// limitations under the License.

use crate::protocols::digest::TimingDigest;
use crate::protocols::l4::stream::Stream as L4Stream;
use crate::protocols::tls::{SslDigest, ALPN};
use crate::protocols::{Peek, Ssl, UniqueID, UniqueIDType};
use crate::tls::{self, ssl, tokio_ssl::SslStream as InnerSsl};
use crate::utils::tls::{get_organization, get_serial};
use log::warn;
use pingora_error::{ErrorType::*, OrErr, Result};
use std::any::Any;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::{Instant, SystemTime};
use tokio::io::{self, AsyncRead, AsyncWrite, ReadBuf};

#[cfg(feature = "boringssl")]
use pingora_boringssl as ssl_lib;

#[cfg(feature = "openssl")]
use pingora_openssl as ssl_lib;

use ssl_lib::{hash::MessageDigest, ssl::SslRef};

/// The TLS connection
#[derive(Debug)]
pub struct SslStream<T> {
    ssl: InnerSsl<T>,
    digest: Option<Arc<SslDigest>>,
    pub(super) timing: TimingDigest,
}

impl<T> SslStream<T>
where
    T: AsyncRead + AsyncWrite + std::marker::Unpin,
{
    /// Create a new TLS connection from the given `stream`
    ///
    /// The caller needs to perform [`Self::connect()`] or [`Self::accept()`] to perform TLS
    /// handshake after.
    pub fn new(ssl: ssl::Ssl, stream: T) -> Result<Self> {
        let ssl = InnerSsl::new(ssl, stream)
            .explain_err(TLSHandshakeFailure, |e| format!("ssl stream error: {e}"))?;

        Ok(SslStream {
            ssl,
            digest: None,
            timing: Default::default(),
        })
    }

    /// Connect to the remote TLS server as a client
    pub async fn connect(&mut self) -> Result<(), ssl::Error> {
        Self::clear_error();
        let handshake_start = Instant::now();
        Pin::new(&mut self.ssl).connect().await?;
        self.timing.establishment_duration = Some(handshake_start.elapsed());
        self.timing.established_ts = SystemTime::now();
        self.digest = Some(Arc::new(SslDigest::from_ssl(self.ssl())));
        Ok(())
    }

    /// Finish the TLS handshake from client as a server
    pub async fn accept(&mut self) -> Result<(), ssl::Error> {
        Self::clear_error();
        let handshake_start = Instant::now();
        Pin::new(&mut self.ssl).accept().await?;
        self.timing.establishment_duration = Some(handshake_start.elapsed());
        self.timing.established_ts = SystemTime::now();
        self.digest = Some(Arc::new(SslDigest::from_ssl(self.ssl())));
        Ok(())
    }

    #[inline]
    fn clear_error() {
        let errs = tls::error::ErrorStack::get();
        if !errs.errors().is_empty() {
            warn!("Clearing dirty TLS error stack: {}", errs);
        }
    }
}

impl<T> SslStream<T> {
    pub fn ssl_digest(&self) -> Option<Arc<SslDigest>> {
        self.digest.clone()
    }

    /// Attempts to obtain a mutable reference to the SslDigest.
    /// This method returns `None` if the SslDigest is currently held by other references.
    pub(crate) fn ssl_digest_mut(&mut self) -> Option<&mut SslDigest> {
        Arc::get_mut(self.digest.as_mut()?)
    }
}

use std::ops::{Deref, DerefMut};

impl<T> Deref for SslStream<T> {
    type Target = InnerSsl<T>;

    fn deref(&self) -> &Self::Target {
        &self.ssl
    }
}

impl<T> DerefMut for SslStream<T> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.ssl
    }
}

impl<T> AsyncRead for SslStream<T>
where
    T: AsyncRead + AsyncWrite + Unpin + 'static,
{
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        // Each SSL_read sets up a record buffer (and, under SSL_MODE_RELEASE_BUFFERS, frees it
        // again) and fills the error queue when it finds nothing. A multiplexing reader (the
        // HTTP/2 connection) reads again every time it is woken to write, so with nothing
        // decrypted and waiting, ask the socket first. Not when OpenSSL's last call stopped on a
        // write (a handshake message a read had to send): only SSL_read finishes that.
        if self.ssl.ssl().pending() == 0 && !wants_to_write(self.ssl.ssl()) {
            let inner: &mut dyn Any = self.ssl.get_mut();
            if let Some(stream) = inner.downcast_mut::<L4Stream>() {
                ready!(stream.poll_read_ready(cx))?;
            }
        }
        Self::clear_error();
        Pin::new(&mut self.ssl).poll_read(cx, buf)
    }
}

/// Whether the last OpenSSL call on `ssl` stopped because it could not write (`SSL_want`).
fn wants_to_write(ssl: &SslRef) -> bool {
    // Both libraries' value for "stopped on a write" (`SSL_WRITING`).
    const SSL_WRITING: std::ffi::c_int = 2;
    extern "C" {
        fn SSL_want(ssl: *const tls::ssl_sys::SSL) -> std::ffi::c_int;
    }
    // SAFETY: an `SslRef` is the library's `SSL` itself, borrowed (foreign-types' layout), and
    // SSL_want only reads its state.
    unsafe { SSL_want(ssl as *const SslRef as *const tls::ssl_sys::SSL) == SSL_WRITING }
}

impl<T> AsyncWrite for SslStream<T>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Self::clear_error();
        Pin::new(&mut self.ssl).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context) -> Poll<io::Result<()>> {
        // A flush goes to the stream under TLS and makes no OpenSSL call, so it neither reads
        // nor leaves anything in the error queue (an HTTP/2 connection flushes ~1.6 times a
        // request, most of them with nothing to write).
        Pin::new(&mut self.ssl).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context) -> Poll<io::Result<()>> {
        Self::clear_error();
        Pin::new(&mut self.ssl).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Self::clear_error();
        Pin::new(&mut self.ssl).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }
}

impl<T> UniqueID for SslStream<T>
where
    T: UniqueID,
{
    fn id(&self) -> UniqueIDType {
        self.ssl.get_ref().id()
    }
}

impl<T> Ssl for SslStream<T> {
    fn get_ssl(&self) -> Option<&ssl::SslRef> {
        Some(self.ssl())
    }

    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        self.ssl_digest()
    }

    /// Return selected ALPN if any
    fn selected_alpn_proto(&self) -> Option<ALPN> {
        let ssl = self.get_ssl()?;
        ALPN::from_wire_selected(ssl.selected_alpn_protocol()?)
    }
}

impl SslDigest {
    pub fn from_ssl(ssl: &SslRef) -> Self {
        let cipher = match ssl.current_cipher() {
            Some(c) => c.name(),
            None => "",
        };

        let (cert_digest, org, sn) = match ssl.peer_certificate() {
            Some(cert) => {
                let cert_digest = match cert.digest(MessageDigest::sha256()) {
                    Ok(c) => c.as_ref().to_vec(),
                    Err(_) => Vec::new(),
                };
                (cert_digest, get_organization(&cert), get_serial(&cert).ok())
            }
            None => (Vec::new(), None, None),
        };

        SslDigest::new(cipher, ssl.version_str(), org, sn, cert_digest)
    }
}

// TODO: implement Peek if needed
impl<T> Peek for SslStream<T> {}

#[cfg(all(test, feature = "openssl"))]
mod tests {
    // TLS over a real loopback connection: the server end an l4 stream under this SslStream,
    // as a listener makes it; the client end a tokio-openssl stream whose records the test can
    // hold back and put on the socket itself, to choose how they arrive.
    use super::*;
    use crate::protocols::l4::stream::L4BufferSettings;
    use crate::tls::ssl::{SslContext, SslMethod};
    use std::os::unix::io::AsRawFd;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio::time::timeout;

    /// The client's socket, with a switch that keeps what the TLS library writes.
    struct Holding {
        socket: TcpStream,
        hold: bool,
        held: Vec<u8>,
    }

    impl AsyncRead for Holding {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            Pin::new(&mut self.socket).poll_read(cx, buf)
        }
    }

    impl AsyncWrite for Holding {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            if self.hold {
                self.held.extend_from_slice(buf);
                return Poll::Ready(Ok(buf.len()));
            }
            Pin::new(&mut self.socket).poll_write(cx, buf)
        }

        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.socket).poll_flush(cx)
        }

        fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.socket).poll_shutdown(cx)
        }
    }

    type Client = InnerSsl<Holding>;

    /// A connected pair, the handshake done; the server reads through a 64 KiB l4 read buffer.
    /// The handshake is keyed by a pre-shared key, so no certificate is needed.
    async fn pair() -> (SslStream<L4Stream>, Client) {
        const KEY: &[u8] = b"a key the two ends share, for tests";
        let mut acceptor = SslContext::builder(SslMethod::tls()).unwrap();
        acceptor.set_psk_server_callback(|_, _, psk| {
            psk[..KEY.len()].copy_from_slice(KEY);
            Ok(KEY.len())
        });
        let acceptor = acceptor.build();
        let mut connector = SslContext::builder(SslMethod::tls()).unwrap();
        connector.set_psk_client_callback(|_, _, identity, psk| {
            identity[..4].copy_from_slice(b"test");
            psk[..KEY.len()].copy_from_slice(KEY);
            Ok(KEY.len())
        });
        let connector = connector.build();

        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let socket = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        let mut l4 = L4Stream::from(accepted);
        l4.set_buffer(L4BufferSettings::new(64 * 1024, 0));
        let ssl = ssl::Ssl::new(&acceptor).unwrap();
        let mut server = SslStream::new(ssl, l4).unwrap();
        let ssl = ssl::Ssl::new(&connector).unwrap();
        let holding = Holding {
            socket,
            hold: false,
            held: Vec::new(),
        };
        let mut client = InnerSsl::new(ssl, holding).unwrap();
        let (accepted, connected) = tokio::join!(server.accept(), Pin::new(&mut client).connect());
        accepted.unwrap();
        connected.unwrap();
        (server, client)
    }

    /// What the client's TLS library would have sent for each message, one record each.
    async fn records(client: &mut Client, messages: &[&[u8]]) -> Vec<u8> {
        client.get_mut().hold = true;
        for message in messages {
            client.write_all(message).await.unwrap();
            client.flush().await.unwrap();
        }
        client.get_mut().hold = false;
        std::mem::take(&mut client.get_mut().held)
    }

    #[tokio::test]
    async fn a_read_that_finds_half_a_record_waits_for_the_rest_and_is_woken_by_it() {
        let (mut server, mut client) = pair().await;
        let wire = records(&mut client, &[b"hello"]).await;
        client.get_mut().socket.write_all(&wire[..3]).await.unwrap();

        let mut buf = [0u8; 16];
        let read = server.read(&mut buf);
        tokio::pin!(read);
        assert!(futures::poll!(&mut read).is_pending());
        client.get_mut().socket.write_all(&wire[3..]).await.unwrap();
        let n = timeout(Duration::from_secs(5), read)
            .await
            .expect("the rest of the record wakes the read")
            .unwrap();
        assert_eq!(&buf[..n], b"hello");
        assert!(!wants_to_write(server.ssl()));
    }

    #[tokio::test]
    async fn records_already_in_the_l4_read_buffer_are_read_without_the_socket() {
        let (mut server, mut client) = pair().await;
        let wire = records(&mut client, &[b"one", b"two"]).await;
        client.get_mut().socket.write_all(&wire).await.unwrap();

        let mut buf = [0u8; 3];
        server.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"one");
        // The second record is now in the l4 read buffer, and the socket has nothing more: a
        // read that asked only the socket would wait forever.
        let fd = server.get_ref().as_raw_fd();
        let mut peek = [0u8; 1];
        let peeked = nix::sys::socket::recv(
            fd,
            &mut peek,
            nix::sys::socket::MsgFlags::MSG_PEEK | nix::sys::socket::MsgFlags::MSG_DONTWAIT,
        );
        assert_eq!(peeked, Err(nix::errno::Errno::EAGAIN));
        timeout(Duration::from_secs(5), server.read_exact(&mut buf))
            .await
            .expect("the buffered record is read at once")
            .unwrap();
        assert_eq!(&buf, b"two");
    }
}
