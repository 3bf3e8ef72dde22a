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
//!
//! A page nobody read for a while is dropped ([`HotTier::drop_unread`]): the tier is for pages
//! read again soon (a swap-in right behind its swap-out, tenants restored side by side), and on
//! a dense host whose tenants all sleep, a full tier would be memory held against idle tenants
//! (256 MiB by default, ~260 KiB each of 1000). The local tier's files, in the kernel's page
//! cache, which it reclaims under pressure, serve those pages next.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::page::{PageId, PAGE_SIZE};

struct Slot {
    id: PageId,
    page: Bytes,
    referenced: bool,
    /// When it was last read or cached, in seconds of the tier's clock ([`HotTier::now_s`]).
    touched_s: u32,
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
    /// Pages dropped because nobody read them for a while ([`HotTier::drop_unread`]).
    pub dropped_unread: AtomicU64,
}

pub struct HotTier {
    capacity: usize,
    clock: Mutex<Clock>,
    /// The tier's clock starts here.
    started: Instant,
    pub counters: HotCounters,
}

impl HotTier {
    /// A tier of at most `max_bytes` of pages (0 disables it).
    pub fn new(max_bytes: u64) -> HotTier {
        HotTier {
            capacity: (max_bytes / PAGE_SIZE as u64) as usize,
            clock: Mutex::new(Clock::default()),
            started: Instant::now(),
            counters: HotCounters::default(),
        }
    }

    /// Seconds since the tier was made (a page's age is kept to the second: 4 bytes a slot).
    fn now_s(&self) -> u32 {
        u32::try_from(self.started.elapsed().as_secs()).unwrap_or(u32::MAX)
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
        let now = self.now_s();
        let mut clock = self.lock();
        let i = *clock.index.get(id)?;
        let slot = &mut clock.slots[i];
        slot.referenced = true;
        slot.touched_s = now;
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
        let now = self.now_s();
        let mut clock = self.lock();
        let mut slots = Vec::with_capacity(ids.len());
        for id in ids {
            slots.push(*clock.index.get(id)?);
        }
        for &i in &slots {
            let slot = &mut clock.slots[i];
            slot.referenced = true;
            slot.touched_s = now;
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
        let now = self.now_s();
        let mut clock = self.lock();
        if let Some(&i) = clock.index.get(&id) {
            let slot = &mut clock.slots[i];
            slot.referenced = true;
            slot.touched_s = now;
            return;
        }
        let slot = Slot {
            id,
            page: make(),
            referenced: false,
            touched_s: now,
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

    /// Drops every page neither read nor cached for at least `unread_for` (to the second), and
    /// the tier's bookkeeping with them once it holds under half what it did; how many went.
    /// One pass under the lock over every slot: call it every few seconds, not per read.
    pub fn drop_unread(&self, unread_for: Duration) -> usize {
        self.drop_unread_at(self.now_s(), unread_for)
    }

    fn drop_unread_at(&self, now_s: u32, unread_for: Duration) -> usize {
        let limit = u32::try_from(unread_for.as_secs()).unwrap_or(u32::MAX);
        let stale = |slot: &Slot| now_s.saturating_sub(slot.touched_s) >= limit;
        let mut clock = self.lock();
        if !clock.slots.iter().any(stale) {
            return 0;
        }
        let before = clock.slots.len();
        clock.slots.retain(|slot| !stale(slot));
        let clock = &mut *clock;
        clock.index.clear();
        for (i, slot) in clock.slots.iter().enumerate() {
            clock.index.insert(slot.id, i);
        }
        if clock.slots.len() < before / 2 {
            clock.slots.shrink_to_fit();
            clock.index.shrink_to_fit();
        }
        clock.hand = 0;
        let dropped = before - clock.slots.len();
        self.counters
            .dropped_unread
            .fetch_add(dropped as u64, Ordering::Relaxed);
        dropped
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
    fn pages_unread_for_long_enough_are_dropped_and_a_read_or_a_new_copy_keeps_one() {
        let hot = HotTier::new(8 * PAGE_SIZE as u64);
        let pages: Vec<_> = (1..=4).map(page).collect();
        for (id, p) in &pages {
            hot.insert(*id, p);
        }
        let t0 = hot.now_s();
        // Ten seconds on: page 1 is read, page 2 cached again; 3 and 4 are not touched.
        let stamp = |id: &PageId, s: u32| {
            let mut clock = hot.lock();
            let i = clock.index[id];
            clock.slots[i].touched_s = s;
        };
        for (id, _) in &pages {
            stamp(id, t0);
        }
        stamp(&pages[0].0, t0 + 10);
        stamp(&pages[1].0, t0 + 10);
        let ttl = Duration::from_secs(30);
        assert_eq!(
            hot.drop_unread_at(t0 + 29, ttl),
            0,
            "nothing is 30 s old yet"
        );
        assert_eq!(hot.drop_unread_at(t0 + 30, ttl), 2);
        assert!(hot.contains(&pages[0].0) && hot.contains(&pages[1].0));
        assert!(!hot.contains(&pages[2].0) && !hot.contains(&pages[3].0));
        assert_eq!(hot.len(), 2);
        assert_eq!(hot.counters.dropped_unread.load(Ordering::Relaxed), 2);
        // The tier still works as a bounded CLOCK after the pass: the survivors are found by
        // their ids and new pages fill it up to its bound.
        assert_eq!(hot.peek(&pages[1].0).as_deref(), Some(&pages[1].1[..]));
        let more: Vec<_> = (10..=20).map(page).collect();
        for (id, p) in &more {
            hot.insert(*id, p);
        }
        assert_eq!(hot.len(), 8);
        assert_eq!(hot.drop_unread_at(t0 + 29, ttl), 0);
        assert_eq!(hot.drop_unread(Duration::ZERO), 8, "a ttl of 0 s drops all");
        assert!(hot.is_empty());
    }

    #[test]
    fn zero_bytes_disables_it() {
        let hot = HotTier::new(0);
        let (id, p) = page(1);
        hot.insert(id, &p);
        assert!(hot.get(&id).is_none() && hot.is_empty());
    }
}
