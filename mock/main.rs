//! `mock-backend`: a small HTTP/1.1 server that stands in for a service replica in demos and
//! tests, as the original design's `go run main.go 9001` did.
//!
//! Every request gets `200 Hello from <port>` (or `--status N`) followed by the request body, plus headers that
//! tell what arrived: `X-Mock-Port`, `X-Mock-Method`, `X-Mock-Path` (path and query) and
//! `X-Echo-<name>` for every request header. Flags make it misbehave on purpose:
//!
//! ```text
//! mock-backend [--bind ADDR] [--status N] [--fail] [--fail-rate R] [--fail-every N] [--delay-ms N]
//!              [--reset | --close | --hang] [--flap-ms N] [--slow-head-ms N] [--slow-body-ms N]
//!              [--body-bytes N]
//!              [--tls-cert FILE --tls-key FILE [--tls-client-ca FILE]] [--h2] [--fail-health]
//!              [--log] PORT
//! ```
//!
//! With `--tls-cert` and `--tls-key` (PEM) it serves HTTPS instead (TLS 1.2 and 1.3, OpenSSL);
//! with `--tls-client-ca` it also requires a client certificate signed by that CA. Every
//! answer says which connection of the process carried it (`X-Mock-Connection: <n>`, from 1),
//! so tests can count the connections, and TLS handshakes, a gateway opens.
//!
//! `--reset` resets every connection once a request arrives, `--close` reads the request and
//! closes the connection without a word, `--hang` reads it and never answers. `--flap-ms N`
//! alternates every N ms between healthy and broken (connections reset, requests dropped),
//! starting healthy. `--slow-head-ms N` sends the response head a line at a time, N ms apart;
//! `--slow-body-ms N` sends the body in five parts, N ms apart. `--body-bytes N` pads every
//! body with N dots (a large response).
//!
//! `--h2` serves HTTP/2 instead (h2c with prior knowledge, or h2 over TLS), with a small gRPC
//! service: see `http2.rs`.
//!
//! `--fail-health` answers `500` on `/healthz` only (everything else as usual): a backend that
//! fails its health checks while still serving, for demos of active health checks.
//!
//! A request that asks to upgrade to a WebSocket (`Upgrade: websocket`, any path) gets `101`
//! and an echo: every text or binary message comes back as it was sent, until either side
//! closes (the framing is `tungstenite`'s).
//!
//! Port 0 picks a free port; the first line on stdout always names the address it listens on.
//! It serves with the standard library alone (one thread per connection, keep-alive), so it
//! has nothing to hide; Tokio only waits for SIGTERM, which it exits on (also as a container's
//! PID 1).

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use openssl::ssl::{SslAcceptor, SslFiletype, SslMethod, SslVerifyMode};

mod http2;

const USAGE: &str = "usage: mock-backend [--bind ADDR] [--status N] [--fail] [--fail-rate R] \
                     [--fail-every N] \
                     [--delay-ms N] [--reset | --close | --hang] [--flap-ms N] [--slow-head-ms N] \
                     [--slow-body-ms N] [--tls-cert FILE --tls-key FILE [--tls-client-ca FILE]] \
                     [--h2] [--fail-health] [--log] PORT";
const MAX_LINE: usize = 16 * 1024;
const MAX_HEADERS: usize = 128;

/// How this mock behaves.
#[derive(Debug, Clone)]
struct Behaviour {
    /// The status of every answer that is not a failure (`--status`, default 200).
    status: u16,
    /// Share of requests answered with 500, from 0.0 to 1.0 (`--fail` is 1.0).
    fail_rate: f64,
    /// Answer every Nth request of the process with 500 (`--fail-every N`), deterministically.
    fail_every: Option<u64>,
    /// Wait before answering each request.
    delay: Duration,
    /// How the connection itself misbehaves, if it does.
    fault: Option<ConnectionFault>,
    /// Alternate between healthy and broken periods of this length.
    flap: Option<Duration>,
    /// Send the response head a line at a time, this far apart.
    slow_head: Option<Duration>,
    /// Send the body in parts, this far apart.
    slow_body: Option<Duration>,
    /// Pad every answer's body with this many bytes (`--body-bytes`).
    body_bytes: usize,
    /// Print one line per request.
    log: bool,
    /// Answer 500 on `/healthz`.
    fail_health: bool,
    /// Serve HTTP/2 (and gRPC) instead of HTTP/1.1.
    h2: bool,
    /// Serve HTTPS with these PEM files.
    tls: Option<TlsFiles>,
}

