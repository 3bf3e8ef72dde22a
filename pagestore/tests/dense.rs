//! Dense cold packs: ingest's lz4 packs recompressed into zstd frames (by gc, and by the
//! background recompression), every page still read by one small ranged GET and checked against
//! its id, and a damaged frame named and never served.
#![allow(clippy::unwrap_used)] // helpers outside #[test] fns

use std::path::Path;
use std::sync::atomic::Ordering;

use pagestore::frame::FRAME_PAGES;
use pagestore::pack::{self, PackId};
use pagestore::{Error, PageId, PageStore, StoreConfig, PAGE_SIZE};
use testkit::image::{assert_same_dir, mixed_pages, write_image_dir};

fn cold_only(home: &Path) -> StoreConfig {
    let mut c = StoreConfig::embedded(home);
    c.local.enabled = false;
    c
}

/// Two generations of one tenant, ingested: returns their image directories.
async fn ingest_two(store: &PageStore, home: &Path) -> Vec<std::path::PathBuf> {
    let mut dirs = Vec::new();
    for g in 1..=2u64 {
        let src = home.join(format!("src{g}"));
        let mut pages = mixed_pages(600, 1);
        // The second generation changes one page in ten.
        if g == 2 {
            for p in pages.iter_mut().step_by(10) {
                p.1 += 77_000_000;
            }
        }
        write_image_dir(&src, &pages, g);
        store
            .ingest_with("web", &src, &criu_image::ingest_options())
            .await
            .unwrap();
        dirs.push(src);
    }
    dirs
}

async fn packs(store: &PageStore) -> Vec<(String, Vec<pack::PackEntry>)> {
    let mut out = Vec::new();
    for obj in store.cold().list("packs/").await.unwrap() {
        let data = store.cold().get(&obj.key).await.unwrap();
        out.push((obj.key.clone(), pack::parse_pack(&obj.key, &data).unwrap()));
    }
    out
}

#[tokio::test]
async fn gc_recompresses_every_pack_and_every_checkpoint_still_reads_from_cold() {
    let home = tempfile::tempdir().unwrap();
    let store = PageStore::open(&StoreConfig::embedded(home.path()))
        .await
        .unwrap();
    let dirs = ingest_two(&store, home.path()).await;
    let before = store.stats().await.unwrap();
    assert!(before.packs_pending > 0 && before.pending_bytes == before.pack_bytes);

    let report = store.gc().await.unwrap();
    assert_eq!(report.packs_recompressed, before.packs_pending);
    let after = store.stats().await.unwrap();
    assert_eq!((after.packs_pending, after.pending_bytes), (0, 0));
    assert_eq!(after.pages_unique, before.pages_unique);
    // (These synthetic pages are text that any codec shrinks to almost nothing and noise that none
    // does; real checkpoints: docs/store-format.md#dense-cold-packs.)
    assert!(
        after.pack_bytes < before.pack_bytes,
        "dense {} bytes vs lz4 {}",
        after.pack_bytes,
        before.pack_bytes
    );
    for (key, entries) in packs(&store).await {
        assert!(!pack::is_fast(&entries), "{key} is still fast");
        assert!(entries
            .iter()
            .all(|e| e.slot.pages() as usize <= FRAME_PAGES));
    }
    // A second gc has nothing left to recompress.
    assert_eq!(store.gc().await.unwrap().packs_recompressed, 0);
    assert!(store.verify().await.unwrap().ok());
    drop(store);

    // From the cold tier alone, in a new process's store.
    let cold = PageStore::open(&cold_only(home.path())).await.unwrap();
    for (c, src) in cold.checkpoints().await.unwrap().iter().zip(&dirs) {
        let out = home.path().join(format!("out{}", c.generation));
        cold.materialize(c, &out).await.unwrap();
        assert_same_dir(src, &out);
    }
}

/// The background recompression runs beside ingests (shared lock) and keeps every page of the
/// packs it rewrites, live or not: an ingest in flight may be deduplicating against any of them.
#[tokio::test]
async fn recompression_keeps_every_page_and_the_store_reads_the_same() {
    let home = tempfile::tempdir().unwrap();
    let store = PageStore::open(&cold_only(home.path())).await.unwrap();
    let dirs = ingest_two(&store, home.path()).await;
    let ids: std::collections::HashSet<PageId> = packs(&store)
        .await
        .into_iter()
        .flat_map(|(_, e)| e.into_iter().map(|e| e.id))
        .collect();
    let r = store.recompress().await.unwrap();
    assert_eq!(r.pages, ids.len() as u64);
    assert!(r.bytes_after < r.bytes_before);
    let after: std::collections::HashSet<PageId> = packs(&store)
        .await
        .into_iter()
        .flat_map(|(_, e)| e.into_iter().map(|e| e.id))
        .collect();
    assert_eq!(after, ids);
    // A pass with nothing to do reads nothing: the packs it found dense or wrote are known.
    let gets = store.cold().counters.gets.load(Ordering::Relaxed);
    assert_eq!(store.recompress().await.unwrap().packs_recompressed, 0);
    assert_eq!(store.cold().counters.gets.load(Ordering::Relaxed), gets);
    // This process's own catalog follows the new packs.
    let c = store.latest("web").await.unwrap().unwrap();
    store.evict_hot();
    let out = home.path().join("out");
    store.materialize(&c, &out).await.unwrap();
    assert_same_dir(&dirs[1], &out);
}

