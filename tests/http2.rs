//! HTTP/2 from clients (curl: h2c with prior knowledge on the plaintext listener, h2 by ALPN on
//! the TLS one) and to backends (`protocol: http2`), with the same routing and breakers; and
//! the plaintext listener's peek for the HTTP/2 preface, which must not hold a short HTTP/1
//! request or a silent client.

mod common;

#[path = "common/tls.rs"]
mod tls;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use tls::{TestCa, Validity};

/// `curl` with `args`: the body, and the HTTP version and status it reports.
fn curl(args: &[&str]) -> (String, String, u16) {
    let output = Command::new("curl")
        .args([
            "-s",
            "--max-time",
            "10",
            "-w",
            "\n%{http_version} %{http_code}",
        ])
        .args(args)
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&output.stdout).to_string();
    let (body, tail) = text.rsplit_once('\n').unwrap_or(("", &text));
    let (version, status) = tail.split_once(' ').unwrap_or(("", "0"));
    (
        body.to_owned(),
        version.to_owned(),
        status.parse().unwrap_or(0),
    )
}

#[test]
fn h2c_with_prior_knowledge_routes_alternates_and_trips_a_breaker_with_no_client_error() {
    let (a, mut b) = (Mock::start(&[]), Mock::start(&[]));
    let gateway = Gateway::start(
        &services_yaml("product", &[a.url(), b.url()]),
        "  status_log: false\n",
    );
    let url = format!("http://127.0.0.1:{}/v1/proxy/product", gateway.port);
    let answers: Vec<(String, String, u16)> = (0..4)
        .map(|_| curl(&["--http2-prior-knowledge", &url]))
        .collect();
    for (_, version, status) in &answers {
        assert_eq!((version.as_str(), *status), ("2", 200), "{answers:?}");
    }
    let firsts: Vec<&str> = answers
        .iter()
        .map(|(b, _, _)| b.lines().next().unwrap_or(""))
        .collect();
    assert_eq!(
        firsts,
        [0, 1, 0, 1].map(|i| format!("Hello from {}", [a.port, b.port][i])),
    );
    b.stop();
    for _ in 0..6 {
        let (body, version, status) = curl(&["--http2-prior-knowledge", &url]);
        assert_eq!((version.as_str(), status), ("2", 200));
        assert!(
            body.starts_with(&format!("Hello from {}", a.port)),
            "{body}"
        );
    }
    gateway.wait_for_log(&format!("[CIRCUIT] {} OPEN", b.url()));
    // The gateway's own errors are JSON on HTTP/2 too.
    let (body, version, status) = curl(&[
        "--http2-prior-knowledge",
        &format!("http://127.0.0.1:{}/v1/proxy/nope", gateway.port),
    ]);
    assert_eq!((version.as_str(), status), ("2", 404));
    assert!(body.contains("unknown_service"), "{body}");
    // And HTTP/1.1 still works on the same port.
    let (_, version, status) = curl(&["--http1.1", &url]);
    assert_eq!((version.as_str(), status), ("1.1", 200));
}

#[test]
fn h2_over_tls_by_alpn() {
    let dir = TempDir::new();
    let ca = TestCa::new("http2 test CA");
    let ca_file = ca.write(dir.path(), "ca");
    let cert = ca.issue(dir.path(), "localhost", &["localhost"], Validity::Now);
    let mock = Mock::start(&[]);
    let tls_port = free_port();
    let _gateway = Gateway::start(
        &services_yaml("product", &[mock.url()]),
        &format!(
            "  status_log: false\n  tls:\n    listen: 127.0.0.1:{tls_port}\n    certificates:\n      - cert: {}\n        key: {}\n",
            cert.cert(),
            cert.key()
        ),
    );
    let url = format!("https://localhost:{tls_port}/v1/proxy/product");
    let ca_arg = ca_file.to_str().unwrap();
    let (body, version, status) = curl(&["--http2", "--cacert", ca_arg, &url]);
    assert_eq!((version.as_str(), status), ("2", 200), "{body}");
    let (_, version, status) = curl(&["--http1.1", "--cacert", ca_arg, &url]);
    assert_eq!((version.as_str(), status), ("1.1", 200));
}

