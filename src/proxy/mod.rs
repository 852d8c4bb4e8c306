//! The Pingora [`ProxyHttp`] implementation: the only module that speaks Pingora's hooks.
//!
//! It translates hook events into routing, selection and breaker outcomes, and keeps all
//! per-request state in one `RequestContext`:
//!
//! | hook                        | what it does here                                          |
//! |-----------------------------|------------------------------------------------------------|
//! | `request_filter`            | strict head checks (400, 414, 431, 501); routes `/v1/proxy/{service}` (404); resolves dot segments (400 above the root); body limit by `Content-Length` (413); takes `Expect` (417); pipelining on |
//! | `request_body_filter`       | body limit while the body streams (413)                    |
//! | `upstream_peer`             | picks a backend (breaker-filtered round-robin); 503 when all are open |
//! | `upstream_request_filter`   | sends the client its `100 Continue` (first attempt); rewrites the path, `Host`, `Forwarded`, `X-Forwarded-*`, `X-Request-Id`; drops header names with `_` |
//! | `upstream_response_timeouts` | response-header timeout, body idle timeout, total deadline (HTTP/1 and HTTP/2 upstreams) |
//! | `upstream_response_filter`  | remembers the backend's status; one `Content-Length` of identical repeats |
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

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use async_trait::async_trait;
use bytes::Bytes;
use http::header;
use pingora::http::RequestHeader;
use pingora::prelude::*;
use pingora::{ErrorSource, RetryType};
use pingora_proxy::{
    FailToProxy, ProxyHttp, ProxyWarnLogContext, Session, UpstreamResponseTimeouts,
};

use crate::config::LogFormat;
use crate::config::{HeaderLimits, UpstreamProtocol};
use crate::edge::head::{check_head, HeadRejection};
use crate::reply::ErrorReply;
use crate::request_id::RequestId;
use crate::retry_budget::Spend;
use crate::routing::{self, PathRefusal, RouteError};
use crate::selector::Pick;
use crate::service::{Backend, Service, ServiceTable};
use crate::telemetry::access_log::{AccessLog, AccessRecord};
use crate::telemetry::logs;
use crate::telemetry::metrics::{AttemptOutcome, GatewayStats, ServiceEvent};

/// How long the rest of a request body is read before closing a connection after an error.
const LINGERING_CLOSE: Duration = Duration::from_secs(2);

/// The gateway's proxy logic, shared by all requests.
#[derive(Debug)]
pub(crate) struct GatewayProxy {
    services: Arc<ArcSwap<ServiceTable>>,
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

