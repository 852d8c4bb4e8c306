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

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use serde_yaml::Value;

use crate::breaker::BreakerSettings;
use crate::observability::LogFormat;
use crate::resolver::{Resolver, SystemResolver};
use crate::retry_budget::RetryBudgetSettings;

/// Where the proxy listens when the conf does not say.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:8080";
/// Where the admin listener listens when the conf does not say.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9091";
/// The environment variable that sets the admin listener's bearer token.
pub const ADMIN_TOKEN_ENV: &str = "GATEWAY_ADMIN_TOKEN";
/// The services file, relative to the conf file, when the conf does not say.
pub const DEFAULT_SERVICES_FILE: &str = "config.yaml";
/// The longest service name accepted.
pub const MAX_SERVICE_NAME_LEN: usize = 64;
/// Request header fields accepted when the conf does not say (Pingora's own limit is 256).
pub const DEFAULT_MAX_HEADER_COUNT: usize = 100;
/// Bytes of request head (request line and header fields) accepted when the conf does not say.
pub const DEFAULT_MAX_HEADER_BYTES: usize = 32 * 1024;
/// Connections the proxy listener serves at once when the conf does not say.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// How long a request head may take to arrive when the conf does not say.
pub const DEFAULT_REQUEST_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an idle client connection is kept open for its next request when the conf does
/// not say (Pingora's own default).
pub const DEFAULT_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(60);
/// How often DNS discovery re-resolves when the service does not say.
pub const DEFAULT_DISCOVERY_INTERVAL: Duration = Duration::from_secs(10);
/// Request body bytes accepted when neither the service nor the defaults say.
pub const DEFAULT_MAX_BODY_BYTES: u64 = 10 * 1024 * 1024;

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
    /// The services file that was loaded.
    pub services_file: PathBuf,
    /// Whether an incoming `X-Forwarded-For` chain is kept (the peer appended) rather than
    /// replaced by the peer address.
    pub trust_forwarded_for: bool,
    /// Whether request header names with `_` are forwarded (they are dropped otherwise).
    pub underscores_in_headers: bool,
    /// How long an idle client connection waits for its next request; whole seconds.
    pub keepalive_timeout: Duration,
    /// Limits on request heads.
    pub header_limits: HeaderLimits,
    /// Limits on client connections.
    pub connection_limits: ConnectionLimits,
    /// The services, in file order.
    pub services: Vec<ServiceConfig>,
}

impl GatewayConfig {
    /// A config with every gateway setting at its default, over `services`: for tests.
    pub fn with_services(services: Vec<ServiceConfig>) -> Self {
        Self {
            listen: DEFAULT_LISTEN.parse().expect("the default listen address"),
            admin_listen: None,
            admin_token: None,
            status_log: false,
            log_format: LogFormat::Text,
            services_file: DEFAULT_SERVICES_FILE.into(),
            trust_forwarded_for: false,
            underscores_in_headers: false,
            keepalive_timeout: DEFAULT_KEEPALIVE_TIMEOUT,
            header_limits: HeaderLimits::default(),
            connection_limits: ConnectionLimits::default(),
            services,
        }
    }

    /// How many backends all services list together.
    pub fn backend_count(&self) -> usize {
        self.services.iter().map(|s| s.backends.len()).sum()
    }

