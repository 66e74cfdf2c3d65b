//! Anonymous memory, following `mm/shmem.c` (memory with a file's
//! interface, whose pages live in a swap map while out of memory),
//! `mm/swap_state.c` (the swap cache: a page read back from its slot keeps
//! the slot until it is dirtied) and `mm/zswap.c`'s frontswap hooks (store
//! before the swap device, exclusive load, writeback of cold entries).
//!
//! An anonymous mapping is an `AddressSpace` whose backing is an
//! [`AnonBacking`]: its pages start as zeros, are dirtied by writes, are
//! never written by the flusher or `sync`, and only reclaim moves them out
//! (`reclaim::vmscan`, through [`swap_out`]). Where each page's bytes are
//! while it is not in memory is its [`Entry`] in the mapping's swap map:
//! in the compressed tier, in a slot of the swap area (whole or as an lz4
//! block the tier wrote back), or nowhere (every byte the same, zero for a
//! page never written).
//!
//! Rules, each under the map shard lock of the page's index (lock order:
//! map shard, then the tier's shard, then the swap area's allocator):
//! - a page in memory and dirty has no entry (`dirtied` frees it);
//! - a page in memory and clean has an entry with its bytes, or none if it
//!   is all zeros and was never swapped out;
//! - a load from the tier is exclusive: the entry goes and the page comes
//!   back dirty, so reclaim stores it again before it can go;
//! - the tier never drops an anonymous entry: when a store finds it full,
//!   `writeback` copies the coldest entries of that shard out, writes them
//!   compressed to the swap area in one extent, and only then replaces
//!   each entry that is still the same (`seq`) with its slot. So the tier
//!   is never the only copy that can be lost.

use std::collections::HashMap;
use std::io::{self, IoSlice, IoSliceMut};
use std::sync::{Arc, Weak};

use parking_lot::Mutex;

use crate::index::mapping::AddressSpace;
use crate::io::backing::Backing;
use crate::io::swap::{SwapArea, UNIT};
use crate::mem::page::{LockedPage, Page, PageFlags};
use crate::mem::zone::Zone;
use crate::stats::Event;
use crate::sync::{AtomicU64, AtomicUsize, Ordering};
use crate::tier::compressed::{unpack, AnonData, AnonStore, CompressedTier};
use crate::tier::{FileKey, ANON_DEV};

/// Shards of a swap map (by index, so neighbouring pages use different locks).
const SHARDS: usize = 16;

/// Cold entries one writeback takes out of a full tier shard.
const WRITEBACK_BATCH: usize = 32;

/// Where a page of anonymous memory is while it is not in memory (or,
/// for a clean page in memory, the copy it matches).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Entry {
    /// In the compressed tier as its entry `seq`.
    Tier(u64),
    /// In the swap area from unit `unit`: `len` bytes, the page itself or
    /// (`packed`) its lz4 block.
    Slot { unit: u64, len: u32, packed: bool },
    /// Every byte is this one: nothing stored.
    Filled(u8),
}

/// One anonymous mapping's swap map and the tiers it uses.
pub(crate) struct Anon {
    /// Its key in the compressed tier (`ANON_DEV`, a number of its own).
    pub(crate) key: FileKey,
    page_size: usize,
    zone: Arc<Zone>,
    swap: Arc<SwapArea>,
    tier: Option<Arc<CompressedTier>>,
    /// Loads from the tier take the entry out (`Builder::frontswap_exclusive_loads`).
    exclusive: bool,
    /// Entries in the map, so that dirtying a page of memory that was never
    /// swapped out (a run being written) takes no lock.
    entries: AtomicUsize,
    map: Box<[Mutex<HashMap<u64, Entry>>]>,
}

impl std::fmt::Debug for Anon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Anon").field("key", &self.key).finish()
    }
}

/// Swap settings of a cache (`Builder::swap_dir`, `swap_limit`,
/// `swap_backing`, `swappiness`) and the swap area, made at the first
/// anonymous mapping.
pub(crate) struct SwapConfig {
    pub(crate) dir: std::path::PathBuf,
    pub(crate) limit: u64,
    pub(crate) backing: Option<Arc<dyn Backing>>,
    /// 0 to 200 as the kernel's `vm.swappiness`.
    pub(crate) swappiness: u32,
    /// The compressed tier frontswap stores into, if the cache has one.
    pub(crate) tier: Option<Arc<CompressedTier>>,
    /// Whether a load from the tier takes the entry out (zswap's
    /// exclusive loads) or leaves it, the page clean in memory.
    pub(crate) exclusive_loads: bool,
}

impl Zone {
    /// The swap area, made on first use.
    pub(crate) fn swap_area(&self) -> io::Result<Arc<SwapArea>> {
        let mut slot = self.swap_area.lock();
        if let Some(s) = &*slot {
            return Ok(s.clone());
        }
        let cfg = &self.swap_cfg;
        let area = Arc::new(match &cfg.backing {
            Some(b) => SwapArea::on(b.clone(), cfg.limit),
            None => SwapArea::create(&cfg.dir, cfg.limit)?,
        });
        *slot = Some(area.clone());
        Ok(area)
    }

    /// The anonymous mapping with tier key number `ino`, if it is alive.
    fn anon_object(&self, ino: u64) -> Option<Arc<Anon>> {
        self.anon_objects.lock().get(&ino).and_then(Weak::upgrade)
    }
}

