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
//! fault served from the local disk costs microseconds; reading ahead there would cost more).

use std::collections::HashSet;
use std::sync::Arc;

use pagestore::read::ReadPriority;
use pagestore::{FileEntry, PageId, PageSpan, PageStore};
use tracing::debug;

/// How many pages on each side of a cold fault its read-ahead looks at, at most (2 MiB of the
/// image each way: redis's burst spanned 1.9 MiB).
const READAHEAD_REACH: usize = 512;

/// When the page a fault reads at `offset` is in no tier of this host, starts fetching the
/// pages of `file` around it into memory (`budget` bytes as stored at most), beside the
/// fault's own read.
pub(crate) fn read_ahead_of_fault(
    store: &Arc<PageStore>,
    file: &FileEntry,
    offset: u64,
    size: u32,
    budget: u64,
) {
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
        READAHEAD_REACH,
        budget,
        stored,
        |id| store.hot().contains(id),
    );
    if ahead.is_empty() {
        return;
    }
    debug!(file = %file.name, page = faulted.start, pages = ahead.len(), "reading ahead of a cold fault");
    let store = store.clone();
    tokio::spawn(async move {
        if let Err(e) = store.prefetch_at(&ahead, ReadPriority::Ahead).await {
            debug!(error = %e, "read-ahead failed; the faults read their own pages");
        }
    });
}

/// The pages of a paged file to read ahead of a fault of `pages[first..=last]`: outward from
/// the faulted ones, alternately after and before them, at most `reach` on each side, each
/// page once, none that is zero or `skip` (already in memory), until the stored bytes of the
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
) -> Vec<PageId> {
    let mut taken = Vec::new();
    let mut seen: HashSet<PageId> = pages
        .get(first..=last.min(pages.len().saturating_sub(1)))
        .unwrap_or_default()
        .iter()
        .copied()
        .collect();
    let mut spent = 0u64;
    for step in 1..=reach {
        let after = last.checked_add(step).filter(|&i| i < pages.len());
        let before = first.checked_sub(step);
        if after.is_none() && before.is_none() {
            break;
        }
        for i in [after, before].into_iter().flatten() {
            let id = pages[i];
            if id.is_zero() || skip(&id) || !seen.insert(id) {
                continue;
            }
            let Some(bytes) = stored(&id) else { continue };
            if spent + bytes > budget {
                return taken;
            }
            spent += bytes;
            taken.push(id);
        }
    }
    taken
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
    fn the_window_grows_outward_from_the_fault_within_its_budget() {
        // Pages 0..10; page 6 is zero, page 3 repeats page 4's content.
        let mut pages: Vec<PageId> = (0..10).map(id).collect();
        pages[6] = PageId::ZERO;
        pages[3] = pages[4];
        let all = |_: &PageId| Some(100);
        let none = |_: &PageId| false;
        // A fault of pages 4..=5: 6 is zero, 3 the faulted page's content; then 7, 2, 8, 1, 9, 0.
        let w = window(&pages, 4, 5, 10, u64::MAX, all, none);
        assert_eq!(w, [7, 2, 8, 1, 9, 0].map(|i| pages[i]));
        // The budget stops it: three pages of 100 bytes.
        assert_eq!(
            window(&pages, 4, 5, 10, 350, all, none),
            [7, 2, 8].map(|i| pages[i])
        );
        // The reach bounds each side.
        assert_eq!(
            window(&pages, 4, 5, 2, u64::MAX, all, none),
            [7, 2].map(|i| pages[i])
        );
        // Pages in memory and pages the store does not know are passed over.
        let in_memory = |p: &PageId| *p == pages[7];
        let unknown = |p: &PageId| (*p != pages[8]).then_some(100);
        assert_eq!(
            window(&pages, 4, 5, 10, u64::MAX, unknown, in_memory),
            [2, 1, 9, 0].map(|i| pages[i])
        );
        // At the ends of the file.
        assert_eq!(
            window(&pages, 0, 0, 3, u64::MAX, all, none),
            [1, 2, 3].map(|i| pages[i])
        );
        assert_eq!(
            window(&pages, 9, 9, 2, u64::MAX, all, none),
            [8, 7].map(|i| pages[i])
        );
    }
}
