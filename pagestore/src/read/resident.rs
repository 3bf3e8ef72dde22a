//! The read path's steps on this machine: the memory tier, asked once per page, then the local
//! tier, each page checked against its id (a corrupt one dropped there and read from elsewhere);
//! for pages read ahead of need, the local tier's reads and checks run on the background pool.

use std::sync::atomic::Ordering;

use bytes::Bytes;
use tracing::warn;

use super::{Miss, ReadPath, ZERO_PAGE};
use crate::codec::decode_verified;
use crate::error::Result;
use crate::local::LocalTier;
use crate::page::PageId;
use crate::tally::TierTally;
use crate::tier::Tier;

/// What the local tier holds for one page.
enum LocalLookup {
    /// The page, checked against its id.
    Hit(Bytes),
    Miss,
    /// It failed its check: dropped from the local tier (to be read from the cold tier).
    Corrupt,
}

impl ReadPath {
    /// The memory and local steps: fills `out` with what this machine holds (the memory tier
    /// asked once per page; a local hit is put in memory) and returns the rest.
    pub(super) fn read_resident(
        &self,
        ids: &[PageId],
        out: &mut [Option<Bytes>],
        tally: Option<&TierTally>,
    ) -> Vec<Miss> {
        let misses = self.read_memory(ids, out, tally);
        let Some(local) = &self.local else {
            return misses;
        };
        let found = misses
            .into_iter()
            .map(|(i, id)| (i, id, local_lookup(local.as_ref(), &id)));
        self.keep_local_hits(found, out, tally)
    }

    /// [`Self::read_resident`] for pages read ahead of need: the memory tier asked here, the
    /// local tier's reads, decoding and checks on the background pool (a batch of 4096 pages
    /// is ~30 ms of CPU). Run on the caller's runtime thread at its priority, a fill released
    /// by a tenant's first bytes held that thread while the relay still had the rest of the
    /// answer to forward: the large heap's first answer from the local tier came 35-45 ms late
    /// in 3 of 20 wake-ups, with no fault between.
    pub(super) async fn read_resident_ahead(
        &self,
        ids: &[PageId],
        out: &mut [Option<Bytes>],
        tally: Option<&TierTally>,
    ) -> Result<Vec<Miss>> {
        let misses = self.read_memory(ids, out, tally);
        let Some(local) = self.local.clone() else {
            return Ok(misses);
        };
        if misses.is_empty() {
            return Ok(misses);
        }
        let found = crate::blocking::background(move || {
            Ok(misses
                .into_iter()
                .map(|(i, id)| (i, id, local_lookup(local.as_ref(), &id)))
                .collect::<Vec<_>>())
        })
        .await?;
        Ok(self.keep_local_hits(found, out, tally))
    }

    /// The memory step: fills `out` with zero pages and what the memory tier holds, and
    /// returns the rest.
    fn read_memory(
        &self,
        ids: &[PageId],
        out: &mut [Option<Bytes>],
        tally: Option<&TierTally>,
    ) -> Vec<Miss> {
        let mut misses = Vec::new();
        for (i, id) in ids.iter().enumerate() {
            if id.is_zero() {
                out[i] = Some(Bytes::from_static(&ZERO_PAGE));
            } else if let Some(page) = self.hot.get(id) {
                tally.inspect(|t| t.add_memory());
                out[i] = Some(page);
            } else {
                misses.push((i, *id));
            }
        }
        misses
    }

    /// Puts what the local tier had of the missed pages (`found`, from [`local_lookup`]) in
    /// `out` and in memory, counted; returns what it lacked.
    fn keep_local_hits(
        &self,
        found: impl IntoIterator<Item = (usize, PageId, LocalLookup)>,
        out: &mut [Option<Bytes>],
        tally: Option<&TierTally>,
    ) -> Vec<Miss> {
        let mut misses = Vec::new();
        for (i, id, found) in found {
            match self.count_local(found) {
                Some(page) => {
                    self.hot.insert_shared(id, page.clone());
                    tally.inspect(|t| t.add_local());
                    out[i] = Some(page);
                }
                None => misses.push((i, id)),
            }
        }
        misses
    }

    /// A page from the local tier, checked against its id (counted as a local hit or miss); a
    /// page that fails its hash there is dropped and counts as a miss.
    pub(crate) fn read_local(&self, id: &PageId) -> Option<Bytes> {
        let local = self.local.as_ref()?;
        self.count_local(local_lookup(local.as_ref(), id))
    }

    /// Counts what [`local_lookup`] found: a hit, a miss, or a corrupt page (dropped, a miss).
    fn count_local(&self, found: LocalLookup) -> Option<Bytes> {
        match found {
            LocalLookup::Hit(page) => {
                self.counters.local_hits.fetch_add(1, Ordering::Relaxed);
                return Some(page);
            }
            LocalLookup::Corrupt => {
                self.counters.local_corrupt.fetch_add(1, Ordering::Relaxed);
            }
            LocalLookup::Miss => {}
        }
        self.counters.local_misses.fetch_add(1, Ordering::Relaxed);
        None
    }
}

/// Looks `id` up in `local` and checks it; a page that fails its hash is removed there. Free of
/// the read path, so that a read ahead of need runs it on the background pool.
fn local_lookup(local: &dyn LocalTier, id: &PageId) -> LocalLookup {
    match local.get(id) {
        Ok(Some((codec, data))) => match decode_verified(id, codec, &data, Tier::Local, "local") {
            Ok(page) => LocalLookup::Hit(Bytes::from(page)),
            Err(e) => {
                warn!(error = %e, "dropping corrupt page from the local tier");
                let _ = local.remove(id);
                LocalLookup::Corrupt
            }
        },
        Ok(None) => LocalLookup::Miss,
        Err(e) => {
            warn!(page = %id, error = %e, "local tier read failed");
            LocalLookup::Miss
        }
    }
}
