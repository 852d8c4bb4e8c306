//! The live state: the routing table every request reads, and what swaps it. `LiveTable`
//! holds it; a hot reload re-reads the services file and swaps a new table in, without a
//! restart and without losing what the breakers have learned; [`discovery`] swaps in a DNS
//! service's new addresses the same way.
//!
//! The table lives in an [`ArcSwap`]: each request loads it once, in `request_filter`, and
//! keeps its `Arc<Service>` to the end, so requests in flight finish on the table they started
//! with while new ones see the new table. The new table keeps the breaker of every backend URL
//! that stays (see [`ServiceTable::build`]). A file that does not load changes nothing: the
//! error is logged as at start and reported by the admin `/status`.
//!
//! Two triggers: `SIGHUP` (`ReloadOnHangup`, a background service: Pingora 0.9 handles
//! SIGTERM, SIGINT and SIGQUIT but not SIGHUP), and `POST /reload` on the admin listener.
//! Only the services (and their settings) are reloaded; listeners and Pingora's own settings
//! need a restart or a graceful upgrade.
//!
//! DNS discovery (see `discovery`) swaps tables the same way when a service's addresses
//! change, through `LiveTable::update_backends`; one lock orders it with reloads.

pub mod discovery;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use async_trait::async_trait;
use log::{error, info, warn};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

use crate::certificates::CertificateStore;
use crate::clock::Clock;
use crate::config::{self, BackendConfig, BackendTarget, Discovery, GatewayConfig, ServiceConfig};
use crate::service::ServiceTable;
use crate::telemetry::logs::CircuitLog;

/// The routing table shared by the proxy and the admin listener, and the means to replace it.
pub(crate) struct LiveTable {
    conf_file: PathBuf,
    /// The config the process started with: its gateway-wide settings are the ones in force
    /// (a reload applies only services).
    at_start: GatewayConfig,
    table: Arc<ArcSwap<ServiceTable>>,
    /// Logs the transitions of every table's breakers.
    observer: Arc<CircuitLog>,
    /// The config the table was built from. Its lock also orders table swaps.
    config: Mutex<GatewayConfig>,
    clock: Arc<dyn Clock>,
    last_error: Mutex<Option<String>>,
    /// The TLS listener's certificates, which a reload replaces.
    certificates: Option<Arc<CertificateStore>>,
    /// Marked at every swap, for whoever waits on the table's changes ([`Self::changes`]).
    swapped: watch::Sender<()>,
}

impl std::fmt::Debug for LiveTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveTable")
            .field("conf_file", &self.conf_file)
            .finish()
    }
}

impl LiveTable {
    /// Builds the first table from `config`, loaded from `conf_file`; reloads also replace
    /// the TLS listener's `certificates`, if there is one.
    pub fn new(
        conf_file: PathBuf,
        config: &GatewayConfig,
        clock: Arc<dyn Clock>,
        certificates: Option<Arc<CertificateStore>>,
    ) -> Self {
        let observer = Arc::new(CircuitLog::new(config.log_format));
        let table = build_table(config, clock.clone(), &observer, None);
        Self {
            conf_file,
            at_start: config.clone(),
            table: Arc::new(ArcSwap::from_pointee(table)),
            observer,
            config: Mutex::new(config.clone()),
            clock,
            last_error: Mutex::new(None),
            certificates,
            swapped: watch::Sender::new(()),
        }
    }

    /// The live table, for the proxy.
    pub fn table(&self) -> Arc<ArcSwap<ServiceTable>> {
        self.table.clone()
    }

    /// The table in force now.
    pub fn current(&self) -> Arc<ServiceTable> {
        self.table.load_full()
    }

    /// A receiver that sees every table swapped in after this call: for background work that
    /// waits on the table rather than polling it.
    pub(crate) fn changes(&self) -> watch::Receiver<()> {
        self.swapped.subscribe()
    }

