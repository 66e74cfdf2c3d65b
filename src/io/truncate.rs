//! Truncation, following `mm/truncate.c` (`truncate_inode_pages_range`,
//! `truncate_pagecache`, `invalidate_mapping_pages`): pages past the new end
//! leave the cache in two passes (skip busy pages, then wait for them), and
//! the partial last page is zeroed past the end.

use std::io;

use crate::index::mapping::AddressSpace;
use crate::PAGE_SIZE;

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
    m.truncate_pages_from(new.div_ceil(ps));
    if new % ps != 0 {
        if let Some(mut page) = m.find_lock_page(new / ps) {
            let from = (new % ps) as usize;
            page.data_mut()[from..].fill(0);
        }
    }
    // A writeback that raced the first call may have written past `new`.
    backing.set_len(new)
}
