//! The FUSE image directory against a real kernel mount (needs root and /dev/fuse).

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::sync::Arc;

use pager::ImageMount;
use pagestore::{PageStore, StoreConfig};
use testkit::image::{assert_same_dir, mixed_pages, write_image_dir};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mounted_checkpoint_reads_back_identical_and_logs_page_reads() {
    testkit::require_root();
    let home = tempfile::tempdir().unwrap();
    let src = home.path().join("src");
    write_image_dir(&src, &mixed_pages(64, 5), 5);
    let store = Arc::new(
        PageStore::open(&StoreConfig::embedded(home.path()))
            .await
            .unwrap(),
    );
    let checkpoint = store
        .ingest_with("t", &src, &criu_image::ingest_options())
        .await
        .unwrap()
        .checkpoint;
    let manifest = store.manifest(&checkpoint).await.unwrap();
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