    /// For each backend URL, the services that list it.
    pub fn services_by_backend(&self) -> HashMap<String, Vec<String>> {
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
    /// The URL, normalised: lower-case scheme, no trailing slash.
    pub url: String,
    /// The host, without brackets for IPv6.
    pub host: String,
    /// The port.
    pub port: u16,
    /// `host:port` as written: the `Host` header.
    pub authority: String,
    /// The path, without a trailing slash (often empty).
    pub path_prefix: String,
}

/// The largest request body a service accepts, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyLimit(pub u64);

impl Default for BodyLimit {
    fn default() -> Self {
        Self(DEFAULT_MAX_BODY_BYTES)
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
    /// `read` (see [`UpstreamTimeouts::response_header`]).
    pub response_header: Option<Duration>,
    /// Each read of the response body (the idle time between two chunks) and each write of
    /// the request.
    pub read: Duration,
    /// The whole exchange, across failovers: no attempt starts after it, each attempt's
    /// timeouts are cut to what is left of it, and a response still arriving is cut when it
    /// ends.
    pub total: Duration,
}

impl UpstreamTimeouts {
    /// How long the whole response header may take: as configured, else `read` (so a conf
    /// from before the two were apart keeps its meaning).
    pub fn response_header(&self) -> Duration {
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
    /// `host:port` as written in the URL: the `Host` header sent to the backend.
    pub authority: String,
    /// The URL's path, without a trailing slash (often empty): prefixed to forwarded paths.
    pub path_prefix: String,
}

/// Breaker and timeout values that services inherit unless they override them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ServiceDefaults {
    /// Breaker settings.
    pub breaker: BreakerSettings,
    /// Upstream timeouts.
    pub timeouts: UpstreamTimeouts,
    /// Retry budget.
    pub retry_budget: RetryBudgetSettings,
    /// Request body limit.
    pub max_body: BodyLimit,
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

/// Loads the `gateway:` section of the Pingora conf file at `conf_file` and the services file
/// it names (relative paths are relative to the conf file's folder).
pub fn load(conf_file: &Path) -> Result<GatewayConfig, ConfigError> {
    load_with(conf_file, &SystemResolver)
}

/// [`load`] with hosts resolved by `resolver`.
pub fn load_with(conf_file: &Path, resolver: &dyn Resolver) -> Result<GatewayConfig, ConfigError> {
    let text = read(conf_file)?;
    let conf: RawConfFile = serde_yaml::from_str(&text)
        .map_err(|e| ConfigError::new(conf_file, None, format!("invalid YAML: {e}")))?;
    let section = conf.gateway.unwrap_or_default();

    let listen_text = section.listen.as_deref().unwrap_or(DEFAULT_LISTEN);
    let listen = listen_text.parse::<SocketAddr>().map_err(|_| {
        ConfigError::new(
            conf_file,
            None,
            format!("gateway.listen \"{listen_text}\" is not an address like 0.0.0.0:8080"),
        )
    })?;

    let admin_text = section
        .admin_listen
        .as_deref()
        .unwrap_or(DEFAULT_ADMIN_LISTEN);
    let admin_listen = match admin_text {
        "off" => None,
        text => Some(text.parse::<SocketAddr>().map_err(|_| {
            ConfigError::new(
                conf_file,
                None,
                format!(
                    "gateway.admin_listen \"{text}\" is not an address like 127.0.0.1:9091 \
                     (or \"off\")"
                ),
            )
        })?),
    };
    if admin_listen == Some(listen) {
        return Err(ConfigError::new(
            conf_file,
            None,
            "gateway.admin_listen must differ from gateway.listen: admin paths are never \
             served on the proxy port",
        ));
    }

    let admin_token = std::env::var(ADMIN_TOKEN_ENV)
        .ok()
        .or(section.admin_token)
        .filter(|token| !token.is_empty());

    let log_format = match section.log_format.as_deref() {
        None | Some("text") => LogFormat::Text,
        Some("json") => LogFormat::Json,
        Some(other) => {
            return Err(ConfigError::new(
                conf_file,
                None,
                format!("gateway.log_format \"{other}\" is neither \"text\" nor \"json\""),
            ))
        }
    };

    let header_limits = HeaderLimits {
        max_count: section.max_header_count.unwrap_or(DEFAULT_MAX_HEADER_COUNT),
        max_bytes: section
            .max_header_size
            .map_or(Ok(DEFAULT_MAX_HEADER_BYTES), |ConfigSize(n)| {
                usize::try_from(n)
            })
            .unwrap_or(usize::MAX),
    };
    if header_limits.max_count == 0 || header_limits.max_bytes < 64 {
        return Err(ConfigError::new(
            conf_file,
            None,
            "gateway.max_header_count must be at least 1 and gateway.max_header_size at least \
             64 bytes",
        ));
    }

    let defaults_limits = ConnectionLimits::default();
    let connection_limits = ConnectionLimits {
        max_connections: section
            .max_connections
            .unwrap_or(defaults_limits.max_connections),
        request_header_timeout: section
            .request_header_timeout
            .map_or(defaults_limits.request_header_timeout, |d| d.0),
    };
    if connection_limits.max_connections == 0 || connection_limits.request_header_timeout.is_zero()
    {
        return Err(ConfigError::new(
            conf_file,
            None,
            "gateway.max_connections and gateway.request_header_timeout must be more than zero",
        ));
    }

    let keepalive_timeout = section
        .keepalive_timeout
        .map_or(DEFAULT_KEEPALIVE_TIMEOUT, |d| d.0);
    // Pingora counts it in whole seconds, and takes 0 for "forever".
    if keepalive_timeout.subsec_nanos() != 0 || keepalive_timeout.is_zero() {
        return Err(ConfigError::new(
            conf_file,
            None,
            "gateway.keepalive_timeout must be whole seconds, at least 1s",
        ));
    }

    let defaults = section
        .defaults
        .unwrap_or_default()
        .apply(ServiceDefaults::default())
        .map_err(|message| {
            ConfigError::new(conf_file, None, format!("gateway.defaults: {message}"))
        })?;

    let services_file = conf_file.parent().unwrap_or(Path::new("")).join(
        section
            .services
            .as_deref()
            .unwrap_or(Path::new(DEFAULT_SERVICES_FILE)),
    );
    let services =
        parse_services_with(&services_file, &read(&services_file)?, &defaults, resolver)?;

    Ok(GatewayConfig {
        listen,
        admin_listen,
        admin_token,
        status_log: section.status_log.unwrap_or(true),
        log_format,
        services_file,
        trust_forwarded_for: section.trust_forwarded_for.unwrap_or(false),
        underscores_in_headers: section.underscores_in_headers.unwrap_or(false),
        keepalive_timeout,
        header_limits,
        connection_limits,
        services,
    })
}

/// Parses the services file's `text`, resolving hosts with the machine's resolver; `file` is
/// only used in error messages.
pub fn parse_services(
    file: &Path,
    text: &str,
    defaults: &ServiceDefaults,
) -> Result<Vec<ServiceConfig>, ConfigError> {
    parse_services_with(file, text, defaults, &SystemResolver)
}

/// [`parse_services`] with hosts resolved by `resolver`.
pub fn parse_services_with(
    file: &Path,
    text: &str,
    defaults: &ServiceDefaults,
    resolver: &dyn Resolver,
) -> Result<Vec<ServiceConfig>, ConfigError> {
    let document: Value = serde_yaml::from_str(text)
        .map_err(|e| ConfigError::new(file, None, format!("invalid YAML: {e}")))?;
    let entries = match document {
        Value::Mapping(entries) if !entries.is_empty() => entries,
        Value::Null | Value::Mapping(_) => {
            return Err(ConfigError::new(file, None, "no services defined"))
        }
        _ => {
            return Err(ConfigError::new(
                file,
                None,
                "expected a mapping of service names to backend URL lists",
            ))
        }
    };

    let mut services = Vec::with_capacity(entries.len());
    let mut breaker_owners: HashMap<String, (String, BreakerSettings)> = HashMap::new();
    for (key, value) in entries {
        let name = match key {
            Value::String(name) => name,
            other => {
                return Err(ConfigError::new(
                    file,
                    None,
                    format!("service name {} is not a string", describe(&other)),
                ))
            }
        };
        let service = parse_service(&name, value, defaults, resolver)
            .map_err(|message| ConfigError::new(file, Some(&name), message))?;
        // One breaker per URL, shared by every service that lists it: its settings must agree.
        for backend in &service.backends {
            if let Some((owner, settings)) = breaker_owners.get(&backend.url) {
                if *settings != service.breaker {
                    return Err(ConfigError::new(
                        file,
                        Some(&name),
                        format!(
                            "backend \"{}\" is also listed by service \"{owner}\" with other \
                             breaker settings; a backend has one breaker, so they must match",
                            backend.url
                        ),
                    ));
                }
            } else {
                breaker_owners.insert(backend.url.clone(), (name.clone(), service.breaker));
            }
        }
        services.push(service);
    }
    Ok(services)
}

fn parse_service(
    name: &str,
    value: Value,
    defaults: &ServiceDefaults,
    resolver: &dyn Resolver,
) -> Result<ServiceConfig, String> {
    validate_service_name(name)?;
    let (urls, settings, discovery_interval) = match value {
        Value::Sequence(urls) => (urls, *defaults, None),
        Value::Mapping(mut fields) => {
            let discovery_interval = parse_discovery(&mut fields)?;
            let urls = match fields.remove("backends") {
                Some(Value::Sequence(urls)) => urls,
                Some(other) => {
                    return Err(format!(
                        "backends must be a list of URLs, not {}",
                        describe(&other)
                    ))
                }
                None => return Err("the extended form needs a `backends` list".to_owned()),
            };
            let overrides: RawOverrides =
                serde_yaml::from_value(Value::Mapping(fields)).map_err(|e| e.to_string())?;
            (urls, overrides.apply(*defaults)?, discovery_interval)
        }
        other => {
            return Err(format!(
                "expected a list of backend URLs or a mapping with `backends`, not {}",
                describe(&other)
            ))
        }
    };
    if urls.is_empty() {
        return Err("no backends listed".to_owned());
    }

    let mut targets = Vec::with_capacity(urls.len());
    for url in urls {
        let Value::String(url) = url else {
            return Err(format!("backend {} is not a URL string", describe(&url)));
        };
        targets.push(parse_target(&url)?);
    }
    let (backends, discovery) = match discovery_interval {
        // A discovered host may not resolve yet (its pods still starting, say): the service
        // starts with no backends, answering 503, and discovery fills it in.
        Some(interval) => (
            discover(&targets, resolver).unwrap_or_default(),
            Some(Discovery { targets, interval }),
        ),
        None => (resolve_each(&targets, resolver)?, None),
    };
    Ok(ServiceConfig {
        name: name.to_owned(),
        backends,
        breaker: settings.breaker,
        timeouts: settings.timeouts,
        retry_budget: settings.retry_budget,
        max_body: settings.max_body,
        discovery,
    })
}

/// Takes `discovery` and `discovery_interval` out of a service's fields: the interval when
/// discovery is on.
fn parse_discovery(fields: &mut serde_yaml::Mapping) -> Result<Option<Duration>, String> {
    let interval = match fields.remove("discovery_interval") {
        None => None,
        Some(value) => Some(
            serde_yaml::from_value::<ConfigDuration>(value)
                .map_err(|e| format!("discovery_interval: {e}"))?
                .0,
        ),
    };
    match fields.remove("discovery") {
        None if interval.is_some() => Err("discovery_interval needs `discovery: dns`".to_owned()),
        None => Ok(None),
        Some(Value::String(kind)) if kind == "dns" => {
            let interval = interval.unwrap_or(DEFAULT_DISCOVERY_INTERVAL);
            if interval < Duration::from_millis(100) {
                return Err("discovery_interval must be at least 100ms".to_owned());
            }
            Ok(Some(interval))
        }
        Some(other) => Err(format!(
            "discovery {} is not supported; the one kind is \"dns\"",
            describe(&other)
        )),
    }
}

/// One backend per target, at the first address of its host (IPv4 preferred). Two targets
/// that come to the same backend are an error.
fn resolve_each(
    targets: &[BackendTarget],
    resolver: &dyn Resolver,
) -> Result<Vec<BackendConfig>, String> {
    let mut backends: Vec<BackendConfig> = Vec::with_capacity(targets.len());
    for target in targets {
        let addrs = addresses(resolver, target)?;
        let backend = BackendConfig {
            url: target.url.clone(),
            addr: addrs[0],
            authority: target.authority.clone(),
            path_prefix: target.path_prefix.clone(),
        };
        if let Some(twin) = backends.iter().find(|b| {
            b.url == backend.url || (b.addr == backend.addr && b.path_prefix == backend.path_prefix)
        }) {
            return Err(format!(
                "backend \"{}\" is listed twice (same as \"{}\")",
                target.written, twin.url
            ));
        }
        backends.push(backend);
    }
    Ok(backends)
}

/// One backend per address of every target's host (its IPv4 addresses, or its IPv6 ones if it
/// has none), sorted by address; an address reached twice is one backend. Fails if a host
/// does not resolve or resolves to nothing.
pub fn discover(
    targets: &[BackendTarget],
    resolver: &dyn Resolver,
) -> Result<Vec<BackendConfig>, String> {
    let mut backends: Vec<BackendConfig> = Vec::new();
    for target in targets {
        for addr in addresses(resolver, target)? {
            let url = format!("http://{addr}{}", target.path_prefix);
            if backends.iter().all(|b| b.url != url) {
                backends.push(BackendConfig {
                    url,
                    addr,
                    authority: target.authority.clone(),
                    path_prefix: target.path_prefix.clone(),
                });
            }
        }
    }
    backends.sort_by(|a, b| (a.addr, &a.path_prefix).cmp(&(b.addr, &b.path_prefix)));
    Ok(backends)
}

/// Service names become one path segment, so they are limited to URL-safe characters.
fn validate_service_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("the service name is empty".to_owned());
    }
    if name.len() > MAX_SERVICE_NAME_LEN {
        return Err(format!(
            "the service name is longer than {MAX_SERVICE_NAME_LEN} characters"
        ));
    }
    if name == "." || name == ".." || !name.bytes().all(is_service_name_byte) {
        return Err(
            "a service name may only contain letters, digits, '.', '_', '~' and '-' \
             (and may not be \".\" or \"..\")"
                .to_owned(),
        );
    }
    Ok(())
}

/// Bytes allowed in a service name: RFC 3986 unreserved characters.
pub fn is_service_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'~' | b'-')
}

