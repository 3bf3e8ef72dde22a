//! The page store end to end on the embedded tiers (dir cold tier + local tier).
#![allow(clippy::unwrap_used)] // helpers outside #[test] fns (open, corrupt_first_pack)

use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use pagestore::config::LocalEngine;
use pagestore::ingest::IngestOptions;
use pagestore::locality::{self, ChangedSince, LocalitySource, PagePos};
use pagestore::read::{ReadPriority, FILL_RANGE};
use pagestore::{Error, Manifest, PageId, PageStore, StoreConfig, Tier, PAGE_SIZE};
use testkit::image::{assert_same_dir, mixed_pages, noise, page, write_image_dir};

async fn open(home: &Path) -> PageStore {
    PageStore::open(&StoreConfig::embedded(home)).await.unwrap()
}

/// `n` incompressible pages (kind `kind`) written as an image of three files under `home`, and
/// ingested as tenant "big" into `store`.
async fn ingest_big(
    store: &PageStore,
    home: &Path,
    kind: u8,
    n: u64,
) -> pagestore::ingest::IngestReport {
    let src = home.join("src");
    let pages: Vec<(u8, u64)> = (0..n).map(|i| (kind, i)).collect();
    write_image_dir(&src, &pages, 3);
    store
        .ingest_with("big", &src, &criu_image::ingest_options())
        .await
        .unwrap()
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
    let report = store
        .ingest_with("web", &src, &criu_image::ingest_options())
        .await
        .unwrap();
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

/// An ingest asked to keep its checkpoint in memory puts every non-zero page there, new or
/// already stored: the checkpoint is then written out from memory alone.
#[tokio::test]
async fn a_checkpoint_kept_in_memory_is_written_out_from_memory_alone() {
    let home = tempfile::tempdir().unwrap();
    let src = home.path().join("src");
    write_image_dir(&src, &mixed_pages(300, 1), 1);
    // No local tier: what memory lacks, only the cold tier has.
    let store = PageStore::open(&cold_only(home.path())).await.unwrap();
    let first = store
        .ingest_with("web", &src, &criu_image::ingest_options())
        .await
        .unwrap();
    let manifest = store.manifest(&first.checkpoint).await.unwrap();
    let out = home.path().join("out1");
    std::fs::create_dir(&out).unwrap();
    assert!(!store.materialize_resident(&manifest, &out).unwrap());

    let keep = IngestOptions {
        keep_in_memory: true,
        ..criu_image::ingest_options()
    };
    let second = store.ingest_with("web", &src, &keep).await.unwrap();
    assert_eq!(second.pages_new, 0, "every page was stored already");
    let manifest = store.manifest(&second.checkpoint).await.unwrap();
    let out = home.path().join("out2");
    std::fs::create_dir(&out).unwrap();
    assert!(store.materialize_resident(&manifest, &out).unwrap());
    assert_same_dir(&src, &out);
}

#[tokio::test]
async fn a_checkpoint_of_several_packs_and_chunks_reads_back_from_cold_alone() {
    // 5000 incompressible pages: ~20 MiB of packs (three packs) and three ingest chunks.
    let home = tempfile::tempdir().unwrap();
    let store = open(home.path()).await;
    let report = ingest_big(&store, home.path(), 2, 5000).await;
    assert_eq!(report.pages_new, 5000);
    assert!(report.packs_written >= 3, "{report:?}");
    drop(store);
    // A fresh process knows the packs only from their indexes in the cold tier.
    let cold = PageStore::open(&cold_only(home.path())).await.unwrap();
    assert!(cold.verify().await.unwrap().ok());
    let out = home.path().join("out");
    cold.materialize(&report.checkpoint, &out).await.unwrap();
    assert_same_dir(&home.path().join("src"), &out);
}

/// Ingest returns at its commit and caches the new pages in the local tier behind it: reads
/// meanwhile are served (from cold where the local tier has nothing yet), and once it has
/// settled every new page is a local hit.
async fn new_pages_reach_the_local_tier_behind_the_commit(engine: LocalEngine) {
    let home = tempfile::tempdir().unwrap();
    let mut config = StoreConfig::embedded(home.path());
    config.local.engine = engine;
    let store = PageStore::open(&config).await.unwrap();
    // 5000 incompressible pages: three packs.
    let report = ingest_big(&store, home.path(), 4, 5000).await;
    let src = home.path().join("src");
    let out = home.path().join("out");
    store.materialize(&report.checkpoint, &out).await.unwrap();
    assert_same_dir(&src, &out);
    store.local_settled().await.unwrap();
    assert_eq!(store.local().unwrap().usage().unwrap().0, 5000);
    store.evict_hot();
    let cold_before = store.counters().cold_requests.load(Ordering::Relaxed);
    let hits_before = store.counters().local_hits.load(Ordering::Relaxed);
    let out2 = home.path().join("out2");
    store.materialize(&report.checkpoint, &out2).await.unwrap();
    assert_same_dir(&src, &out2);
    assert_eq!(
        store.counters().cold_requests.load(Ordering::Relaxed),
        cold_before
    );
    assert_eq!(
        store.counters().local_hits.load(Ordering::Relaxed) - hits_before,
        5000
    );
    assert!(store.verify().await.unwrap().ok());
}

/// A prefetch of pages the local tier holds is CPU work that never waits on I/O; it yields
/// between its batches, so that the other tasks of its runtime thread run meanwhile (a large
/// tenant's fill once held a thread for ~1 s, the tenant's first answer stuck behind it).
#[tokio::test(flavor = "current_thread")]
async fn a_prefetch_from_the_local_tier_lets_other_tasks_run() {
    let home = tempfile::tempdir().unwrap();
    let store = open(home.path()).await;
    let report = ingest_big(&store, home.path(), 4, 10_000).await;
    store.local_settled().await.unwrap();
    store.evict_hot();
    let manifest = store.manifest(&report.checkpoint).await.unwrap();
    let ids: Vec<PageId> = manifest.non_zero_pages().copied().collect();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let seen_done = {
        let done = done.clone();
        // Runs only when the prefetch below yields (one thread).
        tokio::spawn(async move { done.load(Ordering::SeqCst) })
    };
    let report = store.prefetch(&ids).await.unwrap();
    done.store(true, Ordering::SeqCst);
    assert_eq!(report.cold_pages, 0, "every page from the local tier");
    assert!(
        !seen_done.await.unwrap(),
        "the other task ran only once the prefetch was done"
    );
}

/// Pages read ahead of need from the local tier are read, decoded and checked on the background
/// pool, not on the reader's runtime thread: its other tasks run all the while (a fill released
/// by a tenant's first bytes held that thread for a batch, ~30 ms, while the relay still had the
/// rest of the answer to forward). A page that fails its check there is dropped and read from
/// the cold tier, as on any read.
#[tokio::test(flavor = "current_thread")]
async fn pages_read_ahead_from_the_local_tier_are_checked_off_the_runtime_thread() {
    let home = tempfile::tempdir().unwrap();
    let store = open(home.path()).await;
    let report = ingest_big(&store, home.path(), 6, 10_000).await;
    store.local_settled().await.unwrap();
    store.evict_hot();
    let manifest = store.manifest(&report.checkpoint).await.unwrap();
    let ids: Vec<PageId> = manifest.non_zero_pages().copied().collect();
    let counters = || {
        let c = store.counters();
        (
            c.local_hits.load(Ordering::Relaxed),
            c.local_corrupt.load(Ordering::Relaxed),
            c.cold_pages.load(Ordering::Relaxed),
        )
    };

    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let ticks = {
        let done = done.clone();
        tokio::spawn(async move {
            let mut ticks = 0u64;
            while !done.load(Ordering::SeqCst) {
                ticks += 1;
                tokio::task::yield_now().await;
            }
            ticks
        })
    };
    let before = counters();
    store.prefetch_at(&ids, ReadPriority::Ahead).await.unwrap();
    done.store(true, Ordering::SeqCst);
    let ticks = ticks.await.unwrap();
    // Between batches alone (three of 4096 pages) the other task would run a few times.
    assert!(
        ticks > 100,
        "the runtime thread was free meanwhile: {ticks} turns"
    );
    let after = counters();
    assert_eq!(
        after.0 - before.0,
        ids.len() as u64,
        "every page a local hit"
    );
    assert_eq!(after.2, before.2, "none read from cold");

    // One cached page replaced by another's bytes: caught, and read from cold.
    let local = store.local().unwrap();
    let (codec, other) = pagestore::codec::encode(&store.read_page(&ids[1]).await.unwrap());
    local.put(&ids[0], codec, &other).unwrap();
    store.evict_hot();
    let before = counters();
    store.prefetch_at(&ids, ReadPriority::Ahead).await.unwrap();
    let after = counters();
    assert_eq!(after.1 - before.1, 1, "the bad copy was caught");
    assert!(after.2 > before.2, "and its page read from cold");
    let out = home.path().join("out");
    store.materialize(&report.checkpoint, &out).await.unwrap();
    assert_same_dir(&home.path().join("src"), &out);
}

/// A fill reads in ranges of at most [`FILL_RANGE`] (a GET a fault joins arrives soon), checked
/// like any other read; an ordinary prefetch of the same pages sends larger ranges. (That a
/// fill waits for its budget while a fault does not: `pagestore::prefetch`'s unit test.)
#[tokio::test]
async fn a_fill_reads_in_small_ranges() {
    let home = tempfile::tempdir().unwrap();
    // 16 MiB of incompressible pages.
    let n = 4096;
    let report = ingest_big(&open(home.path()).await, home.path(), 6, n).await;

    let store = PageStore::open(&cold_only(home.path())).await.unwrap();
    let manifest = store.manifest(&report.checkpoint).await.unwrap();
    let ids: Vec<PageId> = manifest.non_zero_pages().copied().collect();
    let gets = |s: &PageStore| s.cold().counters.gets.load(Ordering::Relaxed);
    let before = gets(&store);
    let filled = store.fill_at(&ids, ReadPriority::Now).await.unwrap();
    assert_eq!(filled.cold_pages, n, "{filled:?}");
    let fill_gets = gets(&store) - before;
    assert!(
        fill_gets >= n * PAGE_SIZE as u64 / FILL_RANGE,
        "{fill_gets} GETs: ranges over {FILL_RANGE} bytes"
    );
    let out = home.path().join("out");
    store.materialize(&report.checkpoint, &out).await.unwrap();
    assert_same_dir(&home.path().join("src"), &out);

    let store = PageStore::open(&cold_only(home.path())).await.unwrap();
    let before = gets(&store);
    store.prefetch_at(&ids, ReadPriority::Now).await.unwrap();
    assert!(
        gets(&store) - before < fill_gets,
        "a prefetch sends larger ranges than a fill"
    );
}

/// Pages fetched ahead of need are decoded on the background pool; they come from the cold
/// tier checked like any other (a corrupt pack fails the prefetch, nothing of it is handed out)
/// and are then served from memory.
#[tokio::test]
async fn pages_fetched_ahead_of_need_are_checked_and_then_served_from_memory() {
    let home = tempfile::tempdir().unwrap();
    let report = ingest_big(&open(home.path()).await, home.path(), 5, 600).await;
    let store = PageStore::open(&cold_only(home.path())).await.unwrap();
    let manifest = store.manifest(&report.checkpoint).await.unwrap();
    let ids: Vec<PageId> = manifest.non_zero_pages().copied().collect();
    let fetched = store.prefetch_at(&ids, ReadPriority::Ahead).await.unwrap();
    assert_eq!(fetched.cold_pages, 600, "{fetched:?}");
    assert!(ids.iter().all(|id| store.hot().contains(id)));
    let again = store.prefetch(&ids).await.unwrap();
    assert_eq!((again.already_hot, again.cold_gets), (600, 0), "{again:?}");
    let out = home.path().join("out");
    store.materialize(&report.checkpoint, &out).await.unwrap();
    assert_same_dir(&home.path().join("src"), &out);

    corrupt_first_pack(home.path());
    let store = PageStore::open(&cold_only(home.path())).await.unwrap();
    let err = store
        .prefetch_at(&ids, ReadPriority::Ahead)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::CorruptPage {
                tier: Tier::Cold,
                ..
            }
        ),
        "{err}"
    );
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
    let ra = store
        .ingest_with("a", &home.path().join("a"), &criu_image::ingest_options())
        .await
        .unwrap();
    let rb = store
        .ingest_with("b", &home.path().join("b"), &criu_image::ingest_options())
        .await
        .unwrap();
    assert_eq!((ra.pages_new, ra.pages_known), (100, 0));
    assert_eq!((rb.pages_new, rb.pages_known), (40, 60));
    // A second generation of a with 5 changed pages stores only those 5.
    let mut a2 = a.clone();
    for p in a2.iter_mut().take(5) {
        p.1 += 50_000;
    }
    write_image_dir(&home.path().join("a2"), &a2, 1);
    let ra2 = store
        .ingest_with("a", &home.path().join("a2"), &criu_image::ingest_options())
        .await
        .unwrap();
    assert_eq!(ra2.checkpoint.generation, 2);
    assert_eq!(ra2.pages_new, 5);
    // Repeats inside one checkpoint are stored once too.
    let rep: Vec<(u8, u64)> = (0..10).map(|_| (1, 7)).collect();
    write_image_dir(&home.path().join("rep"), &rep, 3);
    let rr = store
        .ingest_with(
            "rep",
            &home.path().join("rep"),
            &criu_image::ingest_options(),
        )
        .await
        .unwrap();
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
    let r = store
        .ingest_with("any", &src, &criu_image::ingest_options())
        .await
        .unwrap();
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
        .ingest_with("t", &src, &criu_image::ingest_options())
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
    let r = store
        .ingest_with("t", &src, &criu_image::ingest_options())
        .await
        .unwrap();
    store.local_settled().await.unwrap();
    let id = pagestore::PageId::of(&page(2, 1));
    // Overwrite the cached copy with a different page's bytes.
    let local = store.local().unwrap();
    let (codec, other) = pagestore::codec::encode(&page(2, 2));
    local.put(&id, codec, &other).unwrap();
    assert_eq!(store.read_page(&id).await.unwrap(), page(2, 1));
    assert_eq!(
        store
            .counters()
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
    let r = store
        .ingest_with("t", &src, &criu_image::ingest_options())
        .await
        .unwrap();
    // Damaged in the cold tier and in the copy this machine kept (`kept_manifests`; a sound
    // copy would be read instead, tests/manifests.rs).
    let kept = home
        .path()
        .join("local-manifests")
        .join(format!("{}.manifest", r.checkpoint.id));
    for key in [
        home.path().join("cold").join(r.checkpoint.object_key()),
        kept,
    ] {
        let mut data = std::fs::read(&key).unwrap();
        let n = data.len();
        data[n / 2] ^= 1;
        std::fs::write(&key, data).unwrap();
    }
    let err = store.manifest(&r.checkpoint).await.unwrap_err();
    assert!(err.to_string().contains("manifest"), "{err}");
    assert!(!store.verify().await.unwrap().ok());
}

