//! Retries on a backend's answer: a replica that answers 502, 503 or 504 costs no client request
//! while another replica can serve it. The 5xx still counts against the replica that sent it,
//! a retry never goes back to a replica the request tried, it is paid from the retry budget,
//! and when no replica is left the client gets the last answer whole.

mod common;

use std::time::{Duration, Instant};

use common::*;

fn series(name: &str, service: &str, mock: &Mock, outcome: &str) -> String {
    format!(
        r#"{name}{{service="{service}",backend="{}",outcome="{outcome}"}}"#,
        mock.url()
    )
}

fn service_metric(gateway: &Gateway, name: &str, service: &str) -> Option<f64> {
    gateway.metric(&format!(r#"{name}{{service="{service}"}}"#))
}

#[test]
fn a_replica_answering_503_costs_no_request_and_still_counts_against_its_breaker() {
    let sick = Mock::start(&["--status", "503"]);
    let healthy = Mock::start(&[]);
    let gateway = Gateway::start(
        &services_yaml("product", &[sick.url(), healthy.url()]),
        "  status_log: false\n",
    );
    for _ in 0..12 {
        let response = gateway.get("/v1/proxy/product");
        assert_eq!(response.status, 200, "{response:?}");
        assert_eq!(response.served_by(), Some(healthy.port));
    }
    // Three 503s opened its breaker; after that it was skipped.
    let http_5xx = series(
        "gateway_upstream_attempts_total",
        "product",
        &sick,
        "http_5xx",
    );
    assert!(gateway.metric_reaches(&http_5xx, 3.0), "{http_5xx}");
    assert_eq!(
        service_metric(&gateway, "gateway_service_status_retries_total", "product"),
        Some(3.0)
    );
    assert!(gateway.log_count(&format!("[CIRCUIT] {} OPEN", sick.url())) == 1);
    assert_eq!(
        gateway.log_count(&format!("backend {} answered 503; retrying", sick.url())),
        3
    );
}

#[test]
fn when_every_replica_answers_503_the_client_gets_exactly_one_503_whole_after_one_try_each() {
    let mocks: Vec<Mock> = (0..3).map(|_| Mock::start(&["--status", "503"])).collect();
    let urls: Vec<String> = mocks.iter().map(Mock::url).collect();
    let gateway = Gateway::start(
        &format!(
            "product:\n  backends: [{}]\n  failure_threshold: 100\n",
            urls.iter()
                .map(|u| format!("\"{u}\""))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        "  status_log: false\n",
    );
    for round in 1..=4 {
        let response = gateway.get("/v1/proxy/product");
        assert_eq!(response.status, 503, "{response:?}");
        // The last replica's own answer, body intact.
        let port = response.served_by().expect("a replica's answer");
        assert_eq!(response.body.trim(), format!("Hello from {port}"));
        for mock in &mocks {
            let http_5xx = series(
                "gateway_upstream_attempts_total",
                "product",
                mock,
                "http_5xx",
            );
            assert!(
                gateway.metric_reaches(&http_5xx, f64::from(round)),
                "{http_5xx}"
            );
        }
    }
    assert_eq!(
        service_metric(&gateway, "gateway_service_status_retries_total", "product"),
        Some(8.0),
        "two per request"
    );
}

#[test]
fn writes_are_not_retried_unless_they_carry_an_idempotency_key_the_service_honours() {
    let sick = Mock::start(&["--status", "502"]);
    let healthy = Mock::start(&[]);
    let services = format!(
        "plain:\n  backends: [\"{sick}\", \"{healthy}\"]\n  failure_threshold: 100\n\
         keyed:\n  backends: [\"{sick}\", \"{healthy}\"]\n  failure_threshold: 100\n  \
         retry_idempotency_key: true\n\
         none:\n  backends: [\"{sick}\", \"{healthy}\"]\n  failure_threshold: 100\n  \
         retry_on_status: []\n",
        sick = sick.url(),
        healthy = healthy.url()
    );
    let gateway = Gateway::start(&services, "  status_log: false\n");
    let key = [("Idempotency-Key", "order-7")];
    // Two requests each, so one of the two lands first on the sick replica.
    let statuses = |service: &str, headers: &[(&str, &str)]| -> Vec<u16> {
        (0..2)
            .map(|_| {
                request(
                    gateway.port,
                    "POST",
                    &format!("/v1/proxy/{service}"),
                    headers,
                    b"order=7",
                )
                .status
            })
            .collect()
    };
    let mut plain = statuses("plain", &key);
    plain.sort();
    assert_eq!(plain, [200, 502], "a POST is never replayed by default");
    let mut unkeyed = statuses("keyed", &[]);
    unkeyed.sort();
    assert_eq!(unkeyed, [200, 502], "no key, no replay");
    assert_eq!(
        statuses("keyed", &key),
        [200, 200],
        "the key makes it replayable"
    );
    // The healthy replica got the body the sick one got.
    let response = request(gateway.port, "POST", "/v1/proxy/keyed", &key, b"order=7");
    assert!(response.body.ends_with("order=7"), "{response:?}");
    // retry_on_status: [] passes every answer through, GETs included.
    let mut gets: Vec<u16> = (0..2)
        .map(|_| gateway.get("/v1/proxy/none").status)
        .collect();
    gets.sort();
    assert_eq!(gets, [200, 502]);
}

#[test]
fn a_500_is_the_applications_answer_and_is_not_retried_by_default() {
    let failing = Mock::start(&["--status", "500"]);
    let healthy = Mock::start(&[]);
    let gateway = Gateway::start(
        &format!(
            "product:\n  backends: [\"{}\", \"{}\"]\n  failure_threshold: 100\n\
             listed:\n  backends: [\"{}\", \"{}\"]\n  failure_threshold: 100\n  \
             retry_on_status: [500]\n",
            failing.url(),
            healthy.url(),
            failing.url(),
            healthy.url()
        ),
        "  status_log: false\n",
    );
    let mut statuses: Vec<u16> = (0..2)
        .map(|_| gateway.get("/v1/proxy/product").status)
        .collect();
    statuses.sort();
    assert_eq!(statuses, [200, 500]);
    let listed: Vec<u16> = (0..2)
        .map(|_| gateway.get("/v1/proxy/listed").status)
        .collect();
    assert_eq!(listed, [200, 200], "unless listed");
}

#[test]
fn a_503_with_retry_after_rests_its_replica_that_long_within_the_cap() {
    let resting = Mock::start(&["--status", "503", "--retry-after", "4"]);
    let greedy = Mock::start(&["--status", "503", "--retry-after", "3600"]);
    let healthy = Mock::start(&[]);
    let gateway = Gateway::start(
        &format!(
            "rest:\n  backends: [\"{}\", \"{}\"]\n  failure_threshold: 1\n  open_timeout: 1s\n\
             greed:\n  backends: [\"{}\", \"{}\"]\n  failure_threshold: 1\n  open_timeout: 1s\n",
            resting.url(),
            healthy.url(),
            greedy.url(),
            healthy.url()
        ),
        "  status_log: false\n",
    );
    for service in ["rest", "greed"] {
        for _ in 0..2 {
            let response = gateway.get(&format!("/v1/proxy/{service}"));
            assert_eq!(response.status, 200, "{response:?}");
        }
    }
    let retry_in = |mock: &Mock| -> u64 {
        let status = request(gateway.admin_port, "GET", "/status", &[], b"").body;
        let at = status
            .find(&format!(r#""url":"{}""#, mock.url()))
            .expect("listed");
        let field = &status[at..];
        let value = &field[field.find(r#""retry_in_ms":"#).unwrap() + 14..];
        value[..value.find(',').unwrap()].parse().unwrap()
    };
    // Its own cooldown is 1 s; it asked for 4 s and got them.
    let rest = retry_in(&resting);
    assert!((3_000..=4_000).contains(&rest), "{rest} ms");
    // An hour is capped at six open timeouts.
    let greed = retry_in(&greedy);
    assert!((5_000..=6_000).contains(&greed), "{greed} ms");
}

#[test]
fn a_body_within_replay_body_limit_is_replayed_past_64_kib_and_a_larger_one_says_why_not() {
    let sick = Mock::start(&["--status", "503"]);
    let healthy = Mock::start(&[]);
    let gateway = Gateway::start(
        &format!(
            "roomy:\n  backends: [\"{sick}\", \"{healthy}\"]\n  failure_threshold: 100\n  \
             replay_body_limit: 256KiB\n  max_body_size: 1MiB\n\
             tight:\n  backends: [\"{sick}\", \"{healthy}\"]\n  failure_threshold: 100\n  \
             replay_body_limit: 1KiB\n",
            sick = sick.url(),
            healthy = healthy.url()
        ),
        "  status_log: false\n  access_log: text\n",
    );
    // 100 KiB: more than Pingora's own 64 KiB buffer, within the service's 256 KiB.
    let body = vec![b'x'; 100 * 1024];
    for _ in 0..2 {
        let response = request(gateway.port, "PUT", "/v1/proxy/roomy", &[], &body);
        assert_eq!(response.status, 200, "{}", response.body.len());
        assert_eq!(response.served_by(), Some(healthy.port));
        assert!(response.body.ends_with(&"x".repeat(1024)));
    }
    // 2 KiB over a 1 KiB limit: the one that met the sick replica first gets its 503.
    let small = vec![b'y'; 2048];
    let mut statuses: Vec<u16> = (0..2)
        .map(|_| request(gateway.port, "PUT", "/v1/proxy/tight", &[], &small).status)
        .collect();
    statuses.sort();
    assert_eq!(statuses, [200, 503]);
    gateway.wait_for_log("PUT /v1/proxy/tight tight");
    gateway.wait_for_log(" 503 attempts=1 ");
    gateway.wait_for_log(" not_replayed=body_over_limit");
    assert_eq!(
        gateway.log_count(" not_replayed=body_over_limit"),
        1,
        "{}",
        gateway.log()
    );
}

#[test]
fn an_http2_replica_answering_503_is_retried_on_another_as_well() {
    let sick = Mock::start(&["--h2", "--status", "503"]);
    let healthy = Mock::start(&["--h2"]);
    let gateway = Gateway::start(
        &format!(
            "product:\n  backends: [\"{}\", \"{}\"]\n  protocol: http2\n  failure_threshold: 100\n",
            sick.url(),
            healthy.url()
        ),
        "  status_log: false\n",
    );
    for _ in 0..6 {
        let response = gateway.get("/v1/proxy/product");
        assert_eq!(response.status, 200, "{response:?}");
        assert_eq!(response.header("x-mock-protocol"), Some("h2"));
    }
    let http_5xx = series(
        "gateway_upstream_attempts_total",
        "product",
        &sick,
        "http_5xx",
    );
    assert!(gateway.metric_reaches(&http_5xx, 3.0), "{http_5xx}");
}

#[test]
fn hedged_gets_keep_a_stalling_replicas_tail_from_the_client_within_the_budget() {
    // One request in ten to this replica waits a second.
    let stalling = Mock::start(&["--stall-every", "10", "--stall-ms", "1000"]);
    let healthy = Mock::start(&[]);
    let services = format!(
        "hedged:\n  backends: [\"{s}\", \"{h}\"]\n  hedge_after: 50ms\n\
         plain:\n  backends: [\"{s}\", \"{h}\"]\n",
        s = stalling.url(),
        h = healthy.url()
    );
    let gateway = Gateway::start(&services, "  status_log: false\n");
    let timed = |service: &str, n: usize| -> Vec<(u16, Duration)> {
        let mut client = Client::new(gateway.port);
        (0..n)
            .map(|_| {
                let started = Instant::now();
                let response = client
                    .send("GET", &format!("/v1/proxy/{service}"), b"")
                    .expect("an answer");
                assert!(response.body.starts_with("Hello from"), "{response:?}");
                (response.status, started.elapsed())
            })
            .collect()
    };
    // 100 requests: 50 reach the stalling replica first, 5 of them stall.
    let hedged = timed("hedged", 100);
    assert!(hedged.iter().all(|(status, _)| *status == 200));
    let slowest = hedged.iter().map(|(_, took)| *took).max().unwrap();
    eprintln!("hedged: slowest of 100 {slowest:?}");
    assert!(slowest < within(Duration::from_millis(500)), "{slowest:?}");
    let hedges = service_metric(&gateway, "gateway_service_hedges_total", "hedged").unwrap();
    assert!(
        (5.0..=20.0).contains(&hedges),
        "{hedges} hedges: the five stalls, within the budget"
    );
    // The stalled attempts lost, and were cancelled, never failed.
    let cancelled = series(
        "gateway_upstream_attempts_total",
        "hedged",
        &stalling,
        "cancelled",
    );
    assert!(gateway.metric_reaches(&cancelled, 5.0) || gateway.metric(&cancelled) >= Some(5.0));
    for outcome in ["timeout", "http_5xx", "broken_response", "connect_error"] {
        let failed = series(
            "gateway_upstream_attempts_total",
            "hedged",
            &stalling,
            outcome,
        );
        assert_eq!(gateway.metric(&failed), Some(0.0), "{failed}");
    }
    // Unhedged, the same replica's stall reaches the client.
    let plain = timed("plain", 20);
    let slowest = plain.iter().map(|(_, took)| *took).max().unwrap();
    assert!(slowest >= Duration::from_millis(1000), "{slowest:?}");
}

#[test]
fn a_hedged_service_still_fails_over_from_a_dead_replica_and_answers_head() {
    let mut dead = Mock::start(&[]);
    let dead_url = dead.url();
    dead.stop();
    let healthy = Mock::start(&[]);
    let gateway = Gateway::start(
        &format!(
            "hedged:\n  backends: [\"{dead_url}\", \"{}\"]\n  hedge_after: p95\n",
            healthy.url()
        ),
        "  status_log: false\n",
    );
    for _ in 0..6 {
        let response = gateway.get("/v1/proxy/hedged");
        assert_eq!(response.status, 200, "{response:?}");
    }
    let head = request(gateway.port, "HEAD", "/v1/proxy/hedged", &[], b"");
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    assert!(gateway.log_count(&format!("[CIRCUIT] {dead_url} OPEN")) == 1);
}

#[test]
fn a_hedged_request_that_finds_every_replica_full_is_refused_once_not_queued_twice() {
    let slow = Mock::start(&["--delay-ms", "600"]);
    let gateway = Gateway::start(
        &format!(
            "hedged:\n  backends: [\"{u}\", \"{u}/other\"]\n  hedge_after: 5s\n  \
             concurrency_limit: 1\n  queue_size: 5\n  queue_timeout: 200ms\n",
            u = slow.url()
        ),
        "  status_log: false\n",
    );
    let started = Instant::now();
    let answers: Vec<(Response, Duration)> = simultaneous_gets(gateway.port, 3, "/v1/proxy/hedged")
        .into_iter()
        .map(|h| (h.join().unwrap().expect("an answer"), started.elapsed()))
        .collect();
    let (refused, took) = answers
        .iter()
        .find(|(r, _)| r.status == 503)
        .expect("the third waits 200 ms and is refused");
    assert!(
        refused.body.contains(r#""error":"overloaded""#),
        "{}",
        refused.body
    );
    assert!(
        *took < Duration::from_millis(400)
            || answers.iter().filter(|(r, _)| r.status == 200).count() == 2
    );
    assert_eq!(
        service_metric(&gateway, "gateway_service_overloaded_total", "hedged"),
        Some(1.0),
        "refused once"
    );
}
