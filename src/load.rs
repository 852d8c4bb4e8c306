//! How much each backend is carrying: its requests in flight, its concurrency limit (fixed or
//! adaptive), its recent latency, and the service's bounded waiting room for requests that
//! find every backend full.
//!
//! Breakers catch backends that fail; this catches backends that get slow. A slow backend
//! does not fail until timeouts fire, so without a limit it keeps its full share of new
//! requests and they pile up on it. Here every attempt holds a [`Slot`] of its backend from
//! the pick to its end: a backend at its limit is skipped as an Open breaker is (the selector
//! walks on to one with room), and a request that finds none waits in its service's
//! [`WaitingRoom`] for a slot to free, for at most the queue timeout, or is refused at once.
//! Being full is not failing: nothing here touches a breaker.
//!
//! Shaped for the request path: a slot is two atomic operations on the backend's own counter
//! (no lock anywhere unless the limit is adaptive, and then only the backend's own), and a
//! freed slot wakes a waiter only when one is waiting.
//!
//! The adaptive limit is Netflix concurrency-limits' *Gradient2*: it compares the latency of
//! the latest window of samples (short) with a slow moving average (long), and when short
//! grows past `TOLERANCE` × long the limit shrinks by their ratio (down to half per window),
//! while it grows by √limit per window as long as latency holds and the backend is asked for at
//! least half its limit. Chosen over Envoy's gradient controller because it needs no periodic
//! "minimum RTT" phase that pins every backend to a tiny limit on a schedule, and over AIMD
//! because it reacts to latency before anything fails. Unlike Netflix's, a shrink applies at
//! once and only growth is smoothed: a backend that turns slow loses its share within a window
//! or two.
//!
//! Latency is also kept as a *peak EWMA* (Finagle's and Linkerd's): a sample above the average
//! replaces it at once, one below pulls it down by a tenth, and it decays with time (by `e`
//! every `LATENCY_DECAY`) while no sample comes, so a backend that was slow once is tried again
//! in time instead of being shunned for ever. Latency-aware picking scores a backend by it
//! times its requests in flight plus one; a backend without a sample yet counts as
//! `UNSAMPLED_LATENCY`.

use std::ops::ControlFlow;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// How many requests a backend may have in flight at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ConcurrencyLimit {
    /// No limit (the default).
    #[default]
    Unlimited,
    /// At most this many.
    Fixed(u32),
    /// Found from the backend's latency, between these bounds.
    Adaptive {
        /// The limit never goes below this.
        min: u32,
        /// Nor above this.
        max: u32,
    },
}

/// Where requests go among the backends that a request may be sent to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Picking {
    /// Round-robin, as the original design (the default).
    #[default]
    RoundRobin,
    /// The backend with the fewest requests in flight; ties in rotation order.
    LeastRequests,
    /// The backend with the lowest peak-EWMA latency × (requests in flight + 1); ties in
    /// rotation order.
    PeakEwma,
}

/// A service's waiting room for requests that find every backend full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueSettings {
    /// At most this many requests wait at once; `0` refuses at once.
    pub size: u32,
    /// How long one may wait.
    pub timeout: Duration,
}

impl Default for QueueSettings {
    /// No queue: a request that finds every backend full is refused at once.
    fn default() -> Self {
        Self {
            size: 0,
            timeout: Duration::from_secs(1),
        }
    }
}

/// What a service does about load: limits, its queue, and how it picks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LoadSettings {
    /// Each backend's concurrency limit.
    pub limit: ConcurrencyLimit,
    /// The waiting room.
    pub queue: QueueSettings,
    /// How backends are picked.
    pub picking: Picking,
}

/// The limit an adaptive backend starts with (within its bounds).
const ADAPTIVE_INITIAL: f64 = 20.0;
/// A latency average fades by `e` over this long without a sample.
const LATENCY_DECAY: Duration = Duration::from_secs(10);
/// What a backend's latency counts as before its first sample.
const UNSAMPLED_LATENCY: Duration = Duration::from_millis(10);

/// Microseconds from the process's first use of this to `at` (zero before it).
fn since_epoch(at: Instant) -> u64 {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    u64::try_from(at.saturating_duration_since(epoch).as_micros()).unwrap_or(u64::MAX)
}

