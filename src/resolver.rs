//! Host name resolution behind a seam: the config loader resolves backend hosts through a
//! [`Resolver`], so tests, property tests and fuzzers can answer without the machine's DNS
//! (which may be slow, absent, or say something different tomorrow).

use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};

/// Turns a host and port into addresses.
pub trait Resolver: Send + Sync {
    /// Every address `host` has, with `port`.
    fn resolve(&self, host: &str, port: u16) -> io::Result<Vec<SocketAddr>>;
}

/// The machine's resolver (`getaddrinfo`: `/etc/hosts`, then DNS).
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemResolver;

impl Resolver for SystemResolver {
    fn resolve(&self, host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
        Ok((host, port).to_socket_addrs()?.collect())
    }
}

/// Resolves IP literals only and refuses every name, without a lookup: for tests and fuzzing.
#[derive(Debug, Default, Clone, Copy)]
pub struct IpLiteralResolver;

impl Resolver for IpLiteralResolver {
    fn resolve(&self, host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
        let ip: IpAddr = host.parse().map_err(|_| {
            io::Error::new(
                io::ErrorKind::NotFound,
                "not an IP address, and this resolver looks nothing up",
            )
        })?;
        Ok(vec![SocketAddr::new(ip, port)])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_resolve_and_names_do_not() {
        assert_eq!(
            IpLiteralResolver.resolve("10.0.0.1", 80).unwrap(),
            ["10.0.0.1:80".parse().unwrap()]
        );
        assert_eq!(
            IpLiteralResolver.resolve("::1", 80).unwrap(),
            ["[::1]:80".parse().unwrap()]
        );
        assert!(IpLiteralResolver.resolve("localhost", 80).is_err());
    }
}
