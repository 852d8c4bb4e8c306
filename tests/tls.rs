//! TLS on both sides, with certificates made when the tests run (`common/tls.rs`): the TLS
//! listener through `curl --cacert` and an OpenSSL client (SNI, versions, reload), and
//! `https://` backends (the mock's TLS mode) verified against a CA, with every way a backend's
//! certificate can be wrong, mTLS, and connection reuse.

mod common;

#[path = "common/tls.rs"]
mod tls;

use std::collections::HashSet;
use std::path::Path;
use std::process::Command;

use common::*;
use openssl::ssl::SslVersion;
use tls::{get_on, presented_name, tls_connect, tls_connect_offering, CertFiles, TestCa, Validity};

/// A test's certificates: a CA, a server certificate for `localhost` and 127.0.0.1, and one
/// for `other.test`.
struct Pki {
    dir: TempDir,
    ca: TestCa,
    ca_file: String,
    localhost: CertFiles,
    other: CertFiles,
}

fn pki() -> Pki {
    let dir = TempDir::new();
    let ca = TestCa::new("gateway test CA");
    let ca_file = ca.write(dir.path(), "ca").display().to_string();
    let localhost = ca.issue(
        dir.path(),
        "localhost",
        &["localhost", "127.0.0.1"],
        Validity::Now,
    );
    let other = ca.issue(dir.path(), "other", &["other.test"], Validity::Now);
    Pki {
        dir,
        ca,
        ca_file,
        localhost,
        other,
    }
}

/// The `gateway.tls` section serving `certificates` on `port`.
fn tls_section(port: u16, certificates: &[&CertFiles]) -> String {
    let mut section = format!("  tls:\n    listen: 127.0.0.1:{port}\n    certificates:\n");
    for files in certificates {
        section.push_str(&format!(
            "      - cert: {}\n        key: {}\n",
            files.cert(),
            files.key()
        ));
    }
    section
}

/// `curl --cacert` over TLS to the gateway: the status and the body.
fn curl(pki: &Pki, url: &str, resolve: Option<&str>) -> (u16, String) {
    let mut command = Command::new("curl");
    command.args([
        "-s",
        "--max-time",
        "10",
        "--cacert",
        &pki.ca_file,
        "-w",
        "\n%{http_code}",
    ]);
    if let Some(resolve) = resolve {
        command.args(["--resolve", resolve]);
    }
    let output = command.arg(url).output().expect("run curl");
    let text = String::from_utf8_lossy(&output.stdout).to_string();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", &text));
    (status.trim().parse().unwrap_or(0), body.to_owned())
}

#[test]
fn curl_over_tls_alternates_sets_forwarded_proto_and_sees_a_breaker_trip() {
    let pki = pki();
    let (mut a, b) = (Mock::start(&[]), Mock::start(&[]));
    let tls_port = free_port();
    let gateway = Gateway::start(
        &services_yaml("product", &[a.url(), b.url()]),
        &format!(
            "  status_log: false\n{}",
            tls_section(tls_port, &[&pki.localhost])
        ),
    );
    let url = format!("https://localhost:{tls_port}/v1/proxy/product");
    let served: Vec<String> = (0..4).map(|_| curl(&pki, &url, None).1).collect();
    let firsts: Vec<&str> = served
        .iter()
        .map(|b| b.lines().next().unwrap_or(""))
        .collect();
    assert_eq!(
        firsts,
        [0, 1, 0, 1].map(|i| format!("Hello from {}", [a.port, b.port][i])),
        "{served:?}"
    );
    let headers = Command::new("curl")
        .args([
            "-s",
            "-D",
            "-",
            "-o",
            "/dev/null",
            "--cacert",
            &pki.ca_file,
            &url,
        ])
        .output()
        .unwrap();
    let headers = String::from_utf8_lossy(&headers.stdout).to_ascii_lowercase();
    assert!(
        headers.contains("x-echo-x-forwarded-proto: https"),
        "{headers}"
    );
    assert!(headers.contains("proto=https"), "{headers}");
    // The seed demo's breaker trip, over TLS: a stopped replica costs no request.
    a.stop();
    for _ in 0..6 {
        let (status, body) = curl(&pki, &url, None);
        assert_eq!(status, 200);
        assert!(
            body.starts_with(&format!("Hello from {}", b.port)),
            "{body}"
        );
    }
    gateway.wait_for_log(&format!("[CIRCUIT] {} OPEN", a.url()));
}

