//! Radix tree with marks and lockless readers, following lib/xarray.c.
//!
//! # Shape
//!
//! An [`XArray`] maps `u64` indices to frame numbers (`u32`, where 0 is a
//! valid value). It is a 64-way radix tree: every [`Node`] has 64 slots and a
//! `shift` (0 for the leaf level, then 6, 12, ... up to 60), and the slot that
//! index `i` uses in a node is `(i >> shift) & 63`. The tree's head is either
//! empty or points at the root node; a root of shift `s` covers indices
//! `0 ..= (64 << s) - 1` (all of `u64` at shift 60, so the tree is at most 11
//! levels high).
//!
//! # Slot encoding
//!
//! Each slot (and the head) is one `AtomicUsize`:
//!
//! * `0` is empty;
//! * a node pointer is 8-aligned, so its low 3 bits are zero (and it is
//!   nonzero);
//! * a value is `(pfn << 2) | 1`;
//! * `2` is the RETRY entry (kernel `XA_RETRY_ENTRY`).
//!
//! # Growth and shrinking
//!
//! When an index does not fit under the root, new roots of ever larger shift
//! are stacked on top, the old root becoming slot 0 of the new one
//! (`xas_expand`). An empty tree gets a root of just the shift the first index
//! needs. Nodes that become empty are unlinked from their parent, and the
//! empty root is removed (`xas_delete_node`). When the root holds only slot 0
//! and is not a leaf, the child in slot 0 becomes the root (`xas_shrink`), as
//! often as possible.
//!
//! # Lockless readers and RETRY
//!
//! Writers serialise on a mutex inside the tree ([`XArray::lock`]); readers
//! take no lock and pin a `crossbeam_epoch` guard, or nothing at all (see
//! "Fence-free lookups"). Writers fully
//! initialise a node before publishing its address with a `Release` store and
//! readers load every slot with `Acquire`, so a reader that sees a node
//! pointer sees the node's contents. A reader may still be standing in a node
//! that a writer has just unlinked:
//!
//! * a node deleted because it became empty has only empty slots, so the
//!   reader sees "absent", which was true at the moment of the unlink;
//! * an old root left behind by a shrink still holds its only child in slot
//!   0; the writer first publishes the new head, then writes RETRY into slot
//!   0 (with `Release`), and a reader that meets RETRY restarts from the head,
//!   which it is then guaranteed to see in its new state.
//!
//! # Marks
//!
//! Each node has 3 mark bitmaps ([`Mark`]). In a leaf, bit `i` says the entry
//! in slot `i` carries the mark; in an inner node, bit `i` is set iff some
//! entry below slot `i` carries it (that is, iff the child's bitmap for that
//! mark is nonzero). Writers keep this invariant on every set, clear and
//! erase, setting bits bottom-up and clearing them bottom-up while the
//! child's bitmap becomes zero. Marked searches skip every subtree whose bit
//! is clear, so their cost is proportional to the marked entries, not all
//! entries.
//!
//! # Freeing nodes
//!
//! An unlinked node may still be read by a reader that loaded its address
//! before the unlink. Writers therefore hand unlinked nodes to
//! `crossbeam_epoch` (`Guard::defer`), which puts them in the tree's pool
//! for reuse only after every guard pinned at the time of the unlink has
//! been dropped. Node memory itself is freed only when the pool drops,
//! after the tree: nodes are type-stable.
//!
//! # Fence-free lookups
//!
//! [`XArray::load_unpinned`] walks without a guard, so it can stand in a
//! node that was unlinked and even reused elsewhere; type stability keeps
//! that memory readable (every field a reader touches is atomic). Writers
//! make the tree sequence odd while they unlink nodes and even after; the
//! unpinned reader reads it before and after its walk (Acquire fence
//! between) and walks again if it moved, so what it returns came from
//! linked nodes only. The pinned readers (marks, gang lookups) use the
//! epoch as before.
//!
//! # The leaf table
//!
//! Beside the tree, a flat array maps leaf number `index >> 6` to the leaf
//! that covers it (0 where there is none), as a page table's last level
//! does: a lookup covered by it loads the leaf's address and then the slot,
//! two dependent loads instead of one per level, without the walk's shift
//! checks. Writers keep it with the tree under the mutex: a new leaf is in
//! the table before any value is stored in it, and an unlinked one leaves
//! it while the tree sequence is odd, so the unpinned reader's sequence
//! check covers the table exactly as it covers the walk. The table grows
//! by doubling (filled from the tree, then published length last); old
//! tables are kept until the tree drops, so a reader holding one reads
//! live memory whose entries are stale only across an unlink, which the
//! sequence catches. It grows only while it stays within the tree's own
//! size (32 entries, 256 bytes, per linked node), so a sparse file keeps
//! the walk and no big table.

use std::fmt;

use crossbeam_epoch::Guard;
use parking_lot::{Mutex, MutexGuard};

use crate::sync::{fence, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;

use crossbeam_utils::CachePadded;

/// Bits of index consumed per level.
const CHUNK_SHIFT: u32 = 6;
/// Slots per node.
const CHUNK: usize = 1 << CHUNK_SHIFT;
/// Number of mark bitmaps per node.
const MARKS: usize = 3;
/// Highest shift a node can have (11 levels: shifts 0, 6, ..., 60).
const MAX_SHIFT: u32 = 60;
/// Maximum height of the tree.
const MAX_DEPTH: usize = (MAX_SHIFT / CHUNK_SHIFT) as usize + 1;

/// The empty slot.
const EMPTY: usize = 0;
/// Kernel `XA_RETRY_ENTRY`: a reader meeting this restarts from the head.
const RETRY: usize = 2;

/// The three marks an entry can carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mark {
    /// The page has data not yet written back.
    Dirty = 0,
    /// The page is under writeback.
    Writeback = 1,
    /// The page was selected by a writeback pass (tag-and-write).
    ToWrite = 2,
}

impl Mark {
    /// All marks, in bitmap order.
    pub const ALL: [Mark; 3] = [Mark::Dirty, Mark::Writeback, Mark::ToWrite];

    #[inline]
    fn idx(self) -> usize {
        self as usize
    }
}

/// One 64-way node. `slots` and `marks` are read by lockless readers; the
/// other mutable fields are touched only by writers holding the tree mutex.
struct Node {
    slots: [AtomicUsize; CHUNK],
    marks: [AtomicU64; MARKS],
    /// Address of the parent node, 0 for the root. Writers only.
    parent: AtomicUsize,
    /// Number of non-empty slots. Writers only.
    count: AtomicU32,
    /// 0 for leaves; the child of a node with shift `s` has shift `s - 6`.
    /// Atomic because a recycled node is re-initialised while an unpinned
    /// reader may still stand in it (see "Fence-free lookups").
    shift: AtomicU8,
    /// This node's slot in its parent (0 for a root; a root only ever becomes
    /// a child at slot 0 and a child only becomes a root from slot 0, so this
    /// never changes while the node is linked). Writers only.
    offset: AtomicU8,
}

impl Node {
    fn new(shift: u32, offset: usize, parent: usize) -> Self {
        Node {
            slots: std::array::from_fn(|_| AtomicUsize::new(EMPTY)),
            marks: std::array::from_fn(|_| AtomicU64::new(0)),
            parent: AtomicUsize::new(parent),
            count: AtomicU32::new(0),
            shift: AtomicU8::new(shift as u8),
            offset: AtomicU8::new(offset as u8),
        }
    }

    /// Makes a recycled node as `new` would, for a writer holding the
    /// mutex. Unpinned readers may still be inside it: every field is
    /// atomic, and the caller's Release fence orders these stores after the
    /// unlink that an unpinned reader validates against.
    fn reinit(&self, shift: u32, offset: usize, parent: usize) {
        // Relaxed: after the caller's Release fence; readers that read these
        // values fail their tree-sequence check.
        for s in &self.slots {
            s.store(EMPTY, Ordering::Relaxed);
        }
        for m in &self.marks {
            m.store(0, Ordering::Relaxed);
        }
        self.parent.store(parent, Ordering::Relaxed);
        self.count.store(0, Ordering::Relaxed);
        self.shift.store(shift as u8, Ordering::Relaxed);
        self.offset.store(offset as u8, Ordering::Relaxed);
    }

    #[inline]
    fn shift(&self) -> u32 {
        // Relaxed: the node was published with Release (readers load its
        // address with Acquire), and shift changes only when a recycled
        // node is re-initialised, which unpinned readers detect.
        u32::from(self.shift.load(Ordering::Relaxed))
    }

    /// This node's slot in its parent (writers, mutex held).
    #[inline]
    fn offset(&self) -> usize {
        // Relaxed: mutex held.
        usize::from(self.offset.load(Ordering::Relaxed))
    }

    // Writer-only accessors. Relaxed is enough for all of them: these fields
    // are read and written only with the tree mutex held, and the mutex
    // orders those accesses; readers never look at them.

    fn count(&self) -> u32 {
        self.count.load(Ordering::Relaxed)
    }

    fn set_count(&self, count: u32) {
        self.count.store(count, Ordering::Relaxed);
    }

    fn parent(&self) -> usize {
        self.parent.load(Ordering::Relaxed)
    }

    fn set_parent(&self, parent: usize) {
        self.parent.store(parent, Ordering::Relaxed);
    }
}

#[inline]
fn is_node(entry: usize) -> bool {
    entry != EMPTY && entry & 7 == 0
}

#[inline]
fn is_value(entry: usize) -> bool {
    entry & 3 == 1
}

#[inline]
fn encode_value(pfn: u32) -> usize {
    ((pfn as usize) << 2) | 1
}

#[inline]
fn decode_value(entry: usize) -> u32 {
    (entry >> 2) as u32
}

/// The slot `index` uses in a node of `shift`.
#[inline]
fn digit(index: u64, shift: u32) -> usize {
    ((index >> shift) & (CHUNK as u64 - 1)) as usize
}

