//! Configuration: the `gateway:` section of the Pingora conf file and the services file.
//!
//! Both are read, validated and resolved here, once, before Pingora's bootstrap, so that
//! `gateway -t` checks them too and the running gateway never sees a raw string it would have
//! to re-check. Every error names the file, the service when there is one, and the bad value.
//!
//! The services file keeps the original design's format, `service: [url, ...]`, and adds an
//! extended per-service form with overrides:
//!
//! ```yaml
//! product:                       # original form
//!   - http://localhost:9001
//!   - http://localhost:9002
//! search:                        # extended form
//!   backends: [http://10.0.0.5:8000/api]
//!   failure_threshold: 5
//!   open_timeout: 30s
//!   open_timeout_max: 5m         # opt-in: the cooldown doubles per failed probe, up to this
//!   open_timeout_jitter_percent: 10
//!   retry_budget_percent: 20       # failovers allowed per 100 requests
//!   retry_budget_min_per_second: 10
//!   connect_timeout: 500ms
//!   response_header_timeout: 10s # the whole response header; default: read_timeout
//!   read_timeout: 5s             # each body read (idle between chunks), each write
//!   total_timeout: 20s
//!   max_body_size: 1MiB          # larger request bodies get 413
//! cart:                          # DNS discovery: every address of the host is a backend,
//!   backends: [http://cart-headless.shop.svc.cluster.local:8080]
//!   discovery: dns               # re-resolved every discovery_interval
//!   discovery_interval: 10s
//! ```
//!
//! Host names are resolved here, once, to a single address (the first IPv4 one if there is
//! any), so `localhost` is one backend and not two, and no lookup happens per request. A
//! service with `discovery: dns` instead gets one backend per address (see [`Discovery`]),
//! or none while its hosts do not resolve; the `discovery` module re-resolves them in the
//! background.

//! Where each part lives: `gateway` reads the conf file's section,
//! `services` the services file (and `discover`s a DNS service's backends), `backend_url`
//! parses backend URLs and resolves their hosts, `units` reads durations and sizes.

mod backend_url;
mod gateway;
mod services;
mod tls;
mod units;

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_yaml::Value;

use crate::breaker::BreakerSettings;
use crate::load::{ConcurrencyLimit, LoadSettings};
use crate::rate_limit::RateLimitSettings;
use crate::retry_budget::RetryBudgetSettings;
use crate::routing::EscapedSlashes;

pub use gateway::{load, load_with};
#[cfg(test)]
pub(crate) use services::parse_services;
pub use services::parse_services_with;
pub(crate) use services::{discover, is_service_name_byte};
pub(crate) use tls::{CertificateFiles, ServedCertificate, TlsListener, UpstreamTls};

/// Where the proxy listens when the conf does not say.
pub(crate) const DEFAULT_LISTEN: &str = "0.0.0.0:8080";
/// Where the admin listener listens when the conf does not say.
pub(crate) const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9091";
/// The environment variable that sets the admin listener's bearer token.
pub(crate) const ADMIN_TOKEN_ENV: &str = "GATEWAY_ADMIN_TOKEN";
/// The services file, relative to the conf file, when the conf does not say.
pub(crate) const DEFAULT_SERVICES_FILE: &str = "config.yaml";
/// The longest service name accepted.
pub(crate) const MAX_SERVICE_NAME_LEN: usize = 64;
/// Request header fields accepted when the conf does not say (Pingora's own limit is 256).
pub(crate) const DEFAULT_MAX_HEADER_COUNT: usize = 100;
/// Bytes of request head (request line and header fields) accepted when the conf does not say.
pub(crate) const DEFAULT_MAX_HEADER_BYTES: usize = 32 * 1024;
/// Connections the proxy listener serves at once when the conf does not say.
pub(crate) const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// How long a request head may take to arrive when the conf does not say.
pub(crate) const DEFAULT_REQUEST_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an idle client connection is kept open for its next request when the conf does
/// not say (Pingora's own default).
pub(crate) const DEFAULT_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long one write to a client may wait for the client to take data when the conf does not
/// say (nginx's `send_timeout`).
pub(crate) const DEFAULT_CLIENT_WRITE_TIMEOUT: Duration = Duration::from_secs(60);
/// How often DNS discovery re-resolves when the service does not say.
pub(crate) const DEFAULT_DISCOVERY_INTERVAL: Duration = Duration::from_secs(10);
/// Request body bytes accepted when neither the service nor the defaults say.
pub(crate) const DEFAULT_MAX_BODY_BYTES: u64 = 10 * 1024 * 1024;

