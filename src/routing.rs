//! Routing: which service a request path names, and the table of services it is looked up in.
//!
//! `/v1/proxy/{service}` and `/v1/proxy/{service}/{rest}` name a service; everything after the
//! service segment is forwarded under the chosen backend's own path prefix. The service
//! segment is compared byte for byte with the configured names, which are limited to URL-safe
//! characters: percent-encoding is not decoded, so `%2F` or `%2E%2E` can never name a service.
//!
//! The rest of the path is forwarded with its dot segments resolved (RFC 3986 §5.2.4,
//! percent-encoded ones such as `%2e%2e` too), so a backend that resolves `..` itself can never
//! be led above its configured prefix; a `..` that would climb above the rest's root is refused.
//!
//! The table is built once from the validated config. Backends listed by several services share
//! one breaker, keyed by URL, as in the original design.

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use pingora_load_balancing::Backend;

use crate::breaker::{Breaker, TransitionObserver};

use crate::clock::Clock;
use crate::config::{BodyLimit, ServiceConfig, UpstreamTimeouts};
use crate::retry_budget::RetryBudget;
use crate::selector::RoundRobin;
use crate::telemetry::metrics::{ServiceStats, UpstreamStats};

/// The path every proxied request starts with.
pub const PROXY_PREFIX: &str = "/v1/proxy/";

/// A request path split into the service it names and what follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyPath<'a> {
    /// The service segment.
    pub service: &'a str,
    /// The rest of the path: empty, or starting with `/`.
    pub rest: &'a str,
}

/// Why a path names no service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteError {
    /// The path is not under `/v1/proxy/`.
    NotAProxyPath,
    /// `/v1/proxy/` with nothing after it.
    MissingService,
}

/// Splits `/v1/proxy/{service}[/{rest}]` (the path only, without the query).
pub fn parse_proxy_path(path: &str) -> Result<ProxyPath<'_>, RouteError> {
    let after = path
        .strip_prefix(PROXY_PREFIX)
        .ok_or(RouteError::NotAProxyPath)?;
    let end = after.find('/').unwrap_or(after.len());
    let (service, rest) = after.split_at(end);
    if service.is_empty() {
        return Err(RouteError::MissingService);
    }
    Ok(ProxyPath { service, rest })
}

/// A `..` segment that would climb above the root of the forwarded path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClimbsAboveRoot;

/// `rest` (empty, or starting with `/`) with its `.` and `..` segments resolved, plain or
/// percent-encoded; borrowed when it has none. A trailing dot segment leaves a trailing `/`.
pub fn resolve_dot_segments(rest: &str) -> Result<Cow<'_, str>, ClimbsAboveRoot> {
    let maybe_dots = rest.contains("/.") || rest.contains("%2e") || rest.contains("%2E");
    if !maybe_dots || !rest.split('/').any(|s| dot_segment(s).is_some()) {
        return Ok(Cow::Borrowed(rest));
    }
    let mut kept: Vec<&str> = Vec::new();
    let mut ends_in_directory = false;
    for segment in rest.split('/').skip(1) {
        ends_in_directory = true;
        match dot_segment(segment) {
            Some(DotSegment::Current) => {}
            Some(DotSegment::Parent) => {
                kept.pop().ok_or(ClimbsAboveRoot)?;
            }
            None => {
                kept.push(segment);
                ends_in_directory = false;
            }
        }
    }
    let mut resolved = String::with_capacity(rest.len());
    for segment in kept {
        resolved.push('/');
        resolved.push_str(segment);
    }
    if ends_in_directory || resolved.is_empty() {
        resolved.push('/');
    }
    Ok(Cow::Owned(resolved))
}

enum DotSegment {
    Current,
    Parent,
}