impl Anon {
    /// A new, empty swap map for memory with pages of `page_size` bytes,
    /// registered with the zone for the tier's writeback.
    pub(crate) fn new(zone: &Arc<Zone>, page_size: usize) -> io::Result<Arc<Anon>> {
        let swap = zone.swap_area()?;
        // Relaxed: a unique number; nothing else is ordered by it.
        let ino = zone.next_anon.fetch_add(1, Ordering::Relaxed);
        let key = FileKey { dev: ANON_DEV, ino, generation: 0, page_shift: page_size.trailing_zeros() as u8 };
        let anon = Arc::new(Anon {
            key,
            page_size,
            zone: zone.clone(),
            swap,
            tier: zone.swap_cfg.tier.clone(),
            exclusive: zone.swap_cfg.exclusive_loads,
            entries: AtomicUsize::new(0),
            map: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        });
        zone.anon_objects.lock().insert(ino, Arc::downgrade(&anon));
        Ok(anon)
    }

    #[inline]
    fn shard(&self, index: u64) -> &Mutex<HashMap<u64, Entry>> {
        &self.map[index as usize % SHARDS]
    }

    /// Whether frontswap stores this memory's pages in a compressed tier.
    #[inline]
    pub(crate) fn has_tier(&self) -> bool {
        self.tier.is_some()
    }

    /// Lets go of what `e` holds (the caller holds the shard lock of `index`).
    fn release(&self, index: u64, e: Entry) {
        match e {
            Entry::Tier(seq) => {
                if let Some(t) = &self.tier {
                    t.remove_anon(&self.key, index, seq);
                }
            }
            Entry::Slot { unit, len, .. } => {
                self.swap.free(unit, SwapArea::units(len as usize));
                // Relaxed: a statistic.
                self.swap.slots.fetch_sub(1, Ordering::Relaxed);
            }
            Entry::Filled(_) => {}
        }
    }