/// How log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// The original design's lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Everything the gateway needs beyond Pingora's own server conf.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// The proxy listener's address, e.g. `0.0.0.0:8080`.
    pub listen: SocketAddr,
    /// The admin listener's address; `None` when it is switched off.
    pub admin_listen: Option<SocketAddr>,
    /// The bearer token the admin listener requires, if any (`GATEWAY_ADMIN_TOKEN` in the
    /// environment wins over `gateway.admin_token`).
    pub admin_token: Option<String>,
    /// Whether every proxied request logs the `[CIRCUIT STATUS]` block of its backend.
    pub status_log: bool,
    /// How log lines look.
    pub log_format: LogFormat,
    /// The access log, one line per request, in this format; `None` when off.
    pub access_log: Option<LogFormat>,
    /// The services file that was loaded.
    pub services_file: PathBuf,
    /// Whether an incoming `X-Forwarded-For` chain is kept (the peer appended) rather than
    /// replaced by the peer address.
    pub trust_forwarded_for: bool,
    /// Whether request header names with `_` are forwarded (they are dropped otherwise).
    pub underscores_in_headers: bool,
    /// Whether HTTP/1 header names are forwarded spelled as they came, rather than in title
    /// case (`X-Request-Id`).
    pub preserve_header_case: bool,
    /// Whether the plaintext listener also speaks HTTP/2 with prior knowledge (h2c).
    pub h2c: bool,
    /// How long an idle client connection waits for its next request; whole seconds.
    pub keepalive_timeout: Duration,
    /// How long one write of a response to a client may wait for the client to read.
    pub client_write_timeout: Duration,
    /// Limits on request heads.
    pub header_limits: HeaderLimits,
    /// Limits on client connections.
    pub connection_limits: ConnectionLimits,
    /// The TLS listener, when `gateway.tls` configures one.
    pub tls: Option<TlsListener>,
    /// The services, in file order.
    pub services: Vec<ServiceConfig>,
}

impl GatewayConfig {
    /// A config with every gateway setting at its default, over `services`: for tests.
    #[cfg(test)]
    pub(crate) fn with_services(services: Vec<ServiceConfig>) -> Self {
        Self {
            listen: DEFAULT_LISTEN.parse().expect("the default listen address"),
            admin_listen: None,
            admin_token: None,
            status_log: false,
            log_format: LogFormat::Text,
            access_log: None,
            services_file: DEFAULT_SERVICES_FILE.into(),
            trust_forwarded_for: false,
            underscores_in_headers: false,
            preserve_header_case: false,
            h2c: true,
            keepalive_timeout: DEFAULT_KEEPALIVE_TIMEOUT,
            client_write_timeout: DEFAULT_CLIENT_WRITE_TIMEOUT,
            header_limits: HeaderLimits::default(),
            connection_limits: ConnectionLimits::default(),
            tls: None,
            services,
        }
    }

    /// How many backends all services list together.
    pub(crate) fn backend_count(&self) -> usize {
        self.services.iter().map(|s| s.backends.len()).sum()
    }

    /// For each backend URL, the services that list it.
    pub(crate) fn services_by_backend(&self) -> HashMap<String, Vec<String>> {
        let mut map: HashMap<String, Vec<String>> = HashMap::new();
        for service in &self.services {
            for backend in &service.backends {
                map.entry(backend.url.clone())
                    .or_default()
                    .push(service.name.clone());
            }
        }
        map
    }
}

/// One service and its backends.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceConfig {
    /// The name used in `/v1/proxy/{name}`.
    pub name: String,
    /// The replicas, in config order.
    pub backends: Vec<BackendConfig>,
    /// Settings of this service's backend breakers.
    pub breaker: BreakerSettings,
    /// Timeouts of requests to this service's backends.
    pub timeouts: UpstreamTimeouts,
    /// How many failovers the service may make.
    pub retry_budget: RetryBudgetSettings,
    /// The largest request body the service accepts.
    pub max_body: BodyLimit,
    /// Set when `backends` come from DNS discovery rather than from one address per URL.
    pub discovery: Option<Discovery>,
    /// How the service talks TLS to its `https://` backends.
    pub tls: UpstreamTls,
    /// Active health checks of its backends, when configured.
    pub health_check: Option<HealthCheckSettings>,
    /// Opt-in slow start of backends that have just closed.
    pub slow_start: Option<Duration>,
    /// What to do with `%2F`, `%5C` or `\` in a forwarded path.
    pub escaped_slashes: EscapedSlashes,
    /// Concurrency limits, the waiting room, and how backends are picked.
    pub load: LoadSettings,
    /// The service's rate limit, as a whole and per client address.
    pub rate_limits: RateLimitsConfig,
    /// Retries on a backend's status, and of writes with an `Idempotency-Key`.
    pub retry: RetryPolicy,
    /// The HTTP version spoken to its backends.
    pub protocol: UpstreamProtocol,
    /// Path prefixes that reach the service with the path unchanged (gRPC's
    /// `/package.Service/`), besides `/v1/proxy/{name}`.
    pub path_prefixes: Vec<String>,
}

/// The HTTP version a service speaks to its backends (`protocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UpstreamProtocol {
    /// HTTP/1.1 (the default).
    #[default]
    Http1,
    /// HTTP/2: with prior knowledge (h2c) on `http://` URLs, by ALPN on `https://` ones.
    Http2,
}

/// DNS discovery of a service's backends: every address a configured URL's host resolves to
/// is a backend of its own (its own breaker), named `http://<address>:<port>[/path]` and sent
/// the configured `Host`. Re-resolved every `interval`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discovery {
    /// The configured URLs.
    pub targets: Vec<BackendTarget>,
    /// How often to re-resolve them.
    pub interval: Duration,
}

/// A backend URL, parsed but not resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendTarget {
    /// The URL as written in the file, for messages.
    pub written: String,
    /// `https`: the backend is reached over TLS, with `host` as the SNI and verified name.
    pub tls: bool,
    /// The URL, normalised: lower-case scheme, no trailing slash.
    pub url: String,
    /// The host, without brackets for IPv6.
    pub host: String,
    /// The port.
    pub port: u16,
    /// `host:port` as written: the `Host` header's value, made once.
    pub authority: http::HeaderValue,
    /// The path, without a trailing slash (often empty).
    pub path_prefix: String,
    /// Its own `concurrency_limit`, overriding its service's.
    pub concurrency_limit: Option<ConcurrencyLimit>,
}