/// The mock's certificate and key, and the CA its clients' certificates must come from.
#[derive(Debug, Clone, Default)]
struct TlsFiles {
    cert: String,
    key: String,
    client_ca: Option<String>,
}

impl Behaviour {
    /// The connection fault in force now, taking flapping into account.
    fn fault_now(&self, started: Instant) -> Option<ConnectionFault> {
        match self.flap {
            Some(period)
                if (started.elapsed().as_millis() / period.as_millis().max(1)) % 2 == 1 =>
            {
                Some(ConnectionFault::Close)
            }
            _ => self.fault,
        }
    }
}

/// Ways a backend can break an exchange before sending any response byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ConnectionFault {
    /// Reset the connection (RST) as soon as a request arrives.
    Reset,
    /// Read the request, then close the connection cleanly without answering.
    Close,
    /// Read the request and never answer.
    Hang,
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (bind, port, behaviour) = match parse_args(&args) {
        Ok(parsed) => parsed,
        Err(message) => {
            eprintln!("mock-backend: {message}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let listener = match TcpListener::bind((bind.as_str(), port)) {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("mock-backend: cannot listen on {bind}:{port}: {e}");
            return ExitCode::from(1);
        }
    };
    let local = match listener.local_addr() {
        Ok(addr) => addr,
        Err(e) => {
            eprintln!("mock-backend: {e}");
            return ExitCode::from(1);
        }
    };
    if let Err(e) = exit_on_sigterm() {
        eprintln!("mock-backend: cannot handle SIGTERM: {e}");
        return ExitCode::from(1);
    }
    println!("mock-backend listening on {local}");
    let _ = io::stdout().flush();

    let acceptor = match behaviour.tls.as_ref().map(tls_acceptor).transpose() {
        Ok(acceptor) => acceptor.map(Arc::new),
        Err(e) => {
            eprintln!("mock-backend: TLS: {e}");
            return ExitCode::from(1);
        }
    };
    if behaviour.h2 {
        let acceptor = match behaviour.tls.as_ref().map(h2_tls_acceptor).transpose() {
            Ok(acceptor) => acceptor.map(Arc::new),
            Err(e) => {
                eprintln!("mock-backend: TLS: {e}");
                return ExitCode::from(1);
            }
        };
        http2::serve(listener, local.port(), acceptor);
        return ExitCode::SUCCESS;
    }
    let behaviour = Arc::new(behaviour);
    let started = Instant::now();
    let seed = Arc::new(AtomicU64::new(time_seed()));
    let requests = Arc::new(AtomicU64::new(0));
    for (connection, stream) in (1..).zip(listener.incoming()) {
        let Ok(stream) = stream else { continue };
        let behaviour = behaviour.clone();
        let seed = seed.clone();
        let requests = requests.clone();
        let acceptor = acceptor.clone();
        let port = local.port();
        thread::spawn(move || {
            let mock = Mock {
                port,
                connection,
                behaviour: &behaviour,
                seed: &seed,
                requests: &requests,
                started,
            };
            let _ = accept(stream, acceptor.as_deref(), &mock);
        });
    }
    ExitCode::SUCCESS
}

/// What one connection's thread knows about the mock.
struct Mock<'a> {
    port: u16,
    /// Which connection of the process this is, from 1.
    connection: u64,
    behaviour: &'a Behaviour,
    seed: &'a AtomicU64,
    /// Requests served by the process, for `--fail-every`.
    requests: &'a AtomicU64,
    started: Instant,
}

/// An OpenSSL acceptor for `files`: TLS 1.2 and 1.3, and client certificates required when a
/// client CA is given.
fn tls_acceptor(files: &TlsFiles) -> Result<SslAcceptor, openssl::error::ErrorStack> {
    let mut builder = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls())?;
    builder.set_certificate_chain_file(&files.cert)?;
    builder.set_private_key_file(&files.key, SslFiletype::PEM)?;
    builder.check_private_key()?;
    if let Some(ca) = &files.client_ca {
        builder.set_ca_file(ca)?;
        builder.set_verify(SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT);
    }
    Ok(builder.build())
}

/// The TLS acceptor of the HTTP/2 mode: [`tls_acceptor`]'s, offering ALPN `h2` only.
fn h2_tls_acceptor(files: &TlsFiles) -> Result<SslAcceptor, openssl::error::ErrorStack> {
    let mut builder = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls())?;
    builder.set_certificate_chain_file(&files.cert)?;
    builder.set_private_key_file(&files.key, SslFiletype::PEM)?;
    builder.check_private_key()?;
    builder.set_alpn_select_callback(|_, offered| {
        openssl::ssl::select_next_proto(b"\x02h2", offered).ok_or(openssl::ssl::AlpnError::NOACK)
    });
    Ok(builder.build())
}