/// One backend's load, as one service sends it requests.
#[derive(Debug)]
pub struct BackendLoad {
    /// The limit as configured.
    configured: ConcurrencyLimit,
    in_flight: AtomicU32,
    /// The current limit; `u32::MAX` for none.
    limit: AtomicU32,
    /// Peak EWMA of attempt latency, in microseconds; `0` before the first sample.
    latency_micros: AtomicU64,
    /// When that was last sampled, in microseconds since [`epoch`].
    sampled_at: AtomicU64,
    /// Times its turn came while it was full.
    full: AtomicU64,
    /// The adaptive limit's state, when the limit is adaptive.
    adaptive: Option<Mutex<Gradient>>,
    /// Where the service's requests wait for a slot: woken when one frees.
    room: Arc<WaitingRoom>,
}

impl BackendLoad {
    /// A backend with nothing in flight, limited by `limit`, waking `room`'s waiters.
    pub fn new(limit: ConcurrencyLimit, room: Arc<WaitingRoom>) -> Self {
        let (initial, adaptive) = match limit {
            ConcurrencyLimit::Unlimited => (u32::MAX, None),
            ConcurrencyLimit::Fixed(n) => (n, None),
            ConcurrencyLimit::Adaptive { min, max } => {
                let gradient = Gradient::new(min, max);
                (gradient.current(), Some(Mutex::new(gradient)))
            }
        };
        Self {
            configured: limit,
            in_flight: AtomicU32::new(0),
            limit: AtomicU32::new(initial),
            latency_micros: AtomicU64::new(0),
            sampled_at: AtomicU64::new(0),
            full: AtomicU64::new(0),
            adaptive,
            room,
        }
    }

    /// Takes a slot if the backend is under its limit; counts the refusal otherwise.
    pub fn try_take(self: &Arc<Self>) -> Option<Slot> {
        let limit = self.limit.load(Ordering::Relaxed);
        let taken = self
            .in_flight
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < limit).then(|| n + 1)
            });
        match taken {
            Ok(_) => Some(Slot(Arc::clone(self))),
            Err(_) => {
                self.full.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// The limit as configured (an adaptive one moves within it).
    pub fn configured(&self) -> ConcurrencyLimit {
        self.configured
    }

    /// Requests in flight now.
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// The current limit; `None` for none.
    pub fn limit(&self) -> Option<u32> {
        Some(self.limit.load(Ordering::Relaxed)).filter(|&n| n != u32::MAX)
    }

    /// Times its turn came while it was full.
    pub fn times_full(&self) -> u64 {
        self.full.load(Ordering::Relaxed)
    }

    /// The peak EWMA of its latency as of `now`; `None` before the first sample.
    pub fn latency(&self, now: Instant) -> Option<Duration> {
        let micros = self.latency_micros_at(since_epoch(now));
        (micros > 0).then(|| Duration::from_micros(micros))
    }

    /// The EWMA in µs, decayed to `now` (µs since the epoch); `0` before the first sample.
    fn latency_micros_at(&self, now: u64) -> u64 {
        let micros = self.latency_micros.load(Ordering::Relaxed);
        let quiet = now.saturating_sub(self.sampled_at.load(Ordering::Relaxed));
        // Within a second the fade is under a tenth: not worth an `exp` per request.
        if micros == 0 || quiet < 1_000_000 {
            return micros;
        }
        let decay = (-(quiet as f64) / LATENCY_DECAY.as_micros() as f64).exp();
        ((micros as f64 * decay) as u64).max(1)
    }

    /// How a latency-aware pick made at `now` ranks it: lower is better.
    pub(crate) fn score(&self, picking: Picking, now: Instant) -> u64 {
        let in_flight = u64::from(self.in_flight());
        match picking {
            Picking::RoundRobin => 0,
            Picking::LeastRequests => in_flight,
            Picking::PeakEwma => {
                let micros = match self.latency_micros_at(since_epoch(now)) {
                    0 => UNSAMPLED_LATENCY.as_micros() as u64,
                    micros => micros,
                };
                micros.saturating_mul(in_flight + 1)
            }
        }
    }

    /// Takes one attempt's latency, ending `at`: the peak EWMA, and the adaptive limit's
    /// window. A lost update under a race only loses a sample of an estimate.
    fn sample(&self, latency: Duration, at: Instant) {
        let micros = u64::try_from(latency.as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        let at_micros = since_epoch(at);
        let old = self.latency_micros_at(at_micros);
        let new = if micros >= old || old == 0 {
            micros
        } else {
            old - (old - micros) / 10
        };
        self.latency_micros.store(new, Ordering::Relaxed);
        self.sampled_at.store(at_micros, Ordering::Relaxed);
        if let Some(adaptive) = &self.adaptive {
            let mut gradient = adaptive.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(limit) = gradient.sample(micros as f64, self.in_flight(), at) {
                self.limit.store(limit, Ordering::Relaxed);
            }
        }
    }

    fn release(&self) {
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.room.wake_one();
    }
}

/// One attempt's place at its backend, from the pick to the attempt's end. Dropping it frees
/// the place without a latency sample (a cancelled or refused attempt says nothing of it).
#[derive(Debug)]
pub struct Slot(Arc<BackendLoad>);

impl Slot {
    /// Frees the place, taking `latency` (the attempt's, from the pick to its end at `ended`)
    /// as a sample.
    pub fn finish(self, latency: Duration, ended: Instant) {
        self.0.sample(latency, ended);
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.release();
    }
}

/// Why a request left the waiting room without a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overflow {
    /// The room was full (or the service has none).
    QueueFull,
    /// No slot freed in time.
    TimedOut,
}

/// A service's requests waiting for a backend slot. Not strictly fair: a request that arrives
/// as a slot frees may take it before a woken waiter does; a waiter is bounded by its timeout
/// all the same.
#[derive(Debug, Default)]
pub struct WaitingRoom {
    waiting: AtomicU32,
    notify: Notify,
}

impl WaitingRoom {
    /// Requests waiting now.
    pub fn waiting(&self) -> u32 {
        self.waiting.load(Ordering::Relaxed)
    }

    /// Waits, as one of at most `size`, until `attempt` breaks (it is tried on entering and
    /// whenever a slot frees) or `until` passes.
    pub async fn wait<R>(
        &self,
        size: u32,
        until: Instant,
        mut attempt: impl FnMut() -> ControlFlow<R>,
    ) -> Result<R, Overflow> {
        let entered = self
            .waiting
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < size).then(|| n + 1)
            });
        if entered.is_err() {
            return Err(Overflow::QueueFull);
        }
        let _leave = Leave(self);
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            // Enabled before trying, so a slot freed in between is not missed.
            notified.as_mut().enable();
            if let ControlFlow::Break(r) = attempt() {
                return Ok(r);
            }
            let until = tokio::time::Instant::from_std(until);
            if tokio::time::timeout_at(until, notified).await.is_err() {
                // A wake this waiter may have swallowed as it timed out goes on to the next.
                self.wake_one();
                return Err(Overflow::TimedOut);
            }
        }
    }

    fn wake_one(&self) {
        if self.waiting.load(Ordering::SeqCst) > 0 {
            self.notify.notify_one();
        }
    }
}

