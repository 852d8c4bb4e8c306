//! `GET /metrics`: the routing table's breakers and counters in the Prometheus text format.
//!
//! A `prometheus-client` [`Collector`] over the *current* table (see [`crate::telemetry::metrics`]
//! for why), encoded at scrape time: a backend removed by a reload has no series left, and the
//! request path only ever bumps atomics. Every series carries `service` and `backend` (the
//! configured URL) labels; a backend listed by two services shows its one breaker under both.

use std::fmt;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{prometheus_text, DescriptorEncoder, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::breaker::{Breaker, BreakerState};
use crate::service::{Backend, Service, ServiceTable};
use crate::telemetry::logs;
use crate::telemetry::metrics::{AttemptOutcome, GatewayStats, ServiceEvent};

/// Transitions the breakers make on their own: always exported, zero or not, so dashboards
/// and alerts have a series from the start. Manual ones appear once they happen.
const AUTOMATIC_TRANSITIONS: [(BreakerState, BreakerState); 4] = [
    (BreakerState::Closed, BreakerState::Open),
    (BreakerState::Open, BreakerState::HalfOpen),
    (BreakerState::HalfOpen, BreakerState::Closed),
    (BreakerState::HalfOpen, BreakerState::Open),
];

/// A series' labels.
type Labels<'a> = Vec<(&'static str, &'a str)>;

/// The whole exposition: per backend, per service, and for the gateway.
pub(crate) fn metrics_text(
    table: Arc<ServiceTable>,
    gateway: &GatewayStats,
    reload_failed: bool,
) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(TableCollector {
        table,
        not_found: gateway.not_found(),
        client_errors: logs::client_errors(),
        reload_failed,
    }));
    let mut text = String::new();
    // Writing to a String cannot fail, and the collector's own writes only pass errors on.
    let _ = prometheus_text::encode(&mut text, &registry);
    text
}

/// One scrape's view: the table current at the scrape and the gateway's counters.
#[derive(Debug)]
struct TableCollector {
    table: Arc<ServiceTable>,
    not_found: u64,
    client_errors: u64,
    reload_failed: bool,
}

impl Collector for TableCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let services = self.table.services();
        let backends: Vec<(&Service, &Backend)> = services
            .iter()
            .flat_map(|service| {
                service
                    .backends
                    .iter()
                    .map(move |backend| (service.as_ref(), backend))
            })
            .collect();
        backend_metrics(&mut encoder, &backends)?;
        health_metrics(&mut encoder, &backends)?;
        service_metrics(&mut encoder, &services)?;
        family(
            &mut encoder,
            "gateway_not_found",
            "Requests answered 404: not under /v1/proxy/, or naming no configured service.",
            MetricType::Counter,
        )?
        .encode_counter::<NoLabelSet, _, u64>(&self.not_found, None)?;
        family(
            &mut encoder,
            "gateway_client_errors",
            "Client connections that broke before their request head was read (slow heads \
             closed by the head deadline, resets, garbage): counted, and summed up in the log.",
            MetricType::Counter,
        )?
        .encode_counter::<NoLabelSet, _, u64>(&self.client_errors, None)?;
        family(
            &mut encoder,
            "gateway_config_reload_failed",
            "1 when the latest reload of the services file failed (the previous table serves on).",
            MetricType::Gauge,
        )?
        .encode_gauge(&u32::from(self.reload_failed))
    }
}

/// Starts a family. A counter's name is given without `_total`: the encoder adds it.
fn family<'e>(
    encoder: &'e mut DescriptorEncoder,
    name: &'e str,
    help: &str,
    kind: MetricType,
) -> Result<MetricEncoder<'e>, fmt::Error> {
    encoder.encode_descriptor(name, help, None, kind)
}

/// One counter sample.
fn counter(metric: &mut MetricEncoder, labels: &Labels, value: u64) -> fmt::Result {
    metric
        .encode_family(labels)?
        .encode_counter::<NoLabelSet, _, u64>(&value, None)
}

/// One gauge sample.
fn gauge(metric: &mut MetricEncoder, labels: &Labels, value: impl Into<f64>) -> fmt::Result {
    metric.encode_family(labels)?.encode_gauge(&value.into())
}

/// One integer gauge sample.
fn count_gauge(metric: &mut MetricEncoder, labels: &Labels, value: u64) -> fmt::Result {
    metric.encode_family(labels)?.encode_gauge(&value)
}

/// The labels every backend series starts with.
fn backend_labels<'a>(service: &'a Service, backend: &'a Backend) -> Labels<'a> {
    vec![
        ("service", service.name.as_str()),
        ("backend", backend.url.as_str()),
    ]
}