/// A next image: the first `keep` pages of `first`, then `new` pages of its own (`seed`).
fn keep_then_new(first: &[(u8, u64)], keep: usize, new: usize, seed: u64) -> Vec<(u8, u64)> {
    first[..keep]
        .iter()
        .copied()
        .chain(mixed_pages(new, seed))
        .collect()
}

/// Every `step`-th page of `pages-1.img` (`n` pages), as locality positions.
fn every(step: u64, n: u64) -> Vec<PagePos> {
    (0..n)
        .step_by(step as usize)
        .map(|page| PagePos {
            file: "pages-1.img".into(),
            page,
        })
        .collect()
}

/// Ingests `first` (so that the second checkpoint's pages are spread over two ingests' packs),
/// then `second` with `positions` in a locality pack. Returns the second's manifest.
async fn two_generations_with_locality(
    home: &Path,
    first: &[(u8, u64)],
    second: &[(u8, u64)],
    positions: Vec<PagePos>,
) -> (pagestore::ingest::IngestReport, Manifest) {
    let options = |_| IngestOptions {
        locality: positions,
        ..criu_image::ingest_options()
    };
    let (report, manifest, _) = two_generations(home, first, second, options).await;
    (report, manifest)
}

/// Ingests `first`, then `second` with the options `options` makes of the first's manifest.
/// Returns the second's report and manifest, and the first's manifest.
async fn two_generations(
    home: &Path,
    first: &[(u8, u64)],
    second: &[(u8, u64)],
    options: impl FnOnce(Arc<Manifest>) -> IngestOptions,
) -> (pagestore::ingest::IngestReport, Manifest, Arc<Manifest>) {
    let (a, b) = (home.join("a"), home.join("b"));
    write_image_dir(&a, first, 1);
    write_image_dir(&b, second, 2);
    let store = PageStore::open(&cold_only(home)).await.unwrap();
    let r1 = store
        .ingest_with("t", &a, &criu_image::ingest_options())
        .await
        .unwrap();
    let earlier = Arc::new(store.manifest(&r1.checkpoint).await.unwrap());
    let report = store
        .ingest_with("t", &b, &options(earlier.clone()))
        .await
        .unwrap();
    let manifest = store.manifest(&report.checkpoint).await.unwrap();
    (report, manifest, earlier)
}

