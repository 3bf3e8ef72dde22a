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
//! elsewhere repacked it) refreshes the catalog and is tried once more.
//!
//! [`crate::PageStore`] holds one [`ReadPath`] and delegates to it; the operations that write
//! (ingest, gc, derive) reach the tiers and the catalog through it.

mod flight;
mod locality_flight;
mod pack_catalog;
mod plan;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use futures::stream::{self, StreamExt, TryStreamExt};
use tracing::{trace, warn};

pub(crate) use locality_flight::{FlightEnd, LocalityFlights};
pub(crate) use pack_catalog::PackCatalog;
pub use plan::{plan_ranges, RangePlan, MAX_GAP, MAX_RANGE};

use crate::catalog::{Catalog, Location};
use crate::codec::{decode_verified, PageDecoder};
use crate::cold::ColdTier;
use crate::error::{Error, Result};
use crate::hot::HotTier;
use crate::local::{FetchedPage, Filler, LocalTier};
use crate::page::{PageId, PAGE_SIZE};
use crate::peer::{wire::MAX_PAGES_PER_REQUEST, PeerTier, Peers};
use crate::tally::TierTally;
use crate::tier::Tier;
use flight::{FlightGuard, RangeFlights, Role};

/// Ranged GETs one read keeps in flight. S3 serves ~100 MB/s per connection and scales with
/// connections; a restore set of ~20 scattered ranges then costs one round trip, not three
/// (measured through the 20 ms latency proxy: 18 GETs took 177 ms at 8 in flight).
const COLD_CONCURRENCY: usize = 32;

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

/// A page of a fetched range, decoded and checked: its position in the caller's list, and its
/// copy for the local tier.
struct RangePage {
    at: usize,
    page: Bytes,
    local: FetchedPage,
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
    pub(crate) fn forget_ended_flights(&self) {
        self.flights.forget_all_ended();
    }

    /// Drops the bytes of GETs that ended longer ago than they are kept.
    pub(crate) fn forget_expired_flights(&self) {
        self.flights.forget_expired();
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
        self.read_pages_at(ids, tally, ReadPriority::Now).await
    }

    /// [`Self::read_pages`], decoding what the cold tier sends at `priority`.
    pub async fn read_pages_at(
        &self,
        ids: &[PageId],
        tally: Option<&TierTally>,
        priority: ReadPriority,
    ) -> Result<Vec<Bytes>> {
        match self.read_pages_once(ids, tally, priority).await {
            // A gc elsewhere repacked or deleted a pack: reload the catalog and try once more.
            Err(e) if e.is_not_found() => {
                self.refresh_catalog().await?;
                self.read_pages_once(ids, tally, priority).await
            }
            other => other,
        }
    }

