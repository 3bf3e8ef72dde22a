//! Prefetch: bring the pages a restore is about to read into the memory tier before it asks.
//!
//! One call hands the whole list to the coalescing read path, so pages of one pack become a few
//! large ranged GETs (shared with any reader that asks meanwhile) instead of one small request
//! per read the restore would have made. Pages already in memory cost nothing; pages in the local
//! tier are promoted without touching the cold tier. When the pages were also written together in
//! a locality pack ([`crate::locality`]), that copy is fetched first in one or a few GETs, and
//! what it lacks is read the ordinary way.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::time::Instant;

use futures::stream::{FuturesUnordered, StreamExt};
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::page::PageId;
use crate::read::{ColdPace, ReadPriority};
use crate::store::PageStore;

/// Pages handed to one `read_pages` call (with [`BATCHES_IN_FLIGHT`], bounds the memory a
/// prefetch holds at once: 128 MiB of decoded pages).
const PREFETCH_BATCH: usize = 4096;
/// Batches read at once: each is at least one cold round trip, and one after the other they
/// made the rest of a redis image (28k pages, 2.3 MB stored) take nine round trips in a row,
/// 450 ms behind its wake-up, through which a fault on a page of a later batch waited.
const BATCHES_IN_FLIGHT: usize = 8;

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct PrefetchReport {
    /// Distinct non-zero pages asked for.
    pub requested: u64,
    /// Already in the memory tier.
    pub already_hot: u64,
    /// Read from the cold tier.
    pub cold_pages: u64,
    /// Cold GETs and bytes of the whole prefetch, the locality pack's included (the ordinary
    /// reads' from the store's counters while they run: other readers' meanwhile count too).
    pub cold_gets: u64,
    pub cold_bytes: u64,
    pub ms: u64,
    /// The locality pack's part, when the checkpoint has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locality: Option<crate::locality::LocalityReport>,
}

impl PrefetchReport {
    /// This prefetch and a later one, as one (`ms` from this one's start is not known: the
    /// sum of both).
    pub fn and(self, later: PrefetchReport) -> PrefetchReport {
        PrefetchReport {
            requested: self.requested + later.requested,
            already_hot: self.already_hot + later.already_hot,
            cold_pages: self.cold_pages + later.cold_pages,
            cold_gets: self.cold_gets + later.cold_gets,
            cold_bytes: self.cold_bytes + later.cold_bytes,
            ms: self.ms + later.ms,
            locality: self.locality.or(later.locality),
        }
    }
}

impl PageStore {
    /// [`Self::prefetch`], first from the checkpoint's locality pack when it has one. A locality
    /// pack that cannot be used (missing, damaged) only costs the ordinary reads.
    pub async fn prefetch_with_locality(
        &self,
        ids: &[PageId],
        locality: Option<&crate::locality::LocalitySource>,
    ) -> Result<PrefetchReport> {
        let Some(source) = locality else {
            return self.prefetch(ids).await;
        };
        let started = Instant::now();
        let distinct: HashSet<&PageId> = ids.iter().filter(|id| !id.is_zero()).collect();
        let hot_before = distinct.iter().filter(|id| self.hot().contains(id)).count();
        let used = match self.fetch_locality(source, ids).await {
            Ok(r) => r,
            Err(e) => {
                if matches!(e, crate::error::Error::ObjectNotFound(_)) {
                    // Expected for any checkpoint but a tenant's newest (`crate::locality`).
                    tracing::info!(key = %source.key, "locality pack gone (not the newest checkpoint); reading its pages the ordinary way");
                } else {
                    tracing::warn!(key = %source.key, error = %e, "locality pack not used; reading its pages the ordinary way");
                }
                crate::locality::LocalityReport {
                    skipped: Some(e.to_string()),
                    ..Default::default()
                }
            }
        };
        // Its own GETs, not the store's counters over the call: the rest of a small image may
        // be fetched alongside (the worker's fill).
        let mut report = self.prefetch(ids).await?;
        report.already_hot = hot_before as u64;
        report.cold_pages += used.pages;
        report.cold_gets += used.gets;
        report.cold_bytes += used.bytes;
        report.ms = started.elapsed().as_millis() as u64;
        report.locality = Some(used);
        Ok(report)
    }

    /// Brings `ids` into the memory tier for a reader about to ask for them.
    pub async fn prefetch(&self, ids: &[PageId]) -> Result<PrefetchReport> {
        self.prefetch_at(ids, ReadPriority::Now).await
    }

