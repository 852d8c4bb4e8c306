//! Test harness: the real `gateway` and `mock-backend` binaries on loopback ephemeral ports,
//! ordinary requests through a real HTTP client (`ureq`), a minimal HTTP/1.1 client over raw
//! sockets where the bytes on the wire are the point (cut responses, counted resends on a
//! reused connection), and polling with deadlines.
//!
//! Every process a test starts is owned by a guard that kills it (by PID, via `Child`) when the
//! test ends, pass or fail.

#![allow(dead_code)] // each test binary uses its own subset of the harness

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// The gateway the tests start: this build's, or `GATEWAY_BIN` (say, the image's BOLT layout,
/// `scripts/bolt.sh`, run through the whole suite).
pub fn gateway_binary() -> String {
    std::env::var("GATEWAY_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_gateway").to_owned())
}
pub const MOCK: &str = env!("CARGO_BIN_EXE_mock-backend");

/// How long anything may take to happen before a test gives up on it.
pub const DEADLINE: Duration = Duration::from_secs(15);

/// `bound` scaled by `GATEWAY_TEST_TIME_FACTOR` (default 1): the upper bounds the tests put on
/// how long something takes are tight enough to catch a timeout that is not applied, and a slow
/// or loaded machine may set the factor to stretch them all at once.
pub fn within(bound: Duration) -> Duration {
    let factor: f64 = std::env::var("GATEWAY_TEST_TIME_FACTOR")
        .ok()
        .and_then(|f| f.parse().ok())
        .filter(|f: &f64| *f >= 1.0)
        .unwrap_or(1.0);
    bound.mul_f64(factor)
}

/// Polls `check` every 20 ms until it returns true or `timeout` passes.
pub fn wait_until(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Sends signal `name` (e.g. `TERM`) to the process `pid`, which the test started.
pub fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{name} {pid}");
}

/// `clients` threads that each send one `GET path` on a new connection, all released at the
/// same instant; join them for the results.
pub fn simultaneous_gets(
    port: u16,
    clients: usize,
    path: &str,
) -> Vec<thread::JoinHandle<std::io::Result<Response>>> {
    let barrier = Arc::new(std::sync::Barrier::new(clients));
    (0..clients)
        .map(|_| {
            let (barrier, path) = (barrier.clone(), path.to_owned());
            thread::spawn(move || {
                barrier.wait();
                try_request(port, "GET", &path, &[], b"")
            })
        })
        .collect()
}

