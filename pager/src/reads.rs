//! Which tier served a mount's page reads, split by the phase of the lazy restore they belong to.
//!
//! A swap-in's reads come in three phases: `criu restore` reading the pages it installs before
//! the tenant runs, the tenant's page faults during the learning window, and the lazy-pages
//! daemon's background copy after it. Each phase can be served from memory, the local disk or
//! the cold tier; an operator asking why a restore was slow, or what it cost, needs that split.
//! The worker moves the phase on; the FUSE thread reads it as each read arrives.

use std::sync::atomic::{AtomicU8, Ordering};

use pagestore::tally::{TierCounts, TierTally};
use serde::{Deserialize, Serialize};

/// The phase of a lazy restore.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum RestorePhase {
    /// `criu restore` runs (its own reads of the non-lazy pages).
    Restore = 0,
    /// The tenant runs and only its page faults are served.
    Faults = 1,
    /// The lazy-pages daemon copies in the rest (faults may still mix in).
    Background = 2,
}

/// Per-phase tier tallies of one mount.
#[derive(Debug, Default)]
pub struct MountReads {
    phase: AtomicU8,
    by_phase: [TierTally; 3],
}

impl MountReads {
    pub fn set_phase(&self, phase: RestorePhase) {
        self.phase.store(phase as u8, Ordering::SeqCst);
    }

    /// The phase a read arriving now belongs to.
    pub fn phase(&self) -> RestorePhase {
        match self.phase.load(Ordering::SeqCst) {
            0 => RestorePhase::Restore,
            1 => RestorePhase::Faults,
            _ => RestorePhase::Background,
        }
    }

    pub fn tally(&self, phase: RestorePhase) -> &TierTally {
        &self.by_phase[phase as usize]
    }

    pub fn report(&self) -> MountReadReport {
        MountReadReport {
            restore: self.by_phase[0].counts(),
            faults: self.by_phase[1].counts(),
            background: self.by_phase[2].counts(),
        }
    }
}

/// Bytes each tier served to one swap-in's mount, per phase.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountReadReport {
    pub restore: TierCounts,
    pub faults: TierCounts,
    pub background: TierCounts,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_count_in_the_phase_they_arrive_in() {
        let r = MountReads::default();
        assert_eq!(r.phase(), RestorePhase::Restore);
        r.set_phase(RestorePhase::Faults);
        assert_eq!(r.phase(), RestorePhase::Faults);
        r.set_phase(RestorePhase::Background);
        assert_eq!(r.phase(), RestorePhase::Background);
        assert!(std::ptr::eq(r.tally(RestorePhase::Faults), &r.by_phase[1]));
        assert_eq!(r.report(), MountReadReport::default());
    }
}
