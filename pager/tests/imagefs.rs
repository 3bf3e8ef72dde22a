//! The FUSE image directory against a real kernel mount (needs root and /dev/fuse).

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::sync::Arc;

use pager::reads::RestorePhase;
use pager::{ImageMount, MountOptions};
use pagestore::{PageStore, StoreConfig};
use testkit::image::{assert_same_dir, mixed_pages, write_image_dir};

/// A store in `home` (embedded tiers) holding one checkpoint of an image directory written to
/// `src` from `pages`, and its manifest.
async fn stored_checkpoint(
    home: &std::path::Path,
    src: &std::path::Path,
    pages: &[(u8, u64)],
) -> (Arc<PageStore>, pagestore::Manifest) {
    write_image_dir(src, pages, 5);
    let store = Arc::new(PageStore::open(&StoreConfig::embedded(home)).await.unwrap());
    let checkpoint = store
        .ingest_with("t", src, &criu_image::ingest_options())
        .await
        .unwrap()
        .checkpoint;
    let manifest = store.manifest(&checkpoint).await.unwrap();
    (store, manifest)
}

/// [`stored_checkpoint`] of `pages` (its source under `home/src`), with its pages settled in
/// the local tier and none in memory.
async fn stored_out_of_memory(
    home: &std::path::Path,
    pages: &[(u8, u64)],
) -> (Arc<PageStore>, pagestore::Manifest) {
    let (store, manifest) = stored_checkpoint(home, &home.join("src"), pages).await;
    store.local_settled().await.unwrap();
    store.evict_hot();
    (store, manifest)
}

/// Mounts `manifest` at `home/mnt` with `options`; the mount and its mountpoint.
fn mount_in(
    home: &std::path::Path,
    store: &Arc<PageStore>,
    manifest: pagestore::Manifest,
    options: MountOptions,
) -> (ImageMount, std::path::PathBuf) {
    let mnt = home.join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let mount = ImageMount::mount_with(
        store.clone(),
        manifest,
        &mnt,
        tokio::runtime::Handle::current(),
        options,
    )
    .unwrap();
    (mount, mnt)
}

