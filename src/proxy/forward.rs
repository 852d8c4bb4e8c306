//! On the way to a backend: the peer an attempt connects to (address, TLS, HTTP version,
//! timeouts) and the headers the gateway adds to or drops from the forwarded request.

use std::net::IpAddr;
use std::time::Duration;

use http::header;
use pingora::http::{RequestHeader, StaticHeaderName, UnmappedValue};
use pingora::prelude::*;
use pingora_proxy::Session;

use super::{is_tls, GatewayProxy, RequestContext};
use crate::config::UpstreamProtocol;
use crate::routing;
use crate::service::{Backend, Service};

// The names of the fields the gateway writes on every forwarded request, parsed once.
static X_REQUEST_ID: StaticHeaderName = StaticHeaderName::new("x-request-id");
static X_FORWARDED_HOST: StaticHeaderName = StaticHeaderName::new("x-forwarded-host");
static X_FORWARDED_FOR: StaticHeaderName = StaticHeaderName::new("x-forwarded-for");
static X_FORWARDED_PROTO: StaticHeaderName = StaticHeaderName::new("x-forwarded-proto");
static FORWARDED: StaticHeaderName = StaticHeaderName::new("forwarded");

/// The fields the gateway writes on every forwarded request, replacing any the client sent.
/// They are appended outside the request's header map (`append_unmapped_header`): written
/// after its fields on the HTTP/1 wire, added to the map's copy for an HTTP/2 backend. Five
/// inserts into the map cost more than the rest of the rewrite (a hash, a probe and a value's
/// allocation each, and titling each name again on the way out).
static OWN_FIELDS: [&StaticHeaderName; 5] = [
    &X_REQUEST_ID,
    &X_FORWARDED_HOST,
    &X_FORWARDED_FOR,
    &X_FORWARDED_PROTO,
    &FORWARDED,
];

impl GatewayProxy {
    /// Makes `upstream_request` (a copy of the client's request head) the request `backend`
    /// gets: its path under the backend's prefix, `Host`, `X-Request-Id`, the forwarded
    /// headers, no `Expect`, no underscored names unless allowed.
    pub(super) fn rewrite_request(
        &self,
        session: &Session,
        ctx: &RequestContext,
        backend: &Backend,
        upstream_request: &mut RequestHeader,
    ) -> Result<()> {
        let original = session.req_header();
        let rest = match &ctx.resolved_rest {
            Some(resolved) => resolved.as_str(),
            None => original.uri.path().get(ctx.rest_start..).unwrap_or(""),
        };
        let target =
            routing::upstream_path_and_query(&backend.path_prefix, rest, original.uri.query());
        let uri = http::Uri::try_from(target)
            .or_err(InvalidHTTPHeader, "building the backend's request path")?;
        let forwarded_host = original.headers.get(header::HOST);
        let client_ip = session
            .client_addr()
            .and_then(|addr| addr.as_inet())
            .map(|addr| addr.ip());
        // The client's own lists are looked up only when they are kept.
        let incoming = |name: &StaticHeaderName| {
            if self.settings.trust_forwarded_for {
                original.headers.get(name.name())
            } else {
                None
            }
        };
        let proto = if is_tls(session) { "https" } else { "http" };
        // One look at the names the client sent: any underscored (unless allowed), any of the
        // gateway's own fields (replaced), an `Expect` (dropped).
        let check_underscores = !self.settings.underscores_in_headers;
        let (mut underscored, mut carries_own, mut expects) = (false, false, false);
        for name in upstream_request.headers.keys() {
            underscored |= check_underscores && has_underscore(name);
            carries_own |= OWN_FIELDS.iter().any(|own| own.name() == name);
            expects |= name == header::EXPECT;
        }

        upstream_request.set_uri(uri);
        upstream_request.insert_header(header::HOST, backend.authority.clone())?;
        if carries_own {
            for own in OWN_FIELDS {
                upstream_request.remove_header(own.name());
            }
        }
        if expects {
            upstream_request.remove_header(&header::EXPECT);
        }
        if underscored {
            drop_underscored_names(upstream_request);
        }
        // The gateway's own fields, outside the header map (see `OWN_FIELDS`); the lists are
        // written straight into the buffer they are kept in.
        upstream_request.append_unmapped_header(&X_REQUEST_ID, &ctx.request_id.hex())?;
        if let Some(host) = forwarded_host {
            upstream_request.append_unmapped_header(&X_FORWARDED_HOST, host.as_bytes())?;
        }
        if let Some(ip) = client_ip {
            upstream_request.append_unmapped_header_with(&X_FORWARDED_FOR, |value| {
                push_trusted_list(value, incoming(&X_FORWARDED_FOR));
                push_ip(value, ip);
            })?;
        }
        upstream_request.append_unmapped_header(&X_FORWARDED_PROTO, proto.as_bytes())?;
        upstream_request.append_unmapped_header_with(&FORWARDED, |value| {
            push_trusted_list(value, incoming(&FORWARDED));
            push_forwarded_element(value, client_ip, forwarded_host, proto);
        })?;
        Ok(())
    }
}