/// A page of a dense pack is read by one ranged GET of its frame: at most 64 KiB.
#[tokio::test]
async fn one_page_is_one_small_ranged_get() {
    let home = tempfile::tempdir().unwrap();
    let store = PageStore::open(&cold_only(home.path())).await.unwrap();
    ingest_two(&store, home.path()).await;
    store.gc().await.unwrap();
    drop(store);
    let cold = PageStore::open(&cold_only(home.path())).await.unwrap();
    let (_, entries) = packs(&cold).await.remove(0);
    let counters = &cold.cold().counters;
    for e in entries.iter().step_by(37) {
        cold.evict_hot();
        let (gets, bytes) = (
            counters.gets.load(Ordering::Relaxed),
            counters.get_bytes.load(Ordering::Relaxed),
        );
        let page = cold.read_page(&e.id).await.unwrap();
        assert!(e.id.matches(&page));
        assert_eq!(counters.gets.load(Ordering::Relaxed) - gets, 1);
        let fetched = counters.get_bytes.load(Ordering::Relaxed) - bytes;
        assert!(
            fetched == u64::from(e.len) && fetched <= 64 << 10,
            "{fetched}"
        );
        assert!(e.len as usize <= FRAME_PAGES * PAGE_SIZE + 64);
    }
}

/// The dense store of [`ingest_two`] after gc, and its first pack: key and entries.
async fn dense_store(home: &Path) -> (String, Vec<pack::PackEntry>) {
    let store = PageStore::open(&cold_only(home)).await.unwrap();
    ingest_two(&store, home).await;
    store.gc().await.unwrap();
    packs(&store).await.remove(0)
}

fn damage(home: &Path, key: &str, at: u64) {
    let path = home.join("cold").join(key);
    let mut data = std::fs::read(&path).unwrap();
    data[at as usize] ^= 0x5a;
    std::fs::write(&path, &data).unwrap();
}

/// A zstd frame that does not decode is detected and named (page, tier, object), by reads and by
/// verify; no page of it is served, and pages of other frames still are.
#[tokio::test]
async fn a_corrupt_frame_is_named_and_never_served() {
    let home = tempfile::tempdir().unwrap();
    let (key, entries) = dense_store(home.path()).await;
    let first = entries[0];
    // Byte 4 is the frame header's descriptor: the frame no longer decodes.
    damage(home.path(), &key, first.offset + 4);

    let cold = PageStore::open(&cold_only(home.path())).await.unwrap();
    let err = cold.read_page(&first.id).await.unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, Error::CorruptFrame { .. }) && msg.contains(&key) && msg.contains("cold"),
        "{msg}"
    );
    for e in entries.iter().filter(|e| e.offset == first.offset) {
        assert!(cold.read_page(&e.id).await.is_err());
    }
    let other = entries.iter().find(|e| e.offset != first.offset).unwrap();
    assert!(other.id.matches(&cold.read_page(&other.id).await.unwrap()));
    let report = cold.verify().await.unwrap();
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.contains(&key) && p.contains(&first.id.to_string())),
        "{:?}",
        report.problems
    );
    assert!(PackId::from_object_key(&key).is_some());
}

/// A frame damaged inside its data may still decode, to wrong bytes for some of its pages: each
/// page is checked against its id, so those are errors and the rest are served right.
#[tokio::test]
async fn a_frame_that_decodes_to_wrong_bytes_serves_no_wrong_page() {
    let home = tempfile::tempdir().unwrap();
    let (key, entries) = dense_store(home.path()).await;
    let mut failed = 0;
    for (n, first) in entries.iter().step_by(FRAME_PAGES).take(8).enumerate() {
        damage(
            home.path(),
            &key,
            first.offset + u64::from(first.len) * 3 / 4,
        );
        let cold = PageStore::open(&cold_only(home.path())).await.unwrap();
        for e in entries.iter().filter(|e| e.offset == first.offset) {
            match cold.read_page(&e.id).await {
                Ok(page) => assert!(e.id.matches(&page), "frame {n}: a wrong page served"),
                Err(err) => {
                    failed += 1;
                    assert!(err.to_string().contains(&key), "{err}");
                }
            }
        }
    }
    assert!(failed > 0);
}
