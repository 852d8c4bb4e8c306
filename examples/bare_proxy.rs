//! A bare Pingora proxy, for the load benchmark only: plain round-robin over 127.0.0.1:9001 and
//! :9002, no routing, no breakers, no header rewriting, the same allocator as the gateway.
//! Measured beside the gateway in one run, it shows what the gateway's own logic costs on top
//! of Pingora itself. Listens on 127.0.0.1:8084.
//!
//! ```sh
//! cargo build --release --example bare_proxy
//! PINGORA_BIN=target/release/examples/bare_proxy PINGORA_PORT=8084 \
//!   CONTENDERS="nginx pingora gateway" benches/load/bench.sh
//! ```

use std::sync::atomic::{AtomicUsize, Ordering};

use pingora::prelude::*;
use pingora_proxy::{ProxyHttp, Session};

#[global_allocator]
static ALLOCATOR: gateway::allocator::Mimalloc = gateway::allocator::Mimalloc;

const BACKENDS: [&str; 2] = ["127.0.0.1:9001", "127.0.0.1:9002"];

struct BareProxy {
    next: AtomicUsize,
}
impl ProxyHttp for BareProxy {
    type CTX = ();

    fn new_ctx(&self) {}

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        let backend = BACKENDS[self.next.fetch_add(1, Ordering::Relaxed) % BACKENDS.len()];
        Ok(Box::new(HttpPeer::new(backend, false, String::new())))
    }
}

fn main() {
    let mut server = Server::new(Some(Opt::parse_args())).expect("server conf");
    server.bootstrap();
    let mut proxy = pingora_proxy::http_proxy_service(
        &server.configuration,
        BareProxy {
            next: AtomicUsize::new(0),
        },
    );
    proxy.add_tcp("127.0.0.1:8084");
    server.add_service(proxy);
    server.run_forever()
}
