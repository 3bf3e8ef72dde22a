//! The hot tier: decoded, verified pages in memory, bounded in bytes.
//!
//! It exists so that pages shared by concurrent restores (and re-read by one restore) cost neither
//! a disk read nor a decompression. Eviction is CLOCK (second chance): every page is 4 KiB, so
//! the tier is a ring of fixed slots; a hit only sets the slot's reference bit (no list to
//! reorder under the lock that every reader takes), and the hand evicts the first page that was
//! not referenced since it last passed. That approximates LRU, and a page read once by a sequential
//! scan (a whole-checkpoint materialize) goes before pages that were read twice.
//!
//! Pages are handed out as shared immutable buffers ([`Bytes`]): a hit costs a reference count,
//! not a copy, and the pager's front ends reply from the very bytes the tier holds.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use bytes::Bytes;

use crate::page::{PageId, PAGE_SIZE};

struct Slot {
    id: PageId,
    page: Bytes,
    referenced: bool,
}

#[derive(Default)]
struct Clock {
    slots: Vec<Slot>,
    index: HashMap<PageId, usize>,
    hand: usize,
}

/// Hits, misses and evictions of the hot tier.
#[derive(Debug, Default)]
pub struct HotCounters {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub evictions: AtomicU64,
}

pub struct HotTier {
    capacity: usize,
    clock: Mutex<Clock>,
    pub counters: HotCounters,
}