/// Whether `index` is covered by a root of `shift`.
#[inline]
fn fits(index: u64, shift: u32) -> bool {
    // shift <= 60, so both shifts are below 64.
    (index >> shift) >> CHUNK_SHIFT == 0
}

/// The smallest root shift covering `index`.
fn shift_for(index: u64) -> u32 {
    if index < CHUNK as u64 {
        return 0;
    }
    let bits = 64 - index.leading_zeros();
    (bits - 1) / CHUNK_SHIFT * CHUNK_SHIFT
}

/// The index with bits below `shift + 6` cleared and `slot` placed at `shift`.
#[inline]
fn index_at(index: u64, shift: u32, slot: usize) -> u64 {
    let span = shift + CHUNK_SHIFT;
    let high = if span >= 64 { 0 } else { index & !((1u64 << span) - 1) };
    high | ((slot as u64) << shift)
}

/// First set bit of `bits` at position `>= from`, or 64.
#[inline]
fn next_bit(bits: u64, from: usize) -> usize {
    if from >= CHUNK {
        return CHUNK;
    }
    (bits >> from << from).trailing_zeros() as usize
}

/// Nodes of one tree that are not linked: unlinked nodes arrive here once
/// every pinned reader that could see them is gone (through the epoch),
/// and new nodes come from here before the system allocator. A node's
/// memory is freed only when the pool drops, after its tree (the tree
/// holds an `Arc`, as do unlinked nodes still waiting for the epoch), so
/// a node address an unpinned reader ever loaded stays readable node
/// memory for as long as it can use it: the tree's nodes are type-stable
/// (the kernel's `SLAB_TYPESAFE_BY_RCU`).
#[derive(Default)]
struct NodePool {
    free: std::sync::Mutex<Vec<usize>>,
}

impl NodePool {
    fn push(&self, node: usize) {
        self.free.lock().unwrap_or_else(|e| e.into_inner()).push(node);
    }

    fn pop(&self) -> Option<usize> {
        self.free.lock().unwrap_or_else(|e| e.into_inner()).pop()
    }
}

impl Drop for NodePool {
    fn drop(&mut self) {
        for node in self.free.get_mut().unwrap_or_else(|e| e.into_inner()).drain(..) {
            // SAFETY: every address in the pool came from `Box::into_raw` in
            // `alloc_node`, is in the pool once, and is unreachable: the
            // tree is gone (the pool drops after it) and no deferred push
            // is pending (each holds an `Arc` of the pool).
            drop(unsafe { Box::from_raw(node as *mut Node) });
        }
    }
}

/// A node for a writer (mutex held), recycled from the tree's pool where it
/// can be, and returns its address (8-aligned, nonzero).
fn alloc_node(pool: &NodePool, shift: u32, offset: usize, parent: usize) -> usize {
    match pool.pop() {
        Some(addr) => {
            // Release: orders the unlink (and the tree-sequence bump around
            // it) before the re-initialisation, for unpinned readers that
            // still stand in the node (see `XArray::load`).
            fence(Ordering::Release);
            // SAFETY: pool nodes are live boxed nodes (type-stable); the
            // mutex is held, so no other writer touches this one.
            unsafe { &*(addr as *const Node) }.reinit(shift, offset, parent);
            addr
        }
        None => Box::into_raw(Box::new(Node::new(shift, offset, parent))) as usize,
    }
}

/// Dereferences a node entry for as long as `guard` is pinned.
///
/// # Safety
///
/// `entry` must be a node entry that was loaded from the head or a slot of a
/// node of a live tree while `guard` was pinned (or, for writers, while the
/// tree mutex is held). Nodes are freed only through `defer_unchecked` after
/// being unlinked, or by `Drop` (which has exclusive access), so the node
/// stays valid while the guard lives.
#[inline]
unsafe fn node_ref(entry: usize, _guard: &Guard) -> &Node {
    debug_assert!(is_node(entry));
    // SAFETY: the caller guarantees `entry` is the address of a live
    // `Box<Node>` that cannot be freed before `_guard` is unpinned.
    unsafe { &*(entry as *const Node) }
}

/// A 64-way radix tree from `u64` index to `u32` frame number, with three
/// marks per entry, lockless readers and mutex-serialised writers.
pub struct XArray {
    /// What an unpinned reader reads on every lookup, on a line of its own
    /// (the mutex and the counters below change on every write).
    read: CachePadded<ReadSide>,
    /// Unlinked nodes for reuse; frees them after the tree.
    pool: Arc<NodePool>,
    /// Serialises writers.
    lock: Mutex<()>,
    /// Number of entries.
    len: AtomicUsize,
    /// Number of linked nodes.
    nodes: AtomicUsize,
    /// Every leaf table this tree had, the current one last; freed with the
    /// tree (readers may hold any of them). Writers only.
    tables: Mutex<Vec<Box<[AtomicUsize]>>>,
    /// Every hint table, the current one last, as `tables`.
    hint_tables: Mutex<Vec<Box<[AtomicU32]>>>,
}

/// The head, the tree sequence and the leaf table.
struct ReadSide {
    /// Empty, or the address of the root node.
    head: AtomicUsize,
    /// Number of entries of `table` (0: no table). Stored after `table`
    /// (Release) and loaded before it (Acquire), and it only grows, so a
    /// reader's length never exceeds the table it then loads.
    table_len: AtomicUsize,
    /// Address of the current leaf table's first entry (an `AtomicUsize`
    /// per leaf number: the leaf's address, or 0).
    table: AtomicUsize,
    /// Number of entries of `hints` (0: none); as `table_len`.
    hints_len: AtomicUsize,
    /// Address of the current hint table's first entry (an `AtomicU32` per
    /// index: frame number + 1, or 0).
    hints: AtomicUsize,
    /// Odd while a writer unlinks nodes (`delete_empty`, `shrink`), bumped by
    /// two across each such change: an unpinned reader that saw the same
    /// even value before and after its walk walked only linked nodes.
    seq: AtomicU32,
}

impl Default for XArray {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for XArray {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("XArray").field("len", &self.len()).field("memory_bytes", &self.memory_bytes()).finish()
    }
}

/// A writer's hold on an [`XArray`]: the tree mutex plus a pinned epoch
/// guard. All mutations go through this.
pub struct XaLock<'a> {
    tree: &'a XArray,
    _mutex: MutexGuard<'a, ()>,
    guard: Guard,
}

impl XArray {
    /// An empty tree.
    pub fn new() -> Self {
        XArray {
            read: CachePadded::new(ReadSide {
                head: AtomicUsize::new(EMPTY),
                table_len: AtomicUsize::new(0),
                table: AtomicUsize::new(0),
                hints_len: AtomicUsize::new(0),
                hints: AtomicUsize::new(0),
                seq: AtomicU32::new(0),
            }),
            pool: Arc::new(NodePool::default()),
            lock: Mutex::new(()),
            len: AtomicUsize::new(0),
            nodes: AtomicUsize::new(0),
            tables: Mutex::new(Vec::new()),
            hint_tables: Mutex::new(Vec::new()),
        }
    }

