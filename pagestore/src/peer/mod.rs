//! The peer tier: another worker's local tier, read over the network, between this machine's
//! tiers and the cold tier.
//!
//! It exists for moves between workers: the source of a move holds every page of the tenant's
//! checkpoint on its local disk, one LAN round trip away, while the cold tier is tens of
//! milliseconds per request away and is billed per byte. A peer is registered for as long as it
//! is useful (a move's restore, with a bound in time) and asked, in one request per read, for
//! the pages this machine misses; what it does not hold, or cannot serve, comes from the cold
//! tier as before. A peer is never trusted: each page it sends is decoded and checked against
//! its id like any other tier's, and a peer that fails is skipped, not fatal.
//!
//! How the pages travel is [`wire`]; the HTTP transport is the worker's (a peer is another
//! worker's API), behind the [`PeerTier`] trait.

pub mod wire;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::BoxFuture;

use crate::codec::Codec;
use crate::page::PageId;

/// Pages as a peer holds them: for each id asked, its encoding and encoded bytes, or `None`
/// when the peer does not hold it.
pub type PeerPages = Vec<Option<(Codec, Bytes)>>;

/// What [`PeerTier::fetch`] returns.
pub type PeerFetch<'a> = BoxFuture<'a, Result<PeerPages, String>>;

/// A source of encoded pages: another machine's local tier.
pub trait PeerTier: Send + Sync {
    /// What logs and errors call it (e.g. `worker w1 (10.0.0.11:7070)`).
    fn name(&self) -> &str;

    /// The pages `ids`, as many as it holds, in the order asked; an error when it cannot answer
    /// at all.
    fn fetch<'a>(&'a self, ids: &'a [PageId]) -> PeerFetch<'a>;
}

struct PeerEntry {
    key: String,
    peer: Arc<dyn PeerTier>,
    until: Instant,
}

/// The peers reads may ask now, each registered under a key (the tenant it serves) until a
/// deadline.
#[derive(Default)]
pub struct Peers {
    entries: Mutex<Vec<PeerEntry>>,
}

impl Peers {
    /// Asks `peer` for missing pages from now for at most `lasting`, under `key` (a peer of the
    /// same key is replaced).
    pub fn add(&self, key: &str, peer: Arc<dyn PeerTier>, lasting: Duration) {
        let mut entries = self.lock();
        entries.retain(|e| e.key != key);
        entries.push(PeerEntry {
            key: key.to_string(),
            peer,
            until: Instant::now() + lasting,
        });
    }

    /// Stops asking the peer registered under `key`; whether there was one.
    pub fn remove(&self, key: &str) -> bool {
        let mut entries = self.lock();
        let before = entries.len();
        entries.retain(|e| e.key != key);
        entries.len() != before
    }

    /// The peers to ask now (those past their deadline are forgotten).
    pub fn live(&self) -> Vec<Arc<dyn PeerTier>> {
        let now = Instant::now();
        let mut entries = self.lock();
        entries.retain(|e| e.until > now);
        entries.iter().map(|e| e.peer.clone()).collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<PeerEntry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Named(&'static str);

    impl PeerTier for Named {
        fn name(&self) -> &str {
            self.0
        }
        fn fetch<'a>(&'a self, ids: &'a [PageId]) -> PeerFetch<'a> {
            Box::pin(async move { Ok(vec![None; ids.len()]) })
        }
    }

    #[test]
    fn a_peer_is_asked_until_removed_or_its_deadline() {
        let peers = Peers::default();
        peers.add("a", Arc::new(Named("w1")), Duration::from_secs(60));
        peers.add("b", Arc::new(Named("w2")), Duration::ZERO);
        let names: Vec<String> = peers.live().iter().map(|p| p.name().into()).collect();
        assert_eq!(names, ["w1"]);
        // The same key again replaces it.
        peers.add("a", Arc::new(Named("w3")), Duration::from_secs(60));
        assert_eq!(peers.live()[0].name(), "w3");
        assert!(peers.remove("a"));
        assert!(!peers.remove("a"));
        assert!(peers.live().is_empty());
    }
}
