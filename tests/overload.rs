//! Overload: a backend that gets slow rather than failing, and clients that send too much.
//! Concurrency limits keep a slow replica from holding more than its share, the queue holds
//! what waits for a slot (bounded in size and time), latency-aware picking steers around the
//! slow one, and rate limits hold a flood at the limit. None of it counts against a breaker.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::*;

/// One response a load client saw: status, the mock port that served it, how long it took.
#[derive(Debug, Clone, Copy)]
struct Seen {
    status: u16,
    port: Option<u16>,
    took: Duration,
}

/// `clients` keep-alive clients GET `path` in a loop for `run` (each finishes its request in
/// flight); every response, in order.
fn steady_load(port: u16, clients: usize, path: &str, run: Duration) -> Vec<Seen> {
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let handles: Vec<_> = (0..clients)
        .map(|_| {
            let (stop, seen, path) = (stop.clone(), seen.clone(), path.to_owned());
            thread::spawn(move || {
                let mut client = Client::new(port);
                while !stop.load(Ordering::SeqCst) {
                    let started = Instant::now();
                    let response = client.send("GET", &path, b"");
                    let (status, port) = response.map_or((0, None), |r| (r.status, r.served_by()));
                    let took = started.elapsed();
                    seen.lock().unwrap().push(Seen { status, port, took });
                }
            })
        })
        .collect();
    thread::sleep(run);
    stop.store(true, Ordering::SeqCst);
    for handle in handles {
        handle.join().expect("load client");
    }
    Arc::try_unwrap(seen).unwrap().into_inner().unwrap()
}

/// The `q`-quantile of the durations (nearest rank).
fn quantile(mut took: Vec<Duration>, q: f64) -> Duration {
    assert!(!took.is_empty());
    took.sort();
    let rank = ((took.len() as f64 * q).ceil() as usize).clamp(1, took.len());
    took[rank - 1]
}

/// The most requests `mock` was ever answering at once, as its next answer says.
fn peak_in_flight(mock: &Mock) -> u64 {
    let response = request(mock.port, "GET", "/", &[], b"");
    response
        .header("x-mock-peak-in-flight")
        .and_then(|v| v.parse().ok())
        .expect("the mock's peak")
}

fn backend_series(name: &str, service: &str, mock: &Mock, more: &str) -> String {
    format!(
        r#"{name}{{service="{service}",backend="{}"{more}}}"#,
        mock.url()
    )
}

