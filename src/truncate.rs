//! Truncation, following `mm/truncate.c` (`truncate_inode_pages_range`,
//! `truncate_pagecache`, `invalidate_mapping_pages`): pages past the new end
//! leave the cache in two passes (skip busy pages, then wait for them), and
//! the partial last page is zeroed past the end.

use std::io;

use crate::mapping::AddressSpace;
use crate::PAGE_SIZE;

/// Batch size of the truncation walks.
const BATCH: usize = 64;

/// Removes every page at index `start` or above from the cache.
pub(crate) fn truncate_pages_from(m: &AddressSpace, start: u64) {
    // Pass 1: take what is idle.
    let mut index = start;
    loop {
        let pages = m.find_get_pages(index, BATCH);
        let Some(last) = pages.last().map(|p| p.index()) else { break };
        for page in pages {
            if page.is_writeback() {
                continue;
            }
            if let Ok(locked) = page.try_lock() {
                if !locked.is_writeback() {
                    m.delete_from_page_cache(&locked);
                }
            }
        }
        if last == u64::MAX {
            break;
        }
        index = last + 1;
    }
    // Pass 2: wait for the busy ones.
    loop {
        let pages = m.find_get_pages(start, BATCH);
        if pages.is_empty() {
            break;
        }
        for page in pages {
            let locked = page.lock();
            locked.wait_on_page_writeback();
            m.delete_from_page_cache(&locked);
        }
    }
}

/// Changes the size of the file to `new`: `set_len`.
pub(crate) fn set_len(m: &AddressSpace, new: u64) -> io::Result<()> {
    let _size = m.size_lock.lock();
    let old = m.size();
    let backing = m.backing();
    if new >= old {
        backing.set_len(new)?;
        m.set_size(new);
        return Ok(());
    }
    // The file first: if it refuses the size, nothing has changed yet.
    backing.set_len(new)?;
    // Readers and writeback see the new size next, so nothing past it is
    // read from or written to the file from here on.
    m.set_size(new);
    let ps = PAGE_SIZE as u64;
    truncate_pages_from(m, new.div_ceil(ps));
    if new % ps != 0 {
        if let Some(mut page) = m.find_lock_page(new / ps) {
            let from = (new % ps) as usize;
            page.data_mut()[from..].fill(0);
        }
    }
    // A writeback that raced the first call may have written past `new`.
    backing.set_len(new)
}
