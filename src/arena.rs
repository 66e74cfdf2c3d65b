//! The frame arena: one anonymous mapping carved into 4 KiB frames, following
//! the kernel's flat memory model (`mm/memblock.c`, `include/asm-generic/memory_model.h`).
//!
//! Frame `pfn` lives at `base + pfn * PAGE_SIZE`. The arena is the only
//! module that turns frame numbers into addresses and back.

use std::io;

use memmap2::MmapMut;

use crate::PAGE_SIZE;

/// Largest number of frames a cache may hold (frame numbers are `u32`, and
/// `u32::MAX` is reserved as the "no frame" link).
pub const MAX_FRAMES: usize = u32::MAX as usize;

/// One anonymous mapping holding every frame of a cache.
pub(crate) struct Arena {
    /// Keeps the mapping alive; never resized or remapped.
    _map: MmapMut,
    /// `map.as_mut_ptr()`, cached: the mapping never moves.
    base: *mut u8,
    nr_frames: u32,
}

// SAFETY: the arena is a plain block of memory owned by the mapping; access
// to the bytes of each frame is synchronized by the page protocols (page lock
// and read guards), never by the arena itself.
unsafe impl Send for Arena {}
// SAFETY: as above; `&Arena` only hands out addresses, not references.
unsafe impl Sync for Arena {}

impl Arena {
    /// Maps `nr_frames` frames; `huge_pages` asks for transparent huge pages.
    pub(crate) fn new(nr_frames: usize, huge_pages: bool) -> io::Result<Arena> {
        if nr_frames == 0 || nr_frames > MAX_FRAMES {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("a cache holds 1 to {MAX_FRAMES} frames of {PAGE_SIZE} bytes, not {nr_frames}"),
            ));
        }
        let len = nr_frames
            .checked_mul(PAGE_SIZE)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "cache capacity overflows"))?;
        let mut map = MmapMut::map_anon(len)?;
        #[cfg(target_os = "linux")]
        if huge_pages {
            // Advice only: a kernel without THP refuses, and 4K pages still work.
            let _ = map.advise(memmap2::Advice::HugePage);
        }
        #[cfg(not(target_os = "linux"))]
        let _ = huge_pages;
        let base = map.as_mut_ptr();
        Ok(Arena { _map: map, base, nr_frames: nr_frames as u32 })
    }

    /// Address of frame `pfn` (the kernel's `page_address`).
    #[inline]
    pub(crate) fn page_address(&self, pfn: u32) -> *mut u8 {
        assert!(pfn < self.nr_frames, "pfn {pfn} outside the arena");
        // SAFETY: pfn < nr_frames, so the offset is inside the mapping of
        // nr_frames * PAGE_SIZE bytes that `base` starts.
        unsafe { self.base.add(pfn as usize * PAGE_SIZE) }
    }

    /// Frame number of an address inside the arena (the kernel's `virt_to_page`).
    #[inline]
    pub(crate) fn virt_to_pfn(&self, addr: *const u8) -> Option<u32> {
        let off = (addr as usize).wrapping_sub(self.base as usize);
        (off < self.nr_frames as usize * PAGE_SIZE).then_some((off / PAGE_SIZE) as u32)
    }
}
