//! `GET /metrics`: the routing table's breakers and counters in the Prometheus text format.
//!
//! Rendered from the *current* table at scrape time (see [`crate::metrics`] for why), so a
//! backend removed by a reload has no series left. Every series carries `service` and
//! `backend` (the configured URL) labels; a backend listed by two services shows its one
//! breaker under both.

use std::sync::Arc;

use crate::breaker::{Breaker, BreakerState};
use crate::service::{Backend, Service, ServiceTable};
use crate::telemetry::logs;
use crate::telemetry::metrics::{AttemptOutcome, GatewayStats, PrometheusText, ServiceEvent};

/// Transitions the breakers make on their own: always exported, zero or not, so dashboards
/// and alerts have a series from the start. Manual ones appear once they happen.
const AUTOMATIC_TRANSITIONS: [(BreakerState, BreakerState); 4] = [
    (BreakerState::Closed, BreakerState::Open),
    (BreakerState::Open, BreakerState::HalfOpen),
    (BreakerState::HalfOpen, BreakerState::Closed),
    (BreakerState::HalfOpen, BreakerState::Open),
];

/// The whole exposition: per backend, per service, and for the gateway.
pub fn metrics_text(table: &ServiceTable, gateway: &GatewayStats, reload_failed: bool) -> String {
    let services = table.services();
    let backends: Vec<(&Service, &Backend)> = services
        .iter()
        .flat_map(|service| {
            service
                .backends
                .iter()
                .map(move |backend| (service.as_ref(), backend))
        })
        .collect();
    let mut text = PrometheusText::default();
    backend_metrics(&mut text, &backends);
    health_metrics(&mut text, &backends);
    service_metrics(&mut text, &services);

    text.family(
        "gateway_not_found_total",
        "counter",
        "Requests answered 404: not under /v1/proxy/, or naming no configured service.",
    );
    text.sample("gateway_not_found_total", &[], gateway.not_found() as f64);
    text.family(
        "gateway_client_errors_total",
        "counter",
        "Client connections that broke before their request head was read (slow heads closed \
         by the head deadline, resets, garbage): counted, and summed up in the log.",
    );
    text.sample(
        "gateway_client_errors_total",
        &[],
        logs::client_errors() as f64,
    );
    text.family(
        "gateway_config_reload_failed",
        "gauge",
        "1 when the latest reload of the services file failed (the previous table serves on).",
    );
    text.sample(
        "gateway_config_reload_failed",
        &[],
        f64::from(u8::from(reload_failed)),
    );
    text.finish()
}

fn backend_metrics(text: &mut PrometheusText, backends: &[(&Service, &Backend)]) {
    let name = "gateway_upstream_attempts_total";
    text.family(
        name,
        "counter",
        "Attempts at a backend, by outcome: success (any status below 500), connect_error, \
         timeout, http_5xx, broken_response (reset or closed mid-exchange), cancelled (the \
         client went away first).",
    );
    for (service, backend) in backends {
        for outcome in AttemptOutcome::ALL {
            text.sample(
                name,
                &[
                    ("service", &service.name),
                    ("backend", &backend.url),
                    ("outcome", outcome.label()),
                ],
                backend.stats.attempts(outcome) as f64,
            );
        }
    }

    let name = "gateway_upstream_attempt_duration_seconds";
    text.family(
        name,
        "histogram",
        "How long attempts at a backend took, from the pick to the end of the response.",
    );
    let bucket = format!("{name}_bucket");
    for (service, backend) in backends {
        let (buckets, sum) = backend.stats.latency();
        for (bound, count) in &buckets {
            let le = if bound.is_infinite() {
                "+Inf".to_owned()
            } else {
                bound.to_string()
            };
            text.sample(
                &bucket,
                &[
                    ("service", &service.name),
                    ("backend", &backend.url),
                    ("le", &le),
                ],
                *count as f64,
            );
        }
        let labels = [
            ("service", service.name.as_str()),
            ("backend", &backend.url),
        ];
        text.sample(&format!("{name}_sum"), &labels, sum);
        let count = buckets.last().map_or(0, |(_, count)| *count);
        text.sample(&format!("{name}_count"), &labels, count as f64);
    }

    let name = "gateway_breaker_state";
    text.family(
        name,
        "gauge",
        "The breaker's state: 1 for the current one of closed, open, half_open, forced_open.",
    );
    for (service, backend) in backends {
        let breaker = &backend.breaker;
        let current = breaker.state();
        for state in BreakerState::ALL {
            text.sample(
                name,
                &[
                    ("service", &service.name),
                    ("backend", &backend.url),
                    ("state", state_label(state)),
                ],
                f64::from(u8::from(state == current)),
            );
        }
    }

    for (name, kind, help, value) in [
        (
            "gateway_breaker_consecutive_failures",
            "gauge",
            "The current run of consecutive failures of a Closed breaker.",
            (|b| f64::from(b.snapshot().consecutive_failures)) as fn(&Breaker) -> f64,
        ),
        (
            "gateway_breaker_rejections_total",
            "counter",
            "Requests the breaker turned away: Open, Forced-Open, or Half-Open with its probe \
             out.",
            |b| b.rejections() as f64,
        ),
    ] {
        text.family(name, kind, help);
        for (service, backend) in backends {
            let breaker = &backend.breaker;
            text.sample(
                name,
                &[("service", &service.name), ("backend", &backend.url)],
                value(breaker),
            );
        }
    }

    let name = "gateway_breaker_transitions_total";
    text.family(
        name,
        "counter",
        "Breaker state changes, by from and to state.",
    );
    for (service, backend) in backends {
        let breaker = &backend.breaker;
        let counts = breaker.transition_counts();
        for from in BreakerState::ALL {
            for to in BreakerState::ALL {
                let count = counts.get(from, to);
                if count > 0 || AUTOMATIC_TRANSITIONS.contains(&(from, to)) {
                    text.sample(
                        name,
                        &[
                            ("service", &service.name),
                            ("backend", &backend.url),
                            ("from", state_label(from)),
                            ("to", state_label(to)),
                        ],
                        count as f64,
                    );
                }
            }
        }
    }
}

