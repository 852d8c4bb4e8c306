//! What the gateway tells operators about its breakers, through `log` and `env_logger`.
//!
//! The lines keep the original design's wording, because people grep for them:
//!
//! ```text
//! [CIRCUIT] http://localhost:9002 OPEN (threshold reached)
//! [CIRCUIT] http://localhost:9002 HALF-OPEN (timeout passed)
//! [CIRCUIT] http://localhost:9002 CLOSED (recovered)
//! [CIRCUIT] http://localhost:9002 OPEN (probe failed)
//! [CIRCUIT STATUS] http://localhost:9002
//!   Total:    10
//!   Success:   6
//!   Failures:  4
//!   State:     Closed
//! ```
//!
//! Transitions always log (`OPEN` at warn level, the others at info). The status block is one
//! log record with embedded newlines, so blocks from concurrent requests never interleave.

use log::{info, log, Level};

use crate::breaker::{Breaker, BreakerState, Transition, TransitionObserver};

/// Sets up `env_logger`: level `info` unless `RUST_LOG` says otherwise.
pub fn init_logging() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        // No indent on continuation lines: the status block keeps the original layout.
        .format_indent(None)
        .init();
}

/// Logs every breaker transition as a `[CIRCUIT]` line.
#[derive(Debug, Default)]
pub struct CircuitLog;

impl TransitionObserver for CircuitLog {
    fn on_transition(&self, transition: &Transition<'_>) {
        let level = match transition.to {
            BreakerState::Open | BreakerState::ForcedOpen => Level::Warn,
            BreakerState::HalfOpen | BreakerState::Closed => Level::Info,
        };
        log!(level, "{}", transition_line(transition));
    }
}

/// `[CIRCUIT] <url> <STATE> (<reason>)`.
pub fn transition_line(transition: &Transition<'_>) -> String {
    let state = match transition.to {
        BreakerState::Closed => "CLOSED",
        BreakerState::Open | BreakerState::ForcedOpen => "OPEN",
        BreakerState::HalfOpen => "HALF-OPEN",
    };
    format!(
        "[CIRCUIT] {} {state} ({})",
        transition.breaker, transition.reason
    )
}

/// Logs the `[CIRCUIT STATUS]` block of `breaker`.
pub fn log_status(breaker: &Breaker) {
    if log::log_enabled!(Level::Info) {
        info!("{}", status_block(breaker));
    }
}

/// The `[CIRCUIT STATUS]` block in the original layout.
pub fn status_block(breaker: &Breaker) -> String {
    let snapshot = breaker.snapshot();
    format!(
        "[CIRCUIT STATUS] {}\n  Total:    {:>2}\n  Success:  {:>2}\n  Failures: {:>2}\n  State:     {}",
        breaker.name(),
        snapshot.total(),
        snapshot.successes,
        snapshot.failures,
        snapshot.state
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::breaker::{BreakerSettings, ManualClock, Outcome, TransitionReason};
    use std::sync::Arc;

    #[test]
    fn transition_lines_match_the_original_design() {
        let line = |to, reason| {
            transition_line(&Transition {
                breaker: "http://localhost:9002",
                from: BreakerState::Closed,
                to,
                reason,
            })
        };
        assert_eq!(
            line(BreakerState::Open, TransitionReason::ThresholdReached),
            "[CIRCUIT] http://localhost:9002 OPEN (threshold reached)"
        );
        assert_eq!(
            line(BreakerState::HalfOpen, TransitionReason::TimeoutPassed),
            "[CIRCUIT] http://localhost:9002 HALF-OPEN (timeout passed)"
        );
        assert_eq!(
            line(BreakerState::Closed, TransitionReason::Recovered),
            "[CIRCUIT] http://localhost:9002 CLOSED (recovered)"
        );
        assert_eq!(
            line(BreakerState::Open, TransitionReason::ProbeFailed),
            "[CIRCUIT] http://localhost:9002 OPEN (probe failed)"
        );
    }

    #[test]
    fn the_status_block_matches_the_original_layout() {
        let breaker = Arc::new(Breaker::new(
            "http://localhost:9002",
            BreakerSettings {
                failure_threshold: 100,
                ..BreakerSettings::default()
            },
            Arc::new(ManualClock::new()),
            Arc::new(CircuitLog),
        ));
        for outcome in [Outcome::Success; 6]
            .into_iter()
            .chain([Outcome::Failure; 4])
        {
            breaker.try_acquire().unwrap().record(outcome);
        }
        assert_eq!(
            status_block(&breaker),
            "[CIRCUIT STATUS] http://localhost:9002\n  Total:    10\n  Success:   6\n  \
             Failures:  4\n  State:     Closed"
        );
    }
}