/// Parses `http://host:port[/path]`.
fn parse_target(url: &str) -> Result<BackendTarget, String> {
    let not_http = || format!("backend \"{url}\" is not an http://host:port[/path] URL");
    let scheme_end = url.find("://").ok_or_else(not_http)?;
    let scheme = &url[..scheme_end];
    if scheme.eq_ignore_ascii_case("https") {
        return Err(format!(
            "backend \"{url}\": https is not supported yet; use an http:// URL"
        ));
    }
    if !scheme.eq_ignore_ascii_case("http") {
        return Err(not_http());
    }
    let rest = &url[scheme_end + 3..];
    if rest
        .bytes()
        .any(|b| b.is_ascii_whitespace() || b.is_ascii_control() || matches!(b, b'?' | b'#' | b'@'))
    {
        return Err(format!(
            "backend \"{url}\" may not contain spaces, a query, a fragment or user info"
        ));
    }
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let (host, port) = split_host_port(authority).ok_or_else(not_http)?;
    let port: u16 = port
        .parse()
        .ok()
        .filter(|&p| p != 0)
        .ok_or_else(|| format!("backend \"{url}\" has an invalid port \"{port}\""))?;
    let path_prefix = path.trim_end_matches('/');
    Ok(BackendTarget {
        written: url.to_owned(),
        url: format!("{}://{authority}{path_prefix}", scheme.to_ascii_lowercase()),
        host: host.to_owned(),
        port,
        authority: authority.to_owned(),
        path_prefix: path_prefix.to_owned(),
    })
}

