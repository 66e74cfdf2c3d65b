//! The window's share, set by a hill climber (Caffeine's adaptive window;
//! `docs/design.md`, "The policy"), and the phase-change detector.
//!
//! Every sample period (`SAMPLE_FACTOR` times the cache's frames in
//! accesses, `SAMPLE_MIN` at least) the climber compares the period's hit
//! ratio with the one before and moves the share one step: on in the same
//! direction if the ratio did not drop, back the other way if it did. The
//! step starts at `STEP` (about a quarter of the range), shrinks by 2% a
//! period, and restarts at full size when the ratio swings by 5% or more. The share starts at
//! 1% of the pages on the lists (W-TinyLFU's window) and stays between
//! 0.2% and 3.1%: ranges up to 1/8 cost the Zipf, loop and redb traces
//! more than they won (`docs/design.md`).
//!
//! The detector compares the hit ratio over each short stretch (at least
//! `PHASE_STRETCH` accesses, looked at every 1/8 of the frames reclaimed)
//! with its running average; a stretch below `PHASE_DROP` of the average,
//! whose misses are at least `PHASE_REFAULTS` refaults, is a phase change
//! (the working set moved and is being used again, so the main part's
//! frequencies are stale; `lru`). A one-pass scan lowers the ratio too,
//! but with pages never seen: no refaults.
//!
//! It runs only on reclaim's slow path, at the end of a reclaim round, and
//! reads the hit and miss counts the cache keeps anyway (`Counters`, one
//! shard per thread, summed every 1/8 of the frames reclaimed): a hit
//! writes nothing new.

use parking_lot::Mutex;

use crate::stats::{Counters, Event};

/// The share is kept in units of 1/`SHARE_ONE` of the pages on the lists.
pub(crate) const SHARE_ONE: u32 = 1024;
/// The smallest share: 0.2% of the pages. Loops want the smallest window
/// (each window page is one a pass misses), and the climber takes them
/// there. From 0.5% to 0.2%, the loop at 40% and 83% of its pages missed
/// 0.6122 and 0.1913 before, 0.6113 and 0.1900 after (LIRS: 0.6119 and
/// 0.1916), and most rows of the policy table moved a little down (the
/// sum of the 19: 7.7864 to 7.7815). 0.1%, 0.15% and 0.3% gave 7.7848,
/// 7.7834 and 7.7836.
const SHARE_MIN: u32 = 2;
/// The largest share: 3.1% of the pages.
pub(crate) const SHARE_MAX: u32 = SHARE_ONE / 32;
/// The first share: 1% of the pages (W-TinyLFU's window).
pub(crate) const SHARE_START: u32 = 10;
/// A full step: 6.75/1024 of the pages, a quarter of the range 0.5% to
/// 3.1% the share had before its floor went down to 0.2%. A quarter of
/// the new range (7.5/1024) moved the climber's path on the policy
/// table's rows: their sum 7.7829 against 7.7815.
const STEP: f64 = 6.75;
/// A stretch whose hit ratio falls below this fraction of the running
/// average is a phase change.
const PHASE_DROP: f64 = 0.7;
/// The share of a phase change's misses that must be refaults: the new
/// working set is being used again. A one-pass scan's misses are pages
/// never seen (zipf99_scan's scans: at most 5% refaults), and its false
/// alarms let the recency test evict frequent pages; a loop's second pass
/// is 80% refaults.
const PHASE_REFAULTS: f64 = 0.25;
/// Accesses a stretch takes at least. Shorter stretches (12 misses and
/// their hits in a 100-frame cache) are noise, and their false alarms cost
/// the 1% rows of the policy table up to 2 points (redb's reads 0.533
/// instead of 0.513).
const PHASE_STRETCH: u64 = 2048;
/// The running average's weight for each new stretch.
const PHASE_EWMA: f64 = 1.0 / 16.0;
/// How much a step shrinks every period (Caffeine's decay rate).
const STEP_DECAY: f64 = 0.98;
/// A swing of the hit ratio at which the step restarts at full size.
const RESTART: f64 = 0.05;
/// Accesses in a sample period, per frame (Caffeine: 10x the capacity).
const SAMPLE_FACTOR: u64 = 10;
/// The fewest accesses in a sample period. A 100-frame cache's period
/// was 1,000 accesses: on a loop 100 times its size that is a tenth of a
/// pass, about 10 hits, and the hits of a pass come in one run, so the
/// ratio swung by more than `RESTART` from period to period and the
/// climber walked the share at random, each step up evicting a page that
/// the loop would have hit (loop at 1%: 0.9906, 0.9904 with this; LIRS
/// 0.9903). Over the policy table's rows at 0.97x, 1x and 1.03x their
/// capacities (57 runs) the sum of miss ratios went from 23.3365 to
/// 23.3332 (8,192: 23.3353; 10,000: 23.3329, but Zipf(0.8) and the phases
/// missed more; 20,000: 23.3408).
const SAMPLE_MIN: u64 = 4096;