/// Whether `segment` is `.` or `..`, with any dot percent-encoded as `%2e` or `%2E`.
fn dot_segment(segment: &str) -> Option<DotSegment> {
    let mut dots = 0;
    let mut bytes = segment.as_bytes();
    while !bytes.is_empty() {
        bytes = if let Some(after) = bytes.strip_prefix(b".") {
            after
        } else if bytes.len() >= 3 && bytes[..3].eq_ignore_ascii_case(b"%2e") {
            &bytes[3..]
        } else {
            return None;
        };
        dots += 1;
    }
    match dots {
        1 => Some(DotSegment::Current),
        2 => Some(DotSegment::Parent),
        _ => None,
    }
}

/// The path and query a backend receives: its prefix, then `rest`, then the original query.
pub fn upstream_path_and_query(prefix: &str, rest: &str, query: Option<&str>) -> String {
    let mut target =
        String::with_capacity(prefix.len() + rest.len() + query.map_or(0, |q| q.len() + 1) + 1);
    target.push_str(prefix);
    target.push_str(rest);
    if target.is_empty() {
        target.push('/');
    }
    if let Some(query) = query {
        target.push('?');
        target.push_str(query);
    }
    target
}

/// One backend of a service, ready to connect to.
#[derive(Debug)]
pub struct Upstream {
    /// The URL as configured (also its breaker's name).
    pub url: String,
    /// The resolved address, as Pingora's load-balancing crate describes a backend.
    pub backend: Backend,
    /// `host:port` from the URL, sent as the `Host` header.
    pub authority: String,
    /// The URL's path prefix (may be empty).
    pub path_prefix: String,
    /// What this service's attempts at this backend came to.
    pub stats: Arc<UpstreamStats>,
}

/// A service: its backends, their rotation, and its timeouts.
#[derive(Debug)]
pub struct Service {
    /// The service's name.
    pub name: String,
    /// Backends in config order; `selector` indexes into this.
    pub upstreams: Box<[Upstream]>,
    /// Breaker-aware round-robin over `upstreams`.
    pub selector: RoundRobin,
    /// Per-attempt timeouts.
    pub timeouts: UpstreamTimeouts,
    /// Bounds the service's failovers.
    pub retry_budget: RetryBudget,
    /// Counts of what happened to the service's requests.
    pub stats: Arc<ServiceStats>,
    /// The largest request body it accepts.
    pub max_body: BodyLimit,
}

/// All services by name.
#[derive(Debug, Default)]
pub struct ServiceTable {
    services: HashMap<Box<str>, Arc<Service>>,
}

impl ServiceTable {
    /// Builds the table, with one breaker per distinct backend URL. A breaker of `previous`
    /// (the table being replaced by a reload) is kept, state and counters, when its URL stays
    /// with the same breaker settings; other backends start Closed. Metrics are kept for every
    /// service, and (service, backend URL) pair, that stays.
    pub fn build(
        services: &[ServiceConfig],
        clock: Arc<dyn Clock>,
        observer: Arc<dyn TransitionObserver>,
        previous: Option<&ServiceTable>,
    ) -> Self {
        let kept: HashMap<&str, &Arc<Breaker>> = previous
            .into_iter()
            .flat_map(|table| table.services.values())
            .flat_map(|service| service.selector.breakers())
            .map(|breaker| (breaker.name(), breaker))
            .collect();
        let previous_service = |name: &str| previous.and_then(|table| table.get(name));
        let mut breakers: HashMap<&str, Arc<Breaker>> = HashMap::new();
        let mut table = HashMap::with_capacity(services.len());
        for service in services {
            let kept_service = previous_service(&service.name);
            let mut upstreams = Vec::with_capacity(service.backends.len());
            let mut rotation = Vec::with_capacity(service.backends.len());
            for backend in &service.backends {
                let breaker = breakers.entry(&backend.url).or_insert_with(|| {
                    match kept.get(backend.url.as_str()) {
                        Some(old) if old.settings() == service.breaker => Arc::clone(old),
                        _ => Arc::new(Breaker::new(
                            backend.url.clone(),
                            service.breaker,
                            clock.clone(),
                            observer.clone(),
                        )),
                    }
                });
                rotation.push(breaker.clone());
                upstreams.push(Upstream {
                    url: backend.url.clone(),
                    backend: resolved_backend(backend.addr),
                    authority: backend.authority.clone(),
                    path_prefix: backend.path_prefix.clone(),
                    stats: kept_service
                        .and_then(|kept| kept.upstreams.iter().find(|u| u.url == backend.url))
                        .map_or_else(Default::default, |kept| Arc::clone(&kept.stats)),
                });
            }
            table.insert(
                service.name.clone().into_boxed_str(),
                Arc::new(Service {
                    name: service.name.clone(),
                    upstreams: upstreams.into_boxed_slice(),
                    selector: RoundRobin::new(rotation),
                    timeouts: service.timeouts,
                    retry_budget: RetryBudget::new(service.retry_budget, clock.clone()),
                    stats: kept_service.map_or_else(Default::default, |kept| kept.stats.clone()),
                    max_body: service.max_body,
                }),
            );
        }
        Self { services: table }
    }

