//! Responses the gateway makes up itself: every one is a small JSON object,
//! `{"error": "<code>", "detail": "<sentence>"}`, plus fields specific to the error, with the
//! request's id in `X-Request-Id`. None names a backend's address or an internal detail: the
//! logs have those, under the same request id.

use std::time::Duration;

use bytes::Bytes;
use http::header;
use pingora::http::ResponseHeader;
use pingora::Result;
use pingora_proxy::Session;
use serde_json::{json, Value};

use crate::config::is_service_name_byte;
use crate::load::Overflow;
use crate::rate_limit::RateLimited;
use crate::selector::RoundRobin;
use crate::service::Service;

use crate::request_id::RequestId;

/// The longest client-sent service name echoed in a 404's detail.
const MAX_ECHOED_NAME: usize = 64;

/// A gateway-generated response: status, JSON body and optional `Retry-After`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ErrorReply {
    /// The HTTP status.
    pub status: u16,
    /// The JSON body.
    pub body: String,
    /// The body's sentence, alone: a gRPC client gets it as `grpc-message`.
    pub detail: String,
    /// Whole seconds for the `Retry-After` header.
    pub retry_after_secs: Option<u64>,
}

impl ErrorReply {
    fn new(status: u16, error: &str, detail: &str) -> Self {
        Self {
            status,
            body: json!({"error": error, "detail": detail}).to_string(),
            detail: detail.to_owned(),
            retry_after_secs: None,
        }
    }

    /// 404: the path is not `/v1/proxy/{service}[/...]`.
    pub(crate) fn not_a_proxy_path() -> Self {
        Self::new(
            404,
            "not_found",
            "no route for this path; requests go to /v1/proxy/{service}/...",
        )
    }

    /// 404: `/v1/proxy/` names no service.
    pub(crate) fn missing_service() -> Self {
        Self::new(
            404,
            "not_found",
            "the path names no service; requests go to /v1/proxy/{service}/...",
        )
    }

    /// 404: no service has this name. The name is echoed only when it could be a service
    /// name at all: short, and of URL-safe characters.
    pub fn unknown_service(name: &str) -> Self {
        let detail = if name.len() <= MAX_ECHOED_NAME && name.bytes().all(is_service_name_byte) {
            format!("no service named \"{name}\" is configured")
        } else {
            "the path names no configured service".to_owned()
        };
        Self::new(404, "unknown_service", &detail)
    }

    /// 400: the request's framing could be read two ways (see `edge::head`).
    pub(crate) fn ambiguous_request(detail: &str) -> Self {
        Self::new(400, "bad_request", detail)
    }

    /// 400: a `..` in the path would climb above the service's root.
    pub(crate) fn path_climbs_above_service() -> Self {
        Self::new(
            400,
            "bad_request",
            "a \"..\" segment in the path climbs above the service",
        )
    }

    /// 400: the path holds a slash spelled `%2F`, `%5C` or `\`, which the service refuses
    /// (`escaped_slashes: reject`, the default).
    pub(crate) fn escaped_slash() -> Self {
        Self::new(
            400,
            "escaped_slash",
            "the path holds an escaped slash (%2F, %5C or \\), which this service refuses",
        )
    }

    /// 414: the request line alone is over the head size limit.
    pub(crate) fn uri_too_long() -> Self {
        Self::new(
            414,
            "uri_too_long",
            "the request target is longer than the gateway accepts",
        )
    }

    /// 501: the request body has a transfer coding the gateway does not decode.
    pub(crate) fn unsupported_transfer_coding() -> Self {
        Self::new(
            501,
            "not_implemented",
            "only \"Transfer-Encoding: chunked\" is supported on requests",
        )
    }

    /// 417: an `Expect` other than `100-continue`.
    pub fn expectation_failed() -> Self {
        Self::new(
            417,
            "expectation_failed",
            "only \"Expect: 100-continue\" is supported",
        )
    }