    /// Takes the writers' mutex.
    pub fn lock(&self) -> XaLock<'_> {
        let mutex = crate::sync::lock_spinning(&self.lock);
        XaLock { tree: self, _mutex: mutex, guard: crossbeam_epoch::pin() }
    }

    /// Whether the tree holds no entry.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of entries.
    #[inline]
    pub fn len(&self) -> usize {
        // Relaxed: a statistic; writers update it under the mutex.
        self.len.load(Ordering::Relaxed)
    }

    /// Bytes of nodes currently linked into the tree (nodes waiting for the
    /// epoch collector are not counted; nor are the leaf tables, see
    /// [`XArray::table_bytes`]).
    pub fn memory_bytes(&self) -> usize {
        // Relaxed: a statistic; writers update it under the mutex.
        self.nodes.load(Ordering::Relaxed) * std::mem::size_of::<Node>()
    }

    /// Bytes of leaf and hint tables, the current ones and the smaller ones
    /// they replaced (kept until the tree drops).
    pub fn table_bytes(&self) -> usize {
        let leaves: usize = self.tables.lock().iter().map(|t| t.len() * std::mem::size_of::<AtomicUsize>()).sum();
        let hints: usize = self.hint_tables.lock().iter().map(|t| t.len() * std::mem::size_of::<AtomicU32>()).sum();
        leaves + hints
    }

    #[inline]
    fn check_guard(guard: &Guard) {
        debug_assert!(
            guard.collector() == Some(crossbeam_epoch::default_collector()),
            "XArray readers need a guard from crossbeam_epoch::pin()"
        );
    }

    /// The entry at `index`, without locking.
    #[inline]
    pub fn load(&self, index: u64, guard: &Guard) -> Option<u32> {
        Self::check_guard(guard);
        'restart: loop {
            // Acquire: pairs with the Release store that published the root,
            // so its slots are initialised when we read them.
            let head = self.read.head.load(Ordering::Acquire);
            if head == EMPTY {
                return None;
            }
            // SAFETY: `head` is a node entry loaded from the head while
            // `guard` is pinned.
            let mut node = unsafe { node_ref(head, guard) };
            if !fits(index, node.shift()) {
                return None;
            }
            loop {
                // Acquire: a node pointer found here was published with
                // Release after the node was initialised.
                let entry = node.slots[digit(index, node.shift())].load(Ordering::Acquire);
                if is_node(entry) {
                    // SAFETY: node entry loaded from a slot under `guard`.
                    node = unsafe { node_ref(entry, guard) };
                    continue;
                }
                if entry == RETRY {
                    continue 'restart;
                }
                return is_value(entry).then(|| decode_value(entry));
            }
        }
    }

    /// The entry at `index`, without locking and without pinning the epoch:
    /// no fence and no write to shared memory, so consecutive lookups
    /// overlap their cache misses (see "Fence-free lookups"). Reads the tree
    /// sequence before and after and looks again if a writer unlinked nodes
    /// meanwhile (rare: a leaf empties once per 64 removals). An index the
    /// leaf table covers takes two loads (table, leaf); others walk.
    #[inline]
    pub fn load_unpinned(&self, index: u64) -> Option<u32> {
        match self.load_from_table(index) {
            Some(found) => found,
            None => self.load_unpinned_walk(index),
        }
    }

    /// The entry at `index` as a hint, for a caller that validates what it
    /// gets (the optimistic read checks the page's identity and version):
    /// a frame number that was stored at `index` at some time, or `None`,
    /// which may be stale (the caller then asks again the exact way). An
    /// index the leaf table covers costs the two loads and nothing else: no
    /// tree sequence, so a leaf unlinked and reused meanwhile can be read
    /// (its memory is type-stable node memory; a value in it is a frame
    /// number of this tree's cache, which the caller's identity check
    /// rejects if it is another page's). Others walk as `load_unpinned`.
    /// An index the hint table covers costs one load: its frame number.
    #[inline(always)]
    pub fn load_hint(&self, index: u64) -> Option<u32> {
        // Acquire: pairs with the Release store of the length, which follows
        // the hint table's filling and the store of its address.
        let hints_len = self.read.hints_len.load(Ordering::Acquire);
        if index < hints_len as u64 {
            // Acquire: as for the leaf table's address.
            let hints = self.read.hints.load(Ordering::Acquire) as *const AtomicU32;
            // SAFETY: `hints` is the first of at least `hints_len` entries
            // (stored after the address of a table that long; tables only
            // grow), kept alive until the tree drops.
            let hint = unsafe { &*hints.add(index as usize) };
            // Relaxed: a hint; the caller validates the frame it names, and
            // the frame's descriptor (not this load) orders what it reads.
            let e = hint.load(Ordering::Relaxed);
            return e.checked_sub(1);
        }
        self.read_leaf_table(index).unwrap_or_else(|| self.load_unpinned_walk(index))
    }

    /// The entry at `index` through the leaf table, with no sequence check
    /// (the caller's, if it needs one): `None` if the table does not cover
    /// `index`, else the slot's value, or `Some(None)` for no leaf or an
    /// empty slot. The leaf may have been unlinked and reused meanwhile;
    /// its memory is type-stable node memory, whatever it holds now.
    #[inline(always)]
    fn read_leaf_table(&self, index: u64) -> Option<Option<u32>> {
        let leaf_nr = index >> CHUNK_SHIFT;
        // Acquire: pairs with the Release store of the length, which follows
        // the table's filling and the store of its address.
        let len = self.read.table_len.load(Ordering::Acquire);
        if leaf_nr >= len as u64 {
            return None;
        }
        // Acquire: as for the length (a newer, longer table may be seen; its
        // contents were written before its address).
        let table = self.read.table.load(Ordering::Acquire) as *const AtomicUsize;
        // SAFETY: `table` is the first of at least `len` entries (the length
        // was stored after the address of a table that long, and tables
        // only grow), kept alive until the tree drops.
        let slot = unsafe { &*table.add(leaf_nr as usize) };
        // Acquire: a leaf address here was stored (Release) after the leaf
        // was initialised and linked.
        let leaf = slot.load(Ordering::Acquire);
        if leaf == EMPTY {
            return Some(None);
        }
        // SAFETY: a node address from a leaf table of a live tree: type-stable
        // node memory (see `NodePool`), whatever it holds now.
        let leaf = unsafe { &*(leaf as *const Node) };
        // Acquire: pairs with the Release store of the value.
        let entry = leaf.slots[digit(index, 0)].load(Ordering::Acquire);
        Some(is_value(entry).then(|| decode_value(entry)))
    }

    /// One try through the leaf table: `Some(entry)` if the table covers
    /// `index` and no unlink overlapped the loads, `None` otherwise (the
    /// caller then walks, which retries). Kept to the fewest instructions:
    /// on a memory-bound hit path they are the room the core's reorder
    /// window has left for the next lookup's misses.
    #[inline(always)]
    fn load_from_table(&self, index: u64) -> Option<Option<u32>> {
        // Acquire: the loads below are not hoisted above it.
        let seq = self.read.seq.load(Ordering::Acquire);
        if seq & 1 != 0 {
            return None;
        }
        let found = self.read_leaf_table(index)?;
        // Acquire fence: the loads above come before the reload.
        fence(Ordering::Acquire);
        // Relaxed: ordered by the fence.
        (self.read.seq.load(Ordering::Relaxed) == seq).then_some(found)
    }

    /// `load_unpinned` by the walk from the head, for indices the leaf table
    /// does not cover and for retries.
    #[cold]
    #[inline(never)]
    fn load_unpinned_walk(&self, index: u64) -> Option<u32> {
        'restart: loop {
            // Acquire: the walk's loads are not hoisted above it.
            let seq = self.read.seq.load(Ordering::Acquire);
            if seq & 1 != 0 {
                std::hint::spin_loop();
                continue;
            }
            // Acquire: pairs with the Release store that published the root.
            let head = self.read.head.load(Ordering::Acquire);
            let found = 'walk: {
                if head == EMPTY {
                    break 'walk None;
                }
                // SAFETY: a node address loaded from the head of a live tree:
                // nodes are type-stable (freed only after the tree, see
                // `NodePool`), so it is readable node memory; what it holds is
                // validated by the sequence check below.
                let mut node = unsafe { &*(head as *const Node) };
                let mut shift = node.shift();
                if !fits(index, shift) {
                    break 'walk None;
                }
                loop {
                    // Acquire: a node pointer found here was published with
                    // Release after the node was initialised.
                    let entry = node.slots[digit(index, shift)].load(Ordering::Acquire);
                    if is_node(entry) {
                        if shift == 0 {
                            // A node below a leaf: a recycled node met
                            // mid-walk, only possible when the sequence moves.
                            continue 'restart;
                        }
                        // SAFETY: as for the head: a node address loaded from
                        // a slot of a (type-stable) node of this tree.
                        node = unsafe { &*(entry as *const Node) };
                        // The child's shift is known: its parent's less one
                        // chunk. Walking by it rather than by the child's own
                        // `shift` field (on the node's last line) lets the
                        // slot's load start with the field's instead of after
                        // it: one cache miss per level, not two. The field
                        // only validates: a child whose shift differs is a
                        // recycled node, only possible when the sequence
                        // moves; start over.
                        shift -= CHUNK_SHIFT;
                        if node.shift() != shift {
                            continue 'restart;
                        }
                        continue;
                    }
                    if entry == RETRY {
                        continue 'restart;
                    }
                    break 'walk is_value(entry).then(|| decode_value(entry));
                }
            };
            // Acquire fence: the walk's loads come before the reload (the
            // seqlock reader).
            fence(Ordering::Acquire);
            // Relaxed: ordered by the fence.
            if self.read.seq.load(Ordering::Relaxed) == seq {
                return found;
            }
        }
    }

    /// Whether the entry at `index` carries `mark`, without locking.
    #[inline]
    pub fn get_mark(&self, index: u64, mark: Mark, guard: &Guard) -> bool {
        Self::check_guard(guard);
        let m = mark.idx();
        'restart: loop {
            // Acquire: see `load`.
            let head = self.read.head.load(Ordering::Acquire);
            if head == EMPTY {
                return false;
            }
            // SAFETY: node entry loaded from the head under `guard`.
            let mut node = unsafe { node_ref(head, guard) };
            if !fits(index, node.shift()) {
                return false;
            }
            loop {
                let off = digit(index, node.shift());
                // Acquire: writers set mark bits bottom-up with Release, so
                // seeing a parent bit means seeing the child bits set before.
                if node.marks[m].load(Ordering::Acquire) & (1 << off) == 0 {
                    return false;
                }
                if node.shift() == 0 {
                    return true;
                }
                // Acquire: see `load`.
                let entry = node.slots[off].load(Ordering::Acquire);
                if entry == RETRY {
                    continue 'restart;
                }
                if !is_node(entry) {
                    return false;
                }
                // SAFETY: node entry loaded from a slot under `guard`.
                node = unsafe { node_ref(entry, guard) };
            }
        }
    }

    /// Visits entries at indices `>= start` in ascending order (only those
    /// with `mark` if given) until `f` returns false.
    #[inline]
    fn walk(&self, start: u64, mark: Option<Mark>, guard: &Guard, mut f: impl FnMut(u64, u32) -> bool) {
        Self::check_guard(guard);
        // The smallest index not yet visited.
        let mut index = start;
        'restart: loop {
            // Acquire: see `load`.
            let head = self.read.head.load(Ordering::Acquire);
            if head == EMPTY {
                return;
            }
            // SAFETY: node entry loaded from the head under `guard`.
            let mut node = unsafe { node_ref(head, guard) };
            if !fits(index, node.shift()) {
                return;
            }
            // Ancestors of `node` and the slot taken in each.
            let mut stack = [(EMPTY, 0usize); MAX_DEPTH];
            let mut depth = 0;
            let mut off = digit(index, node.shift());
            loop {
                let slot = match mark {
                    None => off,
                    // Acquire: see `get_mark`.
                    Some(m) => next_bit(node.marks[m.idx()].load(Ordering::Acquire), off),
                };
                if slot >= CHUNK {
                    // This node is done: resume in the parent after it.
                    if depth == 0 {
                        return;
                    }
                    depth -= 1;
                    let (parent, parent_slot) = stack[depth];
                    // SAFETY: `parent` was loaded from the head or a slot
                    // under `guard` earlier in this walk.
                    node = unsafe { node_ref(parent, guard) };
                    off = parent_slot + 1;
                    continue;
                }
                let shift = node.shift();
                if slot != digit(index, shift) {
                    // Moving right: everything below is visited from its start.
                    index = index_at(index, shift, slot);
                }
                // Acquire: see `load`.
                let entry = node.slots[slot].load(Ordering::Acquire);
                if is_node(entry) {
                    stack[depth] = (node as *const Node as usize, slot);
                    depth += 1;
                    // SAFETY: node entry loaded from a slot under `guard`.
                    node = unsafe { node_ref(entry, guard) };
                    off = digit(index, node.shift());
                    continue;
                }
                if entry == RETRY {
                    continue 'restart;
                }
                if is_value(entry) && !f(index, decode_value(entry)) {
                    return;
                }
                off = slot + 1;
            }
        }
    }

    /// The first entry at an index `>= start`, without locking.
    #[inline]
    pub fn find(&self, start: u64, guard: &Guard) -> Option<(u64, u32)> {
        let mut found = None;
        self.walk(start, None, guard, |i, v| {
            found = Some((i, v));
            false
        });
        found
    }

    /// The first entry carrying `mark` at an index `>= start`, without
    /// locking. Skips every subtree whose mark bit is clear.
    #[inline]
    pub fn find_marked(&self, start: u64, mark: Mark, guard: &Guard) -> Option<(u64, u32)> {
        let mut found = None;
        self.walk(start, Some(mark), guard, |i, v| {
            found = Some((i, v));
            false
        });
        found
    }

    /// Appends up to `max` entries at indices `>= start`, ascending.
    pub fn gang_lookup(&self, start: u64, max: usize, out: &mut Vec<(u64, u32)>, guard: &Guard) {
        self.gang(start, None, max, out, guard);
    }

    /// Appends up to `max` entries carrying `mark` at indices `>= start`,
    /// ascending.
    pub fn gang_lookup_marked(&self, start: u64, mark: Mark, max: usize, out: &mut Vec<(u64, u32)>, guard: &Guard) {
        self.gang(start, Some(mark), max, out, guard);
    }

    /// Appends the indices of the entries in `start..end`, ascending. The
    /// walk stops at the first entry at or past `end`.
    pub fn indices_in(&self, start: u64, end: u64, out: &mut Vec<u64>, guard: &Guard) {
        if start >= end {
            return;
        }
        self.walk(start, None, guard, |i, _| {
            if i >= end {
                return false;
            }
            out.push(i);
            i + 1 < end
        });
    }

    fn gang(&self, start: u64, mark: Option<Mark>, max: usize, out: &mut Vec<(u64, u32)>, guard: &Guard) {
        if max == 0 {
            return;
        }
        let mut n = 0;
        self.walk(start, mark, guard, |i, v| {
            out.push((i, v));
            n += 1;
            n < max
        });
    }

    /// Appends up to `max` entries at `start, start + 1, ...`, stopping at
    /// the first hole.
    pub fn contig(&self, start: u64, max: usize, out: &mut Vec<(u64, u32)>, guard: &Guard) {
        if max == 0 {
            return;
        }
        let mut expected = start;
        let mut n = 0;
        self.walk(start, None, guard, |i, v| {
            if i != expected {
                return false;
            }
            out.push((i, v));
            n += 1;
            if n == max || i == u64::MAX {
                return false;
            }
            expected = i + 1;
            true
        });
    }

    /// Checks the structural invariants; panics on any violation. Takes the
    /// writers' mutex, so do not call it while holding an [`XaLock`].
    pub fn check_invariants(&self) {
        let lock = self.lock();
        let guard = &lock.guard;
        // Relaxed: we hold the mutex, which orders all writer stores.
        let head = self.read.head.load(Ordering::Relaxed);
        let mut entries = 0;
        let mut nodes = 0;
        if head != EMPTY {
            assert!(is_node(head), "head {head:#x} is not a node");
            // SAFETY: head node entry, mutex held and guard pinned.
            let root = unsafe { node_ref(head, guard) };
            assert_eq!(root.parent(), EMPTY, "root has a parent");
            assert!(root.shift() <= MAX_SHIFT && root.shift() % CHUNK_SHIFT == 0);
            assert!(root.count() > 0, "empty root is linked");
            let slot0 = root.slots[0].load(Ordering::Relaxed);
            assert!(!(root.shift() > 0 && root.count() == 1 && slot0 != EMPTY), "root could have been shrunk");
            Self::check_node(root, 0, guard, &mut entries, &mut nodes);
        }
        assert_eq!(entries, self.len(), "len disagrees with entries");
        // Relaxed: mutex held.
        assert_eq!(nodes, self.nodes.load(Ordering::Relaxed), "node count");
        self.check_table(guard);
        self.check_hints(guard);
    }

    /// The hint table holds exactly the entries it covers.
    fn check_hints(&self, guard: &Guard) {
        // Relaxed: mutex held.
        let len = self.read.hints_len.load(Ordering::Relaxed);
        let tables = self.hint_tables.lock();
        let Some(current) = tables.last() else {
            assert_eq!(len, 0, "a hint table length without a table");
            return;
        };
        assert_eq!(current.len(), len, "hint table length");
        // Relaxed: mutex held.
        assert_eq!(self.read.hints.load(Ordering::Relaxed), current.as_ptr() as usize, "hint table address");
        for (i, hint) in current.iter().enumerate() {
            let want = self.leaf_for(i as u64, guard).map_or(0, |(leaf, off)| {
                // Relaxed: mutex held.
                let e = leaf.slots[off].load(Ordering::Relaxed);
                if is_value(e) {
                    decode_value(e).wrapping_add(1)
                } else {
                    0
                }
            });
            // Relaxed: mutex held.
            assert_eq!(hint.load(Ordering::Relaxed), want, "hint for index {i}");
        }
    }

    /// The leaf table holds exactly the linked leaves it covers.
    fn check_table(&self, guard: &Guard) {
        // Relaxed: mutex held.
        let len = self.read.table_len.load(Ordering::Relaxed);
        let tables = self.tables.lock();
        let Some(current) = tables.last() else {
            assert_eq!(len, 0, "a table length without a table");
            return;
        };
        assert_eq!(current.len(), len, "table length");
        // Relaxed: mutex held.
        assert_eq!(self.read.table.load(Ordering::Relaxed), current.as_ptr() as usize, "table address");
        assert!(tables.windows(2).all(|w| w[0].len() < w[1].len()), "tables only grow");
        for (nr, slot) in current.iter().enumerate() {
            let want = self
                .leaf_for((nr as u64) << CHUNK_SHIFT, guard)
                .map_or(EMPTY, |(leaf, _)| leaf as *const Node as usize);
            // Relaxed: mutex held.
            assert_eq!(slot.load(Ordering::Relaxed), want, "leaf table entry {nr}");
        }
    }

    fn check_node(node: &Node, base: u64, guard: &Guard, entries: &mut usize, nodes: &mut usize) {
        *nodes += 1;
        let shift = node.shift();
        let mut occupied = 0;
        // Relaxed (all loads here): the caller holds the mutex.
        let marks: [u64; MARKS] = std::array::from_fn(|m| node.marks[m].load(Ordering::Relaxed));
        for slot in 0..CHUNK {
            let entry = node.slots[slot].load(Ordering::Relaxed);
            if shift == MAX_SHIFT && slot >= 1 << (64 - MAX_SHIFT) {
                // Beyond u64: index bits 64.. do not exist.
                assert_eq!(entry, EMPTY, "slot {slot} of a shift-60 node used");
                continue;
            }
            let index = base | ((slot as u64) << shift);
            assert_eq!(digit(index, shift), slot);
            assert_ne!(entry, RETRY, "RETRY in a linked node at {index:#x}");
            if entry == EMPTY {
                for (m, bits) in marks.iter().enumerate() {
                    assert_eq!(bits & (1 << slot), 0, "mark {m} on empty slot {index:#x}");
                }
                continue;
            }
            occupied += 1;
            if shift == 0 {
                assert!(is_value(entry), "non-value {entry:#x} in leaf at {index:#x}");
                *entries += 1;
            } else {
                assert!(is_node(entry), "value {entry:#x} in inner node at {index:#x}");
                // SAFETY: node entry in a linked node, mutex held.
                let child = unsafe { node_ref(entry, guard) };
                assert_eq!(child.shift() + CHUNK_SHIFT, shift, "child shift");
                assert_eq!(child.offset(), slot, "child offset");
                assert_eq!(child.parent(), node as *const Node as usize, "parent");
                assert!(child.count() > 0, "empty node linked at {index:#x}");
                for (m, bits) in marks.iter().enumerate() {
                    let below = child.marks[m].load(Ordering::Relaxed) != 0;
                    let here = bits & (1 << slot) != 0;
                    assert_eq!(here, below, "mark {m} disagrees with subtree at {index:#x}");
                }
                Self::check_node(child, index, guard, entries, nodes);
            }
        }
        assert_eq!(occupied, node.count(), "count at node base {base:#x}");
    }

    // ----- writer internals (tree mutex held, `guard` pinned) -----

    /// The leaf and slot for `index`, if the path to it exists.
    fn leaf_for<'g>(&self, index: u64, guard: &'g Guard) -> Option<(&'g Node, usize)> {
        // Relaxed: writers hold the mutex, which orders all writer stores.
        let head = self.read.head.load(Ordering::Relaxed);
        if head == EMPTY {
            return None;
        }
        // SAFETY: node entry from the head, mutex held.
        let mut node = unsafe { node_ref(head, guard) };
        if !fits(index, node.shift()) {
            return None;
        }
        while node.shift() > 0 {
            // Relaxed: mutex held.
            let entry = node.slots[digit(index, node.shift())].load(Ordering::Relaxed);
            if !is_node(entry) {
                return None;
            }
            // SAFETY: node entry from a linked node, mutex held.
            node = unsafe { node_ref(entry, guard) };
        }
        Some((node, digit(index, 0)))
    }

    /// The leaf and slot for `index`, creating the path (and growing the
    /// tree) as needed.
    fn create_leaf<'g>(&self, index: u64, guard: &'g Guard) -> (&'g Node, usize) {
        // Relaxed: mutex held.
        let mut head = self.read.head.load(Ordering::Relaxed);
        if head == EMPTY {
            head = alloc_node(&self.pool, shift_for(index), 0, EMPTY);
            self.add_nodes(1);
            // Release: publishes the initialised node to readers.
            self.read.head.store(head, Ordering::Release);
            if shift_for(index) == 0 {
                self.table_link(index, head, guard);
            }
        }
        // SAFETY: node entry from the head, mutex held.
        let mut node = unsafe { node_ref(head, guard) };
        while !fits(index, node.shift()) {
            // xas_expand: stack a new root on top, old root in slot 0.
            let root = alloc_node(&self.pool, node.shift() + CHUNK_SHIFT, 0, EMPTY);
            self.add_nodes(1);
            // SAFETY: freshly allocated node, not yet shared.
            let new = unsafe { node_ref(root, guard) };
            // Relaxed: `new` is unpublished; the head store below releases.
            new.slots[0].store(head, Ordering::Relaxed);
            new.set_count(1);
            for m in 0..MARKS {
                if node.marks[m].load(Ordering::Relaxed) != 0 {
                    new.marks[m].store(1, Ordering::Relaxed);
                }
            }
            node.set_parent(root);
            // Release: publishes the new root's contents.
            self.read.head.store(root, Ordering::Release);
            head = root;
            node = new;
        }
        while node.shift() > 0 {
            let off = digit(index, node.shift());
            // Relaxed: mutex held.
            let mut entry = node.slots[off].load(Ordering::Relaxed);
            if entry == EMPTY {
                entry = alloc_node(&self.pool, node.shift() - CHUNK_SHIFT, off, node as *const Node as usize);
                self.add_nodes(1);
                // Release: publishes the initialised child to readers.
                node.slots[off].store(entry, Ordering::Release);
                node.set_count(node.count() + 1);
                if node.shift() == CHUNK_SHIFT {
                    self.table_link(index, entry, guard);
                }
            }
            // SAFETY: node entry from a linked node, mutex held.
            node = unsafe { node_ref(entry, guard) };
        }
        (node, digit(index, 0))
    }

    /// Enters a new leaf (linked, still empty) for `index` in the leaf
    /// table, growing the table first if the policy allows.
    fn table_link(&self, index: u64, leaf: usize, guard: &Guard) {
        let nr = index >> CHUNK_SHIFT;
        // Relaxed: mutex held (writers store both fields under it).
        let len = self.read.table_len.load(Ordering::Relaxed);
        if nr >= len as u64 && !self.grow_table(nr, guard) {
            return;
        }
        // Relaxed: mutex held.
        let table = self.read.table.load(Ordering::Relaxed) as *const AtomicUsize;
        // SAFETY: nr < the table's length (checked or just grown); the table
        // lives as long as the tree.
        let slot = unsafe { &*table.add(nr as usize) };
        // Release: the leaf was initialised (and linked) before; a reader
        // that loads its address sees it.
        slot.store(leaf, Ordering::Release);
    }

    /// Takes leaf `index >> 6` out of the leaf table (an unlink, tree
    /// sequence odd).
    fn table_unlink(&self, index: u64) {
        let nr = index >> CHUNK_SHIFT;
        // Relaxed: mutex held.
        if nr < self.read.table_len.load(Ordering::Relaxed) as u64 {
            // Relaxed: mutex held.
            let table = self.read.table.load(Ordering::Relaxed) as *const AtomicUsize;
            // SAFETY: nr < the current table's length; it lives as long as
            // the tree.
            // Relaxed: inside the unlink's odd sequence; readers that saw
            // the old leaf retry.
            unsafe { &*table.add(nr as usize) }.store(EMPTY, Ordering::Relaxed);
        }
    }

    /// Replaces the leaf table by one covering leaf number `nr`, filled from
    /// the tree, if it stays within 32 entries per linked node; false if
    /// not (the leaf is then found by the walk).
    #[cold]
    fn grow_table(&self, nr: u64, guard: &Guard) -> bool {
        // Relaxed: statistic kept under the mutex, which we hold.
        let nodes = self.nodes.load(Ordering::Relaxed) as u64;
        let want = (nr + 1).max(64).next_power_of_two();
        if want > 32 * (nodes + 1) || want > (isize::MAX as u64) / 8 {
            return false;
        }
        let table: Box<[AtomicUsize]> = (0..want).map(|_| AtomicUsize::new(EMPTY)).collect();
        // Relaxed: mutex held; the table is published below with Release.
        let head = self.read.head.load(Ordering::Relaxed);
        if head != EMPTY {
            // SAFETY: node entry from the head, mutex held.
            Self::fill_table(unsafe { node_ref(head, guard) }, 0, &table, guard);
        }
        let addr = table.as_ptr() as usize;
        let mut tables = self.tables.lock();
        tables.push(table);
        // Release: the table's entries are written before its address.
        self.read.table.store(addr, Ordering::Release);
        // Release: a reader that sees the length sees the address and the
        // entries (the length is loaded first).
        self.read.table_len.store(want as usize, Ordering::Release);
        true
    }

    /// Enters every leaf under `node` (whose first index is `base`) that the
    /// table covers.
    fn fill_table(node: &Node, base: u64, table: &[AtomicUsize], guard: &Guard) {
        let shift = node.shift();
        if shift == 0 {
            if let Some(slot) = table.get((base >> CHUNK_SHIFT) as usize) {
                // Relaxed: the table is not published yet.
                slot.store(node as *const Node as usize, Ordering::Relaxed);
            }
            return;
        }
        for (i, slot) in node.slots.iter().enumerate() {
            let index = base | ((i as u64) << shift);
            if (index >> CHUNK_SHIFT) >= table.len() as u64 {
                break;
            }
            // Relaxed: mutex held.
            let entry = slot.load(Ordering::Relaxed);
            if is_node(entry) {
                // SAFETY: node entry in a linked node, mutex held.
                Self::fill_table(unsafe { node_ref(entry, guard) }, index, table, guard);
            }
        }
    }

    /// Records the entry at `index` in the hint table (mutex held), growing
    /// the table first for an insert past it if the policy allows.
    fn hint_set(&self, index: u64, pfn: Option<u32>, guard: &Guard) {
        // Relaxed: mutex held (writers store both fields under it).
        let len = self.read.hints_len.load(Ordering::Relaxed);
        if index >= len as u64 && (pfn.is_none() || !self.grow_hints(index, guard)) {
            return;
        }
        // Relaxed: mutex held.
        let hints = self.read.hints.load(Ordering::Relaxed) as *const AtomicU32;
        // SAFETY: index < the table's length (checked or just grown); the
        // table lives as long as the tree.
        let hint = unsafe { &*hints.add(index as usize) };
        // Relaxed: a hint; readers validate the frame it names. (Frame
        // number u32::MAX, which no cache has, would wrap to "no hint".)
        hint.store(pfn.map_or(0, |p| p.wrapping_add(1)), Ordering::Relaxed);
    }

    /// Replaces the hint table by one covering `index`, filled from the
    /// tree, if the tree fills at least half of it (so it costs at most 8
    /// bytes per entry, 4 in a dense file; with the smaller tables it
    /// replaced, twice that); false if not.
    #[cold]
    fn grow_hints(&self, index: u64, guard: &Guard) -> bool {
        if index >= 1 << 31 {
            return false;
        }
        let entries = self.len() as u64;
        let want = (index + 1).max(64).next_power_of_two();
        if want > 2 * (entries + 32) {
            return false;
        }
        let table: Box<[AtomicU32]> = (0..want).map(|_| AtomicU32::new(0)).collect();
        self.walk(0, None, guard, |i, pfn| {
            if i >= want {
                return false;
            }
            // Relaxed: the table is not published yet.
            table[i as usize].store(pfn.wrapping_add(1), Ordering::Relaxed);
            true
        });
        let addr = table.as_ptr() as usize;
        self.hint_tables.lock().push(table);
        // Release: the entries are written before the address.
        self.read.hints.store(addr, Ordering::Release);
        // Release: a reader that sees the length sees the address and the
        // entries (the length is loaded first).
        self.read.hints_len.store(want as usize, Ordering::Release);
        true
    }

    fn add_nodes(&self, delta: isize) {
        // Relaxed: statistic, updated under the mutex.
        let n = self.nodes.load(Ordering::Relaxed);
        self.nodes.store(n.wrapping_add_signed(delta), Ordering::Relaxed);
    }

    fn add_len(&self, delta: isize) {
        // Relaxed: statistic, updated under the mutex.
        let n = self.len.load(Ordering::Relaxed);
        self.len.store(n.wrapping_add_signed(delta), Ordering::Relaxed);
    }

    /// Retires an unlinked node: it joins the pool for reuse once every
    /// pinned reader that might see it is gone. (Unpinned readers may see it
    /// at any time, reused or not; they validate with the tree sequence.)
    fn free_node(&self, node: &Node, guard: &Guard) {
        self.add_nodes(-1);
        let addr = node as *const Node as usize;
        let pool = self.pool.clone();
        guard.defer(move || pool.push(addr));
    }

    /// A writer starts unlinking nodes: the tree sequence goes odd.
    fn begin_unlink(&self) {
        // Relaxed load: only mutex holders store to `seq`.
        let s = self.read.seq.load(Ordering::Relaxed);
        debug_assert!(s & 1 == 0);
        // Relaxed store, then a Release fence: the unlinking stores cannot
        // become visible before the odd value (the seqlock writer).
        self.read.seq.store(s.wrapping_add(1), Ordering::Relaxed);
        fence(Ordering::Release);
    }

    /// The unlinking is done: the tree sequence goes even again.
    fn end_unlink(&self) {
        // Relaxed load: only mutex holders store to `seq`.
        let s = self.read.seq.load(Ordering::Relaxed);
        // Release: the unlink is visible to a reader that sees this value.
        self.read.seq.store(s.wrapping_add(1), Ordering::Release);
    }

    /// Sets `mark` on slot `off` of `leaf` and propagates it upwards. Mark
    /// bitmaps change only under the mutex (held here), so a load and a
    /// store replace a locked read-modify-write, and a bit already set costs
    /// no store at all.
    fn set_mark_at<'g>(&self, leaf: &'g Node, off: usize, m: usize, guard: &'g Guard) {
        let mut node = leaf;
        let mut bit = 1u64 << off;
        loop {
            // Relaxed: mutex held; only lock holders write mark bitmaps.
            let old = node.marks[m].load(Ordering::Relaxed);
            if old & bit != 0 {
                return;
            }
            // Release: bits are set bottom-up, so a reader that sees this bit
            // (Acquire) also sees the bits set below it.
            node.marks[m].store(old | bit, Ordering::Release);
            let parent = node.parent();
            if parent == EMPTY {
                return;
            }
            bit = 1 << node.offset();
            // SAFETY: parent of a linked node, mutex held.
            node = unsafe { node_ref(parent, guard) };
        }
    }

    /// Clears `mark` on slot `off` of `leaf` and propagates upwards while
    /// nodes lose their last bit (a load and a store, as in `set_mark_at`;
    /// a bit already clear, the usual case on erase, costs no store).
    fn clear_mark_at<'g>(&self, leaf: &'g Node, off: usize, m: usize, guard: &'g Guard) {
        let mut node = leaf;
        let mut bit = 1u64 << off;
        loop {
            // Relaxed: mutex held; only lock holders write mark bitmaps.
            let old = node.marks[m].load(Ordering::Relaxed);
            if old & bit == 0 {
                return;
            }
            // Release: pairs with readers' Acquire loads of mark bitmaps.
            node.marks[m].store(old & !bit, Ordering::Release);
            if old & !bit != 0 {
                return;
            }
            let parent = node.parent();
            if parent == EMPTY {
                return;
            }
            bit = 1 << node.offset();
            // SAFETY: parent of a linked node, mutex held.
            node = unsafe { node_ref(parent, guard) };
        }
    }

    /// Unlinks empty nodes from the leaf `node` (holding `index`) upwards,
    /// then shrinks the root.
    fn delete_empty<'g>(&self, node: &'g Node, index: u64, guard: &'g Guard) {
        if node.count() != 0 && !self.can_shrink(guard) {
            return;
        }
        self.begin_unlink();
        if node.count() == 0 {
            self.table_unlink(index);
        }
        self.delete_empty_locked(node, guard);
        self.end_unlink();
    }

    /// Whether `shrink` has work: the root is an inner node with one child.
    fn can_shrink(&self, guard: &Guard) -> bool {
        // Relaxed: mutex held.
        let head = self.read.head.load(Ordering::Relaxed);
        if head == EMPTY {
            return false;
        }
        // SAFETY: node entry from the head, mutex held.
        let root = unsafe { node_ref(head, guard) };
        root.shift() != 0 && root.count() == 1
    }

    fn delete_empty_locked<'g>(&self, mut node: &'g Node, guard: &'g Guard) {
        while node.count() == 0 {
            let parent = node.parent();
            if parent == EMPTY {
                // Release: pairs with readers' Acquire head loads (an empty
                // head carries no data, but keeps one rule for all stores).
                self.read.head.store(EMPTY, Ordering::Release);
                self.free_node(node, guard);
                return;
            }
            // SAFETY: parent of a linked node, mutex held.
            let p = unsafe { node_ref(parent, guard) };
            // Release: one rule for all slot stores (see above).
            p.slots[node.offset()].store(EMPTY, Ordering::Release);
            p.set_count(p.count() - 1);
            self.free_node(node, guard);
            node = p;
        }
        self.shrink(guard);
    }

    /// xas_shrink: while the root is an inner node holding only slot 0, make
    /// that child the root.
    fn shrink(&self, guard: &Guard) {
        loop {
            // Relaxed: mutex held.
            let head = self.read.head.load(Ordering::Relaxed);
            if head == EMPTY {
                return;
            }
            // SAFETY: node entry from the head, mutex held.
            let root = unsafe { node_ref(head, guard) };
            if root.shift() == 0 || root.count() != 1 {
                return;
            }
            // Relaxed: mutex held.
            let child = root.slots[0].load(Ordering::Relaxed);
            if child == EMPTY {
                return;
            }
            // SAFETY: node entry from a linked node, mutex held.
            unsafe { node_ref(child, guard) }.set_parent(EMPTY);
            // Release: the child is already initialised and published; this
            // orders the head change before the RETRY store below.
            self.read.head.store(child, Ordering::Release);
            // Release: a reader that sees RETRY (Acquire) and restarts is
            // guaranteed to load the new head stored above.
            root.slots[0].store(RETRY, Ordering::Release);
            self.free_node(root, guard);
        }
    }

    fn insert_locked(&self, index: u64, pfn: u32, guard: &Guard) -> Result<(), u32> {
        if let Some((leaf, off)) = self.leaf_for(index, guard) {
            // Relaxed: mutex held.
            let entry = leaf.slots[off].load(Ordering::Relaxed);
            if entry != EMPTY {
                return Err(decode_value(entry));
            }
        }
        let (leaf, off) = self.create_leaf(index, guard);
        // Release: one rule for all slot stores (a value carries no pointer,
        // but the caller may have published data keyed by this pfn).
        leaf.slots[off].store(encode_value(pfn), Ordering::Release);
        leaf.set_count(leaf.count() + 1);
        self.add_len(1);
        self.hint_set(index, Some(pfn), guard);
        Ok(())
    }

    fn store_locked(&self, index: u64, pfn: u32, guard: &Guard) -> Option<u32> {
        if let Some((leaf, off)) = self.leaf_for(index, guard) {
            // Relaxed: mutex held.
            let entry = leaf.slots[off].load(Ordering::Relaxed);
            if entry != EMPTY {
                // Release: see `insert_locked`.
                leaf.slots[off].store(encode_value(pfn), Ordering::Release);
                self.hint_set(index, Some(pfn), guard);
                return Some(decode_value(entry));
            }
        }
        let inserted = self.insert_locked(index, pfn, guard);
        debug_assert!(inserted.is_ok());
        None
    }

    fn erase_locked(&self, index: u64, guard: &Guard) -> Option<u32> {
        let (leaf, off) = self.leaf_for(index, guard)?;
        // Relaxed: mutex held.
        let entry = leaf.slots[off].load(Ordering::Relaxed);
        if entry == EMPTY {
            return None;
        }
        for m in 0..MARKS {
            self.clear_mark_at(leaf, off, m, guard);
        }
        // Release: one rule for all slot stores.
        leaf.slots[off].store(EMPTY, Ordering::Release);
        leaf.set_count(leaf.count() - 1);
        self.add_len(-1);
        self.hint_set(index, None, guard);
        self.delete_empty(leaf, index, guard);
        Some(decode_value(entry))
    }

    fn mark_locked(&self, index: u64, mark: Mark, set: bool, guard: &Guard) {
        let Some((leaf, off)) = self.leaf_for(index, guard) else {
            return;
        };
        // Relaxed: mutex held.
        if leaf.slots[off].load(Ordering::Relaxed) == EMPTY {
            return;
        }
        if set {
            self.set_mark_at(leaf, off, mark.idx(), guard);
        } else {
            self.clear_mark_at(leaf, off, mark.idx(), guard);
        }
    }
}

