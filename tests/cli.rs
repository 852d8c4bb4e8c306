//! The `gateway` command line: Pingora's `-c`, `-t` and `-d` flags (`-u` is in `faults.rs`), the shipped conf as
//! the default, and bad configs failing with one clear message and a non-zero exit.

mod common;

use std::process::{Command, Output};

use common::*;

fn run_gateway(args: &[&str]) -> Output {
    Command::new(gateway_binary())
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run gateway")
}

fn process_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

#[test]
fn with_no_flags_test_mode_checks_the_shipped_conf() {
    let output = run_gateway(&["-t"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains("loaded conf/gateway.yaml (1 services, 2 backends"),
        "{stderr}"
    );
    assert!(stderr.contains("Server Test passed"), "{stderr}");
}

#[test]
fn bad_services_files_fail_with_one_clear_message() {
    let dir = TempDir::new();
    let conf = dir.write(
        "gateway.yaml",
        &gateway_conf(dir.path(), free_port(), free_port(), ""),
    );
    let conf = conf.to_str().unwrap();
    let services = dir.path().join("services.yaml");
    let file = services.display().to_string();
    let cases = [
        ("product: [\n", format!("{file}: invalid YAML")),
        ("", format!("{file}: no services defined")),
        (
            "product: []\n",
            format!("{file}: service \"product\": no backends listed"),
        ),
        (
            "product: [\"localhost:9001\"]\n",
            format!(
                "{file}: service \"product\": backend \"localhost:9001\" is not an \
                 http(s)://host:port[/path] URL"
            ),
        ),
        (
            "product: [\"http://localhost:9001\", \"http://localhost:9001\"]\n",
            format!(
                "{file}: service \"product\": backend \"http://localhost:9001\" is listed twice"
            ),
        ),
        (
            "product: [\"http://no-such-host.invalid:9001\"]\n",
            format!(
                "{file}: service \"product\": backend \"http://no-such-host.invalid:9001\": \
                 cannot resolve host"
            ),
        ),
    ];
    for (text, expected) in cases {
        std::fs::write(&services, text).unwrap();
        for args in [vec!["-t", "-c", conf], vec!["-c", conf]] {
            let output = run_gateway(&args);
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert_eq!(output.status.code(), Some(2), "{args:?} {text:?}: {stderr}");
            assert!(
                stderr.contains(&format!("gateway: {expected}")),
                "{text:?}: {stderr:?} should contain {expected:?}"
            );
            assert!(!stderr.contains("panicked"), "{stderr}");
        }
    }
    std::fs::remove_file(&services).unwrap();
    let output = run_gateway(&["-t", "-c", conf]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr.contains(&format!("gateway: {file}: cannot read the file")),
        "{stderr}"
    );
}

#[test]
fn bad_server_confs_fail_with_a_clear_message() {
    let dir = TempDir::new();
    dir.write("config.yaml", "product: [\"http://127.0.0.1:9001\"]\n");
    let cases = [
        ("threads: many\n", "invalid Pingora server conf"),
        (
            "gateway:\n  listen: everywhere\n",
            "gateway.listen \"everywhere\" is not an address",
        ),
        ("gateway:\n  status_log: maybe\n", "invalid YAML"),
    ];
    for (text, expected) in cases {
        let conf = dir.write("gateway.yaml", &format!("---\nversion: 1\n{text}"));
        let output = run_gateway(&["-t", "-c", conf.to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{text}: {stderr}");
        assert!(stderr.contains(expected), "{text}: {stderr}");
        assert!(stderr.contains("gateway.yaml"), "names the file: {stderr}");
    }
    let output = run_gateway(&["-t", "-c", "/nonexistent/gateway.yaml"]);
    assert_eq!(output.status.code(), Some(2));
}

#[test]
fn daemon_mode_detaches_writes_its_pid_and_serves() {
    let mock = Mock::start(&[]);
    let dir = TempDir::new();
    let port = free_port();
    dir.write("services.yaml", &services_yaml("product", &[mock.url()]));
    let mut conf = gateway_conf(dir.path(), port, free_port(), "");
    conf.push_str(&format!("error_log: {}/error.log\n", dir.path().display()));
    let conf = dir.write("gateway.yaml", &conf);

    let output = run_gateway(&["-d", "-c", conf.to_str().unwrap()]);
    assert!(output.status.success(), "{output:?}");
    let pid_file = dir.path().join("gateway.pid");
    // The daemon creates the pid file before it writes the number: wait for a whole one.
    let read_pid = || {
        std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|text| text.trim().parse::<u32>().ok())
    };
    assert!(wait_until(DEADLINE, || read_pid().is_some()), "no pid file");
    let pid = read_pid().unwrap();
    let served = wait_until(DEADLINE, || {
        try_request(port, "GET", "/v1/proxy/product", &[], b"").is_ok_and(|r| r.status == 200)
    });
    signal(pid, "TERM");
    assert!(served, "the daemon never served");
    assert!(
        wait_until(DEADLINE, || !process_alive(pid)),
        "daemon did not stop"
    );
    let log = std::fs::read_to_string(dir.path().join("error.log")).unwrap_or_default();
    assert!(log.contains("[CIRCUIT STATUS]"), "daemon log: {log}");
}

#[test]
fn the_mock_backend_exits_0_on_sigterm() {
    // As a container's PID 1 an unhandled SIGTERM would be ignored: the mock handles it.
    let mut mock = Mock::start(&[]);
    assert!(mock.terminate().success());
}
