//! Property tests (proptest): the breaker, driven by random waits, requests and abandoned
//! requests, is always in the state the original design's state machine (a small model here)
//! says; the path router, the request-head checks and the services-file loader never panic on
//! arbitrary input; the head checks refuse a head built from random framing fields exactly when
//! a model of the rules, reading the fields rather than the bytes, does; routing never yields a
//! backend outside the service the path names; dot segments resolve as RFC 3986's
//! `remove_dot_segments` does, or are refused exactly when they would climb above the root; no
//! forwarded path, under any `escaped_slashes` policy, is read by a lenient backend (one that
//! decodes every escape once, takes `\` for `/` and drops `;` parameters) above its prefix, and
//! `decode` refuses nothing such a backend would read inside it; a
//! valid services file, random names and backends in either form, loads back exactly and routes
//! each service round-robin over its backends in file order; any other services file either
//! loads or gets an error naming the file and, when the problem is inside a service, that
//! service.
//!
//! Hosts are resolved by `IpLiteralResolver`: no DNS lookups, so every case is fast and the
//! same on every machine.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use gateway::breaker::{Breaker, BreakerSettings, BreakerState, IgnoreTransitions, Outcome};

use gateway::clock::ManualClock;
use gateway::config::{
    parse_services_with, ConfigError, HeaderLimits, ServiceConfig, ServiceDefaults,
};
use gateway::edge::head::{check_head, HeadRejection};
use gateway::resolver::IpLiteralResolver;
use gateway::routing::{
    forwarded_path, parse_proxy_path, resolve_dot_segments, upstream_path_and_query, EscapedSlashes,
};
use gateway::selector::PickPolicy;
use gateway::service::ServiceTable;
use proptest::prelude::*;

