//! The admin listener: health, readiness and the state of every breaker, on a port of its own
//! (`gateway.admin_listen`, 127.0.0.1:9091 by default), so admin paths are never reachable
//! through the proxy port.
//!
//! | path           | answer                                                          |
//! |----------------|-----------------------------------------------------------------|
//! | `GET /healthz` | 200 while the process serves                                    |
//! | `GET /readyz`  | 200 once the config is loaded and the listeners are up          |
//! | `GET /status`  | JSON: every service and backend: breaker state, counters, last transition |
//! | `GET /metrics` | the same and more in the Prometheus text format (`prometheus`)  |
//! | `POST /backends/{id}/open`  | take the backend out: Forced-Open until closed by hand |
//! | `POST /backends/{id}/close` | put it back: Closed                                |
//! | `POST /backends/{id}/reset` | Closed, counters zeroed                            |
//! | `POST /reload` | re-read the services file (as SIGHUP does); 200, or 422 with the error |
//!
//! A backend's `id` is its URL without `http://` (`localhost:9001`, `10.0.0.5:8000/api`), as
//! `/status` shows it: stable across config edits, unlike a position. Overrides act on the
//! backend's one breaker, shared by every service that lists the URL, and log a `[CIRCUIT]`
//! transition with the reason `manual`.
//!
//! With a token configured (`gateway.admin_token` or `GATEWAY_ADMIN_TOKEN`), every path but
//! `/healthz` and `/readyz` (what orchestrators probe) needs `Authorization: Bearer <token>`,
//! else 401.
//!
//! Readiness needs no probe of its own: Pingora binds every listener before it starts any
//! service, and the config was validated before that, so an admin service that answers at all
//! is running beside a bound proxy listener and a loaded config.

mod prometheus;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use http::{header, Response, StatusCode};
use pingora::apps::http_app::{HttpServer, ServeHttp};
use pingora::protocols::http::ServerSession;
use pingora::services::listening::Service;
use serde_json::{json, Value};

use crate::breaker::ManualAction;
use crate::config::ConnectionLimits;
use crate::edge::ConnectionGuard;
use crate::live::LiveTable;
use crate::service::ServiceTable;
use crate::telemetry::metrics::GatewayStats;

/// The admin endpoints over the gateway's services.
#[derive(Debug)]
pub(crate) struct AdminApp {
    reloader: Arc<LiveTable>,
    stats: Arc<GatewayStats>,
    token: Option<String>,
}

impl AdminApp {
    /// An admin app over the live routing table of `reloader` and the gateway-wide `stats`;
    /// with a `token`, every path but the probes requires it as a bearer token.
    pub fn new(reloader: Arc<LiveTable>, stats: Arc<GatewayStats>, token: Option<String>) -> Self {
        Self {
            reloader,
            stats,
            token,
        }
    }

