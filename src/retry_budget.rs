//! A per-service retry budget: failovers to another backend are bounded, so a sick service is
//! not hit with a retry storm on top of its normal load.
//!
//! It is a token bucket. Every request deposits `ratio_percent` / 100 of a token, a floor of
//! `min_per_second` tokens flows in regardless of traffic (so a quiet service can still fail
//! over), and each retry spends one token. The bucket holds at most ten seconds' worth of
//! deposits, so a long calm period cannot bank an unbounded storm.
//!
//! Why this shape: the budget is only consulted when an attempt has failed, and it reads the
//! service's request count from the round-robin ticket counter that already exists. So the
//! request path pays nothing for it, and the lock it takes is per service and only on the
//! failure path.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::clock::Clock;

/// How many retries a service may make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryBudgetSettings {
    /// Retries allowed per 100 requests.
    pub ratio_percent: u32,
    /// Retries allowed per second whatever the traffic.
    pub min_per_second: u32,
}

impl Default for RetryBudgetSettings {
    /// 20 % of requests, at least 10 per second.
    fn default() -> Self {
        Self {
            ratio_percent: 20,
            min_per_second: 10,
        }
    }
}

/// How far back the bucket's capacity reaches.
const RESERVE: Duration = Duration::from_secs(10);

/// The retry budget of one service.
pub struct RetryBudget {
    settings: RetryBudgetSettings,
    clock: Arc<dyn Clock>,
    bucket: Mutex<Bucket>,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    /// The request count at the last refill.
    requests: u64,
    /// The time of the last refill.
    refilled_at: Duration,
    /// Whether the last attempt to spend was refused (to log only the first refusal).
    exhausted: bool,
}

/// The answer to a request for one retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Spend {
    /// Granted.
    Granted,
    /// Refused, and the budget had still granted the previous request.
    NewlyExhausted,
    /// Refused, as the previous one was.
    Exhausted,
}

impl std::fmt::Debug for RetryBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetryBudget")
            .field("settings", &self.settings)
            .finish()
    }
}

impl RetryBudget {
    /// A budget that starts with the floor's ten-second reserve.
    pub fn new(settings: RetryBudgetSettings, clock: Arc<dyn Clock>) -> Self {
        let now = clock.now();
        Self {
            bucket: Mutex::new(Bucket {
                tokens: f64::from(settings.min_per_second) * RESERVE.as_secs_f64(),
                requests: 0,
                refilled_at: now,
                exhausted: false,
            }),
            settings,
            clock,
        }
    }

    /// Asks for one retry; `requests_total` is the service's request count so far.
    pub(crate) fn try_spend(&self, requests_total: u64) -> Spend {
        let now = self.clock.now();
        let mut bucket = self
            .bucket
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let elapsed = now.saturating_sub(bucket.refilled_at).as_secs_f64();
        let new_requests = requests_total.saturating_sub(bucket.requests) as f64;
        let ratio = f64::from(self.settings.ratio_percent) / 100.0;
        let floor = f64::from(self.settings.min_per_second);
        let deposit = new_requests * ratio + elapsed * floor;
        // Room for ten seconds of deposits at the recent rate, or of the floor.
        let recent_rate = if elapsed > 0.0 {
            new_requests / elapsed
        } else {
            0.0
        };
        let capacity = (recent_rate * ratio).max(floor) * RESERVE.as_secs_f64();
        bucket.tokens = (bucket.tokens + deposit).min(capacity.max(bucket.tokens));
        bucket.requests = requests_total;
        bucket.refilled_at = now;

        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            bucket.exhausted = false;
            Spend::Granted
        } else if bucket.exhausted {
            Spend::Exhausted
        } else {
            bucket.exhausted = true;
            Spend::NewlyExhausted
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    fn budget(ratio_percent: u32, min_per_second: u32) -> (RetryBudget, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::new());
        let settings = RetryBudgetSettings {
            ratio_percent,
            min_per_second,
        };
        (RetryBudget::new(settings, clock.clone()), clock)
    }

    fn spend_all(budget: &RetryBudget, requests_total: u64) -> usize {
        let mut granted = 0;
        while budget.try_spend(requests_total) == Spend::Granted {
            granted += 1;
            assert!(granted < 1_000_000, "unbounded");
        }
        granted
    }

    #[test]
    fn a_quiet_service_gets_the_floor() {
        let (budget, clock) = budget(20, 10);
        assert_eq!(
            spend_all(&budget, 0),
            100,
            "ten seconds of the floor in reserve"
        );
        assert_eq!(budget.try_spend(0), Spend::Exhausted);
        clock.advance(Duration::from_secs(1));
        assert_eq!(spend_all(&budget, 0), 10);
    }

    #[test]
    fn retries_are_bounded_by_the_ratio_of_requests() {
        let (budget, clock) = budget(20, 0);
        assert_eq!(budget.try_spend(0), Spend::NewlyExhausted);
        clock.advance(Duration::from_secs(1));
        assert_eq!(spend_all(&budget, 1_000), 200);
        clock.advance(Duration::from_millis(100));
        assert_eq!(spend_all(&budget, 1_050), 10);
    }

    #[test]
    fn a_long_calm_period_does_not_bank_an_unbounded_storm() {
        let (budget, clock) = budget(20, 1);
        spend_all(&budget, 0);
        clock.advance(Duration::from_secs(3600));
        // One hour at 100 requests per second and the floor: 10 s of deposits at the recent
        // rate (20 % of 100 per second), no more.
        assert_eq!(spend_all(&budget, 360_000), 200);
    }

    #[test]
    fn requests_counted_in_the_same_instant_bank_no_more_than_the_reserve() {
        let (budget, _) = budget(20, 1);
        spend_all(&budget, 0);
        // No time has passed, so there is no recent rate: the floor's reserve caps the deposit
        // of a million requests' 20 %.
        assert_eq!(spend_all(&budget, 1_000_000), 10);
    }

    #[test]
    fn a_zero_budget_never_retries() {
        let (budget, clock) = budget(0, 0);
        clock.advance(Duration::from_secs(5));
        assert_eq!(budget.try_spend(1_000), Spend::NewlyExhausted);
        assert_eq!(budget.try_spend(2_000), Spend::Exhausted);
    }
}
