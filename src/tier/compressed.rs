//! zsmalloc (mm/zsmalloc.c) and zswap (mm/zswap.c): a compressed memory
//! tier that keeps clean pages lz4-compressed in slabs packed by size
//! class, under a hard byte budget, evicting its own coldest pages.
//!
//! # Layout
//!
//! - **Whole pages, stored in chunks.** A page is compressed whole, so
//!   lz4's 64 KiB window sees all of a 64 KiB page, and its compressed
//!   bytes are stored as a chain of objects of at most 4 KiB: full 4 KiB
//!   chunks in the 4096-byte class (a one-page slab each, nothing wasted),
//!   the rest in its own class, as a zsmalloc object may span two pages of
//!   its zspage. Not 4 KiB blocks compressed apart: on text-like 64 KiB
//!   pages that lost an eighth of the ratio (1.84x against 2.10x, see the
//!   `compression_ratio_of_sample_data` test), as lz4 finds no match across
//!   a block boundary. Not whole objects either: a page compressed to
//!   40 KiB would need classes up to 48 KiB and slabs of 48-64 KiB holding
//!   one object each. A get decompresses the whole page, which it needs
//!   anyway; the chunks are gathered into a thread-local scratch first.
//! - **Size classes** (zsmalloc's `size_class`): 64 classes in 64-byte steps
//!   up to 4 KiB. A class allocates objects from slabs of 1 to 4 pages
//!   (4 to 16 KiB, from the system allocator), the count chosen as
//!   zsmalloc's `get_pages_per_zspage` does: the one that wastes the least
//!   tail. Each slab keeps its free slots in a list threaded through its
//!   owner table (zsmalloc keeps it in the free objects themselves), and a
//!   class keeps its partly used slabs on a list: the class's free-slot
//!   list is the union of those.
//! - **Compaction** (zsmalloc's `zs_compact`): a slab is freed as soon as
//!   its last object is, and when a class holds two slabs' worth of free
//!   slots, the objects of its least used slab move into the other slabs'
//!   free slots and the slab is freed. So each class wastes less than two
//!   slabs however puts and invalidations interleave. The owner table
//!   (one `u32` per slot, zsmalloc's handle) says which entry to update.
//! - **Same-filled pages** (zram's `ZRAM_SAME`): a page whose bytes are all
//!   equal keeps only its index entry and the fill byte.
//! - **Refusal** (zswap's acceptance check): a page whose compressed size
//!   is more than 3/4 of the page size is refused and counted in `rejects`;
//!   its key is invalidated all the same (a put replaces what the key held).
//! - **Index**: shards chosen by a hash of (file, index), each a mutex over
//!   its own allocator, LRU and budget share. Within a shard, a map of
//!   files, each a `BTreeMap` of index to entry, so a range or whole-file
//!   invalidate visits only that file's pages.
//! - **Eviction** (zswap's `shrink_worker`, zram's lesson that refusing is
//!   not enough): entries sit on an LRU (a hit moves its entry to the hot
//!   end). A put that does not fit evicts from the cold end until the shard
//!   is down to 95% of its share (hysteresis), then stores.
//! - **Accounting**: `usage().bytes` is each shard's slabs (data, owner
//!   table and allocator headers), its entry arena at its capacity, its
//!   slab table at its capacity (reserved up front), the heap of its large
//!   pages' chunk lists, and an upper bound for its `BTreeMap`s (every
//!   non-root node of Rust's B-tree holds at least 5 of its 11 entries).
//!   Every put reserves what it will add before it adds it, so the bytes
//!   never exceed the budget. Not counted: each thread's 72 KiB scratch.
//!
//! Puts compress outside the lock into a thread-local scratch and take the
//! shard with `try_lock`: a contended put is refused (and counted), though
//! it still takes the lock to drop the key's older copy. Gets copy the
//! compressed bytes out under the lock and decompress after it; gets and
//! invalidations always take the lock.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::mem::size_of;
use std::ops::RangeBounds;

use parking_lot::Mutex;

use super::{FileKey, SecondTier, TierUsage, ANON_DEV};
use crate::sync::{lock_spinning, AtomicU32, AtomicU64, Ordering};

/// The largest object: a page's compressed bytes are stored in chunks of
/// at most this size.
const BLOCK: usize = 4096;
/// The largest page shift this tier stores (64 KiB pages).
const MAX_PAGE_SHIFT: u8 = 16;
/// Chunks in the largest page (its compressed size is at most 3/4 of it).
const MAX_CHUNKS: usize = (1 << MAX_PAGE_SHIFT) / BLOCK;
/// Bits of an owner word that name the chunk within its page.
const CHUNK_BITS: u32 = MAX_CHUNKS.trailing_zeros();
/// Step between size classes.
const CLASS_DELTA: usize = 64;
/// Size classes: 64, 128, ..., 4096 bytes.
const NR_CLASSES: usize = BLOCK / CLASS_DELTA;
/// The most pages (4 KiB) in one slab, zsmalloc's `ZS_MAX_PAGES_PER_ZSPAGE`.
const MAX_SLAB_PAGES: usize = 4;
/// lz4's worst case for the largest page: the scratch buffer's size.
const COMPRESS_BOUND: usize = (1 << MAX_PAGE_SHIFT) + (1 << MAX_PAGE_SHIFT) / 255 + 16;
/// No node, no slab.
const NIL: u32 = u32::MAX;
/// Marks a free slot in a slab's owner table; the low bits are the next
/// free slot.
const FREE: u32 = 1 << 31;
/// The end of a slab's free-slot list.
const NIL_SLOT: u16 = u16::MAX;
/// Entries per shard, so that an owner word (entry << CHUNK_BITS | chunk)
/// stays below [`FREE`].
const MAX_NODES: usize = 1 << (31 - CHUNK_BITS);
/// What the system allocator adds to each allocation, for the accounting.
const MALLOC_OVERHEAD: usize = 16;
/// Budget per shard when [`CompressedTier::new`] chooses the shard count.
const DEFAULT_SHARD_BYTES: usize = 8 << 20;
/// The most shards [`CompressedTier::new`] chooses.
const DEFAULT_MAX_SHARDS: usize = 16;
/// The least budget of one shard: fewer shards for a smaller budget.
const MIN_SHARD_BYTES: usize = 32 << 10;
/// The most shards [`CompressedTier::with_shards`] accepts.
const MAX_SHARDS: usize = 256;

/// One size class's slab shape.
#[derive(Clone, Copy, Debug)]
struct Geometry {
    /// Object size.
    size: usize,
    /// Bytes of one slab.
    slab_bytes: usize,
    /// Objects per slab.
    slots: usize,
}

/// zsmalloc's `get_pages_per_zspage`: of 1 to 4 pages, the slab size that
/// leaves the smallest fraction unused (the fewest pages on a tie).
const fn geometry(class: usize) -> Geometry {
    let size = (class + 1) * CLASS_DELTA;
    let mut best = 1;
    let mut pages = 2;
    while pages <= MAX_SLAB_PAGES {
        let used = (pages * BLOCK / size) * size;
        let best_used = (best * BLOCK / size) * size;
        // used / pages > best_used / best, without division.
        if used * best > best_used * pages {
            best = pages;
        }
        pages += 1;
    }
    let slab_bytes = best * BLOCK;
    Geometry { size, slab_bytes, slots: slab_bytes / size }
}

const GEOMETRY: [Geometry; NR_CLASSES] = {
    let mut table = [Geometry { size: 0, slab_bytes: 0, slots: 0 }; NR_CLASSES];
    let mut c = 0;
    while c < NR_CLASSES {
        table[c] = geometry(c);
        c += 1;
    }
    table
};

/// The class that holds an object of `len` bytes (1 to [`BLOCK`]).
#[inline]
fn class_of(len: usize) -> usize {
    len.clamp(1, BLOCK).div_ceil(CLASS_DELTA) - 1
}

/// Bytes one slab of class `class` costs: data, owner table, two headers.
#[inline]
fn slab_cost(class: usize) -> usize {
    let g = GEOMETRY[class];
    g.slab_bytes + g.slots * size_of::<u32>() + 2 * MALLOC_OVERHEAD
}

/// Upper bound of the heap bytes of one node of a `BTreeMap<K, V>`: parent
/// pointer, parent index and length, 11 keys and 11 values, the allocator's
/// header, and for an internal node 12 edges.
const fn btree_node_bytes(key: usize, value: usize, internal: bool) -> usize {
    let raw = 8 + 4 + 11 * key + 11 * value;
    let leaf = raw.div_ceil(8) * 8 + MALLOC_OVERHEAD;
    if internal {
        leaf + 12 * 8
    } else {
        leaf
    }
}

/// Upper bound of the heap bytes of a `BTreeMap` of `n` entries whose
/// nodes take `leaf` and `internal` bytes. Past one node the root is
/// internal, every other node holds at least 5 entries, so there are at
/// most n/5 leaves and n/25 internal nodes plus one per level.
fn btree_bytes(n: usize, leaf: usize, internal: usize) -> usize {
    match n {
        0 => 0,
        1..=11 => leaf,
        _ => {
            let depth = n.ilog(6) as usize + 1;
            n * leaf / 5 + (n / 20 + depth) * internal
        }
    }
}

