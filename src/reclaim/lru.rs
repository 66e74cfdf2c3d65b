//! The LRU lists, following `mm/swap.c` (two-touch promotion in
//! `mark_page_accessed`, and batched additions and activations so the LRU
//! lock is taken once per batch rather than once per page), with the
//! admission of W-TinyLFU (Caffeine) at the inactive list's tail.
//!
//! The inactive list is the *window*: new pages, about 1% of the pages on
//! the lists (the climber's share; `climber`). The active list is the
//! *main* part. When reclaim reaches a window page at the inactive tail
//! and the window is over its share, that page (the candidate) meets the
//! main part's victim: the first page from the active tail that the CLOCK
//! hand finds unreferenced and without credits (GCLOCK: a referenced page
//! is counted once more in the frequency sketch, gains a credit, up to
//! `CREDITS`, and is rotated to the head; an unreferenced one with credits
//! spends one and is rotated too). The candidate takes the
//! victim's place only if the sketch has seen it more often, by a margin
//! (`ADMIT_MARGIN`; none when the candidate came back from its shadow and
//! was last used after the victim); the victim then goes to the inactive tail and is
//! evicted in its stead. A page hit twice while in the window still moves
//! to the main part at once (two-touch promotion), and while the window is
//! under its share reclaim evicts main victims instead of window pages.
//! The window keeps one page however small its share, and while the cache
//! first fills the hand makes one turn over the main part from 3/4 full,
//! a few pages for each page added (`LruLists::age_while_filling`), so the
//! first evictions tell pages used since from pages dead since.
//!
//! A candidate the sketch turns away can still be admitted by recency
//! (LIRS's test): it came back from a recent eviction and was last used
//! after the main page used longest ago among the victim and a sample of
//! unreferenced main pages (its reuse distance is below that page's
//! recency), which then goes instead. Which test decides is learnt from
//! regrets, as LeCaR weighs its experts, but pair by pair: each time the
//! two tests disagree, the page one would keep and the page the other
//! would keep are marked, and each of them that is used again within two
//! frames' worth of additions votes for the test that would have kept it
//! (a refault of the page that went, from its shadow's kind; a hit on the
//! page that stayed, from the hit that sets REFERENCED). Recency decides
//! while its votes outweigh frequency's by half again, and after a phase
//! change (the hit ratio falls well below its recent average while the
//! misses are pages coming back; `climber`) until the main part has turned
//! over once, as its frequencies are stale (and its credits too: a phase
//! change spends them all). What it admits then is not judged: the pages
//! it evicts are the old phase's, which do not come back.
//!
//! A page's last use, for that test, is a lower bound that costs a hit
//! nothing new: the clock when the page entered the main part, or the
//! clock the first hit after the hand last passed it read (the hit that
//! sets REFERENCED, which stores anyway); for a window page, the stamp of
//! the shadow it came back with.
//!
//! Lists are doubly linked through the descriptors' `lru_prev`/`lru_next`
//! under the LRU lock; the head is the most recent end, the tail the oldest.
//! A page on a list carries `LRU` (and `ACTIVE` on the active list). The
//! lists hold no reference; a page waiting in an add or activate batch does.

use crossbeam_utils::CachePadded;
use parking_lot::{Mutex, MutexGuard};

use crate::mem::page::{Page, PageFlags, NO_PFN};
use crate::mem::page::{FILL_INACTIVE, RA_FRESH};
use crate::mem::zone::{thread_slot, Zone};
use crate::reclaim::climber::{Climber, SHARE_ONE, SHARE_START};
use crate::reclaim::sketch::Sketch;
use crate::reclaim::workingset::{self, Kind};
use crate::stats::{Counters, Event};
use crate::sync::{AtomicI64, AtomicU64, Ordering};

/// Pages a batch holds before it is drained (the kernel's `PAGEVEC_SIZE`).
pub const PAGEVEC_SIZE: usize = 14;

/// How many more counts than the main victim a window candidate needs to
/// take its place. Ties and near ties go to the resident page: the sketch
/// is an estimate, and on a loop every page is seen equally often, so with
/// a margin of 0 its noise alone flushed the main part (a loop of 1.2x a
/// 4,000-page cache missed 0.671 instead of 0.618). A candidate the
/// recency test also prefers needs no margin (`Lru::margin`).
const ADMIT_MARGIN: u32 = 1;

/// Pages the CLOCK hand passes at most looking for a victim.
const VICTIM_SCAN: usize = 32;

/// Credits a main page can hold (GCLOCK, Nicola, Dan and Dias 1992): the
/// hand gives one to a page it finds referenced and takes one from a page
/// it finds unreferenced, and only a page with none left is a victim. A
/// page hit on every turn builds them up and outlasts one that was hit
/// once; W-TinyLFU's SLRU gets the same from its protected segment.
/// Measured on the policy table's 19 rows (sum of miss ratios; sum of the
/// excess over the best published policy on each row; rows at or under it):
/// plain CLOCK 7.8207, 0.0194, 11; 1 credit 7.8076, 0.0164, 11; 2 7.8004,
/// 0.0106, 11; 3 7.7977, 0.0096, 13; 5 7.7930, 0.0089, 13; 7 7.7897,
/// 0.0092, 14. Credits are what an old phase's pages keep when the next
/// one starts (phases 40%: 0.1481 plain, 0.1497 with 3, 0.1507 with 7),
/// so the fewest that win the rows.
const CREDITS: u8 = 3;

/// The part of its frames a filling cache holds when the main part's one
/// turn of aging begins (`LruLists::age_while_filling`): 3/4. The 57 runs
/// of `scripts/policy_wide.sh` (with the window's one-page floor), the
/// whole turn at once: 23.3119 at 3/4, 23.3202 without the turn; at 7/8
/// (without credits) 23.3162, at 1/2 (without credits) 23.3319.
const AGE_AT_NUM: usize = 3;
/// See `AGE_AT_NUM`.
const AGE_AT_DEN: usize = 4;
/// Main pages the turn of aging passes for each page added. With 3 or
/// more the turn (at most 3/4 of the frames) ends before the last quarter
/// has filled; the more, the sooner, and the less a page aged early is
/// told from one aged late. A batch of `PAGEVEC_SIZE` additions passes at
/// most 448 pages under the LRU lock, where the whole turn at once was
/// O(frames): some 6 million descriptors in a 24 GiB cache. The 57 runs
/// (walkv's 9): 4 gave 23.3113 (1.9052), 8 23.3116 (1.9043), 16 23.3091
/// (1.9037), 32 23.3080 (1.9037), 64 23.3121 (1.9037), the whole turn at
/// once 23.3119 (1.9037).
const AGE_PER_ADD: usize = 32;

/// Main pages the recency test samples for the one used longest ago.
const RECENCY_SCAN: usize = 32;

/// How far back (in frames' worth of additions) a decision's judging use
/// counts.
const REGRET_FRAMES: u64 = 2;

/// A vote for the recency test, and one for the frequency test: the
/// recency test decides only while its votes outweigh the frequency
/// test's by half again. With even weights the balance random-walked on
/// Zipf(0.8) and redb's reads at 40%, where the pairs split about evenly
/// and recency's admissions cost up to 0.7 points; trusting recency at 1.25x
/// still cost 0.4 on redb's reads, and at 1.75x zipf99_scan at 10% lost
/// the 0.4 points recency wins there (`docs/design.md`, "The policy").
const VOTE_RECENCY: i64 = 2;
const VOTE_FREQUENCY: i64 = 3;

/// The regret balance's bound either way (a few dozen votes turn it).
const REGRET_MAX: i64 = 128;

/// A decision of the admission test that the page's next use judges.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fate {
    /// A candidate the frequency test turned away that the recency test
    /// would have admitted: its refault votes for recency.
    Rejected = 1,
    /// The main page the recency test would have evicted for it: its next
    /// hit votes for frequency.
    Spared = 2,
    /// A candidate the recency test admitted that the frequency test would
    /// have turned away: its next hit votes for recency.
    Admitted = 3,
    /// The main page the recency test evicted for it: its refault votes
    /// for frequency.
    Evicted = 4,
}

const FATE_SHIFT: u32 = 60;