/// No attempt at `mock` ended as anything but a success, and its breaker is Closed.
fn assert_never_blamed(gateway: &Gateway, service: &str, mock: &Mock) {
    for outcome in ["connect_error", "timeout", "http_5xx", "broken_response"] {
        let series = backend_series(
            "gateway_upstream_attempts_total",
            service,
            mock,
            &format!(r#",outcome="{outcome}""#),
        );
        assert_eq!(gateway.metric(&series), Some(0.0), "{series}");
    }
    let closed = backend_series("gateway_breaker_state", service, mock, r#",state="closed""#);
    assert_eq!(gateway.metric(&closed), Some(1.0), "{closed}");
}

#[test]
fn a_slow_replica_holds_no_more_than_its_limit_and_the_fast_ones_clients_see_no_added_latency() {
    let fast = Mock::start(&["--delay-ms", "2"]);
    let slow = Mock::start(&["--delay-ms", "2000"]);
    let limit = 8;
    let gateway = Gateway::start(
        &format!(
            "product:\n  backends: [\"{}\", \"{}\"]\n  concurrency_limit: {limit}\n  \
             total_timeout: 10s\n",
            fast.url(),
            slow.url()
        ),
        "  status_log: false\n",
    );
    // Twelve clients for three seconds: without the limit, every client's every other request
    // would wait 2 s on the slow replica and it would hold all twelve. With it, the slow one
    // holds eight and the fast one the rest (never more than eight: neither is ever full
    // when its turn comes to a request that could go nowhere else).
    let seen = steady_load(
        gateway.port,
        12,
        "/v1/proxy/product",
        Duration::from_secs(3),
    );
    let on = |port| seen.iter().filter(move |s| s.port == Some(port));
    let fast_took: Vec<Duration> = on(fast.port).map(|s| s.took).collect();
    let p99 = quantile(fast_took.clone(), 0.99);
    eprintln!(
        "slow replica limited to {limit}: {} requests, {} served by the fast replica (p99 {p99:?}), \
         {} by the slow one; statuses other than 200: {}",
        seen.len(),
        fast_took.len(),
        on(slow.port).count(),
        seen.iter().filter(|s| s.status != 200).count()
    );
    // Nothing was dropped that could have been served: the fast replica always had room.
    assert!(
        seen.iter().all(|s| s.status == 200),
        "{:?}",
        seen.iter().find(|s| s.status != 200)
    );
    assert!(fast_took.len() > 200, "{} fast requests", fast_took.len());
    // The slow one never held more than its limit (the backend's own count).
    assert!(peak_in_flight(&slow) <= limit, "{}", peak_in_flight(&slow));
    assert!(
        on(slow.port).count() as u64 <= 2 * limit,
        "{}",
        on(slow.port).count()
    );
    // The fast replica's clients see its own latency, not the slow one's.
    assert!(p99 < within(Duration::from_millis(300)), "p99 {p99:?}");
    // Its turns skipped as full were counted, and never as failures.
    let full = backend_series("gateway_upstream_limit_reached_total", "product", &slow, "");
    assert!(gateway.metric(&full).unwrap() > 0.0, "{full}");
    assert!(gateway.metric_reaches(
        &backend_series("gateway_upstream_in_flight", "product", &slow, ""),
        0.0
    ));
    assert_never_blamed(&gateway, "product", &slow);
    assert_eq!(
        gateway.metric(r#"gateway_service_overloaded_total{service="product"}"#),
        Some(0.0)
    );
}

#[test]
fn when_every_backend_is_full_a_request_waits_in_the_bounded_queue_or_gets_503_overloaded() {
    let backend = Mock::start(&["--delay-ms", "600"]);
    let gateway = Gateway::start(
        &format!(
            "queued:\n  backends: [\"{url}\"]\n  concurrency_limit: 1\n  queue_size: 1\n  \
             queue_timeout: 5s\n\
             hurried:\n  backends: [\"{url}\"]\n  concurrency_limit: 1\n  queue_size: 10\n  \
             queue_timeout: 100ms\n\
             unqueued:\n  backends: [\"{url}\"]\n  concurrency_limit: 1\n",
            url = backend.url()
        ),
        "  status_log: false\n",
    );
    // Three at once at a backend that takes one: one served, one waits its turn and is
    // served after it, the third finds the queue full and is refused at once.
    let started = Instant::now();
    let answers: Vec<(Response, Duration)> = simultaneous_gets(gateway.port, 3, "/v1/proxy/queued")
        .into_iter()
        .map(|h| {
            let response = h.join().unwrap().expect("an answer");
            (response, started.elapsed())
        })
        .collect();
    let mut statuses: Vec<u16> = answers.iter().map(|(r, _)| r.status).collect();
    statuses.sort();
    assert_eq!(statuses, [200, 200, 503], "{answers:?}");
    let (refused, _) = answers.iter().find(|(r, _)| r.status == 503).unwrap();
    assert!(
        refused.body.contains(r#""error":"overloaded""#),
        "{}",
        refused.body
    );
    assert!(
        refused.body.contains("its queue is full"),
        "{}",
        refused.body
    );
    assert_eq!(refused.header("retry-after"), Some("1"));
    let slowest = answers.iter().map(|(_, took)| *took).max().unwrap();
    assert!(
        slowest >= Duration::from_millis(1200),
        "the queued one waited: {slowest:?}"
    );
    assert_eq!(
        gateway.metric(r#"gateway_service_queued_total{service="queued"}"#),
        Some(1.0)
    );
    assert_eq!(
        gateway.metric(r#"gateway_service_overloaded_total{service="queued"}"#),
        Some(1.0)
    );

    // A queue_timeout shorter than the backend: the waiter gives up after it, and says so.
    let answers: Vec<Response> = simultaneous_gets(gateway.port, 2, "/v1/proxy/hurried")
        .into_iter()
        .map(|h| h.join().unwrap().expect("an answer"))
        .collect();
    let refused = answers
        .iter()
        .find(|r| r.status == 503)
        .expect("one waited too long");
    assert!(refused.body.contains("queue_timeout"), "{}", refused.body);
    assert!(answers.iter().any(|r| r.status == 200), "{answers:?}");

    // No queue: refused at once.
    let answers: Vec<(Response, ())> = simultaneous_gets(gateway.port, 2, "/v1/proxy/unqueued")
        .into_iter()
        .map(|h| (h.join().unwrap().expect("an answer"), ()))
        .collect();
    let statuses: Vec<u16> = answers.iter().map(|(r, _)| r.status).collect();
    assert!(
        statuses.contains(&200) && statuses.contains(&503),
        "{statuses:?}"
    );
    let (refused, _) = answers.iter().find(|(r, _)| r.status == 503).unwrap();
    assert!(
        refused.body.contains("queues no requests"),
        "{}",
        refused.body
    );
    // The backend was never blamed, and nothing waits any more.
    for service in ["queued", "hurried", "unqueued"] {
        assert_never_blamed(&gateway, service, &backend);
        assert!(gateway.metric_reaches(
            &format!(r#"gateway_service_queue_waiting{{service="{service}"}}"#),
            0.0
        ));
    }
}

#[test]
fn least_requests_and_peak_ewma_steer_new_requests_away_from_a_slow_replica() {
    let fast = Mock::start(&["--delay-ms", "2"]);
    let slow = Mock::start(&["--delay-ms", "1000"]);
    for picking in ["least_requests", "peak_ewma"] {
        let gateway = Gateway::start(
            &format!(
                "product:\n  backends: [\"{}\", \"{}\"]\n  load_balancing: {picking}\n",
                slow.url(),
                fast.url()
            ),
            "  status_log: false\n",
        );
        let seen = steady_load(gateway.port, 4, "/v1/proxy/product", Duration::from_secs(2));
        let slow_count = seen.iter().filter(|s| s.port == Some(slow.port)).count();
        let fast_count = seen.iter().filter(|s| s.port == Some(fast.port)).count();
        eprintln!("{picking}: {fast_count} to the fast replica, {slow_count} to the slow one");
        assert!(seen.iter().all(|s| s.status == 200));
        // Round-robin sends every client to the slow one every other request: the two would
        // serve about as many. Least-requests lets the slow one hold about half the clients
        // (a few requests a second), peak EWMA none once it has a sample.
        assert!(
            slow_count <= 8,
            "{picking}: {slow_count} to the slow replica"
        );
        assert!(
            fast_count > 20 * slow_count.max(1),
            "{picking}: {fast_count} to the fast replica, {slow_count} to the slow one"
        );
    }
}

#[test]
fn rate_limits_answer_429_with_retry_after_and_hold_a_flood_at_the_limit() {
    let backend = Mock::start(&[]);
    let gateway = Gateway::start(
        &format!(
            "per_client:\n  backends: [\"{url}\"]\n  \
             client_rate_limit: {{requests_per_second: 5, burst: 10}}\n\
             whole:\n  backends: [\"{url}\"]\n  rate_limit: {{requests_per_second: 50}}\n",
            url = backend.url()
        ),
        "  status_log: false\n",
    );
    // One client, thirty requests at once: its burst of ten, then 429s.
    let mut client = Client::new(gateway.port);
    let responses: Vec<Response> = (0..30)
        .map(|_| client.send("GET", "/v1/proxy/per_client", b"").unwrap())
        .collect();
    let admitted = responses.iter().filter(|r| r.status == 200).count();
    assert!((10..=11).contains(&admitted), "{admitted} admitted");
    let refused = responses.iter().find(|r| r.status == 429).expect("a 429");
    assert!(
        refused.body.contains(r#""error":"rate_limited""#),
        "{}",
        refused.body
    );
    assert!(refused.body.contains("this client"), "{}", refused.body);
    let retry_after: u64 = refused.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry_after), "{retry_after}");
    assert_eq!(
        gateway.metric(r#"gateway_service_client_rate_limited_total{service="per_client"}"#),
        Some((30 - admitted) as f64)
    );

    // A flood from eight clients for two seconds: the backend gets the limit's worth.
    let run = Duration::from_secs(2);
    let seen = steady_load(gateway.port, 8, "/v1/proxy/whole", run);
    let admitted = seen.iter().filter(|s| s.status == 200).count();
    let limited = seen.iter().filter(|s| s.status == 429).count();
    eprintln!(
        "flood: {} requests, {admitted} admitted, {limited} refused",
        seen.len()
    );
    assert_eq!(admitted + limited, seen.len(), "only 200s and 429s");
    // 50 per second with a burst of 50, over two seconds (and the tail of a window).
    assert!((50..=160).contains(&admitted), "{admitted} admitted");
    assert!(limited > admitted, "{limited} refused");
    assert!(gateway.metric_reaches(
        &backend_series(
            "gateway_upstream_attempts_total",
            "whole",
            &backend,
            r#",outcome="success""#
        ),
        admitted as f64
    ));
}

#[test]
fn an_adaptive_limit_shrinks_when_its_backend_slows_down_and_grows_back_when_it_recovers() {
    let mut backend = Mock::start(&["--delay-ms", "5"]);
    let gateway = Gateway::start(
        &format!(
            "adaptive:\n  backends: [\"{}\"]\n  concurrency_limit: adaptive\n  \
             adaptive_limit_max: 200\n  queue_size: 500\n  queue_timeout: 10s\n  \
             total_timeout: 20s\n  failure_threshold: 100000\n",
            backend.url()
        ),
        "  status_log: false\n",
    );
    let series = backend_series(
        "gateway_upstream_concurrency_limit",
        "adaptive",
        &backend,
        "",
    );
    let limit = || gateway.metric(&series).expect("an adaptive limit");
    assert_eq!(limit(), 20.0, "where it starts");
    let load = BackgroundLoad::start(gateway.port, 40, "GET", "/v1/proxy/adaptive");
    // Forty clients at a 5 ms backend: asked for more than it has, latency steady, it grows.
    assert!(
        wait_until(DEADLINE, || limit() >= 30.0),
        "grew to {}",
        limit()
    );
    // The backend turns sixty times slower: within seconds the limit is a fraction of that.
    backend.restart(&["--delay-ms", "300"]);
    let slowed = Instant::now();
    assert!(
        wait_until(DEADLINE, || limit() <= 12.0),
        "shrank to {}",
        limit()
    );
    eprintln!(
        "adaptive limit down to {} {:?} after the slowdown",
        limit(),
        slowed.elapsed()
    );
    // It recovers: the limit grows again.
    backend.restart(&["--delay-ms", "5"]);
    assert!(
        wait_until(DEADLINE, || limit() >= 20.0),
        "regrew to {}",
        limit()
    );
    let report = load.finish();
    eprintln!(
        "adaptive: {} requests, statuses {:?}",
        report.total(),
        report.statuses
    );
}
