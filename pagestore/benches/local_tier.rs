//! The local tier's engines side by side (sled, fjall) under the cache's own FIFO logic: random
//! 4 KiB puts (MB/s, flush included) one at a time and in batches of a pack's pages (as ingest
//! caches them), random gets/s, disk bytes per cached byte, reopen time, and
//! the same again once the bound forces eviction on every put.
//!
//! `cargo bench -p pagestore --bench local_tier [-- PAGES]` prints one JSON object per engine and
//! a table. Figures and the choice they led to are in docs/ARCHITECTURE.md.

// A benchmark: a failure should stop it loudly.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::Instant;

use pagestore::codec::Codec;
use pagestore::config::LocalEngine;
use pagestore::local::{open_owned, LocalTier};
use pagestore::PageId;
use testkit::synth::Rng;

const MIB: f64 = 1048576.0;

fn random_page(rng: &mut Rng) -> Vec<u8> {
    (0..512)
        .flat_map(|_| rng.next_u64().to_le_bytes())
        .collect()
}

fn id(n: u64) -> PageId {
    PageId(*blake3::hash(&n.to_le_bytes()).as_bytes())
}

/// Puts pages `from..to` (random bytes), then flushes; returns MB/s of page bytes.
fn put_range(t: &dyn LocalTier, rng: &mut Rng, from: u64, to: u64) -> f64 {
    let pages: Vec<Vec<u8>> = (from..to).map(|_| random_page(rng)).collect();
    let started = Instant::now();
    for (n, page) in (from..to).zip(&pages) {
        t.put(&id(n), Codec::Raw, page).unwrap();
    }
    t.flush().unwrap();
    (to - from) as f64 * 4096.0 / MIB / started.elapsed().as_secs_f64()
}

/// Pages in one batched put: about what one 8 MiB pack of well-compressed pages holds.
const BATCH: u64 = 1024;

/// As [`put_range`], in batches of [`BATCH`] pages (`put_many`).
fn put_range_batched(t: &dyn LocalTier, rng: &mut Rng, from: u64, to: u64) -> f64 {
    let pages: Vec<Vec<u8>> = (from..to).map(|_| random_page(rng)).collect();
    let ids: Vec<PageId> = (from..to).map(id).collect();
    let started = Instant::now();
    for (ids, pages) in ids.chunks(BATCH as usize).zip(pages.chunks(BATCH as usize)) {
        let batch: Vec<_> = ids
            .iter()
            .zip(pages)
            .map(|(id, p)| (*id, Codec::Raw, &p[..]))
            .collect();
        t.put_many(&batch).unwrap();
    }
    t.flush().unwrap();
    (to - from) as f64 * 4096.0 / MIB / started.elapsed().as_secs_f64()
}

/// Random gets of pages `0..n` (present or evicted); returns gets/s.
fn gets(t: &dyn LocalTier, rng: &mut Rng, n: u64, count: u64) -> f64 {
    let started = Instant::now();
    let mut found = 0;
    for _ in 0..count {
        if t.get(&id(rng.next_u64() % n)).unwrap().is_some() {
            found += 1;
        }
    }
    assert!(found > 0);
    count as f64 / started.elapsed().as_secs_f64()
}

fn disk_ratio(t: &dyn LocalTier) -> f64 {
    t.disk_bytes().unwrap() as f64 / t.usage().unwrap().1 as f64
}

fn run(engine: LocalEngine, dir: &Path, pages: u64) -> serde_json::Value {
    let path = dir.join(engine.to_string());
    let mut rng = Rng::new(42);
    let t = open_owned(&path, engine, u64::MAX).unwrap();
    let put_mb_s = put_range(&*t, &mut rng, 0, pages);
    let gets_s = gets(&*t, &mut rng, pages, pages * 4);
    let ratio = disk_ratio(&*t);
    drop(t);
    // Let the engine's background threads release the directory before timing the reopen.
    std::thread::sleep(std::time::Duration::from_secs(1));
    let started = Instant::now();
    let t = open_owned(&path, engine, u64::MAX).unwrap();
    let reopen_ms = started.elapsed().as_secs_f64() * 1000.0;
    assert_eq!(t.usage().unwrap().0, pages);
    drop(t);
    std::thread::sleep(std::time::Duration::from_secs(1));

    // Churn: a bound of half the data; every further put evicts.
    let bound = pages * 4105 / 2;
    let started = Instant::now();
    let t = open_owned(&path, engine, bound).unwrap();
    let evict_open_ms = started.elapsed().as_secs_f64() * 1000.0;
    let churn_put_mb_s = put_range(&*t, &mut rng, pages, 3 * pages);
    let churn_gets_s = gets(&*t, &mut rng, 3 * pages, pages * 4);
    let churn_ratio = disk_ratio(&*t);
    drop(t);

    // The same puts again in batches, into a fresh tier and then under churn.
    let path = dir.join(format!("{engine}-batched"));
    let t = open_owned(&path, engine, u64::MAX).unwrap();
    let batch_put_mb_s = put_range_batched(&*t, &mut rng, 0, pages);
    assert_eq!(t.usage().unwrap().0, pages);
    drop(t);
    std::thread::sleep(std::time::Duration::from_secs(1));
    let t = open_owned(&path, engine, bound).unwrap();
    let churn_batch_put_mb_s = put_range_batched(&*t, &mut rng, pages, 3 * pages);
    assert!(t.usage().unwrap().1 <= bound);
    serde_json::json!({
        "engine": engine.to_string(),
        "pages": pages,
        "put_mb_s": put_mb_s,
        "gets_s": gets_s,
        "disk_per_byte": ratio,
        "reopen_ms": reopen_ms,
        "evict_half_at_open_ms": evict_open_ms,
        "churn_put_mb_s": churn_put_mb_s,
        "churn_gets_s": churn_gets_s,
        "churn_disk_per_byte": churn_ratio,
        "batch_put_mb_s": batch_put_mb_s,
        "churn_batch_put_mb_s": churn_batch_put_mb_s,
        "evictions": t.evictions(),
    })
}

fn main() {
    // `cargo bench` passes `--bench`; a number among the arguments is the page count.
    let pages = std::env::args()
        .filter_map(|a| a.parse::<u64>().ok())
        .next()
        .unwrap_or(32768);
    let dir = tempfile::tempdir().unwrap();
    let results: Vec<_> = [LocalEngine::Sled, LocalEngine::Fjall]
        .into_iter()
        .map(|e| {
            let r = run(e, dir.path(), pages);
            println!("{r}");
            r
        })
        .collect();
    println!("\n| engine | put MB/s | batched put MB/s | gets/s | disk/byte | reopen ms | churn put MB/s | churn batched put MB/s | churn gets/s | churn disk/byte |");
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for r in &results {
        let f = |k: &str| r[k].as_f64().unwrap();
        println!(
            "| {} | {:.1} | {:.1} | {:.0} | {:.2} | {:.0} | {:.1} | {:.1} | {:.0} | {:.2} |",
            r["engine"].as_str().unwrap(),
            f("put_mb_s"),
            f("batch_put_mb_s"),
            f("gets_s"),
            f("disk_per_byte"),
            f("reopen_ms"),
            f("churn_put_mb_s"),
            f("churn_batch_put_mb_s"),
            f("churn_gets_s"),
            f("churn_disk_per_byte"),
        );
    }
}
