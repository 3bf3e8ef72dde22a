//! The page store end to end on the embedded tiers (dir cold tier + local tier).
#![allow(clippy::unwrap_used)] // helpers outside #[test] fns (open, corrupt_first_pack)

use std::path::Path;
use std::sync::atomic::Ordering;

use pagestore::config::LocalEngine;
use pagestore::{Error, PageStore, StoreConfig, Tier, PAGE_SIZE};
use testkit::image::{assert_same_dir, mixed_pages, noise, page, write_image_dir};

async fn open(home: &Path) -> PageStore {
    PageStore::open(&StoreConfig::embedded(home)).await.unwrap()
}

fn cold_only(home: &Path) -> StoreConfig {
    let mut c = StoreConfig::embedded(home);
    c.local.enabled = false;
    c
}

#[tokio::test]
async fn ingest_then_materialize_is_byte_identical() {
    let home = tempfile::tempdir().unwrap();
    let src = home.path().join("src");
    write_image_dir(&src, &mixed_pages(300, 1), 1);
    let store = open(home.path()).await;
    let report = store.ingest("web", &src).await.unwrap();
    assert_eq!(report.pages_total, 300);
    assert_eq!(report.pages_zero, 75);
    assert_eq!(report.pages_new, 225);
    let out = home.path().join("out");
    store.materialize(&report.checkpoint, &out).await.unwrap();
    assert_same_dir(&src, &out);
    // And again from the cold tier alone.
    drop(store);
    let cold = PageStore::open(&cold_only(home.path())).await.unwrap();
    let out2 = home.path().join("out2");
    cold.materialize(&report.checkpoint, &out2).await.unwrap();
    assert_same_dir(&src, &out2);
    assert!(cold.verify().await.unwrap().ok());
}

#[tokio::test]
async fn a_checkpoint_of_several_packs_and_chunks_reads_back_from_cold_alone() {
    // 5000 incompressible pages: ~20 MiB of packs (three packs) and three ingest chunks.
    let home = tempfile::tempdir().unwrap();
    let src = home.path().join("src");
    let pages: Vec<(u8, u64)> = (0..5000).map(|i| (2, i)).collect();
    write_image_dir(&src, &pages, 3);
    let store = open(home.path()).await;
    let report = store.ingest("big", &src).await.unwrap();
    assert_eq!(report.pages_new, 5000);
    assert!(report.packs_written >= 3, "{report:?}");
    drop(store);
    // A fresh process knows the packs only from their indexes in the cold tier.
    let cold = PageStore::open(&cold_only(home.path())).await.unwrap();
    assert!(cold.verify().await.unwrap().ok());
    let out = home.path().join("out");
    cold.materialize(&report.checkpoint, &out).await.unwrap();
    assert_same_dir(&src, &out);
}

/// Ingest returns at its commit and caches the new pages in the local tier behind it: reads
/// meanwhile are served (from cold where the local tier has nothing yet), and once it has
/// settled every new page is a local hit.
async fn new_pages_reach_the_local_tier_behind_the_commit(engine: LocalEngine) {
    let home = tempfile::tempdir().unwrap();
    let src = home.path().join("src");
    // 5000 incompressible pages: three packs.
    let pages: Vec<(u8, u64)> = (0..5000).map(|i| (4, i)).collect();
    write_image_dir(&src, &pages, 3);
    let mut config = StoreConfig::embedded(home.path());
    config.local.engine = engine;
    let store = PageStore::open(&config).await.unwrap();
    let report = store.ingest("big", &src).await.unwrap();
    let out = home.path().join("out");
    store.materialize(&report.checkpoint, &out).await.unwrap();
    assert_same_dir(&src, &out);
    store.local_settled().await.unwrap();
    assert_eq!(store.local().unwrap().usage().unwrap().0, 5000);
    store.evict_hot();
    let cold_before = store.counters.cold_requests.load(Ordering::Relaxed);
    let hits_before = store.counters.local_hits.load(Ordering::Relaxed);
    let out2 = home.path().join("out2");
    store.materialize(&report.checkpoint, &out2).await.unwrap();
    assert_same_dir(&src, &out2);
    assert_eq!(
        store.counters.cold_requests.load(Ordering::Relaxed),
        cold_before
    );
    assert_eq!(
        store.counters.local_hits.load(Ordering::Relaxed) - hits_before,
        5000
    );
    assert!(store.verify().await.unwrap().ok());
}

