//! The gateway end to end: real `gateway` and `mock-backend` processes on loopback, real HTTP.
//! Timing comes from short configured timeouts and polling with deadlines.

mod common;

use std::io::{BufRead, Read, Write};
use std::thread;
use std::time::{Duration, Instant};

use common::*;

/// A gateway over `mocks` as service `product`, with `defaults` (YAML flow mapping) for all
/// services.
fn gateway_over(mocks: &[&Mock], defaults: &str) -> Gateway {
    let urls: Vec<String> = mocks.iter().map(|m| m.url()).collect();
    Gateway::start(
        &services_yaml("product", &urls),
        &format!("  status_log: true\n  defaults: {defaults}\n"),
    )
}

/// Stops `backend` and sends requests until its breaker has opened; while another backend is
/// healthy, every one of them must still succeed.
fn stop_and_trip(gateway: &Gateway, backend: &mut Mock, others_healthy: bool) {
    backend.stop();
    let open_line = format!("[CIRCUIT] {} OPEN (threshold reached)", backend.url());
    assert!(wait_until(DEADLINE, || {
        let status = gateway.get("/v1/proxy/product").status;
        if others_healthy {
            assert_eq!(status, 200);
        } else if status == 503 {
            // Every backend is open: the breaker opened, and its log line may just not have
            // been read from the gateway's output yet (waited for below).
            return true;
        } else {
            assert_eq!(status, 502);
        }
        gateway.log().contains(&open_line)
    }));
    gateway.wait_for_log(&open_line);
}

#[test]
fn thirty_requests_over_two_backends_split_exactly_15_15_in_alternation() {
    let (a, b) = (Mock::start(&[]), Mock::start(&[]));
    let gateway = gateway_over(&[&a, &b], "{}");
    let served: Vec<u16> = (0..30)
        .map(|_| {
            let response = gateway.get("/v1/proxy/product");
            assert_eq!(response.status, 200, "{response:?}");
            response.served_by().expect("a mock answered")
        })
        .collect();
    for pair in served.chunks(2) {
        assert_eq!(pair, [a.port, b.port], "strict alternation: {served:?}");
    }
    assert_eq!(served.iter().filter(|&&p| p == a.port).count(), 15);
    gateway.wait_for_log(&format!(
        "[CIRCUIT STATUS] {}\n  Total:    15\n  Success:  15\n  Failures:  0\n  State:     Closed",
        b.url()
    ));
}