/// The climber's state; see the module's doc.
pub(crate) struct Climber {
    inner: Mutex<State>,
}

/// What a reclaim round's look at the counters found.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct News {
    /// The new share, in 1/`SHARE_ONE`s (a sample period ended).
    pub(crate) share: Option<u32>,
    /// The hit ratio fell: a phase change.
    pub(crate) phase_change: bool,
}

struct State {
    /// Accesses in a period.
    sample: u64,
    /// Frames reclaimed since the counters were last read: the counters
    /// (a sum over every thread's shard) are read only every
    /// `check_every` frames reclaimed.
    tally: u64,
    check_every: u64,
    /// Hits and misses when the period started (`None` before the first
    /// reclaim round: the cache was filling).
    start: Option<(u64, u64)>,
    /// The previous period's hit ratio (NaN before the first period ended).
    prev: f64,
    /// The next move, signed, in share units.
    step: f64,
    /// The share, in 1/`SHARE_ONE`s, kept fractional between moves.
    share: f64,
    /// Hits and misses at the last look (the detector's stretch starts).
    last: (u64, u64),
    last_refaults: u64,
    /// The running average of the stretches' hit ratios (NaN before the
    /// first).
    average: f64,
}

impl Climber {
    /// A climber for a cache of `frames` frames.
    pub(crate) fn new(frames: usize) -> Climber {
        let frames = frames.max(1) as u64;
        Climber {
            inner: Mutex::new(State {
                sample: (SAMPLE_FACTOR * frames).max(SAMPLE_MIN),
                tally: 0,
                check_every: (frames / 8).clamp(1, 1024),
                start: None,
                prev: f64::NAN,
                // Caffeine starts by shrinking its window.
                step: -STEP,
                share: f64::from(SHARE_START),
                last: (0, 0),
                last_refaults: 0,
                average: f64::NAN,
            }),
        }
    }

    /// Notes a reclaim round that freed `freed` frames; every 1/8 of the
    /// frames reclaimed looks at the counters and returns what it found
    /// (`None` when it did not look). Skips when another reclaimer is in
    /// the climber.
    pub(crate) fn on_reclaim(&self, counters: &Counters, freed: usize) -> Option<News> {
        let mut s = self.inner.try_lock()?;
        s.tally += freed as u64;
        if s.tally < s.check_every && s.start.is_some() {
            return None;
        }
        s.tally = 0;
        let hits = counters.get(Event::Hit) + counters.get(Event::OptimisticHits);
        let misses = counters.get(Event::Miss);
        let refaults = counters.get(Event::Refaults);
        let mut news = News { share: None, phase_change: s.stretch(hits, misses, refaults) };
        let Some((h0, m0)) = s.start else {
            s.start = Some((hits, misses));
            return Some(news);
        };
        let (h, m) = (hits.saturating_sub(h0), misses.saturating_sub(m0));
        if h + m < s.sample {
            return Some(news);
        }
        s.start = Some((hits, misses));
        let ratio = h as f64 / (h + m) as f64;
        if s.prev.is_nan() {
            // The first period: nothing to compare with yet.
            s.prev = ratio;
            return Some(news);
        }
        let change = ratio - s.prev;
        let amount = if change >= 0.0 { s.step } else { -s.step };
        s.step = if change.abs() >= RESTART { STEP.copysign(amount) } else { STEP_DECAY * amount };
        s.prev = ratio;
        s.share = (s.share + amount).clamp(f64::from(SHARE_MIN), f64::from(SHARE_MAX));
        news.share = Some(s.share.round() as u32);
        Some(news)
    }
}

