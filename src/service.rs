//! The table of services: each service's backends (each with its breaker and stats), its
//! rotation, timeouts, retry budget and limits.
//!
//! The table is built once from the validated config, and again by each reload. Backends
//! listed by several services share one breaker, keyed by URL, as in the original design
//! (an `https` URL that services reach under different TLS trust gets one breaker per
//! trust); a rebuild keeps the breakers and metrics of what stays.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use crate::breaker::{Breaker, TransitionObserver};
use crate::clock::Clock;
use crate::config::{
    BackendConfig, BodyLimit, HealthCheckSettings, RetryPolicy, ServiceConfig, UpstreamProtocol,
    UpstreamTimeouts, UpstreamTls,
};
use crate::health::BackendHealth;
use crate::load::{BackendLoad, LoadSettings, WaitingRoom};
use crate::rate_limit::RateLimits;
use crate::retry_budget::RetryBudget;
use crate::routing::EscapedSlashes;
use crate::selector::{Guarded, PickPolicy, RoundRobin};
use crate::telemetry::metrics::{BackendStats, ServiceStats};

/// One backend of a service, as requests reach it: where it is, the breaker that guards it,
/// and what this service's attempts at it came to.
#[derive(Debug)]
pub struct Backend {
    /// The URL as configured (also its breaker's name, unless services reach it under
    /// different TLS trust: see [`ServiceTable::build`]).
    pub url: String,
    /// The resolved address, as Pingora's load-balancing crate describes a backend.
    pub address: pingora_load_balancing::Backend,
    /// `host:port` from the URL, the `Host` header's value (made once, cloned per request).
    pub authority: http::HeaderValue,
    /// For an `https` backend, the host name TLS is spoken to (SNI, verified name).
    pub tls_host: Option<String>,
    /// The URL's path prefix (may be empty).
    pub path_prefix: String,
    /// Its breaker: one per URL (and, for `https`, per TLS trust), shared by every service
    /// that lists the URL.
    pub breaker: Arc<Breaker>,
    /// Its health, as active checks report it: one per breaker.
    pub health: Arc<BackendHealth>,
    /// What this service's attempts at this backend came to.
    pub stats: Arc<BackendStats>,
    /// This service's requests in flight to it, and their limit.
    pub load: Arc<BackendLoad>,
}

impl Guarded for Backend {
    fn breaker(&self) -> &Arc<Breaker> {
        &self.breaker
    }

    fn load(&self) -> Option<&Arc<BackendLoad>> {
        Some(&self.load)
    }
}

/// A service: its backends, their rotation, and its timeouts.
#[derive(Debug)]
pub struct Service {
    /// The service's name.
    pub name: String,
    /// Backends in config order.
    pub backends: Box<[Backend]>,
    /// Breaker-aware round-robin over `backends`.
    pub selector: RoundRobin,
    /// Per-attempt timeouts.
    pub timeouts: UpstreamTimeouts,
    /// Bounds the service's failovers.
    pub retry_budget: RetryBudget,
    /// Which answers, and which writes, may go on to another backend.
    pub retry: RetryPolicy,
    /// Counts of what happened to the service's requests.
    pub stats: Arc<ServiceStats>,
    /// The largest request body it accepts.
    pub max_body: BodyLimit,
    /// How it talks TLS to its `https` backends.
    pub tls: UpstreamTls,
    /// Active health checks of its backends, when configured.
    pub health_check: Option<HealthCheckSettings>,
    /// How it picks among its backends (and their slow start).
    pub pick: PickPolicy,
    /// Concurrency limits and the waiting room.
    pub load: LoadSettings,
    /// Where its requests wait when every backend is full.
    pub room: Arc<WaitingRoom>,
    /// Its rate limits.
    pub rate_limits: Arc<RateLimits>,
    /// What it does with `%2F`, `%5C` or `\` in a forwarded path.
    pub escaped_slashes: EscapedSlashes,
    /// The HTTP version it speaks to its backends.
    pub protocol: UpstreamProtocol,
}

/// All services by name, and the path prefixes some claim.
#[derive(Debug, Default)]
pub struct ServiceTable {
    /// Looked up for every request: hashed by foldhash (seeded per process), a few instructions
    /// for a short name where std's SipHash takes ~200.
    services: HashMap<Box<str>, Arc<Service>, foldhash::fast::RandomState>,
    /// `(prefix, service)`, longest prefix first.
    prefixes: Vec<(String, Arc<Service>)>,
}