    /// The status code and body for `method path`, sent with the `authorization` header: JSON,
    /// but for a successful `GET /metrics`.
    pub async fn answer(
        &self,
        method: &str,
        path: &str,
        authorization: Option<&[u8]>,
    ) -> (StatusCode, String) {
        let probe = matches!(path, "/healthz" | "/readyz");
        if !probe && !self.authorized(authorization) {
            return (
                StatusCode::UNAUTHORIZED,
                r#"{"error":"unauthorized","detail":"send Authorization: Bearer <admin token>"}"#
                    .to_owned(),
            );
        }
        match (method, path) {
            ("GET", "/healthz") => (StatusCode::OK, r#"{"status":"ok"}"#.to_owned()),
            ("GET", "/readyz") => (StatusCode::OK, r#"{"status":"ready"}"#.to_owned()),
            ("GET", "/status") => (
                StatusCode::OK,
                status_json(&self.reloader.current(), self.reloader.last_error()),
            ),
            ("GET", METRICS_PATH) => (
                StatusCode::OK,
                prometheus::metrics_text(
                    self.reloader.current(),
                    &self.stats,
                    self.reloader.last_error().is_some(),
                ),
            ),
            ("POST", "/reload") => {
                // Reading the files and resolving hosts blocks: off this listener's async
                // threads, so probes and scrapes are answered while a slow reload runs.
                let reloader = Arc::clone(&self.reloader);
                let outcome = tokio::task::spawn_blocking(move || reloader.reload())
                    .await
                    .unwrap_or_else(|e| Err(format!("the reload task failed: {e}")));
                match outcome {
                    Ok(()) => (StatusCode::OK, r#"{"status":"reloaded"}"#.to_owned()),
                    Err(e) => (
                        StatusCode::UNPROCESSABLE_ENTITY,
                        json!({"error": "invalid_config", "detail": e}).to_string(),
                    ),
                }
            }
            (method, path) if path.starts_with(BACKENDS_PREFIX) => {
                self.backend_override(method, path)
            }
            (_, "/healthz" | "/readyz" | "/status" | METRICS_PATH) => (
                StatusCode::METHOD_NOT_ALLOWED,
                r#"{"error":"method_not_allowed","detail":"use GET"}"#.to_owned(),
            ),
            (_, "/reload") => (
                StatusCode::METHOD_NOT_ALLOWED,
                r#"{"error":"method_not_allowed","detail":"use POST"}"#.to_owned(),
            ),
            _ => (
                StatusCode::NOT_FOUND,
                r#"{"error":"not_found","detail":"admin paths: /healthz, /readyz, /status, /metrics, /reload, /backends/{id}/open|close|reset"}"#
                    .to_owned(),
            ),
        }
    }
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let request = session.req_header();
        let authorization = request
            .headers
            .get(header::AUTHORIZATION)
            .map(|v| v.as_bytes());
        let path = request.uri.path();
        let (status, body) = self
            .answer(request.method.as_str(), path, authorization)
            .await;
        let content_type = if path == METRICS_PATH && status == StatusCode::OK {
            prometheus_client::encoding::prometheus_text::CONTENT_TYPE
        } else {
            "application/json"
        };
        let length = body.len();
        let mut response = Response::new(body.into_bytes());
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static(content_type),
        );
        headers.insert(
            header::CACHE_CONTROL,
            header::HeaderValue::from_static("no-store"),
        );
        headers.insert(header::CONTENT_LENGTH, length.into());
        response
    }
}

const BACKENDS_PREFIX: &str = "/backends/";
/// Connections the admin listener serves at once (probes, scrapers, operators).
const ADMIN_MAX_CONNECTIONS: usize = 64;
/// How long an admin request head may take to arrive.
const ADMIN_HEADER_TIMEOUT: Duration = Duration::from_secs(5);
const METRICS_PATH: &str = "/metrics";

impl AdminApp {
    /// Whether `authorization` carries the token (always, when there is none to check).
    fn authorized(&self, authorization: Option<&[u8]>) -> bool {
        let Some(token) = &self.token else {
            return true;
        };
        let presented = authorization
            .and_then(|value| value.strip_prefix(b"Bearer "))
            .unwrap_or_default();
        // Compare every byte whatever the first difference, so timing tells nothing.
        presented.len() == token.len()
            && presented
                .iter()
                .zip(token.as_bytes())
                .fold(0u8, |diff, (a, b)| diff | (a ^ b))
                == 0
    }

