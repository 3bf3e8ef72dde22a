//! Reading whole images back through each tier of the store: memory, local, cold
//! directory, cold S3 — the tiers isolated in-process the way `pico store evict --tier` does it.
//!
//! Pages are read with [`pagestore::PageStore::read_pages`] in batches of [`READ_BATCH`], one
//! after another, the way a swap-in's prefetch hands them over; every page is decoded and
//! checked against its id on the way, whatever tier it came from.

use std::sync::atomic::Ordering;
use std::time::Instant;

use pagestore::{PageId, PageStore, PAGE_SIZE};
use serde::Serialize;

use crate::error::{Error, Result};

/// Pages per `read_pages` call (as `pagestore::prefetch` batches them).
pub const READ_BATCH: usize = 4096;

const GIB: f64 = (1u64 << 30) as f64;

/// Which tier a measured read is served from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// Every page in memory (read once before).
    Hot,
    /// Memory emptied; every page in the local tier.
    Local,
    /// Memory and local tier emptied; every page from the cold tier.
    Cold,
}

/// One tier's read of the whole image.
#[derive(Clone, Debug, Default, Serialize)]
pub struct TierRead {
    /// Non-zero pages read (zero pages cost no tier anything and are not counted).
    pub pages: u64,
    /// pages x 4096.
    pub bytes: u64,
    /// Median over the runs.
    pub seconds: f64,
    /// bytes / seconds, in MB/s (10^6).
    pub mb_s: f64,
    /// Requests to the cold tier during one read (0 for memory and local).
    pub cold_gets: u64,
    pub cold_get_bytes: u64,
    /// cold_gets per GiB of logical image restored (zero pages included, as a restore needs them).
    pub cold_gets_per_gib: f64,
    pub samples_s: Vec<f64>,
}

/// The distinct non-zero pages of every paged file of `manifests`, in file order.
pub fn stored_pages(manifests: &[&pagestore::Manifest]) -> Vec<PageId> {
    let mut seen = std::collections::HashSet::new();
    manifests
        .iter()
        .flat_map(|m| m.files.iter())
        .flat_map(|f| f.pages().iter())
        .filter(|id| !id.is_zero() && seen.insert(**id))
        .copied()
        .collect()
}

async fn read_all(store: &PageStore, ids: &[PageId]) -> Result<u64> {
    let mut bytes = 0;
    for batch in ids.chunks(READ_BATCH) {
        for page in store.read_pages(batch).await? {
            bytes += page.len() as u64;
        }
    }
    Ok(bytes)
}

/// Empties the tiers above `source` (and, for `Hot`, fills memory first).
async fn prepare(store: &PageStore, ids: &[PageId], source: Source) -> Result<()> {
    match source {
        Source::Hot => {
            read_all(store, ids).await?;
        }
        Source::Local => store.evict_hot(),
        Source::Cold => {
            store.evict_hot();
            store.evict_local()?;
        }
    }
    Ok(())
}

/// Reads `ids` `runs` times from `source`; `logical_bytes` is the image size GETs are counted per.
pub async fn measure(
    store: &PageStore,
    ids: &[PageId],
    source: Source,
    runs: usize,
    logical_bytes: u64,
) -> Result<TierRead> {
    let mut samples = Vec::with_capacity(runs);
    let (mut gets, mut get_bytes) = (0, 0);
    for _ in 0..runs.max(1) {
        prepare(store, ids, source).await?;
        let counters = &store.cold().counters;
        let (g0, b0) = (
            counters.gets.load(Ordering::Relaxed),
            counters.get_bytes.load(Ordering::Relaxed),
        );
        let (l0, h0) = (
            store.counters().local_hits.load(Ordering::Relaxed),
            store.hot().counters.hits.load(Ordering::Relaxed),
        );
        let started = Instant::now();
        let bytes = read_all(store, ids).await?;
        samples.push(started.elapsed().as_secs_f64());
        gets = counters.gets.load(Ordering::Relaxed) - g0;
        get_bytes = counters.get_bytes.load(Ordering::Relaxed) - b0;
        let local_hits = store.counters().local_hits.load(Ordering::Relaxed) - l0;
        let hot_hits = store.hot().counters.hits.load(Ordering::Relaxed) - h0;
        let n = ids.len() as u64;
        // The figure is only the tier's if the tier served every page.
        let served = match source {
            Source::Hot => hot_hits == n,
            Source::Local => local_hits == n,
            Source::Cold => gets > 0 && hot_hits == 0 && local_hits == 0,
        };
        if !served || bytes != n * PAGE_SIZE as u64 {
            return Err(Error::Step(
                format!("reading {source:?}"),
                format!(
                    "{n} pages wanted: {hot_hits} from memory, {local_hits} from local, \
                     {gets} cold GETs, {bytes} bytes (is the tier large enough for the image?)"
                ),
            ));
        }
    }
    let mut sorted = samples.clone();
    sorted.sort_by(f64::total_cmp);
    let seconds = crate::restore::percentile(&sorted, 50.0);
    let bytes = ids.len() as u64 * PAGE_SIZE as u64;
    Ok(TierRead {
        pages: ids.len() as u64,
        bytes,
        seconds,
        mb_s: bytes as f64 / seconds.max(1e-9) / 1e6,
        cold_gets: gets,
        cold_get_bytes: get_bytes,
        cold_gets_per_gib: if logical_bytes > 0 {
            gets as f64 / (logical_bytes as f64 / GIB)
        } else {
            0.0
        },
        samples_s: samples,
    })
}
