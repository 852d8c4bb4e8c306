//! The Pingora [`ProxyHttp`] implementation: the only module that speaks Pingora's hooks.
//!
//! It translates hook events into routing, selection and breaker outcomes, and keeps all
//! per-request state in one `RequestContext`:
//!
//! | hook                        | what it does here                                          |
//! |-----------------------------|------------------------------------------------------------|
//! | `request_filter`            | strict head checks (400, 414, 431, 501); routes `/v1/proxy/{service}` (404); rate limits (429 + `Retry-After`); resolves dot segments and escaped slashes (400 above the root, or an escaped slash refused); body limit by `Content-Length` (413); takes `Expect` (417); pipelining on; sizes the replay buffer; makes a hedgeable request's attempts itself (`hedge`) |
//! | `request_body_filter`       | body limit while the body streams (413)                    |
//! | `upstream_peer`             | picks a backend (filtered by breakers and concurrency limits; round-robin or latency-aware), waiting in the service's queue when all are full; 503 when all are open or overloaded |
//! | `upstream_request_filter`   | sends the client its `100 Continue` (first attempt); rewrites the path, `Host`, `Forwarded`, `X-Forwarded-*`, `X-Request-Id`; drops header names with `_` |
//! | `upstream_response_timeouts` | response-header timeout, body idle timeout, total deadline (HTTP/1 and HTTP/2 upstreams) |
//! | `upstream_response_filter`  | remembers the backend's status; sends a replayable request on to another backend when the status is one the service retries on (502, 503, 504 by default); one `Content-Length` of identical repeats |
//! | `fail_to_connect`           | records the failure, fails over to an untried backend      |
//! | `error_while_proxy`         | before any response byte: fails an idempotent request over; a client too slow with its body is nobody's failure |
//! | `logging`                   | records the attempt's outcome, logs the status block       |
//! | `fail_to_proxy`             | answers errors with JSON (502, 503 + `Retry-After`, 504, 413) |
//! | `request_summary`           | names the request id in Pingora's error log lines          |
//!
//! Each attempt's outcome is recorded exactly once, in its breaker and its metrics: failures
//! that lead to a failover in `fail_to_connect` or `error_while_proxy`, everything else in
//! `logging`. The attempt's
//! [`Permit`](crate::breaker::Permit) lives in the context, so a request that ends any other
//! way (client gone, task dropped) drops it, which is neutral and frees a Half-Open probe slot.
//!
//! The hooks stay here; what they call is split by phase, each in a module of its own:
//! `route` (the head checks, routing and rate limits), `pick` (the backend, and the queue),
//! `retry` (failovers: which requests go on, and where), `hedge` (hedged requests, made outside
//! Pingora's single attempt), `forward` (the peer, the forwarded headers, the
//! `100 Continue`), `settle` (an attempt's outcome, the error reply) and `observe` (the
//! access-log record).

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header;
use pingora::http::RequestHeader;
use pingora::modules::http::HttpModules;
use pingora::prelude::*;
use pingora::{ErrorSource, RetryType};
use pingora_proxy::{
    FailToProxy, ProxyHttp, ProxyWarnLogContext, Session, UpstreamResponseTimeouts,
};

use crate::breaker::Outcome;
use crate::config::HeaderLimits;
use crate::config::LogFormat;
use crate::load::Overflow;
use crate::request_id::RequestId;
use crate::selector::Pick;
use crate::service::{Backend, Service, ServiceTable};
use crate::telemetry::access_log::AccessLog;
use crate::telemetry::logs;
use crate::telemetry::metrics::{AttemptOutcome, GatewayStats};

mod forward;
mod hedge;
mod observe;
mod pick;
mod retry;
mod route;
mod settle;

use forward::{send_continue, upstream_peer};
use observe::{access_record, loggable_path};
use retry::Replay;
use route::take_expectation;
use settle::{attempt_outcome, client_gone, error_reply, failure_outcome, is_timeout};

/// How long the rest of a request body is read before closing a connection after an error.
const LINGERING_CLOSE: Duration = Duration::from_secs(2);

