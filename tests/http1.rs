//! HTTP/1.1 edge cases found side by side with nginx: streamed bodies, pipelining, `Expect`,
//! dot segments, spoofable headers, framing, absolute-form targets, long targets.
//!
//! Both ends are raw sockets where the bytes are the point: the client writes exact requests
//! and the backend ([`RawBackend`]) runs a script per connection and records every byte it
//! read, so each test can say what reached the backend as well as what the client got. Steps
//! that must happen in order are sequenced by channels, never by sleeps.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use common::*;

/// A backend connection as a script sees it: reads are recorded.
struct BackendConn {
    reader: BufReader<TcpStream>,
    received: Arc<Mutex<Vec<u8>>>,
    request_lines: Arc<Mutex<Vec<String>>>,
}

impl BackendConn {
    /// Reads one request head (up to its blank line); empty at end of stream.
    fn read_head(&mut self) -> String {
        let mut head = String::new();
        loop {
            let mut line = String::new();
            if self.reader.read_line(&mut line).unwrap_or(0) == 0 {
                return head;
            }
            self.received
                .lock()
                .unwrap()
                .extend_from_slice(line.as_bytes());
            if head.is_empty() {
                let request_line = line.trim_end().to_owned();
                self.request_lines.lock().unwrap().push(request_line);
            }
            head.push_str(&line);
            if line == "\r\n" {
                return head;
            }
        }
    }

    /// Reads exactly `n` body bytes.
    fn read_body(&mut self, n: usize) -> Vec<u8> {
        let mut body = vec![0; n];
        self.reader
            .read_exact(&mut body)
            .expect("read the request body");
        self.received.lock().unwrap().extend_from_slice(&body);
        body
    }

    /// Reads (and records) whatever else arrives until the gateway closes the connection.
    fn read_to_end(&mut self) {
        let mut rest = Vec::new();
        let _ = self.reader.read_to_end(&mut rest);
        self.received.lock().unwrap().extend_from_slice(&rest);
    }

    fn write(&mut self, bytes: &[u8]) {
        self.reader
            .get_mut()
            .write_all(bytes)
            .expect("backend write");
    }
}

/// One backend connection's record: everything read on it, and whether it has ended.
struct Recorded {
    received: Arc<Mutex<Vec<u8>>>,
    ended: Arc<Mutex<bool>>,
}

/// A listener that runs `script` on each connection it accepts.
struct RawBackend {
    port: u16,
    connections: Arc<Mutex<Vec<Recorded>>>,
    /// The request line of every request read, on any connection, in arrival order.
    request_lines: Arc<Mutex<Vec<String>>>,
}

impl RawBackend {
    fn start(script: impl Fn(&mut BackendConn) + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let connections = Arc::new(Mutex::new(Vec::new()));
        let request_lines = Arc::new(Mutex::new(Vec::new()));
        let record = connections.clone();
        let lines = request_lines.clone();
        let script = Arc::new(script);
        thread::spawn(move || {
            for stream in listener.incoming().map_while(Result::ok) {
                let (received, ended) = (Arc::default(), Arc::new(Mutex::new(false)));
                record.lock().unwrap().push(Recorded {
                    received: Arc::clone(&received),
                    ended: Arc::clone(&ended),
                });
                let (script, request_lines) = (script.clone(), lines.clone());
                thread::spawn(move || {
                    stream.set_read_timeout(Some(DEADLINE)).unwrap();
                    let mut conn = BackendConn {
                        reader: BufReader::new(stream),
                        received,
                        request_lines,
                    };
                    script(&mut conn);
                    *ended.lock().unwrap() = true;
                });
            }
        });
        RawBackend {
            port,
            connections,
            request_lines,
        }
    }

    /// A backend that answers every request on a connection with `200 ok`, reading its
    /// `Content-Length` body first.
    fn ok() -> Self {
        Self::start(|conn| loop {
            let head = conn.read_head();
            if head.is_empty() {
                return;
            }
            conn.read_body(content_length(&head));
            conn.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
        })
    }