    /// [`Self::prefetch`], decoding what the cold tier sends at `priority`: pages fetched ahead
    /// of need (a restore's fill, a fault's read-ahead) at [`ReadPriority::Ahead`], behind what
    /// readers wait for.
    pub async fn prefetch_at(
        &self,
        ids: &[PageId],
        priority: ReadPriority,
    ) -> Result<PrefetchReport> {
        self.prefetch_paced(ids, priority, ColdPace::AtOnce).await
    }

    /// [`Self::prefetch_at`] for the rest of an image filled in behind a restore: its cold
    /// GETs keep within the fills' budget of bytes in flight ([`crate::read::FILL_BYTES_IN_FLIGHT`]),
    /// so that the restored tenants' faults, which read the same cold tier, are not held up
    /// behind it.
    pub async fn fill_at(&self, ids: &[PageId], priority: ReadPriority) -> Result<PrefetchReport> {
        self.prefetch_paced(ids, priority, ColdPace::Fill).await
    }

    async fn prefetch_paced(
        &self,
        ids: &[PageId],
        priority: ReadPriority,
        pace: ColdPace,
    ) -> Result<PrefetchReport> {
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
        if missing.is_empty() {
            return Ok(PrefetchReport {
                requested: wanted.len() as u64,
                already_hot: wanted.len() as u64,
                ms: started.elapsed().as_millis() as u64,
                ..PrefetchReport::default()
            });
        }
        let (pages0, gets0, bytes0) = self.cold_traffic();
        // A loop rather than `buffer_unordered` over a closure: the borrowing closure made the
        // swap-in futures that await this one lose `Send`.
        let mut batches = missing.chunks(PREFETCH_BATCH);
        let mut reading = FuturesUnordered::new();
        loop {
            while reading.len() < BATCHES_IN_FLIGHT {
                let Some(batch) = batches.next() else { break };
                reading.push(self.read_path.read_pages_at(batch, None, priority, pace));
            }
            match reading.next().await {
                Some(read) => drop(read?),
                None => break,
            }
            // A batch the local tier holds is read, decoded and checked without a wait (~30 ms
            // of CPU for 4096 pages): without a yield the whole prefetch ran in one poll, and a
            // large heap's fill (270 MB) held a runtime thread for ~1 s, a task woken on that
            // thread (the forwarding of the tenant's first answer) stuck behind it.
            tokio::task::yield_now().await;
        }
        let (pages1, gets1, bytes1) = self.cold_traffic();
        Ok(PrefetchReport {
            requested: wanted.len() as u64,
            already_hot: (wanted.len() - missing.len()) as u64,
            cold_pages: pages1 - pages0,
            cold_gets: gets1 - gets0,
            cold_bytes: bytes1 - bytes0,
            ms: started.elapsed().as_millis() as u64,
            locality: None,
        })
    }

    fn cold_traffic(&self) -> (u64, u64, u64) {
        (
            self.counters().cold_pages.load(Ordering::Relaxed),
            self.cold().counters.gets.load(Ordering::Relaxed),
            self.cold().counters.get_bytes.load(Ordering::Relaxed),
        )
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    use crate::read::{ReadPriority, FILL_BYTES_IN_FLIGHT};

    /// A fill sends no GET while the fills' budget is spent, and a fault on one of its pages
    /// meanwhile is not held up behind it: its own GET goes at once. Once the budget is back,
    /// the fill brings the rest.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_fill_waits_for_its_budget_and_a_fault_does_not_wait_for_the_fill() {
        let home = tempfile::tempdir().unwrap();
        let pages: Vec<(u8, u64)> = (0..1024).map(|i| (3, i)).collect();
        let (store, ids) = crate::test_store::cold_only_image(home.path(), &pages).await;
        let gets = || store.cold().counters.gets.load(Ordering::Relaxed);

        let spent = store
            .read_path
            .fill_pace()
            .admit(FILL_BYTES_IN_FLIGHT)
            .await;
        let before = gets();
        let fill = tokio::spawn({
            let (store, ids) = (store.clone(), ids.clone());
            async move { store.fill_at(&ids, ReadPriority::Now).await }
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(gets(), before, "the fill sent GETs with its budget spent");
        let fault = tokio::time::timeout(Duration::from_secs(10), store.read_page(&ids[500]))
            .await
            .expect("the fault waited for the fill");
        assert!(fault.is_ok());
        assert_eq!(gets(), before + 1, "one GET, the fault's");
        assert!(!fill.is_finished());

        drop(spent);
        let filled = tokio::time::timeout(Duration::from_secs(30), fill)
            .await
            .expect("the fill went on once its budget was back")
            .unwrap()
            .unwrap();
        assert_eq!(filled.requested, ids.len() as u64);
        assert!(ids.iter().all(|id| store.hot().contains(id)));
    }
}