    /// The service named `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<Service>> {
        self.services.get(name)
    }

    /// Every service, sorted by name.
    pub fn services(&self) -> Vec<&Arc<Service>> {
        let mut services: Vec<_> = self.services.values().collect();
        services.sort_by(|a, b| a.name.cmp(&b.name));
        services
    }
}

fn resolved_backend(addr: SocketAddr) -> Backend {
    Backend {
        addr: pingora::protocols::l4::socket::SocketAddr::Inet(addr),
        weight: 1,
        ext: Default::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::breaker::IgnoreTransitions;
    use crate::clock::ManualClock;
    use crate::config::{parse_services, ServiceDefaults};
    use std::path::Path;

    #[test]
    fn proxy_paths_split_into_service_and_rest() {
        let ok = |path, service, rest| {
            assert_eq!(
                parse_proxy_path(path),
                Ok(ProxyPath { service, rest }),
                "{path}"
            )
        };
        ok("/v1/proxy/product", "product", "");
        ok("/v1/proxy/product/", "product", "/");
        ok("/v1/proxy/product/a/b", "product", "/a/b");
        ok("/v1/proxy/a%2Fb/c", "a%2Fb", "/c");
        for path in [
            "/",
            "/v1/proxy",
            "/v1/proxyproduct",
            "/v2/proxy/product",
            "",
        ] {
            assert_eq!(
                parse_proxy_path(path),
                Err(RouteError::NotAProxyPath),
                "{path}"
            );
        }
        assert_eq!(
            parse_proxy_path("/v1/proxy/"),
            Err(RouteError::MissingService)
        );
        assert_eq!(
            parse_proxy_path("/v1/proxy//x"),
            Err(RouteError::MissingService)
        );
    }

    #[test]
    fn dot_segments_are_resolved_under_the_root() {
        let resolved = |rest| resolve_dot_segments(rest).map(Cow::into_owned);
        for (rest, expected) in [
            ("", ""),
            ("/", "/"),
            ("/a/b", "/a/b"),
            ("/a/./b", "/a/b"),
            ("/a/../b", "/b"),
            ("/a/b/..", "/a/"),
            ("/a/.", "/a/"),
            ("/a/..", "/"),
            ("/a/%2e%2e/b", "/b"),
            ("/a/.%2E/b", "/b"),
            ("/a/%2E/b", "/a/b"),
            ("/a/.../b", "/a/.../b"),
            ("/a/..b/c", "/a/..b/c"),
            ("/a%2eb/c", "/a%2eb/c"),
            ("/a//../b", "/a/b"),
        ] {
            assert_eq!(resolved(rest).as_deref(), Ok(expected), "{rest}");
        }
        for rest in [
            "/..",
            "/../echo",
            "/a/../../echo",
            "/%2e%2e/echo",
            "/a/%2E%2e/..",
        ] {
            assert_eq!(resolved(rest), Err(ClimbsAboveRoot), "{rest}");
        }
        assert!(matches!(resolve_dot_segments("/a/b"), Ok(Cow::Borrowed(_))));
    }

    #[test]
    fn upstream_paths_keep_prefix_rest_and_query() {
        assert_eq!(upstream_path_and_query("", "", None), "/");
        assert_eq!(upstream_path_and_query("", "/", None), "/");
        assert_eq!(upstream_path_and_query("", "/a/b", Some("x=1")), "/a/b?x=1");
        assert_eq!(upstream_path_and_query("/api", "", None), "/api");
        assert_eq!(
            upstream_path_and_query("/api", "/items", Some("q=a&b")),
            "/api/items?q=a&b"
        );
        assert_eq!(upstream_path_and_query("", "", Some("")), "/?");
    }

    #[test]
    fn a_rebuild_keeps_the_breakers_of_backends_that_stay() {
        let defaults = ServiceDefaults::default();
        let parse = |text| parse_services(Path::new("s.yaml"), text, &defaults).unwrap();
        let clock: Arc<ManualClock> = Arc::new(ManualClock::new());
        let old = ServiceTable::build(
            &parse("a: [\"http://127.0.0.1:1\", \"http://127.0.0.1:2\"]"),
            clock.clone(),
            Arc::new(IgnoreTransitions),
            None,
        );
        let kept = old.get("a").unwrap().selector.breakers()[1].clone();
        let new = ServiceTable::build(
            &parse(
                "a: [\"http://127.0.0.1:2\", \"http://127.0.0.1:3\"]\nb: [\"http://127.0.0.1:1\"]",
            ),
            clock.clone(),
            Arc::new(IgnoreTransitions),
            Some(&old),
        );
        let a = new.get("a").unwrap();
        let old_a = old.get("a").unwrap();
        assert!(Arc::ptr_eq(&a.selector.breakers()[0], &kept), "kept by URL");
        assert!(!Arc::ptr_eq(&a.selector.breakers()[1], &kept));
        assert!(Arc::ptr_eq(&a.stats, &old_a.stats), "service metrics kept");
        assert!(Arc::ptr_eq(
            &a.upstreams[0].stats,
            &old_a.upstreams[1].stats
        ));
        assert!(!Arc::ptr_eq(
            &a.upstreams[1].stats,
            &old_a.upstreams[1].stats
        ));
        // A backend that moved to another service keeps its breaker too.
        let b = new.get("b").unwrap();
        assert_eq!(b.selector.breakers()[0].name(), "http://127.0.0.1:1");
        assert!(Arc::ptr_eq(
            &b.selector.breakers()[0],
            &old.get("a").unwrap().selector.breakers()[0]
        ));
        assert!(
            !Arc::ptr_eq(&b.upstreams[0].stats, &old_a.upstreams[0].stats),
            "metrics are per (service, backend)"
        );
        // Other breaker settings: a fresh breaker.
        let changed = ServiceTable::build(
            &parse("a: {backends: [\"http://127.0.0.1:2\"], failure_threshold: 9}"),
            clock,
            Arc::new(IgnoreTransitions),
            Some(&new),
        );
        assert!(!Arc::ptr_eq(
            &changed.get("a").unwrap().selector.breakers()[0],
            &kept
        ));
    }

    #[test]
    fn services_listing_the_same_url_share_its_breaker() {
        let services = parse_services(
            Path::new("s.yaml"),
            "a: [\"http://127.0.0.1:1\", \"http://127.0.0.1:2\"]\nb: [\"http://127.0.0.1:2\"]",
            &ServiceDefaults::default(),
        )
        .unwrap();
        let table = ServiceTable::build(
            &services,
            Arc::new(ManualClock::new()),
            Arc::new(IgnoreTransitions),
            None,
        );
        let a = table.get("a").unwrap();
        let b = table.get("b").unwrap();
        assert!(Arc::ptr_eq(
            &a.selector.breakers()[1],
            &b.selector.breakers()[0]
        ));
        assert!(!Arc::ptr_eq(
            &a.selector.breakers()[0],
            &a.selector.breakers()[1]
        ));
        assert_eq!(a.upstreams[1].authority, "127.0.0.1:2");
        assert!(table.get("c").is_none());
    }
}