fn backend_metrics(
    encoder: &mut DescriptorEncoder,
    backends: &[(&Service, &Backend)],
) -> fmt::Result {
    let mut metric = family(
        encoder,
        "gateway_upstream_attempts",
        "Attempts at a backend, by outcome: success (any status below 500), connect_error, \
         timeout, http_5xx, broken_response (reset or closed mid-exchange), cancelled (the \
         client went away first).",
        MetricType::Counter,
    )?;
    for (service, backend) in backends {
        for outcome in AttemptOutcome::ALL {
            let mut labels = backend_labels(service, backend);
            labels.push(("outcome", outcome.label()));
            counter(&mut metric, &labels, backend.stats.attempts(outcome))?;
        }
    }

    let mut metric = family(
        encoder,
        "gateway_upstream_attempt_duration_seconds",
        "How long attempts at a backend took, from the pick to the end of the response.",
        MetricType::Histogram,
    )?;
    for (service, backend) in backends {
        let (buckets, sum) = backend.stats.latency();
        let count = buckets.iter().map(|(_, count)| count).sum();
        metric
            .encode_family(&backend_labels(service, backend))?
            .encode_histogram::<NoLabelSet>(sum, count, &buckets, None)?;
    }

    let mut metric = family(
        encoder,
        "gateway_breaker_state",
        "The breaker's state: 1 for the current one of closed, open, half_open, forced_open.",
        MetricType::Gauge,
    )?;
    for (service, backend) in backends {
        let current = backend.breaker.state();
        for state in BreakerState::ALL {
            let mut labels = backend_labels(service, backend);
            labels.push(("state", state_label(state)));
            count_gauge(&mut metric, &labels, u64::from(state == current))?;
        }
    }

    for (name, kind, help, value) in [
        (
            "gateway_breaker_consecutive_failures",
            MetricType::Gauge,
            "The current run of consecutive failures of a Closed breaker.",
            (|b| u64::from(b.snapshot().consecutive_failures)) as fn(&Breaker) -> u64,
        ),
        (
            "gateway_breaker_rejections",
            MetricType::Counter,
            "Requests the breaker turned away: Open, Forced-Open, or Half-Open with its probe \
             out.",
            Breaker::rejections,
        ),
    ] {
        let mut metric = family(encoder, name, help, kind)?;
        for (service, backend) in backends {
            let labels = backend_labels(service, backend);
            match kind {
                MetricType::Counter => counter(&mut metric, &labels, value(&backend.breaker))?,
                _ => count_gauge(&mut metric, &labels, value(&backend.breaker))?,
            }
        }
    }

    let mut metric = family(
        encoder,
        "gateway_upstream_in_flight",
        "Requests of the service in flight to a backend now.",
        MetricType::Gauge,
    )?;
    for (service, backend) in backends {
        let labels = backend_labels(service, backend);
        count_gauge(&mut metric, &labels, u64::from(backend.load.in_flight()))?;
    }
    let mut metric = family(
        encoder,
        "gateway_upstream_concurrency_limit",
        "A backend's concurrency limit now (adaptive limits move); absent when it has none.",
        MetricType::Gauge,
    )?;
    for (service, backend) in backends {
        if let Some(limit) = backend.load.limit() {
            count_gauge(
                &mut metric,
                &backend_labels(service, backend),
                u64::from(limit),
            )?;
        }
    }
    let mut metric = family(
        encoder,
        "gateway_upstream_limit_reached",
        "Times a backend's turn came while it was at its concurrency limit (not a failure).",
        MetricType::Counter,
    )?;
    for (service, backend) in backends {
        let labels = backend_labels(service, backend);
        counter(&mut metric, &labels, backend.load.times_full())?;
    }

    let mut metric = family(
        encoder,
        "gateway_breaker_transitions",
        "Breaker state changes, by from and to state.",
        MetricType::Counter,
    )?;
    for (service, backend) in backends {
        let counts = backend.breaker.transition_counts();
        for from in BreakerState::ALL {
            for to in BreakerState::ALL {
                let count = counts.get(from, to);
                if count > 0 || AUTOMATIC_TRANSITIONS.contains(&(from, to)) {
                    let mut labels = backend_labels(service, backend);
                    labels.push(("from", state_label(from)));
                    labels.push(("to", state_label(to)));
                    counter(&mut metric, &labels, count)?;
                }
            }
        }
    }
    Ok(())
}

