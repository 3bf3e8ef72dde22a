//! Manifests cost about what changed, and a checkpoint still opens in a bounded number of reads:
//! sixty swap cycles of two small tenants, driven with synthetic checkpoints through the store
//! API (the same with real tenants: `pico bench dedup` and the e2e tests).
#![allow(clippy::unwrap_used)] // helpers outside #[test] fns

use std::path::Path;
use std::sync::atomic::Ordering;

use pagestore::config::RetentionConfig;
use pagestore::manifest::FULL_EVERY;
use pagestore::{PageStore, StoreConfig};
use testkit::image::{assert_same_dir, noise, page};

const CYCLES: u64 = 60;

/// One checkpoint of a small tenant at swap cycle `cycle`: `pages` pages (a quarter zero, the
/// rest half text, half noise) of which about one in 50 changes each cycle, a core image that
/// changes every cycle and a larger image that never does (CRIU's files, fs, mm images).
fn checkpoint(dir: &Path, tenant_seed: u64, pages: u64, cycle: u64) {
    let mut data = Vec::new();
    for i in 0..pages {
        // Page i last changed at the latest cycle c <= `cycle` with (i + c) % 50 == 0.
        let changed_at = (0..=cycle).rev().find(|c| (i + c) % 50 == 0).unwrap_or(0);
        let seed = tenant_seed * 1_000_000_000 + changed_at * 1_000_000 + i;
        data.extend(match i % 4 {
            0 => page(0, 0),
            1 | 2 => page(1, seed),
            _ => page(2, seed),
        });
    }
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("pages-1.img"), data).unwrap();
    std::fs::write(
        dir.join("core-1.img"),
        noise(tenant_seed * 1000 + cycle, 2000),
    )
    .unwrap();
    std::fs::write(dir.join("mm-1.img"), noise(tenant_seed, 30_000)).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_swap_cycles_keep_manifests_under_a_tenth_of_stored_bytes() {
    let home = tempfile::tempdir().unwrap();
    let mut config = StoreConfig::embedded(home.path());
    config.local.enabled = false;
    // Every checkpoint kept first, to see what deltas alone save; the default retention after.
    config.retention.keep_last = 0;
    let store = PageStore::open(&config).await.unwrap();
    let tenants = [("counter", 1u64, 1500u64), ("redis", 2, 2500)];
    let last = |t: &str| home.path().join(format!("{t}-last"));
    for cycle in 0..CYCLES {
        for (name, seed, pages) in tenants {
            let dir = last(name);
            let _ = std::fs::remove_dir_all(&dir);
            checkpoint(&dir, seed, pages, cycle);
            store
                .ingest_with(name, &dir, &criu_image::ingest_options())
                .await
                .unwrap();
        }
    }
    store.gc().await.unwrap();
    let all = store.stats().await.unwrap();
    assert_eq!(all.checkpoints, 2 * CYCLES);
    let share = |s: &pagestore::StoreStats| s.manifest_bytes as f64 / s.stored_bytes as f64;
    eprintln!(
        "every checkpoint kept: {} manifest bytes of {} stored ({:.1}%)",
        all.manifest_bytes,
        all.stored_bytes,
        100.0 * share(&all)
    );
    // What the same checkpoints cost as full manifests of the first format, each listing all its
    // pages and small files: the deltas between full ones list only what changed.
    let mut as_full = 0;
    for c in store.checkpoints().await.unwrap() {
        as_full += store.manifest(&c).await.unwrap().encode().len() as u64;
    }
    eprintln!("as full manifests of the first format: {as_full} bytes");
    assert!(
        all.manifest_bytes * 3 < as_full,
        "{} vs {as_full}",
        all.manifest_bytes
    );

    // The default retention: the last 3, one a day for a week (all made today here), and the
    // base of each kept delta.
    for (name, _, _) in tenants {
        store
            .apply_retention_policy(name, &RetentionConfig::default())
            .await
            .unwrap();
    }
    store.gc().await.unwrap();
    let kept = store.stats().await.unwrap();
    eprintln!(
        "default retention: {} checkpoints, {} manifest bytes of {} stored ({:.1}%)",
        kept.checkpoints,
        kept.manifest_bytes,
        kept.stored_bytes,
        100.0 * share(&kept)
    );
    assert!(kept.checkpoints <= 2 * 4, "{}", kept.checkpoints);
    assert!(share(&kept) < 0.10, "{:.3}", share(&kept));
    for (name, _, _) in tenants {
        let newest = store.latest(name).await.unwrap().unwrap();
        assert_eq!(newest.generation, CYCLES);
        let out = home.path().join(format!("{name}-out"));
        store.materialize(&newest, &out).await.unwrap();
        assert_same_dir(&last(name), &out);
    }
    assert!(store.verify().await.unwrap().ok());
}