const SERVICES: &str = "\
a: [\"http://127.0.0.1:1\", \"http://127.0.0.1:2/api\"]
b: [\"http://127.0.0.2:1\"]
c.d-e_f~: [\"http://[::1]:3\"]
";

/// A services file's `text`, loaded with no DNS.
fn load(text: &str) -> Result<Vec<ServiceConfig>, ConfigError> {
    parse_services_with(
        Path::new("services.yaml"),
        text,
        &ServiceDefaults::default(),
        &IpLiteralResolver,
    )
}

/// The table from [`SERVICES`], and each service's backend URLs.
fn table() -> (ServiceTable, HashMap<String, Vec<String>>) {
    let services = load(SERVICES).unwrap();
    let urls = services
        .iter()
        .map(|s| {
            let urls = s.backends.iter().map(|b| b.url.clone()).collect();
            (s.name.clone(), urls)
        })
        .collect();
    let table = ServiceTable::build(
        &services,
        Arc::new(ManualClock::new()),
        Arc::new(IgnoreTransitions),
        None,
    );
    (table, urls)
}

/// Paths that look like proxy paths often, and anything at all sometimes.
fn paths() -> impl Strategy<Value = String> {
    prop_oneof![
        "\\PC*",
        "/v1/proxy/[a-z.~_%2FfEe/-]{0,12}(/[ -~]{0,16})?",
        "(/v1/proxy/)?(a|b|c.d-e_f~|\\.\\.|%2e%2e|)(/|%2F|\\.\\.)?[ -~]{0,8}",
    ]
}

/// RFC 3986 §5.2.4 `remove_dot_segments`, written as the RFC states it (an input buffer and an
/// output buffer), over a path whose encoded dots are decoded; also whether a `..` ever
/// found nothing left to remove (the path climbed above its root).
fn remove_dot_segments_model(path: &str) -> (String, bool) {
    let mut input = path.replace("%2e", ".").replace("%2E", ".");
    let mut output = String::new();
    let mut climbed = false;
    while !input.is_empty() {
        if input.starts_with("../") || input.starts_with("./") {
            input = input[input.find('/').unwrap() + 1..].to_owned();
        } else if input.starts_with("/./") || input == "/." {
            input = format!("/{}", &input[input.len().min(3)..]);
        } else if input.starts_with("/../") || input == "/.." {
            input = format!("/{}", &input[input.len().min(4)..]);
            match output.rfind('/') {
                Some(last) => output.truncate(last),
                None => climbed = true,
            }
        } else if input == "." || input == ".." {
            input.clear();
        } else {
            let start = usize::from(input.starts_with('/'));
            let end = input[start..].find('/').map_or(input.len(), |i| i + start);
            output.push_str(&input[..end]);
            input = input[end..].to_owned();
        }
    }
    (output, climbed)
}

/// How a lenient backend reads a path it receives: every `%XX` decoded once, `\` taken for
/// `/`, each segment's `;` parameters dropped, then dot segments removed as RFC 3986 says.
/// The reading, and whether it climbed above the root.
fn lenient_backend_model(path: &str) -> (String, bool) {
    let bytes = path.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        let hex = bytes
            .get(at + 1..at + 3)
            .and_then(|hex| std::str::from_utf8(hex).ok());
        match hex.and_then(|hex| u8::from_str_radix(hex, 16).ok()) {
            Some(byte) if bytes[at] == b'%' => {
                decoded.push(byte);
                at += 3;
            }
            _ => {
                decoded.push(bytes[at]);
                at += 1;
            }
        }
    }
    let decoded = String::from_utf8_lossy(&decoded).replace('\\', "/");
    let bare: Vec<&str> = decoded
        .split('/')
        .map(|segment| segment.split(';').next().unwrap_or(segment))
        .collect();
    remove_dot_segments_model(&bare.join("/"))
}

/// A path's segments, built from the spellings that matter to a backend's reading of it.
fn spelled_paths() -> impl Strategy<Value = String> {
    let atom = "a|\\.|%2e|%2E|%2f|%2F|%5c|%5C|\\\\|;|;x|%25|%252f|%20|%";
    proptest::collection::vec(proptest::collection::vec(atom, 0..4), 1..7).prop_map(|segments| {
        segments
            .iter()
            .map(|atoms| format!("/{}", atoms.concat()))
            .collect()
    })
}

/// Backend URLs: mostly valid, some near misses, some noise.
fn urls() -> impl Strategy<Value = String> {
    prop_oneof![
        "http://127\\.0\\.0\\.[0-9]{1,3}:[0-9]{1,5}(/[a-z]{0,4})?",
        "(https?|ftp|HTTP)://(\\[::1\\]|10\\.0\\.0\\.1|[a-z]{1,6})(:[0-9]{0,6})?(/[ -~]{0,6})?",
        "\\PC{0,20}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn routing_never_panics_nor_leaves_the_named_service(path in paths(), query in proptest::option::of("[ -~]{0,12}")) {
        let (table, urls) = table();
        if let Ok(route) = parse_proxy_path(&path) {
            prop_assert!(!route.service.is_empty());
            prop_assert!(!route.service.contains('/'));
            prop_assert!(route.rest.is_empty() || route.rest.starts_with('/'));
            prop_assert!(path.ends_with(route.rest));
            let target = upstream_path_and_query("/api", route.rest, query.as_deref());
            prop_assert!(target.starts_with("/api"));
            if let Some(service) = table.get(route.service) {
                prop_assert_eq!(service.name.as_str(), route.service);
                for _ in 0..service.backends.len() {
                    let pick = service.selector.pick(&service.backends, service.selector.ticket(), &[], &PickPolicy::default());
                    let pick = pick.expect("all breakers are Closed");
                    prop_assert!(urls[route.service].contains(&service.backends[pick.index].url));
                }
            }
        }
    }

    #[test]
    fn dot_segments_resolve_as_the_rfc_says_or_are_refused_above_the_root(
        segments in proptest::collection::vec("a|b|\\.|\\.\\.|%2e|%2E%2e|\\.%2e|x%2ey|\\.\\.\\.|", 0..8),
    ) {
        let rest: String = segments.iter().map(|s| format!("/{s}")).collect();
        let (expected, climbed) = remove_dot_segments_model(&rest);
        match resolve_dot_segments(&rest) {
            Err(_) => prop_assert!(climbed, "{rest} refused, but the RFC gives {expected}"),
            Ok(resolved) => {
                prop_assert!(!climbed, "{rest} climbs above the root, resolved to {resolved}");
                let decoded = resolved.replace("%2e", ".").replace("%2E", ".");
                let expected = if expected.is_empty() && !rest.is_empty() { "/".to_owned() } else { expected };
                prop_assert_eq!(decoded, expected, "{}", rest);
                let again = resolve_dot_segments(&resolved).unwrap();
                prop_assert_eq!(again.as_ref(), resolved.as_ref(), "resolving twice changes {}", rest);
            }
        }
    }

    #[test]
    fn no_forwarded_path_leads_a_lenient_backend_out_of_its_prefix(rest in spelled_paths()) {
        let policies = [EscapedSlashes::Reject, EscapedSlashes::Decode, EscapedSlashes::Keep];
        for (root, within) in [("", ""), ("/p", "/p/")] {
            let path = format!("{root}{rest}");
            for policy in policies {
                let Ok(forwarded) = forwarded_path(&path, policy, within) else {
                    continue;
                };
                prop_assert!(forwarded.starts_with(within), "{path} {policy:?}: {forwarded}");
                let (reading, climbed) = lenient_backend_model(&forwarded);
                prop_assert!(!climbed, "{path} {policy:?}: {forwarded} climbs, read as {reading}");
                prop_assert!(reading.starts_with(within), "{path} {policy:?}: {forwarded} read as {reading}");
                let escaped = ["%2f", "%2F", "%5c", "%5C", "\\"].iter().any(|e| forwarded.contains(e));
                prop_assert!(policy == EscapedSlashes::Keep || !escaped, "{path} {policy:?}: {forwarded}");
                let again = forwarded_path(&forwarded, policy, within);
                prop_assert_eq!(again.as_deref(), Ok(forwarded.as_ref()), "{} {:?}: not stable", path, policy);
            }
            // Decoding refuses nothing a lenient backend would read inside the prefix (it may
            // accept more: `/.;/..` is `/` to the gateway, which resolves `.;` as a name).
            let (reading, climbed) = lenient_backend_model(&path);
            let decoded = forwarded_path(&path, EscapedSlashes::Decode, within);
            let inside = !climbed && reading.starts_with(within);
            prop_assert!(!inside || decoded.is_ok(), "{} read as {}: {:?}", path, reading, decoded);
        }
    }

    #[test]
    fn head_checks_never_panic(raw in proptest::collection::vec(any::<u8>(), 0..600), count in 0usize..300) {
        let _ = check_head(&raw, count, &HeaderLimits::default());
    }

    #[test]
    fn a_valid_services_file_loads_back_exactly_and_routes_round_robin(table in valid_tables()) {
        let mut text = String::new();
        for (name, backends, long) in &table {
            let urls: Vec<String> = backends
                .iter()
                .map(|(host, port, prefix)| format!("\"http://{host}:{port}{prefix}\""))
                .collect();
            if *long {
                text.push_str(&format!("{name:?}:\n  backends: [{}]\n", urls.join(", ")));
            } else {
                text.push_str(&format!("{name:?}: [{}]\n", urls.join(", ")));
            }
        }
        let loaded = load(&text).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        prop_assert_eq!(loaded.len(), table.len());
        for (service, (name, backends, _)) in loaded.iter().zip(&table) {
            prop_assert_eq!(&service.name, name);
            prop_assert_eq!(service.backends.len(), backends.len());
            for (backend, (host, port, prefix)) in service.backends.iter().zip(backends) {
                prop_assert_eq!(&backend.url, &format!("http://{host}:{port}{prefix}"));
                prop_assert_eq!(&backend.authority, &format!("{host}:{port}"));
                prop_assert_eq!(&backend.path_prefix, prefix);
                prop_assert_eq!(backend.addr.port(), *port);
                prop_assert_eq!(backend.addr.ip().to_string(), host.trim_matches(['[', ']']));
                prop_assert_eq!(&backend.tls_host, &None);
            }
        }
        // Every service routes by its name, and its backends take turns in file order.
        let services = ServiceTable::build(
            &loaded,
            Arc::new(ManualClock::new()),
            Arc::new(IgnoreTransitions),
            None,
        );
        for (name, backends, _) in &table {
            let path = format!("/v1/proxy/{name}/x");
            let route = parse_proxy_path(&path).map_err(|e| TestCaseError::fail(format!("{path}: {e:?}")))?;
            prop_assert_eq!(route.service, name.as_str());
            let service = services.get(name).expect("a loaded service");
            for turn in 0..2 * backends.len() {
                let pick = service.selector.pick(&service.backends, service.selector.ticket(), &[], &PickPolicy::default());
                prop_assert_eq!(pick.ok().map(|p| p.index), Some(turn % backends.len()));
            }
        }
    }

    #[test]
    fn head_checks_refuse_exactly_the_framing_a_model_of_the_rules_refuses(
        fields in proptest::collection::vec((field_name(), field_value(), proptest::bool::weighted(0.9)), 0..6),
        line_crlf in proptest::bool::weighted(0.9),
        blank_crlf in proptest::bool::weighted(0.9),
    ) {
        let eol = |crlf: bool| if crlf { "\r\n" } else { "\n" };
        let mut raw = format!("POST /v1/proxy/a HTTP/1.1{}", eol(line_crlf));
        for (name, value, crlf) in &fields {
            raw.push_str(&format!("{name}: {value}{}", eol(*crlf)));
        }
        raw.push_str(eol(blank_crlf));
        let limits = HeaderLimits { max_count: 100, max_bytes: 64 * 1024 };
        let got = check_head(raw.as_bytes(), fields.len(), &limits).map_err(rule);
        prop_assert_eq!(got, head_model(&fields, line_crlf, blank_crlf), "{:?}", raw);
    }

    #[test]
    fn any_services_text_loads_or_names_the_file(text in "\\PC{0,300}") {
        let parsed = load(&text);
        match parsed {
            Ok(services) => prop_assert!(!services.is_empty()),
            Err(e) => {
                let message = e.to_string();
                prop_assert!(message.starts_with("services.yaml: "), "{}", message);
                prop_assert!(message.len() > "services.yaml: ".len() + 5, "{}", message);
            }
        }
    }

    #[test]
    fn structured_services_files_load_or_name_the_service(
        services in proptest::collection::vec(
            ("[a-z]{1,6}|[ -~]{0,8}", proptest::collection::vec(urls(), 0..4), proptest::option::of("[a-z_]{1,20}: [ -~]{0,8}")),
            1..4,
        ),
    ) {
        let mut text = String::new();
        for (name, backends, field) in &services {
            let backends: Vec<String> = backends.iter().map(|u| format!("{u:?}")).collect();
            match field {
                None => text.push_str(&format!("{name:?}: [{}]\n", backends.join(", "))),
                Some(field) => text.push_str(&format!(
                    "{name:?}:\n  backends: [{}]\n  {field}\n",
                    backends.join(", ")
                )),
            }
        }
        let parsed = load(&text);
        match parsed {
            Ok(loaded) => {
                for service in &loaded {
                    prop_assert!(!service.backends.is_empty());
                    let tls_or_not = |url: &str| url.starts_with("http://") || url.starts_with("https://");
                    prop_assert!(service.backends.iter().all(|b| tls_or_not(&b.url)));
                }
            }
            Err(e) => {
                let message = e.to_string();
                prop_assert!(message.starts_with("services.yaml: "), "{}", message);
                let names_a_service = services.iter().any(|(name, _, _)| {
                    message.starts_with(&format!("services.yaml: service \"{name}\": "))
                });
                // Only a document-level problem (bad YAML, no services) may name no service.
                prop_assert!(
                    names_a_service
                        || message.contains("invalid YAML")
                        || message.contains("no services")
                        || message.contains("service name"),
                    "{}\n{}", message, text
                );
            }
        }
    }
}

/// Header names of generated heads: the framing ones in any case, and others.
fn field_name() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("Content-Length".to_owned()),
        Just("content-LENGTH".to_owned()),
        Just("Transfer-Encoding".to_owned()),
        Just("transfer-encoding".to_owned()),
        Just("Host".to_owned()),
        Just("X-Content-Length".to_owned()),
    ]
}

