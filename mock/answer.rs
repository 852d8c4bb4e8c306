//! What each request gets: `Hello from <port>`, the request's body and headers telling what
//! arrived, or the fault the flags ask for. One async function for HTTP/1.1 and HTTP/2 alike;
//! hyper does the protocol around it.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{HeaderName, CONNECTION, CONTENT_TYPE};
use http::{Request, Response, Version};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};

use crate::{grpc, websocket, Behaviour, ConnectionFault};

/// What every connection of the process shares.
pub(crate) struct Shared {
    /// The port the mock listens on, named in every answer.
    pub(crate) port: u16,
    pub(crate) behaviour: Behaviour,
    /// When the process started, for `--flap-ms`.
    pub(crate) started: Instant,
    /// The state of the random numbers behind `--fail-rate`.
    pub(crate) seed: AtomicU64,
    /// Requests served by the process, for `--fail-every`.
    pub(crate) requests: AtomicU64,
    /// Requests being answered now, and the most there ever were at once
    /// (`X-Mock-Peak-In-Flight`): how much load the gateway let through.
    pub(crate) in_flight: AtomicU64,
    pub(crate) peak_in_flight: AtomicU64,
    /// Requests counted for `--stall-every`.
    pub(crate) stalls: AtomicU64,
}

/// Counts a request in flight while it lives.
struct InFlight<'a>(&'a Shared);

