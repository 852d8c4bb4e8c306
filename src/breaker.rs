//! The circuit breaker that guards one backend.
//!
//! A breaker is Closed (requests pass, consecutive failures are counted), Open (requests are
//! refused until `open_timeout` has passed) or Half-Open (exactly one probe request is let
//! through; its outcome closes or re-opens the breaker).
//!
//! Why it is shaped this way:
//! - **Lock-free on the request path.** The state lives in one atomic word, so admitting a
//!   request to a Closed breaker is a single load and recording a success is at most one store.
//!   Only transitions (rare) take the breaker's own mutex, which keeps them exact under
//!   contention: N racing failures produce one `OPEN`, N racing selections after the cooldown
//!   produce one probe.
//! - **Permits, not callbacks.** [`Breaker::try_acquire`] hands out a [`Permit`] that must be
//!   settled with [`Permit::record`]. A permit dropped unsettled (client gone, task cancelled,
//!   error path) is neutral and frees the probe slot, so Half-Open can never get stuck.
//! - **Generations.** Every transition bumps a generation stored in the state word, and a
//!   permit remembers the generation it was issued in. A late result from an earlier state
//!   (a slow request admitted while Closed that fails after the breaker opened) changes the
//!   counters but never the state, so it cannot stretch a cooldown or close a breaker early.
//! - **Injected time and observers.** Time comes from a [`Clock`], so tests drive the cooldown
//!   without sleeping; transitions go to a [`TransitionObserver`], so the state machine knows
//!   nothing about logs or metrics.

use std::fmt;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::clock::{duration_nanos, Clock};
use crate::failure_rate::{FailureRate, FailureWindow};

/// When a breaker trips and how long it stays open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerSettings {
    /// Consecutive failures that open a Closed breaker (at least 1).
    pub failure_threshold: u32,
    /// How long an Open breaker refuses requests before it admits a probe. It is also the
    /// lease of a probe: a probe still unsettled after this long no longer blocks the next one.
    pub open_timeout: Duration,
    /// Opt-in growing cooldown. When set, each failed probe doubles the cooldown, up to this
    /// cap; once the backend has stayed Closed for this long, a new trip starts again from
    /// `open_timeout`. When `None`, every cooldown is `open_timeout`, as in the original design.
    pub open_timeout_max: Option<Duration>,
    /// Adds up to this many percent to each cooldown, so replicas that failed together are not
    /// all probed in the same instant. Deterministic per breaker and cycle.
    pub open_timeout_jitter_percent: u8,
    /// Opt-in: a Closed breaker also opens when this share of its recent requests failed.
    pub failure_rate: Option<FailureRate>,
}

impl Default for BreakerSettings {
    /// The original design's values: 3 failures, 10 seconds.
    fn default() -> Self {
        Self {
            failure_threshold: 3,
            open_timeout: Duration::from_secs(10),
            open_timeout_max: None,
            open_timeout_jitter_percent: 0,
            failure_rate: None,
        }
    }
}

/// The states of a breaker: the three of the original design, and one for operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Requests pass; consecutive failures are counted.
    Closed,
    /// Requests are refused until the cooldown has passed.
    Open,
    /// One probe request decides between Closed and Open.
    HalfOpen,
    /// Taken out by an operator: refuses everything until closed by hand.
    ForcedOpen,
}

impl BreakerState {
    /// Every state, in the order [`BreakerState::index`] numbers them.
    pub(crate) const ALL: [BreakerState; 4] = [
        BreakerState::Closed,
        BreakerState::Open,
        BreakerState::HalfOpen,
        BreakerState::ForcedOpen,
    ];

    /// The state's place in `BreakerState::ALL`.
    pub fn index(self) -> usize {
        match self {
            BreakerState::Closed => 0,
            BreakerState::Open => 1,
            BreakerState::HalfOpen => 2,
            BreakerState::ForcedOpen => 3,
        }
    }
}

impl fmt::Display for BreakerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BreakerState::Closed => "Closed",
            BreakerState::Open => "Open",
            BreakerState::HalfOpen => "Half-Open",
            BreakerState::ForcedOpen => "Forced-Open",
        })
    }
}

/// What happened to a request the breaker admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The backend answered (any status below 500).
    Success,
    /// The backend could not be reached, timed out, broke the exchange or answered 5xx.
    Failure,
}

/// Why a breaker changed state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransitionReason {
    /// Closed → Open: the failure threshold was reached.
    ThresholdReached,
    /// Open → Half-Open: the cooldown passed and a probe was admitted.
    TimeoutPassed,
    /// Half-Open → Closed: the probe succeeded.
    Recovered,
    /// Half-Open → Open: the probe failed.
    ProbeFailed,
    /// An operator's override.
    Manual,
    /// Closed → Open: the failure rate over the window reached its threshold.
    FailureRate,
    /// → Forced-Open: the backend failed its active health checks.
    HealthCheckFailed,
    /// Forced-Open → Closed: its health checks pass again.
    HealthCheckPassed,
}

/// An operator's override of a breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManualAction {
    /// Take the backend out: Forced-Open until closed by hand.
    Open,
    /// Put it back: Closed, with a fresh run of failures.
    Close,
    /// Closed, with every counter back to zero and the cooldown back to `open_timeout`.
    Reset,
}

impl fmt::Display for TransitionReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TransitionReason::ThresholdReached => "threshold reached",
            TransitionReason::TimeoutPassed => "timeout passed",
            TransitionReason::Recovered => "recovered",
            TransitionReason::ProbeFailed => "probe failed",
            TransitionReason::FailureRate => "failure rate",
            TransitionReason::HealthCheckFailed => "health check failed",
            TransitionReason::HealthCheckPassed => "health check passed",
            TransitionReason::Manual => "manual",
        })
    }
}

/// One state change of one breaker, as handed to a [`TransitionObserver`].
#[derive(Debug, Clone, Copy)]
pub struct Transition<'a> {
    /// The breaker's name (the backend URL).
    pub breaker: &'a str,
    /// The state it left.
    pub from: BreakerState,
    /// The state it entered.
    pub to: BreakerState,
    /// Why.
    pub reason: TransitionReason,
    /// Recorded successes so far.
    pub successes: u64,
    /// Recorded failures so far.
    pub failures: u64,
}

/// Receives every transition of the breakers it is given to. Called while the breaker's
/// transition lock is held, so a breaker's transitions arrive in order; keep it quick.
pub trait TransitionObserver: Send + Sync {
    /// Called once per transition.
    fn on_transition(&self, transition: &Transition<'_>);
}

/// An observer that ignores every transition: for tests, benchmarks and embedders that do not
/// log.
#[derive(Debug, Default, Clone, Copy)]
pub struct IgnoreTransitions;

impl TransitionObserver for IgnoreTransitions {
    fn on_transition(&self, _: &Transition<'_>) {}
}

/// The latest transition of a breaker, as [`Breaker::last_transition`] reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LastTransition {
    /// The state it left.
    pub from: BreakerState,
    /// The state it entered.
    pub to: BreakerState,
    /// Why.
    pub reason: TransitionReason,
    /// How long ago.
    pub ago: Duration,
}

/// How many times a breaker went from each state to each other, since it was created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct TransitionCounts([[u64; 4]; 4]);

impl TransitionCounts {
    /// Transitions from `from` to `to`.
    pub fn get(&self, from: BreakerState, to: BreakerState) -> u64 {
        self.0[from.index()][to.index()]
    }