/// Leaves the waiting room when dropped (a request whose client hung up included).
struct Leave<'a>(&'a WaitingRoom);

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Latency must grow past this multiple of its long-term average before the limit shrinks.
const TOLERANCE: f64 = 1.5;
/// A window closes after this many samples, once it is at least `WINDOW_MIN` old ...
const WINDOW_SAMPLES: u32 = 10;
const WINDOW_MIN: Duration = Duration::from_millis(100);
/// ... or after `WINDOW_MAX` with any sample at all (a slow backend sends few).
const WINDOW_MAX: Duration = Duration::from_secs(1);
/// The long-term average moves by 1/`LONG_WINDOWS` of a window's average per window.
const LONG_WINDOWS: f64 = 60.0;
/// Growth is smoothed by this much per window.
const SMOOTHING: f64 = 0.2;

/// Gradient2's state for one backend.
#[derive(Debug)]
struct Gradient {
    min: f64,
    max: f64,
    limit: f64,
    /// Long-term average latency (µs); `0` before the first window.
    long: f64,
    windows: u32,
    window_sum: f64,
    window_samples: u32,
    window_started: Option<Instant>,
    /// The most requests in flight seen in this window.
    window_peak: u32,
}

impl Gradient {
    fn new(min: u32, max: u32) -> Self {
        Self {
            min: f64::from(min),
            max: f64::from(max),
            limit: ADAPTIVE_INITIAL.clamp(f64::from(min), f64::from(max)),
            long: 0.0,
            windows: 0,
            window_sum: 0.0,
            window_samples: 0,
            window_started: None,
            window_peak: 0,
        }
    }

    fn current(&self) -> u32 {
        self.limit as u32
    }

