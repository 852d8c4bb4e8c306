//! Round-robin selection over one service's backends, filtered by their breakers.
//!
//! Backends keep their config order, and one atomic counter per service hands each request a
//! ticket: its starting place in the rotation. From there the selector walks forward to the
//! first backend that the request has not tried yet and whose breaker admits it. With every
//! breaker Closed that is exactly the ticket's backend, so sequential requests alternate
//! 1, 2, 1, 2, ... When the walk had to skip backends, the counter is moved past the chosen
//! one, so a dead backend's share is spread over the others instead of doubling the load on
//! its successor. A failover attempt reuses the request's ticket, so retries never shift the
//! rotation for other requests.
//!
//! A service's breakers share one clock, so a walk reads it at most once.
//!
//! Concurrency limits ([`crate::load`]) filter like breakers: a backend at its limit is
//! skipped, and when every backend that would admit the request is full the answer says so
//! ([`NoPick::Full`]), so the caller can queue it instead of failing it. Latency-aware picking
//! (opt-in) only changes the walk's order: backends ranked by their load score, ties in
//! rotation order; the filters and the failover rules are the same.
//!
//! The selector knows breakers and load but nothing of HTTP: it walks any list of things that
//! have a breaker (a service's backends), and returns an index into it, the permit to settle
//! once the attempt is over and the slot the attempt holds. It keeps only the counter; the list
//! is the service's.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::breaker::{Breaker, BreakerState, Permit};
use crate::load::{BackendLoad, Picking, Slot};

/// The backend chosen for one attempt.
#[derive(Debug)]
pub struct Pick {
    /// Its position in the service's backend list.
    pub index: usize,
    /// The breaker's leave to send the attempt; settle it with the attempt's outcome.
    pub permit: Permit,
    /// The attempt's place under the backend's concurrency limit, if it has a load to track.
    pub slot: Option<Slot>,
}

/// Why no backend was picked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoPick {
    /// Every untried backend whose breaker would admit the request is at its concurrency
    /// limit: a slot may free soon.
    Full,
    /// No untried backend's breaker admits it (or there are none).
    Unavailable,
}

/// How a service picks among its backends, beyond the breakers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PickPolicy {
    /// Round-robin or latency-aware.
    pub picking: Picking,
    /// Slow start of backends that have just closed.
    pub slow_start: Option<Duration>,
}

/// Something guarded by a breaker: what the selector walks over.
pub trait Guarded {
    /// The breaker that admits requests to it.
    fn breaker(&self) -> &Arc<Breaker>;

    /// Its load (requests in flight, concurrency limit), if it is tracked.
    fn load(&self) -> Option<&Arc<BackendLoad>> {
        None
    }
}

impl Guarded for Arc<Breaker> {
    fn breaker(&self) -> &Arc<Breaker> {
        self
    }
}

/// Breaker-aware round-robin over one service's backends: the rotation's counter.
#[derive(Debug, Default)]
pub struct RoundRobin {
    next: AtomicUsize,
}

impl RoundRobin {
    /// Takes a request's place in the rotation. Call it once per request.
    pub fn ticket(&self) -> usize {
        self.next.fetch_add(1, Ordering::Relaxed)
    }

    /// How many tickets were handed out: roughly the service's request count so far.
    pub fn requests(&self) -> u64 {
        self.next.load(Ordering::Relaxed) as u64
    }

