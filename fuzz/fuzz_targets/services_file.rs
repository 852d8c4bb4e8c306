//! The services-file loader on arbitrary text: no panic, and every error names the file.
//! Hosts resolve as IP literals only, so no input makes the fuzzer wait on DNS.
#![no_main]

use std::path::Path;

use gateway::config::{parse_services_with, ServiceDefaults};
use gateway::resolver::IpLiteralResolver;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let parsed = parse_services_with(
        Path::new("services.yaml"),
        text,
        &ServiceDefaults::default(),
        &IpLiteralResolver,
    );
    match parsed {
        Ok(services) => assert!(services.iter().all(|s| !s.backends.is_empty())),
        Err(e) => assert!(e.to_string().starts_with("services.yaml: ")),
    }
});