impl Fate {
    fn mark(self, at: u64) -> u64 {
        (self as u64) << FATE_SHIFT | (at & ((1 << FATE_SHIFT) - 1))
    }

    fn of(word: u64) -> (Option<Fate>, u64) {
        let fate = match word >> FATE_SHIFT {
            1 => Some(Fate::Rejected),
            2 => Some(Fate::Spared),
            3 => Some(Fate::Admitted),
            4 => Some(Fate::Evicted),
            _ => None,
        };
        (fate, word & ((1 << FATE_SHIFT) - 1))
    }
}

/// How long a phase change lets the recency test admit at most, in pages
/// added to the lists per frame of the cache. The window closes sooner
/// once the main part has turned over (`LruLists::phase_left`).
const PHASE_FRAMES: u64 = 4;

#[derive(Clone, Copy, Default)]
pub(crate) struct List {
    head: u32,
    tail: u32,
    pub(crate) len: usize,
}

impl List {
    const EMPTY: List = List { head: NO_PFN, tail: NO_PFN, len: 0 };

    fn push_head(&mut self, pages: &[Page], pfn: u32) {
        let p = &pages[pfn as usize];
        // Relaxed (all link stores in this impl): guarded by the LRU lock.
        p.lru_prev.store(NO_PFN, Ordering::Relaxed);
        p.lru_next.store(self.head, Ordering::Relaxed);
        if self.head == NO_PFN {
            self.tail = pfn;
        } else {
            pages[self.head as usize].lru_prev.store(pfn, Ordering::Relaxed);
        }
        self.head = pfn;
        self.len += 1;
    }

    fn push_tail(&mut self, pages: &[Page], pfn: u32) {
        let p = &pages[pfn as usize];
        // Relaxed: guarded by the LRU lock.
        p.lru_next.store(NO_PFN, Ordering::Relaxed);
        p.lru_prev.store(self.tail, Ordering::Relaxed);
        if self.tail == NO_PFN {
            self.head = pfn;
        } else {
            pages[self.tail as usize].lru_next.store(pfn, Ordering::Relaxed);
        }
        self.tail = pfn;
        self.len += 1;
    }

    fn unlink(&mut self, pages: &[Page], pfn: u32) {
        let p = &pages[pfn as usize];
        let prev = p.lru_prev.load(Ordering::Relaxed);
        let next = p.lru_next.load(Ordering::Relaxed);
        if prev == NO_PFN {
            self.head = next;
        } else {
            pages[prev as usize].lru_next.store(next, Ordering::Relaxed);
        }
        if next == NO_PFN {
            self.tail = prev;
        } else {
            pages[next as usize].lru_prev.store(prev, Ordering::Relaxed);
        }
        p.lru_prev.store(NO_PFN, Ordering::Relaxed);
        p.lru_next.store(NO_PFN, Ordering::Relaxed);
        self.len -= 1;
    }

    fn iter<'p>(&self, pages: &'p [Page]) -> impl Iterator<Item = u32> + 'p {
        let mut pfn = self.head;
        std::iter::from_fn(move || {
            (pfn != NO_PFN).then(|| {
                let cur = pfn;
                pfn = pages[cur as usize].lru_next.load(Ordering::Relaxed);
                cur
            })
        })
    }
}

/// While the cache fills, pages asked for start active up to all but
/// 1/`INACTIVE_RATIO` of the frames, and a readahead window is at most half
/// of that share. Once reclaim runs, the window's share is the climber's
/// (`climber`, about 1% of the pages on the lists), but never below two
/// readahead windows (up to 1/8), so a window is read before it is evicted.
pub(crate) const INACTIVE_RATIO: usize = 8;

/// The two lists, under one lock, with the LRU stamps of CLOCK-Pro's test
/// period (see `workingset`).
pub(crate) struct LruLists {
    pub(crate) inactive: List,
    pub(crate) active: List,
    /// Per frame: when the page was added to the LRU, activated or last
    /// found referenced on the active list; 0 for a page demoted from the
    /// active list (it has no test period). The active list is ordered by
    /// stamp, oldest at the tail.
    stamps: Box<[u64]>,
    /// Each main page's credits (GCLOCK's counts, up to `CREDITS`): one
    /// more each time the hand finds the page referenced, one fewer each
    /// time it finds it unreferenced; the victim is the first page found
    /// unreferenced with none left. Set to 0 when a page is first added
    /// (`add_batch`) and when it enters the main part (`activate`); what
    /// a window page holds is never read.
    chance: Box<[u8]>,
    /// The next stamp; advances once per page added to the LRU.
    clock: u64,
    /// The stamp of the last active page the aging hand passed.
    hand: u64,
    /// The inactive list's (the window's) share of the pages on the
    /// lists, in 1/`SHARE_ONE`s (set by the climber).
    share: u32,
    /// Until the clock reaches this, a phase change lets the recency test
    /// admit window candidates (`PHASE_FRAMES`).
    phase_until: u64,
    /// Main pages still to leave before the phase window closes: the
    /// main part's size at the change. Once that many have gone, the old
    /// phase's pages are out (the recency test takes the page used
    /// longest ago), and what is left was admitted in the new phase, which
    /// the frequency test judges again. Measured on the policy table's
    /// rows at 0.97x, 1x and 1.03x their capacities (57 runs, with the
    /// window's decisions left unjudged, `Lru::window_tail`): the window
    /// open for `PHASE_FRAMES` alone 23.3242; closed after 0.5, 0.8, 0.9,
    /// 1, 1.1, 1.25 and 2 main parts 23.3257, 23.3207, 23.3195, 23.3171,
    /// 23.3196, 23.3223 and 23.3238. On the phase trace at 40% the window
    /// was still open at the trace's end, 300,000 accesses after the loop
    /// ended and long after its pages had gone.
    phase_left: usize,
    /// The main part has had its turn of aging while the cache filled
    /// (`age_while_filling`); cleared when the lists hold under half the
    /// frames again, so a cache emptied (a file truncated, dropped) is aged
    /// again as it refills.
    aged: bool,
    /// Main pages the turn of aging has still to pass.
    aging_left: usize,
    /// Pages the inactive list keeps whatever the share (two readahead
    /// windows, so a window is read before it is evicted), up to
    /// 1/`INACTIVE_RATIO` of the pages on the lists.
    min_inactive: usize,
}

impl LruLists {
    /// The pages the inactive list is kept at: its share of the pages on
    /// the lists, or the readahead floor, and one page at least once the
    /// lists hold two. With a share that rounds to no page (1% of a
    /// 17-frame cache), a page a miss brought in was the next miss's
    /// candidate before its second touch could promote it: walkv's put
    /// reads its page, appends to the log and writes the page, and when the
    /// log page missed in between, the data page lost its contest and
    /// missed again on the write (walkv at 1%: 0.4778 against LRU's
    /// 0.4694; with the one page, 0.4686; the 57 runs: 23.3202 against
    /// 23.3171, the 1% rows of the phase and redb_reads traces paying).
    pub(crate) fn inactive_target(&self) -> usize {
        let total = self.inactive.len + self.active.len;
        (total * self.share as usize / SHARE_ONE as usize)
            .max(self.min_inactive.min(total / INACTIVE_RATIO))
            .max(usize::from(total > 1))
    }

    /// One turn of the CLOCK hand over the whole main part, evicting
    /// nothing, begun when the cache first reaches `AGE_AT_NUM`/`AGE_AT_DEN`
    /// of its frames while it fills (as kswapd ages the active list before
    /// the free pages run out), and run `AGE_PER_ADD` pages for each page
    /// added (`age_some`), so no addition waits on a whole turn: each page
    /// passed is counted once more in the sketch and gains a credit if it
    /// was referenced, loses REFERENCED, and goes to the head, as the hand
    /// would do. Without it the hand first moved when the cache was full,
    /// found every page referenced (every page had been touched since it
    /// came in, and the hand had never passed), and then evicted in
    /// arrival order: pages in use went before pages dead since the fill
    /// began. With it, what was used after the turn is told from what was
    /// not. walkv at 40% (688 pages: 256 data pages, and log pages used
    /// some 68 times in a row and then never again) missed 36 pages more
    /// than LRU, 31 of them when the cache first filled; with the turn it
    /// misses what LRU and Belady miss, its 1,721 first touches.
    #[cold]
    fn age_while_filling(&mut self) {
        self.aged = true;
        self.aging_left = self.active.len;
    }