/// Heap bytes of one file's map, index to entry.
fn pages_map_bytes(n: usize) -> usize {
    const LEAF: usize = btree_node_bytes(size_of::<u64>(), size_of::<u32>(), false);
    const INTERNAL: usize = btree_node_bytes(size_of::<u64>(), size_of::<u32>(), true);
    btree_bytes(n, LEAF, INTERNAL)
}

/// Heap bytes of a shard's map of files.
fn files_map_bytes(n: usize) -> usize {
    const K: usize = size_of::<FileKey>();
    const V: usize = size_of::<BTreeMap<u64, u32>>();
    const LEAF: usize = btree_node_bytes(K, V, false);
    const INTERNAL: usize = btree_node_bytes(K, V, true);
    btree_bytes(n, LEAF, INTERNAL)
}

/// If every byte of `bytes` is the same, that byte.
fn same_filled(bytes: &[u8]) -> Option<u8> {
    let &first = bytes.first()?;
    let pattern = u64::from_ne_bytes([first; 8]);
    let mut words = bytes.chunks_exact(8);
    let all = words.by_ref().all(|w| matches!(<[u8; 8]>::try_from(w), Ok(a) if u64::from_ne_bytes(a) == pattern))
        && words.remainder().iter().all(|&b| b == first);
    all.then_some(first)
}

/// Owner word of chunk `chunk` of entry `node`.
#[inline]
fn owner(node: u32, chunk: usize) -> u32 {
    (node << CHUNK_BITS) | chunk as u32
}

/// One piece of a page's compressed bytes: `len` bytes at `slot` of `slab`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Chunk {
    slab: u32,
    slot: u16,
    len: u16,
}

/// Where a stored page's bytes are.
#[derive(Debug)]
enum Stored {
    /// Every byte of the page is this byte (zram's same-filled pages).
    Filled(u8),
    /// Compressed to at most [`BLOCK`] bytes: one object.
    One(Chunk),
    /// Compressed to more: full [`BLOCK`]-byte chunks, then the rest.
    Many(Box<[Chunk]>),
}

impl Stored {
    #[inline]
    fn chunks(&self) -> &[Chunk] {
        match self {
            Stored::Filled(_) => &[],
            Stored::One(c) => std::slice::from_ref(c),
            Stored::Many(v) => v,
        }
    }

    #[inline]
    fn set(&mut self, i: usize, chunk: Chunk) {
        match self {
            Stored::Filled(_) => debug_assert!(false, "tier: chunk of a same-filled page"),
            Stored::One(c) => *c = chunk,
            Stored::Many(v) => v[i] = chunk,
        }
    }

    /// Heap bytes of the chunk list.
    #[inline]
    fn heap_bytes(&self) -> usize {
        heap_of_chunks(self.chunks().len())
    }
}

/// Heap bytes of a list of `n` chunks (none for one chunk).
#[inline]
fn heap_of_chunks(n: usize) -> usize {
    if n > 1 {
        n * size_of::<Chunk>() + MALLOC_OVERHEAD
    } else {
        0
    }
}

/// Length of chunk `i` of a page compressed to `len` bytes.
#[inline]
fn chunk_len(len: usize, i: usize) -> usize {
    (len - i * BLOCK).min(BLOCK)
}

/// One stored page: its key, LRU links and bytes.
#[derive(Debug)]
struct Node {
    file: FileKey,
    index: u64,
    /// Toward the hot end.
    prev: u32,
    /// Toward the cold end.
    next: u32,
    /// Told apart from a later entry under the same key (frontswap's
    /// writeback removes only the entry it wrote).
    seq: u64,
    stored: Stored,
}

/// Which LRU list an entry is on: file pages (dropped when room is
/// needed), anonymous memory (never dropped by the tier: frontswap writes
/// it to the swap area first).
#[inline]
fn list_of(file: &FileKey) -> usize {
    usize::from(file.dev == ANON_DEV)
}

/// A slab: `slots` objects of one class and who owns each (zsmalloc's
/// zspage).
struct Slab {
    data: Box<[u8]>,
    /// Per slot: the owner word, or [`FREE`] | next free slot.
    owners: Box<[u32]>,
    /// Links on the class's list of partly used slabs (NIL-terminated).
    prev: u32,
    next: u32,
    used: u16,
    free_head: u16,
    class: u8,
}

/// One size class's lists and counts.
#[derive(Clone, Copy, Debug)]
struct Class {
    /// Head of the list of slabs with a free slot.
    partial: u32,
    /// Free slots in this class's slabs.
    free: usize,
    /// Slabs of this class.
    slabs: usize,
    /// Objects allocated in this class.
    objects: usize,
}

/// A page compressed outside the lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Prepared {
    /// Every byte is this one.
    Filled(u8),
    /// Compressed into the scratch's first this many bytes.
    Packed(usize),
}

