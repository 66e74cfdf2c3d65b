//! The inactive list's share, set by a hill climber (Caffeine's adaptive
//! window; `docs/design.md`, "An adaptive inactive share"): every sample
//! period (`SAMPLE_FACTOR` times the cache's frames in accesses) it compares
//! the period's hit ratio with the one before and moves the share one step:
//! on in the same direction if the ratio did not drop, back the other way
//! if it did. The step starts at `STEP` (6.25% of the pages, towards a
//! smaller share), shrinks by 2% a period, and restarts at full size when
//! the ratio swings by 5% or more. The share stays between 1/32 and 1/8 of
//! the pages on the lists (1/8 was the fixed share before): a smaller
//! inactive list keeps more of a loop or of a Zipf head active, and a phase
//! change (the hit ratio drops) sends it back up.
//!
//! It runs only on reclaim's slow path, at the end of a reclaim round, and
//! reads the hit and miss counts the cache keeps anyway (`Counters`, one
//! shard per thread, summed every 1/8 of the frames reclaimed): a hit
//! writes nothing new.

use parking_lot::Mutex;

use crate::stats::{Counters, Event};

/// The share is kept in units of 1/`SHARE_ONE` of the pages on the lists.
pub(crate) const SHARE_ONE: u32 = 1024;
/// The smallest share: 1/32 of the pages.
const SHARE_MIN: u32 = SHARE_ONE / 32;
/// The largest share, and the first: 1/8 of the pages (the fixed share
/// this replaced). Up to 1/4 or 1/2, the climber's wanderings cost the
/// loop and phase traces more than they won (`docs/design.md`).
pub(crate) const SHARE_MAX: u32 = SHARE_ONE / 8;
/// The first share.
pub(crate) const SHARE_START: u32 = SHARE_MAX;
/// A full step: 6.25% of the pages (Caffeine's `HILL_CLIMBER_STEP_PERCENT`).
const STEP: f64 = SHARE_ONE as f64 / 16.0;
/// How much a step shrinks every period (Caffeine's decay rate).
const STEP_DECAY: f64 = 0.98;
/// A swing of the hit ratio at which the step restarts at full size.
const RESTART: f64 = 0.05;
/// Accesses in a sample period, per frame (Caffeine: 10x the capacity).
const SAMPLE_FACTOR: u64 = 10;

/// The climber's state; see the module's doc.
pub(crate) struct Climber {
    inner: Mutex<State>,
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
}

impl Climber {
    /// A climber for a cache of `frames` frames.
    pub(crate) fn new(frames: usize) -> Climber {
        let frames = frames.max(1) as u64;
        Climber {
            inner: Mutex::new(State {
                sample: SAMPLE_FACTOR * frames,
                tally: 0,
                check_every: (frames / 8).clamp(1, 1024),
                start: None,
                prev: f64::NAN,
                // Caffeine starts by shrinking its window.
                step: -STEP,
                share: f64::from(SHARE_START),
            }),
        }
    }

    /// Notes a reclaim round that freed `freed` frames; at the end of a
    /// sample period returns the new share, in 1/`SHARE_ONE`s. Skips (and
    /// returns `None`) when another reclaimer is in the climber.
    pub(crate) fn on_reclaim(&self, counters: &Counters, freed: usize) -> Option<u32> {
        let mut s = self.inner.try_lock()?;
        s.tally += freed as u64;
        if s.tally < s.check_every && s.start.is_some() {
            return None;
        }
        s.tally = 0;
        let hits = counters.get(Event::Hit) + counters.get(Event::OptimisticHits);
        let misses = counters.get(Event::Miss);
        let Some((h0, m0)) = s.start else {
            s.start = Some((hits, misses));
            return None;
        };
        let (h, m) = (hits.saturating_sub(h0), misses.saturating_sub(m0));
        if h + m < s.sample {
            return None;
        }
        s.start = Some((hits, misses));
        let ratio = h as f64 / (h + m) as f64;
        if s.prev.is_nan() {
            // The first period: nothing to compare with yet.
            s.prev = ratio;
            return None;
        }
        let change = ratio - s.prev;
        let amount = if change >= 0.0 { s.step } else { -s.step };
        s.step = if change.abs() >= RESTART { STEP.copysign(amount) } else { STEP_DECAY * amount };
        s.prev = ratio;
        s.share = (s.share + amount).clamp(f64::from(SHARE_MIN), f64::from(SHARE_MAX));
        Some(s.share.round() as u32)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn the_share_moves_each_period_and_stays_in_bounds() {
        let c = Counters::new();
        let climber = Climber::new(100);
        let period = |hits: u64, misses: u64| {
            // 1000 accesses: a period of a 100-frame cache.
            c.add(0, Event::Hit, hits);
            c.add(0, Event::Miss, misses);
            climber.on_reclaim(&c, 32)
        };
        assert_eq!(climber.on_reclaim(&c, 32), None, "the first round starts the first period");
        assert_eq!(period(900, 100), None, "the first period has nothing to compare with");
        // At a steady hit ratio the climber keeps going the way it started
        // (down), a step at a time, to the floor.
        let mut last = SHARE_START;
        for _ in 0..40 {
            let share = period(900, 100).expect("a period ended");
            assert!(share <= last && share >= SHARE_MIN, "{share} after {last}");
            last = share;
        }
        assert_eq!(last, SHARE_MIN);
        // Too few accesses: no period ends.
        assert_eq!(period(10, 0), None);
        // A drop in the hit ratio turns it around, up to the ceiling.
        let share = period(0, 1000).expect("a period ended");
        assert!(share > SHARE_MIN, "{share}");
        for _ in 0..40 {
            assert!(period(900, 100).expect("a period ended") <= SHARE_MAX);
        }
    }
}