#[test]
fn path_query_prefix_and_forwarding_headers_reach_the_backend() {
    let mock = Mock::start(&[]);
    let services = format!(
        "plain:\n  - {url}\nprefixed:\n  - {url}/api/\n",
        url = mock.url()
    );
    let gateway = Gateway::start(&services, "");

    let response = gateway.get("/v1/proxy/prefixed/items/7?color=red&size=2");
    assert_eq!(response.status, 200);
    assert_eq!(
        response.header("x-mock-path"),
        Some("/api/items/7?color=red&size=2")
    );
    assert_eq!(
        response.header("x-echo-host"),
        Some(format!("127.0.0.1:{}", mock.port).as_str())
    );
    assert_eq!(response.header("x-echo-x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(response.header("x-echo-x-forwarded-proto"), Some("http"));
    assert_eq!(
        response.header("x-echo-x-forwarded-host"),
        Some("gateway.test")
    );

    let cases = [
        ("/v1/proxy/plain", "/"),
        ("/v1/proxy/plain/", "/"),
        ("/v1/proxy/plain?q=1", "/?q=1"),
        ("/v1/proxy/plain/a/b/", "/a/b/"),
        ("/v1/proxy/prefixed", "/api"),
        ("/v1/proxy/prefixed/?q=1", "/api/?q=1"),
    ];
    for (path, expected) in cases {
        let response = gateway.get(path);
        assert_eq!(response.header("x-mock-path"), Some(expected), "{path}");
    }
}

#[test]
fn any_method_and_bodies_stream_both_ways() {
    let mock = Mock::start(&[]);
    let gateway = gateway_over(&[&mock], "{}");
    let body: Vec<u8> = (0..200_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    for method in ["POST", "PUT", "PATCH", "DELETE"] {
        let response = request(gateway.port, method, "/v1/proxy/product/upload", &[], &body);
        assert_eq!(response.status, 200, "{method}");
        assert_eq!(response.header("x-mock-method"), Some(method));
        let expected = format!(
            "Hello from {}\n{}",
            mock.port,
            String::from_utf8_lossy(&body)
        );
        assert!(
            response.body == expected,
            "{method}: body not echoed intact"
        );
    }
    let head = request(gateway.port, "HEAD", "/v1/proxy/product", &[], b"");
    assert_eq!(head.status, 200);
    assert_eq!(head.body, "");
}

#[test]
fn unknown_services_and_other_paths_get_404_with_a_json_body() {
    let mock = Mock::start(&[]);
    let gateway = gateway_over(&[&mock], "{}");
    let cases = [
        (
            "/v1/proxy/nope",
            "unknown_service",
            "no service named \\\"nope\\\"",
        ),
        ("/v1/proxy/", "not_found", "names no service"),
        ("/", "not_found", "no route for this path"),
        ("/v1/proxyproduct", "not_found", "no route for this path"),
        (
            "/v1/proxy/%70roduct",
            "unknown_service",
            "the path names no configured service",
        ),
    ];
    for (path, error, detail) in cases {
        let response = gateway.get(path);
        assert_eq!(response.status, 404, "{path}");
        assert_eq!(response.header("content-type"), Some("application/json"));
        assert!(
            response
                .body
                .starts_with(&format!("{{\"error\":\"{error}\",\"detail\":\"")),
            "{path}: {}",
            response.body
        );
        assert!(response.body.contains(detail), "{path}: {}", response.body);
    }
}

#[test]
fn a_stopped_backend_opens_its_breaker_while_every_client_still_gets_200() {
    let (a, mut b) = (Mock::start(&[]), Mock::start(&[]));
    let gateway = gateway_over(&[&a, &b], "{open_timeout: 1m}");
    assert_eq!(gateway.get("/v1/proxy/product").status, 200);
    b.stop();
    for _ in 0..20 {
        let response = gateway.get("/v1/proxy/product");
        assert_eq!(response.status, 200, "{response:?}");
        assert_eq!(response.served_by(), Some(a.port));
    }
    gateway.wait_for_log(&format!("[CIRCUIT] {} OPEN (threshold reached)", b.url()));
    // Three connect failures, each failed over, then no more attempts at the open backend.
    assert_eq!(
        gateway.log_count("failed (ConnectRefused); retrying"),
        3,
        "{}",
        gateway.log()
    );
}

#[test]
fn a_restarted_backend_half_opens_closes_and_alternation_resumes() {
    let (a, mut b) = (Mock::start(&[]), Mock::start(&[]));
    let gateway = gateway_over(&[&a, &b], "{open_timeout: 300ms}");
    stop_and_trip(&gateway, &mut b, true);
    b.restart(&[]);
    let closed_line = format!("[CIRCUIT] {} CLOSED (recovered)", b.url());
    assert!(
        wait_until(DEADLINE, || {
            assert_eq!(gateway.get("/v1/proxy/product").status, 200);
            gateway.log().contains(&closed_line)
        }),
        "never closed; log:\n{}",
        gateway.log()
    );
    let log = gateway.log();
    let half_open = log
        .find(&format!("[CIRCUIT] {} HALF-OPEN (timeout passed)", b.url()))
        .expect("HALF-OPEN logged");
    assert!(half_open < log.find(&closed_line).unwrap());
    let served: Vec<u16> = (0..6)
        .map(|_| gateway.get("/v1/proxy/product").served_by().unwrap())
        .collect();
    assert!(
        served.windows(2).all(|w| w[0] != w[1]),
        "alternation resumed: {served:?}"
    );
}

#[test]
fn when_every_backend_is_open_the_answer_is_503_with_retry_after() {
    let (mut a, mut b) = (Mock::start(&[]), Mock::start(&[]));
    let gateway = gateway_over(&[&a, &b], "{open_timeout: 5s}");
    a.stop();
    b.stop();
    assert!(
        wait_until(DEADLINE, || gateway.get("/v1/proxy/product").status == 503),
        "never 503; log:\n{}",
        gateway.log()
    );
    let connects_before = gateway.log_count("failed (ConnectRefused); retrying");
    let response = gateway.get("/v1/proxy/product");
    assert_eq!(response.status, 503);
    let retry_after: u64 = response.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=5).contains(&retry_after), "Retry-After {retry_after}");
    assert_eq!(response.header("content-type"), Some("application/json"));
    for index in [0, 1] {
        assert!(
            response
                .body
                .contains(&format!("{{\"index\":{index},\"state\":\"Open\"")),
            "{}",
            response.body
        );
    }
    for mock in [&a, &b] {
        assert!(
            !response.body.contains(&mock.port.to_string()),
            "no backend address in an error body: {}",
            response.body
        );
    }
    assert!(response.body.contains("\"error\":\"no_available_backend\""));
    assert_eq!(
        gateway.log_count("failed (ConnectRefused); retrying"),
        connects_before,
        "a 503 makes no upstream connection"
    );
}

#[test]
fn a_backend_answering_500_trips_its_breaker() {
    let (healthy, failing) = (Mock::start(&[]), Mock::start(&["--fail"]));
    let gateway = gateway_over(&[&healthy, &failing], "{open_timeout: 1m}");
    let statuses: Vec<u16> = (0..12)
        .map(|_| gateway.get("/v1/proxy/product").status)
        .collect();
    // The 500s pass through to the client (the request reached the backend), three of them,
    // then the breaker is open and the healthy backend takes everything.
    assert_eq!(
        statuses.iter().filter(|&&s| s == 500).count(),
        3,
        "{statuses:?}"
    );
    assert!(statuses[6..].iter().all(|&s| s == 200), "{statuses:?}");
    gateway.wait_for_log(&format!(
        "[CIRCUIT] {} OPEN (threshold reached)",
        failing.url()
    ));
}

#[test]
fn a_4xx_from_the_backend_is_a_success_and_a_gateway_404_touches_no_breaker() {
    let mock = Mock::start(&["--status", "404"]);
    let gateway = gateway_over(&[&mock], "{failure_threshold: 1}");
    for _ in 0..5 {
        let response = gateway.get("/v1/proxy/product");
        assert_eq!(response.status, 404);
        assert_eq!(response.served_by(), Some(mock.port));
        assert_eq!(gateway.get("/v1/proxy/missing").status, 404);
    }
    gateway.wait_for_log("Success:   5\n  Failures:  0\n  State:     Closed");
    assert!(!gateway.log().contains("[CIRCUIT] "), "{}", gateway.log());
}

#[test]
fn a_backend_too_slow_for_the_read_timeout_gets_504_and_opens() {
    let slow = Mock::start(&["--delay-ms", "2000"]);
    let gateway = gateway_over(&[&slow], "{read_timeout: 200ms, open_timeout: 1m}");
    for _ in 0..3 {
        let response = gateway.get("/v1/proxy/product");
        assert_eq!(response.status, 504);
        assert!(
            response.body.contains("\"error\":\"gateway_timeout\""),
            "{}",
            response.body
        );
    }
    gateway.wait_for_log(&format!(
        "[CIRCUIT] {} OPEN (threshold reached)",
        slow.url()
    ));
    assert_eq!(gateway.get("/v1/proxy/product").status, 503);
}

#[test]
fn a_single_dead_backend_gives_502_until_its_breaker_opens() {
    let mut dead = Mock::start(&[]);
    let gateway = gateway_over(&[&dead], "{open_timeout: 1m}");
    dead.stop();
    for _ in 0..3 {
        let response = gateway.get("/v1/proxy/product");
        assert_eq!(response.status, 502, "{response:?}");
        assert!(response.body.contains("\"error\":\"bad_gateway\""));
    }
    assert_eq!(gateway.get("/v1/proxy/product").status, 503);
}

#[test]
fn the_status_block_can_be_switched_off() {
    let mock = Mock::start(&[]);
    let gateway = Gateway::start(
        &services_yaml("product", &[mock.url()]),
        "  status_log: false\n",
    );
    assert_eq!(gateway.get("/v1/proxy/product").status, 200);
    assert_eq!(gateway.get("/v1/proxy/product").status, 200);
    assert!(
        !gateway.log().contains("[CIRCUIT STATUS]"),
        "{}",
        gateway.log()
    );
}

#[test]
fn a_probe_whose_client_hangs_up_frees_the_slot_for_the_next_request() {
    use std::io::Write;
    use std::time::{Duration, Instant};

    let mut backend = Mock::start(&[]);
    // The probe's lease is the 2 s open timeout: a slot freed only by the lease would keep
    // every request below at 503 for far longer than the 1 s this test allows.
    let gateway = gateway_over(&[&backend], "{open_timeout: 2s}");
    stop_and_trip(&gateway, &mut backend, false);
    backend.restart(&["--delay-ms", "300"]);
    let half_open = format!("[CIRCUIT] {} HALF-OPEN (timeout passed)", backend.url());

    // The probe's client sends its request and hangs up while the backend is still thinking.
    assert!(wait_until(DEADLINE, || {
        let mut client = std::net::TcpStream::connect(("127.0.0.1", gateway.port)).unwrap();
        client
            .write_all(b"GET /v1/proxy/product HTTP/1.1\r\nHost: t\r\n\r\n")
            .unwrap();
        thread::sleep(Duration::from_millis(50));
        gateway.log().contains(&half_open)
    }));
    let hung_up = Instant::now();

    let mut response = gateway.get("/v1/proxy/product");
    while response.status == 503 && hung_up.elapsed() < Duration::from_secs(1) {
        thread::sleep(Duration::from_millis(20));
        response = gateway.get("/v1/proxy/product");
    }
    assert_eq!(response.status, 200, "{response:?}\n{}", gateway.log());
    gateway.wait_for_log(&format!("[CIRCUIT] {} CLOSED (recovered)", backend.url()));
    assert_eq!(gateway.log_count(&half_open), 1);
    assert!(!gateway.log().contains("probe failed"), "{}", gateway.log());
}

#[test]
fn hop_by_hop_headers_and_a_forged_forwarding_chain_do_not_reach_the_backend() {
    let mock = Mock::start(&[]);
    let gateway = gateway_over(&[&mock], "{}");
    let response = request(
        gateway.port,
        "GET",
        "/v1/proxy/product",
        &[
            ("Keep-Alive", "timeout=5"),
            ("Proxy-Connection", "keep-alive"),
            ("TE", "trailers"),
            ("Trailer", "X-Checksum"),
            ("X-Forwarded-For", "6.6.6.6"),
            ("X-Forwarded-Host", "evil.example"),
            ("X-Kept", "end-to-end"),
        ],
        b"",
    );
    assert_eq!(response.status, 200);
    for hop in ["keep-alive", "proxy-connection", "te", "trailer"] {
        assert_eq!(
            response.header(&format!("x-echo-{hop}")),
            None,
            "{hop} forwarded"
        );
    }
    assert_eq!(response.header("x-echo-x-kept"), Some("end-to-end"));
    assert_eq!(response.header("x-echo-x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(
        response.header("x-echo-x-forwarded-host"),
        Some("gateway.test")
    );

    // A header the client names in Connection is hop-by-hop too.
    let response = request(
        gateway.port,
        "GET",
        "/v1/proxy/product",
        &[("Connection", "close, X-Hop-Secret"), ("X-Hop-Secret", "1")],
        b"",
    );
    assert_eq!(response.status, 200);
    assert_eq!(response.header("x-echo-x-hop-secret"), None);
}

#[test]
fn the_admin_listener_reports_health_and_breakers_and_stays_off_the_proxy_port() {
    let (a, mut b) = (Mock::start(&[]), Mock::start(&[]));
    let gateway = gateway_over(&[&a, &b], "{open_timeout: 1m}");
    let admin = |method: &str, path: &str| request(gateway.admin_port, method, path, &[], b"");
    assert_eq!(admin("GET", "/healthz").status, 200);
    assert_eq!(admin("GET", "/readyz").status, 200);
    assert_eq!(admin("POST", "/status").status, 405);
    assert_eq!(admin("GET", "/elsewhere").status, 404);
    for path in ["/healthz", "/readyz", "/status"] {
        assert_eq!(gateway.get(path).status, 404, "{path} on the proxy port");
    }

    stop_and_trip(&gateway, &mut b, true);
    let status = admin("GET", "/status");
    assert_eq!(status.status, 200);
    assert_eq!(status.header("content-type"), Some("application/json"));
    assert!(
        status.body.starts_with(
            r#"{"reload_error":null,"services":[{"name":"product","queue_waiting":0,"backends":["#
        ),
        "{}",
        status.body
    );
    assert!(
        status.body.contains(&format!(
            r#"{{"url":"{}","state":"Open","consecutive_failures":0,"successes":0,"failures":3,"retry_in_ms":"#,
            b.url()
        )),
        "{}",
        status.body
    );
    assert!(
        status.body.contains(
            r#""last_transition":{"from":"Closed","to":"Open","reason":"threshold reached","ms_ago":"#
        ),
        "{}",
        status.body
    );
    assert!(
        status
            .body
            .contains(&format!(r#"{{"url":"{}","state":"Closed""#, a.url())),
        "{}",
        status.body
    );
}

#[test]
fn a_backend_taken_out_by_hand_stays_out_until_put_back() {
    let (a, b) = (Mock::start(&[]), Mock::start(&[]));
    let gateway = gateway_over(&[&a, &b], "{open_timeout: 200ms}");
    let id = format!("127.0.0.1:{}", a.port);
    let admin = |path: String| request(gateway.admin_port, "POST", &path, &[], b"");

    let response = admin(format!("/backends/{id}/open"));
    assert_eq!(response.status, 200, "{response:?}");
    assert!(response.body.contains(r#""state":"Forced-Open""#));
    gateway.wait_for_log(&format!("[CIRCUIT] {} OPEN (manual)", a.url()));
    // Well past any cooldown, it still gets nothing: no probe for a backend taken out by hand.
    thread::sleep(std::time::Duration::from_millis(300));
    for _ in 0..6 {
        assert_eq!(gateway.get("/v1/proxy/product").served_by(), Some(b.port));
    }

    assert_eq!(admin(format!("/backends/{id}/close")).status, 200);
    gateway.wait_for_log(&format!("[CIRCUIT] {} CLOSED (manual)", a.url()));
    let served: Vec<u16> = (0..4)
        .map(|_| gateway.get("/v1/proxy/product").served_by().unwrap())
        .collect();
    assert!(
        served.contains(&a.port) && served.contains(&b.port),
        "{served:?}"
    );
    assert_eq!(admin("/backends/nowhere:1/open".to_owned()).status, 404);
}

#[test]
fn json_logs_are_one_object_per_line_with_transition_and_request_events() {
    let (a, mut b) = (Mock::start(&[]), Mock::start(&[]));
    let urls = [a.url(), b.url()];
    let gateway = Gateway::start(
        &services_yaml("product", &urls),
        "  log_format: json\n  status_log: true\n  defaults: {open_timeout: 1m}\n",
    );
    b.stop();
    let open = format!(
        r#""event":"transition","backend":"{}","services":["product"],"from":"Closed","to":"Open","reason":"threshold reached","successes":0,"failures":3}}"#,
        b.url()
    );
    assert!(wait_until(DEADLINE, || {
        assert_eq!(gateway.get("/v1/proxy/product").status, 200);
        gateway.log().contains(&open)
    }));
    let log = gateway.log();
    assert!(log.contains(&format!(
        r#""event":"request","backend":"{}","state":"Closed","total":"#,
        a.url()
    )));
    for line in log.lines() {
        assert!(
            line.starts_with(r#"{"ts":""#) && line.ends_with('}'),
            "not a JSON object: {line}"
        );
    }
    assert!(!log.contains("[CIRCUIT"), "{log}");
}

#[test]
fn an_admin_token_guards_everything_but_the_probes() {
    let mock = Mock::start(&[]);
    let gateway = Gateway::start(
        &services_yaml("product", &[mock.url()]),
        "  admin_token: t0ken\n",
    );
    let admin = |path: &str, headers: &[(&str, &str)]| {
        request(gateway.admin_port, "GET", path, headers, b"").status
    };
    assert_eq!(admin("/healthz", &[]), 200);
    assert_eq!(admin("/readyz", &[]), 200);
    assert_eq!(admin("/status", &[]), 401);
    assert_eq!(admin("/status", &[("Authorization", "Bearer nope")]), 401);
    assert_eq!(admin("/status", &[("Authorization", "Bearer t0ken")]), 200);
}

#[test]
fn metrics_count_outcomes_breaker_states_and_gateway_answers() {
    let (a, b, mut dead) = (
        Mock::start(&[]),
        Mock::start(&["--status", "500"]),
        Mock::start(&[]),
    );
    dead.stop();
    let services =
        services_yaml("product", &[a.url(), b.url()]) + &services_yaml("solo", &[dead.url()]);
    let gateway = Gateway::start(
        &services,
        "  status_log: false\n  defaults: {open_timeout: 1m}\n",
    );
    let statuses: Vec<u16> = (0..6)
        .map(|_| gateway.get("/v1/proxy/product").status)
        .collect();
    assert_eq!(statuses, [200, 500, 200, 500, 200, 500]);
    for _ in 0..2 {
        assert_eq!(gateway.get("/v1/proxy/product").status, 200, "b is open");
    }
    for _ in 0..3 {
        assert_eq!(gateway.get("/v1/proxy/solo").status, 502);
    }
    assert_eq!(gateway.get("/v1/proxy/solo").status, 503);
    assert_eq!(gateway.get("/v1/proxy/nope").status, 404);
    assert_eq!(gateway.get("/metrics").status, 404, "not on the proxy port");

    let metrics = request(gateway.admin_port, "GET", "/metrics", &[], b"");
    assert_eq!(metrics.status, 200);
    assert_eq!(
        metrics.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let (a, b, dead) = (
        format!(r#"service="product",backend="{}""#, a.url()),
        format!(r#"service="product",backend="{}""#, b.url()),
        format!(r#"service="solo",backend="{}""#, dead.url()),
    );
    for line in [
        format!(r#"gateway_upstream_attempts_total{{{a},outcome="success"}} 5"#),
        format!(r#"gateway_upstream_attempts_total{{{b},outcome="http_5xx"}} 3"#),
        format!(r#"gateway_upstream_attempts_total{{{b},outcome="success"}} 0"#),
        format!(r#"gateway_upstream_attempts_total{{{dead},outcome="connect_error"}} 3"#),
        format!(r#"gateway_upstream_attempt_duration_seconds_bucket{{{a},le="+Inf"}} 5"#),
        format!("gateway_upstream_attempt_duration_seconds_count{{{b}}} 3"),
        format!(r#"gateway_breaker_state{{{a},state="closed"}} 1"#),
        format!(r#"gateway_breaker_state{{{b},state="open"}} 1"#),
        format!(r#"gateway_breaker_state{{{dead},state="open"}} 1"#),
        format!(r#"gateway_breaker_transitions_total{{{b},from="closed",to="open"}} 1"#),
        format!("gateway_breaker_rejections_total{{{b}}} 1"),
        format!("gateway_breaker_rejections_total{{{dead}}} 1"),
        format!("gateway_breaker_consecutive_failures{{{a}}} 0"),
        r#"gateway_service_requests_total{service="product"} 8"#.to_owned(),
        r#"gateway_service_requests_total{service="solo"} 4"#.to_owned(),
        r#"gateway_service_all_open_total{service="solo"} 1"#.to_owned(),
        r#"gateway_service_retries_total{service="product"} 0"#.to_owned(),
        "gateway_not_found_total 2".to_owned(),
        "gateway_config_reload_failed 0".to_owned(),
    ] {
        assert!(
            metrics.body.lines().any(|l| l == line),
            "no line {line} in\n{}",
            metrics.body
        );
    }
}

#[test]
fn an_idle_client_connection_is_closed_after_the_keepalive_timeout() {
    let mock = Mock::start(&[]);
    let gateway = Gateway::start(
        &services_yaml("product", &[mock.url()]),
        "  status_log: false\n  keepalive_timeout: 1s\n",
    );
    let stream = std::net::TcpStream::connect(("127.0.0.1", gateway.port)).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut conn = std::io::BufReader::new(stream);
    let mut get = || {
        conn.get_mut()
            .write_all(b"GET /v1/proxy/product HTTP/1.1\r\nHost: t\r\n\r\n")
            .unwrap();
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            assert!(
                conn.read_until(b'\n', &mut head).unwrap() > 0,
                "closed early"
            );
        }
        let response = parse_response(&head).unwrap();
        let length: usize = response.header("content-length").unwrap().parse().unwrap();
        conn.read_exact(&mut vec![0; length]).unwrap();
        response.status
    };
    assert_eq!(get(), 200);
    thread::sleep(Duration::from_millis(300));
    assert_eq!(
        get(),
        200,
        "within the timeout the connection serves the next request"
    );

    // Idle past it, the gateway closes the connection (Pingora's default would wait 60 s).
    let idle = Instant::now();
    assert_eq!(conn.read(&mut [0; 1]).unwrap(), 0, "closed by the gateway");
    // Well before Pingora's 60 s; no lower bound: a loaded machine may hand this client the
    // response late, and the reuse at 300 ms above already shows the connection was kept.
    let waited = idle.elapsed();
    assert!(waited < Duration::from_secs(5), "{waited:?}");
}

#[test]
fn the_access_log_has_one_line_per_request_in_text_or_json() {
    let mock = Mock::start(&[]);
    let gateway = Gateway::start(
        &services_yaml("product", &[mock.url()]),
        "  status_log: false\n  access_log: text\n",
    );
    assert_eq!(gateway.get("/v1/proxy/product/item?q=1").status, 200);
    let not_found = gateway.get("/nowhere");
    let not_found_id = not_found.header("x-request-id").unwrap().to_owned();
    let mock_url = mock.url();
    gateway.wait_for_log(&format!(
        "127.0.0.1 GET /v1/proxy/product/item product {mock_url} 200 attempts=1 upstream_ms="
    ));
    gateway.wait_for_log(&format!(
        "{not_found_id} 127.0.0.1 GET /nowhere - - 404 attempts=0 upstream_ms=- total_ms="
    ));
    assert_eq!(gateway.log_count(" attempts="), 2, "{}", gateway.log());

    let json = Gateway::start(
        &services_yaml("product", &[mock.url()]),
        "  status_log: false\n  log_format: json\n  access_log: json\n",
    );
    assert_eq!(json.get("/v1/proxy/product").status, 200);
    json.wait_for_log(r#""event":"access","#);
    json.wait_for_log(r#""service":"product","#);
    json.wait_for_log(r#""status":200,"attempts":1,"#);
}

#[test]
fn a_manual_reset_zeroes_the_status_counters_but_never_a_prometheus_counter() {
    let mock = Mock::start(&[]);
    let gateway = gateway_over(&[&mock], "{}");
    for _ in 0..3 {
        assert_eq!(gateway.get("/v1/proxy/product").status, 200);
    }
    let attempts = format!(
        r#"gateway_upstream_attempts_total{{service="product",backend="{}",outcome="success"}}"#,
        mock.url()
    );
    assert!(gateway.metric_reaches(&attempts, 3.0));
    let id = mock.url().trim_start_matches("http://").to_owned();
    let reset = request(
        gateway.admin_port,
        "POST",
        &format!("/backends/{id}/reset"),
        &[],
        b"",
    );
    assert_eq!(reset.status, 200, "{reset:?}");
    let status = request(gateway.admin_port, "GET", "/status", &[], b"").body;
    assert!(status.contains(r#""successes":0,"failures":0"#), "{status}");
    assert_eq!(
        gateway.metric(&attempts),
        Some(3.0),
        "Prometheus counters only grow"
    );
}

#[test]
fn an_admin_listener_off_loopback_without_a_token_is_warned_about_at_start() {
    let mock = Mock::start(&[]);
    // A gateway whose admin listener is on every address, with `gateway_extra` in its conf.
    let start_open_admin = |gateway_extra: &str| {
        let dir = TempDir::new();
        dir.write("services.yaml", &services_yaml("product", &[mock.url()]));
        let (port, admin_port) = (free_port(), free_port());
        let conf = gateway_conf(dir.path(), port, admin_port, gateway_extra).replace(
            &format!("admin_listen: 127.0.0.1:{admin_port}"),
            &format!("admin_listen: 0.0.0.0:{admin_port}"),
        );
        let conf = dir.write("gateway.yaml", &conf);
        let gateway = Gateway::spawn(dir, port, &["-c", conf.to_str().unwrap()]);
        gateway.wait_ready();
        (gateway, admin_port)
    };
    let (gateway, admin_port) = start_open_admin("");
    gateway.wait_for_log(&format!(
        "the admin listener on 0.0.0.0:{admin_port} is not on loopback and has no token"
    ));
    let (gateway, _) = start_open_admin("  admin_token: s3cret\n");
    assert_eq!(
        gateway.log_count("is not on loopback"),
        0,
        "{}",
        gateway.log()
    );
}

#[test]
fn the_admin_listener_has_limits_of_its_own() {
    // 64 connections at once, 5 s for a request head: fixed, so a flood of scrapers or a slow
    // client cannot take the probes' listener, and the proxy's limits are not its limits.
    let mock = Mock::start(&[]);
    let gateway = gateway_over(&[&mock], "{}");
    // 64 keep-alive connections, each known to be in (it has had its answer).
    let held: Vec<Client> = (0..64)
        .map(|_| {
            let mut client = Client::new(gateway.admin_port);
            assert_eq!(client.send("GET", "/healthz", b"").unwrap().status, 200);
            client
        })
        .collect();
    // The 65th is answered 503 and closed. It sends nothing: a request the gateway never reads
    // would turn that close into a reset, which may overtake the answer.
    let mut extra = std::net::TcpStream::connect(("127.0.0.1", gateway.admin_port)).unwrap();
    extra.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut answer = Vec::new();
    extra.read_to_end(&mut answer).unwrap();
    assert!(
        answer.starts_with(b"HTTP/1.1 503"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    drop(held);
    assert!(wait_until(DEADLINE, || {
        try_request(gateway.admin_port, "GET", "/healthz", &[], b"")
            .is_ok_and(|response| response.status == 200)
    }));

    // A head that stops halfway is cut at the admin listener's own 5 s.
    let mut slow = std::net::TcpStream::connect(("127.0.0.1", gateway.admin_port)).unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHo").unwrap();
    slow.set_read_timeout(Some(DEADLINE)).unwrap();
    let started = Instant::now();
    let mut rest = Vec::new();
    let _ = slow.read_to_end(&mut rest);
    let waited = started.elapsed();
    assert!(
        waited > Duration::from_secs(4) && waited < within(Duration::from_secs(7)),
        "{waited:?}"
    );
}
