//! The access log: one line per request (`gateway.access_log: text | json`, off by default),
//! with its time, request id, client, method, path (cut to 100 characters), service, backend,
//! status, attempts, upstream and total time, and bytes in and out.
//!
//! Written off the request path: the `logging` hook hands a small record to a bounded channel
//! (`try_send`, never waiting), and a thread of its own formats the line and writes it through
//! `log` (target `gateway::access`; in the JSON log format an `"event":"access"` object). When
//! the writer falls behind by more than [`QUEUE`] records, records are dropped and counted, and
//! the count is logged with the next line that gets through, rather than slowing requests.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TryRecvError, TrySendError};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use crate::config::LogFormat;
use crate::telemetry::logs::EVENT_TARGET;

/// How many records may wait for the writer.
const QUEUE: usize = 16 * 1024;

/// How long the writer sleeps when it finds the queue empty: at most this late, a line.
const WRITER_NAP: Duration = Duration::from_millis(20);

/// One request, as the access log records it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct AccessRecord {
    /// The request's id, as sent in `X-Request-Id`.
    pub request_id: String,
    /// The client's address, when known.
    pub client: Option<IpAddr>,
    /// The request method.
    pub method: String,
    /// The path, cut to 100 characters, control characters escaped.
    pub path: String,
    /// The service it was routed to, if any.
    pub service: Option<String>,
    /// The backend of the last attempt, if any.
    pub backend: Option<String>,
    /// The status the client got.
    pub status: u16,
    /// Attempts at backends.
    pub attempts: u32,
    /// From the first pick of a backend to the end of the response, when one was picked.
    pub upstream: Option<Duration>,
    /// From the request's arrival to the end of the response.
    pub total: Duration,
    /// Request body bytes read from the client.
    pub bytes_in: u64,
    /// Response body bytes written to the client.
    pub bytes_out: u64,
    /// A retry was wanted but the request body was over the service's `replay_body_limit`.
    pub not_replayed: bool,
}

/// The handle the proxy logs through.
#[derive(Debug)]
pub(crate) struct AccessLog {
    queue: SyncSender<AccessRecord>,
    dropped: Arc<AtomicU64>,
}

impl AccessLog {
    /// Starts the writer thread for lines in `format`.
    pub fn start(format: LogFormat) -> Self {
        let (queue, records) = sync_channel::<AccessRecord>(QUEUE);
        let dropped = Arc::new(AtomicU64::new(0));
        let lost = Arc::clone(&dropped);
        std::thread::Builder::new()
            .name("access-log".to_owned())
            .spawn(move || loop {
                // Polled, not blocked on: a sender then never has a sleeping writer to wake,
                // which would cost the request path a futex call and a context switch per line.
                let record = match records.try_recv() {
                    Ok(record) => record,
                    Err(TryRecvError::Empty) => {
                        std::thread::sleep(WRITER_NAP);
                        continue;
                    }
                    Err(TryRecvError::Disconnected) => return,
                };
                let missed = lost.swap(0, Ordering::Relaxed);
                if missed > 0 {
                    log::warn!(
                        target: "gateway::access",
                        "access log: {missed} lines dropped (the writer fell behind)"
                    );
                }
                match format {
                    LogFormat::Text => {
                        log::info!(target: "gateway::access", "{}", text_line(&record))
                    }
                    LogFormat::Json => {
                        log::info!(target: EVENT_TARGET, "{}", json_line(&record))
                    }
                }
            })
            .expect("the access log's writer thread");
        Self { queue, dropped }
    }

