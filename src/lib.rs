//! An HTTP gateway on Pingora: `/v1/proxy/{service}` goes round-robin over the service's
//! backends, and every backend is guarded by its own circuit breaker.
//!
//! Where things live, in the order a request travels (accepted, checked, routed, picked,
//! forwarded, settled, observed) after start-up. Dependencies point down this list, never up;
//! `tests/layering.rs` reads every module's `crate::` imports and fails if one points up.
//! - [`cli`]: start-up; Pingora's flags and the order of things.
//! - [`admin`]: the admin listener: health, readiness, breaker status, metrics, overrides,
//!   reload.
//! - [`proxy`]: the Pingora `ProxyHttp` hooks: routing, picking, forwarding and settling each
//!   request.
//! - [`edge`]: a client connection and its request heads, under Pingora: the connection cap,
//!   the head deadline, head checks, the chunked-body check.
//! - [`reply`]: the gateway's own JSON answers.
//! - `health_checks`: active health checks of every backend, in the background.
//! - [`live`]: the live routing table, its hot reload and DNS discovery.
//! - [`certificates`]: the certificates the TLS listener serves, by SNI, swapped by reloads.
//! - [`service`]: the table of services and their backends, each with its breaker.
//! - [`health`]: a backend's health as its active checks report it.
//! - `telemetry`: metrics and logs.
//! - [`config`]: the YAML files, validated and resolved once.
//! - [`resolver`]: host name resolution behind a seam.
//! - [`selector`]: breaker-aware round-robin over one service's backends, filtered by their
//!   concurrency limits too, or latency-aware when a service asks.
//! - [`load`]: each backend's requests in flight, its concurrency limit (fixed or adaptive)
//!   and latency, and a service's waiting room for requests that find every backend full.
//! - [`rate_limit`]: requests per second per service and per client address.
//! - `retry_budget`: how many failovers a service may make.
//! - [`breaker`]: the per-backend state machine (pure: no HTTP, no I/O, injected clock).
//! - [`failure_rate`]: a breaker's sliding window of recent failures (lock-free).
//! - [`clock`]: monotonic time behind a trait, real or moved by hand.
//! - [`routing`]: `/v1/proxy/{service}` paths and the path a backend receives (pure).
//! - `request_id`: request ids.
//! - [`allocator`]: the heap allocator the binary installs (mimalloc, plain blocks when the
//!   alignment allows).
//!
//! What the integration tests, benches, fuzz targets and `main` use is public, and documented
//! (`missing_docs` warns, and CI's clippy turns warnings into errors). Everything else is
//! `pub(crate)`, including the four modules listed above without a link.

#![warn(missing_docs)]

pub mod cli;

pub mod admin;
pub mod proxy;

pub mod edge;
pub mod reply;

pub(crate) mod health_checks;
pub mod live;

pub mod certificates;
pub mod service;

pub mod health;
pub(crate) mod telemetry;

pub mod config;
pub mod resolver;

pub mod selector;

pub mod load;
pub mod rate_limit;

pub(crate) mod retry_budget;

pub mod breaker;
pub mod failure_rate;

pub mod clock;

pub mod routing;

pub(crate) mod request_id;

pub mod allocator;
