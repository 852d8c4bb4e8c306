//! Routing: which service a request path names, and the path its backend receives.
//!
//! `/v1/proxy/{service}` and `/v1/proxy/{service}/{rest}` name a service; everything after the
//! service segment is forwarded under the chosen backend's own path prefix. The service
//! segment is compared byte for byte with the configured names, which are limited to URL-safe
//! characters: percent-encoding is not decoded, so `%2F` or `%2E%2E` can never name a service.
//!
//! The forwarded path is checked and rewritten in [`forwarded_path`], so that however it is
//! spelled it cannot lead a backend above its prefix:
//! - Its dot segments are resolved (RFC 3986 §5.2.4, percent-encoded ones such as `%2e%2e`
//!   too); a `..` that would climb above the forwarded path's root is refused.
//! - A slash spelled otherwise (`%2F`, `%5C` in any case, or a raw `\`, which WHATWG URL
//!   parsers and many servers take for `/`) is refused by default, decoded to `/` before the
//!   dot segments are resolved, or kept as it is: the service's [`EscapedSlashes`].
//! - Whatever is forwarded is then read as a backend that decodes those slashes once and takes
//!   `..;x` for `..` (Tomcat's path parameters) would read it; if that reading climbs above
//!   the root, the path is refused too. So a kept `..%2f` is forwarded only where it cannot
//!   climb. A backend that decodes twice (`%252F`) is not modelled, as nginx does not.

use std::borrow::Cow;

use serde::Deserialize;

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

/// What a service does with a slash spelled other than `/` in the path it forwards: `%2F`,
/// `%5C` (any case) or a raw `\` (`escaped_slashes` in the services file).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EscapedSlashes {
    /// Refuse the request with a `400` (the default): decoding would change what a backend
    /// that keeps `%2F` as data (an id holding a slash) receives, and keeping it lets a
    /// backend that decodes route where the gateway did not look. Refusing is loud and safe.
    #[default]
    Reject,
    /// Decode each to `/`, then resolve the dot segments (nginx's behaviour).
    Decode,
    /// Forward them as they are, for backends that take `%2F` as data; refused still when a
    /// backend that decodes them would climb above its prefix.
    Keep,
}

/// Why a path is not forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathRefusal {
    /// A `..`, however spelled, climbs above the forwarded path's root (or out of the prefix
    /// that routed it).
    ClimbsAboveRoot,
    /// An escaped slash, under [`EscapedSlashes::Reject`].
    EscapedSlash,
}

impl From<ClimbsAboveRoot> for PathRefusal {
    fn from(_: ClimbsAboveRoot) -> Self {
        Self::ClimbsAboveRoot
    }
}

/// `path` (empty, or starting with `/`) as it is forwarded under `policy`: dot segments
/// resolved, escaped slashes refused, decoded or kept; borrowed when nothing changes. Refused
/// when it, or a decoding backend's reading of it ([`backend_reading`]), does not start with
/// `within` (the prefix that routed the request; empty for `/v1/proxy/{service}` routes).
pub fn forwarded_path<'a>(
    path: &'a str,
    policy: EscapedSlashes,
    within: &str,
) -> Result<Cow<'a, str>, PathRefusal> {
    let escaped = has_escaped_slash(path);
    let resolved = match (escaped, policy) {
        (true, EscapedSlashes::Reject) => return Err(PathRefusal::EscapedSlash),
        (true, EscapedSlashes::Decode) => {
            Cow::Owned(resolve_dot_segments(&decode_slashes(path))?.into_owned())
        }
        (false, _) | (true, EscapedSlashes::Keep) => resolve_dot_segments(path)?,
    };
    if !resolved.starts_with(within) {
        return Err(PathRefusal::ClimbsAboveRoot);
    }
    // Only a kept escaped slash or a `;` can make a backend read the path otherwise.
    if resolved.contains(['%', '\\', ';']) && !backend_reading(&resolved)?.starts_with(within) {
        return Err(PathRefusal::ClimbsAboveRoot);
    }
    Ok(resolved)
}