/// The largest request body a service accepts, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyLimit(pub u64);

impl Default for BodyLimit {
    fn default() -> Self {
        Self(DEFAULT_MAX_BODY_BYTES)
    }
}

/// When a request goes on to another backend although the attempt reached its backend: the
/// statuses that send it on, and whether writes with an `Idempotency-Key` may go too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// A backend's answers with these statuses send a replayable request on to another
    /// backend (`retry_on_status`).
    pub on_status: Vec<u16>,
    /// A `POST` or `PATCH` with an `Idempotency-Key` header is replayable like an idempotent
    /// request (`retry_idempotency_key`).
    pub idempotency_key: bool,
    /// The largest request body kept for a replay, in bytes (`replay_body_limit`): a request
    /// with a larger body is not retried once it may have reached a backend.
    pub replay_limit: u64,
    /// Opt-in: a bodiless `GET` or `HEAD` that has no answer after this long gets a second
    /// attempt at another backend (`hedge_after`).
    pub hedge_after: Option<HedgeAfter>,
}

/// When a request is hedged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HedgeAfter {
    /// After a fixed delay.
    Fixed(Duration),
    /// After the first backend's own recent 95th percentile latency (`p95`).
    P95,
}

/// Pingora's own replay buffer: 64 KiB.
pub const DEFAULT_REPLAY_LIMIT: u64 = 64 * 1024;
/// The largest `replay_body_limit`: each request in flight may hold that much.
pub const MAX_REPLAY_LIMIT: u64 = 64 * 1024 * 1024;

impl Default for RetryPolicy {
    /// 502, 503 and 504 (a proxy in trouble, a server restarting or shedding, a dependency
    /// timing out), never a 500; writes are never replayed.
    fn default() -> Self {
        Self {
            on_status: vec![502, 503, 504],
            idempotency_key: false,
            replay_limit: DEFAULT_REPLAY_LIMIT,
            hedge_after: None,
        }
    }
}

/// Limits on a listener's client connections, enforced by the connection guard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Connections served at once; more are answered 503 and closed.
    pub max_connections: usize,
    /// How long a request head may take to arrive, whole: from the accept for a connection's
    /// first request, from its first byte for the next ones.
    pub request_header_timeout: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            request_header_timeout: DEFAULT_REQUEST_HEADER_TIMEOUT,
        }
    }
}

/// Limits on a request's head, checked before it is routed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderLimits {
    /// Header fields.
    pub max_count: usize,
    /// Bytes of request line and header fields together.
    pub max_bytes: usize,
}

impl Default for HeaderLimits {
    fn default() -> Self {
        Self {
            max_count: DEFAULT_MAX_HEADER_COUNT,
            max_bytes: DEFAULT_MAX_HEADER_BYTES,
        }
    }
}

/// Per-attempt timeouts towards a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpstreamTimeouts {
    /// Establishing the TCP connection.
    pub connect: Duration,
    /// The whole response header, from when the request has been sent; `None` follows
    /// `read` (see `UpstreamTimeouts::response_header`).
    pub response_header: Option<Duration>,
    /// Each read of the response body (the idle time between two chunks) and each write of
    /// the request.
    pub read: Duration,
    /// The whole exchange, across failovers: no attempt starts after it, each attempt's
    /// timeouts are cut to what is left of it, and a response still arriving is cut when it
    /// ends.
    pub total: Duration,
    /// How long an upgraded connection (a WebSocket) may be idle both ways; once upgraded,
    /// `read` and `total` no longer apply to it.
    pub upgrade_idle: Duration,
}

impl UpstreamTimeouts {
    /// How long the whole response header may take: as configured, else `read` (so a conf
    /// from before the two were apart keeps its meaning).
    pub(crate) fn response_header(&self) -> Duration {
        self.response_header.unwrap_or(self.read)
    }
}

impl Default for UpstreamTimeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(1),
            response_header: None,
            read: Duration::from_secs(30),
            total: Duration::from_secs(60),
            upgrade_idle: Duration::from_secs(3600),
        }
    }
}

/// One backend URL, parsed and resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendConfig {
    /// The URL as configured, without a trailing slash: the breaker's name in logs.
    pub url: String,
    /// The resolved address.
    pub addr: SocketAddr,
    /// The host name TLS is spoken to (SNI, certificate name), for an `https` URL.
    pub tls_host: Option<String>,
    /// `host:port` as written in the URL: the value of the `Host` header sent to the backend,
    /// made once.
    pub authority: http::HeaderValue,
    /// The URL's path, without a trailing slash (often empty): prefixed to forwarded paths.
    pub path_prefix: String,
    /// Its own `concurrency_limit`, overriding its service's.
    pub concurrency_limit: Option<ConcurrencyLimit>,
}

/// Active health checks of a service's backends (`health_check`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheckSettings {
    /// What a check does.
    pub kind: HealthCheckKind,
    /// How often each backend is checked.
    pub interval: Duration,
    /// How long one check may take, connect included.
    pub timeout: Duration,
    /// Consecutive failed checks that take a backend out.
    pub unhealthy_threshold: u32,
    /// Consecutive passed checks that bring it back.
    pub healthy_threshold: u32,
}

