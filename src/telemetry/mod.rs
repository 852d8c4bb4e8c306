//! What the gateway tells operators: [`metrics`] (atomic counters kept next to what they count,
//! rendered by the admin listener's `/metrics`), [`logs`] (the `[CIRCUIT]` lines of the
//! original design, or JSON events, and logging's set-up) and the [`access_log`], one line per
//! request, written off the request path.

pub mod access_log;
pub(crate) mod logs;
pub mod metrics;