#[tokio::test]
async fn new_pages_reach_the_local_tier_behind_the_commit_fjall() {
    new_pages_reach_the_local_tier_behind_the_commit(LocalEngine::Fjall).await;
}

#[tokio::test]
async fn new_pages_reach_the_local_tier_behind_the_commit_sled() {
    new_pages_reach_the_local_tier_behind_the_commit(LocalEngine::Sled).await;
}

#[tokio::test]
async fn dedup_accounting_across_tenants_and_generations() {
    let home = tempfile::tempdir().unwrap();
    let store = open(home.path()).await;
    // Tenant a: 100 pages. Tenant b shares the first 60 of them and adds 40 of its own.
    let a: Vec<(u8, u64)> = (0..100).map(|i| (2, i)).collect();
    let mut b: Vec<(u8, u64)> = (0..60).map(|i| (2, i)).collect();
    b.extend((0..40).map(|i| (2, 10_000 + i)));
    write_image_dir(&home.path().join("a"), &a, 1);
    write_image_dir(&home.path().join("b"), &b, 2);
    let ra = store.ingest("a", &home.path().join("a")).await.unwrap();
    let rb = store.ingest("b", &home.path().join("b")).await.unwrap();
    assert_eq!((ra.pages_new, ra.pages_known), (100, 0));
    assert_eq!((rb.pages_new, rb.pages_known), (40, 60));
    // A second generation of a with 5 changed pages stores only those 5.
    let mut a2 = a.clone();
    for p in a2.iter_mut().take(5) {
        p.1 += 50_000;
    }
    write_image_dir(&home.path().join("a2"), &a2, 1);
    let ra2 = store.ingest("a", &home.path().join("a2")).await.unwrap();
    assert_eq!(ra2.checkpoint.generation, 2);
    assert_eq!(ra2.pages_new, 5);
    // Repeats inside one checkpoint are stored once too.
    let rep: Vec<(u8, u64)> = (0..10).map(|_| (1, 7)).collect();
    write_image_dir(&home.path().join("rep"), &rep, 3);
    let rr = store.ingest("rep", &home.path().join("rep")).await.unwrap();
    assert_eq!((rr.pages_new, rr.pages_known), (1, 9));

    let s = store.stats().await.unwrap();
    assert_eq!(s.checkpoints, 4);
    assert_eq!(s.tenants, 3);
    assert_eq!(s.pages_total, 310);
    assert_eq!(s.pages_zero, 0);
    assert_eq!(s.pages_unique, 100 + 40 + 5 + 1);
    assert_eq!(s.logical_bytes, 310 * PAGE_SIZE as u64);
    assert!(s.stored_bytes > 0 && s.stored_bytes < s.logical_bytes);
}

#[tokio::test]
async fn any_directory_is_accepted() {
    let home = tempfile::tempdir().unwrap();
    let src = home.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    // A page file whose size is not a multiple of 4 KiB, an empty file, a large non-page file.
    std::fs::write(src.join("pages-7.img"), noise(1, 3 * PAGE_SIZE + 123)).unwrap();
    std::fs::write(src.join("empty"), b"").unwrap();
    std::fs::write(src.join("big.bin"), noise(2, (1 << 20) + 5000)).unwrap();
    std::fs::write(src.join("notes.txt"), b"hello").unwrap();
    let store = open(home.path()).await;
    let r = store.ingest("any", &src).await.unwrap();
    assert_eq!(r.files, 4);
    let out = home.path().join("out");
    store.materialize(&r.checkpoint, &out).await.unwrap();
    assert_same_dir(&src, &out);
}

