//! Sending a request on to another backend: after a failed attempt (a refused connect, a break
//! before the response began) and after an answer whose status the service retries on
//! (`retry_on_status`: 502, 503, 504 by default). Every failover goes to a backend the request
//! has not tried, is paid from the service's retry budget, and is only made for a request that
//! can be replayed: an idempotent method (or, where the service allows it, a `POST` or `PATCH`
//! with an `Idempotency-Key`) whose body is still whole in Pingora's replay buffer (64 KiB, or
//! the service's `replay_body_limit`, set when the request is routed). A request that only its
//! body's size kept from a retry says so in the access log (`not_replayed`).
//!
//! A retry on status is decided in `upstream_response_filter`, before any byte of the answer
//! goes to the client. The next backend is picked first (the breakers, limits and rotation
//! have their say, and a retry that could go nowhere is not made: the client gets the answer,
//! body and all), then the budget is spent, then the answer is settled against its backend
//! (a 5xx counts as ever) and the hook fails with an error that `error_while_proxy` marks for
//! retry. Pingora drops the answering connection and calls `upstream_peer` again, which takes
//! the pick held for it.

use http::Method;
use pingora::prelude::*;
use pingora_proxy::Session;

use super::{failure_outcome, is_timeout, RequestContext};
use crate::retry_budget::Spend;
use crate::service::Service;
use crate::telemetry::metrics::{AttemptOutcome, ServiceEvent};

/// Whether the request may be sent to another backend once an attempt may have reached one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Replay {
    /// Yes: its method is idempotent (or it is a write with an `Idempotency-Key` that the
    /// service lets go on), and its body is whole in the replay buffer.
    Allowed,
    /// No: a write that may have been acted on.
    NotIdempotent,
    /// No: its body is over the service's `replay_body_limit`, so it is not whole any more.
    BodyOverLimit,
}

pub(super) fn replay(session: &Session, service: &Service) -> Replay {
    let request = session.req_header();
    let idempotent = request.method.is_idempotent()
        || (service.retry.idempotency_key
            && matches!(request.method, Method::POST | Method::PATCH)
            && request.headers.contains_key("idempotency-key"));
    if !idempotent {
        Replay::NotIdempotent
    } else if session.as_ref().retry_buffer_truncated() {
        Replay::BodyOverLimit
    } else {
        Replay::Allowed
    }
}

impl RequestContext {
    /// Records the attempt in flight as failed with `e` and marks its backend tried; during
    /// `connecting`, any error but a timeout is a connect error. Returns whether the request
    /// may fail over: the service has a backend it has not tried yet, and the service's retry
    /// budget grants one more retry.
    pub(super) fn fail_attempt(&mut self, e: &Error, connecting: bool) -> bool {
        let (Some(attempt), Some(service)) = (self.attempt.take(), self.service.clone()) else {
            return false;
        };
        self.last_failure_timed_out = is_timeout(e);
        self.tried.push(attempt.pick.index);
        attempt.settle(&service, failure_outcome(e, connecting));
        self.tried.len() < service.backends.len() && spend_retry(&service)
    }

    /// Whether the backend's answer `status` sends the request on to another backend, which
    /// is then already picked (`next_pick`), the budget spent and the answer settled against
    /// its backend. `false` leaves everything as it was: the answer goes to the client.
    pub(super) fn retry_on_status(&mut self, session: &Session, status: u16) -> bool {
        let Some(service) = self.service.clone() else {
            return false;
        };
        if !service.retry.on_status.contains(&status)
            || self
                .deadline
                .is_some_and(|d| std::time::Instant::now() >= d)
        {
            return false;
        }
        match replay(session, &service) {
            Replay::Allowed => {}
            Replay::NotIdempotent => return false,
            Replay::BodyOverLimit => {
                self.not_replayed = true;
                return false;
            }
        }
        let (Some(attempt), Some(ticket)) = (&self.attempt, self.ticket) else {
            return false;
        };
        let mut tried = self.tried.clone();
        tried.push(attempt.pick.index);
        let Ok(next) = service
            .selector
            .pick(&service.backends, ticket, &tried, &service.pick)
        else {
            return false;
        };
        if !spend_retry(&service) {
            // Dropping an unused pick is neutral.
            return false;
        }
        service.stats.count(ServiceEvent::StatusRetry);
        if let Some(attempt) = self.attempt.take() {
            attempt.settle_asking(
                &service,
                AttemptOutcome::ServerError,
                self.asked_cooldown,
                std::time::Instant::now(),
            );
        }
        self.tried = tried;
        self.next_pick = Some(next);
        self.retried_status = Some(status);
        true
    }
}

/// Spends one retry from the service's budget; counts and logs what happened.
fn spend_retry(service: &Service) -> bool {
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