    fn add(&mut self, from: BreakerState, to: BreakerState) {
        self.0[from.index()][to.index()] += 1;
    }
}

/// A transition as the breaker keeps it: with the clock time it happened at.
#[derive(Debug, Clone, Copy)]
struct RecordedTransition {
    from: BreakerState,
    to: BreakerState,
    reason: TransitionReason,
    at: Duration,
}

/// What the transition lock guards: the latest transition and the count of every kind.
#[derive(Debug, Default)]
struct TransitionHistory {
    last: Option<RecordedTransition>,
    counts: TransitionCounts,
}

/// A point-in-time view of a breaker, for status logs and error bodies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BreakerSnapshot {
    /// The current state.
    pub state: BreakerState,
    /// The current run of consecutive failures (Closed only; 0 otherwise).
    pub consecutive_failures: u32,
    /// Recorded successes since start.
    pub successes: u64,
    /// Recorded failures since start.
    pub failures: u64,
    /// How long until the breaker admits a request again: zero when it would now.
    pub retry_in: Duration,
}

impl BreakerSnapshot {
    /// All recorded outcomes.
    pub fn total(&self) -> u64 {
        self.successes + self.failures
    }
}

/// The circuit breaker of one backend. Share it as `Arc<Breaker>`.
pub struct Breaker {
    name: String,
    settings: BreakerSettings,
    clock: Arc<dyn Clock>,
    observer: Arc<dyn TransitionObserver>,
    /// [`StateWord`]: state, probe flag and generation in one atomic.
    word: AtomicU64,
    /// Open: when the next probe may go. Half-Open with a probe out: when its lease ends.
    next_probe_at_nanos: AtomicU64,
    /// The current cooldown before jitter: `open_timeout`, or more once it has grown.
    cooldown_nanos: AtomicU64,
    /// When the breaker last became Closed (its creation counts).
    closed_since_nanos: AtomicU64,
    /// Seeds the jitter, so breakers that trip together get different cooldowns.
    jitter_seed: u64,
    consecutive_failures: AtomicU32,
    successes: AtomicU64,
    failures: AtomicU64,
    /// Requests turned away while Open, Forced-Open or Half-Open with the probe out. Only ever
    /// grows (a manual reset leaves it), so it can be exported as a counter.
    rejections: AtomicU64,
    /// Serialises transitions of this breaker only (never held on the Closed fast path), and
    /// keeps their history: the latest (when, from what, to what, why) and how many of each.
    transition_lock: Mutex<TransitionHistory>,
    /// The recent failure rate, when `failure_rate` is set.
    failure_window: Option<FailureWindow>,
    /// When the breaker last came back to Closed from another state (0: not since it was
    /// made, or long enough ago that slow start is over): slow start's reference.
    reclosed_at_nanos: AtomicU64,
}

impl fmt::Debug for Breaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Breaker")
            .field("name", &self.name)
            .field("settings", &self.settings)
            .field("snapshot", &self.snapshot())
            .finish()
    }
}