thread_local! {
    /// Per-thread compression output and decompression input.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Compresses `data` (a whole page) into `scratch`, or returns `None` when
/// it would take more than 3/4 of the page.
fn prepare(data: &[u8], scratch: &mut Vec<u8>) -> Option<Prepared> {
    if let Some(x) = same_filled(data) {
        return Some(Prepared::Filled(x));
    }
    if scratch.len() < COMPRESS_BOUND {
        scratch.resize(COMPRESS_BOUND, 0);
    }
    // Into 3/4 of a page: liblz4 stops as soon as the output would not
    // fit (`LZ4_compress_default`'s limited output), so a page that does
    // not compress costs less than a whole compression.
    let limit = data.len() / 4 * 3;
    match lz4::block::compress_to_buffer(data, None, false, &mut scratch[..limit]) {
        Ok(len) if len > 0 && len <= limit => Some(Prepared::Packed(len)),
        _ => None,
    }
}

/// One shard: an index, an LRU, an allocator and a share of the budget.
struct Shard {
    budget: usize,
    /// Bytes that do not change: the shard itself and its slab table.
    fixed: usize,
    files: BTreeMap<FileKey, BTreeMap<u64, u32>>,
    /// Upper bound of the heap bytes of `files` and its maps.
    index_bytes: usize,
    /// Entries, dense: removing one moves the last into its place.
    nodes: Vec<Node>,
    /// Hot ends of the LRU lists (file pages, anonymous memory).
    head: [u32; 2],
    /// Cold ends of the LRU lists.
    tail: [u32; 2],
    /// The next entry's `seq`.
    next_seq: u64,
    classes: [Class; NR_CLASSES],
    /// Slabs by id; capacity reserved at creation (every slab is at least
    /// a page, so the budget holds no more).
    slabs: Vec<Option<Slab>>,
    free_slabs: Vec<u32>,
    slab_bytes: usize,
    heap_bytes: usize,
    logical: u64,
    stored: u64,
    rejects: u64,
    evictions: u64,
}

impl Shard {
    /// Bytes a shard with this budget uses when empty: itself and its
    /// slab table.
    fn fixed_bytes(budget: usize) -> usize {
        let max_slabs = budget / BLOCK + 1;
        size_of::<Mutex<Shard>>() + max_slabs * (size_of::<Option<Slab>>() + size_of::<u32>()) + 2 * MALLOC_OVERHEAD
    }

    fn new(budget: usize) -> Shard {
        let max_slabs = budget / BLOCK + 1;
        let slabs = Vec::with_capacity(max_slabs);
        let free_slabs = Vec::with_capacity(max_slabs);
        let fixed = Self::fixed_bytes(budget);
        Shard {
            budget,
            fixed,
            files: BTreeMap::new(),
            index_bytes: 0,
            nodes: Vec::new(),
            head: [NIL; 2],
            tail: [NIL; 2],
            next_seq: 1,
            classes: [Class { partial: NIL, free: 0, slabs: 0, objects: 0 }; NR_CLASSES],
            slabs,
            free_slabs,
            slab_bytes: 0,
            heap_bytes: 0,
            logical: 0,
            stored: 0,
            rejects: 0,
            evictions: 0,
        }
    }

    /// Bytes of the entry arena at its capacity.
    fn nodes_bytes(cap: usize) -> usize {
        if cap == 0 {
            0
        } else {
            cap * size_of::<Node>() + MALLOC_OVERHEAD
        }
    }

    /// Bytes this shard uses now.
    fn bytes(&self) -> usize {
        self.fixed + Self::nodes_bytes(self.nodes.capacity()) + self.index_bytes + self.heap_bytes + self.slab_bytes
    }

    /// How much the entry arena grows when full.
    fn node_growth(cap: usize) -> usize {
        (cap / 4).max(8)
    }

    fn lookup(&self, file: &FileKey, index: u64) -> Option<u32> {
        self.files.get(file)?.get(&index).copied()
    }

    // ---- LRU ----

    fn unlink(&mut self, id: u32) {
        let (prev, next, list) = {
            let n = &self.nodes[id as usize];
            (n.prev, n.next, list_of(&n.file))
        };
        if prev == NIL {
            self.head[list] = next;
        } else {
            self.nodes[prev as usize].next = next;
        }
        if next == NIL {
            self.tail[list] = prev;
        } else {
            self.nodes[next as usize].prev = prev;
        }
    }

    fn link_head(&mut self, id: u32) {
        let list = list_of(&self.nodes[id as usize].file);
        let old = self.head[list];
        {
            let n = &mut self.nodes[id as usize];
            n.prev = NIL;
            n.next = old;
        }
        if old == NIL {
            self.tail[list] = id;
        } else {
            self.nodes[old as usize].prev = id;
        }
        self.head[list] = id;
    }

    fn touch(&mut self, id: u32) {
        if self.head[list_of(&self.nodes[id as usize].file)] != id {
            self.unlink(id);
            self.link_head(id);
        }
    }

    // ---- slabs ----

    fn slab(&self, id: u32) -> &Slab {
        self.slabs[id as usize].as_ref().expect("tier: block names a freed slab")
    }

    fn slab_mut(&mut self, id: u32) -> &mut Slab {
        self.slabs[id as usize].as_mut().expect("tier: block names a freed slab")
    }

    fn link_partial(&mut self, class: usize, id: u32) {
        let old = self.classes[class].partial;
        {
            let s = self.slab_mut(id);
            s.prev = NIL;
            s.next = old;
        }
        if old != NIL {
            self.slab_mut(old).prev = id;
        }
        self.classes[class].partial = id;
    }

    fn unlink_partial(&mut self, class: usize, id: u32) {
        let (prev, next) = {
            let s = self.slab(id);
            (s.prev, s.next)
        };
        if prev == NIL {
            self.classes[class].partial = next;
        } else {
            self.slab_mut(prev).next = next;
        }
        if next != NIL {
            self.slab_mut(next).prev = prev;
        }
        let s = self.slab_mut(id);
        s.prev = NIL;
        s.next = NIL;
    }

    /// Slab ids still available.
    fn slab_ids_left(&self) -> usize {
        self.free_slabs.len() + (self.slabs.capacity() - self.slabs.len())
    }

    /// Makes an empty slab of `class` and puts it on the partial list.
    fn new_slab(&mut self, class: usize) -> Option<u32> {
        let g = GEOMETRY[class];
        let id = match self.free_slabs.pop() {
            Some(id) => id,
            None if self.slabs.len() < self.slabs.capacity() => {
                self.slabs.push(None);
                (self.slabs.len() - 1) as u32
            }
            None => return None,
        };
        let owners: Box<[u32]> =
            (0..g.slots).map(|i| FREE | if i + 1 < g.slots { (i + 1) as u32 } else { u32::from(NIL_SLOT) }).collect();
        self.slabs[id as usize] = Some(Slab {
            data: vec![0u8; g.slab_bytes].into_boxed_slice(),
            owners,
            prev: NIL,
            next: NIL,
            used: 0,
            free_head: 0,
            class: class as u8,
        });
        self.link_partial(class, id);
        let c = &mut self.classes[class];
        c.slabs += 1;
        c.free += g.slots;
        self.slab_bytes += slab_cost(class);
        Some(id)
    }

    fn release_slab(&mut self, class: usize, id: u32) {
        self.slabs[id as usize] = None;
        self.free_slabs.push(id);
        self.slab_bytes -= slab_cost(class);
        self.classes[class].slabs -= 1;
    }

    /// Takes a free slot of `class` for `owner`, making a slab if `grow`
    /// and none is free.
    fn alloc_obj(&mut self, class: usize, owner: u32, grow: bool) -> Option<(u32, u16)> {
        let mut id = self.classes[class].partial;
        if id == NIL {
            if !grow {
                return None;
            }
            id = self.new_slab(class)?;
        }
        let slots = GEOMETRY[class].slots;
        let s = self.slab_mut(id);
        let slot = s.free_head;
        s.free_head = (s.owners[slot as usize] & !FREE) as u16;
        s.owners[slot as usize] = owner;
        s.used += 1;
        let full = s.used as usize == slots;
        let c = &mut self.classes[class];
        c.free -= 1;
        c.objects += 1;
        if full {
            self.unlink_partial(class, id);
        }
        Some((id, slot))
    }

    /// Frees a slot; frees its slab when empty, compacts the class when it
    /// holds two slabs' worth of free slots.
    fn free_obj(&mut self, id: u32, slot: u16) {
        let s = self.slab_mut(id);
        let class = s.class as usize;
        let slots = GEOMETRY[class].slots;
        let was_full = s.used as usize == slots;
        s.owners[slot as usize] = FREE | u32::from(s.free_head);
        s.free_head = slot;
        s.used -= 1;
        let empty = s.used == 0;
        let c = &mut self.classes[class];
        c.free += 1;
        c.objects -= 1;
        if empty {
            if !was_full {
                self.unlink_partial(class, id);
            }
            self.classes[class].free -= slots;
            self.release_slab(class, id);
            return;
        }
        if was_full {
            self.link_partial(class, id);
        }
        if self.classes[class].free >= 2 * slots {
            self.compact(class);
        }
    }

    /// Empties the least used partial slab of `class` into the others and
    /// frees it (zsmalloc's `__zs_compact`). Needs the class to hold more
    /// free slots outside that slab than the slab holds objects, which two
    /// slabs' worth of free slots guarantees.
    fn compact(&mut self, class: usize) {
        let g = GEOMETRY[class];
        let mut victim = NIL;
        let mut least = u16::MAX;
        let mut id = self.classes[class].partial;
        while id != NIL {
            let s = self.slab(id);
            if s.used < least {
                least = s.used;
                victim = id;
            }
            id = s.next;
        }
        if victim == NIL || self.classes[class].free - (g.slots - least as usize) < least as usize {
            return;
        }
        self.unlink_partial(class, victim);
        let Some(old) = self.slabs[victim as usize].take() else {
            return;
        };
        self.classes[class].free -= g.slots - old.used as usize;
        for (slot, &who) in old.owners.iter().enumerate() {
            if who & FREE != 0 {
                continue;
            }
            let (to, to_slot) = self.alloc_obj(class, who, false).expect("tier: compaction ran out of free slots");
            let dst = &mut self.slab_mut(to).data[to_slot as usize * g.size..][..g.size];
            dst.copy_from_slice(&old.data[slot * g.size..][..g.size]);
            self.classes[class].objects -= 1;
            let node = &mut self.nodes[(who >> CHUNK_BITS) as usize].stored;
            let i = (who & ((1 << CHUNK_BITS) - 1)) as usize;
            let len = node.chunks()[i].len;
            node.set(i, Chunk { slab: to, slot: to_slot, len });
        }
        self.release_slab(class, victim);
    }

    // ---- entries ----

    /// Removes entry `id` and frees its objects; the last entry moves to `id`.
    fn remove_node(&mut self, id: u32) {
        // Compaction while freeing may move this entry's later chunks: read
        // each chunk when its turn comes.
        for i in 0..self.nodes[id as usize].stored.chunks().len() {
            let Chunk { slab, slot, len } = self.nodes[id as usize].stored.chunks()[i];
            if slab != NIL {
                self.stored -= u64::from(len);
                self.free_obj(slab, slot);
            }
        }
        self.unlink(id);
        let (file, index) = {
            let n = &self.nodes[id as usize];
            (n.file, n.index)
        };
        if let Some(map) = self.files.get_mut(&file) {
            let n = map.len();
            map.remove(&index);
            self.index_bytes = self.index_bytes - pages_map_bytes(n) + pages_map_bytes(n - 1);
            if n == 1 {
                let f = self.files.len();
                self.files.remove(&file);
                self.index_bytes = self.index_bytes - files_map_bytes(f) + files_map_bytes(f - 1);
            }
        }
        self.logical -= file.page_size() as u64;
        let node = self.nodes.swap_remove(id as usize);
        self.heap_bytes -= node.stored.heap_bytes();
        if (id as usize) < self.nodes.len() {
            self.renumber(id);
        }
        let (len, cap) = (self.nodes.len(), self.nodes.capacity());
        if len == 0 {
            self.nodes = Vec::new();
        } else if cap > 16 && len < cap / 2 {
            self.nodes.shrink_to(len + len / 4 + 8);
        }
    }

    /// The entry now at `id` moved there from the end: point its LRU
    /// neighbours, its index slot and its objects' owners at `id`.
    fn renumber(&mut self, id: u32) {
        let (prev, next, file, index) = {
            let n = &self.nodes[id as usize];
            (n.prev, n.next, n.file, n.index)
        };
        let list = list_of(&file);
        if prev == NIL {
            self.head[list] = id;
        } else {
            self.nodes[prev as usize].next = id;
        }
        if next == NIL {
            self.tail[list] = id;
        } else {
            self.nodes[next as usize].prev = id;
        }
        if let Some(slot) = self.files.get_mut(&file).and_then(|m| m.get_mut(&index)) {
            *slot = id;
        }
        for i in 0..self.nodes[id as usize].stored.chunks().len() {
            let Chunk { slab, slot, .. } = self.nodes[id as usize].stored.chunks()[i];
            self.slab_mut(slab).owners[slot as usize] = owner(id, i);
        }
    }

    fn remove_key(&mut self, file: &FileKey, index: u64) -> bool {
        match self.lookup(file, index) {
            Some(id) => {
                self.remove_node(id);
                true
            }
            None => false,
        }
    }

    fn remove_keys(&mut self, file: &FileKey, range: impl RangeBounds<u64>) {
        let Some(map) = self.files.get(file) else {
            return;
        };
        let keys: Vec<u64> = map.range(range).map(|(&k, _)| k).collect();
        for k in keys {
            self.remove_key(file, k);
        }
    }

    /// Drops the coldest file page (anonymous memory is never dropped
    /// here: frontswap writes it to the swap area first).
    fn evict(&mut self) -> bool {
        if self.tail[0] == NIL {
            return false;
        }
        self.remove_node(self.tail[0]);
        self.evictions += 1;
        true
    }

    /// Bytes a put of a page with these per-class object counts and this
    /// block-list heap would add to the shard now.
    fn need(&self, file: &FileKey, heap: usize, demand: &[(usize, usize)]) -> usize {
        let mut need = heap;
        let cap = self.nodes.capacity();
        if self.nodes.len() == cap {
            need += Self::nodes_bytes(cap + Self::node_growth(cap)) - Self::nodes_bytes(cap);
        }
        let n = self.files.get(file).map_or(0, BTreeMap::len);
        need += pages_map_bytes(n + 1) - pages_map_bytes(n);
        if n == 0 {
            let f = self.files.len();
            need += files_map_bytes(f + 1) - files_map_bytes(f);
        }
        let mut slabs = 0;
        for &(class, count) in demand {
            let free = self.classes[class].free;
            if count > free {
                let k = (count - free).div_ceil(GEOMETRY[class].slots);
                slabs += k;
                need += k * slab_cost(class);
            }
        }
        if slabs > self.slab_ids_left() {
            return usize::MAX / 2;
        }
        need
    }

    /// Stores a prepared page (the key already removed); evicts to make
    /// room. Returns whether it was stored.
    fn store(&mut self, file: &FileKey, index: u64, p: Prepared, scratch: &[u8]) -> bool {
        if self.nodes.len() >= MAX_NODES {
            self.rejects += 1;
            return false;
        }
        let (len, n) = match p {
            Prepared::Filled(_) => (0, 0),
            Prepared::Packed(len) => (len, len.div_ceil(BLOCK)),
        };
        let heap = heap_of_chunks(n);
        // Full chunks in the largest class, the rest in its own.
        let full = (BLOCK, len / BLOCK);
        let demand = [(class_of(full.0), full.1), (class_of(len % BLOCK), usize::from(len % BLOCK != 0))];
        let mut need = self.need(file, heap, &demand);
        if self.bytes().saturating_add(need) > self.budget {
            // Once full, make room for more than this page (hysteresis).
            let low = self.budget - self.budget / 20;
            while self.bytes().saturating_add(need) > low && self.evict() {
                need = self.need(file, heap, &demand);
            }
            if self.bytes().saturating_add(need) > self.budget {
                self.rejects += 1;
                return false;
            }
        }

        // Insert the entry with placeholder chunks, then place the objects.
        let cap = self.nodes.capacity();
        if self.nodes.len() == cap {
            self.nodes.reserve_exact(Self::node_growth(cap));
        }
        let id = self.nodes.len() as u32;
        let none = Chunk { slab: NIL, slot: NIL_SLOT, len: 0 };
        let stored = match (p, n) {
            (Prepared::Filled(x), _) => Stored::Filled(x),
            (_, 1) => Stored::One(none),
            _ => Stored::Many(vec![none; n].into_boxed_slice()),
        };
        self.heap_bytes += stored.heap_bytes();
        let seq = self.next_seq;
        self.next_seq += 1;
        self.nodes.push(Node { file: *file, index, prev: NIL, next: NIL, seq, stored });
        self.link_head(id);
        let f = self.files.len();
        let map = self.files.entry(*file).or_default();
        let before = map.len();
        map.insert(index, id);
        self.index_bytes = self.index_bytes - pages_map_bytes(before) + pages_map_bytes(before + 1);
        if before == 0 {
            self.index_bytes = self.index_bytes - files_map_bytes(f) + files_map_bytes(f + 1);
        }
        self.logical += file.page_size() as u64;

        for i in 0..n {
            let clen = chunk_len(len, i);
            let class = class_of(clen);
            let Some((slab, slot)) = self.alloc_obj(class, owner(id, i), true) else {
                // `need` counted the slab ids, so this does not happen; undo
                // (`remove_node` skips the placeholders).
                self.remove_node(id);
                self.rejects += 1;
                return false;
            };
            let size = GEOMETRY[class].size;
            let src = &scratch[i * BLOCK..][..clen];
            self.slab_mut(slab).data[slot as usize * size..][..clen].copy_from_slice(src);
            self.nodes[id as usize].stored.set(i, Chunk { slab, slot, len: clen as u16 });
            self.stored += clen as u64;
        }
        true
    }

    /// Copies entry `id`'s compressed bytes into `scratch`, in order.
    fn copy_out(&self, id: u32, scratch: &mut [u8]) -> Prepared {
        let stored = &self.nodes[id as usize].stored;
        if let Stored::Filled(x) = stored {
            return Prepared::Filled(*x);
        }
        let mut at = 0;
        for c in stored.chunks() {
            let len = c.len as usize;
            let size = GEOMETRY[class_of(len)].size;
            scratch[at..at + len].copy_from_slice(&self.slab(c.slab).data[c.slot as usize * size..][..len]);
            at += len;
        }
        Prepared::Packed(at)
    }

    fn usage(&self) -> TierUsage {
        TierUsage {
            pages: self.nodes.len() as u64,
            bytes: self.bytes() as u64,
            logical_bytes: self.logical,
            stored_bytes: self.stored,
            rejects: self.rejects,
            evictions: self.evictions,
        }
    }

    /// Panics unless every structure of the shard agrees with the others.
    fn check(&self) {
        let nodes = self.nodes.len();
        // Index.
        let mut indexed = 0;
        let mut index_bytes = files_map_bytes(self.files.len());
        for (file, map) in &self.files {
            assert!(!map.is_empty(), "tier: empty map kept for {file:?}");
            index_bytes += pages_map_bytes(map.len());
            for (&index, &id) in map {
                let n = self.nodes.get(id as usize).expect("tier: index names no entry");
                assert!(n.file == *file && n.index == index, "tier: index and entry disagree");
                indexed += 1;
            }
        }
        assert_eq!(indexed, nodes, "tier: entries not indexed");
        assert_eq!(index_bytes, self.index_bytes, "tier: index bytes");

        // LRU lists: each entry on the one of its kind.
        let mut seen = vec![false; nodes];
        let mut count = 0;
        for list in 0..2 {
            let mut prev = NIL;
            let mut id = self.head[list];
            while id != NIL {
                assert!((id as usize) < nodes && !seen[id as usize], "tier: LRU cycle or stray");
                seen[id as usize] = true;
                let n = &self.nodes[id as usize];
                assert_eq!(n.prev, prev, "tier: LRU back link");
                assert_eq!(list_of(&n.file), list, "tier: entry on the other kind's list");
                assert!(n.seq < self.next_seq, "tier: sequence from the future");
                prev = id;
                id = n.next;
                count += 1;
            }
            assert_eq!(prev, self.tail[list], "tier: LRU tail");
        }
        assert_eq!(count, nodes, "tier: LRU misses entries");

        // Entries' chunks against slabs.
        let mut objects = [0usize; NR_CLASSES];
        let (mut logical, mut stored, mut heap) = (0u64, 0u64, 0usize);
        for (id, n) in self.nodes.iter().enumerate() {
            let ps = n.file.page_size();
            logical += ps as u64;
            heap += n.stored.heap_bytes();
            let chunks = n.stored.chunks();
            if let Stored::Many(v) = &n.stored {
                assert!(v.len() > 1, "tier: a list of one chunk");
            }
            let len: usize = chunks.iter().map(|c| c.len as usize).sum();
            assert!(len <= ps / 4 * 3, "tier: a page kept at {len} of {ps} bytes");
            assert_eq!(chunks.len(), len.div_ceil(BLOCK), "tier: chunk count");
            for (i, c) in chunks.iter().enumerate() {
                assert_eq!(c.len as usize, chunk_len(len, i), "tier: chunk {i} length");
                let class = class_of(c.len as usize);
                let s = self.slabs.get(c.slab as usize).and_then(Option::as_ref).expect("tier: object in no slab");
                assert_eq!(s.class as usize, class, "tier: object in another class's slab");
                assert!((c.slot as usize) < GEOMETRY[class].slots, "tier: slot out of range");
                assert_eq!(s.owners[c.slot as usize], owner(id as u32, i), "tier: slot not owned by its entry");
                objects[class] += 1;
                stored += u64::from(c.len);
            }
        }
        assert_eq!(logical, self.logical, "tier: logical bytes");
        assert_eq!(stored, self.stored, "tier: stored bytes");
        assert_eq!(heap, self.heap_bytes, "tier: heap bytes");

        // Slabs, their free lists and the class lists.
        let mut slab_count = [0usize; NR_CLASSES];
        let mut free = [0usize; NR_CLASSES];
        let mut partial = [0usize; NR_CLASSES];
        let mut slab_bytes = 0;
        let mut empty_ids = 0;
        for s in &self.slabs {
            let Some(s) = s else {
                empty_ids += 1;
                continue;
            };
            let class = s.class as usize;
            let g = GEOMETRY[class];
            assert_eq!(s.data.len(), g.slab_bytes, "tier: slab size");
            assert_eq!(s.owners.len(), g.slots, "tier: owner table size");
            let used = s.owners.iter().filter(|&&o| o & FREE == 0).count();
            assert_eq!(used, s.used as usize, "tier: slab use count");
            assert!(used > 0, "tier: empty slab kept");
            let mut walked = 0;
            let mut slot = s.free_head;
            while slot != NIL_SLOT {
                assert!(walked < g.slots, "tier: free list cycle");
                let o = s.owners[slot as usize];
                assert!(o & FREE != 0, "tier: free list holds a used slot");
                slot = (o & !FREE) as u16;
                walked += 1;
            }
            assert_eq!(walked, g.slots - used, "tier: free list length");
            slab_count[class] += 1;
            free[class] += g.slots - used;
            if used < g.slots {
                partial[class] += 1;
            }
            slab_bytes += slab_cost(class);
        }
        assert_eq!(slab_bytes, self.slab_bytes, "tier: slab bytes");
        assert_eq!(empty_ids, self.free_slabs.len(), "tier: free slab ids");
        for &id in &self.free_slabs {
            assert!(self.slabs[id as usize].is_none(), "tier: free id of a live slab");
        }
        for (class, c) in self.classes.iter().enumerate() {
            let slots = GEOMETRY[class].slots;
            assert_eq!(c.slabs, slab_count[class], "tier: class {class} slab count");
            assert_eq!(c.free, free[class], "tier: class {class} free slots");
            assert_eq!(c.objects, objects[class], "tier: class {class} objects");
            assert!(c.free < 2 * slots.max(1), "tier: class {class} not compacted");
            let mut walked = 0;
            let mut prev = NIL;
            let mut id = c.partial;
            while id != NIL {
                assert!(walked < partial[class], "tier: class {class} partial list too long");
                let s = self.slab(id);
                assert_eq!(s.class as usize, class, "tier: partial list crosses classes");
                assert!((s.used as usize) < slots, "tier: full slab on the partial list");
                assert_eq!(s.prev, prev, "tier: partial back link");
                prev = id;
                id = s.next;
                walked += 1;
            }
            assert_eq!(walked, partial[class], "tier: class {class} partial list");
        }
        assert!(self.bytes() <= self.budget, "tier: {} bytes over a budget of {}", self.bytes(), self.budget);
    }
}

/// A compressed memory tier (zswap over zsmalloc): clean pages kept
/// lz4-compressed in memory under a byte budget. See the module docs.
///
/// ```
/// use page_cache::tier::{compressed::CompressedTier, FileKey, SecondTier};
/// let tier = CompressedTier::new(1 << 20);
/// let file = FileKey { dev: 1, ino: 2, generation: 3, page_shift: 12 };
/// let page = b"hello, tier! ".repeat(316)[..4096].to_vec();
/// assert!(tier.put_page(&file, 7, &page));
/// let mut out = vec![0u8; 4096];
/// assert!(tier.get_page(&file, 7, &mut out));
/// assert_eq!(out, page);
/// tier.invalidate_page(&file, 7);
/// assert!(!tier.get_page(&file, 7, &mut out));
/// ```
pub struct CompressedTier {
    budget: usize,
    exclusive: bool,
    shards: Box<[Mutex<Shard>]>,
    /// Puts refused without reaching their shard: contended lock, bad size.
    refused: AtomicU64,
    /// Pages that did not compress in a row, per bucket of files (by a
    /// hash of the file's key): a file whose pages keep failing is
    /// sampled one page in `INCOMPRESSIBLE_SAMPLE`, so a scan of random
    /// bytes does not pay a compression per page to keep nothing.
    incompressible: Box<[AtomicU32]>,
}

/// Pages in a row that did not compress after which a file's pages are
/// tried one in this many (and refused without compressing otherwise).
const INCOMPRESSIBLE_SAMPLE: u32 = 64;
/// Buckets of files for `CompressedTier::incompressible`.
const INCOMPRESSIBLE_BUCKETS: usize = 64;

impl std::fmt::Debug for CompressedTier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompressedTier")
            .field("budget", &self.budget)
            .field("exclusive", &self.exclusive)
            .field("shards", &self.shards.len())
            .finish_non_exhaustive()
    }
}

