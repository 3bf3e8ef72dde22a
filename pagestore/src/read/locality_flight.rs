//! Locality packs being fetched, and the pages each is expected to bring: a reader of one of those
//! pages waits for the fetch instead of sending its own GET, as it would for a cold range in
//! flight ([`super::flight`]). See [`crate::locality`] for what a locality pack is. A peer's
//! page requests ([`crate::peer`]) are listed here too, so that readers of the same pages ask a
//! peer once.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use crate::page::PageId;

struct Waiting {
    id: u64,
    pages: Arc<HashSet<PageId>>,
    done: watch::Receiver<bool>,
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
    _done: watch::Sender<bool>,
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
        let (tx, rx) = watch::channel(false);
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        flights.push(Waiting {
            id,
            pages: Arc::new(pages),
            done: rx,
        });
        FlightEnd {
            flights: self,
            id,
            _done: tx,
        }
    }

    /// Waits for every locality flight expected to bring one of `ids`; true if there was one.
    pub(crate) async fn wait_for<'a>(&self, ids: impl Iterator<Item = &'a PageId> + Clone) -> bool {
        let waits: Vec<watch::Receiver<bool>> = {
            let flights = self.flights.lock().unwrap_or_else(|p| p.into_inner());
            if flights.is_empty() {
                return false;
            }
            flights
                .iter()
                .filter(|w| ids.clone().any(|id| w.pages.contains(id)))
                .map(|w| w.done.clone())
                .collect()
        };
        for mut rx in waits.iter().cloned() {
            // Err: the flight ended (its sender is gone), which is what we wait for.
            let _ = rx.wait_for(|done| *done).await;
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
}
