//! Settling an attempt: what its end means for the backend's breaker (the outcome), and what
//! the client is answered when the request could not be proxied. Pure functions of the error
//! and the request's context, so the breaker contract is tested here without a network.

use pingora::prelude::*;
use pingora::ErrorSource;

use super::{Refusal, RequestContext};
use crate::reply::ErrorReply;
use crate::telemetry::metrics::AttemptOutcome;

/// How an attempt that got past connecting ended.
///
/// An upstream error (reset, timeout, broken body) or a 5xx is a failure; any other answer is
/// a success, 4xx included (the backend is alive). A request that ended for the client's
/// sake before the backend answered (client gone) is cancelled: it says nothing about the
/// backend. A response whose header had arrived and that timed out once the request's total
/// timeout had passed was cut by the gateway's own deadline while the backend delivered: not
/// the backend's failure either.
pub(super) fn attempt_outcome(
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
pub(super) fn failure_outcome(e: &Error, connecting: bool) -> AttemptOutcome {
    if is_timeout(e) {
        AttemptOutcome::Timeout
    } else if connecting {
        AttemptOutcome::ConnectError
    } else {
        AttemptOutcome::BrokenResponse
    }
}

/// Whether `e` says the client went away or stopped reading: nobody to answer, and nothing
/// about the backend.
pub(super) fn client_gone(e: &Error) -> bool {
    *e.esource() == ErrorSource::Downstream
        && matches!(
            e.etype(),
            ReadError | WriteError | WriteTimedout | ConnectionClosed
        )
}

/// Whether `e` is a connect, read or write timeout.
pub(super) fn is_timeout(e: &Error) -> bool {
    matches!(e.etype(), ConnectTimedout | ReadTimedout | WriteTimedout)
}

/// The response for a request that could not be proxied; `None` when the client is gone.
pub(super) fn error_reply(e: &Error, ctx: &RequestContext) -> Option<ErrorReply> {
    let service = ctx.service.as_deref();
    let service_name = service.map_or("", |s| s.name.as_str());
    if let Some(service) = service.filter(|s| ctx.body_bytes > s.max_body.0) {
        return Some(ErrorReply::body_too_large(service.max_body.0));
    }
    match (ctx.refusal, service) {
        (Some(Refusal::AllOpen), Some(service)) => return Some(ErrorReply::all_open(service)),
        (Some(Refusal::NoBackends), _) => return Some(ErrorReply::no_backends(service_name)),
        (Some(Refusal::Overloaded(why)), Some(service)) => {
            return Some(ErrorReply::overloaded(service, why))
        }
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