/// Where a forwarded value is written: the unmapped field's own buffer (a `String` in tests).
trait ValueText {
    fn put(&mut self, bytes: &[u8]);
}

impl ValueText for UnmappedValue<'_> {
    fn put(&mut self, bytes: &[u8]) {
        self.push(bytes);
    }
}

/// Writes the start of a forwarded list: the client's `incoming` list (when it is trusted and
/// text) and ", "; the gateway's own element goes after it.
fn push_trusted_list(out: &mut impl ValueText, incoming: Option<&http::HeaderValue>) {
    if let Some(incoming) = incoming.filter(|value| value.to_str().is_ok()) {
        out.put(incoming.as_bytes());
        out.put(b", ");
    }
}

/// Writes `ip` as `Display` writes it; an IPv4 address (the usual case, on every forwarded
/// request) without the formatting machinery.
fn push_ip(out: &mut impl ValueText, ip: IpAddr) {
    match ip {
        IpAddr::V4(ip) => {
            let mut text = [0u8; 15];
            let mut len = 0;
            let mut digit = |d: u8| {
                text[len] = d;
                len += 1;
            };
            for (i, octet) in ip.octets().into_iter().enumerate() {
                if i > 0 {
                    digit(b'.');
                }
                if octet >= 100 {
                    digit(b'0' + octet / 100);
                }
                if octet >= 10 {
                    digit(b'0' + octet / 10 % 10);
                }
                digit(b'0' + octet % 10);
            }
            out.put(&text[..len]);
        }
        IpAddr::V6(ip) => out.put(ip.to_string().as_bytes()),
    }
}

/// Writes the gateway's `Forwarded` element (RFC 7239): the client's address, the `Host` it
/// asked for (quoted) and the protocol.
fn push_forwarded_element(
    out: &mut impl ValueText,
    client: Option<IpAddr>,
    host: Option<&http::HeaderValue>,
    proto: &str,
) {
    match client {
        Some(ip @ IpAddr::V4(_)) => {
            out.put(b"for=");
            push_ip(out, ip);
        }
        Some(ip @ IpAddr::V6(_)) => {
            out.put(b"for=\"[");
            push_ip(out, ip);
            out.put(b"]\"");
        }
        None => out.put(b"for=unknown"),
    }
    if let Some(host) = host.filter(|host| host.to_str().is_ok()) {
        let host = host.as_bytes();
        out.put(b";host=\"");
        // A byte loop: a `Host` is a few bytes, too short for `memchr`'s setup to pay.
        if host.iter().any(|b| matches!(b, b'"' | b'\\')) {
            for b in host {
                if matches!(b, b'"' | b'\\') {
                    out.put(b"\\");
                }
                out.put(std::slice::from_ref(b));
            }
        } else {
            out.put(host);
        }
        out.put(b"\"");
    }
    out.put(b";proto=");
    out.put(proto.as_bytes());
}

/// Removes the header fields whose names contain `_`, which CGI-style backends cannot tell
/// from the same name with `-` (`X_Forwarded_For` would read as `X-Forwarded-For`).
fn drop_underscored_names(request: &mut RequestHeader) {
    let underscored: Vec<http::HeaderName> = request
        .headers
        .keys()
        .filter(|name| has_underscore(name))
        .cloned()
        .collect();
    for name in underscored {
        request.remove_header(&name);
    }
}

/// Whether `name` has a `_` (see `drop_underscored_names`).
fn has_underscore(name: &http::HeaderName) -> bool {
    name.as_str().as_bytes().contains(&b'_')
}