    /// Checks the request head and routes it: on success the context holds the service; else
    /// the reply to send. Counts what it refuses.
    fn route(
        &self,
        session: &Session,
        ctx: &mut RequestContext,
    ) -> std::result::Result<(), ErrorReply> {
        let request = session.req_header();
        if let Some(h1) = session.as_downstream().as_http1() {
            check_head(
                &h1.get_headers_raw_bytes(),
                request.headers.len(),
                &self.settings.header_limits,
            )
            .map_err(|rejection| match rejection {
                HeadRejection::Ambiguous(detail) => ErrorReply::ambiguous_request(detail),
                HeadRejection::TooLarge(detail) => ErrorReply::header_too_large(detail),
                HeadRejection::UriTooLong => ErrorReply::uri_too_long(),
                HeadRejection::UnsupportedCoding => ErrorReply::unsupported_transfer_coding(),
            })?;
        }
        let path = request.uri.path();
        // One load per request: the request keeps its service even if a reload swaps the table.
        let services = self.services.load();
        // `/v1/proxy/{service}[/rest]`, or a path under a prefix a service claims (forwarded
        // whole, and never out of that prefix).
        let (service, rest, within) = match routing::parse_proxy_path(path) {
            Ok(route) => match services.get(route.service) {
                Some(service) => (service, route.rest, ""),
                None => {
                    self.stats.count_not_found();
                    return Err(ErrorReply::unknown_service(route.service));
                }
            },
            Err(RouteError::NotAProxyPath) => match services.by_prefix(path) {
                Some((prefix, service)) => (service, path, prefix),
                None => {
                    self.stats.count_not_found();
                    return Err(ErrorReply::not_a_proxy_path());
                }
            },
            Err(RouteError::MissingService) => {
                self.stats.count_not_found();
                return Err(ErrorReply::missing_service());
            }
        };
        ctx.resolved_rest = match routing::forwarded_path(rest, service.escaped_slashes, within) {
            Ok(Cow::Borrowed(_)) => None,
            Ok(Cow::Owned(resolved)) => Some(resolved),
            Err(PathRefusal::ClimbsAboveRoot) => {
                return Err(ErrorReply::path_climbs_above_service())
            }
            Err(PathRefusal::EscapedSlash) => return Err(ErrorReply::escaped_slash()),
        };
        let declared_length = request
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if declared_length.is_some_and(|length| length > service.max_body.0) {
            return Err(ErrorReply::body_too_large(service.max_body.0));
        }
        service.stats.count(ServiceEvent::Request);
        ctx.rest_start = path.len() - rest.len();
        ctx.deadline = Some(Instant::now() + service.timeouts.total);
        ctx.service = Some(Arc::clone(service));
        Ok(())
    }
}

/// Everything one request carries from hook to hook.
#[derive(Debug)]
pub(crate) struct RequestContext {
    /// Names the request in error replies, logs and towards the backend.
    request_id: RequestId,
    /// When the request's head had arrived (for the access log's total time).
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
    /// The backend of the latest attempt, for the status block.
    last_backend: Option<usize>,
    /// The status the latest attempt's backend answered with.
    upstream_status: Option<u16>,
    /// The latest attempt's backend answered a gRPC call with `grpc-status: 14`
    /// (UNAVAILABLE): a failure, whatever the HTTP status.
    grpc_unavailable: bool,
    /// Whether the latest failed-over attempt timed out (504 rather than 502).
    last_failure_timed_out: bool,
    /// The latest attempt found its pooled connection already closed by the backend: Pingora
    /// sends the request again on a fresh connection, which is not a failover.
    stale_connection: bool,
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
    /// Records how the attempt ended in its backend's breaker and metrics.
    fn settle(self, service: &Service, outcome: AttemptOutcome) {
        service.backends[self.pick.index]
            .stats
            .record(outcome, self.started.elapsed());
        if let Some(outcome) = outcome.breaker_outcome() {
            self.pick.permit.record(outcome);
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
            last_backend: None,
            upstream_status: None,
            grpc_unavailable: false,
            last_failure_timed_out: false,
            stale_connection: false,
            refusal: None,
            deadline: None,
        }
    }

