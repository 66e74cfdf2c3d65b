//! Batches of page references released together, following `mm/swap.c`
//! (`release_pages`, `__pagevec_release`, `put_pages_list`) and the
//! kernel's `struct pagevec` (`include/linux/pagevec.h`): pages whose count
//! reaches zero leave the LRU under one acquisition of the LRU lock and go
//! back to the buddy pool, to the cold end of the free lists if asked.

use crate::mem::page::{Page, PageFlags, PageRef};
use crate::mem::zone::Zone;
use crate::reclaim::lru::PAGEVEC_SIZE;

/// Up to [`PAGEVEC_SIZE`] page references, released together.
pub struct PageVec<'a> {
    pages: [Option<&'a Page>; PAGEVEC_SIZE],
    nr: usize,
    zone: Option<&'a Zone>,
    /// Freed frames go to the cold end of the free lists.
    pub cold: bool,
}

impl Default for PageVec<'_> {
    fn default() -> Self {
        PageVec::new()
    }
}

impl<'a> PageVec<'a> {
    /// An empty batch.
    pub fn new() -> PageVec<'a> {
        PageVec { pages: [None; PAGEVEC_SIZE], nr: 0, zone: None, cold: false }
    }

    /// An empty batch whose freed frames go to the cold end of the free lists.
    pub fn new_cold() -> PageVec<'a> {
        PageVec { cold: true, ..PageVec::new() }
    }

    /// Adds a reference; returns the room left (0: full, release it). A page
    /// added to a full batch is released at once.
    pub fn add(&mut self, page: PageRef<'a>) -> usize {
        if self.nr == PAGEVEC_SIZE {
            drop(page);
            return 0;
        }
        let zone = page.zone;
        if let Some(z) = self.zone {
            assert!(std::ptr::eq(z, zone), "a PageVec holds pages of one cache");
        }
        self.zone = Some(zone);
        self.pages[self.nr] = Some(page.into_raw());
        self.nr += 1;
        PAGEVEC_SIZE - self.nr
    }

    /// Number of references held.
    pub fn len(&self) -> usize {
        self.nr
    }

    /// Whether the batch is empty.
    pub fn is_empty(&self) -> bool {
        self.nr == 0
    }

    /// Room left.
    pub fn space(&self) -> usize {
        PAGEVEC_SIZE - self.nr
    }

    fn take(&mut self) -> Vec<&'a Page> {
        let v = self.pages[..self.nr].iter_mut().map(|p| p.take().expect("slot filled")).collect();
        self.nr = 0;
        v
    }

    #[doc(alias = "pagevec_release")]
    #[doc(alias = "release_pages")]
    /// Drops every reference (`pagevec_release`); pages that reach zero come
    /// off the LRU together and return to the buddy pool.
    pub fn release(&mut self) {
        if let Some(zone) = self.zone {
            let pages = self.take();
            release_pages(zone, &pages, self.cold);
        }
    }

    #[doc(alias = "pagevec_free")]
    /// Frees pages the caller knows are at zero references and off the LRU
    /// (`pagevec_free`). Panics if one is still referenced or on the LRU.
    pub fn free(&mut self) {
        if let Some(zone) = self.zone {
            for p in self.take() {
                // Drop the batch's own reference: it must be the last one.
                assert!(p.put_page_testzero(), "pagevec_free of a page still referenced");
                assert!(!p.test(PageFlags::LRU), "pagevec_free of a page on the LRU");
                zone.buddy.free(&zone.pages, zone.page_to_pfn(p), 0, self.cold);
            }
        }
    }

    #[doc(alias = "pagevec_release_nonlru")]
    /// Drops references to pages that were never on the LRU
    /// (`pagevec_release_nonlru`).
    pub fn release_nonlru(&mut self) {
        if let Some(zone) = self.zone {
            for p in self.take() {
                assert!(!p.test(PageFlags::LRU), "pagevec_release_nonlru of an LRU page");
                if p.put_page_testzero() {
                    zone.buddy.free(&zone.pages, zone.page_to_pfn(p), 0, self.cold);
                }
            }
        }
    }
}

impl Drop for PageVec<'_> {
    fn drop(&mut self) {
        self.release();
    }
}

/// Drops one reference to each page; those reaching zero leave the LRU
/// under a single LRU lock and go back to the pool (`release_pages`).
pub(crate) fn release_pages(zone: &Zone, pages: &[&Page], cold: bool) {
    let mut dead: Vec<&Page> = Vec::new();
    for &p in pages {
        if p.put_page_testzero() {
            dead.push(p);
        }
    }
    if dead.iter().any(|p| p.test(PageFlags::LRU)) {
        let mut lists = zone.lru.lock();
        for p in &dead {
            if p.test(PageFlags::LRU) {
                lists.del(&zone.pages, zone.page_to_pfn(p));
            }
        }
    }
    for p in dead {
        zone.buddy.free(&zone.pages, zone.page_to_pfn(p), 0, cold);
    }
}

/// Releases a list of references of any length (`put_pages_list`).
pub fn put_pages_list(pages: Vec<PageRef<'_>>) {
    let Some(zone) = pages.first().map(|p| p.zone) else { return };
    let raw: Vec<&Page> = pages.into_iter().map(PageRef::into_raw).collect();
    release_pages(zone, &raw, false);
}
