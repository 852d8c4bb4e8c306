//! `mock-backend`: a small HTTP server that stands in for a service replica in demos and
//! tests, as the original design's `go run main.go 9001` did.
//!
//! Every request gets `200 Hello from <port>` (or `--status N`) followed by the request body,
//! plus headers that tell what arrived: `X-Mock-Port`, `X-Mock-Method`, `X-Mock-Path` (the
//! request target), `X-Mock-Protocol` (`h1` or `h2`), `X-Mock-Peak-In-Flight` (the most
//! requests it was ever answering at once) and `X-Echo-<name>` for every request header (names
//! in lower case, as hyper gives them). Flags make it misbehave on purpose:
//!
//! ```text
//! mock-backend [--bind ADDR] [--status N] [--fail] [--fail-rate R] [--fail-every N] [--delay-ms N]
//!              [--reset | --close | --hang] [--close-reused] [--flap-ms N] [--slow-head-ms N]
//!              [--slow-body-ms N] [--body-bytes N] [--retry-after N]
//!              [--stall-every N [--stall-ms M]]
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
//! closes the connection without a word, `--hang` reads it and never answers. `--close-reused`
//! answers the first request on each connection (keep-alive) and closes without a word on any
//! later one: to a client that pools connections, every reuse finds its connection gone stale.
//! `--flap-ms N`
//! alternates every N ms between healthy and broken (connections reset, requests dropped),
//! starting healthy. `--slow-head-ms N` sends the response head a line at a time, N ms apart
//! (and closes the connection after the answer);
//! `--slow-body-ms N` sends the body in five parts, N ms apart. `--body-bytes N` pads every
//! body with N dots (a large response). `--retry-after N` adds `Retry-After: N` to every answer
//! (with `--status 503`: a replica that asks for N seconds of rest). `--stall-every N` makes every
//! Nth request of the process wait `--stall-ms M` (default 1000) before its answer: a replica
//! with a slow tail.
//!
//! `--h2` serves HTTP/2 instead (h2c with prior knowledge, or h2 over TLS), with a small gRPC
//! service: see `grpc.rs`. The same flags apply to its answers.
//!
//! `--fail-health` answers `500` on `/healthz` only (everything else as usual): a backend that
//! fails its health checks while still serving, for demos of active health checks.
//!
//! A request that asks to upgrade to a WebSocket (`Upgrade: websocket`, any path) gets `101`
//! and an echo: every text or binary message comes back as it was sent, until either side
//! closes (the framing is `tungstenite`'s).
//!
//! Port 0 picks a free port; the first line on stdout always names the address it listens on.
//! HTTP itself is hyper's (HTTP/1.1 with upgrades, or HTTP/2), TLS is OpenSSL's through
//! `tokio-openssl`, WebSocket framing is `tungstenite`'s: the mock writes no protocol by hand,
//! only its faults, which sit around the stack (a reset before any HTTP, an error instead of an
//! answer, a socket that writes the head a line at a time). It exits 0 on SIGTERM (also as a
//! container's PID 1).

use std::io::{self, Write};
use std::process::ExitCode;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use openssl::ssl::{Ssl, SslAcceptor, SslFiletype, SslMethod, SslVerifyMode};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};

mod answer;
mod grpc;
mod slow_head;
mod websocket;

const USAGE: &str = "usage: mock-backend [--bind ADDR] [--status N] [--fail] [--fail-rate R] \
                     [--fail-every N] \
                     [--delay-ms N] [--reset | --close | --hang] [--close-reused] [--flap-ms N] \
                     [--slow-head-ms N] \
                     [--slow-body-ms N] [--body-bytes N] [--retry-after N] \
                     [--stall-every N [--stall-ms M]] \
                     [--tls-cert FILE --tls-key FILE [--tls-client-ca FILE]] \
                     [--h2] [--fail-health] [--log] PORT";
/// Request headers the mock reads before answering 431 (hyper's default is 100).
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
    /// Close a connection without a word when a second request arrives on it.
    close_reused: bool,
    /// Alternate between healthy and broken periods of this length.
    flap: Option<Duration>,
    /// Send the response head a line at a time, this far apart.
    slow_head: Option<Duration>,
    /// Send the body in parts, this far apart.
    slow_body: Option<Duration>,
    /// Pad every answer's body with this many bytes (`--body-bytes`).
    body_bytes: usize,
    /// A `Retry-After` (seconds) on every answer (`--retry-after N`).
    retry_after: Option<u64>,
    /// Every Nth request of the process waits this long before its answer
    /// (`--stall-every N --stall-ms M`).
    stall: Option<(u64, Duration)>,
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
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("mock-backend: cannot start Tokio: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(&bind, port, behaviour)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mock-backend: {e}");
            ExitCode::from(1)
        }
    }
}

/// Listens on `bind:port` and serves every connection as `behaviour` says, until SIGTERM.
async fn run(bind: &str, port: u16, behaviour: Behaviour) -> io::Result<()> {
    let listener = TcpListener::bind((bind, port))
        .await
        .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {bind}:{port}: {e}")))?;
    let local = listener.local_addr()?;
    exit_on_sigterm()?;
    let acceptor = behaviour
        .tls
        .as_ref()
        .map(|files| tls_acceptor(files, behaviour.h2))
        .transpose()
        .map_err(|e| io::Error::other(format!("TLS: {e}")))?
        .map(Arc::new);
    println!("mock-backend listening on {local}");
    let _ = io::stdout().flush();

    let shared = Arc::new(answer::Shared {
        port: local.port(),
        behaviour,
        started: Instant::now(),
        seed: AtomicU64::new(time_seed()),
        requests: AtomicU64::new(0),
        in_flight: AtomicU64::new(0),
        peak_in_flight: AtomicU64::new(0),
        stalls: AtomicU64::new(0),
    });
    for connection in 1.. {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let mock = answer::Mock {
            shared: shared.clone(),
            connection,
            answered: Arc::default(),
        };
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let _ = accept(tcp, acceptor.as_deref(), mock).await;
        });
    }
    Ok(())
}

