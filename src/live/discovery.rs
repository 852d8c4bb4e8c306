//! DNS discovery: services marked `discovery: dns` have one backend per address their hosts
//! resolve to (a Kubernetes headless Service, say), and this background service re-resolves
//! them every `discovery_interval`. Between lookups it sleeps until the next one falls due or
//! a new table is swapped in (a reload may add, change or remove a discovered service): a
//! gateway with no discovered service never wakes it.
//!
//! A changed answer becomes a new routing table through the `LiveTable`, built from the
//! current one as a reload is: an address that stays keeps its breaker and metrics, a new one
//! starts Closed, one that went away disappears with its series. A lookup that fails, or
//! answers with no address at all, changes nothing: the last good set keeps serving (a
//! service with no backends would only answer 503), and the failure is logged once, with its
//! recovery.
//!
//! Lookups go through a [`Resolver`], so tests script the answers instead of using the
//! machine's DNS. They block (`getaddrinfo`), so they run on Tokio's blocking pool.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use log::{info, warn};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::time::Instant;

use crate::config::{self, Discovery};
use crate::live::LiveTable;
use crate::resolver::Resolver;

/// What one refresh of one service came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refresh {
    /// The addresses changed; the service now has this many backends.
    Changed(usize),
    /// The same addresses as before.
    Unchanged,
    /// The lookup failed; the last good set stays.
    Failed(String),
}

/// Re-resolves discovered services and swaps their new backends in.
pub(crate) struct DnsDiscovery {
    reloader: Arc<LiveTable>,
    resolver: Arc<dyn Resolver>,
    /// Services whose latest lookup failed: their failure was logged, their recovery will be.
    failing: Mutex<HashSet<String>>,
}

impl std::fmt::Debug for DnsDiscovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DnsDiscovery").finish_non_exhaustive()
    }
}

impl DnsDiscovery {
    /// Discovery for the services of `reloader`'s config, resolving with `resolver`.
    pub fn new(reloader: Arc<LiveTable>, resolver: Arc<dyn Resolver>) -> Self {
        Self {
            reloader,
            resolver,
            failing: Mutex::new(HashSet::new()),
        }
    }

    /// Re-resolves service `name` now (blocking), applies the answer and logs what changed.
    pub(crate) fn refresh(&self, name: &str, discovery: &Discovery) -> Refresh {
        let outcome = match config::discover(&discovery.targets, self.resolver.as_ref()) {
            Err(e) => Refresh::Failed(e),
            Ok(backends) => {
                let count = backends.len();
                if self.reloader.update_backends(name, discovery, backends) {
                    Refresh::Changed(count)
                } else {
                    Refresh::Unchanged
                }
            }
        };
        let mut failing = self
            .failing
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match &outcome {
            Refresh::Failed(e) => {
                if failing.insert(name.to_owned()) {
                    if self.reloader.backend_count(name) == 0 {
                        warn!(
                            "discovery for service \"{name}\" failed; it has no backends and \
                             answers 503 until a lookup succeeds: {e}"
                        );
                    } else {
                        warn!(
                            "discovery for service \"{name}\" failed, keeping its last \
                             addresses: {e}"
                        );
                    }
                }
            }
            other => {
                if failing.remove(name) {
                    info!("discovery for service \"{name}\" works again");
                }
                if let Refresh::Changed(count) = other {
                    info!("discovery: service \"{name}\" now has {count} backends");
                }
            }
        }
        outcome
    }

    /// Re-resolves every discovered service now (blocking); for tests.
    #[cfg(test)]
    pub(crate) fn refresh_all(&self) -> Vec<(String, Refresh)> {
        self.reloader
            .discovery_targets()
            .into_iter()
            .map(|(name, discovery)| {
                let outcome = self.refresh(&name, &discovery);
                (name, outcome)
            })
            .collect()
    }
}

/// Runs discovery until the server shuts down.
#[derive(Debug)]
pub(crate) struct DiscoveryService(pub Arc<DnsDiscovery>);