/// Splits `host:port` or `[v6]:port`; the host comes back without brackets.
fn split_host_port(authority: &str) -> Option<(&str, &str)> {
    let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
        let (host, after) = bracketed.split_once(']')?;
        (host, after.strip_prefix(':')?)
    } else {
        let (host, port) = authority.rsplit_once(':')?;
        let host_ok = host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
        (host_ok.then_some(host)?, port)
    };
    (!host.is_empty() && !port.is_empty()).then_some((host, port))
}

/// The addresses of `target`'s host: its IPv4 ones, or its IPv6 ones if it has none; never
/// empty.
fn addresses(resolver: &dyn Resolver, target: &BackendTarget) -> Result<Vec<SocketAddr>, String> {
    let (url, host) = (&target.written, &target.host);
    let all = resolver
        .resolve(host, target.port)
        .map_err(|e| format!("backend \"{url}\": cannot resolve host \"{host}\": {e}"))?;
    let (v4, v6): (Vec<SocketAddr>, Vec<SocketAddr>) = all.into_iter().partition(|a| a.is_ipv4());
    let addrs = if v4.is_empty() { v6 } else { v4 };
    if addrs.is_empty() {
        return Err(format!(
            "backend \"{url}\": host \"{host}\" resolves to no address"
        ));
    }
    Ok(addrs)
}

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