    /// Passes up to `nr` main pages of the turn of aging
    /// (`age_while_filling`) from the active tail.
    #[cold]
    fn age_some(&mut self, pages: &[Page], sketch: &Sketch, nr: usize) {
        for _ in 0..nr.min(self.aging_left) {
            let pfn = self.active.tail;
            if pfn == NO_PFN {
                break;
            }
            self.hand_passes(pages, sketch, pfn);
            self.rotate_to_head(pages, pfn);
            self.aging_left -= 1;
        }
        if self.active.len == 0 {
            self.aging_left = 0;
        }
    }

    /// The working set moved (the climber's detector): for the next
    /// `additions` pages added, the recency test may admit, and every
    /// main page's credits are spent. Credits count the old phase's hits,
    /// and they kept its pages past the CLOCK hand while the new phase's
    /// came back: on the phase trace at 40% (a Zipf phase, then a loop
    /// just over the cache) the loop took three passes more to settle,
    /// 0.1486 of the trace missed against 0.1478 with this (the policy
    /// table's 19 rows: excess over the best policy 0.0045 against
    /// 0.0038). O(frames), under the LRU lock, once a phase change.
    #[cold]
    pub(crate) fn phase_change(&mut self, additions: u64) {
        self.phase_until = self.clock + additions;
        self.phase_left = self.active.len;
        self.chance.fill(0);
    }

    /// Whether a phase change holds the recency test open.
    #[inline]
    pub(crate) fn in_phase_window(&self) -> bool {
        self.clock < self.phase_until
    }

    /// A main page left the main part: one fewer until the phase window
    /// closes.
    #[inline]
    fn main_page_left(&mut self) {
        if self.phase_left > 0 {
            self.phase_left -= 1;
            if self.phase_left == 0 {
                self.phase_until = self.clock;
            }
        }
    }

    /// Puts a page on the list its ACTIVE flag names and sets LRU.
    pub(crate) fn add(&mut self, pages: &[Page], pfn: u32) {
        let p = &pages[pfn as usize];
        assert!(!p.test(PageFlags::LRU), "page {pfn} already on an LRU list");
        if p.test(PageFlags::ACTIVE) {
            // The active list stays ordered by stamp.
            self.stamps[pfn as usize] = self.stamps[pfn as usize].max(self.clock - 1);
            self.active.push_head(pages, pfn);
        } else {
            self.inactive.push_head(pages, pfn);
        }
        p.set(PageFlags::LRU);
    }

    /// Takes a page off its list and clears LRU (ACTIVE is kept, as the kernel does).
    pub(crate) fn del(&mut self, pages: &[Page], pfn: u32) {
        let p = &pages[pfn as usize];
        if p.test(PageFlags::ACTIVE) {
            self.active.unlink(pages, pfn);
        } else {
            self.inactive.unlink(pages, pfn);
        }
        p.clear(PageFlags::LRU);
    }

    /// Moves an inactive page to the active list.
    pub(crate) fn activate(&mut self, pages: &[Page], pfn: u32) {
        let p = &pages[pfn as usize];
        if p.test(PageFlags::LRU) && !p.test(PageFlags::ACTIVE) {
            self.inactive.unlink(pages, pfn);
            p.set(PageFlags::ACTIVE);
            p.clear(PageFlags::REFERENCED);
            self.stamps[pfn as usize] = self.clock - 1;
            self.chance[pfn as usize] = 0;
            self.active.push_head(pages, pfn);
        }
    }

    /// The main part's victim: the first page from the active tail that
    /// the CLOCK hand finds unreferenced and without credits (`CREDITS`),
    /// or `NO_PFN` if the list is empty or none of the first `VICTIM_SCAN`
    /// pages was one. A referenced page is counted once more in the sketch
    /// (hits write nothing; the hand counts them lazily, at most once a
    /// round) and gains a credit; an unreferenced one with credits loses
    /// one; either gets a new stamp and goes to the head. The hand moves
    /// past each page it looks at.
    pub(crate) fn main_victim(&mut self, pages: &[Page], sketch: &Sketch) -> u32 {
        for _ in 0..VICTIM_SCAN {
            let pfn = self.active.tail;
            if pfn == NO_PFN {
                return NO_PFN;
            }
            if !self.hand_passes(pages, sketch, pfn) {
                if self.chance[pfn as usize] == 0 {
                    return pfn;
                }
                self.chance[pfn as usize] -= 1;
            }
            self.rotate_to_head(pages, pfn);
        }
        NO_PFN
    }

    /// The CLOCK hand passes main page `pfn`: it moves to the page's stamp,
    /// and clears REFERENCED; a page it found referenced is counted once
    /// more in the sketch and gains a credit. Returns whether it was.
    fn hand_passes(&mut self, pages: &[Page], sketch: &Sketch, pfn: u32) -> bool {
        let p = &pages[pfn as usize];
        self.hand = self.hand.max(self.stamps[pfn as usize]);
        let referenced = p.test_and_clear(PageFlags::REFERENCED);
        if referenced {
            sketch.increment(workingset::hash(p.mapping_id(), p.index()));
            self.chance[pfn as usize] = (self.chance[pfn as usize] + 1).min(CREDITS);
        }
        referenced
    }

    /// Moves main page `pfn` to the head with a new stamp.
    fn rotate_to_head(&mut self, pages: &[Page], pfn: u32) {
        self.active.unlink(pages, pfn);
        self.stamps[pfn as usize] = self.clock - 1;
        self.active.push_head(pages, pfn);
    }

    /// Moves an active page to the inactive tail, where reclaim takes it
    /// next (a main victim that lost its place).
    pub(crate) fn demote_to_tail(&mut self, pages: &[Page], pfn: u32) {
        let p = &pages[pfn as usize];
        debug_assert!(p.test(PageFlags::ACTIVE) && p.test(PageFlags::LRU));
        self.active.unlink(pages, pfn);
        p.clear(PageFlags::ACTIVE);
        self.stamps[pfn as usize] = 0;
        self.inactive.push_tail(pages, pfn);
        self.main_page_left();
    }

    /// The oldest inactive page.
    pub(crate) fn inactive_tail(&self) -> u32 {
        self.inactive.tail
    }

    /// The page before `pfn` on its list (towards the head).
    pub(crate) fn prev(pages: &[Page], pfn: u32) -> u32 {
        // Relaxed: guarded by the LRU lock the caller holds.
        pages[pfn as usize].lru_prev.load(Ordering::Relaxed)
    }

    /// Ages up to `nr` pages from the active tail: referenced ones get one
    /// more round on the active list (with a new stamp, and one more count
    /// in the frequency sketch), the rest move to
    /// the inactive head without a test period. The hand moves past each
    /// page it looks at, ending the test period of older shadows.
    pub(crate) fn shrink_active(&mut self, pages: &[Page], nr: usize, sketch: &Sketch) -> usize {
        let mut moved = 0;
        for _ in 0..nr {
            let pfn = self.active.tail;
            if pfn == NO_PFN {
                break;
            }
            let p = &pages[pfn as usize];
            self.active.unlink(pages, pfn);
            self.hand = self.hand.max(self.stamps[pfn as usize]);
            if p.test_and_clear(PageFlags::REFERENCED) {
                // Found referenced: one more use the sketch counts.
                sketch.increment(workingset::hash(p.mapping_id(), p.index()));
                self.stamps[pfn as usize] = self.clock - 1;
                self.active.push_head(pages, pfn);
            } else {
                p.clear(PageFlags::ACTIVE);
                self.stamps[pfn as usize] = 0;
                self.inactive.push_head(pages, pfn);
                moved += 1;
            }
        }
        moved
    }
}

/// A batch of frame numbers each holding one reference.
type Batch = Mutex<Vec<u32>>;

