//! Request ids: one per request, so a request can be followed from the client through the
//! gateway's logs to the backend. Every gateway-generated error carries it in `X-Request-Id`,
//! the backend receives it in `X-Request-Id`, and Pingora's error log lines name it.
//!
//! Ids come without a shared counter: each thread counts up from its own random start, so
//! making one costs no traffic between cores. Two threads' ranges meeting within a process's
//! lifetime is as likely as two random 64-bit numbers being a few billion apart.

use std::cell::Cell;
use std::fmt;
use std::hash::{BuildHasher, RandomState};

thread_local! {
    static NEXT: Cell<u64> = Cell::new(RandomState::new().hash_one(std::thread::current().id()));
}

/// The id of one request, shown as 16 hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RequestId(u64);

impl RequestId {
    /// A fresh id.
    pub fn next() -> Self {
        NEXT.with(|next| {
            let id = next.get();
            next.set(id.wrapping_add(1));
            RequestId(id)
        })
    }

    /// The id's 16 hex digits, written without the formatting machinery: every forwarded
    /// request carries them (`X-Request-Id`).
    pub fn hex(self) -> [u8; 16] {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut hex = [0; 16];
        for (i, digit) in hex.iter_mut().enumerate() {
            *digit = DIGITS[(self.0 >> (60 - 4 * i)) as usize & 0xf];
        }
        hex
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hex = self.hex();
        f.write_str(std::str::from_utf8(&hex).map_err(|_| fmt::Error)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_differ_within_and_across_threads() {
        let here: Vec<RequestId> = (0..3).map(|_| RequestId::next()).collect();
        let there = std::thread::spawn(RequestId::next).join().unwrap();
        assert_ne!(here[0], here[1]);
        assert_ne!(here[1], here[2]);
        assert!(!here.contains(&there));
        assert_eq!(here[0].to_string().len(), 16);
    }

    #[test]
    fn ids_show_as_16_hex_digits() {
        for id in [0, 1, 0xabc, u64::MAX, 0x0123_4567_89ab_cdef] {
            let id = RequestId(id);
            assert_eq!(id.to_string(), format!("{:016x}", id.0));
        }
    }
}