    /// Hands `record` to the writer; never waits.
    pub fn record(&self, record: AccessRecord) {
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) =
            self.queue.try_send(record)
        {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn millis(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1000.0)
}

/// `<request id> <client> <method> <path> <service> <backend> <status> attempts=N
/// upstream_ms=X total_ms=Y in=B out=B`, `-` for what there is none of, then
/// ` not_replayed=body_over_limit` when a retry was refused for the body's size.
pub(crate) fn text_line(r: &AccessRecord) -> String {
    let mut line = String::with_capacity(160);
    let _ = write!(
        line,
        "{} {} {} {} {} {} {} attempts={} upstream_ms={} total_ms={} in={} out={}",
        r.request_id,
        r.client.map_or("-".to_owned(), |c| c.to_string()),
        r.method,
        r.path,
        r.service.as_deref().unwrap_or("-"),
        r.backend.as_deref().unwrap_or("-"),
        r.status,
        r.attempts,
        r.upstream.map_or("-".to_owned(), millis),
        millis(r.total),
        r.bytes_in,
        r.bytes_out
    );
    if r.not_replayed {
        line.push_str(" not_replayed=body_over_limit");
    }
    line
}

/// The record as the fields of a JSON event object (the log formatter adds `ts` and `level`).
pub(crate) fn json_line(r: &AccessRecord) -> String {
    // Milliseconds to the microsecond, as numbers.
    let ms = |d: Duration| (d.as_secs_f64() * 1_000_000.0).round() / 1000.0;
    json!({
        "event": "access",
        "request_id": r.request_id,
        "client": r.client.map(|c| c.to_string()),
        "method": r.method,
        "path": r.path,
        "service": r.service,
        "backend": r.backend,
        "status": r.status,
        "attempts": r.attempts,
        "upstream_ms": r.upstream.map(ms),
        "total_ms": ms(r.total),
        "bytes_in": r.bytes_in,
        "bytes_out": r.bytes_out,
        "not_replayed": r.not_replayed.then_some("body_over_limit"),
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> AccessRecord {
        AccessRecord {
            request_id: "3f1c9a0b27d4e851".to_owned(),
            client: Some("127.0.0.1".parse().unwrap()),
            method: "GET".to_owned(),
            path: "/v1/proxy/product/\\\"x".to_owned(),
            service: Some("product".to_owned()),
            backend: Some("http://localhost:9001".to_owned()),
            status: 200,
            attempts: 2,
            upstream: Some(Duration::from_micros(1500)),
            total: Duration::from_micros(1750),
            bytes_in: 0,
            bytes_out: 16,
            not_replayed: false,
        }
    }

    #[test]
    fn a_text_line_has_every_field_in_order() {
        assert_eq!(
            text_line(&record()),
            "3f1c9a0b27d4e851 127.0.0.1 GET /v1/proxy/product/\\\"x product http://localhost:9001 \
             200 attempts=2 upstream_ms=1.500 total_ms=1.750 in=0 out=16"
        );
        let unrouted = AccessRecord {
            service: None,
            backend: None,
            upstream: None,
            attempts: 0,
            status: 404,
            ..record()
        };
        assert!(text_line(&unrouted).contains(" - - 404 attempts=0 upstream_ms=- "));
    }

    #[test]
    fn a_json_line_escapes_and_nulls() {
        let line = json_line(&AccessRecord {
            backend: None,
            ..record()
        });
        assert!(
            line.starts_with(r#"{"event":"access","request_id":"3f1c9a0b27d4e851","#),
            "{line}"
        );
        assert!(
            line.contains(r#""path":"/v1/proxy/product/\\\"x""#),
            "{line}"
        );
        assert!(line.contains(r#""backend":null"#), "{line}");
        assert!(
            line.ends_with(r#""bytes_in":0,"bytes_out":16,"not_replayed":null}"#),
            "{line}"
        );
        let refused = json_line(&AccessRecord {
            not_replayed: true,
            ..record()
        });
        assert!(refused.ends_with(r#""not_replayed":"body_over_limit"}"#));
        let text = text_line(&AccessRecord {
            not_replayed: true,
            ..record()
        });
        assert!(
            text.ends_with(" out=16 not_replayed=body_over_limit"),
            "{text}"
        );
    }
}