/// `generations` checkpoints of tenant `t` (200 pages, seed `seed`) ingested by a store on
/// `config` that is closed afterwards, as a worker's is when it stops.
async fn ingest_generations(config: &StoreConfig, home: &Path, seed: u64, generations: u64) {
    let store = PageStore::open(config).await.unwrap();
    let dir = home.join("src");
    for cycle in 0..generations {
        let _ = std::fs::remove_dir_all(&dir);
        checkpoint(&dir, seed, 200, cycle);
        store
            .ingest_with("t", &dir, &criu_image::ingest_options())
            .await
            .unwrap();
    }
}

/// Opening any checkpoint reads at most two objects: its manifest and the full manifest it is
/// written against (and one, once that base is known to the process).
#[tokio::test]
async fn a_checkpoint_opens_with_at_most_two_reads() {
    let home = tempfile::tempdir().unwrap();
    let mut config = StoreConfig::embedded(home.path());
    config.local.enabled = false;
    config.retention.keep_last = 0;
    let generations = 2 * FULL_EVERY + 3;
    ingest_generations(&config, home.path(), 3, generations).await;
    let store = PageStore::open(&config).await.unwrap();
    let gets = || store.cold().counters.gets.load(Ordering::Relaxed);
    let mut full = 0;
    for c in store.checkpoints().await.unwrap() {
        let before = gets();
        store.manifest(&c).await.unwrap();
        let reads = gets() - before;
        assert!(
            (1..=2).contains(&reads),
            "generation {}: {reads}",
            c.generation
        );
        if store.manifest_info(&c).await.unwrap().base.is_none() {
            full += 1;
        }
    }
    // A full manifest at least every FULL_EVERY generations.
    assert_eq!(full, generations.div_ceil(FULL_EVERY));
}

/// The manifests a machine committed are read from its local disk after a restart (a worker's
/// upgrade): no cold read for them on the next wake-up. A damaged copy is read again from the
/// cold tier; `verify` checks the cold tier's copies, not these; a forgotten tenant's go with it.
#[tokio::test]
async fn a_restarted_store_reads_the_manifests_it_committed_from_its_own_disk() {
    let home = tempfile::tempdir().unwrap();
    let mut config = StoreConfig::embedded(home.path());
    config.retention.keep_last = 0;
    ingest_generations(&config, home.path(), 4, FULL_EVERY + 2).await;
    let store = PageStore::open(&config).await.unwrap();
    let gets = || store.cold().counters.gets.load(Ordering::Relaxed);
    let checkpoints = store.checkpoints().await.unwrap();
    assert!(checkpoints.len() as u64 > FULL_EVERY, "deltas among them");
    let before = gets();
    for c in &checkpoints {
        store.manifest(c).await.unwrap();
    }
    assert_eq!(
        gets() - before,
        0,
        "every manifest and base from the local disk"
    );

    // A damaged copy: read from the cold tier instead, and the same manifest.
    let newest = checkpoints.iter().max_by_key(|c| c.generation).unwrap();
    let kept = home
        .path()
        .join("local-manifests")
        .join(format!("{}.manifest", newest.id));
    let sound = store.manifest(newest).await.unwrap();
    let mut bytes = std::fs::read(&kept).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&kept, bytes).unwrap();
    drop(store);
    let store = PageStore::open(&config).await.unwrap();
    let gets = || store.cold().counters.gets.load(Ordering::Relaxed);
    let before = gets();
    assert_eq!(store.manifest(newest).await.unwrap(), sound);
    assert!(gets() > before, "read from the cold tier");
    assert!(store.verify().await.unwrap().ok());

    // The cold tier's copy damaged, this machine's sound: verify sees it.
    let object = home.path().join("cold").join(newest.object_key());
    std::fs::copy(&object, &kept).unwrap();
    let mut bytes = std::fs::read(&object).unwrap();
    bytes[last] ^= 1;
    std::fs::write(&object, bytes).unwrap();
    assert_eq!(store.manifest(newest).await.unwrap(), sound);
    let report = store.verify().await.unwrap();
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.contains(newest.id.as_str())),
        "{:?}",
        report.problems
    );

    store.forget("t").await.unwrap();
    let left = std::fs::read_dir(home.path().join("local-manifests"))
        .unwrap()
        .count();
    assert_eq!(left, 0, "a forgotten tenant's manifests are not kept");
}