/// What a health check does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthCheckKind {
    /// `GET path` with the backend's own `Host`; a status in `expect_status` passes.
    Http {
        /// The path (and query) to ask for.
        path: String,
        /// The statuses that pass, both ends included.
        expect_status: (u16, u16),
    },
    /// A TCP connect (and a TLS handshake for `https` backends).
    Tcp,
}

/// Breaker and timeout values that services inherit unless they override them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ServiceDefaults {
    /// Breaker settings.
    pub breaker: BreakerSettings,
    /// Upstream timeouts.
    pub timeouts: UpstreamTimeouts,
    /// Retry budget.
    pub retry_budget: RetryBudgetSettings,
    /// Request body limit.
    pub max_body: BodyLimit,
    /// Active health checks, when configured.
    pub health_check: Option<HealthCheckSettings>,
    /// Opt-in: a backend that has just closed gets a share of traffic growing to full over
    /// this long.
    pub slow_start: Option<Duration>,
    /// What to do with `%2F`, `%5C` or `\` in a forwarded path.
    pub escaped_slashes: EscapedSlashes,
    /// Concurrency limits, the waiting room, and how backends are picked.
    pub load: LoadSettings,
    /// Rate limits.
    pub rate_limits: RateLimitsConfig,
    /// Retries beyond connect failures.
    pub retry: RetryPolicy,
}

/// A service's rate limits: `rate_limit` and `client_rate_limit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RateLimitsConfig {
    /// All of the service's requests together.
    pub service: Option<RateLimitSettings>,
    /// Each client address's requests.
    pub client: Option<RateLimitSettings>,
}

/// A configuration problem, naming the file, the service if any, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    file: PathBuf,
    service: Option<String>,
    message: String,
}

