//! The read path's cold step: missing pages located in the catalog, planned into ranged GETs
//! ([`super::plan_ranges`]), fetched up to [`COLD_CONCURRENCY`] at once (a fill's within its
//! budget of bytes in flight, [`super::fill_pace`]) or joined to a GET in flight that covers
//! them ([`super::flight`]), then decoded, checked, put in memory and cached in the local tier.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use futures::stream::{self, StreamExt, TryStreamExt};
use tokio::sync::SemaphorePermit;
use tracing::trace;

use super::fill_pace::FILL_RANGE;
use super::flight::{self, FlightGuard, Overlapping, Role};
use super::{plan_ranges, plan_ranges_within, ColdPace, Miss, RangePlan, ReadPath, ReadPriority};
use crate::catalog::Location;
use crate::codec::PageDecoder;
use crate::error::{Error, Result};
use crate::local::FetchedPage;
use crate::page::PageId;
use crate::tally::TierTally;
use crate::tier::Tier;

/// Ranged GETs one read keeps in flight. S3 serves ~100 MB/s per connection and scales with
/// connections; a restore set of ~20 scattered ranges then costs one round trip, not three
/// (measured through the 20 ms latency proxy: 18 GETs took 177 ms at 8 in flight).
const COLD_CONCURRENCY: usize = 32;

/// A page of a fetched range, decoded and checked: its position in the caller's list, and its
/// copy for the local tier.
struct RangePage {
    at: usize,
    page: Bytes,
    local: FetchedPage,
}

impl ReadPath {
    /// Where each missing page is in the cold tier; the catalog is refreshed once if a page is
    /// not in it (another process may have added packs since it was loaded).
    pub(super) async fn locate(&self, misses: Vec<Miss>) -> Result<Vec<(usize, PageId, Location)>> {
        let catalog = self.packs.catalog();
        let mut wanted = Vec::with_capacity(misses.len());
        let mut refreshed = false;
        for (i, id) in misses {
            let loc = match catalog.locate(&id) {
                Some(loc) => loc,
                None => {
                    if !refreshed {
                        self.refresh_catalog().await?;
                        refreshed = true;
                    }
                    catalog.locate(&id).ok_or(Error::PageMissing(id))?
                }
            };
            wanted.push((i, id, loc));
        }
        Ok(wanted)
    }

    /// The cold step: plans the located pages into ranged GETs and fetches them, up to
    /// [`COLD_CONCURRENCY`] at once, a fill's ([`ColdPace::Fill`]) in ranges of at most
    /// [`FILL_RANGE`] and each only once it fits the fills' budget. Returns each page with its
    /// position in the caller's list.
    pub(super) async fn fetch_cold(
        &self,
        wanted: Vec<(usize, PageId, Location)>,
        priority: ReadPriority,
        pace: ColdPace,
        tally: Option<&TierTally>,
    ) -> Result<Vec<(usize, Bytes)>> {
        // What GETs in flight bring is waited for; the rest is planned into GETs of its own.
        let (joined, rest) = self.flights.split_in_flight(wanted);
        let own = match pace {
            ColdPace::AtOnce => plan_ranges(rest),
            ColdPace::Fill => plan_ranges_within(rest, FILL_RANGE),
        };
        let plans = joined
            .into_iter()
            .map(|plan| (plan, false))
            .chain(own.into_iter().map(|plan| (plan, pace == ColdPace::Fill)));
        let fetched: Vec<Vec<(usize, Bytes)>> = stream::iter(plans)
            .map(|(plan, paced)| async move {
                // Admitted before its flight is listed: a fault on one of its pages meanwhile
                // sends its own GET instead of waiting behind the fill's budget.
                let admitted = match paced {
                    true => self.fill_pace.admit(plan.end - plan.start).await,
                    false => None,
                };
                self.fetch_range(plan, priority, admitted, tally).await
            })
            .buffer_unordered(COLD_CONCURRENCY)
            .try_collect()
            .await?;
        Ok(fetched.into_iter().flatten().collect())
    }

