//! Fault injection: backends that reset, close, hang or fail under bounded concurrent load.
//! While one replica is healthy, no idempotent request may fail.

mod common;

use std::time::Duration;

use common::*;

fn gateway_over(mocks: &[&Mock], defaults: &str) -> Gateway {
    let urls: Vec<String> = mocks.iter().map(|m| m.url()).collect();
    Gateway::start(
        &services_yaml("product", &urls),
        &format!("  status_log: false\n  defaults: {defaults}\n"),
    )
}

#[test]
fn a_backend_that_resets_before_headers_costs_no_get() {
    let (healthy, resetting) = (Mock::start(&[]), Mock::start(&["--reset"]));
    let gateway = gateway_over(&[&healthy, &resetting], "{open_timeout: 1m}");
    let report = run_load(gateway.port, 16, 50, "GET", "/v1/proxy/product");
    assert_eq!(report.failures(), 0, "{report:?}\n{}", gateway.log());
    assert_eq!(report.count(200), 800);
    gateway.wait_for_log(&format!(
        "[CIRCUIT] {} OPEN (threshold reached)",
        resetting.url()
    ));
}

#[test]
fn a_backend_that_closes_before_headers_costs_no_get_and_posts_get_502() {
    let (healthy, closing) = (Mock::start(&[]), Mock::start(&["--close"]));
    let gateway = gateway_over(&[&healthy, &closing], "{open_timeout: 1m}");
    // Sequential POSTs alternate: each one sent to the closing backend may have reached it,
    // so it is not replayed: a clean 502, three times, until the breaker opens.
    let statuses: Vec<u16> = (0..12)
        .map(|_| request(gateway.port, "POST", "/v1/proxy/product", &[], b"order=1").status)
        .collect();
    assert_eq!(
        statuses.iter().filter(|&&s| s == 502).count(),
        3,
        "{statuses:?}"
    );
    assert!(
        statuses.iter().all(|&s| s == 200 || s == 502),
        "{statuses:?}"
    );
    gateway.wait_for_log(&format!(
        "[CIRCUIT] {} OPEN (threshold reached)",
        closing.url()
    ));

    let gateway = gateway_over(&[&healthy, &closing], "{open_timeout: 1m}");
    let report = run_load(gateway.port, 16, 50, "GET", "/v1/proxy/product");
    assert_eq!(report.failures(), 0, "{report:?}");
}

#[test]
fn a_hanging_backend_times_out_fails_over_and_opens() {
    let (healthy, hanging) = (Mock::start(&[]), Mock::start(&["--hang"]));
    let gateway = gateway_over(
        &[&healthy, &hanging],
        "{read_timeout: 300ms, open_timeout: 1m}",
    );
    let report = run_load(gateway.port, 8, 25, "GET", "/v1/proxy/product");
    assert_eq!(report.failures(), 0, "{report:?}");
    assert!(
        report.slowest < Duration::from_millis(300 * 2 + 500),
        "no request waits much beyond one read timeout: {report:?}"
    );
    gateway.wait_for_log(&format!(
        "[CIRCUIT] {} OPEN (threshold reached)",
        hanging.url()
    ));
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
