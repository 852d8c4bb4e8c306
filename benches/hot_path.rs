//! Micro-benchmarks of the per-request hot path: breaker admission and recording (also with
//! failure-rate ejection on), the
//! selector's pick over 2, 10 and 100 backends (alone, and with every core picking from the
//! same service at once), the same with each backend's load tracked (unlimited, limited,
//! least-requests, peak EWMA), a rate limit's admission, and route parsing.
//! `cargo bench --bench hot_path`.
//!
//! That the same paths make no heap allocation is asserted in `tests/allocations.rs`; this
//! benchmark prints the count too, with the same counting allocator.

#[path = "../tests/common/counting_alloc.rs"]
mod counting_alloc;

use std::hint::black_box;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use counting_alloc::{count_allocations, CountingAllocator};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use gateway::breaker::{Breaker, BreakerSettings, IgnoreTransitions, Outcome};
use gateway::clock::MonotonicClock;
use gateway::failure_rate::FailureRate;
use gateway::load::{BackendLoad, ConcurrencyLimit, Picking, WaitingRoom};
use gateway::rate_limit::{RateLimitSettings, RateLimits};
use gateway::routing::{parse_proxy_path, upstream_path_and_query};
use gateway::selector::{Guarded, PickPolicy, RoundRobin};

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

fn breaker(name: &str) -> Arc<Breaker> {
    Arc::new(Breaker::new(
        name,
        BreakerSettings::default(),
        Arc::new(MonotonicClock::new()),
        Arc::new(IgnoreTransitions),
    ))
}

/// A service's rotation and its backends' breakers.
struct Rotation {
    rr: RoundRobin,
    breakers: Vec<Arc<Breaker>>,
}

fn rotation(backends: usize) -> Rotation {
    Rotation {
        rr: RoundRobin::default(),
        breakers: (0..backends)
            .map(|i| breaker(&format!("http://b{i}:1")))
            .collect(),
    }
}

/// One request's worth of selection: ticket, pick (with breaker admission), record.
fn select_once(rotation: &Rotation) {
    let rr = &rotation.rr;
    let pick = rr
        .pick(&rotation.breakers, rr.ticket(), &[], &PickPolicy::default())
        .expect("a backend");
    black_box(pick.index);
    pick.permit.record(Outcome::Success);
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

fn tracked(backends: usize, limit: ConcurrencyLimit) -> Vec<Tracked> {
    let room = Arc::new(WaitingRoom::default());
    (0..backends)
        .map(|i| Tracked {
            breaker: breaker(&format!("http://b{i}:1")),
            load: Arc::new(BackendLoad::new(limit, room.clone())),
        })
        .collect()
}

/// One request's worth with loads tracked: pick, record, and the slot's latency sample.
fn select_tracked(rr: &RoundRobin, backends: &[Tracked], policy: &PickPolicy) {
    let pick = rr
        .pick(backends, rr.ticket(), &[], policy)
        .expect("a backend");
    black_box(pick.index);
    pick.permit.record(Outcome::Success);
    if let Some(slot) = pick.slot {
        slot.finish(Duration::from_micros(500), Instant::now());
    }
}

/// Every core picks `iters` times from the same service; returns the slowest thread's time.
fn contended(rr: &Rotation, iters: u64) -> Duration {
    let threads = thread::available_parallelism().map_or(2, |n| n.get());
    let barrier = Barrier::new(threads);
    thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    barrier.wait();
                    let started = Instant::now();
                    for _ in 0..iters {
                        select_once(rr);
                    }
                    started.elapsed()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("picker"))
            .max()
            .unwrap_or_default()
    })
}