    /// Fetches one planned range (or joins a flight that covers it), then decodes, checks and
    /// caches its pages. A fill's range holds its place in the fills' budget (`admitted`)
    /// until its bytes are in, not while they are decoded: the next GET then overlaps the
    /// decoding instead of following it.
    async fn fetch_range(
        &self,
        mut plan: RangePlan,
        priority: ReadPriority,
        mut admitted: Option<SemaphorePermit<'_>>,
        tally: Option<&TierTally>,
    ) -> Result<Vec<(usize, Bytes)>> {
        let key = plan.pack.object_key();
        let mut out = Vec::with_capacity(plan.pages.len());
        // Pages read ahead of need (a fill's, a fault's read-ahead) are worth having soon, not
        // a few KiB fewer: a range that a fault's own GET overlaps is fetched whole, not after it.
        let ahead = admitted.is_some() || priority == ReadPriority::Ahead;
        let overlapping = match ahead {
            true => Overlapping::Fetch,
            false => Overlapping::Wait,
        };
        let (bytes, base, guard) = loop {
            let fetched = self.shared_get(&plan, &key, overlapping).await;
            drop(admitted.take());
            match fetched? {
                Some(fetched) => break fetched,
                None => {
                    // What is in memory now is taken from there; the rest (evicted meanwhile,
                    // or not in the flights waited for) is fetched by a narrower range.
                    let mut rest = Vec::new();
                    for (i, id, loc) in std::mem::take(&mut plan.pages) {
                        match self.hot.peek(&id) {
                            Some(page) => out.push((i, page)),
                            None => rest.push((i, id, loc)),
                        }
                    }
                    let Some(start) = rest.iter().map(|p| p.2.offset).min() else {
                        return Ok(out);
                    };
                    plan.start = start;
                    plan.end = rest
                        .iter()
                        .map(|p| p.2.offset + u64::from(p.2.len))
                        .max()
                        .unwrap_or(start);
                    plan.pages = rest;
                }
            }
        };
        // Decoding and checking (the range's share of a restore set: thousands of pages) runs on
        // a blocking thread, each range on its own, not on the runtime's few threads that carry
        // the tenants' faults; pages read ahead of need on the background pool, behind them.
        // (A reader that joins this range's GET decodes its own pages at its own priority.)
        let (pages, ranged) = (std::mem::take(&mut plan.pages), Arc::clone(&bytes));
        let counted = guard.is_some();
        if counted {
            // The reader waited for a round trip of its own, not the rest of another's.
            tally.inspect(|t| t.add_own_get());
        }
        let decode = move || decode_range(&ranged, base, &pages, &key);
        let decoded = match priority {
            ReadPriority::Now => crate::blocking::blocking(decode).await?,
            ReadPriority::Ahead => crate::blocking::background(decode).await?,
        };
        let mut to_cache = Vec::with_capacity(decoded.len());
        for RangePage { at, page, local } in decoded {
            if counted {
                // Fetched by this reader's GET (a reader that joined one does not count it again).
                self.counters.cold_pages.fetch_add(1, Ordering::Relaxed);
            }
            let id = local.id();
            if !self.hot.contains(&id) {
                self.hot.insert_shared(id, page.clone());
                to_cache.push(local);
            }
            out.push((at, page));
        }
        self.cache_behind(to_cache);
        // Only now, with the pages checked and in memory, may a new reader of these bytes miss
        // the flight (or decode its own from them while they linger).
        if let Some(guard) = guard {
            guard.end_keeping_bytes();
        }
        Ok(out)
    }

