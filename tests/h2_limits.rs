//! HTTP/2 limits and abuse, with a raw HTTP/2 client (the `h2` crate) on h2c: concurrent
//! streams per connection, the header list size, the rapid-reset pattern (CVE-2023-44487) fast
//! and slow, a CONTINUATION flood, a client that never reads, and one that resets a stream its
//! backend is slow to answer. Each case asserts what the client sees and what reached the
//! backend (its attempts in `/metrics`).

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use h2::client;
use http::Request;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn gateway() -> (Gateway, Mock) {
    let mock = Mock::start(&[]);
    let gateway = Gateway::start(
        &services_yaml("product", &[mock.url()]),
        "  status_log: false\n",
    );
    (gateway, mock)
}

/// The product backend's client attempts, all outcomes.
fn attempts(gateway: &Gateway, mock: &Mock) -> u64 {
    let metrics = request(gateway.admin_port, "GET", "/metrics", &[], b"").body;
    let prefix = format!(
        r#"gateway_upstream_attempts_total{{service="product",backend="{}","#,
        mock.url()
    );
    metrics
        .lines()
        .filter(|line| line.starts_with(&prefix))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

async fn connect(
    port: u16,
) -> (
    client::SendRequest<Bytes>,
    tokio::task::JoinHandle<Result<(), h2::Error>>,
) {
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let (send, connection) = client::handshake(tcp).await.expect("h2c handshake");
    (send, tokio::spawn(connection))
}

fn get(path: &str) -> Request<()> {
    Request::builder()
        .uri(format!("http://gateway.test{path}"))
        .body(())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rapid_reset_flood_reaches_the_backend_boundedly_and_others_are_served() {
    let (gateway, mock) = gateway();
    let (mut send, connection) = connect(gateway.port).await;
    let mut opened = 0;
    for _ in 0..2000 {
        let Ok(ready) = send.clone().ready().await else {
            break;
        };
        send = ready;
        match send.send_request(get("/v1/proxy/product"), true) {
            Ok((response, mut stream)) => {
                stream.send_reset(h2::Reason::CANCEL);
                drop(response);
                opened += 1;
            }
            Err(_) => break,
        }
    }
    drop(send);
    let ended = tokio::time::timeout(DEADLINE, connection).await;
    // Streams reset as they open never get far: a few reach the backend, not thousands. (The
    // connection is ended by h2's limit on resets of streams not yet accepted, or by the
    // gateway's on accepted ones: the next test.)
    let reached = attempts(&gateway, &mock);
    eprintln!(
        "rapid reset: {opened} streams opened and reset, {reached} reached the backend, \
         connection: {ended:?}"
    );
    assert!(
        reached <= 200,
        "{reached} of {opened} reset streams reached the backend"
    );
    let fresh = tokio::task::spawn_blocking({
        let port = gateway.port;
        move || try_request(port, "GET", "/v1/proxy/product", &[], b"")
    })
    .await
    .unwrap();
    assert_eq!(fresh.map(|r| r.status).ok(), Some(200));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_resets_the_streams_it_opened_is_cut_off() {
    // The slow form of rapid reset: each stream is accepted and under way (at the backend)
    // before the client resets it, so h2's own limit (resets of streams not yet accepted)
    // never counts them; the gateway's per-connection count of client resets does.
    let mock = Mock::start(&["--delay-ms", "2000"]);
    let gateway = Gateway::start(
        &services_yaml("product", &[mock.url()]),
        "  status_log: false\n",
    );
    let (mut send, connection) = connect(gateway.port).await;
    let routed = |gateway: &Gateway| {
        gateway
            .metric(r#"gateway_service_requests_total{service="product"}"#)
            .unwrap_or(0.0) as usize
    };
    let mut opened = 0;
    'rounds: for _ in 0..10 {
        let mut streams = Vec::new();
        for _ in 0..50 {
            let Ok(ready) = send.clone().ready().await else {
                break 'rounds;
            };
            send = ready;
            match send.send_request(get("/v1/proxy/product"), true) {
                Ok((_response, stream)) => streams.push(stream),
                Err(_) => break 'rounds,
            }
            opened += 1;
        }
        // Every stream so far is under way before this round's are reset (unless the
        // connection has been ended meanwhile).
        assert!(tokio::task::block_in_place(|| wait_until(DEADLINE, || {
            connection.is_finished() || routed(&gateway) >= opened
        })));
        if connection.is_finished() {
            break;
        }
        for mut stream in streams {
            stream.send_reset(h2::Reason::CANCEL);
        }
    }
    let ended = tokio::time::timeout(DEADLINE, connection)
        .await
        .expect("the connection ends")
        .unwrap();
    let goaway = ended.expect_err("ended by the gateway");
    assert_eq!(
        goaway.reason(),
        Some(h2::Reason::ENHANCE_YOUR_CALM),
        "{goaway:?}"
    );
    assert!(opened < 500, "{opened} streams opened before the cut");
    gateway.wait_for_log("ending downstream h2 connection: its client reset");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_list_over_the_limit_is_refused() {
    let (gateway, mock) = gateway();
    let (send, _connection) = connect(gateway.port).await;
    let mut send = send.ready().await.unwrap();
    let mut request = get("/v1/proxy/product");
    request.headers_mut().insert(
        "x-big",
        http::HeaderValue::from_str(&"a".repeat(70 * 1024)).unwrap(),
    );
    let refused = match send.send_request(request, true) {
        Err(_) => true,
        Ok((response, _)) => match tokio::time::timeout(DEADLINE, response).await {
            Ok(Ok(response)) => response.status() == 431,
            Ok(Err(_)) => true,
            Err(_) => false,
        },
    };
    assert!(refused, "a 70 KiB header list went through");
    assert_eq!(attempts(&gateway, &mock), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_streams_are_bounded_per_connection() {
    let (gateway, _mock) = gateway();
    let tcp = TcpStream::connect(("127.0.0.1", gateway.port))
        .await
        .unwrap();
    let (send, connection) = client::handshake(tcp).await.unwrap();
    tokio::spawn(connection);
    let mut send = send.ready().await.unwrap();
    // Once a response has come back, the server's SETTINGS are in: how many streams a
    // client may open at once.
    let (response, _) = send.send_request(get("/v1/proxy/product"), true).unwrap();
    assert_eq!(response.await.unwrap().status(), 200);
    let send = send.ready().await.unwrap();
    let limit = send.current_max_send_streams();
    assert!(
        (1..=1000).contains(&limit),
        "max concurrent streams {limit}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_continuation_flood_is_cut_off() {
    let (gateway, mock) = gateway();
    let mut tcp = TcpStream::connect(("127.0.0.1", gateway.port))
        .await
        .unwrap();
    // Preface, empty SETTINGS, then HEADERS without END_HEADERS followed by endless
    // CONTINUATION frames (each 16 KiB of one literal header field's bytes).
    tcp.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    tcp.write_all(&frame(0x4, 0, 0, &[])).await.unwrap();
    let headers = [0x82u8, 0x86, 0x84, 0x41, 0x01, b'a']; // :method GET, :scheme http, :path /, :authority a
    tcp.write_all(&frame(0x1, 0, 1, &headers)).await.unwrap();
    let junk = vec![0u8; 16 * 1024];
    let mut sent = 0usize;
    let cut = loop {
        if sent > 64 * 1024 * 1024 {
            break false;
        }
        match tcp.write_all(&frame(0x9, 0, 1, &junk)).await {
            Ok(()) => sent += junk.len(),
            Err(_) => break true,
        }
        // Read whatever the server says; a GOAWAY or a close ends the flood.
        let mut buf = [0u8; 4096];
        match tokio::time::timeout(Duration::from_millis(1), tcp.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(n)) if has_goaway(&buf[..n]) => break true,
            _ => {}
        }
    };
    assert!(
        cut,
        "the gateway read {} MiB of CONTINUATION frames",
        sent >> 20
    );
    assert!(sent < 8 * 1024 * 1024, "cut only after {} KiB", sent >> 10);
    assert_eq!(attempts(&gateway, &mock), 0);
}

/// An HTTP/2 frame: length, type, flags, stream id, payload.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut out = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// Whether `bytes` hold a GOAWAY frame at a frame boundary from their start.
fn has_goaway(mut bytes: &[u8]) -> bool {
    while bytes.len() >= 9 {
        let len = usize::from(bytes[0]) << 16 | usize::from(bytes[1]) << 8 | usize::from(bytes[2]);
        if bytes[3] == 0x7 {
            return true;
        }
        bytes = bytes.get(9 + len..).unwrap_or(&[]);
    }
    false
}

/// The gateway process's resident memory, in KiB.
fn rss_kib(gateway: &Gateway) -> u64 {
    std::fs::read_to_string(format!("/proc/{}/status", gateway.pid()))
        .unwrap()
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_does_not_stall_the_gateway() {
    // 4 MiB responses, and a client that opens 50 streams and reads none of them: 200 MiB if
    // the gateway buffered them; the flow-control windows (64 KiB a stream) and back-pressure
    // to the backend bound it (about 0.5 MiB a stream here, whatever the body's size). Others
    // are still served.
    let mock = Mock::start(&["--body-bytes", "4194304"]);
    let gateway = Gateway::start(
        &services_yaml("product", &[mock.url()]),
        "  status_log: false\n  client_write_timeout: 3s\n",
    );
    assert_eq!(gateway.get("/v1/proxy/product").status, 200);
    let before = rss_kib(&gateway);
    let (send, _connection) = connect(gateway.port).await;
    let mut send = send.ready().await.unwrap();
    let mut held = Vec::new();
    for _ in 0..50 {
        send = send.ready().await.unwrap();
        if let Ok((response, _)) = send.send_request(get("/v1/proxy/product"), true) {
            held.push(response);
        }
    }
    // Every stream has reached the backend, which is sending its megabyte.
    assert!(tokio::task::block_in_place(|| wait_until(DEADLINE, || {
        gateway.metric(r#"gateway_service_requests_total{service="product"}"#) >= Some(51.0)
    })));
    // Let the buffers fill: until the gateway's memory stops growing (or 3 s).
    let mut last = rss_kib(&gateway);
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = rss_kib(&gateway);
        if now.abs_diff(last) < 256 {
            break;
        }
        last = now;
    }
    let grown = rss_kib(&gateway).saturating_sub(before);
    assert!(
        grown < 64 * 1024,
        "{grown} KiB more for 50 unread streams of 4 MiB"
    );
    // Meanwhile another client is served at once.
    let response = tokio::task::spawn_blocking({
        let port = gateway.port;
        move || try_request(port, "GET", "/v1/proxy/product", &[], b"")
    })
    .await
    .unwrap();
    assert_eq!(response.map(|r| r.status).ok(), Some(200));
    // And the unread streams end at the write timeout, the client still connected: nobody's
    // failure.
    let cancelled = format!(
        r#"gateway_upstream_attempts_total{{service="product",backend="{}",outcome="cancelled"}}"#,
        mock.url()
    );
    assert!(tokio::task::block_in_place(
        || gateway.metric_reaches(&cancelled, 50.0)
    ));
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_reset_while_its_backend_is_silent_ends_at_once_and_costs_it_nothing() {
    // One failure would open this breaker; a reset must count as neither failure nor success.
    // The backend never answers: only the reset can end the stream before the test's deadline.
    let slow = Mock::start(&["--hang"]);
    let gateway = Gateway::start(
        &services_yaml("product", &[slow.url()]),
        "  status_log: false\n  defaults: {failure_threshold: 1, open_timeout: 1m}\n",
    );
    let (send, _connection) = connect(gateway.port).await;
    let mut send = send.ready().await.unwrap();
    let (response, mut stream) = send.send_request(get("/v1/proxy/product"), true).unwrap();
    // Reset once the request is with the backend, before its answer.
    assert!(tokio::task::block_in_place(|| wait_until(DEADLINE, || {
        gateway.metric(r#"gateway_service_requests_total{service="product"}"#) == Some(1.0)
    })));
    stream.send_reset(h2::Reason::CANCEL);
    drop(response);
    let cancelled = format!(
        r#"gateway_upstream_attempts_total{{service="product",backend="{}",outcome="cancelled"}}"#,
        slow.url()
    );
    assert!(
        tokio::task::block_in_place(|| gateway.metric_reaches(&cancelled, 1.0)),
        "{}",
        gateway.log()
    );
    gateway.assert_no_verdict_on(&slow);
    let closed = format!(
        r#"gateway_breaker_state{{service="product",backend="{}",state="closed"}}"#,
        slow.url()
    );
    assert_eq!(gateway.metric(&closed), Some(1.0));
}