    fn url(&self, prefix: &str) -> String {
        format!("http://127.0.0.1:{}{prefix}", self.port)
    }

    fn request_lines(&self) -> Vec<String> {
        self.request_lines.lock().unwrap().clone()
    }

    fn connection_count(&self) -> usize {
        self.connections.lock().unwrap().len()
    }

    /// Everything connection `i` has read so far, as text.
    fn received(&self, i: usize) -> String {
        let connections = self.connections.lock().unwrap();
        let bytes = connections[i].received.lock().unwrap();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    fn ended(&self, i: usize) -> bool {
        *self.connections.lock().unwrap()[i].ended.lock().unwrap()
    }
}

fn content_length(head: &str) -> usize {
    head.lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0)
}

/// A raw client connection to the gateway.
struct ClientConn(BufReader<TcpStream>);

impl ClientConn {
    fn open(port: u16) -> Self {
        let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream.set_read_timeout(Some(DEADLINE)).unwrap();
        ClientConn(BufReader::new(stream))
    }

    fn send(&mut self, bytes: &[u8]) {
        self.0.get_mut().write_all(bytes).expect("client write");
    }

    /// Reads one response head as it is on the wire, up to and with its empty line.
    fn read_raw_head(&mut self) -> String {
        let mut head = String::new();
        while !head.ends_with("\r\n\r\n") {
            assert_ne!(
                self.0.read_line(&mut head).expect("a head line"),
                0,
                "{head}"
            );
        }
        head
    }

    /// Reads one response head: its status and header lines (names lower-cased).
    fn read_head(&mut self) -> (u16, Vec<(String, String)>) {
        let mut status_line = String::new();
        self.0.read_line(&mut status_line).expect("a status line");
        let status = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no status in {status_line:?}"));
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            self.0.read_line(&mut line).expect("a header line");
            if line == "\r\n" || line.is_empty() {
                return (status, headers);
            }
            let (name, value) = line.split_once(':').expect("a header field");
            headers.push((name.to_ascii_lowercase(), value.trim().to_owned()));
        }
    }

    fn read_exact(&mut self, n: usize) -> String {
        let mut body = vec![0; n];
        self.0.read_exact(&mut body).expect("the response body");
        String::from_utf8(body).unwrap()
    }

    /// Reads a whole final response with a `Content-Length` body.
    fn read_response(&mut self) -> (u16, Vec<(String, String)>, String) {
        let (status, headers) = self.read_head();
        let length = header(&headers, "content-length").map_or(0, |v| v.parse().unwrap());
        let body = self.read_exact(length);
        (status, headers, body)
    }

    /// Whether the gateway closed the connection: the next read ends the stream.
    fn closed(&mut self) -> bool {
        let mut byte = [0; 1];
        matches!(self.0.read(&mut byte), Ok(0))
    }
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// A gateway with service `svc` over `backend` under the `/api` prefix.
fn gateway_for(backend: &RawBackend, service_extra: &str, gateway_extra: &str) -> Gateway {
    Gateway::start(
        &format!(
            "svc:\n  backends: [\"{}\"]\n{service_extra}",
            backend.url("/api")
        ),
        &format!("  status_log: false\n{gateway_extra}"),
    )
}

/// A step the test hands to a backend script.
fn step() -> (Sender<()>, Arc<Mutex<Receiver<()>>>) {
    let (tx, rx) = channel();
    (tx, Arc::new(Mutex::new(rx)))
}