/// Takes a new connection: misbehaves at once if told to, else serves it, over TLS if told to.
fn accept(stream: TcpStream, acceptor: Option<&SslAcceptor>, mock: &Mock<'_>) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let behaviour = mock.behaviour;
    let reset = match behaviour.fault_now(mock.started) {
        Some(ConnectionFault::Reset) => true,
        // A flapping backend that is down refuses new connections the rudest way.
        Some(ConnectionFault::Close) => behaviour.flap.is_some(),
        _ => false,
    };
    if reset {
        // Closing a socket with unread data makes the kernel answer with RST, not FIN.
        stream.peek(&mut [0; 1])?;
        return Ok(());
    }
    match acceptor {
        None => serve(stream, mock),
        Some(acceptor) => {
            let stream = acceptor.accept(stream).map_err(io::Error::other)?;
            serve(stream, mock)
        }
    }
}

/// Exits 0 on SIGTERM, from the moment it returns. A process's default action would do, but
/// not as PID 1 of a container (`docker stop`, a Kubernetes pod ending), where an unhandled
/// SIGTERM is ignored and the mock would wait to be killed.
fn exit_on_sigterm() -> io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut terminate = runtime.block_on(async { signal(SignalKind::terminate()) })?;
    thread::spawn(move || {
        runtime.block_on(terminate.recv());
        std::process::exit(0);
    });
    Ok(())
}

fn parse_args(args: &[String]) -> Result<(String, u16, Behaviour), String> {
    let mut bind = "127.0.0.1".to_owned();
    let mut port = None;
    let mut behaviour = Behaviour {
        status: 200,
        fail_rate: 0.0,
        fail_every: None,
        delay: Duration::ZERO,
        fault: None,
        flap: None,
        slow_head: None,
        slow_body: None,
        body_bytes: 0,
        log: false,
        fail_health: false,
        h2: false,
        tls: None,
    };
    let mut tls = TlsFiles::default();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let mut value = |name: &str| {
            args.next()
                .cloned()
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match arg.as_str() {
            "--bind" => bind = value("--bind")?,
            "--status" => {
                behaviour.status = value("--status")?
                    .parse()
                    .ok()
                    .filter(|s| (200..=599).contains(s))
                    .ok_or("--status takes a status from 200 to 599")?
            }
            "--fail" => behaviour.fail_rate = 1.0,
            "--fail-rate" => {
                behaviour.fail_rate = value("--fail-rate")?
                    .parse()
                    .ok()
                    .filter(|r| (0.0..=1.0).contains(r))
                    .ok_or("--fail-rate takes a number from 0 to 1")?
            }
            "--fail-every" => {
                behaviour.fail_every = Some(
                    value("--fail-every")?
                        .parse()
                        .ok()
                        .filter(|&n| n > 0)
                        .ok_or("--fail-every takes a positive whole number")?,
                )
            }
            "--delay-ms" => behaviour.delay = millis("--delay-ms", &value("--delay-ms")?)?,
            "--reset" => behaviour.fault = Some(ConnectionFault::Reset),
            "--close" => behaviour.fault = Some(ConnectionFault::Close),
            "--hang" => behaviour.fault = Some(ConnectionFault::Hang),
            "--flap-ms" => {
                let ms: u64 = value("--flap-ms")?
                    .parse()
                    .ok()
                    .filter(|&ms| ms > 0)
                    .ok_or("--flap-ms takes a positive number of milliseconds")?;
                behaviour.flap = Some(Duration::from_millis(ms));
            }
            "--slow-head-ms" => {
                behaviour.slow_head = Some(millis("--slow-head-ms", &value("--slow-head-ms")?)?)
            }
            "--slow-body-ms" => {
                behaviour.slow_body = Some(millis("--slow-body-ms", &value("--slow-body-ms")?)?)
            }
            "--body-bytes" => {
                behaviour.body_bytes = value("--body-bytes")?
                    .parse()
                    .map_err(|_| "--body-bytes takes a number of bytes")?
            }
            "--log" => behaviour.log = true,
            "--fail-health" => behaviour.fail_health = true,
            "--h2" => behaviour.h2 = true,
            "--tls-cert" => tls.cert = value("--tls-cert")?,
            "--tls-key" => tls.key = value("--tls-key")?,
            "--tls-client-ca" => tls.client_ca = Some(value("--tls-client-ca")?),
            "-h" | "--help" => return Err("help".to_owned()),
            other if port.is_none() && !other.starts_with('-') => {
                port = Some(
                    other
                        .parse::<u16>()
                        .map_err(|_| format!("\"{other}\" is not a port"))?,
                )
            }
            other => return Err(format!("unexpected argument \"{other}\"")),
        }
    }
    match (tls.cert.is_empty(), tls.key.is_empty(), &tls.client_ca) {
        (true, true, None) => {}
        (false, false, _) => behaviour.tls = Some(tls),
        _ => {
            return Err(
                "--tls-cert and --tls-key go together (and --tls-client-ca with them)".to_owned(),
            )
        }
    }
    Ok((bind, port.ok_or("the port is missing")?, behaviour))
}