/// LRU lists plus the per-thread batches feeding them.
pub(crate) struct Lru {
    lists: Mutex<LruLists>,
    /// A copy of `LruLists::hand`, read without the lock by reclaim's
    /// shadow test (`remove_run`).
    hand: AtomicU64,
    /// Per frame, the page's last use as LIRS's test reads it. For a window
    /// page: the stamp of the shadow it came back with (its last use before
    /// its last eviction inside its test period), 0 if none; written when
    /// the page is added. For a main page: its stamp when it entered the
    /// main part, or the clock at its first hit after the hand last passed
    /// it (a lower bound of its last use that costs a hit one store, only
    /// when it sets REFERENCED). Read at the window's tail under the LRU lock.
    last_use: Box<[AtomicU64]>,
    /// A copy of `LruLists::clock`, read without the lock by a hit that
    /// dates a main page's use.
    clock: AtomicU64,
    /// Regrets of the frequency test minus those of the recency test,
    /// within +-`REGRET_MAX`: the recency test is asked while positive.
    regret: AtomicI64,
    /// Per frame: a decision of the admission test the page's next use
    /// will judge (`Fate`, in the top bits) and the clock when it was
    /// made; 0 when none.
    fate: Box<[AtomicU64]>,
    /// Frames of the cache.
    frames: u64,
    /// How often pages came into the cache lately (TinyLFU).
    pub(crate) sketch: Sketch,
    /// Sets the inactive list's share from hit ratios.
    climber: Climber,
    add: Box<[CachePadded<Batch>]>,
    activate: Box<[CachePadded<Batch>]>,
}

impl Lru {
    /// Lists for `frames` frames whose inactive list keeps at least
    /// `min_inactive` pages (two readahead windows; see `min_inactive`).
    pub(crate) fn new(shards: usize, frames: usize, min_inactive: usize) -> Lru {
        let batches = || (0..shards).map(|_| CachePadded::new(Mutex::new(Vec::with_capacity(PAGEVEC_SIZE)))).collect();
        Lru {
            lists: Mutex::new(LruLists {
                inactive: List::EMPTY,
                active: List::EMPTY,
                stamps: vec![0; frames].into_boxed_slice(),
                chance: vec![0; frames].into_boxed_slice(),
                clock: 1,
                hand: 0,
                share: SHARE_START,
                phase_until: 0,
                phase_left: 0,
                aged: false,
                aging_left: 0,
                min_inactive,
            }),
            hand: AtomicU64::new(0),
            last_use: (0..frames).map(|_| AtomicU64::new(0)).collect(),
            clock: AtomicU64::new(1),
            regret: AtomicI64::new(0),
            fate: (0..frames).map(|_| AtomicU64::new(0)).collect(),
            frames: frames as u64,
            sketch: Sketch::new(frames),
            climber: Climber::new(frames),
            add: batches(),
            activate: batches(),
        }
    }

