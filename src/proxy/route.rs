//! Checking and routing a request head: the strict head checks, the service its path names
//! (or the prefix it falls under), its rate limits, the path its backend will receive, the body limit by
//! `Content-Length`, and the `Expect` the gateway answers itself.

use std::borrow::Cow;
use std::sync::Arc;

use http::header;
use pingora_proxy::Session;

use super::{GatewayProxy, RequestContext};
use crate::edge::head::{check_head, HeadRejection};
use crate::rate_limit::RateLimited;
use crate::reply::ErrorReply;
use crate::routing::{self, PathRefusal, RouteError};
use crate::telemetry::metrics::ServiceEvent;

impl GatewayProxy {
    /// Checks the request head and routes it: on success the context holds the service; else
    /// the reply to send. Counts what it refuses.
    pub(super) fn route(
        &self,
        session: &Session,
        ctx: &mut RequestContext,
    ) -> std::result::Result<(), ErrorReply> {
        let request = session.req_header();
        if let Some(h1) = session.as_downstream().as_http1() {
            check_head(
                &h1.get_headers_raw_bytes(),
                request.headers.len(),
                &self.settings.header_limits,
            )
            .map_err(|rejection| match rejection {
                HeadRejection::Ambiguous(detail) => ErrorReply::ambiguous_request(detail),
                HeadRejection::TooLarge(detail) => ErrorReply::header_too_large(detail),
                HeadRejection::UriTooLong => ErrorReply::uri_too_long(),
                HeadRejection::UnsupportedCoding => ErrorReply::unsupported_transfer_coding(),
            })?;
        }
        let path = request.uri.path();
        // One load per request: the request keeps its service even if a reload swaps the table.
        let services = self.services.load();
        // `/v1/proxy/{service}[/rest]`, or a path under a prefix a service claims (forwarded
        // whole, and never out of that prefix).
        let (service, rest, within) = match routing::parse_proxy_path(path) {
            Ok(route) => match services.get(route.service) {
                Some(service) => (service, route.rest, ""),
                None => {
                    self.stats.count_not_found();
                    return Err(ErrorReply::unknown_service(route.service));
                }
            },
            Err(RouteError::NotAProxyPath) => match services.by_prefix(path) {
                Some((prefix, service)) => (service, path, prefix),
                None => {
                    self.stats.count_not_found();
                    return Err(ErrorReply::not_a_proxy_path());
                }
            },
            Err(RouteError::MissingService) => {
                self.stats.count_not_found();
                return Err(ErrorReply::missing_service());
            }
        };
        if !service.rate_limits.is_empty() {
            let client = session
                .client_addr()
                .and_then(|addr| addr.as_inet())
                .map(|addr| addr.ip());
            if let Err((which, after)) = service.rate_limits.admit(client) {
                service.stats.count(match which {
                    RateLimited::Service => ServiceEvent::RateLimited,
                    RateLimited::Client => ServiceEvent::ClientRateLimited,
                });
                return Err(ErrorReply::rate_limited(&service.name, which, after));
            }
        }
        ctx.resolved_rest = match routing::forwarded_path(rest, service.escaped_slashes, within) {
            Ok(Cow::Borrowed(_)) => None,
            Ok(Cow::Owned(resolved)) => Some(resolved),
            Err(PathRefusal::ClimbsAboveRoot) => {
                return Err(ErrorReply::path_climbs_above_service())
            }
            Err(PathRefusal::EscapedSlash) => return Err(ErrorReply::escaped_slash()),
        };
        let declared_length = request
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if declared_length.is_some_and(|length| length > service.max_body.0) {
            return Err(ErrorReply::body_too_large(service.max_body.0));
        }
        service.stats.count(ServiceEvent::Request);
        ctx.rest_start = path.len() - rest.len();
        // Counted from the request's arrival, which the context noted when it was made.
        ctx.deadline = Some(ctx.started + service.timeouts.total);
        ctx.service = Some(Arc::clone(service));
        Ok(())
    }
}

/// Takes the request's `Expect`, which the gateway answers itself rather than forwarding:
/// whether the client waits for `100 Continue` (an HTTP/1.1 request with a body), or 417 for
/// any other expectation. An HTTP/1.0 client's expectation is ignored (RFC 9110 §10.1.1).
pub(super) fn take_expectation(session: &mut Session) -> std::result::Result<bool, ErrorReply> {
    let request = session.req_header();
    let Some(expect) = request.headers.get(header::EXPECT) else {
        return Ok(false);
    };
    // HTTP/1.0 clients do not wait for a 100 (RFC 9110 §10.1.1); HTTP/1.1 and HTTP/2 ones do.
    let waits_for_100 = request.version >= http::Version::HTTP_11;
    if waits_for_100 && !expect.as_bytes().eq_ignore_ascii_case(b"100-continue") {
        return Err(ErrorReply::expectation_failed());
    }
    session.req_header_mut().remove_header(&header::EXPECT);
    Ok(waits_for_100 && !session.as_downstream_mut().is_body_empty())
}
