//! Hostile input, over raw TCP sockets (no HTTP client that would fix the request first).
//!
//! Each case asserts the status, that the connection is closed after a rejection, and that a
//! listener outside every service (`outside`) was never connected to. Requests that must not be
//! forwarded at all go to service `guarded`, whose only backend is another counting listener.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::*;

/// A listener that counts the connections made to it and never answers.
struct Sentinel {
    port: u16,
    connections: Arc<AtomicUsize>,
}

impl Sentinel {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let connections = Arc::new(AtomicUsize::new(0));
        let count = connections.clone();
        thread::spawn(move || {
            let mut held = Vec::new();
            for stream in listener.incoming().map_while(Result::ok) {
                count.fetch_add(1, Ordering::SeqCst);
                held.push(stream);
            }
        });
        Sentinel { port, connections }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

/// The gateway under test: `product` over a real mock, `guarded` over a sentinel (with a 1 KiB
/// body limit), and a sentinel outside every service.
struct Setup {
    gateway: Gateway,
    product: Mock,
    guarded: Sentinel,
    outside: Sentinel,
}

fn setup(gateway_extra: &str) -> Setup {
    let product = Mock::start(&[]);
    let (guarded, outside) = (Sentinel::start(), Sentinel::start());
    let services = format!(
        "{}guarded:\n  backends: [\"{}\"]\n  max_body_size: 1KiB\n  read_timeout: 200ms\n",
        services_yaml("product", &[product.url()]),
        guarded.url()
    );
    let gateway = Gateway::start(&services, &format!("  status_log: false\n{gateway_extra}"));
    Setup {
        gateway,
        product,
        guarded,
        outside,
    }
}

/// What came back for raw bytes sent on one connection.
#[derive(Debug)]
struct Exchange {
    response: Option<Response>,
    /// The gateway closed the connection (rather than keeping it for another request).
    closed: bool,
}

/// Sends `raw`, then reads until the gateway closes the connection or stays quiet for 1 s.
fn exchange(port: u16, raw: &[u8]) -> Exchange {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_millis(1000)))
        .unwrap();
    stream.write_all(raw).unwrap();
    let mut received = Vec::new();
    let mut buf = [0u8; 8192];
    let closed = loop {
        match stream.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => received.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break true,
            Err(_) => break false,
        }
    };
    Exchange {
        response: parse_response(&received).ok(),
        closed,
    }
}

impl Setup {
    fn send(&self, raw: &str) -> Exchange {
        exchange(self.gateway.port, raw.as_bytes())
    }

    /// Asserts that the raw request was answered `status` with the gateway's JSON error body
    /// and a request id, and the connection closed.
    fn assert_rejected_with_json(&self, raw: &str, status: u16, error: &str) {
        let exchange = self.send(raw);
        let response = exchange
            .response
            .unwrap_or_else(|| panic!("no response to {raw:?}"));
        assert_eq!(response.status, status, "{raw:?}: {response:?}");
        assert!(
            response
                .body
                .starts_with(&format!("{{\"error\":\"{error}\",\"detail\":")),
            "{raw:?}: {response:?}"
        );
        assert_request_id(&response);
        assert!(exchange.closed, "{raw:?}: the connection stays open");
        let id = response.header("x-request-id").unwrap();
        self.gateway.wait_for_log(&format!("request id {id}"));
    }

    /// Asserts that nothing reached a backend outside the services, nor `guarded`'s.
    fn assert_nothing_forwarded(&self) {
        assert_eq!(
            self.outside.connections(),
            0,
            "a backend outside every service was reached"
        );
        assert_eq!(
            self.guarded.connections(),
            0,
            "a rejected request was forwarded"
        );
    }
}

fn assert_request_id(response: &Response) {
    let id = response.header("x-request-id").unwrap_or_default();
    assert!(
        id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "request id {id:?} in {response:?}"
    );
}

