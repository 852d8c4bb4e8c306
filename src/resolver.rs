//! Host name resolution behind a seam: the config loader resolves backend hosts through a
//! [`Resolver`], so tests, property tests and fuzzers can answer without the machine's DNS
//! (which may be slow, absent, or say something different tomorrow).

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::Mutex;

/// Turns a host and port into addresses.
pub trait Resolver: Send + Sync {
    /// Every address `host` has, with `port`.
    fn resolve(&self, host: &str, port: u16) -> io::Result<Vec<SocketAddr>>;
}

/// The machine's resolver (`getaddrinfo`: `/etc/hosts`, then DNS).
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct SystemResolver;

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

/// Answers names from a table that its owner changes at will (names without an answer fail),
/// and IP literals as themselves. For tests of discovery, which must not depend on the
/// machine's DNS.
#[derive(Debug, Default)]
pub struct ScriptedResolver {
    answers: Mutex<HashMap<String, Vec<IpAddr>>>,
}

impl ScriptedResolver {
    /// From now on `host` resolves to `addresses` (an empty list: to nothing).
    pub fn answer(&self, host: &str, addresses: &[&str]) {
        let addresses = addresses
            .iter()
            .map(|a| a.parse().expect("an IP address"))
            .collect();
        self.table().insert(host.to_owned(), addresses);
    }

    /// From now on looking `host` up fails.
    pub fn fail(&self, host: &str) {
        self.table().remove(host);
    }

    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<IpAddr>>> {
        self.answers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Resolver for ScriptedResolver {
    fn resolve(&self, host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        let table = self.table();
        let ips = table.get(host).ok_or_else(|| {
            io::Error::new(io::ErrorKind::NotFound, "no answer scripted for this name")
        })?;
        Ok(ips.iter().map(|&ip| SocketAddr::new(ip, port)).collect())
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

    #[test]
    fn scripted_answers_change_when_told() {
        let resolver = ScriptedResolver::default();
        assert!(resolver.resolve("svc", 80).is_err());
        resolver.answer("svc", &["10.0.0.1", "10.0.0.2"]);
        assert_eq!(resolver.resolve("svc", 80).unwrap().len(), 2);
        resolver.fail("svc");
        assert!(resolver.resolve("svc", 80).is_err());
    }
}