impl<'a> InFlight<'a> {
    fn enter(shared: &'a Shared) -> Self {
        let now = shared.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        shared.peak_in_flight.fetch_max(now, Ordering::SeqCst);
        Self(shared)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// What one connection's requests know about the mock.
#[derive(Clone)]
pub(crate) struct Mock {
    pub(crate) shared: Arc<Shared>,
    /// Which connection of the process this is, from 1.
    pub(crate) connection: u64,
    /// Requests that came on this connection before.
    pub(crate) answered: Arc<AtomicU64>,
}

/// Answers one request. An `Err` makes hyper drop the connection without a word (`--close`).
pub(crate) async fn answer(request: Request<Incoming>, mock: Mock) -> io::Result<Response<Frames>> {
    let shared = &mock.shared;
    let behaviour = &shared.behaviour;
    if websocket::wants_upgrade(&request) {
        return websocket::accept(request);
    }
    let _in_flight = InFlight::enter(shared);
    let (parts, body) = request.into_parts();
    let received = body.collect().await.map_err(io::Error::other)?.to_bytes();
    let reused = mock.answered.fetch_add(1, Ordering::Relaxed) > 0;
    match behaviour.fault_now(shared.started) {
        _ if reused && behaviour.close_reused => {
            return Err(io::Error::other("told to close reused connections"))
        }
        Some(ConnectionFault::Close) => {
            return Err(io::Error::other("told to close without answering"))
        }
        // Hold the request until the client gives up on it.
        Some(ConnectionFault::Hang) => return std::future::pending().await,
        Some(ConnectionFault::Reset) | None => {}
    }
    if !behaviour.delay.is_zero() {
        tokio::time::sleep(behaviour.delay).await;
    }
    if let Some((every, pause)) = behaviour.stall {
        if shared.stalls.fetch_add(1, Ordering::Relaxed) % every == every - 1 {
            tokio::time::sleep(pause).await;
        }
    }
    if grpc::is_grpc(&parts) {
        return Ok(grpc::answer(&parts, &received, shared.port));
    }

    let path = match parts.version {
        // The request target as it came (origin-form: path and query).
        Version::HTTP_11 | Version::HTTP_10 => parts.uri.to_string(),
        _ => parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned(),
    };
    let health_path = parts.uri.path() == "/healthz";
    let every = behaviour
        .fail_every
        .is_some_and(|n| shared.requests.fetch_add(1, Ordering::Relaxed) % n == n - 1);
    let fail = (behaviour.fail_rate > 0.0 && next_random(&shared.seed) < behaviour.fail_rate)
        || (behaviour.fail_health && health_path)
        || every;
    let (status, greeting) = if fail {
        (500, "Failure from")
    } else {
        (behaviour.status, "Hello from")
    };
    if behaviour.log {
        println!("{} {} {path} -> {status}", shared.port, parts.method);
    }
    let mut body = format!("{greeting} {}\n", shared.port).into_bytes();
    body.extend_from_slice(&received);
    body.resize(body.len() + behaviour.body_bytes, b'.');

    let protocol = if parts.version == Version::HTTP_2 {
        "h2"
    } else {
        "h1"
    };
    let mut response = Response::builder()
        .status(status)
        .header(CONTENT_TYPE, "text/plain")
        .header("x-mock-port", shared.port)
        .header("x-mock-connection", mock.connection)
        .header("x-mock-method", parts.method.as_str())
        .header("x-mock-path", path)
        .header("x-mock-protocol", protocol)
        .header(
            "x-mock-peak-in-flight",
            shared.peak_in_flight.load(Ordering::SeqCst),
        )
        .body(Frames::paced(Bytes::from(body), behaviour.slow_body))
        .map_err(io::Error::other)?;
    let headers = response.headers_mut();
    if let Some(seconds) = behaviour.retry_after {
        headers.insert(http::header::RETRY_AFTER, seconds.into());
    }
    for (name, value) in &parts.headers {
        if let Ok(echo) = HeaderName::try_from(format!("x-echo-{name}")) {
            headers.append(echo, value.clone());
        }
    }
    if behaviour.slow_head.is_some() {
        // The trickling socket slows the first head on a connection only.
        headers.insert(CONNECTION, http::HeaderValue::from_static("close"));
    }
    Ok(response)
}

/// A uniform number in [0, 1) from a shared xorshift state: good enough to fail "30 % of the
/// time" without pulling in a random-number crate.
fn next_random(state: &AtomicU64) -> f64 {
    let mut x = state.load(Ordering::Relaxed);
    loop {
        let mut next = x;
        next ^= next << 13;
        next ^= next >> 7;
        next ^= next << 17;
        match state.compare_exchange_weak(x, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return (next >> 11) as f64 / (1u64 << 53) as f64,
            Err(current) => x = current,
        }
    }
}

/// A response body given frame by frame (data, then trailers for gRPC), with a pause between
/// frames for `--slow-body-ms`. Its exact length is known unless it has trailers, so HTTP/1.1
/// answers carry a `Content-Length`.
pub(crate) struct Frames {
    frames: VecDeque<Frame<Bytes>>,
    pause: Duration,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Frames {
    /// These frames, one after another.
    pub(crate) fn new(frames: impl IntoIterator<Item = Frame<Bytes>>) -> Self {
        Frames {
            frames: frames.into_iter().collect(),
            pause: Duration::ZERO,
            sleep: None,
        }
    }

    /// `body` at once, or in five parts `pause` apart.
    fn paced(body: Bytes, pause: Option<Duration>) -> Self {
        let Some(pause) = pause else {
            return Frames::new([Frame::data(body)]);
        };
        let part = body.len().div_ceil(5).max(1);
        let parts = (0..body.len())
            .step_by(part)
            .map(|start| Frame::data(body.slice(start..body.len().min(start + part))));
        Frames {
            pause,
            ..Frames::new(parts)
        }
    }
}

impl Body for Frames {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        if let Some(sleep) = &mut this.sleep {
            ready!(sleep.as_mut().poll(cx));
            this.sleep = None;
        }
        let Some(frame) = this.frames.pop_front() else {
            return Poll::Ready(None);
        };
        if !this.pause.is_zero() && !this.frames.is_empty() {
            this.sleep = Some(Box::pin(tokio::time::sleep(this.pause)));
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.frames.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        if self.frames.iter().any(Frame::is_trailers) {
            return SizeHint::default();
        }
        let data = self.frames.iter().filter_map(Frame::data_ref);
        SizeHint::with_exact(data.map(|d| d.len() as u64).sum())
    }
}