impl HotTier {
    /// A tier of at most `max_bytes` of pages (0 disables it).
    pub fn new(max_bytes: u64) -> HotTier {
        HotTier {
            capacity: (max_bytes / PAGE_SIZE as u64) as usize,
            clock: Mutex::new(Clock::default()),
            counters: HotCounters::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Clock> {
        self.clock.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The page, if held (counted as a hit or a miss).
    pub fn get(&self, id: &PageId) -> Option<Bytes> {
        let found = self.peek(id);
        let c = if found.is_some() {
            &self.counters.hits
        } else {
            &self.counters.misses
        };
        c.fetch_add(1, Ordering::Relaxed);
        found
    }

    /// Like [`HotTier::get`] but not counted.
    pub fn peek(&self, id: &PageId) -> Option<Bytes> {
        if self.capacity == 0 {
            return None;
        }
        let mut clock = self.lock();
        let i = *clock.index.get(id)?;
        let slot = &mut clock.slots[i];
        slot.referenced = true;
        Some(slot.page.clone())
    }

    /// Every page of `ids`, in order, if the tier holds them all (one lock; counted as hits);
    /// `None` otherwise, counted as nothing.
    pub fn get_all(&self, ids: &[PageId]) -> Option<Vec<Bytes>> {
        self.with_slots(ids, |clock, slots| {
            slots.iter().map(|&i| clock.slots[i].page.clone()).collect()
        })
    }

    /// Calls `f` with the bytes of every page of `ids`, in order, if the tier holds them all
    /// (counted as hits), under one lock and without copying them; `None` otherwise, having
    /// called nothing. For writing many pages straight out of the tier (a whole restore's image
    /// files): every reader waits while `f` runs, so give it a bounded chunk.
    pub fn with_pages<R>(&self, ids: &[PageId], f: impl FnOnce(&[&[u8]]) -> R) -> Option<R> {
        self.with_slots(ids, |clock, slots| {
            let pages: Vec<&[u8]> = slots.iter().map(|&i| &*clock.slots[i].page).collect();
            f(&pages)
        })
    }

    /// Calls `f` under the lock with the slots of every page of `ids` (each marked referenced,
    /// counted as a hit) if the tier holds them all; `None` otherwise, having called nothing.
    fn with_slots<R>(&self, ids: &[PageId], f: impl FnOnce(&Clock, &[usize]) -> R) -> Option<R> {
        if self.capacity == 0 {
            return None;
        }
        let mut clock = self.lock();
        let mut slots = Vec::with_capacity(ids.len());
        for id in ids {
            slots.push(*clock.index.get(id)?);
        }
        for &i in &slots {
            clock.slots[i].referenced = true;
        }
        let out = f(&clock, &slots);
        self.counters
            .hits
            .fetch_add(ids.len() as u64, Ordering::Relaxed);
        Some(out)
    }

    /// How many pages it holds at most.
    pub fn capacity_pages(&self) -> usize {
        self.capacity
    }

    pub fn contains(&self, id: &PageId) -> bool {
        self.capacity > 0 && self.lock().index.contains_key(id)
    }

    /// Whether the tier holds every page of `ids` (one lock; not counted, not referenced).
    pub fn contains_all<'a>(&self, ids: impl IntoIterator<Item = &'a PageId>) -> bool {
        if self.capacity == 0 {
            return false;
        }
        let clock = self.lock();
        ids.into_iter().all(|id| clock.index.contains_key(id))
    }

    /// The pages of `ids` the tier does not hold, in their order (one lock; not counted, not
    /// referenced).
    pub fn missing<'a>(&self, ids: impl IntoIterator<Item = &'a PageId>) -> Vec<PageId> {
        if self.capacity == 0 {
            return ids.into_iter().copied().collect();
        }
        let clock = self.lock();
        ids.into_iter()
            .filter(|id| !clock.index.contains_key(id))
            .copied()
            .collect()
    }

    /// Caches a copy of a page that has been checked against its id.
    pub fn insert(&self, id: PageId, page: &[u8]) {
        self.insert_with(id, page.len(), || Bytes::copy_from_slice(page));
    }

    /// Caches a page that has been checked against its id, sharing its buffer (no copy).
    pub fn insert_shared(&self, id: PageId, page: Bytes) {
        self.insert_with(id, page.len(), || page);
    }

    /// Caches the page `make` returns (`len` bytes), made only if the tier takes it.
    fn insert_with(&self, id: PageId, len: usize, make: impl FnOnce() -> Bytes) {
        if self.capacity == 0 || len != PAGE_SIZE {
            return;
        }
        let mut clock = self.lock();
        if let Some(&i) = clock.index.get(&id) {
            clock.slots[i].referenced = true;
            return;
        }
        let slot = Slot {
            id,
            page: make(),
            referenced: false,
        };
        if clock.slots.len() < self.capacity {
            let i = clock.slots.len();
            clock.slots.push(slot);
            clock.index.insert(id, i);
            return;
        }
        // Advance the hand to the first slot not referenced since it last passed.
        loop {
            let hand = clock.hand;
            clock.hand = (hand + 1) % clock.slots.len();
            if clock.slots[hand].referenced {
                clock.slots[hand].referenced = false;
                continue;
            }
            let old = std::mem::replace(&mut clock.slots[hand], slot);
            clock.index.remove(&old.id);
            clock.index.insert(id, hand);
            self.counters.evictions.fetch_add(1, Ordering::Relaxed);
            return;
        }
    }

    /// Pages held.
    pub fn len(&self) -> usize {
        self.lock().slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The configured bound in bytes.
    pub fn max_bytes(&self) -> u64 {
        (self.capacity * PAGE_SIZE) as u64
    }

    /// Drops every page (for cold-start measurements).
    pub fn clear(&self) {
        *self.lock() = Clock::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(i: u8) -> (PageId, Vec<u8>) {
        let p = vec![i; PAGE_SIZE];
        (PageId::of(&p), p)
    }

    #[test]
    fn bounded_and_second_chance() {
        let hot = HotTier::new(3 * PAGE_SIZE as u64);
        let pages: Vec<_> = (1..=5).map(page).collect();
        for (id, p) in &pages[..3] {
            hot.insert(*id, p);
        }
        // Page 1 is read again: it survives the next two insertions, pages 2 and 3 do not.
        assert_eq!(hot.get(&pages[0].0).as_deref(), Some(&pages[0].1[..]));
        hot.insert(pages[3].0, &pages[3].1);
        hot.insert(pages[4].0, &pages[4].1);
        assert_eq!(hot.len(), 3);
        assert!(hot.contains(&pages[0].0));
        assert!(!hot.contains(&pages[1].0) && !hot.contains(&pages[2].0));
        assert!(hot.contains(&pages[3].0) && hot.contains(&pages[4].0));
        assert_eq!(hot.counters.evictions.load(Ordering::Relaxed), 2);
        hot.clear();
        assert!(hot.is_empty() && hot.get(&pages[0].0).is_none());
    }

    #[test]
    fn with_pages_lends_all_pages_in_order_or_none() {
        let hot = HotTier::new(4 * PAGE_SIZE as u64);
        let pages: Vec<_> = (1..=3).map(page).collect();
        for (id, p) in &pages[..2] {
            hot.insert(*id, p);
        }
        let ids = [pages[1].0, pages[0].0, pages[1].0];
        let firsts = hot.with_pages(&ids, |got| got.iter().map(|p| p[0]).collect::<Vec<_>>());
        assert_eq!(firsts, Some(vec![2, 1, 2]));
        assert_eq!(hot.counters.hits.load(Ordering::Relaxed), 3);
        let mut called = false;
        assert!(hot
            .with_pages(&[pages[0].0, pages[2].0], |_| called = true)
            .is_none());
        assert!(!called, "nothing is lent unless every page is held");
    }

    #[test]
    fn pages_are_shared_not_copied_and_get_all_is_all_or_nothing() {
        let hot = HotTier::new(4 * PAGE_SIZE as u64);
        let (a, b) = (page(1), page(2));
        hot.insert_shared(a.0, Bytes::from(a.1.clone()));
        hot.insert(b.0, &b.1);
        let first = hot.get(&a.0).unwrap();
        assert_eq!(first, a.1);
        assert_eq!(
            first.as_ptr(),
            hot.peek(&a.0).unwrap().as_ptr(),
            "one buffer, handed out twice"
        );
        let both = hot.get_all(&[b.0, a.0]).unwrap();
        assert_eq!((both[0][0], both[1][0]), (2, 1));
        assert_eq!(hot.counters.hits.load(Ordering::Relaxed), 3);
        assert!(hot.get_all(&[a.0, page(3).0]).is_none());
        assert_eq!(
            hot.counters.hits.load(Ordering::Relaxed),
            3,
            "a partial answer counts nothing"
        );
        assert_eq!(hot.counters.misses.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn missing_names_the_pages_not_held_in_order_and_counts_nothing() {
        let hot = HotTier::new(4 * PAGE_SIZE as u64);
        let pages: Vec<_> = (1..=3).map(page).collect();
        hot.insert(pages[1].0, &pages[1].1);
        let ids = [pages[2].0, pages[1].0, pages[0].0];
        assert_eq!(hot.missing(&ids), vec![pages[2].0, pages[0].0]);
        assert_eq!(hot.counters.hits.load(Ordering::Relaxed), 0);
        assert_eq!(HotTier::new(0).missing(&ids), ids.to_vec());
    }

    #[test]
    fn zero_bytes_disables_it() {
        let hot = HotTier::new(0);
        let (id, p) = page(1);
        hot.insert(id, &p);
        assert!(hot.get(&id).is_none() && hot.is_empty());
    }
}