#[test]
fn no_request_reaches_a_backend_outside_the_named_service() {
    let s = setup("");
    let outside = format!("127.0.0.1:{}", s.outside.port);
    // Absolute-form targets: routed by their path only.
    let r = s.send(&format!(
        "GET http://{outside}/ HTTP/1.1\r\nHost: {outside}\r\n\r\n"
    ));
    assert_eq!(r.response.map(|r| r.status), Some(404));
    let r = s.send(&format!(
        "GET http://{outside}/v1/proxy/product HTTP/1.1\r\nHost: {outside}\r\nConnection: close\r\n\r\n"
    ));
    assert_eq!(
        r.response.as_ref().and_then(|r| r.served_by()),
        Some(s.product.port),
        "absolute-form with a proxy path goes to the service's backend: {r:?}"
    );
    // CONNECT is refused (by Pingora, before any hook; the answer is the gateway's).
    s.assert_rejected_with_json(
        &format!("CONNECT {outside} HTTP/1.1\r\nHost: {outside}\r\n\r\n"),
        405,
        "method_not_allowed",
    );
    // Forged Host and X-Forwarded-Host change nothing about where the request goes.
    for headers in [
        format!("Host: {outside}"),
        format!("Host: gateway\r\nX-Forwarded-Host: {outside}"),
    ] {
        let r = s.send(&format!(
            "GET /v1/proxy/product HTTP/1.1\r\n{headers}\r\nConnection: close\r\n\r\n"
        ));
        assert_eq!(r.response.and_then(|r| r.served_by()), Some(s.product.port));
    }
    // Two Host headers are ambiguous: Pingora refuses them.
    s.assert_rejected_with_json(
        &format!("GET /v1/proxy/product HTTP/1.1\r\nHost: gateway\r\nHost: {outside}\r\n\r\n"),
        400,
        "bad_request",
    );
    // Service names that are not names: 404, echoing nothing hostile.
    let long = "a".repeat(5000);
    for path in [
        "/v1/proxy/..",
        "/v1/proxy/../v1/proxy/product",
        "/v1/proxy/%2e%2e/product",
        "/v1/proxy/%2E%2E",
        "/v1/proxy/prod%2Fuct",
        "/v1/proxy/product%2F..%2F..",
        "/v1/proxy/a%00b",
        "/v1/proxy/a%0d%0aX-Injected:%20yes",
        "/v1/proxy/",
        "/v1/proxy//product",
        &format!("/v1/proxy/{long}"),
    ] {
        let r = s.send(&format!(
            "GET {path} HTTP/1.1\r\nHost: gateway\r\nConnection: close\r\n\r\n"
        ));
        let response = r
            .response
            .unwrap_or_else(|| panic!("no response for {path}"));
        assert_eq!(response.status, 404, "{path}: {response:?}");
        assert!(
            !response.body.contains("Injected") && response.body.len() < 200,
            "{path}"
        );
        assert_request_id(&response);
    }
    // A raw control character in the target never routes anywhere.
    let r =
        s.send("GET /v1/proxy/pro\x01duct HTTP/1.1\r\nHost: gateway\r\nConnection: close\r\n\r\n");
    assert_eq!(
        r.response.map(|r| r.status),
        Some(404),
        "Pingora escapes it; no such service"
    );
    s.assert_nothing_forwarded();
}

