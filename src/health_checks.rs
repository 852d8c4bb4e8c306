//! Active health checks: a background service that checks every backend of every service with
//! a `health_check`, so that a dead or sick backend leaves the rotation before a client request
//! finds out, and comes back as soon as it passes again.
//!
//! The checks are `pingora-load-balancing`'s: [`HttpHealthCheck`] (`GET path` with the
//! backend's own `Host`, over TLS for an `https` backend, with the service's CA, verification
//! and client certificate) or [`TcpHealthCheck`] (a connect, and a TLS handshake for `https`),
//! each bounded by the service's `timeout` as a whole. Their thresholds are the gateway's
//! ([`crate::health`]): Pingora keeps its own health state private.
//!
//! Every backend in the live table is checked, discovered ones too, one check at a time per
//! backend, every `interval` with a jitter of up to a tenth of it, the first check at a random
//! point of the first interval, so replicas are not all checked in the same instant. A flip
//! to unhealthy takes the backend out through its breaker (Forced-Open, `health check
//! failed`); a flip back puts it back (`health check passed`). Health is kept across reloads
//! with the breaker, by URL; a backend whose service stops checking it is healthy again.
//!
//! The service sleeps until the next check falls due, a check ends or a new table is swapped
//! in, whichever comes first: a gateway with no checks configured never wakes it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use log::info;
use pingora::http::RequestHeader;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use pingora_load_balancing::health_check::{HealthCheck, HttpHealthCheck, TcpHealthCheck};
use tokio::sync::Notify;

use crate::config::{HealthCheckKind, HealthCheckSettings};
use crate::live::LiveTable;
use crate::service::{Backend, Service};

/// The background service.
pub(crate) struct HealthChecks {
    live: Arc<LiveTable>,
    /// When each backend (by service and URL) is next due, and whether a check is running.
    schedule: Mutex<HashMap<(String, String), Due>>,
    /// Woken when a check ends and its backend's next check is in the schedule.
    rescheduled: Notify,
}

#[derive(Debug, Clone, Copy)]
struct Due {
    at: Instant,
    running: bool,
}

impl HealthChecks {
    /// Checks the backends of `live`'s table, whatever table is current.
    pub fn new(live: Arc<LiveTable>) -> Self {
        Self {
            live,
            schedule: Mutex::new(HashMap::new()),
            rescheduled: Notify::new(),
        }
    }

    /// Starts every check that is due now; forgets the health of backends nobody checks.
    /// Returns when the next check that is not running falls due (`None`: none is scheduled).
    fn start_due_checks(self: &Arc<Self>) -> Option<Instant> {
        let table = self.live.current();
        let now = Instant::now();
        let mut schedule = self.schedule.lock().unwrap_or_else(|p| p.into_inner());
        let mut seen = Vec::new();
        let mut next: Option<Instant> = None;
        for service in table.services() {
            let Some(settings) = &service.health_check else {
                for backend in service.backends.iter() {
                    if backend.health.forget() {
                        backend.breaker.set_health(true);
                    }
                }
                continue;
            };
            for (index, backend) in service.backends.iter().enumerate() {
                let key = (service.name.clone(), backend.url.clone());
                let due = schedule.entry(key.clone()).or_insert_with(|| Due {
                    at: now + spread(settings.interval, &key),
                    running: false,
                });
                seen.push(key.clone());
                if due.running {
                    continue;
                }
                if due.at > now {
                    next = Some(next.map_or(due.at, |next| next.min(due.at)));
                    continue;
                }
                due.running = true;
                let (checks, service) = (Arc::clone(self), Arc::clone(service));
                tokio::spawn(async move {
                    checks.check(&service, index).await;
                    let next = Instant::now() + jittered(interval_of(&service), &key);
                    let mut schedule = checks.schedule.lock().unwrap_or_else(|p| p.into_inner());
                    if let Some(due) = schedule.get_mut(&key) {
                        *due = Due {
                            at: next,
                            running: false,
                        };
                    }
                    drop(schedule);
                    checks.rescheduled.notify_one();
                });
            }
        }
        schedule.retain(|key, _| seen.contains(key));
        next
    }

