//! Refault detection, following `mm/workingset.c` with the test period of
//! CLOCK-Pro: when reclaim evicts a page inside its test period (its LRU
//! stamp is newer than the last stamp the active list's hand passed) it
//! leaves a shadow of that stamp; when the same file page comes back, the
//! shadow is consumed, the refault counted, and its stamp kept with the
//! page (`Lru::note_refault`). During a phase change the window's tail
//! admits such a page over a main victim last found referenced before the
//! page was last used (LIRS's test: its reuse distance is below the
//! victim's recency; see `lru`).
//!
//! Shadows live in a direct-mapped table of one word per slot (a tag from
//! the page's hash and its stamp), four slots per frame rounded up to a
//! power of two (the memory is fixed when the cache is built). A shadow
//! lost to a collision only costs a recency admission; a false match needs
//! a 24-bit tag collision and costs one admission too. The table is a
//! hint: no lock, relaxed atomics.

use crate::sync::{AtomicU64, Ordering};

/// Bits of the stamp kept in a shadow (the rest is the tag).
const STAMP_BITS: u32 = 40;
const STAMP_MASK: u64 = (1 << STAMP_BITS) - 1;

/// Shadow slots per frame of the cache (32 bytes a frame). A loop
/// slightly larger than the cache leaves a shadow per page it evicts, and
/// with one slot a frame nearly half of them were overwritten before the
/// loop came back to them: the phases trace at 40% missed 0.187 instead
/// of 0.171 (`docs/design.md`, "The policy").
const SLOTS_PER_FRAME: usize = 4;

/// The shadow table.
pub(crate) struct Shadows {
    slots: Box<[AtomicU64]>,
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
        let n = (SLOTS_PER_FRAME * frames.max(1)).next_power_of_two();
        Shadows { slots: (0..n).map(|_| AtomicU64::new(0)).collect(), mask: n - 1 }
    }

    /// Bytes the table takes.
    pub(crate) fn bytes(&self) -> usize {
        self.slots.len() * 8
    }

    #[inline]
    fn slot(&self, h: u64) -> &AtomicU64 {
        &self.slots[h as usize & self.mask]
    }

    /// Records the eviction of page `index` of `mapping` whose LRU stamp was
    /// `stamp` (`workingset_eviction`).
    #[inline]
    pub(crate) fn remember(&self, mapping: u32, index: u64, stamp: u64) {
        let h = hash(mapping, index);
        // The tag is the hash's top bits. Stamps start at 1, so a used slot
        // is never 0 (but for a stamp that wrapped to 0: a lost shadow).
        let word = (h >> STAMP_BITS << STAMP_BITS) | (stamp & STAMP_MASK);
        // Relaxed: the table is a hint; no other memory is published with it.
        self.slot(h).store(word, Ordering::Relaxed);
    }

    /// Consumes the shadow of page `index` of `mapping`, if there is one,
    /// and returns the stamp the page had when it was evicted
    /// (`workingset_refault`).
    #[inline]
    pub(crate) fn take(&self, mapping: u32, index: u64) -> Option<u64> {
        let h = hash(mapping, index);
        let slot = self.slot(h);
        // Relaxed: a hint (see `remember`).
        let word = slot.load(Ordering::Relaxed);
        if word == 0 || (word ^ h) >> STAMP_BITS != 0 {
            return None;
        }
        // Relaxed: whoever wins the exchange consumes the shadow; losing to
        // a new shadow for another page just means no activation.
        slot.compare_exchange(word, 0, Ordering::Relaxed, Ordering::Relaxed).ok()?;
        Some(word & STAMP_MASK)
    }
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
        s.remember(1, 5, 77);
        assert_eq!(s.take(1, 6), None, "another index");
        assert_eq!(s.take(2, 5), None, "another mapping");
        assert_eq!(s.take(1, 5), Some(77));
        assert_eq!(s.take(1, 5), None, "a shadow is consumed");
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