/// The value of `flag`, whole milliseconds.
fn millis(flag: &str, value: &str) -> Result<Duration, String> {
    value
        .parse()
        .map(Duration::from_millis)
        .map_err(|_| format!("{flag} takes whole milliseconds"))
}

/// One request as read off the wire.
struct Request {
    method: String,
    target: String,
    version: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn wants_close(&self) -> bool {
        let connection = self.header("connection").map(str::to_ascii_lowercase);
        match connection.as_deref() {
            Some(c) if c.contains("close") => true,
            Some(c) if c.contains("keep-alive") => false,
            _ => self.version == "HTTP/1.0",
        }
    }
}

/// Serves requests on one connection until the client closes it or asks to.
fn serve<S: Read + Write>(stream: S, mock: &Mock<'_>) -> io::Result<()> {
    let (port, behaviour, seed, started) = (mock.port, mock.behaviour, mock.seed, mock.started);
    let mut reader = BufReader::new(stream);
    loop {
        let Some(request) = read_request(&mut reader)? else {
            return Ok(());
        };
        if request
            .header("upgrade")
            .is_some_and(|u| u.eq_ignore_ascii_case("websocket"))
        {
            return echo_websocket(&request, reader);
        }
        let writer = reader.get_mut();
        match behaviour.fault_now(started) {
            Some(ConnectionFault::Close) => return Ok(()),
            Some(ConnectionFault::Hang) => {
                // Hold the connection until the client gives up on it.
                while writer.read(&mut [0; 512])? > 0 {}
                return Ok(());
            }
            Some(ConnectionFault::Reset) | None => {}
        }
        if !behaviour.delay.is_zero() {
            thread::sleep(behaviour.delay);
        }
        let health_path = request.target == "/healthz" || request.target.starts_with("/healthz?");
        let every = behaviour
            .fail_every
            .is_some_and(|n| mock.requests.fetch_add(1, Ordering::Relaxed) % n == n - 1);
        let fail = (behaviour.fail_rate > 0.0 && next_random(seed) < behaviour.fail_rate)
            || (behaviour.fail_health && health_path)
            || every;
        let (status, greeting) = if fail {
            (500, "Failure from")
        } else {
            (behaviour.status, "Hello from")
        };
        if behaviour.log {
            println!("{port} {} {} -> {status}", request.method, request.target);
        }
        let mut body = format!("{greeting} {port}\n").into_bytes();
        body.extend_from_slice(&request.body);
        body.resize(body.len() + behaviour.body_bytes, b'.');

        let close = request.wants_close();
        let mut head = format!(
            "HTTP/1.1 {status} {}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\
             X-Mock-Port: {port}\r\nX-Mock-Connection: {}\r\nX-Mock-Method: {}\r\n\
             X-Mock-Path: {}\r\n",
            reason_phrase(status),
            body.len(),
            mock.connection,
            request.method,
            request.target
        );
        for (name, value) in &request.headers {
            head.push_str(&format!("X-Echo-{name}: {value}\r\n"));
        }
        if close {
            head.push_str("Connection: close\r\n");
        }
        head.push_str("\r\n");
        match behaviour.slow_head {
            Some(pause) => {
                for line in head.split_inclusive("\r\n") {
                    writer.write_all(line.as_bytes())?;
                    writer.flush()?;
                    thread::sleep(pause);
                }
            }
            None => writer.write_all(head.as_bytes())?,
        }
        if request.method != "HEAD" {
            match behaviour.slow_body {
                Some(pause) => {
                    for part in body.chunks(body.len().div_ceil(5)) {
                        writer.write_all(part)?;
                        writer.flush()?;
                        thread::sleep(pause);
                    }
                }
                None => writer.write_all(&body)?,
            }
        }
        writer.flush()?;
        if close {
            return Ok(());
        }
    }
}