/// The parts of the Pingora conf file that are ours; Pingora ignores them, we ignore its keys.
#[derive(Debug, Default, Deserialize)]
struct RawConfFile {
    #[serde(default)]
    gateway: Option<RawGatewaySection>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGatewaySection {
    listen: Option<String>,
    admin_listen: Option<String>,
    admin_token: Option<String>,
    log_format: Option<String>,
    services: Option<PathBuf>,
    status_log: Option<bool>,
    trust_forwarded_for: Option<bool>,
    underscores_in_headers: Option<bool>,
    max_header_count: Option<usize>,
    max_header_size: Option<ConfigSize>,
    max_connections: Option<usize>,
    request_header_timeout: Option<ConfigDuration>,
    keepalive_timeout: Option<ConfigDuration>,
    defaults: Option<RawOverrides>,
}

/// Per-service overrides, also used for `gateway.defaults`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOverrides {
    failure_threshold: Option<u32>,
    open_timeout: Option<ConfigDuration>,
    open_timeout_max: Option<ConfigDuration>,
    open_timeout_jitter_percent: Option<u8>,
    retry_budget_percent: Option<u32>,
    retry_budget_min_per_second: Option<u32>,
    connect_timeout: Option<ConfigDuration>,
    response_header_timeout: Option<ConfigDuration>,
    read_timeout: Option<ConfigDuration>,
    total_timeout: Option<ConfigDuration>,
    max_body_size: Option<ConfigSize>,
}

