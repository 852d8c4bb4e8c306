//! Fault injection: backends that reset, close, hang or fail under bounded concurrent load.
//! While one replica is healthy, no idempotent request may fail.

mod common;

use std::io::{Read, Write};
use std::thread;
use std::time::{Duration, Instant};

use common::*;

/// Prints the scenario's row for the reliability table in docs/reliability.md (`--nocapture` shows it).
fn report(scenario: &str, gateway: &Gateway, load: &LoadReport) {
    eprintln!(
        "| {scenario} | {} | {} | {} | {} | {} |",
        load.total(),
        load.failures(),
        load.resends,
        gateway.log_count("failover: service"),
        gateway.log_count("[CIRCUIT] ")
    );
}

fn gateway_over(mocks: &[&Mock], defaults: &str) -> Gateway {
    let urls: Vec<String> = mocks.iter().map(|m| m.url()).collect();
    Gateway::start(
        &services_yaml("product", &urls),
        &format!("  status_log: false\n  defaults: {defaults}\n"),
    )
}

/// Sequential POSTs (or PATCHes) alternate between a healthy and a broken backend. Each one
/// sent to the broken backend may have reached it, so it is never replayed: a clean 502, three
/// times, until the breaker opens.
fn assert_posts_get_three_clean_502s(gateway: &Gateway) {
    assert_three_clean_502s(gateway, "POST");
}