    /// Re-reads the conf and services files and swaps the new table in. On error nothing
    /// changes; the error is logged, kept for `/status`, and returned.
    pub fn reload(&self) -> Result<(), String> {
        let result = config::load(&self.conf_file).map(|mut config| {
            let ignored = start_only_changes(&self.at_start, &config);
            if !ignored.is_empty() {
                warn!(
                    "reload: {} changed in the conf; only services are reloaded, a restart or \
                     a graceful upgrade applies the rest",
                    ignored.join(", ")
                );
            }
            let mut current = self.lock_config();
            keep_undiscovered_backends(&mut config, &current);
            info!(
                "reloaded {} ({} services, {} backends)",
                config.services_file.display(),
                config.services.len(),
                config.backend_count()
            );
            self.swap_table(&config);
            if let (Some(store), Some(tls)) = (&self.certificates, &config.tls) {
                store.replace(tls.certificates.clone());
                info!("reloaded {} TLS certificates", tls.certificates.len());
            }
            *current = config;
        });
        let mut last_error = self
            .last_error
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match result {
            Ok(()) => {
                *last_error = None;
                Ok(())
            }
            Err(e) => {
                error!("reload failed, the running config stays: {e}");
                *last_error = Some(e.to_string());
                Err(e.to_string())
            }
        }
    }

    /// How many backends service `name` has now (0 for an unknown service).
    pub(crate) fn backend_count(&self, name: &str) -> usize {
        self.current().get(name).map_or(0, |s| s.backends.len())
    }

    /// Every service with DNS discovery, and how to discover its backends.
    pub(crate) fn discovery_targets(&self) -> Vec<(String, Discovery)> {
        self.lock_config()
            .services
            .iter()
            .filter_map(|s| Some((s.name.clone(), s.discovery.clone()?)))
            .collect()
    }

    /// Gives service `name` the `backends` just discovered for `discovery`, swapping a new
    /// table in if they differ from its current ones. Nothing happens if a reload has changed
    /// the service's discovery since (the answer would be stale). Returns whether the table
    /// changed.
    pub(crate) fn update_backends(
        &self,
        name: &str,
        discovery: &Discovery,
        backends: Vec<BackendConfig>,
    ) -> bool {
        let mut config = self.lock_config();
        let Some(service) = config
            .services
            .iter_mut()
            .find(|s| s.name == name && s.discovery.as_ref() == Some(discovery))
        else {
            return false;
        };
        if service.backends == backends {
            return false;
        }
        service.backends = backends;
        self.swap_table(&config);
        true
    }

    /// Builds a table for `config` from the current one and swaps it in (config lock held).
    fn swap_table(&self, config: &GatewayConfig) {
        let current = self.table.load_full();
        let table = build_table(config, self.clock.clone(), &self.observer, Some(&current));
        self.table.store(Arc::new(table));
        self.swapped.send_replace(());
    }

    fn lock_config(&self) -> std::sync::MutexGuard<'_, GatewayConfig> {
        self.config
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The error of the latest reload, if it failed.
    pub(crate) fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }
}

/// The gateway-wide settings that differ between `running` and `loaded`: a reload cannot
/// apply them (listeners are bound, the others are read once at start).
fn start_only_changes(running: &GatewayConfig, loaded: &GatewayConfig) -> Vec<&'static str> {
    let differs = [
        ("listen", running.listen != loaded.listen),
        ("admin_listen", running.admin_listen != loaded.admin_listen),
        (
            "tls.listen",
            running.tls.as_ref().map(|t| t.listen) != loaded.tls.as_ref().map(|t| t.listen),
        ),
        ("admin_token", running.admin_token != loaded.admin_token),
        ("status_log", running.status_log != loaded.status_log),
        ("log_format", running.log_format != loaded.log_format),
        ("access_log", running.access_log != loaded.access_log),
        (
            "trust_forwarded_for",
            running.trust_forwarded_for != loaded.trust_forwarded_for,
        ),
        ("h2c", running.h2c != loaded.h2c),
        (
            "underscores_in_headers",
            running.underscores_in_headers != loaded.underscores_in_headers,
        ),
        (
            "preserve_header_case",
            running.preserve_header_case != loaded.preserve_header_case,
        ),
        (
            "keepalive_timeout",
            running.keepalive_timeout != loaded.keepalive_timeout,
        ),
        (
            "max_header_count/max_header_size",
            running.header_limits != loaded.header_limits,
        ),
        (
            "max_connections/request_header_timeout",
            running.connection_limits != loaded.connection_limits,
        ),
    ];
    differs
        .into_iter()
        .filter_map(|(name, changed)| changed.then_some(name))
        .collect()
}