#[test]
fn sni_picks_the_certificate_and_no_sni_or_an_unknown_name_gets_the_first() {
    let pki = pki();
    let mock = Mock::start(&[]);
    let tls_port = free_port();
    let _gateway = Gateway::start(
        &services_yaml("product", &[mock.url()]),
        &format!(
            "  status_log: false\n{}",
            tls_section(tls_port, &[&pki.localhost, &pki.other])
        ),
    );
    for (sni, expected) in [
        (Some("other.test"), "other.test"),
        (Some("localhost"), "localhost"),
        (Some("unknown.test"), "localhost"),
        (None, "localhost"),
    ] {
        let stream = tls_connect(tls_port, sni, SslVersion::TLS1_3).expect("a handshake");
        assert_eq!(presented_name(&stream), expected, "SNI {sni:?}");
    }
    // And verified for real by curl, by name.
    let resolve = format!("other.test:{tls_port}:127.0.0.1");
    let (status, body) = curl(
        &pki,
        &format!("https://other.test:{tls_port}/v1/proxy/product"),
        Some(&resolve),
    );
    assert_eq!(status, 200, "{body}");
}

#[test]
fn only_tls_1_2_and_1_3_are_spoken() {
    let pki = pki();
    let mock = Mock::start(&[]);
    let tls_port = free_port();
    let _gateway = Gateway::start(
        &services_yaml("product", &[mock.url()]),
        &format!(
            "  status_log: false\n{}",
            tls_section(tls_port, &[&pki.localhost])
        ),
    );
    for old in [SslVersion::TLS1_1, SslVersion::TLS1] {
        assert!(
            tls_connect(tls_port, Some("localhost"), old).is_err(),
            "{old:?}"
        );
    }
    let mut stream = tls_connect(tls_port, Some("localhost"), SslVersion::TLS1_2).unwrap();
    assert_eq!(stream.ssl().version_str(), "TLSv1.2");
    assert_eq!(get_on(&mut stream, "/v1/proxy/product"), 200);
    let stream = tls_connect(tls_port, Some("localhost"), SslVersion::TLS1_3).unwrap();
    assert_eq!(stream.ssl().version_str(), "TLSv1.3");
    assert_eq!(
        stream.ssl().selected_alpn_protocol(),
        None,
        "the client offered no ALPN"
    );
    let offered = b"\x02h2\x08http/1.1";
    let stream =
        tls_connect_offering(tls_port, Some("localhost"), SslVersion::TLS1_3, offered).unwrap();
    assert_eq!(
        stream.ssl().selected_alpn_protocol(),
        Some(&b"h2"[..]),
        "ALPN prefers h2"
    );
    let stream = tls_connect_offering(
        tls_port,
        Some("localhost"),
        SslVersion::TLS1_3,
        b"\x08http/1.1",
    )
    .unwrap();
    assert_eq!(
        stream.ssl().selected_alpn_protocol(),
        Some(&b"http/1.1"[..])
    );
}

