//! The path router, the request-head checks and the chunked-body check on arbitrary bytes: no
//! panic; a routed service segment is never empty and never holds a `/`; a forwarded path,
//! under every `escaped_slashes` policy, never leaves its prefix, even as a backend that
//! decodes escaped slashes reads it; the chunked check gives the same answer however its input
//! is split.
#![no_main]

use gateway::edge::chunked::{ChunkedCheck, Framing};
use gateway::config::HeaderLimits;
use gateway::edge::head::check_head;
use gateway::routing::{
    backend_reading, forwarded_path, parse_proxy_path, upstream_path_and_query, EscapedSlashes,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = check_head(data, data.len() / 8, &HeaderLimits::default());
    let whole = ChunkedCheck::default().feed(data);
    let split = data.first().map_or(0, |&b| usize::from(b)).min(data.len());
    let mut check = ChunkedCheck::default();
    let in_two = match check.feed(&data[..split]) {
        Framing::Incomplete => match check.feed(&data[split..]) {
            Framing::Complete(at) => Framing::Complete(split + at),
            other => other,
        },
        decided => decided,
    };
    assert_eq!(whole, in_two);
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (path, query) = match text.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (text, None),
    };
    if let Ok(route) = parse_proxy_path(path) {
        assert!(!route.service.is_empty() && !route.service.contains('/'));
        assert!(route.rest.is_empty() || route.rest.starts_with('/'));
        let target = upstream_path_and_query("/prefix", route.rest, query);
        assert!(target.starts_with("/prefix"));
    }
    if !path.is_empty() && !path.starts_with('/') {
        return;
    }
    for within in ["", "/p/"] {
        for policy in [EscapedSlashes::Reject, EscapedSlashes::Decode, EscapedSlashes::Keep] {
            if let Ok(forwarded) = forwarded_path(path, policy, within) {
                assert!(forwarded.starts_with(within));
                let reading = backend_reading(&forwarded).expect("a forwarded path never climbs");
                assert!(reading.starts_with(within), "{path:?} {policy:?}: {reading:?}");
            }
        }
    }
});