    /// Puts `e` at `index`, letting go of what was there.
    fn set(&self, g: &mut HashMap<u64, Entry>, index: u64, e: Entry) {
        if matches!(e, Entry::Slot { .. }) {
            // Relaxed: a statistic.
            self.swap.slots.fetch_add(1, Ordering::Relaxed);
        }
        match g.insert(index, e) {
            Some(old) => self.release(index, old),
            // Relaxed: see `dirtied`.
            None => _ = self.entries.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// Takes the entry at `index` out of its (locked) shard.
    fn take(&self, g: &mut HashMap<u64, Entry>, index: u64) -> Option<Entry> {
        let e = g.remove(&index);
        if e.is_some() {
            // Relaxed: see `dirtied`.
            self.entries.fetch_sub(1, Ordering::Relaxed);
        }
        e
    }

    /// A page in memory went from clean to dirty: its copy is stale.
    #[inline]
    pub(crate) fn dirtied(&self, index: u64) {
        // Relaxed: the caller holds the page lock, and only a holder of it
        // puts an entry at this index (reclaim's store), before its unlock:
        // the lock orders that increment before this load. Other indices'
        // entries do not matter here.
        if self.entries.load(Ordering::Relaxed) == 0 {
            return;
        }
        let mut g = self.shard(index).lock();
        if let Some(e) = self.take(&mut g, index) {
            self.release(index, e);
        }
    }

    /// Moves a dirty page (locked by the caller, `data` its bytes) out of
    /// memory: into the compressed tier, or else into a slot of the swap
    /// area. On success the caller marks the page clean and frees it; on
    /// an error (the swap area full or failing) it stays dirty.
    pub(crate) fn swap_out(&self, index: u64, data: &[u8]) -> io::Result<()> {
        if self.store_in_tier(index, data) {
            return Ok(());
        }
        self.write_slots(&[(index, data)]).map_err(|(_, e)| e)
    }

    /// frontswap's store of a dirty page (locked by the caller): true if
    /// the compressed tier kept it (after writing its coldest entries back
    /// to the swap area if it was full).
    fn store_in_tier(&self, index: u64, data: &[u8]) -> bool {
        debug_assert_eq!(data.len(), self.page_size);
        if let Some(tier) = &self.tier {
            for attempt in 0..2 {
                let mut g = self.shard(index).lock();
                match tier.store_anon(&self.key, index, data) {
                    AnonStore::Stored(seq) => {
                        self.set(&mut g, index, Entry::Tier(seq));
                        self.zone.count(Event::FrontswapStores, 1);
                        return true;
                    }
                    AnonStore::Refused => {
                        self.zone.count(Event::FrontswapRejects, 1);
                        break;
                    }
                    AnonStore::Full => {
                        drop(g);
                        if attempt == 1 || writeback(&self.zone, tier, &self.key, index) == 0 {
                            self.zone.count(Event::FrontswapRejects, 1);
                            break;
                        }
                    }
                }
            }
        }
        false
    }

    /// Writes whole pages (locked and dirty, `(index, bytes)`) to the
    /// swap area and points their entries at their slots: one extent and
    /// one call for the batch, or, when no free extent is that long (the
    /// area is fragmented), an extent and a call per page. On an error,
    /// how many pages (the first ones) were written, and the error; those
    /// not written keep no entry.
    fn write_slots(&self, pages: &[(u64, &[u8])]) -> Result<(), (usize, io::Error)> {
        if pages.is_empty() {
            return Ok(());
        }
        let per = SwapArea::units(self.page_size);
        let n = per * pages.len() as u64;
        match self.swap.alloc(n) {
            Ok(unit) => {
                let bufs: Vec<IoSlice<'_>> = pages.iter().map(|(_, d)| IoSlice::new(d)).collect();
                self.write_extent(unit, n, &bufs).map_err(|e| (0, e))?;
                self.zone.count(Event::SwapOuts, pages.len() as u64);
                for (i, &(index, data)) in pages.iter().enumerate() {
                    let mut g = self.shard(index).lock();
                    let slot = Entry::Slot { unit: unit + i as u64 * per, len: data.len() as u32, packed: false };
                    self.set(&mut g, index, slot);
                }
                Ok(())
            }
            Err(_) if pages.len() > 1 => {
                for (k, &(index, data)) in pages.iter().enumerate() {
                    let unit = self.swap.alloc(per).map_err(|e| (k, e))?;
                    self.write_extent(unit, per, &[IoSlice::new(data)]).map_err(|e| (k, e))?;
                    self.zone.count(Event::SwapOuts, 1);
                    let mut g = self.shard(index).lock();
                    self.set(&mut g, index, Entry::Slot { unit, len: data.len() as u32, packed: false });
                }
                Ok(())
            }
            Err(e) => Err((0, e)),
        }
    }

    /// Writes `bufs` at the `n` units from `unit` (freed again on an error).
    fn write_extent(&self, unit: u64, n: u64, bufs: &[IoSlice<'_>]) -> io::Result<()> {
        if let Err(e) = self.swap.write(unit, bufs) {
            self.swap.free(unit, n);
            self.zone.count(Event::SwapWriteErrors, 1);
            return Err(e);
        }
        self.zone.count(Event::SwapBytesWritten, n * UNIT);
        Ok(())
    }

    /// frontswap's load for a new, locked page at `index`: if the tier
    /// holds it, copies it into `out` and returns `Some(dirty)`. An
    /// exclusive load takes the entry out and says dirty (memory now holds
    /// the only copy); otherwise the entry stays and the page is clean.
    pub(crate) fn load_from_tier(&self, index: u64, out: &mut [u8]) -> Option<bool> {
        let tier = self.tier.as_ref()?;
        // Relaxed: as in `dirtied`; the caller holds the new page's lock,
        // and an entry at this index was put under an older page's lock,
        // which the tree lock (its removal, then this page's insertion)
        // orders before this load.
        if self.entries.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let mut g = self.shard(index).lock();
        if !self.exclusive {
            let Some(&Entry::Tier(seq)) = g.get(&index) else { return None };
            if !tier.read_anon(&self.key, index, seq, out) {
                return None;
            }
            self.zone.count(Event::FrontswapLoads, 1);
            return Some(false);
        }
        let mut e = g.get(&index).copied();
        if !commit_load(&mut e, |seq| tier.load_anon(&self.key, index, seq, out)) {
            return None;
        }
        self.take(&mut g, index);
        self.zone.count(Event::FrontswapLoads, 1);
        Some(true)
    }

    /// Reads bytes `[offset, offset + out.len())` of the memory from where
    /// their pages are (zeros where nothing was stored). Pages whose slots
    /// follow each other are read in one call.
    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        let ps = self.page_size as u64;
        // Pin every slot first, each under its shard lock.
        let mut plan: Vec<(u64, usize, usize, Option<Entry>)> = Vec::new(); // (index, at, len, entry)
        let mut at = 0usize;
        while at < out.len() {
            let pos = offset + at as u64;
            let index = pos / ps;
            let within = (pos % ps) as usize;
            let len = (self.page_size - within).min(out.len() - at);
            let e = {
                let g = self.shard(index).lock();
                let e = g.get(&index).copied();
                if let Some(Entry::Slot { unit, .. }) = e {
                    // Pinned under the lock, so the slot is not reused
                    // under the read should the memory be cut meanwhile.
                    self.swap.pin(unit);
                }
                e
            };
            plan.push((index, at, len, e));
            at += len;
        }
        let result = self.read_planned(offset, out, &plan);
        for &(_, _, _, e) in &plan {
            if let Some(Entry::Slot { unit, .. }) = e {
                self.swap.unpin(unit);
            }
        }
        result
    }

    fn read_planned(&self, offset: u64, out: &mut [u8], plan: &[(u64, usize, usize, Option<Entry>)]) -> io::Result<()> {
        let ps = self.page_size as u64;
        let mut i = 0;
        while i < plan.len() {
            let (index, at, len, e) = plan[i];
            let within = (offset + at as u64 - index * ps) as usize;
            match e {
                None => out[at..at + len].fill(0),
                Some(Entry::Filled(x)) => out[at..at + len].fill(x),
                Some(Entry::Tier(seq)) => {
                    // A page the tier holds is normally taken by
                    // `load_from_tier` first; a read of part of it (or one
                    // that lost the race to a writeback) copies it out.
                    let tier = self.tier.as_ref().expect("anon: a tier entry without a tier");
                    let mut page = vec![0u8; self.page_size];
                    if !tier.read_anon(&self.key, index, seq, &mut page) {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            "page cache: a page of anonymous memory moved while it was read",
                        ));
                    }
                    out[at..at + len].copy_from_slice(&page[within..within + len]);
                }
                Some(Entry::Slot { unit, len: stored, packed: true }) => {
                    let mut block = vec![0u8; stored as usize];
                    self.swap.read(unit, &mut block)?;
                    let mut page = vec![0u8; self.page_size];
                    if !unpack(&block, &mut page) {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            "page cache: a compressed page in the swap area does not decode",
                        ));
                    }
                    self.zone.count(Event::SwapIns, 1);
                    self.zone.count(Event::SwapBytesRead, stored as u64);
                    out[at..at + len].copy_from_slice(&page[within..within + len]);
                }
                Some(Entry::Slot { unit, packed: false, .. }) => {
                    // A run of whole pages whose slots follow each other.
                    let first = unit * UNIT + within as u64;
                    let mut end = i + 1;
                    let mut next = first + len as u64;
                    while end < plan.len() {
                        match plan[end].3 {
                            Some(Entry::Slot { unit: u, packed: false, .. }) if u * UNIT == next => {
                                next += plan[end].2 as u64;
                                end += 1;
                            }
                            _ => break,
                        }
                    }
                    let bytes = (next - first) as usize;
                    self.swap.read_bytes(first, &mut out[at..at + bytes])?;
                    self.zone.count(Event::SwapIns, (end - i) as u64);
                    self.zone.count(Event::SwapBytesRead, bytes as u64);
                    i = end;
                    continue;
                }
            }
            i += 1;
        }
        Ok(())
    }

    /// Reads whole pages at scattered offsets (`prefetch`): the ones in
    /// whole slots all at once on io_uring (where the cache uses it and
    /// the swap area is a plain file), the others as `read` does.
    fn read_batch(&self, reqs: &mut [(u64, &mut [u8])]) -> Vec<io::Result<usize>> {
        let ps = self.page_size as u64;
        let mut results: Vec<Option<io::Result<usize>>> = (0..reqs.len()).map(|_| None).collect();
        let ring = self.swap.raw_fd().filter(|_| self.zone.uring.enabled());
        let mut ops = Vec::new();
        let mut on_ring = Vec::new();
        if let Some(fd) = ring {
            for (i, (offset, buf)) in reqs.iter_mut().enumerate() {
                if *offset % ps != 0 || buf.len() != self.page_size {
                    continue;
                }
                let index = *offset / ps;
                let g = self.shard(index).lock();
                if let Some(&Entry::Slot { unit, packed: false, .. }) = g.get(&index) {
                    // Pinned under the lock (see `read`).
                    self.swap.pin(unit);
                    ops.push(crate::io::uring::Op::Read { buf: buf.as_mut_ptr(), len: buf.len(), offset: unit * UNIT });
                    on_ring.push((i, unit));
                }
            }
            // SAFETY: each buffer is a distinct request's (the caller's
            // locked, not-uptodate frames, which outlive this call) and is
            // touched by nothing else until the call returns; `fd` is the
            // swap area's, open while `self.swap` lives; `run` returns
            // only once every operation completed.
            let done = unsafe { self.zone.uring.run(fd, &ops) };
            for (k, &(i, unit)) in on_ring.iter().enumerate() {
                if let Some(r) = done.as_ref().map(|d| &d[k]) {
                    results[i] = Some(match r {
                        Ok(n) if *n == self.page_size => {
                            self.zone.count(Event::SwapIns, 1);
                            self.zone.count(Event::SwapBytesRead, *n as u64);
                            Ok(*n)
                        }
                        Ok(_) => Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "page cache: the swap file ended inside a slot",
                        )),
                        Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
                    });
                }
                self.swap.unpin(unit);
            }
            if done.is_some() {
                self.zone.count(Event::UringOps, ops.len() as u64);
            }
        }
        reqs.iter_mut()
            .zip(results)
            .map(|((offset, buf), r)| r.unwrap_or_else(|| self.read(*offset, buf).map(|()| buf.len())))
            .collect()
    }

    /// The memory is cut to `new` bytes: entries past it go, and the
    /// partial last page's stored copy gets zeros past `new` (as a file
    /// system zeroes a truncated block). Runs twice around the removal of
    /// the pages in memory (`truncate::set_len`), the second time for
    /// pages reclaim stored meanwhile.
    pub(crate) fn truncate(&self, new: u64) -> io::Result<()> {
        let ps = self.page_size as u64;
        let first_gone = new.div_ceil(ps);
        for shard in self.map.iter() {
            let mut g = shard.lock();
            let gone: Vec<u64> = g.keys().copied().filter(|&i| i >= first_gone).collect();
            for index in gone {
                if let Some(e) = self.take(&mut g, index) {
                    self.release(index, e);
                }
            }
        }
        if new % ps == 0 {
            return Ok(());
        }
        let index = new / ps;
        let from = (new % ps) as usize;
        let mut g = self.shard(index).lock();
        let Some(e) = g.get(&index).copied() else { return Ok(()) };
        if e == Entry::Filled(0) {
            return Ok(());
        }
        let mut page = vec![0u8; self.page_size];
        match e {
            Entry::Filled(x) => page.fill(x),
            Entry::Tier(seq) => {
                let tier = self.tier.as_ref().expect("anon: a tier entry without a tier");
                if !tier.read_anon(&self.key, index, seq, &mut page) {
                    return Err(io::Error::new(io::ErrorKind::InvalidData, "page cache: the tier lost a page"));
                }
            }
            Entry::Slot { unit, len, packed } => {
                let mut block = vec![0u8; len as usize];
                self.swap.read(unit, &mut block)?;
                if !packed {
                    page = block;
                } else if !unpack(&block, &mut page) {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "page cache: a compressed page in the swap area does not decode",
                    ));
                }
            }
        }
        page[from..].fill(0);
        // The new copy is written before the old one goes.
        let n = SwapArea::units(page.len());
        let unit = self.swap.alloc(n)?;
        if let Err(e) = self.swap.write(unit, &[IoSlice::new(&page)]) {
            self.swap.free(unit, n);
            return Err(e);
        }
        self.zone.count(Event::SwapBytesWritten, n * UNIT);
        self.set(&mut g, index, Entry::Slot { unit, len: page.len() as u32, packed: false });
        Ok(())
    }

    /// Panics unless every entry names something that holds it.
    pub(crate) fn check_invariants(&self) {
        {
            // Every shard held: the count changes only under them.
            let all: Vec<_> = self.map.iter().map(|s| s.lock()).collect();
            let total: usize = all.iter().map(|g| g.len()).sum();
            // Relaxed: changed only under the shard locks held here.
            assert_eq!(total, self.entries.load(Ordering::Relaxed), "anon: entry count");
        }
        for (s, shard) in self.map.iter().enumerate() {
            for (&index, e) in shard.lock().iter() {
                assert_eq!(index as usize % SHARDS, s, "anon: entry in the wrong shard");
                match *e {
                    Entry::Tier(seq) => {
                        let tier = self.tier.as_ref().expect("anon: a tier entry without a tier");
                        let mut page = vec![0u8; self.page_size];
                        assert!(tier.read_anon(&self.key, index, seq, &mut page), "anon: the tier lost page {index}");
                    }
                    Entry::Slot { len, packed, .. } => {
                        assert!(len > 0 && len as usize <= self.page_size, "anon: slot of {len} bytes");
                        assert!(packed || len as usize == self.page_size, "anon: a partial whole page");
                    }
                    Entry::Filled(_) => {}
                }
            }
        }
    }
}

