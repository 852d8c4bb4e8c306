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
//! The selector knows breakers but nothing of HTTP: it walks any list of things that have a
//! breaker (a service's backends), and returns an index into it and the permit to settle once
//! the attempt is over. It keeps only the counter; the list is the service's.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::breaker::{Breaker, BreakerState, Permit};

/// The backend chosen for one attempt.
#[derive(Debug)]
pub struct Pick {
    /// Its position in the service's backend list.
    pub index: usize,
    /// The breaker's leave to send the attempt; settle it with the attempt's outcome.
    pub permit: Permit,
}

/// Something guarded by a breaker: what the selector walks over.
pub trait Guarded {
    /// The breaker that admits requests to it.
    fn breaker(&self) -> &Arc<Breaker>;
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

    /// The first of `backends` from the ticket's place on that is not in `tried` and whose
    /// breaker admits a request; `None` if there is none.
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
        slow_start: Option<Duration>,
    ) -> Option<Pick> {
        let len = backends.len();
        if len == 0 {
            return None;
        }
        let start = ticket % len;
        let mut now = None;
        let mut warming = None;
        for step in 0..len {
            let index = (start + step) % len;
            if tried.contains(&index) {
                continue;
            }
            let breaker = backends[index].breaker();
            if let Some(permit) = breaker.try_acquire_at(&mut now) {
                if slow_start.is_some_and(|d| !breaker.admits_while_warming(d, ticket)) {
                    // Dropping a Closed breaker's permit is neutral.
                    warming.get_or_insert(index);
                    continue;
                }
                // Skipping a warming backend is its slow start, not an outage: the rotation
                // stays where it is, so its turns keep coming.
                if step > 0 && tried.is_empty() && warming.is_none() {
                    self.next.fetch_add(step, Ordering::Relaxed);
                }
                return Some(Pick { index, permit });
            }
        }
        let index = warming?;
        let permit = backends[index].breaker().try_acquire_at(&mut now)?;
        Some(Pick { index, permit })
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
            self.rr.pick(&self.breakers, ticket, tried, None)
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
                    .pick(&rr.breakers, rr.ticket(), &[], Some(warm_up))
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
            let pick = rr.rr.pick(
                &rr.breakers,
                rr.ticket(),
                &[],
                Some(Duration::from_secs(60)),
            );
            assert_eq!(pick.map(|p| p.index), Some(1));
        }
    }

    #[test]
    fn an_empty_rotation_picks_nothing() {
        let rr = RoundRobin::default();
        let none: [Arc<Breaker>; 0] = [];
        assert!(rr.pick(&none, rr.ticket(), &[], None).is_none());
        assert_eq!(RoundRobin::retry_after(&none), Duration::ZERO);
    }
}