/// A discovered service whose hosts did not resolve during the reload keeps the backends it
/// had, as after a failed discovery refresh, if it discovers the same URLs as before.
fn keep_undiscovered_backends(new: &mut GatewayConfig, old: &GatewayConfig) {
    for service in &mut new.services {
        if service.discovery.is_none() || !service.backends.is_empty() {
            continue;
        }
        if let Some(old) = old.services.iter().find(|old| {
            old.name == service.name && discovered_urls(old) == discovered_urls(service)
        }) {
            service.backends = old.backends.clone();
        }
    }
}

/// The URLs a service discovers its backends from, if it uses discovery.
fn discovered_urls(service: &ServiceConfig) -> Option<&[BackendTarget]> {
    service.discovery.as_ref().map(|d| d.targets.as_slice())
}

fn build_table(
    config: &GatewayConfig,
    clock: Arc<dyn Clock>,
    observer: &Arc<CircuitLog>,
    previous: Option<&ServiceTable>,
) -> ServiceTable {
    observer.set_services(config.services_by_backend());
    ServiceTable::build(&config.services, clock, observer.clone(), previous)
}

/// Reloads on every `SIGHUP` until the server shuts down.
#[derive(Debug)]
pub(crate) struct ReloadOnHangup(pub Arc<LiveTable>);

#[async_trait]
impl BackgroundService for ReloadOnHangup {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut hangups = match signal(SignalKind::hangup()) {
            Ok(hangups) => hangups,
            Err(e) => {
                error!("cannot listen for SIGHUP, reload only through the admin listener: {e}");
                return;
            }
        };
        loop {
            tokio::select! {
                _ = hangups.recv() => {
                    info!("SIGHUP: reloading");
                    // Reading the files and resolving hosts blocks: off the async threads. The
                    // outcome is logged by reload().
                    let reloader = self.0.clone();
                    let _ = tokio::task::spawn_blocking(move || reloader.reload()).await;
                }
                _ = shutdown.changed() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{parse_services_with, ServiceDefaults};
    use crate::resolver::ScriptedResolver;
    use std::path::Path;

    fn config(services: &str, resolver: &ScriptedResolver) -> GatewayConfig {
        GatewayConfig::with_services(
            parse_services_with(
                Path::new("services.yaml"),
                services,
                &ServiceDefaults::default(),
                resolver,
            )
            .unwrap(),
        )
    }

    #[test]
    fn gateway_wide_settings_a_reload_cannot_apply_are_named() {
        let resolver = ScriptedResolver::default();
        let running = config("a: [\"http://10.0.0.1:1\"]", &resolver);
        let mut loaded = running.clone();
        assert!(start_only_changes(&running, &loaded).is_empty());
        loaded.status_log = !running.status_log;
        loaded.preserve_header_case = !running.preserve_header_case;
        loaded.connection_limits.max_connections += 1;
        loaded.services = config("b: [\"http://10.0.0.2:1\"]", &resolver).services;
        assert_eq!(
            start_only_changes(&running, &loaded),
            [
                "status_log",
                "preserve_header_case",
                "max_connections/request_header_timeout"
            ],
            "services are not among them"
        );
    }

    #[test]
    fn a_reload_that_cannot_resolve_a_discovered_host_keeps_its_backends() {
        let services = "cart: {backends: [\"http://cart.svc:80\"], discovery: dns}\n";
        let resolver = ScriptedResolver::default();
        resolver.answer("cart.svc", &["10.0.0.1", "10.0.0.2"]);
        let old = config(services, &resolver);
        resolver.fail("cart.svc");

        let mut same_targets = config(services, &resolver);
        assert!(same_targets.services[0].backends.is_empty());
        keep_undiscovered_backends(&mut same_targets, &old);
        assert_eq!(same_targets.services[0].backends, old.services[0].backends);

        let mut other_targets = config(
            "cart: {backends: [\"http://cart.svc:81\"], discovery: dns}\n",
            &resolver,
        );
        keep_undiscovered_backends(&mut other_targets, &old);
        assert!(
            other_targets.services[0].backends.is_empty(),
            "other URLs: the old addresses do not apply"
        );
    }
}
