//! Observing a request that has ended: its access-log record.

use pingora_proxy::Session;

use super::RequestContext;
use crate::telemetry::access_log::AccessRecord;

/// What the access log says of a request that has ended.
pub(super) fn access_record(session: &Session, ctx: &RequestContext) -> AccessRecord {
    let request = session.req_header();
    AccessRecord {
        request_id: ctx.request_id.to_string(),
        client: session
            .client_addr()
            .and_then(|addr| addr.as_inet())
            .map(|addr| addr.ip()),
        method: request.method.to_string(),
        path: loggable_path(request.uri.path()),
        service: ctx.service.as_ref().map(|s| s.name.clone()),
        backend: ctx.last_backend().map(|backend| backend.url.clone()),
        status: session
            .response_written()
            .map_or(0, |response| response.status.as_u16()),
        attempts: ctx.attempts,
        upstream: ctx.upstream_started.map(|at| at.elapsed()),
        total: ctx.started.elapsed(),
        bytes_in: session.body_bytes_read() as u64,
        bytes_out: session.body_bytes_sent() as u64,
        not_replayed: ctx.not_replayed,
    }
}

/// A client's path, fit for a log line: at most 100 characters, control characters escaped.
pub(super) fn loggable_path(path: &str) -> String {
    let mut out: String = path
        .chars()
        .take(100)
        .flat_map(char::escape_debug)
        .collect();
    if path.chars().nth(100).is_some() {
        out.push_str("...");
    }
    out
}