/// A free loopback port that this test process has not handed out before.
///
/// Ports come from a counter in 10000..32000 (below the kernel's ephemeral range, which
/// outgoing connections and `bind(0)` use), starting at a per-process offset. A port is never
/// handed out twice by one process, so a backend a test stopped keeps refusing connections:
/// with `bind(0)`, a test running alongside could be given the freed port and answer in its
/// place.
pub fn free_port() -> u16 {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let base = 10_000 + (std::process::id() as usize % 100) * 220;
    loop {
        let offset = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = u16::try_from(10_000 + (base - 10_000 + offset) % 22_000)
            .expect("ports stay below 32000");
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A scratch folder, removed when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new() -> Self {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "gateway-test-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&path).expect("temp dir");
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).expect("write temp file");
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running `mock-backend`.
pub struct Mock {
    child: Option<Child>,
    _stdout: Option<BufReader<ChildStdout>>,
    pub port: u16,
}

impl Mock {
    /// Starts a mock on a port from [`free_port`] with extra `args` (e.g. `--fail`).
    pub fn start(args: &[&str]) -> Mock {
        Self::start_on(free_port(), args)
    }

    /// Starts a mock on `port`, retrying while the port is still being released.
    pub fn start_on(port: u16, args: &[&str]) -> Mock {
        let end = Instant::now() + DEADLINE;
        loop {
            let mut child = Command::new(MOCK)
                .args(args)
                .arg(port.to_string())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn mock-backend");
            let mut stdout = BufReader::new(child.stdout.take().unwrap());
            let mut line = String::new();
            let _ = stdout.read_line(&mut line);
            if let Some(addr) = line.trim().strip_prefix("mock-backend listening on ") {
                let port = addr.rsplit(':').next().unwrap().parse().unwrap();
                return Mock {
                    child: Some(child),
                    _stdout: Some(stdout),
                    port,
                };
            }
            let mut stderr = String::new();
            let _ = child.stderr.take().unwrap().read_to_string(&mut stderr);
            let _ = child.wait();
            assert!(Instant::now() < end, "mock-backend did not start: {stderr}");
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Kills the mock and waits for it to be gone.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends it SIGTERM and waits for it to exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("the mock is running");
        signal(child.id(), "TERM");
        child.wait().expect("wait for mock-backend")
    }

    /// Starts it again on the same port, with `args`.
    pub fn restart(&mut self, args: &[&str]) {
        self.stop();
        *self = Mock::start_on(self.port, args);
    }
}

impl Drop for Mock {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A running `gateway` with its own conf, services file and captured log.
pub struct Gateway {
    child: Option<Child>,
    pub port: u16,
    /// The admin listener's port (0 when the conf was not made by [`Gateway::start`]).
    pub admin_port: u16,
    pub dir: TempDir,
    log: Arc<Mutex<String>>,
}

/// The Pingora conf for a test gateway: small grace periods, files in `dir`, the proxy on
/// `port` and the admin listener on `admin_port`.
pub fn gateway_conf(dir: &Path, port: u16, admin_port: u16, gateway_extra: &str) -> String {
    format!(
        "---\nversion: 1\nthreads: 2\npid_file: {dir}/gateway.pid\nupgrade_sock: {dir}/upgrade.sock\n\
         grace_period_seconds: 1\ngraceful_shutdown_timeout_seconds: 1\n\
         gateway:\n  listen: 127.0.0.1:{port}\n  admin_listen: 127.0.0.1:{admin_port}\n  \
         services: services.yaml\n{gateway_extra}",
        dir = dir.display()
    )
}

impl Gateway {
    /// Starts a gateway serving `services` (the services file's YAML). `gateway_extra` is
    /// appended to the conf's `gateway:` section (indent it by two spaces).
    pub fn start(services: &str, gateway_extra: &str) -> Gateway {
        let dir = TempDir::new();
        let (port, admin_port) = (free_port(), free_port());
        dir.write("services.yaml", services);
        let conf = dir.write(
            "gateway.yaml",
            &gateway_conf(dir.path(), port, admin_port, gateway_extra),
        );
        let mut gateway = Self::spawn(dir, port, &["-c", conf.to_str().unwrap()]);
        gateway.admin_port = admin_port;
        gateway.wait_ready();
        gateway
    }

    /// Spawns the binary with `args` and captures its log; does not wait for readiness.
    pub fn spawn(dir: TempDir, port: u16, args: &[&str]) -> Gateway {
        let mut child = Command::new(gateway_binary())
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn gateway");
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        Gateway {
            child: Some(child),
            port,
            admin_port: 0,
            dir,
            log,
        }
    }

    /// Waits until the proxy port, and the admin port when it is known, accept connections.
    pub fn wait_ready(&self) {
        // Both listeners: the admin one may come up a moment after the proxy one, and a test
        // that reads a metric at once would find it refusing.
        let listening = |port| TcpStream::connect(("127.0.0.1", port)).is_ok();
        let ready = wait_until(DEADLINE, || {
            listening(self.port) && (self.admin_port == 0 || listening(self.admin_port))
        });
        assert!(ready, "gateway did not start; log:\n{}", self.log());
    }

    /// Everything the gateway logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits until the log contains `needle`.
    pub fn wait_for_log(&self, needle: &str) {
        assert!(
            wait_until(DEADLINE, || self.log().contains(needle)),
            "log never showed {needle:?}; log:\n{}",
            self.log()
        );
    }

    /// How often `needle` appears in the log.
    pub fn log_count(&self, needle: &str) -> usize {
        self.log().matches(needle).count()
    }

    /// The value of the `/metrics` sample named `series` (name and labels, as exposed), or
    /// `None` when there is no such series.
    pub fn metric(&self, series: &str) -> Option<f64> {
        let metrics = request(self.admin_port, "GET", "/metrics", &[], b"").body;
        metrics
            .lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
            .map(|value| value.parse().expect("a sample value"))
    }

    /// Whether the sample `series` reaches `value` within the deadline. An attempt is settled
    /// in Pingora's logging hook, which may run just after the client has its answer: a count
    /// read right after a response may still be one short.
    pub fn metric_reaches(&self, series: &str, value: f64) -> bool {
        wait_until(DEADLINE, || self.metric(series) == Some(value))
    }

    /// Asserts that no attempt on service `product`'s backend `mock` was counted for or against
    /// it (success, timeout, broken response, connect error, 5xx): how an attempt the client
    /// ended must be counted.
    pub fn assert_no_verdict_on(&self, mock: &Mock) {
        for outcome in [
            "success",
            "timeout",
            "broken_response",
            "connect_error",
            "http_5xx",
        ] {
            let series = format!(
                r#"gateway_upstream_attempts_total{{service="product",backend="{}",outcome="{outcome}"}}"#,
                mock.url()
            );
            assert_eq!(self.metric(&series), Some(0.0), "{outcome}");
        }
    }

    /// GET `path` through the gateway.
    pub fn get(&self, path: &str) -> Response {
        request(self.port, "GET", path, &[], b"")
    }

    /// The process's PID.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Waits for the process to exit by itself and returns its exit code.
    pub fn wait_exit(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        let end = Instant::now() + DEADLINE;
        while Instant::now() < end {
            if let Ok(Some(status)) = child.try_wait() {
                return status.code();
            }
            thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A response as read off the wire.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: HashMap<String, String>,
    pub body: String,
}

impl Response {
    /// A header by lower-case name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }

    /// The port of the mock that answered (from `Hello from <port>`), if one did.
    pub fn served_by(&self) -> Option<u16> {
        self.body
            .lines()
            .next()?
            .strip_prefix("Hello from ")?
            .parse()
            .ok()
    }
}

/// Sends one request with `Connection: close` through a real HTTP client and reads the whole
/// response. `Host` is `gateway.test` unless `headers` name one.
pub fn request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    try_request(port, method, path, headers, body)
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

/// As [`request`], but a failure (I/O, or a response the client cannot read) is an `Err`.
pub fn try_request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Response> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .allow_non_standard_methods(true)
        .max_idle_connections(0)
        .timeout_global(Some(DEADLINE))
        .build()
        .into();
    let mut builder = ureq::http::Request::builder()
        .method(method)
        .uri(format!("http://127.0.0.1:{port}{path}"))
        .header("connection", "close");
    if !headers
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("host"))
    {
        builder = builder.header("host", "gateway.test");
    }
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let request = builder.body(body.to_vec()).map_err(std::io::Error::other)?;
    let into_io = |e: ureq::Error| match e {
        ureq::Error::Io(e) => e,
        other => std::io::Error::other(other),
    };
    let mut response = agent.run(request).map_err(into_io)?;
    let headers = response
        .headers()
        .iter()
        .map(|(name, value)| {
            let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
            (name.as_str().to_owned(), value)
        })
        .collect();
    let body = response
        .body_mut()
        .with_config()
        .limit(u64::MAX)
        .read_to_vec()
        .map_err(into_io)?;
    Ok(Response {
        status: response.status().as_u16(),
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// One GET over a raw socket with `Connection: close`, read to the end of the connection:
/// for responses a client library rightly refuses (a body cut short of its `Content-Length`).
pub fn raw_get(port: u16, path: &str) -> std::io::Result<Response> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(DEADLINE))?;
    let head = format!("GET {path} HTTP/1.1\r\nHost: gateway.test\r\nConnection: close\r\n\r\n");
    stream.write_all(head.as_bytes())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    parse_response(&raw)
}

/// Reads one whole response (head, then a `Content-Length` body) from a keep-alive `stream`,
/// leaving whatever follows it unread. Byte by byte through the head: for tests only.
pub fn read_one_response(mut stream: &TcpStream) -> std::io::Result<Response> {
    let mut raw = Vec::new();
    while !raw.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        if stream.read(&mut byte)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        raw.push(byte[0]);
    }
    let mut response = parse_response(&raw)?;
    let length: usize = response
        .header("content-length")
        .and_then(|l| l.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    stream.read_exact(&mut body)?;
    response.body = String::from_utf8_lossy(&body).into_owned();
    Ok(response)
}

pub fn parse_response(raw: &[u8]) -> std::io::Result<Response> {
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no end of headers"))?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("no status"))?;
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if headers
        .get("transfer-encoding")
        .is_some_and(|te| te.contains("chunked"))
    {
        body = dechunk(&body).ok_or_else(|| bad("bad chunked body"))?;
    }
    Ok(Response {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&data[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}

/// A services file with one service named `name` over `backends`.
pub fn services_yaml(name: &str, backends: &[String]) -> String {
    let mut yaml = format!("{name}:\n");
    for backend in backends {
        yaml.push_str(&format!("  - {backend}\n"));
    }
    yaml
}

/// A keep-alive HTTP/1.1 client: one connection reused across requests, reopened when the
/// server closes it (as it does after gateway-generated errors).
pub struct Client {
    port: u16,
    conn: Option<BufReader<TcpStream>>,
    /// How many requests were sent a second time (see [`Client::send`]).
    pub resends: usize,
}

/// How one exchange failed: the error, and whether any byte of the response had arrived.
struct Failed {
    error: std::io::Error,
    response_started: bool,
}

impl Client {
    pub fn new(port: u16) -> Self {
        Client {
            port,
            conn: None,
            resends: 0,
        }
    }

    /// Sends one request and reads the response; an I/O failure is an `Err`. Like real HTTP
    /// clients, it sends an idempotent request once more on a new connection when a reused
    /// one turns out to have been closed before any byte of the response arrived (RFC 9112
    /// §9.3.1), and only then: a response cut short or garbled is the caller's error. Each
    /// resend is counted in `resends`.
    pub fn send(&mut self, method: &str, path: &str, body: &[u8]) -> std::io::Result<Response> {
        let reused = self.conn.is_some();
        match self.send_once(method, path, body) {
            Err(failed)
                if reused
                    && !failed.response_started
                    && method != "POST"
                    && method != "PATCH"
                    && failed.error.kind() != std::io::ErrorKind::WouldBlock =>
            {
                self.resends += 1;
                self.send_once(method, path, body).map_err(|f| f.error)
            }
            result => result.map_err(|f| f.error),
        }
    }

    /// The open keep-alive connection, taken out of the client, to watch it idle.
    pub fn take_connection(&mut self) -> Option<TcpStream> {
        self.conn.take().map(BufReader::into_inner)
    }

    fn send_once(&mut self, method: &str, path: &str, body: &[u8]) -> Result<Response, Failed> {
        if self.conn.is_none() {
            let not_started = |error| Failed {
                error,
                response_started: false,
            };
            let stream = TcpStream::connect(("127.0.0.1", self.port)).map_err(not_started)?;
            stream
                .set_read_timeout(Some(DEADLINE))
                .map_err(not_started)?;
            self.conn = Some(BufReader::new(stream));
        }
        let result = self.exchange(method, path, body);
        match &result {
            Ok(r) if r.header("connection") != Some("close") => {}
            _ => self.conn = None,
        }
        result
    }

    fn exchange(&mut self, method: &str, path: &str, body: &[u8]) -> Result<Response, Failed> {
        let conn = self.conn.as_mut().expect("connected");
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: gateway.test\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        let failed = |error, response_started| Failed {
            error,
            response_started,
        };
        conn.get_mut()
            .write_all(head.as_bytes())
            .and_then(|()| conn.get_mut().write_all(body))
            .map_err(|e| failed(e, false))?;

        let eof = || std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "connection closed");
        let mut raw = Vec::new();
        loop {
            let before = raw.len();
            conn.read_until(b'\n', &mut raw)
                .map_err(|e| failed(e, !raw.is_empty()))?;
            if raw.len() == before {
                return Err(failed(eof(), !raw.is_empty()));
            }
            if raw.ends_with(b"\r\n\r\n") {
                break;
            }
        }
        let mut response = parse_response(&raw).map_err(|e| failed(e, true))?;
        let length: usize = response
            .header("content-length")
            .and_then(|l| l.parse().ok())
            .unwrap_or(0);
        if method != "HEAD" && length > 0 {
            let mut body = vec![0; length];
            conn.read_exact(&mut body).map_err(|e| failed(e, true))?;
            response.body = String::from_utf8_lossy(&body).into_owned();
        }
        Ok(response)
    }
}

/// What a bounded load run saw.
#[derive(Debug, Default)]
pub struct LoadReport {
    /// Responses by status.
    pub statuses: HashMap<u16, usize>,
    /// Requests that got no response at all (connection refused, reset, cut short).
    pub io_errors: usize,
    /// Responses by the mock port that served them.
    pub served_by: HashMap<u16, usize>,
    /// The slowest response.
    pub slowest: Duration,
    /// Requests the clients sent a second time after a reused connection closed before any
    /// byte of the response (see [`Client::send`]): not failures, but counted, so a test can
    /// say how many there were.
    pub resends: usize,
}

impl LoadReport {
    pub fn add(&mut self, result: std::io::Result<Response>, took: Duration) {
        self.slowest = self.slowest.max(took);
        match result {
            Ok(response) => {
                *self.statuses.entry(response.status).or_default() += 1;
                if let Some(port) = response.served_by() {
                    *self.served_by.entry(port).or_default() += 1;
                }
            }
            Err(_) => self.io_errors += 1,
        }
    }

    /// All requests sent.
    pub fn total(&self) -> usize {
        self.statuses.values().sum::<usize>() + self.io_errors
    }

    pub fn count(&self, status: u16) -> usize {
        self.statuses.get(&status).copied().unwrap_or(0)
    }

    /// Everything that was not a 200.
    pub fn failures(&self) -> usize {
        self.statuses
            .iter()
            .filter(|(s, _)| **s != 200)
            .map(|(_, n)| n)
            .sum::<usize>()
            + self.io_errors
    }
}

/// A load of keep-alive clients that runs until [`BackgroundLoad::finish`] (or until
/// `max_duration` passes, so it always stops by itself).
pub struct BackgroundLoad {
    stop: Arc<std::sync::atomic::AtomicBool>,
    sent: Arc<AtomicUsize>,
    handles: Vec<thread::JoinHandle<()>>,
    report: Arc<Mutex<LoadReport>>,
}

impl BackgroundLoad {
    /// Starts `clients` clients sending `method path` in a loop.
    pub fn start(port: u16, clients: usize, method: &str, path: &str) -> Self {
        let max_duration = Duration::from_secs(30);
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let sent = Arc::new(AtomicUsize::new(0));
        let report = Arc::new(Mutex::new(LoadReport::default()));
        let started = Instant::now();
        let handles = (0..clients)
            .map(|_| {
                let (stop, sent, report) = (stop.clone(), sent.clone(), report.clone());
                let (method, path) = (method.to_owned(), path.to_owned());
                thread::spawn(move || {
                    let mut client = Client::new(port);
                    while !stop.load(Ordering::SeqCst) && started.elapsed() < max_duration {
                        let begun = Instant::now();
                        let result = client.send(&method, &path, b"");
                        report.lock().unwrap().add(result, begun.elapsed());
                        sent.fetch_add(1, Ordering::SeqCst);
                    }
                    report.lock().unwrap().resends += client.resends;
                })
            })
            .collect();
        BackgroundLoad {
            stop,
            sent,
            handles,
            report,
        }
    }

    /// Requests answered (or failed) so far.
    pub fn sent(&self) -> usize {
        self.sent.load(Ordering::SeqCst)
    }

    /// Waits until `more` further requests have been sent.
    pub fn wait_for(&self, more: usize) {
        let target = self.sent() + more;
        assert!(
            wait_until(DEADLINE, || self.sent() >= target),
            "load stalled at {} requests",
            self.sent()
        );
    }

    /// Stops the clients and returns what they saw.
    pub fn finish(self) -> LoadReport {
        self.stop.store(true, Ordering::SeqCst);
        for handle in self.handles {
            handle.join().expect("load client");
        }
        Arc::try_unwrap(self.report).unwrap().into_inner().unwrap()
    }
}

/// `clients` keep-alive clients each send `requests` requests to `path` with `method`; every
/// response is classified. Bounded by count and by the per-request read timeout.
pub fn run_load(
    port: u16,
    clients: usize,
    requests: usize,
    method: &str,
    path: &str,
) -> LoadReport {
    let report = Arc::new(Mutex::new(LoadReport::default()));
    let handles: Vec<_> = (0..clients)
        .map(|_| {
            let report = report.clone();
            let (method, path) = (method.to_owned(), path.to_owned());
            thread::spawn(move || {
                let mut client = Client::new(port);
                for _ in 0..requests {
                    let started = Instant::now();
                    let result = client.send(&method, &path, b"");
                    report.lock().unwrap().add(result, started.elapsed());
                }
                report.lock().unwrap().resends += client.resends;
            })
        })
        .collect();
    for handle in handles {
        handle.join().expect("load client");
    }
    Arc::try_unwrap(report).unwrap().into_inner().unwrap()
}