/// Header values of generated heads: lengths, codings, lists of either.
fn field_value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("3".to_owned()),
        Just("3, 3".to_owned()),
        Just("chunked".to_owned()),
        Just(" Chunked ".to_owned()),
        Just("gzip".to_owned()),
        Just("gzip, chunked".to_owned()),
        Just("example".to_owned()),
    ]
}

/// Which rule refused a head (the message aside).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rule {
    Ambiguous,
    TooLarge,
    UriTooLong,
    UnsupportedCoding,
}

fn rule(rejection: HeadRejection) -> Rule {
    match rejection {
        HeadRejection::Ambiguous(_) => Rule::Ambiguous,
        HeadRejection::TooLarge(_) => Rule::TooLarge,
        HeadRejection::UriTooLong => Rule::UriTooLong,
        HeadRejection::UnsupportedCoding => Rule::UnsupportedCoding,
    }
}

/// The framing rules of docs/security.md, read off a head's fields (name, value, CRLF-ended)
/// rather than its bytes: line by line, a bare LF or a listed `Content-Length` is ambiguous;
/// then two lengths, or a length with a coding, are ambiguous, and any coding but one lone
/// `chunked` is unsupported.
fn head_model(
    fields: &[(String, String, bool)],
    line_crlf: bool,
    blank_crlf: bool,
) -> Result<(), Rule> {
    if !line_crlf {
        return Err(Rule::Ambiguous);
    }
    let (mut lengths, mut codings, mut only_chunked) = (0, 0, true);
    for (name, value, crlf) in fields {
        if !crlf {
            return Err(Rule::Ambiguous);
        }
        match name.to_ascii_lowercase().as_str() {
            "content-length" if value.contains(',') => return Err(Rule::Ambiguous),
            "content-length" => lengths += 1,
            "transfer-encoding" => {
                codings += 1;
                only_chunked &= value.trim().eq_ignore_ascii_case("chunked");
            }
            _ => {}
        }
    }
    if !blank_crlf || lengths > 1 || (lengths == 1 && codings > 0) {
        return Err(Rule::Ambiguous);
    }
    if codings > 1 || !only_chunked {
        return Err(Rule::UnsupportedCoding);
    }
    Ok(())
}