fn assert_three_clean_502s(gateway: &Gateway, method: &str) {
    let statuses: Vec<u16> = (0..12)
        .map(|_| request(gateway.port, method, "/v1/proxy/product", &[], b"order=1").status)
        .collect();
    assert_eq!(
        gateway.metric(r#"gateway_service_retries_total{service="product"}"#),
        Some(0.0),
        "{method} is never replayed"
    );
    let bad_gateways = statuses.iter().filter(|&&s| s == 502).count();
    assert_eq!(bad_gateways, 3, "{statuses:?}");
    assert!(
        statuses.iter().all(|&s| s == 200 || s == 502),
        "{statuses:?}"
    );
}

/// `gateway.metric` for a series of service `product`'s backend `mock`, with `more` labels.
fn backend_metric(gateway: &Gateway, name: &str, mock: &Mock, more: &str) -> Option<f64> {
    gateway.metric(&format!(
        r#"{name}{{service="product",backend="{}"{more}}}"#,
        mock.url()
    ))
}

/// Sequential GETs alternate between a healthy and a broken backend: each one sent to the broken
/// backend fails over, so all twelve get 200, and the breaker counts exactly three failures of
/// the kind `outcome`, opening on the third, with exactly three retries.
fn assert_gets_fail_over_exactly_three_times(gateway: &Gateway, broken: &Mock, outcome: &str) {
    for _ in 0..12 {
        let response = gateway.get("/v1/proxy/product");
        assert_eq!(response.status, 200, "{response:?}");
    }
    let outcome_label = format!(r#",outcome="{outcome}""#);
    assert_eq!(
        backend_metric(
            gateway,
            "gateway_upstream_attempts_total",
            broken,
            &outcome_label
        ),
        Some(3.0),
        "{}",
        gateway.log()
    );
    assert_eq!(
        gateway.metric(r#"gateway_service_retries_total{service="product"}"#),
        Some(3.0)
    );
    assert_eq!(gateway.log_count("failover: service"), 3);
    assert_eq!(
        gateway.log_count(&format!("[CIRCUIT] {} OPEN", broken.url())),
        1
    );
}

#[test]
fn a_backend_that_resets_before_headers_costs_no_get() {
    let (healthy, resetting) = (Mock::start(&[]), Mock::start(&["--reset"]));
    let gateway = gateway_over(&[&healthy, &resetting], "{open_timeout: 1m}");
    let load = run_load(gateway.port, 16, 50, "GET", "/v1/proxy/product");
    assert_eq!(load.failures(), 0, "{load:?}\n{}", gateway.log());
    assert_eq!(
        load.resends, 0,
        "no connection closed under a client: {load:?}"
    );
    assert_eq!(load.count(200), 800);
    gateway.wait_for_log(&format!(
        "[CIRCUIT] {} OPEN (threshold reached)",
        resetting.url()
    ));
    report("resets before headers: GETs", &gateway, &load);

    let gateway = gateway_over(&[&healthy, &resetting], "{open_timeout: 1m}");
    assert_posts_get_three_clean_502s(&gateway);

    let gateway = gateway_over(&[&healthy, &resetting], "{open_timeout: 1m}");
    assert_three_clean_502s(&gateway, "PATCH");

    let gateway = gateway_over(&[&healthy, &resetting], "{open_timeout: 1m}");
    assert_gets_fail_over_exactly_three_times(&gateway, &resetting, "broken_response");
}

#[test]
fn a_post_fails_over_after_a_connect_failure() {
    // Nothing reached a backend that refused the connection, so any method may go elsewhere.
    let (healthy, mut down) = (Mock::start(&[]), Mock::start(&[]));
    down.stop();
    let gateway = gateway_over(&[&down, &healthy], "{open_timeout: 1m}");
    for _ in 0..6 {
        let response = request(gateway.port, "POST", "/v1/proxy/product", &[], b"order=1");
        assert_eq!(response.status, 200, "{response:?}");
        assert_eq!(response.served_by(), Some(healthy.port));
    }
    assert_eq!(
        backend_metric(
            &gateway,
            "gateway_upstream_attempts_total",
            &down,
            r#",outcome="connect_error""#
        ),
        Some(3.0)
    );
    assert_eq!(
        gateway.metric(r#"gateway_service_retries_total{service="product"}"#),
        Some(3.0)
    );
}

#[test]
fn a_stale_pooled_connection_is_retried_on_a_fresh_one_and_counted_as_nothing() {
    // The backend answers the first request on each connection and closes at the next: every
    // reuse of a pooled connection finds it gone stale, as when a backend's idle timeout and the
    // gateway's reuse cross. With a threshold of 1, a single failure counted would open it.
    let stale = Mock::start(&["--close-reused"]);
    let gateway = gateway_over(&[&stale], "{failure_threshold: 1, open_timeout: 1m}");
    // Each GET after the first finds the connection the one before it left in the pool closed,
    // and goes again on a fresh one: the backend's connection count says which served it.
    for connection in 1..=4 {
        let response = gateway.get("/v1/proxy/product");
        assert_eq!(response.status, 200, "{response:?}\n{}", gateway.log());
        assert_eq!(
            response.header("x-mock-connection"),
            Some(connection.to_string().as_str())
        );
    }
    let attempts = |outcome: &str| {
        let label = format!(r#",outcome="{outcome}""#);
        backend_metric(&gateway, "gateway_upstream_attempts_total", &stale, &label)
    };
    // Counted as nothing: four answers, no failover.
    assert!(wait_until(DEADLINE, || attempts("success") == Some(4.0)));
    assert_eq!(
        gateway.metric(r#"gateway_service_retries_total{service="product"}"#),
        Some(0.0)
    );
    assert_eq!(
        gateway.log_count("failover: service"),
        0,
        "{}",
        gateway.log()
    );
    // A POST on a stale connection may have been read: never replayed, a clean 502, and still
    // not the backend's fault.
    let post = request(gateway.port, "POST", "/v1/proxy/product", &[], b"order=1");
    assert_eq!(post.status, 502, "{post:?}\n{}", gateway.log());
    for outcome in ["connect_error", "timeout", "http_5xx", "broken_response"] {
        assert_eq!(attempts(outcome).unwrap_or(0.0), 0.0, "{outcome}");
    }
    assert_eq!(gateway.log_count("OPEN"), 0, "{}", gateway.log());
    assert_eq!(gateway.get("/v1/proxy/product").status, 200);
}

#[test]
fn sigint_stops_at_once_without_waiting_for_requests_in_flight() {
    let slow = Mock::start(&["--delay-ms", "5000"]);
    let mut gateway = gateway_over(&[&slow], "{}");
    let in_flight = simultaneous_gets(gateway.port, 1, "/v1/proxy/product");
    assert!(wait_until(DEADLINE, || gateway
        .metric(r#"gateway_service_requests_total{service="product"}"#)
        == Some(1.0)));
    let signalled = Instant::now();
    signal(gateway.pid(), "INT");
    assert!(gateway.wait_exit().is_some(), "exited");
    // The backend would answer 5 s after the request; SIGTERM would have waited for it.
    assert!(
        signalled.elapsed() < within(Duration::from_secs(2)),
        "{:?}",
        signalled.elapsed()
    );
    for handle in in_flight {
        assert!(
            handle.join().unwrap().is_err(),
            "the request in flight was cut"
        );
    }
}

#[test]
fn a_backend_that_closes_before_headers_costs_no_get_and_posts_get_502() {
    let (healthy, closing) = (Mock::start(&[]), Mock::start(&["--close"]));
    let gateway = gateway_over(&[&healthy, &closing], "{open_timeout: 1m}");
    assert_posts_get_three_clean_502s(&gateway);
    gateway.wait_for_log(&format!(
        "[CIRCUIT] {} OPEN (threshold reached)",
        closing.url()
    ));

    let gateway = gateway_over(&[&healthy, &closing], "{open_timeout: 1m}");
    let load = run_load(gateway.port, 16, 50, "GET", "/v1/proxy/product");
    assert_eq!(load.failures(), 0, "{load:?}");
    assert_eq!(
        load.resends, 0,
        "no connection closed under a client: {load:?}"
    );
    report("closes before headers: GETs", &gateway, &load);

    let gateway = gateway_over(&[&healthy, &closing], "{open_timeout: 1m}");
    assert_gets_fail_over_exactly_three_times(&gateway, &closing, "broken_response");
}

#[test]
fn a_hanging_backend_times_out_fails_over_and_opens() {
    let (healthy, hanging) = (Mock::start(&[]), Mock::start(&["--hang"]));
    let gateway = gateway_over(
        &[&healthy, &hanging],
        "{response_header_timeout: 300ms, open_timeout: 1m}",
    );
    let load = run_load(gateway.port, 8, 25, "GET", "/v1/proxy/product");
    assert_eq!(load.failures(), 0, "{load:?}");
    assert_eq!(
        load.resends, 0,
        "no connection closed under a client: {load:?}"
    );
    assert!(
        load.slowest < within(Duration::from_millis(300 * 2 + 500)),
        "no request waits much beyond one response-header timeout: {load:?}"
    );
    gateway.wait_for_log(&format!(
        "[CIRCUIT] {} OPEN (threshold reached)",
        hanging.url()
    ));
    report("hangs (300 ms response-header timeout)", &gateway, &load);
}

#[test]
fn an_exhausted_retry_budget_fails_requests_instead_of_retrying_them() {
    let (healthy, mut dead) = (Mock::start(&[]), Mock::start(&[]));
    dead.stop();
    let gateway = gateway_over(
        &[&healthy, &dead],
        "{retry_budget_percent: 0, retry_budget_min_per_second: 0, open_timeout: 1m}",
    );
    let statuses: Vec<u16> = (0..8)
        .map(|_| gateway.get("/v1/proxy/product").status)
        .collect();
    assert_eq!(statuses, [200, 502, 200, 502, 200, 502, 200, 200]);
    assert_eq!(
        gateway.log_count("retry budget of service \"product\" exhausted"),
        1,
        "logged once, not per request"
    );
}

#[test]
fn killing_and_restarting_a_backend_mid_load_costs_no_get() {
    let (a, mut b) = (Mock::start(&[]), Mock::start(&[]));
    let gateway = gateway_over(&[&a, &b], "{open_timeout: 300ms}");
    let load = BackgroundLoad::start(gateway.port, 32, "GET", "/v1/proxy/product");
    load.wait_for(500);
    b.stop();
    gateway.wait_for_log(&format!("[CIRCUIT] {} OPEN (threshold reached)", b.url()));
    load.wait_for(500);
    b.restart(&[]);
    gateway.wait_for_log(&format!("[CIRCUIT] {} HALF-OPEN (timeout passed)", b.url()));
    gateway.wait_for_log(&format!("[CIRCUIT] {} CLOSED (recovered)", b.url()));
    load.wait_for(500);
    let load = load.finish();
    report(
        "kill one of two backends mid-load, restart it",
        &gateway,
        &load,
    );
    assert_eq!(load.failures(), 0, "{load:?}\n{}", gateway.log());
    assert_eq!(
        load.resends, 0,
        "no connection closed under a client: {load:?}"
    );
    let after: Vec<u16> = (0..4)
        .map(|_| gateway.get("/v1/proxy/product").served_by().unwrap())
        .collect();
    assert!(
        after.contains(&a.port) && after.contains(&b.port),
        "{after:?}"
    );
}

#[test]
fn a_flapping_backend_is_followed_by_its_breaker_and_costs_no_get() {
    let (steady, mut flapping) = (Mock::start(&[]), Mock::start(&["--flap-ms", "400"]));
    let gateway = gateway_over(&[&steady, &flapping], "{open_timeout: 250ms}");
    let load = BackgroundLoad::start(gateway.port, 16, "GET", "/v1/proxy/product");
    let open = format!("[CIRCUIT] {} OPEN", flapping.url());
    let closed = format!("[CIRCUIT] {} CLOSED (recovered)", flapping.url());
    assert!(
        wait_until(DEADLINE, || gateway.log_count(&open) >= 3
            && gateway.log_count(&closed) >= 2),
        "the breaker did not follow the flapping; log:\n{}",
        gateway.log()
    );
    let load = load.finish();
    report("flapping backend (400 ms up, 400 ms down)", &gateway, &load);
    assert_eq!(load.failures(), 0, "{load:?}");
    assert_eq!(
        load.resends, 0,
        "no connection closed under a client: {load:?}"
    );

    // Not stuck: once the backend is steady again, it is back in the rotation within a
    // cooldown, its breaker Closed, and stays: strict alternation again.
    flapping.restart(&[]);
    assert!(
        wait_until(DEADLINE, || gateway.get("/v1/proxy/product").served_by()
            == Some(flapping.port)),
        "{}",
        gateway.log()
    );
    // That answer was the probe; the breaker closes as it is settled, just after it.
    assert!(wait_until(DEADLINE, || backend_metric(
        &gateway,
        "gateway_breaker_state",
        &flapping,
        r#",state="closed""#
    ) == Some(1.0)));
    let served: Vec<Option<u16>> = (0..10)
        .map(|_| gateway.get("/v1/proxy/product").served_by())
        .collect();
    for port in [steady.port, flapping.port] {
        assert_eq!(
            served.iter().filter(|&&p| p == Some(port)).count(),
            5,
            "{served:?}"
        );
    }
}

#[test]
fn with_every_backend_down_answers_are_fast_503s_until_one_returns() {
    let (mut a, mut b) = (Mock::start(&[]), Mock::start(&[]));
    let cooldown = Duration::from_secs(2);
    let gateway = gateway_over(&[&a, &b], "{open_timeout: 2s}");
    a.stop();
    b.stop();
    assert!(wait_until(DEADLINE, || gateway
        .get("/v1/proxy/product")
        .status
        == 503));
    let tripped = Instant::now();
    let load = run_load(gateway.port, 8, 25, "GET", "/v1/proxy/product");
    assert!(
        tripped.elapsed() < cooldown,
        "the load outlived the cooldown"
    );
    assert_eq!(load.count(503), load.total(), "{load:?}");
    assert!(
        load.slowest < within(Duration::from_millis(500)),
        "fast: {load:?}"
    );
    let response = gateway.get("/v1/proxy/product");
    assert!(response.header("retry-after").is_some());
    report("all backends down", &gateway, &load);

    a.restart(&[]);
    let restarted = Instant::now();
    assert!(wait_until(DEADLINE, || gateway
        .get("/v1/proxy/product")
        .status
        == 200));
    assert!(
        restarted.elapsed() < within(cooldown + Duration::from_millis(500)),
        "200s resume within one cooldown: {:?}",
        restarted.elapsed()
    );
}

#[test]
fn sigterm_lets_in_flight_requests_finish_then_exits_0() {
    let slow = Mock::start(&["--delay-ms", "800"]);
    let mut gateway = gateway_over(&[&slow], "{}");
    let port = gateway.port;
    let in_flight = simultaneous_gets(port, 16, "/v1/proxy/product");
    // The backend takes 800 ms: the signal goes once all 16 have been routed to it, and they
    // are done well inside the test conf's 1 s grace period.
    assert!(wait_until(DEADLINE, || gateway
        .metric(r#"gateway_service_requests_total{service="product"}"#)
        == Some(16.0)));
    signal(gateway.pid(), "TERM");

    let mut load = LoadReport::default();
    for handle in in_flight {
        let response = handle.join().unwrap();
        assert!(
            response.as_ref().is_ok_and(|r| r.status == 200),
            "an in-flight request was cut: {response:?}"
        );
        *load.statuses.entry(200).or_default() += 1;
    }
    // New connections are refused once the listener is closed, never accepted and dropped.
    assert!(wait_until(DEADLINE, || {
        match std::net::TcpStream::connect(("127.0.0.1", port)) {
            Err(e) => e.kind() == std::io::ErrorKind::ConnectionRefused,
            Ok(_) => false,
        }
    }));
    assert_eq!(gateway.wait_exit(), Some(0));
    report("SIGTERM with requests in flight", &gateway, &load);
}

#[test]
fn idle_keep_alive_connections_are_closed_as_soon_as_shutdown_begins() {
    let backend = Mock::start(&[]);
    let mut gateway = gateway_over(&[&backend], "{}");
    // A connection that has served a request and waits for the next: closed at SIGTERM, not
    // at the end of the grace period or of its keep-alive time, so its client moves on.
    let mut client = Client::new(gateway.port);
    assert_eq!(
        client.send("GET", "/v1/proxy/product", b"").unwrap().status,
        200
    );
    let mut idle = client.take_connection().expect("kept alive");
    signal(gateway.pid(), "TERM");
    let started = Instant::now();
    assert_eq!(idle.read(&mut [0; 1]).unwrap(), 0, "closed by the gateway");
    assert!(
        started.elapsed() < within(Duration::from_millis(900)),
        "before the 1 s grace period ends"
    );
    assert_eq!(gateway.wait_exit(), Some(0));
}

#[test]
fn at_the_end_of_a_cooldown_exactly_one_of_100_concurrent_requests_probes() {
    let (a, mut b) = (Mock::start(&[]), Mock::start(&[]));
    // The cooldown is also the probe's lease: long enough that all 100 requests arrive
    // within it on a loaded machine, or a second probe would be due.
    let gateway = gateway_over(&[&a, &b], "{open_timeout: 1s}");
    b.stop();
    let open = format!("[CIRCUIT] {} OPEN (threshold reached)", b.url());
    assert!(wait_until(DEADLINE, || {
        assert_eq!(gateway.get("/v1/proxy/product").status, 200);
        gateway.log().contains(&open)
    }));
    // The recovering backend is slow, so the probe is still out while the others arrive.
    b.restart(&["--delay-ms", "1500"]);
    thread::sleep(Duration::from_millis(1100));

    let handles = simultaneous_gets(gateway.port, 100, "/v1/proxy/product");
    let mut load = LoadReport::default();
    let mut probes = 0;
    for handle in handles {
        let response = handle.join().unwrap();
        probes += usize::from(
            response
                .as_ref()
                .is_ok_and(|r| r.served_by() == Some(b.port)),
        );
        load.add(response, Duration::ZERO);
    }
    report(
        "cooldown ends under 100 concurrent requests",
        &gateway,
        &load,
    );
    assert_eq!(load.failures(), 0, "{load:?}");
    assert_eq!(
        load.resends, 0,
        "no connection closed under a client: {load:?}"
    );
    assert_eq!(
        probes, 1,
        "exactly one request reaches the recovering backend"
    );
    assert_eq!(
        gateway.log_count(&format!("[CIRCUIT] {} HALF-OPEN", b.url())),
        1
    );
    gateway.wait_for_log(&format!("[CIRCUIT] {} CLOSED (recovered)", b.url()));
}

#[test]
fn a_graceful_upgrade_under_load_fails_no_request() {
    let mock = Mock::start(&[]);
    let mut old = Gateway::start(&services_yaml("product", &[mock.url()]), "");
    let conf = old.dir.path().join("gateway.yaml");
    let load = BackgroundLoad::start(old.port, 8, "GET", "/v1/proxy/product");
    load.wait_for(200);

    let new = Gateway::spawn(
        TempDir::new(),
        old.port,
        &["-u", "-c", conf.to_str().unwrap()],
    );
    // The new process binds the upgrade socket, then waits for the listener.
    thread::sleep(Duration::from_millis(300));
    signal(old.pid(), "QUIT");
    new.wait_for_log("Bootstrap done");
    load.wait_for(200);
    assert_eq!(old.wait_exit(), Some(0), "the old process exits cleanly");
    load.wait_for(200);
    let load = load.finish();
    report("graceful upgrade (-u + SIGQUIT) under load", &new, &load);
    assert_eq!(
        load.failures(),
        0,
        "{load:?}\nold:\n{}\nnew:\n{}",
        old.log(),
        new.log()
    );
    // The old process closes each idle keep-alive connection once as it hands over: a client
    // resends at most once, before any response byte, as browsers and curl do.
    assert!(load.resends <= 8, "{load:?}");
}

#[test]
fn the_total_timeout_bounds_the_wait_across_failovers() {
    let (first, second) = (Mock::start(&["--hang"]), Mock::start(&["--hang"]));
    let gateway = gateway_over(
        &[&first, &second],
        "{read_timeout: 250ms, total_timeout: 300ms, open_timeout: 1m}",
    );
    let started = Instant::now();
    let response = gateway.get("/v1/proxy/product");
    let took = started.elapsed();
    assert_eq!(response.status, 504, "{response:?}");
    assert!(response.body.contains("\"error\":\"gateway_timeout\""));
    // 250 ms on the first backend, then only the 50 ms left of the total on the second
    // (uncapped, the second attempt alone would take another 250 ms).
    assert_eq!(
        gateway.log_count("failover: service"),
        1,
        "{}",
        gateway.log()
    );
    assert_eq!(
        gateway.log_count("retry: true"),
        0,
        "one line of the gateway's per failover, none of Pingora's"
    );
    assert!(
        took >= Duration::from_millis(290) && took < within(Duration::from_millis(450)),
        "{took:?}"
    );
}

#[test]
fn a_body_still_streaming_when_the_total_timeout_ends_is_cut_right_then() {
    // The body's next part is a second away, well within the read timeout: the total timeout
    // cuts the wait for it, not the arrival of the part.
    let slow = Mock::start(&["--slow-body-ms", "1000"]);
    let gateway = gateway_over(&[&slow], "{read_timeout: 5s, total_timeout: 300ms}");
    let took = get_a_cut_body(&gateway, &slow);
    assert!(took < within(Duration::from_millis(300 + 250)), "{took:?}");
}

/// GETs a body that `mock` streams slowly and the gateway cuts: the response is the `200`
/// with the part of the body sent before the stall, and then the connection closes. Returns
/// how long it took.
fn get_a_cut_body(gateway: &Gateway, mock: &Mock) -> Duration {
    let started = Instant::now();
    let response = raw_get(gateway.port, "/v1/proxy/product").expect("the cut response");
    let took = started.elapsed();
    assert_cut(&response, mock);
    took
}

/// `response` is `mock`'s `200` with a strict, non-empty prefix of its body: what was sent
/// before the stall.
fn assert_cut(response: &Response, mock: &Mock) {
    let full = format!("Hello from {}\n", mock.port);
    assert_eq!(response.status, 200, "{response:?}");
    assert!(
        !response.body.is_empty()
            && response.body.len() < full.len()
            && full.starts_with(&response.body),
        "a strict prefix of the body: {response:?}"
    );
}

#[test]
fn a_response_header_may_take_longer_than_the_read_timeout_within_its_own() {
    let slow = Mock::start(&["--delay-ms", "500"]);
    let gateway = gateway_over(
        &[&slow],
        "{response_header_timeout: 3s, read_timeout: 150ms, open_timeout: 1m}",
    );
    let response = gateway.get("/v1/proxy/product");
    assert_eq!(response.status, 200, "{response:?}");
}

#[test]
fn a_response_header_trickling_in_is_cut_at_its_timeout_and_fails_over() {
    // A line of the head every 150 ms: no single read waits long, the whole head takes
    // seconds. The header timeout bounds the whole head, not each read.
    let (trickling, healthy) = (Mock::start(&["--slow-head-ms", "150"]), Mock::start(&[]));
    let gateway = gateway_over(
        &[&trickling, &healthy],
        "{response_header_timeout: 300ms, read_timeout: 1s, open_timeout: 1m}",
    );
    for _ in 0..6 {
        let started = Instant::now();
        let response = gateway.get("/v1/proxy/product");
        let took = started.elapsed();
        assert_eq!(response.served_by(), Some(healthy.port), "{response:?}");
        assert!(took < within(Duration::from_millis(300 + 500)), "{took:?}");
    }
    gateway.wait_for_log(&format!(
        "[CIRCUIT] {} OPEN (threshold reached)",
        trickling.url()
    ));
    // Exactly one timeout per request that tried it, and the breaker opened once, on the third.
    assert_eq!(
        backend_metric(
            &gateway,
            "gateway_upstream_attempts_total",
            &trickling,
            r#",outcome="timeout""#
        ),
        Some(3.0)
    );
    assert_eq!(
        gateway.metric(r#"gateway_service_retries_total{service="product"}"#),
        Some(3.0)
    );
    assert_eq!(
        gateway.log_count(&format!("[CIRCUIT] {} OPEN", trickling.url())),
        1
    );
}

#[test]
fn a_body_stalling_longer_than_the_read_timeout_is_cut_counted_once_and_never_retried() {
    // The stalling backend's header and first part reached the client before the stall: that
    // response is the client's now, cut, and is not retried on the healthy backend beside it.
    let (stalling, healthy) = (Mock::start(&["--slow-body-ms", "1000"]), Mock::start(&[]));
    let gateway = gateway_over(
        &[&stalling, &healthy],
        "{response_header_timeout: 5s, read_timeout: 200ms, open_timeout: 1m}",
    );
    let (mut cut, mut whole) = (0, 0);
    // Six alternate between the two; the third cut opens the breaker after the last of them.
    for _ in 0..6 {
        let started = Instant::now();
        let response =
            raw_get(gateway.port, "/v1/proxy/product").expect("a response, whole or cut");
        if response.served_by() == Some(healthy.port) {
            assert_eq!(response.body, format!("Hello from {}\n", healthy.port));
            whole += 1;
        } else {
            assert_cut(&response, &stalling);
            assert!(
                started.elapsed() < within(Duration::from_millis(200 + 500)),
                "{:?}",
                started.elapsed()
            );
            cut += 1;
        }
    }
    assert_eq!((cut, whole), (3, 3));
    gateway.wait_for_log(&format!(
        "[CIRCUIT] {} OPEN (threshold reached)",
        stalling.url()
    ));
    assert_eq!(
        backend_metric(
            &gateway,
            "gateway_upstream_attempts_total",
            &stalling,
            r#",outcome="timeout""#
        ),
        Some(3.0)
    );
    assert_eq!(
        gateway.metric(r#"gateway_service_retries_total{service="product"}"#),
        Some(0.0),
        "nothing is retried once response bytes reached the client"
    );
    assert_eq!(
        gateway.log_count("failover: service"),
        0,
        "{}",
        gateway.log()
    );
    assert_eq!(
        gateway.log_count(&format!("[CIRCUIT] {} OPEN", stalling.url())),
        1
    );
}

#[test]
fn a_body_streaming_longer_than_the_header_timeout_is_served_whole() {
    // Five parts 150 ms apart: each gap within the read timeout, the whole body well past
    // the header timeout, which ended its work at the head.
    let streaming = Mock::start(&["--slow-body-ms", "150"]);
    let gateway = gateway_over(
        &[&streaming],
        "{response_header_timeout: 100ms, read_timeout: 500ms}",
    );
    let response = gateway.get("/v1/proxy/product");
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.body, format!("Hello from {}\n", streaming.port));
}

#[test]
fn a_client_too_slow_to_send_its_body_within_the_total_timeout_costs_the_backend_nothing() {
    let backend = Mock::start(&[]);
    let gateway = gateway_over(
        &[&backend],
        "{failure_threshold: 1, total_timeout: 300ms, open_timeout: 1m}",
    );
    let mut client = std::net::TcpStream::connect(("127.0.0.1", gateway.port)).unwrap();
    client
        .write_all(
            b"POST /v1/proxy/product HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n0123456789",
        )
        .unwrap();
    // The other 90 bytes never come: the total timeout ends while the backend waits for them.
    thread::sleep(Duration::from_millis(600));
    client.shutdown(std::net::Shutdown::Write).unwrap();
    let mut raw = Vec::new();
    client.set_read_timeout(Some(DEADLINE)).unwrap();
    let _ = client.read_to_end(&mut raw);
    let response = parse_response(&raw).unwrap();
    assert_eq!(response.status, 504, "{response:?}");

    // With a threshold of 1, one failure would have opened the only backend's breaker.
    assert_eq!(gateway.get("/v1/proxy/product").status, 200);
    assert_eq!(gateway.log_count("[CIRCUIT] "), 0, "{}", gateway.log());
}

#[test]
fn a_client_that_hangs_up_mid_request_costs_the_backend_nothing() {
    // One failure would open this breaker; a hang-up must count as neither failure nor success.
    let slow = Mock::start(&["--delay-ms", "400"]);
    let gateway = gateway_over(&[&slow], "{failure_threshold: 1, open_timeout: 1m}");
    let mut client = std::net::TcpStream::connect(("127.0.0.1", gateway.port)).unwrap();
    client
        .write_all(b"GET /v1/proxy/product HTTP/1.1\r\nHost: gateway.test\r\n\r\n")
        .unwrap();
    // Hang up once the request is with the backend, before its answer.
    assert!(wait_until(DEADLINE, || {
        gateway.metric(r#"gateway_service_requests_total{service="product"}"#) == Some(1.0)
    }));
    drop(client);
    let outcome = |name: &str| {
        backend_metric(
            &gateway,
            "gateway_upstream_attempts_total",
            &slow,
            &format!(r#",outcome="{name}""#),
        )
    };
    assert!(
        wait_until(DEADLINE, || outcome("cancelled") == Some(1.0)),
        "{}",
        gateway.log()
    );
    gateway.assert_no_verdict_on(&slow);
    assert_eq!(
        backend_metric(
            &gateway,
            "gateway_breaker_state",
            &slow,
            r#",state="closed""#
        ),
        Some(1.0)
    );
    assert_eq!(gateway.get("/v1/proxy/product").status, 200);
    // Settled in the logging hook, just after the answer (see `Gateway::metric_reaches`).
    assert!(wait_until(DEADLINE, || outcome("success") == Some(1.0)));
}
