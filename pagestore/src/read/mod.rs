//! The read path: one component that owns the memory, local and cold tiers and walks them for a
//! list of pages: memory, then local disk, then a peer's local disk while one is registered
//! ([`crate::peer`]), then the cold tier, with the cold reads planned, coalesced and shared.
//!
//! It exists because a cold request costs ~20 ms on S3 whatever its size: the pages a read wants
//! from one pack are grouped and neighbours merged into one ranged GET ([`plan_ranges`]), and
//! concurrent readers that want bytes an in-flight GET already covers wait for it instead of
//! sending their own (single flight, [`flight`]; readers of pages a locality pack being fetched
//! will bring wait for it, [`locality_flight`]). Every page is checked against its id after it
//! is decoded, whichever tier it came from, so a corrupt object is reported and never handed out.
//!
//! The walk of one read, in order: the memory tier is asked once per page; a miss is read from
//! the local tier (and put in memory); what is still missing waits for a locality pack in flight
//! that brings it; what a registered peer holds is taken from it (checked, then cached like a
//! cold page); the rest is located in the catalog (refreshed once if a page is unknown:
//! another process may have ingested), planned and fetched, and each fetched page is put in
//! memory and, in one batch per range, in the local tier. A read that finds a pack gone (a gc
//! elsewhere repacked it) refreshes the catalog and is tried once more. The steps live apart:
//! `resident.rs` (memory and local), `peers.rs`, `cold_reads.rs`; this file holds the walk itself.
//!
//! [`crate::PageStore`] holds one [`ReadPath`] and delegates to it; the operations that write
//! (ingest, gc, derive) reach the tiers and the catalog through it.

mod cold_reads;
mod fill_pace;
mod flight;
mod locality_flight;
mod pack_catalog;
mod peers;
mod plan;
mod resident;

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use bytes::Bytes;

pub use fill_pace::{FILL_BYTES_IN_FLIGHT, FILL_RANGE};
pub(crate) use locality_flight::{FlightEnd, LocalityFlights};
pub(crate) use pack_catalog::PackCatalog;
pub use plan::{plan_ranges, plan_ranges_within, RangePlan, MAX_GAP, MAX_RANGE};

use crate::catalog::Catalog;
use crate::cold::ColdTier;
use crate::error::{Error, Result};
use crate::hot::HotTier;
use crate::local::{FetchedPage, Filler, LocalTier};
use crate::page::{PageId, PAGE_SIZE};
use crate::peer::Peers;
use crate::tally::TierTally;
use fill_pace::FillPace;
use flight::RangeFlights;

/// The all-zero page, handed out for [`PageId::ZERO`] without allocating.
static ZERO_PAGE: [u8; PAGE_SIZE] = [0; PAGE_SIZE];

/// Hits and misses of the tiers above cold, and pages read from cold.
#[derive(Debug, Default)]
pub struct TierCounters {
    pub local_hits: AtomicU64,
    pub local_misses: AtomicU64,
    pub local_corrupt: AtomicU64,
    /// Pages fetched from the cold tier: by this process's ranged GETs (each counted once,
    /// however many readers joined the GET) and locality packs.
    pub cold_pages: AtomicU64,
    /// Ranged GETs sent for page reads (after coalescing and single flight).
    pub cold_requests: AtomicU64,
    /// Reads that joined a cold GET already in flight instead of sending their own.
    pub flight_joins: AtomicU64,
    /// Pages a peer sent that passed their check, their encoded bytes, the requests that
    /// asked for them, and pages a peer sent that failed their check (read from cold instead).
    pub peer_pages: AtomicU64,
    pub peer_bytes: AtomicU64,
    pub peer_requests: AtomicU64,
    pub peer_corrupt: AtomicU64,
}

/// The tiers, the catalog the cold tier is read through, and the single-flight tables.
pub(crate) struct ReadPath {
    hot: HotTier,
    local: Option<Arc<dyn LocalTier>>,
    /// Caches what reads fetch in the local tier behind them (and ingested packs behind their
    /// commit).
    filler: Option<Arc<Filler>>,
    cold: ColdTier,
    packs: PackCatalog,
    flights: RangeFlights,
    locality_flights: LocalityFlights,
    /// The fills' budget of cold bytes in flight.
    fill_pace: FillPace,
    peers: Peers,
    counters: TierCounters,
}

