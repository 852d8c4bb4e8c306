//! What the gateway tells operators: [`metrics`] (atomic counters kept next to what they count,
//! rendered by the admin listener's `/metrics`) and [`logs`] (the `[CIRCUIT]` lines of the
//! original design, or JSON events, and logging's set-up).

pub mod logs;
pub mod metrics;