impl Anon {
    /// The memory is gone (its last handle closed, its pages dropped): so
    /// are its slots and tier entries, now, whoever still holds the
    /// mapping for a moment (a readahead job, reclaim's batch).
    pub(crate) fn release_all(&self) {
        for shard in self.map.iter() {
            let entries: Vec<(u64, Entry)> = {
                let mut g = shard.lock();
                // Relaxed: a count kept beside the map, changed under its
                // shard's lock (see `dirtied`).
                self.entries.fetch_sub(g.len(), Ordering::Relaxed);
                g.drain().collect()
            };
            for (index, e) in entries {
                self.release(index, e);
            }
        }
        if let Some(t) = &self.tier {
            use crate::tier::SecondTier;
            t.invalidate_file(&self.key);
        }
    }
}

impl Drop for Anon {
    /// The memory is gone: so are its slots and tier entries.
    fn drop(&mut self) {
        self.release_all();
        let mut objects = self.zone.anon_objects.lock();
        if objects.get(&self.key.ino).is_some_and(|w| w.strong_count() == 0) {
            objects.remove(&self.key.ino);
        }
    }
}

/// frontswap's load, under the lock of the page's entry `e`: if the tier
/// holds the page, `load` takes that entry (by its `seq`) out of the tier
/// and the entry goes. True if the page was loaded. (loom model
/// `frontswap_load_vs_writeback`.)
pub(crate) fn commit_load(e: &mut Option<Entry>, load: impl FnOnce(u64) -> bool) -> bool {
    match *e {
        Some(Entry::Tier(seq)) if load(seq) => {
            *e = None;
            true
        }
        _ => false,
    }
}