#[test]
fn a_content_length_body_reaches_the_client_as_it_arrives() {
    let (release, released) = step();
    let backend = RawBackend::start(move |conn| {
        conn.read_head();
        conn.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello");
        released.lock().unwrap().recv().unwrap();
        conn.write(b"world");
    });
    let gateway = gateway_for(&backend, "", "");
    let mut client = ClientConn::open(gateway.port);
    client.send(b"GET /v1/proxy/svc/x HTTP/1.1\r\nHost: gw\r\n\r\n");
    // The backend sends "world" only once the client has read "hello": a gateway that holds
    // "hello" until the next piece arrives leaves this read waiting until DEADLINE.
    let (status, _) = client.read_head();
    assert_eq!(status, 200);
    assert_eq!(client.read_exact(5), "hello");
    release.send(()).unwrap();
    assert_eq!(client.read_exact(5), "world");
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let backend = RawBackend::ok();
    let gateway = gateway_for(&backend, "", "");
    let mut client = ClientConn::open(gateway.port);
    client.send(
        b"GET /v1/proxy/svc/1 HTTP/1.1\r\nHost: gw\r\n\r\n\
          POST /v1/proxy/svc/2 HTTP/1.1\r\nHost: gw\r\nContent-Length: 3\r\n\r\nabc\
          GET /v1/proxy/svc/3 HTTP/1.1\r\nHost: gw\r\n\r\n",
    );
    for _ in 0..3 {
        let (status, headers, body) = client.read_response();
        assert_eq!((status, body.as_str()), (200, "ok"));
        assert_eq!(header(&headers, "connection"), Some("keep-alive"));
    }
    let received: String = (0..backend.connection_count())
        .map(|i| backend.received(i))
        .collect();
    assert!(received.contains("\r\n\r\nabc"), "{received}");
    assert_eq!(
        backend.request_lines(),
        [
            "GET /api/1 HTTP/1.1",
            "POST /api/2 HTTP/1.1",
            "GET /api/3 HTTP/1.1"
        ]
    );
}

#[test]
fn a_request_pipelined_while_a_response_streams_is_answered_after_it() {
    let (release, released) = step();
    let backend = RawBackend::start(move |conn| loop {
        let head = conn.read_head();
        if head.is_empty() {
            return;
        }
        if head.starts_with("GET /api/slow") {
            conn.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello");
            released.lock().unwrap().recv().unwrap();
            conn.write(b"world");
        } else {
            conn.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
        }
    });
    let gateway = gateway_for(&backend, "", "");
    let mut client = ClientConn::open(gateway.port);
    client.send(b"GET /v1/proxy/svc/slow HTTP/1.1\r\nHost: gw\r\n\r\n");
    assert_eq!(client.read_head().0, 200);
    assert_eq!(client.read_exact(5), "hello");
    client.send(b"GET /v1/proxy/svc/next HTTP/1.1\r\nHost: gw\r\n\r\n");
    release.send(()).unwrap();
    assert_eq!(client.read_exact(5), "world");
    let (status, _, body) = client.read_response();
    assert_eq!((status, body.as_str()), (200, "ok"));
}

/// A backend that never sends `100 Continue` itself: it reads the body and echoes it.
fn echo_backend() -> RawBackend {
    RawBackend::start(|conn| loop {
        let head = conn.read_head();
        if head.is_empty() {
            return;
        }
        let body = conn.read_body(content_length(&head));
        conn.write(format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len()).as_bytes());
        conn.write(&body);
    })
}

#[test]
fn expect_100_continue_is_answered_by_the_gateway_and_not_forwarded() {
    let backend = echo_backend();
    let gateway = gateway_for(&backend, "", "");
    let mut client = ClientConn::open(gateway.port);
    client.send(
        b"POST /v1/proxy/svc/up HTTP/1.1\r\nHost: gw\r\nExpect: 100-continue\r\n\
          Content-Length: 5\r\n\r\n",
    );
    // The client sends its body only after the 100: without it, this read waits forever.
    assert_eq!(client.read_head().0, 100);
    client.send(b"hello");
    let (status, headers, body) = client.read_response();
    assert_eq!((status, body.as_str()), (200, "hello"));
    assert_eq!(header(&headers, "connection"), Some("keep-alive"));
    // The connection stays usable.
    client.send(b"GET /v1/proxy/svc/again HTTP/1.1\r\nHost: gw\r\n\r\n");
    assert_eq!(client.read_response().0, 200);
    let received = backend.received(0);
    assert!(
        !received.to_ascii_lowercase().contains("expect:"),
        "{received}"
    );
}

