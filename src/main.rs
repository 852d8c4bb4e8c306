//! The `gateway` binary: Pingora's command line, then [`gateway::cli::run`] (which sets up
//! logging once the conf has said in which format).

use std::process::ExitCode;

use pingora::prelude::Opt;

#[global_allocator]
static ALLOCATOR: gateway::allocator::Mimalloc = gateway::allocator::Mimalloc;

fn main() -> ExitCode {
    match gateway::cli::run(Opt::parse_args()) {
        Ok(never) => match never {},
        Err(e) => {
            eprintln!("gateway: {e}");
            ExitCode::from(2)
        }
    }
}