/// A backend of a generated table: an IP literal host, a port, a path prefix.
type BackendSpec = (String, u16, String);
/// A service of a generated table: its name, backends, and whether it is written in the long
/// form.
type ServiceSpec = (String, Vec<BackendSpec>, bool);

/// A valid services table: distinct names (any of the characters a name may hold, some that
/// YAML would read as something else unquoted), each with one to four distinct backends on IP
/// literals, some with a path prefix, written in the short or the long form.
fn valid_tables() -> impl Strategy<Value = Vec<ServiceSpec>> {
    let host = prop_oneof!["127\\.0\\.0\\.[1-9][0-9]?", Just("[::1]".to_owned())];
    let prefix = "(/[a-z0-9]{1,5}){0,2}";
    let backends = proptest::collection::btree_map((host, 1u16..), prefix, 1..5).prop_map(|m| {
        m.into_iter()
            .map(|((h, p), prefix)| (h, p, prefix))
            .collect::<Vec<_>>()
    });
    let name = "[A-Za-z0-9._~-]{1,12}|true|null|~|1e3|-"
        .prop_filter("a dot segment is no name", |n| n != "." && n != "..");
    proptest::collection::btree_map(name, (backends, any::<bool>()), 1..6).prop_map(|m| {
        m.into_iter()
            .map(|(name, (backends, long))| (name, backends, long))
            .collect()
    })
}

