//! Active health checks and failure-rate ejection, with real mock backends: a backend that fails
//! its health path leaves the rotation before any client request reaches it and returns when
//! it heals; TCP checks and checks that time out; a backend failing every second request opens
//! on its failure rate; health state survives a reload, and a reload turns checks on and off;
//! discovered backends are checked; with nothing to check or discover, the background threads
//! sleep. Timing comes from short configured intervals and polling with deadlines.

mod common;

use common::*;

/// Checks every 100 ms, two results in a row flip a backend.
const FAST_CHECKS: &str =
    "  health_check: {path: /healthz, interval: 100ms, timeout: 80ms, unhealthy_threshold: 2, healthy_threshold: 2}\n";

/// Service `product` over `backends`, with `service_extra` in its section.
fn services_over(backends: &[String], service_extra: &str) -> String {
    let list: Vec<String> = backends.iter().map(|b| format!("\"{b}\"")).collect();
    format!(
        "product:\n  backends: [{}]\n  open_timeout: 1m\n{service_extra}",
        list.join(", ")
    )
}

fn gateway_over(backends: &[String], service_extra: &str) -> Gateway {
    Gateway::start(
        &services_over(backends, service_extra),
        "  status_log: false\n",
    )
}

/// Context switches so far of the gateway's background threads (Pingora names them `BG ...`).
fn background_wakeups(pid: u32) -> u64 {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("the gateway's threads");
    tasks
        .filter_map(Result::ok)
        .filter(|task| {
            std::fs::read_to_string(task.path().join("comm")).is_ok_and(|c| c.starts_with("BG "))
        })
        .filter_map(|task| std::fs::read_to_string(task.path().join("status")).ok())
        .flat_map(|status| {
            status
                .lines()
                .filter(|line| line.contains("ctxt_switches:"))
                .filter_map(|line| line.split_whitespace().nth(1)?.parse::<u64>().ok())
                .collect::<Vec<_>>()
        })
        .sum()
}