impl Drop for XArray {
    fn drop(&mut self) {
        fn free(entry: usize) {
            // SAFETY: `&mut XArray` means no reader or writer exists; every
            // linked node is a live `Box<Node>` reachable exactly once.
            let node = unsafe { Box::from_raw(entry as *mut Node) };
            if node.shift() > 0 {
                for slot in &node.slots {
                    // Relaxed: exclusive access.
                    let entry = slot.load(Ordering::Relaxed);
                    if is_node(entry) {
                        free(entry);
                    }
                }
            }
        }
        // Relaxed: exclusive access.
        let head = self.read.head.load(Ordering::Relaxed);
        if is_node(head) {
            free(head);
        }
    }
}

impl XaLock<'_> {
    /// Stores `pfn` at `index` unless an entry is there (`Err(existing)`).
    pub fn insert(&mut self, index: u64, pfn: u32) -> Result<(), u32> {
        self.tree.insert_locked(index, pfn, &self.guard)
    }

    /// Stores `pfn` at `index`, returning the entry it replaced (whose marks
    /// are kept).
    pub fn store(&mut self, index: u64, pfn: u32) -> Option<u32> {
        self.tree.store_locked(index, pfn, &self.guard)
    }

    /// Removes the entry at `index` and all its marks.
    pub fn erase(&mut self, index: u64) -> Option<u32> {
        self.tree.erase_locked(index, &self.guard)
    }

    /// Sets `mark` on the entry at `index` (no-op if absent).
    pub fn set_mark(&mut self, index: u64, mark: Mark) {
        self.tree.mark_locked(index, mark, true, &self.guard);
    }

    /// Clears `mark` on the entry at `index` (no-op if absent).
    pub fn clear_mark(&mut self, index: u64, mark: Mark) {
        self.tree.mark_locked(index, mark, false, &self.guard);
    }

    /// See [`XArray::load`].
    pub fn load(&self, index: u64) -> Option<u32> {
        self.tree.load(index, &self.guard)
    }

    /// See [`XArray::get_mark`].
    pub fn get_mark(&self, index: u64, mark: Mark) -> bool {
        self.tree.get_mark(index, mark, &self.guard)
    }

    /// See [`XArray::find`].
    pub fn find(&self, start: u64) -> Option<(u64, u32)> {
        self.tree.find(start, &self.guard)
    }

    /// See [`XArray::find_marked`].
    pub fn find_marked(&self, start: u64, mark: Mark) -> Option<(u64, u32)> {
        self.tree.find_marked(start, mark, &self.guard)
    }

    /// See [`XArray::gang_lookup`].
    pub fn gang_lookup(&self, start: u64, max: usize, out: &mut Vec<(u64, u32)>) {
        self.tree.gang_lookup(start, max, out, &self.guard);
    }

    /// See [`XArray::gang_lookup_marked`].
    pub fn gang_lookup_marked(&self, start: u64, mark: Mark, max: usize, out: &mut Vec<(u64, u32)>) {
        self.tree.gang_lookup_marked(start, mark, max, out, &self.guard);
    }

    /// See [`XArray::contig`].
    pub fn contig(&self, start: u64, max: usize, out: &mut Vec<(u64, u32)>) {
        self.tree.contig(start, max, out, &self.guard);
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.tree.len()
    }

    /// Whether the tree is empty.
    pub fn is_empty(&self) -> bool {
        self.tree.is_empty()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;
    use std::sync::atomic::AtomicBool as StdBool;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    type Model = BTreeMap<u64, (u32, [bool; MARKS])>;

    #[derive(Clone, Debug)]
    enum Op {
        Insert(u64, u32),
        Erase(u64),
        Store(u64, u32),
        SetMark(u64, usize),
        ClearMark(u64, usize),
    }

    fn index() -> impl Strategy<Value = u64> {
        prop_oneof![
            4 => 0u64..200,
            2 => 4000u64..4200,
            1 => any::<u64>(),
            1 => prop::sample::select(vec![1 << 20, 1 << 36, 1 << 60, 5 << 58]),
            2 => (u64::MAX - 130)..=u64::MAX,
        ]
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (index(), any::<u32>()).prop_map(|(i, v)| Op::Insert(i, v)),
            3 => index().prop_map(Op::Erase),
            2 => (index(), any::<u32>()).prop_map(|(i, v)| Op::Store(i, v)),
            3 => (index(), 0..MARKS).prop_map(|(i, m)| Op::SetMark(i, m)),
            2 => (index(), 0..MARKS).prop_map(|(i, m)| Op::ClearMark(i, m)),
        ]
    }

    fn apply(xa: &XArray, model: &mut Model, op: &Op) {
        let mut w = xa.lock();
        match *op {
            Op::Insert(i, v) => {
                let expect = match model.get(&i) {
                    Some(&(old, _)) => Err(old),
                    None => {
                        model.insert(i, (v, [false; MARKS]));
                        Ok(())
                    }
                };
                assert_eq!(w.insert(i, v), expect);
            }
            Op::Erase(i) => assert_eq!(w.erase(i), model.remove(&i).map(|e| e.0)),
            Op::Store(i, v) => {
                let old = model.get(&i).map(|e| e.0);
                model.entry(i).or_insert((v, [false; MARKS])).0 = v;
                assert_eq!(w.store(i, v), old);
            }
            Op::SetMark(i, m) => {
                if let Some(e) = model.get_mut(&i) {
                    e.1[m] = true;
                }
                w.set_mark(i, Mark::ALL[m]);
            }
            Op::ClearMark(i, m) => {
                if let Some(e) = model.get_mut(&i) {
                    e.1[m] = false;
                }
                w.clear_mark(i, Mark::ALL[m]);
            }
        }
    }

    fn compare(xa: &XArray, model: &Model, probes: &[u64]) {
        xa.check_invariants();
        assert_eq!(xa.len(), model.len());
        assert_eq!(xa.is_empty(), model.is_empty());
        let g = crossbeam_epoch::pin();
        let mut starts: Vec<u64> = probes.to_vec();
        for &k in model.keys() {
            starts.extend([k, k.wrapping_add(1), k.wrapping_sub(1)]);
        }
        starts.extend([0, u64::MAX]);
        let mut out = Vec::new();
        for &s in &starts {
            let e = model.get(&s);
            assert_eq!(xa.load(s, &g), e.map(|e| e.0), "load {s:#x}");
            assert_eq!(xa.load_unpinned(s), e.map(|e| e.0), "load_unpinned {s:#x}");
            for (m, &mark) in Mark::ALL.iter().enumerate() {
                assert_eq!(xa.get_mark(s, mark, &g), e.is_some_and(|e| e.1[m]));
            }
            let want = model.range(s..).next().map(|(&k, e)| (k, e.0));
            assert_eq!(xa.find(s, &g), want, "find {s:#x}");
            for max in [1, 3, usize::MAX] {
                out.clear();
                xa.gang_lookup(s, max, &mut out, &g);
                let want: Vec<_> = model.range(s..).take(max).map(|(&k, e)| (k, e.0)).collect();
                assert_eq!(out, want, "gang {s:#x} {max}");
            }
            for (m, &mark) in Mark::ALL.iter().enumerate() {
                let mut it = model.range(s..).filter(|(_, e)| e.1[m]).map(|(&k, e)| (k, e.0));
                assert_eq!(xa.find_marked(s, mark, &g), it.next(), "find_marked {s:#x}");
                out.clear();
                xa.gang_lookup_marked(s, mark, 4, &mut out, &g);
                let want: Vec<_> = model.range(s..).filter(|(_, e)| e.1[m]).take(4).map(|(&k, e)| (k, e.0)).collect();
                assert_eq!(out, want);
            }
            for len in [1, 7, 300] {
                let mut idx = Vec::new();
                xa.indices_in(s, s.saturating_add(len), &mut idx, &g);
                let want: Vec<u64> = model.range(s..s.saturating_add(len)).map(|(&k, _)| k).collect();
                assert_eq!(idx, want, "indices_in {s:#x} +{len}");
            }
            out.clear();
            xa.contig(s, 100, &mut out, &g);
            let mut want = Vec::new();
            let mut i = s;
            while let Some(e) = model.get(&i) {
                want.push((i, e.0));
                if want.len() == 100 || i == u64::MAX {
                    break;
                }
                i += 1;
            }
            assert_eq!(out, want, "contig {s:#x}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]
        #[test]
        fn matches_model(ops in prop::collection::vec(op(), 1..120)) {
            let xa = XArray::new();
            let mut model = Model::new();
            for op in &ops {
                apply(&xa, &mut model, op);
                let probe = match *op {
                    Op::Insert(i, _) | Op::Erase(i) | Op::Store(i, _) => i,
                    Op::SetMark(i, _) | Op::ClearMark(i, _) => i,
                };
                compare(&xa, &model, &[probe]);
            }
            // Erase everything: the tree must end empty with no nodes.
            let keys: Vec<u64> = model.keys().copied().collect();
            for k in keys {
                apply(&xa, &mut model, &Op::Erase(k));
            }
            compare(&xa, &model, &[]);
            prop_assert_eq!(xa.memory_bytes(), 0);
        }
    }

    #[test]
    fn shrink_to_empty_and_regrow() {
        let xa = XArray::new();
        for round in 0..3u32 {
            {
                let mut w = xa.lock();
                for i in [0u64, 63, 64, 4095, 4096, 1 << 30, u64::MAX] {
                    w.insert(i, i as u32 ^ round).unwrap();
                    w.set_mark(i, Mark::Dirty);
                }
            }
            xa.check_invariants();
            assert_eq!(xa.len(), 7);
            {
                let mut w = xa.lock();
                for i in [u64::MAX, 1 << 30, 4096] {
                    assert_eq!(w.erase(i), Some(i as u32 ^ round));
                }
            }
            xa.check_invariants();
            // Root shrank back to shift 6 (indices up to 4095).
            let g = crossbeam_epoch::pin();
            // SAFETY: head loaded under a pinned guard.
            let root = unsafe { node_ref(xa.read.head.load(Ordering::Acquire), &g) };
            assert_eq!(root.shift(), 6);
            assert_eq!(xa.find_marked(100, Mark::Dirty, &g), Some((4095, 4095 ^ round)));
            drop(g);
            {
                let mut w = xa.lock();
                for i in [0u64, 63, 64, 4095] {
                    assert_eq!(w.erase(i), Some(i as u32 ^ round));
                }
            }
            xa.check_invariants();
            assert!(xa.is_empty());
            assert_eq!(xa.memory_bytes(), 0);
            assert_eq!(xa.read.head.load(Ordering::Relaxed), EMPTY);
        }
    }

    #[test]
    fn leaf_table_covers_dense_trees_and_not_sparse_ones() {
        let xa = XArray::new();
        {
            let mut w = xa.lock();
            for i in 0..10_000u64 {
                w.insert(i, i as u32 ^ 0xabc).unwrap();
            }
        }
        xa.check_invariants();
        // Relaxed: no writer runs.
        let len = xa.read.table_len.load(Ordering::Relaxed);
        assert!(len >= 10_000 / 64, "dense tree's table covers {len} leaves");
        assert!(xa.table_bytes() <= 16 * 10_000, "tables within 16 bytes per entry: {}", xa.table_bytes());
        assert_eq!(xa.load_hint(5000), Some(5000 ^ 0xabc), "the hint table covers a dense tree");
        assert_eq!(xa.load_hint(10_001), None);
        for i in (0..10_000u64).step_by(7) {
            assert_eq!(xa.load_unpinned(i), Some(i as u32 ^ 0xabc));
        }
        assert_eq!(xa.load_unpinned(10_000), None);
        assert_eq!(xa.load_unpinned(len as u64 * 64 + 5), None, "past the table: the walk");
        {
            let mut w = xa.lock();
            for i in 64..128u64 {
                w.erase(i);
            }
        }
        xa.check_invariants();
        assert_eq!(xa.load_unpinned(100), None, "an unlinked leaf leaves the table");
        {
            let mut w = xa.lock();
            w.insert(100, 1).unwrap();
        }
        xa.check_invariants();
        assert_eq!(xa.load_unpinned(100), Some(1));

        let sparse = XArray::new();
        {
            let mut w = sparse.lock();
            for k in 1..200u64 {
                w.insert(k << 24, k as u32).unwrap();
            }
        }
        sparse.check_invariants();
        assert!(sparse.table_bytes() <= 64 * 8, "a sparse tree keeps a small table: {}", sparse.table_bytes());
        for k in 1..200u64 {
            assert_eq!(sparse.load_unpinned(k << 24), Some(k as u32));
        }
    }

    #[test]
    fn dense_memory_and_marked_scan() {
        let xa = XArray::new();
        let n = 1u64 << 20;
        {
            let mut w = xa.lock();
            for i in 0..n {
                w.insert(i, i as u32).unwrap();
                if i % 100 == 0 {
                    w.set_mark(i, Mark::Dirty);
                }
            }
        }
        let per_entry = xa.memory_bytes() as f64 / n as f64;
        println!("memory_bytes per entry at 1M dense: {per_entry:.3}");
        assert!(per_entry < 10.0, "{per_entry}");
        xa.check_invariants();

        let g = crossbeam_epoch::pin();
        let t = Instant::now();
        let mut out = Vec::new();
        xa.gang_lookup_marked(0, Mark::Dirty, usize::MAX, &mut out, &g);
        let marked = t.elapsed();
        assert_eq!(out.len(), (n as usize).div_ceil(100));
        assert!(out.iter().all(|&(i, v)| i % 100 == 0 && v == i as u32));
        out.clear();
        let t = Instant::now();
        xa.gang_lookup(0, usize::MAX, &mut out, &g);
        let all = t.elapsed();
        assert_eq!(out.len(), n as usize);
        println!("marked scan {marked:?}, full scan {all:?}");
        drop(g);

        {
            let mut w = xa.lock();
            for i in 0..n {
                assert_eq!(w.erase(i), Some(i as u32));
            }
        }
        xa.check_invariants();
        assert_eq!(xa.memory_bytes(), 0);
    }

    #[test]
    fn marked_scan_skips_unmarked_subtrees() {
        // 1% of 1M marked: the marked walk should visit far fewer slots than
        // a full walk. Measure by time relative to a full walk.
        let xa = XArray::new();
        let n = 1u64 << 20;
        {
            let mut w = xa.lock();
            for i in 0..n {
                w.insert(i, i as u32).unwrap();
            }
            // Clustered 1%: every 64th leaf fully marked... and a sparse
            // sprinkle elsewhere.
            for i in (0..n).step_by(6400) {
                w.set_mark(i, Mark::ToWrite);
            }
        }
        let g = crossbeam_epoch::pin();
        let mut out = Vec::new();
        let t = Instant::now();
        for _ in 0..10 {
            out.clear();
            xa.gang_lookup_marked(0, Mark::ToWrite, usize::MAX, &mut out, &g);
        }
        let marked = t.elapsed();
        let t = Instant::now();
        for _ in 0..10 {
            out.clear();
            xa.gang_lookup(0, usize::MAX, &mut out, &g);
        }
        let all = t.elapsed();
        println!("sparse marked scan x10 {marked:?}, full scan x10 {all:?}");
        assert!(marked * 10 < all, "{marked:?} vs {all:?}");
    }

    #[test]
    fn concurrent_readers_and_writers() {
        const RANGE: u64 = 3000;
        const HIGH: u64 = 1 << 40;
        // value = (index & 0xffff) | (tag << 16)
        fn val(i: u64, tag: u32) -> u32 {
            (i as u32 & 0xffff) | (tag << 16)
        }
        fn ok(i: u64, v: u32) -> bool {
            v & 0xffff == i as u32 & 0xffff
        }
        let xa = Arc::new(XArray::new());
        let stop = Arc::new(StdBool::new(false));
        let deadline = Instant::now() + Duration::from_millis(1000);
        let mut handles = Vec::new();
        for w in 0..2u64 {
            let xa = Arc::clone(&xa);
            let stop = Arc::clone(&stop);
            handles.push(std::thread::spawn(move || {
                let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ w;
                let mut ops = 0u64;
                while Instant::now() < deadline && ops < 50_000_000 {
                    let mut lock = xa.lock();
                    for _ in 0..64 {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        let r = x >> 8;
                        let i = if r % 50 == 0 { HIGH + r % 100 } else { r % RANGE };
                        let tag = (r >> 32) as u32 & 0xffff;
                        match x % 8 {
                            0..=1 => {
                                let _ = lock.insert(i, val(i, tag));
                            }
                            2 => {
                                let _ = lock.store(i, val(i, tag));
                            }
                            3..=5 => {
                                if let Some(v) = lock.erase(i) {
                                    assert!(ok(i, v));
                                }
                            }
                            6 => lock.set_mark(i, Mark::Dirty),
                            _ => lock.clear_mark(i, Mark::Dirty),
                        }
                        ops += 1;
                    }
                    // Occasionally empty a big chunk to force shrinking.
                    if ops % 8192 < 64 {
                        for i in 0..RANGE {
                            lock.erase(i);
                        }
                        for i in HIGH..HIGH + 100 {
                            lock.erase(i);
                        }
                    }
                }
                stop.store(true, std::sync::atomic::Ordering::Relaxed);
                ops
            }));
        }
        let mut readers = Vec::new();
        for r in 0..2u64 {
            let xa = Arc::clone(&xa);
            let stop = Arc::clone(&stop);
            readers.push(std::thread::spawn(move || {
                let mut x = 0x1234_5678u64 + r;
                let mut reads = 0u64;
                let mut out = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let g = crossbeam_epoch::pin();
                    for _ in 0..32 {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        let i = if x % 20 == 0 { HIGH + x % 100 } else { x % RANGE };
                        if let Some(v) = xa.load(i, &g) {
                            assert!(ok(i, v), "load {i} -> {v:#x}");
                        }
                        if let Some(v) = xa.load_unpinned(i) {
                            assert!(ok(i, v), "load_unpinned {i} -> {v:#x}");
                        }
                        if let Some((j, v)) = xa.find_marked(i, Mark::Dirty, &g) {
                            assert!(j >= i && ok(j, v), "find_marked {i} -> {j} {v:#x}");
                        }
                        if let Some((j, v)) = xa.find(i, &g) {
                            assert!(j >= i && ok(j, v), "find {i} -> {j} {v:#x}");
                        }
                        out.clear();
                        xa.gang_lookup(i, 16, &mut out, &g);
                        assert!(out.windows(2).all(|p| p[0].0 < p[1].0));
                        assert!(out.iter().all(|&(j, v)| j >= i && ok(j, v)));
                        reads += 1;
                    }
                }
                reads
            }));
        }
        let ops: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
        let reads: u64 = readers.into_iter().map(|h| h.join().unwrap()).sum();
        println!("stress: {ops} writer ops, {reads} reader rounds");
        xa.check_invariants();
        assert!(ops > 0 && reads > 0);
    }

    /// Unpinned readers never miss an entry that is there the whole time,
    /// while writers make the tree grow and shrink (old roots unlinked and
    /// recycled as nodes elsewhere) and empty leaves come and go.
    #[test]
    fn unpinned_readers_never_miss_a_stable_entry_while_nodes_recycle() {
        use std::sync::atomic::AtomicBool as StdBool;
        let xa = Arc::new(XArray::new());
        const STABLE: u64 = 4096;
        {
            let mut w = xa.lock();
            for i in 0..STABLE {
                w.insert(i * 3, (i * 3) as u32).unwrap();
            }
        }
        let stop = Arc::new(StdBool::new(false));
        let writer = {
            let (xa, stop) = (xa.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut rounds = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let far = 1u64 << (20 + rounds % 40);
                    {
                        let mut w = xa.lock();
                        for k in 0..64 {
                            w.insert(far + k * 64, 7).unwrap();
                            let i = STABLE * 3 + 1 + k * 65;
                            w.insert(i, i as u32).unwrap();
                        }
                    }
                    {
                        let mut w = xa.lock();
                        for k in 0..64 {
                            w.erase(far + k * 64);
                            w.erase(STABLE * 3 + 1 + k * 65);
                        }
                    }
                    rounds += 1;
                }
                rounds
            })
        };
        let readers: Vec<_> = (0..2u64)
            .map(|r| {
                let (xa, stop) = (xa.clone(), stop.clone());
                std::thread::spawn(move || {
                    let mut x = 0x9E37_79B9u64 + r;
                    let mut n = 0u64;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        let i = x % STABLE * 3;
                        assert_eq!(xa.load_unpinned(i), Some(i as u32), "stable entry {i} missed");
                        // An entry that comes and goes, in leaves that are
                        // unlinked, recycled and entered in the leaf table
                        // again: absent, or its own value, never another's.
                        let j = STABLE * 3 + 1 + (x >> 32) % 64 * 65;
                        let got = xa.load_unpinned(j);
                        assert!(got.is_none() || got == Some(j as u32), "entry {j} read as {got:?}");
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        std::thread::sleep(std::time::Duration::from_millis(if cfg!(debug_assertions) { 1500 } else { 500 }));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let rounds = writer.join().unwrap();
        let reads: u64 = readers.into_iter().map(|h| h.join().unwrap()).sum();
        println!("unpinned: {rounds} grow/shrink rounds, {reads} stable lookups");
        assert!(rounds > 0 && reads > 0);
        xa.check_invariants();
    }

    #[test]
    #[ignore]
    fn time_load_1m_dense() {
        let xa = XArray::new();
        let n = 1u64 << 20;
        {
            let mut w = xa.lock();
            for i in 0..n {
                w.insert(i, i as u32).unwrap();
            }
        }
        let g = crossbeam_epoch::pin();
        let rounds = 10;
        let t = Instant::now();
        let mut sum = 0u64;
        for _ in 0..rounds {
            for i in 0..n {
                sum += u64::from(xa.load(i, &g).unwrap());
            }
        }
        let seq = t.elapsed() / (rounds * n as u32);
        let t = Instant::now();
        for _ in 0..rounds {
            for i in 0..n {
                // Odd multiplier: a permutation of 0..n.
                let j = i.wrapping_mul(0x9e37_79b9_7f4a_7c15) & (n - 1);
                sum += u64::from(xa.load(j, &g).unwrap());
            }
        }
        let rnd = t.elapsed() / (rounds * n as u32);
        println!("load 1M dense: sequential {seq:?}/op, scattered {rnd:?}/op ({sum})");
    }
}
