//! The `gateway` binary: logging, Pingora's command line, then [`gateway::cli::run`].

use std::process::ExitCode;

use pingora::prelude::Opt;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    gateway::observability::init_logging();
    match gateway::cli::run(Opt::parse_args()) {
        Ok(never) => match never {},
        Err(e) => {
            eprintln!("gateway: {e}");
            ExitCode::from(2)
        }
    }
}