/// How soon a read's pages are needed, which decides the CPU priority at which the pages it
/// reads from the local tier or fetches from the cold tier are decoded and checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadPriority {
    /// Someone waits for them (a restore, a fault): decoded at once, at the process's priority.
    Now,
    /// Fetched ahead of need (a restore's fill, a fault's read-ahead): read from the local tier
    /// and decoded on the background pool (`crate::blocking::background`), so that it takes no
    /// core, and no runtime thread, from what waits.
    Ahead,
}

/// How a read's cold GETs are sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColdPace {
    /// All at once: someone waits for the pages, or there are few of them.
    AtOnce,
    /// Within the fills' budget of bytes in flight ([`fill_pace`]): the rest of an image
    /// filled in behind a restore, which must not hold up the faults of the tenants it restores.
    Fill,
}

/// One page a read still needs: its position in the caller's list and its id.
type Miss = (usize, PageId);

impl ReadPath {
    /// The read path over these tiers, with an empty catalog (see [`Self::refresh_catalog`]);
    /// with a local tier, its fill thread starts.
    pub(crate) fn new(
        hot: HotTier,
        local: Option<Arc<dyn LocalTier>>,
        cold: ColdTier,
        packs: PackCatalog,
    ) -> ReadPath {
        let filler = local.clone().map(|l| Arc::new(Filler::start(l)));
        ReadPath {
            hot,
            local,
            filler,
            cold,
            packs,
            flights: RangeFlights::default(),
            locality_flights: LocalityFlights::default(),
            fill_pace: FillPace::default(),
            peers: Peers::default(),
            counters: TierCounters::default(),
        }
    }

    pub fn hot(&self) -> &HotTier {
        &self.hot
    }

    pub fn local(&self) -> Option<&dyn LocalTier> {
        self.local.as_deref()
    }

    /// The local tier's write-behind (none without a local tier).
    pub(crate) fn filler(&self) -> Option<&Arc<Filler>> {
        self.filler.as_ref()
    }

    pub fn cold(&self) -> &ColdTier {
        &self.cold
    }

    pub fn catalog(&self) -> &Catalog {
        self.packs.catalog()
    }

    pub(crate) fn packs(&self) -> &PackCatalog {
        &self.packs
    }

    pub fn counters(&self) -> &TierCounters {
        &self.counters
    }

    /// The peers reads ask before the cold tier.
    pub fn peers(&self) -> &Peers {
        &self.peers
    }

    /// Drops the bytes of GETs that ended (they are memory too: after an eviction of the memory
    /// tier, the next read of their pages goes to the cold tier).
    /// Whether a cold read in progress (a ranged GET, or a locality pack's) brings page `id`:
    /// a reader of it waits for that read rather than sending its own.
    pub fn arriving(&self, id: &PageId) -> bool {
        self.locality_flights.brings(id)
            || self
                .packs
                .catalog()
                .locate(id)
                .is_some_and(|at| self.flights.brings(&at))
    }

    pub(crate) fn forget_ended_flights(&self) {
        self.flights.forget_all_ended();
    }

    /// Drops the bytes of GETs that ended longer ago than they are kept.
    pub(crate) fn forget_expired_flights(&self) {
        self.flights.forget_expired();
    }

    /// The fills' budget of cold bytes in flight.
    #[cfg(test)]
    pub(crate) fn fill_pace(&self) -> &FillPace {
        &self.fill_pace
    }

    pub(crate) fn locality_flights(&self) -> &LocalityFlights {
        &self.locality_flights
    }

    /// Reads the index of every pack not yet in the catalog, and forgets packs that are gone (a gc
    /// elsewhere deleted them). Returns how many packs were added.
    pub async fn refresh_catalog(&self) -> Result<usize> {
        self.packs.refresh(&self.cold).await
    }

    /// [`Self::refresh_catalog`], also returning the listing of the packs it matched.
    pub(crate) async fn refresh_catalog_listed(&self) -> Result<Vec<crate::cold::ObjectMeta>> {
        Ok(self.packs.refresh_listed(&self.cold).await?.1)
    }