    /// 431: the request head is over the configured limits.
    pub(crate) fn header_too_large(detail: &str) -> Self {
        Self::new(431, "request_header_fields_too_large", detail)
    }

    /// 413: the request body is over the service's limit of `limit` bytes.
    pub(crate) fn body_too_large(limit: u64) -> Self {
        Self::new(
            413,
            "payload_too_large",
            &format!("the request body is over this service's limit of {limit} bytes"),
        )
    }

    /// 503: every backend of the service is Open (or Half-Open with its probe out).
    /// The body lists each backend's state by its place in the service's list (never its
    /// address); `Retry-After` is the wait, rounded up, until the first backend admits a
    /// request again (at least 1 s).
    pub fn all_open(service: &Service) -> Self {
        let backends: Vec<Value> = service
            .backends
            .iter()
            .enumerate()
            .map(|(index, backend)| {
                let snapshot = backend.breaker.snapshot();
                json!({
                    "index": index,
                    "state": snapshot.state.to_string(),
                    "retry_in_ms": u64::try_from(snapshot.retry_in.as_millis()).unwrap_or(u64::MAX),
                })
            })
            .collect();
        let retry_after_secs =
            whole_seconds_at_least_one(RoundRobin::retry_after(&service.backends));
        let detail = format!(
            "every backend of service \"{}\" is unavailable; retry in {retry_after_secs} s",
            service.name
        );
        Self {
            status: 503,
            body: json!({
                "error": "no_available_backend",
                "detail": detail,
                "service": service.name,
                "retry_after_seconds": retry_after_secs,
                "backends": backends,
            })
            .to_string(),
            detail,
            retry_after_secs: Some(retry_after_secs),
        }
    }

    /// 503: the service has no backends at all: DNS discovery has not found an address for
    /// it yet. `Retry-After: 1`: discovery keeps looking.
    pub fn no_backends(service: &str) -> Self {
        Self {
            retry_after_secs: Some(1),
            ..Self::new(
                503,
                "no_backends",
                &format!(
                    "service \"{service}\" has no backends yet: DNS discovery has found no \
                     address for it"
                ),
            )
        }
    }

    /// 503: every backend that could take the request is at its concurrency limit, and the
    /// service's waiting room was full (or it has none) or the wait ran out (`why`).
    /// `Retry-After: 1`: slots free as fast as the backends answer.
    pub(crate) fn overloaded(service: &Service, why: Overflow) -> Self {
        let why = match why {
            Overflow::QueueFull if service.load.queue.size == 0 => "and it queues no requests",
            Overflow::QueueFull => "and its queue is full",
            Overflow::TimedOut => "and no slot freed within its queue_timeout",
        };
        Self {
            retry_after_secs: Some(1),
            ..Self::new(
                503,
                "overloaded",
                &format!(
                    "every backend of service \"{}\" has as many requests as it may take, \
                     {why}; retry shortly",
                    service.name
                ),
            )
        }
    }

    /// 429: the request is over the service's rate limit, or its client's. `Retry-After` is
    /// when the limit's window would admit it, rounded up (at least 1 s).
    pub(crate) fn rate_limited(service: &str, which: RateLimited, after: Duration) -> Self {
        let whose = match which {
            RateLimited::Service => format!("service \"{service}\" is over its rate limit"),
            RateLimited::Client => {
                format!("this client is over its rate limit for service \"{service}\"")
            }
        };
        let retry_after_secs = whole_seconds_at_least_one(after);
        Self {
            retry_after_secs: Some(retry_after_secs),
            ..Self::new(
                429,
                "rate_limited",
                &format!("{whose}; retry in {retry_after_secs} s"),
            )
        }
    }

    /// 502: no backend could take the request.
    pub fn bad_gateway(service: &str) -> Self {
        Self::new(
            502,
            "bad_gateway",
            &format!("no backend of service \"{service}\" could take the request"),
        )
    }