    /// The LRU lock.
    #[inline]
    pub(crate) fn lock(&self) -> MutexGuard<'_, LruLists> {
        crate::sync::lock_spinning(&self.lists)
    }

    /// Ages up to `nr` active pages under the held LRU lock (see
    /// `LruLists::shrink_active`) and publishes the hand.
    pub(crate) fn age_active(&self, lists: &mut LruLists, pages: &[Page], nr: usize) -> usize {
        let moved = lists.shrink_active(pages, nr, &self.sketch);
        // Relaxed: a hint for the shadow test; no memory is published with it.
        self.hand.store(lists.hand, Ordering::Relaxed);
        moved
    }

    /// Reclaim reached window page `pfn` at the inactive tail (W-TinyLFU's
    /// admission; see the module's doc). Returns the page to take instead:
    /// `pfn` itself (a candidate that lost, or any page while the window
    /// is at its share and the main part has no victim), or a main victim
    /// moved to the inactive tail; `None` when `pfn` went to the main part
    /// without a contest (the window is far over its share), so the caller
    /// looks at the new inactive tail.
    ///
    /// `remaining` is the pages this round of reclaim still frees, this one
    /// included. Each of them leaves the window (a candidate that loses, or
    /// one that wins and sends a main page out in its place), so the round
    /// ends with the window `remaining` pages smaller; only what it would
    /// still hold over its share then is room the main part has, and moves
    /// there without a contest. A fixed slack (a batch, at most 1/32 of
    /// the pages) left the window that much over its share for good, since
    /// a miss adds a page for each one reclaim takes: a loop 1.2x the cache
    /// missed 0.0033 more than LIRS at every size.
    pub(crate) fn window_tail(
        &self,
        lists: &mut LruLists,
        pages: &[Page],
        counters: &Counters,
        pfn: u32,
        remaining: usize,
    ) -> Option<u32> {
        let p = &pages[pfn as usize];
        if lists.stamps[pfn as usize] == 0 || p.test(RA_FRESH) {
            // A main victim already demoted, or readahead nobody read yet.
            return Some(pfn);
        }
        let target = lists.inactive_target();
        if lists.inactive.len > target.saturating_add(remaining) {
            // The main part has room (the cache filled, or the share
            // shrank): the window's excess moves there without a contest.
            lists.activate(pages, pfn);
            return None;
        }
        let victim = self.clock_victim(lists, pages);
        if victim == NO_PFN {
            return Some(pfn);
        }
        if lists.inactive.len <= target {
            // The window is at its share: the main part gives a page.
            counters.add(thread_slot(), Event::MainEvictions, 1);
            lists.demote_to_tail(pages, victim);
            return Some(victim);
        }
        let v = &pages[victim as usize];
        let candidate = self.sketch.frequency(workingset::hash(p.mapping_id(), p.index()));
        let resident = self.sketch.frequency(workingset::hash(v.mapping_id(), v.index()));
        if candidate > resident + self.margin(pfn, victim) {
            counters.add(thread_slot(), Event::Admissions, 1);
            self.admit(lists, pages, counters, pfn, victim);
            return Some(victim);
        }
        // The frequency test turns the candidate away. Would the recency
        // test admit it, and over which page? It decides when trusted, and
        // is asked for the votes otherwise.
        let trusted = self.recency_trusted(lists);
        let Some(older) = self.recency_admits(lists, pages, pfn, victim) else { return Some(pfn) };
        if !trusted {
            // One judged pair per spared page: the same main page meets
            // many candidates while nothing leaves the main part.
            // Relaxed: a hint.
            if self.fate[older as usize].load(Ordering::Relaxed) == 0 {
                self.decide(lists, pfn, Fate::Rejected);
                self.decide(lists, older, Fate::Spared);
            }
            return Some(pfn);
        }
        counters.add(thread_slot(), Event::RefaultActivations, 1);
        self.admit(lists, pages, counters, pfn, older);
        if lists.in_phase_window() {
            // Not the test's own choice: after a phase change the pages it
            // evicts are the old phase's, which do not come back, so every
            // such pair voted for recency and kept it deciding long after
            // the window closed (redb at 40%: 0.0895 with those votes,
            // 0.0874 without; the 57 runs: 23.3292 against 23.3242).
            return Some(older);
        }
        self.decide(lists, pfn, Fate::Admitted);
        self.decide(lists, older, Fate::Evicted);
        Some(older)
    }

    /// The counts by which window candidate `candidate` must beat main
    /// victim `victim` in the sketch: none when the candidate came back
    /// from its shadow and was last used after the victim (recency agrees,
    /// and the sketch's near tie goes to the page used more recently),
    /// `ADMIT_MARGIN` otherwise. On a loop the victim, kept and hit every
    /// pass, was used after any candidate, and the margin still holds.
    /// Measured on the policy table's 19 rows against `ADMIT_MARGIN`
    /// always (sum of miss ratios, excess over the best published policy,
    /// rows at or under it): 7.7875, 0.0050, 14 against 7.7978, 0.0096,
    /// 13 (Zipf(0.8) at 40%: 0.2471 against 0.2498); no margin for every
    /// candidate with a shadow: 7.7919, 0.0062, 13; none at all: 7.8158,
    /// 0.0194, 12 (the loop at 1% missed 1.0000).
    #[inline]
    fn margin(&self, candidate: u32, victim: u32) -> u32 {
        // Relaxed: written under the LRU lock the caller holds, or hints
        // from hits (see `last_use`).
        let used = |pfn: u32| self.last_use[pfn as usize].load(Ordering::Relaxed);
        let came_back = used(candidate);
        // Compared as the recency test compares (in a shadow's 40 bits).
        if came_back != 0 && workingset::in_test_period(came_back, used(victim)) {
            0
        } else {
            ADMIT_MARGIN
        }
    }

    /// Candidate `pfn` takes main page `out`'s place: it enters the main
    /// part, and `out` goes to the inactive tail for reclaim to take.
    fn admit(&self, lists: &mut LruLists, pages: &[Page], counters: &Counters, pfn: u32, out: u32) {
        self.enter_main(lists, pages, pfn);
        lists.demote_to_tail(pages, out);
        counters.add(thread_slot(), Event::MainEvictions, 1);
    }

    /// The main part's CLOCK victim (`LruLists::main_victim`), with the
    /// hand it moved published.
    fn clock_victim(&self, lists: &mut LruLists, pages: &[Page]) -> u32 {
        let victim = lists.main_victim(pages, &self.sketch);
        // Relaxed: a hint (see `age_active`).
        self.hand.store(lists.hand, Ordering::Relaxed);
        victim
    }

    /// Moves the main part's CLOCK victim to the inactive tail for reclaim
    /// to take (the window is empty); `NO_PFN` when the hand found none in
    /// `CREDITS` + 1 turns. The hand goes on past `VICTIM_SCAN` pages here,
    /// as far as that (each turn clears every flag it passes or takes a
    /// credit, so it finds one unless hits set the flags again):
    /// reclaim must free a page, and one that gave up after 32 referenced
    /// pages of redb's B-tree freed nothing, woke kswapd, and the replay of
    /// one trace through one thread then depended on when kswapd ran. Each
    /// page passed costs a flag and a sketch count, once per turn.
    pub(crate) fn demote_main_victim(&self, lists: &mut LruLists, pages: &[Page], counters: &Counters) -> u32 {
        let mut victim = NO_PFN;
        for _ in 0..=(CREDITS as usize + 1) * lists.active.len / VICTIM_SCAN {
            victim = self.clock_victim(lists, pages);
            if victim != NO_PFN {
                break;
            }
        }
        if victim != NO_PFN {
            counters.add(thread_slot(), Event::MainEvictions, 1);
            lists.demote_to_tail(pages, victim);
        }
        victim
    }

    /// Records a decision page `pfn`'s next use will judge.
    fn decide(&self, lists: &LruLists, pfn: u32, fate: Fate) {
        // Relaxed: a hint.
        self.fate[pfn as usize].store(fate.mark(lists.clock - 1), Ordering::Relaxed);
    }

    /// What an isolated page's shadow keeps: its stamp, or for a page the
    /// admission test decided on, the clock at the decision with the kind
    /// (`workingset::Kind::mark`). Ends the decision's wait.
    pub(crate) fn shadow_stamp(&self, lists: &LruLists, pfn: u32) -> u64 {
        // Relaxed: a hint.
        let (fate, at) = Fate::of(self.fate[pfn as usize].swap(0, Ordering::Relaxed));
        match fate {
            Some(Fate::Rejected) => Kind::FrequencyRejected.mark(at),
            Some(Fate::Evicted) => Kind::RecencyEvicted.mark(at),
            _ => lists.stamps[pfn as usize],
        }
    }

    /// Moves the regret balance by `d`, within +-`REGRET_MAX`.
    fn vote(&self, d: i64) {
        // Relaxed: a hint; a lost race only loses a vote.
        let r = self.regret.load(Ordering::Relaxed);
        self.regret.store((r + d).clamp(-REGRET_MAX, REGRET_MAX), Ordering::Relaxed);
    }

    /// Whether the recency test decides now: the votes say it pays, or a
    /// phase change opened it.
    #[inline]
    fn recency_trusted(&self, lists: &LruLists) -> bool {
        // Relaxed: a hint.
        self.regret.load(Ordering::Relaxed) > 0 || lists.in_phase_window()
    }

    /// LIRS's test: the candidate came back from an eviction (it has a
    /// shadow's stamp) and was last used after the main page used longest
    /// ago among the victim and `RECENCY_SCAN` sampled unreferenced main
    /// pages: that page is returned. The CLOCK order is by when the hand
    /// last passed a page, not by its last use (a page referenced in an old
    /// phase gets a new stamp when the hand first passes it in the new
    /// one), so the tail alone can be a page of the new phase.
    #[cold]
    fn recency_admits(&self, lists: &LruLists, pages: &[Page], candidate: u32, victim: u32) -> Option<u32> {
        // Relaxed: a hint (see `note_refault`).
        let last_use = self.last_use[candidate as usize].load(Ordering::Relaxed);
        if last_use == 0 {
            return None;
        }
        // Relaxed: written under the LRU lock we hold, or a hint from a hit.
        let used = |pfn: u32| self.last_use[pfn as usize].load(Ordering::Relaxed);
        let (mut oldest, mut oldest_use) = (victim, used(victim));
        let frames = pages.len() as u64;
        let mut x = lists.clock.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ u64::from(candidate);
        for _ in 0..RECENCY_SCAN {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let pfn = (x % frames) as u32;
            let p = &pages[pfn as usize];
            if p.test(PageFlags::LRU)
                && p.test(PageFlags::ACTIVE)
                && !p.test(PageFlags::REFERENCED)
                && used(pfn) < oldest_use
            {
                (oldest, oldest_use) = (pfn, used(pfn));
            }
        }
        workingset::in_test_period(last_use, oldest_use).then_some(oldest)
    }

    /// A page came back whose shadow says how the admission test decided
    /// (`kind`, dated `stamp`): within `REGRET_FRAMES` x the frames of
    /// additions, that decision is a regret. A candidate the frequency test
    /// turned away that comes back votes for the recency test; a main page
    /// the recency test evicted that comes back votes against it.
    #[inline]
    pub(crate) fn note_regret(&self, kind: Kind, stamp: u64) {
        if kind == Kind::Plain {
            return;
        }
        // Relaxed: hints.
        let now = self.clock.load(Ordering::Relaxed);
        if !self.judged(workingset::age(stamp, now)) {
            return;
        }
        self.vote(if kind == Kind::FrequencyRejected { VOTE_RECENCY } else { -VOTE_FREQUENCY });
    }

    /// Ends a reclaim round that freed `freed` frames: the climber may
    /// move the window's share (at the end of a sample period) or report a
    /// phase change, which opens the recency test for a while.
    pub(crate) fn on_reclaim(&self, counters: &Counters, freed: usize) {
        let Some(news) = self.climber.on_reclaim(counters, freed) else { return };
        if news.share.is_none() && !news.phase_change {
            return;
        }
        let mut lists = self.lists.lock();
        if let Some(share) = news.share {
            lists.share = share;
        }
        if news.phase_change {
            counters.add(thread_slot(), Event::PhaseChanges, 1);
            self.phase_change(&mut lists);
        }
    }

    /// The climber's detector saw the working set move: the recency test
    /// may admit for the next `PHASE_FRAMES` x the frames of additions,
    /// every credit is spent (`LruLists::phase_change`), and the sketch is
    /// halved out of turn. The old phase's counts, like its credits, kept
    /// its pages in the main part: with the halving, the policy table's
    /// rows at 0.97x, 1x and 1.03x their capacities (57 runs) summed
    /// 23.3292 against 23.3332 (redb at 40%: 0.0910 to 0.0895; the phases
    /// at 10%: 0.4553 to 0.4547, at 40% 0.1474 to 0.1476). Four halvings
    /// (almost a reset) gave 23.3282.
    #[cold]
    fn phase_change(&self, lists: &mut LruLists) {
        lists.phase_change(PHASE_FRAMES * self.frames);
        self.sketch.age();
    }

    /// Records the shadow stamp page `pfn` came back with (`None`: it had
    /// no shadow) for the recency test.
    #[inline]
    pub(crate) fn note_refault(&self, pfn: u32, stamp: Option<u64>) {
        // Relaxed: read under the LRU lock after the page is added, which
        // the batch's lock orders after this store.
        self.last_use[pfn as usize].store(stamp.unwrap_or(0), Ordering::Relaxed);
    }

    /// A window page enters the main part: its last use is when it was
    /// added (read before `activate` restamps it).
    fn enter_main(&self, lists: &mut LruLists, pages: &[Page], pfn: u32) {
        // Relaxed: under the LRU lock; hits only store hints.
        self.last_use[pfn as usize].store(lists.stamps[pfn as usize], Ordering::Relaxed);
        lists.activate(pages, pfn);
    }

    /// A hit set REFERENCED on main page `pfn`: its use is dated now.
    #[inline]
    pub(crate) fn note_use(&self, pfn: u32) {
        // Relaxed: hints for the recency test; a stale clock only dates the
        // use a few additions early.
        let now = self.clock.load(Ordering::Relaxed);
        self.last_use[pfn as usize].store(now, Ordering::Relaxed);
        // Relaxed: a hint.
        if self.fate[pfn as usize].load(Ordering::Relaxed) != 0 {
            self.judge_use(pfn, now);
        }
    }

    /// Whether a use `age` additions after a decision judges it: within
    /// `REGRET_FRAMES` x the frames.
    #[inline]
    fn judged(&self, age: u64) -> bool {
        age <= REGRET_FRAMES * self.frames
    }

    /// A main page a decision waits on was used at `now`: within
    /// `REGRET_FRAMES` x the frames of additions, that is a vote.
    #[cold]
    fn judge_use(&self, pfn: u32, now: u64) {
        // Relaxed: a hint.
        let (fate, at) = Fate::of(self.fate[pfn as usize].swap(0, Ordering::Relaxed));
        if !self.judged(now.saturating_sub(at)) {
            return;
        }
        match fate {
            // Kept though the recency test would have evicted it.
            Some(Fate::Spared) => self.vote(-VOTE_FREQUENCY),
            // Admitted though the frequency test would have turned it away.
            Some(Fate::Admitted) => self.vote(VOTE_RECENCY),
            _ => {}
        }
    }

    /// The aging hand's stamp (see `workingset`).
    #[inline]
    pub(crate) fn hand(&self) -> u64 {
        // Relaxed: a hint (see `age_active`).
        self.hand.load(Ordering::Relaxed)
    }

    /// Queues a page (the caller holds a reference; the batch takes its own)
    /// for the inactive list (`lru_cache_add`).
    pub(crate) fn cache_add(&self, zone: &Zone, page: &Page, slot: usize) {
        page.get_page();
        let pfn = zone.page_to_pfn(page);
        let full = {
            let mut b = self.add[slot % self.add.len()].lock();
            b.push(pfn);
            (b.len() >= PAGEVEC_SIZE).then(|| std::mem::replace(&mut *b, Vec::with_capacity(PAGEVEC_SIZE)))
        };
        if let Some(batch) = full {
            self.add_batch(zone, batch);
        }
    }

    fn add_batch(&self, zone: &Zone, batch: Vec<u32>) {
        {
            let mut lists = self.lists.lock();
            // While the cache fills (free frames above the high watermark),
            // pages asked for start on the active list up to its share, as
            // CLOCK-Pro's first pages start hot; readahead's do not.
            let max_active = zone.nr_frames() - zone.nr_frames() / INACTIVE_RATIO;
            let filling = zone.buddy.nr_free() > zone.watermarks.high;
            for &pfn in &batch {
                let p = &zone.pages[pfn as usize];
                // Test before clearing: most pages never had the bit.
                let written = p.test(FILL_INACTIVE) && p.test_and_clear(FILL_INACTIVE);
                let asked = !p.test(RA_FRESH) && !written;
                if filling && lists.active.len < max_active && asked {
                    p.set(PageFlags::ACTIVE);
                }
                let now = lists.clock;
                lists.stamps[pfn as usize] = now;
                lists.chance[pfn as usize] = 0;
                lists.clock = now + 1;
                if p.test(PageFlags::ACTIVE) {
                    // Relaxed: under the LRU lock.
                    self.last_use[pfn as usize].store(now, Ordering::Relaxed);
                }
                // Relaxed: a new page; no decision waits on it.
                self.fate[pfn as usize].store(0, Ordering::Relaxed);
                lists.add(&zone.pages, pfn);
            }
            let on_lists = lists.active.len + lists.inactive.len;
            if on_lists < zone.nr_frames() / 2 {
                lists.aged = false;
            } else if !lists.aged && filling && on_lists >= zone.nr_frames() * AGE_AT_NUM / AGE_AT_DEN {
                lists.age_while_filling();
                zone.count(Event::FillAgings, 1);
            }
            if lists.aging_left > 0 {
                lists.age_some(&zone.pages, &self.sketch, AGE_PER_ADD * batch.len());
            }
            // Relaxed: a hint for hits (see `note_use`).
            self.clock.store(lists.clock, Ordering::Relaxed);
        }
        // References are dropped outside the lock: a last put takes it again.
        for pfn in batch {
            zone.put_page(&zone.pages[pfn as usize]);
        }
    }

    /// Second touch of an inactive page: queue it for the active list.
    #[cold]
    pub(crate) fn activate_page(&self, zone: &Zone, page: &Page, slot: usize) {
        if !page.get_page_unless_zero() {
            return;
        }
        let pfn = zone.page_to_pfn(page);
        let full = {
            let mut b = self.activate[slot % self.activate.len()].lock();
            b.push(pfn);
            (b.len() >= PAGEVEC_SIZE).then(|| std::mem::replace(&mut *b, Vec::with_capacity(PAGEVEC_SIZE)))
        };
        if let Some(batch) = full {
            self.activate_batch(zone, batch);
        }
    }

    fn activate_batch(&self, zone: &Zone, batch: Vec<u32>) {
        {
            let mut lists = self.lists.lock();
            for &pfn in &batch {
                let p = &zone.pages[pfn as usize];
                // A second touch: one more use for the sketch (a page
                // activated while still in an add batch was counted there).
                if !p.test(PageFlags::ACTIVE) {
                    self.sketch.increment(workingset::hash(p.mapping_id(), p.index()));
                }
                if p.test(PageFlags::LRU) {
                    // Relaxed: under the LRU lock.
                    self.last_use[pfn as usize].store(lists.clock - 1, Ordering::Relaxed);
                    lists.activate(&zone.pages, pfn);
                } else {
                    // Still in an add batch: it will go straight to the active list.
                    p.set(PageFlags::ACTIVE);
                }
            }
        }
        for pfn in batch {
            zone.put_page(&zone.pages[pfn as usize]);
        }
    }

    /// Drains every batch onto the lists (before reclaim scans, and in tests).
    pub(crate) fn drain(&self, zone: &Zone) {
        for i in 0..self.add.len() {
            let batch = std::mem::take(&mut *self.add[i].lock());
            if !batch.is_empty() {
                self.add_batch(zone, batch);
            }
            let batch = std::mem::take(&mut *self.activate[i].lock());
            if !batch.is_empty() {
                self.activate_batch(zone, batch);
            }
        }
    }

    /// Bytes of the sketch and the per-frame policy state (stamps, last
    /// uses and pending decisions).
    pub(crate) fn policy_bytes(&self) -> usize {
        self.sketch.bytes() + self.last_use.len() * 24
    }

    /// (active, inactive) list lengths and the pages the inactive list is
    /// kept at now (the climber's share, or the readahead floor).
    pub(crate) fn sizes_and_target(&self) -> (usize, usize, usize) {
        let l = self.lists.lock();
        (l.active.len, l.inactive.len, l.inactive_target())
    }

    /// Panics unless list membership matches the LRU and ACTIVE flags and
    /// the counts agree. Drain the batches first for an exact check.
    pub(crate) fn check_invariants(&self, pages: &[Page]) {
        self.sketch.check_invariants(pages.len());
        let lists = self.lists.lock();
        // The policy's hints: the balance in its bounds, no use or decision
        // dated in the future, every decision a known one.
        // Relaxed (this load and those below): under the LRU lock; hits
        // only store hints.
        let regret = self.regret.load(Ordering::Relaxed);
        assert!((-REGRET_MAX..=REGRET_MAX).contains(&regret), "regret balance {regret} out of bounds");
        assert!(self.clock.load(Ordering::Relaxed) <= lists.clock, "the clock's copy is ahead");
        for pfn in 0..pages.len() {
            let used = self.last_use[pfn].load(Ordering::Relaxed);
            assert!(used <= lists.clock, "page {pfn} used at {used}, after the clock {}", lists.clock);
            let word = self.fate[pfn].load(Ordering::Relaxed);
            let (fate, at) = Fate::of(word);
            assert!(word == 0 || (fate.is_some() && at < lists.clock), "page {pfn}: bad decision word {word:#x}");
        }
        let mut on_list = vec![false; pages.len()];
        for (list, active) in [(&lists.inactive, false), (&lists.active, true)] {
            let mut n = 0;
            let mut prev = NO_PFN;
            for pfn in list.iter(pages) {
                let p = &pages[pfn as usize];
                assert!(!on_list[pfn as usize], "page {pfn} on the LRU twice");
                on_list[pfn as usize] = true;
                assert!(p.test(PageFlags::LRU), "page {pfn} on a list without LRU");
                assert_eq!(p.test(PageFlags::ACTIVE), active, "page {pfn}: ACTIVE disagrees with its list");
                assert!(!p.test(PageFlags::BUDDY), "free page {pfn} on the LRU");
                // Relaxed: under the LRU lock.
                assert_eq!(p.lru_prev.load(Ordering::Relaxed), prev, "LRU links broken at {pfn}");
                prev = pfn;
                n += 1;
            }
            assert_eq!(list.tail, prev, "LRU tail wrong");
            assert_eq!(n, list.len, "LRU count disagrees");
        }
        // Stamps: the active list is ordered (newest at the head), nothing is
        // stamped in the future, and the hand only passed real stamps.
        let mut newer = u64::MAX;
        for pfn in lists.active.iter(pages) {
            let stamp = lists.stamps[pfn as usize];
            assert!(stamp <= newer, "active list out of stamp order at {pfn}");
            newer = stamp;
        }
        assert!(lists.stamps.iter().all(|&s| s < lists.clock), "a stamp from the future");
        assert!(lists.chance.iter().all(|&c| c <= CREDITS), "a page with more than {CREDITS} credits");
        assert!(lists.hand < lists.clock, "the hand is ahead of the clock");
        assert!(lists.aging_left == 0 || lists.aged, "a turn of aging that was never begun");
        assert!(lists.aging_left <= pages.len(), "a turn of aging longer than the frames");
        for (pfn, p) in pages.iter().enumerate() {
            if p.test(PageFlags::LRU) {
                assert!(on_list[pfn], "page {pfn} has LRU but is on no list");
            }
        }
    }
}

