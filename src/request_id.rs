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

    /// The id's 16 hex digits, written without the formatting machinery or a loop: every
    /// forwarded request carries them (`X-Request-Id`). Each half's eight nibbles are spread
    /// into the eight bytes of a word, and each byte is made a digit at once.
    pub fn hex(self) -> [u8; 16] {
        let mut hex = [0; 16];
        hex[..8].copy_from_slice(&hex_digits((self.0 >> 32) as u32));
        hex[8..].copy_from_slice(&hex_digits(self.0 as u32));
        hex
    }
}

/// The eight hex digits of `half`, most significant first.
fn hex_digits(half: u32) -> [u8; 8] {
    const ONES: u64 = 0x0101_0101_0101_0101;
    // Each nibble into a byte of its own, in order: halves, then quarters, then nibbles.
    let x = u64::from(half);
    let x = ((x & 0xffff_0000) << 16) | (x & 0xffff);
    let x = ((x & 0x0000_ff00_0000_ff00) << 8) | (x & 0x0000_00ff_0000_00ff);
    let x = ((x & 0x00f0_00f0_00f0_00f0) << 4) | (x & 0x000f_000f_000f_000f);
    // A byte over 9 carries into its high nibble when 6 is added: those bytes are letters,
    // `'a' - '0' - 10` (39) further on than a digit.
    let letters = ((x + 6 * ONES) >> 4) & ONES;
    (x + u64::from(b'0') * ONES + letters * 39).to_be_bytes()
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
        for id in [
            0,
            1,
            0xabc,
            9,
            10,
            u64::MAX,
            0x0123_4567_89ab_cdef,
            0xfedc_ba98_7654_3210,
            0x9a9a_a9a9_0f0f_f0f0,
        ] {
            let id = RequestId(id);
            assert_eq!(id.to_string(), format!("{:016x}", id.0));
        }
        // Every digit in every place.
        for place in 0..16 {
            for digit in 0..16u64 {
                let id =
                    RequestId(digit << (4 * place) | 0x5555_5555_5555_5555 & !(0xf << (4 * place)));
                assert_eq!(id.to_string(), format!("{:016x}", id.0));
            }
        }
    }
}