impl CompressedTier {
    /// A tier that never uses more than `budget_bytes` bytes of memory,
    /// with one shard per 8 MiB of budget (1 to 16), non-exclusive gets.
    /// A budget too small for one shard's own tables (a few KiB) makes a
    /// tier that refuses every page and uses nothing.
    pub fn new(budget_bytes: usize) -> CompressedTier {
        let shards = (budget_bytes / DEFAULT_SHARD_BYTES).clamp(1, DEFAULT_MAX_SHARDS);
        CompressedTier::build(budget_bytes, 1 << shards.ilog2(), false)
    }

    /// The same tier with `shards` shards (rounded up to a power of two,
    /// 1 to 256, and halved while a shard would get less than 32 KiB), each
    /// with an equal share of the budget. Call it before use: it starts the
    /// tier over empty.
    pub fn with_shards(self, shards: usize) -> CompressedTier {
        let n = shards.clamp(1, MAX_SHARDS).next_power_of_two();
        CompressedTier::build(self.budget, n, self.exclusive)
    }

    /// With `exclusive`, a hit removes the page from the tier (the cache
    /// then holds the only copy), as zswap's exclusive loads do.
    pub fn with_exclusive_gets(mut self, exclusive: bool) -> CompressedTier {
        self.exclusive = exclusive;
        self
    }