/// The LRU's entry points on the zone: what a lookup hit and an insertion
/// into the page cache call.
impl Zone {
    /// Two-touch promotion (`mark_page_accessed`); takes no lock unless the
    /// page moves to the active list.
    #[inline]
    pub(crate) fn mark_page_accessed(&self, page: &Page) {
        let f = page.flags();
        if f.0 & PageFlags::REFERENCED.0 == 0 {
            page.set(PageFlags::REFERENCED);
            if f.0 & PageFlags::ACTIVE.0 != 0 {
                self.lru.note_use(self.page_to_pfn(page));
            }
        } else if f.0 & PageFlags::ACTIVE.0 == 0 {
            self.lru.activate_page(self, page, thread_slot());
        }
    }

    /// Queues a new page for the LRU (`lru_cache_add`) and counts it in the
    /// frequency sketch (readahead's pages are not counted until read). A
    /// page that comes back while its shadow is remembered
    /// (`workingset_refault`) is counted as a refault, and the shadow's
    /// stamp is kept for the recency test at the window's tail.
    #[inline]
    pub(crate) fn lru_cache_add(&self, page: &Page) {
        if !page.test(RA_FRESH) {
            self.lru.sketch.increment(workingset::hash(page.mapping_id(), page.index()));
        }
        let shadow = self.shadows.take(page.mapping_id(), page.index());
        if let Some((stamp, kind)) = shadow {
            self.count(Event::Refaults, 1);
            self.lru.note_regret(kind, stamp);
        }
        self.lru.note_refault(self.page_to_pfn(page), shadow.map(|(stamp, _)| stamp));
        self.lru.cache_add(self, page, thread_slot());
    }
}

