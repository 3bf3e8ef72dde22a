//! A bounded in-memory cache of decoded pages, shared by every export and connection of a server.
//!
//! The store's fastest tier still costs a KV lookup, an lz4 decode and a BLAKE3 check per page;
//! an NBD client re-reads the same pages often (filesystem metadata, random-read benchmarks), so
//! verified pages are kept here as `Bytes` and sent to sockets without copying. Sharded by page id
//! to keep lock hold times short under many connections; eviction is first-in first-out per shard,
//! which is enough for a cache in front of a content-addressed store (pages never go stale).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use bytes::Bytes;
use pagestore::PageId;

const SHARDS: usize = 16;

#[derive(Default)]
struct Shard {
    pages: HashMap<PageId, Bytes>,
    order: VecDeque<PageId>,
}

pub struct PageCache {
    shards: Vec<Mutex<Shard>>,
    per_shard: usize,
}

impl PageCache {
    /// A cache holding at most about `capacity` pages (0 disables it).
    pub fn new(capacity: usize) -> PageCache {
        PageCache {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            per_shard: capacity.div_ceil(SHARDS),
        }
    }

    fn shard(&self, id: &PageId) -> &Mutex<Shard> {
        // Page ids are uniformly random (BLAKE3), so any byte picks a shard fairly.
        &self.shards[id.0[0] as usize % SHARDS]
    }

    pub fn get(&self, id: &PageId) -> Option<Bytes> {
        let shard = self.shard(id).lock().unwrap_or_else(|p| p.into_inner());
        shard.pages.get(id).cloned()
    }

    pub fn insert(&self, id: PageId, page: Bytes) {
        if self.per_shard == 0 {
            return;
        }
        let mut shard = self.shard(&id).lock().unwrap_or_else(|p| p.into_inner());
        if shard.pages.insert(id, page).is_none() {
            shard.order.push_back(id);
            while shard.order.len() > self.per_shard {
                if let Some(old) = shard.order.pop_front() {
                    shard.pages.remove(&old);
                }
            }
        }
    }

    /// Pages held now.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).pages.len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> PageId {
        let mut b = [n; 32];
        b[0] = 0; // all in one shard
        PageId(b)
    }

    #[test]
    fn keeps_at_most_its_capacity_evicting_oldest_first() {
        let cache = PageCache::new(2 * SHARDS);
        for n in 1..=3 {
            cache.insert(id(n), Bytes::from(vec![n; 4]));
        }
        assert!(cache.get(&id(1)).is_none());
        assert_eq!(cache.get(&id(3)).as_deref(), Some(&[3u8; 4][..]));
        assert_eq!(cache.len(), 2);
        let off = PageCache::new(0);
        off.insert(id(1), Bytes::new());
        assert!(off.is_empty());
    }
}