impl ConfigError {
    fn new(file: &Path, service: Option<&str>, message: impl Into<String>) -> Self {
        Self {
            file: file.to_path_buf(),
            service: service.map(str::to_owned),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.service {
            Some(service) => write!(
                f,
                "{}: service \"{}\": {}",
                self.file.display(),
                service,
                self.message
            ),
            None => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

fn read(file: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(file)
        .map_err(|e| ConfigError::new(file, None, format!("cannot read the file: {e}")))
}

fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => format!("`{b}`"),
        Value::Number(n) => format!("`{n}`"),
        Value::String(s) => format!("\"{s}\""),
        Value::Sequence(_) => "a list".to_owned(),
        Value::Mapping(_) => "a mapping".to_owned(),
        Value::Tagged(_) => "a tagged value".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<ServiceConfig>, String> {
        parse_services(
            Path::new("services.yaml"),
            text,
            &ServiceDefaults::default(),
        )
        .map_err(|e| e.to_string())
    }

    fn error(text: &str) -> String {
        parse(text).expect_err("should be rejected")
    }

    #[test]
    fn the_original_format_loads_unchanged() {
        let services =
            parse("product:\n  - http://localhost:9001\n  - http://localhost:9002\n").unwrap();
        assert_eq!(services.len(), 1);
        let product = &services[0];
        assert_eq!(product.name, "product");
        assert_eq!(product.breaker, BreakerSettings::default());
        assert_eq!(product.timeouts, UpstreamTimeouts::default());
        let urls: Vec<_> = product.backends.iter().map(|b| b.url.as_str()).collect();
        assert_eq!(urls, ["http://localhost:9001", "http://localhost:9002"]);
        assert_eq!(product.backends[0].addr, "127.0.0.1:9001".parse().unwrap());
        assert_eq!(product.backends[0].authority, "localhost:9001");
        assert_eq!(product.backends[0].path_prefix, "");
    }

    #[test]
    fn the_extended_form_overrides_defaults() {
        let services = parse(
            "search:\n  backends: [\"http://127.0.0.1:8000/api/\"]\n  failure_threshold: 5\n  \
             open_timeout: 250ms\n  open_timeout_max: 5m\n  open_timeout_jitter_percent: 10\n  connect_timeout: 2s\n  read_timeout: 1m\n  upgrade_idle_timeout: 5m\n",
        )
        .unwrap();
        let search = &services[0];
        assert_eq!(search.timeouts.upgrade_idle, Duration::from_secs(300));
        let plain = parse("p: [\"http://127.0.0.1:1\"]\n").unwrap();
        assert_eq!(plain[0].timeouts.upgrade_idle, Duration::from_secs(3600));
        assert_eq!(search.breaker.failure_threshold, 5);
        assert_eq!(search.breaker.open_timeout, Duration::from_millis(250));
        assert_eq!(
            search.breaker.open_timeout_max,
            Some(Duration::from_secs(300))
        );
        assert_eq!(search.breaker.open_timeout_jitter_percent, 10);
        assert_eq!(search.timeouts.connect, Duration::from_secs(2));
        assert_eq!(search.timeouts.read, Duration::from_secs(60));
        assert_eq!(search.backends[0].url, "http://127.0.0.1:8000/api");
        assert_eq!(search.backends[0].path_prefix, "/api");
    }

    #[test]
    fn the_response_header_timeout_follows_read_timeout_unless_set() {
        let services = parse(
            "a: {backends: [\"http://127.0.0.1:1\"], read_timeout: 5s}\n\
             b: {backends: [\"http://127.0.0.1:2\"], read_timeout: 5s, response_header_timeout: 2s}\n",
        )
        .unwrap();
        let timeouts = |name: &str| services.iter().find(|s| s.name == name).unwrap().timeouts;
        assert_eq!(timeouts("a").response_header(), Duration::from_secs(5));
        assert_eq!(timeouts("b").response_header(), Duration::from_secs(2));
        assert_eq!(timeouts("b").read, Duration::from_secs(5));
    }

    #[test]
    fn ipv6_literals_work() {
        let services = parse("v6: [\"http://[::1]:9001\"]").unwrap();
        assert_eq!(services[0].backends[0].addr, "[::1]:9001".parse().unwrap());
        assert_eq!(services[0].backends[0].authority, "[::1]:9001");
    }

    #[test]
    fn bad_files_give_one_clear_message() {
        let cases = [
            ("", "services.yaml: no services defined"),
            ("product: [", "services.yaml: invalid YAML"),
            ("- a\n- b\n", "expected a mapping of service names"),
            ("product: []", "service \"product\": no backends listed"),
            ("product: http://localhost:1", "expected a list of backend URLs"),
            ("product: [42]", "backend `42` is not a URL string"),
            (
                "product: [\"ftp://localhost:1\"]",
                "service \"product\": backend \"ftp://localhost:1\" is not an http(s)://host:port[/path] URL",
            ),
            ("product: [\"localhost:9001\"]", "is not an http(s)://host:port[/path] URL"),
            ("product: [\"http://localhost\"]", "is not an http(s)://host:port[/path] URL"),
            ("product: [\"http://localhost:99999\"]", "invalid port \"99999\""),
            ("product: [\"http://localhost:0\"]", "invalid port \"0\""),
            ("product: [\"http://:9001\"]", "is not an http(s)://host:port[/path] URL"),
            ("product: [\"http://a b:9001\"]", "may not contain spaces"),
            ("product: [\"http://h:1/?q=1\"]", "non-ASCII characters, a query"),
            ("product: [\"http://[ü]:1\"]", "may not contain spaces, non-ASCII"),
            (
                "product: {backends: [\"https://localhost:9001\"], tls_ca_file: /nonexistent.pem}",
                "service \"product\": /nonexistent.pem: cannot read",
            ),
            (
                "product: {backends: [\"https://localhost:9001\"], tls_client_cert: c.pem}",
                "tls_client_cert and tls_client_key go together",
            ),
            (
                "product: {backends: [\"https://localhost:9001\"], tls_verify: maybe}",
                "tls_verify must be true or false",
            ),
            (
                "a: {backends: [\"http://localhost:1\"], path_prefixes: [/x.Y/]}\nb: {backends: [\"http://localhost:2\"], path_prefixes: [/x.Y/]}",
                "service \"b\": path prefix \"/x.Y/\" is also claimed by service \"a\"",
            ),
            (
                "product: {backends: [\"http://localhost:1\"], path_prefixes: [/v1/proxy/x/]}",
                "overlaps /v1/proxy/",
            ),
            (
                "product: {backends: [\"http://localhost:1\"], path_prefixes: [/v1/]}",
                "overlaps /v1/proxy/",
            ),
            (
                "product: {backends: [\"http://localhost:1\"], path_prefixes: [x.Y/]}",
                "must start and end with /",
            ),
            (
                "product: {backends: [\"http://localhost:1\"], protocol: http3}",
                "protocol \"http3\" is neither \"http1\" nor \"http2\"",
            ),
            (
                "product: {backends: [\"http://localhost:1\"], health_check: {type: udp}}",
                "health_check.type \"udp\" is neither",
            ),
            (
                "product: {backends: [\"http://localhost:1\"], health_check: {expect_status: 200-99}}",
                "health_check.expect_status \"200-99\" is not a status",
            ),
            (
                "product: {backends: [\"http://localhost:1\"], health_check: {interval: 1s, timeout: 2s}}",
                "health_check.timeout must not be longer than its interval",
            ),
            (
                "product: {backends: [\"http://localhost:1\"], health_check: {unhealthy_threshold: 0}}",
                "health_check thresholds must be at least 1",
            ),
            (
                "product: {backends: [\"http://localhost:1\"], health_check: {type: tcp, path: /x}}",
                "a tcp check has no path",
            ),
            (
                "product: {backends: [\"http://localhost:1\"], failure_rate_threshold: 150%}",
                "failure_rate_threshold \"150%\" is not a percentage",
            ),
            (
                "product: {backends: [\"http://localhost:1\"], failure_rate_window: 30s}",
                "need failure_rate_threshold",
            ),
            (
                "product: {backends: [\"http://localhost:1\"], failure_rate_threshold: 50%, failure_rate_window: 1500ms}",
                "failure_rate_window must be whole seconds",
            ),
            (
                "product: [\"http://localhost:9001\", \"http://localhost:9001/\"]",
                "backend \"http://localhost:9001/\" is listed twice",
            ),
            (
                "product: [\"http://localhost:9001\", \"http://127.0.0.1:9001\"]",
                "backend \"http://127.0.0.1:9001\" is listed twice",
            ),
            (
                "product: [\"http://no-such-host.invalid:9001\"]",
                "cannot resolve host \"no-such-host.invalid\"",
            ),
            ("\"a/b\": [\"http://localhost:1\"]", "a service name may only contain"),
            ("\"..\": [\"http://localhost:1\"]", "a service name may only contain"),
            ("1: [\"http://localhost:1\"]", "service name `1` is not a string"),
            ("p: {backends: [\"http://localhost:1\"], failure_threshold: 0}", "at least 1"),
            ("p: {backends: [\"http://localhost:1\"], open_timeout: 10}", "has no unit"),
            ("p: {backends: [\"http://localhost:1\"], open_timeout: 0s}", "longer than zero"),
            (
                "p: {backends: [\"http://localhost:1\"], response_header_timeout: 0s}",
                "response_header_timeout must be longer than zero",
            ),
            ("p: {backends: [\"http://localhost:1\"], open_timeout: ten}", "not a duration"),
            ("p: {backends: [\"http://localhost:1\"], retries: 2}", "unknown field `retries`"),
            ("p: {failure_threshold: 2}", "needs a `backends` list"),
            (
                "p: {backends: [\"http://localhost:1\"], open_timeout: 10s, open_timeout_max: 5s}",
                "open_timeout_max (5s) is shorter than open_timeout (10s)",
            ),
            (
                "p: {backends: [\"http://localhost:1\"], open_timeout_jitter_percent: 101}",
                "from 0 to 100",
            ),
            (
                "a: [\"http://localhost:1\"]\nb: {backends: [\"http://localhost:1\"], failure_threshold: 9}",
                "also listed by service \"a\" with other breaker settings",
            ),
            ("p: {backends: [\"http://localhost:1\"], max_body_size: 1TB}", "not a size"),
            ("p: {backends: [\"http://localhost:1\"], max_body_size: -1}", "not a size"),
            ("p: {backends: [\"http://localhost:1\"], discovery: consul}", "the one kind is \"dns\""),
            (
                "p: {backends: [\"http://localhost:1\"], discovery_interval: 5s}",
                "discovery_interval needs `discovery: dns`",
            ),
            (
                "p: {backends: [\"http://localhost:1\"], discovery: dns, discovery_interval: 1ms}",
                "at least 100ms",
            ),
        ];
        for (text, expected) in cases {
            let message = error(text);
            assert!(
                message.contains(expected),
                "for {text:?}: {message:?} should contain {expected:?}"
            );
        }
    }

    #[test]
    fn a_url_shared_by_two_services_with_the_same_settings_is_fine() {
        let services = parse("a: [\"http://localhost:1\"]\nb: [\"http://localhost:1\"]").unwrap();
        assert_eq!(services.len(), 2);
    }

    #[test]
    fn load_and_rate_limit_settings_parse_with_their_defaults_and_refuse_nonsense() {
        use crate::load::{ConcurrencyLimit, Picking, QueueSettings};
        use crate::rate_limit::RateLimitSettings;
        let services = parse(
            "a:\n  backends: [\"http://127.0.0.1:1\"]\n  concurrency_limit: 50\n  \
             queue_size: 100\n  queue_timeout: 250ms\n  load_balancing: least_requests\n  \
             rate_limit: {requests_per_second: 100, burst: 300}\n  \
             client_rate_limit: {requests_per_second: 10}\n\
             b:\n  backends: [\"http://127.0.0.1:2\"]\n  concurrency_limit: adaptive\n  \
             adaptive_limit_max: 64\n  load_balancing: peak_ewma\n\
             c: [\"http://127.0.0.1:3\"]\n",
        )
        .unwrap();
        let (a, b, c) = (&services[0], &services[1], &services[2]);
        assert_eq!(a.load.limit, ConcurrencyLimit::Fixed(50));
        assert_eq!(
            a.load.queue,
            QueueSettings {
                size: 100,
                timeout: Duration::from_millis(250)
            }
        );
        assert_eq!(a.load.picking, Picking::LeastRequests);
        let limit = |requests_per_second, burst| {
            Some(RateLimitSettings {
                requests_per_second,
                burst,
            })
        };
        assert_eq!(a.rate_limits.service, limit(100, 300));
        assert_eq!(
            a.rate_limits.client,
            limit(10, 10),
            "burst defaults to the rate"
        );
        assert_eq!(b.load.limit, ConcurrencyLimit::Adaptive { min: 2, max: 64 });
        assert_eq!(b.load.picking, Picking::PeakEwma);
        let hedged = parse(
            "h:\n  backends: [\"http://127.0.0.1:6\"]\n  hedge_after: 40ms\n\
             p:\n  backends: [\"http://127.0.0.1:7\"]\n  hedge_after: p95\n",
        )
        .unwrap();
        assert_eq!(
            hedged[0].retry.hedge_after,
            Some(HedgeAfter::Fixed(Duration::from_millis(40)))
        );
        assert_eq!(hedged[1].retry.hedge_after, Some(HedgeAfter::P95));
        assert_eq!(c.retry.hedge_after, None);
        assert_eq!(c.load, LoadSettings::default());
        assert_eq!(c.load.limit, ConcurrencyLimit::Unlimited);
        assert_eq!(c.load.picking, Picking::RoundRobin);
        assert_eq!(c.rate_limits, RateLimitsConfig::default());
        // A backend's own limit.
        let own = parse(
            "d:\n  backends:\n    - http://127.0.0.1:4\n    - {url: \"http://127.0.0.1:5\", \
             concurrency_limit: 3}\n  concurrency_limit: 9\n",
        )
        .unwrap();
        let limits: Vec<_> = own[0]
            .backends
            .iter()
            .map(|b| b.concurrency_limit)
            .collect();
        assert_eq!(limits, [None, Some(ConcurrencyLimit::Fixed(3))]);
        for (backend, expected) in [
            ("{concurrency_limit: 3}", "needs `url:"),
            (
                "{url: \"http://127.0.0.1:5\", concurrency_limit: 0}",
                "not a number of at least 1",
            ),
            (
                "{url: \"http://127.0.0.1:5\", weight: 2}",
                "unknown key \"weight\"",
            ),
        ] {
            let message = error(&format!("e:\n  backends:\n    - {backend}\n"));
            assert!(message.contains(expected), "{backend}: {message}");
        }
        let service = |keys: &str| format!("s:\n  backends: [\"http://127.0.0.1:1\"]\n  {keys}\n");
        for (keys, expected) in [
            ("concurrency_limit: 0", "at least 1"),
            ("concurrency_limit: lots", "neither a number nor `adaptive`"),
            (
                "adaptive_limit_max: 5",
                "need `concurrency_limit: adaptive`",
            ),
            (
                "concurrency_limit: adaptive\n  adaptive_limit_min: 10\n  adaptive_limit_max: 5",
                "at most adaptive_limit_max",
            ),
            (
                "queue_timeout: 0s",
                "queue_timeout must be longer than zero",
            ),
            ("load_balancing: random", "unknown variant"),
            ("rate_limit: {requests_per_second: 0}", "at least 1"),
            (
                "client_rate_limit: {requests_per_second: 10, burst: 5}",
                "client_rate_limit.burst (5) must be at least requests_per_second (10)",
            ),
            ("rate_limit: {rps: 10}", "unknown field"),
            ("hedge_after: soon", "neither a duration"),
            (
                "hedge_after: 50ms\n  protocol: http2",
                "hedge_after needs `protocol: http1`",
            ),
        ] {
            let message = error(&service(keys));
            assert!(message.contains(expected), "{keys}: {message}");
        }
    }

    #[test]
    fn health_checks_failure_rate_and_slow_start_parse_with_their_defaults() {
        let services = parse(
            "a:\n  backends: [\"http://127.0.0.1:1\"]\n  health_check: {path: /healthz}\n  \
             failure_rate_threshold: 50%\n  slow_start: 30s\n\
             b:\n  backends: [\"http://127.0.0.1:2\"]\n  health_check: {type: tcp, interval: 2s, \
             timeout: 500ms, unhealthy_threshold: 3, healthy_threshold: 1}\n  \
             failure_rate_threshold: \"25\"\n  failure_rate_window: 10s\n  failure_rate_min_requests: 5\n\
             c: [\"http://127.0.0.1:3\"]\n",
        )
        .unwrap();
        let (a, b, c) = (&services[0], &services[1], &services[2]);
        assert_eq!(
            a.health_check,
            Some(HealthCheckSettings {
                kind: HealthCheckKind::Http {
                    path: "/healthz".to_owned(),
                    expect_status: (200, 399),
                },
                interval: Duration::from_secs(5),
                timeout: Duration::from_secs(1),
                unhealthy_threshold: 2,
                healthy_threshold: 2,
            })
        );
        assert_eq!(
            a.breaker.failure_rate,
            Some(crate::failure_rate::FailureRate {
                threshold_percent: 50,
                window: Duration::from_secs(30),
                min_requests: 20,
            })
        );
        assert_eq!(a.slow_start, Some(Duration::from_secs(30)));
        assert_eq!(a.protocol, UpstreamProtocol::Http1);
        let h2 = parse("h: {backends: [\"http://127.0.0.1:1\"], protocol: http2}\n").unwrap();
        assert_eq!(h2[0].protocol, UpstreamProtocol::Http2);
        let b_check = b.health_check.as_ref().unwrap();
        assert_eq!(b_check.kind, HealthCheckKind::Tcp);
        assert_eq!(
            (
                b_check.interval,
                b_check.timeout,
                b_check.unhealthy_threshold,
                b_check.healthy_threshold
            ),
            (Duration::from_secs(2), Duration::from_millis(500), 3, 1)
        );
        assert_eq!(
            b.breaker
                .failure_rate
                .map(|r| (r.threshold_percent, r.window, r.min_requests)),
            Some((25, Duration::from_secs(10), 5))
        );
        assert_eq!(
            (
                c.health_check.as_ref(),
                c.breaker.failure_rate,
                c.slow_start
            ),
            (None, None, None)
        );
    }

    #[test]
    fn max_body_size_is_a_size_with_a_default() {
        let services =
            parse("p: {backends: [\"http://localhost:1\"], max_body_size: 2KiB}").unwrap();
        assert_eq!(services[0].max_body, BodyLimit(2048));
        assert_eq!(
            parse("p: [\"http://localhost:1\"]").unwrap()[0].max_body,
            BodyLimit::default()
        );
    }

    #[test]
    fn dns_discovery_makes_one_backend_per_address() {
        let resolver = crate::resolver::ScriptedResolver::default();
        resolver.answer("cart.svc", &["10.0.0.2", "10.0.0.1", "fd00::1"]);
        let services = parse_services_with(
            Path::new("services.yaml"),
            "cart:\n  backends: [\"http://cart.svc:8080/api\"]\n  discovery: dns\n  discovery_interval: 2s\n",
            &ServiceDefaults::default(),
            &resolver,
        )
        .unwrap();
        let cart = &services[0];
        let urls: Vec<&str> = cart.backends.iter().map(|b| b.url.as_str()).collect();
        assert_eq!(
            urls,
            ["http://10.0.0.1:8080/api", "http://10.0.0.2:8080/api"],
            "IPv4 only, sorted"
        );
        assert!(cart
            .backends
            .iter()
            .all(|b| b.authority == "cart.svc:8080" && b.path_prefix == "/api"));
        let discovery = cart.discovery.as_ref().unwrap();
        assert_eq!(discovery.interval, Duration::from_secs(2));
        assert_eq!(discovery.targets[0].host, "cart.svc");

        resolver.answer("cart.svc", &[]);
        assert!(discover(&discovery.targets, &resolver)
            .unwrap_err()
            .contains("resolves to no address"));
        resolver.fail("cart.svc");
        assert!(discover(&discovery.targets, &resolver)
            .unwrap_err()
            .contains("cannot resolve host \"cart.svc\""));

        let static_service = parse_services_with(
            Path::new("services.yaml"),
            "s: [\"http://cart.svc:1\"]",
            &ServiceDefaults::default(),
            &{
                let r = crate::resolver::ScriptedResolver::default();
                r.answer("cart.svc", &["10.0.0.9", "10.0.0.8"]);
                r
            },
        )
        .unwrap();
        assert_eq!(
            static_service[0].backends.len(),
            1,
            "without discovery: one address"
        );
        assert_eq!(static_service[0].discovery, None);
    }

    #[test]
    fn the_conf_file_section_is_optional_and_validated() {
        let dir = std::env::temp_dir().join(format!("gateway-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("config.yaml"),
            "product: [\"http://localhost:9001\"]\n",
        )
        .unwrap();

        std::fs::write(dir.join("bare.yaml"), "---\nversion: 1\nthreads: 2\n").unwrap();
        let config = load(&dir.join("bare.yaml")).unwrap();
        assert_eq!(config.listen, DEFAULT_LISTEN.parse().unwrap());
        assert_eq!(
            config.admin_listen,
            Some(DEFAULT_ADMIN_LISTEN.parse().unwrap())
        );
        assert!(config.status_log);
        assert_eq!(config.services_file, dir.join("config.yaml"));
        assert_eq!(config.keepalive_timeout, DEFAULT_KEEPALIVE_TIMEOUT);

        std::fs::write(
            dir.join("custom.yaml"),
            "version: 1\ngateway:\n  listen: 127.0.0.1:9999\n  admin_listen: \"off\"\n  status_log: false\n  \
             defaults:\n    open_timeout: 200ms\n",
        )
        .unwrap();
        let config = load(&dir.join("custom.yaml")).unwrap();
        assert_eq!(config.listen, "127.0.0.1:9999".parse().unwrap());
        assert!(!config.status_log);
        assert_eq!(config.admin_listen, None);
        assert_eq!(
            config.services[0].breaker.open_timeout,
            Duration::from_millis(200)
        );

        for (text, expected) in [
            (
                "gateway:\n  listen: nowhere\n",
                "gateway.listen \"nowhere\" is not an address",
            ),
            ("gateway:\n  lissen: 1.2.3.4:5\n", "unknown field `lissen`"),
            (
                "gateway:\n  log_format: xml\n",
                "gateway.log_format \"xml\" is neither",
            ),
            (
                "gateway:\n  admin_listen: nowhere\n",
                "gateway.admin_listen \"nowhere\" is not",
            ),
            (
                "gateway:\n  listen: 127.0.0.1:9\n  admin_listen: 127.0.0.1:9\n",
                "must differ from gateway.listen",
            ),
            (
                "gateway:\n  defaults:\n    failure_threshold: 0\n",
                "gateway.defaults: failure_threshold",
            ),
            (
                "gateway:\n  keepalive_timeout: 1500ms\n",
                "gateway.keepalive_timeout must be whole seconds, at least 1s",
            ),
            (
                "gateway:\n  keepalive_timeout: 0s\n",
                "gateway.keepalive_timeout must be whole seconds, at least 1s",
            ),
            (
                "gateway:\n  client_write_timeout: 0s\n",
                "gateway.client_write_timeout must be more than zero",
            ),
            (
                "gateway:\n  services: missing.yaml\n",
                "missing.yaml: cannot read the file",
            ),
        ] {
            std::fs::write(dir.join("bad.yaml"), text).unwrap();
            let message = load(&dir.join("bad.yaml")).unwrap_err().to_string();
            assert!(
                message.contains(expected),
                "{message:?} should contain {expected:?}"
            );
        }
        std::fs::write(
            dir.join("token.yaml"),
            "gateway:\n  admin_token: from-conf\n",
        )
        .unwrap();
        assert_eq!(
            load(&dir.join("token.yaml"))
                .unwrap()
                .admin_token
                .as_deref(),
            Some("from-conf")
        );
        // Only this test reads the variable, so setting it cannot race another test.
        std::env::set_var(ADMIN_TOKEN_ENV, "from-env");
        let token = load(&dir.join("token.yaml")).unwrap().admin_token;
        std::env::remove_var(ADMIN_TOKEN_ENV);
        assert_eq!(token.as_deref(), Some("from-env"), "the environment wins");
        assert_eq!(load(&dir.join("bare.yaml")).unwrap().admin_token, None);

        let missing = load(&dir.join("absent.yaml")).unwrap_err().to_string();
        assert!(
            missing.contains("absent.yaml: cannot read the file"),
            "{missing}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
