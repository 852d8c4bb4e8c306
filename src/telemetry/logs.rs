//! What the gateway tells operators about its breakers, through `log` and `env_logger`.
//!
//! By default (`log_format: text`) the lines keep the original design's wording, because
//! people grep for them:
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
//! With `log_format: json` every line is one JSON object, for log pipelines: transitions and
//! per-request status are `event` objects with their fields, everything else (Pingora's own
//! lines included) a `msg`:
//!
//! ```text
//! {"ts":"...","level":"WARN","event":"transition","backend":"http://localhost:9002","services":["product"],"from":"Closed","to":"Open","reason":"threshold reached","successes":6,"failures":3}
//! {"ts":"...","level":"INFO","event":"request","backend":"http://localhost:9001","state":"Closed","total":10,"successes":10,"failures":0}
//! {"ts":"...","level":"INFO","target":"pingora_core::server","msg":"Server starting"}
//! ```
//!
//! Transitions always log (`OPEN` at warn level, the others at info). A status block is one
//! log record, so blocks from concurrent requests never interleave.

use std::collections::HashMap;
use std::io::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use log::{info, log, Level};
use serde_json::json;

use crate::breaker::{Breaker, BreakerState, Transition, TransitionObserver};
use crate::config::LogFormat;

/// The log target of events (transitions, request status): how the JSON format tells them
/// from plain messages.
pub(crate) const EVENT_TARGET: &str = "gateway::event";

/// Sets up `env_logger` in `format`: level `info` unless `RUST_LOG` says otherwise.
pub(crate) fn init_logging(format: LogFormat) {
    let mut builder =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"));
    match format {
        // No indent on continuation lines: the status block keeps the original layout.
        LogFormat::Text => builder.format_indent(None),
        LogFormat::Json => builder.format(|buf, record| {
            let ts = buf.timestamp();
            let message = record.args().to_string();
            match message.strip_prefix('{') {
                Some(fields) if record.target() == EVENT_TARGET => {
                    writeln!(
                        buf,
                        r#"{{"ts":"{ts}","level":"{}",{fields}"#,
                        record.level()
                    )
                }
                _ => writeln!(
                    buf,
                    "{}",
                    json!({
                        "ts": ts.to_string(),
                        "level": record.level().as_str(),
                        "target": record.target(),
                        "msg": message,
                    })
                ),
            }
        }),
    };
    let logger = builder.build();
    log::set_max_level(logger.filter());
    // Only fails if a logger is set already: then that one stays.
    let _ = log::set_boxed_logger(Box::new(SummarisingLogger {
        inner: logger,
        last_summary: Mutex::new(None),
    }));
}

/// How often client-side errors are summed up in one log line.
const CLIENT_ERROR_SUMMARY_INTERVAL: Duration = Duration::from_secs(10);

/// Client-side errors Pingora reported since the process started (slow or broken request
/// heads, resets before a request was read): `/metrics` exports them.
static CLIENT_ERRORS: AtomicU64 = AtomicU64::new(0);

/// How many client-side errors Pingora has reported so far.
pub fn client_errors() -> u64 {
    CLIENT_ERRORS.load(Ordering::Relaxed)
}

/// `env_logger`, less one kind of line: Pingora logs an `ERROR` for every client connection
/// that breaks before its request head was read (a slowloris connection the head deadline
/// closes, a reset, garbage), so attack traffic would become log volume. Those are counted
/// instead, and summed up in one line at most every [`CLIENT_ERROR_SUMMARY_INTERVAL`].
struct SummarisingLogger {
    inner: env_logger::Logger,
    last_summary: Mutex<Option<(Instant, u64)>>,
}

impl SummarisingLogger {
    fn is_client_error(record: &log::Record<'_>) -> bool {
        record.level() == Level::Error
            && record.target().starts_with("pingora_proxy")
            && record
                .args()
                .to_string()
                .contains("downstream session type")
    }
}

impl log::Log for SummarisingLogger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        self.inner.enabled(metadata)
    }

    fn log(&self, record: &log::Record<'_>) {
        if !Self::is_client_error(record) {
            self.inner.log(record);
            return;
        }
        let total = CLIENT_ERRORS.fetch_add(1, Ordering::Relaxed) + 1;
        let mut last = self.last_summary.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let due =
            last.is_none_or(|(at, _)| now.duration_since(at) >= CLIENT_ERROR_SUMMARY_INTERVAL);
        let counted = last.map_or(0, |(_, counted)| counted);
        if due {
            *last = Some((now, total));
            drop(last);
            let message = format!(
                "{} client connection(s) broke before their request head was read (slow, reset \
                 or malformed) since the last such line; e.g.: {}",
                total - counted,
                record.args()
            );
            self.inner.log(
                &log::Record::builder()
                    .level(Level::Warn)
                    .target("gateway::clients")
                    .args(format_args!("{message}"))
                    .build(),
            );
        }
    }

    fn flush(&self) {
        self.inner.flush();
    }
}