/// frontswap writeback's commit, under the lock of the page's entry `e`,
/// once the copy of tier entry `seq` is written to the swap area as
/// `slot`: the slot takes the entry's place only if the entry still names
/// that tier entry and `remove` took it out of the tier; otherwise the
/// page was loaded, cut or stored anew meanwhile and the slot is not
/// needed. True if the slot took its place.
pub(crate) fn commit_writeback(e: &mut Option<Entry>, seq: u64, remove: impl FnOnce() -> bool, slot: Entry) -> bool {
    if *e == Some(Entry::Tier(seq)) && remove() {
        *e = Some(slot);
        true
    } else {
        false
    }
}

/// Makes room in the tier shard that holds `(key, index)`: copies its
/// coldest anonymous entries out, writes them (compressed) to the swap
/// area in one extent, then swaps each entry that is still the same for
/// its slot. Returns how many entries left the tier.
fn writeback(zone: &Zone, tier: &CompressedTier, key: &FileKey, index: u64) -> usize {
    let victims = tier.anon_victims(key, index, WRITEBACK_BATCH);
    if victims.is_empty() {
        return 0;
    }
    let Ok(swap) = zone.swap_area() else { return 0 };
    // Where each victim's block goes: all in one extent and one write,
    // each at a unit boundary; or, when no free extent is that long, an
    // extent and a write each. `None`: not written (it stays in the tier).
    let units: Vec<u64> = victims
        .iter()
        .map(|v| match &v.data {
            AnonData::Packed(b) => SwapArea::units(b.len()),
            AnonData::Filled(_) => 0,
        })
        .collect();
    let total: u64 = units.iter().sum();
    let mut at: Vec<Option<u64>> = vec![None; victims.len()];
    let write = |start: u64, n: u64, blocks: &[(&[u8], u64)]| -> bool {
        let mut buf = vec![0u8; (n * UNIT) as usize];
        for &(b, off) in blocks {
            buf[(off * UNIT) as usize..][..b.len()].copy_from_slice(b);
        }
        if swap.write(start, &[IoSlice::new(&buf)]).is_err() {
            swap.free(start, n);
            zone.count(Event::SwapWriteErrors, 1);
            return false;
        }
        zone.count(Event::SwapBytesWritten, n * UNIT);
        true
    };
    if let Ok(start) = swap.alloc(total.max(1)) {
        let mut blocks = Vec::with_capacity(victims.len());
        let mut off = 0;
        for (i, v) in victims.iter().enumerate() {
            at[i] = Some(start + off);
            if let AnonData::Packed(b) = &v.data {
                blocks.push((b.as_slice(), off));
            }
            off += units[i];
        }
        // The unit a batch of same-filled pages took is not needed.
        if total == 0 {
            swap.free(start, 1);
        } else if !write(start, total, &blocks) {
            return 0;
        }
    } else {
        for (i, v) in victims.iter().enumerate() {
            match &v.data {
                AnonData::Filled(_) => at[i] = Some(0),
                AnonData::Packed(b) => match swap.alloc(units[i]) {
                    Ok(start) if write(start, units[i], &[(b.as_slice(), 0)]) => at[i] = Some(start),
                    Ok(_) => break,
                    Err(_) => break,
                },
            }
        }
    }
    let mut moved = 0;
    for (i, v) in victims.iter().enumerate() {
        let Some(unit) = at[i] else { continue };
        let n = units[i];
        let (entry, units) = match &v.data {
            AnonData::Filled(x) => (Entry::Filled(*x), 0),
            AnonData::Packed(b) => (Entry::Slot { unit, len: b.len() as u32, packed: true }, n),
        };
        let owner = zone.anon_object(v.key.ino);
        let replaced = owner.as_ref().is_some_and(|anon| {
            let mut g = anon.shard(v.index).lock();
            let mut e = g.get(&v.index).copied();
            if commit_writeback(&mut e, v.seq, || tier.remove_anon(&v.key, v.index, v.seq), entry) {
                // The tier entry is gone already: the slot takes its place.
                anon.take(&mut g, v.index);
                anon.set(&mut g, v.index, entry);
                true
            } else {
                false
            }
        });
        if replaced {
            moved += 1;
            zone.count(Event::FrontswapWritebacks, 1);
            if units > 0 {
                zone.count(Event::SwapOuts, 1);
            }
        } else if units > 0 {
            // Loaded, cut or freed meanwhile: its copy is not needed.
            swap.free(unit, units);
        }
    }
    moved
}

