//! Locality packs being fetched, and the pages each is expected to bring: a reader of one of those
//! pages waits for the fetch instead of sending its own GET, as it would for a cold range in
//! flight ([`super::flight`]). See [`crate::locality`] for what a locality pack is. A peer's
//! page requests ([`crate::peer`]) are listed here too, so that readers of the same pages ask a
//! peer once.
//!
//! A fetch may bring its pages in parts ([`FlightEnd::progressed`]): a reader waits only until
//! the pages it wants from that flight are in memory, not for the whole flight (a cold restore
//! reads its restore set in image order while the locality pack is still being decoded).

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use crate::page::PageId;

struct Waiting {
    id: u64,
    pages: Arc<HashSet<PageId>>,
    /// Bumped at each part of its pages put in memory; closed when the flight ends.
    progress: watch::Receiver<u64>,
}

/// Locality packs being fetched, and the pages each is expected to bring.
#[derive(Default)]
pub(crate) struct LocalityFlights {
    flights: Mutex<Vec<Waiting>>,
    next: AtomicU64,
}

/// Ends a locality flight when dropped (fetched, failed or cancelled): its waiters then look in
/// the memory tier and read what is still missing the ordinary way.
pub(crate) struct FlightEnd<'a> {
    flights: &'a LocalityFlights,
    id: u64,
    progress: watch::Sender<u64>,
}

impl FlightEnd<'_> {
    /// Says that part of the flight's pages are in memory now: its waiters look again.
    pub(crate) fn progressed(&self) {
        self.progress.send_modify(|parts| *parts += 1);
    }
}

impl Drop for FlightEnd<'_> {
    fn drop(&mut self) {
        self.flights
            .flights
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|w| w.id != self.id);
        // Dropping the sender wakes every waiter.
    }
}