    /// `POST /backends/{id}/{open|close|reset}`.
    fn backend_override(&self, method: &str, path: &str) -> (StatusCode, String) {
        let not_found = |detail: &str| {
            (
                StatusCode::NOT_FOUND,
                json!({"error": "not_found", "detail": detail}).to_string(),
            )
        };
        let Some((id, action)) = path[BACKENDS_PREFIX.len()..].rsplit_once('/') else {
            return not_found("use /backends/{id}/open, /close or /reset");
        };
        let action = match action {
            "open" => ManualAction::Open,
            "close" => ManualAction::Close,
            "reset" => ManualAction::Reset,
            _ => return not_found("the action is open, close or reset"),
        };
        if method != "POST" {
            return (
                StatusCode::METHOD_NOT_ALLOWED,
                r#"{"error":"method_not_allowed","detail":"use POST"}"#.to_owned(),
            );
        }
        let table = self.reloader.current();
        let breaker = table.services().into_iter().find_map(|service| {
            service
                .backends
                .iter()
                .find(|backend| backend.url.strip_prefix("http://") == Some(id))
                .map(|backend| backend.breaker.clone())
        });
        let Some(breaker) = breaker else {
            return not_found(&format!("no backend \"{id}\"; /status lists them"));
        };
        breaker.apply(action);
        (
            StatusCode::OK,
            json!({"url": breaker.name(), "state": breaker.state().to_string()}).to_string(),
        )
    }
}

/// The admin listener as a Pingora service, listening on `listen`, behind the same connection
/// guard as the proxy listener with small limits: it serves operators, not traffic.
pub(crate) fn admin_service(
    app: AdminApp,
    listen: SocketAddr,
) -> Service<ConnectionGuard<HttpServer<AdminApp>>> {
    let guarded = ConnectionGuard::new(
        HttpServer::new_app(app),
        ConnectionLimits {
            max_connections: ADMIN_MAX_CONNECTIONS,
            request_header_timeout: ADMIN_HEADER_TIMEOUT,
        },
    );
    let mut service = Service::new("gateway admin".to_owned(), guarded);
    service.add_tcp(&listen.to_string());
    service
}

/// `{"reload_error":..,"services":[{"name":..,"backends":[{"url":..,"state":..,...}]}]}`,
/// services by name, backends in rotation order.
fn status_json(services: &ServiceTable, reload_error: Option<String>) -> String {
    let services: Vec<Value> = services
        .services()
        .into_iter()
        .map(|service| {
            let backends: Vec<Value> = service
                .backends
                .iter()
                .map(|backend| {
                    let breaker = &backend.breaker;
                    let snapshot = breaker.snapshot();
                    let last_transition = breaker.last_transition().map(|t| {
                        json!({
                            "from": t.from.to_string(),
                            "to": t.to.to_string(),
                            "reason": t.reason.to_string(),
                            "ms_ago": millis(t.ago),
                        })
                    });
                    let health = service.health_check.as_ref().map(|_| {
                        let record = backend.health.snapshot();
                        json!({
                            "healthy": record.healthy,
                            "passed": record.passed,
                            "failed": record.failed,
                            "last_error": record.last_error,
                            "last_latency_ms": record.last_latency.map(millis),
                        })
                    });
                    json!({
                        "url": backend.url,
                        "state": snapshot.state.to_string(),
                        "consecutive_failures": snapshot.consecutive_failures,
                        "successes": snapshot.successes,
                        "failures": snapshot.failures,
                        "retry_in_ms": millis(snapshot.retry_in),
                        "last_transition": last_transition,
                        "health": health,
                        "in_flight": backend.load.in_flight(),
                        "concurrency_limit": backend.load.limit(),
                        "latency_ewma_ms": backend.load.latency(Instant::now()).map(millis),
                    })
                })
                .collect();
            json!({
                "name": service.name,
                "queue_waiting": service.room.waiting(),
                "backends": backends,
            })
        })
        .collect();
    json!({"reload_error": reload_error, "services": services}).to_string()
}

/// A duration in whole milliseconds, as the JSON answers give them.
fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::breaker::Outcome;
    use crate::clock::ManualClock;
    use crate::config::{parse_services, GatewayConfig, ServiceDefaults};
    use crate::selector::PickPolicy;
    use std::path::Path;

    fn app() -> AdminApp {
        app_with_token(None)
    }

    fn app_with_token(token: Option<&str>) -> AdminApp {
        let services = parse_services(
            Path::new("s.yaml"),
            "b: [\"http://127.0.0.1:3\"]\na: [\"http://127.0.0.1:1\", \"http://127.0.0.1:2\"]",
            &ServiceDefaults::default(),
        )
        .unwrap();
        let config = GatewayConfig::with_services(services);
        let reloader = LiveTable::new(
            "/nonexistent/gateway.yaml".into(),
            &config,
            Arc::new(ManualClock::new()),
            None,
        );
        AdminApp::new(Arc::new(reloader), Arc::default(), token.map(str::to_owned))
    }

