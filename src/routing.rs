//! Routing: which service a request path names, and the path its backend receives.
//!
//! `/v1/proxy/{service}` and `/v1/proxy/{service}/{rest}` name a service; everything after the
//! service segment is forwarded under the chosen backend's own path prefix. The service
//! segment is compared byte for byte with the configured names, which are limited to URL-safe
//! characters: percent-encoding is not decoded, so `%2F` or `%2E%2E` can never name a service.
//!
//! The rest of the path is forwarded with its dot segments resolved (RFC 3986 §5.2.4,
//! percent-encoded ones such as `%2e%2e` too), so a backend that resolves `..` itself can never
//! be led above its configured prefix; a `..` that would climb above the rest's root is refused.

use std::borrow::Cow;

/// The path every proxied request starts with.
pub(crate) const PROXY_PREFIX: &str = "/v1/proxy/";

/// A request path split into the service it names and what follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyPath<'a> {
    /// The service segment.
    pub service: &'a str,
    /// The rest of the path: empty, or starting with `/`.
    pub rest: &'a str,
}

/// Why a path names no service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteError {
    /// The path is not under `/v1/proxy/`.
    NotAProxyPath,
    /// `/v1/proxy/` with nothing after it.
    MissingService,
}

/// Splits `/v1/proxy/{service}[/{rest}]` (the path only, without the query).
pub fn parse_proxy_path(path: &str) -> Result<ProxyPath<'_>, RouteError> {
    let after = path
        .strip_prefix(PROXY_PREFIX)
        .ok_or(RouteError::NotAProxyPath)?;
    let end = after.find('/').unwrap_or(after.len());
    let (service, rest) = after.split_at(end);
    if service.is_empty() {
        return Err(RouteError::MissingService);
    }
    Ok(ProxyPath { service, rest })
}

/// A `..` segment that would climb above the root of the forwarded path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClimbsAboveRoot;

/// `rest` (empty, or starting with `/`) with its `.` and `..` segments resolved, plain or
/// percent-encoded; borrowed when it has none. A trailing dot segment leaves a trailing `/`.
pub fn resolve_dot_segments(rest: &str) -> Result<Cow<'_, str>, ClimbsAboveRoot> {
    let maybe_dots = rest.contains("/.") || rest.contains("%2e") || rest.contains("%2E");
    if !maybe_dots || !rest.split('/').any(|s| dot_segment(s).is_some()) {
        return Ok(Cow::Borrowed(rest));
    }
    let mut kept: Vec<&str> = Vec::new();
    let mut ends_in_directory = false;
    for segment in rest.split('/').skip(1) {
        ends_in_directory = true;
        match dot_segment(segment) {
            Some(DotSegment::Current) => {}
            Some(DotSegment::Parent) => {
                kept.pop().ok_or(ClimbsAboveRoot)?;
            }
            None => {
                kept.push(segment);
                ends_in_directory = false;
            }
        }
    }
    let mut resolved = String::with_capacity(rest.len());
    for segment in kept {
        resolved.push('/');
        resolved.push_str(segment);
    }
    if ends_in_directory || resolved.is_empty() {
        resolved.push('/');
    }
    Ok(Cow::Owned(resolved))
}

enum DotSegment {
    Current,
    Parent,
}

/// Whether `segment` is `.` or `..`, with any dot percent-encoded as `%2e` or `%2E`.
fn dot_segment(segment: &str) -> Option<DotSegment> {
    let mut dots = 0;
    let mut bytes = segment.as_bytes();
    while !bytes.is_empty() {
        bytes = if let Some(after) = bytes.strip_prefix(b".") {
            after
        } else if bytes.len() >= 3 && bytes[..3].eq_ignore_ascii_case(b"%2e") {
            &bytes[3..]
        } else {
            return None;
        };
        dots += 1;
    }
    match dots {
        1 => Some(DotSegment::Current),
        2 => Some(DotSegment::Parent),
        _ => None,
    }
}

/// The path and query a backend receives: its prefix, then `rest`, then the original query.
pub fn upstream_path_and_query(prefix: &str, rest: &str, query: Option<&str>) -> String {
    let mut target =
        String::with_capacity(prefix.len() + rest.len() + query.map_or(0, |q| q.len() + 1) + 1);
    target.push_str(prefix);
    target.push_str(rest);
    if target.is_empty() {
        target.push('/');
    }
    if let Some(query) = query {
        target.push('?');
        target.push_str(query);
    }
    target
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_paths_split_into_service_and_rest() {
        let ok = |path, service, rest| {
            assert_eq!(
                parse_proxy_path(path),
                Ok(ProxyPath { service, rest }),
                "{path}"
            )
        };
        ok("/v1/proxy/product", "product", "");
        ok("/v1/proxy/product/", "product", "/");
        ok("/v1/proxy/product/a/b", "product", "/a/b");
        ok("/v1/proxy/a%2Fb/c", "a%2Fb", "/c");
        for path in [
            "/",
            "/v1/proxy",
            "/v1/proxyproduct",
            "/v2/proxy/product",
            "",
        ] {
            assert_eq!(
                parse_proxy_path(path),
                Err(RouteError::NotAProxyPath),
                "{path}"
            );
        }
        assert_eq!(
            parse_proxy_path("/v1/proxy/"),
            Err(RouteError::MissingService)
        );
        assert_eq!(
            parse_proxy_path("/v1/proxy//x"),
            Err(RouteError::MissingService)
        );
    }

    #[test]
    fn dot_segments_are_resolved_under_the_root() {
        let resolved = |rest| resolve_dot_segments(rest).map(Cow::into_owned);
        for (rest, expected) in [
            ("", ""),
            ("/", "/"),
            ("/a/b", "/a/b"),
            ("/a/./b", "/a/b"),
            ("/a/../b", "/b"),
            ("/a/b/..", "/a/"),
            ("/a/.", "/a/"),
            ("/a/..", "/"),
            ("/a/%2e%2e/b", "/b"),
            ("/a/.%2E/b", "/b"),
            ("/a/%2E/b", "/a/b"),
            ("/a/.../b", "/a/.../b"),
            ("/a/..b/c", "/a/..b/c"),
            ("/a%2eb/c", "/a%2eb/c"),
            ("/a//../b", "/a/b"),
        ] {
            assert_eq!(resolved(rest).as_deref(), Ok(expected), "{rest}");
        }
        for rest in [
            "/..",
            "/../echo",
            "/a/../../echo",
            "/%2e%2e/echo",
            "/a/%2E%2e/..",
        ] {
            assert_eq!(resolved(rest), Err(ClimbsAboveRoot), "{rest}");
        }
        // Nothing to resolve, even where a dot could have been: borrowed, no allocation.
        for rest in ["/a/b", "/a/.b", "/a/b%2e", "/a/%2Ex/"] {
            assert!(
                matches!(resolve_dot_segments(rest), Ok(Cow::Borrowed(_))),
                "{rest}"
            );
        }
    }

    #[test]
    fn upstream_paths_keep_prefix_rest_and_query() {
        assert_eq!(upstream_path_and_query("", "", None), "/");
        assert_eq!(upstream_path_and_query("", "/", None), "/");
        assert_eq!(upstream_path_and_query("", "/a/b", Some("x=1")), "/a/b?x=1");
        assert_eq!(upstream_path_and_query("/api", "", None), "/api");
        assert_eq!(
            upstream_path_and_query("/api", "/items", Some("q=a&b")),
            "/api/items?q=a&b"
        );
        assert_eq!(upstream_path_and_query("", "", Some("")), "/?");
    }
}
