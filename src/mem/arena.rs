//! The frame arena: one anonymous mapping carved into 4 KiB frames, following
//! the kernel's flat memory model (`mm/memblock.c`, `include/asm-generic/memory_model.h`).
//!
//! Frame `pfn` lives at `base + pfn * PAGE_SIZE`. The arena is the only
//! module that turns frame numbers into addresses and back.

use std::io;

use memmap2::MmapMut;

use crate::mem::page::Page;
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

    /// Address of frame `pfn` without the bounds check, for a caller that
    /// has checked `pfn` against a table of the arena's length.
    ///
    /// # Safety
    ///
    /// `pfn` is below the arena's number of frames.
    #[inline]
    pub(crate) unsafe fn page_address_unchecked(&self, pfn: u32) -> *mut u8 {
        debug_assert!(pfn < self.nr_frames);
        // SAFETY: pfn < nr_frames (the caller's contract), so the offset is
        // inside the mapping of nr_frames * PAGE_SIZE bytes that `base` starts.
        unsafe { self.base.add(pfn as usize * PAGE_SIZE) }
    }

    /// Frame number of an address inside the arena (the kernel's `virt_to_page`).
    #[inline]
    pub(crate) fn virt_to_pfn(&self, addr: *const u8) -> Option<u32> {
        let off = (addr as usize).wrapping_sub(self.base as usize);
        (off < self.nr_frames as usize * PAGE_SIZE).then_some((off / PAGE_SIZE) as u32)
    }
}

/// `mem_map`: the descriptor array, one `Page` per frame, in its own
/// anonymous mapping with transparent-huge-page advice. Lookups touch a
/// random descriptor; on 4 KiB pages each such touch of a large cache's
/// array also missed the TLB (an 8 MiB array spans 2048 small pages, more
/// than the second-level TLB holds).
pub(crate) struct MemMap {
    #[cfg(not(loom))]
    map: MmapMut,
    #[cfg(loom)]
    pages: Box<[Page]>,
    len: usize,
}

impl MemMap {
    /// `n` fresh descriptors.
    pub(crate) fn new(n: usize, huge_pages: bool) -> io::Result<MemMap> {
        #[cfg(loom)]
        {
            let _ = huge_pages;
            Ok(MemMap { pages: (0..n).map(|_| Page::new()).collect(), len: n })
        }
        #[cfg(not(loom))]
        {
            let bytes = n
                .checked_mul(std::mem::size_of::<Page>())
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "cache capacity overflows"))?;
            let mut map = MmapMut::map_anon(bytes.max(1))?;
            #[cfg(target_os = "linux")]
            if huge_pages {
                // Advice only, as for the arena.
                let _ = map.advise(memmap2::Advice::HugePage);
            }
            #[cfg(not(target_os = "linux"))]
            let _ = huge_pages;
            let base = map.as_mut_ptr().cast::<Page>();
            assert!(base.is_aligned(), "mmap returned memory not aligned for Page");
            for i in 0..n {
                // SAFETY: the mapping holds n * size_of::<Page>() bytes and
                // `base` is aligned for Page (asserted; mappings are page
                // aligned), so slot i < n is in bounds and aligned. Nothing
                // else refers to the mapping yet.
                unsafe { base.add(i).write(Page::new()) };
            }
            Ok(MemMap { map, len: n })
        }
    }
}

impl std::ops::Deref for MemMap {
    type Target = [Page];

    #[inline]
    fn deref(&self) -> &[Page] {
        #[cfg(loom)]
        {
            &self.pages
        }
        #[cfg(not(loom))]
        // SAFETY: `new` initialized all `len` descriptors in the mapping,
        // which is aligned for Page and lives (never moved or unmapped) as
        // long as `self`. Descriptors are only ever shared (`&Page`): all
        // their state is atomic. `Page` needs no drop (plain atomics), so
        // unmapping them with the mapping is fine.
        unsafe {
            std::slice::from_raw_parts(self.map.as_ptr().cast::<Page>(), self.len)
        }
    }
}

