//! gRPC end to end: a real gRPC client and server (grpcio, `tests/grpc/greeter.py`) through the
//! gateway over h2c. The service claims `/helloworld.Greeter/` as a path prefix, so the client
//! calls its methods unchanged; unary and all three streaming kinds, metadata and trailers pass;
//! a stopped replica fails over; the gateway's own errors are gRPC statuses; a backend's
//! UNAVAILABLE counts against its breaker while other gRPC statuses do not.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use common::*;

const GREETER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/grpc/greeter.py");

/// A greeter server process, killed when dropped.
struct Greeter {
    child: Child,
    port: u16,
}

impl Greeter {
    fn start() -> Self {
        let port = free_port();
        let mut child = Command::new("python3")
            .args([GREETER, "server", &port.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("run python3 (with grpcio: scripts/setup.sh installs it)");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(line.starts_with("greeter listening"), "greeter: {line:?}");
        Greeter { child, port }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Greeter {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Runs a client scenario against the gateway; its `key=value` lines.
fn call(gateway: &Gateway, scenario: &str) -> HashMap<String, String> {
    let output = Command::new("python3")
        .args([
            GREETER,
            "client",
            &format!("127.0.0.1:{}", gateway.port),
            scenario,
        ])
        .output()
        .expect("run the gRPC client");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{scenario}: {text}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// A gateway with service `greeter` (HTTP/2 to its backends, claiming the Greeter's prefix).
fn gateway_over(backends: &[String], extra: &str) -> Gateway {
    let list: Vec<String> = backends.iter().map(|b| format!("\"{b}\"")).collect();
    Gateway::start(
        &format!(
            "greeter:\n  backends: [{}]\n  protocol: http2\n  path_prefixes: [/helloworld.Greeter/]\n  \
             open_timeout: 1m\n{extra}",
            list.join(", ")
        ),
        "  status_log: false\n",
    )
}

#[test]
fn unary_and_streaming_calls_pass_with_their_metadata_and_trailers() {
    let greeter = Greeter::start();
    let gateway = gateway_over(&[greeter.url()], "");
    let unary = call(&gateway, "unary");
    assert_eq!(unary["status"], "OK", "{unary:?}");
    assert_eq!(unary["reply"], format!("hello world from {}", greeter.port));
    assert_eq!(
        unary["served_by"],
        greeter.port.to_string(),
        "trailers intact"
    );
    assert_eq!(unary["client_seen"], "tests", "request metadata intact");
    let streaming = call(&gateway, "server_streaming");
    assert_eq!(streaming["replies"], "3 go|2 go|1 go", "{streaming:?}");
    assert_eq!(streaming["served_by"], greeter.port.to_string());
    assert_eq!(call(&gateway, "client_streaming")["reply"], "a,b,c");
    assert_eq!(call(&gateway, "bidi")["replies"], "echo one|echo two");
    // The application's own statuses are its business, not the breaker's.
    let unknown = call(&gateway, "unknown");
    assert_eq!(unknown["status"], "NOT_FOUND", "{unknown:?}");
}

#[test]
fn a_stopped_replica_fails_over_and_all_open_is_unavailable_with_a_message() {
    let (a, mut b) = (Greeter::start(), Greeter::start());
    let gateway = gateway_over(&[a.url(), b.url()], "  failure_threshold: 1\n");
    b.stop();
    for _ in 0..4 {
        let reply = call(&gateway, "unary");
        assert_eq!(reply["status"], "OK", "{reply:?}");
        assert_eq!(reply["served_by"], a.port.to_string());
    }
    gateway.wait_for_log(&format!("[CIRCUIT] {} OPEN", b.url()));
    let mut a = a;
    a.stop();
    // One call finds a's connection refused (breaker opens), then every breaker is open.
    let first = call(&gateway, "unary_once");
    assert_eq!(first["status"], "UNAVAILABLE", "{first:?}");
    let all_open = call(&gateway, "unary_once");
    assert_eq!(all_open["status"], "UNAVAILABLE", "{all_open:?}");
    assert!(
        all_open["message"].contains("every backend of service \"greeter\" is unavailable"),
        "{all_open:?}"
    );
}

#[test]
fn the_gateways_own_timeout_is_deadline_exceeded() {
    let greeter = Greeter::start();
    let gateway = gateway_over(&[greeter.url()], "  response_header_timeout: 300ms\n");
    let slow = call(&gateway, "slow");
    assert_eq!(slow["status"], "DEADLINE_EXCEEDED", "{slow:?}");
}

#[test]
fn a_backends_unavailable_counts_against_it() {
    let greeter = Greeter::start();
    let gateway = gateway_over(&[greeter.url()], "  failure_threshold: 2\n");
    for _ in 0..2 {
        let reply = call(&gateway, "unavailable");
        assert_eq!(reply["status"], "UNAVAILABLE");
        assert_eq!(
            reply["message"], "this replica cannot serve",
            "the backend's own"
        );
    }
    gateway.wait_for_log(&format!(
        "[CIRCUIT] {} OPEN (threshold reached)",
        greeter.url()
    ));
}

#[test]
fn an_unknown_path_is_not_found_as_a_grpc_status() {
    let greeter = Greeter::start();
    let gateway = Gateway::start(
        &format!(
            "greeter:\n  backends: [\"{}\"]\n  protocol: http2\n  path_prefixes: [/other.Service/]\n",
            greeter.url()
        ),
        "  status_log: false\n",
    );
    let reply = call(&gateway, "unary");
    assert_eq!(reply["status"], "NOT_FOUND", "{reply:?}");
    assert!(reply["message"].contains("no route"), "{reply:?}");
}

#[test]
fn the_mock_backends_grpc_service_answers_through_the_gateway() {
    let mock = Mock::start(&["--h2"]);
    let gateway = Gateway::start(
        &format!(
            "echo:\n  backends: [\"{}\"]\n  protocol: http2\n  path_prefixes: [/mock.Echo/]\n",
            mock.url()
        ),
        "  status_log: false\n",
    );
    let reply = call(&gateway, "mock_echo");
    assert_eq!(reply["reply"], "ping", "{reply:?}");
    assert_eq!(reply["replies"], "tick|tick|tick");
    assert_eq!(reply["status"], "UNAVAILABLE", "the last call: {reply:?}");
}
