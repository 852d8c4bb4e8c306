//! Rate limits: requests per second, with a burst, for a whole service and for each client
//! address; a request over either is answered 429 before it is routed to a backend.
//!
//! Counting is `pingora-limits`' [`Rate`]: two count-min sketches of fixed size (the current
//! window and the previous one), so a flood of distinct client addresses cannot grow memory;
//! the price is that a crowd of addresses sharing a sketch cell may be over-counted together,
//! never under-counted. The estimate is a sliding window, as Cloudflare's own limiter
//! computes it: the previous window's count weighted by how much of it still overlaps, plus
//! the current count.
//!
//! A limit of `requests_per_second` with a `burst` admits `burst` requests in any window of
//! `burst / requests_per_second` seconds (at least one second: the window is also the sketch's
//! reset interval), so the long-run rate is the limit and a quiet client may spend its burst at
//! once. Only admitted requests count: a client refused for flooding gets its share back as
//! soon as it slows down. IPv6 clients are counted by their /64, the block one host holds.

use std::hash::Hash;
use std::net::IpAddr;
use std::time::Duration;

use pingora_limits::rate::Rate;

/// A rate limit as configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimitSettings {
    /// The long-run rate.
    pub requests_per_second: u32,
    /// Requests admitted at once after a quiet spell; at least `requests_per_second`.
    pub burst: u32,
}

/// Which limit refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateLimited {
    /// The service's own limit.
    Service,
    /// The client address's limit.
    Client,
}

/// Sketch cells per hash for per-client limits: 4 × 16,384 cells, in two windows, of 8 bytes
/// each is 1 MiB per service with a client limit, whatever the number of clients. With N
/// distinct clients in a window, a client is over-counted by about N / 16,384 at most.
const CLIENT_SLOTS: usize = 16_384;
const CLIENT_HASHES: usize = 4;

/// One limit and its counts.
struct Limiter {
    settings: RateLimitSettings,
    rate: Rate,
    window: Duration,
}

impl Limiter {
    fn new(settings: RateLimitSettings, hashes: usize, slots: usize) -> Self {
        let window_ms = (u64::from(settings.burst) * 1000)
            .div_ceil(u64::from(settings.requests_per_second))
            .max(1000);
        let window = Duration::from_millis(window_ms);
        Self {
            settings,
            rate: Rate::new_with_estimator_config(window, hashes, slots),
            window,
        }
    }

    /// `None` if one more request from `key` fits; else how long until it should.
    fn over<K: Hash>(&self, key: &K) -> Option<Duration> {
        let (estimate, left) = self.rate.rate_with(key, |c| {
            let estimate =
                c.prev_samples as f64 * (1.0 - c.current_interval_fraction) + c.curr_samples as f64;
            (estimate, 1.0 - c.current_interval_fraction)
        });
        (estimate + 1.0 > f64::from(self.settings.burst)).then(|| self.window.mul_f64(left))
    }

    fn count<K: Hash>(&self, key: &K) {
        self.rate.observe(key, 1);
    }
}

/// A service's rate limits and their counts.
pub struct RateLimits {
    service: Option<Limiter>,
    client: Option<Limiter>,
}

impl std::fmt::Debug for RateLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimits")
            .field("service", &self.service.as_ref().map(|l| l.settings))
            .field("client", &self.client.as_ref().map(|l| l.settings))
            .finish()
    }
}

impl RateLimits {
    /// Limits for the whole service and per client address, either optional.
    pub fn new(service: Option<RateLimitSettings>, client: Option<RateLimitSettings>) -> Self {
        Self {
            service: service.map(|s| Limiter::new(s, 1, 1)),
            client: client.map(|s| Limiter::new(s, CLIENT_HASHES, CLIENT_SLOTS)),
        }
    }

    /// The settings, to tell whether a reload changed them: `(service, client)`.
    pub fn settings(&self) -> (Option<RateLimitSettings>, Option<RateLimitSettings>) {
        (
            self.service.as_ref().map(|l| l.settings),
            self.client.as_ref().map(|l| l.settings),
        )
    }

