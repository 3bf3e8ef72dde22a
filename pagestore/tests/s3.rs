//! The page store on a real S3 server (Garage on loopback, started by `deploy/garage.sh`).
//!
//! Nothing here mocks S3: a test that cannot start Garage fails and says why.

use std::path::Path;
use std::time::{Duration, Instant};

use pagestore::cold::{ColdStorage, S3Storage};
use pagestore::config::{ColdConfig, LocalConfig, S3Config};
use pagestore::pack;
use pagestore::{Error, PageStore, StoreConfig};
use testkit::garage::Garage;
use testkit::synth;

fn store_config(s3: S3Config, local: &Path, local_enabled: bool) -> StoreConfig {
    StoreConfig {
        cold: ColdConfig::S3(s3),
        local: LocalConfig {
            path: local.to_path_buf(),
            enabled: local_enabled,
            max_bytes: 1 << 30,
            engine: Default::default(),
            index_cache: None,
            whole_images_max_bytes: 1 << 30,
        },
        ..StoreConfig::embedded(local)
    }
}

#[test]
fn the_cold_section_printed_by_garage_sh_parses() {
    let g = Garage::start();
    #[derive(serde::Deserialize)]
    struct Doc {
        cold: ColdConfig,
    }
    let doc: Doc = toml::from_str(&g.cold_toml).expect("garage.sh prints valid TOML");
    match doc.cold {
        ColdConfig::S3(s) => {
            assert_eq!(s.endpoint, g.endpoint);
            assert!(s.endpoint.starts_with("http://127.0.0.1:"));
        }
        other => panic!("expected kind = s3, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_backend_put_get_range_list_delete() {
    let g = Garage::start();
    let s = S3Storage::new(&g.s3_config(Some("t1"))).unwrap();
    s.put("packs/a.pack", b"hello world".to_vec().into())
        .await
        .unwrap();
    s.put("manifests/x/1.manifest", b"m".to_vec().into())
        .await
        .unwrap();
    assert_eq!(s.get("packs/a.pack").await.unwrap(), b"hello world");
    assert_eq!(s.get_range("packs/a.pack", 6, 100).await.unwrap(), b"world");
    assert_eq!(s.get_range("packs/a.pack", 0, 5).await.unwrap(), b"hello");
    assert_eq!(s.get_range("packs/a.pack", 50, 5).await.unwrap(), b"");
    let l = s.list("packs/").await.unwrap();
    assert_eq!(l.len(), 1);
    assert_eq!((l[0].key.as_str(), l[0].size), ("packs/a.pack", 11));
    assert_eq!(s.list("").await.unwrap().len(), 2);
    // The prefix keeps two stores in one bucket apart.
    let other = S3Storage::new(&g.s3_config(Some("t2/"))).unwrap();
    assert!(other.list("").await.unwrap().is_empty());
    s.delete("packs/a.pack").await.unwrap();
    s.delete("packs/a.pack").await.unwrap();
    assert!(matches!(
        s.get("packs/a.pack").await,
        Err(Error::ObjectNotFound(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_and_materialize_on_s3_are_byte_identical() {
    let g = Garage::start();
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    synth::checkpoint_dir(&input, 1, 3000).unwrap();
    let store = PageStore::open(&store_config(
        g.s3_config(None),
        &tmp.path().join("local"),
        true,
    ))
    .await
    .unwrap();
    let r1 = store
        .ingest_with("web", &input, &criu_image::ingest_options())
        .await
        .unwrap();
    assert!(r1.packs_written >= 1 && r1.pages_new > 0);
    // The same bytes again: nothing new is uploaded but the manifest.
    let r2 = store
        .ingest_with("web", &input, &criu_image::ingest_options())
        .await
        .unwrap();
    assert_eq!((r2.pages_new, r2.packs_written), (0, 0));
    assert!(store.verify().await.unwrap().ok());
    drop(store);

    // A second machine: no local tier, everything comes from S3.
    let fresh = PageStore::open(&store_config(
        g.s3_config(None),
        &tmp.path().join("local2"),
        false,
    ))
    .await
    .unwrap();
    let c = fresh.resolve(r1.checkpoint.id.as_str()).await.unwrap();
    let out = tmp.path().join("out");
    fresh.materialize(&c, &out).await.unwrap();
    assert!(synth::same_files(&input, &out).unwrap());
    let stats = fresh.stats().await.unwrap();
    assert_eq!(stats.cold.kind, "s3");
    assert!(stats.cold.gets > 0 && stats.cold.get_bytes > 0);
    let verify = fresh.verify().await.unwrap();
    assert!(verify.ok(), "{:?}", verify.problems);
    assert_eq!(verify.manifests, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_pack_in_s3_is_reported_and_never_served() {
    let g = Garage::start();
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    synth::checkpoint_dir(&input, 2, 500).unwrap();
    let cfg = store_config(g.s3_config(None), &tmp.path().join("local"), false);
    let store = PageStore::open(&cfg).await.unwrap();
    let report = store
        .ingest_with("mail", &input, &criu_image::ingest_options())
        .await
        .unwrap();
    drop(store);

    // Flip bytes of the first page stored in the pack, through the S3 API.
    let raw = S3Storage::new(&g.s3_config(None)).unwrap();
    let packs = raw.list("packs/").await.unwrap();
    assert_eq!(packs.len(), 1);
    let key = &packs[0].key;
    let mut data = raw.get(key).await.unwrap();
    let entries = pack::parse_pack(key, &data).unwrap();
    let victim = entries[0];
    for b in &mut data[victim.offset as usize..victim.offset as usize + 16] {
        *b ^= 0xa5;
    }
    raw.put(key, data.into()).await.unwrap();

    let store = PageStore::open(&cfg).await.unwrap();
    let v = store.verify().await.unwrap();
    assert!(!v.ok());
    assert!(
        v.problems
            .iter()
            .any(|p| p.contains(&victim.id.to_string()) && p.contains(key.as_str())),
        "{:?}",
        v.problems
    );
    let c = store.resolve(report.checkpoint.id.as_str()).await.unwrap();
    let err = store
        .materialize(&c, &tmp.path().join("out"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::CorruptPage { page, .. } if page == victim.id),
        "{err}"
    );
    let err = store.read_page(&victim.id).await.unwrap_err();
    assert!(matches!(err, Error::CorruptPage { .. }), "{err}");
    // The other pages of the pack are still served.
    let other = entries[1];
    assert!(other.id.matches(&store.read_page(&other.id).await.unwrap()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_s3_fails_clearly_and_keeps_the_previous_checkpoint() {
    let g = Garage::start();
    let tmp = tempfile::tempdir().unwrap();
    let gen1 = tmp.path().join("gen1");
    let gen2 = tmp.path().join("gen2");
    synth::checkpoint_dir(&gen1, 3, 800).unwrap();
    synth::checkpoint_dir(&gen2, 4, 800).unwrap();
    let cfg = store_config(g.s3_config(None), &tmp.path().join("local"), true);
    let store = PageStore::open(&cfg).await.unwrap();
    let first = store
        .ingest_with("dns", &gen1, &criu_image::ingest_options())
        .await
        .unwrap();

    g.stop();
    let started = Instant::now();
    let err = store
        .ingest_with("dns", &gen2, &criu_image::ingest_options())
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains(&g.endpoint),
        "error does not name the endpoint: {msg}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "gave up only after {:?}",
        started.elapsed()
    );
    // Opening a store on a dead S3 says the same.
    let err = PageStore::open(&cfg).await.err().expect("open must fail");
    assert!(err.to_string().contains(&g.endpoint), "{err}");

    g.restart();
    let latest = store.latest("dns").await.unwrap().unwrap();
    assert_eq!(latest.id, first.checkpoint.id);
    let out = tmp.path().join("out");
    store.materialize(&latest, &out).await.unwrap();
    assert!(synth::same_files(&gen1, &out).unwrap());
    assert!(store.verify().await.unwrap().ok());
    // And the ingest completes once S3 is back.
    let second = store
        .ingest_with("dns", &gen2, &criu_image::ingest_options())
        .await
        .unwrap();
    assert_eq!(second.checkpoint.generation, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_failures_are_retried() {
    let g = Garage::start();
    let mut cfg = g.s3_config(None);
    cfg.max_attempts = Some(12);
    let s = std::sync::Arc::new(S3Storage::new(&cfg).unwrap());
    s.put("k", b"v".to_vec().into()).await.unwrap();
    g.stop();
    let reader = {
        let s = s.clone();
        tokio::spawn(async move { s.get("k").await })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _g = tokio::task::spawn_blocking(move || {
        g.restart();
        g
    })
    .await
    .unwrap();
    assert_eq!(reader.await.unwrap().unwrap(), b"v");
    assert!(s.retries.load(std::sync::atomic::Ordering::Relaxed) > 0);
}

fn hot_only(g: &Garage, local: &Path) -> StoreConfig {
    store_config(g.s3_config(None), local, false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_concurrent_readers_cause_one_cold_get() {
    let g = Garage::start();
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    synth::checkpoint_dir(&input, 5, 400).unwrap();
    {
        let store = PageStore::open(&hot_only(&g, &tmp.path().join("l")))
            .await
            .unwrap();
        store
            .ingest_with("chat", &input, &criu_image::ingest_options())
            .await
            .unwrap();
    }
    let store = std::sync::Arc::new(
        PageStore::open(&hot_only(&g, &tmp.path().join("l")))
            .await
            .unwrap(),
    );
    let c = store.latest("chat").await.unwrap().unwrap();
    let manifest = store.manifest(&c).await.unwrap();
    let pages: Vec<_> = manifest.file("pages-1.img").unwrap().pages().to_vec();
    let page = *pages.iter().find(|p| !p.is_zero()).unwrap();

    let gets = |s: &PageStore| {
        s.cold()
            .counters
            .gets
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    // 64 readers of one page.
    let before = gets(&store);
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(64));
    let readers: Vec<_> = (0..64)
        .map(|_| {
            let (store, barrier) = (store.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                store.read_page(&page).await
            })
        })
        .collect();
    for r in readers {
        assert!(page.matches(&r.await.unwrap().unwrap()));
    }
    assert_eq!(gets(&store) - before, 1, "64 readers of one page");

    // 64 readers of the same 1.6 MB of one file: one GET per coalesced range, not per reader
    // or per page.
    store.evict_hot();
    let file = manifest.file("pages-1.img").unwrap().clone();
    let before = gets(&store);
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(64));
    let readers: Vec<_> = (0..64)
        .map(|_| {
            let (store, barrier, file) = (store.clone(), barrier.clone(), file.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                store.read_file_at(&file, 0, file.size as usize).await
            })
        })
        .collect();
    let want = std::fs::read(input.join("pages-1.img")).unwrap();
    for r in readers {
        assert!(r.await.unwrap().unwrap() == want);
    }
    let used = gets(&store) - before;
    assert_eq!(used, 1, "64 readers of one range used {used} GETs");
    // Now the pages are in memory: reading them again costs no request.
    let before = gets(&store);
    assert!(page.matches(&store.read_page(&page).await.unwrap()));
    assert_eq!(gets(&store), before);
    let stats = store.stats().await.unwrap();
    assert!(stats.cold.flight_joins > 0, "{:?}", stats.cold);
    assert!(
        stats.hot.hits > 0 && stats.hot.pages > 200,
        "{:?}",
        stats.hot
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn neighbouring_pages_are_read_with_few_requests() {
    let g = Garage::start();
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    // ~16 MB of pages: more than one pack.
    synth::checkpoint_dir(&input, 6, 4000).unwrap();
    let cfg = hot_only(&g, &tmp.path().join("l"));
    PageStore::open(&cfg)
        .await
        .unwrap()
        .ingest_with("big", &input, &criu_image::ingest_options())
        .await
        .unwrap();
    let store = PageStore::open(&cfg).await.unwrap();
    let c = store.latest("big").await.unwrap().unwrap();
    let out = tmp.path().join("out");
    let before = store.stats().await.unwrap().cold;
    store.materialize(&c, &out).await.unwrap();
    assert!(synth::same_files(&input, &out).unwrap());
    let after = store.stats().await.unwrap().cold;
    let pages = after.pages_read - before.pages_read;
    let requests = after.page_requests - before.page_requests;
    assert!(pages > 2000, "{pages}");
    // 1 MiB materialize batches, 4 MiB ranges: a few requests per MiB at most, not one per page.
    assert!(
        requests * 50 < pages,
        "{requests} requests for {pages} pages"
    );
    eprintln!("materialize: {pages} pages from cold in {requests} ranged GETs");
}

/// A store on Garage whose pack indexes are cached under `cache`.
fn with_index_cache(g: &Garage, local: &Path, cache: Option<&Path>) -> StoreConfig {
    let mut c = store_config(g.s3_config(None), local, false);
    c.local.index_cache = cache.map(Path::to_path_buf);
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reopen_reads_no_pack_index_from_s3() {
    use pagestore::index_cache::IndexCache;

    let g = Garage::start();
    let tmp = tempfile::tempdir().unwrap();
    let cache_dir = tmp.path().join("pack-index");
    let open = |cache: Option<&Path>| {
        let config = with_index_cache(&g, &tmp.path().join("l"), cache);
        async move { PageStore::open(&config).await.unwrap() }
    };
    // Five packs, written by a process without the cache.
    let mut checkpoints = Vec::new();
    {
        let writer = open(None).await;
        for seed in 1..=5 {
            let input = tmp.path().join(format!("in{seed}"));
            synth::checkpoint_dir(&input, 100 + seed, 300).unwrap();
            let r = writer
                .ingest_with(&format!("t{seed}"), &input, &criu_image::ingest_options())
                .await
                .unwrap();
            checkpoints.push((r.checkpoint, input));
        }
    }
    let packs = 5;

    // First open: one LIST, two ranged GETs per pack; the indexes are cached. The local tier is
    // off here: the index cache is its own setting (`[local] index_cache`), used either way.
    let first = open(Some(&cache_dir)).await;
    assert!(first.local().is_none());
    let c = first.stats_counters().cold;
    assert_eq!((c.lists, c.gets), (1, 2 * packs), "first open");
    let pages = first.catalog().len();
    drop(first);
    assert_eq!(
        IndexCache::open(&cache_dir).unwrap().packs().len(),
        packs as usize
    );

    // Second open: the LIST only.
    let second = open(Some(&cache_dir)).await;
    let c = second.stats_counters().cold;
    assert_eq!((c.lists, c.gets), (1, 0), "second open");
    assert_eq!(second.catalog().len(), pages);
    let (checkpoint, input) = &checkpoints[0];
    let out = tmp.path().join("out");
    second.materialize(checkpoint, &out).await.unwrap();
    assert!(synth::same_files(input, &out).unwrap());
    drop(second);

    // A damaged entry is not trusted: it is dropped and that one index read again.
    let cache = IndexCache::open(&cache_dir).unwrap();
    let victim = cache.packs()[0];
    let path = cache_dir.join(format!("{}.idx", victim.to_hex()));
    let mut bytes = std::fs::read(&path).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 0x40;
    std::fs::write(&path, &bytes).unwrap();
    let third = open(Some(&cache_dir)).await;
    assert_eq!(
        third.stats_counters().cold.gets,
        2,
        "only the damaged entry is refetched"
    );
    assert_eq!(third.catalog().len(), pages);
    assert!(third.verify().await.unwrap().ok());

    // Packs deleted by gc leave the cache; the others stay.
    third.forget("t1").await.unwrap();
    third.forget("t2").await.unwrap();
    let r = third.gc().await.unwrap();
    assert!(r.packs_deleted >= 2, "{r:?}");
    let listed = S3Storage::new(&g.s3_config(None))
        .unwrap()
        .list("packs/")
        .await
        .unwrap()
        .len();
    assert_eq!(cache.packs().len(), listed);
    drop(third);
    let fourth = open(Some(&cache_dir)).await;
    assert_eq!(fourth.stats_counters().cold.gets, 0, "after gc");
    let (checkpoint, input) = &checkpoints[4];
    let out = tmp.path().join("out5");
    fourth.materialize(checkpoint, &out).await.unwrap();
    assert!(synth::same_files(input, &out).unwrap());
}