    /// Opens `breaker` (threshold 3).
    fn trip(breaker: &Arc<crate::breaker::Breaker>) {
        for _ in 0..3 {
            breaker.try_acquire().unwrap().record(Outcome::Failure);
        }
    }

    #[tokio::test]
    async fn with_a_token_everything_but_the_probes_needs_it() {
        let app = app_with_token(Some("s3cret"));
        assert_eq!(app.answer("GET", "/healthz", None).await.0, StatusCode::OK);
        assert_eq!(app.answer("GET", "/readyz", None).await.0, StatusCode::OK);
        for authorization in [
            None,
            Some(&b"Bearer wrong!"[..]),
            Some(&b"Bearer s3cre"[..]),
            Some(&b"s3cret"[..]),
        ] {
            assert_eq!(
                app.answer("GET", "/status", authorization).await.0,
                StatusCode::UNAUTHORIZED
            );
            assert_eq!(
                app.answer("POST", "/backends/127.0.0.1:1/open", authorization)
                    .await
                    .0,
                StatusCode::UNAUTHORIZED
            );
        }
        let good = Some(&b"Bearer s3cret"[..]);
        assert_eq!(app.answer("GET", "/status", good).await.0, StatusCode::OK);
        assert_eq!(
            app.answer("POST", "/backends/127.0.0.1:1/open", good)
                .await
                .0,
            StatusCode::OK
        );
    }

    #[tokio::test]
    async fn status_lists_every_service_and_backend_with_its_breaker() {
        let app = app();
        let table = app.reloader.current();
        let a = table.get("a").unwrap();
        trip(&a.backends[1].breaker);
        a.backends[0]
            .breaker
            .try_acquire()
            .unwrap()
            .record(Outcome::Success);
        let (status, body) = app.answer("GET", "/status", None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            body,
            concat!(
                r#"{"reload_error":null,"services":[{"name":"a","queue_waiting":0,"backends":["#,
                r#"{"url":"http://127.0.0.1:1","state":"Closed","consecutive_failures":0,"successes":1,"failures":0,"retry_in_ms":0,"last_transition":null,"health":null,"in_flight":0,"concurrency_limit":null,"latency_ewma_ms":null},"#,
                r#"{"url":"http://127.0.0.1:2","state":"Open","consecutive_failures":0,"successes":0,"failures":3,"retry_in_ms":10000,"#,
                r#""last_transition":{"from":"Closed","to":"Open","reason":"threshold reached","ms_ago":0},"health":null,"in_flight":0,"concurrency_limit":null,"latency_ewma_ms":null}]},"#,
                r#"{"name":"b","queue_waiting":0,"backends":["#,
                r#"{"url":"http://127.0.0.1:3","state":"Closed","consecutive_failures":0,"successes":0,"failures":0,"retry_in_ms":0,"last_transition":null,"health":null,"in_flight":0,"concurrency_limit":null,"latency_ewma_ms":null}]}]}"#
            )
        );
    }

