//! Tiers one behind another, as CacheLib's hybrid cache puts its flash
//! cache behind its memory cache (and foyer its disk engine behind its
//! memory one): the compressed tier in front of the disk tier.
//!
//! Puts go to every tier (each may refuse; the disk keeps a copy that
//! survives a restart, memory a fast one); a get asks the tiers in order
//! and stops at the first hit; invalidations and file events go to all of
//! them, so each keeps cleancache's contract and so does the stack. A get
//! that hits the tier behind does not copy the page forward: the cache now
//! holds it in memory, and puts it again when it evicts it.

use std::sync::Arc;

use super::{FileKey, FileVersion, SecondTier, TierUsage};

/// Tiers asked in order (see the module docs).
pub struct TierStack {
    tiers: Vec<Arc<dyn SecondTier>>,
}

impl TierStack {
    /// A stack of `tiers`, the first asked first.
    pub fn new(tiers: Vec<Arc<dyn SecondTier>>) -> TierStack {
        TierStack { tiers }
    }

    /// The tiers, first asked first.
    pub fn tiers(&self) -> &[Arc<dyn SecondTier>] {
        &self.tiers
    }
}

impl SecondTier for TierStack {
    fn put_page(&self, file: &FileKey, index: u64, data: &[u8]) -> bool {
        // Every tier: `|` so none is skipped.
        self.tiers.iter().fold(false, |kept, t| t.put_page(file, index, data) | kept)
    }

    fn get_page(&self, file: &FileKey, index: u64, out: &mut [u8]) -> bool {
        self.tiers.iter().any(|t| t.get_page(file, index, out))
    }

    fn invalidate_page(&self, file: &FileKey, index: u64) {
        self.tiers.iter().for_each(|t| t.invalidate_page(file, index));
    }

    fn invalidate_range(&self, file: &FileKey, start: u64, end: u64) {
        self.tiers.iter().for_each(|t| t.invalidate_range(file, start, end));
    }

    fn invalidate_file(&self, file: &FileKey) {
        self.tiers.iter().for_each(|t| t.invalidate_file(file));
    }

    fn exclusive_gets(&self) -> bool {
        // The page stays in every tier but an exclusive one: the cache
        // must put it again when it evicts it unless all tiers keep it.
        self.tiers.iter().any(|t| t.exclusive_gets())
    }

    fn open_file(&self, file: &FileKey, version: &FileVersion) {
        self.tiers.iter().for_each(|t| t.open_file(file, version));
    }

    fn file_written(&self, file: &FileKey, version: &FileVersion) {
        self.tiers.iter().for_each(|t| t.file_written(file, version));
    }

    fn persists(&self) -> bool {
        self.tiers.iter().any(|t| t.persists())
    }

    fn flush_puts(&self) {
        self.tiers.iter().for_each(|t| t.flush_puts());
    }

    fn usage(&self) -> TierUsage {
        self.tiers.iter().map(|t| t.usage()).fold(TierUsage::default(), |a, u| TierUsage {
            pages: a.pages + u.pages,
            bytes: a.bytes + u.bytes,
            logical_bytes: a.logical_bytes + u.logical_bytes,
            stored_bytes: a.stored_bytes + u.stored_bytes,
            rejects: a.rejects + u.rejects,
            evictions: a.evictions + u.evictions,
        })
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::tier::compressed::CompressedTier;

    #[test]
    fn a_stack_keeps_the_contract() {
        let a: Arc<dyn SecondTier> = Arc::new(CompressedTier::new(1 << 20));
        let b: Arc<dyn SecondTier> = Arc::new(CompressedTier::new(1 << 20).with_exclusive_gets(true));
        let s = TierStack::new(vec![a.clone(), b.clone()]);
        let key = FileKey { dev: 1, ino: 2, generation: 3, page_shift: 12 };
        let mut out = vec![0u8; 4096];
        assert!(!s.get_page(&key, 0, &mut out));
        assert!(s.put_page(&key, 0, &[1u8; 4096]));
        assert!(s.put_page(&key, 0, &[2u8; 4096]));
        assert!(s.get_page(&key, 0, &mut out) && out.iter().all(|&x| x == 2));
        // The front tier dropped it: the one behind serves the newest.
        a.invalidate_page(&key, 0);
        assert!(s.get_page(&key, 0, &mut out) && out.iter().all(|&x| x == 2));
        s.put_page(&key, 1, &[3u8; 4096]);
        s.invalidate_range(&key, 0, 2);
        assert!(!s.get_page(&key, 1, &mut out));
        assert!(s.exclusive_gets());
        assert_eq!(s.usage().pages, 0);
    }
}