/// The gateway's proxy logic, shared by all requests.
#[derive(Debug)]
pub(crate) struct GatewayProxy {
    services: Arc<ArcSwap<ServiceTable>>,
    /// The hedged requests' own connections (`hedge`): Pingora's are its proxy's.
    hedge_connector: hedge::HedgeConnector,
    stats: Arc<GatewayStats>,
    settings: ProxySettings,
    access_log: Option<AccessLog>,
}

/// How the proxy treats requests, beyond what each service says.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ProxySettings {
    /// Log the status block of the serving backend after each request, in this format.
    pub status_log: Option<LogFormat>,
    /// Keep an incoming `X-Forwarded-For` chain and `Forwarded` list (and append the peer)
    /// instead of replacing them.
    pub trust_forwarded_for: bool,
    /// Forward request header names that contain `_` (dropped otherwise: CGI-style backends
    /// read `X_Forwarded_For` as `X-Forwarded-For`).
    pub underscores_in_headers: bool,
    /// Forward HTTP/1 header names spelled as they came (both ways), rather than in title
    /// case: one header map per head instead of two (docs/performance.md).
    pub preserve_header_case: bool,
    /// How long an idle client connection waits for its next request (whole seconds).
    pub keepalive_timeout: Duration,
    /// How long one write to the client may wait for it to read.
    pub client_write_timeout: Duration,
    /// Limits on request heads.
    pub header_limits: HeaderLimits,
}

impl GatewayProxy {
    /// A proxy over `services` that counts unroutable requests in `stats`.
    pub fn new(
        services: Arc<ArcSwap<ServiceTable>>,
        stats: Arc<GatewayStats>,
        settings: ProxySettings,
    ) -> Self {
        Self {
            services,
            stats,
            settings,
            hedge_connector: hedge::HedgeConnector::new(),
            access_log: None,
        }
    }

    /// The same, writing one access-log line per request.
    pub(crate) fn with_access_log(self, access_log: AccessLog) -> Self {
        Self {
            access_log: Some(access_log),
            ..self
        }
    }
}

/// Everything one request carries from hook to hook.
#[derive(Debug)]
pub(crate) struct RequestContext {
    /// Names the request in error replies, logs and towards the backend.
    request_id: RequestId,
    /// When the request's head had arrived (for the total timeout and the access log).
    started: Instant,
    /// When its first attempt at a backend started.
    upstream_started: Option<Instant>,
    /// How many backends it was sent to.
    attempts: u32,
    /// Request body bytes seen so far (over the service's limit: the answer is 413).
    body_bytes: u64,
    /// The routed service.
    service: Option<Arc<Service>>,
    /// Where the forwarded rest of the path starts in the request path.
    rest_start: usize,
    /// The rest of the path with its dot segments resolved (and escaped slashes decoded, where
    /// the service says so), when that changed it.
    resolved_rest: Option<String>,
    /// The client waits for `100 Continue` before sending its body: the gateway sends it
    /// once the first attempt has connected.
    continue_pending: bool,
    /// The request's place in the service's rotation, taken on the first attempt.
    ticket: Option<usize>,
    /// Backends that failed to connect for this request; never picked again.
    tried: Vec<usize>,
    /// The attempt in flight, not yet recorded.
    attempt: Option<Attempt>,
    /// The backend already picked for the next attempt: a retry on status holds it.
    next_pick: Option<Pick>,
    /// The latest attempt's answer had this status, which sends the request on (its attempt
    /// is settled and the next one picked).
    retried_status: Option<u16>,
    /// The backend of the latest attempt, for the status block.
    last_backend: Option<usize>,
    /// The status the latest attempt's backend answered with.
    upstream_status: Option<u16>,
    /// The latest attempt's backend answered `503` with a `Retry-After` of this long.
    asked_cooldown: Option<Duration>,
    /// The latest attempt's backend answered a gRPC call with `grpc-status: 14`
    /// (UNAVAILABLE): a failure, whatever the HTTP status.
    grpc_unavailable: bool,
    /// Whether the latest failed-over attempt timed out (504 rather than 502).
    last_failure_timed_out: bool,
    /// The latest attempt found its pooled connection already closed by the backend: Pingora
    /// sends the request again on a fresh connection, which is not a failover.
    stale_connection: bool,
    /// A failover or retry on status was wanted but the body was over the replay limit.
    not_replayed: bool,
    /// Why `upstream_peer` found no backend, if it did not.
    refusal: Option<Refusal>,
    /// When the service's total timeout ends for this request.
    deadline: Option<Instant>,
}

