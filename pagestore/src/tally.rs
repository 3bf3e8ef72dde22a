//! Which tier served one reader's pages: the memory, local, peer or cold tier.
//!
//! The store's own counters add up every reader of the process; a swap-in wants to know where
//! *its* pages came from (the pager splits that by restore phase: the restore's own reads, the
//! faults of the learning window, the background copy). A reader passes a [`TierTally`] to
//! [`crate::PageStore::read_pages_tallied`]; a page that waited for another reader's cold-tier
//! request counts as cold.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::page::PAGE_SIZE;

/// Pages served per tier (zero pages, which no tier holds, are not counted).
#[derive(Debug, Default)]
pub struct TierTally {
    memory: AtomicU64,
    local: AtomicU64,
    peer: AtomicU64,
    cold: AtomicU64,
    /// Cold GETs the reader sent itself (not joined): round trips it waited for in full.
    own_gets: AtomicU64,
}

impl TierTally {
    pub(crate) fn add_memory(&self) {
        self.memory.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn add_local(&self) {
        self.local.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn add_peer(&self) {
        self.peer.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn add_cold(&self, pages: u64) {
        self.cold.fetch_add(pages, Ordering::Relaxed);
    }
    pub(crate) fn add_own_get(&self) {
        self.own_gets.fetch_add(1, Ordering::Relaxed);
    }

    /// Cold GETs the reader sent itself, rather than waiting for another reader's.
    pub fn own_gets(&self) -> u64 {
        self.own_gets.load(Ordering::Relaxed)
    }

    /// Adds what `other` counted (one read's own tally, into its phase's).
    pub fn absorb(&self, other: &TierTally) {
        for (to, from) in [
            (&self.memory, &other.memory),
            (&self.local, &other.local),
            (&self.peer, &other.peer),
            (&self.cold, &other.cold),
            (&self.own_gets, &other.own_gets),
        ] {
            to.fetch_add(from.load(Ordering::Relaxed), Ordering::Relaxed);
        }
    }

    pub fn counts(&self) -> TierCounts {
        let page = PAGE_SIZE as u64;
        let (memory, local, cold) = (
            self.memory.load(Ordering::Relaxed),
            self.local.load(Ordering::Relaxed),
            self.cold.load(Ordering::Relaxed),
        );
        TierCounts {
            memory_bytes: memory * page,
            local_bytes: local * page,
            peer_bytes: self.peer.load(Ordering::Relaxed) * page,
            cold_bytes: cold * page,
        }
    }
}

/// A [`TierTally`] read out: bytes (whole pages, decoded) served by each tier.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TierCounts {
    pub memory_bytes: u64,
    pub local_bytes: u64,
    /// From another worker's local tier (a move's source).
    #[serde(default)]
    pub peer_bytes: u64,
    pub cold_bytes: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tally_absorbs_another() {
        let (phase, read) = (TierTally::default(), TierTally::default());
        phase.add_memory();
        read.add_local();
        read.add_cold(2);
        read.add_own_get();
        phase.absorb(&read);
        assert_eq!(phase.own_gets(), 1);
        assert_eq!(
            phase.counts(),
            TierCounts {
                memory_bytes: 4096,
                local_bytes: 4096,
                peer_bytes: 0,
                cold_bytes: 8192,
            }
        );
    }

    #[test]
    fn counts_are_whole_pages_per_tier() {
        let t = TierTally::default();
        t.add_memory();
        t.add_local();
        t.add_local();
        t.add_peer();
        t.add_cold(3);
        assert_eq!(
            t.counts(),
            TierCounts {
                memory_bytes: 4096,
                local_bytes: 8192,
                peer_bytes: 4096,
                cold_bytes: 3 * 4096
            }
        );
    }
}