impl Breaker {
    /// A Closed breaker named `name` (the backend URL, used in transitions).
    pub fn new(
        name: impl Into<String>,
        settings: BreakerSettings,
        clock: Arc<dyn Clock>,
        observer: Arc<dyn TransitionObserver>,
    ) -> Self {
        let name = name.into();
        let closed_since = duration_nanos(clock.now());
        Self {
            jitter_seed: name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
            }),
            name,
            settings,
            clock,
            observer,
            word: AtomicU64::new(StateWord::CLOSED.0),
            next_probe_at_nanos: AtomicU64::new(0),
            cooldown_nanos: AtomicU64::new(duration_nanos(settings.open_timeout)),
            closed_since_nanos: AtomicU64::new(closed_since),
            consecutive_failures: AtomicU32::new(0),
            successes: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            rejections: AtomicU64::new(0),
            transition_lock: Mutex::new(TransitionHistory::default()),
            failure_window: settings.failure_rate.map(FailureWindow::new),
            reclosed_at_nanos: AtomicU64::new(0),
        }
    }

    /// The breaker's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The breaker's settings.
    pub fn settings(&self) -> BreakerSettings {
        self.settings
    }

    /// The current state.
    pub fn state(&self) -> BreakerState {
        StateWord(self.word.load(Ordering::Acquire)).state()
    }

    /// Asks to send one request through. `None` means the backend must be skipped: it is Open
    /// and cooling down, or Half-Open with its probe already out.
    pub fn try_acquire(self: &Arc<Self>) -> Option<Permit> {
        self.try_acquire_at(&mut None)
    }

    /// [`Breaker::try_acquire`] with a shared clock reading: `now` is filled from the clock
    /// the first time a refusal needs the time, and reused after that. A selector walking past
    /// many Open breakers (which share one clock) so reads the clock once, not once per
    /// breaker. A reading a few hundred nanoseconds old at worst refuses a breaker whose
    /// cooldown has only just ended.
    pub(crate) fn try_acquire_at(self: &Arc<Self>, now: &mut Option<Duration>) -> Option<Permit> {
        let word = StateWord(self.word.load(Ordering::Acquire));
        let cooling_down = match word.state() {
            BreakerState::Closed => return Some(Permit::new(self, word.generation(), false)),
            BreakerState::ForcedOpen => return self.refuse(),
            BreakerState::Open => true,
            BreakerState::HalfOpen => word.probe_out(),
        };
        if cooling_down && *now.get_or_insert_with(|| self.clock.now()) < self.next_probe_at() {
            return self.refuse();
        }
        self.acquire_slow()
    }

    fn refuse(&self) -> Option<Permit> {
        self.rejections.fetch_add(1, Ordering::Relaxed);
        None
    }

    /// Requests this breaker turned away, since it was created.
    pub(crate) fn rejections(&self) -> u64 {
        self.rejections.load(Ordering::Relaxed)
    }

    /// How many transitions of each kind this breaker made, since it was created.
    pub(crate) fn transition_counts(&self) -> TransitionCounts {
        self.lock().counts
    }

    /// The contended part of admission, under the transition lock: the cooldown has passed,
    /// or the probe slot looks free.
    fn acquire_slow(self: &Arc<Self>) -> Option<Permit> {
        let mut last = self.lock();
        let word = StateWord(self.word.load(Ordering::Acquire));
        let now = self.clock.now();
        match word.state() {
            BreakerState::Closed => Some(Permit::new(self, word.generation(), false)),
            BreakerState::Open if now >= self.next_probe_at() => {
                let generation = word.generation() + 1;
                self.set_next_probe_at(now + self.cooldown());
                self.publish(StateWord::new(BreakerState::HalfOpen, true, generation));
                self.notify(
                    &mut last,
                    BreakerState::Open,
                    BreakerState::HalfOpen,
                    TransitionReason::TimeoutPassed,
                );
                Some(Permit::new(self, generation, true))
            }
            BreakerState::HalfOpen if !word.probe_out() || now >= self.next_probe_at() => {
                // A free slot, or a probe whose lease ran out: the new probe gets a new
                // generation so the old one's late result is ignored.
                let generation = word.generation() + 1;
                self.set_next_probe_at(now + self.cooldown());
                self.publish(StateWord::new(BreakerState::HalfOpen, true, generation));
                Some(Permit::new(self, generation, true))
            }
            BreakerState::Open | BreakerState::HalfOpen | BreakerState::ForcedOpen => {
                drop(last);
                self.refuse()
            }
        }
    }

    /// A point-in-time view of the breaker.
    pub(crate) fn snapshot(&self) -> BreakerSnapshot {
        let word = StateWord(self.word.load(Ordering::Acquire));
        let retry_in = match word.state() {
            BreakerState::Closed | BreakerState::ForcedOpen => Duration::ZERO,
            BreakerState::HalfOpen if !word.probe_out() => Duration::ZERO,
            BreakerState::Open | BreakerState::HalfOpen => {
                self.next_probe_at().saturating_sub(self.clock.now())
            }
        };
        BreakerSnapshot {
            state: word.state(),
            consecutive_failures: match word.state() {
                BreakerState::Closed => self.consecutive_failures.load(Ordering::Relaxed),
                _ => 0,
            },
            successes: self.successes.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
            retry_in,
        }
    }

    fn record(&self, generation: u64, probe: bool, outcome: Outcome, asked: Option<Duration>) {
        match outcome {
            Outcome::Success => self.successes.fetch_add(1, Ordering::Relaxed),
            Outcome::Failure => self.failures.fetch_add(1, Ordering::Relaxed),
        };
        let word = StateWord(self.word.load(Ordering::Acquire));
        if word.generation() != generation {
            return;
        }
        match (word.state(), outcome) {
            // Skip the store when there is no run to reset: keeps the cache line shared.
            (BreakerState::Closed, Outcome::Success) => {
                if self.consecutive_failures.load(Ordering::Relaxed) != 0 {
                    self.consecutive_failures.store(0, Ordering::Relaxed);
                }
                if let Some(window) = &self.failure_window {
                    window.record(self.clock.now(), false);
                }
            }
            (BreakerState::Closed, Outcome::Failure) => {
                let run = self.consecutive_failures.fetch_add(1, Ordering::AcqRel) + 1;
                let rate_reached = self
                    .failure_window
                    .as_ref()
                    .is_some_and(|window| window.record(self.clock.now(), true));
                if run >= self.settings.failure_threshold {
                    self.transition_from(
                        word,
                        BreakerState::Open,
                        TransitionReason::ThresholdReached,
                        asked,
                    );
                } else if rate_reached {
                    self.transition_from(
                        word,
                        BreakerState::Open,
                        TransitionReason::FailureRate,
                        asked,
                    );
                }
            }
            (BreakerState::HalfOpen, Outcome::Success) if probe => {
                self.transition_from(
                    word,
                    BreakerState::Closed,
                    TransitionReason::Recovered,
                    None,
                );
            }
            (BreakerState::HalfOpen, Outcome::Failure) if probe => {
                self.transition_from(
                    word,
                    BreakerState::Open,
                    TransitionReason::ProbeFailed,
                    asked,
                );
            }
            _ => {}
        }
    }

    /// Moves from exactly `expected` to `to`; does nothing if another thread got there first.
    /// Opening, the cooldown is the breaker's own, or what the backend `asked` for if that is
    /// longer, up to [`Breaker::asked_cooldown_cap`].
    fn transition_from(
        &self,
        expected: StateWord,
        to: BreakerState,
        reason: TransitionReason,
        asked: Option<Duration>,
    ) {
        let mut last = self.lock();
        if self.word.load(Ordering::Acquire) != expected.0 {
            return;
        }
        self.consecutive_failures.store(0, Ordering::Relaxed);
        let now = self.clock.now();
        let generation = expected.generation() + 1;
        match to {
            BreakerState::Open => {
                let cooldown = self.next_cooldown(reason, now);
                self.cooldown_nanos
                    .store(duration_nanos(cooldown), Ordering::Relaxed);
                let wait = asked.map_or(cooldown, |asked| {
                    asked.clamp(cooldown, self.asked_cooldown_cap().max(cooldown))
                });
                self.set_next_probe_at(now + self.jittered(wait, generation));
            }
            BreakerState::Closed => self
                .closed_since_nanos
                .store(duration_nanos(now), Ordering::Relaxed),
            BreakerState::HalfOpen | BreakerState::ForcedOpen => {}
        }
        self.publish(StateWord::new(to, false, generation));
        self.notify(&mut last, expected.state(), to, reason);
    }

    /// Applies an operator's override, whatever the state, and reports it as a transition
    /// with the reason `manual`. Results of requests admitted before it are ignored.
    pub fn apply(&self, action: ManualAction) {
        let mut last = self.lock();
        let word = StateWord(self.word.load(Ordering::Acquire));
        let now = self.clock.now();
        self.consecutive_failures.store(0, Ordering::Relaxed);
        let to = match action {
            ManualAction::Open => BreakerState::ForcedOpen,
            ManualAction::Close | ManualAction::Reset => {
                self.closed_since_nanos
                    .store(duration_nanos(now), Ordering::Relaxed);
                BreakerState::Closed
            }
        };
        if action == ManualAction::Reset {
            self.successes.store(0, Ordering::Relaxed);
            self.failures.store(0, Ordering::Relaxed);
            self.cooldown_nanos.store(
                duration_nanos(self.settings.open_timeout),
                Ordering::Relaxed,
            );
        }
        self.publish(StateWord::new(to, false, word.generation() + 1));
        self.notify(&mut last, word.state(), to, TransitionReason::Manual);
    }

    /// Slow start: whether the request with `ticket` may go to this backend, which came back
    /// to Closed less than `slow_start` ago. Its share grows from a twentieth to all requests
    /// over `slow_start`; `ticket` spreads the admitted ones evenly. A backend that never came
    /// back, or came back long enough ago, takes every request (one atomic load).
    pub(crate) fn admits_while_warming(&self, slow_start: Duration, ticket: usize) -> bool {
        let at = self.reclosed_at_nanos.load(Ordering::Relaxed);
        if at == 0 {
            return true;
        }
        let warm_for = self.clock.now().saturating_sub(Duration::from_nanos(at));
        if warm_for >= slow_start {
            self.reclosed_at_nanos.store(0, Ordering::Relaxed);
            return true;
        }
        let share = (warm_for.as_secs_f64() / slow_start.as_secs_f64()).max(0.05);
        // A fixed spread of tickets over [0, 1): the golden-ratio sequence.
        let place = (ticket as f64 * 0.618_033_988_749_895).fract();
        place < share
    }

    /// What the backend's active health checks concluded: unhealthy takes it out (Forced-Open,
    /// reason `health check failed`: no request and no probe reaches it); healthy again puts
    /// it back at once (Closed, `health check passed`), without waiting for a cooldown, but
    /// only if the health checks took it out: a breaker an operator opened, or one open on its
    /// own failures, stays as it is.
    pub(crate) fn set_health(&self, healthy: bool) {
        let mut history = self.lock();
        let word = StateWord(self.word.load(Ordering::Acquire));
        let from = word.state();
        let taken_out_by_health = from == BreakerState::ForcedOpen
            && history
                .last
                .is_some_and(|t| t.reason == TransitionReason::HealthCheckFailed);
        let (to, reason) = match healthy {
            false if from != BreakerState::ForcedOpen => (
                BreakerState::ForcedOpen,
                TransitionReason::HealthCheckFailed,
            ),
            true if taken_out_by_health => {
                self.consecutive_failures.store(0, Ordering::Relaxed);
                self.closed_since_nanos
                    .store(duration_nanos(self.clock.now()), Ordering::Relaxed);
                (BreakerState::Closed, TransitionReason::HealthCheckPassed)
            }
            _ => return,
        };
        self.publish(StateWord::new(to, false, word.generation() + 1));
        self.notify(&mut history, from, to, reason);
    }

    /// The longest cooldown a backend may ask for (`Retry-After` on a `503`): the growing
    /// cooldown's cap when there is one, else six times `open_timeout` (a minute by default).
    /// A backend cannot shorten its own cooldown, nor take itself out for longer than this.
    pub fn asked_cooldown_cap(&self) -> Duration {
        self.settings
            .open_timeout_max
            .unwrap_or_else(|| self.settings.open_timeout.saturating_mul(6))
    }

    /// The cooldown of the Open period that starts now, for `reason`.
    fn next_cooldown(&self, reason: TransitionReason, now: Duration) -> Duration {
        let base = self.settings.open_timeout;
        let Some(max) = self.settings.open_timeout_max else {
            return base;
        };
        let current = self.cooldown();
        match reason {
            TransitionReason::ProbeFailed => current.saturating_mul(2).min(max),
            _ => {
                let closed_for = now.saturating_sub(Duration::from_nanos(
                    self.closed_since_nanos.load(Ordering::Relaxed),
                ));
                if closed_for >= max {
                    base
                } else {
                    current
                }
            }
        }
    }

    /// `cooldown` plus this breaker's jitter for the cycle `generation`.
    fn jittered(&self, cooldown: Duration, generation: u64) -> Duration {
        let percent = u64::from(self.settings.open_timeout_jitter_percent);
        if percent == 0 {
            return cooldown;
        }
        // splitmix64: a well-spread number from the seed and the cycle.
        let mut z = self
            .jitter_seed
            .wrapping_add(generation.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        let per_million = z % (percent * 10_000 + 1);
        cooldown + cooldown.mul_f64(per_million as f64 / 1_000_000.0)
    }

    fn cooldown(&self) -> Duration {
        Duration::from_nanos(self.cooldown_nanos.load(Ordering::Relaxed))
    }

    /// Frees the probe slot of an unsettled probe, if it is still the current one.
    fn release_probe(&self, generation: u64) {
        let _guard = self.lock();
        let word = StateWord(self.word.load(Ordering::Acquire));
        if word.state() == BreakerState::HalfOpen
            && word.probe_out()
            && word.generation() == generation
        {
            self.publish(StateWord::new(BreakerState::HalfOpen, false, generation));
        }
    }

    /// Records the transition as the latest and counts it (the caller holds the lock:
    /// `history` is its data), and tells the observer.
    fn notify(
        &self,
        history: &mut TransitionHistory,
        from: BreakerState,
        to: BreakerState,
        reason: TransitionReason,
    ) {
        history.counts.add(from, to);
        if to == BreakerState::Closed {
            if let Some(window) = &self.failure_window {
                window.clear();
            }
            // Never 0, which means "not warming up".
            let now = duration_nanos(self.clock.now()).max(1);
            self.reclosed_at_nanos.store(now, Ordering::Relaxed);
        }
        history.last = Some(RecordedTransition {
            from,
            to,
            reason,
            at: self.clock.now(),
        });
        self.observer.on_transition(&Transition {
            breaker: &self.name,
            from,
            to,
            reason,
            successes: self.successes.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
        });
    }

    fn publish(&self, word: StateWord) {
        self.word.store(word.0, Ordering::Release);
    }

    fn next_probe_at(&self) -> Duration {
        Duration::from_nanos(self.next_probe_at_nanos.load(Ordering::Acquire))
    }

    fn set_next_probe_at(&self, at: Duration) {
        self.next_probe_at_nanos
            .store(duration_nanos(at), Ordering::Release);
    }

    /// The latest transition and how long ago it happened, if there was one.
    pub fn last_transition(&self) -> Option<LastTransition> {
        let recorded = self.lock().last?;
        Some(LastTransition {
            from: recorded.from,
            to: recorded.to,
            reason: recorded.reason,
            ago: self.clock.now().saturating_sub(recorded.at),
        })
    }

    fn lock(&self) -> MutexGuard<'_, TransitionHistory> {
        // Nothing that can panic runs between the writes to the guarded history, so a panic
        // elsewhere cannot leave it half-written: a poisoned lock is safe to use.
        self.transition_lock
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Leave to send one request to a backend, issued by [`Breaker::try_acquire`].
///
/// Settle it with [`Permit::record`]. Dropping it unsettled is a neutral outcome: nothing is
/// counted and, if it was the Half-Open probe, the probe slot is freed for the next request.
#[derive(Debug)]
pub struct Permit {
    breaker: Arc<Breaker>,
    generation: u64,
    probe: bool,
    settled: bool,
}

impl Permit {
    fn new(breaker: &Arc<Breaker>, generation: u64, probe: bool) -> Self {
        Self {
            breaker: Arc::clone(breaker),
            generation,
            probe,
            settled: false,
        }
    }

    /// Whether this permit is the Half-Open probe.
    pub fn is_probe(&self) -> bool {
        self.probe
    }

    /// The breaker that issued the permit.
    pub fn breaker(&self) -> &Arc<Breaker> {
        &self.breaker
    }

    /// Records what happened to the request.
    pub fn record(mut self, outcome: Outcome) {
        self.settled = true;
        self.breaker
            .record(self.generation, self.probe, outcome, None);
    }

    /// Records a failure whose backend asked not to be sent more for `cooldown` (`Retry-After`
    /// on a `503`): if this failure opens the breaker, it stays Open that long, within
    /// [`Breaker::asked_cooldown_cap`] and never shorter than its own cooldown.
    pub fn record_failure_asking(mut self, cooldown: Duration) {
        self.settled = true;
        self.breaker.record(
            self.generation,
            self.probe,
            Outcome::Failure,
            Some(cooldown),
        );
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if self.probe && !self.settled {
            self.breaker.release_probe(self.generation);
        }
    }
}

/// State (2 bits), probe-out flag (1 bit) and generation (61 bits) packed in one `u64`, so a
/// reader sees all three consistently with one atomic load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct StateWord(u64);

impl StateWord {
    const CLOSED: StateWord = StateWord(0);
    const PROBE_BIT: u64 = 0b100;

    fn new(state: BreakerState, probe_out: bool, generation: u64) -> Self {
        let state_bits = match state {
            BreakerState::Closed => 0,
            BreakerState::Open => 1,
            BreakerState::HalfOpen => 2,
            BreakerState::ForcedOpen => 3,
        };
        let probe_bit = if probe_out { Self::PROBE_BIT } else { 0 };
        StateWord(generation << 3 | probe_bit | state_bits)
    }

    fn state(self) -> BreakerState {
        match self.0 & 0b11 {
            0 => BreakerState::Closed,
            1 => BreakerState::Open,
            2 => BreakerState::HalfOpen,
            _ => BreakerState::ForcedOpen,
        }
    }

    fn probe_out(self) -> bool {
        self.0 & Self::PROBE_BIT != 0
    }

    fn generation(self) -> u64 {
        self.0 >> 3
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use std::sync::Barrier;
    use std::thread;

    const COOLDOWN: Duration = Duration::from_secs(10);

    /// Records transitions as text lines, e.g. `Closed->Open (threshold reached)`.
    #[derive(Default)]
    struct Recorder(Mutex<Vec<String>>);

    impl TransitionObserver for Recorder {
        fn on_transition(&self, t: &Transition<'_>) {
            self.0
                .lock()
                .unwrap()
                .push(format!("{}->{} ({})", t.from, t.to, t.reason));
        }
    }

    impl Recorder {
        fn lines(&self) -> Vec<String> {
            self.0.lock().unwrap().clone()
        }
    }

    struct Fixture {
        clock: Arc<ManualClock>,
        recorder: Arc<Recorder>,
        breaker: Arc<Breaker>,
    }

    fn fixture(failure_threshold: u32) -> Fixture {
        fixture_with(BreakerSettings {
            failure_threshold,
            open_timeout: COOLDOWN,
            ..BreakerSettings::default()
        })
    }

    fn fixture_with(settings: BreakerSettings) -> Fixture {
        let clock = Arc::new(ManualClock::new());
        let recorder = Arc::new(Recorder::default());
        let breaker = Arc::new(Breaker::new(
            "http://backend:1",
            settings,
            clock.clone(),
            recorder.clone(),
        ));
        Fixture {
            clock,
            recorder,
            breaker,
        }
    }

    fn fail(breaker: &Arc<Breaker>, times: u32) {
        for _ in 0..times {
            breaker
                .try_acquire()
                .expect("admitted")
                .record(Outcome::Failure);
        }
    }

    fn open(f: &Fixture) {
        fail(&f.breaker, f.breaker.settings().failure_threshold);
        assert_eq!(f.breaker.state(), BreakerState::Open);
    }

    fn succeed(breaker: &Arc<Breaker>, times: u32) {
        for _ in 0..times {
            breaker
                .try_acquire()
                .expect("admitted")
                .record(Outcome::Success);
        }
    }

    #[test]
    fn alternating_failures_open_on_the_failure_rate_not_the_count() {
        let f = fixture_with(BreakerSettings {
            failure_threshold: 3,
            open_timeout: COOLDOWN,
            failure_rate: Some(FailureRate {
                threshold_percent: 50,
                window: Duration::from_secs(30),
                min_requests: 10,
            }),
            ..BreakerSettings::default()
        });
        // One failure in two never makes a run of three; below ten requests nothing opens.
        for _ in 0..4 {
            succeed(&f.breaker, 1);
            fail(&f.breaker, 1);
        }
        assert_eq!(f.breaker.state(), BreakerState::Closed, "8 requests");
        succeed(&f.breaker, 1);
        fail(&f.breaker, 1);
        assert_eq!(f.breaker.state(), BreakerState::Open, "5 of 10");
        assert_eq!(f.recorder.lines(), ["Closed->Open (failure rate)"]);
        // After the cooldown a good probe closes it, and the window starts afresh.
        f.clock.advance(COOLDOWN);
        succeed(&f.breaker, 1);
        assert_eq!(f.breaker.state(), BreakerState::Closed);
        fail(&f.breaker, 1);
        assert_eq!(
            f.breaker.state(),
            BreakerState::Closed,
            "1 of 1, below the minimum"
        );
    }

    #[test]
    fn without_a_failure_rate_alternating_failures_never_open() {
        let f = fixture(3);
        for _ in 0..100 {
            succeed(&f.breaker, 1);
            fail(&f.breaker, 1);
        }
        assert_eq!(f.breaker.state(), BreakerState::Closed);
    }

    #[test]
    fn health_checks_take_a_backend_out_and_bring_it_back_without_a_cooldown() {
        let f = fixture(3);
        f.breaker.set_health(false);
        assert_eq!(f.breaker.state(), BreakerState::ForcedOpen);
        assert!(f.breaker.try_acquire().is_none());
        // Held out past any cooldown: no probe reaches an unhealthy backend.
        f.clock.advance(COOLDOWN * 10);
        assert!(f.breaker.try_acquire().is_none());
        f.breaker.set_health(false);
        f.breaker.set_health(true);
        assert_eq!(f.breaker.state(), BreakerState::Closed);
        f.breaker.set_health(true);
        assert_eq!(
            f.recorder.lines(),
            [
                "Closed->Forced-Open (health check failed)",
                "Forced-Open->Closed (health check passed)"
            ]
        );
    }

    #[test]
    fn passing_health_checks_leave_other_reasons_for_being_open_alone() {
        let f = fixture(1);
        open(&f);
        f.breaker.set_health(true);
        assert_eq!(f.breaker.state(), BreakerState::Open, "its own failures");
        f.breaker.apply(ManualAction::Open);
        f.breaker.set_health(true);
        assert_eq!(
            f.breaker.state(),
            BreakerState::ForcedOpen,
            "an operator's override"
        );
        // A failing check while Open takes it out for good, until the checks pass.
        let g = fixture(1);
        open(&g);
        g.breaker.set_health(false);
        assert_eq!(g.breaker.state(), BreakerState::ForcedOpen);
        g.clock.advance(COOLDOWN);
        assert!(g.breaker.try_acquire().is_none());
        g.breaker.set_health(true);
        assert_eq!(g.breaker.state(), BreakerState::Closed);
    }

    #[test]
    fn stays_closed_one_failure_below_the_threshold() {
        let f = fixture(3);
        fail(&f.breaker, 2);
        assert_eq!(f.breaker.state(), BreakerState::Closed);
        assert_eq!(f.breaker.snapshot().consecutive_failures, 2);
        fail(&f.breaker, 1);
        assert_eq!(f.breaker.state(), BreakerState::Open);
        assert_eq!(f.recorder.lines(), ["Closed->Open (threshold reached)"]);
        assert!(f.breaker.try_acquire().is_none());
    }

    #[test]
    fn rejections_and_transitions_are_counted_and_survive_a_reset() {
        use BreakerState::*;
        let f = fixture(1);
        open(&f);
        assert!(f.breaker.try_acquire().is_none());
        assert!(f.breaker.try_acquire().is_none());
        f.clock.advance(COOLDOWN);
        let probe = f.breaker.try_acquire().expect("the probe");
        assert!(f.breaker.try_acquire().is_none(), "the probe is out");
        probe.record(Outcome::Failure);
        f.breaker.apply(ManualAction::Open);
        assert!(f.breaker.try_acquire().is_none());
        f.breaker.apply(ManualAction::Reset);

        assert_eq!(f.breaker.rejections(), 4);
        let counts = f.breaker.transition_counts();
        assert_eq!(counts.get(Closed, Open), 1);
        assert_eq!(counts.get(Open, HalfOpen), 1);
        assert_eq!(counts.get(HalfOpen, Open), 1);
        assert_eq!(counts.get(Open, ForcedOpen), 1);
        assert_eq!(counts.get(ForcedOpen, Closed), 1);
        assert_eq!(counts.get(HalfOpen, Closed), 0);
        assert_eq!(
            f.breaker.snapshot().failures,
            0,
            "reset zeroes the status counters"
        );
    }

    #[test]
    fn threshold_of_one_opens_on_the_first_failure() {
        let f = fixture(1);
        fail(&f.breaker, 1);
        assert_eq!(f.breaker.state(), BreakerState::Open);
    }

    #[test]
    fn a_success_resets_the_run() {
        let f = fixture(3);
        fail(&f.breaker, 2);
        f.breaker.try_acquire().unwrap().record(Outcome::Success);
        assert_eq!(f.breaker.snapshot().consecutive_failures, 0);
        fail(&f.breaker, 2);
        assert_eq!(f.breaker.state(), BreakerState::Closed);
        let snapshot = f.breaker.snapshot();
        assert_eq!((snapshot.successes, snapshot.failures), (1, 4));
        assert_eq!(snapshot.total(), 5);
    }

    #[test]
    fn cooldown_boundary_is_exact() {
        let f = fixture(3);
        open(&f);
        f.clock.advance(COOLDOWN - Duration::from_millis(1));
        assert!(f.breaker.try_acquire().is_none(), "still Open 1 ms early");
        assert_eq!(f.breaker.snapshot().retry_in, Duration::from_millis(1));
        f.clock.advance(Duration::from_millis(1));
        let probe = f
            .breaker
            .try_acquire()
            .expect("probe admitted at the boundary");
        assert!(probe.is_probe());
        assert_eq!(f.breaker.state(), BreakerState::HalfOpen);
        assert!(f.breaker.try_acquire().is_none(), "only one probe");
        assert_eq!(
            f.recorder.lines(),
            [
                "Closed->Open (threshold reached)",
                "Open->Half-Open (timeout passed)"
            ]
        );
    }

    #[test]
    fn a_probe_is_admitted_any_time_after_the_cooldown_not_only_at_its_end() {
        let f = fixture(3);
        open(&f);
        f.clock.advance(COOLDOWN + Duration::from_secs(5));
        assert!(f.breaker.try_acquire().is_some_and(|p| p.is_probe()));
    }

    #[test]
    fn the_slow_path_checks_the_cooldown_again_under_its_lock() {
        // What a thread finds there when another one's reading of the clock let it through.
        let f = fixture(3);
        open(&f);
        assert!(f.breaker.acquire_slow().is_none(), "still cooling down");
        f.clock.advance(COOLDOWN);
        assert!(f.breaker.acquire_slow().is_some_and(|p| p.is_probe()));
    }

    #[test]
    fn a_probe_out_is_waited_for_until_its_lease_ends() {
        let f = fixture(1);
        open(&f);
        f.clock.advance(COOLDOWN);
        let probe = f.breaker.try_acquire().unwrap();
        assert_eq!(f.breaker.snapshot().retry_in, COOLDOWN, "the probe's lease");
        f.clock.advance(Duration::from_secs(4));
        assert_eq!(
            f.breaker.snapshot().retry_in,
            COOLDOWN - Duration::from_secs(4)
        );
        drop(probe);
        assert_eq!(
            f.breaker.snapshot().retry_in,
            Duration::ZERO,
            "the slot is free"
        );
    }

    #[test]
    fn results_of_requests_admitted_before_an_override_or_a_health_change_are_ignored() {
        let f = fixture(1);
        let before = f.breaker.try_acquire().unwrap();
        assert!(!before.is_probe());
        f.breaker.apply(ManualAction::Reset);
        before.record(Outcome::Failure);
        assert_eq!(f.breaker.state(), BreakerState::Closed, "after a reset");

        let before = f.breaker.try_acquire().unwrap();
        f.breaker.set_health(false);
        f.breaker.set_health(true);
        before.record(Outcome::Failure);
        assert_eq!(
            f.breaker.state(),
            BreakerState::Closed,
            "after a health round trip"
        );
    }

    #[test]
    fn slow_start_counts_from_the_close_not_from_the_probe() {
        let f = fixture(1);
        open(&f);
        f.clock.advance(COOLDOWN);
        let probe = f.breaker.try_acquire().unwrap();
        // The probe takes half the slow start to answer; the backend takes a twentieth of the
        // requests when it closes all the same.
        let slow_start = Duration::from_secs(10);
        f.clock.advance(slow_start / 2);
        probe.record(Outcome::Success);
        let admitted = (0..1000)
            .filter(|&ticket| f.breaker.admits_while_warming(slow_start, ticket))
            .count();
        assert!((40..=60).contains(&admitted), "{admitted} of 1000");
    }

    #[test]
    fn probe_success_closes_and_resets_counters() {
        let f = fixture(3);
        open(&f);
        f.clock.advance(COOLDOWN);
        f.breaker.try_acquire().unwrap().record(Outcome::Success);
        assert_eq!(f.breaker.state(), BreakerState::Closed);
        assert_eq!(f.breaker.snapshot().consecutive_failures, 0);
        assert_eq!(
            f.recorder.lines().last().unwrap(),
            "Half-Open->Closed (recovered)"
        );
        // A fresh run is needed to trip again.
        fail(&f.breaker, 2);
        assert_eq!(f.breaker.state(), BreakerState::Closed);
    }

    #[test]
    fn probe_failure_reopens_and_restarts_the_cooldown() {
        let f = fixture(3);
        open(&f);
        f.clock.advance(COOLDOWN);
        let probe = f.breaker.try_acquire().unwrap();
        f.clock.advance(Duration::from_secs(4));
        probe.record(Outcome::Failure);
        assert_eq!(f.breaker.state(), BreakerState::Open);
        assert_eq!(
            f.recorder.lines().last().unwrap(),
            "Half-Open->Open (probe failed)"
        );
        assert_eq!(
            f.breaker.snapshot().retry_in,
            COOLDOWN,
            "cooldown restarted"
        );
        f.clock.advance(COOLDOWN - Duration::from_millis(1));
        assert!(f.breaker.try_acquire().is_none());
        f.clock.advance(Duration::from_millis(1));
        assert!(f.breaker.try_acquire().unwrap().is_probe());
    }

    #[test]
    fn a_dropped_probe_frees_its_slot_without_recording() {
        let f = fixture(3);
        open(&f);
        f.clock.advance(COOLDOWN);
        let probe = f.breaker.try_acquire().unwrap();
        assert!(f.breaker.try_acquire().is_none());
        drop(probe);
        let before = f.breaker.snapshot();
        assert_eq!(before.state, BreakerState::HalfOpen);
        assert_eq!(before.retry_in, Duration::ZERO);
        let next = f.breaker.try_acquire().expect("slot freed");
        assert!(next.is_probe());
        assert_eq!((before.successes, before.failures), (0, 3));
        next.record(Outcome::Success);
        assert_eq!(f.breaker.state(), BreakerState::Closed);
    }

    #[test]
    fn a_probe_that_outlives_its_lease_no_longer_blocks_and_its_result_is_ignored() {
        let f = fixture(3);
        open(&f);
        f.clock.advance(COOLDOWN);
        let hung = f.breaker.try_acquire().unwrap();
        f.clock.advance(COOLDOWN - Duration::from_millis(1));
        assert!(f.breaker.try_acquire().is_none());
        f.clock.advance(Duration::from_millis(1));
        let second = f.breaker.try_acquire().expect("lease expired");
        hung.record(Outcome::Failure);
        assert_eq!(
            f.breaker.state(),
            BreakerState::HalfOpen,
            "stale probe ignored"
        );
        second.record(Outcome::Success);
        assert_eq!(f.breaker.state(), BreakerState::Closed);
    }

    #[test]
    fn a_stale_probe_dropped_after_its_lease_does_not_free_the_current_probes_slot() {
        let f = fixture(3);
        open(&f);
        f.clock.advance(COOLDOWN);
        let hung = f.breaker.try_acquire().unwrap();
        f.clock.advance(COOLDOWN);
        let current = f.breaker.try_acquire().expect("lease expired");
        drop(hung);
        assert!(
            f.breaker.try_acquire().is_none(),
            "the current probe still holds the slot"
        );
        drop(current);
        assert!(f.breaker.try_acquire().expect("slot freed").is_probe());
    }

    /// `threads` threads that each try for a permit once `barrier` opens.
    fn race_for_permits(
        breaker: &Arc<Breaker>,
        threads: usize,
        barrier: &Arc<Barrier>,
    ) -> Vec<thread::JoinHandle<Option<Permit>>> {
        (0..threads)
            .map(|_| {
                let (breaker, barrier) = (breaker.clone(), barrier.clone());
                thread::spawn(move || {
                    barrier.wait();
                    breaker.try_acquire()
                })
            })
            .collect()
    }

    /// The permits the racers got.
    fn admitted(racers: Vec<thread::JoinHandle<Option<Permit>>>) -> Vec<Permit> {
        racers
            .into_iter()
            .filter_map(|racer| racer.join().unwrap())
            .collect()
    }

    #[test]
    fn a_probe_dropped_while_others_race_for_the_slot_lets_in_at_most_one() {
        for _ in 0..50 {
            let f = fixture(3);
            open(&f);
            f.clock.advance(COOLDOWN);
            let probe = f.breaker.try_acquire().unwrap();
            let barrier = Arc::new(Barrier::new(8 + 1));
            let racers = race_for_permits(&f.breaker, 8, &barrier);
            barrier.wait();
            drop(probe);
            let admitted = admitted(racers);
            assert!(admitted.len() <= 1, "{} probes", admitted.len());
            if admitted.is_empty() {
                // Every racer came before the drop: the slot is free now, not leaked.
                assert!(f.breaker.try_acquire().expect("slot freed").is_probe());
            } else {
                assert!(admitted[0].is_probe());
                assert!(f.breaker.try_acquire().is_none());
            }
        }
    }

    #[test]
    fn late_results_from_an_earlier_state_do_not_change_it() {
        let f = fixture(3);
        let slow = f.breaker.try_acquire().unwrap();
        open(&f);
        f.clock.advance(Duration::from_secs(4));
        slow.record(Outcome::Failure);
        assert_eq!(f.breaker.state(), BreakerState::Open);
        assert_eq!(
            f.breaker.snapshot().retry_in,
            COOLDOWN - Duration::from_secs(4),
            "cooldown not stretched"
        );
        assert_eq!(f.breaker.snapshot().failures, 4, "still counted");
        assert_eq!(f.recorder.lines().len(), 1);
    }

    #[test]
    fn a_non_probe_success_cannot_close_a_half_open_breaker() {
        let f = fixture(3);
        let slow = f.breaker.try_acquire().unwrap();
        open(&f);
        f.clock.advance(COOLDOWN);
        let probe = f.breaker.try_acquire().unwrap();
        slow.record(Outcome::Success);
        assert_eq!(f.breaker.state(), BreakerState::HalfOpen);
        drop(probe);
    }

    #[test]
    fn racing_failures_open_the_breaker_once() {
        let f = fixture(3);
        let threads = 8;
        let barrier = Arc::new(Barrier::new(threads));
        let permits: Vec<Permit> = (0..threads)
            .map(|_| f.breaker.try_acquire().unwrap())
            .collect();
        let handles: Vec<_> = permits
            .into_iter()
            .map(|permit| {
                let barrier = barrier.clone();
                thread::spawn(move || {
                    barrier.wait();
                    permit.record(Outcome::Failure);
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(f.breaker.state(), BreakerState::Open);
        assert_eq!(f.recorder.lines(), ["Closed->Open (threshold reached)"]);
    }

    #[test]
    fn exactly_one_probe_under_real_thread_contention() {
        for _ in 0..50 {
            let f = fixture(3);
            open(&f);
            f.clock.advance(COOLDOWN);
            let admitted = admitted(race_for_permits(
                &f.breaker,
                16,
                &Arc::new(Barrier::new(16)),
            ));
            assert_eq!(admitted.len(), 1, "exactly one probe");
            assert!(admitted[0].is_probe());
            assert_eq!(
                f.recorder
                    .lines()
                    .iter()
                    .filter(|l| l.contains("Half-Open"))
                    .count(),
                1
            );
        }
    }

    fn fail_probe(f: &Fixture) {
        f.clock.advance(f.breaker.snapshot().retry_in);
        let probe = f.breaker.try_acquire().expect("probe");
        assert!(probe.is_probe());
        probe.record(Outcome::Failure);
    }

    fn growing(max: Duration) -> Fixture {
        fixture_with(BreakerSettings {
            failure_threshold: 3,
            open_timeout: COOLDOWN,
            open_timeout_max: Some(max),
            open_timeout_jitter_percent: 0,
            failure_rate: None,
        })
    }

    #[test]
    fn by_default_every_cooldown_is_the_open_timeout() {
        let f = fixture(3);
        open(&f);
        for _ in 0..4 {
            fail_probe(&f);
            assert_eq!(f.breaker.snapshot().retry_in, COOLDOWN);
        }
    }

    #[test]
    fn a_backend_may_ask_for_a_longer_cooldown_within_the_cap_and_never_a_shorter_one() {
        let ask = |f: &Fixture, cooldown: Duration| {
            f.breaker
                .try_acquire()
                .expect("admitted")
                .record_failure_asking(cooldown)
        };
        // 25 s asked, the cap is 60 s (six open timeouts): 25 s.
        let f = fixture(1);
        ask(&f, Duration::from_secs(25));
        assert_eq!(f.breaker.snapshot().retry_in, Duration::from_secs(25));
        // A failed probe that asks for an hour gets the cap.
        f.clock.advance(Duration::from_secs(25));
        let probe = f.breaker.try_acquire().expect("probe");
        probe.record_failure_asking(Duration::from_secs(3600));
        assert_eq!(f.breaker.snapshot().retry_in, 6 * COOLDOWN);
        // Asking for less than the cooldown changes nothing.
        let f = fixture(1);
        ask(&f, Duration::from_secs(1));
        assert_eq!(f.breaker.snapshot().retry_in, COOLDOWN);
        // A failure that does not open the breaker asks for nothing.
        let f = fixture(3);
        ask(&f, Duration::from_secs(30));
        assert_eq!(f.breaker.state(), BreakerState::Closed);
        fail(&f.breaker, 2);
        assert_eq!(f.breaker.snapshot().retry_in, COOLDOWN);
        // With a growing cooldown, its cap bounds the ask, and the growth is unchanged.
        let f = growing(Duration::from_secs(40));
        fail(&f.breaker, 2);
        ask(&f, Duration::from_secs(600));
        assert_eq!(f.breaker.snapshot().retry_in, Duration::from_secs(40));
        fail_probe(&f);
        assert_eq!(f.breaker.snapshot().retry_in, 2 * COOLDOWN);
    }

    #[test]
    fn a_growing_cooldown_doubles_per_failed_probe_up_to_its_cap() {
        let f = growing(Duration::from_secs(60));
        open(&f);
        assert_eq!(f.breaker.snapshot().retry_in, COOLDOWN);
        let mut seen = Vec::new();
        for _ in 0..4 {
            fail_probe(&f);
            seen.push(f.breaker.snapshot().retry_in.as_secs());
        }
        assert_eq!(seen, [20, 40, 60, 60]);
    }

    #[test]
    fn a_growing_cooldown_returns_to_the_base_only_after_a_stable_closed_period() {
        let max = Duration::from_secs(60);
        let f = growing(max);
        open(&f);
        fail_probe(&f);
        fail_probe(&f);
        f.clock.advance(f.breaker.snapshot().retry_in);
        f.breaker.try_acquire().unwrap().record(Outcome::Success);
        assert_eq!(f.breaker.state(), BreakerState::Closed);

        // Flapping: it trips again soon after recovering and keeps its long cooldown.
        f.clock.advance(max - Duration::from_secs(1));
        open(&f);
        assert_eq!(f.breaker.snapshot().retry_in, Duration::from_secs(40));

        // Stable for the whole cap: the next trip starts from the base again.
        f.clock.advance(f.breaker.snapshot().retry_in);
        f.breaker.try_acquire().unwrap().record(Outcome::Success);
        f.clock.advance(max);
        open(&f);
        assert_eq!(f.breaker.snapshot().retry_in, COOLDOWN);
    }

    #[test]
    fn jitter_only_lengthens_and_varies_between_breakers_and_cycles() {
        let mut cooldowns = std::collections::BTreeSet::new();
        for name in ["http://a:1", "http://b:1", "http://c:1"] {
            let clock = Arc::new(ManualClock::new());
            let breaker = Arc::new(Breaker::new(
                name,
                BreakerSettings {
                    failure_threshold: 1,
                    open_timeout: COOLDOWN,
                    open_timeout_max: None,
                    open_timeout_jitter_percent: 10,
                    failure_rate: None,
                },
                clock.clone(),
                Arc::new(Recorder::default()),
            ));
            for _ in 0..5 {
                breaker.try_acquire().unwrap().record(Outcome::Failure);
                let retry_in = breaker.snapshot().retry_in;
                assert!(retry_in >= COOLDOWN && retry_in <= COOLDOWN + COOLDOWN / 10);
                cooldowns.insert(retry_in);
                clock.advance(retry_in);
                breaker.try_acquire().unwrap().record(Outcome::Success);
            }
        }
        assert!(cooldowns.len() > 10, "{cooldowns:?}");
    }

    #[test]
    fn jitter_spreads_evenly_over_its_whole_range() {
        let f = fixture_with(BreakerSettings {
            open_timeout: COOLDOWN,
            open_timeout_jitter_percent: 20,
            ..BreakerSettings::default()
        });
        let extra: Vec<f64> = (0..2000)
            .map(|generation| {
                let jittered = f.breaker.jittered(COOLDOWN, generation);
                (jittered - COOLDOWN).as_secs_f64() / COOLDOWN.as_secs_f64()
            })
            .collect();
        let (min, max) = extra
            .iter()
            .fold((1.0f64, 0.0f64), |(lo, hi), &e| (lo.min(e), hi.max(e)));
        let mean = extra.iter().sum::<f64>() / extra.len() as f64;
        assert!(min < 0.005 && max > 0.195 && max <= 0.2, "{min} {max}");
        assert!((0.09..0.11).contains(&mean), "{mean}");
    }

    #[test]
    fn a_forced_open_backend_stays_out_until_closed_by_hand() {
        let f = fixture(3);
        let in_flight = f.breaker.try_acquire().unwrap();
        f.breaker.apply(ManualAction::Open);
        assert_eq!(f.breaker.state(), BreakerState::ForcedOpen);
        in_flight.record(Outcome::Success);
        f.clock.advance(COOLDOWN * 100);
        assert!(f.breaker.try_acquire().is_none(), "no probe, ever");
        assert_eq!(f.breaker.state(), BreakerState::ForcedOpen);
        f.breaker.apply(ManualAction::Close);
        assert_eq!(f.breaker.state(), BreakerState::Closed);
        assert!(f.breaker.try_acquire().is_some());
        assert_eq!(
            f.recorder.lines(),
            [
                "Closed->Forced-Open (manual)",
                "Forced-Open->Closed (manual)"
            ]
        );
    }

    #[test]
    fn closing_an_open_breaker_by_hand_keeps_counters_and_reset_clears_them() {
        let f = fixture(3);
        open(&f);
        f.breaker.apply(ManualAction::Close);
        let snapshot = f.breaker.snapshot();
        assert_eq!(
            (snapshot.state, snapshot.failures),
            (BreakerState::Closed, 3)
        );
        fail(&f.breaker, 2);
        assert_eq!(f.breaker.state(), BreakerState::Closed, "a fresh run");
        f.breaker.apply(ManualAction::Reset);
        let snapshot = f.breaker.snapshot();
        assert_eq!(
            (
                snapshot.successes,
                snapshot.failures,
                snapshot.consecutive_failures
            ),
            (0, 0, 0)
        );
        assert_eq!(
            f.recorder.lines().last().unwrap(),
            "Closed->Closed (manual)"
        );
    }

    #[test]
    fn the_latest_transition_is_kept_with_its_age() {
        let f = fixture(3);
        assert_eq!(f.breaker.last_transition(), None);
        open(&f);
        f.clock.advance(Duration::from_secs(4));
        assert_eq!(
            f.breaker.last_transition(),
            Some(LastTransition {
                from: BreakerState::Closed,
                to: BreakerState::Open,
                reason: TransitionReason::ThresholdReached,
                ago: Duration::from_secs(4),
            })
        );
    }

    #[test]
    fn state_word_round_trips() {
        for state in [
            BreakerState::Closed,
            BreakerState::Open,
            BreakerState::HalfOpen,
            BreakerState::ForcedOpen,
        ] {
            for probe in [false, true] {
                let w = StateWord::new(state, probe, 12345);
                assert_eq!(
                    (w.state(), w.probe_out(), w.generation()),
                    (state, probe, 12345)
                );
            }
        }
    }
}