    fn build(budget: usize, mut shards: usize, exclusive: bool) -> CompressedTier {
        while shards > 1 && budget / shards < MIN_SHARD_BYTES {
            shards /= 2;
        }
        let share = budget / shards;
        if Shard::fixed_bytes(share) >= share {
            // Too small for even one shard's tables: a tier of nothing.
            shards = 0;
        }
        CompressedTier {
            budget,
            exclusive,
            shards: (0..shards).map(|_| Mutex::new(Shard::new(share))).collect(),
            refused: AtomicU64::new(0),
            incompressible: (0..INCOMPRESSIBLE_BUCKETS).map(|_| AtomicU32::new(0)).collect(),
        }
    }

    /// The bucket of `file` in `incompressible`.
    fn incompressible_bucket(&self, file: &FileKey) -> &AtomicU32 {
        let h = file.ino.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ file.dev.rotate_left(29) ^ file.generation;
        &self.incompressible[(h.wrapping_mul(0xBF58_476D_1CE4_E5B9) >> 58) as usize % INCOMPRESSIBLE_BUCKETS]
    }

    /// The budget in bytes.
    pub fn budget(&self) -> usize {
        self.budget
    }

    /// How many shards the tier has.
    pub fn shards(&self) -> usize {
        self.shards.len()
    }

    /// The page size of `file`, if this tier can store pages of it.
    #[inline]
    fn page_size(&self, file: &FileKey) -> Option<usize> {
        (file.page_shift <= MAX_PAGE_SHIFT && !self.shards.is_empty()).then(|| file.page_size())
    }

    #[inline]
    fn shard(&self, file: &FileKey, index: u64) -> &Mutex<Shard> {
        // A splitmix64 finish over the key's words.
        let mut h = file.dev ^ file.ino.rotate_left(21) ^ file.generation.rotate_left(42);
        h ^= u64::from(file.page_shift) << 56;
        h ^= index.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        h ^= h >> 30;
        h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
        h ^= h >> 27;
        h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
        h ^= h >> 31;
        &self.shards[(h as usize) & (self.shards.len() - 1)]
    }

    fn refuse(&self) {
        // Relaxed: a statistics counter; nothing is published through it.
        self.refused.fetch_add(1, Ordering::Relaxed);
    }

    /// Checks every shard's structures against each other and the budget:
    /// the index against the entries, the LRU, each entry's objects against
    /// the slabs' owner tables, the slabs' free lists, the classes' lists
    /// and counts, the byte accounting. Panics on a violation.
    pub fn check_invariants(&self) {
        let mut bytes = 0;
        for shard in self.shards.iter() {
            let g = lock_spinning(shard);
            g.check();
            bytes += g.bytes();
        }
        assert!(bytes <= self.budget, "tier: {bytes} bytes over a budget of {}", self.budget);
    }
}

/// What [`CompressedTier::store_anon`] did with a page of anonymous memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AnonStore {
    /// Kept, as the entry with this sequence number.
    Stored(u64),
    /// No room: the shard holds too much anonymous memory (file pages were
    /// dropped first). Writing its coldest anonymous entries back makes room.
    Full,
    /// The page does not compress (or has the wrong size): it goes to the
    /// swap area as it is.
    Refused,
}

/// A cold anonymous entry, copied out for frontswap's writeback.
#[derive(Debug)]
pub(crate) struct AnonVictim {
    pub(crate) key: FileKey,
    pub(crate) index: u64,
    pub(crate) seq: u64,
    pub(crate) data: AnonData,
}

