//! An HTTP gateway on Pingora: `/v1/proxy/{service}` goes round-robin over the service's
//! backends, and every backend is guarded by its own circuit breaker.
//!
//! Where things live (dependencies point down this list, never up):
//! - [`cli`]: start-up; Pingora's flags and the order of things.
//! - [`proxy`]: the Pingora `ProxyHttp` hooks.
//! - [`connection_guard`]: under Pingora: the connection cap, the request-head deadline, the
//!   chunked-body check.
//! - [`chunked`]: a strict, incremental check of chunked framing.
//! - [`request_checks`]: strict checks on request heads (smuggling, header limits).
//! - [`admin`]: the admin listener: health, readiness, breaker status, metrics, overrides,
//!   reload.
//! - [`reload`]: the live routing table and its hot reload.
//! - [`discovery`]: DNS discovery of backends, re-resolved in the background.
//! - [`routing`]: `/v1/proxy/{service}` paths and the table of services.
//! - [`metrics`]: per-backend and per-service counters, and the Prometheus text writer.
//! - [`config`]: the YAML files, validated and resolved once.
//! - [`resolver`]: host name resolution behind a seam.
//! - [`selector`]: breaker-aware round-robin over one service's backends.
//! - [`retry_budget`]: how many failovers a service may make.
//! - [`breaker`]: the per-backend state machine (pure: no HTTP, no I/O, injected clock).
//! - [`observability`]: the `[CIRCUIT]` log lines, or JSON events.
//! - [`json`]: JSON string escaping.

pub mod admin;
pub mod breaker;
pub mod cli;
pub mod clock;
pub mod config;
pub mod discovery;
pub mod edge;
pub mod json;
pub mod metrics;
pub mod observability;
pub mod proxy;
pub mod reload;
pub mod reply;
pub mod request_id;
pub mod resolver;
pub mod retry_budget;
pub mod routing;
pub mod selector;
