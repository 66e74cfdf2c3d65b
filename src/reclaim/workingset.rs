//! Refault detection, following `mm/workingset.c` with the test period of
//! CLOCK-Pro: when reclaim evicts a page inside its test period (its LRU
//! stamp is newer than the last stamp the active list's hand passed) it
//! leaves a shadow of that stamp; when the same file page comes back, the
//! shadow is consumed, the refault counted, and its stamp kept with the
//! page (`Lru::note_refault`). When the recency test decides, the
//! window's tail admits such a page over the main page used longest ago
//! if that was before the page's last use (LIRS's test: its reuse distance
//! is below that page's recency; see `lru`). A page evicted by a decision
//! between the frequency and the recency test leaves a shadow whatever its
//! test period, marked with its `Kind`, so its refault votes
//! (`Lru::note_regret`).
//!
//! Shadows live in a table of one word per slot (a tag from the page's
//! hash, its stamp and its kind), four slots per frame rounded up to a
//! power of two (the memory is fixed when the cache is built), in buckets
//! of `WAYS` slots (half a cache line): a shadow goes to an empty slot of
//! its bucket, or over the bucket's oldest. Direct-mapped, a loop of 20k
//! pages in a 131k-slot table lost 30% of its shadows each pass to the
//! 14% of its pages that share a slot with another of them, and those
//! pages could never pass the recency test. A shadow lost anyway only
//! costs a recency admission; a false match needs a 22-bit tag collision
//! and costs one admission too. The table is a hint: no lock, relaxed
//! atomics.

use crate::sync::{AtomicU64, Ordering};

/// Bits of the stamp kept in a shadow (then 22 bits of tag and 2 of kind).
const STAMP_BITS: u32 = 40;
const STAMP_MASK: u64 = (1 << STAMP_BITS) - 1;
/// Where a shadow's kind sits (`Kind`).
const KIND_SHIFT: u32 = 62;
const TAG_MASK: u64 = ((1 << KIND_SHIFT) - 1) & !STAMP_MASK;

/// Why a page left: a plain eviction, or one of the two ways the
/// admission test at the window's tail decided between frequency and
/// recency, whose refaults are the regrets that arbitrate between them
/// (`Lru::note_regret`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Evicted by the ordinary order of the lists.
    Plain = 0,
    /// A window candidate the frequency test turned away though it had come
    /// back from an eviction (the recency test was not asked): its stamp is
    /// its last use.
    FrequencyRejected = 1,
    /// A main page the recency test evicted for a candidate the frequency
    /// test turned away: its stamp is the clock when it went.
    RecencyEvicted = 2,
}

impl Kind {
    /// The kind kept in the top bits of `word`.
    #[inline]
    pub(crate) fn of(word: u64) -> Kind {
        match word >> KIND_SHIFT {
            1 => Kind::FrequencyRejected,
            2 => Kind::RecencyEvicted,
            _ => Kind::Plain,
        }
    }

    /// `stamp` with this kind in its top bits (stamps stay below 2^62).
    #[inline]
    pub(crate) fn mark(self, stamp: u64) -> u64 {
        (stamp & !(3 << KIND_SHIFT)) | (self as u64) << KIND_SHIFT
    }

    /// `word` without its kind.
    #[inline]
    pub(crate) fn strip(word: u64) -> u64 {
        word & !(3 << KIND_SHIFT)
    }
}

/// Shadow slots per frame of the cache (32 bytes a frame). A loop
/// slightly larger than the cache leaves a shadow per page it evicts, and
/// with one slot a frame nearly half of them were overwritten before the
/// loop came back to them: the phases trace at 40% missed 0.187 instead
/// of 0.171 (`docs/design.md`, "The policy").
const SLOTS_PER_FRAME: usize = 4;

/// Slots a shadow may take: one bucket.
const WAYS: usize = 4;

/// The shadow table.
pub(crate) struct Shadows {
    slots: Box<[AtomicU64]>,
    /// Masks a hash to its bucket's first slot.
    mask: usize,
}