impl ServiceTable {
    /// Builds the table, with one breaker per distinct backend URL, named by it; an `https`
    /// URL that services reach under different TLS trust gets one breaker per trust, named
    /// `url (first service)`. A breaker of `previous` (the table being replaced by a reload)
    /// is kept, state and counters, when its name stays with the same breaker settings; other backends start Closed. Metrics are kept for every
    /// service, and (service, backend URL) pair, that stays.
    pub fn build(
        services: &[ServiceConfig],
        clock: Arc<dyn Clock>,
        observer: Arc<dyn TransitionObserver>,
        previous: Option<&ServiceTable>,
    ) -> Self {
        let names = breaker_names(services);
        let previous_backends = || {
            previous
                .into_iter()
                .flat_map(|table| table.services.values())
                .flat_map(|service| service.backends.iter())
        };
        let kept: HashMap<&str, &Arc<Breaker>> = previous_backends()
            .map(|backend| (backend.breaker.name(), &backend.breaker))
            .collect();
        let kept_health: HashMap<&str, &Arc<BackendHealth>> = previous_backends()
            .map(|backend| (backend.breaker.name(), &backend.health))
            .collect();
        let mut healths: HashMap<&str, Arc<BackendHealth>> = HashMap::new();
        let previous_service = |name: &str| previous.and_then(|table| table.get(name));
        let mut breakers: HashMap<&str, Arc<Breaker>> = HashMap::new();
        let mut table = HashMap::with_capacity_and_hasher(services.len(), Default::default());
        for service in services {
            let kept_service = previous_service(&service.name);
            let room = kept_service.map_or_else(Default::default, |kept| kept.room.clone());
            let mut backends = Vec::with_capacity(service.backends.len());
            for backend in &service.backends {
                let kept_backend = kept_service
                    .and_then(|kept| kept.backends.iter().find(|b| b.url == backend.url));
                let limit = backend.concurrency_limit.unwrap_or(service.load.limit);
                let name = names[&breaker_key(service, backend)].as_str();
                let breaker = breakers
                    .entry(name)
                    .or_insert_with(|| match kept.get(name) {
                        Some(old) if old.settings() == service.breaker => Arc::clone(old),
                        _ => Arc::new(Breaker::new(
                            name.to_owned(),
                            service.breaker,
                            clock.clone(),
                            observer.clone(),
                        )),
                    });
                backends.push(Backend {
                    url: backend.url.clone(),
                    address: resolved_address(backend.addr),
                    authority: backend.authority.clone(),
                    tls_host: backend.tls_host.clone(),
                    path_prefix: backend.path_prefix.clone(),
                    breaker: breaker.clone(),
                    health: healths
                        .entry(name)
                        .or_insert_with(|| {
                            kept_health
                                .get(name)
                                .map_or_else(Default::default, |kept| Arc::clone(kept))
                        })
                        .clone(),
                    stats: kept_backend.map_or_else(Default::default, |kept| kept.stats.clone()),
                    load: kept_backend
                        .map(|kept| &kept.load)
                        .filter(|kept| kept.configured() == limit)
                        .map_or_else(
                            || Arc::new(BackendLoad::new(limit, room.clone())),
                            Arc::clone,
                        ),
                });
            }
            table.insert(
                service.name.clone().into_boxed_str(),
                Arc::new(Service {
                    name: service.name.clone(),
                    backends: backends.into_boxed_slice(),
                    selector: RoundRobin::default(),
                    timeouts: service.timeouts,
                    retry_budget: RetryBudget::new(service.retry_budget, clock.clone()),
                    retry: service.retry.clone(),
                    stats: kept_service.map_or_else(Default::default, |kept| kept.stats.clone()),
                    max_body: service.max_body,
                    tls: service.tls.clone(),
                    health_check: service.health_check.clone(),
                    pick: PickPolicy {
                        picking: service.load.picking,
                        slow_start: service.slow_start,
                    },
                    load: service.load,
                    room,
                    rate_limits: kept_service
                        .map(|kept| &kept.rate_limits)
                        .filter(|kept| {
                            kept.settings()
                                == (service.rate_limits.service, service.rate_limits.client)
                        })
                        .map_or_else(
                            || {
                                Arc::new(RateLimits::new(
                                    service.rate_limits.service,
                                    service.rate_limits.client,
                                ))
                            },
                            Arc::clone,
                        ),
                    escaped_slashes: service.escaped_slashes,
                    protocol: service.protocol,
                }),
            );
        }
        let mut prefixes: Vec<(String, Arc<Service>)> = services
            .iter()
            .flat_map(|config| {
                let service = &table[config.name.as_str()];
                config
                    .path_prefixes
                    .iter()
                    .map(move |prefix| (prefix.clone(), Arc::clone(service)))
            })
            .collect();
        prefixes.sort_by_key(|(prefix, _)| std::cmp::Reverse(prefix.len()));
        Self {
            services: table,
            prefixes,
        }
    }