/// `path` as a lenient backend reads it: `%2F`, `%5C` and `\` decoded to `/` once, then dot
/// segments resolved, `%2e` taken for `.` and a segment's `;` parameters ignored when telling
/// whether it is one (`..;x` is `..` to Tomcat).
pub fn backend_reading(path: &str) -> Result<String, ClimbsAboveRoot> {
    let decoded = decode_slashes(path);
    let mut kept: Vec<&str> = Vec::new();
    let mut ends_in_directory = false;
    for segment in decoded.split('/').skip(1) {
        let bare = segment.split(';').next().unwrap_or(segment);
        ends_in_directory = true;
        match dot_segment(bare) {
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
    let mut reading: String = kept.iter().map(|segment| format!("/{segment}")).collect();
    if ends_in_directory {
        reading.push('/');
    }
    Ok(reading)
}

/// Whether `path` holds `%2F`, `%5C` (any case) or `\`.
fn has_escaped_slash(path: &str) -> bool {
    let bytes = path.as_bytes();
    bytes.iter().enumerate().any(|(at, &b)| {
        b == b'\\'
            || (b == b'%'
                && matches!(
                    bytes.get(at + 1..at + 3),
                    Some([b'2', b'f' | b'F'] | [b'5', b'c' | b'C'])
                ))
    })
}

/// `path` with `%2F`, `%5C` (any case) and `\` each made a `/`.
fn decode_slashes(path: &str) -> String {
    let mut decoded = String::with_capacity(path.len());
    let mut rest = path;
    while let Some(at) = rest.find(['%', '\\']) {
        decoded.push_str(&rest[..at]);
        let escape = rest.as_bytes().get(at + 1..at + 3);
        let width = match escape {
            _ if rest.as_bytes()[at] == b'\\' => 1,
            Some([b'2', b'f' | b'F'] | [b'5', b'c' | b'C']) => 3,
            _ => {
                decoded.push('%');
                rest = &rest[at + 1..];
                continue;
            }
        };
        decoded.push('/');
        rest = &rest[at + width..];
    }
    decoded.push_str(rest);
    decoded
}

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
    fn escaped_slashes_are_refused_by_default() {
        for path in [
            "/a/..%2f..%2f../echo",
            "/a%2Fb",
            "/a%5cb",
            "/a%5C..",
            "/a\\b",
            "/files/x%2fy",
        ] {
            assert_eq!(
                forwarded_path(path, EscapedSlashes::Reject, ""),
                Err(PathRefusal::EscapedSlash),
                "{path}"
            );
        }
        // Not a slash: other escapes, a lone `%`, `%2` at the end.
        for path in ["/a%20b", "/a%2", "/a%", "/100%25/x", "/a%2eb"] {
            assert_eq!(
                forwarded_path(path, EscapedSlashes::Reject, "").as_deref(),
                Ok(path),
                "{path}"
            );
        }
    }

    #[test]
    fn decoded_slashes_are_resolved_like_plain_ones() {
        let decoded = |path| forwarded_path(path, EscapedSlashes::Decode, "");
        assert_eq!(decoded("/a/b%2fc").as_deref(), Ok("/a/b/c"));
        assert_eq!(decoded("/a/b%2F..%2fc").as_deref(), Ok("/a/c"));
        assert_eq!(decoded("/a\\b%5Cc").as_deref(), Ok("/a/b/c"));
        assert_eq!(decoded("/a/%2e%2e%2fb").as_deref(), Ok("/b"));
        assert_eq!(decoded("/a%20b%2").as_deref(), Ok("/a%20b%2"));
        for path in [
            "/a/..%2f..%2f../echo",
            "/..%2fx",
            "/a%5c..%5c..",
            "/a\\..\\..\\x",
        ] {
            assert_eq!(decoded(path), Err(PathRefusal::ClimbsAboveRoot), "{path}");
        }
    }

    #[test]
    fn kept_slashes_are_forwarded_only_where_a_decoding_backend_stays_under_the_root() {
        let kept = |path| forwarded_path(path, EscapedSlashes::Keep, "");
        assert_eq!(kept("/files/a%2Fb").as_deref(), Ok("/files/a%2Fb"));
        assert_eq!(kept("/a/b%2f..%2fc").as_deref(), Ok("/a/b%2f..%2fc"));
        assert_eq!(kept("/a/b/../c%2fd").as_deref(), Ok("/a/c%2fd"));
        for path in [
            "/a/..%2f..%2f../echo",
            "/..%2fx",
            "/a%5C..%5C..",
            "/a\\..\\..",
            "/a/%2e%2e%2f%2e%2e",
        ] {
            assert_eq!(kept(path), Err(PathRefusal::ClimbsAboveRoot), "{path}");
        }
    }

    #[test]
    fn path_parameters_on_dot_segments_cannot_climb_in_any_mode() {
        for policy in [
            EscapedSlashes::Reject,
            EscapedSlashes::Decode,
            EscapedSlashes::Keep,
        ] {
            let forwarded = |path| forwarded_path(path, policy, "");
            assert_eq!(forwarded("/..;/admin"), Err(PathRefusal::ClimbsAboveRoot));
            assert_eq!(
                forwarded("/a/..;x/..;y/b"),
                Err(PathRefusal::ClimbsAboveRoot)
            );
            assert_eq!(
                forwarded("/a/..;/b").as_deref(),
                Ok("/a/..;/b"),
                "stays under"
            );
            assert_eq!(forwarded("/a;v=1/b").as_deref(), Ok("/a;v=1/b"));
        }
    }

    #[test]
    fn a_prefix_route_never_leaves_its_prefix() {
        let within = |path, policy| forwarded_path(path, policy, "/pkg.Svc/");
        assert_eq!(
            within("/pkg.Svc/Call", EscapedSlashes::Reject).as_deref(),
            Ok("/pkg.Svc/Call")
        );
        assert_eq!(
            within("/pkg.Svc/a/../Call", EscapedSlashes::Reject).as_deref(),
            Ok("/pkg.Svc/Call")
        );
        for (path, policy) in [
            ("/pkg.Svc/../admin", EscapedSlashes::Reject),
            ("/pkg.Svc/%2e%2e/admin", EscapedSlashes::Reject),
            ("/pkg.Svc/..;/admin", EscapedSlashes::Reject),
            ("/pkg.Svc/..%2fadmin", EscapedSlashes::Decode),
            ("/pkg.Svc/..%2fadmin", EscapedSlashes::Keep),
            ("/pkg.Svc/..", EscapedSlashes::Keep),
        ] {
            assert_eq!(
                within(path, policy),
                Err(PathRefusal::ClimbsAboveRoot),
                "{path} {policy:?}"
            );
        }
    }

    #[test]
    fn a_backend_reads_escaped_slashes_and_path_parameters_leniently() {
        assert_eq!(
            backend_reading("/a/b%2Fc%5cd\\e").as_deref(),
            Ok("/a/b/c/d/e")
        );
        assert_eq!(backend_reading("/a/b;x/..;y/c").as_deref(), Ok("/a/c"));
        assert_eq!(backend_reading("/a/b/..").as_deref(), Ok("/a/"));
        assert_eq!(backend_reading("/a/..%2F..%2f"), Err(ClimbsAboveRoot));
        assert_eq!(backend_reading("").as_deref(), Ok(""));
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
