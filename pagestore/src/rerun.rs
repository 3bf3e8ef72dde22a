//! A job that runs at most once at a time, and once more when it was asked for while it ran: a
//! store's background recompression (every swap-out asks; one run catches up with all of them).

use std::sync::atomic::{AtomicBool, Ordering};

/// Whether the job runs, and whether it was asked for since its run began.
#[derive(Default)]
pub(crate) struct Rerun {
    running: AtomicBool,
    again: AtomicBool,
}

impl Rerun {
    /// Asks for a run: true when the caller is to start it (none was running); otherwise the
    /// running one runs once more.
    pub(crate) fn ask(&self) -> bool {
        self.again.store(true, Ordering::SeqCst);
        !self.running.swap(true, Ordering::SeqCst)
    }

    /// At the start of each run: what it does answers every ask made before.
    pub(crate) fn starting(&self) {
        self.again.store(false, Ordering::SeqCst);
    }

    /// Whether a run is under way.
    pub(crate) fn running(&self) -> bool {
        self.running.load(Ordering::SeqCst)
    }

    /// A run ended: true when another is to follow (asked for meanwhile, and not started by the
    /// asker in between).
    pub(crate) fn ended(&self) -> bool {
        self.running.store(false, Ordering::SeqCst);
        self.again.load(Ordering::SeqCst) && !self.running.swap(true, Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_run_at_a_time_and_one_more_for_asks_made_meanwhile() {
        let r = Rerun::default();
        assert!(!r.running());
        assert!(r.ask(), "the first ask starts it");
        assert!(r.running());
        r.starting();
        assert!(!r.ask(), "a second while it runs does not");
        assert!(!r.ask());
        assert!(r.ended(), "but it runs once more");
        r.starting();
        assert!(!r.ended(), "and then stops: nothing asked since");
        assert!(!r.running());
        assert!(r.ask(), "the next ask starts it again");
    }
}