    async fn read_pages_once(
        &self,
        ids: &[PageId],
        tally: Option<&TierTally>,
        priority: ReadPriority,
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
            for (i, page) in self.fetch_cold(wanted, priority).await? {
                tally.inspect(|t| t.add_cold(1));
                out[i] = Some(page);
            }
        }
        out.into_iter()
            .zip(ids)
            .map(|(p, id)| p.ok_or(Error::PageMissing(*id)))
            .collect()
    }

    /// The memory and local steps: fills `out` with what this machine holds (the memory tier
    /// asked once per page; a local hit is put in memory) and returns the rest.
    fn read_resident(
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
    async fn read_resident_ahead(
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

    /// The peer step: asks each registered peer for what is still missing (one request per
    /// [`MAX_PAGES_PER_REQUEST`] pages; pages another reader is asking a peer for, or a locality
    /// pack brings, are waited for instead). Returns what is still missing.
    async fn read_peers(
        &self,
        mut misses: Vec<Miss>,
        out: &mut [Option<Bytes>],
        tally: Option<&TierTally>,
    ) -> Vec<Miss> {
        for peer in self.peers.live() {
            let mut rest = Vec::new();
            for asked in misses.chunks(MAX_PAGES_PER_REQUEST) {
                let ids: Vec<PageId> = asked.iter().map(|&(_, id)| id).collect();
                let (flight, mine) = self.locality_flights.start_for_uncovered(&ids);
                let (mut to_fetch, coming): (Vec<Miss>, Vec<Miss>) =
                    asked.iter().partition(|(_, id)| mine.contains(id));
                // A flight that brought some of them may have ended since this read looked in
                // memory (its pages are cached before it ends): those are not asked for again.
                self.take_from_memory(&mut to_fetch, out, || {
                    tally.inspect(|t| t.add_memory());
                });
                if !to_fetch.is_empty() {
                    rest.extend(self.fetch_peer(peer.as_ref(), to_fetch, out, tally).await);
                }
                // Only now, with its pages cached, may a new reader of them miss the flight.
                drop(flight);
                if !coming.is_empty() {
                    rest.extend(self.await_locality(coming, out, tally).await);
                }
            }
            misses = rest;
            if misses.is_empty() {
                break;
            }
        }
        misses
    }

    /// Asks `peer` for `asked` in one request. Each page it sends is checked against its id, put
    /// in memory and, in one batch, in the local tier; a peer that fails, or a page that fails
    /// its check, is logged and left to the cold tier. Returns what it did not serve.
    async fn fetch_peer(
        &self,
        peer: &dyn PeerTier,
        asked: Vec<Miss>,
        out: &mut [Option<Bytes>],
        tally: Option<&TierTally>,
    ) -> Vec<Miss> {
        let ids: Vec<PageId> = asked.iter().map(|&(_, id)| id).collect();
        self.counters.peer_requests.fetch_add(1, Ordering::Relaxed);
        let pages = match peer.fetch(&ids).await {
            Ok(pages) if pages.len() == ids.len() => pages,
            Ok(pages) => {
                warn!(
                    peer = peer.name(),
                    asked = ids.len(),
                    got = pages.len(),
                    "a peer answered for other pages; reading them from the cold tier"
                );
                return asked;
            }
            Err(e) => {
                warn!(peer = peer.name(), error = %e, "peer tier read failed; reading from the cold tier");
                return asked;
            }
        };
        let mut rest = Vec::new();
        let mut to_cache = Vec::new();
        for ((i, id), page) in asked.into_iter().zip(pages) {
            // The local tier never holds a page of a frame: a peer's would be bad.
            let Some((codec, data)) = page.filter(|(codec, _)| codec.is_single_page()) else {
                rest.push((i, id));
                continue;
            };
            match decode_verified(&id, codec, &data, Tier::Peer, peer.name()) {
                Ok(page) => {
                    self.counters.peer_pages.fetch_add(1, Ordering::Relaxed);
                    self.counters
                        .peer_bytes
                        .fetch_add(data.len() as u64, Ordering::Relaxed);
                    tally.inspect(|t| t.add_peer());
                    let page = Bytes::from(page);
                    self.hot.insert_shared(id, page.clone());
                    out[i] = Some(page);
                    to_cache.push(FetchedPage::Encoded(id, codec, data));
                }
                Err(e) => {
                    warn!(error = %e, "a peer sent a corrupt page; reading it from the cold tier");
                    self.counters.peer_corrupt.fetch_add(1, Ordering::Relaxed);
                    rest.push((i, id));
                }
            }
        }
        self.cache_behind(to_cache);
        rest
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

    /// Where each missing page is in the cold tier; the catalog is refreshed once if a page is
    /// not in it (another process may have added packs since it was loaded).
    async fn locate(&self, misses: Vec<Miss>) -> Result<Vec<(usize, PageId, Location)>> {
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
    /// [`COLD_CONCURRENCY`] at once. Returns each page with its position in the caller's list.
    async fn fetch_cold(
        &self,
        wanted: Vec<(usize, PageId, Location)>,
        priority: ReadPriority,
    ) -> Result<Vec<(usize, Bytes)>> {
        // What GETs in flight bring is waited for; the rest is planned into GETs of its own.
        let (joined, rest) = self.flights.split_in_flight(wanted);
        let plans = joined.into_iter().chain(plan_ranges(rest));
        let fetched: Vec<Vec<(usize, Bytes)>> = stream::iter(plans)
            .map(|plan| self.fetch_range(plan, priority))
            .buffer_unordered(COLD_CONCURRENCY)
            .try_collect()
            .await?;
        Ok(fetched.into_iter().flatten().collect())
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

    /// Fetches one planned range (or joins a flight that covers it), then decodes, checks and
    /// caches its pages.
    async fn fetch_range(
        &self,
        mut plan: RangePlan,
        priority: ReadPriority,
    ) -> Result<Vec<(usize, Bytes)>> {
        let key = plan.pack.object_key();
        let mut out = Vec::with_capacity(plan.pages.len());
        let (bytes, base, guard) = loop {
            match self.shared_get(&plan, &key).await? {
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
    /// those from memory and narrow the range to the rest).
    async fn shared_get(
        &self,
        plan: &RangePlan,
        key: &str,
    ) -> Result<Option<(Arc<Vec<u8>>, u64, Option<FlightGuard<'_>>)>> {
        loop {
            // A leader caches its pages before it ends its flight (under the table's lock).
            let some_in_memory = || plan.pages.iter().any(|p| self.hot.contains(&p.1));
            match self
                .flights
                .join_or_lead(plan.pack, plan.start, plan.end, some_in_memory)
            {
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

/// What the local tier holds for one page.
enum LocalLookup {
    /// The page, checked against its id.
    Hit(Bytes),
    Miss,
    /// It failed its check: dropped from the local tier (to be read from the cold tier).
    Corrupt,
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