    /// Records the attempt in flight as failed with `e` and marks its backend tried; during
    /// `connecting`, any error but a timeout is a connect error. Returns whether the request
    /// may fail over: the service has a backend it has not tried yet, and the service's retry
    /// budget grants one more retry.
    fn fail_attempt(&mut self, e: &Error, connecting: bool) -> bool {
        let (Some(attempt), Some(service)) = (self.attempt.take(), &self.service) else {
            return false;
        };
        self.last_failure_timed_out = is_timeout(e);
        self.tried.push(attempt.pick.index);
        attempt.settle(service, failure_outcome(e, connecting));
        if self.tried.len() >= service.backends.len() {
            return false;
        }
        match service.retry_budget.try_spend(service.selector.requests()) {
            Spend::Granted => {
                service.stats.count(ServiceEvent::Retry);
                true
            }
            Spend::NewlyExhausted => {
                service.stats.count(ServiceEvent::RetryBudgetExhausted);
                log::warn!(
                    "retry budget of service \"{}\" exhausted: failing requests instead of \
                     retrying them on another backend",
                    service.name
                );
                false
            }
            Spend::Exhausted => {
                service.stats.count(ServiceEvent::RetryBudgetExhausted);
                false
            }
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
}

#[async_trait]
impl ProxyHttp for GatewayProxy {
    type CTX = RequestContext;

    fn new_ctx(&self) -> RequestContext {
        RequestContext::new()
    }

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
                return Ok(false);
            }
            Err(reply) => reply,
        };
        let request = session.req_header();
        log::info!(
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
            last_backend,
            upstream_status,
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
        *upstream_status = None;
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
        match service
            .selector
            .pick(&service.backends, ticket, tried, service.slow_start)
        {
            Some(pick) => {
                let upgrade = session.is_upgrade_req();
                let peer =
                    upstream_peer(&service.backends[pick.index], service, remaining, upgrade);
                *last_backend = Some(pick.index);
                *attempt = Some(Attempt { pick, started: now });
                *attempts += 1;
                upstream_started.get_or_insert(now);
                Ok(Box::new(peer))
            }
            None if service.backends.is_empty() => {
                *refusal = Some(Refusal::NoBackends);
                service.stats.count(ServiceEvent::NoBackends);
                Error::e_explain(HTTPStatus(503), "the service has no backends")
            }
            None if tried.is_empty() => {
                *refusal = Some(Refusal::AllOpen);
                service.stats.count(ServiceEvent::AllOpen);
                Error::e_explain(HTTPStatus(503), "every backend's breaker is open")
            }
            None => {
                *refusal = Some(Refusal::NoBackendLeft);
                Error::e_explain(HTTPStatus(502), "no backend left to try")
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
        let original = session.req_header();
        let rest = match &ctx.resolved_rest {
            Some(resolved) => resolved.as_str(),
            None => original.uri.path().get(ctx.rest_start..).unwrap_or(""),
        };
        let target =
            routing::upstream_path_and_query(&backend.path_prefix, rest, original.uri.query());
        let uri = http::Uri::try_from(target)
            .or_err(InvalidHTTPHeader, "building the backend's request path")?;
        let forwarded_host = original.headers.get(header::HOST).cloned();
        let client_ip = session
            .client_addr()
            .and_then(|addr| addr.as_inet())
            .map(|addr| addr.ip());
        let trust = self.settings.trust_forwarded_for;
        let forwarded_for = client_ip
            .map(|ip| ip.to_string())
            .map(|ip| append_if_trusted(trust, original.headers.get("x-forwarded-for"), ip));
        let proto = if is_tls(session) { "https" } else { "http" };
        let forwarded = append_if_trusted(
            trust,
            original.headers.get(header::FORWARDED),
            forwarded_element(client_ip, forwarded_host.as_ref(), proto),
        );

        upstream_request.set_uri(uri);
        upstream_request.insert_header(header::HOST, backend.authority.as_str())?;
        upstream_request.insert_header("x-request-id", ctx.request_id.to_string())?;
        match forwarded_host {
            Some(host) => upstream_request.insert_header("x-forwarded-host", host)?,
            None => drop(upstream_request.remove_header("x-forwarded-host")),
        }
        match forwarded_for {
            Some(chain) => upstream_request.insert_header("x-forwarded-for", chain)?,
            None => drop(upstream_request.remove_header("x-forwarded-for")),
        }
        upstream_request.insert_header("x-forwarded-proto", proto)?;
        upstream_request.insert_header(header::FORWARDED, forwarded)?;
        upstream_request.remove_header(&header::EXPECT);
        if !self.settings.underscores_in_headers {
            drop_underscored_names(upstream_request);
        }
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut pingora::http::ResponseHeader,
        ctx: &mut RequestContext,
    ) -> Result<()> {
        let status = upstream_response.status.as_u16();
        ctx.upstream_status = Some(status);
        // A trailers-only gRPC answer carries its status in the header block.
        ctx.grpc_unavailable = grpc_unavailable(&upstream_response.headers);
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
        // Identical repeats (Pingora refuses differing ones) are one length to the client:
        // some clients refuse a response that repeats it.
        let mut lengths = upstream_response
            .headers
            .get_all(header::CONTENT_LENGTH)
            .iter();
        if let (Some(length), Some(_)) = (lengths.next(), lengths.next()) {
            let length = length.clone();
            upstream_response.insert_header(header::CONTENT_LENGTH, length)?;
        }
        Ok(())
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
        let replayable = session.req_header().method.is_idempotent()
            && !session.as_ref().retry_buffer_truncated();
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
        } else if *e.esource() == ErrorSource::Upstream
            && !final_response_written(session)
            && replayable
        {
            // The backend failed before the client saw a byte: safe to replay elsewhere.
            ctx.fail_attempt(&e, false)
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
        // Failing fast while every breaker is open is the breaker working, a service without
        // backends is logged by discovery, and a client that hangs up is the client's
        // business: none is a gateway error worth an ERROR line per request.
        if matches!(ctx.refusal, Some(Refusal::AllOpen | Refusal::NoBackends)) {
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
            let deadline_passed = ctx.deadline.is_some_and(|d| Instant::now() >= d);
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
            attempt.settle(service, outcome);
        }
        if let Some(format) = self.settings.status_log {
            if let Some(backend) = ctx.last_backend() {
                logs::log_status(&backend.breaker, format);
            }
        }
    }
}

/// What the access log says of a request that has ended.
fn access_record(session: &Session, ctx: &RequestContext) -> AccessRecord {
    let request = session.req_header();
    AccessRecord {
        request_id: ctx.request_id.to_string(),
        client: session
            .client_addr()
            .and_then(|addr| addr.as_inet())
            .map(|addr| addr.ip()),
        method: request.method.to_string(),
        path: loggable_path(request.uri.path()),
        service: ctx.service.as_ref().map(|s| s.name.clone()),
        backend: ctx.last_backend().map(|backend| backend.url.clone()),
        status: session
            .response_written()
            .map_or(0, |response| response.status.as_u16()),
        attempts: ctx.attempts,
        upstream: ctx.upstream_started.map(|at| at.elapsed()),
        total: ctx.started.elapsed(),
        bytes_in: session.body_bytes_read() as u64,
        bytes_out: session.body_bytes_sent() as u64,
    }
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

/// Takes the request's `Expect`, which the gateway answers itself rather than forwarding:
/// whether the client waits for `100 Continue` (an HTTP/1.1 request with a body), or 417 for
/// any other expectation. An HTTP/1.0 client's expectation is ignored (RFC 9110 §10.1.1).
fn take_expectation(session: &mut Session) -> std::result::Result<bool, ErrorReply> {
    let request = session.req_header();
    let Some(expect) = request.headers.get(header::EXPECT) else {
        return Ok(false);
    };
    // HTTP/1.0 clients do not wait for a 100 (RFC 9110 §10.1.1); HTTP/1.1 and HTTP/2 ones do.
    let waits_for_100 = request.version >= http::Version::HTTP_11;
    if waits_for_100 && !expect.as_bytes().eq_ignore_ascii_case(b"100-continue") {
        return Err(ErrorReply::expectation_failed());
    }
    session.req_header_mut().remove_header(&header::EXPECT);
    Ok(waits_for_100 && !session.as_downstream_mut().is_body_empty())
}

/// Tells a client that waits for it to send its body, and from then on keeps the backend's
/// own 1xx answers (but `101`) from it. Pingora would close a connection whose response (a 1xx
/// included) starts before its request body has been read; for the interim 100 that is
/// wrong, so it is sent with that rule off.
async fn send_continue(session: &mut Session) -> Result<()> {
    let downstream = session.as_downstream_mut();
    downstream.set_close_on_response_before_downstream_finish(false);
    let sent = downstream.write_continue_response().await;
    downstream.set_close_on_response_before_downstream_finish(true);
    downstream.set_ignore_info_resp(true);
    sent
}

/// `own` after the client's `incoming` list when the client's lists are trusted, else `own`
/// alone (an incoming value that is not text is dropped).
fn append_if_trusted(trust: bool, incoming: Option<&http::HeaderValue>, own: String) -> String {
    match incoming.and_then(|value| value.to_str().ok()) {
        Some(incoming) if trust => format!("{incoming}, {own}"),
        _ => own,
    }
}

/// The gateway's `Forwarded` element (RFC 7239): the client's address, the `Host` it asked
/// for (quoted) and the protocol.
fn forwarded_element(
    client: Option<IpAddr>,
    host: Option<&http::HeaderValue>,
    proto: &str,
) -> String {
    let mut element = match client {
        Some(IpAddr::V4(ip)) => format!("for={ip}"),
        Some(IpAddr::V6(ip)) => format!("for=\"[{ip}]\""),
        None => "for=unknown".to_owned(),
    };
    if let Some(host) = host.and_then(|h| h.to_str().ok()) {
        element.push_str(";host=\"");
        for c in host.chars() {
            if matches!(c, '"' | '\\') {
                element.push('\\');
            }
            element.push(c);
        }
        element.push('"');
    }
    element.push_str(";proto=");
    element.push_str(proto);
    element
}

/// Removes the header fields whose names contain `_`, which CGI-style backends cannot tell
/// from the same name with `-` (`X_Forwarded_For` would read as `X-Forwarded-For`).
fn drop_underscored_names(request: &mut RequestHeader) {
    if !request
        .headers
        .keys()
        .any(|name| name.as_str().contains('_'))
    {
        return;
    }
    let underscored: Vec<http::HeaderName> = request
        .headers
        .keys()
        .filter(|name| name.as_str().contains('_'))
        .cloned()
        .collect();
    for name in underscored {
        request.remove_header(&name);
    }
}

/// A peer for one attempt at `backend`, with the service's timeouts cut to `remaining`, what
/// is left of the request's total timeout.
///
/// It sets no read timeout: reads are bounded by `upstream_response_timeouts` instead (the
/// whole response header once the request is sent, each body read, the total deadline), so a
/// client slowly sending its body does not count against the backend's header time.
///
/// An `https` backend is reached over TLS with its URL's host as the SNI and the name its
/// certificate is verified for (against the service's `tls_ca_file`, or the system's roots),
/// with the service's client certificate if it has one. A failed handshake or verification is
/// a connect failure, as a refused connection is.
///
/// A `protocol: http2` service speaks HTTP/2 to its backends (h2c with prior knowledge on
/// `http://`, ALPN on `https://`), many streams per connection, except for an upgrade request
/// (a WebSocket), which needs HTTP/1.1.
fn upstream_peer(
    backend: &Backend,
    service: &Service,
    remaining: Duration,
    upgrade: bool,
) -> HttpPeer {
    let timeouts = &service.timeouts;
    let mut peer = match &backend.tls_host {
        None => HttpPeer::new(&backend.address, false, String::new()),
        Some(host) => {
            let mut peer = HttpPeer::new(&backend.address, true, host.clone());
            service.tls.configure(&mut peer);
            peer
        }
    };
    peer.options.connection_timeout = Some(timeouts.connect.min(remaining));
    peer.options.write_timeout = Some(timeouts.read.min(remaining));
    if service.protocol == UpstreamProtocol::Http2 && !upgrade {
        peer.options.set_http_version(2, 2);
        peer.options.max_h2_streams = MAX_H2_STREAMS_PER_CONNECTION;
    }
    peer
}

/// How many concurrent streams the gateway opens on one HTTP/2 connection to a backend before
/// it opens another.
const MAX_H2_STREAMS_PER_CONNECTION: usize = 100;

/// How an attempt that got past connecting ended.
///
/// An upstream error (reset, timeout, broken body) or a 5xx is a failure; any other answer is
/// a success, 4xx included (the backend is alive). A request that ended for the client's
/// sake before the backend answered (client gone) is cancelled: it says nothing about the
/// backend. A response whose header had arrived and that timed out once the request's total
/// timeout had passed was cut by the gateway's own deadline while the backend delivered: not
/// the backend's failure either.
fn attempt_outcome(
    e: Option<&Error>,
    upstream_status: Option<u16>,
    deadline_passed: bool,
) -> AttemptOutcome {
    if let Some(e) = e.filter(|e| *e.esource() == ErrorSource::Upstream) {
        if deadline_passed
            && is_timeout(e)
            && upstream_status.is_some_and(|s| (200..500).contains(&s))
        {
            return AttemptOutcome::CutByDeadline;
        }
        return failure_outcome(e, false);
    }
    match upstream_status {
        Some(status) if status >= 500 => AttemptOutcome::ServerError,
        Some(_) if e.is_none() => AttemptOutcome::Success,
        _ => AttemptOutcome::Cancelled,
    }
}

/// The kind of failure `e` is, for an attempt that failed while `connecting` or after.
fn failure_outcome(e: &Error, connecting: bool) -> AttemptOutcome {
    if is_timeout(e) {
        AttemptOutcome::Timeout
    } else if connecting {
        AttemptOutcome::ConnectError
    } else {
        AttemptOutcome::BrokenResponse
    }
}

/// A client's path, fit for a log line: at most 100 characters, control characters escaped.
fn loggable_path(path: &str) -> String {
    let mut out: String = path
        .chars()
        .take(100)
        .flat_map(char::escape_debug)
        .collect();
    if path.chars().nth(100).is_some() {
        out.push_str("...");
    }
    out
}

/// Whether `e` says the client went away or stopped reading: nobody to answer, and nothing
/// about the backend.
fn client_gone(e: &Error) -> bool {
    *e.esource() == ErrorSource::Downstream
        && matches!(
            e.etype(),
            ReadError | WriteError | WriteTimedout | ConnectionClosed
        )
}

fn is_timeout(e: &Error) -> bool {
    matches!(e.etype(), ConnectTimedout | ReadTimedout | WriteTimedout)
}

/// The response for a request that could not be proxied; `None` when the client is gone.
fn error_reply(e: &Error, ctx: &RequestContext) -> Option<ErrorReply> {
    let service = ctx.service.as_deref();
    let service_name = service.map_or("", |s| s.name.as_str());
    if let Some(service) = service.filter(|s| ctx.body_bytes > s.max_body.0) {
        return Some(ErrorReply::body_too_large(service.max_body.0));
    }
    match (ctx.refusal, service) {
        (Some(Refusal::AllOpen), Some(service)) => return Some(ErrorReply::all_open(service)),
        (Some(Refusal::NoBackends), _) => return Some(ErrorReply::no_backends(service_name)),
        (Some(Refusal::DeadlinePassed), _) => {
            return Some(ErrorReply::gateway_timeout(service_name))
        }
        (Some(Refusal::NoBackendLeft), _) if ctx.last_failure_timed_out => {
            return Some(ErrorReply::gateway_timeout(service_name))
        }
        (Some(Refusal::NoBackendLeft), _) => return Some(ErrorReply::bad_gateway(service_name)),
        _ => {}
    }
    if let HTTPStatus(code) = e.etype() {
        return Some(ErrorReply::other(*code));
    }
    match e.esource() {
        ErrorSource::Upstream if is_timeout(e) => Some(ErrorReply::gateway_timeout(service_name)),
        ErrorSource::Upstream => Some(ErrorReply::bad_gateway(service_name)),
        ErrorSource::Downstream if client_gone(e) => None,
        ErrorSource::Downstream => Some(ErrorReply::bad_request()),
        ErrorSource::Internal | ErrorSource::Unset => Some(ErrorReply::other(500)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(etype: ErrorType, source: ErrorSource) -> Box<Error> {
        let mut e = Error::new(etype);
        e.esource = source;
        e
    }

    #[test]
    fn outcomes_follow_the_breaker_contract() {
        use AttemptOutcome::*;
        let upstream_reset = error(ConnectionClosed, ErrorSource::Upstream);
        let upstream_timeout = error(ReadTimedout, ErrorSource::Upstream);
        let client_gone = error(WriteError, ErrorSource::Downstream);
        assert_eq!(attempt_outcome(None, Some(200), false), Success);
        assert_eq!(attempt_outcome(None, Some(404), false), Success);
        assert_eq!(attempt_outcome(None, Some(500), false), ServerError);
        assert_eq!(attempt_outcome(None, Some(503), false), ServerError);
        assert_eq!(
            attempt_outcome(Some(&upstream_reset), None, false),
            BrokenResponse
        );
        assert_eq!(
            attempt_outcome(Some(&upstream_timeout), Some(200), false),
            Timeout
        );
        assert_eq!(attempt_outcome(Some(&client_gone), None, false), Cancelled);
        assert_eq!(
            attempt_outcome(Some(&client_gone), Some(200), false),
            Cancelled
        );
        assert_eq!(
            attempt_outcome(Some(&client_gone), Some(502), false),
            ServerError
        );
        assert_eq!(attempt_outcome(None, None, false), Cancelled);
        // Cut by the gateway's own total timeout once the backend was delivering: neutral;
        // before its header, or a 5xx, still the backend's failure.
        assert_eq!(
            attempt_outcome(Some(&upstream_timeout), Some(200), true),
            CutByDeadline
        );
        assert_eq!(
            attempt_outcome(Some(&upstream_timeout), None, true),
            Timeout
        );
        assert_eq!(
            attempt_outcome(Some(&upstream_timeout), Some(503), true),
            Timeout
        );
        assert_eq!(
            attempt_outcome(Some(&upstream_reset), Some(200), true),
            BrokenResponse
        );

        let refused = error(ConnectRefused, ErrorSource::Upstream);
        let connect_timeout = error(ConnectTimedout, ErrorSource::Upstream);
        assert_eq!(failure_outcome(&refused, true), ConnectError);
        assert_eq!(failure_outcome(&connect_timeout, true), Timeout);
        assert_eq!(failure_outcome(&upstream_reset, false), BrokenResponse);
    }

    #[test]
    fn errors_map_to_statuses() {
        let ctx = RequestContext::new();
        let status = |etype, source| error_reply(&error(etype, source), &ctx).map(|r| r.status);
        assert_eq!(status(ConnectRefused, ErrorSource::Upstream), Some(502));
        assert_eq!(status(ConnectTimedout, ErrorSource::Upstream), Some(504));
        assert_eq!(status(ReadTimedout, ErrorSource::Upstream), Some(504));
        assert_eq!(status(ConnectionClosed, ErrorSource::Upstream), Some(502));
        assert_eq!(status(ConnectionClosed, ErrorSource::Downstream), None);
        assert_eq!(
            status(InvalidHTTPHeader, ErrorSource::Downstream),
            Some(400)
        );
        assert_eq!(status(InternalError, ErrorSource::Internal), Some(500));
        assert_eq!(status(HTTPStatus(413), ErrorSource::Unset), Some(413));

        let timed_out = RequestContext {
            refusal: Some(Refusal::NoBackendLeft),
            last_failure_timed_out: true,
            ..RequestContext::new()
        };
        let e = error(HTTPStatus(502), ErrorSource::Unset);
        assert_eq!(error_reply(&e, &timed_out).map(|r| r.status), Some(504));
    }
}
