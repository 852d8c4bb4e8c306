//! A backend's health as its active checks report it: consecutive results against the
//! service's thresholds (a backend flips to unhealthy after `unhealthy_threshold` failed checks
//! in a row, and back after `healthy_threshold` passed ones; every backend starts healthy, as
//! Pingora's checks do), plus what the last check found, for `/status` and `/metrics`.
//!
//! Pure bookkeeping: the checks themselves run in `health_checks`, and what a flip does (the
//! breaker's Forced-Open) is the caller's. Updated once per check, never on the request path,
//! so a small mutex is enough.

use std::sync::Mutex;
use std::time::Duration;

/// The health of one backend, kept across reloads with its breaker.
#[derive(Debug, Default)]
pub struct BackendHealth {
    record: Mutex<HealthRecord>,
}

/// What the checks of one backend came to so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HealthRecord {
    /// Whether the checks consider it healthy.
    pub healthy: bool,
    /// Checks passed in a row (zero after a failed one).
    pub consecutive_passes: u32,
    /// Checks failed in a row (zero after a passed one).
    pub consecutive_failures: u32,
    /// Checks that passed since it was first checked.
    pub passed: u64,
    /// Checks that failed since it was first checked.
    pub failed: u64,
    /// Why the latest failed check failed, while the latest check failed.
    pub last_error: Option<String>,
    /// How long the latest check took.
    pub last_latency: Option<Duration>,
}

impl Default for HealthRecord {
    fn default() -> Self {
        Self {
            healthy: true,
            consecutive_passes: 0,
            consecutive_failures: 0,
            passed: 0,
            failed: 0,
            last_error: None,
            last_latency: None,
        }
    }
}

impl HealthRecord {
    /// Adds one check's result (`Err` says why it failed); returns the new health when it
    /// flipped.
    pub fn apply(
        &mut self,
        result: Result<(), String>,
        latency: Duration,
        unhealthy_threshold: u32,
        healthy_threshold: u32,
    ) -> Option<bool> {
        self.last_latency = Some(latency);
        match result {
            Ok(()) => {
                self.passed += 1;
                self.consecutive_passes += 1;
                self.consecutive_failures = 0;
                self.last_error = None;
                (!self.healthy && self.consecutive_passes >= healthy_threshold)
                    .then(|| self.flip(true))
            }
            Err(why) => {
                self.failed += 1;
                self.consecutive_failures += 1;
                self.consecutive_passes = 0;
                self.last_error = Some(why);
                (self.healthy && self.consecutive_failures >= unhealthy_threshold)
                    .then(|| self.flip(false))
            }
        }
    }

    fn flip(&mut self, healthy: bool) -> bool {
        self.healthy = healthy;
        healthy
    }
}

impl BackendHealth {
    /// Adds one check's result; returns the new health when it flipped.
    pub fn record(
        &self,
        result: Result<(), String>,
        latency: Duration,
        unhealthy_threshold: u32,
        healthy_threshold: u32,
    ) -> Option<bool> {
        self.lock()
            .apply(result, latency, unhealthy_threshold, healthy_threshold)
    }

    /// Back to healthy with no history, when its service stops checking it; whether it was
    /// unhealthy.
    pub(crate) fn forget(&self) -> bool {
        let mut record = self.lock();
        let was_unhealthy = !record.healthy;
        *record = HealthRecord::default();
        was_unhealthy
    }

    /// What the checks found so far.
    pub(crate) fn snapshot(&self) -> HealthRecord {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HealthRecord> {
        self.record
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// Applies `results` (true = passed) with thresholds 2 down and 3 up; the flips seen.
    fn run(record: &mut HealthRecord, results: &[bool]) -> Vec<bool> {
        results
            .iter()
            .filter_map(|&ok| {
                let result = if ok {
                    Ok(())
                } else {
                    Err("refused".to_owned())
                };
                record.apply(result, MS, 2, 3)
            })
            .collect()
    }

    #[test]
    fn thresholds_count_consecutive_results_both_ways() {
        let mut record = HealthRecord::default();
        assert!(record.healthy, "a backend starts healthy");
        assert_eq!(run(&mut record, &[false]), Vec::<bool>::new());
        assert_eq!(run(&mut record, &[false]), [false], "two failures in a row");
        assert_eq!(record.last_error.as_deref(), Some("refused"));
        assert_eq!(run(&mut record, &[true, true]), Vec::<bool>::new());
        assert_eq!(run(&mut record, &[true]), [true], "three passes in a row");
        assert_eq!(record.last_error, None);
        assert_eq!((record.passed, record.failed), (3, 2));
    }

    #[test]
    fn flapping_checks_never_reach_either_threshold() {
        let mut record = HealthRecord::default();
        assert!(run(&mut record, &[false, true, false, true, false, true]).is_empty());
        assert!(record.healthy);
        run(&mut record, &[false, false]);
        assert!(!record.healthy);
        assert!(run(&mut record, &[true, true, false, true, true, false]).is_empty());
        assert!(!record.healthy, "never three passes in a row");
    }

    #[test]
    fn forgetting_makes_it_healthy_again() {
        let health = BackendHealth::default();
        health.record(Err("x".into()), MS, 1, 1);
        assert!(!health.snapshot().healthy);
        assert!(health.forget());
        assert_eq!(health.snapshot(), HealthRecord::default());
        assert!(!health.forget());
    }
}