/// One attempt at a backend: the pick and when it was made.
#[derive(Debug)]
struct Attempt {
    pick: Pick,
    started: Instant,
}

impl Attempt {
    /// Records how the attempt ended in its backend's breaker, metrics and load (a latency
    /// sample, when the outcome says how long the backend took), and frees its slot.
    fn settle(self, service: &Service, outcome: AttemptOutcome) {
        self.settle_asking(service, outcome, None, Instant::now());
    }

    /// The same, for an attempt that `ended` then, whose backend `asked` for a cooldown
    /// (`Retry-After` on a `503`): should this failure open its breaker, it stays Open that
    /// long (bounded).
    fn settle_asking(
        self,
        service: &Service,
        outcome: AttemptOutcome,
        asked: Option<Duration>,
        ended: Instant,
    ) {
        let elapsed = ended.saturating_duration_since(self.started);
        service.backends[self.pick.index]
            .stats
            .record(outcome, elapsed);
        match (outcome.breaker_outcome(), asked) {
            (Some(Outcome::Failure), Some(cooldown)) => {
                self.pick.permit.record_failure_asking(cooldown)
            }
            (Some(outcome), _) => self.pick.permit.record(outcome),
            (None, _) => {}
        }
        if let Some(slot) = self.pick.slot {
            if outcome.measures_backend_latency() {
                slot.finish(elapsed, ended);
            }
        }
    }
}

impl RequestContext {
    fn new() -> Self {
        Self {
            request_id: RequestId::next(),
            started: Instant::now(),
            upstream_started: None,
            attempts: 0,
            body_bytes: 0,
            service: None,
            rest_start: 0,
            resolved_rest: None,
            continue_pending: false,
            ticket: None,
            tried: Vec::new(),
            attempt: None,
            next_pick: None,
            retried_status: None,
            last_backend: None,
            upstream_status: None,
            asked_cooldown: None,
            grpc_unavailable: false,
            last_failure_timed_out: false,
            stale_connection: false,
            not_replayed: false,
            refusal: None,
            deadline: None,
        }
    }

    /// The backend of the latest attempt, if the request got as far as one.
    fn last_backend(&self) -> Option<&Backend> {
        let service = self.service.as_deref()?;
        service.backends.get(self.last_backend?)
    }
}

/// Reads (and drops) what is left of the request body, for at most [`LINGERING_CLOSE`], before
/// the connection closes after an early answer: closing it with request bytes unread or still
/// coming would reset it under the client, which may lose the answer (a lingering close).
async fn drain_before_close(session: &mut Session) {
    if !session.is_body_done() {
        let _ = timeout(
            LINGERING_CLOSE,
            session.as_downstream_mut().drain_request_body(),
        )
        .await;
    }
}

/// Why no backend was picked for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    /// Every backend is Open: fail fast with 503.
    AllOpen,
    /// The service has no backends (DNS discovery has found none yet): 503.
    NoBackends,
    /// Every backend that could take it was tried and failed.
    NoBackendLeft,
    /// The service's total timeout ended before another attempt could start.
    DeadlinePassed,
    /// Every backend that could take it is at its concurrency limit, and the waiting room was
    /// full or the wait ran out: 503.
    Overloaded(Overflow),
}

