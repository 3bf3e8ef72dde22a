//! The read path's peer step: pages a registered peer's local disk holds (a move's source, see
//! [`crate::peer`]) are asked of it before the cold tier, checked, and cached like cold pages.

use std::sync::atomic::Ordering;

use bytes::Bytes;
use tracing::warn;

use super::{Miss, ReadPath};
use crate::codec::decode_verified;
use crate::local::FetchedPage;
use crate::page::PageId;
use crate::peer::{wire::MAX_PAGES_PER_REQUEST, PeerTier};
use crate::tally::TierTally;
use crate::tier::Tier;

impl ReadPath {
    /// The peer step: asks each registered peer for what is still missing (one request per
    /// [`MAX_PAGES_PER_REQUEST`] pages; pages another reader is asking a peer for, or a locality
    /// pack brings, are waited for instead). Returns what is still missing.
    pub(super) async fn read_peers(
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
}