#[test]
fn ambiguous_framing_is_rejected_before_anything_is_forwarded() {
    let s = setup("");
    let post = "POST /v1/proxy/guarded HTTP/1.1\r\nHost: gateway\r\n";
    for raw in [
        format!("{post}Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
        format!("{post}Transfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n"),
        format!("{post}Content-Length: 4\r\nContent-Length: 4\r\n\r\nabcd"),
        format!("{post}Content-Length: 4, 4\r\n\r\nabcd"),
        "POST /v1/proxy/guarded HTTP/1.1\nHost: gateway\nContent-Length: 4\n\nabcd".to_owned(),
        "GET /v1/proxy/guarded HTTP/1.1\r\nHost: gateway\nX-A: b\r\n\r\n".to_owned(),
    ] {
        s.assert_rejected_with_json(&raw, 400, "bad_request");
    }
    // A body whose framing is not trusted is not waited for: the close comes at once, not after
    // a lingering close for bytes that may never come.
    s.assert_rejected_with_json(
        &format!("{post}Content-Length: 4\r\nContent-Length: 4\r\n\r\n"),
        400,
        "bad_request",
    );
    // What Pingora's parser refuses itself, before any hook runs: its empty 400 is replaced by
    // the gateway's JSON one.
    for raw in [
        format!("{post}Content-Length: 4\r\nContent-Length: 5\r\n\r\nabcd"),
        "GET /v1/proxy/guarded HTTP/1.1\r\nHost: gateway\r\nX-Folded: a\r\n b\r\n\r\n".to_owned(),
        format!("{post}Transfer-Encoding: gzip\r\n\r\nabcd"),
        "POST /v1/proxy/guarded HTTP/1.0\r\nHost: gateway\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
            .to_owned(),
        format!("{post}Content-Length: -1\r\n\r\n"),
        "GET /v1/proxy/guarded HTTP/1.1\r\nHost: gateway\r\nX-Bad: a\u{1}b\r\n\r\n".to_owned(),
        "GET /v1/proxy/guarded HTTP/1.1\r\nHost: gateway\r\nX B: c\r\n\r\n".to_owned(),
        "GET /v1/proxy/guarded HTTP/1.1\r\nHost: gateway\r\nHost: other\r\n\r\n".to_owned(),
    ] {
        s.assert_rejected_with_json(&raw, 400, "bad_request");
    }
    s.assert_nothing_forwarded();
}

#[test]
fn malformed_chunked_bodies_are_refused_before_anything_is_forwarded() {
    let s = setup("");
    let head =
        "POST /v1/proxy/guarded HTTP/1.1\r\nHost: gateway\r\nTransfer-Encoding: chunked\r\n\r\n";
    for body in [
        "zz\r\nabcd\r\n0\r\n\r\n",
        "4\nabcd\r\n0\r\n\r\n",
        "4\r\nabcdef\r\n0\r\n\r\n",
        "4 \r\nabcd\r\n0\r\n\r\n",
        "4\r\nabcd\r\n0\r\n\n",
    ] {
        s.assert_rejected_with_json(&format!("{head}{body}"), 400, "bad_request");
    }
    // A bad chunk that arrives a while after the head is refused just the same.
    let mut client = TcpStream::connect(("127.0.0.1", s.gateway.port)).unwrap();
    client.write_all(head.as_bytes()).unwrap();
    client.write_all(b"4\r\nab").unwrap();
    thread::sleep(Duration::from_millis(200));
    client.write_all(b"cd\r\nxyz\r\n").unwrap();
    client.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut answer = Vec::new();
    let _ = client.read_to_end(&mut answer);
    assert!(
        answer.starts_with(b"HTTP/1.1 400"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    s.assert_nothing_forwarded();
}

#[test]
fn valid_chunked_bodies_arrive_whole_however_they_are_split() {
    let s = setup("");
    let mut client = TcpStream::connect(("127.0.0.1", s.gateway.port)).unwrap();
    client
        .write_all(b"POST /v1/proxy/product HTTP/1.1\r\nHost: gateway\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhel")
        .unwrap();
    thread::sleep(Duration::from_millis(100));
    client.write_all(b"lo\r\n6\r\n world\r\n0\r\n\r\n").unwrap();
    client.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut raw = Vec::new();
    client.read_to_end(&mut raw).unwrap();
    let response = parse_response(&raw).unwrap();
    assert_eq!(response.status, 200, "{response:?}");
    assert!(response.body.ends_with("hello world"), "{response:?}");

    // Longer than the guard's look-ahead: checked in part, then streamed through whole.
    let chunk = format!("{:x}\r\n{}\r\n", 16 * 1024, "q".repeat(16 * 1024));
    let body: String = chunk.repeat(12) + "0\r\n\r\n";
    let r = exchange(
        s.gateway.port,
        format!(
            "POST /v1/proxy/product HTTP/1.1\r\nHost: gateway\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{body}"
        )
        .as_bytes(),
    );
    let response = r.response.expect("a response");
    assert_eq!(response.status, 200);
    assert_eq!(
        response.body.matches('q').count(),
        12 * 16 * 1024,
        "the whole body reached the backend"
    );
}

#[test]
fn limits_answer_431_and_413() {
    let s = setup("  max_header_count: 20\n  max_header_size: 4KiB\n");
    let many: String = (0..21).map(|i| format!("X-H{i}: v\r\n")).collect();
    s.assert_rejected_with_json(
        &format!("GET /v1/proxy/guarded HTTP/1.1\r\nHost: gateway\r\n{many}\r\n"),
        431,
        "request_header_fields_too_large",
    );
    s.assert_rejected_with_json(
        &format!(
            "GET /v1/proxy/guarded HTTP/1.1\r\nHost: gateway\r\nX-Big: {}\r\n\r\n",
            "b".repeat(5000)
        ),
        431,
        "request_header_fields_too_large",
    );
    // Declared too large: refused before connecting.
    s.assert_rejected_with_json(
        &format!(
            "POST /v1/proxy/guarded HTTP/1.1\r\nHost: gateway\r\nContent-Length: 2000\r\n\r\n{}",
            "x".repeat(2000)
        ),
        413,
        "payload_too_large",
    );
    s.assert_nothing_forwarded();

    // Chunked and too large: cut while streaming (product's limit is the 10 MiB default).
    let small = Mock::start(&[]);
    let gateway = Gateway::start(
        &format!(
            "small:\n  backends: [\"{}\"]\n  max_body_size: 1KiB\n",
            small.url()
        ),
        "  status_log: false\n",
    );
    let chunk = format!("400\r\n{}\r\n", "y".repeat(1024));
    let r = exchange(
        gateway.port,
        format!(
            "POST /v1/proxy/small HTTP/1.1\r\nHost: gateway\r\nTransfer-Encoding: chunked\r\n\r\n{chunk}{chunk}{chunk}0\r\n\r\n"
        )
        .as_bytes(),
    );
    let response = r.response.expect("a response");
    assert_eq!(response.status, 413, "{response:?}");
    assert!(response.body.contains("payload_too_large"), "{response:?}");
    assert!(r.closed);
    // Within the limit, to the byte: served.
    let ok = request(gateway.port, "POST", "/v1/proxy/small", &[], &[b'z'; 1024]);
    assert_eq!(ok.status, 200);
}

/// Reads until the peer closes the connection; how long that took, or `None` if it stayed
/// open for `patience`.
fn closed_within(stream: &mut TcpStream, patience: Duration) -> Option<Duration> {
    let started = Instant::now();
    stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut buf = [0u8; 4096];
    while started.elapsed() < patience {
        match stream.read(&mut buf) {
            Ok(0) => return Some(started.elapsed()),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return Some(started.elapsed())
            }
            Err(_) => {}
        }
    }
    None
}

#[test]
fn a_request_head_that_trickles_in_is_cut_off_and_costs_no_one_else() {
    let s = setup("  request_header_timeout: 500ms\n");
    // The first head of a connection, a byte every 100 ms.
    let mut slow = TcpStream::connect(("127.0.0.1", s.gateway.port)).unwrap();
    let trickle = thread::spawn({
        let mut slow = slow.try_clone().unwrap();
        move || {
            for &b in
                b"GET /v1/proxy/product HTTP/1.1\r\nHost: gateway\r\nX-Slow: aaaaaaaaaaaaaaaaaaaa"
            {
                if slow.write_all(&[b]).is_err() {
                    return;
                }
                thread::sleep(Duration::from_millis(100));
            }
        }
    });
    for _ in 0..10 {
        assert_eq!(
            s.gateway.get("/v1/proxy/product").status,
            200,
            "others are served"
        );
    }
    let closed = closed_within(&mut slow, Duration::from_secs(5));
    assert!(closed.is_some(), "the trickling connection stays open");
    trickle.join().unwrap();

    // The second head of a keep-alive connection: the deadline runs from its first byte, and
    // an idle wait before it (longer than the deadline) is not held against it.
    let mut client = TcpStream::connect(("127.0.0.1", s.gateway.port)).unwrap();
    let request = b"GET /v1/proxy/product HTTP/1.1\r\nHost: gateway\r\n\r\n";
    client.write_all(request).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    assert_eq!(read_one_response(&client).unwrap().status, 200);
    thread::sleep(Duration::from_millis(800));
    client.write_all(request).unwrap();
    assert_eq!(
        read_one_response(&client).unwrap().status,
        200,
        "idle, then a whole head: served"
    );
    client
        .write_all(b"GET /v1/proxy/product HTTP/1.1\r\nHo")
        .unwrap();
    assert!(
        closed_within(&mut client, Duration::from_secs(5)).is_some(),
        "a second head that stops halfway is cut off"
    );
    assert_eq!(s.outside.connections(), 0);
}

#[test]
fn a_full_listener_answers_503_and_serves_again_once_a_connection_closes() {
    let s = setup("  max_connections: 2\n");
    let held: Vec<Client> = (0..2)
        .map(|_| {
            let mut client = Client::new(s.gateway.port);
            // The harness's readiness probe may still hold a slot for a moment.
            assert!(wait_until(DEADLINE, || client
                .send("GET", "/v1/proxy/product", b"")
                .is_ok_and(|r| r.status == 200)));
            client
        })
        .collect();
    let refused = s.send("GET /v1/proxy/product HTTP/1.1\r\nHost: gateway\r\n\r\n");
    let response = refused.response.expect("an answer");
    assert_eq!(response.status, 503, "{response:?}");
    assert!(
        response.body.contains("too_many_connections"),
        "{response:?}"
    );
    assert_request_id(&response);
    assert!(refused.closed);
    // A refused client that had already sent a request with a body reads the 503 all the same:
    // closing with its bytes unread would be a reset, which can overtake the answer.
    for _ in 0..5 {
        let body = "x".repeat(32 * 1024);
        let refused = s.send(&format!(
            "POST /v1/proxy/product HTTP/1.1\r\nHost: gateway\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ));
        let response = refused
            .response
            .expect("the 503, though the body was not read");
        assert_eq!(response.status, 503, "{response:?}");
        assert!(refused.closed);
    }
    drop(held);
    assert!(
        wait_until(DEADLINE, || {
            try_request(s.gateway.port, "GET", "/v1/proxy/product", &[], b"")
                .is_ok_and(|r| r.status == 200)
        }),
        "slots are given back"
    );
}

#[test]
fn request_ids_tie_error_replies_to_log_lines_and_reach_the_backend() {
    let mut dead = Mock::start(&[]);
    dead.stop();
    let live = Mock::start(&[]);
    let gateway = Gateway::start(
        &(services_yaml("dead", &[dead.url()]) + &services_yaml("live", &[live.url()])),
        "  status_log: false\n",
    );
    let response = gateway.get("/v1/proxy/dead");
    assert_eq!(response.status, 502);
    assert_request_id(&response);
    let id = response.header("x-request-id").unwrap().to_owned();
    gateway.wait_for_log(&format!("request id {id}"));

    let served = request(
        gateway.port,
        "GET",
        "/v1/proxy/live",
        &[("X-Request-Id", "forged")],
        b"",
    );
    let forwarded = served.header("x-echo-x-request-id").unwrap_or_default();
    assert!(
        forwarded.len() == 16 && forwarded != "forged",
        "the backend gets the gateway's id: {served:?}"
    );
}

#[test]
fn a_trusted_forwarding_chain_is_kept_and_extended() {
    let s = setup("  trust_forwarded_for: true\n");
    let r = request(
        s.gateway.port,
        "GET",
        "/v1/proxy/product",
        &[("X-Forwarded-For", "203.0.113.7")],
        b"",
    );
    assert_eq!(
        r.header("x-echo-x-forwarded-for"),
        Some("203.0.113.7, 127.0.0.1")
    );
}

#[test]
fn slow_clients_are_counted_and_summed_up_not_logged_one_by_one() {
    let s = setup("  request_header_timeout: 300ms\n");
    let slow: Vec<TcpStream> = (0..20)
        .map(|_| {
            let mut stream = TcpStream::connect(("127.0.0.1", s.gateway.port)).unwrap();
            stream
                .write_all(b"GET /v1/proxy/product HTTP/1.1\r\nHost: a\r\n")
                .unwrap();
            stream
        })
        .collect();
    let client_errors = || {
        request(s.gateway.admin_port, "GET", "/metrics", &[], b"")
            .body
            .lines()
            .find_map(|l| l.strip_prefix("gateway_client_errors_total "))
            .and_then(|v| v.parse::<u64>().ok())
    };
    assert!(
        wait_until(DEADLINE, || client_errors() == Some(20)),
        "{:?}\n{}",
        client_errors(),
        s.gateway.log()
    );
    drop(slow);
    // The log is read off the process's output by a thread of the harness: wait for the line.
    s.gateway
        .wait_for_log("broke before their request head was read");
    let log = s.gateway.log();
    let errors = log
        .lines()
        .filter(|l| l.contains("ERROR") && l.contains("Fail to proxy"))
        .count();
    assert_eq!(errors, 0, "{log}");
    let summaries = log
        .matches("broke before their request head was read")
        .count();
    assert_eq!(summaries, 1, "one summary line for the burst:\n{log}");
}

#[test]
fn a_client_that_stops_reading_is_cut_at_the_write_timeout_and_costs_the_backend_nothing() {
    // 64 MiB: far more than the sockets between them buffer.
    let big = Mock::start(&["--body-bytes", "67108864"]);
    let gateway = Gateway::start(
        &services_yaml("product", &[big.url()]),
        "  status_log: false\n  client_write_timeout: 300ms\n  \
         defaults: {failure_threshold: 1, total_timeout: 1m, read_timeout: 1m}\n",
    );
    let mut client = TcpStream::connect(("127.0.0.1", gateway.port)).unwrap();
    client
        .write_all(b"GET /v1/proxy/product HTTP/1.1\r\nHost: gateway.test\r\n\r\n")
        .unwrap();
    // The client reads nothing: the gateway's writes to it stall, and it gives up on the
    // response 300 ms into a stall (else only the total timeout, a minute on, would end it).
    let outcome = |name: &str| {
        format!(
            r#"gateway_upstream_attempts_total{{service="product",backend="{}",outcome="{name}"}}"#,
            big.url()
        )
    };
    assert!(
        gateway.metric_reaches(&outcome("cancelled"), 1.0),
        "{}",
        gateway.log()
    );
    for name in ["success", "timeout", "broken_response"] {
        assert_eq!(gateway.metric(&outcome(name)), Some(0.0), "{name}");
    }
    // What the client finds when it reads at last: the start of the response, then the end of
    // the connection.
    client.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut received = Vec::new();
    let _ = client.read_to_end(&mut received);
    assert!(received.starts_with(b"HTTP/1.1 200"));
    assert!(received.len() < 64 << 20, "{} bytes", received.len());
}