/// The non-zero page ids of `manifest`'s `pages-1.img` at `positions`.
fn ids_at(manifest: &Manifest, positions: &[PagePos]) -> Vec<PageId> {
    let pages = manifest.file("pages-1.img").unwrap().pages();
    positions
        .iter()
        .map(|p| pages[p.page as usize])
        .filter(|id| !id.is_zero())
        .collect()
}

#[tokio::test]
async fn a_locality_pack_is_written_referenced_and_prefetched_in_one_get() {
    let home = tempfile::tempdir().unwrap();
    // The second checkpoint keeps half the first's pages and adds as many of its own.
    let first = mixed_pages(400, 1);
    let second = keep_then_new(&first, 200, 200, 2);
    let positions = every(3, 400);
    let (report, manifest) =
        two_generations_with_locality(home.path(), &first, &second, positions.clone()).await;
    let wanted = ids_at(&manifest, &positions);
    let locality = manifest
        .locality
        .expect("the manifest names its locality pack");
    assert_eq!(report.locality_pages, wanted.len() as u64);
    assert_eq!(u64::from(locality.pages), report.locality_pages);
    assert_eq!(locality.bytes, report.locality_bytes);
    let source = LocalitySource::of(&manifest).unwrap();
    assert!(
        source.key.starts_with("locality/t/0000000002-"),
        "{}",
        source.key
    );

    // A fresh process: the catalog knows the pages from their ordinary packs only.
    let store = PageStore::open(&cold_only(home.path())).await.unwrap();
    for id in &wanted {
        assert_ne!(store.catalog().locate(id).unwrap().pack, locality.pack);
    }
    assert!(
        manifest.packs.len() >= 2,
        "the set spans packs: {:?}",
        manifest.packs
    );
    let stats = store.stats().await.unwrap();
    assert_eq!(
        (stats.locality_packs, stats.locality_bytes),
        (1, locality.bytes)
    );
    let gets = || store.cold().counters.gets.load(Ordering::Relaxed);
    let gets_before = gets();
    let r = store
        .prefetch_with_locality(&wanted, Some(&source))
        .await
        .unwrap();
    let used = r.locality.clone().unwrap();
    assert!(used.used, "{r:?}");
    assert_eq!((used.gets, used.bytes), (1, locality.bytes));
    // Everything came from that one GET.
    assert_eq!(r.cold_gets, 1, "{r:?}");
    assert_eq!(r.requested, wanted.len() as u64);
    for id in &wanted {
        assert_eq!(PageId::of(&store.read_page(id).await.unwrap()), *id);
    }
    assert_eq!(gets() - gets_before, 1);
    assert!(store.verify().await.unwrap().ok());

    // Already in memory: the copy is not fetched again.
    let again = store
        .prefetch_with_locality(&wanted, Some(&source))
        .await
        .unwrap();
    assert!(!again.locality.unwrap().used);
    assert_eq!(again.cold_gets, 0);
}