impl Refusal {
    /// The error the hooks fail with; `fail_to_proxy` answers it (`settle::error_reply`).
    fn error(self) -> Box<Error> {
        let (status, explain) = match self {
            Refusal::NoBackends => (503, "the service has no backends"),
            Refusal::AllOpen => (503, "every backend's breaker is open"),
            Refusal::Overloaded(_) => (503, "every backend is at its concurrency limit"),
            Refusal::NoBackendLeft => (502, "no backend left to try"),
            Refusal::DeadlinePassed => (504, "the total timeout ended"),
        };
        Error::explain(HTTPStatus(status), explain)
    }
}
impl ProxyHttp for GatewayProxy {
    type CTX = RequestContext;

    fn new_ctx(&self) -> RequestContext {
        RequestContext::new()
    }

    /// None: the gateway compresses no response. Pingora's default adds its compression module
    /// switched off, which still builds a context for every request and runs it at each phase.
    fn init_downstream_modules(&self, _modules: &mut HttpModules) {}

    async fn request_filter(
        &self,
        session: &mut Session,
        ctx: &mut RequestContext,
    ) -> Result<bool> {
        // Pingora carries it to the connection's next request, so this sets it once per
        // connection. Keep-alive that Pingora turned off (`Connection: close`, shutting down)
        // stays off.
        let keepalive = self.settings.keepalive_timeout.as_secs();
        if session
            .get_keepalive()
            .is_some_and(|current| current != keepalive)
        {
            session.set_keepalive(Some(keepalive));
        }
        // A client that stops reading would hold its response, and the backend connection
        // behind it, for as long as the response lasts.
        session.set_write_timeout(Some(self.settings.client_write_timeout));
        // Pipelined requests are served in order (Pingora keeps the choice for the
        // connection's next requests); off, it would close the connection and drop them.
        if !session.as_downstream().pipelining_enabled() {
            session.as_downstream_mut().set_pipelining_enabled(true);
        }
        let routed = self
            .route(session, ctx)
            .and_then(|()| take_expectation(session));
        let reply = match routed {
            Ok(continue_pending) => {
                ctx.continue_pending = continue_pending;
                let Some(service) = ctx.service.clone() else {
                    return Ok(false);
                };
                // Before any of the body is read, or the buffer would miss its start.
                let limit = usize::try_from(service.retry.replay_limit).unwrap_or(usize::MAX);
                session
                    .as_downstream_mut()
                    .enable_retry_buffering_up_to(limit);
                if hedge::hedgeable(session, &service) {
                    // Boxed: inline, the hedged exchange's state (~12 KB) would make every
                    // request's `request_filter` future that big, and it is moved on each call.
                    return Box::pin(self.hedged(session, ctx, &self.hedge_connector)).await;
                }
                return Ok(false);
            }
            Err(reply) => reply,
        };
        let request = session.req_header();
        // A flood over a rate limit is counted, not logged line by line.
        let level = if reply.status == 429 {
            log::Level::Debug
        } else {
            log::Level::Info
        };
        log::log!(
            level,
            "answered {} to {} {}, request id {}",
            reply.status,
            request.method,
            loggable_path(request.uri.path()),
            ctx.request_id
        );
        if reply.closes_connection() {
            session.set_keepalive(None);
        }
        // A body refused by its declared length may be on its way already (unless the client
        // waits for a `100 Continue` it will not get).
        let drain =
            reply.status == 413 && !session.req_header().headers.contains_key(header::EXPECT);
        reply.send(session, ctx.request_id).await?;
        if drain {
            drain_before_close(session).await;
        }
        Ok(true)
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut RequestContext,
    ) -> Result<()> {
        let (Some(chunk), Some(service)) = (body.as_ref(), &ctx.service) else {
            return Ok(());
        };
        ctx.body_bytes += chunk.len() as u64;
        if ctx.body_bytes > service.max_body.0 {
            return Error::e_explain(HTTPStatus(413), "the request body is over the limit");
        }
        Ok(())
    }

