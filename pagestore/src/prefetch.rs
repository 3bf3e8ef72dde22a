//! Prefetch: bring pages a restore is about to need into the fastest tier before it asks.
//!
//! Pages already in the local tier are not fetched again; the rest are read concurrently from
//! the cold tier (and so cached locally by the read path).

use std::sync::atomic::Ordering;

use futures::stream::{self, StreamExt};
use serde::Serialize;

use crate::error::Result;
use crate::page::PageId;
use crate::store::PageStore;

/// How many cold reads a prefetch keeps in flight.
const PREFETCH_CONCURRENCY: usize = 64;

#[derive(Clone, Debug, Default, Serialize)]
pub struct PrefetchReport {
    pub requested: u64,
    pub already_local: u64,
    pub fetched: u64,
    pub cold_bytes: u64,
}

impl PageStore {
    pub async fn prefetch(&self, ids: &[PageId]) -> Result<PrefetchReport> {
        let mut report = PrefetchReport {
            requested: ids.len() as u64,
            ..Default::default()
        };
        let missing: Vec<PageId> = match self.local() {
            Some(local) => ids
                .iter()
                .filter(|id| !id.is_zero() && !matches!(local.get(id), Ok(Some(_))))
                .copied()
                .collect(),
            None => ids.iter().filter(|id| !id.is_zero()).copied().collect(),
        };
        report.already_local = report.requested - missing.len() as u64;
        let before = self.cold.counters.get_bytes.load(Ordering::Relaxed);
        let reads: Vec<_> = missing.iter().map(|id| self.read_page(id)).collect();
        let mut results = stream::iter(reads).buffer_unordered(PREFETCH_CONCURRENCY);
        while let Some(r) = results.next().await {
            r?;
            report.fetched += 1;
        }
        report.cold_bytes = self.cold.counters.get_bytes.load(Ordering::Relaxed) - before;
        Ok(report)
    }
}