/// The bytes of an anonymous entry as the tier keeps them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AnonData {
    /// Every byte of the page is this one.
    Filled(u8),
    /// lz4 block of the page.
    Packed(Vec<u8>),
}

/// Decompresses an lz4 block of a whole page into `out`; false if it does
/// not decode to exactly `out.len()` bytes.
pub(crate) fn unpack(block: &[u8], out: &mut [u8]) -> bool {
    matches!(lz4::block::decompress_to_buffer(block, Some(out.len() as i32), out), Ok(n) if n == out.len())
}

/// frontswap (`mm/zswap.c`'s store, load and writeback) over the same
/// pool: anonymous memory (keys with [`ANON_DEV`]) sits on its own LRU
/// list, is never dropped to make room (file pages are), and leaves only
/// by a load (exclusive), an invalidation, or `remove_anon` after the
/// caller wrote it to the swap area.
impl CompressedTier {
    /// Stores a page of anonymous memory, replacing any older entry.
    pub(crate) fn store_anon(&self, key: &FileKey, index: u64, data: &[u8]) -> AnonStore {
        debug_assert_eq!(key.dev, ANON_DEV);
        if self.page_size(key) != Some(data.len()) {
            return AnonStore::Refused;
        }
        let shard = self.shard(key, index);
        SCRATCH
            .try_with(|cell| {
                let mut scratch = cell.borrow_mut();
                let prepared = prepare(data, &mut scratch);
                let mut g = lock_spinning(shard);
                g.remove_key(key, index);
                match prepared {
                    None => {
                        g.rejects += 1;
                        AnonStore::Refused
                    }
                    Some(p) if g.store(key, index, p, &scratch) => AnonStore::Stored(g.next_seq - 1),
                    Some(_) => AnonStore::Full,
                }
            })
            .unwrap_or(AnonStore::Refused)
    }

    /// Takes the page of anonymous memory stored as entry `seq` out of the
    /// tier into `out` (an exclusive load); false (and the entry kept) if
    /// that entry is not there or does not decode.
    pub(crate) fn load_anon(&self, key: &FileKey, index: u64, seq: u64, out: &mut [u8]) -> bool {
        // Removed only once the bytes are out: a failed decode loses nothing.
        self.read_anon(key, index, seq, out) && self.remove_anon(key, index, seq)
    }

    /// Copies the page of anonymous memory stored as entry `seq` into
    /// `out`, leaving it stored; false if it is not there or does not decode.
    pub(crate) fn read_anon(&self, key: &FileKey, index: u64, seq: u64, out: &mut [u8]) -> bool {
        self.fetch(key, index, out, |g, id| g.nodes[id as usize].seq == seq, |_, _| {})
    }

    /// Decodes entry `(file, index)` into `out` (a whole page of the key's
    /// size): under the shard's lock, finds it, asks `accept` whether it
    /// is the one wanted, copies its bytes out and lets `after` touch or
    /// remove it; decompresses outside the lock. False if it is not there,
    /// not accepted, or does not decode.
    fn fetch(
        &self,
        file: &FileKey,
        index: u64,
        out: &mut [u8],
        accept: impl FnOnce(&Shard, u32) -> bool,
        after: impl FnOnce(&mut Shard, u32),
    ) -> bool {
        if self.page_size(file) != Some(out.len()) {
            return false;
        }
        let shard = self.shard(file, index);
        SCRATCH
            .try_with(|cell| {
                let mut scratch = cell.borrow_mut();
                if scratch.len() < COMPRESS_BOUND {
                    scratch.resize(COMPRESS_BOUND, 0);
                }
                let found = {
                    let mut g = lock_spinning(shard);
                    match g.lookup(file, index) {
                        Some(id) if accept(&g, id) => {
                            let found = g.copy_out(id, &mut scratch);
                            after(&mut g, id);
                            found
                        }
                        _ => return false,
                    }
                };
                match found {
                    Prepared::Filled(x) => {
                        out.fill(x);
                        true
                    }
                    Prepared::Packed(len) => unpack(&scratch[..len], out),
                }
            })
            .unwrap_or(false)
    }

    /// Copies out up to `n` of the coldest anonymous entries of the shard
    /// that holds `(key, index)`, leaving them in place.
    pub(crate) fn anon_victims(&self, key: &FileKey, index: u64, n: usize) -> Vec<AnonVictim> {
        let g = lock_spinning(self.shard(key, index));
        let mut out = Vec::with_capacity(n);
        let mut scratch = vec![0u8; COMPRESS_BOUND];
        let mut id = g.tail[1];
        while id != NIL && out.len() < n {
            let node = &g.nodes[id as usize];
            let data = match g.copy_out(id, &mut scratch) {
                Prepared::Filled(x) => AnonData::Filled(x),
                Prepared::Packed(len) => AnonData::Packed(scratch[..len].to_vec()),
            };
            out.push(AnonVictim { key: node.file, index: node.index, seq: node.seq, data });
            id = node.prev;
        }
        out
    }

    /// Removes anonymous entry `seq` of `(key, index)` if it is still
    /// there; true if it was.
    pub(crate) fn remove_anon(&self, key: &FileKey, index: u64, seq: u64) -> bool {
        let mut g = lock_spinning(self.shard(key, index));
        match g.lookup(key, index) {
            Some(id) if g.nodes[id as usize].seq == seq => {
                g.remove_node(id);
                true
            }
            _ => false,
        }
    }
}

impl SecondTier for CompressedTier {
    fn put_page(&self, file: &FileKey, index: u64, data: &[u8]) -> bool {
        let Some(ps) = self.page_size(file) else {
            // No page of this size is ever stored: nothing to replace.
            self.refuse();
            return false;
        };
        let shard = self.shard(file, index);
        if data.len() != ps {
            self.refuse();
            lock_spinning(shard).remove_key(file, index);
            return false;
        }
        let bucket = self.incompressible_bucket(file);
        // Relaxed: a heuristic; a lost update costs one compression more
        // or less.
        let streak = bucket.load(Ordering::Relaxed);
        if streak >= INCOMPRESSIBLE_SAMPLE {
            bucket.store(streak.wrapping_add(1).max(INCOMPRESSIBLE_SAMPLE), Ordering::Relaxed);
            if streak % INCOMPRESSIBLE_SAMPLE != 0 {
                self.refuse();
                lock_spinning(shard).remove_key(file, index);
                return false;
            }
        }
        let stored = SCRATCH.try_with(|cell| {
            let mut scratch = cell.borrow_mut();
            let prepared = prepare(data, &mut scratch);
            // Relaxed: the heuristic above.
            match &prepared {
                Some(_) if streak != 0 => bucket.store(0, Ordering::Relaxed),
                Some(_) => {}
                None if streak < INCOMPRESSIBLE_SAMPLE => bucket.store(streak + 1, Ordering::Relaxed),
                None => {}
            }
            let mut g = shard.try_lock()?;
            g.remove_key(file, index);
            Some(match prepared {
                Some(p) => g.store(file, index, p, &scratch),
                None => {
                    g.rejects += 1;
                    false
                }
            })
        });
        match stored {
            Ok(Some(stored)) => stored,
            _ => {
                // Refused without the lock; the older copy must go all the same.
                self.refuse();
                lock_spinning(shard).remove_key(file, index);
                false
            }
        }
    }

    fn exclusive_gets(&self) -> bool {
        self.exclusive
    }

    fn get_page(&self, file: &FileKey, index: u64, out: &mut [u8]) -> bool {
        let exclusive = self.exclusive;
        self.fetch(
            file,
            index,
            out,
            |_, _| true,
            |g, id| {
                if exclusive {
                    g.remove_node(id);
                } else {
                    g.touch(id);
                }
            },
        )
    }

    fn invalidate_page(&self, file: &FileKey, index: u64) {
        if self.page_size(file).is_none() {
            return;
        }
        lock_spinning(self.shard(file, index)).remove_key(file, index);
    }

    fn invalidate_range(&self, file: &FileKey, start: u64, end: u64) {
        if start >= end || self.page_size(file).is_none() {
            return;
        }
        // A short range: page by page, each in its own shard.
        if end - start <= 2 * self.shards.len() as u64 {
            for index in start..end {
                lock_spinning(self.shard(file, index)).remove_key(file, index);
            }
            return;
        }
        for shard in self.shards.iter() {
            lock_spinning(shard).remove_keys(file, start..end);
        }
    }

    fn invalidate_file(&self, file: &FileKey) {
        if self.page_size(file).is_none() {
            return;
        }
        for shard in self.shards.iter() {
            lock_spinning(shard).remove_keys(file, ..);
        }
    }