    /// Reads pages through the tiers, in the order asked, counting in `tally` (if given) which
    /// tier served each page. Pages missing from the memory and local tiers are fetched from the
    /// cold tier with as few ranged GETs as [`plan_ranges`] allows, shared with concurrent
    /// readers of the same bytes.
    pub async fn read_pages(
        &self,
        ids: &[PageId],
        tally: Option<&TierTally>,
    ) -> Result<Vec<Bytes>> {
        self.read_pages_at(ids, tally, ReadPriority::Now, ColdPace::AtOnce)
            .await
    }

    /// [`Self::read_pages`], decoding what the cold tier sends at `priority` and sending its
    /// GETs at `pace`.
    pub async fn read_pages_at(
        &self,
        ids: &[PageId],
        tally: Option<&TierTally>,
        priority: ReadPriority,
        pace: ColdPace,
    ) -> Result<Vec<Bytes>> {
        match self.read_pages_once(ids, tally, priority, pace).await {
            // A gc elsewhere repacked or deleted a pack: reload the catalog and try once more.
            Err(e) if e.is_not_found() => {
                self.refresh_catalog().await?;
                self.read_pages_once(ids, tally, priority, pace).await
            }
            other => other,
        }
    }

    async fn read_pages_once(
        &self,
        ids: &[PageId],
        tally: Option<&TierTally>,
        priority: ReadPriority,
        pace: ColdPace,
    ) -> Result<Vec<Bytes>> {
        let mut out: Vec<Option<Bytes>> = vec![None; ids.len()];
        let mut misses = match priority {
            ReadPriority::Now => self.read_resident(ids, &mut out, tally),
            ReadPriority::Ahead => self.read_resident_ahead(ids, &mut out, tally).await?,
        };
        if !misses.is_empty() {
            misses = self.await_locality(misses, &mut out, tally).await;
        }
        if !misses.is_empty() {
            misses = self.read_peers(misses, &mut out, tally).await;
        }
        if !misses.is_empty() {
            let wanted = self.locate(misses).await?;
            for (i, page) in self.fetch_cold(wanted, priority, pace, tally).await? {
                tally.inspect(|t| t.add_cold(1));
                out[i] = Some(page);
            }
        }
        out.into_iter()
            .zip(ids)
            .map(|(p, id)| p.ok_or(Error::PageMissing(*id)))
            .collect()
    }

    /// Pages a locality pack being fetched will bring: waits for them (until they are in memory
    /// or the fetch ended) rather than send GETs, then takes them from memory (counted as
    /// cold). Returns what is still missing.
    async fn await_locality(
        &self,
        mut misses: Vec<Miss>,
        out: &mut [Option<Bytes>],
        tally: Option<&TierTally>,
    ) -> Vec<Miss> {
        if self
            .locality_flights
            .wait_for(misses.iter().map(|(_, id)| id), |id| self.hot.contains(id))
            .await
        {
            // Brought from the cold tier by the locality pack: counted as cold.
            self.take_from_memory(&mut misses, out, || {
                tally.inspect(|t| t.add_cold(1));
            });
        }
        misses
    }

    /// Takes the pages of `misses` the memory tier holds now into `out` (calling `hit` for
    /// each), leaving the others.
    fn take_from_memory(&self, misses: &mut Vec<Miss>, out: &mut [Option<Bytes>], hit: impl Fn()) {
        misses.retain(|&(i, id)| match self.hot.get(&id) {
            Some(page) => {
                hit();
                out[i] = Some(page);
                false
            }
            None => true,
        });
    }

    /// Has pages fetched from the cold tier or a peer (in memory already) cached in the local
    /// tier: behind the read, by the fill thread, or by this reader when its queue is full.
    pub(crate) fn cache_behind(&self, pages: Vec<FetchedPage>) {
        // There is a filler exactly when there is a local tier.
        let (Some(local), Some(filler)) = (&self.local, &self.filler) else {
            return;
        };
        if let Err(refused) = filler.offer(pages) {
            crate::local::cache_fetched(local.as_ref(), &refused);
        }
    }
}