/// A locality pack may hold more than the restore set it was written for (after it: the pages
/// next to a tenant's working set): those are no reason to skip it, and come into memory with it.
#[tokio::test]
async fn a_locality_pack_with_pages_beyond_its_restore_set_is_fetched_for_the_set() {
    let home = tempfile::tempdir().unwrap();
    let first = mixed_pages(400, 1);
    let second = keep_then_new(&first, 200, 200, 2);
    // The set (every third page) first, then twice as many others.
    let set = every(3, 400);
    let others: Vec<PagePos> = every(1, 400)
        .into_iter()
        .filter(|p| p.page % 3 != 0)
        .collect();
    let positions: Vec<PagePos> = set.iter().chain(&others).cloned().collect();
    let (_, manifest) =
        two_generations_with_locality(home.path(), &first, &second, positions).await;
    let wanted = ids_at(&manifest, &set);
    let beyond = ids_at(&manifest, &others);
    assert!(beyond.len() > wanted.len() * 3 / 2, "{}", beyond.len());
    let store = PageStore::open(&cold_only(home.path())).await.unwrap();
    let r = store
        .prefetch_with_locality(&wanted, LocalitySource::of(&manifest).as_ref())
        .await
        .unwrap();
    let used = r.locality.clone().unwrap();
    assert!(used.used, "{r:?}");
    assert_eq!(r.cold_gets, 1, "{r:?}");
    // The pages beyond the set are in memory: reading them sends no GET.
    for id in &beyond {
        assert_eq!(PageId::of(&store.read_page(id).await.unwrap()), *id);
    }
    assert_eq!(store.cold().counters.gets.load(Ordering::Relaxed), 1);
}