#[async_trait]
impl BackgroundService for DiscoveryService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        // Subscribed before the first look, so no reload falls between the look and the wait.
        let mut changes = self.0.reloader.changes();
        // When each service is due next; services a reload removed are forgotten.
        let mut due: HashMap<String, Instant> = HashMap::new();
        loop {
            let now = Instant::now();
            let services = self.0.reloader.discovery_targets();
            due.retain(|name, _| services.iter().any(|(n, _)| n == name));
            let mut next: Option<Instant> = None;
            for (name, discovery) in services {
                // A service that starts without backends (its hosts did not resolve) is looked
                // up at once, which also logs why; the others were resolved a moment ago.
                let first = if self.0.reloader.backend_count(&name) == 0 {
                    now
                } else {
                    now + discovery.interval
                };
                let mut at = *due.entry(name.clone()).or_insert(first);
                if at <= now {
                    let discovery_service = self.0.clone();
                    let service = name.clone();
                    let _ = tokio::task::spawn_blocking(move || {
                        discovery_service.refresh(&service, &discovery)
                    })
                    .await;
                    // The interval a reload during the lookup may have set.
                    let Some(interval) = discovery_interval(&self.0, &name) else {
                        due.remove(&name);
                        continue;
                    };
                    at = Instant::now() + interval;
                    due.insert(name, at);
                }
                next = Some(next.map_or(at, |next| next.min(at)));
            }
            let lookup = async {
                match next {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = lookup => {}
                // The table outlives this service (it holds it): an error cannot happen, and
                // would leave nothing to discover.
                changed = changes.changed() => if changed.is_err() { return },
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// The current interval of service `name`, if it is still discovered (a reload may have
/// changed or removed it).
fn discovery_interval(discovery: &DnsDiscovery, name: &str) -> Option<Duration> {
    discovery
        .reloader
        .discovery_targets()
        .into_iter()
        .find(|(n, _)| n == name)
        .map(|(_, d)| d.interval)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::AdminApp;
    use crate::breaker::{BreakerState, Outcome};
    use crate::clock::ManualClock;
    use crate::config::{parse_services_with, GatewayConfig, ServiceDefaults};
    use crate::resolver::ScriptedResolver;
    use std::path::Path;

    const SERVICES: &str = "\
product:
  backends: [\"http://product.svc:9001\"]
  discovery: dns
  discovery_interval: 1s
static: [\"http://10.9.9.9:1\"]
";

    struct Fixture {
        resolver: Arc<ScriptedResolver>,
        reloader: Arc<LiveTable>,
        discovery: DnsDiscovery,
    }

    fn fixture() -> Fixture {
        let resolver = Arc::new(ScriptedResolver::default());
        resolver.answer("product.svc", &["10.0.0.1", "10.0.0.2"]);
        let services = parse_services_with(
            Path::new("services.yaml"),
            SERVICES,
            &ServiceDefaults::default(),
            resolver.as_ref(),
        )
        .unwrap();
        let config = GatewayConfig::with_services(services);
        let reloader = Arc::new(LiveTable::new(
            "/nonexistent/gateway.yaml".into(),
            &config,
            Arc::new(ManualClock::new()),
            None,
        ));
        let discovery = DnsDiscovery::new(reloader.clone(), resolver.clone());
        Fixture {
            resolver,
            reloader,
            discovery,
        }
    }

    fn urls(reloader: &LiveTable) -> Vec<String> {
        let table = reloader.current();
        let product = table.get("product").unwrap();
        product.backends.iter().map(|u| u.url.clone()).collect()
    }

    #[tokio::test]
    async fn addresses_that_stay_keep_their_breakers_new_ones_start_closed_gone_ones_vanish() {
        let f = fixture();
        assert_eq!(
            urls(&f.reloader),
            ["http://10.0.0.1:9001", "http://10.0.0.2:9001"]
        );
        let table = f.reloader.current();
        let kept = table.get("product").unwrap().backends[0].breaker.clone();
        for _ in 0..3 {
            kept.try_acquire().unwrap().record(Outcome::Failure);
        }
        assert_eq!(kept.state(), BreakerState::Open);

        f.resolver.answer("product.svc", &["10.0.0.3", "10.0.0.1"]);
        assert_eq!(
            f.discovery.refresh_all(),
            [("product".to_owned(), Refresh::Changed(2))]
        );
        assert_eq!(
            urls(&f.reloader),
            ["http://10.0.0.1:9001", "http://10.0.0.3:9001"]
        );
        let table = f.reloader.current();
        let product = table.get("product").unwrap();
        assert!(Arc::ptr_eq(&product.backends[0].breaker, &kept), "kept");
        assert_eq!(product.backends[0].breaker.state(), BreakerState::Open);
        assert_eq!(product.backends[1].breaker.state(), BreakerState::Closed);
        assert!(
            table.get("static").is_some(),
            "other services are untouched"
        );
        assert_eq!(product.backends[1].authority, "product.svc:9001");

        let app = AdminApp::new(f.reloader.clone(), Arc::default(), None);
        let metrics = app.answer("GET", "/metrics", None).await.1;
        assert!(metrics.contains("http://10.0.0.3:9001"));
        assert!(
            !metrics.contains("10.0.0.2"),
            "a gone address has no series"
        );

        assert_eq!(
            f.discovery.refresh_all(),
            [("product".to_owned(), Refresh::Unchanged)]
        );
    }

    #[test]
    fn a_failed_or_empty_lookup_keeps_the_last_good_set() {
        let f = fixture();
        let before = f.reloader.current();
        f.resolver.fail("product.svc");
        let outcome = f.discovery.refresh_all();
        assert!(
            matches!(&outcome[0].1, Refresh::Failed(e) if e.contains("cannot resolve host")),
            "{outcome:?}"
        );
        f.resolver.answer("product.svc", &[]);
        assert!(matches!(f.discovery.refresh_all()[0].1, Refresh::Failed(_)));
        assert!(Arc::ptr_eq(&before, &f.reloader.current()), "no new table");
        assert_eq!(
            urls(&f.reloader),
            ["http://10.0.0.1:9001", "http://10.0.0.2:9001"]
        );

        f.resolver.answer("product.svc", &["10.0.0.2"]);
        assert_eq!(f.discovery.refresh_all()[0].1, Refresh::Changed(1));
        assert_eq!(urls(&f.reloader), ["http://10.0.0.2:9001"]);
    }

    #[test]
    fn a_service_whose_host_does_not_resolve_yet_starts_empty_and_is_filled_in() {
        let resolver = Arc::new(ScriptedResolver::default());
        let services = parse_services_with(
            Path::new("services.yaml"),
            SERVICES,
            &ServiceDefaults::default(),
            resolver.as_ref(),
        )
        .expect("an unresolved discovered host is not a config error");
        let reloader = Arc::new(LiveTable::new(
            "/nonexistent/gateway.yaml".into(),
            &GatewayConfig::with_services(services),
            Arc::new(ManualClock::new()),
            None,
        ));
        let discovery = DnsDiscovery::new(reloader.clone(), resolver.clone());
        assert_eq!(reloader.backend_count("product"), 0);
        assert!(matches!(discovery.refresh_all()[0].1, Refresh::Failed(_)));

        resolver.answer("product.svc", &["10.0.0.7"]);
        assert_eq!(discovery.refresh_all()[0].1, Refresh::Changed(1));
        assert_eq!(urls(&reloader), ["http://10.0.0.7:9001"]);
    }

    #[test]
    fn a_stale_answer_for_a_changed_service_is_dropped() {
        let f = fixture();
        let (name, mut discovery) = f.reloader.discovery_targets().remove(0);
        discovery.interval = Duration::from_secs(99);
        let backends = config::discover(&discovery.targets, f.resolver.as_ref()).unwrap();
        assert!(!f.reloader.update_backends(&name, &discovery, backends));
    }
}