#[test]
fn a_backends_own_100_continue_is_not_passed_on_and_the_connection_stays_alive() {
    let backend = RawBackend::start(|conn| loop {
        let head = conn.read_head();
        if head.is_empty() {
            return;
        }
        conn.write(b"HTTP/1.1 100 Continue\r\n\r\n");
        conn.read_body(content_length(&head));
        conn.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    });
    let gateway = gateway_for(&backend, "", "");
    let mut client = ClientConn::open(gateway.port);
    client.send(
        b"POST /v1/proxy/svc/up HTTP/1.1\r\nHost: gw\r\nExpect: 100-continue\r\n\
          Content-Length: 5\r\n\r\n",
    );
    assert_eq!(client.read_head().0, 100);
    client.send(b"hello");
    let (status, headers, body) = client.read_response();
    assert_eq!(
        (status, body.as_str()),
        (200, "ok"),
        "one 100, then the answer"
    );
    assert_eq!(header(&headers, "connection"), Some("keep-alive"));
    client.send(b"GET /v1/proxy/svc/again HTTP/1.1\r\nHost: gw\r\n\r\n");
    assert_eq!(
        client.read_head().0,
        100,
        "the backend's 100 to a GET is passed on"
    );
    assert_eq!(client.read_response().0, 200);
}

#[test]
fn a_body_over_the_limit_gets_413_before_any_100_and_nothing_is_forwarded() {
    let backend = echo_backend();
    let gateway = gateway_for(&backend, "  max_body_size: 1KiB\n", "");
    let mut client = ClientConn::open(gateway.port);
    client.send(
        b"POST /v1/proxy/svc/up HTTP/1.1\r\nHost: gw\r\nExpect: 100-continue\r\n\
          Content-Length: 5000\r\n\r\n",
    );
    let (status, headers, _) = client.read_response();
    assert_eq!(status, 413);
    assert_eq!(header(&headers, "connection"), Some("close"));
    assert_eq!(backend.connection_count(), 0);
}

#[test]
fn after_an_early_error_the_rest_of_a_slowly_sent_body_is_read_before_the_close() {
    // Refused by its declared length, in `request_filter`.
    let backend = echo_backend();
    let gateway = gateway_for(&backend, "  max_body_size: 1KiB\n", "");
    assert_lingers(&gateway, 413);
    assert_eq!(backend.connection_count(), 0);
    // Its only backend refuses connections, in `fail_to_proxy`.
    let down = format!("http://127.0.0.1:{}", free_port());
    let gateway = Gateway::start(
        &format!("svc:\n  backends: [\"{down}\"]\n"),
        "  status_log: false\n",
    );
    assert_lingers(&gateway, 502);
}

/// Sends a POST whose body comes in four parts 200 ms apart, and expects the answer `status`
/// before the second part. The gateway must read and drop the rest (a lingering close, bounded)
/// and close after the last part: every write lands and the close is a clean end of stream.
/// Closing at once, with bytes unread or still coming, would reset the connection under the
/// client, and the writes after it would fail.
fn assert_lingers(gateway: &Gateway, status: u16) {
    let part = vec![b'x'; 16 * 1024];
    let mut client = ClientConn::open(gateway.port);
    client.send(
        format!(
            "POST /v1/proxy/svc/up HTTP/1.1\r\nHost: gw\r\nContent-Length: {}\r\n\r\n",
            4 * part.len()
        )
        .as_bytes(),
    );
    client.send(&part);
    let (answered, headers, _) = client.read_response();
    assert_eq!(answered, status);
    assert_eq!(header(&headers, "connection"), Some("close"));
    for _ in 0..3 {
        thread::sleep(Duration::from_millis(200));
        client.send(&part);
    }
    assert!(client.closed(), "a clean end of stream, not a reset");
}

