//! Fault read-ahead: the pages around a fault that no tier of this host held, fetched with it.
//!
//! CRIU's lazy-pages daemon serves a restored tenant's faults one at a time, so a burst of faults
//! outside what was fetched ahead (the ActiveSet, the locality pack) costs one cold round trip
//! each, one after another. Such misses cluster in the image: redis's one-off burst, ten seconds
//! into its life, faulted seven pages of which six lay within 2 MiB of each other, five cold
//! round trips in a row (bench/results/restore-written). So a fault whose page is in no tier of
//! this host also fetches the image's pages around it, nearest first, up to a budget of stored
//! bytes, on requests of their own beside the fault's: the next misses nearby find their pages
//! in memory or arriving. Only in the faults phase, and only for a miss of every local tier (a
//! fault served from the local disk costs microseconds; reading ahead there would cost more)
//! whose page no cold read in progress brings; pages in memory or arriving are not read again.
//!
//! Each further cold fault of the same restore reads twice as far as the one before, up to
//! [`MAX_GROWTH`] times the first: a tenant that keeps missing works in a region nothing brought
//! in yet. The large heap's first request after a wake-up without a set faulted ~15 pages of
//! the interpreter spread over its image's last 6 MiB, beyond the fill's reach for seconds (the
//! fill goes in image order, behind 256 MiB of ballast): with a fixed 1 MiB each fault but the
//! nearest was a cold round trip of its own, five to nine in a row. The pages read ahead are
//! ones the fill fetches anyway once it runs (it goes on after a few misses of an installed
//! set, `worker::swap_in::fill`), so reading further changes when they come, not how much.

use std::collections::HashSet;
use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use pagestore::read::ReadPriority;
use pagestore::{FileEntry, PageId, PageSpan, PageStore};
use tracing::debug;

/// How many pages on each side of a restore's first cold fault its read-ahead looks at, at
/// most (2 MiB of the image each way: redis's burst spanned 1.9 MiB).
const READAHEAD_REACH: usize = 512;

/// How many times the first cold fault's budget and reach a later one's grow to at most
/// (doubling with each cold fault: 1, 2, 4, 8).
const MAX_GROWTH: u64 = 8;

/// The read-ahead of one mount's faults: its budget grows with the cold faults it has seen.
pub(crate) struct FaultReadAhead {
    /// Bytes as stored that the first cold fault reads ahead; 0: none.
    first_budget: u64,
    /// Cold faults of this mount so far, but those whose page was arriving or that a
    /// read-ahead had already covered.
    cold_faults: AtomicU32,
    /// What the mount's read-aheads covered so far, by paged file: a fault in there finds its
    /// page arriving, and neither reads ahead nor counts.
    covered: Mutex<Vec<(String, RangeInclusive<usize>)>>,
}

impl FaultReadAhead {
    pub(crate) fn new(first_budget: u64) -> FaultReadAhead {
        FaultReadAhead {
            first_budget,
            cold_faults: AtomicU32::new(0),
            covered: Mutex::new(Vec::new()),
        }
    }

    /// How many times the first budget the next cold fault reads ahead: doubled with each
    /// one seen, up to [`MAX_GROWTH`].
    fn next_growth(&self) -> u64 {
        let seen = self.cold_faults.fetch_add(1, Ordering::Relaxed);
        1 << seen.min(MAX_GROWTH.ilog2())
    }

    /// Whether an earlier read-ahead of this mount covered page `page` of `file`.
    fn covers(&self, file: &str, page: usize) -> bool {
        let covered = self.covered.lock().unwrap_or_else(|e| e.into_inner());
        covered
            .iter()
            .any(|(f, pages)| f == file && pages.contains(&page))
    }

    fn cover(&self, file: &str, pages: RangeInclusive<usize>) {
        let mut covered = self.covered.lock().unwrap_or_else(|e| e.into_inner());
        covered.push((file.to_string(), pages));
    }

    /// When the page a fault reads at `offset` is in no tier of this host, starts fetching the
    /// pages of `file` around it into memory, beside the fault's own read.
    pub(crate) fn of_fault(
        &self,
        store: &Arc<PageStore>,
        file: &FileEntry,
        offset: u64,
        size: u32,
    ) {
        if self.first_budget == 0 {
            return;
        }
        let pages = file.pages();
        let Some(span) = PageSpan::within(offset, u64::from(size), file.size) else {
            return;
        };
        let faulted = span.pages();
        let Some(id) = pages
            .get(faulted.clone())
            .and_then(|ids| ids.iter().find(|id| !id.is_zero()))
        else {
            return;
        };
        let local = store.local().map(|l| l.get(id));
        if store.hot().contains(id) || matches!(local, Some(Ok(Some(_)))) {
            return;
        }
        // Its page is coming (the fill's GET, or a read-ahead's): the pages around it likely too.
        if store.arriving(id) || self.covers(&file.name, faulted.start) {
            return;
        }
        let growth = self.next_growth();
        // Pages of one frame cost its bytes once.
        let frames = std::cell::RefCell::new(HashSet::new());
        let stored = |id: &PageId| {
            let at = store.catalog().locate(id)?;
            let first = frames.borrow_mut().insert((at.pack, at.offset));
            Some(if first { u64::from(at.len) } else { 0 })
        };
        let ahead = window(
            pages,
            faulted.start,
            faulted.end - 1,
            READAHEAD_REACH * growth as usize,
            self.first_budget * growth,
            stored,
            |id| store.hot().contains(id) || store.arriving(id),
        );
        self.cover(&file.name, ahead.covers);
        let ahead = ahead.ids;
        if ahead.is_empty() {
            return;
        }
        debug!(file = %file.name, page = faulted.start, pages = ahead.len(), growth, "reading ahead of a cold fault");
        let store = store.clone();
        tokio::spawn(async move {
            if let Err(e) = store.prefetch_at(&ahead, ReadPriority::Ahead).await {
                debug!(error = %e, "read-ahead failed; the faults read their own pages");
            }
        });
    }
}