    #[tokio::test]
    async fn backends_are_taken_out_and_put_back_by_hand() {
        let app = app();
        let (status, body) = app.answer("POST", "/backends/127.0.0.1:2/open", None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            body,
            r#"{"url":"http://127.0.0.1:2","state":"Forced-Open"}"#
        );
        let table = app.reloader.current();
        let a = table.get("a").unwrap();
        for _ in 0..4 {
            assert_eq!(
                a.selector
                    .pick(
                        &a.backends,
                        a.selector.ticket(),
                        &[],
                        &PickPolicy::default()
                    )
                    .unwrap()
                    .index,
                0
            );
        }
        let (status, body) = app
            .answer("POST", "/backends/127.0.0.1:2/close", None)
            .await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains(r#""state":"Closed""#), "{body}");
        assert_eq!(
            app.answer("POST", "/backends/127.0.0.1:2/reset", None)
                .await
                .0,
            StatusCode::OK
        );
        for path in [
            "/backends/127.0.0.1:9/open",
            "/backends/127.0.0.1:2/explode",
            "/backends/open",
        ] {
            assert_eq!(
                app.answer("POST", path, None).await.0,
                StatusCode::NOT_FOUND,
                "{path}"
            );
        }
        assert_eq!(
            app.answer("GET", "/backends/127.0.0.1:2/open", None)
                .await
                .0,
            StatusCode::METHOD_NOT_ALLOWED
        );
    }

    #[tokio::test]
    async fn metrics_cover_every_backend_with_its_breaker_and_counters() {
        let app = app();
        let table = app.reloader.current();
        let a = table.get("a").unwrap();
        trip(&a.backends[1].breaker);
        assert!(a.backends[1].breaker.try_acquire().is_none());
        a.backends[0].stats.record(
            crate::telemetry::metrics::AttemptOutcome::Success,
            std::time::Duration::from_millis(3),
        );
        let (status, body) = app.answer("GET", "/metrics", None).await;
        assert_eq!(status, StatusCode::OK);
        let b1 = r#"service="a",backend="http://127.0.0.1:1""#;
        let b2 = r#"service="a",backend="http://127.0.0.1:2""#;
        for line in [
            "# TYPE gateway_upstream_attempts_total counter".to_owned(),
            format!(r#"gateway_upstream_attempts_total{{{b1},outcome="success"}} 1"#),
            format!(r#"gateway_upstream_attempts_total{{{b1},outcome="timeout"}} 0"#),
            "# TYPE gateway_upstream_attempt_duration_seconds histogram".to_owned(),
            format!(r#"gateway_upstream_attempt_duration_seconds_bucket{{{b1},le="0.0025"}} 0"#),
            format!(r#"gateway_upstream_attempt_duration_seconds_bucket{{{b1},le="0.005"}} 1"#),
            format!(r#"gateway_upstream_attempt_duration_seconds_bucket{{{b1},le="+Inf"}} 1"#),
            format!("gateway_upstream_attempt_duration_seconds_sum{{{b1}}} 0.003"),
            format!("gateway_upstream_attempt_duration_seconds_count{{{b1}}} 1"),
            format!(r#"gateway_breaker_state{{{b1},state="closed"}} 1"#),
            format!(r#"gateway_breaker_state{{{b2},state="closed"}} 0"#),
            format!(r#"gateway_breaker_state{{{b2},state="open"}} 1"#),
            format!("gateway_breaker_rejections_total{{{b2}}} 1"),
            format!(r#"gateway_breaker_transitions_total{{{b2},from="closed",to="open"}} 1"#),
            format!(r#"gateway_breaker_transitions_total{{{b1},from="closed",to="open"}} 0"#),
            r#"gateway_breaker_consecutive_failures{service="b",backend="http://127.0.0.1:3"} 0"#
                .to_owned(),
            r#"gateway_service_requests_total{service="a"} 0"#.to_owned(),
            r#"gateway_service_all_open_total{service="b"} 0"#.to_owned(),
            r#"gateway_service_no_backends_total{service="b"} 0"#.to_owned(),
            "# TYPE gateway_service_backends gauge".to_owned(),
            r#"gateway_service_backends{service="a"} 2"#.to_owned(),
            "gateway_not_found_total 0".to_owned(),
            "gateway_config_reload_failed 0".to_owned(),
        ] {
            assert!(body.lines().any(|l| l == line), "no line {line} in\n{body}");
        }
        assert!(
            !body.contains(r#"to="forced_open""#),
            "manual transitions only once they happen"
        );
    }

    #[tokio::test]
    async fn health_readiness_and_errors() {
        let app = app();
        assert_eq!(app.answer("GET", "/healthz", None).await.0, StatusCode::OK);
        assert_eq!(app.answer("GET", "/readyz", None).await.0, StatusCode::OK);
        assert_eq!(
            app.answer("POST", "/status", None).await.0,
            StatusCode::METHOD_NOT_ALLOWED
        );
        assert_eq!(
            app.answer("GET", "/v1/proxy/a", None).await.0,
            StatusCode::NOT_FOUND
        );
    }
}
