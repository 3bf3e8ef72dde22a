//! Prefetch: bring the pages a restore is about to read into the memory tier before it asks.
//!
//! One call hands the whole list to the coalescing read path, so pages of one pack become a few
//! large ranged GETs (shared with any reader that asks meanwhile) instead of one small request
//! per read the restore would have made. Pages already in memory cost nothing; pages in the local
//! tier are promoted without touching the cold tier.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::page::PageId;
use crate::store::PageStore;

/// Pages handed to one `read_pages` call (bounds the memory a prefetch holds at once).
const PREFETCH_BATCH: usize = 4096;

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct PrefetchReport {
    /// Distinct non-zero pages asked for.
    pub requested: u64,
    /// Already in the memory tier.
    pub already_hot: u64,
    /// Read from the cold tier.
    pub cold_pages: u64,
    pub cold_gets: u64,
    pub cold_bytes: u64,
    pub ms: u64,
}

impl PageStore {
    pub async fn prefetch(&self, ids: &[PageId]) -> Result<PrefetchReport> {
        let started = Instant::now();
        let mut seen = HashSet::new();
        let wanted: Vec<PageId> = ids
            .iter()
            .filter(|id| !id.is_zero() && seen.insert(**id))
            .copied()
            .collect();
        let missing: Vec<PageId> = wanted
            .iter()
            .filter(|id| !self.hot().contains(id))
            .copied()
            .collect();
        let (pages0, gets0, bytes0) = self.cold_traffic();
        for batch in missing.chunks(PREFETCH_BATCH) {
            self.read_pages(batch).await?;
        }
        let (pages1, gets1, bytes1) = self.cold_traffic();
        Ok(PrefetchReport {
            requested: wanted.len() as u64,
            already_hot: (wanted.len() - missing.len()) as u64,
            cold_pages: pages1 - pages0,
            cold_gets: gets1 - gets0,
            cold_bytes: bytes1 - bytes0,
            ms: started.elapsed().as_millis() as u64,
        })
    }

    fn cold_traffic(&self) -> (u64, u64, u64) {
        (
            self.counters.cold_pages.load(Ordering::Relaxed),
            self.cold.counters.gets.load(Ordering::Relaxed),
            self.cold.counters.get_bytes.load(Ordering::Relaxed),
        )
    }
}
