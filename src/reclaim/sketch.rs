//! A frequency sketch (TinyLFU's): a count-min sketch of 4-bit counters
//! that estimates how often a file page has come into the cache lately.
//!
//! It is fed where reclaim already does work, never on a hit: each page
//! added to the LRU (a miss, a write's new page; not readahead's pages until
//! they are read), each activation (the second touch, batched under the LRU
//! lock), and each active page the aging hand finds referenced. Reclaim asks
//! it whether a page about to be evicted, or a page coming back, has been
//! wanted more often than the active list's oldest page.
//!
//! Layout: one word of sixteen 4-bit counters per slot, four slots per
//! frame rounded down to a power of two (at most 32 bytes a frame), and at
//! least 8192 slots (64 KiB). A
//! page's four counters sit in four slots picked by four hashes of its
//! identity; its estimate is their minimum, and an increment raises only
//! the counters at that minimum (conservative update). Every `period`
//! increments (40 per frame) every counter is halved, and once more at a
//! phase change (`age`), so the sketch follows a changing working set.
//! Like the shadow table it is a hint: relaxed atomics, no lock; a lost
//! increment or a torn halving costs accuracy only.

use crate::sync::{AtomicU64, AtomicUsize, Ordering};

/// The largest value a counter holds.
pub(crate) const MAX_FREQ: u32 = 15;

/// Slots (words of sixteen counters) per frame, rounded down to a power
/// of two: 32 bytes a frame, 16 counters a page of the cache. With one slot a frame the
/// collisions' noise let window pages beat resident ones on loops, which
/// the sketch should call a tie (`docs/design.md`, "The policy").
const SLOTS_PER_FRAME: usize = 4;

/// The fewest slots (64 KiB): a cache of 100 frames with 8 slots flushed
/// a loop 100 times its size on noise alone, and with 512 it did so once
/// the halving period doubled. With 2048 its collisions still admitted 69
/// pages of that loop per 100,000 accesses over pages kept from earlier
/// passes (1% of the loop cached: 0.9914 missed against 0.9908 with 8192,
/// which admits none; the policy table's 19 rows summed 7.7875 against
/// 7.7863, and 16,384 gave 7.7881).
const MIN_SLOTS: usize = 8192;

/// Increments between halvings, per frame of the cache. Caffeine halves
/// every 10 per entry, but it counts every access, and this sketch only
/// misses and a hit per turn of the hand. Measured on the policy table's
/// 19 rows once the replay was repeatable (sum of miss ratios, and the sum
/// of the excess over the best published policy on each row): 10 gave
/// 7.8307 and 0.0277, 20 7.8225 and 0.0231, 40 7.8207 and 0.0194, 80
/// 7.8216 and 0.0197; the loops did not move.
const PERIOD_PER_FRAME: usize = 40;

/// Multipliers for the four rows (odd; from splitmix and murmur).
const SEEDS: [u64; 4] = [0x9E37_79B9_7F4A_7C15, 0xBF58_476D_1CE4_E5B9, 0x94D0_49BB_1331_11EB, 0xC2B2_AE3D_27D4_EB4F];

/// The count-min sketch.
pub(crate) struct Sketch {
    table: Box<[AtomicU64]>,
    mask: usize,
    /// Increments since the last halving.
    additions: AtomicUsize,
    /// Increments between halvings.
    period: usize,
}

impl Sketch {
    /// A sketch for a cache of `frames` frames.
    pub(crate) fn new(frames: usize) -> Sketch {
        let frames = frames.max(1);
        // `SLOTS_PER_FRAME` times the largest power of two not above
        // `frames`, and at least `MIN_SLOTS`.
        let n = ((1usize << (usize::BITS - 1 - frames.leading_zeros())) * SLOTS_PER_FRAME).max(MIN_SLOTS);
        Sketch {
            table: (0..n).map(|_| AtomicU64::new(0)).collect(),
            mask: n - 1,
            additions: AtomicUsize::new(0),
            period: PERIOD_PER_FRAME * frames,
        }
    }

    /// Bytes the sketch takes (its table).
    pub(crate) fn bytes(&self) -> usize {
        self.table.len() * 8
    }

    /// The (slot, bit shift) of each of the hash's four counters.
    #[inline]
    fn counters(&self, h: u64) -> [(usize, u32); 4] {
        SEEDS.map(|seed| {
            let x = (h ^ (h >> 29)).wrapping_mul(seed);
            let x = x ^ (x >> 32);
            (x as usize & self.mask, ((x >> 58) as u32) * 4 % 64)
        })
    }

    /// The estimated frequency of the page hashed `h` (0..=15).
    #[inline]
    pub(crate) fn frequency(&self, h: u64) -> u32 {
        self.counters(h)
            .iter()
            // Relaxed: a hint (see the module's comment).
            .map(|&(slot, shift)| (self.table[slot].load(Ordering::Relaxed) >> shift) as u32 & MAX_FREQ)
            .min()
            .unwrap_or(0)
    }