/// The backing of an anonymous mapping: reads come from the swap map;
/// nothing is ever written through it (reclaim swaps pages out itself).
pub(crate) struct AnonBacking {
    pub(crate) anon: Arc<Anon>,
    len: AtomicU64,
}

impl AnonBacking {
    pub(crate) fn new(anon: Arc<Anon>, len: u64) -> AnonBacking {
        AnonBacking { anon, len: AtomicU64::new(len) }
    }
}

impl Backing for AnonBacking {
    fn read_vectored_at(&self, bufs: &mut [IoSliceMut<'_>], offset: u64) -> io::Result<usize> {
        // Never short: the mapping's size (which writes move without
        // telling the backing) bounds what its callers ask for, and a page
        // nothing was stored for reads as zeros.
        let mut pos = offset;
        for b in bufs.iter_mut() {
            self.anon.read(pos, b)?;
            pos += b.len() as u64;
        }
        Ok((pos - offset) as usize)
    }

    fn read_batch(&self, reqs: &mut [(u64, &mut [u8])]) -> Vec<io::Result<usize>> {
        self.anon.read_batch(reqs)
    }

    fn write_vectored_at(&self, _bufs: &[IoSlice<'_>], _offset: u64) -> io::Result<usize> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "page cache: anonymous memory is written only by reclaim, to the swap area",
        ))
    }

    /// Nothing to make durable: anonymous memory does not outlive the cache.
    fn sync_data(&self) -> io::Result<()> {
        Ok(())
    }

    fn sync_all(&self) -> io::Result<()> {
        Ok(())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        // Relaxed: see `read_vectored_at`.
        let old = self.len.swap(len, Ordering::Relaxed);
        // A cut runs twice (see `Anon::truncate`): the second call comes
        // with the same length.
        if len <= old {
            self.anon.truncate(len)?;
        }
        Ok(())
    }

    fn len(&self) -> io::Result<u64> {
        // Relaxed: see `read_vectored_at`.
        Ok(self.len.load(Ordering::Relaxed))
    }
}

/// Reclaim's `pageout` for a locked, dirty page of anonymous memory:
/// stores it (frontswap first, else the swap area) and marks it clean, so
/// reclaim frees it next. False, with the page still dirty, if the store
/// failed (the error is kept for the allocation that waits on reclaim).
pub(crate) fn pageout(m: &AddressSpace, anon: &Anon, page: &Page) -> bool {
    if page.test(PageFlags::WRITEBACK) || !page.test(PageFlags::DIRTY) {
        return !page.test(PageFlags::DIRTY);
    }
    // SAFETY: the caller holds the page lock, and every writer of a page's
    // bytes holds it (`LockedPage::data_mut`), so nothing mutates the
    // frame while this borrow lives (readers only read); the frame is the
    // page's whole compound block, `page_size()` bytes.
    let data = unsafe { &*m.zone.frame(page) };
    match anon.swap_out(page.index(), data) {
        Ok(()) => {
            m.clean_after_swap_out(page);
            m.zone.balance.note(true, 1);
            *m.zone.swap_error.lock() = None;
            true
        }
        Err(e) => {
            m.zone.note_swap_error(&e);
            false
        }
    }
}

