//! Retention, forget and gc, on the directory cold tier and on a real S3 server (Garage).

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use pagestore::ingest::IngestOptions;
use pagestore::locality::{LocalitySource, PagePos};
use pagestore::lock::LockKind;
use pagestore::{Error, PageStore};
use testkit::garage::cold_backends as backends;
use testkit::synth;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forgetting_one_of_two_tenants_keeps_the_shared_pages() {
    let tmp = tempfile::tempdir().unwrap();
    for (mut cfg, _garage) in backends(tmp.path()) {
        cfg.gc.repack_below = 0.9;
        let a = tmp.path().join("a");
        let b = tmp.path().join("b");
        // 600 shared pages, then 600 private ones each.
        synth::checkpoint_of_parts(&a, &[(10, 600), (11, 600)]).unwrap();
        synth::checkpoint_of_parts(&b, &[(10, 600), (12, 600)]).unwrap();
        let store = PageStore::open(&cfg).await.unwrap();
        store
            .ingest_with("alice", &a, &criu_image::ingest_options())
            .await
            .unwrap();
        let rb = store
            .ingest_with("bob", &b, &criu_image::ingest_options())
            .await
            .unwrap();
        let before = store.stats().await.unwrap();

        let private_a: Vec<_> = synth::page_file(11, 600)
            .chunks(4096)
            .map(pagestore::PageId::of)
            .filter(|p| !p.is_zero())
            .collect();
        let shared: Vec<_> = synth::page_file(10, 600)
            .chunks(4096)
            .map(pagestore::PageId::of)
            .filter(|p| !p.is_zero())
            .collect();

        assert_eq!(store.forget("alice").await.unwrap().len(), 1);
        let report = store.gc().await.unwrap();
        assert!(
            report.packs_repacked + report.packs_deleted >= 1,
            "{report:?}"
        );
        assert!(
            report.pack_bytes_after < report.pack_bytes_before,
            "{report:?}"
        );
        drop(store);

        // A fresh process sees only what gc left.
        let store = PageStore::open(&cfg).await.unwrap();
        let c = store.resolve(rb.checkpoint.id.as_str()).await.unwrap();
        let out = tmp.path().join("out-b");
        let _ = std::fs::remove_dir_all(&out);
        store.materialize(&c, &out).await.unwrap();
        assert!(synth::same_files(&b, &out).unwrap());
        for p in &shared {
            assert!(store.catalog().contains(p));
        }
        let gone = private_a
            .iter()
            .filter(|p| !store.catalog().contains(p))
            .count();
        assert_eq!(gone, private_a.len(), "alice's private pages must be gone");
        assert!(matches!(
            store.read_page(&private_a[0]).await,
            Err(Error::PageMissing(_))
        ));
        let v = store.verify().await.unwrap();
        assert!(v.ok(), "{:?}", v.problems);
        let after = store.stats().await.unwrap();
        assert!(after.pack_bytes < before.pack_bytes);
        assert_eq!(after.tenants, 1);
        // A second gc finds nothing to do.
        let again = store.gc().await.unwrap();
        assert_eq!((again.packs_deleted, again.packs_repacked), (0, 0));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_keeps_the_last_k_checkpoints() {
    let tmp = tempfile::tempdir().unwrap();
    for (mut cfg, _garage) in backends(tmp.path()) {
        cfg.retention.keep_last = 2;
        let store = PageStore::open(&cfg).await.unwrap();
        let mut dirs = Vec::new();
        for g in 0..4u64 {
            let d = tmp.path().join(format!("gen{g}"));
            // Each generation shares 200 pages with the others and has 100 of its own.
            synth::checkpoint_of_parts(&d, &[(20, 200), (30 + g, 100)]).unwrap();
            store
                .ingest_with("web", &d, &criu_image::ingest_options())
                .await
                .unwrap();
            dirs.push(d);
        }
        let left: Vec<u64> = store
            .checkpoints()
            .await
            .unwrap()
            .iter()
            .filter(|c| c.tenant == "web")
            .map(|c| c.generation)
            .collect();
        // The last two, and generation 1: the full manifest that 3 and 4 are written against
        // (deltas, `pagestore::manifest`); generation 2 is gone.
        assert_eq!(left, vec![1, 3, 4]);
        store.gc().await.unwrap();
        for c in store.checkpoints().await.unwrap().iter() {
            let d = &dirs[c.generation as usize - 1];
            let out = tmp.path().join(format!("out{}", c.generation));
            let _ = std::fs::remove_dir_all(&out);
            store.materialize(c, &out).await.unwrap();
            assert!(synth::same_files(d, &out).unwrap());
        }
        assert!(store.verify().await.unwrap().ok());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_does_not_run_beside_a_recompression_or_an_old_ingest() {
    let tmp = tempfile::tempdir().unwrap();
    for (cfg, _garage) in backends(tmp.path()) {
        let store = PageStore::open(&cfg).await.unwrap();
        // Both rewrite packs.
        let held = store.lock(LockKind::Recompress).await.unwrap();
        let err = store.gc().await.unwrap_err();
        assert!(matches!(err, Error::Busy { .. }), "{err}");
        // Ingests go on beside a recompression.
        let d = tmp.path().join("in");
        synth::checkpoint_of_parts(&d, &[(40, 50)]).unwrap();
        store
            .ingest_with("t", &d, &criu_image::ingest_options())
            .await
            .unwrap();
        store.unlock(held).await.unwrap();
        store.gc().await.unwrap();
        // An ingest lock of an older version (no protocol; maybe an old recompression) held by
        // a live process (this one) keeps gc out, as it did then.
        let body = format!(
            r#"{{"host":"{}","pid":{},"created_ms":{}}}"#,
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .unwrap()
                .trim(),
            std::process::id(),
            pagestore::clock::now_ms()
        );
        let key = "locks/ingest-old-1-1.lock";
        store.cold().put(key, body.into_bytes()).await.unwrap();
        assert!(matches!(store.gc().await, Err(Error::Busy { .. })));
        store.cold().delete(key).await.unwrap();
        store.gc().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_left_by_a_dead_process_does_not_block_gc() {
    let tmp = tempfile::tempdir().unwrap();
    for (cfg, _garage) in backends(tmp.path()) {
        let store = PageStore::open(&cfg).await.unwrap();
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
        // pid_max is at most 4194304, so this pid is never alive.
        let body = format!(
            r#"{{"host":"{}","pid":4194305,"created_ms":{}}}"#,
            host.trim(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis()
        );
        for key in [
            "locks/ingest-dead-4194305-1.lock",
            "locks/recompress-dead-4194305-2.lock",
            "locks/gc-dead-4194305-3.lock",
        ] {
            store
                .cold()
                .put(key, body.clone().into_bytes())
                .await
                .unwrap();
        }
        // A killed gc's doomed set goes too.
        store
            .cold()
            .put("locks/gc-dead-4194305-3.doomed", b"x".to_vec())
            .await
            .unwrap();
        store.gc().await.unwrap();
        assert!(store.cold().list("locks/").await.unwrap().is_empty());
        // A live one (this process) does block it.
        let held = store.lock(LockKind::Recompress).await.unwrap();
        assert!(matches!(store.gc().await, Err(Error::Busy { .. })));
        store.unlock(held).await.unwrap();
    }
}

/// The locality pack keys in the store.
async fn locality_keys(store: &PageStore) -> Vec<String> {
    let mut keys: Vec<String> = store
        .cold()
        .list("locality/")
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect();
    keys.sort();
    keys
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_newest_checkpoint_keeps_its_locality_pack() {
    let tmp = tempfile::tempdir().unwrap();
    for (cfg, _garage) in backends(tmp.path()) {
        let store = PageStore::open(&cfg).await.unwrap();
        let options = IngestOptions {
            locality: (0..300)
                .step_by(3)
                .map(|page| PagePos {
                    file: "pages-1.img".into(),
                    page,
                })
                .collect(),
            ..criu_image::ingest_options()
        };
        let mut keys = Vec::new();
        for g in 0..3u64 {
            let d = tmp.path().join(format!("loc{g}"));
            synth::checkpoint_of_parts(&d, &[(50, 200), (60 + g, 100)]).unwrap();
            let r = store.ingest_with("t", &d, &options).await.unwrap();
            // The positions' non-zero pages, each once.
            assert!(r.locality_pages > 50 && r.locality_pages <= 100, "{r:?}");
            let m = store.manifest(&r.checkpoint).await.unwrap();
            keys.push(LocalitySource::of(&m).unwrap().key);
        }
        // Only the newest checkpoint keeps its locality pack: each commit dropped the one before.
        assert_eq!(locality_keys(&store).await, keys[2..]);
        // Its older checkpoints, whose manifests still name theirs, verify and gc cleanly.
        assert!(store.verify().await.unwrap().ok());
        let report = store.gc().await.unwrap();
        assert_eq!(report.locality_deleted, 0);
        assert_eq!(locality_keys(&store).await, keys[2..]);

        // Retention keeps the newest checkpoint's locality pack.
        store.apply_retention("t", 2).await.unwrap();
        assert_eq!(locality_keys(&store).await, keys[2..]);

        // A killed ingest's locality pack (no manifest names it) is swept by gc.
        let orphan = format!("locality/t/0000000009-{}.pack", "ab".repeat(32));
        store
            .cold()
            .put(&orphan, b"left over".to_vec())
            .await
            .unwrap();
        let report = store.gc().await.unwrap();
        assert_eq!(report.locality_deleted, 1);
        assert_eq!(locality_keys(&store).await, keys[2..]);
        assert!(store.verify().await.unwrap().ok());

        // The newest checkpoint's locality pack missing is a problem verify reports.
        store.cold().delete(&keys[2]).await.unwrap();
        let report = store.verify().await.unwrap();
        assert!(
            report.problems.len() == 1 && report.problems[0].contains(&keys[2]),
            "{report:?}"
        );

        // Forget takes the rest.
        store.forget("t").await.unwrap();
        assert!(locality_keys(&store).await.is_empty());
        store.gc().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_sweeps_a_locality_pack_whose_manifest_was_deleted() {
    let tmp = tempfile::tempdir().unwrap();
    for (cfg, _garage) in backends(tmp.path()) {
        let store = PageStore::open(&cfg).await.unwrap();
        let d = tmp.path().join("gone");
        synth::checkpoint_of_parts(&d, &[(70, 100)]).unwrap();
        let options = IngestOptions {
            locality: vec![PagePos {
                file: "pages-1.img".into(),
                page: 5,
            }],
            ..criu_image::ingest_options()
        };
        let r = store.ingest_with("u", &d, &options).await.unwrap();
        assert_eq!(locality_keys(&store).await.len(), 1);
        // As if the manifest went by some other way than retention or forget.
        store
            .cold()
            .delete(&r.checkpoint.object_key())
            .await
            .unwrap();
        assert_eq!(store.gc().await.unwrap().locality_deleted, 1);
        assert!(locality_keys(&store).await.is_empty());
    }
}