/// What a fault reads ahead ([`window`]).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Window {
    /// The pages to fetch, nearest first.
    pub ids: Vec<PageId>,
    /// The page indices it accounts for: the faulted ones and every page it took or passed
    /// over (zero, in memory, a repeat) on its way out. A later fault in there finds its page
    /// in memory or arriving.
    pub covers: RangeInclusive<usize>,
}

/// The pages of a paged file to read ahead of a fault of `pages[first..=last]`: outward from
/// the faulted ones, alternately after and before them, at most `reach` on each side, each
/// page once, none that is zero or `skip` (in memory or arriving), until the stored bytes of the
/// pages taken (`stored`: a page's bytes in the store; unknown pages are passed over) reach
/// `budget`.
pub(crate) fn window(
    pages: &[PageId],
    first: usize,
    last: usize,
    reach: usize,
    budget: u64,
    stored: impl Fn(&PageId) -> Option<u64>,
    skip: impl Fn(&PageId) -> bool,
) -> Window {
    let last = last.min(pages.len().saturating_sub(1));
    let mut taken = Vec::new();
    let mut seen: HashSet<PageId> = pages
        .get(first..=last)
        .unwrap_or_default()
        .iter()
        .copied()
        .collect();
    let (mut low, mut high) = (first, last);
    let mut spent = 0u64;
    for step in 1..=reach {
        let after = last.checked_add(step).filter(|&i| i < pages.len());
        let before = first.checked_sub(step);
        if after.is_none() && before.is_none() {
            break;
        }
        for i in [after, before].into_iter().flatten() {
            let id = pages[i];
            if !(id.is_zero() || skip(&id) || !seen.insert(id)) {
                let Some(bytes) = stored(&id) else { continue };
                if spent + bytes > budget {
                    return Window {
                        ids: taken,
                        covers: low..=high,
                    };
                }
                spent += bytes;
                taken.push(id);
            }
            low = low.min(i);
            high = high.max(i);
        }
    }
    Window {
        ids: taken,
        covers: low..=high,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u16) -> PageId {
        let mut page = vec![0u8; pagestore::PAGE_SIZE];
        page[..2].copy_from_slice(&n.to_le_bytes());
        page[2] = 1;
        PageId::of(&page)
    }

    #[test]
    fn each_cold_fault_reads_twice_as_far_as_the_one_before_up_to_eight_times() {
        let ahead = FaultReadAhead::new(1 << 20);
        let growth: Vec<u64> = (0..6).map(|_| ahead.next_growth()).collect();
        assert_eq!(growth, [1, 2, 4, 8, 8, 8]);
    }

    #[test]
    fn the_window_grows_outward_from_the_fault_within_its_budget() {
        // Pages 0..10; page 6 is zero, page 3 repeats page 4's content.
        let mut pages: Vec<PageId> = (0..10).map(id).collect();
        pages[6] = PageId::ZERO;
        pages[3] = pages[4];
        let all = |_: &PageId| Some(100);
        let none = |_: &PageId| false;
        // A fault of pages 4..=5: 6 is zero, 3 the faulted page's content; then 7, 2, 8, 1, 9, 0.
        let w = window(&pages, 4, 5, 10, u64::MAX, all, none);
        assert_eq!(w.ids, [7, 2, 8, 1, 9, 0].map(|i| pages[i]));
        assert_eq!(w.covers, 0..=9);
        // The budget stops it: three pages of 100 bytes.
        assert_eq!(
            window(&pages, 4, 5, 10, 350, all, none),
            Window {
                ids: [7, 2, 8].map(|i| pages[i]).to_vec(),
                // 6 (zero) and 3 (a repeat) passed over; 1 beyond the budget.
                covers: 2..=8,
            }
        );
        // The reach bounds each side.
        assert_eq!(
            window(&pages, 4, 5, 2, u64::MAX, all, none).ids,
            [7, 2].map(|i| pages[i])
        );
        // Pages in memory and pages the store does not know are passed over.
        let in_memory = |p: &PageId| *p == pages[7];
        let unknown = |p: &PageId| (*p != pages[8]).then_some(100);
        assert_eq!(
            window(&pages, 4, 5, 10, u64::MAX, unknown, in_memory).ids,
            [2, 1, 9, 0].map(|i| pages[i])
        );
        // At the ends of the file.
        assert_eq!(
            window(&pages, 0, 0, 3, u64::MAX, all, none).ids,
            [1, 2, 3].map(|i| pages[i])
        );
        assert_eq!(
            window(&pages, 9, 9, 2, u64::MAX, all, none).ids,
            [8, 7].map(|i| pages[i])
        );
    }
}