#[test]
fn the_preface_peek_holds_neither_a_short_http1_request_nor_a_silent_client() {
    let mock = Mock::start(&[]);
    let gateway = Gateway::start(
        &services_yaml("product", &[mock.url()]),
        "  status_log: false\n  request_header_timeout: 500ms\n",
    );
    // A whole request in 18 bytes, fewer than the 24 of the HTTP/2 preface: answered at once.
    let mut short = TcpStream::connect(("127.0.0.1", gateway.port)).unwrap();
    short.set_read_timeout(Some(DEADLINE)).unwrap();
    short.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    let mut answer = Vec::new();
    short.read_to_end(&mut answer).unwrap();
    assert!(
        answer.starts_with(b"HTTP/1.1 404"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    // A client that sends nothing is closed at the head deadline, not held forever.
    let mut silent = TcpStream::connect(("127.0.0.1", gateway.port)).unwrap();
    silent.set_read_timeout(Some(DEADLINE)).unwrap();
    let started = Instant::now();
    let read = silent.read(&mut [0; 16]);
    assert!(matches!(read, Ok(0)) || read.is_err(), "{read:?}");
    assert!(
        started.elapsed() < DEADLINE,
        "closed by the gateway, not by the test's timeout"
    );
}

#[test]
fn h2c_can_be_switched_off() {
    let mock = Mock::start(&[]);
    let gateway = Gateway::start(
        &services_yaml("product", &[mock.url()]),
        "  status_log: false\n  h2c: false\n",
    );
    let url = format!("http://127.0.0.1:{}/v1/proxy/product", gateway.port);
    let (_, version, status) = curl(&["--http2-prior-knowledge", &url]);
    assert_ne!((version.as_str(), status), ("2", 200));
    let (_, version, status) = curl(&[&url]);
    assert_eq!((version.as_str(), status), ("1.1", 200));
}

/// Established TCP connections to `port` on loopback, from /proc/net/tcp.
fn connections_to(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let remote_port = fields[2].rsplit(':').next().unwrap();
            u16::from_str_radix(remote_port, 16) == Ok(port) && fields[3] == "01"
        })
        .count()
}