    /// 504: the backend did not answer in time.
    pub fn gateway_timeout(service: &str) -> Self {
        Self::new(
            504,
            "gateway_timeout",
            &format!("the backend of service \"{service}\" did not answer in time"),
        )
    }

    /// 400: the client's request could not be read or was malformed.
    pub fn bad_request() -> Self {
        Self::new(400, "bad_request", "the request could not be read")
    }

    /// Any other status the gateway has to answer with.
    pub fn other(status: u16) -> Self {
        let reason = http::StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("error");
        let code = reason.to_ascii_lowercase().replace(' ', "_");
        Self::new(status, &code, reason)
    }

    /// What Pingora answers itself, before the gateway sees the request: 400 for a head it
    /// cannot parse, 405 for `CONNECT`, anything else by its reason.
    pub(crate) fn unreadable_request(status: u16) -> Self {
        match status {
            400 => Self::new(400, "bad_request", "the request head could not be parsed"),
            405 => Self::new(
                405,
                "method_not_allowed",
                "CONNECT is not served: the gateway is not a forward proxy",
            ),
            other => Self::other(other),
        }
    }

    /// 503: the listener serves as many connections as it may.
    pub fn too_many_connections() -> Self {
        Self::new(
            503,
            "too_many_connections",
            "the gateway serves as many connections as it may; retry shortly",
        )
    }

    /// The reply as a whole HTTP/1.1 response that closes the connection, for answers written
    /// straight to a connection before Pingora has a session for it.
    pub(crate) fn to_http1(&self, request_id: RequestId) -> Vec<u8> {
        let reason = http::StatusCode::from_u16(self.status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("Error");
        format!(
            "HTTP/1.1 {} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
             Cache-Control: no-store\r\nX-Request-Id: {request_id}\r\nConnection: close\r\n\r\n{}",
            self.status,
            self.body.len(),
            self.body
        )
        .into_bytes()
    }

    /// Whether the connection must close after this reply: the request's framing was not
    /// trusted, or its body was not read.
    pub(crate) fn closes_connection(&self) -> bool {
        matches!(self.status, 400 | 413 | 414 | 417 | 431 | 501)
    }

    /// The gRPC status a gRPC client gets for this reply (the gRPC spec's mapping of HTTP
    /// statuses, with the gateway's own cases): 14 UNAVAILABLE when no backend could take the
    /// call, 4 DEADLINE_EXCEEDED for timeouts, 5 NOT_FOUND for an unknown service, 8
    /// RESOURCE_EXHAUSTED for limits, 3 INVALID_ARGUMENT for a bad request.
    pub(crate) fn grpc_status(&self) -> u8 {
        match self.status {
            502 | 503 => 14,
            504 => 4,
            404 => 5,
            413 | 414 | 431 | 429 => 8,
            400 | 417 => 3,
            501 => 12,
            _ => 13,
        }
    }

    /// Writes the reply to the client, naming the request by `request_id`: JSON, or for a gRPC
    /// request (`content-type: application/grpc...`) a gRPC error in the trailers-only form:
    /// HTTP 200, `content-type: application/grpc`, `grpc-status` and `grpc-message` in the one
    /// header block, which ends the stream; gRPC clients read it as the call's status.
    /// Over HTTP/1 the names go out in title case (`X-Request-Id`), `preserve_header_case` or
    /// not: the gateway's own reply has no spelling to keep.
    pub async fn send(self, session: &mut Session, request_id: RequestId) -> Result<()> {
        if is_grpc(session.req_header()) {
            let mut header = ResponseHeader::build_no_case(200, Some(5))?;
            header.insert_header(header::CONTENT_TYPE, "application/grpc")?;
            header.insert_header("grpc-status", self.grpc_status().to_string())?;
            header.insert_header("grpc-message", grpc_message(&self.detail))?;
            header.insert_header("x-request-id", request_id.to_string())?;
            if !session.as_downstream().is_http2() {
                header.insert_header(header::CONTENT_LENGTH, 0)?;
            }
            return session
                .as_downstream_mut()
                .write_response_header_end(Box::new(header), true)
                .await;
        }
        let mut header = ResponseHeader::build_no_case(self.status, Some(5))?;
        header.insert_header(header::CONTENT_TYPE, "application/json")?;
        header.insert_header("x-request-id", request_id.to_string())?;
        header.insert_header(header::CONTENT_LENGTH, self.body.len())?;
        header.insert_header(header::CACHE_CONTROL, "no-store")?;
        if let Some(secs) = self.retry_after_secs {
            header.insert_header(header::RETRY_AFTER, secs)?;
        }
        session
            .write_response_header(Box::new(header), false)
            .await?;
        session
            .write_response_body(Some(Bytes::from(self.body)), true)
            .await
    }
}

/// Whether `request` is a gRPC call: its content type is `application/grpc` or a `+`/`;`
/// variant of it.
pub fn is_grpc(request: &pingora::http::RequestHeader) -> bool {
    request
        .headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|value| {
            let value = value.as_bytes();
            value.len() >= 16
                && value[..16].eq_ignore_ascii_case(b"application/grpc")
                && matches!(value.get(16), None | Some(b'+' | b';'))
        })
}

