//! Hot reload: `POST /reload` and SIGHUP swap the routing table in place, keep the breakers of
//! backends that stay, and an invalid file changes nothing.

mod common;

use common::*;

fn start(mocks: &[&Mock]) -> Gateway {
    let urls: Vec<String> = mocks.iter().map(|m| m.url()).collect();
    Gateway::start(
        &services_yaml("product", &urls),
        "  status_log: false\n  defaults: {open_timeout: 1m}\n",
    )
}

fn rewrite_services(gateway: &Gateway, text: &str) {
    gateway.dir.write("services.yaml", text);
}

fn admin(gateway: &Gateway, method: &str, path: &str) -> Response {
    request(gateway.admin_port, method, path, &[], b"")
}

#[test]
fn a_reload_keeps_open_breakers_adds_new_backends_and_drops_removed_ones() {
    let (a, mut b, c) = (Mock::start(&[]), Mock::start(&[]), Mock::start(&[]));
    let gateway = start(&[&a, &b]);
    b.stop();
    let open = format!("[CIRCUIT] {} OPEN (threshold reached)", b.url());
    assert!(wait_until(DEADLINE, || {
        gateway.get("/v1/proxy/product");
        gateway.log().contains(&open)
    }));

    rewrite_services(&gateway, &services_yaml("product", &[b.url(), c.url()]));
    let response = admin(&gateway, "POST", "/reload");
    assert_eq!(response.status, 200, "{response:?}");
    gateway.wait_for_log("reloaded");

    let status = admin(&gateway, "GET", "/status").body;
    assert!(status.starts_with(r#"{"reload_error":null,"#), "{status}");
    assert!(
        status.contains(&format!(r#"{{"url":"{}","state":"Open","#, b.url())),
        "the open breaker stays open: {status}"
    );
    assert!(status.contains(&format!(r#"{{"url":"{}","state":"Closed","#, c.url())));
    assert!(
        !status.contains(&a.url()),
        "a removed backend is gone: {status}"
    );
    for _ in 0..4 {
        assert_eq!(gateway.get("/v1/proxy/product").served_by(), Some(c.port));
    }
    assert!(gateway.metric_reaches(
        &format!(
            "gateway_upstream_attempts_total{{service=\"product\",backend=\"{}\",outcome=\"success\"}}",
            c.url()
        ),
        4.0
    ));
    let metrics = admin(&gateway, "GET", "/metrics").body;
    assert!(
        metrics.contains(&format!(
            "gateway_breaker_state{{service=\"product\",backend=\"{}\",state=\"open\"}} 1",
            b.url()
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!(
            "gateway_upstream_attempts_total{{service=\"product\",backend=\"{}\",outcome=\"success\"}} 4",
            c.url()
        )),
        "{metrics}"
    );
    assert!(
        !metrics.contains(&a.url()),
        "a removed backend's series are gone: {metrics}"
    );
}

#[test]
fn sighup_reloads_and_an_invalid_file_changes_nothing() {
    let (a, b) = (Mock::start(&[]), Mock::start(&[]));
    let gateway = start(&[&a]);

    rewrite_services(&gateway, "product: [\"ftp://nowhere\"]\n");
    signal(gateway.pid(), "HUP");
    gateway.wait_for_log("reload failed, the running config stays");
    let status = admin(&gateway, "GET", "/status").body;
    assert!(
        status.contains(r#""reload_error":""#) && status.contains("is not an http(s)://host:port"),
        "{status}"
    );
    assert_eq!(gateway.get("/v1/proxy/product").served_by(), Some(a.port));
    let response = admin(&gateway, "POST", "/reload");
    assert_eq!(response.status, 422);
    assert!(response.body.contains("invalid_config"));

    rewrite_services(&gateway, &services_yaml("product", &[b.url()]));
    signal(gateway.pid(), "HUP");
    assert!(wait_until(DEADLINE, || {
        gateway.get("/v1/proxy/product").served_by() == Some(b.port)
    }));
    let status = admin(&gateway, "GET", "/status").body;
    assert!(status.starts_with(r#"{"reload_error":null,"#), "{status}");
}

#[test]
fn reloads_under_load_fail_no_request() {
    let (a, b, c) = (Mock::start(&[]), Mock::start(&[]), Mock::start(&[]));
    let gateway = start(&[&a, &b]);
    let load = BackgroundLoad::start(gateway.port, 8, "GET", "/v1/proxy/product");
    for round in 0..6 {
        load.wait_for(100);
        let backends = if round % 2 == 0 {
            vec![a.url(), b.url(), c.url()]
        } else {
            vec![a.url(), b.url()]
        };
        rewrite_services(&gateway, &services_yaml("product", &backends));
        assert_eq!(admin(&gateway, "POST", "/reload").status, 200);
    }
    load.wait_for(100);
    let load = load.finish();
    assert_eq!(load.failures(), 0, "{load:?}\n{}", gateway.log());
    assert_eq!(
        load.resends, 0,
        "no connection closed under a client: {load:?}"
    );
    assert!(
        load.served_by.contains_key(&c.port),
        "the added backend served: {load:?}"
    );
}

#[test]
fn a_discovered_service_serves_from_every_address_of_its_host() {
    let mock = Mock::start(&[]);
    let gateway = Gateway::start(
        &format!(
            "product:\n  backends: [\"http://localhost:{}\"]\n  discovery: dns\n  discovery_interval: 200ms\n",
            mock.port
        ),
        "  status_log: false\n",
    );
    for _ in 0..3 {
        assert_eq!(
            gateway.get("/v1/proxy/product").served_by(),
            Some(mock.port)
        );
    }
    let status = admin(&gateway, "GET", "/status").body;
    assert!(
        status.contains(&format!(
            r#"{{"url":"http://127.0.0.1:{}","state":"Closed""#,
            mock.port
        )),
        "named by address: {status}"
    );
    let echoed = gateway.get("/v1/proxy/product");
    assert_eq!(
        echoed.header("x-echo-host"),
        Some(format!("localhost:{}", mock.port).as_str()),
        "the backend gets the configured Host"
    );
    // Re-resolving the same answer changes nothing: no reload line, the same breaker.
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(gateway.log_count("now has"), 0, "{}", gateway.log());
}

#[test]
fn json_transitions_name_the_services_of_the_current_table() {
    let mut backend = Mock::start(&[]);
    let gateway = Gateway::start(
        &services_yaml("old", &[backend.url()]),
        "  status_log: false\n  log_format: json\n  defaults: {open_timeout: 1m}\n",
    );
    assert_eq!(gateway.get("/v1/proxy/old").status, 200);
    rewrite_services(&gateway, &services_yaml("new", &[backend.url()]));
    assert_eq!(admin(&gateway, "POST", "/reload").status, 200);
    backend.stop();
    let event = format!(
        r#""backend":"{}","services":["new"],"from":"Closed","to":"Open""#,
        backend.url()
    );
    assert!(
        wait_until(DEADLINE, || {
            gateway.get("/v1/proxy/new");
            gateway.log().contains(&event)
        }),
        "{}",
        gateway.log()
    );
}

#[test]
fn probes_are_answered_while_a_reload_waits_on_its_file() {
    let a = Mock::start(&[]);
    let gateway = start(&[&a]);
    // A reload that blocks until it can read: the services file becomes a FIFO no one writes.
    let services = gateway.dir.path().join("services.yaml");
    std::fs::remove_file(&services).unwrap();
    let made = std::process::Command::new("mkfifo")
        .arg(&services)
        .status()
        .unwrap();
    assert!(made.success());
    let admin_port = gateway.admin_port;
    let reload = std::thread::spawn(move || request(admin_port, "POST", "/reload", &[], b""));
    // The reload is waiting once a thread of the gateway's sleeps in the FIFO's open (Linux
    // names that wait `wait_for_partner`).
    let tasks = format!("/proc/{}/task", gateway.pid());
    assert!(wait_until(DEADLINE, || {
        std::fs::read_dir(&tasks).unwrap().flatten().any(|task| {
            std::fs::read_to_string(task.path().join("wchan"))
                .is_ok_and(|wchan| wchan == "wait_for_partner")
        })
    }));

    // Many probes, on fresh connections, so some land on every admin thread.
    for _ in 0..20 {
        let started = std::time::Instant::now();
        assert_eq!(admin(&gateway, "GET", "/healthz").status, 200);
        assert!(
            started.elapsed() < within(std::time::Duration::from_secs(1)),
            "a probe waited {:?} behind the reload",
            started.elapsed()
        );
    }
    assert!(!reload.is_finished(), "the reload did not wait on its file");

    std::fs::write(&services, services_yaml("product", &[a.url()])).unwrap();
    assert_eq!(reload.join().unwrap().status, 200);
}

#[test]
fn a_discovered_service_whose_host_does_not_resolve_starts_and_answers_503() {
    let gateway = Gateway::start(
        "cart:\n  backends: [\"http://no-such-host.invalid:80\"]\n  discovery: dns\n  discovery_interval: 200ms\n",
        "  status_log: false\n",
    );
    gateway.wait_for_log("discovery for service \"cart\" failed; it has no backends");
    let response = gateway.get("/v1/proxy/cart");
    assert_eq!(response.status, 503, "{response:?}");
    assert!(
        response.body.contains(r#""error":"no_backends""#),
        "{}",
        response.body
    );
    assert_eq!(response.header("retry-after"), Some("1"));
    let status = admin(&gateway, "GET", "/status").body;
    assert!(
        status.contains(r#"{"name":"cart","queue_waiting":0,"backends":[]}"#),
        "{status}"
    );
    let metrics = admin(&gateway, "GET", "/metrics").body;
    for line in [
        r#"gateway_service_backends{service="cart"} 0"#,
        r#"gateway_service_no_backends_total{service="cart"} 1"#,
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "no {line} in
{metrics}"
        );
    }
    assert_eq!(
        gateway.log_count("answers 503 until"),
        2,
        "said once at start and once by discovery, not per request or per lookup: {}",
        gateway.log()
    );
}

#[test]
fn a_discovered_service_a_reload_adds_is_looked_up_at_once() {
    let a = Mock::start(&[]);
    let gateway = start(&[&a]);
    rewrite_services(
        &gateway,
        &format!(
            "{}cart:\n  backends: [\"http://no-such-host.invalid:80\"]\n  discovery: dns\n  discovery_interval: 60m\n",
            services_yaml("product", &[a.url()])
        ),
    );
    let reload = admin(&gateway, "POST", "/reload");
    assert_eq!(reload.status, 200, "{}", reload.body);
    // Not at the next interval (an hour away): the reload's new table wakes discovery.
    gateway.wait_for_log("discovery for service \"cart\" failed; it has no backends");
}

#[test]
fn requests_in_flight_finish_on_the_table_they_started_with() {
    let (old, new) = (Mock::start(&["--delay-ms", "800"]), Mock::start(&[]));
    let gateway = start(&[&old]);
    let in_flight = simultaneous_gets(gateway.port, 1, "/v1/proxy/product");
    assert!(wait_until(DEADLINE, || gateway
        .metric(r#"gateway_service_requests_total{service="product"}"#)
        == Some(1.0)));
    rewrite_services(&gateway, &services_yaml("product", &[new.url()]));
    assert_eq!(admin(&gateway, "POST", "/reload").status, 200);
    assert_eq!(gateway.get("/v1/proxy/product").served_by(), Some(new.port));
    for handle in in_flight {
        let response = handle.join().unwrap().expect("the request in flight");
        assert_eq!(response.status, 200, "{response:?}");
        assert_eq!(
            response.served_by(),
            Some(old.port),
            "the old table's backend"
        );
    }
}
