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

//! The abstraction and implementation interface for service application logic

pub mod http_app;

use crate::server::ShutdownWatch;
use async_trait::async_trait;
use bytes::BytesMut;
use log::{debug, error};
use std::any::Any;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::{Instant, Sleep};

use crate::protocols::http::v1::server::read_buf_lazily;
use crate::protocols::http::v2::server;
use crate::protocols::http::{ReusableHttpStream, ServerSession};
use crate::protocols::Digest;
use crate::protocols::Stream;
use crate::protocols::ALPN;

// https://datatracker.ietf.org/doc/html/rfc9113#section-3.4
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

#[async_trait]
/// This trait defines the interface of a transport layer (TCP or TLS) application.
pub trait ServerApp {
    /// Whenever a new connection is established, this function will be called with the established
    /// [`Stream`] object provided.
    ///
    /// The application can do whatever it wants with the `session`.
    ///
    /// After processing the `session`, if the `session`'s connection is reusable, This function
    /// can return it to the service by returning `Some(session)`. The returned `session` will be
    /// fed to another [`Self::process_new()`] for another round of processing.
    /// If not reusable, `None` should be returned.
    ///
    /// The `shutdown` argument will change from `false` to `true` when the server receives a
    /// signal to shutdown. This argument allows the application to react accordingly.
    async fn process_new(
        self: &Arc<Self>,
        mut session: Stream,
        // TODO: make this ShutdownWatch so that all task can await on this event
        shutdown: &ShutdownWatch,
    ) -> Option<Stream>;

    /// This callback will be called once after the service stops listening to its endpoints.
    async fn cleanup(&self) {}
}
#[non_exhaustive]
#[derive(Clone, Debug, Default)]
/// HTTP Server options that control how the server handles some transport types.
pub struct HttpServerOptions {
    /// Allow HTTP/2 for plaintext.
    pub h2c: bool,

    /// Allow proxying CONNECT requests when handling HTTP traffic.
    ///
    /// When disabled, CONNECT requests are rejected with 405 by proxy services.
    pub allow_connect_method_proxying: bool,

    #[doc(hidden)]
    pub force_custom: bool,

    /// Maximum number of requests that this connection will handle. This is
    /// equivalent to [Nginx's keepalive requests](https://nginx.org/en/docs/http/ngx_http_upstream_module.html#keepalive_requests)
    /// which says:
    ///
    /// > Closing connections periodically is necessary to free per-connection
    /// > memory allocations. Therefore, using too high maximum number of
    /// > requests could result in excessive memory usage and not recommended.
    ///
    /// Unlike nginx, the default behavior here is _no limit_.
    pub keepalive_request_limit: Option<u32>,

    /// If set, close a downstream HTTP/2 connection that has been idle
    /// for this duration.
    ///
    /// Default: `None`
    pub h2_idle_timeout: Option<Duration>,

    /// Read HTTP/1 request heads without the spelling of their field names: one header map
    /// per head instead of two, and names written in title case (`X-Request-Id`) wherever
    /// the request is forwarded. See [`ServerSession::set_keep_header_case`].
    ///
    /// Default: `false` (names are written back as they came).
    pub h1_discard_header_case: bool,
}

/// Settings persisted across HTTP/1.x keepalive requests on the same downstream connection.
///
/// In addition to framework-managed keepalive parameters, this struct can carry an optional
/// user-defined context via [`set_user_context`](Self::set_user_context). The proxy layer
/// populates this through `ProxyHttp::persist_connection_context`
/// and delivers it to the next request through `ProxyHttp::on_connection_reuse`.
///
/// Also carries pipelined-prefix bytes when the caller has opted into HTTP/1.1
/// pipelining on the previous session. See
/// [`Self::set_pipelined_prefix`] and the
/// [`HttpSession::set_pipelining_enabled`](crate::protocols::http::v1::server::HttpSession::set_pipelining_enabled)
/// docs for the RFC 9112 §9.3.2 semantics.
#[derive(Debug)]
pub struct HttpPersistentSettings {
    keepalive_timeout: Option<u64>,
    keepalive_reuses_remaining: Option<u32>,
    /// User-defined context to carry to the next request on this connection.
    user_context: Option<Box<dyn Any + Send + Sync>>,
    /// Bytes read past the end of the previous request's body, to be parsed
    /// as the next pipelined request on the reused connection.
    pipelined_prefix: Option<BytesMut>,
    /// Whether HTTP/1.1 pipelining was enabled on the previous session;
    /// propagates to the next session so the proxy-level opt-in sticks
    /// across keepalive reuses without the adopter having to re-enable
    /// it on every request.
    pipelining_enabled: bool,
}