fn breaker_benches(c: &mut Criterion) {
    let closed = breaker("http://closed:1");
    c.bench_function("breaker/admit+record, closed", |b| {
        b.iter(|| {
            black_box(&closed)
                .try_acquire()
                .expect("closed")
                .record(Outcome::Success)
        })
    });
    // With failure-rate ejection on: each outcome also lands in its second's bucket, and a
    // failure sums the window (30 buckets). A success, then one failure in ten.
    let rated = Arc::new(Breaker::new(
        "http://rated:1",
        BreakerSettings {
            failure_threshold: u32::MAX,
            failure_rate: Some(FailureRate {
                threshold_percent: 50,
                window: Duration::from_secs(30),
                min_requests: 20,
            }),
            ..BreakerSettings::default()
        },
        Arc::new(MonotonicClock::new()),
        Arc::new(IgnoreTransitions),
    ));
    c.bench_function("breaker/admit+record, closed, failure rate on", |b| {
        b.iter(|| {
            black_box(&rated)
                .try_acquire()
                .expect("closed")
                .record(Outcome::Success)
        })
    });
    let mut n = 0u32;
    c.bench_function(
        "breaker/admit+record, failure rate on, 1 failure in 10",
        |b| {
            b.iter(|| {
                n = n.wrapping_add(1);
                let outcome = if n.is_multiple_of(10) {
                    Outcome::Failure
                } else {
                    Outcome::Success
                };
                black_box(&rated)
                    .try_acquire()
                    .expect("closed")
                    .record(outcome)
            })
        },
    );
    let open = breaker("http://open:1");
    for _ in 0..3 {
        open.try_acquire().unwrap().record(Outcome::Failure);
    }
    c.bench_function("breaker/refuse, open", |b| {
        b.iter(|| black_box(&open).try_acquire().is_none())
    });
}

fn selector_benches(c: &mut Criterion) {
    let mut group = c.benchmark_group("selector/pick+record");
    for backends in [2, 10, 100] {
        let rr = rotation(backends);
        let allocations = count_allocations(|| (0..10_000).for_each(|_| select_once(&rr)));
        println!(
            "selector with {backends} backends: {allocations} heap allocations in 10000 picks"
        );
        group.bench_with_input(BenchmarkId::new("uncontended", backends), &rr, |b, rr| {
            b.iter(|| select_once(rr))
        });
        group.bench_with_input(BenchmarkId::new("all cores", backends), &rr, |b, rr| {
            b.iter_custom(|iters| contended(rr, iters))
        });
    }
    let rr = rotation(100);
    for breaker in &rr.breakers[..99] {
        for _ in 0..3 {
            breaker.try_acquire().unwrap().record(Outcome::Failure);
        }
    }
    group.bench_function("uncontended/100, 99 open", |b| b.iter(|| select_once(&rr)));
    group.finish();

    // The same with each backend's load tracked, as the gateway's backends always are.
    let mut group = c.benchmark_group("selector/pick+record, load tracked");
    for (name, limit, picking) in [
        (
            "unlimited",
            ConcurrencyLimit::Unlimited,
            Picking::RoundRobin,
        ),
        (
            "limited",
            ConcurrencyLimit::Fixed(1000),
            Picking::RoundRobin,
        ),
        (
            "adaptive",
            ConcurrencyLimit::Adaptive {
                min: 100,
                max: 1000,
            },
            Picking::RoundRobin,
        ),
        (
            "least_requests",
            ConcurrencyLimit::Unlimited,
            Picking::LeastRequests,
        ),
        ("peak_ewma", ConcurrencyLimit::Unlimited, Picking::PeakEwma),
    ] {
        for count in [2, 10] {
            let (rr, backends) = (RoundRobin::default(), tracked(count, limit));
            let policy = PickPolicy {
                picking,
                slow_start: None,
            };
            let allocations = count_allocations(|| {
                (0..10_000).for_each(|_| select_tracked(&rr, &backends, &policy))
            });
            println!("{name}, {count} backends: {allocations} heap allocations in 10000 picks");
            group.bench_function(BenchmarkId::new(name, count), |b| {
                b.iter(|| select_tracked(&rr, &backends, &policy))
            });
        }
    }
    group.finish();

    let limit = |requests_per_second| {
        Some(RateLimitSettings {
            requests_per_second,
            burst: requests_per_second,
        })
    };
    let limits = RateLimits::new(limit(u32::MAX / 2), limit(u32::MAX / 2));
    let client = Some("10.1.2.3".parse().unwrap());
    c.bench_function("rate_limit/admit, service and client", |b| {
        b.iter(|| black_box(&limits).admit(black_box(client)))
    });
}

fn routing_benches(c: &mut Criterion) {
    c.bench_function("routing/parse path", |b| {
        b.iter(|| parse_proxy_path(black_box("/v1/proxy/product/items/42")))
    });
    c.bench_function("routing/build upstream path", |b| {
        b.iter(|| upstream_path_and_query(black_box("/api"), black_box("/items/42"), Some("q=1")))
    });
}

criterion_group!(benches, breaker_benches, selector_benches, routing_benches);
criterion_main!(benches);