    fn usage(&self) -> TierUsage {
        let mut u = TierUsage::default();
        for shard in self.shards.iter() {
            let s = lock_spinning(shard).usage();
            u.pages += s.pages;
            u.bytes += s.bytes;
            u.logical_bytes += s.logical_bytes;
            u.stored_bytes += s.stored_bytes;
            u.rejects += s.rejects;
            u.evictions += s.evictions;
        }
        // Relaxed: a statistics counter, read alone.
        u.rejects += self.refused.load(Ordering::Relaxed);
        u
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::sync::AtomicBool;
    use proptest::prelude::*;
    use std::sync::Arc;

    fn key(ino: u64, page_shift: u8) -> FileKey {
        FileKey { dev: 7, ino, generation: 1, page_shift }
    }

    /// xorshift64*: a small deterministic generator for page contents.
    struct Rng(u64);
    impl Rng {
        fn new(seed: u64) -> Rng {
            Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
        }
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
    }

    const WORDS: &[&str] = &[
        "the",
        "page",
        "cache",
        "reclaim",
        "inode",
        "mapping",
        "dirty",
        "writeback",
        "lru",
        "active",
        "inactive",
        "folio",
        "index",
        "offset",
        "read",
        "write",
        "error",
        "ok",
        "kswapd",
        "zone",
        "buddy",
        "order",
        "free",
    ];

    /// Log-like text: compresses about 2-3x with lz4.
    fn text(seed: u64, len: usize) -> Vec<u8> {
        let mut rng = Rng::new(seed);
        let mut out = Vec::with_capacity(len + 64);
        while out.len() < len {
            let n = rng.next();
            out.extend_from_slice(format!("{:08} ", n % 100_000_000 / 1000).as_bytes());
            for i in 0..6 {
                out.extend_from_slice(WORDS[((n >> (8 * i)) % WORDS.len() as u64) as usize].as_bytes());
                out.push(b' ');
            }
            out.push(b'\n');
        }
        out.truncate(len);
        out
    }

    fn random(seed: u64, len: usize) -> Vec<u8> {
        let mut rng = Rng::new(seed);
        (0..len).map(|_| rng.next() as u8).collect()
    }

    /// A page of `len` bytes: text (kind 0), same-filled (1), random (2),
    /// text with a random eighth and a zero eighth (3).
    fn page(kind: u8, seed: u64, len: usize) -> Vec<u8> {
        match kind % 4 {
            0 => text(seed, len),
            1 => vec![[0u8, 0, 0xff, 0x5a][seed as usize % 4]; len],
            2 => random(seed, len),
            _ => {
                let mut p = text(seed, len);
                let e = len / 8;
                p[e..2 * e].copy_from_slice(&random(seed, e));
                p[5 * e..6 * e].fill(0);
                p
            }
        }
    }

    #[derive(Clone, Debug)]
    enum Op {
        Put { file: usize, index: u64, kind: u8, seed: u64 },
        Get { file: usize, index: u64 },
        InvalidatePage { file: usize, index: u64 },
        InvalidateRange { file: usize, start: u64, end: u64 },
        InvalidateFile { file: usize },
    }

    const FILES: [FileKey; 4] = [
        FileKey { dev: 1, ino: 10, generation: 0, page_shift: 12 },
        FileKey { dev: 1, ino: 11, generation: 0, page_shift: 14 },
        FileKey { dev: 1, ino: 12, generation: 0, page_shift: 16 },
        FileKey { dev: 1, ino: 10, generation: 0, page_shift: 16 },
    ];

    fn op() -> impl Strategy<Value = Op> {
        let file = 0..FILES.len();
        prop_oneof![
            6 => (file.clone(), 0..8u64, 0..4u8, any::<u64>())
                .prop_map(|(file, index, kind, seed)| Op::Put { file, index, kind, seed }),
            6 => (file.clone(), 0..8u64).prop_map(|(file, index)| Op::Get { file, index }),
            1 => (file.clone(), 0..8u64).prop_map(|(file, index)| Op::InvalidatePage { file, index }),
            1 => (file.clone(), 0..8u64, 0..12u64)
                .prop_map(|(file, start, len)| Op::InvalidateRange { file, start, end: start + len }),
            1 => file.prop_map(|file| Op::InvalidateFile { file }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn matches_model(
            ops in prop::collection::vec(op(), 1..160),
            shards in 1usize..=2,
            exclusive in any::<bool>(),
            budget_kib in 64usize..200,
        ) {
            let tier = CompressedTier::new(budget_kib << 10).with_shards(shards).with_exclusive_gets(exclusive);
            let mut model: BTreeMap<(FileKey, u64), Vec<u8>> = BTreeMap::new();
            for op in ops {
                match op {
                    Op::Put { file, index, kind, seed } => {
                        let f = FILES[file];
                        let data = page(kind, seed, f.page_size());
                        if tier.put_page(&f, index, &data) {
                            model.insert((f, index), data);
                        } else {
                            model.remove(&(f, index));
                        }
                    }
                    Op::Get { file, index } => {
                        let f = FILES[file];
                        let mut out = vec![0xa5u8; f.page_size()];
                        if tier.get_page(&f, index, &mut out) {
                            let want = model.get(&(f, index));
                            prop_assert!(want.is_some(), "hit on {:?} {} after invalidate or refused put", f, index);
                            prop_assert!(want == Some(&out), "stale or corrupt page for {:?} {}", f, index);
                            if exclusive {
                                model.remove(&(f, index));
                            }
                        }
                    }
                    Op::InvalidatePage { file, index } => {
                        tier.invalidate_page(&FILES[file], index);
                        model.remove(&(FILES[file], index));
                    }
                    Op::InvalidateRange { file, start, end } => {
                        let f = FILES[file];
                        tier.invalidate_range(&f, start, end);
                        model.retain(|&(k, i), _| k != f || !(start..end).contains(&i));
                    }
                    Op::InvalidateFile { file } => {
                        let f = FILES[file];
                        tier.invalidate_file(&f);
                        model.retain(|&(k, _), _| k != f);
                    }
                }
                tier.check_invariants();
                let u = tier.usage();
                prop_assert!(u.bytes <= (budget_kib << 10) as u64);
                prop_assert!(u.pages <= model.len() as u64);
            }
        }
    }

    #[test]
    fn roundtrip_every_page_size_and_kind() {
        let tier = CompressedTier::new(4 << 20);
        for shift in [12u8, 13, 14, 16] {
            let f = key(u64::from(shift), shift);
            for kind in [0u8, 1, 3] {
                let data = page(kind, 99 + u64::from(kind), f.page_size());
                assert!(tier.put_page(&f, u64::from(kind), &data), "shift {shift} kind {kind} refused");
                let mut out = vec![0u8; f.page_size()];
                assert!(tier.get_page(&f, u64::from(kind), &mut out));
                assert_eq!(out, data, "shift {shift} kind {kind}");
            }
        }
        tier.check_invariants();
    }

    #[test]
    fn incompressible_pages_are_rejected_and_counted() {
        let tier = CompressedTier::new(1 << 20);
        let f = key(1, 12);
        let old = text(1, 4096);
        assert!(tier.put_page(&f, 0, &old));
        // A refused put still replaces: the older copy is gone.
        assert!(!tier.put_page(&f, 0, &random(2, 4096)));
        let mut out = vec![0u8; 4096];
        assert!(!tier.get_page(&f, 0, &mut out));
        let big = key(2, 16);
        assert!(!tier.put_page(&big, 0, &random(3, 1 << 16)));
        let u = tier.usage();
        assert_eq!(u.rejects, 2);
        assert_eq!(u.pages, 0);
        assert_eq!(u.stored_bytes, 0);
        tier.check_invariants();
    }

    #[test]
    fn same_filled_pages_take_no_slab() {
        let tier = CompressedTier::new(1 << 20);
        let f = key(1, 16);
        for i in 0..100u64 {
            assert!(tier.put_page(&f, i, &vec![i as u8; 1 << 16]));
        }
        let shard = lock_spinning(&tier.shards[0]);
        assert_eq!(shard.slab_bytes, 0);
        drop(shard);
        let u = tier.usage();
        assert_eq!((u.pages, u.stored_bytes, u.logical_bytes), (100, 0, 100 << 16));
        let mut out = vec![1u8; 1 << 16];
        assert!(tier.get_page(&f, 0, &mut out));
        assert!(out.iter().all(|&b| b == 0));
        tier.check_invariants();
    }

    #[test]
    fn bad_sizes_are_refused_without_panic() {
        let tier = CompressedTier::new(1 << 20);
        let f = key(1, 12);
        assert!(tier.put_page(&f, 0, &text(1, 4096)));
        assert!(!tier.put_page(&f, 0, &text(1, 100)));
        let mut out = vec![0u8; 4096];
        assert!(!tier.get_page(&f, 0, &mut out), "a refused put leaves no older copy");
        let huge = key(1, 40);
        assert!(!tier.put_page(&huge, 0, &[0u8; 8]));
        assert!(!tier.get_page(&huge, 0, &mut out));
        tier.invalidate_page(&huge, 0);
        tier.invalidate_range(&huge, 0, 10);
        tier.invalidate_file(&huge);
        assert!(!tier.get_page(&f, 1, &mut out[..10]));
        // A tier too small for its own tables refuses everything.
        let tiny = CompressedTier::new(64);
        assert!(!tiny.put_page(&f, 0, &[0u8; 4096]));
        tiny.check_invariants();
        tier.check_invariants();
    }

    #[test]
    fn budget_holds_and_cold_pages_are_evicted() {
        let budget = 512 << 10;
        let tier = CompressedTier::new(budget);
        let f = key(1, 14);
        let mut rng = Rng::new(5);
        for i in 0..2000u64 {
            let index = rng.next() % 400;
            let kind = [0u8, 0, 0, 1, 3][(rng.next() % 5) as usize];
            tier.put_page(&f, index, &page(kind, i, 1 << 14));
            if i % 7 == 0 {
                tier.invalidate_page(&f, rng.next() % 400);
            }
            if i % 101 == 0 {
                let s = rng.next() % 400;
                tier.invalidate_range(&f, s, s + 50);
            }
            assert!(tier.usage().bytes <= budget as u64);
            if i % 50 == 0 {
                tier.check_invariants();
            }
        }
        tier.check_invariants();
        let u = tier.usage();
        assert!(u.evictions > 0, "{u:?}");
        assert!(u.bytes > budget as u64 / 2, "the budget is used: {u:?}");
        // The most recent put of a compressible page is still there (LRU).
        let data = text(77, 1 << 14);
        assert!(tier.put_page(&f, 1000, &data));
        for i in 0..30u64 {
            tier.put_page(&f, 2000 + i, &text(i, 1 << 14));
            let mut out = vec![0u8; 1 << 14];
            assert!(tier.get_page(&f, 1000, &mut out), "a hot page was evicted");
        }
        tier.invalidate_file(&f);
        let u = tier.usage();
        assert_eq!((u.pages, u.stored_bytes, u.logical_bytes), (0, 0, 0));
        tier.check_invariants();
    }

    #[test]
    fn slabs_are_freed_and_compacted() {
        let tier = CompressedTier::new(8 << 20).with_shards(1);
        let f = key(1, 12);
        for i in 0..1000u64 {
            assert!(tier.put_page(&f, i, &text(i % 3, 4096)));
        }
        let full = lock_spinning(&tier.shards[0]).slab_bytes;
        // Free every other page, in scattered order: compaction gives back
        // about half the slabs.
        for i in (0..1000u64).filter(|i| i % 2 == 0).rev() {
            tier.invalidate_page(&f, i);
        }
        tier.check_invariants();
        let half = lock_spinning(&tier.shards[0]).slab_bytes;
        assert!(half <= full / 2 + 6 * (16 << 10), "{half} of {full}");
        for i in 0..1000u64 {
            tier.invalidate_page(&f, i);
        }
        tier.check_invariants();
        let shard = lock_spinning(&tier.shards[0]);
        assert_eq!(shard.slab_bytes, 0);
        assert_eq!(shard.bytes(), shard.fixed);
    }

    #[test]
    fn exclusive_get_removes_the_page() {
        let tier = CompressedTier::new(1 << 20).with_exclusive_gets(true);
        let f = key(1, 12);
        let data = text(3, 4096);
        assert!(tier.put_page(&f, 5, &data));
        let mut out = vec![0u8; 4096];
        assert!(tier.get_page(&f, 5, &mut out));
        assert_eq!(out, data);
        assert!(!tier.get_page(&f, 5, &mut out));
        assert_eq!(tier.usage().pages, 0);
        tier.check_invariants();
    }

    #[test]
    fn range_and_file_invalidation() {
        let tier = CompressedTier::new(8 << 20).with_shards(4);
        let (a, b) = (key(1, 12), key(2, 12));
        for i in 0..200u64 {
            assert!(tier.put_page(&a, i, &text(i, 4096)));
            assert!(tier.put_page(&b, i, &text(i, 4096)));
        }
        tier.invalidate_range(&a, 3, 5);
        tier.invalidate_range(&a, 50, 150);
        let mut out = vec![0u8; 4096];
        for i in 0..200u64 {
            let gone = (3..5).contains(&i) || (50..150).contains(&i);
            assert_eq!(tier.get_page(&a, i, &mut out), !gone, "index {i}");
        }
        tier.invalidate_file(&b);
        assert!((0..200).all(|i| !tier.get_page(&b, i, &mut out)));
        assert_eq!(tier.usage().pages, 200 - 102);
        tier.check_invariants();
    }

    #[test]
    fn contended_put_is_refused_and_drops_the_older_copy() {
        let tier = Arc::new(CompressedTier::new(1 << 20).with_shards(1));
        let f = key(1, 12);
        assert!(tier.put_page(&f, 0, &text(1, 4096)));
        let guard = tier.shards[0].lock();
        let t = Arc::clone(&tier);
        let putter = std::thread::spawn(move || t.put_page(&f, 0, &text(2, 4096)));
        // Hold the shard until the put has been refused (it then waits for
        // the lock to drop the older copy).
        while tier.refused.load(Ordering::Relaxed) == 0 {
            std::thread::yield_now();
        }
        drop(guard);
        assert!(!putter.join().unwrap());
        let mut out = vec![0u8; 4096];
        assert!(!tier.get_page(&f, 0, &mut out));
        assert_eq!(tier.usage().rejects, 1);
        tier.check_invariants();
    }

    /// A page that names its owner, key and version in its first bytes.
    fn versioned(thread: u64, index: u64, version: u64, len: usize) -> Vec<u8> {
        let seed = (thread << 40) ^ (index << 20) ^ version;
        let mut p = if version % 7 == 0 { vec![0u8; len] } else { page((version % 4) as u8, seed, len) };
        if version % 7 != 0 {
            p[..8].copy_from_slice(&version.to_le_bytes());
        }
        p
    }

    #[test]
    fn threads_never_see_older_versions() {
        for exclusive in [false, true] {
            let budget = 768 << 10;
            let tier = Arc::new(CompressedTier::new(budget).with_shards(4).with_exclusive_gets(exclusive));
            let stop = Arc::new(AtomicBool::new(false));
            let checker = {
                let (tier, stop) = (Arc::clone(&tier), Arc::clone(&stop));
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        tier.check_invariants();
                        assert!(tier.usage().bytes <= budget as u64);
                        std::thread::yield_now();
                    }
                })
            };
            let workers: Vec<_> = (0..4u64)
                .map(|t| {
                    let tier = Arc::clone(&tier);
                    std::thread::spawn(move || {
                        // Each thread owns its file; shards are shared.
                        let f = key(100 + t, [12u8, 14, 12, 16][t as usize]);
                        let ps = f.page_size();
                        let mut version = [0u64; 32];
                        let mut valid = [false; 32];
                        let mut rng = Rng::new(t + 1);
                        let mut hits = 0;
                        let mut out = vec![0u8; ps];
                        for _ in 0..1500 {
                            let i = (rng.next() % 32) as usize;
                            match rng.next() % 10 {
                                0..=3 => {
                                    version[i] += 1;
                                    valid[i] = tier.put_page(&f, i as u64, &versioned(t, i as u64, version[i], ps));
                                }
                                4..=7 => {
                                    if tier.get_page(&f, i as u64, &mut out) {
                                        assert!(valid[i], "thread {t}: hit on {i} after a miss, refusal or invalidate");
                                        assert!(
                                            out == versioned(t, i as u64, version[i], ps),
                                            "thread {t}: page {i} is not version {}",
                                            version[i]
                                        );
                                        hits += 1;
                                        if exclusive {
                                            valid[i] = false;
                                        }
                                    } else {
                                        // Dropped (evicted or refused): misses until the next put.
                                        valid[i] = false;
                                    }
                                }
                                8 => {
                                    tier.invalidate_page(&f, i as u64);
                                    valid[i] = false;
                                }
                                _ => {
                                    let end = i + (rng.next() % 8) as usize;
                                    tier.invalidate_range(&f, i as u64, end as u64);
                                    valid[i..end.min(32)].iter_mut().for_each(|v| *v = false);
                                }
                            }
                        }
                        hits
                    })
                })
                .collect();
            let hits: u64 = workers.into_iter().map(|w| w.join().unwrap()).sum();
            stop.store(true, Ordering::Relaxed);
            checker.join().unwrap();
            tier.check_invariants();
            let u = tier.usage();
            assert!(u.bytes <= budget as u64);
            assert!(hits > 50, "hits {hits}, {u:?}");
        }
    }