impl HttpPersistentSettings {
    pub fn for_session(session: &ServerSession) -> Self {
        HttpPersistentSettings {
            keepalive_timeout: session.get_keepalive(),
            keepalive_reuses_remaining: session.get_keepalive_reuses_remaining(),
            user_context: None,
            pipelined_prefix: None,
            pipelining_enabled: session.pipelining_enabled(),
        }
    }

    /// Set a user-defined context to be carried to the next request on this connection.
    pub fn set_user_context(&mut self, ctx: Box<dyn Any + Send + Sync>) {
        self.user_context = Some(ctx);
    }

    /// Take the user-defined context, if any.
    pub fn take_user_context(&mut self) -> Option<Box<dyn Any + Send + Sync>> {
        self.user_context.take()
    }

    /// Set pipelined-prefix bytes to be fed to the next session on this
    /// connection. Called by the proxy layer when HTTP/1.1 pipelining is
    /// enabled on the current session and overread bytes were present at
    /// reuse time.
    pub fn set_pipelined_prefix(&mut self, prefix: BytesMut) {
        self.pipelined_prefix = Some(prefix);
    }

    pub fn apply_to_session(self, session: &mut ServerSession) {
        let Self {
            keepalive_timeout,
            mut keepalive_reuses_remaining,
            user_context,
            pipelined_prefix,
            pipelining_enabled,
        } = self;

        // Reduce the number of times the connection for this session can be
        // reused by one. A session with reuse count of zero won't be reused
        if let Some(reuses) = keepalive_reuses_remaining.as_mut() {
            *reuses = reuses.saturating_sub(1);
        }

        session.set_keepalive(keepalive_timeout);
        session.set_keepalive_reuses_remaining(keepalive_reuses_remaining);

        // Carry user context into the session for the proxy layer to consume
        session.set_connection_user_context(user_context);

        // Replay pipelining opt-in so it stays on across keepalive reuses.
        session.set_pipelining_enabled(pipelining_enabled);

        // Feed any pipelined prefix bytes to the new session's request parser
        // so they are treated as the start of the next request.
        if let Some(prefix) = pipelined_prefix {
            session.set_pipelined_prefix(prefix);
        }
    }
}

#[derive(Debug)]
pub struct ReusedHttpStream {
    stream: Stream,
    persistent_settings: Option<HttpPersistentSettings>,
}

impl ReusedHttpStream {
    pub fn new(stream: Stream, persistent_settings: Option<HttpPersistentSettings>) -> Self {
        ReusedHttpStream {
            stream,
            persistent_settings,
        }
    }

    /// Build a reusable HTTP stream from a finished session, preserving any
    /// pipelined prefix bytes in the persistent settings for the next request.
    pub fn from_reusable_stream(
        reusable: ReusableHttpStream,
        mut persistent_settings: HttpPersistentSettings,
    ) -> Self {
        let (stream, pipelined_prefix) = reusable.into_parts();
        if let Some(prefix) = pipelined_prefix {
            persistent_settings.set_pipelined_prefix(prefix);
        }
        Self::new(stream, Some(persistent_settings))
    }

    pub fn consume(self) -> (Stream, Option<HttpPersistentSettings>) {
        (self.stream, self.persistent_settings)
    }
}