/// Copies whole frames (a page of 4 KiB or larger) into a frame with
/// non-temporal stores: the frame's old contents are not read first (no
/// read-for-ownership of 64 cache lines per frame), which is what a plain
/// copy into a cold, recycled frame pays. `dst` must be a frame (4 KiB
/// aligned); other targets copy plainly.
#[inline]
pub(crate) fn copy_page_nontemporal(dst: &mut [u8], src: &[u8]) {
    let len = dst.len();
    assert!(len == src.len() && len % PAGE_SIZE == 0 && len > 0, "whole frames only");
    #[cfg(target_arch = "x86_64")]
    if (dst.as_ptr() as usize) % 16 == 0 {
        use std::arch::x86_64::{__m128i, _mm_loadu_si128, _mm_sfence, _mm_stream_si128};
        let d = dst.as_mut_ptr().cast::<__m128i>();
        let s = src.as_ptr().cast::<__m128i>();
        for i in 0..len / 16 {
            // SAFETY: both slices are `len` bytes long (asserted), so
            // 16-byte block i < len / 16 lies inside each; `d` is
            // 16-byte aligned (checked), as `_mm_stream_si128` requires, and
            // `_mm_loadu_si128` takes any alignment. SSE2 is part of the
            // x86_64 baseline. `dst` is borrowed mutably, so no one else
            // accesses it while we store.
            unsafe { _mm_stream_si128(d.add(i), _mm_loadu_si128(s.add(i))) };
        }
        // Non-temporal stores are weakly ordered: fence them before the
        // page is published (UPTODATE, unlock) to other threads.
        // SAFETY: `sfence` has no memory operands; SSE is part of the x86_64
        // baseline.
        unsafe { _mm_sfence() };
        return;
    }
    dst.copy_from_slice(src);
}

/// Asks the CPU to start loading the line at `addr` (a hint: no access is
/// made, so any address is allowed).
#[inline]
pub(crate) fn prefetch(addr: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `prefetcht0` never faults and reads nothing architecturally;
    // SSE is part of the x86_64 baseline.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(addr.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = addr;
}

