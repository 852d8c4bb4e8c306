//! Responses the gateway makes up itself: every one is a small JSON object,
//! `{"error": "<code>", "detail": "<sentence>"}`, plus fields specific to the error.

use std::fmt::Write as _;
use std::time::Duration;

use bytes::Bytes;
use http::header;
use pingora::http::ResponseHeader;
use pingora::Result;
use pingora_proxy::Session;

use crate::json::json_string;
use crate::routing::Service;

/// A gateway-generated response: status, JSON body and optional `Retry-After`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorReply {
    /// The HTTP status.
    pub status: u16,
    /// The JSON body.
    pub body: String,
    /// Whole seconds for the `Retry-After` header.
    pub retry_after_secs: Option<u64>,
}

impl ErrorReply {
    fn new(status: u16, error: &str, detail: &str) -> Self {
        Self {
            status,
            body: format!(
                "{{\"error\":{},\"detail\":{}}}",
                json_string(error),
                json_string(detail)
            ),
            retry_after_secs: None,
        }
    }

    /// 404: the path is not `/v1/proxy/{service}[/...]`.
    pub fn not_a_proxy_path() -> Self {
        Self::new(
            404,
            "not_found",
            "no route for this path; requests go to /v1/proxy/{service}/...",
        )
    }

    /// 404: `/v1/proxy/` names no service.
    pub fn missing_service() -> Self {
        Self::new(
            404,
            "not_found",
            "the path names no service; requests go to /v1/proxy/{service}/...",
        )
    }

    /// 404: no service has this name.
    pub fn unknown_service(name: &str) -> Self {
        Self::new(
            404,
            "unknown_service",
            &format!("no service named \"{name}\" is configured"),
        )
    }

    /// 503: every backend of the service is Open (or Half-Open with its probe out).
    /// The body lists each backend's state; `Retry-After` is the wait, rounded up, until the
    /// first backend admits a request again (at least 1 s).
    pub fn all_open(service: &Service) -> Self {
        let mut backends = String::new();
        for (upstream, breaker) in service.upstreams.iter().zip(service.selector.breakers()) {
            let snapshot = breaker.snapshot();
            if !backends.is_empty() {
                backends.push(',');
            }
            let _ = write!(
                backends,
                "{{\"url\":{},\"state\":{},\"retry_in_ms\":{}}}",
                json_string(&upstream.url),
                json_string(&snapshot.state.to_string()),
                snapshot.retry_in.as_millis()
            );
        }
        let retry_after_secs = whole_seconds_at_least_one(service.selector.retry_after());
        let detail = format!(
            "every backend of service \"{}\" is unavailable; retry in {retry_after_secs} s",
            service.name
        );
        Self {
            status: 503,
            body: format!(
                "{{\"error\":\"no_available_backend\",\"detail\":{},\"service\":{},\
                 \"retry_after_seconds\":{retry_after_secs},\"backends\":[{backends}]}}",
                json_string(&detail),
                json_string(&service.name),
            ),
            retry_after_secs: Some(retry_after_secs),
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

    /// Writes the reply to the client.
    pub async fn send(self, session: &mut Session) -> Result<()> {
        let mut header = ResponseHeader::build(self.status, Some(4))?;
        header.insert_header(header::CONTENT_TYPE, "application/json")?;
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
    fn unknown_service_names_are_escaped_in_the_body() {
        let reply = ErrorReply::unknown_service("x\"y");
        assert_eq!(reply.status, 404);
        assert_eq!(
            reply.body,
            "{\"error\":\"unknown_service\",\"detail\":\"no service named \\\"x\\\"y\\\" is configured\"}"
        );
    }

    #[test]
    fn other_statuses_get_their_reason() {
        assert_eq!(
            ErrorReply::other(500).body,
            "{\"error\":\"internal_server_error\",\"detail\":\"Internal Server Error\"}"
        );
    }
}
