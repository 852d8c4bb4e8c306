//! Backend URLs (`http://host:port[/path]`, `https://...`) and the addresses their hosts
//! resolve to.

use std::net::SocketAddr;

use super::BackendTarget;
use crate::resolver::Resolver;

/// Parses `http://host:port[/path]` or `https://host:port[/path]`.
pub(super) fn parse_target(url: &str) -> Result<BackendTarget, String> {
    let not_http = || format!("backend \"{url}\" is not an http(s)://host:port[/path] URL");
    let scheme_end = url.find("://").ok_or_else(not_http)?;
    let scheme = &url[..scheme_end];
    let tls = scheme.eq_ignore_ascii_case("https");
    if !tls && !scheme.eq_ignore_ascii_case("http") {
        return Err(not_http());
    }
    let rest = &url[scheme_end + 3..];
    if rest
        .bytes()
        .any(|b| !b.is_ascii_graphic() || matches!(b, b'?' | b'#' | b'@'))
    {
        return Err(format!(
            "backend \"{url}\" may not contain spaces, non-ASCII characters, a query, a \
             fragment or user info"
        ));
    }
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let (host, port) = split_host_port(authority).ok_or_else(not_http)?;
    let port: u16 = port
        .parse()
        .ok()
        .filter(|&p| p != 0)
        .ok_or_else(|| format!("backend \"{url}\" has an invalid port \"{port}\""))?;
    let path_prefix = path.trim_end_matches('/');
    Ok(BackendTarget {
        written: url.to_owned(),
        tls,
        url: format!("{}://{authority}{path_prefix}", scheme.to_ascii_lowercase()),
        host: host.to_owned(),
        port,
        authority: http::HeaderValue::from_str(authority).map_err(|_| not_http())?,
        path_prefix: path_prefix.to_owned(),
        concurrency_limit: None,
    })
}

/// Splits `host:port` or `[v6]:port`; the host comes back without brackets.
pub(super) fn split_host_port(authority: &str) -> Option<(&str, &str)> {
    let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
        let (host, after) = bracketed.split_once(']')?;
        (host, after.strip_prefix(':')?)
    } else {
        let (host, port) = authority.rsplit_once(':')?;
        let host_ok = host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
        (host_ok.then_some(host)?, port)
    };
    (!host.is_empty() && !port.is_empty()).then_some((host, port))
}

/// The addresses of `target`'s host: its IPv4 ones, or its IPv6 ones if it has none; never
/// empty.
pub(super) fn addresses(
    resolver: &dyn Resolver,
    target: &BackendTarget,
) -> Result<Vec<SocketAddr>, String> {
    let (url, host) = (&target.written, &target.host);
    let all = resolver
        .resolve(host, target.port)
        .map_err(|e| format!("backend \"{url}\": cannot resolve host \"{host}\": {e}"))?;
    let (v4, v6): (Vec<SocketAddr>, Vec<SocketAddr>) = all.into_iter().partition(|a| a.is_ipv4());
    let addrs = if v4.is_empty() { v6 } else { v4 };
    if addrs.is_empty() {
        return Err(format!(
            "backend \"{url}\": host \"{host}\" resolves to no address"
        ));
    }
    Ok(addrs)
}
