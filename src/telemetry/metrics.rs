//! Metrics: plain atomic counters kept next to what they count; the admin listener's
//! `prometheus-client` collector (`admin/prometheus.rs`) reads them at scrape time.
//!
//! Why no registered metric families (the `prometheus` crate's, or `prometheus-client`'s own
//! `Family`): labelled metrics look their series up in a locked hash map on every update, and a
//! backend removed by a reload would have to be unregistered by hand or its series would live
//! on. Here each
//! (service, backend) pair owns its [`BackendStats`] and each service its [`ServiceStats`]
//! (kept across reloads by name, like the breakers), a request only bumps atomics it already
//! holds, and a scrape walks the *current* routing table: removed backends' series are gone by
//! construction, and label values come only from configured names. Pingora 0.9 registers no
//! metrics of its own, so nothing is missed by not reading its global registry.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::breaker::Outcome;

/// How one attempt at a backend ended, as the metrics count it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// The backend answered with a status below 500.
    Success,
    /// The connection could not be made (refused, unreachable).
    ConnectError,
    /// Connecting or reading timed out.
    Timeout,
    /// The backend answered 5xx.
    ServerError,
    /// The backend broke the exchange: reset, closed early, invalid response.
    BrokenResponse,
    /// The client went away before the backend settled anything: neutral for the breaker.
    Cancelled,
    /// The response was still arriving when the gateway's own total timeout cut it: the
    /// backend was delivering, so neutral for the breaker.
    CutByDeadline,
}

impl AttemptOutcome {
    /// Every outcome, in the order they are stored and rendered.
    pub(crate) const ALL: [AttemptOutcome; 7] = [
        AttemptOutcome::Success,
        AttemptOutcome::ConnectError,
        AttemptOutcome::Timeout,
        AttemptOutcome::ServerError,
        AttemptOutcome::BrokenResponse,
        AttemptOutcome::Cancelled,
        AttemptOutcome::CutByDeadline,
    ];