/// What a client does to a breaker in the model test.
#[derive(Debug, Clone)]
enum Step {
    /// Time passes.
    Wait(Duration),
    /// A request asks for a permit and, if admitted, ends in success or failure.
    Request(bool),
    /// A request is admitted and then dropped unsettled (the client went away).
    Abandon,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (0u64..12_000).prop_map(|ms| Step::Wait(Duration::from_millis(ms))),
        any::<bool>().prop_map(Step::Request),
        Just(Step::Abandon),
    ]
}

/// The original design's breaker, as its document states it: Closed opens after 3 failures in
/// a row; Open refuses for 10 s, then admits one probe (Half-Open); the probe's success
/// closes, its failure opens again for another 10 s.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Model {
    Closed { failures: u32 },
    Open { until: Duration },
    HalfOpen,
}

proptest! {
    #[test]
    fn the_breaker_follows_the_original_designs_state_machine(
        steps in proptest::collection::vec(step(), 1..80)
    ) {
        const COOLDOWN: Duration = Duration::from_secs(10);
        let clock = Arc::new(ManualClock::new());
        let breaker = Arc::new(Breaker::new(
            "http://model:1",
            BreakerSettings::default(),
            clock.clone(),
            Arc::new(IgnoreTransitions),
        ));
        let mut now = Duration::ZERO;
        let mut model = Model::Closed { failures: 0 };
        for step in steps {
            match step {
                Step::Wait(by) => {
                    clock.advance(by);
                    now += by;
                }
                Step::Request(_) | Step::Abandon
                    if matches!(model, Model::Open { until } if now < until) =>
                {
                    prop_assert!(breaker.try_acquire().is_none(), "Open refuses: {:?}", model);
                }
                Step::Request(success) => {
                    let permit = breaker.try_acquire();
                    prop_assert!(permit.is_some(), "{model:?} admits");
                    let permit = permit.unwrap();
                    let probing = !matches!(model, Model::Closed { .. });
                    prop_assert_eq!(permit.is_probe(), probing);
                    permit.record(if success { Outcome::Success } else { Outcome::Failure });
                    model = match (model, success) {
                        (Model::Closed { .. }, true) => Model::Closed { failures: 0 },
                        (Model::Closed { failures }, false) if failures + 1 >= 3 => {
                            Model::Open { until: now + COOLDOWN }
                        }
                        (Model::Closed { failures }, false) => Model::Closed { failures: failures + 1 },
                        (_, true) => Model::Closed { failures: 0 },
                        (_, false) => Model::Open { until: now + COOLDOWN },
                    };
                }
                Step::Abandon => {
                    let permit = breaker.try_acquire();
                    prop_assert!(permit.is_some(), "{model:?} admits");
                    drop(permit);
                    // Neutral: a Closed breaker counts nothing; an abandoned probe leaves the
                    // breaker Half-Open with its slot free for the next request.
                    if !matches!(model, Model::Closed { .. }) {
                        model = Model::HalfOpen;
                    }
                }
            }
            let expected = match model {
                Model::Closed { .. } => BreakerState::Closed,
                Model::Open { .. } => BreakerState::Open,
                Model::HalfOpen => BreakerState::HalfOpen,
            };
            prop_assert_eq!(breaker.state(), expected, "after {:?}", model);
        }
    }
}