/// A 64-bit mix of a file page's identity (splitmix64's finalizer).
#[inline]
pub(crate) fn hash(mapping: u32, index: u64) -> u64 {
    let mut x = index ^ (u64::from(mapping) << 44) ^ u64::from(mapping).rotate_left(17);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

impl Shadows {
    /// A table for a cache of `frames` frames: `SLOTS_PER_FRAME` slots a
    /// frame, rounded up to a power of two.
    pub(crate) fn new(frames: usize) -> Shadows {
        let n = (SLOTS_PER_FRAME * frames.max(1)).next_power_of_two().max(WAYS);
        Shadows { slots: (0..n).map(|_| AtomicU64::new(0)).collect(), mask: (n - 1) & !(WAYS - 1) }
    }

    /// Bytes the table takes.
    pub(crate) fn bytes(&self) -> usize {
        self.slots.len() * 8
    }

    /// The bucket of hash `h`.
    #[inline]
    fn bucket(&self, h: u64) -> &[AtomicU64] {
        let first = h as usize & self.mask;
        &self.slots[first..first + WAYS]
    }

    /// Records the eviction of page `index` of `mapping` whose LRU stamp was
    /// `stamp`, evicted as `kind` says (`workingset_eviction`).
    #[inline]
    pub(crate) fn remember(&self, mapping: u32, index: u64, stamp: u64, kind: Kind) {
        let h = hash(mapping, index);
        // The tag is the hash's top bits. Stamps start at 1, so a used slot
        // is never 0 (but for a stamp that wrapped to 0: a lost shadow).
        let word = (h & TAG_MASK) | (stamp & STAMP_MASK) | (kind as u64) << KIND_SHIFT;
        // The page's own old shadow, else an empty slot, else the oldest.
        let bucket = self.bucket(h);
        let mut victim = 0;
        let mut oldest = 0;
        for (i, slot) in bucket.iter().enumerate() {
            // Relaxed: the table is a hint; no other memory is published with it.
            let w = slot.load(Ordering::Relaxed);
            if w == 0 || (w ^ h) & TAG_MASK == 0 {
                victim = i;
                break;
            }
            // A shadow stamped after this one (a decision's clock) is young.
            let age = age(w & STAMP_MASK, stamp);
            let age = if age < 1 << (STAMP_BITS - 1) { age } else { 0 };
            if age >= oldest {
                (victim, oldest) = (i, age);
            }
        }
        // Relaxed: as above; a racing remember may win the slot, which
        // only loses one shadow.
        bucket[victim].store(word, Ordering::Relaxed);
    }

    /// Consumes the shadow of page `index` of `mapping`, if there is one,
    /// and returns the stamp the page had when it was evicted and how it
    /// was evicted (`workingset_refault`).
    #[inline]
    pub(crate) fn take(&self, mapping: u32, index: u64) -> Option<(u64, Kind)> {
        let h = hash(mapping, index);
        for slot in self.bucket(h) {
            // Relaxed: a hint (see `remember`).
            let word = slot.load(Ordering::Relaxed);
            if word == 0 || (word ^ h) & TAG_MASK != 0 {
                continue;
            }
            // Relaxed: whoever wins the exchange consumes the shadow; losing
            // to a new shadow for another page just means no activation.
            slot.compare_exchange(word, 0, Ordering::Relaxed, Ordering::Relaxed).ok()?;
            return Some((word & STAMP_MASK, Kind::of(word)));
        }
        None
    }
}

/// Additions from a shadow's `stamp` to the clock `now`, in the 40 bits a
/// shadow keeps.
#[inline]
pub(crate) fn age(stamp: u64, now: u64) -> u64 {
    now.wrapping_sub(stamp) & STAMP_MASK
}

/// Whether a shadow stamp is still in its test period: newer than the last
/// stamp the aging hand passed. Stamps are compared in the 40 bits a
/// shadow keeps.
#[inline]
pub(crate) fn in_test_period(stamp: u64, hand: u64) -> bool {
    let d = stamp.wrapping_sub(hand) & STAMP_MASK;
    d != 0 && d < 1 << (STAMP_BITS - 1)
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn remember_then_take_once() {
        let s = Shadows::new(64);
        assert_eq!(s.take(1, 5), None);
        s.remember(1, 5, 77, Kind::RecencyEvicted);
        assert_eq!(s.take(1, 6), None, "another index");
        assert_eq!(s.take(2, 5), None, "another mapping");
        assert_eq!(s.take(1, 5), Some((77, Kind::RecencyEvicted)));
        assert_eq!(s.take(1, 5), None, "a shadow is consumed");
    }

    #[test]
    fn a_bucket_keeps_four_shadows_and_drops_its_oldest() {
        let s = Shadows::new(64);
        // Five pages whose hashes fall in one bucket.
        let first = hash(3, 0) as usize & s.mask;
        let same: Vec<u64> = (0..1_000_000).filter(|&i| hash(3, i) as usize & s.mask == first).take(5).collect();
        assert_eq!(same.len(), 5);
        for (n, &i) in same[..4].iter().enumerate() {
            s.remember(3, i, 100 + n as u64, Kind::Plain);
        }
        // A page's shadow again takes its own slot, not another's.
        s.remember(3, same[3], 103, Kind::Plain);
        // The fifth goes over the oldest (stamp 100, the first page's).
        s.remember(3, same[4], 104, Kind::Plain);
        assert_eq!(s.take(3, same[0]), None, "the oldest shadow went");
        for (n, &i) in same[1..].iter().enumerate() {
            assert_eq!(s.take(3, i), Some((101 + n as u64, Kind::Plain)), "page {i}");
        }
        assert!(s.slots.iter().all(|w| w.load(Ordering::Relaxed) == 0), "every shadow taken");
    }

    #[test]
    fn test_period_is_after_the_hand() {
        assert!(in_test_period(10, 9));
        assert!(!in_test_period(9, 9));
        assert!(!in_test_period(8, 9));
        // Across the 40-bit wrap.
        assert!(in_test_period(2, STAMP_MASK - 1));
        assert!(!in_test_period(STAMP_MASK - 1, 2));
    }
}
