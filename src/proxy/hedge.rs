//! Hedged requests: a bodiless `GET` or `HEAD` to a service with `hedge_after` that has no
//! answer from its backend after that long gets a second attempt at another backend, and the
//! first answer wins.
//!
//! Pingora runs one upstream attempt per request and no hook can make it give up a read it is
//! waiting on, so a hedge cannot be a second Pingora attempt. Instead the gateway makes such a
//! request's attempts itself, from `request_filter`, with a connector of its own (its own
//! connection pool, HTTP/1.1 only; `hedge_after` is refused for `protocol: http2`):
//!
//! 1. The first backend is picked as any (breakers, limits, rotation, the queue), its request
//!    head rewritten as `upstream_request_filter` would (`GatewayProxy::rewrite_request`), and
//!    sent; the wait for its response header is bounded by the service's timeouts.
//! 2. If no header has come after the delay (fixed, or the first backend's p95 latency so far,
//!    once it has 20 samples), a second backend is picked among those the request has not
//!    tried, paid from the retry budget like any retry (so a slow fleet is never doubled), and
//!    the same request goes to it.
//! 3. The first response header wins. The other attempt is dropped: its connection closed, its
//!    slot and breaker permit released unused, counted `cancelled` (never against its breaker).
//!    An attempt that fails first is settled as a failure and the other one waited for.
//! 4. The winner's answer is streamed to the client (body reads bounded by `read_timeout` and
//!    the total deadline) and its connection pooled when it can be; the `logging` hook settles
//!    it as any attempt.
//!
//! If the first attempt fails before the delay (a refused connect, a reset), nothing is
//! hedged: the attempt is settled and the request goes the usual way, through Pingora, to the
//! next backend, as a failover.

use std::time::{Duration, Instant};

use http::header;
use pingora::connectors::http::Connector;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::protocols::http::client::HttpSession;
use pingora::protocols::http::v1::client::HttpSession as Http1Session;
use pingora_proxy::Session;

use super::forward::upstream_peer;
use super::settle::{failure_outcome, is_timeout};
use super::{keep_one_content_length, pick, Attempt, GatewayProxy, RequestContext};
use crate::config::HedgeAfter;
use crate::selector::Pick;
use crate::service::Service;
use crate::telemetry::metrics::{AttemptOutcome, ServiceEvent};

/// A backend's p95 is trusted for the delay once it has this many attempts.
const P95_MIN_SAMPLES: u64 = 20;

/// Whether the request is one the service hedges: a `GET` or `HEAD` without a body, not an
/// upgrade, to a service with more than one backend.
pub(super) fn hedgeable(session: &mut Session, service: &Service) -> bool {
    let method = &session.req_header().method;
    service.retry.hedge_after.is_some()
        && service.backends.len() > 1
        && (method == http::Method::GET || method == http::Method::HEAD)
        && session.is_body_empty()
        && !session.is_upgrade_req()
}

/// The hedged requests' own upstream connections (Pingora's belong to its proxy).
pub(super) struct HedgeConnector(Connector);

impl HedgeConnector {
    pub(super) fn new() -> Self {
        Self(Connector::new(None))
    }
}

impl std::fmt::Debug for HedgeConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HedgeConnector")
    }
}

/// One attempt on its way: its backend's peer and the exchange up to the response header.
struct Leg {
    attempt: Attempt,
    peer: HttpPeer,
}

/// What a raced exchange came to: the connection and the response header, or the error and
/// whether it came while connecting.
type Answered = std::result::Result<(Http1Session, Box<ResponseHeader>), (Box<Error>, bool)>;

impl GatewayProxy {
    /// A leg for `pick`, made `now`: its peer, and the attempt it starts.
    fn leg(
        &self,
        ctx: &mut RequestContext,
        service: &Service,
        pick: Pick,
        now: Instant,
        deadline: Instant,
    ) -> Leg {
        let remaining = deadline.saturating_duration_since(now);
        let peer = upstream_peer(
            &service.backends[pick.index],
            service,
            remaining,
            false,
            self.settings.preserve_header_case,
        );
        ctx.last_backend = Some(pick.index);
        ctx.attempts += 1;
        ctx.upstream_started.get_or_insert(now);
        Leg {
            attempt: Attempt { pick, started: now },
            peer,
        }
    }