/// Reclaim's `pageout` for a batch of locked pages of anonymous memory
/// (dirty, from one reclaim batch, mostly neighbours): each is offered to
/// the compressed tier, and the ones it refuses are written to the swap
/// area together, in one extent and one call (sorted by index, so a
/// later read of neighbours is one read too). Returns per page whether it
/// is clean now.
pub(crate) fn pageout_batch(m: &AddressSpace, anon: &Anon, pages: &[&Page]) -> Vec<bool> {
    let mut done = vec![false; pages.len()];
    let mut rest: Vec<(usize, u64, &[u8])> = Vec::new();
    for (i, page) in pages.iter().enumerate() {
        if page.test(PageFlags::WRITEBACK) || !page.test(PageFlags::DIRTY) {
            done[i] = !page.test(PageFlags::DIRTY);
            continue;
        }
        // SAFETY: as in `pageout`: the caller holds the page lock, which
        // every writer of the bytes holds.
        let data = unsafe { &*m.zone.frame(page) };
        if anon.store_in_tier(page.index(), data) {
            done[i] = true;
        } else {
            rest.push((i, page.index(), data));
        }
    }
    rest.sort_unstable_by_key(|&(_, index, _)| index);
    let slots: Vec<(u64, &[u8])> = rest.iter().map(|&(_, index, data)| (index, data)).collect();
    let failed = match anon.write_slots(&slots) {
        Ok(()) => {
            rest.iter().for_each(|&(i, _, _)| done[i] = true);
            false
        }
        Err((written, e)) => {
            rest.iter().take(written).for_each(|&(i, _, _)| done[i] = true);
            m.zone.note_swap_error(&e);
            true
        }
    };
    let mut stored = 0;
    for (page, &ok) in pages.iter().zip(&done) {
        if ok && page.test(PageFlags::DIRTY) {
            m.clean_after_swap_out(page);
            stored += 1;
        }
    }
    if stored > 0 {
        m.zone.balance.note(true, stored);
        if !failed {
            *m.zone.swap_error.lock() = None;
        }
    }
    done
}

/// Before a write dirties a clean page of anonymous memory (`write_page`,
/// with the page locked and not changed yet): dirty anonymous pages may
/// hold no more than `Zone::anon_dirty_limit` frames (all but an eighth),
/// so that reads, swap-ins and files keep frames of their own when the
/// swap area cannot take more. Over it, reclaim swaps dirty anonymous
/// pages out here (whatever the balance); if it cannot, the write fails
/// with the swap area's error (`StorageFull`, an I/O error) before it
/// changes anything, or `OutOfMemory` after 500 ms.
pub(crate) fn charge_dirty(m: &AddressSpace) -> io::Result<()> {
    let zone = &m.zone;
    let frames = 1usize << m.order;
    // Relaxed: a threshold on a counter, as `balance_dirty_pages`.
    if zone.nr_anon_dirty.load(Ordering::Relaxed) + frames <= zone.anon_dirty_limit {
        return Ok(());
    }
    charge_dirty_slow(m, frames)
}

