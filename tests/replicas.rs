//! Many replicas on one machine, for real: two gateway processes behind HAProxy (Debian's
//! package) on loopback. One gateway is killed (SIGKILL, no drain) under a bounded load, and
//! HAProxy moves the traffic to the other: with its retries configured (`retry-on
//! all-retryable-errors`, `option redispatch`), clients see no error. The test prints the count
//! it saw, and fails on any.

mod common;

use std::process::{Child, Command, Stdio};

use common::*;

/// HAProxy in the foreground, killed when dropped.
struct Haproxy {
    child: Child,
    port: u16,
}

impl Haproxy {
    /// Round-robin over `gateways` (proxy port, admin port), health-checked on `/healthz`.
    fn start(dir: &TempDir, gateways: &[(u16, u16)]) -> Haproxy {
        let port = free_port();
        let servers: String = gateways
            .iter()
            .enumerate()
            .map(|(i, (proxy, admin))| {
                format!(
                    "  server gateway{i} 127.0.0.1:{proxy} check port {admin} inter 200ms fall 2 rise 1\n"
                )
            })
            .collect();
        let conf = dir.write(
            "haproxy.cfg",
            &format!(
                "global\n  maxconn 256\n\
                 defaults\n  mode http\n  timeout connect 1s\n  timeout client 15s\n  \
                 timeout server 15s\n  retries 3\n  option redispatch 1\n  \
                 retry-on all-retryable-errors\n\
                 frontend clients\n  bind 127.0.0.1:{port}\n  default_backend gateways\n\
                 backend gateways\n  balance roundrobin\n  option httpchk GET /healthz\n  \
                 http-check expect status 200\n{servers}"
            ),
        );
        let child = Command::new("haproxy")
            .args(["-db", "-f", conf.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("haproxy (Debian package `haproxy`; scripts/setup.sh installs it)");
        let haproxy = Haproxy { child, port };
        assert!(
            wait_until(DEADLINE, || try_request(
                port,
                "GET",
                "/v1/proxy/product",
                &[],
                b""
            )
            .is_ok_and(|r| r.status == 200)),
            "haproxy never served"
        );
        haproxy
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn killing_one_of_two_gateways_behind_haproxy_costs_clients_nothing() {
    let (a, b) = (Mock::start(&[]), Mock::start(&[]));
    let services = services_yaml("product", &[a.url(), b.url()]);
    let gateways: Vec<Gateway> = (0..2)
        .map(|_| Gateway::start(&services, "  status_log: false\n"))
        .collect();
    let dir = TempDir::new();
    let haproxy = Haproxy::start(
        &dir,
        &gateways
            .iter()
            .map(|g| (g.port, g.admin_port))
            .collect::<Vec<_>>(),
    );

    let load = BackgroundLoad::start(haproxy.port, 8, "GET", "/v1/proxy/product");
    load.wait_for(500);
    signal(gateways[0].pid(), "KILL");
    load.wait_for(1500);
    let report = load.finish();
    println!(
        "replicas: {} requests through HAProxy, {} failed, while one of two gateways was killed",
        report.total(),
        report.failures()
    );
    assert_eq!(report.failures(), 0, "{report:?}");
    assert_eq!(
        report.resends, 0,
        "HAProxy kept every client connection: {report:?}"
    );
    assert_eq!(
        report.served_by.len(),
        2,
        "both backends served: {report:?}"
    );
    let survivor = &gateways[1];
    assert_eq!(survivor.get("/v1/proxy/product").status, 200);
}