/// Accepts the WebSocket upgrade `request` asked for and echoes messages until the
/// connection closes.
fn echo_websocket<S: Read + Write>(request: &Request, mut reader: BufReader<S>) -> io::Result<()> {
    let key = request
        .header("sec-websocket-key")
        .ok_or_else(|| invalid("a WebSocket upgrade without Sec-WebSocket-Key"))?;
    let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
    reader.get_mut().write_all(
        format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {accept}\r\n\r\n"
        )
        .as_bytes(),
    )?;
    let read_ahead = reader.buffer().to_vec();
    let mut socket = tungstenite::WebSocket::from_partially_read(
        reader.into_inner(),
        read_ahead,
        tungstenite::protocol::Role::Server,
        None,
    );
    loop {
        match socket.read() {
            Ok(message) if message.is_text() || message.is_binary() => {
                socket.send(message).map_err(io::Error::other)?;
            }
            Ok(_) => {}
            Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
                return Ok(());
            }
            Err(e) => return Err(io::Error::other(e)),
        }
    }
}

/// Reads one request; `None` when the client closed the connection between requests.
fn read_request<S: Read + Write>(reader: &mut BufReader<S>) -> io::Result<Option<Request>> {
    let Some(request_line) = read_line(reader)? else {
        return Ok(None);
    };
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(invalid("malformed request line"));
    };
    let mut request = Request {
        method: method.to_owned(),
        target: target.to_owned(),
        version: version.to_owned(),
        headers: Vec::new(),
        body: Vec::new(),
    };
    loop {
        let line = read_line(reader)?.ok_or_else(|| invalid("headers cut short"))?;
        if line.is_empty() {
            break;
        }
        if request.headers.len() == MAX_HEADERS {
            return Err(invalid("too many headers"));
        }
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| invalid("malformed header"))?;
        request
            .headers
            .push((name.trim().to_owned(), value.trim().to_owned()));
    }
    if request
        .header("expect")
        .is_some_and(|e| e.eq_ignore_ascii_case("100-continue"))
    {
        reader
            .get_mut()
            .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
    }
    let chunked = request
        .header("transfer-encoding")
        .is_some_and(|te| te.to_ascii_lowercase().contains("chunked"));
    if chunked {
        request.body = read_chunked(reader)?;
    } else if let Some(length) = request.header("content-length") {
        let length: usize = length.parse().map_err(|_| invalid("bad content-length"))?;
        let mut body = vec![0; length];
        reader.read_exact(&mut body)?;
        request.body = body;
    }
    Ok(Some(request))
}

fn read_chunked<S: Read>(reader: &mut BufReader<S>) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let size_line = read_line(reader)?.ok_or_else(|| invalid("chunk cut short"))?;
        let size_text = size_line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| invalid("bad chunk size"))?;
        if size == 0 {
            // Trailers, then the empty line.
            while !read_line(reader)?
                .ok_or_else(|| invalid("trailers cut short"))?
                .is_empty()
            {}
            return Ok(body);
        }
        let start = body.len();
        body.resize(start + size, 0);
        reader.read_exact(&mut body[start..])?;
        read_line(reader)?;
    }
}

/// One CRLF- (or LF-) terminated line, without the terminator; `None` at end of stream.
fn read_line<S: Read>(reader: &mut BufReader<S>) -> io::Result<Option<String>> {
    let mut line = Vec::new();
    let read = reader
        .by_ref()
        .take(MAX_LINE as u64)
        .read_until(b'\n', &mut line)?;
    if read == 0 {
        return Ok(None);
    }
    if line.last() != Some(&b'\n') {
        return Err(invalid("line too long or cut short"));
    }
    line.pop();
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    String::from_utf8(line)
        .map(Some)
        .map_err(|_| invalid("non-UTF-8 header"))
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Mock Status",
    }
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

/// A uniform number in [0, 1) from a shared xorshift state: good enough to fail "30 % of the
/// time" without pulling in a random-number crate.
fn next_random(state: &AtomicU64) -> f64 {
    let mut x = state.load(Ordering::Relaxed);
    loop {
        let mut next = x;
        next ^= next << 13;
        next ^= next >> 7;
        next ^= next << 17;
        match state.compare_exchange_weak(x, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return (next >> 11) as f64 / (1u64 << 53) as f64,
            Err(current) => x = current,
        }
    }
}

fn time_seed() -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos | 1
}