    /// The `outcome` label value.
    pub fn label(self) -> &'static str {
        match self {
            AttemptOutcome::Success => "success",
            AttemptOutcome::ConnectError => "connect_error",
            AttemptOutcome::Timeout => "timeout",
            AttemptOutcome::ServerError => "http_5xx",
            AttemptOutcome::BrokenResponse => "broken_response",
            AttemptOutcome::Cancelled => "cancelled",
            AttemptOutcome::CutByDeadline => "cut_by_deadline",
        }
    }

    /// What the breaker makes of it; `None` is neutral.
    pub(crate) fn breaker_outcome(self) -> Option<Outcome> {
        match self {
            AttemptOutcome::Success => Some(Outcome::Success),
            AttemptOutcome::Cancelled | AttemptOutcome::CutByDeadline => None,
            _ => Some(Outcome::Failure),
        }
    }

    /// Whether it took as long as it did because of the backend: a latency sample for its load
    /// (a refused connect is fast and says nothing of how it serves; a cancelled or cut one
    /// ended on the gateway's side).
    pub(crate) fn measures_backend_latency(self) -> bool {
        matches!(
            self,
            AttemptOutcome::Success
                | AttemptOutcome::Timeout
                | AttemptOutcome::ServerError
                | AttemptOutcome::BrokenResponse
        )
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Upper bounds of the latency histogram's buckets, in microseconds (`+Inf` follows).
const LATENCY_BUCKETS_MICROS: [u64; 14] = [
    500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000,
    2_500_000, 5_000_000, 10_000_000,
];

/// Attempts at one backend on behalf of one service: counts by outcome and how long they took.
#[derive(Debug, Default)]
pub struct BackendStats {
    attempts: [AtomicU64; AttemptOutcome::ALL.len()],
    /// Non-cumulative bucket counts; the last one is `+Inf`. Cumulated when rendered.
    latency_buckets: [AtomicU64; LATENCY_BUCKETS_MICROS.len() + 1],
    latency_sum_micros: AtomicU64,
}

impl BackendStats {
    /// Counts one attempt that ended with `outcome` after `elapsed` (from the pick to its end).
    pub fn record(&self, outcome: AttemptOutcome, elapsed: Duration) {
        self.attempts[outcome.index()].fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        let bucket = LATENCY_BUCKETS_MICROS
            .iter()
            .position(|&bound| micros <= bound)
            .unwrap_or(LATENCY_BUCKETS_MICROS.len());
        self.latency_buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.latency_sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// Attempts that ended with `outcome`.
    pub fn attempts(&self, outcome: AttemptOutcome) -> u64 {
        self.attempts[outcome.index()].load(Ordering::Relaxed)
    }

    /// The `q`-quantile of its attempts' latency so far, as the upper bound of the histogram
    /// bucket it falls in; `None` before `min_samples` attempts (or past the last bound).
    pub(crate) fn latency_quantile(&self, q: f64, min_samples: u64) -> Option<Duration> {
        let counts: Vec<u64> = self
            .latency_buckets
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        if total < min_samples.max(1) {
            return None;
        }
        let rank = (total as f64 * q).ceil() as u64;
        let mut seen = 0;
        for (count, bound) in counts.iter().zip(LATENCY_BUCKETS_MICROS) {
            seen += count;
            if seen >= rank {
                return Some(Duration::from_micros(bound));
            }
        }
        None
    }

    /// The latency histogram: the count in each bucket (not cumulative; the encoder sums them)
    /// by its upper bound in seconds (`f64::INFINITY` last), and the sum in seconds.
    pub(crate) fn latency(&self) -> (Vec<(f64, u64)>, f64) {
        let buckets = LATENCY_BUCKETS_MICROS
            .iter()
            .map(|&bound| bound as f64 / 1e6)
            .chain([f64::INFINITY])
            .zip(&self.latency_buckets)
            .map(|(bound, count)| (bound, count.load(Ordering::Relaxed)))
            .collect();
        let sum = self.latency_sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        (buckets, sum)
    }
}

/// Things that happen to a service's requests rather than to one backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceEvent {
    /// A request was routed to the service.
    Request,
    /// Answered 503 at once because every backend's breaker was open.
    AllOpen,
    /// Answered 503 at once because the service had no backends (discovery found none).
    NoBackends,
    /// Failed over to another backend.
    Retry,
    /// A second attempt raced the first because it had not answered in time (a hedge).
    Hedge,
    /// Of those, sent on because a backend answered with a status in `retry_on_status`.
    StatusRetry,
    /// Not failed over because the retry budget was spent.
    RetryBudgetExhausted,
    /// Waited in the service's queue because every backend was at its concurrency limit.
    Queued,
    /// Answered 503 because every backend was at its concurrency limit and the queue was full
    /// or the wait ran out.
    Overloaded,
    /// Answered 429: over the service's rate limit.
    RateLimited,
    /// Answered 429: over its client address's rate limit.
    ClientRateLimited,
}

impl ServiceEvent {
    /// Every event, in the order they are stored.
    pub(crate) const ALL: [ServiceEvent; 11] = [
        ServiceEvent::Request,
        ServiceEvent::AllOpen,
        ServiceEvent::NoBackends,
        ServiceEvent::Retry,
        ServiceEvent::Hedge,
        ServiceEvent::StatusRetry,
        ServiceEvent::RetryBudgetExhausted,
        ServiceEvent::Queued,
        ServiceEvent::Overloaded,
        ServiceEvent::RateLimited,
        ServiceEvent::ClientRateLimited,
    ];
}

/// Counts of [`ServiceEvent`]s for one service.
#[derive(Debug, Default)]
pub struct ServiceStats {
    events: [AtomicU64; ServiceEvent::ALL.len()],
}

impl ServiceStats {
    /// Counts one `event`.
    pub fn count(&self, event: ServiceEvent) {
        self.events[event as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// How many times `event` happened.
    pub fn get(&self, event: ServiceEvent) -> u64 {
        self.events[event as usize].load(Ordering::Relaxed)
    }
}

/// Counts for requests that never reach a service.
#[derive(Debug, Default)]
pub(crate) struct GatewayStats {
    not_found: AtomicU64,
}

impl GatewayStats {
    /// Counts a request answered 404: not a proxy path, or an unknown service.
    pub(crate) fn count_not_found(&self) {
        self.not_found.fetch_add(1, Ordering::Relaxed);
    }

    /// Requests answered 404.
    pub fn not_found(&self) -> u64 {
        self.not_found.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quantile_is_the_bound_of_its_bucket_once_there_are_enough_samples() {
        let stats = BackendStats::default();
        for _ in 0..94 {
            stats.record(AttemptOutcome::Success, Duration::from_micros(800));
        }
        assert_eq!(stats.latency_quantile(0.95, 100), None, "94 samples");
        for _ in 0..6 {
            stats.record(AttemptOutcome::Success, Duration::from_millis(40));
        }
        assert_eq!(
            stats.latency_quantile(0.5, 100),
            Some(Duration::from_millis(1))
        );
        assert_eq!(
            stats.latency_quantile(0.95, 100),
            Some(Duration::from_millis(50))
        );
    }

    #[test]
    fn attempts_land_in_their_outcome_and_latency_bucket() {
        let stats = BackendStats::default();
        stats.record(AttemptOutcome::Success, Duration::from_micros(400));
        stats.record(AttemptOutcome::Success, Duration::from_micros(500));
        stats.record(AttemptOutcome::Timeout, Duration::from_millis(30));
        stats.record(AttemptOutcome::ServerError, Duration::from_secs(60));
        assert_eq!(stats.attempts(AttemptOutcome::Success), 2);
        assert_eq!(stats.attempts(AttemptOutcome::Timeout), 1);
        assert_eq!(stats.attempts(AttemptOutcome::ConnectError), 0);
        let (buckets, sum) = stats.latency();
        assert_eq!(buckets.len(), LATENCY_BUCKETS_MICROS.len() + 1);
        assert_eq!(buckets[0], (0.0005, 2), "500 µs is in the 0.5 ms bucket");
        assert_eq!(buckets[5], (0.025, 0));
        assert_eq!(buckets[6], (0.05, 1));
        assert_eq!(buckets[13], (10.0, 0));
        assert_eq!(buckets[14], (f64::INFINITY, 1));
        assert_eq!(buckets.iter().map(|(_, count)| count).sum::<u64>(), 4);
        assert!((sum - 60.0309).abs() < 1e-9, "{sum}");
    }

    #[test]
    fn only_success_and_failures_reach_the_breaker() {
        for outcome in AttemptOutcome::ALL {
            let expected = match outcome {
                AttemptOutcome::Success => Some(Outcome::Success),
                AttemptOutcome::Cancelled | AttemptOutcome::CutByDeadline => None,
                _ => Some(Outcome::Failure),
            };
            assert_eq!(outcome.breaker_outcome(), expected, "{outcome:?}");
        }
    }
}