/// Asked to, an ingest also puts into its locality pack, after the chosen pages, every page the
/// tenant's previous checkpoint did not hold (written since), each once: a fresh reader of the
/// set finds them in memory too.
#[tokio::test]
async fn a_locality_pack_also_holds_the_pages_written_since_the_previous_checkpoint() {
    let home = tempfile::tempdir().unwrap();
    let first = mixed_pages(400, 1);
    let second = keep_then_new(&first, 300, 100, 2);
    let set = every(5, 400);
    let options = |earlier| IngestOptions {
        locality: set.clone(),
        locality_changed: Some(ChangedSince {
            earlier,
            max_pages: 1000,
        }),
        ..criu_image::ingest_options()
    };
    let (report, manifest, earlier) = two_generations(home.path(), &first, &second, options).await;
    let wanted = ids_at(&manifest, &set);
    let old: HashSet<PageId> = earlier.non_zero_pages().copied().collect();
    let mut written: HashSet<PageId> = manifest
        .non_zero_pages()
        .filter(|id| !old.contains(id))
        .copied()
        .collect();
    assert!(written.len() > 50, "{}", written.len());
    for id in &wanted {
        written.remove(id);
    }
    assert_eq!(report.locality_changed_pages, written.len() as u64);
    let distinct_set: HashSet<&PageId> = wanted.iter().collect();
    assert_eq!(
        report.locality_pages,
        (distinct_set.len() + written.len()) as u64
    );

    let store = PageStore::open(&cold_only(home.path())).await.unwrap();
    let r = store
        .prefetch_with_locality(&wanted, LocalitySource::of(&manifest).as_ref())
        .await
        .unwrap();
    assert!(r.locality.as_ref().unwrap().used, "{r:?}");
    for id in &written {
        assert_eq!(PageId::of(&store.read_page(id).await.unwrap()), *id);
    }
    assert_eq!(store.cold().counters.gets.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn readers_wait_for_a_locality_pack_in_flight_instead_of_sending_gets() {
    let home = tempfile::tempdir().unwrap();
    let first = mixed_pages(400, 1);
    let second = keep_then_new(&first, 200, 200, 2);
    let positions = every(2, 400);
    let (_, manifest) =
        two_generations_with_locality(home.path(), &first, &second, positions.clone()).await;
    let wanted = ids_at(&manifest, &positions);
    let source = LocalitySource::of(&manifest).unwrap();
    let store = PageStore::open(&cold_only(home.path())).await.unwrap();
    // A restore reading the same pages while the prefetch runs.
    let (prefetched, read) = tokio::join!(
        store.prefetch_with_locality(&wanted, Some(&source)),
        async {
            tokio::task::yield_now().await;
            store.read_pages(&wanted).await
        }
    );
    assert!(prefetched.unwrap().locality.unwrap().used);
    for (page, id) in read.unwrap().iter().zip(&wanted) {
        assert_eq!(PageId::of(page), *id);
    }
    assert_eq!(store.cold().counters.gets.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn a_large_locality_pack_comes_in_parallel_ranges() {
    let home = tempfile::tempdir().unwrap();
    // ~4 MiB of incompressible pages.
    let pages: Vec<(u8, u64)> = (0..1000).map(|i| (2, i)).collect();
    let positions = every(1, 1000);
    let (_, manifest) =
        two_generations_with_locality(home.path(), &pages[..500], &pages, positions.clone()).await;
    let wanted = ids_at(&manifest, &positions);
    let locality = manifest.locality.unwrap();
    assert!(locality.bytes > locality::ONE_GET_MAX, "{locality:?}");
    let store = PageStore::open(&cold_only(home.path())).await.unwrap();
    let r = store
        .prefetch_with_locality(&wanted, LocalitySource::of(&manifest).as_ref())
        .await
        .unwrap();
    let used = r.locality.unwrap();
    assert!(used.used);
    assert_eq!(used.gets, locality.bytes.div_ceil(locality::RANGE_BYTES));
    assert!(used.gets > 1, "{used:?}");
    assert_eq!(used.pages, 1000);
    assert_eq!(r.cold_gets, used.gets);
}

#[tokio::test]
async fn a_corrupt_or_missing_locality_pack_is_never_used() {
    let home = tempfile::tempdir().unwrap();
    let first = mixed_pages(300, 1);
    let second = keep_then_new(&first, 100, 200, 3);
    let positions = every(2, 300);
    let (_, manifest) =
        two_generations_with_locality(home.path(), &first, &second, positions.clone()).await;
    let wanted = ids_at(&manifest, &positions);
    let source = LocalitySource::of(&manifest).unwrap();
    let path = home.path().join("cold").join(&source.key);
    let good = std::fs::read(&path).unwrap();
    let mut bad = good.clone();
    bad[16 + 10] ^= 0xff;
    std::fs::write(&path, &bad).unwrap();

    let store = PageStore::open(&cold_only(home.path())).await.unwrap();
    let r = store
        .prefetch_with_locality(&wanted, Some(&source))
        .await
        .unwrap();
    let skipped = r.locality.clone().unwrap();
    assert!(!skipped.used);
    let why = skipped.skipped.unwrap();
    assert!(
        why.contains("locality pack") && why.contains(&source.key),
        "{why}"
    );
    // The ordinary packs served every page, and none of the bad bytes.
    for id in &wanted {
        assert_eq!(PageId::of(&store.read_page(id).await.unwrap()), *id);
    }
    let report = store.verify().await.unwrap();
    assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
    assert!(
        report.problems[0].contains("locality"),
        "{:?}",
        report.problems
    );

    // Gone altogether: the same.
    std::fs::remove_file(&path).unwrap();
    let store = PageStore::open(&cold_only(home.path())).await.unwrap();
    let r = store
        .prefetch_with_locality(&wanted, Some(&source))
        .await
        .unwrap();
    assert!(!r.locality.unwrap().used);
    for id in &wanted {
        assert!(store.hot().contains(id));
    }
}