#[test]
fn a_reload_swaps_the_certificate_keeps_open_connections_and_keeps_the_old_on_a_bad_one() {
    let pki = pki();
    let mock = Mock::start(&[]);
    let tls_port = free_port();
    let served = CertFiles {
        cert: pki.dir.path().join("served.crt"),
        key: pki.dir.path().join("served.key"),
    };
    copy(&pki.localhost, &served);
    let gateway = Gateway::start(
        &services_yaml("product", &[mock.url()]),
        &format!("  status_log: false\n{}", tls_section(tls_port, &[&served])),
    );
    let mut open = tls_connect(tls_port, Some("localhost"), SslVersion::TLS1_3).unwrap();
    assert_eq!(get_on(&mut open, "/v1/proxy/product"), 200);
    assert_eq!(presented_name(&open), "localhost");

    let renewed = pki
        .ca
        .issue(pki.dir.path(), "renewed", &["renewed.test"], Validity::Now);
    copy(&renewed, &served);
    signal(gateway.pid(), "HUP");
    gateway.wait_for_log("reloaded 1 TLS certificates");
    let fresh = tls_connect(tls_port, Some("localhost"), SslVersion::TLS1_3).unwrap();
    assert_eq!(presented_name(&fresh), "renewed.test");
    assert_eq!(
        get_on(&mut open, "/v1/proxy/product"),
        200,
        "the connection open before the reload still serves"
    );

    // A key that does not match: the reload fails and the certificate in use stays.
    std::fs::copy(&pki.other.key, &served.key).unwrap();
    signal(gateway.pid(), "HUP");
    gateway.wait_for_log("does not belong to the certificate");
    let after = tls_connect(tls_port, Some("localhost"), SslVersion::TLS1_3).unwrap();
    assert_eq!(presented_name(&after), "renewed.test");
}

fn copy(from: &CertFiles, to: &CertFiles) {
    std::fs::copy(&from.cert, &to.cert).unwrap();
    std::fs::copy(&from.key, &to.key).unwrap();
}

/// `gateway -t` over a conf whose TLS listener serves `cert`/`key`: its exit code and stderr.
fn check_conf(dir: &Path, cert: &str, key: &str) -> (Option<i32>, String) {
    std::fs::write(
        dir.join("services.yaml"),
        "product: [\"http://127.0.0.1:1\"]\n",
    )
    .unwrap();
    let conf = dir.join("gateway.yaml");
    std::fs::write(
        &conf,
        gateway_conf(
            dir,
            free_port(),
            free_port(),
            &format!(
                "  tls:\n    listen: 127.0.0.1:{}\n    certificates:\n      - cert: {cert}\n        key: {key}\n",
                free_port()
            ),
        ),
    )
    .unwrap();
    let output = Command::new(gateway_binary())
        .args(["-t", "-c", conf.to_str().unwrap()])
        .output()
        .unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).to_string(),
    )
}

#[test]
fn bad_certificate_files_fail_the_config_check_naming_the_file() {
    let pki = pki();
    let dir = pki.dir.path();
    let expired = pki
        .ca
        .issue(dir, "expired", &["localhost"], Validity::Expired);
    let (code, stderr) = check_conf(dir, pki.localhost.cert(), pki.localhost.key());
    assert_eq!(code, Some(0), "{stderr}");
    for (cert, key, message) in [
        (
            "missing.crt",
            pki.localhost.key(),
            "missing.crt: cannot read",
        ),
        (
            pki.localhost.cert(),
            pki.other.key(),
            "other.key: the key does not belong",
        ),
        (
            expired.cert(),
            expired.key(),
            "expired.crt: the certificate expired",
        ),
        (
            pki.localhost.key(),
            pki.localhost.key(),
            "localhost.key: holds no PEM certificate",
        ),
    ] {
        let (code, stderr) = check_conf(dir, cert, key);
        assert_eq!(code, Some(2), "{cert}: {stderr}");
        assert!(stderr.contains(message), "{message}: {stderr}");
    }
}

/// A gateway whose service `product` lists `backends`, with `service_extra` settings.
fn gateway_over(backends: &[String], service_extra: &str) -> Gateway {
    let list: Vec<String> = backends.iter().map(|b| format!("\"{b}\"")).collect();
    Gateway::start(
        &format!(
            "product:\n  backends: [{}]\n  failure_threshold: 2\n  open_timeout: 1m\n{service_extra}",
            list.join(", ")
        ),
        "  status_log: false\n",
    )
}

fn tls_mock(files: &CertFiles, extra: &[&str]) -> Mock {
    let mut args = vec!["--tls-cert", files.cert(), "--tls-key", files.key()];
    args.extend_from_slice(extra);
    Mock::start(&args)
}

fn https_url(mock: &Mock) -> String {
    format!("https://localhost:{}", mock.port)
}