/// The active health checks of backends whose service has them.
fn health_metrics(text: &mut PrometheusText, backends: &[(&Service, &Backend)]) {
    let checked: Vec<_> = backends
        .iter()
        .filter(|(service, _)| service.health_check.is_some())
        .map(|(service, backend)| (service, backend, backend.health.snapshot()))
        .collect();
    let name = "gateway_health_check_healthy";
    text.family(
        name,
        "gauge",
        "1 while the backend passes its active health checks (by the thresholds), else 0.",
    );
    for (service, backend, record) in &checked {
        let labels = [
            ("service", service.name.as_str()),
            ("backend", &backend.url),
        ];
        text.sample(name, &labels, f64::from(u8::from(record.healthy)));
    }
    let name = "gateway_health_checks_total";
    text.family(name, "counter", "Active health checks, by result.");
    for (service, backend, record) in &checked {
        for (result, count) in [("pass", record.passed), ("fail", record.failed)] {
            text.sample(
                name,
                &[
                    ("service", service.name.as_str()),
                    ("backend", &backend.url),
                    ("result", result),
                ],
                count as f64,
            );
        }
    }
    let name = "gateway_health_check_duration_seconds";
    text.family(name, "gauge", "How long the latest health check took.");
    for (service, backend, record) in &checked {
        if let Some(latency) = record.last_latency {
            let labels = [
                ("service", service.name.as_str()),
                ("backend", &backend.url),
            ];
            text.sample(name, &labels, latency.as_secs_f64());
        }
    }
}

fn service_metrics(text: &mut PrometheusText, services: &[&Arc<Service>]) {
    let name = "gateway_service_backends";
    text.family(
        name,
        "gauge",
        "Backends the service has now (with DNS discovery: the addresses found).",
    );
    for service in services {
        text.sample(
            name,
            &[("service", &service.name)],
            service.backends.len() as f64,
        );
    }
    for (event, name, help) in [
        (
            ServiceEvent::Request,
            "gateway_service_requests_total",
            "Requests routed to a service (each counted once, however many attempts it took).",
        ),
        (
            ServiceEvent::AllOpen,
            "gateway_service_all_open_total",
            "Requests answered 503 at once because every backend's breaker was open.",
        ),
        (
            ServiceEvent::NoBackends,
            "gateway_service_no_backends_total",
            "Requests answered 503 at once because the service had no backends.",
        ),
        (
            ServiceEvent::Retry,
            "gateway_service_retries_total",
            "Requests failed over to another backend after an attempt failed.",
        ),
        (
            ServiceEvent::RetryBudgetExhausted,
            "gateway_service_retry_budget_exhausted_total",
            "Failovers refused because the service's retry budget was spent.",
        ),
    ] {
        text.family(name, "counter", help);
        for service in services {
            text.sample(
                name,
                &[("service", &service.name)],
                service.stats.get(event) as f64,
            );
        }
    }
}

fn state_label(state: BreakerState) -> &'static str {
    match state {
        BreakerState::Closed => "closed",
        BreakerState::Open => "open",
        BreakerState::HalfOpen => "half_open",
        BreakerState::ForcedOpen => "forced_open",
    }
}