    async fn upstream_peer(
        &self,
        session: &mut Session,
        ctx: &mut RequestContext,
    ) -> Result<Box<HttpPeer>> {
        let RequestContext {
            service,
            ticket,
            tried,
            attempt,
            next_pick,
            retried_status,
            last_backend,
            upstream_status,
            asked_cooldown,
            grpc_unavailable,
            stale_connection,
            refusal,
            attempts,
            upstream_started,
            deadline,
            ..
        } = ctx;
        let Some(service) = service.as_ref() else {
            return Error::e_explain(
                InternalError,
                "upstream_peer called for an unrouted request",
            );
        };
        // An attempt still unrecorded here is one Pingora retries on its own after a stale
        // pooled connection: not the backend's fault, so dropping it is neutral.
        *attempt = None;
        *retried_status = None;
        *upstream_status = None;
        *asked_cooldown = None;
        *grpc_unavailable = false;
        *stale_connection = false;
        let now = Instant::now();
        let remaining =
            deadline.map_or(service.timeouts.total, |d| d.saturating_duration_since(now));
        if remaining.is_zero() {
            *refusal = Some(Refusal::DeadlinePassed);
            return Error::e_explain(HTTPStatus(504), "the total timeout ended");
        }
        let ticket = *ticket.get_or_insert_with(|| service.selector.ticket());
        let picked = match next_pick.take() {
            Some(pick) => Ok((pick, now)),
            None => pick::pick(service, ticket, tried, now, now + remaining).await,
        };
        match picked {
            Ok((pick, started)) => {
                // The attempt starts when its backend is picked, which may have waited.
                let remaining = remaining.saturating_sub(started.saturating_duration_since(now));
                let upgrade = session.is_upgrade_req();
                let peer = upstream_peer(
                    &service.backends[pick.index],
                    service,
                    remaining,
                    upgrade,
                    self.settings.preserve_header_case,
                );
                *last_backend = Some(pick.index);
                *attempt = Some(Attempt { pick, started });
                *attempts += 1;
                upstream_started.get_or_insert(started);
                Ok(Box::new(peer))
            }
            Err(why) => {
                *refusal = Some(why);
                Err(why.error())
            }
        }
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut RequestContext,
    ) -> Result<()> {
        if std::mem::take(&mut ctx.continue_pending) {
            send_continue(session).await?;
        }
        let (Some(service), Some(attempt)) = (&ctx.service, &ctx.attempt) else {
            return Error::e_explain(InternalError, "no backend chosen for the request");
        };
        let backend = &service.backends[attempt.pick.index];
        self.rewrite_request(session, ctx, backend, upstream_request)
    }

    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut pingora::http::ResponseHeader,
        ctx: &mut RequestContext,
    ) -> Result<()> {
        let status = upstream_response.status.as_u16();
        ctx.upstream_status = Some(status);
        if status == 503 {
            ctx.asked_cooldown = retry_after(&upstream_response.headers);
        }
        if status >= 400 && ctx.retry_on_status(session, status) {
            return Error::e_explain(
                HTTPStatus(status),
                "the backend's answer is retried on another backend",
            );
        }
        // A trailers-only gRPC answer carries its status in the header block. gRPC is spoken
        // over HTTP/2 alone, so an HTTP/1 answer is not looked at.
        ctx.grpc_unavailable = upstream_response.version == http::Version::HTTP_2
            && grpc_unavailable(&upstream_response.headers);
        if status == 101 && session.is_upgrade_req() {
            // The backend took the upgrade: that settles the attempt, a success. What happens
            // on the upgraded connection (either side closing, an idle timeout) is nobody's
            // failure; it is bounded by the upgrade idle timeout alone, both ways.
            if let (Some(attempt), Some(service)) = (ctx.attempt.take(), &ctx.service) {
                attempt.settle(service, AttemptOutcome::Success);
                let idle = service.timeouts.upgrade_idle;
                session.as_downstream_mut().set_read_timeout(Some(idle));
            }
        }
        keep_one_content_length(upstream_response)
    }

    fn upstream_response_trailer_filter(
        &self,
        _session: &mut Session,
        upstream_trailers: &mut http::HeaderMap,
        ctx: &mut RequestContext,
    ) -> Result<()> {
        ctx.grpc_unavailable |= grpc_unavailable(upstream_trailers);
        Ok(())
    }

    fn upstream_response_timeouts(
        &self,
        _session: &Session,
        ctx: &RequestContext,
    ) -> UpstreamResponseTimeouts {
        let Some(service) = &ctx.service else {
            return UpstreamResponseTimeouts::default();
        };
        UpstreamResponseTimeouts::new(
            Some(service.timeouts.response_header()),
            Some(service.timeouts.read),
            ctx.deadline,
        )
        .with_upgraded_idle(service.timeouts.upgrade_idle)
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestContext,
        mut e: Box<Error>,
    ) -> Box<Error> {
        // Nothing reached the backend, so any request may go to the next one.
        let another_backend = ctx.fail_attempt(&e, true);
        e.set_retry(another_backend);
        e
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut RequestContext,
        client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("Peer: {peer}"));
        if ctx.retried_status.is_some() {
            // Settled and picked already (`RequestContext::retry_on_status`).
            e.set_retry(true);
            return e;
        }
        let replay = ctx
            .service
            .as_deref()
            .map_or(Replay::NotIdempotent, |service| {
                retry::replay(session, service)
            });
        let replayable = replay == Replay::Allowed;
        let deadline_passed = ctx.deadline.is_some_and(|d| Instant::now() >= d);
        let retry = if deadline_passed && !session.is_body_done() {
            // The total timeout ended while the client was still sending its body: that says
            // nothing about the backend, whose breaker must not pay for a slow client.
            if let (Some(attempt), Some(service)) = (ctx.attempt.take(), &ctx.service) {
                attempt.settle(service, AttemptOutcome::Cancelled);
            }
            false
        } else if client_reused && matches!(e.retry, RetryType::ReusedOnly) {
            // The backend had closed this idle pooled connection: not its fault. A replayable
            // request goes again on a fresh connection (upstream_peer drops the unrecorded
            // attempt as neutral); any other gets a 502 without blaming the backend.
            if !replayable {
                ctx.attempt = None;
            }
            ctx.stale_connection = replayable;
            replayable
        } else if *e.esource() == ErrorSource::Upstream && !final_response_written(session) {
            // The backend failed before the client saw a byte: safe to replay elsewhere, if
            // the request can be replayed at all.
            ctx.not_replayed |= replay == Replay::BodyOverLimit;
            replayable && ctx.fail_attempt(&e, false)
        } else {
            false
        };
        e.set_retry(retry);
        e
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestContext,
    ) -> FailToProxy {
        let reply = error_reply(e, ctx);
        let error_code = reply.as_ref().map_or(0, |r| r.status);
        if let Some(reply) = reply {
            if !final_response_written(session) {
                // The connection closes after an error (below): say so in the reply.
                session.set_keepalive(None);
                if let Err(write_error) = reply.send(session, ctx.request_id).await {
                    log::debug!("could not send the error response: {write_error}");
                }
            }
            // The connection is closed after an error.
            drain_before_close(session).await;
        }
        FailToProxy {
            error_code,
            can_reuse_downstream: false,
        }
    }

    fn suppress_error_log(&self, _session: &Session, ctx: &RequestContext, e: &Error) -> bool {
        // Failing fast while every breaker is open is the breaker working, refusing over the
        // concurrency limits is the limits working (both counted), a service without
        // backends is logged by discovery, and a client that hangs up is the client's
        // business: none is a gateway error worth an ERROR line per request.
        if matches!(
            ctx.refusal,
            Some(Refusal::AllOpen | Refusal::NoBackends | Refusal::Overloaded(_))
        ) {
            return true;
        }
        let gone = client_gone(e);
        if gone {
            log::debug!("client went away: {e}");
        }
        gone
    }

    fn suppress_proxy_warn_log(
        &self,
        _session: &Session,
        ctx: &RequestContext,
        e: &Error,
        context: ProxyWarnLogContext,
    ) -> bool {
        if !matches!(context, ProxyWarnLogContext::UpstreamRetry) {
            return false;
        }
        // One line of the gateway's for each failover, in place of Pingora's, with the whole
        // error chain (a refused certificate names OpenSSL's reason there).
        let service = ctx.service.as_deref();
        let backend = ctx
            .last_backend()
            .map_or("-", |backend| backend.url.as_str());
        if ctx.stale_connection {
            log::debug!(
                "service \"{}\": backend {backend} had closed a pooled connection; request id {} \
                 goes again on a fresh one",
                service.map_or("-", |s| s.name.as_str()),
                ctx.request_id
            );
            return true;
        }
        if let Some(status) = ctx.retried_status {
            log::warn!(
                "failover: service \"{}\", backend {backend} answered {status}; retrying on \
                 another, request id {}",
                service.map_or("-", |s| s.name.as_str()),
                ctx.request_id
            );
            return true;
        }
        log::warn!(
            "failover: service \"{}\", backend {backend} failed ({}); retrying, request id {} ({e})",
            service.map_or("-", |s| s.name.as_str()),
            e.etype().as_str(),
            ctx.request_id
        );
        true
    }

    fn request_summary(&self, session: &Session, ctx: &RequestContext) -> String {
        format!(
            "{}, request id {}",
            session.as_ref().request_summary(),
            ctx.request_id
        )
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestContext) {
        if let Some(access_log) = &self.access_log {
            access_log.record(access_record(session, ctx));
        }
        if let (Some(attempt), Some(service)) = (ctx.attempt.take(), &ctx.service) {
            let now = Instant::now();
            let deadline_passed = ctx.deadline.is_some_and(|d| now >= d);
            let mut outcome = attempt_outcome(e, ctx.upstream_status, deadline_passed);
            if ctx.grpc_unavailable && outcome == AttemptOutcome::Success {
                outcome = AttemptOutcome::ServerError;
            }
            if outcome == AttemptOutcome::CutByDeadline {
                log::info!(
                    "the response of service \"{}\" was cut at its total_timeout ({:?}), request \
                     id {}: not counted against its backend",
                    service.name,
                    service.timeouts.total,
                    ctx.request_id
                );
            }
            attempt.settle_asking(service, outcome, ctx.asked_cooldown, now);
        }
        if let Some(format) = self.settings.status_log {
            if let Some(backend) = ctx.last_backend() {
                logs::log_status(&backend.breaker, format);
            }
        }
    }
}