/// Copies bytes that a lock holder may be changing at this very moment:
/// the optimistic read's copy, validated afterwards by the page's version
/// (`Page::seq_unchanged`), which throws torn results away. Every byte is
/// loaded atomically, so the copy is not a data race on the frame: a
/// plain `memcpy` would be one, undefined behaviour even when its result
/// is discarded. On x86_64 this is `rep movsb` in inline assembly (each
/// byte it loads is a single-copy-atomic access, as the per-byte atomic
/// memcpy of C++'s P1478 and the `atomic-memcpy` crate; the assembly is
/// opaque to the compiler), and shorter ones 16 bytes at a time with SSE
/// loads in assembly; elsewhere, relaxed atomic loads of 8 and 1 bytes (as
/// crossbeam-utils' `AtomicCell` reads under its seqlock). These are std's atomics, not the `sync` shim's:
/// they view raw frame memory (`from_ptr`), which loom cannot model; the
/// loom models check the version protocol around the copy instead.
///
/// # Safety
///
/// `src` is valid for reads of `dst.len()` bytes for the duration of the
/// call (a frame of the arena, which is never unmapped while the cache
/// lives), and no one writes those bytes except through atomic accesses or
/// as a lock holder whose changes the caller's version check detects.
#[inline]
pub(crate) unsafe fn copy_racy(src: *const u8, dst: &mut [u8]) {
    let len = dst.len();
    #[cfg(all(target_arch = "x86_64", not(loom)))]
    if len >= 256 {
        let d = dst.as_mut_ptr();
        // The first 64 bytes by SSE, then `rep movsb` from the next 64-byte
        // boundary of the destination on: fast strings store whole lines
        // only into an aligned destination.
        let head = 64 - (d as usize & 63);
        // SAFETY: both copies stay inside `len >= 256` bytes of the readable
        // source (the caller's contract) and of `dst`, a unique borrow:
        // [0, 64), then [head, len) with head <= 64.
        unsafe {
            copy_16_to_64(src, d, 64);
            rep_movsb(src.add(head), d.add(head), len - head);
        }
        return;
    }
    let mut i = 0;
    #[cfg(all(target_arch = "x86_64", not(loom)))]
    if len >= 16 {
        // Short copies: 16-byte SSE loads and stores in inline assembly,
        // straight line up to 64 bytes (`copy_16_to_64`). A loop for every
        // length took 4x the instructions at 64 bytes, and on a
        // memory-bound hit path every instruction is room the core's
        // reorder window no longer has for the next read's misses. Past 64
        // bytes a loop of 16 ends with one more overlapping chunk.
        let d = dst.as_mut_ptr();
        if len <= 64 {
            // SAFETY: `len` bytes from the readable source (the caller's
            // contract) into `dst`, a unique borrow of `len` bytes, with
            // 16 <= len <= 64.
            unsafe { copy_16_to_64(src, d, len) };
        } else {
            let chunks = len / 16;
            // SAFETY: the loop copies `chunks * 16 <= len` bytes from `src`
            // (readable for `len` bytes: the caller's contract) into `dst` (a
            // unique borrow of `len` bytes), upward, then the last 16 bytes
            // (`len >= 16`); unaligned loads and stores are allowed for
            // `movdqu`; it touches no stack. SSE2 is part of the x86_64
            // baseline.
            unsafe {
                std::arch::asm!(
                    "movdqu {x}, [{s} + {n} - 16]",
                    "movdqu [{d} + {n} - 16], {x}",
                    "2:",
                    "movdqu {x}, [{s}]",
                    "movdqu [{d}], {x}",
                    "add {s}, 16",
                    "add {d}, 16",
                    "dec {c}",
                    "jnz 2b",
                    s = inout(reg) src => _,
                    d = inout(reg) d => _,
                    c = inout(reg) chunks => _,
                    n = in(reg) len,
                    x = out(xmm_reg) _,
                    options(nostack),
                );
            }
        }
        return;
    }
    // Bytes up to 8-byte alignment of the source, then words, then bytes.
    // Relaxed loads throughout: torn or stale bytes are thrown away by the
    // caller's version check, which orders them with an Acquire fence.
    while i < len && (src as usize + i) % 8 != 0 {
        // SAFETY: `src + i` is inside the readable range (i < len); an
        // AtomicU8 has the size and alignment of u8; no non-atomic write
        // races it (the caller's contract).
        dst[i] = unsafe { std::sync::atomic::AtomicU8::from_ptr(src.add(i).cast_mut()) }
            .load(std::sync::atomic::Ordering::Relaxed);
        i += 1;
    }
    let out = dst.as_mut_ptr();
    while i + 8 <= len {
        // SAFETY: `src + i` is 8-aligned (the loop above) and 8 readable
        // bytes follow it (i + 8 <= len); as above for the race.
        let w = unsafe { std::sync::atomic::AtomicU64::from_ptr(src.add(i).cast::<u64>().cast_mut()) }
            .load(std::sync::atomic::Ordering::Relaxed);
        // SAFETY: `out + i .. out + i + 8` lies inside `dst` (i + 8 <= len),
        // which we borrow uniquely; the store may be unaligned.
        unsafe { out.add(i).cast::<u64>().write_unaligned(w) };
        i += 8;
    }
    while i < len {
        // SAFETY: as in the first loop.
        dst[i] = unsafe { std::sync::atomic::AtomicU8::from_ptr(src.add(i).cast_mut()) }
            .load(std::sync::atomic::Ordering::Relaxed);
        i += 1;
    }
}

