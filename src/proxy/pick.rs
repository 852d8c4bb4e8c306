//! Picking the backend of one attempt: the service's selector (breakers, concurrency limits,
//! round-robin or latency-aware), and, when every backend that could take the request is
//! full, the service's waiting room, bounded in size and in time by the queue settings and by
//! the request's own total timeout. A request refused here never reached a backend, so it
//! touches no breaker: being full is not failing.

use std::ops::ControlFlow;
use std::time::Instant;

use super::Refusal;
use crate::load::Overflow;
use crate::selector::{NoPick, Pick};
use crate::service::Service;
use crate::telemetry::metrics::ServiceEvent;

/// A backend for the attempt of the request with `ticket` that has tried `tried`, asked for
/// `now`, waiting until `deadline` at most if every backend is full, and when it was picked
/// (`now`, unless it waited); or why there is none (counted).
pub(super) async fn pick(
    service: &Service,
    ticket: usize,
    tried: &[usize],
    now: Instant,
    deadline: Instant,
) -> Result<(Pick, Instant), Refusal> {
    let select = || {
        service
            .selector
            .pick(&service.backends, ticket, tried, &service.pick)
    };
    match select() {
        Ok(pick) => return Ok((pick, now)),
        Err(NoPick::Unavailable) => return Err(unavailable(service, tried)),
        Err(NoPick::Full) => {}
    }
    let queue = service.load.queue;
    let until = deadline.min(now + queue.timeout);
    let waited = service
        .room
        .wait(queue.size, until, || match select() {
            Ok(pick) => ControlFlow::Break(Some(pick)),
            Err(NoPick::Full) => ControlFlow::Continue(()),
            Err(NoPick::Unavailable) => ControlFlow::Break(None),
        })
        .await;
    if !matches!(waited, Err(Overflow::QueueFull)) {
        service.stats.count(ServiceEvent::Queued);
    }
    match waited {
        Ok(Some(pick)) => Ok((pick, Instant::now())),
        // The breakers opened while it waited.
        Ok(None) => Err(unavailable(service, tried)),
        Err(overflow) => {
            service.stats.count(ServiceEvent::Overloaded);
            Err(Refusal::Overloaded(overflow))
        }
    }
}

/// Why no breaker admits the request (counted).
fn unavailable(service: &Service, tried: &[usize]) -> Refusal {
    if service.backends.is_empty() {
        service.stats.count(ServiceEvent::NoBackends);
        Refusal::NoBackends
    } else if tried.is_empty() {
        service.stats.count(ServiceEvent::AllOpen);
        Refusal::AllOpen
    } else {
        Refusal::NoBackendLeft
    }
}