impl RawOverrides {
    fn apply(self, base: ServiceDefaults) -> Result<ServiceDefaults, String> {
        let mut out = base;
        if let Some(threshold) = self.failure_threshold {
            if threshold == 0 {
                return Err("failure_threshold must be at least 1".to_owned());
            }
            out.breaker.failure_threshold = threshold;
        }
        if let Some(percent) = self.open_timeout_jitter_percent {
            if percent > 100 {
                return Err("open_timeout_jitter_percent must be from 0 to 100".to_owned());
            }
            out.breaker.open_timeout_jitter_percent = percent;
        }
        if let Some(percent) = self.retry_budget_percent {
            out.retry_budget.ratio_percent = percent;
        }
        if let Some(per_second) = self.retry_budget_min_per_second {
            out.retry_budget.min_per_second = per_second;
        }
        if let Some(ConfigSize(bytes)) = self.max_body_size {
            out.max_body = BodyLimit(bytes);
        }
        if let Some(ConfigDuration(max)) = self.open_timeout_max {
            out.breaker.open_timeout_max = Some(max);
        }
        let positive = |name: &str, value: Option<ConfigDuration>| match value {
            Some(ConfigDuration(d)) if d.is_zero() => {
                Err(format!("{name} must be longer than zero"))
            }
            other => Ok(other.map(|ConfigDuration(d)| d)),
        };
        if let Some(d) = positive("open_timeout", self.open_timeout)? {
            out.breaker.open_timeout = d;
        }
        if let Some(d) = positive("connect_timeout", self.connect_timeout)? {
            out.timeouts.connect = d;
        }
        if let Some(d) = positive("response_header_timeout", self.response_header_timeout)? {
            out.timeouts.response_header = Some(d);
        }
        if let Some(d) = positive("read_timeout", self.read_timeout)? {
            out.timeouts.read = d;
        }
        if let Some(d) = positive("total_timeout", self.total_timeout)? {
            out.timeouts.total = d;
        }
        if let Some(max) = out.breaker.open_timeout_max {
            if max < out.breaker.open_timeout {
                return Err(format!(
                    "open_timeout_max ({max:?}) is shorter than open_timeout ({:?})",
                    out.breaker.open_timeout
                ));
            }
        }
        Ok(out)
    }
}

/// A duration written with a unit: `250ms`, `10s`, `2m`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ConfigDuration(Duration);