/// The active health checks of backends whose service has them.
fn health_metrics(
    encoder: &mut DescriptorEncoder,
    backends: &[(&Service, &Backend)],
) -> fmt::Result {
    let checked: Vec<_> = backends
        .iter()
        .filter(|(service, _)| service.health_check.is_some())
        .map(|(service, backend)| (backend_labels(service, backend), backend.health.snapshot()))
        .collect();
    let mut metric = family(
        encoder,
        "gateway_health_check_healthy",
        "1 while the backend passes its active health checks (by the thresholds), else 0.",
        MetricType::Gauge,
    )?;
    for (labels, record) in &checked {
        count_gauge(&mut metric, labels, u64::from(record.healthy))?;
    }
    let mut metric = family(
        encoder,
        "gateway_health_checks",
        "Active health checks, by result.",
        MetricType::Counter,
    )?;
    for (labels, record) in &checked {
        for (result, count) in [("pass", record.passed), ("fail", record.failed)] {
            let mut labels = labels.clone();
            labels.push(("result", result));
            counter(&mut metric, &labels, count)?;
        }
    }
    let mut metric = family(
        encoder,
        "gateway_health_check_duration_seconds",
        "How long the latest health check took.",
        MetricType::Gauge,
    )?;
    for (labels, record) in &checked {
        if let Some(latency) = record.last_latency {
            gauge(&mut metric, labels, latency.as_secs_f64())?;
        }
    }
    Ok(())
}

fn service_metrics(encoder: &mut DescriptorEncoder, services: &[&Arc<Service>]) -> fmt::Result {
    let mut metric = family(
        encoder,
        "gateway_service_backends",
        "Backends the service has now (with DNS discovery: the addresses found).",
        MetricType::Gauge,
    )?;
    for service in services {
        let labels = vec![("service", service.name.as_str())];
        count_gauge(&mut metric, &labels, service.backends.len() as u64)?;
    }
    let mut metric = family(
        encoder,
        "gateway_service_queue_waiting",
        "Requests waiting in the service's queue now.",
        MetricType::Gauge,
    )?;
    for service in services {
        let labels = vec![("service", service.name.as_str())];
        count_gauge(&mut metric, &labels, u64::from(service.room.waiting()))?;
    }
    for (event, name, help) in [
        (
            ServiceEvent::Request,
            "gateway_service_requests",
            "Requests routed to a service (each counted once, however many attempts it took).",
        ),
        (
            ServiceEvent::AllOpen,
            "gateway_service_all_open",
            "Requests answered 503 at once because every backend's breaker was open.",
        ),
        (
            ServiceEvent::NoBackends,
            "gateway_service_no_backends",
            "Requests answered 503 at once because the service had no backends.",
        ),
        (
            ServiceEvent::Retry,
            "gateway_service_retries",
            "Requests failed over to another backend after an attempt failed.",
        ),
        (
            ServiceEvent::Hedge,
            "gateway_service_hedges",
            "Second attempts that raced a first one slower than hedge_after (paid from the \
             retry budget).",
        ),
        (
            ServiceEvent::StatusRetry,
            "gateway_service_status_retries",
            "Of the failovers, those made because a backend answered with a status in \
             retry_on_status (502, 503, 504 by default).",
        ),
        (
            ServiceEvent::RetryBudgetExhausted,
            "gateway_service_retry_budget_exhausted",
            "Failovers refused because the service's retry budget was spent.",
        ),
        (
            ServiceEvent::Queued,
            "gateway_service_queued",
            "Requests that waited in the service's queue: every backend was at its limit.",
        ),
        (
            ServiceEvent::Overloaded,
            "gateway_service_overloaded",
            "Requests answered 503 overloaded: every backend at its limit, the queue full or \
             the wait over.",
        ),
        (
            ServiceEvent::RateLimited,
            "gateway_service_rate_limited",
            "Requests answered 429: over the service's rate limit.",
        ),
        (
            ServiceEvent::ClientRateLimited,
            "gateway_service_client_rate_limited",
            "Requests answered 429: over their client address's rate limit.",
        ),
    ] {
        let mut metric = family(encoder, name, help, MetricType::Counter)?;
        for service in services {
            let labels = vec![("service", service.name.as_str())];
            counter(&mut metric, &labels, service.stats.get(event))?;
        }
    }
    Ok(())
}

fn state_label(state: BreakerState) -> &'static str {
    match state {
        BreakerState::Closed => "closed",
        BreakerState::Open => "open",
        BreakerState::HalfOpen => "half_open",
        BreakerState::ForcedOpen => "forced_open",
    }
}