    /// Whether there is any limit at all.
    pub fn is_empty(&self) -> bool {
        self.service.is_none() && self.client.is_none()
    }

    /// Admits and counts one request from `client`, or says which limit refuses it and after
    /// how long it would not. A refused request is counted by neither.
    pub fn admit(&self, client: Option<IpAddr>) -> Result<(), (RateLimited, Duration)> {
        let client = client.map(client_key);
        if let (Some(limiter), Some(key)) = (&self.client, &client) {
            if let Some(after) = limiter.over(key) {
                return Err((RateLimited::Client, after));
            }
        }
        if let Some(limiter) = &self.service {
            if let Some(after) = limiter.over(&()) {
                return Err((RateLimited::Service, after));
            }
            limiter.count(&());
        }
        if let (Some(limiter), Some(key)) = (&self.client, &client) {
            limiter.count(key);
        }
        Ok(())
    }
}

/// What a client is counted by: its IPv4 address, or its IPv6 /64.
fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(requests_per_second: u32, burst: u32) -> Option<RateLimitSettings> {
        Some(RateLimitSettings {
            requests_per_second,
            burst,
        })
    }

    fn admitted(limits: &RateLimits, client: &str, n: usize) -> usize {
        let ip: IpAddr = client.parse().unwrap();
        (0..n).filter(|_| limits.admit(Some(ip)).is_ok()).count()
    }

    #[test]
    fn a_client_gets_its_burst_and_others_are_not_held_back() {
        let limits = RateLimits::new(None, limit(10, 20));
        assert_eq!(admitted(&limits, "10.0.0.1", 100), 20);
        let refused = limits.admit(Some("10.0.0.1".parse().unwrap()));
        let (which, after) = refused.unwrap_err();
        assert_eq!(which, RateLimited::Client);
        assert!(after <= Duration::from_secs(2), "{after:?}");
        assert_eq!(admitted(&limits, "10.0.0.2", 5), 5);
        // One host's IPv6 addresses are one client; another /64 is another.
        assert_eq!(admitted(&limits, "2001:db8::1", 15), 15);
        assert_eq!(admitted(&limits, "2001:db8::2", 15), 5);
        assert_eq!(admitted(&limits, "2001:db8:0:1::1", 15), 15);
        // A client without an address is held only by the service's limit.
        assert!(limits.admit(None).is_ok());
    }

    #[test]
    fn the_service_limit_counts_everyone_and_refused_requests_cost_nothing() {
        let limits = RateLimits::new(limit(5, 5), limit(100, 100));
        let a = admitted(&limits, "10.0.0.1", 3);
        let b = admitted(&limits, "10.0.0.2", 10);
        assert_eq!((a, b), (3, 2));
        let (which, _) = limits.admit(Some("10.0.0.3".parse().unwrap())).unwrap_err();
        assert_eq!(which, RateLimited::Service);
        assert_eq!(limits.settings(), (limit(5, 5), limit(100, 100)));
        assert!(!limits.is_empty() && RateLimits::new(None, None).is_empty());
    }

    #[test]
    fn the_window_holds_a_burst_at_the_long_run_rate_and_is_never_under_a_second() {
        let window = |rps, burst| Limiter::new(limit(rps, burst).unwrap(), 1, 1).window;
        assert_eq!(window(10, 20), Duration::from_secs(2));
        assert_eq!(window(100, 100), Duration::from_secs(1));
        assert_eq!(window(1000, 10), Duration::from_secs(1));
        assert_eq!(window(3, 10), Duration::from_millis(3334));
    }

    #[test]
    fn a_flood_of_distinct_addresses_keeps_memory_fixed_and_spares_a_quiet_client() {
        let limits = RateLimits::new(None, limit(10, 10));
        // 50,000 addresses, one request each, into a fixed sketch.
        for i in 0..50_000u32 {
            let _ = limits.admit(Some(IpAddr::V4((0x0a00_0000 + i).into())));
        }
        // A quiet client may be over-counted by the crowd sharing its cells (about three
        // each here), but keeps most of its burst.
        let quiet = admitted(&limits, "192.168.7.7", 10);
        assert!(quiet >= 5, "{quiet}");
    }
}