#[test]
fn an_https_backend_is_verified_against_its_ca_and_its_connections_are_reused() {
    let pki = pki();
    let backend = tls_mock(&pki.localhost, &[]);
    let gateway = gateway_over(
        &[https_url(&backend)],
        &format!("  tls_ca_file: {}\n", pki.ca_file),
    );
    let mut connections = HashSet::new();
    for _ in 0..20 {
        let response = gateway.get("/v1/proxy/product");
        assert_eq!(response.status, 200, "{response:?}");
        assert_eq!(response.served_by(), Some(backend.port));
        connections.insert(response.header("x-mock-connection").unwrap().to_owned());
    }
    // Sequential requests reuse pooled TLS connections: a handshake or two, not twenty. (A
    // request can start before the previous one's connection is back in the pool, and open
    // a second.)
    assert!(connections.len() <= 4, "{connections:?}");
}

#[test]
fn a_backend_certificate_that_fails_verification_is_a_connect_failure_that_fails_over() {
    let pki = pki();
    let dir = pki.dir.path();
    let unknown_ca = TestCa::new("someone else's CA");
    let cases = [
        (
            unknown_ca.issue(dir, "unknown-ca", &["localhost"], Validity::Now),
            "unable to get local issuer certificate",
        ),
        (
            pki.ca
                .issue(dir, "wrong-name", &["wrong.test"], Validity::Now),
            "hostname mismatch",
        ),
        (
            pki.ca
                .issue(dir, "expired-backend", &["localhost"], Validity::Expired),
            "certificate has expired",
        ),
    ];
    for (files, reason) in cases {
        let bad = tls_mock(&files, &[]);
        let good = tls_mock(&pki.localhost, &[]);
        let gateway = gateway_over(
            &[https_url(&bad), https_url(&good)],
            &format!("  tls_ca_file: {}\n", pki.ca_file),
        );
        for _ in 0..6 {
            let response = gateway.get("/v1/proxy/product");
            assert_eq!(response.status, 200, "{reason}: {response:?}");
            assert_eq!(response.served_by(), Some(good.port), "{reason}");
        }
        gateway.wait_for_log(&format!("[CIRCUIT] {} OPEN", https_url(&bad)));
        assert!(
            gateway.log().contains(reason),
            "{reason}: {}",
            gateway.log()
        );
    }
}

#[test]
fn a_backend_that_requires_a_client_certificate_gets_the_services() {
    let pki = pki();
    let client = pki
        .ca
        .issue(pki.dir.path(), "client", &["gateway.client"], Validity::Now);
    let strict = tls_mock(&pki.localhost, &["--tls-client-ca", &pki.ca_file]);
    let with_cert = gateway_over(
        &[https_url(&strict)],
        &format!(
            "  tls_ca_file: {}\n  tls_client_cert: {}\n  tls_client_key: {}\n",
            pki.ca_file,
            client.cert(),
            client.key()
        ),
    );
    assert_eq!(with_cert.get("/v1/proxy/product").status, 200);
    let without = gateway_over(
        &[https_url(&strict)],
        &format!("  tls_ca_file: {}\n", pki.ca_file),
    );
    assert_eq!(without.get("/v1/proxy/product").status, 502);
}