    /// Runs one check of `service`'s backend `index` and applies its result.
    async fn check(&self, service: &Service, index: usize) {
        let (Some(settings), Some(backend)) = (&service.health_check, service.backends.get(index))
        else {
            return;
        };
        let check = health_check(settings, backend, service);
        let started = Instant::now();
        let result =
            match tokio::time::timeout(settings.timeout, check.check(&backend.address)).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err(format!("no answer within {:?}", settings.timeout)),
            };
        let why = result.as_ref().err().cloned();
        let flipped = backend.health.record(
            result,
            started.elapsed(),
            settings.unhealthy_threshold,
            settings.healthy_threshold,
        );
        if let Some(healthy) = flipped {
            if healthy {
                info!(
                    "health checks of {} (service \"{}\") pass again",
                    backend.url, service.name
                );
            } else {
                info!(
                    "health checks of {} (service \"{}\") failed {} times in a row: {}",
                    backend.url,
                    service.name,
                    settings.unhealthy_threshold,
                    why.unwrap_or_default()
                );
            }
            backend.breaker.set_health(healthy);
        }
    }
}

/// How often `service` checks its backends.
fn interval_of(service: &Service) -> Duration {
    service
        .health_check
        .as_ref()
        .map_or(Duration::from_secs(5), |s| s.interval)
}

/// The first check of a backend: somewhere in its first interval, the same place every run.
fn spread(interval: Duration, key: &(String, String)) -> Duration {
    interval.mul_f64(fraction(key, 0))
}

/// `interval` plus up to a tenth of it, varying from check to check.
fn jittered(interval: Duration, key: &(String, String)) -> Duration {
    interval + interval.mul_f64(0.1 * fraction(key, now_nanos()))
}

/// The sub-second part of the wall clock: a cheap salt that differs from check to check.
fn now_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos().into())
}

/// A number in [0, 1) from `key` and `salt` (FNV-1a).
fn fraction(key: &(String, String), salt: u64) -> f64 {
    let hash = key
        .0
        .bytes()
        .chain([0])
        .chain(key.1.bytes())
        .fold(0xcbf2_9ce4_8422_2325_u64 ^ salt, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
    (hash >> 11) as f64 / (1u64 << 53) as f64
}

/// The check `settings` describe, for `backend` of `service`.
fn health_check(
    settings: &HealthCheckSettings,
    backend: &Backend,
    service: &Service,
) -> Box<dyn HealthCheck + Send + Sync> {
    let tls = &service.tls;
    match &settings.kind {
        HealthCheckKind::Http {
            path,
            expect_status,
        } => {
            // Visible ASCII only: `config::backend_url` admits nothing else.
            let authority = backend.authority.to_str().unwrap_or_default();
            let mut check = HttpHealthCheck::new(authority, backend.tls_host.is_some());
            if let Ok(mut request) = RequestHeader::build("GET", path.as_bytes(), None) {
                if request
                    .insert_header("Host", backend.authority.clone())
                    .is_ok()
                {
                    check.req = request;
                }
            }
            let peer = &mut check.peer_template;
            peer.options.connection_timeout = Some(settings.timeout);
            // No read timeout of its own: the whole check's `timeout` bounds the answer, and
            // two equal timers would race to name the failure.
            peer.options.read_timeout = None;
            if let Some(host) = &backend.tls_host {
                peer.sni.clone_from(host);
                tls.configure(peer);
            }
            let (low, high) = *expect_status;
            check.validator = Some(Box::new(move |response| {
                let status = response.status.as_u16();
                if (low..=high).contains(&status) {
                    Ok(())
                } else {
                    pingora::Error::e_explain(
                        pingora::ErrorType::CustomCode("unexpected status", status),
                        format!("status {status}, expected {low}-{high}"),
                    )
                }
            }));
            Box::new(check)
        }
        HealthCheckKind::Tcp => {
            let mut check = match &backend.tls_host {
                Some(host) => TcpHealthCheck::new_tls(host),
                None => TcpHealthCheck::new(),
            };
            check.peer_template.options.connection_timeout = Some(settings.timeout);
            if backend.tls_host.is_some() {
                check.peer_template.options.verify_cert = tls.verify;
                check.peer_template.options.verify_hostname = tls.verify;
                check.peer_template.options.ca.clone_from(&tls.ca);
            }
            check
        }
    }
}

/// The checks as a Pingora background service.
pub(crate) struct HealthCheckService(pub Arc<HealthChecks>);

#[async_trait]
impl BackgroundService for HealthCheckService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let checks = &self.0;
        // Subscribed before the first look, so no swap falls between the look and the wait.
        let mut changes = checks.live.changes();
        loop {
            let next = checks.start_due_checks();
            let due = async {
                match next {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = shutdown.changed() => return,
                // The table outlives this service (`checks` holds it): an error cannot happen,
                // and would leave nothing to check.
                changed = changes.changed() => if changed.is_err() { return },
                () = checks.rescheduled.notified() => {}
                () = due => {}
            }
        }
    }
}