    /// Makes the request's attempts itself, hedged. `Ok(true)`: the answer went to the client.
    /// `Ok(false)`: the first attempt failed early and was settled; Pingora goes on with the
    /// request as a failover. `Err`: no answer (the error reply follows).
    pub(super) async fn hedged(
        &self,
        session: &mut Session,
        ctx: &mut RequestContext,
        connector: &HedgeConnector,
    ) -> Result<bool> {
        let connector = &connector.0;
        let Some(service) = ctx.service.clone() else {
            return Ok(false);
        };
        let now = Instant::now();
        let deadline = ctx.deadline.unwrap_or(now + service.timeouts.total);
        let ticket = *ctx.ticket.get_or_insert_with(|| service.selector.ticket());
        let (first, picked_at) = match pick::pick(&service, ticket, &ctx.tried, now, deadline).await
        {
            Ok(picked) => picked,
            Err(why) => {
                ctx.refusal = Some(why);
                return Err(why.error());
            }
        };
        let first = self.leg(ctx, &service, first, picked_at, deadline);
        let delay = match service.retry.hedge_after {
            Some(HedgeAfter::Fixed(delay)) => delay,
            Some(HedgeAfter::P95) => service.backends[first.attempt.pick.index]
                .stats
                .latency_quantile(0.95, P95_MIN_SAMPLES)
                .unwrap_or(Duration::MAX),
            None => Duration::MAX,
        };
        let header_timeout = service.timeouts.response_header();
        let request = request_for(self, session, ctx, &service, &first)?;
        let first_peer = first.peer.clone();
        let first_exchange = exchange(connector, &first_peer, request, header_timeout, deadline);
        tokio::pin!(first_exchange);
        let hedge_at = Instant::now()
            .checked_add(delay)
            .map_or(deadline, |at| at.min(deadline));
        let early = tokio::select! {
            answered = &mut first_exchange => Some(answered),
            () = tokio::time::sleep_until(hedge_at.into()) => None,
        };
        let (winner, answered) = match early {
            Some(Ok(answered)) => (first, Ok(answered)),
            Some(Err((e, connecting))) => {
                // Failed before a hedge was due: the usual failover.
                ctx.last_backend = Some(first.attempt.pick.index);
                ctx.attempt = Some(first.attempt);
                return if ctx.fail_attempt(&e, connecting) {
                    Ok(false)
                } else {
                    Err(e)
                };
            }
            None => {
                let mut tried = ctx.tried.clone();
                tried.push(first.attempt.pick.index);
                let second = service
                    .selector
                    .pick(&service.backends, ticket, &tried, &service.pick)
                    .ok()
                    .filter(|_| spend_hedge(&service));
                let Some(second) = second else {
                    let answered = first_exchange.await;
                    return self
                        .answer(session, ctx, &service, connector, first, answered, deadline)
                        .await;
                };
                let second = self.leg(ctx, &service, second, Instant::now(), deadline);
                let request = request_for(self, session, ctx, &service, &second)?;
                let second_peer = second.peer.clone();
                let second_exchange =
                    exchange(connector, &second_peer, request, header_timeout, deadline);
                tokio::pin!(second_exchange);
                // The first answer wins; a failure waits for the other.
                let mut first = Some(first);
                let mut second = Some(second);
                loop {
                    let (leg, answered) = tokio::select! {
                        answered = &mut first_exchange, if first.is_some() => (first.take(), answered),
                        answered = &mut second_exchange, if second.is_some() => (second.take(), answered),
                    };
                    let leg = leg.expect("a leg still racing");
                    match answered {
                        Ok(answered) => {
                            for loser in [first.take(), second.take()].into_iter().flatten() {
                                loser.attempt.settle(&service, AttemptOutcome::Cancelled);
                            }
                            break (leg, Ok(answered));
                        }
                        Err(failed) if first.is_none() && second.is_none() => {
                            break (leg, Err(failed))
                        }
                        Err((e, connecting)) => {
                            ctx.tried.push(leg.attempt.pick.index);
                            leg.attempt
                                .settle(&service, failure_outcome(&e, connecting));
                        }
                    }
                }
            }
        };
        self.answer(
            session, ctx, &service, connector, winner, answered, deadline,
        )
        .await
    }