/// Identical repeats of `Content-Length` (Pingora refuses differing ones) are one length to
/// the client: some clients refuse a response that repeats it.
fn keep_one_content_length(response: &mut pingora::http::ResponseHeader) -> Result<()> {
    // No name repeats (as many values as names, two counts the map keeps): nothing to look up.
    if response.headers.len() == response.headers.keys_len() {
        return Ok(());
    }
    let mut lengths = response.headers.get_all(header::CONTENT_LENGTH).iter();
    if let (Some(length), Some(_)) = (lengths.next(), lengths.next()) {
        let length = length.clone();
        response.insert_header(header::CONTENT_LENGTH, length)?;
    }
    Ok(())
}

/// A `Retry-After` given in seconds (the HTTP-date form is not read).
fn retry_after(headers: &http::HeaderMap) -> Option<Duration> {
    let seconds = headers.get(header::RETRY_AFTER)?.to_str().ok()?;
    seconds.trim().parse().ok().map(Duration::from_secs)
}

/// Whether a gRPC answer's `grpc-status` is 14, UNAVAILABLE: the backend cannot serve, which
/// counts against it like a 5xx. Every other gRPC status is the application's answer.
fn grpc_unavailable(headers: &http::HeaderMap) -> bool {
    headers
        .get("grpc-status")
        .is_some_and(|status| status.as_bytes() == b"14")
}

/// Whether the client's connection is TLS (the TLS listener).
fn is_tls(session: &Session) -> bool {
    session
        .digest()
        .is_some_and(|digest| digest.ssl_digest.is_some())
}

/// Whether the client has been sent a final (not 1xx) response header.
fn final_response_written(session: &Session) -> bool {
    session
        .response_written()
        .is_some_and(|response| !response.status.is_informational())
}
