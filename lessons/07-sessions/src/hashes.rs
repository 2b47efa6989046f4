//! Which worker a client address goes to: the usual answer's hash, and
//! rendezvous hashing.
//!
//! The usual sticky-session snippet is `parseInt(md5(ip), 16) % workers`.
//! An MD5 digest is 128 bits; `parseInt` turns its 32 hex digits into a
//! JavaScript number, a double, which keeps only the top 53 significant
//! bits. Unless the digest starts with 73 zero bits, the number is then a
//! multiple of a large power of two (2⁷⁵ when the top bit is set), so
//! `% 2`, `% 4` and `% 8` are 0: with a power-of-two worker count, every
//! client lands on the first worker. (With three workers the remainder of
//! the rounded number still varies, which is why the bug hides in small
//! tests.) [`usual`] computes it exactly as
//! JavaScript does: the nearest double to the 128-bit value, then the
//! floating-point remainder.
//!
//! The supervisor's sticky routing uses rendezvous hashing instead
//! ([`supervisor::sticky`]); [`spread`] counts both over the same addresses.

use std::net::{IpAddr, Ipv4Addr};

use md_5::{Digest, Md5};
use serde::Serialize;

// ANCHOR: usual
/// The usual answer's pick for `address` among `workers`, as JavaScript
/// computes `parseInt(md5hex, 16) % workers`.
pub fn usual(address: &str, workers: u32) -> u32 {
    let digest: [u8; 16] = Md5::digest(address.as_bytes()).into();
    // `as f64` rounds a u128 to the nearest double, ties to even: what
    // parseInt returns for a hex string of more than 53 significant bits.
    let number = u128::from_be_bytes(digest) as f64;
    (number % f64::from(workers)) as u32
}
// ANCHOR_END: usual

/// One row of the table: how `addresses` spread over `workers` under each.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Spread {
    pub workers: u32,
    pub usual: Vec<u64>,
    pub rendezvous: Vec<u64>,
}

/// The first `count` addresses of 10.0.0.0/16, as the table uses them.
pub fn addresses(count: u32) -> impl Iterator<Item = Ipv4Addr> {
    (0..count).map(|i| Ipv4Addr::new(10, 0, (i / 256) as u8, (i % 256) as u8))
}

/// Both hashes over the first `count` addresses, for `workers` workers.
/// Column *i* is the *i*-th worker: for the usual hash, `% workers == i`;
/// for rendezvous, slot *i + 1* — slots are numbered from 1, as the
/// cluster numbers them, so this is the assignment a real cluster makes.
pub fn spread(count: u32, workers: u32) -> Spread {
    let mut usual_counts = vec![0u64; workers as usize];
    let mut rendezvous = vec![0u64; workers as usize];
    for address in addresses(count) {
        usual_counts[usual(&address.to_string(), workers) as usize] += 1;
        if let Some(slot) = supervisor::sticky::pick(IpAddr::V4(address), 1..=workers) {
            rendezvous[(slot - 1) as usize] += 1;
        }
    }
    Spread {
        workers,
        usual: usual_counts,
        rendezvous,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values printed by Node 20 (`parseInt(hex, 16) % n` of each address's
    /// MD5), to check that [`usual`] is JavaScript's arithmetic, not ours.
    #[test]
    fn the_usual_hash_matches_node() {
        assert_eq!(usual("10.0.0.1", 3), 2);
        assert_eq!(usual("10.0.0.1", 7), 6);
        assert_eq!(usual("192.168.1.7", 3), 1);
        assert_eq!(usual("192.168.1.7", 7), 3);
        assert_eq!(usual("127.0.0.1", 3), 0);
    }

    #[test]
    fn with_a_power_of_two_every_client_lands_on_worker_zero() {
        // Node 20 printed: 2: 1000/0, 3: 316/351/333, 4: 1000/0/0/0, 8: 1000/0/…
        assert_eq!(spread(1000, 2).usual, [1000, 0]);
        assert_eq!(spread(1000, 3).usual, [316, 351, 333]);
        assert_eq!(spread(1000, 4).usual, [1000, 0, 0, 0]);
        assert_eq!(spread(1000, 8).usual, [1000, 0, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn rendezvous_uses_every_worker() {
        for workers in [2, 3, 4, 8] {
            let row = spread(1000, workers);
            assert!(
                row.rendezvous
                    .iter()
                    .all(|&n| n > 1000 / u64::from(workers) / 2),
                "{row:?}"
            );
        }
    }
}
