//! Sticky routing: the same client address to the same worker.
//!
//! Round-robin gives each new connection to the next worker, so a client's
//! second request may land on a worker that has never seen it — fine for a
//! stateless worker, fatal for sessions kept in the worker's memory. Sticky
//! routing picks the worker from the client's address instead.
//!
//! The pick is *rendezvous hashing* (highest random weight): every worker
//! slot gets a score for the address, `score(address, slot)`, and the
//! highest score wins. Why not `hash(address) % n`? Because when `n`
//! changes — a worker added, one removed — almost every address gets a new
//! worker under a modulo, while under rendezvous only the addresses whose
//! winner came or went move: about 1/n of them. The key is the *slot*, not
//! the worker id, so a replacement (same slot, new id) keeps its
//! predecessor's clients.
//!
//! The score must mix well: nearby addresses (10.0.0.1, 10.0.0.2, …) must
//! not favour one slot. [`score`] runs the address and the slot through
//! SplitMix64's finaliser, a few multiplications and shifts whose output
//! bits each depend on all the input bits.
//!
//! What stickiness by address cannot do: tell clients apart behind one
//! address. Everyone behind a NAT, a corporate proxy or a load balancer
//! arrives from the same address and lands on the same worker.

use std::net::IpAddr;

// ANCHOR: score
/// The score of `slot` for a client at `address`; the highest wins.
pub fn score(address: IpAddr, slot: u32) -> u64 {
    let bits: u128 = match address {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    };
    let folded = (bits as u64) ^ ((bits >> 64) as u64);
    mix(mix(folded) ^ u64::from(slot).wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

/// The slot among `slots` that `address` goes to; `None` for no slots.
pub fn pick(address: IpAddr, slots: impl IntoIterator<Item = u32>) -> Option<u32> {
    slots.into_iter().max_by_key(|&slot| score(address, slot))
}

/// SplitMix64's finaliser: a bijection on `u64` that spreads every input
/// bit over the whole output.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
// ANCHOR_END: score

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn addresses(n: u32) -> impl Iterator<Item = IpAddr> {
        (0..n).map(|i| IpAddr::V4(Ipv4Addr::from(0x0A00_0000 + i)))
    }

    #[test]
    fn neighbouring_addresses_spread_evenly() {
        for workers in [2u32, 3, 4, 8] {
            let mut counts = vec![0u64; workers as usize];
            for address in addresses(1000) {
                if let Some(slot) = pick(address, 0..workers) {
                    counts[slot as usize] += 1;
                }
            }
            // A fair random pick of 1,000 gives 8 workers a max − min of
            // about a third of the mean; a bad hash gives hundreds of percent.
            let spread = crate::spread::spread_pct(counts.iter().copied());
            assert!(spread < 50.0, "{workers} workers: {counts:?}");
        }
    }

    #[test]
    fn a_fifth_worker_takes_about_a_fifth_and_moves_nobody_else() {
        let mut moved = 0;
        let mut to_new = 0;
        for address in addresses(1000) {
            let before = pick(address, 0..4);
            let after = pick(address, 0..5);
            if before != after {
                moved += 1;
                if after == Some(4) {
                    to_new += 1;
                }
            }
        }
        // Every address that moved, moved to the new slot.
        assert_eq!(moved, to_new);
        assert!((120..=280).contains(&moved), "{moved} of 1000 moved");
    }
}
