//! Sequential waits of readers on the cold tier, counted as waves like the reads themselves
//! ([`super::ReadWaves`]).
//!
//! The waves of cold reads say how many round trips the store made one after another, but not
//! how many a restored tenant waited for: while a fill keeps reads in flight they all merge into
//! one wave, though the tenant's faults may each have waited a round trip of their own, one
//! after another (the large heap without a set: five to nine cold faults in a row, counted as
//! two waves). So the readers that something waits for (a restore's own reads and a tenant's
//! faults, `pager::imagefs`) are counted too: a wave of waits begins when the number of such
//! reads under way goes from none to one, and counts once one of the reads in it sent a cold GET
//! of its own, a whole round trip. Reads served from the local disk, and reads that joined
//! another's GET (the restore reading the locality pack as it is decoded, a fault whose page the
//! fill is bringing), waited for less: counting each of those as a round trip gave the counter's
//! 120 ms wake-up nine.
//!
//! One atomic per read, no lock.

use std::sync::atomic::{AtomicU64, Ordering};

/// Waiting readers under way now (low 32 bits) and the periods of waiting so far (high 32);
/// the waves of waits that went to the cold tier.
#[derive(Debug, Default)]
pub struct ColdWaits {
    state: AtomicU64,
    /// The last period counted as a wave.
    counted: AtomicU64,
    waves: AtomicU64,
}

const READERS: u64 = u32::MAX as u64;

impl ColdWaits {
    /// A reader starts waiting; it counts as waiting until the returned guard is dropped.
    pub fn start(&self) -> Waiting<'_> {
        let mut now = self.state.load(Ordering::Acquire);
        loop {
            // The first reader of a period starts the next one.
            let next = match now & READERS {
                0 => ((now >> 32) + 1) << 32 | 1,
                _ => now + 1,
            };
            match self
                .state
                .compare_exchange_weak(now, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => {
                    return Waiting {
                        waits: self,
                        period: next >> 32,
                    }
                }
                Err(actual) => now = actual,
            }
        }
    }

    /// Periods of waiting in which a reader sent a cold GET of its own.
    pub fn waves(&self) -> u64 {
        self.waves.load(Ordering::Relaxed)
    }
}

/// One reader waiting (see [`ColdWaits::start`]).
#[must_use = "the reader counts as waiting only while this guard lives"]
pub struct Waiting<'a> {
    waits: &'a ColdWaits,
    period: u64,
}

impl Waiting<'_> {
    /// The reader sent a cold GET of its own: its period of waiting is a wave, counted once
    /// however many of its readers did.
    pub fn sent_own_get(&self) {
        if self.waits.counted.fetch_max(self.period, Ordering::AcqRel) < self.period {
            self.waits.waves.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.waits.state.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_period_of_waiting_is_a_wave_once_one_of_its_readers_sent_a_get() {
        let w = ColdWaits::default();
        // Two readers waiting together, both cold: one wave.
        let (a, b) = (w.start(), w.start());
        a.sent_own_get();
        b.sent_own_get();
        drop(a);
        // A third that starts while the second still waits belongs to the same period.
        let c = w.start();
        c.sent_own_get();
        drop((b, c));
        assert_eq!(w.waves(), 1);
        // A period whose readers sent none (the local disk, another's GET): none.
        drop(w.start());
        assert_eq!(w.waves(), 1);
        // Two cold readers one after another: two more.
        for _ in 0..2 {
            let r = w.start();
            r.sent_own_get();
        }
        assert_eq!(w.waves(), 3);
    }
}