/// This trait defines the interface of an HTTP application.
#[async_trait]
pub trait HttpServerApp {
    /// Similar to the [`ServerApp`], this function is called whenever a new HTTP session is established.
    ///
    /// After successful processing, [`ServerSession::finish()`] can be
    /// called to return an optionally reusable connection back to the service.
    /// The caller needs to make sure that the connection is in a reusable state
    /// i.e., no error or incomplete read or write headers or bodies. Otherwise
    /// a `None` should be returned.
    async fn process_new_http(
        self: &Arc<Self>,
        mut session: ServerSession,
        // TODO: make this ShutdownWatch so that all task can await on this event
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream>;

    /// The same, for a session already on the heap, which is how the service hands every session
    /// over. The default unboxes it for [`Self::process_new_http`]; an app that keeps its session
    /// boxed (as `pingora-proxy` does) takes it as it is, and a session (~700 bytes) is then not
    /// copied into each async call's state on its way in.
    async fn process_new_http_boxed(
        self: &Arc<Self>,
        session: Box<ServerSession>,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream>
    where
        Self: Send + Sync,
    {
        self.process_new_http(*session, shutdown).await
    }

    /// Provide options on how HTTP/2 connection should be established. This function will be called
    /// every time a new HTTP/2 **connection** needs to be established.
    ///
    /// A `None` means to use the built-in default options. See [`server::H2Options`] for more details.
    fn h2_options(&self) -> Option<server::H2Options> {
        None
    }

    /// Provide HTTP server options used to override default behavior. This function will be called
    /// every time a new connection is processed.
    ///
    /// A `None` means no server options will be applied.
    fn server_options(&self) -> Option<&HttpServerOptions> {
        None
    }

    async fn http_cleanup(&self) {}

    #[doc(hidden)]
    async fn process_custom_session(
        self: Arc<Self>,
        _stream: Stream,
        _shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        None
    }
}

#[async_trait]
impl<T> ServerApp for T
where
    T: HttpServerApp + Send + Sync + 'static,
{
    async fn process_new(
        self: &Arc<Self>,
        mut stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let mut h2c = self.server_options().as_ref().map_or(false, |o| o.h2c);
        let custom = self
            .server_options()
            .as_ref()
            .map_or(false, |o| o.force_custom);

        // h2c is for cleartext connections; on TLS, ALPN handles protocol negotiation.
        // Otherwise, h2c stays true on TLS streams, forcing HTTP/1.1 clients into HTTP/2
        if stream.get_ssl_digest().is_some() {
            h2c = false;
        }
        // try to read h2 preface
        else if h2c && !custom {
            let mut buf = [0u8; H2_PREFACE.len()];
            let peeked = stream
                .try_peek(&mut buf)
                .await
                .map_err(|e| {
                    // this error is normal when h1 reuse and close the connection
                    debug!("Read error while peeking h2c preface {e}");
                    e
                })
                .ok()?;
            // not all streams support peeking
            if peeked {
                // turn off h2c (use h1) if h2 preface doesn't exist
                h2c = buf == H2_PREFACE;
            }
        }
        if h2c || matches!(stream.selected_alpn_proto(), Some(ALPN::H2)) {
            // Boxed: this future is what an HTTP/1 connection holds while it waits for its next
            // request, and inline the HTTP/2 handshake and accept loop would make it that big.
            Box::pin(async move {
                // create a shared connection digest
                let digest = Arc::new(Digest {
                    ssl_digest: stream.get_ssl_digest(),
                    // TODO: log h2 handshake time
                    timing_digest: stream.get_timing_digest(),
                    proxy_digest: stream.get_proxy_digest(),
                    socket_digest: stream.get_socket_digest(),
                });

                let h2_options = self.h2_options();
                let h2_conn = match server::handshake(stream, h2_options).await {
                    Err(e) => {
                        error!("H2 handshake error {e}");
                        return;
                    }
                    Ok(c) => c,
                };

                // The accept-loop body — including the graceful-shutdown state
                // machine — lives in `server::accept_downstream_sessions` so that
                // the same code path is exercised by tests in `protocols::http::v2`.
                let app = self.clone();
                let shutdown_for_session = shutdown.clone();
                let h2_idle_timeout = self.server_options().and_then(|o| o.h2_idle_timeout);
                server::accept_downstream_sessions(
                    h2_conn,
                    digest,
                    shutdown.clone(),
                    h2_idle_timeout,
                    |h2_stream, guard| {
                        let app = app.clone();
                        let shutdown = shutdown_for_session.clone();
                        // Boxed before the spawn: the task's future then holds a pointer, not
                        // the session, which it would copy in and out again.
                        // Note, `PersistentSettings` not currently relevant for h2
                        let session = Box::new(ServerSession::new_http2(h2_stream));
                        pingora_runtime::current_handle().spawn(async move {
                            // hold `guard` for the session's lifetime so the accept
                            // loop's idle timeout sees this connection as busy.
                            let _guard = guard;
                            app.process_new_http_boxed(session, &shutdown).await;
                        });
                    },
                )
                .await;
            })
            .await;
        } else if custom || matches!(stream.selected_alpn_proto(), Some(ALPN::Custom(_))) {
            return self.clone().process_custom_session(stream, shutdown).await;
        } else {
            // No ALPN or ALPN::H1 and h2c was not configured, fallback to HTTP/1.1
            let discard_header_case = self
                .server_options()
                .is_some_and(|opts| opts.h1_discard_header_case);
            let session = new_http1_session(stream, |session| {
                if *shutdown.borrow() {
                    // stop downstream from reusing if this service is shutting down soon
                    session.set_keepalive(None);
                } else {
                    // default 60s
                    session.set_keepalive(Some(60));
                }
                session.set_keepalive_reuses_remaining(
                    self.server_options()
                        .and_then(|opts| opts.keepalive_request_limit),
                );
                session.set_keep_header_case(!discard_header_case);
            });

            // Between two requests the connection's state is its stream and settings alone: a
            // value matched in a loop's head would keep a slot of its own (96 bytes) in the
            // future this wait is part of, for as long as the connection idles.
            let (mut stream, mut persistent_settings) = self
                .process_new_http_boxed(session, shutdown)
                .await?
                .consume();
            let mut idle = IdleWait::default();
            loop {
                if let Some(settings) = persistent_settings
                    .as_mut()
                    .filter(|settings| settings.pipelined_prefix.is_none())
                {
                    // Keep-alive off (`None`) leaves the session to read as released.
                    if let Some(seconds) = settings.keepalive_timeout {
                        // 0: no timeout, as `ServerSession::set_keepalive` has it.
                        let timeout = (seconds > 0).then(|| Duration::from_secs(seconds));
                        let first_bytes =
                            wait_for_next_request(&mut stream, timeout, &mut idle, shutdown)
                                .await?;
                        settings.set_pipelined_prefix(first_bytes);
                    }
                }
                let session = new_http1_session(stream, |session| {
                    if let Some(persistent_settings) = persistent_settings {
                        persistent_settings.apply_to_session(session);
                    }
                    session.set_keep_header_case(!discard_header_case);
                });
                (stream, persistent_settings) = self
                    .process_new_http_boxed(session, shutdown)
                    .await?
                    .consume();
            }
        }
        None
    }

    async fn cleanup(&self) {
        self.http_cleanup().await;
    }
}

/// A new HTTP/1 session on `stream`, set up by `setup`. Built outside `process_new`'s async body:
/// a session borrowed there (to set it up) keeps its room (~700 bytes) in the future a connection
/// holds between requests, long after the session has been handed on.
fn new_http1_session(stream: Stream, setup: impl FnOnce(&mut ServerSession)) -> Box<ServerSession> {
    let mut session = Box::new(ServerSession::new_http1(stream));
    setup(&mut session);
    session
}

/// What an HTTP/1 connection does between two requests: it waits for the client's next bytes
/// holding the stream and its [`IdleWait`] alone, with no session and no request state (nginx
/// keeps ~0.5 KB per idle connection the same way), and hands what it read to the next session
/// as the start of its head. The read is the one the session would have made
/// (`read_buf_lazily`), so a request costs the same syscalls.
///
/// Returns `None` when the connection is to be closed instead, as the session's own read would
/// have: the client closed it or the read failed, the keep-alive timeout passed, or the server
/// is shutting down.
async fn wait_for_next_request(
    stream: &mut Stream,
    keepalive_timeout: Option<Duration>,
    idle: &mut IdleWait,
    shutdown: &ShutdownWatch,
) -> Option<BytesMut> {
    let mut buf = BytesMut::new();
    let read = read_buf_lazily(stream, &mut buf);
    let IdleWait {
        timer,
        shutdown: shutdown_signal,
    } = idle;
    let timed_out = async {
        let Some(keepalive_timeout) = keepalive_timeout else {
            return std::future::pending().await;
        };
        let deadline = Instant::now() + keepalive_timeout;
        let timer = match timer {
            Some(timer) => {
                timer.as_mut().reset(deadline);
                timer
            }
            None => timer.insert(Box::pin(tokio::time::sleep_until(deadline))),
        };
        timer.await;
        debug!("keepalive timeout {keepalive_timeout:?} reached");
    };
    let shutting_down =
        shutdown_signal.get_or_insert_with(|| Box::pin(shutting_down(shutdown.clone())));
    let read = tokio::select! {
        biased;
        read = read => read.ok(),
        _ = timed_out => None,
        _ = shutting_down => None,
    };
    match read {
        Some(n) if n > 0 => Some(buf),
        _ => None,
    }
}

/// What an HTTP/1 connection's waits between requests share, made at its first wait: the
/// keep-alive timer and the shutdown signal.
///
/// A timer made per wait is filed into tokio's timer wheel on its first poll and taken out
/// again when dropped, under the wheel's lock, on every request, and a shutdown signal made per
/// wait registers with the shutdown watch each time; these are made once. The timer is moved to
/// each wait's deadline: moving it later is a compare-and-swap (tokio re-files the entry when
/// its old deadline comes). A wait the next request cuts short leaves both armed, which at worst
/// wakes the connection's task once while it serves a request. Both are boxed: inline, they
/// would take ~200 bytes of the future every connection holds, whether or not it ever waits.
#[derive(Default)]
struct IdleWait {
    timer: Option<Pin<Box<Sleep>>>,
    shutdown: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
}

/// Resolves once the server is shutting down (never, if the watch's sender is gone).
async fn shutting_down(mut shutdown: ShutdownWatch) {
    loop {
        if *shutdown.borrow_and_update() {
            return;
        }
        if shutdown.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_test::io::Builder;

    #[test]
    fn test_persistent_settings_user_context_roundtrip() {
        // Create a mock H1 session
        let mock_io = Builder::new().build();
        let mut session = ServerSession::new_http1(Box::new(mock_io));
        session.set_keepalive(Some(60));

        // Snapshot settings (no user context yet)
        let mut settings = HttpPersistentSettings::for_session(&session);
        assert!(settings.take_user_context().is_none());

        // Set user context
        settings.set_user_context(Box::new(123u64));

        // Apply to a fresh session -- user context should transfer
        let mock_io2 = Builder::new().build();
        let mut session2 = ServerSession::new_http1(Box::new(mock_io2));
        settings.apply_to_session(&mut session2);

        // The user context should now be on the session
        let ctx = session2.take_connection_user_context();
        assert!(ctx.is_some());
        let val = ctx.unwrap().downcast::<u64>().unwrap();
        assert_eq!(*val, 123u64);

        // Keepalive should also have been applied
        assert_eq!(session2.get_keepalive(), Some(60));
    }

    #[test]
    fn test_persistent_settings_no_user_context_by_default() {
        let mock_io = Builder::new().build();
        let mut session = ServerSession::new_http1(Box::new(mock_io));
        session.set_keepalive(Some(30));

        let settings = HttpPersistentSettings::for_session(&session);

        let mock_io2 = Builder::new().build();
        let mut session2 = ServerSession::new_http1(Box::new(mock_io2));
        settings.apply_to_session(&mut session2);

        // No user context should be present
        assert!(session2.take_connection_user_context().is_none());
        // Keepalive should still work
        assert_eq!(session2.get_keepalive(), Some(30));
    }

    /// Runs `wait_for_next_request` on the server end of a pipe; returns the client end, the
    /// shutdown sender and the wait's outcome.
    fn wait_on_pipe(
        keepalive_timeout: Option<Duration>,
    ) -> (
        tokio::io::DuplexStream,
        tokio::sync::watch::Sender<bool>,
        tokio::task::JoinHandle<Option<Vec<u8>>>,
    ) {
        let (client, server) = tokio::io::duplex(1024);
        let (shutdown_tx, shutdown) = tokio::sync::watch::channel(false);
        let mut stream: Stream = Box::new(server);
        let wait = tokio::spawn(async move {
            wait_for_next_request(
                &mut stream,
                keepalive_timeout,
                &mut IdleWait::default(),
                &shutdown,
            )
            .await
            .map(|first_bytes| first_bytes.to_vec())
        });
        (client, shutdown_tx, wait)
    }

    #[tokio::test]
    async fn the_wait_between_requests_hands_over_the_first_bytes() {
        use tokio::io::AsyncWriteExt;
        let (mut client, _shutdown, wait) = wait_on_pipe(None);
        tokio::task::yield_now().await;
        assert!(!wait.is_finished());
        client.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        assert_eq!(wait.await.unwrap().unwrap(), b"GET / HTTP/1.1\r\n");
    }

    #[tokio::test]
    async fn the_wait_between_requests_ends_when_the_client_closes() {
        let (client, _shutdown, wait) = wait_on_pipe(None);
        drop(client);
        assert_eq!(wait.await.unwrap(), None);
    }

    #[tokio::test]
    async fn the_wait_between_requests_ends_when_the_server_shuts_down() {
        let (_client, shutdown, wait) = wait_on_pipe(None);
        tokio::task::yield_now().await;
        shutdown.send(true).unwrap();
        assert_eq!(wait.await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_connections_waits_share_one_timer_moved_to_each_waits_deadline() {
        use tokio::io::AsyncWriteExt;
        let (mut client, server) = tokio::io::duplex(1024);
        let (_shutdown_tx, shutdown) = tokio::sync::watch::channel(false);
        let mut stream: Stream = Box::new(server);
        let mut idle = IdleWait::default();
        client.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        // The first wait arms the timer far off and is cut short by the client's bytes.
        let first = wait_for_next_request(
            &mut stream,
            Some(Duration::from_secs(3600)),
            &mut idle,
            &shutdown,
        )
        .await;
        assert_eq!(first.unwrap().to_vec(), b"GET / HTTP/1.1\r\n");
        // The second moves the same timer to its own, nearer deadline, and ends there (a timer
        // left at the first deadline would outlast the bound and fail the test, not hang it).
        let bound = Duration::from_secs(10);
        let waited = std::time::Instant::now();
        let second = tokio::time::timeout(
            bound,
            wait_for_next_request(
                &mut stream,
                Some(Duration::from_millis(100)),
                &mut idle,
                &shutdown,
            ),
        )
        .await
        .expect("the wait ends at its own deadline");
        assert_eq!(second, None);
        assert!(waited.elapsed() >= Duration::from_millis(90));
        // A third, later deadline on the expired timer is kept too.
        let waited = std::time::Instant::now();
        let third = tokio::time::timeout(
            bound,
            wait_for_next_request(
                &mut stream,
                Some(Duration::from_millis(150)),
                &mut idle,
                &shutdown,
            ),
        )
        .await
        .expect("the wait ends at its own deadline");
        assert_eq!(third, None);
        assert!(waited.elapsed() >= Duration::from_millis(140));
    }

    #[tokio::test]
    async fn the_wait_between_requests_ends_at_the_keepalive_timeout() {
        let (_client, _shutdown, wait) = wait_on_pipe(Some(Duration::from_millis(100)));
        let waited = std::time::Instant::now();
        assert_eq!(wait.await.unwrap(), None);
        assert!(waited.elapsed() >= Duration::from_millis(90));
    }
}
