//! A store written by an older version of the code still opens and reads.
//!
//! `tests/fixtures/store-v1/cold` is the cold tier of a store written by the code before dense
//! cold packs and delta manifests (pack version 1, lz4 and raw pages; manifests of version 1),
//! made with `pico store ingest --tenant fixture` of two generations of the inputs that
//! `make_inputs.py` beside it writes (and that [`inputs`] rebuilds here). It is never rewritten:
//! each test works on a copy.
#![allow(clippy::unwrap_used)] // helpers outside #[test] fns

use std::path::{Path, PathBuf};

use pagestore::{PageStore, StoreConfig, PAGE_SIZE};
use testkit::fixture::{lcg_page, repeated_line_page};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/store-v1/cold")
}

/// A store over a copy of the fixture's cold tier, without a local tier (every page from cold).
async fn open_copy(home: &Path) -> (PageStore, StoreConfig) {
    testkit::fixture::copy_dir(&fixture(), &home.join("cold"));
    let mut config = StoreConfig::embedded(home);
    config.local.enabled = false;
    (PageStore::open(&config).await.unwrap(), config)
}

/// The pages `make_inputs.py` writes (the same generators, byte for byte: `testkit::fixture`).
fn text_page(tag: &str) -> Vec<u8> {
    repeated_line_page(&format!("picocenter fixture page {tag}\n"))
}

fn ramp_page() -> Vec<u8> {
    (0..PAGE_SIZE).map(|i| ((i / 64) % 256) as u8).collect()
}

/// The files of generation 1 or 2: `pages-1.img` and `core-1.img`.
fn inputs(generation: u64) -> Vec<(&'static str, Vec<u8>)> {
    let p3 = if generation == 1 {
        ramp_page()
    } else {
        text_page("gen2")
    };
    let pages = [
        text_page("0"),
        vec![0; PAGE_SIZE],
        lcg_page(7),
        p3,
        text_page("0"),
        text_page("5"),
    ]
    .concat();
    let core = format!("inline file generation {generation}\n").into_bytes();
    vec![("core-1.img", core), ("pages-1.img", pages)]
}

#[tokio::test]
async fn a_store_of_the_first_format_opens_and_reads() {
    let home = tempfile::tempdir().unwrap();
    let (store, _) = open_copy(home.path()).await;
    let checkpoints = store.checkpoints().await.unwrap();
    assert_eq!(
        checkpoints.iter().map(|c| c.generation).collect::<Vec<_>>(),
        vec![1, 2]
    );
    for c in &checkpoints {
        let out = home.path().join(format!("out-{}", c.generation));
        store.materialize(c, &out).await.unwrap();
        for (name, want) in inputs(c.generation) {
            let got = std::fs::read(out.join(name)).unwrap();
            assert!(got == want, "{name} of generation {} differs", c.generation);
        }
    }
    assert!(store.verify().await.unwrap().ok());
}

/// gc rewrites the first format's packs dense (and a new ingest writes a version-3 manifest
/// against the old full one): everything still reads the same.
#[tokio::test]
async fn a_store_of_the_first_format_reads_the_same_after_gc_recompresses_it() {
    let home = tempfile::tempdir().unwrap();
    let (store, config) = open_copy(home.path()).await;
    assert!(store.stats().await.unwrap().packs_pending > 0);
    let report = store.gc().await.unwrap();
    assert!(report.packs_recompressed > 0);
    assert_eq!(store.stats().await.unwrap().packs_pending, 0);
    // A third generation on top: a delta against the first format's full manifest.
    let src = home.path().join("gen3");
    std::fs::create_dir_all(&src).unwrap();
    for (name, data) in inputs(2) {
        std::fs::write(src.join(name), data).unwrap();
    }
    let third = store
        .ingest_with("fixture", &src, &criu_image::ingest_options())
        .await
        .unwrap();
    assert_eq!(third.checkpoint.generation, 3);
    drop(store);
    let store = PageStore::open(&config).await.unwrap();
    for c in store.checkpoints().await.unwrap() {
        let out = home.path().join(format!("out-{}", c.generation));
        store.materialize(&c, &out).await.unwrap();
        for (name, want) in inputs(c.generation.min(2)) {
            assert!(std::fs::read(out.join(name)).unwrap() == want, "{name}");
        }
    }
    assert!(store.verify().await.unwrap().ok());
}