/// Logs every breaker transition, in the chosen format.
///
/// One log serves every routing table of the process: a breaker kept across reloads keeps its
/// observer, so the services each backend belongs to are swapped in here at every rebuild
/// rather than fixed when the breaker was made.
#[derive(Debug, Default)]
pub(crate) struct CircuitLog {
    format: LogFormat,
    /// The services that list each backend URL, for JSON events.
    services_by_backend: ArcSwap<HashMap<String, Vec<String>>>,
}

impl CircuitLog {
    /// A transition log in `format`.
    pub fn new(format: LogFormat) -> Self {
        Self {
            format,
            services_by_backend: ArcSwap::default(),
        }
    }

    /// Names, for each backend URL, the services that list it now.
    pub(crate) fn set_services(&self, services_by_backend: HashMap<String, Vec<String>>) {
        self.services_by_backend
            .store(Arc::new(services_by_backend));
    }
}

impl TransitionObserver for CircuitLog {
    fn on_transition(&self, transition: &Transition<'_>) {
        let level = match transition.to {
            BreakerState::Open | BreakerState::ForcedOpen => Level::Warn,
            BreakerState::HalfOpen | BreakerState::Closed => Level::Info,
        };
        match self.format {
            LogFormat::Text => log!(level, "{}", transition_line(transition)),
            LogFormat::Json => {
                let services_by_backend = self.services_by_backend.load();
                let services = services_by_backend
                    .get(transition.breaker)
                    .map_or(&[][..], Vec::as_slice);
                log!(target: EVENT_TARGET, level, "{}", transition_event(transition, services));
            }
        }
    }
}

/// `[CIRCUIT] <url> <STATE> (<reason>)`.
pub(crate) fn transition_line(transition: &Transition<'_>) -> String {
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

/// A transition as a JSON event object.
pub(crate) fn transition_event(transition: &Transition<'_>, services: &[String]) -> String {
    json!({
        "event": "transition",
        "backend": transition.breaker,
        "services": services,
        "from": transition.from.to_string(),
        "to": transition.to.to_string(),
        "reason": transition.reason.to_string(),
        "successes": transition.successes,
        "failures": transition.failures,
    })
    .to_string()
}

/// Logs the status of `breaker` after a request it served, in `format`.
pub(crate) fn log_status(breaker: &Breaker, format: LogFormat) {
    if log::log_enabled!(Level::Info) {
        match format {
            LogFormat::Text => info!("{}", status_block(breaker)),
            LogFormat::Json => info!(target: EVENT_TARGET, "{}", status_event(breaker)),
        }
    }
}

/// The `[CIRCUIT STATUS]` block in the original layout.
pub(crate) fn status_block(breaker: &Breaker) -> String {
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

/// The status of `breaker` as a JSON event object.
pub(crate) fn status_event(breaker: &Breaker) -> String {
    let snapshot = breaker.snapshot();
    json!({
        "event": "request",
        "backend": breaker.name(),
        "state": snapshot.state.to_string(),
        "total": snapshot.total(),
        "successes": snapshot.successes,
        "failures": snapshot.failures,
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::breaker::{BreakerSettings, Outcome, TransitionReason};
    use crate::clock::ManualClock;
    use std::sync::Arc;

    #[test]
    fn transition_lines_match_the_original_design() {
        let line = |to, reason| {
            transition_line(&Transition {
                breaker: "http://localhost:9002",
                from: BreakerState::Closed,
                to,
                reason,
                successes: 6,
                failures: 3,
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
    fn json_events_carry_backend_services_states_reason_and_counters() {
        let transition = Transition {
            breaker: "http://localhost:9002",
            from: BreakerState::HalfOpen,
            to: BreakerState::Open,
            reason: TransitionReason::ProbeFailed,
            successes: 6,
            failures: 4,
        };
        assert_eq!(
            transition_event(&transition, &["product".to_owned(), "shop".to_owned()]),
            r#"{"event":"transition","backend":"http://localhost:9002","services":["product","shop"],"from":"Half-Open","to":"Open","reason":"probe failed","successes":6,"failures":4}"#
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
            Arc::new(CircuitLog::default()),
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
        assert_eq!(
            status_event(&breaker),
            r#"{"event":"request","backend":"http://localhost:9002","state":"Closed","total":10,"successes":6,"failures":4}"#
        );
    }
}