    /// Sends the winner's answer (or, when every leg failed, returns the last error, which its
    /// attempt is settled with in `logging`) and pools its connection.
    #[allow(clippy::too_many_arguments)]
    async fn answer(
        &self,
        session: &mut Session,
        ctx: &mut RequestContext,
        service: &Service,
        connector: &Connector,
        leg: Leg,
        answered: Answered,
        deadline: Instant,
    ) -> Result<bool> {
        let Leg { attempt, peer } = leg;
        ctx.last_backend = Some(attempt.pick.index);
        ctx.attempt = Some(attempt);
        let (mut upstream, mut response) = match answered {
            Ok(answered) => answered,
            Err((e, _)) => {
                ctx.last_failure_timed_out = is_timeout(&e);
                return Err(e);
            }
        };
        ctx.upstream_status = Some(response.status.as_u16());
        keep_one_content_length(&mut response)?;
        let done = upstream.is_body_done();
        session.write_response_header(response, done).await?;
        while !upstream.is_body_done() {
            let until = (Instant::now() + service.timeouts.read).min(deadline);
            let piece = tokio::time::timeout_at(until.into(), upstream.read_body_bytes())
                .await
                .map_err(|_| Error::explain(ReadTimedout, "reading a hedged response body"))
                .and_then(|piece| piece)
                .map_err(|e| e.into_up())?;
            let end = piece.is_none() || upstream.is_body_done();
            session
                .write_response_body(Some(piece.unwrap_or_default()), end)
                .await?;
        }
        upstream.respect_keepalive();
        connector
            .release_http_session(HttpSession::H1(upstream), &peer, None)
            .await;
        Ok(true)
    }
}

/// The request head `leg`'s backend gets.
fn request_for(
    proxy: &GatewayProxy,
    session: &Session,
    ctx: &RequestContext,
    service: &Service,
    leg: &Leg,
) -> Result<Box<RequestHeader>> {
    let mut request = session.req_header().clone();
    for name in hop_by_hop(&request) {
        request.remove_header(&name);
    }
    proxy.rewrite_request(
        session,
        ctx,
        &service.backends[leg.attempt.pick.index],
        &mut request,
    )?;
    Ok(Box::new(request))
}

/// The request's hop-by-hop header names: the fixed ones and those its `Connection` lists.
fn hop_by_hop(request: &RequestHeader) -> Vec<http::HeaderName> {
    let mut names: Vec<http::HeaderName> = [
        header::CONNECTION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        header::PROXY_AUTHORIZATION,
    ]
    .into_iter()
    .chain(["keep-alive", "proxy-connection"].map(http::HeaderName::from_static))
    .collect();
    for value in request.headers.get_all(header::CONNECTION) {
        let listed = value.to_str().unwrap_or("").split(',');
        names.extend(listed.filter_map(|n| http::HeaderName::try_from(n.trim()).ok()));
    }
    names
}

/// Connects (or takes a pooled connection), sends `request` and reads the final response
/// header, within `header_timeout` of the request being sent and before `deadline`.
async fn exchange(
    connector: &Connector,
    peer: &HttpPeer,
    request: Box<RequestHeader>,
    header_timeout: Duration,
    deadline: Instant,
) -> Answered {
    let (session, _reused) = connector
        .get_http_session(peer)
        .await
        .map_err(|e| (e.into_up(), true))?;
    let HttpSession::H1(mut upstream) = session else {
        let e = Error::explain(InternalError, "a hedged request needs HTTP/1.1");
        return Err((e, false));
    };
    let sent = async {
        upstream.write_request_header(request).await?;
        upstream.finish_body().await?;
        Ok::<_, Box<Error>>(())
    };
    sent.await.map_err(|e| (e.into_up(), false))?;
    let until = (Instant::now() + header_timeout).min(deadline);
    let read = async {
        loop {
            let response = upstream.read_resp_header_parts().await?;
            if !response.status.is_informational() {
                return Ok::<_, Box<Error>>(response);
            }
        }
    };
    match tokio::time::timeout_at(until.into(), read).await {
        Ok(Ok(response)) => Ok((upstream, response)),
        Ok(Err(e)) => Err((e.into_up(), false)),
        Err(_) => Err((
            Error::explain(ReadTimedout, "waiting for a hedged response header").into_up(),
            false,
        )),
    }
}

/// Spends a retry for a hedge; counts it.
fn spend_hedge(service: &Service) -> bool {
    let granted = matches!(
        service.retry_budget.try_spend(service.selector.requests()),
        crate::retry_budget::Spend::Granted
    );
    if granted {
        service.stats.count(ServiceEvent::Hedge);
    }
    granted
}