    /// The service named `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<Service>> {
        self.services.get(name)
    }

    /// The longest path prefix that `path` starts with, and the service that claims it.
    pub(crate) fn by_prefix(&self, path: &str) -> Option<(&str, &Arc<Service>)> {
        self.prefixes
            .iter()
            .find(|(prefix, _)| path.starts_with(prefix.as_str()))
            .map(|(prefix, service)| (prefix.as_str(), service))
    }

    /// Every service, sorted by name.
    pub fn services(&self) -> Vec<&Arc<Service>> {
        let mut services: Vec<_> = self.services.values().collect();
        services.sort_by(|a, b| a.name.cmp(&b.name));
        services
    }
}

/// What tells two backends apart for their breaker and health: the URL, and for an `https`
/// URL the trust its TLS rests on ([`UpstreamTls::trust`]). Two services that reach one URL
/// under different CA roots, verification or client certificates may reach, as far as the
/// gateway can tell, different servers: one's refused handshakes say nothing about the other.
type BreakerKey<'a> = (&'a str, Option<u64>);

fn breaker_key<'a>(service: &ServiceConfig, backend: &'a BackendConfig) -> BreakerKey<'a> {
    let trust = backend.tls_host.as_ref().map(|_| service.tls.trust);
    (backend.url.as_str(), trust)
}

/// Each breaker's name: the URL, as in the original design's log lines, or, for a URL that
/// services reach under different TLS trust, the URL and the first service (in config
/// order) that reaches it so, e.g. `https://10.0.0.5:8443 (billing)`.
fn breaker_names(services: &[ServiceConfig]) -> HashMap<BreakerKey<'_>, String> {
    let mut first_service: HashMap<BreakerKey<'_>, &str> = HashMap::new();
    let mut keys_per_url: HashMap<&str, usize> = HashMap::new();
    for service in services {
        for backend in &service.backends {
            let key = breaker_key(service, backend);
            if let std::collections::hash_map::Entry::Vacant(entry) = first_service.entry(key) {
                entry.insert(&service.name);
                *keys_per_url.entry(key.0).or_default() += 1;
            }
        }
    }
    first_service
        .into_iter()
        .map(|(key, service)| {
            let name = if keys_per_url[key.0] > 1 {
                format!("{} ({service})", key.0)
            } else {
                key.0.to_owned()
            };
            (key, name)
        })
        .collect()
}