/// Exits 0 on SIGTERM, from the moment it returns. A process's default action would do, but
/// not as PID 1 of a container (`docker stop`, a Kubernetes pod ending), where an unhandled
/// SIGTERM is ignored and the mock would wait to be killed.
fn exit_on_sigterm() -> io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = signal(SignalKind::terminate())?;
    tokio::spawn(async move {
        terminate.recv().await;
        std::process::exit(0);
    });
    Ok(())
}

/// An OpenSSL acceptor for `files`: TLS 1.2 and 1.3, client certificates required when a
/// client CA is given, and ALPN `h2` offered (only) when the mock serves HTTP/2.
fn tls_acceptor(files: &TlsFiles, h2: bool) -> Result<SslAcceptor, openssl::error::ErrorStack> {
    let mut builder = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls())?;
    builder.set_certificate_chain_file(&files.cert)?;
    builder.set_private_key_file(&files.key, SslFiletype::PEM)?;
    builder.check_private_key()?;
    if let Some(ca) = &files.client_ca {
        builder.set_ca_file(ca)?;
        builder.set_verify(SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT);
    }
    if h2 {
        builder.set_alpn_select_callback(|_, offered| {
            openssl::ssl::select_next_proto(b"\x02h2", offered)
                .ok_or(openssl::ssl::AlpnError::NOACK)
        });
    }
    Ok(builder.build())
}

/// Takes a new connection: misbehaves at once if told to, else serves it, over TLS if told to.
async fn accept(
    tcp: TcpStream,
    acceptor: Option<&SslAcceptor>,
    mock: answer::Mock,
) -> io::Result<()> {
    tcp.set_nodelay(true)?;
    let behaviour = &mock.shared.behaviour;
    let reset = match behaviour.fault_now(mock.shared.started) {
        Some(ConnectionFault::Reset) => true,
        // A flapping backend that is down refuses new connections the rudest way.
        Some(ConnectionFault::Close) => behaviour.flap.is_some(),
        _ => false,
    };
    if reset {
        // Closing a socket with unread data makes the kernel answer with RST, not FIN.
        tcp.peek(&mut [0; 1]).await?;
        return Ok(());
    }
    match acceptor {
        None => serve(tcp, mock).await,
        Some(acceptor) => {
            let ssl = Ssl::new(acceptor.context()).map_err(io::Error::other)?;
            let mut tls = tokio_openssl::SslStream::new(ssl, tcp).map_err(io::Error::other)?;
            std::pin::Pin::new(&mut tls)
                .accept()
                .await
                .map_err(io::Error::other)?;
            serve(tls, mock).await
        }
    }
}

/// Serves HTTP on one connection with hyper: HTTP/2 with `--h2`, else HTTP/1.1 (keep-alive,
/// upgrades); with `--slow-head-ms`, through a socket that trickles the response head.
async fn serve<S>(io: S, mock: answer::Mock) -> io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let behaviour = &mock.shared.behaviour;
    let h2 = behaviour.h2;
    let slow_head = behaviour.slow_head;
    let service = service_fn(move |request| answer::answer(request, mock.clone()));
    if h2 {
        return hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .serve_connection(TokioIo::new(io), service)
            .await
            .map_err(io::Error::other);
    }
    let mut http1 = hyper::server::conn::http1::Builder::new();
    http1
        .timer(TokioTimer::new())
        .header_read_timeout(None)
        .max_headers(MAX_HEADERS);
    let result = match slow_head {
        Some(pause) => {
            let io = TokioIo::new(slow_head::SlowHead::new(io, pause));
            http1.serve_connection(io, service).with_upgrades().await
        }
        None => {
            http1
                .serve_connection(TokioIo::new(io), service)
                .with_upgrades()
                .await
        }
    };
    result.map_err(io::Error::other)
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
        close_reused: false,
        flap: None,
        slow_head: None,
        slow_body: None,
        body_bytes: 0,
        retry_after: None,
        stall: None,
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
            "--close-reused" => behaviour.close_reused = true,
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
            "--stall-every" => {
                let every: u64 = value("--stall-every")?
                    .parse()
                    .ok()
                    .filter(|&n| n > 0)
                    .ok_or("--stall-every takes a positive whole number")?;
                let pause = behaviour.stall.map_or(Duration::from_secs(1), |(_, d)| d);
                behaviour.stall = Some((every, pause));
            }
            "--stall-ms" => {
                let pause = millis("--stall-ms", &value("--stall-ms")?)?;
                let every = behaviour.stall.map_or(1, |(n, _)| n);
                behaviour.stall = Some((every, pause));
            }
            "--retry-after" => {
                behaviour.retry_after = Some(
                    value("--retry-after")?
                        .parse()
                        .map_err(|_| "--retry-after takes a number of seconds")?,
                )
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

fn time_seed() -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos | 1
}