    /// The first of `backends` from the ticket's place on (or, latency-aware, in the order of
    /// their load) that is not in `tried`, has room under its concurrency limit, and whose
    /// breaker admits a request.
    ///
    /// With `slow_start`, a backend that came back to Closed less than that long ago takes
    /// only its growing share of the requests whose turn it is (see
    /// `Breaker::admits_while_warming`); the others go on to the next backend, and to the
    /// warming one after all if no other admits them. Without it, round-robin is exact.
    pub fn pick<B: Guarded>(
        &self,
        backends: &[B],
        ticket: usize,
        tried: &[usize],
        policy: &PickPolicy,
    ) -> Result<Pick, NoPick> {
        let len = backends.len();
        if len == 0 {
            return Err(NoPick::Unavailable);
        }
        let start = ticket % len;
        let ranked = (policy.picking != Picking::RoundRobin)
            .then(|| ranked(backends, start, policy.picking));
        let mut now = None;
        let mut warming = None;
        let mut full = false;
        for step in 0..len {
            let index = ranked.as_ref().map_or((start + step) % len, |r| r[step]);
            if tried.contains(&index) {
                continue;
            }
            let backend = &backends[index];
            let Ok(slot) = take_slot(backend) else {
                full |= would_admit(backend.breaker());
                continue;
            };
            let breaker = backend.breaker();
            if let Some(permit) = breaker.try_acquire_at(&mut now) {
                if policy
                    .slow_start
                    .is_some_and(|d| !breaker.admits_while_warming(d, ticket))
                {
                    // Dropping a Closed breaker's permit is neutral, and a slot unused.
                    warming.get_or_insert(index);
                    continue;
                }
                // Skipping a warming backend is its slow start, not an outage: the rotation
                // stays where it is, so its turns keep coming.
                if step > 0 && tried.is_empty() && warming.is_none() && ranked.is_none() {
                    self.next.fetch_add(step, Ordering::Relaxed);
                }
                return Ok(Pick {
                    index,
                    permit,
                    slot,
                });
            }
        }
        let unavailable = if full {
            NoPick::Full
        } else {
            NoPick::Unavailable
        };
        let index = warming.ok_or(unavailable)?;
        let slot = take_slot(&backends[index]).map_err(|()| NoPick::Full)?;
        let permit = backends[index]
            .breaker()
            .try_acquire_at(&mut now)
            .ok_or(unavailable)?;
        Ok(Pick {
            index,
            permit,
            slot,
        })
    }

    /// How long until one of `backends` admits a request again: zero if one would now.
    /// Backends taken out by hand do not count: nobody knows when they come back.
    pub fn retry_after<B: Guarded>(backends: &[B]) -> Duration {
        backends
            .iter()
            .map(|b| b.breaker().snapshot())
            .filter(|s| s.state != BreakerState::ForcedOpen)
            .map(|s| s.retry_in)
            .min()
            .unwrap_or(Duration::ZERO)
    }
}

/// A slot at `backend`, `None` if its load is not tracked; `Err` if it is full.
fn take_slot<B: Guarded>(backend: &B) -> Result<Option<Slot>, ()> {
    match backend.load() {
        None => Ok(None),
        Some(load) => load.try_take().map(Some).ok_or(()),
    }
}

/// Whether a full backend's breaker would admit a request: if not, waiting for its slot is
/// waiting for nothing.
fn would_admit(breaker: &Breaker) -> bool {
    matches!(
        breaker.state(),
        BreakerState::Closed | BreakerState::HalfOpen
    )
}