    /// Counts one more occurrence of the page hashed `h` and returns its
    /// new estimate; halves every counter once per period.
    pub(crate) fn increment(&self, h: u64) -> u32 {
        let counters = self.counters(h);
        // Relaxed (loads, exchanges and the additions count): a hint.
        let values =
            counters.map(|(slot, shift)| (self.table[slot].load(Ordering::Relaxed) >> shift) as u32 & MAX_FREQ);
        let min = *values.iter().min().expect("four counters");
        if min < MAX_FREQ {
            for (&(slot, shift), &v) in counters.iter().zip(&values) {
                if v == min {
                    let w = &self.table[slot];
                    let old = w.load(Ordering::Relaxed);
                    // One attempt: losing a race loses an increment, never
                    // carries into the next counter.
                    if (old >> shift) as u32 & MAX_FREQ == min {
                        let _ = w.compare_exchange(old, old + (1 << shift), Ordering::Relaxed, Ordering::Relaxed);
                    }
                }
            }
        }
        if self.additions.fetch_add(1, Ordering::Relaxed) + 1 == self.period {
            self.halve();
            self.additions.fetch_sub(self.period, Ordering::Relaxed);
        }
        (min + 1).min(MAX_FREQ)
    }

    /// Halves every counter now, out of turn: the working set moved (a
    /// phase change), and the old one's counts would keep its pages in
    /// the main part against the new one's. The period's count goes on.
    #[cold]
    pub(crate) fn age(&self) {
        self.halve();
    }

    /// Halves every counter (TinyLFU's reset).
    fn halve(&self) {
        for w in self.table.iter() {
            // Relaxed: a hint; an increment racing this is kept or lost.
            let v = w.load(Ordering::Relaxed);
            w.store((v >> 1) & 0x7777_7777_7777_7777, Ordering::Relaxed);
        }
    }

    /// Panics unless the table is a power of two of slots, at most
    /// `SLOTS_PER_FRAME` words a frame of a cache of `frames` frames (but
    /// for the `MIN_SLOTS` floor), and the period's count is in range.
    pub(crate) fn check_invariants(&self, frames: usize) {
        assert!(self.table.len().is_power_of_two(), "sketch table not a power of two");
        assert!(
            self.table.len() <= (SLOTS_PER_FRAME * frames).max(MIN_SLOTS),
            "sketch larger than {SLOTS_PER_FRAME} words a frame"
        );
        // Relaxed: a quiet cache.
        assert!(self.additions.load(Ordering::Relaxed) < self.period, "sketch missed its halving");
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn counts_saturate_at_fifteen() {
        let s = Sketch::new(1024);
        assert_eq!(s.frequency(42), 0);
        for i in 1..=20 {
            assert_eq!(s.increment(42), i.min(MAX_FREQ));
        }
        assert_eq!(s.frequency(42), MAX_FREQ);
        s.check_invariants(1024);
    }

    #[test]
    fn frequent_keys_stand_out_from_rare_ones() {
        let s = Sketch::new(4096);
        let h = |k: u64| crate::reclaim::workingset::hash(1, k);
        for k in 0..2000 {
            s.increment(h(k));
        }
        for _ in 0..5 {
            for k in 0..50 {
                s.increment(h(k));
            }
        }
        let hot = (0..50).filter(|&k| s.frequency(h(k)) >= 5).count();
        let cold = (1000..2000).filter(|&k| s.frequency(h(k)) >= 3).count();
        assert_eq!(hot, 50);
        assert!(cold < 20, "{cold} rare keys look frequent");
    }

    #[test]
    fn halves_every_period() {
        let s = Sketch::new(16);
        let period = PERIOD_PER_FRAME * 16;
        for _ in 0..8 {
            s.increment(7);
        }
        assert_eq!(s.frequency(7), 8);
        // Other keys fill the rest of the period: the halving happens on
        // the period's last increment.
        for k in 0..(period - 8) as u64 {
            s.increment(crate::reclaim::workingset::hash(9, k));
        }
        assert!(s.frequency(7) <= 4 + 2, "not halved: {}", s.frequency(7));
        s.check_invariants(16);
    }

    #[test]
    fn at_most_four_words_a_frame_and_64_kib_at_least() {
        for frames in [1, 7, 8, 100, 1000, 1024, 1025, 100_000] {
            let s = Sketch::new(frames);
            assert!(s.bytes() <= (32 * frames).max(8 * MIN_SLOTS), "{frames}: {}", s.bytes());
            assert!(s.bytes() >= 8 * MIN_SLOTS);
            s.check_invariants(frames);
        }
        assert_eq!(Sketch::new(100_000).bytes(), 32 * 65536);
    }
}