impl<'de> Deserialize<'de> for ConfigDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct DurationVisitor;
        impl Visitor<'_> for DurationVisitor {
            type Value = ConfigDuration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration with a unit, like \"250ms\", \"10s\" or \"2m\"")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<ConfigDuration, E> {
                parse_duration(text).map(ConfigDuration).ok_or_else(|| {
                    E::custom(format!(
                        "\"{text}\" is not a duration like \"250ms\", \"10s\" or \"2m\""
                    ))
                })
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<ConfigDuration, E> {
                Err(E::custom(format!(
                    "`{n}` has no unit; write \"{n}s\" or \"{n}ms\""
                )))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<ConfigDuration, E> {
                Err(E::custom(format!("`{n}` is not a duration with a unit")))
            }
            fn visit_f64<E: de::Error>(self, n: f64) -> Result<ConfigDuration, E> {
                Err(E::custom(format!("`{n}` is not a duration with a unit")))
            }
        }
        deserializer.deserialize_any(DurationVisitor)
    }
}

/// A size in bytes: a whole number, or one with a unit: `512KiB`, `10MiB`, `1GiB`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ConfigSize(u64);

impl<'de> Deserialize<'de> for ConfigSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SizeVisitor;
        impl Visitor<'_> for SizeVisitor {
            type Value = ConfigSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size in bytes, like 65536, \"64KiB\" or \"10MiB\"")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<ConfigSize, E> {
                parse_size(text).map(ConfigSize).ok_or_else(|| {
                    E::custom(format!(
                        "\"{text}\" is not a size like 65536, \"64KiB\" or \"10MiB\""
                    ))
                })
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<ConfigSize, E> {
                Ok(ConfigSize(n))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<ConfigSize, E> {
                Err(E::custom(format!("`{n}` is not a size in bytes")))
            }
            fn visit_f64<E: de::Error>(self, n: f64) -> Result<ConfigSize, E> {
                Err(E::custom(format!("`{n}` is not a whole number of bytes")))
            }
        }
        deserializer.deserialize_any(SizeVisitor)
    }
}

/// Parses a whole number, optionally followed by `KiB`, `MiB` or `GiB`.
fn parse_size(text: &str) -> Option<u64> {
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits_end);
    let number: u64 = number.parse().ok()?;
    let scale: u64 = match unit {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        _ => return None,
    };
    number.checked_mul(scale)
}

/// Parses a whole number followed by `ms`, `s` or `m`.
fn parse_duration(text: &str) -> Option<Duration> {
    let digits_end = text.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = text.split_at(digits_end);
    let number: u64 = number.parse().ok()?;
    match unit {
        "ms" => Some(Duration::from_millis(number)),
        "s" => Some(Duration::from_secs(number)),
        "m" => Some(Duration::from_secs(number.checked_mul(60)?)),
        _ => None,
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
             open_timeout: 250ms\n  open_timeout_max: 5m\n  open_timeout_jitter_percent: 10\n  connect_timeout: 2s\n  read_timeout: 1m\n",
        )
        .unwrap();
        let search = &services[0];
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
                "service \"product\": backend \"ftp://localhost:1\" is not an http://host:port[/path] URL",
            ),
            ("product: [\"localhost:9001\"]", "is not an http://host:port[/path] URL"),
            ("product: [\"http://localhost\"]", "is not an http://host:port[/path] URL"),
            ("product: [\"http://localhost:99999\"]", "invalid port \"99999\""),
            ("product: [\"http://localhost:0\"]", "invalid port \"0\""),
            ("product: [\"http://:9001\"]", "is not an http://host:port[/path] URL"),
            ("product: [\"http://a b:9001\"]", "may not contain spaces"),
            ("product: [\"http://h:1/?q=1\"]", "may not contain spaces, a query"),
            (
                "product: [\"https://localhost:9001\"]",
                "backend \"https://localhost:9001\": https is not supported yet",
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
    fn sizes_are_bytes_or_binary_units() {
        assert_eq!(parse_size("65536"), Some(65536));
        assert_eq!(parse_size("64KiB"), Some(64 * 1024));
        assert_eq!(parse_size("10MiB"), Some(10 << 20));
        assert_eq!(parse_size("1GiB"), Some(1 << 30));
        for bad in [
            "",
            "MiB",
            "1.5MiB",
            "10 MiB",
            "10MB",
            "-1",
            "99999999999GiB",
        ] {
            assert_eq!(parse_size(bad), None, "{bad}");
        }
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
    fn durations_need_a_unit() {
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("10s"), Some(Duration::from_secs(10)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        for bad in ["", "10", "s", "1.5s", "-1s", "10 s", "10h"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
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
