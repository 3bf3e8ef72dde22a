//! gc beside ingests: it holds no ingest up and deletes no page an ingest references, whether
//! the ingest began before it announced its doomed pages (it waits for that one) or after (that
//! one stores its own copies). On the directory cold tier and on a real S3 server (Garage).

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pagestore::config::ColdConfig;
use pagestore::gc::GcRun;
use pagestore::lock::LockKind;
use pagestore::{PageStore, StoreConfig};
use testkit::garage::Garage;
use testkit::synth;

/// A store that keeps one checkpoint per tenant, so that every ingest drops the one before and
/// its pages die (the next ingest of the same image dedups against dead pages).
fn keep_one(mut cfg: StoreConfig) -> StoreConfig {
    cfg.local.enabled = false;
    cfg.retention.keep_last = 1;
    cfg.retention.keep_daily = 0;
    cfg
}

fn backends(tmp: &Path) -> Vec<(StoreConfig, Option<Garage>)> {
    testkit::garage::cold_backends(tmp)
        .into_iter()
        .map(|(cfg, garage)| (keep_one(cfg), garage))
        .collect()
}

/// Image `i` of a few, each its own pages: `(seed, pages)` parts.
fn image(tmp: &Path, i: u64, pages: usize) -> PathBuf {
    let d = tmp.join(format!("img{i}-{pages}"));
    if !d.exists() {
        synth::checkpoint_of_parts(&d, &[(1000 + i, pages), (2000 + i, pages / 4)]).unwrap();
    }
    d
}

async fn doomed_announced(store: &PageStore) -> bool {
    store
        .cold()
        .list("locks/")
        .await
        .unwrap()
        .iter()
        .any(|o| o.key.ends_with(".doomed"))
}

/// Every checkpoint left reads back as the image it was made from, and verify passes.
async fn all_intact(store: &PageStore, tmp: &Path, made_of: &dyn Fn(u64) -> PathBuf) {
    let store_view = PageStore::open(store.config()).await.unwrap();
    for c in store_view.checkpoints().await.unwrap() {
        let out = tmp.join(format!("out-{}-{}", c.tenant, c.generation));
        let _ = std::fs::remove_dir_all(&out);
        store_view.materialize(&c, &out).await.unwrap();
        assert!(
            synth::same_files(&made_of(c.generation), &out).unwrap(),
            "{} generation {} differs",
            c.tenant,
            c.generation
        );
    }
    let v = store_view.verify().await.unwrap();
    assert!(v.ok(), "{:?}", v.problems);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ingest_begun_after_the_announcement_stores_its_own_copies_and_waits_for_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    for (cfg, _garage) in backends(tmp.path()) {
        let store = Arc::new(PageStore::open(&cfg).await.unwrap());
        let opts = criu_image::ingest_options();
        let a = image(tmp.path(), 1, 300);
        let b = image(tmp.path(), 2, 300);
        let first = store.ingest_with("old", &a, &opts).await.unwrap();
        store.ingest_with("t", &b, &opts).await.unwrap();
        // Image a's pages die with their tenant.
        store.forget("old").await.unwrap();

        // An ingest in flight since before the gc (its lock held here): the gc waits for it.
        let in_flight = store.lock(LockKind::Ingest).await.unwrap();
        let gc = tokio::spawn({
            let store = store.clone();
            async move { store.gc().await }
        });
        let started = Instant::now();
        while !doomed_announced(&store).await {
            assert!(started.elapsed() < Duration::from_secs(60), "no doomed set");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Image a again, from another process's view of the store: its pages are in the
        // store but doomed, so it stores them again rather than referencing them, at once.
        let other = PageStore::open(&cfg).await.unwrap();
        let r = other.ingest_with("t", &a, &opts).await.unwrap();
        assert_eq!(
            (r.pages_known, r.pages_new),
            (first.pages_known, first.pages_new),
            "as into an empty store"
        );
        assert!(!gc.is_finished(), "the gc waits for the ingest in flight");
        store.unlock(in_flight).await.unwrap();
        let report = gc.await.unwrap().unwrap();
        assert!(report.pages_doomed > 0, "{report:?}");
        assert!(report.waited_ms > 0, "{report:?}");
        // Generation 2 is image a, made of the copies stored beside the gc.
        let made_of = |g: u64| if g == 1 { b.clone() } else { a.clone() };
        all_intact(&store, tmp.path(), &made_of).await;
        let last = store.last_gc().await.unwrap().unwrap();
        assert_eq!(last.report.pages_doomed, report.pages_doomed);
        // Marked after the wait, generation 2 kept the old copies too (the next gc keeps one):
        // nothing is dead now.
        let again = store.gc().await.unwrap();
        assert_eq!(again.pages_doomed, 0, "{again:?}");
        all_intact(&store, tmp.path(), &made_of).await;
    }
}

/// One tenant swapped out again and again, cycling through three images (each ingest dedups
/// against pages the one before made dead), with gc running over and over beside it: from
/// another process's view of the store and from the ingesting one's. Nothing is lost; the
/// ingests' durations with and without gc are printed (not asserted: the machine is shared).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_over_and_over_beside_ingests_loses_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    const ROUNDS: u64 = 12;
    const PAGES: usize = 2000;
    let images: Vec<PathBuf> = (0..3).map(|i| image(tmp.path(), i, PAGES)).collect();
    for (cfg, _garage) in backends(tmp.path()) {
        let kind = match cfg.cold {
            ColdConfig::S3(_) => "s3",
            _ => "dir",
        };
        let store = Arc::new(PageStore::open(&cfg).await.unwrap());
        let opts = criu_image::ingest_options();
        let image_of = |g: u64| images[((g - 1) % 3) as usize].clone();
        let mut generation = 0;
        // `background`: as a worker runs it, its CPU work at nice 19.
        let mut ingest_round = async |label: &str, gc_store: Option<(Arc<PageStore>, bool)>| {
            let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let gcs = gc_store.map(|(gc_store, background)| {
                let stop = stop.clone();
                tokio::spawn(async move {
                    let mut runs = 0u32;
                    let run = GcRun {
                        background,
                        ..GcRun::default()
                    };
                    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                        let r = gc_store.gc_with(&run).await.unwrap();
                        runs += 1;
                        assert!(r.elapsed_ms > 0 || r.packs_before == 0);
                    }
                    runs
                })
            });
            let mut took = Vec::new();
            for _ in 0..ROUNDS {
                generation += 1;
                let started = Instant::now();
                store
                    .ingest_with("t", &image_of(generation), &opts)
                    .await
                    .unwrap();
                took.push(started.elapsed().as_millis() as u64);
            }
            stop.store(true, std::sync::atomic::Ordering::SeqCst);
            let runs = match gcs {
                Some(g) => g.await.unwrap(),
                None => 0,
            };
            took.sort_unstable();
            println!(
                "{kind} {label}: ingest of {} pages median {} ms, max {} ms ({ROUNDS} ingests, {runs} gcs beside them)",
                PAGES + PAGES / 4,
                took[took.len() / 2],
                took[took.len() - 1]
            );
        };
        ingest_round("without gc", None).await;
        let other = Arc::new(PageStore::open(&cfg).await.unwrap());
        ingest_round("gc in another process", Some((other, false))).await;
        ingest_round(
            "gc in the ingesting process at nice 19",
            Some((store.clone(), true)),
        )
        .await;
        // The newest checkpoint is whole after all, and so is every other one left.
        all_intact(&store, tmp.path(), &image_of).await;
        store.gc().await.unwrap();
        all_intact(&store, tmp.path(), &image_of).await;
    }
}