#[cold]
fn charge_dirty_slow(m: &AddressSpace, frames: usize) -> io::Result<()> {
    let zone = &m.zone;
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(500);
    loop {
        // Relaxed: a count compared with itself below (a failure noted
        // under the lock the error is read under).
        let failures = zone.swap_failures.load(Ordering::Relaxed);
        zone.shrink_lists(crate::reclaim::vmscan::SWAP_CLUSTER_MAX, crate::reclaim::vmscan::Reclaimer::AnonLimit);
        // Relaxed: as above.
        if zone.nr_anon_dirty.load(Ordering::Relaxed) + frames <= zone.anon_dirty_limit {
            return Ok(());
        }
        // A swap-out failed while this round ran (not an older failure):
        // the write fails with its error.
        let failed = zone.swap_failures.load(Ordering::Relaxed) != failures;
        let error = zone.swap_error.lock().as_ref().filter(|_| failed).map(|(kind, msg, _)| (*kind, msg.clone()));
        if let Some((kind, msg)) = error {
            // The failure may be another reclaimer's (kswapd's) whose
            // batch stored most of its pages and cleans them right after
            // noting it: look once more after a moment (CI saw a write
            // refused with a quarter of the frames free).
            std::thread::sleep(std::time::Duration::from_millis(2));
            // Relaxed: as above.
            if zone.nr_anon_dirty.load(Ordering::Relaxed) + frames <= zone.anon_dirty_limit {
                return Ok(());
            }
            return Err(io::Error::new(kind, format!("page cache: anonymous memory cannot be swapped out: {msg}")));
        }
        if std::time::Instant::now() >= deadline {
            return Err(io::Error::new(
                io::ErrorKind::OutOfMemory,
                "page cache: anonymous memory holds its share of the frames, and none of it can be swapped out now",
            ));
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// frontswap's load into a new, locked, not-uptodate page of anonymous
/// memory (in `fill_from_tier`'s place): true if the tier held it; the
/// page is then uptodate, and dirty if the load was exclusive.
pub(crate) fn fill_from_tier(m: &AddressSpace, anon: &Anon, page: &mut LockedPage<'_>) -> bool {
    if !anon.has_tier() || m.zone.blocks_uptodate(page.page()) != 0 {
        return false;
    }
    let Some(dirty) = anon.load_from_tier(page.index(), page.data_mut()) else {
        return false;
    };
    page.page().clear(PageFlags::ERROR);
    page.set_uptodate();
    if dirty {
        m.set_blocks_dirty(page.page(), m.zone.all_blocks(page.page()));
    }
    true
}

#[cfg(test)]
mod tests {
    use crate::PageCache;

    fn xorshift(s: &mut u64) -> u64 {
        *s ^= *s << 13;
        *s ^= *s >> 7;
        *s ^= *s << 17;
        *s
    }

    /// Memory 4x the cache, written and read at random against a model,
    /// with and without the compressed tier, at 4 and 16 KiB pages.
    fn model(tier: bool, page_size: usize, seed: u64) {
        let dir = tempfile::tempdir().unwrap();
        let mut b = PageCache::builder().capacity(256 << 10).swap_dir(dir.path()).readahead_max(0);
        if tier {
            b = b.compressed_tier(64 << 10);
        }
        let cache = b.build().unwrap();
        let len = 1u64 << 20;
        let mem = cache.anonymous_with_page_size(len, page_size).unwrap();
        let mut model = vec![0u8; len as usize];
        let mut s = seed;
        for step in 0..3000 {
            let off = xorshift(&mut s) % (len - 9000);
            let n = 1 + (xorshift(&mut s) % 9000) as usize;
            if xorshift(&mut s) % 3 == 0 {
                let mut buf = vec![0u8; n];
                mem.read_exact_at(&mut buf, off).unwrap();
                assert_eq!(buf, model[off as usize..off as usize + n], "step {step}: read at {off}+{n}");
            } else {
                // Compressible: a repeated byte pattern with a counter.
                let v = xorshift(&mut s);
                let buf: Vec<u8> =
                    (0..n).map(|i| if i % 16 < 8 { (v >> (i % 8 * 8)) as u8 } else { (i / 64) as u8 }).collect();
                mem.write_all_at(&buf, off).unwrap();
                model[off as usize..off as usize + n].copy_from_slice(&buf);
            }
            assert!(cache.stats().cached_bytes <= 256 << 10);
            if step % 500 == 0 {
                cache.check_invariants();
            }
        }
        // set_len down and up: the cut bytes read back as zeros.
        mem.set_len(len / 2 + 100).unwrap();
        mem.set_len(len).unwrap();
        model[(len / 2 + 100) as usize..].fill(0);
        let mut all = vec![0u8; len as usize];
        mem.read_exact_at(&mut all, 0).unwrap();
        assert!(all == model, "after set_len");
        cache.check_invariants();
        let st = cache.stats();
        assert!(st.swap_outs + st.frontswap_stores > 0, "{st:?}");
        if tier {
            assert!(st.frontswap_stores > 0 && st.frontswap_loads > 0, "{st}");
        }
        drop(mem);
        let st = cache.stats();
        assert_eq!(st.swap_pages, 0);
        assert_eq!(st.anon_pages, 0);
        assert_eq!(st.swap_bytes_used, 0);
        cache.check_invariants();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    /// `prefetch` of pages in the swap area reads them on io_uring, all at
    /// once, and gets their bytes right.
    #[test]
    fn prefetch_reads_swapped_pages_on_the_ring() {
        let dir = tempfile::tempdir().unwrap();
        let cache = PageCache::builder().capacity(256 << 10).swap_dir(dir.path()).readahead_max(0).build().unwrap();
        let len = 1u64 << 20;
        let mem = cache.anonymous(len).unwrap();
        for i in 0..len / 4096 {
            mem.write_all_at(&[(i % 251) as u8 + 1; 4096], i * 4096).unwrap();
        }
        assert!(cache.stats().swap_outs > 0);
        let offsets: Vec<u64> = (0..16).map(|k| k * 4096 * 13 % len).collect();
        let before = cache.stats();
        mem.prefetch(&offsets).unwrap();
        let after = cache.stats();
        if after.io_uring {
            assert!(after.uring_ops > before.uring_ops, "{after}");
        }
        assert!(after.swap_ins > before.swap_ins);
        for &o in &offsets {
            let mut b = [0u8; 4096];
            mem.read_exact_at(&mut b, o).unwrap();
            assert!(b.iter().all(|&x| x == ((o / 4096) % 251) as u8 + 1), "page at {o}");
        }
        cache.check_invariants();
    }

    /// A swap area just large enough, fragmented by pages rewritten one in
    /// two: batches that find no extent long enough go a page at a time,
    /// and nothing fails for want of contiguous space.
    #[test]
    fn a_fragmented_swap_area_still_takes_every_page() {
        let dir = tempfile::tempdir().unwrap();
        let len = 1u64 << 20;
        let cache = PageCache::builder()
            .capacity(256 << 10)
            .swap_dir(dir.path())
            .swap_limit(len + (64 << 10))
            .readahead_max(0)
            .build()
            .unwrap();
        let mem = cache.anonymous(len).unwrap();
        let pages = len / 4096;
        let mut model = vec![0u8; len as usize];
        for round in 0..6u64 {
            for i in 0..pages {
                if round == 0 || (i + round) % 2 == 0 {
                    let b = [(i as u8) ^ (round as u8 * 37) | 1; 4096];
                    mem.write_all_at(&b, i * 4096).unwrap_or_else(|e| panic!("round {round} page {i}: {e}"));
                    model[(i * 4096) as usize..][..4096].copy_from_slice(&b);
                }
            }
        }
        let mut all = vec![0u8; len as usize];
        mem.read_exact_at(&mut all, 0).unwrap();
        assert!(all == model);
        cache.check_invariants();
    }

    #[test]
    fn model_no_tier_4k() {
        model(false, 4096, 1);
    }

    #[test]
    fn model_tier_4k() {
        model(true, 4096, 2);
    }

    #[test]
    fn model_tier_16k() {
        model(true, 16384, 3);
    }

    #[test]
    fn model_no_tier_16k() {
        model(false, 16384, 4);
    }
}
