//! The per-request hot path makes no heap allocation: route parsing, the selector's pick with
//! its breaker admission and its backend's slot (the load every backend has tracked, with and
//! without a limit), recording the outcome (also into a failure-rate window) and the slot's
//! latency sample, and a rate limit's admission.

#[path = "common/counting_alloc.rs"]
mod counting_alloc;

use std::sync::Arc;
use std::time::Duration;

use counting_alloc::{count_allocations, CountingAllocator};
use gateway::breaker::{Breaker, BreakerSettings, IgnoreTransitions, Outcome};
use gateway::clock::MonotonicClock;
use gateway::failure_rate::FailureRate;
use gateway::load::{BackendLoad, ConcurrencyLimit, WaitingRoom};
use gateway::rate_limit::{RateLimitSettings, RateLimits};
use gateway::routing::parse_proxy_path;
use gateway::selector::{Guarded, PickPolicy, RoundRobin};

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// A service's rotation and its backends' breakers.
fn rotation(backends: usize) -> (RoundRobin, Vec<Arc<Breaker>>) {
    let clock = Arc::new(MonotonicClock::new());
    let breakers = (0..backends)
        .map(|i| {
            Arc::new(Breaker::new(
                format!("http://b{i}:1"),
                BreakerSettings::default(),
                clock.clone(),
                Arc::new(IgnoreTransitions),
            ))
        })
        .collect();
    (RoundRobin::default(), breakers)
}

#[test]
fn picking_a_backend_and_recording_the_outcome_allocate_nothing() {
    for backends in [2, 10, 100] {
        let (rr, breakers) = rotation(backends);
        let allocations = count_allocations(|| {
            for _ in 0..10_000 {
                let pick = rr
                    .pick(&breakers, rr.ticket(), &[], &PickPolicy::default())
                    .expect("a backend");
                pick.permit.record(Outcome::Success);
            }
        });
        assert_eq!(allocations, 0, "{backends} backends");
    }
}

#[test]
fn skipping_open_backends_allocates_nothing() {
    let (rr, breakers) = rotation(100);
    for breaker in &breakers[..99] {
        for _ in 0..3 {
            breaker.try_acquire().unwrap().record(Outcome::Failure);
        }
    }
    let allocations = count_allocations(|| {
        for _ in 0..1_000 {
            let pick = rr
                .pick(&breakers, rr.ticket(), &[], &PickPolicy::default())
                .expect("the healthy one");
            assert_eq!(pick.index, 99);
            pick.permit.record(Outcome::Success);
        }
    });
    assert_eq!(allocations, 0);
}

#[test]
fn failure_rate_bookkeeping_allocates_nothing() {
    let breaker = Arc::new(Breaker::new(
        "http://rated:1",
        BreakerSettings {
            failure_threshold: u32::MAX,
            failure_rate: Some(FailureRate {
                threshold_percent: 90,
                window: Duration::from_secs(30),
                min_requests: 20,
            }),
            ..BreakerSettings::default()
        },
        Arc::new(MonotonicClock::new()),
        Arc::new(IgnoreTransitions),
    ));
    let allocations = count_allocations(|| {
        for i in 0..10_000u32 {
            let outcome = if i.is_multiple_of(10) {
                Outcome::Failure
            } else {
                Outcome::Success
            };
            breaker.try_acquire().expect("closed").record(outcome);
        }
    });
    assert_eq!(allocations, 0);
}

/// A backend as a service holds it: its breaker and its load.
struct Tracked {
    breaker: Arc<Breaker>,
    load: Arc<BackendLoad>,
}

impl Guarded for Tracked {
    fn breaker(&self) -> &Arc<Breaker> {
        &self.breaker
    }
    fn load(&self) -> Option<&Arc<BackendLoad>> {
        Some(&self.load)
    }
}

#[test]
fn a_pick_with_its_slot_and_latency_sample_allocates_nothing() {
    for limit in [
        ConcurrencyLimit::Unlimited,
        ConcurrencyLimit::Fixed(100),
        ConcurrencyLimit::Adaptive { min: 10, max: 100 },
    ] {
        let (rr, breakers) = rotation(10);
        let room = Arc::new(WaitingRoom::default());
        let backends: Vec<Tracked> = breakers
            .into_iter()
            .map(|breaker| Tracked {
                breaker,
                load: Arc::new(BackendLoad::new(limit, room.clone())),
            })
            .collect();
        let allocations = count_allocations(|| {
            for _ in 0..10_000 {
                let pick = rr
                    .pick(&backends, rr.ticket(), &[], &PickPolicy::default())
                    .expect("a backend");
                pick.permit.record(Outcome::Success);
                pick.slot
                    .expect("tracked")
                    .finish(Duration::from_micros(300), std::time::Instant::now());
            }
        });
        assert_eq!(allocations, 0, "{limit:?}");
    }
}

#[test]
fn admitting_a_request_under_rate_limits_allocates_nothing() {
    let limit = Some(RateLimitSettings {
        requests_per_second: 1_000_000,
        burst: 1_000_000,
    });
    let limits = RateLimits::new(limit, limit);
    let client = Some("10.1.2.3".parse().unwrap());
    let allocations = count_allocations(|| {
        for _ in 0..10_000 {
            assert!(limits.admit(client).is_ok());
        }
    });
    assert_eq!(allocations, 0);
}

#[test]
fn parsing_a_route_allocates_nothing() {
    let allocations = count_allocations(|| {
        for _ in 0..1_000 {
            let route = parse_proxy_path(std::hint::black_box("/v1/proxy/product/items/42"));
            assert_eq!(route.map(|r| r.service), Ok("product"));
        }
    });
    assert_eq!(allocations, 0);
}

#[test]
fn the_counter_does_count() {
    let allocations = count_allocations(|| drop(std::hint::black_box(vec![1u8; 64])));
    assert_eq!(allocations, 1);
}