/// A peer for one attempt at `backend`, with the service's timeouts cut to `remaining`, what
/// is left of the request's total timeout.
///
/// It sets no read timeout: reads are bounded by `upstream_response_timeouts` instead (the
/// whole response header once the request is sent, each body read, the total deadline), so a
/// client slowly sending its body does not count against the backend's header time.
///
/// An `https` backend is reached over TLS with its URL's host as the SNI and the name its
/// certificate is verified for (against the service's `tls_ca_file`, or the system's roots),
/// with the service's client certificate if it has one. A failed handshake or verification is
/// a connect failure, as a refused connection is.
///
/// A `protocol: http2` service speaks HTTP/2 to its backends (h2c with prior knowledge on
/// `http://`, ALPN on `https://`), many streams per connection, except for an upgrade request
/// (a WebSocket), which needs HTTP/1.1.
///
/// An HTTP/1 response head keeps the spelling of its names only with `preserve_header_case`;
/// else they reach the client in title case.
pub(super) fn upstream_peer(
    backend: &Backend,
    service: &Service,
    remaining: Duration,
    upgrade: bool,
    preserve_header_case: bool,
) -> HttpPeer {
    let timeouts = &service.timeouts;
    let mut peer = match &backend.tls_host {
        None => HttpPeer::new(&backend.address, false, String::new()),
        Some(host) => {
            let mut peer = HttpPeer::new(&backend.address, true, host.clone());
            service.tls.configure(&mut peer);
            peer
        }
    };
    peer.options.connection_timeout = Some(timeouts.connect.min(remaining));
    peer.options.write_timeout = Some(timeouts.read.min(remaining));
    peer.options.h1_discard_header_case = !preserve_header_case;
    if service.protocol == UpstreamProtocol::Http2 && !upgrade {
        peer.options.set_http_version(2, 2);
        peer.options.max_h2_streams = MAX_H2_STREAMS_PER_CONNECTION;
    }
    peer
}

/// How many concurrent streams the gateway opens on one HTTP/2 connection to a backend before
/// it opens another.
pub(super) const MAX_H2_STREAMS_PER_CONNECTION: usize = 100;

/// Tells a client that waits for it to send its body, and from then on keeps the backend's
/// own 1xx answers (but `101`) from it. Pingora would close a connection whose response (a 1xx
/// included) starts before its request body has been read; for the interim 100 that is
/// wrong, so it is sent with that rule off.
pub(super) async fn send_continue(session: &mut Session) -> Result<()> {
    let downstream = session.as_downstream_mut();
    downstream.set_close_on_response_before_downstream_finish(false);
    let sent = downstream.write_continue_response().await;
    downstream.set_close_on_response_before_downstream_finish(true);
    downstream.set_ignore_info_resp(true);
    sent
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;

    #[test]
    fn addresses_are_written_as_display_writes_them() {
        for ip in [
            IpAddr::V4(Ipv4Addr::new(0, 9, 10, 99)),
            IpAddr::V4(Ipv4Addr::new(100, 199, 200, 255)),
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(Ipv6Addr::LOCALHOST),
            IpAddr::V6(Ipv4Addr::new(10, 1, 2, 3).to_ipv6_mapped()),
        ] {
            let mut written = String::from("x");
            push_ip(&mut written, ip);
            assert_eq!(written, format!("x{ip}"));
        }
    }

    impl ValueText for String {
        fn put(&mut self, bytes: &[u8]) {
            self.push_str(std::str::from_utf8(bytes).expect("forwarded values are text"));
        }
    }

    #[test]
    fn forwarded_lists_keep_the_clients_list_given_and_end_with_the_gateways_element() {
        let incoming = http::HeaderValue::from_static("for=192.0.2.1");
        let host = http::HeaderValue::from_static("a\"b");
        let ip = Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)));
        let element = |incoming, client, host, proto| {
            let mut list = String::new();
            push_trusted_list(&mut list, incoming);
            push_forwarded_element(&mut list, client, host, proto);
            list
        };
        assert_eq!(
            element(Some(&incoming), ip, Some(&host), "http"),
            r#"for=192.0.2.1, for=127.0.0.1;host="a\"b";proto=http"#
        );
        let plain = http::HeaderValue::from_static("gw.test:8080");
        assert_eq!(
            element(None, ip, Some(&plain), "http"),
            r#"for=127.0.0.1;host="gw.test:8080";proto=http"#
        );
        assert_eq!(
            element(None, Some(IpAddr::V6(Ipv6Addr::LOCALHOST)), None, "https"),
            r#"for="[::1]";proto=https"#
        );
        assert_eq!(element(None, None, None, "http"), "for=unknown;proto=http");
        // A list that is not text is not kept.
        let binary = http::HeaderValue::from_bytes(b"for=\xff").unwrap();
        assert_eq!(
            element(Some(&binary), None, None, "http"),
            "for=unknown;proto=http"
        );
    }
}
