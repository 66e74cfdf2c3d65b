//! Refault detection, following `mm/workingset.c` with the test period of
//! CLOCK-Pro: when reclaim evicts a page it leaves a shadow of the page's
//! LRU stamp; when the same file page comes back, the shadow says whether
//! it was still "in its test period", i.e. inserted after the oldest page
//! the active list's aging hand has passed. A page that refaults inside its
//! test period was reused sooner than the coldest active page: it starts
//! on the active list instead of the inactive one, if it has also come in
//! more often than the active list's oldest page by the frequency sketch
//! (`sketch`; see `Zone::lru_cache_add`).
//!
//! This is what lets the cache keep a stable set on a loop a little larger
//! than itself, where plain LRU (and the two-touch rule alone) misses on
//! every access: once the hand has passed the loop's first pass, refaults
//! no longer displace active pages, so most of the loop stays resident.
//!
//! Shadows live in a direct-mapped table of one word per slot (a tag from
//! the page's hash and its stamp), one slot per frame rounded up to a power
//! of two. A shadow lost to a collision only costs an activation; a false
//! match needs a 24-bit tag collision and costs one activation too. The
//! table is a hint: no lock, relaxed atomics.

use crate::sync::{AtomicU64, Ordering};

/// Bits of the stamp kept in a shadow (the rest is the tag).
const STAMP_BITS: u32 = 40;
const STAMP_MASK: u64 = (1 << STAMP_BITS) - 1;

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
    /// A table for a cache of `frames` frames.
    pub(crate) fn new(frames: usize) -> Shadows {
        let n = frames.max(1).next_power_of_two();
        Shadows { slots: (0..n).map(|_| AtomicU64::new(0)).collect(), mask: n - 1 }
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