impl LocalityFlights {
    /// Lists a fetch expected to bring `pages`, unless `worth_it` says no given how many of them
    /// are still `missing` and no flight listed already will bring; decided and listed under one
    /// lock, so that of two fetches of the same pages started together only one goes. `missing`
    /// is asked under the lock too: a flight ends only once its pages are where readers find
    /// them, so a page is either still coming or no longer missing (asked before, a fetch
    /// decided just as another ended took the same pages again).
    pub(crate) fn start_unless_coming(
        &self,
        pages: HashSet<PageId>,
        missing: impl Fn(&PageId) -> bool,
        worth_it: impl FnOnce(usize) -> bool,
    ) -> Option<FlightEnd<'_>> {
        let mut flights = self.flights.lock().unwrap_or_else(|p| p.into_inner());
        let not_coming = pages
            .iter()
            .filter(|id| missing(id) && !flights.iter().any(|w| w.pages.contains(id)))
            .count();
        if !worth_it(not_coming) {
            return None;
        }
        Some(self.list(&mut flights, pages))
    }

    /// Lists a fetch of those of `pages` no flight is bringing yet, and returns them with the
    /// flight's end (none when every page is coming already); decided and listed under one lock,
    /// so that of readers of the same pages only one fetches each.
    pub(crate) fn start_for_uncovered(
        &self,
        pages: &[PageId],
    ) -> (Option<FlightEnd<'_>>, HashSet<PageId>) {
        let mut flights = self.flights.lock().unwrap_or_else(|p| p.into_inner());
        let uncovered: HashSet<PageId> = pages
            .iter()
            .filter(|id| !flights.iter().any(|w| w.pages.contains(id)))
            .copied()
            .collect();
        if uncovered.is_empty() {
            return (None, uncovered);
        }
        (Some(self.list(&mut flights, uncovered.clone())), uncovered)
    }

    /// Lists a flight bringing `pages` in `flights` (this table's, locked); it ends when the
    /// returned end is dropped.
    fn list(&self, flights: &mut Vec<Waiting>, pages: HashSet<PageId>) -> FlightEnd<'_> {
        let (tx, rx) = watch::channel(0);
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        flights.push(Waiting {
            id,
            pages: Arc::new(pages),
            progress: rx,
        });
        FlightEnd {
            flights: self,
            id,
            progress: tx,
        }
    }

    /// Whether a locality flight is expected to bring page `id`.
    pub(crate) fn brings(&self, id: &PageId) -> bool {
        let flights = self.flights.lock().unwrap_or_else(|p| p.into_inner());
        flights.iter().any(|w| w.pages.contains(id))
    }

    /// Waits, for every locality flight expected to bring one of `ids`, until the ones it brings
    /// are there (`there`, asked again at each part it brings) or it ended; true if there was
    /// such a flight.
    pub(crate) async fn wait_for<'a>(
        &self,
        ids: impl Iterator<Item = &'a PageId> + Clone,
        there: impl Fn(&PageId) -> bool,
    ) -> bool {
        let waits: Vec<(Arc<HashSet<PageId>>, watch::Receiver<u64>)> = {
            let flights = self.flights.lock().unwrap_or_else(|p| p.into_inner());
            if flights.is_empty() {
                return false;
            }
            flights
                .iter()
                .filter(|w| ids.clone().any(|id| w.pages.contains(id)))
                .map(|w| (w.pages.clone(), w.progress.clone()))
                .collect()
        };
        for (pages, mut rx) in waits.iter().cloned() {
            loop {
                // Marked seen before looking, so that a part put in memory after the look
                // wakes the wait below.
                rx.borrow_and_update();
                if ids.clone().filter(|id| pages.contains(id)).all(&there) {
                    break;
                }
                // Err: the flight ended (its sender is gone).
                if rx.changed().await.is_err() {
                    break;
                }
            }
        }
        !waits.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(range: std::ops::Range<u8>) -> HashSet<PageId> {
        range.map(|b| PageId([b; 32])).collect()
    }

    /// Of two fetches of the same pages, the second goes only for what is neither coming nor
    /// already there: asked while the first is listed, its pages are coming; asked after it
    /// ended, they are no longer missing (a flight ends once its pages are in memory).
    #[test]
    fn a_fetch_counts_only_pages_neither_coming_nor_already_there() {
        let flights = LocalityFlights::default();
        let first = flights.start_unless_coming(ids(0..10), |_| true, |n| n == 10);
        assert!(first.is_some());
        let mut counted = Vec::new();
        let mut ask = |missing: &dyn Fn(&PageId) -> bool| {
            flights
                .start_unless_coming(ids(5..15), missing, |n| {
                    counted.push(n);
                    n > 7
                })
                .is_some()
        };
        assert!(!ask(&|_| true), "half of them are coming");
        drop(first);
        let arrived = ids(0..10);
        assert!(!ask(&|id| !arrived.contains(id)), "half of them came");
        assert!(ask(&|_| true), "gone again from memory: fetched");
        assert_eq!(counted, [5, 5, 10]);
    }

    /// A reader waits for the pages it wants from a flight, not for the whole flight: it is
    /// done once a part brought them, and a reader of pages the flight never brings is done
    /// when it ends.
    #[tokio::test]
    async fn a_reader_waits_for_its_pages_not_for_the_whole_flight() {
        let flights = LocalityFlights::default();
        let there = std::sync::Mutex::new(HashSet::new());
        let is_there = |id: &PageId| there.lock().unwrap().contains(id);
        let flight = flights
            .start_unless_coming(ids(0..10), |_| true, |_| true)
            .unwrap();
        let wanted = ids(2..4);
        let waiting = flights.wait_for(wanted.iter(), is_there);
        tokio::pin!(waiting);
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(20), &mut waiting)
                .await
                .is_err(),
            "done before its pages came"
        );
        there.lock().unwrap().extend(ids(0..5));
        flight.progressed();
        assert!(waiting.await, "it waited for a flight");

        let never = ids(8..9);
        let waiting = flights.wait_for(never.iter(), is_there);
        tokio::pin!(waiting);
        flight.progressed();
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(20), &mut waiting)
                .await
                .is_err(),
            "done before its page came or the flight ended"
        );
        drop(flight);
        assert!(waiting.await);
    }
}