/// Every index, lowest load score first, ties in rotation order from `start`.
fn ranked<B: Guarded>(backends: &[B], start: usize, picking: Picking) -> Vec<usize> {
    let len = backends.len();
    let now = std::time::Instant::now();
    let mut order: Vec<(u64, usize)> = (0..len)
        .map(|step| {
            let index = (start + step) % len;
            let score = backends[index].load().map_or(0, |l| l.score(picking, now));
            (score, index)
        })
        .collect();
    // Stable: equal scores keep their rotation order.
    order.sort_by_key(|&(score, _)| score);
    order.into_iter().map(|(_, index)| index).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::breaker::{BreakerSettings, BreakerState, IgnoreTransitions, ManualAction, Outcome};
    use crate::clock::ManualClock;

    const COOLDOWN: Duration = Duration::from_secs(10);

    /// A rotation over `backends` breakers, and the clock they share.
    struct Rotation {
        rr: RoundRobin,
        breakers: Vec<Arc<Breaker>>,
    }

    impl Rotation {
        fn pick(&self, ticket: usize, tried: &[usize]) -> Option<Pick> {
            self.rr
                .pick(&self.breakers, ticket, tried, &PickPolicy::default())
                .ok()
        }

        fn ticket(&self) -> usize {
            self.rr.ticket()
        }

        fn retry_after(&self) -> Duration {
            RoundRobin::retry_after(&self.breakers)
        }
    }

    fn rotation(backends: usize) -> (Rotation, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::new());
        let settings = BreakerSettings {
            failure_threshold: 1,
            open_timeout: COOLDOWN,
            ..BreakerSettings::default()
        };
        let breakers = (0..backends)
            .map(|i| {
                Arc::new(Breaker::new(
                    format!("http://b{i}:1"),
                    settings,
                    clock.clone(),
                    Arc::new(IgnoreTransitions),
                ))
            })
            .collect();
        let rr = RoundRobin::default();
        (Rotation { rr, breakers }, clock)
    }

    fn warming(slow_start: Duration) -> PickPolicy {
        PickPolicy {
            slow_start: Some(slow_start),
            ..PickPolicy::default()
        }
    }

    fn open(rr: &Rotation, index: usize) {
        rr.breakers[index]
            .try_acquire()
            .unwrap()
            .record(Outcome::Failure);
        assert_eq!(rr.breakers[index].state(), BreakerState::Open);
    }

    /// Runs `n` sequential requests, each settled as a success, and lists the chosen indexes.
    fn sequence(rr: &Rotation, n: usize) -> Vec<usize> {
        (0..n)
            .map(|_| {
                let pick = rr.pick(rr.ticket(), &[]).expect("a backend");
                pick.permit.record(Outcome::Success);
                pick.index
            })
            .collect()
    }

    #[test]
    fn alternates_in_config_order() {
        let (rr, _) = rotation(2);
        assert_eq!(rr.rr.requests(), 0);
        assert_eq!(sequence(&rr, 6), [0, 1, 0, 1, 0, 1]);
        // The retry budget reads the request count off the tickets.
        assert_eq!(rr.rr.requests(), 6);
        let (rr, _) = rotation(3);
        assert_eq!(sequence(&rr, 6), [0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn skips_an_open_backend_and_spreads_its_share() {
        let (rr, _) = rotation(3);
        open(&rr, 0);
        assert_eq!(sequence(&rr, 6), [1, 2, 1, 2, 1, 2]);
    }

    #[test]
    fn finds_the_single_healthy_backend_among_many_open_ones() {
        let (rr, _) = rotation(100);
        for i in (0..100).filter(|&i| i != 73) {
            open(&rr, i);
        }
        assert_eq!(sequence(&rr, 5), [73; 5]);
    }

    #[test]
    fn all_open_yields_nothing_and_says_when_to_retry() {
        let (rr, clock) = rotation(2);
        open(&rr, 0);
        clock.advance(Duration::from_secs(3));
        open(&rr, 1);
        assert!(rr.pick(rr.ticket(), &[]).is_none());
        assert_eq!(rr.retry_after(), Duration::from_secs(7));
        clock.advance(Duration::from_secs(7));
        let probe = rr.pick(rr.ticket(), &[]).expect("first cooldown over");
        assert_eq!(probe.index, 0);
        assert!(probe.permit.is_probe());
    }

    #[test]
    fn a_backend_taken_out_by_hand_is_skipped_and_not_waited_for() {
        let (rr, clock) = rotation(2);
        rr.breakers[0].apply(ManualAction::Open);
        assert_eq!(sequence(&rr, 3), [1, 1, 1]);
        open(&rr, 1);
        clock.advance(Duration::from_secs(4));
        assert_eq!(rr.retry_after(), Duration::from_secs(6));
    }

    #[test]
    fn a_failover_never_returns_a_tried_backend() {
        let (rr, _) = rotation(3);
        let ticket = rr.ticket();
        let first = rr.pick(ticket, &[]).unwrap();
        assert_eq!(first.index, 0);
        let second = rr.pick(ticket, &[0]).unwrap();
        assert_eq!(second.index, 1);
        let third = rr.pick(ticket, &[0, 1]).unwrap();
        assert_eq!(third.index, 2);
        assert!(rr.pick(ticket, &[0, 1, 2]).is_none());
    }

    #[test]
    fn failover_does_not_shift_the_rotation() {
        let (rr, _) = rotation(3);
        let ticket = rr.ticket();
        let _ = rr.pick(ticket, &[0]).unwrap();
        assert_eq!(sequence(&rr, 3), [1, 2, 0]);
    }

    /// Two backends, the second of which has just recovered (its probe succeeded).
    fn one_just_recovered() -> (Rotation, Arc<ManualClock>) {
        let (rr, clock) = rotation(2);
        open(&rr, 1);
        clock.advance(COOLDOWN);
        let probe = rr.pick(rr.ticket(), &[0]).unwrap();
        assert_eq!(probe.index, 1);
        probe.permit.record(Outcome::Success);
        (rr, clock)
    }

    #[test]
    fn slow_start_grows_a_recovered_backends_share_and_is_exact_when_off() {
        let (rr, clock) = one_just_recovered();
        assert_eq!(
            rr.breakers[1].state(),
            BreakerState::Closed,
            "just recovered"
        );
        let warm_up = Duration::from_secs(100);
        let share_of_1 = |rr: &Rotation| {
            let picks = (0..1000).map(|_| {
                let pick = rr
                    .rr
                    .pick(&rr.breakers, rr.ticket(), &[], &warming(warm_up))
                    .unwrap();
                pick.permit.record(Outcome::Success);
                pick.index
            });
            picks.filter(|&i| i == 1).count()
        };
        // Its turn is every second request: at first it takes a twentieth of them.
        let first = share_of_1(&rr);
        assert!((20..=30).contains(&first), "{first}");
        clock.advance(warm_up / 2);
        let half = share_of_1(&rr);
        assert!((240..=260).contains(&half), "{half}");
        clock.advance(warm_up / 2);
        assert_eq!(share_of_1(&rr), 500, "warm: exact round-robin");
        // Without slow start, a recovered backend takes its full turn at once.
        let (rr, _) = one_just_recovered();
        let turns = sequence(&rr, 4);
        assert_eq!(turns.iter().filter(|&&i| i == 1).count(), 2, "{turns:?}");
    }

    #[test]
    fn a_warming_backend_still_serves_when_no_other_can() {
        let (rr, _) = one_just_recovered();
        rr.breakers[0].apply(ManualAction::Open);
        for _ in 0..20 {
            let policy = warming(Duration::from_secs(60));
            let pick = rr.rr.pick(&rr.breakers, rr.ticket(), &[], &policy);
            assert_eq!(pick.ok().map(|p| p.index), Some(1));
        }
    }

    #[test]
    fn an_empty_rotation_picks_nothing() {
        let rr = RoundRobin::default();
        let none: [Arc<Breaker>; 0] = [];
        let pick = rr.pick(&none, rr.ticket(), &[], &PickPolicy::default());
        assert_eq!(pick.err(), Some(NoPick::Unavailable));
        assert_eq!(RoundRobin::retry_after(&none), Duration::ZERO);
    }

    /// A backend with a breaker and a tracked load.
    struct Limited {
        breaker: Arc<Breaker>,
        load: Arc<BackendLoad>,
    }

    impl Guarded for Limited {
        fn breaker(&self) -> &Arc<Breaker> {
            &self.breaker
        }
        fn load(&self) -> Option<&Arc<BackendLoad>> {
            Some(&self.load)
        }
    }

    fn limited(limit: u32, backends: usize) -> (RoundRobin, Vec<Limited>) {
        let (rr, _) = rotation(backends);
        let room = Arc::new(crate::load::WaitingRoom::default());
        let limited = rr
            .breakers
            .into_iter()
            .map(|breaker| Limited {
                breaker,
                load: Arc::new(BackendLoad::new(
                    crate::load::ConcurrencyLimit::Fixed(limit),
                    room.clone(),
                )),
            })
            .collect();
        (rr.rr, limited)
    }

    #[test]
    fn a_full_backend_is_skipped_and_when_all_are_full_the_answer_says_so() {
        let (rr, backends) = limited(1, 2);
        let policy = PickPolicy::default();
        let first = rr.pick(&backends, rr.ticket(), &[], &policy).unwrap();
        assert_eq!(first.index, 0);
        // Backend 1's turn: it has room.
        let second = rr.pick(&backends, rr.ticket(), &[], &policy).unwrap();
        assert_eq!(second.index, 1);
        let third = rr.pick(&backends, rr.ticket(), &[], &policy);
        assert_eq!(third.err(), Some(NoPick::Full));
        // Being full is not failing.
        assert_eq!(backends[0].breaker.state(), BreakerState::Closed);
        drop(first);
        // Backend 1's turn again, but only 0 has room.
        let fourth = rr.pick(&backends, rr.ticket(), &[], &policy).unwrap();
        assert_eq!(fourth.index, 0);
        assert_eq!(backends[1].load.times_full(), 2);
        // Full and Open: nothing to wait for.
        drop(fourth);
        drop(second);
        let a = rr.pick(&backends, 0, &[], &policy).unwrap();
        backends[1].breaker.apply(ManualAction::Open);
        let b = rr.pick(&backends, 0, &[], &policy);
        assert_eq!(
            b.err(),
            Some(NoPick::Full),
            "0 is full, and will take one again"
        );
        backends[0].breaker.apply(ManualAction::Open);
        let c = rr.pick(&backends, 0, &[], &policy);
        assert_eq!(c.err(), Some(NoPick::Unavailable));
        drop(a);
    }

    #[test]
    fn least_requests_goes_where_fewest_are_in_flight_ties_in_rotation_order() {
        let (rr, backends) = limited(100, 3);
        let policy = PickPolicy {
            picking: Picking::LeastRequests,
            ..PickPolicy::default()
        };
        // All idle: plain rotation.
        let idle: Vec<_> = (0..3)
            .map(|_| {
                let pick = rr.pick(&backends, rr.ticket(), &[], &policy).unwrap();
                pick.index
            })
            .collect();
        assert_eq!(idle, [0, 1, 2]);
        // Backend 0 holds three, backend 1 one: new requests go to 2, then 1 and 2 in turn.
        let held: Vec<_> = [0, 0, 0, 1]
            .iter()
            .map(|&i| backends[i].load.try_take().unwrap())
            .collect();
        let busy: Vec<_> = (0..4)
            .map(|_| rr.pick(&backends, rr.ticket(), &[], &policy).unwrap())
            .collect();
        assert!(busy.iter().all(|p| p.index != 0), "{busy:?}");
        let in_flight: Vec<_> = backends.iter().map(|b| b.load.in_flight()).collect();
        assert_eq!(in_flight.iter().sum::<u32>(), 8);
        assert!(in_flight[1].abs_diff(in_flight[2]) <= 1, "{in_flight:?}");
        // A failover still never returns a tried backend, and the breakers still filter.
        backends[2].breaker.apply(ManualAction::Open);
        let failover = rr.pick(&backends, rr.ticket(), &[1], &policy).unwrap();
        assert_eq!(failover.index, 0);
        drop(held);
    }

    #[test]
    fn peak_ewma_avoids_the_slow_backend() {
        let (rr, backends) = limited(100, 2);
        backends[0]
            .load
            .try_take()
            .unwrap()
            .finish(Duration::from_millis(2000), std::time::Instant::now());
        backends[1]
            .load
            .try_take()
            .unwrap()
            .finish(Duration::from_millis(2), std::time::Instant::now());
        let policy = PickPolicy {
            picking: Picking::PeakEwma,
            ..PickPolicy::default()
        };
        let picks: Vec<_> = (0..10)
            .map(|_| rr.pick(&backends, rr.ticket(), &[], &policy).unwrap())
            .collect();
        assert!(picks.iter().all(|p| p.index == 1));
    }
}