#[test]
fn an_http2_service_shares_one_connection_per_backend_among_concurrent_requests() {
    // The backend is itself a gateway, which speaks h2c with prior knowledge.
    let mock = Mock::start(&["--delay-ms", "100"]);
    let backend = Gateway::start(
        &services_yaml("product", &[mock.url()]),
        "  status_log: false\n",
    );
    let backend_url = format!("http://127.0.0.1:{}/v1/proxy/product", backend.port);
    let front = Gateway::start(
        &format!("product:\n  backends: [\"{backend_url}\"]\n  protocol: http2\n"),
        "  status_log: false\n",
    );
    // One request first: the connection it opens is then shared by everything after it.
    assert_eq!(front.get("/v1/proxy/product").status, 200);
    // The clients start 20 ms apart, well inside the backend's 100 ms, so their requests are in
    // flight together without all arriving in the same instant (see the bound below).
    let clients: Vec<_> = (0..8)
        .map(|_| {
            thread::sleep(Duration::from_millis(20));
            let port = front.port;
            thread::spawn(move || {
                (0..3)
                    .map(|_| {
                        try_request(port, "GET", "/v1/proxy/product", &[], b"").map(|r| r.status)
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut most = 0;
    while clients.iter().any(|c| !c.is_finished()) {
        most = most.max(connections_to(backend.port));
        thread::sleep(Duration::from_millis(20));
    }
    for client in clients {
        for status in client.join().unwrap() {
            assert_eq!(status.unwrap(), 200);
        }
    }
    // Eight requests at a time over HTTP/1.1 would need eight connections. Pingora takes a
    // connection out of its pool while it opens a stream on it, and a request arriving in that
    // moment opens another (a false negative its connector accepts): a few, never eight. With
    // all eight clients starting at once, a busy machine (a fresh CI build) stretched that moment
    // enough for seven.
    assert!(
        (1..=4).contains(&most),
        "{most} connections to the HTTP/2 backend"
    );
}

#[test]
fn the_phase_timeouts_hold_for_an_http2_upstream() {
    // A slow head behind an HTTP/2 backend (a gateway in front of a mock that waits 3 s).
    let slow = Mock::start(&["--delay-ms", "3000"]);
    let backend = Gateway::start(
        &services_yaml("product", &[slow.url()]),
        "  status_log: false\n",
    );
    let front = Gateway::start(
        &format!(
            "product:\n  backends: [\"http://127.0.0.1:{}/v1/proxy/product\"]\n  protocol: http2\n  \
             response_header_timeout: 300ms\n",
            backend.port
        ),
        "  status_log: false\n",
    );
    let started = Instant::now();
    let response = front.get("/v1/proxy/product");
    assert_eq!(response.status, 504, "{response:?}");
    assert!(
        started.elapsed() < within(Duration::from_millis(2500)),
        "cut at the header timeout, not when the backend answered: {:?}",
        started.elapsed()
    );
    // A body still arriving at the total timeout is cut then (five parts 1 s apart).
    let streaming = Mock::start(&["--slow-body-ms", "1000"]);
    let backend = Gateway::start(
        &services_yaml("product", &[streaming.url()]),
        "  status_log: false\n",
    );
    let front = Gateway::start(
        &format!(
            "product:\n  backends: [\"http://127.0.0.1:{}/v1/proxy/product\"]\n  protocol: http2\n  \
             total_timeout: 500ms\n",
            backend.port
        ),
        "  status_log: false\n",
    );
    let started = Instant::now();
    let response = raw_get(front.port, "/v1/proxy/product");
    assert!(
        started.elapsed() < within(Duration::from_millis(2500)),
        "{:?} {response:?}",
        started.elapsed()
    );
    let full = format!("Hello from {}\n", streaming.port);
    assert!(
        response
            .as_ref()
            .map_or(true, |r| r.status != 200 || r.body.len() < full.len()),
        "{response:?}"
    );
}

#[test]
fn the_mock_backend_speaks_http2_over_h2c_and_tls() {
    let dir = TempDir::new();
    let ca = TestCa::new("mock h2 CA");
    let ca_file = ca.write(dir.path(), "ca");
    let cert = ca.issue(dir.path(), "localhost", &["localhost"], Validity::Now);
    let h2c = Mock::start(&["--h2"]);
    let h2 = Mock::start(&["--h2", "--tls-cert", cert.cert(), "--tls-key", cert.key()]);
    let front = Gateway::start(
        &format!(
            "plain:\n  backends: [\"{}\"]\n  protocol: http2\n\
             secure:\n  backends: [\"https://localhost:{}\"]\n  protocol: http2\n  tls_ca_file: {}\n",
            h2c.url(),
            h2.port,
            ca_file.display()
        ),
        "  status_log: false\n",
    );
    for (path, mock) in [("/v1/proxy/plain", &h2c), ("/v1/proxy/secure", &h2)] {
        let response = front.get(path);
        assert_eq!(response.status, 200, "{path}: {response:?}");
        assert_eq!(response.served_by(), Some(mock.port));
        assert_eq!(response.header("x-mock-protocol"), Some("h2"), "{path}");
    }
}

#[test]
fn an_http2_backend_gets_the_gateways_forwarded_fields_and_not_the_clients() {
    let h2c = Mock::start(&["--h2"]);
    let front = Gateway::start(
        &format!(
            "product:\n  backends: [\"{}\"]\n  protocol: http2\n",
            h2c.url()
        ),
        "  status_log: false\n",
    );
    let response = request(
        front.port,
        "GET",
        "/v1/proxy/product",
        &[
            ("Host", "gw.test"),
            ("X-Request-Id", "forged"),
            ("X-Forwarded-For", "6.6.6.6"),
            ("X-Forwarded-Proto", "https"),
            ("Forwarded", "for=6.6.6.6"),
        ],
        b"",
    );
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.header("x-mock-protocol"), Some("h2"));
    let id = response.header("x-echo-x-request-id").unwrap_or_default();
    assert!(
        id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "the gateway's id alone: {response:?}"
    );
    assert_eq!(response.header("x-echo-x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(response.header("x-echo-x-forwarded-host"), Some("gw.test"));
    assert_eq!(response.header("x-echo-x-forwarded-proto"), Some("http"));
    assert_eq!(
        response.header("x-echo-forwarded"),
        Some("for=127.0.0.1;host=\"gw.test\";proto=http")
    );
}