    /// The bytes `plan.start..plan.end` of a pack: from a request in flight that covers them, or
    /// from a new one that later readers can join. Returns the bytes, the pack offset they start
    /// at, and (for the leader) the guard that ends the flight; `None` when the hot tier has
    /// some of the pages by now, or after waiting for flights that overlap the range (take
    /// those from memory and narrow the range to the rest) unless `overlapping` says to fetch
    /// the range anyway.
    async fn shared_get(
        &self,
        plan: &RangePlan,
        key: &str,
        overlapping: Overlapping,
    ) -> Result<Option<(Arc<Vec<u8>>, u64, Option<FlightGuard<'_>>)>> {
        loop {
            // A leader caches its pages before it ends its flight (under the table's lock).
            let some_in_memory = || plan.pages.iter().any(|p| self.hot.contains(&p.1));
            match self.flights.join_or_lead(
                plan.pack,
                plan.start,
                plan.end,
                overlapping,
                some_in_memory,
            ) {
                Role::Follower(follower) => {
                    self.counters.flight_joins.fetch_add(1, Ordering::Relaxed);
                    let base = follower.base;
                    match follower.result().await {
                        Some(Ok(bytes)) => return Ok(Some((bytes, base, None))),
                        Some(Err(e)) => return Err(Error::Shared(e)),
                        // The leader was dropped before it finished: try again.
                        None => continue,
                    }
                }
                Role::InMemory => return Ok(None),
                Role::Overlapping(flights) => {
                    for mut ended in flights {
                        // Err: its guard is gone, i.e. the flight ended, which is what we wait for.
                        let _ = ended.changed().await;
                    }
                    return Ok(None);
                }
                Role::Leader(leader) => {
                    trace!(key, start = plan.start, end = plan.end, "cold ranged GET");
                    self.counters.cold_requests.fetch_add(1, Ordering::Relaxed);
                    let result: flight::Fetched = self
                        .cold
                        .get_range(key, plan.start, plan.end - plan.start)
                        .await
                        .map(Arc::new)
                        .map_err(Arc::new);
                    let guard = leader.publish(result.clone());
                    return match result {
                        Ok(bytes) => Ok(Some((bytes, plan.start, Some(guard)))),
                        Err(e) => Err(Error::Shared(e)),
                    };
                }
            }
        }
    }
}

/// Decodes and checks `pages` of a range of pack `key` whose fetched bytes start at pack offset
/// `base`; each page with its copy for the local tier.
fn decode_range(
    bytes: &[u8],
    base: u64,
    pages: &[(usize, PageId, Location)],
    key: &str,
) -> Result<Vec<RangePage>> {
    // Pages of one zstd frame are next to each other in the plan: each frame decodes once.
    let mut decoder = PageDecoder::default();
    pages
        .iter()
        .map(|(at, id, loc)| {
            let raw = loc
                .offset
                .checked_sub(base)
                .and_then(|from| bytes.get(from as usize..from as usize + loc.len as usize))
                .ok_or_else(|| Error::CorruptObject {
                    what: "pack",
                    object: key.to_string(),
                    reason: format!("shorter than its index says (page {id} at {})", loc.offset),
                })?;
            let page = Bytes::from(decoder.decode(
                id,
                loc.codec,
                loc.slot,
                loc.offset,
                raw,
                Tier::Cold,
                key,
            )?);
            // The local tier keeps what decodes fastest: a page of a frame goes there alone.
            let local = match loc.codec.is_single_page() {
                true => FetchedPage::Encoded(*id, loc.codec, Bytes::copy_from_slice(raw)),
                false => FetchedPage::Decoded(*id, page.clone()),
            };
            Ok(RangePage {
                at: *at,
                page,
                local,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::page::PageId;
    use crate::read::flight::{Overlapping, Role};
    use crate::read::ReadPriority;

    /// Pages read ahead of need whose range a GET in flight overlaps (a fault's own, for the
    /// page in the middle of its read-ahead) are fetched at once, not after that GET ends.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_read_ahead_does_not_wait_for_a_get_overlapping_its_range() {
        let home = tempfile::tempdir().unwrap();
        let pages: Vec<(u8, u64)> = (0..64).map(|i| (5, i)).collect();
        let (store, ids) = crate::test_store::cold_only_image(home.path(), &pages).await;

        // The fault's GET of page 32, in flight until this test ends it.
        let faulted = store.catalog().locate(&ids[32]).unwrap();
        let fault = store.read_path.flights.join_or_lead(
            faulted.pack,
            faulted.offset,
            faulted.offset + u64::from(faulted.len),
            Overlapping::Wait,
            || false,
        );
        assert!(matches!(fault, Role::Leader(_)));
        let around: Vec<PageId> = (16..48).filter(|&i| i != 32).map(|i| ids[i]).collect();
        let ahead = tokio::time::timeout(
            Duration::from_secs(10),
            store.prefetch_at(&around, ReadPriority::Ahead),
        )
        .await
        .expect("the read-ahead waited for the fault's GET");
        assert!(ahead.is_ok());
        assert!(around.iter().all(|id| store.hot().contains(id)));
        drop(fault);
    }
}