/// Client attempts `/metrics` counts for `backend` of service `product`, all outcomes.
fn attempts(gateway: &Gateway, backend: &str) -> u64 {
    let metrics = request(gateway.admin_port, "GET", "/metrics", &[], b"").body;
    let prefix =
        format!(r#"gateway_upstream_attempts_total{{service="product",backend="{backend}","#);
    metrics
        .lines()
        .filter(|line| line.starts_with(&prefix))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

fn metric(gateway: &Gateway, line_start: &str) -> Option<String> {
    request(gateway.admin_port, "GET", "/metrics", &[], b"")
        .body
        .lines()
        .find(|line| line.starts_with(line_start))
        .map(str::to_owned)
}

#[test]
fn a_backend_failing_its_health_path_leaves_before_any_request_and_returns_when_healed() {
    let healthy = Mock::start(&[]);
    let mut sick = Mock::start(&["--fail-health"]);
    let gateway = gateway_over(&[healthy.url(), sick.url()], FAST_CHECKS);
    // No client traffic at all: the checks alone take it out.
    gateway.wait_for_log(&format!(
        "[CIRCUIT] {} OPEN (health check failed)",
        sick.url()
    ));
    for _ in 0..10 {
        assert_eq!(
            gateway.get("/v1/proxy/product").served_by(),
            Some(healthy.port)
        );
    }
    assert_eq!(
        attempts(&gateway, &sick.url()),
        0,
        "no client request reached it"
    );
    let healthy_gauge = format!(
        r#"gateway_health_check_healthy{{service="product",backend="{}"}}"#,
        sick.url()
    );
    assert_eq!(
        metric(&gateway, &healthy_gauge),
        Some(format!("{healthy_gauge} 0"))
    );
    // The last check's error names the status; on a loaded machine one check may time out
    // first (its timeout is short here), so the reason is polled for.
    let status = || request(gateway.admin_port, "GET", "/status", &[], b"").body;
    assert!(status().contains(r#""healthy":false"#), "{}", status());
    assert!(
        wait_until(DEADLINE, || status().contains("expected 200-399")),
        "{}",
        status()
    );

    // Healed: back without waiting for the breaker's cooldown (a minute here).
    sick.restart(&[]);
    gateway.wait_for_log(&format!(
        "[CIRCUIT] {} CLOSED (health check passed)",
        sick.url()
    ));
    let served: Vec<Option<u16>> = (0..4)
        .map(|_| gateway.get("/v1/proxy/product").served_by())
        .collect();
    assert!(served.contains(&Some(sick.port)), "{served:?}");
    assert_eq!(
        metric(&gateway, &healthy_gauge),
        Some(format!("{healthy_gauge} 1"))
    );
}

#[test]
fn a_tcp_check_takes_out_a_closed_port() {
    let healthy = Mock::start(&[]);
    let closed = format!("http://127.0.0.1:{}", free_port());
    let gateway = gateway_over(
        &[healthy.url(), closed.clone()],
        "  health_check: {type: tcp, interval: 100ms, timeout: 80ms, unhealthy_threshold: 1}\n",
    );
    gateway.wait_for_log(&format!("[CIRCUIT] {closed} OPEN (health check failed)"));
    assert_eq!(attempts(&gateway, &healthy.url()), 0);
    for _ in 0..6 {
        assert_eq!(
            gateway.get("/v1/proxy/product").served_by(),
            Some(healthy.port)
        );
    }
    assert_eq!(attempts(&gateway, &closed), 0, "never tried by a client");
}

#[test]
fn a_check_that_gets_no_answer_in_time_fails() {
    let healthy = Mock::start(&[]);
    let hanging = Mock::start(&["--hang"]);
    let gateway = gateway_over(&[healthy.url(), hanging.url()], FAST_CHECKS);
    gateway.wait_for_log(&format!(
        "[CIRCUIT] {} OPEN (health check failed)",
        hanging.url()
    ));
    let status = request(gateway.admin_port, "GET", "/status", &[], b"").body;
    assert!(status.contains("no answer within 80ms"), "{status}");
}

#[test]
fn failing_every_second_request_opens_on_the_failure_rate_not_the_count() {
    let flaky = Mock::start(&["--fail-every", "2"]);
    let gateway = gateway_over(
        &[flaky.url()],
        "  failure_threshold: 5\n  failure_rate_threshold: 50%\n  failure_rate_window: 30s\n  failure_rate_min_requests: 10\n",
    );
    let mut statuses = Vec::new();
    for _ in 0..12 {
        statuses.push(gateway.get("/v1/proxy/product").status);
    }
    // Ten requests, five failures (the backend's own 500s): the rate opens the breaker; the
    // consecutive count (never more than one in a row) never would.
    assert_eq!(
        statuses,
        [200, 500, 200, 500, 200, 500, 200, 500, 200, 500, 503, 503]
    );
    gateway.wait_for_log(&format!("[CIRCUIT] {} OPEN (failure rate)", flaky.url()));
}

#[test]
fn a_reload_keeps_the_health_of_backends_that_stay() {
    let healthy = Mock::start(&[]);
    let sick = Mock::start(&["--fail-health"]);
    let gateway = gateway_over(&[healthy.url(), sick.url()], FAST_CHECKS);
    let open = format!("[CIRCUIT] {} OPEN (health check failed)", sick.url());
    gateway.wait_for_log(&open);
    signal(gateway.pid(), "HUP");
    gateway.wait_for_log("reloaded");
    for _ in 0..6 {
        assert_eq!(
            gateway.get("/v1/proxy/product").served_by(),
            Some(healthy.port)
        );
    }
    assert_eq!(gateway.log_count(&open), 1, "still out, not re-learned");
    assert_eq!(gateway.log_count("(health check passed)"), 0);
}

#[test]
fn the_backends_of_a_discovered_service_are_checked() {
    let healthy = Mock::start(&[]);
    let sick = Mock::start(&["--fail-health"]);
    let gateway = Gateway::start(
        &format!(
            "product:\n  backends: [\"http://localhost:{}\", \"http://localhost:{}\"]\n  discovery: dns\n{FAST_CHECKS}",
            healthy.port, sick.port
        ),
        "  status_log: false\n",
    );
    // Discovered backends are named by address.
    gateway.wait_for_log(&format!(
        "[CIRCUIT] http://127.0.0.1:{} OPEN (health check failed)",
        sick.port
    ));
    for _ in 0..6 {
        assert_eq!(
            gateway.get("/v1/proxy/product").served_by(),
            Some(healthy.port)
        );
    }
}

#[test]
fn a_reload_that_adds_checks_starts_them_and_one_that_drops_them_brings_the_backend_back() {
    let healthy = Mock::start(&[]);
    let sick = Mock::start(&["--fail-health"]);
    let backends = [healthy.url(), sick.url()];
    let gateway = gateway_over(&backends, "");
    let serves_sick =
        || (0..4).any(|_| gateway.get("/v1/proxy/product").served_by() == Some(sick.port));
    assert!(
        serves_sick(),
        "unchecked, its failing health path does not matter"
    );

    gateway
        .dir
        .write("services.yaml", &services_over(&backends, FAST_CHECKS));
    signal(gateway.pid(), "HUP");
    gateway.wait_for_log(&format!(
        "[CIRCUIT] {} OPEN (health check failed)",
        sick.url()
    ));

    gateway
        .dir
        .write("services.yaml", &services_over(&backends, ""));
    signal(gateway.pid(), "HUP");
    gateway.wait_for_log(&format!(
        "[CIRCUIT] {} CLOSED (health check passed)",
        sick.url()
    ));
    assert!(serves_sick(), "no longer checked, it serves again");
}

#[test]
fn with_nothing_to_check_or_discover_the_background_threads_sleep() {
    let mock = Mock::start(&[]);
    let gateway = gateway_over(&[mock.url()], "");
    assert_eq!(
        gateway.get("/v1/proxy/product").served_by(),
        Some(mock.port)
    );
    // Quiet for a whole window once they have settled: a thread that polls (every 50 ms, say)
    // never is.
    let window = std::time::Duration::from_millis(300);
    let quiet = wait_until(DEADLINE, || {
        let before = background_wakeups(gateway.pid());
        std::thread::sleep(window);
        background_wakeups(gateway.pid()) == before
    });
    assert!(quiet, "the background threads kept waking");
}