#[cfg(all(test, loom))]
impl Lru {
    /// Marks page `pfn` spared by a decision made now (for the loom model).
    pub(crate) fn spare_for_model(&self, pfn: u32) {
        self.decide(&self.lock(), pfn, Fate::Spared);
    }

    /// The regret balance (for the loom model).
    pub(crate) fn balance_for_model(&self) -> i64 {
        self.regret.load(Ordering::SeqCst)
    }

    /// Whether a decision still waits on page `pfn` (for the loom model).
    pub(crate) fn fate_pending_for_model(&self, pfn: u32) -> bool {
        self.fate[pfn as usize].load(Ordering::SeqCst) != 0
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn a_decision_word_keeps_its_fate_and_clock() {
        for fate in [Fate::Rejected, Fate::Spared, Fate::Admitted, Fate::Evicted] {
            assert_eq!(Fate::of(fate.mark(12_345)), (Some(fate), 12_345));
        }
        assert_eq!(Fate::of(0), (None, 0));
    }

    /// Lists for 4 frames with pages 0..4 on the main part, page 0 at the
    /// CLOCK's tail.
    fn four_main_pages() -> (Lru, Vec<Page>) {
        let lru = Lru::new(1, 4, 0);
        let pages: Vec<Page> = (0..4).map(|_| Page::new()).collect();
        {
            let mut lists = lru.lock();
            for pfn in 0..4 {
                pages[pfn as usize].set(PageFlags::ACTIVE);
                lists.add(&pages, pfn);
            }
        }
        (lru, pages)
    }

    #[test]
    fn the_aging_turn_strips_and_credits_the_referenced_pages_a_few_at_a_time() {
        // Main pages 0..4, page 0 at the tail; pages 1 and 3 referenced.
        let (lru, pages) = four_main_pages();
        let mut lists = lru.lock();
        pages[1].set(PageFlags::REFERENCED);
        pages[3].set(PageFlags::REFERENCED);
        let order: Vec<u32> = lists.active.iter(&pages).collect();
        let hash = |pfn: usize| workingset::hash(pages[pfn].mapping_id(), pages[pfn].index());
        let counted = lru.sketch.frequency(hash(1));
        lists.age_while_filling();
        assert!(lists.aged);
        assert_eq!(lists.aging_left, 4);
        lists.age_some(&pages, &lru.sketch, 3);
        assert_eq!(lists.aging_left, 1);
        assert!(pages[3].test(PageFlags::REFERENCED), "page 3 is the turn's last");
        lists.age_some(&pages, &lru.sketch, 8);
        assert_eq!(lists.aging_left, 0, "a turn passes each page once");
        assert_eq!(lists.active.iter(&pages).collect::<Vec<_>>(), order, "a whole turn keeps the order");
        assert!((0..4).all(|pfn| !pages[pfn].test(PageFlags::REFERENCED)));
        assert_eq!(lists.chance[..4], [0, 1, 0, 1]);
        assert!(lru.sketch.frequency(hash(1)) > counted, "the referenced page was not counted");
        drop(lists);
        lru.check_invariants(&pages);
        // Now the hand tells them apart: page 0, unused, goes first; page
        // 1 spends its credit and stays.
        let mut lists = lru.lock();
        assert_eq!(lists.main_victim(&pages, &lru.sketch), 0);
    }

    #[test]
    fn the_window_keeps_one_page_however_small_its_share() {
        let (lru, pages) = four_main_pages();
        let mut lists = lru.lock();
        lists.share = 0;
        assert_eq!(lists.inactive_target(), 1);
        for pfn in 0..3 {
            lists.del(&pages, pfn);
        }
        assert_eq!(lists.inactive_target(), 0, "one page on the lists needs no window");
    }

    #[test]
    fn a_credit_keeps_a_page_the_hand_found_referenced_past_a_newer_unused_one() {
        // Main pages 0..4, page 0 at the CLOCK's tail; page 0 referenced.
        let (lru, pages) = four_main_pages();
        let mut lists = lru.lock();
        pages[0].set(PageFlags::REFERENCED);
        let victim = |lists: &mut LruLists| {
            let v = lists.main_victim(&pages, &lru.sketch);
            assert_ne!(v, NO_PFN);
            lists.del(&pages, v);
            assert!(lists.chance.iter().all(|&c| c <= CREDITS), "credits: {:?}", lists.chance);
            v
        };
        // The hand gives page 0 a credit and rotates it; the others go.
        assert_eq!([victim(&mut lists), victim(&mut lists), victim(&mut lists)], [1, 2, 3]);
        // Page 0 is alone at the tail, unreferenced since. A new page comes
        // in at the head, unused: plain CLOCK would take page 0 now; its
        // credit keeps it one more turn, and the new page goes.
        lists.chance[1] = 0;
        lists.add(&pages, 1);
        assert_eq!(victim(&mut lists), 1, "credits: {:?}", lists.chance);
        assert_eq!(lists.chance[0], 0, "the credit is spent");
        assert_eq!(victim(&mut lists), 0);
    }

    /// Main pages 1..4 and window pages 0 (at the tail) and 4 (file 1,
    /// index = pfn), the clock at 20: the set-up of a contest at the
    /// window's tail, the window one page over its floor of one page.
    fn two_window_pages() -> (Lru, Counters, Vec<Page>) {
        let lru = Lru::new(1, 5, 0);
        let pages: Vec<Page> = (0..5).map(|_| Page::new()).collect();
        {
            let mut lists = lru.lock();
            for pfn in 1..4 {
                pages[pfn as usize].set_mapping(1, u64::from(pfn));
                pages[pfn as usize].set(PageFlags::ACTIVE);
                lists.add(&pages, pfn);
            }
            for pfn in [0, 4] {
                pages[pfn as usize].set_mapping(1, u64::from(pfn));
                lists.add(&pages, pfn);
            }
            lists.stamps[0] = 1;
            lists.stamps[4] = 2;
            lists.clock = 20;
        }
        // Relaxed: one thread.
        lru.clock.store(20, Ordering::Relaxed);
        (lru, Counters::new(), pages)
    }

    #[test]
    fn a_candidate_used_after_the_victim_needs_no_margin() {
        // Window page 0 meets main page 1 at the CLOCK's tail; the sketch
        // has seen the candidate once more than the victim. `came_back` is
        // the candidate's shadow stamp (0: no shadow), the victim was last
        // used at 5; returns the page reclaim takes.
        let contest = |came_back: u64| {
            let (lru, counters, pages) = two_window_pages();
            let mut lists = lru.lock();
            // Relaxed (here and below): one thread.
            let hash = |pfn: u32| workingset::hash(1, u64::from(pfn));
            lru.sketch.increment(hash(0));
            lru.sketch.increment(hash(0));
            lru.sketch.increment(hash(1));
            lru.last_use[1].store(5, Ordering::Relaxed);
            lru.note_refault(0, (came_back != 0).then_some(came_back));
            // One page still to free: the window is over its share (one
            // page of 5) but not by more than that.
            let out = lru.window_tail(&mut lists, &pages, &counters, 0, 1);
            drop(lists);
            lru.check_invariants(&pages);
            out
        };
        assert_eq!(contest(0), Some(0), "no shadow: the margin holds");
        assert_eq!(contest(3), Some(0), "used before the victim: the margin holds");
        assert_eq!(contest(9), Some(1), "used after the victim: admitted, the victim goes");
    }

    #[test]
    fn a_recency_admission_is_judged_unless_a_phase_change_forced_it() {
        // Window page 0 meets main page 1; the sketch has seen both once,
        // so the frequency test turns the candidate away; it came back
        // from a shadow dated after the victim's last use, so the recency
        // test admits it when trusted. `phase`: trusted by a phase
        // change, otherwise by votes. Returns the two pages' fate words.
        let contest = |phase: bool| {
            let (lru, counters, pages) = two_window_pages();
            let mut lists = lru.lock();
            // Relaxed (here and below): one thread.
            lru.sketch.increment(workingset::hash(1, 0));
            lru.sketch.increment(workingset::hash(1, 1));
            for pfn in 1..4 {
                lru.last_use[pfn].store(5, Ordering::Relaxed);
            }
            lru.note_refault(0, Some(9));
            if phase {
                lru.phase_change(&mut lists);
            } else {
                lru.vote(VOTE_RECENCY);
            }
            assert_eq!(lru.window_tail(&mut lists, &pages, &counters, 0, 1), Some(1), "admitted");
            drop(lists);
            lru.check_invariants(&pages);
            [0, 1].map(|pfn| lru.fate[pfn].load(Ordering::Relaxed))
        };
        let [admitted, evicted] = contest(false);
        assert_eq!(Fate::of(admitted).0, Some(Fate::Admitted));
        assert_eq!(Fate::of(evicted).0, Some(Fate::Evicted));
        assert_eq!(contest(true), [0, 0], "a phase change's admissions are not judged");
    }

    #[test]
    fn a_phase_change_spends_every_credit_halves_the_sketch_and_opens_the_recency_test() {
        let (lru, pages) = four_main_pages();
        let mut lists = lru.lock();
        // Every page holds the most credits, from an old phase's hits.
        lists.chance.fill(CREDITS);
        assert!(!lru.recency_trusted(&lists));
        // A page the old phase counted often.
        let h = workingset::hash(1, 12345);
        for _ in 0..8 {
            lru.sketch.increment(h);
        }
        assert_eq!(lru.sketch.frequency(h), 8);
        lru.phase_change(&mut lists);
        assert!(lists.chance.iter().all(|&c| c == 0), "credits: {:?}", lists.chance);
        assert!(lru.recency_trusted(&lists));
        assert_eq!(lru.sketch.frequency(h), 4, "the sketch is halved");
        // The tail is the victim at once.
        let tail = lists.active.tail;
        assert_eq!(lists.main_victim(&pages, &lru.sketch), tail);
        drop(lists);
        lru.check_invariants(&pages);
    }

    #[test]
    fn the_phase_window_closes_once_the_main_part_has_turned_over() {
        let (lru, pages) = four_main_pages();
        let mut lists = lru.lock();
        lru.phase_change(&mut lists);
        assert!(lists.in_phase_window());
        // Three of the four main pages leave: still open.
        for _ in 0..3 {
            let v = lists.main_victim(&pages, &lru.sketch);
            assert_ne!(v, NO_PFN);
            lists.demote_to_tail(&pages, v);
            assert!(lru.recency_trusted(&lists));
        }
        // The fourth: the main part has turned over, the window closes,
        // and the frequency test decides again (no votes either way).
        let v = lists.main_victim(&pages, &lru.sketch);
        lists.demote_to_tail(&pages, v);
        assert!(!lists.in_phase_window());
        assert!(!lru.recency_trusted(&lists));
        drop(lists);
        lru.check_invariants(&pages);
    }

    #[test]
    fn regrets_turn_the_balance_and_stay_in_bounds() {
        let lru = Lru::new(1, 100, 4);
        let trusted = || lru.recency_trusted(&lru.lock());
        // Relaxed (here and below): one thread.
        lru.clock.store(1_000, Ordering::Relaxed);
        assert!(!trusted(), "frequency decides at first");
        // A plain refault, or one older than two frames' worth of
        // additions, is no vote.
        lru.note_regret(Kind::Plain, 990);
        lru.note_regret(Kind::FrequencyRejected, 700);
        assert_eq!(lru.regret.load(Ordering::Relaxed), 0);
        // Candidates turned away came back: recency is trusted.
        lru.note_regret(Kind::FrequencyRejected, 900);
        assert!(trusted());
        // As many pages recency evicted came back: frequency again, as
        // recency needs half again as many votes.
        lru.note_regret(Kind::RecencyEvicted, 950);
        assert!(!trusted());
        // Three of recency's against two of frequency's is not enough;
        // four against two is.
        lru.regret.store(0, Ordering::Relaxed);
        for _ in 0..3 {
            lru.note_regret(Kind::FrequencyRejected, 999);
        }
        lru.note_regret(Kind::RecencyEvicted, 999);
        lru.note_regret(Kind::RecencyEvicted, 999);
        assert!(!trusted());
        lru.note_regret(Kind::FrequencyRejected, 999);
        assert!(trusted());
        // Bounded: a long run either way turns back within a few votes.
        for _ in 0..10_000 {
            lru.note_regret(Kind::FrequencyRejected, 999);
        }
        assert_eq!(lru.regret.load(Ordering::Relaxed), REGRET_MAX);
        for _ in 0..=(REGRET_MAX / VOTE_FREQUENCY) {
            lru.note_regret(Kind::RecencyEvicted, 999);
        }
        assert!(!trusted());
    }
}