/// Two services listing one `https` backend, `trusting` with TLS settings that accept it and
/// `refusing` with settings that must not: each `*_tls` is the service's TLS lines. Both are
/// asked in turn, in both orders, many times, over HTTP/1.1 or HTTP/2 to the backend. A
/// connection pooled for one service is never handed to the other: `refusing` never gets an
/// answer from the backend, and its failures count against its own breaker only.
fn pooled_connections_stay_with_their_trust(
    backend: &Mock,
    trusting_tls: &str,
    refusing_tls: &str,
    h2: bool,
) {
    let url = https_url(backend);
    let protocol = if h2 { "  protocol: http2\n" } else { "" };
    // A threshold no test run reaches: every request of `refusing` tries a connection.
    let service = |name: &str, tls: &str| {
        format!("{name}:\n  backends: [\"{url}\"]\n  failure_threshold: 1000\n{protocol}{tls}")
    };
    let gateway = Gateway::start(
        &format!(
            "{}{}",
            service("trusting", trusting_tls),
            service("refusing", refusing_tls)
        ),
        "  status_log: false\n",
    );
    let rounds = 12;
    for round in 0..rounds {
        let order = if round % 2 == 0 {
            ["trusting", "refusing"]
        } else {
            ["refusing", "trusting"]
        };
        for name in order {
            let response = gateway.get(&format!("/v1/proxy/{name}"));
            if name == "trusting" {
                assert_eq!(response.status, 200, "round {round}: {response:?}");
                let protocol = if h2 { "h2" } else { "h1" };
                assert_eq!(response.header("x-mock-protocol"), Some(protocol));
            } else {
                assert_eq!(response.status, 502, "round {round}: {response:?}");
                assert_eq!(response.served_by(), None, "round {round}");
            }
        }
    }
    let series = |metric: &str, service: &str, extra: &str| {
        format!("{metric}{{service=\"{service}\",backend=\"{url}\"{extra}}}")
    };
    let attempts = |service, outcome| {
        let outcome = format!(",outcome=\"{outcome}\"");
        series("gateway_upstream_attempts_total", service, &outcome)
    };
    // (A refused handshake is a connect error; a client certificate refused after a TLS 1.3
    // handshake shows as a broken response. Either is the refusing service's failure.)
    let failures = |service| series("gateway_breaker_consecutive_failures", service, "");
    assert!(gateway.metric_reaches(&failures("refusing"), rounds as f64));
    assert_eq!(gateway.metric(&failures("trusting")), Some(0.0));
    assert!(gateway.metric_reaches(&attempts("trusting", "success"), rounds as f64));
    assert_eq!(gateway.metric(&attempts("refusing", "success")), Some(0.0));
}

fn ca_line(file: &str) -> String {
    format!("  tls_ca_file: {file}\n")
}

#[test]
fn a_pooled_connection_is_never_reused_by_a_service_whose_ca_refuses_the_backend() {
    let pki = pki();
    let someone_else = TestCa::new("someone else's CA");
    let other_ca = someone_else.write(pki.dir.path(), "other-ca");
    let other_ca = other_ca.to_str().unwrap();
    for h2 in [false, true] {
        let backend = tls_mock(&pki.localhost, if h2 { &["--h2"] } else { &[] });
        pooled_connections_stay_with_their_trust(
            &backend,
            &ca_line(&pki.ca_file),
            &ca_line(other_ca),
            h2,
        );
    }
}

#[test]
fn a_pooled_connection_made_without_verification_is_never_reused_by_a_service_that_verifies() {
    let pki = pki();
    // The backend's certificate is from a CA the verifying service does not trust.
    let someone_else = TestCa::new("someone else's CA");
    let unverifiable = someone_else.issue(
        pki.dir.path(),
        "unverifiable",
        &["localhost"],
        Validity::Now,
    );
    for h2 in [false, true] {
        let backend = tls_mock(&unverifiable, if h2 { &["--h2"] } else { &[] });
        pooled_connections_stay_with_their_trust(
            &backend,
            "  tls_verify: false\n",
            &ca_line(&pki.ca_file),
            h2,
        );
    }
}

#[test]
fn a_pooled_mtls_connection_is_never_reused_with_another_client_certificate_of_the_same_serial() {
    let pki = pki();
    let dir = pki.dir.path();
    // Serials are unique per issuer only: two CAs' client certificates with the same number.
    let admitted = pki
        .ca
        .issue_with_serial(dir, "admitted", &["gateway.client"], 4242);
    let stranger_ca = TestCa::new("a CA the backend does not trust");
    let stranger = stranger_ca.issue_with_serial(dir, "stranger", &["gateway.client"], 4242);
    let client_lines = |files: &CertFiles| {
        format!(
            "{}  tls_client_cert: {}\n  tls_client_key: {}\n",
            ca_line(&pki.ca_file),
            files.cert(),
            files.key()
        )
    };
    for h2 in [false, true] {
        let mut args = vec!["--tls-client-ca", pki.ca_file.as_str()];
        if h2 {
            args.push("--h2");
        }
        let backend = tls_mock(&pki.localhost, &args);
        pooled_connections_stay_with_their_trust(
            &backend,
            &client_lines(&admitted),
            &client_lines(&stranger),
            h2,
        );
    }
}
