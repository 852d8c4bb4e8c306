//! The services file: the original design's `service: [url, ...]` form and the extended form
//! with per-service overrides; and the backends a DNS-discovered service has now.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_yaml::Value;

use super::backend_url::{addresses, parse_target};
use super::tls::{load_ca, load_client_certificate};
use super::units::{ConfigDuration, ConfigSize};
use super::*;
use crate::failure_rate::FailureRate;
use crate::load::{ConcurrencyLimit, LoadSettings, Picking};
use crate::rate_limit::RateLimitSettings;
use crate::resolver::Resolver;
use crate::routing::{EscapedSlashes, PROXY_PREFIX};

/// Parses the services file's `text`, resolving hosts with the machine's resolver; `file` is
/// only used in error messages.
#[cfg(test)]
pub(crate) fn parse_services(
    file: &Path,
    text: &str,
    defaults: &ServiceDefaults,
) -> Result<Vec<ServiceConfig>, ConfigError> {
    parse_services_with(file, text, defaults, &crate::resolver::SystemResolver)
}

/// `parse_services` with hosts resolved by `resolver`.
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
        let folder = file.parent().unwrap_or(Path::new(""));
        let service = parse_service(&name, value, defaults, folder, resolver)
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
        for prefix in &service.path_prefixes {
            if let Some(owner) = services
                .iter()
                .find(|s: &&ServiceConfig| s.path_prefixes.contains(prefix))
            {
                return Err(ConfigError::new(
                    file,
                    Some(&name),
                    format!(
                        "path prefix \"{prefix}\" is also claimed by service \"{}\"",
                        owner.name
                    ),
                ));
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
    folder: &Path,
    resolver: &dyn Resolver,
) -> Result<ServiceConfig, String> {
    validate_service_name(name)?;
    let mut protocol = UpstreamProtocol::Http1;
    let mut path_prefixes = Vec::new();
    let (urls, settings, discovery_interval, tls) = match value {
        Value::Sequence(urls) => (urls, defaults.clone(), None, upstream_tls_default()),
        Value::Mapping(mut fields) => {
            let discovery_interval = parse_discovery(&mut fields)?;
            let tls = parse_upstream_tls(&mut fields, folder)?;
            path_prefixes = parse_path_prefixes(&mut fields)?;
            protocol = match fields.remove("protocol") {
                None => UpstreamProtocol::Http1,
                Some(Value::String(p)) if p == "http1" => UpstreamProtocol::Http1,
                Some(Value::String(p)) if p == "http2" => UpstreamProtocol::Http2,
                Some(other) => {
                    return Err(format!(
                        "protocol {} is neither \"http1\" nor \"http2\"",
                        describe(&other)
                    ))
                }
            };
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
            (
                urls,
                overrides.apply(defaults.clone())?,
                discovery_interval,
                tls,
            )
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
    if settings.retry.hedge_after.is_some() && protocol == UpstreamProtocol::Http2 {
        return Err(
            "hedge_after needs `protocol: http1`: requests to HTTP/2 backends are not hedged"
                .to_owned(),
        );
    }

    let mut targets = Vec::with_capacity(urls.len());
    for entry in urls {
        targets.push(parse_backend_entry(entry)?);
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
        tls,
        health_check: settings.health_check,
        slow_start: settings.slow_start,
        escaped_slashes: settings.escaped_slashes,
        load: settings.load,
        rate_limits: settings.rate_limits,
        retry: settings.retry,
        protocol,
        path_prefixes,
    })
}

/// One entry of `backends`: a URL, or `{url: ..., concurrency_limit: N}` for a backend with
/// a limit of its own.
fn parse_backend_entry(entry: Value) -> Result<BackendTarget, String> {
    let mut fields = match entry {
        Value::String(url) => return parse_target(&url),
        Value::Mapping(fields) => fields,
        other => return Err(format!("backend {} is not a URL string", describe(&other))),
    };
    let Some(Value::String(url)) = fields.remove("url") else {
        return Err("a backend written as a mapping needs `url: http(s)://host:port`".to_owned());
    };
    let mut target = parse_target(&url)?;
    match fields.remove("concurrency_limit") {
        None => {}
        Some(Value::Number(n))
            if n.as_u64()
                .is_some_and(|n| (1..=u64::from(u32::MAX)).contains(&n)) =>
        {
            target.concurrency_limit = n.as_u64().map(|n| ConcurrencyLimit::Fixed(n as u32));
        }
        Some(other) => {
            return Err(format!(
                "backend \"{url}\": concurrency_limit {} is not a number of at least 1",
                describe(&other)
            ))
        }
    }
    if let Some((key, _)) = fields.into_iter().next() {
        return Err(format!(
            "backend \"{url}\": unknown key {} (a backend has `url` and `concurrency_limit`)",
            describe(&key)
        ));
    }
    Ok(target)
}

/// Takes `path_prefixes` out of a service's fields: each starts and ends with `/`, and is not
/// under `/v1/proxy/`.
fn parse_path_prefixes(fields: &mut serde_yaml::Mapping) -> Result<Vec<String>, String> {
    let Some(value) = fields.remove("path_prefixes") else {
        return Ok(Vec::new());
    };
    let Value::Sequence(items) = value else {
        return Err(format!(
            "path_prefixes must be a list, not {}",
            describe(&value)
        ));
    };
    items
        .into_iter()
        .map(|item| {
            let Value::String(prefix) = item else {
                return Err(format!("path prefix {} is not a string", describe(&item)));
            };
            let valid = prefix.len() > 1
                && prefix.starts_with('/')
                && prefix.ends_with('/')
                && prefix.bytes().all(|b| b.is_ascii_graphic());
            if !valid {
                return Err(format!(
                    "path prefix \"{prefix}\" must start and end with / (e.g. /helloworld.Greeter/)"
                ));
            }
            if prefix.starts_with(PROXY_PREFIX) || PROXY_PREFIX.starts_with(&prefix) {
                return Err(format!(
                    "path prefix \"{prefix}\" overlaps {PROXY_PREFIX}, which routes by service name"
                ));
            }
            Ok(prefix)
        })
        .collect()
}

/// TLS to backends verifies their certificates against the system's roots unless told
/// otherwise.
fn upstream_tls_default() -> UpstreamTls {
    UpstreamTls::new(None, true, None)
}

/// The service's `tls_*` keys (files relative to the services file's `folder`), read and
/// checked now.
fn parse_upstream_tls(
    fields: &mut serde_yaml::Mapping,
    folder: &Path,
) -> Result<UpstreamTls, String> {
    let mut path = |key: &str| -> Result<Option<PathBuf>, String> {
        match fields.remove(key) {
            None => Ok(None),
            Some(Value::String(path)) => Ok(Some(folder.join(path))),
            Some(other) => Err(format!(
                "{key} must be a file path, not {}",
                describe(&other)
            )),
        }
    };
    let ca_file = path("tls_ca_file")?;
    let client_cert = path("tls_client_cert")?;
    let client_key = path("tls_client_key")?;
    let verify = match fields.remove("tls_verify") {
        None => true,
        Some(Value::Bool(verify)) => verify,
        Some(other) => {
            return Err(format!(
                "tls_verify must be true or false, not {}",
                describe(&other)
            ))
        }
    };
    let ca = match ca_file {
        Some(file) => Some((file.clone(), load_ca(&file)?)),
        None => None,
    };
    let client = match (client_cert, client_key) {
        (None, None) => None,
        (Some(cert), Some(key)) => {
            let files = CertificateFiles { cert, key };
            let key = load_client_certificate(&files)?;
            Some((files, key))
        }
        _ => return Err("tls_client_cert and tls_client_key go together".to_owned()),
    };
    Ok(UpstreamTls::new(ca, verify, client))
}

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
            tls_host: target.tls.then(|| target.host.clone()),
            authority: target.authority.clone(),
            path_prefix: target.path_prefix.clone(),
            concurrency_limit: target.concurrency_limit,
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
pub(crate) fn discover(
    targets: &[BackendTarget],
    resolver: &dyn Resolver,
) -> Result<Vec<BackendConfig>, String> {
    let mut backends: Vec<BackendConfig> = Vec::new();
    for target in targets {
        for addr in addresses(resolver, target)? {
            let scheme = if target.tls { "https" } else { "http" };
            let url = format!("{scheme}://{addr}{}", target.path_prefix);
            if backends.iter().all(|b| b.url != url) {
                backends.push(BackendConfig {
                    url,
                    addr,
                    tls_host: target.tls.then(|| target.host.clone()),
                    authority: target.authority.clone(),
                    path_prefix: target.path_prefix.clone(),
                    concurrency_limit: target.concurrency_limit,
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
pub(crate) fn is_service_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'~' | b'-')
}

/// Per-service overrides, also used for `gateway.defaults`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawOverrides {
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
    upgrade_idle_timeout: Option<ConfigDuration>,
    max_body_size: Option<ConfigSize>,
    failure_rate_threshold: Option<String>,
    failure_rate_window: Option<ConfigDuration>,
    failure_rate_min_requests: Option<u32>,
    slow_start: Option<ConfigDuration>,
    health_check: Option<RawHealthCheck>,
    escaped_slashes: Option<EscapedSlashes>,
    concurrency_limit: Option<RawConcurrencyLimit>,
    adaptive_limit_min: Option<u32>,
    adaptive_limit_max: Option<u32>,
    queue_size: Option<u32>,
    queue_timeout: Option<ConfigDuration>,
    load_balancing: Option<Picking>,
    rate_limit: Option<RawRateLimit>,
    client_rate_limit: Option<RawRateLimit>,
    retry_on_status: Option<Vec<u16>>,
    retry_idempotency_key: Option<bool>,
    replay_body_limit: Option<ConfigSize>,
    hedge_after: Option<String>,
}

/// `concurrency_limit:` as written: a number, or `adaptive`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum RawConcurrencyLimit {
    Fixed(u32),
    Named(String),
}

/// `rate_limit:` or `client_rate_limit:`, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRateLimit {
    requests_per_second: u32,
    burst: Option<u32>,
}

impl RawRateLimit {
    fn settings(self, key: &str) -> Result<RateLimitSettings, String> {
        let burst = self.burst.unwrap_or(self.requests_per_second);
        if self.requests_per_second == 0 {
            return Err(format!("{key}.requests_per_second must be at least 1"));
        }
        if burst < self.requests_per_second {
            return Err(format!(
                "{key}.burst ({burst}) must be at least requests_per_second ({})",
                self.requests_per_second
            ));
        }
        Ok(RateLimitSettings {
            requests_per_second: self.requests_per_second,
            burst,
        })
    }
}

/// The adaptive limit's bounds when not configured.
const ADAPTIVE_MIN: u32 = 2;
const ADAPTIVE_MAX: u32 = 1000;

/// `health_check:`, as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHealthCheck {
    #[serde(rename = "type")]
    kind: Option<String>,
    path: Option<String>,
    interval: Option<ConfigDuration>,
    timeout: Option<ConfigDuration>,
    unhealthy_threshold: Option<u32>,
    healthy_threshold: Option<u32>,
    expect_status: Option<Value>,
}

impl RawHealthCheck {
    fn settings(self) -> Result<HealthCheckSettings, String> {
        let kind = match self.kind.as_deref() {
            None | Some("http") => HealthCheckKind::Http {
                path: self.path.unwrap_or_else(|| "/".to_owned()),
                expect_status: match self.expect_status {
                    None => (200, 399),
                    Some(value) => status_range(&value)?,
                },
            },
            Some("tcp") if self.path.is_none() && self.expect_status.is_none() => {
                HealthCheckKind::Tcp
            }
            Some("tcp") => {
                return Err("health_check: a tcp check has no path or expect_status".to_owned())
            }
            Some(other) => {
                return Err(format!(
                    "health_check.type \"{other}\" is neither \"http\" nor \"tcp\""
                ))
            }
        };
        if let HealthCheckKind::Http { path, .. } = &kind {
            if !path.starts_with('/') || path.bytes().any(|b| b.is_ascii_whitespace()) {
                return Err(format!(
                    "health_check.path \"{path}\" must start with / and have no spaces"
                ));
            }
        }
        let settings = HealthCheckSettings {
            kind,
            interval: self.interval.map_or(Duration::from_secs(5), |d| d.0),
            timeout: self.timeout.map_or(Duration::from_secs(1), |d| d.0),
            unhealthy_threshold: self.unhealthy_threshold.unwrap_or(2),
            healthy_threshold: self.healthy_threshold.unwrap_or(2),
        };
        if settings.interval < Duration::from_millis(100) || settings.timeout.is_zero() {
            return Err(
                "health_check.interval must be at least 100ms and timeout more than zero"
                    .to_owned(),
            );
        }
        if settings.timeout > settings.interval {
            return Err("health_check.timeout must not be longer than its interval".to_owned());
        }
        if settings.unhealthy_threshold == 0 || settings.healthy_threshold == 0 {
            return Err("health_check thresholds must be at least 1".to_owned());
        }
        Ok(settings)
    }
}

/// `200-399`, or one status `200`.
fn status_range(value: &Value) -> Result<(u16, u16), String> {
    let text = match value {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        other => {
            return Err(format!(
                "health_check.expect_status {} is not a status or range",
                describe(other)
            ))
        }
    };
    let status = |s: &str| {
        s.trim()
            .parse::<u16>()
            .ok()
            .filter(|s| (100..=599).contains(s))
    };
    let range = match text.split_once('-') {
        Some((low, high)) => status(low).zip(status(high)),
        None => status(&text).map(|s| (s, s)),
    };
    range.filter(|(low, high)| low <= high).ok_or_else(|| {
        format!("health_check.expect_status \"{text}\" is not a status or a range like 200-399")
    })
}

/// `concurrency_limit` and the adaptive bounds over `base`.
fn load_settings(
    base: LoadSettings,
    limit: Option<RawConcurrencyLimit>,
    bounds: (Option<u32>, Option<u32>),
) -> Result<LoadSettings, String> {
    let mut out = base;
    match limit {
        None => {}
        Some(RawConcurrencyLimit::Fixed(0)) => {
            return Err("concurrency_limit must be at least 1 (or `adaptive`)".to_owned())
        }
        Some(RawConcurrencyLimit::Fixed(n)) => out.limit = ConcurrencyLimit::Fixed(n),
        Some(RawConcurrencyLimit::Named(word)) if word == "adaptive" => {
            out.limit = ConcurrencyLimit::Adaptive {
                min: ADAPTIVE_MIN,
                max: ADAPTIVE_MAX,
            }
        }
        Some(RawConcurrencyLimit::Named(word)) => {
            return Err(format!(
                "concurrency_limit \"{word}\" is neither a number nor `adaptive`"
            ))
        }
    }
    match (out.limit, bounds) {
        (_, (None, None)) => {}
        (ConcurrencyLimit::Adaptive { min, max }, (low, high)) => {
            let (min, max) = (low.unwrap_or(min), high.unwrap_or(max));
            if min == 0 || min > max {
                return Err(format!(
                    "adaptive_limit_min ({min}) must be at least 1 and at most adaptive_limit_max ({max})"
                ));
            }
            out.limit = ConcurrencyLimit::Adaptive { min, max };
        }
        _ => {
            return Err(
                "adaptive_limit_min and adaptive_limit_max need `concurrency_limit: adaptive`"
                    .to_owned(),
            )
        }
    }
    Ok(out)
}

/// `50%` (or `50`) as a whole percent from 1 to 100.
fn percent(text: &str) -> Option<u8> {
    text.trim()
        .trim_end_matches('%')
        .trim()
        .parse::<u8>()
        .ok()
        .filter(|p| (1..=100).contains(p))
}

impl RawOverrides {
    pub(super) fn apply(self, base: ServiceDefaults) -> Result<ServiceDefaults, String> {
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
        if let Some(policy) = self.escaped_slashes {
            out.escaped_slashes = policy;
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
        if let Some(d) = positive("upgrade_idle_timeout", self.upgrade_idle_timeout)? {
            out.timeouts.upgrade_idle = d;
        }
        if let Some(d) = positive("total_timeout", self.total_timeout)? {
            out.timeouts.total = d;
        }
        let rate_keys = (
            self.failure_rate_threshold,
            self.failure_rate_window,
            self.failure_rate_min_requests,
        );
        match rate_keys {
            (None, None, None) => {}
            (Some(threshold), window, min_requests) => {
                let threshold_percent = percent(&threshold).ok_or_else(|| {
                    format!("failure_rate_threshold \"{threshold}\" is not a percentage from 1% to 100%")
                })?;
                let window = window.map_or(Duration::from_secs(30), |d| d.0);
                if window < Duration::from_secs(1)
                    || window > Duration::from_secs(600)
                    || window.subsec_nanos() != 0
                {
                    return Err(
                        "failure_rate_window must be whole seconds from 1s to 10m".to_owned()
                    );
                }
                out.breaker.failure_rate = Some(FailureRate {
                    threshold_percent,
                    window,
                    min_requests: min_requests.unwrap_or(20).max(1),
                });
            }
            (None, _, _) => {
                return Err(
                    "failure_rate_window and failure_rate_min_requests need failure_rate_threshold"
                        .to_owned(),
                )
            }
        }
        if let Some(d) = positive("slow_start", self.slow_start)? {
            out.slow_start = Some(d);
        }
        if let Some(raw) = self.health_check {
            out.health_check = Some(raw.settings()?);
        }
        out.load = load_settings(
            out.load,
            self.concurrency_limit,
            (self.adaptive_limit_min, self.adaptive_limit_max),
        )?;
        if let Some(size) = self.queue_size {
            out.load.queue.size = size;
        }
        if let Some(d) = positive("queue_timeout", self.queue_timeout)? {
            out.load.queue.timeout = d;
        }
        if let Some(picking) = self.load_balancing {
            out.load.picking = picking;
        }
        if let Some(raw) = self.rate_limit {
            out.rate_limits.service = Some(raw.settings("rate_limit")?);
        }
        if let Some(raw) = self.client_rate_limit {
            out.rate_limits.client = Some(raw.settings("client_rate_limit")?);
        }
        if let Some(mut statuses) = self.retry_on_status {
            if let Some(bad) = statuses.iter().find(|s| !(400..=599).contains(*s)) {
                return Err(format!(
                    "retry_on_status: {bad} is not an error status (400 to 599)"
                ));
            }
            statuses.sort_unstable();
            statuses.dedup();
            out.retry.on_status = statuses;
        }
        if let Some(on) = self.retry_idempotency_key {
            out.retry.idempotency_key = on;
        }
        if let Some(text) = self.hedge_after {
            out.retry.hedge_after = Some(match text.trim() {
                "p95" => HedgeAfter::P95,
                other => match super::units::parse_duration(other) {
                    Some(d) if !d.is_zero() => HedgeAfter::Fixed(d),
                    _ => {
                        return Err(format!(
                            "hedge_after \"{text}\" is neither a duration (e.g. 50ms) nor `p95`"
                        ))
                    }
                },
            });
        }
        if let Some(ConfigSize(bytes)) = self.replay_body_limit {
            if bytes > MAX_REPLAY_LIMIT {
                return Err(format!(
                    "replay_body_limit ({bytes} bytes) is over {} MiB: every request in flight \
                     may hold that much",
                    MAX_REPLAY_LIMIT >> 20
                ));
            }
            out.retry.replay_limit = bytes;
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
