//! Long-lived exchanges are nobody's failure: a WebSocket (a real client, `tungstenite`, through
//! the gateway to the mock's echo) outlives the service's read and total timeouts and is bounded
//! only by its upgrade idle timeout; a streamed response cut by the gateway's own total
//! timeout does not count against the backend that was delivering it. Each test asserts the
//! backend's breaker and metrics afterwards, with `failure_threshold: 1`, so one miscounted
//! failure would open it.

mod common;

use std::net::TcpStream;
use std::thread;
use std::time::Duration;

use common::*;
use tungstenite::{Message, WebSocket};

/// A gateway over `mock` as service `product`, with `overrides` for the service.
fn gateway_over(mock: &Mock, overrides: &str) -> Gateway {
    Gateway::start(
        &format!(
            "product:\n  backends: [\"{}\"]\n  failure_threshold: 1\n  open_timeout: 1m\n{overrides}",
            mock.url()
        ),
        "  status_log: false\n",
    )
}

/// A WebSocket through the gateway to the mock's echo.
fn open_websocket(gateway: &Gateway) -> WebSocket<TcpStream> {
    let stream = TcpStream::connect(("127.0.0.1", gateway.port)).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    let url = format!("ws://127.0.0.1:{}/v1/proxy/product/ws", gateway.port);
    let (socket, response) = tungstenite::client(url.as_str(), stream).expect("the upgrade");
    assert_eq!(response.status(), 101);
    socket
}

fn echo(socket: &mut WebSocket<TcpStream>, text: &str) {
    socket.send(Message::text(text)).expect("send");
    let reply = socket.read().expect("the echo");
    assert_eq!(reply, Message::text(text));
}

/// The `/metrics` sample for the product backend's `outcome`.
fn attempts(gateway: &Gateway, mock: &Mock, outcome: &str) -> u64 {
    let metrics = request(gateway.admin_port, "GET", "/metrics", &[], b"").body;
    let series = format!(
        r#"gateway_upstream_attempts_total{{service="product",backend="{}",outcome="{outcome}"}} "#,
        mock.url()
    );
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(&series))
        .unwrap_or_else(|| panic!("no {series} in\n{metrics}"))
        .parse()
        .unwrap()
}

fn breaker_is_closed(gateway: &Gateway, mock: &Mock) -> bool {
    let metrics = request(gateway.admin_port, "GET", "/metrics", &[], b"").body;
    metrics.contains(&format!(
        r#"gateway_breaker_state{{service="product",backend="{}",state="closed"}} 1"#,
        mock.url()
    ))
}

#[test]
fn a_websocket_outlives_the_read_and_total_timeouts_and_its_end_counts_nothing() {
    let mock = Mock::start(&[]);
    let gateway = gateway_over(&mock, "  read_timeout: 200ms\n  total_timeout: 400ms\n");
    let mut socket = open_websocket(&gateway);
    echo(&mut socket, "first");
    // Idle for longer than the read timeout and, all told, open for longer than the total
    // timeout: a gateway that applied either would have cut the connection by now.
    thread::sleep(Duration::from_millis(700));
    echo(&mut socket, "after the idle time");
    socket.close(None).unwrap();
    while socket.read().is_ok() {}
    // The upgrade settled the attempt as a success; its end is no outcome at all.
    assert!(wait_until(DEADLINE, || attempts(
        &gateway, &mock, "success"
    ) == 1));
    for outcome in ["timeout", "broken_response", "connect_error", "http_5xx"] {
        assert_eq!(attempts(&gateway, &mock, outcome), 0, "{outcome}");
    }
    assert!(breaker_is_closed(&gateway, &mock));
    assert_eq!(gateway.get("/v1/proxy/product").status, 200);
}

#[test]
fn the_first_message_after_an_upgrade_always_gets_through() {
    // Pingora 0.9.1 could take the request's own end, still in its pipe when the `101` was
    // read, for the end of the upgraded stream and close it at once: a race, so many rounds.
    let mock = Mock::start(&[]);
    let gateway = gateway_over(&mock, "");
    for round in 0..200 {
        let mut socket = open_websocket(&gateway);
        echo(&mut socket, &format!("round {round}"));
    }
    assert_eq!(attempts(&gateway, &mock, "success"), 200);
    assert_eq!(attempts(&gateway, &mock, "broken_response"), 0);
}

#[test]
fn a_websocket_idle_past_its_upgrade_idle_timeout_is_closed_and_counts_nothing() {
    let mock = Mock::start(&[]);
    let gateway = gateway_over(&mock, "  upgrade_idle_timeout: 300ms\n");
    let mut socket = open_websocket(&gateway);
    echo(&mut socket, "hello");
    // Nothing more is sent either way: the gateway closes the connection at its idle timeout.
    let end = socket.read();
    assert!(
        !matches!(end, Ok(Message::Text(_) | Message::Binary(_))),
        "{end:?}"
    );
    assert_eq!(attempts(&gateway, &mock, "success"), 1);
    assert_eq!(attempts(&gateway, &mock, "timeout"), 0);
    assert!(breaker_is_closed(&gateway, &mock));
}

#[test]
fn a_response_cut_by_the_total_timeout_while_arriving_is_not_the_backends_failure() {
    // Five body parts 300 ms apart: the header arrives at once, the total timeout cuts the body.
    let streaming = Mock::start(&["--slow-body-ms", "300"]);
    let gateway = gateway_over(&streaming, "  total_timeout: 500ms\n  read_timeout: 5s\n");
    let response = raw_get(gateway.port, "/v1/proxy/product");
    let full = format!("Hello from {}\n", streaming.port);
    assert!(
        response
            .as_ref()
            .map_or(true, |r| r.status == 200 && r.body.len() < full.len()),
        "the body is cut: {response:?}"
    );
    assert!(wait_until(DEADLINE, || {
        attempts(&gateway, &streaming, "cut_by_deadline") == 1
    }));
    assert_eq!(attempts(&gateway, &streaming, "timeout"), 0);
    assert!(breaker_is_closed(&gateway, &streaming));
    gateway.wait_for_log("was cut at its total_timeout");
}