/// Unmounts, off the runtime (it waits for the FUSE session to end).
async fn unmount(mount: ImageMount) {
    tokio::task::spawn_blocking(move || mount.unmount())
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mounted_checkpoint_reads_back_identical_and_logs_page_reads() {
    testkit::require_root();
    let home = tempfile::tempdir().unwrap();
    let src = home.path().join("src");
    let (store, manifest) = stored_checkpoint(home.path(), &src, &mixed_pages(64, 5)).await;
    let mnt = home.path().join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let mount = ImageMount::mount(
        store.clone(),
        manifest,
        &mnt,
        tokio::runtime::Handle::current(),
    )
    .unwrap();

    // One page read at an unaligned offset is logged as exactly the page it touches.
    let mnt2 = mnt.clone();
    let one = tokio::task::spawn_blocking(move || {
        use std::os::unix::fs::FileExt;
        let f = std::fs::File::open(mnt2.join("pages-1.img")).unwrap();
        let mut buf = vec![0u8; 100];
        f.read_exact_at(&mut buf, 5 * 4096 + 7).unwrap();
        buf
    })
    .await
    .unwrap();
    let expect =
        std::fs::read(src.join("pages-1.img")).unwrap()[5 * 4096 + 7..5 * 4096 + 107].to_vec();
    assert_eq!(one, expect);
    let log = mount.access_log().snapshot();
    assert_eq!(log.len(), 1);
    assert_eq!((log[0].file.as_str(), log[0].page), ("pages-1.img", 5));

    let (src2, mnt3) = (src.clone(), mnt.clone());
    tokio::task::spawn_blocking(move || assert_same_dir(&src2, &mnt3))
        .await
        .unwrap();
    assert!(mount.access_log().len() >= 65);
    // Writes are refused: the directory is a read-only view of an immutable checkpoint.
    assert!(std::fs::OpenOptions::new()
        .write(true)
        .open(mnt.join("core-1.img"))
        .is_err());
    tokio::task::spawn_blocking(move || mount.unmount())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(std::fs::read_dir(&mnt).unwrap().count(), 0);
}

/// Reads page `page` of the mount's `pages-1.img` through the kernel.
async fn read_page(mnt: &std::path::Path, page: u64) {
    let path = mnt.join("pages-1.img");
    tokio::task::spawn_blocking(move || {
        use std::os::unix::fs::FileExt;
        let f = std::fs::File::open(path).unwrap();
        let mut buf = vec![0u8; 4096];
        f.read_exact_at(&mut buf, page * 4096).unwrap();
    })
    .await
    .unwrap();
}

/// Waits up to 2 s for every page of `pages` to be in memory (`hot`), and asserts they are.
async fn assert_comes_into_memory(
    pages: std::ops::RangeInclusive<usize>,
    hot: impl Fn(usize) -> bool,
) {
    for _ in 0..100 {
        if pages.clone().all(&hot) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let seen: Vec<(usize, bool)> = pages.map(|i| (i, hot(i))).collect();
    panic!("not all in memory: {seen:?}");
}

/// A read while the tenant runs (the faults phase) of a page that no tier of this host holds
/// also fetches the pages around it into memory, within the budget, and the mount's next cold
/// fault twice as many; a read while CRIU restores, or of a page held here, fetches nothing
/// more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_fault_fetches_the_pages_around_it() {
    testkit::require_root();
    let home = tempfile::tempdir().unwrap();
    let pages: Vec<(u8, u64)> = (0..64).map(|i| (1, i)).collect();
    let (store, manifest) = stored_out_of_memory(home.path(), &pages).await;
    let ids = manifest.file("pages-1.img").unwrap().pages().to_vec();
    store.evict_local().unwrap();
    // Each page is stored alone here (lz4): a budget of the ten pages around page 40 and half
    // of the next.
    let stored = |i: usize| u64::from(store.catalog().locate(&ids[i]).unwrap().len);
    let ten: u64 = (35..=45).filter(|&i| i != 40).map(stored).sum();
    let options = MountOptions {
        fault_readahead_bytes: ten + stored(46) / 2,
    };
    let (mount, mnt) = mount_in(home.path(), &store, manifest, options);
    let hot = |i: usize| store.hot().contains(&ids[i]);

    // CRIU's own reads (the restore phase) read nothing ahead.
    read_page(&mnt, 10).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(hot(10));
    assert!(!hot(9) && !hot(11));

    // A fault of page 40: the five pages after it and the five before it come too.
    mount.reads().set_phase(RestorePhase::Faults);
    read_page(&mnt, 40).await;
    assert_comes_into_memory(35..=45, hot).await;
    assert!(!hot(34) && !hot(46), "beyond the budget");

    // A fault of a page in memory reads nothing ahead.
    read_page(&mnt, 45).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(!hot(46) && !hot(51));

    // The mount's second cold fault (page 20) reads twice as far: more than five pages on
    // each side, within twice the budget (about 21 pages).
    read_page(&mnt, 20).await;
    assert_comes_into_memory(13..=27, hot).await;
    assert!(!hot(0) && !hot(34), "beyond twice the budget");
    unmount(mount).await;
}

/// The restore's reads and the tenant's faults that waited for a cold GET of their own count as
/// the store's `cold_waits`, one wave per wait when they come one after another; a read served
/// from the local disk, or during the background copy, is no such wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_that_waited_for_the_cold_tier_are_counted_as_waits() {
    testkit::require_root();
    let home = tempfile::tempdir().unwrap();
    let pages: Vec<(u8, u64)> = (0..64).map(|i| (1, i)).collect();
    let (store, manifest) = stored_out_of_memory(home.path(), &pages).await;
    let (mount, mnt) = mount_in(home.path(), &store, manifest, MountOptions::default());
    let waits = || store.live_counters().cold_waits;

    // From the local disk: no wait on the cold tier.
    read_page(&mnt, 3).await;
    assert_eq!(waits(), 0);
    store.evict_hot();
    store.evict_local().unwrap();
    // CRIU's read, then two faults one after another: three waits.
    read_page(&mnt, 10).await;
    mount.reads().set_phase(RestorePhase::Faults);
    read_page(&mnt, 20).await;
    read_page(&mnt, 30).await;
    assert_eq!(waits(), 3);
    // The background copy holds no one up.
    mount.reads().set_phase(RestorePhase::Background);
    read_page(&mnt, 40).await;
    assert_eq!(waits(), 3);
    assert!(
        store.live_counters().cold_waves >= 4,
        "its read went cold all the same"
    );
    unmount(mount).await;
}

/// A FUSE thread serves a read and the runtime fetches its pages, yet both log in the span the
/// checkpoint was mounted in (a worker's tenant and swap-in): a cold GET names its tenant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_are_logged_in_the_span_the_checkpoint_was_mounted_in() {
    testkit::require_root();
    let logged = Arc::new(std::sync::Mutex::new(Vec::<u8>::new()));
    let writer = logged.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || Log(writer.clone()))
        .finish();
    tracing::subscriber::set_global_default(subscriber).unwrap();

    let home = tempfile::tempdir().unwrap();
    let pages: Vec<(u8, u64)> = (0..16).map(|i| (1, i)).collect();
    let (store, manifest) = stored_out_of_memory(home.path(), &pages).await;
    store.evict_local().unwrap();
    let span = tracing::info_span!("tenant", tenant = "span-probe");
    let (mount, mnt) =
        span.in_scope(|| mount_in(home.path(), &store, manifest, MountOptions::default()));
    read_page(&mnt, 3).await;
    unmount(mount).await;

    let text = String::from_utf8(logged.lock().unwrap().clone()).unwrap();
    let get = text
        .lines()
        .find(|l| l.contains("cold ranged GET"))
        .unwrap_or_else(|| panic!("no cold GET logged:\n{text}"));
    assert!(get.contains("span-probe"), "{get}");
}

/// Where the test's subscriber writes.
struct Log(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Log {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