    /// Takes one sample (µs, with `in_flight` requests out as it ended); the new limit when
    /// the sample closed a window.
    fn sample(&mut self, micros: f64, in_flight: u32, at: Instant) -> Option<u32> {
        let started = *self.window_started.get_or_insert(at);
        self.window_sum += micros;
        self.window_samples += 1;
        // The slot of this sample is still counted: it was out too.
        self.window_peak = self.window_peak.max(in_flight);
        let age = at.saturating_duration_since(started);
        let closes =
            (self.window_samples >= WINDOW_SAMPLES && age >= WINDOW_MIN) || age >= WINDOW_MAX;
        if !closes {
            return None;
        }
        let short = self.window_sum / f64::from(self.window_samples);
        let peak = self.window_peak;
        self.window_sum = 0.0;
        self.window_samples = 0;
        self.window_started = None;
        self.window_peak = 0;
        self.windows += 1;
        self.long = if self.windows == 1 {
            short
        } else {
            self.long + (short - self.long) / LONG_WINDOWS
        };
        // Recovering: the long average is far above today's latency; let it catch up.
        if self.long > 2.0 * short {
            self.long = (self.long * 0.9).max(short);
        }
        let gradient = (TOLERANCE * self.long / short).clamp(0.5, 1.0);
        let target = self.limit * gradient + self.limit.sqrt();
        let next = if gradient < 1.0 {
            target.min(self.limit)
        } else if f64::from(peak) < self.limit / 2.0 {
            // Asked for less than half of it: no evidence it can take more.
            self.limit
        } else {
            self.limit * (1.0 - SMOOTHING) + target * SMOOTHING
        };
        self.limit = next.clamp(self.min, self.max);
        Some(self.current())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend(limit: ConcurrencyLimit) -> (Arc<BackendLoad>, Arc<WaitingRoom>) {
        let room = Arc::new(WaitingRoom::default());
        (Arc::new(BackendLoad::new(limit, room.clone())), room)
    }

    #[test]
    fn a_fixed_limit_holds_and_a_freed_slot_is_taken_again() {
        let (load, _) = backend(ConcurrencyLimit::Fixed(2));
        let a = load.try_take().expect("first");
        let b = load.try_take().expect("second");
        assert!(load.try_take().is_none(), "over the limit");
        assert_eq!((load.in_flight(), load.times_full()), (2, 1));
        drop(a);
        let c = load.try_take().expect("a freed slot");
        b.finish(Duration::from_millis(5), Instant::now());
        c.finish(Duration::from_millis(5), Instant::now());
        assert_eq!(load.in_flight(), 0);
        assert_eq!(load.limit(), Some(2));
        let latency = load.latency(Instant::now()).unwrap();
        assert!(latency > Duration::from_micros(4900), "{latency:?}");
        let (unlimited, _) = backend(ConcurrencyLimit::Unlimited);
        let slots: Vec<_> = (0..1000).map(|_| unlimited.try_take().unwrap()).collect();
        assert_eq!((unlimited.in_flight(), unlimited.limit()), (1000, None));
        drop(slots);
        assert_eq!(unlimited.in_flight(), 0);
    }

    #[test]
    fn peak_ewma_jumps_up_at_once_decays_by_a_tenth_and_fades_with_time() {
        let (load, _) = backend(ConcurrencyLimit::Unlimited);
        let t = Instant::now();
        assert_eq!(load.latency(t), None);
        assert_eq!(load.score(Picking::PeakEwma, t), 10_000, "unsampled: 10 ms");
        load.sample(Duration::from_millis(10), t);
        assert_eq!(load.latency(t), Some(Duration::from_millis(10)));
        load.sample(Duration::from_millis(1000), t);
        assert_eq!(load.latency(t), Some(Duration::from_millis(1000)));
        load.sample(Duration::from_millis(100), t);
        assert_eq!(load.latency(t), Some(Duration::from_millis(910)));
        let _out = load.try_take().unwrap();
        assert_eq!(load.score(Picking::PeakEwma, t), 2 * 910_000);
        assert_eq!(load.score(Picking::LeastRequests, t), 1);
        assert_eq!(load.score(Picking::RoundRobin, t), 0);
        // Quiet for one decay time: down by e.
        let later = load.latency(t + LATENCY_DECAY).unwrap().as_millis();
        assert!((333..=336).contains(&later), "{later}");
        // A slot's latency is a sample too.
        load.try_take()
            .unwrap()
            .finish(Duration::from_secs(5), Instant::now());
        assert!(load.latency(Instant::now()).unwrap() >= Duration::from_millis(4900));
    }

    /// Feeds `windows` windows of `WINDOW_SAMPLES` samples of `micros`, each sample ending with
    /// `in_flight` out; returns the limit after each window.
    fn feed(
        g: &mut Gradient,
        t: &mut Instant,
        micros: f64,
        in_flight: u32,
        windows: usize,
    ) -> Vec<u32> {
        let mut limits = Vec::new();
        while limits.len() < windows {
            *t += WINDOW_MIN / WINDOW_SAMPLES;
            if let Some(limit) = g.sample(micros, in_flight, *t) {
                limits.push(limit);
            }
        }
        limits
    }

    #[test]
    fn the_adaptive_limit_shrinks_when_latency_grows_and_grows_back_when_it_recovers() {
        let mut g = Gradient::new(2, 200);
        let mut t = Instant::now();
        assert_eq!(g.current(), 20);
        // Steady 2 ms, asked for all of it: the limit grows.
        let steady = feed(&mut g, &mut t, 2_000.0, 200, 30);
        assert!(steady.windows(2).all(|w| w[1] >= w[0]), "{steady:?}");
        let grown = *steady.last().unwrap();
        assert!(grown > 40, "{steady:?}");
        // The backend turns a thousand times slower: within three windows the limit is under a
        // third, and it settles near the floor's neighbourhood, never below the minimum.
        let slow = feed(&mut g, &mut t, 2_000_000.0, 200, 12);
        assert!(slow[2] < grown / 3, "{slow:?}");
        assert!(slow.iter().all(|&l| l >= 2), "{slow:?}");
        assert!(*slow.last().unwrap() <= 10, "{slow:?}");
        // It recovers: the limit grows again.
        let recovered = feed(&mut g, &mut t, 2_000.0, 200, 40);
        assert!(
            *recovered.last().unwrap() > 3 * slow.last().unwrap(),
            "{recovered:?}"
        );
    }

    #[test]
    fn the_adaptive_limit_does_not_grow_on_demand_it_never_saw() {
        let mut g = Gradient::new(1, 1000);
        let mut t = Instant::now();
        let limits = feed(&mut g, &mut t, 2_000.0, 3, 30);
        assert!(limits.iter().all(|&l| l == 20), "{limits:?}");
    }

    #[test]
    fn a_slow_backend_closes_its_window_on_time_with_few_samples() {
        let mut g = Gradient::new(1, 100);
        let t = Instant::now();
        assert_eq!(g.sample(2_000.0, 20, t), None);
        assert!(g.sample(2_000.0, 20, t + WINDOW_MAX).is_some());
    }

    #[tokio::test]
    async fn a_waiter_gets_a_freed_slot_and_the_room_is_bounded() {
        let (load, room) = backend(ConcurrencyLimit::Fixed(1));
        let held = load.try_take().unwrap();
        let later = Instant::now() + Duration::from_secs(5);
        let take = || match load.try_take() {
            Some(slot) => ControlFlow::Break(slot),
            None => ControlFlow::Continue(()),
        };
        let waiter = room.wait(1, later, take);
        tokio::pin!(waiter);
        // It is in and waiting.
        assert!(futures_poll(waiter.as_mut()).is_none());
        assert_eq!(room.waiting(), 1);
        // A second finds the room full.
        let second = room.wait(1, later, || ControlFlow::<()>::Continue(()));
        assert_eq!(second.await, Err(Overflow::QueueFull));
        drop(held);
        let slot = waiter.await.expect("the freed slot");
        assert_eq!((load.in_flight(), room.waiting()), (1, 0));
        drop(slot);
        // No slot frees: it times out, and leaves.
        let _held = load.try_take().unwrap();
        let soon = Instant::now() + Duration::from_millis(20);
        let timed_out = room.wait(4, soon, take).await;
        assert!(matches!(timed_out, Err(Overflow::TimedOut)));
        assert_eq!(room.waiting(), 0);
        // No room at all: refused at once.
        assert!(matches!(
            room.wait(0, later, take).await,
            Err(Overflow::QueueFull)
        ));
    }

    /// Polls `future` once.
    fn futures_poll<F: std::future::Future + Unpin>(future: F) -> Option<F::Output> {
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        let mut future = future;
        match std::pin::Pin::new(&mut future).poll(&mut cx) {
            std::task::Poll::Ready(output) => Some(output),
            std::task::Poll::Pending => None,
        }
    }
}