/// Copies `len` bytes, 16 to 64, from `src` to `d` with four 16-byte SSE
/// loads and stores in inline assembly (no x86 load tears a byte, so each
/// byte is read atomically): the chunks at 0, at `a = min(16, len - 16)`,
/// at `b = len - 32` (0 below 32) and at `len - 16` cover every length
/// from 16 to 64. Chunks may overlap; an overlapped byte is stored twice,
/// from two loads of the same source byte, and if a writer changed it
/// between them the caller's version check throws the copy away anyway.
///
/// # Safety
///
/// `16 <= len <= 64`, `src` is readable and `d` writable (and not read or
/// written by anyone else) for `len` bytes.
#[cfg(all(target_arch = "x86_64", not(loom)))]
#[inline(always)]
unsafe fn copy_16_to_64(src: *const u8, d: *mut u8, len: usize) {
    debug_assert!((16..=64).contains(&len));
    let a = (len - 16).min(16);
    let b = len.saturating_sub(32);
    // SAFETY: the four chunks [0, 16), [a, a + 16), [b, b + 16) and
    // [len - 16, len) lie inside `len` bytes (16 <= len <= 64, so a + 16 <=
    // len and b + 16 <= len) of both buffers (the caller's contract);
    // unaligned accesses are allowed for `movdqu`; no stack is touched. SSE2
    // is part of the x86_64 baseline.
    unsafe {
        std::arch::asm!(
            "movdqu {w}, [{s}]",
            "movdqu {x}, [{s} + {a}]",
            "movdqu {y}, [{s} + {b}]",
            "movdqu {z}, [{s} + {n} - 16]",
            "movdqu [{d}], {w}",
            "movdqu [{d} + {a}], {x}",
            "movdqu [{d} + {b}], {y}",
            "movdqu [{d} + {n} - 16], {z}",
            s = in(reg) src,
            d = in(reg) d,
            n = in(reg) len,
            a = in(reg) a,
            b = in(reg) b,
            w = out(xmm_reg) _,
            x = out(xmm_reg) _,
            y = out(xmm_reg) _,
            z = out(xmm_reg) _,
            options(nostack, preserves_flags),
        );
    }
}

/// `rep movsb` of `len` bytes from `src` to `d`: a byte-wise atomic copy
/// (each byte it loads is a single-copy-atomic access; the assembly is
/// opaque to the compiler).
///
/// # Safety
///
/// `src` is readable and `d` writable (and not read or written by anyone
/// else) for `len` bytes.
#[cfg(all(target_arch = "x86_64", not(loom)))]
#[inline(always)]
unsafe fn rep_movsb(src: *const u8, d: *mut u8, len: usize) {
    // SAFETY: `rep movsb` copies rcx bytes from [rsi] to [rdi] upward (the
    // ABI keeps the direction flag clear at this point), inside both
    // buffers (the caller's contract). It touches no stack and leaves the
    // flags as they were.
    unsafe {
        std::arch::asm!(
            "rep movsb",
            inout("rcx") len => _,
            inout("rsi") src => _,
            inout("rdi") d => _,
            options(nostack, preserves_flags)
        );
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn racy_copy_copies_every_length_and_alignment() {
        let src: Vec<u8> = (0..PAGE_SIZE + 64).map(|i| (i * 13 % 251) as u8).collect();
        for start in [0usize, 1, 3, 7, 8, 63] {
            for len in
                [0usize, 1, 7, 8, 9, 15, 16, 17, 31, 32, 33, 48, 63, 64, 65, 79, 80, 255, 256, 257, 4000, PAGE_SIZE]
            {
                for at in [0usize, 1, 17, 63] {
                    let mut buf = vec![0u8; len + 64];
                    let dst = &mut buf[at..at + len];
                    // SAFETY: `src` holds start + len bytes (len <= PAGE_SIZE,
                    // start < 64) and nobody writes it.
                    unsafe { copy_racy(src.as_ptr().add(start), dst) };
                    assert_eq!(dst, &src[start..start + len], "start {start} len {len} at {at}");
                }
            }
        }
    }

    #[test]
    fn nontemporal_copy_copies() {
        let arena = Arena::new(2, false).unwrap();
        let src: Vec<u8> = (0..PAGE_SIZE).map(|i| (i * 7 % 251) as u8).collect();
        // SAFETY: frame 1 of a fresh arena is ours alone in this test.
        let dst = unsafe { std::slice::from_raw_parts_mut(arena.page_address(1), PAGE_SIZE) };
        copy_page_nontemporal(dst, &src);
        assert_eq!(dst, &src[..]);
        // Unaligned target: the plain path.
        let mut buf = vec![0u8; PAGE_SIZE + 1];
        copy_page_nontemporal(&mut buf[1..], &src);
        assert_eq!(&buf[1..], &src[..]);
    }
}