/// `text` as a `grpc-message` value: percent-encoded outside printable ASCII, and `%` itself.
fn grpc_message(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if (0x20..0x7f).contains(&byte) && byte != b'%' {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// `d` in whole seconds, rounded up, and never 0: a client told to retry after 0 s would spin.
fn whole_seconds_at_least_one(d: Duration) -> u64 {
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    secs.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(whole_seconds_at_least_one(Duration::ZERO), 1);
        assert_eq!(whole_seconds_at_least_one(Duration::from_millis(200)), 1);
        assert_eq!(whole_seconds_at_least_one(Duration::from_secs(2)), 2);
        assert_eq!(whole_seconds_at_least_one(Duration::from_millis(2001)), 3);
    }

    #[test]
    fn unknown_service_names_are_echoed_only_when_plausible() {
        let reply = ErrorReply::unknown_service("cart-2");
        assert_eq!(reply.status, 404);
        assert_eq!(
            reply.body,
            "{\"error\":\"unknown_service\",\"detail\":\"no service named \\\"cart-2\\\" is configured\"}"
        );
        for hostile in ["x\"y", "a\u{1}b", "%2e%2e", &"a".repeat(65)] {
            assert_eq!(
                ErrorReply::unknown_service(hostile).body,
                "{\"error\":\"unknown_service\",\"detail\":\"the path names no configured service\"}",
                "{hostile}"
            );
        }
    }

    #[test]
    fn grpc_requests_are_recognised_and_messages_encoded() {
        let request = |content_type: &str| {
            let mut r = pingora::http::RequestHeader::build("POST", b"/a.B/C", None).unwrap();
            r.insert_header("content-type", content_type).unwrap();
            r
        };
        for grpc in [
            "application/grpc",
            "application/grpc+proto",
            "Application/GRPC;x=1",
        ] {
            assert!(is_grpc(&request(grpc)), "{grpc}");
        }
        for other in [
            "application/grpc-web",
            "application/json",
            "application/grp",
        ] {
            assert!(!is_grpc(&request(other)), "{other}");
        }
        assert_eq!(
            grpc_message("50% \"off\"\n\u{e9}"),
            "50%25 \"off\"%0A%C3%A9"
        );
        assert_eq!(ErrorReply::bad_gateway("s").grpc_status(), 14);
        assert_eq!(ErrorReply::gateway_timeout("s").grpc_status(), 4);
        assert_eq!(ErrorReply::unknown_service("s").grpc_status(), 5);
        assert_eq!(ErrorReply::body_too_large(1).grpc_status(), 8);
    }

    #[test]
    fn other_statuses_get_their_reason() {
        assert_eq!(
            ErrorReply::other(500).body,
            "{\"error\":\"internal_server_error\",\"detail\":\"Internal Server Error\"}"
        );
    }
}