impl State {
    /// Ends the detector's stretch at these counts: whether its hit ratio
    /// fell below `PHASE_DROP` of the running average while at least
    /// `PHASE_REFAULTS` of its misses were refaults.
    fn stretch(&mut self, hits: u64, misses: u64, refaults: u64) -> bool {
        let (h, m) = (hits.saturating_sub(self.last.0), misses.saturating_sub(self.last.1));
        if h + m < PHASE_STRETCH {
            return false;
        }
        let rf = refaults.saturating_sub(self.last_refaults);
        self.last_refaults = refaults;
        self.last = (hits, misses);
        let ratio = h as f64 / (h + m) as f64;
        if self.average.is_nan() {
            self.average = ratio;
            return false;
        }
        let fell = ratio < PHASE_DROP * self.average && rf as f64 >= PHASE_REFAULTS * m as f64;
        self.average += (ratio - self.average) * PHASE_EWMA;
        fell
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    /// Counts `hits` hits and `misses` misses, as lookups do.
    fn accesses(c: &Counters, hits: u64, misses: u64) {
        c.add(0, Event::Hit, hits);
        c.add(0, Event::Miss, misses);
    }

    #[test]
    fn the_share_moves_each_period_and_stays_in_bounds() {
        let c = Counters::new();
        let climber = Climber::new(1000);
        let share = |news: Option<News>| news.and_then(|n| n.share);
        let period = |hits: u64, misses: u64| {
            // 10,000 accesses: a period of a 1000-frame cache.
            accesses(&c, hits, misses);
            climber.on_reclaim(&c, 125)
        };
        assert_eq!(share(climber.on_reclaim(&c, 125)), None, "the first round starts the first period");
        assert_eq!(share(period(9000, 1000)), None, "the first period has nothing to compare with");
        // At a steady hit ratio the climber keeps going the way it started
        // (down), a step at a time, to the floor.
        let mut last = SHARE_START;
        for _ in 0..40 {
            let now = share(period(9000, 1000)).expect("a period ended");
            assert!(now <= last && now >= SHARE_MIN, "{now} after {last}");
            last = now;
        }
        assert_eq!(last, SHARE_MIN);
        // Too few accesses: no period ends.
        assert_eq!(share(period(10, 0)), None);
        assert_eq!(share(period(9, 1)), None);
        // A drop in the hit ratio turns it around, up to the ceiling.
        let now = share(period(0, 10_000)).expect("a period ended");
        assert!(now > SHARE_MIN, "{now}");
        for _ in 0..40 {
            assert!(share(period(9000, 1000)).expect("a period ended") <= SHARE_MAX);
        }
    }

    #[test]
    fn a_small_cache_s_period_is_sample_min_accesses() {
        let c = Counters::new();
        // 100 frames: 10x the frames would be 1,000 accesses.
        let climber = Climber::new(100);
        let look = |hits: u64, misses: u64| {
            accesses(&c, hits, misses);
            climber.on_reclaim(&c, 12).and_then(|n| n.share)
        };
        assert_eq!(look(0, 0), None, "the first round starts the first period");
        assert_eq!(look(3600, 900), None, "the first period has nothing to compare with");
        for _ in 0..4 {
            assert_eq!(look(900, 100), None, "up to 4,000 accesses end no period");
        }
        assert!(look(900, 100).is_some(), "5,000 accesses end it");
    }

    #[test]
    fn a_fall_in_the_hit_ratio_is_a_phase_change_and_a_steady_one_is_not() {
        let c = Counters::new();
        // 800 frames: the counters are read every 100 frames reclaimed.
        let climber = Climber::new(800);
        let stretch = |hits: u64, misses: u64| {
            accesses(&c, hits, misses);
            // A third of the misses are pages that came back.
            c.add(0, Event::Refaults, misses / 3);
            climber.on_reclaim(&c, 100).expect("a look at the counters").phase_change
        };
        let scan = |hits: u64, misses: u64| {
            accesses(&c, hits, misses);
            climber.on_reclaim(&c, 100).expect("a look at the counters").phase_change
        };
        // Steady and low (a loop larger than the cache): never a change.
        for _ in 0..50 {
            assert!(!stretch(300, 2700));
        }
        // Up to a steady high ratio, slowly: no change either.
        for _ in 0..100 {
            assert!(!stretch(2700, 300));
        }
        // Fewer accesses than a stretch takes: no verdict yet, however
        // low the ratio; they count in the next stretch.
        assert!(!stretch(0, 100));
        // A one-pass scan: the ratio falls, but no miss is a refault.
        assert!(!scan(600, 2400));
        assert!(!scan(600, 2400));
        // The working set moves: the ratio falls below 70% of its average
        // and the new pages come back.
        assert!(stretch(600, 2400));
        // A look between stretches' ends (another reclaimer's round) sees
        // nothing.
        assert_eq!(climber.on_reclaim(&c, 1), None);
    }
}