fn resolved_address(addr: SocketAddr) -> pingora_load_balancing::Backend {
    pingora_load_balancing::Backend {
        addr: pingora::protocols::l4::socket::SocketAddr::Inet(addr),
        weight: 1,
        ext: Default::default(),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::breaker::IgnoreTransitions;
    use crate::clock::ManualClock;
    use crate::config::{parse_services, ServiceDefaults};

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
        let kept = old.get("a").unwrap().backends[1].breaker.clone();
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
        assert!(Arc::ptr_eq(&a.backends[0].breaker, &kept), "kept by URL");
        assert!(!Arc::ptr_eq(&a.backends[1].breaker, &kept));
        assert!(Arc::ptr_eq(&a.stats, &old_a.stats), "service metrics kept");
        assert!(Arc::ptr_eq(&a.backends[0].stats, &old_a.backends[1].stats));
        assert!(!Arc::ptr_eq(&a.backends[1].stats, &old_a.backends[1].stats));
        // A backend that moved to another service keeps its breaker too.
        let b = new.get("b").unwrap();
        assert_eq!(b.backends[0].breaker.name(), "http://127.0.0.1:1");
        assert!(Arc::ptr_eq(
            &b.backends[0].breaker,
            &old.get("a").unwrap().backends[0].breaker
        ));
        assert!(
            !Arc::ptr_eq(&b.backends[0].stats, &old_a.backends[0].stats),
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
            &changed.get("a").unwrap().backends[0].breaker,
            &kept
        ));
    }

    #[test]
    fn a_rebuild_keeps_requests_in_flight_queues_and_rate_counts_while_their_settings_stay() {
        let defaults = ServiceDefaults::default();
        let parse = |text| parse_services(Path::new("s.yaml"), text, &defaults).unwrap();
        let build = |text, previous| {
            ServiceTable::build(
                &parse(text),
                Arc::new(ManualClock::new()),
                Arc::new(IgnoreTransitions),
                previous,
            )
        };
        let limited = "a:\n  backends: [\"http://127.0.0.1:1\"]\n  concurrency_limit: 1\n  \
                       rate_limit: {requests_per_second: 1}\n";
        let old = build(limited, None);
        let old_a = old.get("a").unwrap();
        let _held = old_a.backends[0].load.try_take().expect("a slot");
        assert!(old_a.rate_limits.admit(None).is_ok());
        // The same settings (another timeout): the slot held before still counts, and so do
        // the rate limit's requests.
        let same_settings = format!("{limited}  read_timeout: 5s\n");
        let same = build(&same_settings, Some(&old));
        let a = same.get("a").unwrap();
        assert!(Arc::ptr_eq(&a.backends[0].load, &old_a.backends[0].load));
        assert!(a.backends[0].load.try_take().is_none(), "still full");
        assert!(Arc::ptr_eq(&a.room, &old_a.room));
        assert!(a.rate_limits.admit(None).is_err(), "still over");
        // A new limit starts a new count (the old table's requests free the old one); the
        // waiting room stays the service's.
        let changed = build(
            "a:\n  backends: [\"http://127.0.0.1:1\"]\n  concurrency_limit: 2\n",
            Some(&same),
        );
        let a2 = changed.get("a").unwrap();
        assert!(!Arc::ptr_eq(&a2.backends[0].load, &a.backends[0].load));
        assert_eq!(a2.backends[0].load.limit(), Some(2));
        assert!(Arc::ptr_eq(&a2.room, &old_a.room));
        assert!(a2.rate_limits.is_empty());
        // A backend's own limit overrides its service's.
        let own = build(
            "a:\n  backends: [\"http://127.0.0.1:1\", {url: \"http://127.0.0.1:2\", \
             concurrency_limit: 5}]\n  concurrency_limit: 2\n",
            Some(&changed),
        );
        let limits: Vec<_> = own
            .get("a")
            .unwrap()
            .backends
            .iter()
            .map(|b| b.load.limit())
            .collect();
        assert_eq!(limits, [Some(2), Some(5)]);
        assert!(Arc::ptr_eq(
            &own.get("a").unwrap().backends[0].load,
            &a2.backends[0].load
        ));
    }

    #[test]
    fn the_longest_claimed_prefix_wins() {
        let services = parse_services(
            Path::new("s.yaml"),
            "a: {backends: [\"http://127.0.0.1:1\"], path_prefixes: [/pkg.Svc/, /pkg/]}\n\
             b: {backends: [\"http://127.0.0.1:2\"], path_prefixes: [/pkg.Svc/Special/]}\n",
            &ServiceDefaults::default(),
        );
        let services = match services {
            Ok(services) => services,
            Err(e) => panic!("{e}"),
        };
        let table = ServiceTable::build(
            &services,
            Arc::new(ManualClock::new()),
            Arc::new(IgnoreTransitions),
            None,
        );
        let name = |path| table.by_prefix(path).map(|(_, s)| s.name.as_str());
        assert_eq!(name("/pkg.Svc/Call"), Some("a"));
        assert_eq!(name("/pkg.Svc/Special/Call"), Some("b"));
        assert_eq!(name("/pkg/Other"), Some("a"));
        assert_eq!(name("/pkg.Other/Call"), None);
        assert_eq!(name("/other/"), None);
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
        assert!(Arc::ptr_eq(&a.backends[1].breaker, &b.backends[0].breaker));
        assert!(!Arc::ptr_eq(&a.backends[0].breaker, &a.backends[1].breaker));
        assert_eq!(a.backends[1].authority, "127.0.0.1:2");
        assert!(table.get("c").is_none());
    }

    #[test]
    fn services_reaching_one_https_url_under_different_trust_get_a_breaker_each() {
        let services = parse_services(
            Path::new("s.yaml"),
            "a: [\"https://localhost:1\"]\n\
             b: {backends: [\"https://localhost:1\"], tls_verify: false}\n\
             c: [\"https://localhost:1\", \"https://localhost:2\"]\n",
            &ServiceDefaults::default(),
        )
        .unwrap();
        let table = ServiceTable::build(
            &services,
            Arc::new(ManualClock::new()),
            Arc::new(IgnoreTransitions),
            None,
        );
        let breaker = |service: &str, index: usize| {
            table.get(service).unwrap().backends[index].breaker.clone()
        };
        assert!(!Arc::ptr_eq(&breaker("a", 0), &breaker("b", 0)));
        assert!(
            Arc::ptr_eq(&breaker("a", 0), &breaker("c", 0)),
            "same trust, one breaker"
        );
        assert_eq!(breaker("a", 0).name(), "https://localhost:1 (a)");
        assert_eq!(breaker("b", 0).name(), "https://localhost:1 (b)");
        assert_eq!(
            breaker("c", 1).name(),
            "https://localhost:2",
            "one trust: the URL alone"
        );
        let health = |service: &str| table.get(service).unwrap().backends[0].health.clone();
        assert!(!Arc::ptr_eq(&health("a"), &health("b")));

        // A reload keeps each by its name.
        let rebuilt = ServiceTable::build(
            &services,
            Arc::new(ManualClock::new()),
            Arc::new(IgnoreTransitions),
            Some(&table),
        );
        assert!(Arc::ptr_eq(
            &rebuilt.get("b").unwrap().backends[0].breaker,
            &breaker("b", 0)
        ));
    }
}