    #[test]
    fn compression_ratio_of_sample_data() {
        // Text-like data, 64 KiB pages: the ratio of 4 KiB blocks compressed
        // apart against whole-page lz4 (this tier).
        let mut blocks = 0;
        let mut whole = 0;
        let pages = 32;
        for seed in 0..pages {
            let p = text(seed, 1 << 16);
            blocks += p.chunks(BLOCK).map(|c| lz4::block::compress(c, None, false).unwrap().len()).sum::<usize>();
            whole += lz4::block::compress(&p, None, false).unwrap().len();
        }
        let logical = (pages as usize) << 16;
        let tier = CompressedTier::new(16 << 20);
        let f = key(1, 16);
        for seed in 0..pages {
            assert!(tier.put_page(&f, seed, &text(seed, 1 << 16)));
        }
        let u = tier.usage();
        println!(
            "text 64K pages: 4K blocks {:.2}x, whole page {:.2}x; tier logical/stored {:.2}x, logical/bytes {:.2}x",
            logical as f64 / blocks as f64,
            logical as f64 / whole as f64,
            u.logical_bytes as f64 / u.stored_bytes as f64,
            u.logical_bytes as f64 / u.bytes as f64,
        );
        assert!(u.logical_bytes * 5 > 9 * u.stored_bytes, "below 1.8x: {u:?}");
        tier.check_invariants();
    }
}
