//! The peer tier between two stores over one cold tier: a destination that holds nothing reads a
//! checkpoint's pages from the source's local tier instead of the cold tier, checks each one,
//! and falls back to the cold tier for what a peer cannot serve or serves wrong.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use pagestore::peer::{PeerFetch, PeerTier};
use pagestore::{PageId, PageStore, StoreConfig};
use testkit::image::{assert_same_dir, write_image_dir};

/// How a test peer answers.
#[derive(Clone, Copy)]
enum Behaviour {
    Honest,
    /// Flips a byte of every page it sends.
    Corrupt,
    /// Cannot be reached.
    Down,
}

/// Another store's local tier as a peer.
struct StorePeer {
    store: Arc<PageStore>,
    behaviour: Behaviour,
}

impl PeerTier for StorePeer {
    fn name(&self) -> &str {
        "test peer"
    }

    fn fetch<'a>(&'a self, ids: &'a [PageId]) -> PeerFetch<'a> {
        Box::pin(async move {
            if let Behaviour::Down = self.behaviour {
                return Err("connection refused".into());
            }
            let local = self.store.local().ok_or("no local tier")?;
            Ok(ids
                .iter()
                .map(|id| {
                    let (codec, mut data) = local.get(id).ok()??;
                    if let Behaviour::Corrupt = self.behaviour {
                        let last = data.len() - 1;
                        data[last] ^= 0xff;
                    }
                    Some((codec, Bytes::from(data)))
                })
                .collect())
        })
    }
}

/// A store at `home` over the cold tier of `cold_of` (a store home).
async fn open_over(home: &Path, cold_of: &Path) -> PageStore {
    let mut config = StoreConfig::embedded(home);
    config.cold = StoreConfig::embedded(cold_of).cold;
    PageStore::open(&config).await.unwrap()
}

async fn moved_with(behaviour: Behaviour) -> (Arc<PageStore>, PageStore, tempfile::TempDir) {
    let home = tempfile::tempdir().unwrap();
    let src = home.path().join("src");
    // 600 incompressible pages.
    let pages: Vec<(u8, u64)> = (0..600).map(|i| (4, i)).collect();
    write_image_dir(&src, &pages, 2);
    let source = Arc::new(
        PageStore::open(&StoreConfig::embedded(&home.path().join("a")))
            .await
            .unwrap(),
    );
    let report = source
        .ingest_with("web", &src, &criu_image::ingest_options())
        .await
        .unwrap();
    source.local_settled().await.unwrap();
    let dest = open_over(&home.path().join("b"), &home.path().join("a")).await;
    let peer = StorePeer {
        store: source.clone(),
        behaviour,
    };
    dest.peers()
        .add("web", Arc::new(peer), Duration::from_secs(60));
    let out = home.path().join("out");
    dest.materialize(&report.checkpoint, &out).await.unwrap();
    assert_same_dir(&src, &out);
    (source, dest, home)
}

#[tokio::test]
async fn a_destination_reads_what_a_peer_holds_from_it_not_from_the_cold_tier() {
    let (_source, dest, _home) = moved_with(Behaviour::Honest).await;
    let c = dest.counters();
    assert_eq!(c.peer_pages.load(Ordering::Relaxed), 600);
    assert_eq!(c.cold_pages.load(Ordering::Relaxed), 0);
    assert_eq!(c.cold_requests.load(Ordering::Relaxed), 0);
    assert_eq!(c.peer_corrupt.load(Ordering::Relaxed), 0);
    // Cached on the way: a second read is local, and the peer is not asked again.
    dest.local_settled().await.unwrap();
    assert_eq!(dest.local().unwrap().usage().unwrap().0, 600);
    assert!(dest.peers().remove("web"));
}

#[tokio::test]
async fn a_peer_that_sends_bad_pages_or_cannot_answer_leaves_them_to_the_cold_tier() {
    let (_source, dest, _home) = moved_with(Behaviour::Corrupt).await;
    let c = dest.counters();
    assert_eq!(c.peer_pages.load(Ordering::Relaxed), 0);
    assert_eq!(c.peer_corrupt.load(Ordering::Relaxed), 600);
    assert_eq!(c.cold_pages.load(Ordering::Relaxed), 600);

    let (_source, dest, _home) = moved_with(Behaviour::Down).await;
    let c = dest.counters();
    assert!(c.peer_requests.load(Ordering::Relaxed) >= 1);
    assert_eq!(c.peer_pages.load(Ordering::Relaxed), 0);
    assert_eq!(c.cold_pages.load(Ordering::Relaxed), 600);
}