#[tokio::test]
async fn bad_input_is_refused_clearly() {
    let home = tempfile::tempdir().unwrap();
    let store = open(home.path()).await;
    let src = home.path().join("src");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    let err = store.ingest("t", &src).await.unwrap_err().to_string();
    assert!(err.contains("sub") && err.contains("flat"), "{err}");
    let err = store.ingest("../x", &src).await.unwrap_err().to_string();
    assert!(err.contains("tenant name"), "{err}");
    let err = store
        .ingest("t", &home.path().join("missing"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err}");
    assert!(matches!(
        store.resolve("abcdef").await,
        Err(Error::CheckpointNotFound(_))
    ));
}

/// Flips a byte in the middle of the first page stored in the (only) pack.
fn corrupt_first_pack(home: &Path) {
    let packs = home.join("cold/packs");
    let pack = std::fs::read_dir(&packs)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mut data = std::fs::read(&pack).unwrap();
    data[16 + 10] ^= 0xff;
    std::fs::write(&pack, data).unwrap();
}

#[tokio::test]
async fn a_corrupt_cold_object_is_reported_never_handed_out() {
    let home = tempfile::tempdir().unwrap();
    let src = home.path().join("src");
    write_image_dir(&src, &[(2, 1), (2, 2), (1, 3)], 1);
    let checkpoint = open(home.path())
        .await
        .ingest("t", &src)
        .await
        .unwrap()
        .checkpoint;
    corrupt_first_pack(home.path());
    let store = PageStore::open(&cold_only(home.path())).await.unwrap();
    let err = store
        .materialize(&checkpoint, &home.path().join("out"))
        .await
        .unwrap_err();
    match &err {
        Error::CorruptPage { tier, .. } => assert_eq!(*tier, Tier::Cold),
        other => panic!("expected a corrupt-page error, got {other}"),
    }
    let msg = err.to_string();
    assert!(msg.contains("cold") && msg.contains("packs/"), "{msg}");
    let report = store.verify().await.unwrap();
    assert!(!report.ok());
    assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
}

/// On either local engine, a cached page that fails its hash is a miss served from cold.
async fn corrupt_local_page_is_a_miss(engine: LocalEngine) {
    let home = tempfile::tempdir().unwrap();
    let src = home.path().join("src");
    let pages = [(2u8, 1u64), (2, 2)];
    write_image_dir(&src, &pages, 1);
    let mut config = StoreConfig::embedded(home.path());
    config.local.engine = engine;
    let store = PageStore::open(&config).await.unwrap();
    assert_eq!(store.local().unwrap().engine(), engine);
    let r = store.ingest("t", &src).await.unwrap();
    store.local_settled().await.unwrap();
    let id = pagestore::PageId::of(&page(2, 1));
    // Overwrite the cached copy with a different page's bytes.
    let local = store.local().unwrap();
    let (codec, other) = pagestore::codec::encode(&page(2, 2));
    local.put(&id, codec, &other).unwrap();
    assert_eq!(store.read_page(&id).await.unwrap(), page(2, 1));
    assert_eq!(
        store
            .counters
            .local_corrupt
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    // The bad entry was replaced by the verified page from cold.
    assert!(store.verify().await.unwrap().ok());
    store
        .materialize(&r.checkpoint, &home.path().join("out"))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_corrupt_local_page_is_a_miss_served_from_cold_sled() {
    corrupt_local_page_is_a_miss(LocalEngine::Sled).await;
}

#[tokio::test]
async fn a_corrupt_local_page_is_a_miss_served_from_cold_fjall() {
    corrupt_local_page_is_a_miss(LocalEngine::Fjall).await;
}

#[tokio::test]
async fn a_damaged_manifest_is_refused() {
    let home = tempfile::tempdir().unwrap();
    let src = home.path().join("src");
    write_image_dir(&src, &[(1, 1)], 1);
    let store = open(home.path()).await;
    let r = store.ingest("t", &src).await.unwrap();
    let key = home.path().join("cold").join(r.checkpoint.object_key());
    let mut data = std::fs::read(&key).unwrap();
    let n = data.len();
    data[n / 2] ^= 1;
    std::fs::write(&key, data).unwrap();
    let err = store.manifest(&r.checkpoint).await.unwrap_err();
    assert!(err.to_string().contains("manifest"), "{err}");
    assert!(!store.verify().await.unwrap().ok());
}