#[test]
fn an_expectation_other_than_100_continue_gets_417() {
    let backend = echo_backend();
    let gateway = gateway_for(&backend, "", "");
    let mut client = ClientConn::open(gateway.port);
    client.send(
        b"POST /v1/proxy/svc/up HTTP/1.1\r\nHost: gw\r\nExpect: something-else\r\n\
          Content-Length: 5\r\n\r\n",
    );
    let (status, _, body) = client.read_response();
    assert_eq!(status, 417);
    assert!(body.contains("expectation_failed"), "{body}");
    assert_eq!(backend.connection_count(), 0);
}

#[test]
fn no_body_is_written_onto_a_backend_connection_that_has_answered() {
    let (answered, on_answer) = channel();
    let backend = RawBackend::start(move |conn| {
        conn.read_head();
        // Answers at once, keep-alive, without reading the body; a lax backend would read
        // whatever follows as its next request.
        conn.write(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 2\r\n\r\nno");
        answered.send(()).unwrap();
        conn.read_to_end();
    });
    let gateway = gateway_for(&backend, "", "");
    let mut client = ClientConn::open(gateway.port);
    client.send(b"POST /v1/proxy/svc/up HTTP/1.1\r\nHost: gw\r\nContent-Length: 44\r\n\r\n");
    let (status, _, body) = client.read_response();
    assert_eq!((status, body.as_str()), (401, "no"));
    on_answer.recv().unwrap();
    client.send(b"GET /api/smuggled HTTP/1.1\r\nHost: backend\r\n\r\n");
    // The gateway closes the backend connection rather than pool it with a body unsent.
    assert!(
        wait_until(DEADLINE, || backend.ended(0)),
        "the backend connection stays open"
    );
    let received = backend.received(0);
    assert!(!received.contains("smuggled"), "{received}");
    assert!(
        client.closed(),
        "the client connection is closed after an early answer"
    );
}

#[test]
fn dot_segments_never_climb_above_the_backends_prefix() {
    let backend = RawBackend::ok();
    let gateway = gateway_for(&backend, "", "");
    let mut client = ClientConn::open(gateway.port);
    let cases = [
        ("/v1/proxy/svc/a/../echo", "/api/echo"),
        ("/v1/proxy/svc/a/%2e%2e/echo", "/api/echo"),
        ("/v1/proxy/svc/a/./b/%2E/", "/api/a/b/"),
        ("/v1/proxy/svc/a/..", "/api/"),
    ];
    for (path, _) in cases {
        client.send(format!("GET {path} HTTP/1.1\r\nHost: gw\r\n\r\n").as_bytes());
        assert_eq!(client.read_response().0, 200, "{path}");
    }
    let forwarded: Vec<String> = cases
        .iter()
        .map(|(_, path)| format!("GET {path} HTTP/1.1"))
        .collect();
    assert_eq!(backend.request_lines(), forwarded);
    for path in [
        "/v1/proxy/svc/../../echo",
        "/v1/proxy/svc/%2e%2e/%2E%2E/echo",
        "/v1/proxy/svc/a/../../echo",
    ] {
        let mut client = ClientConn::open(gateway.port);
        client.send(format!("GET {path} HTTP/1.1\r\nHost: gw\r\n\r\n").as_bytes());
        let (status, headers, body) = client.read_response();
        assert_eq!(status, 400, "{path}");
        assert!(body.contains("climbs above"), "{path}: {body}");
        assert_eq!(header(&headers, "connection"), Some("close"));
    }
    assert_eq!(
        backend.request_lines().len(),
        4,
        "nothing more was forwarded"
    );
}

#[test]
fn escaped_slashes_never_lead_a_backend_above_its_prefix() {
    let backend = RawBackend::ok();
    let url = backend.url("/api");
    let gateway = Gateway::start(
        &format!(
            "svc: [\"{url}\"]\n\
             decoding:\n  backends: [\"{url}\"]\n  escaped_slashes: decode\n\
             keeping:\n  backends: [\"{url}\"]\n  escaped_slashes: keep\n\
             grpc:\n  backends: [\"{}\"]\n  path_prefixes: [/pkg.Svc/]\n  escaped_slashes: keep\n",
            backend.url("")
        ),
        "  status_log: false\n",
    );
    let forwarded = [
        ("/v1/proxy/decoding/a/b%2Fc", "/api/a/b/c"),
        ("/v1/proxy/decoding/a/b%2f..%2fc", "/api/a/c"),
        ("/v1/proxy/decoding/a%5Cb", "/api/a/b"),
        ("/v1/proxy/keeping/files/x%2Fy", "/api/files/x%2Fy"),
        ("/v1/proxy/keeping/a/b%2f..%2fc", "/api/a/b%2f..%2fc"),
        ("/pkg.Svc/a%2Fb", "/pkg.Svc/a%2Fb"),
    ];
    // Each on a connection of its own: a refused one is closed.
    let ask = |path: &str| {
        let mut client = ClientConn::open(gateway.port);
        client.send(format!("GET {path} HTTP/1.1\r\nHost: gw\r\n\r\n").as_bytes());
        client.read_response()
    };
    for (path, _) in forwarded {
        assert_eq!(ask(path).0, 200, "{path}");
    }
    let expected: Vec<String> = forwarded
        .iter()
        .map(|(_, path)| format!("GET {path} HTTP/1.1"))
        .collect();
    assert_eq!(backend.request_lines(), expected);
    let refused = [
        ("/v1/proxy/svc/a/..%2f..%2f../echo", "escaped_slash"),
        ("/v1/proxy/svc/a%2Fb", "escaped_slash"),
        ("/v1/proxy/svc/a%5c..", "escaped_slash"),
        ("/v1/proxy/svc/a\\b", "escaped_slash"),
        ("/v1/proxy/svc/..;/echo", "climbs above"),
        ("/v1/proxy/decoding/a/..%2f..%2f../echo", "climbs above"),
        ("/v1/proxy/decoding/..%5Cecho", "climbs above"),
        ("/v1/proxy/keeping/a/..%2f..%2f../echo", "climbs above"),
        ("/v1/proxy/keeping/%2e%2e%2Fecho", "climbs above"),
        ("/pkg.Svc/../admin", "climbs above"),
        ("/pkg.Svc/..%2fadmin", "climbs above"),
    ];
    for (path, why) in refused {
        let (status, headers, body) = ask(path);
        assert_eq!(status, 400, "{path}");
        assert!(body.contains(why), "{path}: {body}");
        assert_eq!(header(&headers, "connection"), Some("close"));
    }
    assert_eq!(
        backend.request_lines().len(),
        forwarded.len(),
        "nothing more was forwarded"
    );
}

/// The head the backend received for one request with `extra` header lines.
fn forwarded_head(gateway_extra: &str, extra: &str) -> String {
    let backend = RawBackend::ok();
    let gateway = gateway_for(&backend, "", gateway_extra);
    let mut client = ClientConn::open(gateway.port);
    client.send(format!("GET /v1/proxy/svc/h HTTP/1.1\r\nHost: gw.test\r\n{extra}\r\n").as_bytes());
    assert_eq!(client.read_response().0, 200);
    backend.received(0).to_ascii_lowercase()
}

#[test]
fn underscored_names_are_dropped_and_forwarded_is_the_gateways() {
    let spoof = "X_Forwarded_For: 6.6.6.6\r\nX-Real_IP: 6.6.6.6\r\nForwarded: for=6.6.6.6\r\n";
    let head = forwarded_head("", spoof);
    assert!(!head.contains("6.6.6.6"), "{head}");
    assert!(
        head.contains("\r\nforwarded: for=127.0.0.1;host=\"gw.test\";proto=http\r\n"),
        "{head}"
    );
    assert!(
        head.contains("\r\nx-forwarded-for: 127.0.0.1\r\n"),
        "{head}"
    );

    let head = forwarded_head("  trust_forwarded_for: true\n", spoof);
    assert!(
        head.contains("\r\nforwarded: for=6.6.6.6, for=127.0.0.1;host=\"gw.test\";proto=http\r\n"),
        "{head}"
    );
    assert!(!head.contains("x_forwarded_for"), "{head}");

    let head = forwarded_head("  underscores_in_headers: true\n", spoof);
    assert!(head.contains("\r\nx_forwarded_for: 6.6.6.6\r\n"), "{head}");
    assert!(head.contains("\r\nx-real_ip: 6.6.6.6\r\n"), "{head}");
}

/// One request through a gateway with `gateway_extra`: the head the backend read, the
/// response head the client read, and the head of the gateway's own 404 for an unknown
/// service, all as they were on the wire.
fn heads_on_the_wire(gateway_extra: &str) -> (String, String, String) {
    let backend = RawBackend::start(|conn| loop {
        if conn.read_head().is_empty() {
            return;
        }
        conn.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nx-BACKEND-id: 7\r\n\r\nok");
    });
    let gateway = gateway_for(&backend, "", gateway_extra);
    let mut client = ClientConn::open(gateway.port);
    client.send(
        b"GET /v1/proxy/svc/h HTTP/1.1\r\nHost: gw\r\nx-custom-NAME: 1\r\nuser-agent: t\r\n\r\n",
    );
    let response = client.read_raw_head();
    assert_eq!(client.read_exact(2), "ok");
    client.send(b"GET /v1/proxy/nope HTTP/1.1\r\nHost: gw\r\n\r\n");
    let reply = client.read_raw_head();
    (backend.received(0), response, reply)
}

#[test]
fn header_names_go_out_in_title_case_unless_their_spelling_is_kept() {
    let (request, response, reply) = heads_on_the_wire("");
    for line in [
        "\r\nX-Custom-Name: 1\r\n",
        "\r\nUser-Agent: t\r\n",
        "\r\nHost: 127.0.0.1:",
        "\r\nX-Forwarded-For: 127.0.0.1\r\n",
        "\r\nX-Request-Id: ",
    ] {
        assert!(request.contains(line), "{line:?} in {request}");
    }
    for line in ["\r\nContent-Length: 2\r\n", "\r\nX-Backend-Id: 7\r\n"] {
        assert!(response.contains(line), "{line:?} in {response}");
    }
    assert!(reply.contains("\r\nX-Request-Id: "), "{reply}");

    let (request, response, reply) = heads_on_the_wire("  preserve_header_case: true\n");
    for line in ["\r\nx-custom-NAME: 1\r\n", "\r\nuser-agent: t\r\n"] {
        assert!(request.contains(line), "{line:?} in {request}");
    }
    for line in ["\r\ncontent-length: 2\r\n", "\r\nx-BACKEND-id: 7\r\n"] {
        assert!(response.contains(line), "{line:?} in {response}");
    }
    // The gateway's own reply has no spelling to keep.
    assert!(reply.contains("\r\nX-Request-Id: "), "{reply}");
}

#[test]
fn a_repeated_identical_content_length_reaches_the_client_once() {
    let backend = RawBackend::start(|conn| {
        conn.read_head();
        conn.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok");
        conn.read_to_end();
    });
    let gateway = gateway_for(&backend, "", "");
    let mut client = ClientConn::open(gateway.port);
    client.send(b"GET /v1/proxy/svc/x HTTP/1.1\r\nHost: gw\r\n\r\n");
    let (status, headers, body) = client.read_response();
    assert_eq!((status, body.as_str()), (200, "ok"));
    let lengths = headers
        .iter()
        .filter(|(n, _)| n == "content-length")
        .count();
    assert_eq!(lengths, 1, "{headers:?}");
}

#[test]
fn transfer_codings_other_than_chunked_get_501_before_anything_is_forwarded() {
    let backend = RawBackend::ok();
    let gateway = gateway_for(&backend, "", "");
    for coding in ["gzip, chunked", "chunked, chunked"] {
        let mut client = ClientConn::open(gateway.port);
        client.send(
            format!(
                "POST /v1/proxy/svc/x HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: {coding}\r\n\r\n\
                 3\r\nabc\r\n0\r\n\r\n"
            )
            .as_bytes(),
        );
        let (status, headers, body) = client.read_response();
        assert_eq!(status, 501, "{coding}");
        assert!(body.contains("not_implemented"), "{body}");
        assert_eq!(header(&headers, "connection"), Some("close"));
    }
    assert_eq!(backend.connection_count(), 0);
}

#[test]
fn an_absolute_form_target_is_routed_by_its_path_whatever_its_authority() {
    let backend = RawBackend::ok();
    let gateway = gateway_for(&backend, "", "");
    let mut client = ClientConn::open(gateway.port);
    client.send(b"GET http://example.com/v1/proxy/svc/x?q=1 HTTP/1.1\r\nHost: other.test\r\n\r\n");
    assert_eq!(client.read_response().0, 200);
    let received = backend.received(0);
    assert!(
        received.starts_with("GET /api/x?q=1 HTTP/1.1\r\n"),
        "{received}"
    );
}

#[test]
fn a_target_longer_than_the_head_limit_gets_414_and_options_star_404() {
    let backend = RawBackend::ok();
    let gateway = gateway_for(&backend, "", "  max_header_size: 4KiB\n");
    let mut client = ClientConn::open(gateway.port);
    let long = "a".repeat(5000);
    client.send(format!("GET /v1/proxy/svc/{long} HTTP/1.1\r\nHost: gw\r\n\r\n").as_bytes());
    let (status, _, body) = client.read_response();
    assert_eq!(status, 414, "{body}");
    let mut client = ClientConn::open(gateway.port);
    client.send(b"OPTIONS * HTTP/1.1\r\nHost: gw\r\n\r\n");
    let (status, _, body) = client.read_response();
    assert_eq!(status, 404);
    assert!(body.contains("not_found"), "{body}");
    assert_eq!(backend.connection_count(), 0);
}

#[test]
fn a_streamed_body_is_not_cut_by_holding_it_until_the_read_timeout() {
    // With a body read timeout of 1 s and pieces 300 ms apart, a gateway that holds each piece
    // until the next arrives still delivers everything; what this pins is that the first piece
    // is on the wire before the second is sent (each step waits for the client).
    let (tx, rx) = channel::<()>();
    let rx = Arc::new(Mutex::new(rx));
    let backend = RawBackend::start(move |conn| {
        conn.read_head();
        conn.write(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\n");
        for piece in [b"ab", b"cd", b"ef"] {
            conn.write(piece);
            if rx
                .lock()
                .unwrap()
                .recv_timeout(Duration::from_secs(30))
                .is_err()
            {
                return;
            }
        }
    });
    let gateway = gateway_for(&backend, "  read_timeout: 1s\n", "");
    let mut client = ClientConn::open(gateway.port);
    client.send(b"GET /v1/proxy/svc/x HTTP/1.1\r\nHost: gw\r\n\r\n");
    assert_eq!(client.read_head().0, 200);
    for piece in ["ab", "cd", "ef"] {
        assert_eq!(client.read_exact(2), piece);
        tx.send(()).unwrap();
    }
}
