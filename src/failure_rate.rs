//! Failure-rate ejection: the share of a backend's recent requests that failed, over a sliding
//! window of per-second buckets, so that a backend failing one request in two (which never
//! reaches a run of consecutive failures) is still taken out.
//!
//! Lock-free and allocation-free on the request path: the window is a fixed ring of buckets,
//! one per second, each three atomics (its second, requests, failures). Counting an outcome is
//! two `fetch_add`s on the current second's bucket; only a failure sums the window to compare it
//! with the threshold. A bucket that comes round to a new second is reset by whichever request
//! claims it first, so counts at a second's edge under contention are approximate by a request
//! or two, which a rate over many requests does not notice.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// When a Closed breaker opens on its failure rate (`failure_rate_threshold`, `_window`,
/// `_min_requests`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailureRate {
    /// Failures per 100 requests that open the breaker (1 to 100).
    pub threshold_percent: u8,
    /// How far back requests count: whole seconds, at least 1.
    pub window: Duration,
    /// Fewer requests than this in the window never open the breaker.
    pub min_requests: u32,
}

/// The sliding window of one breaker.
#[derive(Debug)]
pub(crate) struct FailureWindow {
    rate: FailureRate,
    buckets: Box<[Bucket]>,
}

#[derive(Debug, Default)]
struct Bucket {
    second: AtomicU64,
    requests: AtomicU64,
    failures: AtomicU64,
}

impl FailureWindow {
    pub(crate) fn new(rate: FailureRate) -> Self {
        let seconds = rate.window.as_secs().max(1);
        Self {
            rate,
            buckets: (0..seconds).map(|_| Bucket::default()).collect(),
        }
    }

    /// Counts one outcome at `now` (the breaker clock's time); for a failure, returns whether
    /// the window's failures now reach the rate, with enough requests to judge.
    pub(crate) fn record(&self, now: Duration, failed: bool) -> bool {
        // Seconds are counted from 1, so that a bucket's 0 means "never used".
        let second = now.as_secs() + 1;
        let bucket = &self.buckets[(second % self.buckets.len() as u64) as usize];
        let seen = bucket.second.load(Ordering::Acquire);
        if seen != second
            && bucket
                .second
                .compare_exchange(seen, second, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            bucket.requests.store(0, Ordering::Relaxed);
            bucket.failures.store(0, Ordering::Relaxed);
        }
        bucket.requests.fetch_add(1, Ordering::Relaxed);
        if !failed {
            return false;
        }
        bucket.failures.fetch_add(1, Ordering::Relaxed);
        let (requests, failures) = self.totals(second);
        requests >= u64::from(self.rate.min_requests)
            && failures * 100 >= requests * u64::from(self.rate.threshold_percent)
    }

    /// Forgets every count: a breaker that closes starts a new window.
    pub(crate) fn clear(&self) {
        for bucket in self.buckets.iter() {
            bucket.second.store(0, Ordering::Relaxed);
            bucket.requests.store(0, Ordering::Relaxed);
            bucket.failures.store(0, Ordering::Relaxed);
        }
    }

    /// Requests and failures in the window that ends with `second`.
    fn totals(&self, second: u64) -> (u64, u64) {
        // A bucket at second 0 was never used (or was cleared): seconds start at 1.
        let oldest = second.saturating_sub(self.buckets.len() as u64 - 1).max(1);
        self.buckets
            .iter()
            .filter(|b| (oldest..=second).contains(&b.second.load(Ordering::Acquire)))
            .fold((0, 0), |(requests, failures), b| {
                (
                    requests + b.requests.load(Ordering::Relaxed),
                    failures + b.failures.load(Ordering::Relaxed),
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(threshold_percent: u8, window_secs: u64, min_requests: u32) -> FailureWindow {
        FailureWindow::new(FailureRate {
            threshold_percent,
            window: Duration::from_secs(window_secs),
            min_requests,
        })
    }

    /// Feeds `outcomes` (true = failure) at `at`; whether any failure reached the rate.
    fn feed(w: &FailureWindow, at: Duration, outcomes: &[bool]) -> bool {
        let mut tripped = false;
        for &failed in outcomes {
            tripped |= w.record(at, failed);
        }
        tripped
    }

    #[test]
    fn the_rate_is_reached_at_the_threshold_not_below() {
        let w = window(50, 30, 4);
        let t = Duration::from_secs(5);
        // 1 failure in 3 requests: below the minimum and below the rate.
        assert!(!feed(&w, t, &[false, true, false]));
        // 2 in 5 (40 %): enough requests, still below 50 %.
        assert!(!feed(&w, t, &[false, true]));
        // 3 in 6: exactly 50 %.
        assert!(feed(&w, t, &[true]));
    }

    #[test]
    fn below_the_minimum_requests_nothing_opens() {
        let w = window(50, 30, 20);
        assert!(!feed(&w, Duration::from_secs(1), &[true; 19]));
        assert!(feed(&w, Duration::from_secs(1), &[true]));
    }

    #[test]
    fn old_seconds_leave_the_window() {
        let w = window(50, 10, 4);
        // Three failures at second 0 (below the minimum), then requests 10 s later: the
        // failures have left the window.
        assert!(!feed(&w, Duration::ZERO, &[true; 3]));
        assert!(!feed(
            &w,
            Duration::from_secs(10),
            &[false, false, false, false]
        ));
        assert!(!feed(&w, Duration::from_secs(10), &[true]), "1 in 5");
        // Within the window they still count: at second 9, 3 failures of 3.
        let w = window(50, 10, 4);
        feed(&w, Duration::ZERO, &[true; 3]);
        assert!(
            feed(&w, Duration::from_secs(9), &[true]),
            "4 of 4 within 10 s"
        );
    }

    #[test]
    fn counts_add_up_across_the_seconds_of_the_window_far_into_the_clock() {
        let w = window(100, 10, 5);
        let start = Duration::from_secs(3600);
        for second in 0..4 {
            assert!(!feed(&w, start + Duration::from_secs(second), &[true]));
        }
        assert!(feed(&w, start + Duration::from_secs(9), &[true]), "5 of 5");
    }

    #[test]
    fn a_second_a_whole_window_and_more_ago_never_counts() {
        let w = window(50, 10, 5);
        feed(&w, Duration::ZERO, &[true; 4]);
        // 11 s later its bucket is not the current one, but it is out of the window.
        assert!(!feed(&w, Duration::from_secs(11), &[true]), "1 of 1");
    }

    #[test]
    fn clearing_forgets_the_window() {
        let w = window(50, 30, 2);
        feed(&w, Duration::from_secs(3), &[true]);
        w.clear();
        assert!(
            !feed(&w, Duration::from_secs(3), &[false, false, true]),
            "1 of 3"
        );
    }
}
