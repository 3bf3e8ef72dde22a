//! The kept images: written, read back, bounded, damaged, and not written without room.

use crate::config::StoreConfig;
use crate::manifest::testing::{file, of_files, paged_bytes};
use crate::manifest::{FileContent, Manifest};
use crate::page::{PageId, PAGE_SIZE};
use crate::store::PageStore;
use std::path::Path;

fn page(byte: u8) -> Vec<u8> {
    let mut p = vec![byte; PAGE_SIZE];
    p[0] = byte.wrapping_add(1);
    p
}

async fn open(dir: &Path) -> PageStore {
    PageStore::open(&StoreConfig::embedded(dir)).await.unwrap()
}

/// An inline file and a page file of several write chunks: `a` in memory, `b` on the
/// local disk only, a zero page, and a last page cut short by the file size. Its bytes.
fn image(store: &PageStore) -> (Manifest, Vec<u8>) {
    let (a, b) = (page(1), page(2));
    let (ida, idb) = (PageId::of(&a), PageId::of(&b));
    store.hot().insert(ida, &a);
    let (codec, encoded) = crate::codec::encode(&b);
    store.local().unwrap().put(&idb, codec, &encoded).unwrap();
    // Parts enough for several threads, the last one short.
    let mut ids = vec![ida; 3 * super::PART];
    ids.extend([PageId::ZERO, idb, ida]);
    let size = (ids.len() * PAGE_SIZE - 100) as u64;
    let want = paged_bytes(&ids, &[(ida, &a), (idb, &b)], size);
    let mut manifest = of_files(vec![
        file("inventory.img", 3, FileContent::Inline(vec![7, 8, 9])),
        file("pages-1.img", size, FileContent::Paged(ids)),
    ]);
    manifest.created_ms = 42;
    (manifest, want)
}

#[tokio::test]
async fn a_kept_image_is_written_back_whole_without_the_tiers() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let (manifest, want) = image(&store);
    assert!(store.keep_whole_image(&manifest, None).unwrap());
    // The tiers forget the pages: the kept image alone writes them out.
    store.local().unwrap().clear().unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("pages-1.img"), vec![9u8; 3 * PAGE_SIZE]).unwrap();
    assert!(store.materialize_whole_image(&manifest, &out).unwrap());
    assert_eq!(std::fs::read(out.join("inventory.img")).unwrap(), [7, 8, 9]);
    assert!(
        std::fs::read(out.join("pages-1.img")).unwrap() == want,
        "written over an earlier file: its zero page reads as zeros"
    );

    // Another checkpoint of the tenant is not this image: not used, kept.
    let mut newer = manifest.clone();
    newer.generation += 1;
    assert!(!store.materialize_whole_image(&newer, &out).unwrap());
    assert!(store.materialize_whole_image(&manifest, &out).unwrap());

    // Forgotten with its tenant.
    store.drop_whole_image("t").await;
    assert!(!store.materialize_whole_image(&manifest, &out).unwrap());
}

/// Two swap-outs keep their images at once: the older checkpoint's, finished last, does not
/// replace the newer one's (its next restore would read the tiers instead).
#[tokio::test]
async fn an_older_checkpoints_image_does_not_replace_a_newer_ones() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let (older, _) = image(&store);
    let mut newer = older.clone();
    newer.generation += 1;
    assert!(store.keep_whole_image(&newer, None).unwrap());
    assert!(!store.keep_whole_image(&older, None).unwrap());
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    assert!(store.materialize_whole_image(&newer, &out).unwrap());
    assert!(!store.materialize_whole_image(&older, &out).unwrap());
    let leftovers: Vec<_> = std::fs::read_dir(store.whole_images_dir().unwrap())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // A newer one still replaces an older one.
    newer.generation += 1;
    assert!(store.keep_whole_image(&newer, None).unwrap());
    assert!(store.materialize_whole_image(&newer, &out).unwrap());
}

/// A dense tenant's pages are in neither tier behind its swap-out: they are read from its
/// dump, each checked; a dump page that does not match is looked for in the tiers.
#[tokio::test]
async fn a_kept_image_is_written_from_the_dump_when_the_tiers_lack_its_pages() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let (manifest, want) = image(&store);
    // CRIU's page files hold whole pages (the image's last one is cut short by its size).
    let (a, b) = (page(1), page(2));
    let ids = manifest.files[1].pages();
    let dumped = paged_bytes(
        ids,
        &[(PageId::of(&a), &a), (PageId::of(&b), &b)],
        (ids.len() * PAGE_SIZE) as u64,
    );
    let dump = dir.path().join("dump");
    std::fs::create_dir(&dump).unwrap();
    std::fs::write(dump.join("pages-1.img"), &dumped).unwrap();
    store.hot().clear();
    store.local().unwrap().clear().unwrap();
    assert!(store.keep_whole_image(&manifest, Some(&dump)).unwrap());
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    assert!(store.materialize_whole_image(&manifest, &out).unwrap());
    assert!(std::fs::read(out.join("pages-1.img")).unwrap() == want);

    // A dump whose bytes are not the checkpoint's, and pages on no tier: nothing kept.
    store.drop_whole_image("t").await;
    let mut changed = dumped.clone();
    changed[5 * PAGE_SIZE] ^= 1;
    std::fs::write(dump.join("pages-1.img"), &changed).unwrap();
    assert!(!store.keep_whole_image(&manifest, Some(&dump)).unwrap());
    assert!(!store.whole_image_path("t").unwrap().exists());
}

/// Beyond `[local] whole_images_max_bytes`, the least recently written images go, never the
/// one just kept.
#[tokio::test]
async fn kept_images_are_bounded_the_oldest_deleted_first() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = StoreConfig::embedded(dir.path());
    let store = PageStore::open(&config).await.unwrap();
    let (manifest, _) = image(&store);
    let one = |tenant: &str| Manifest {
        tenant: tenant.into(),
        ..manifest.clone()
    };
    assert!(store.keep_whole_image(&one("a"), None).unwrap());
    let size = std::fs::metadata(store.whole_image_path("a").unwrap())
        .unwrap()
        .len();
    drop(store);
    config.local.whole_images_max_bytes = 2 * size;
    let store = PageStore::open(&config).await.unwrap();
    image(&store);
    for tenant in ["b", "c"] {
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert!(store.keep_whole_image(&one(tenant), None).unwrap());
    }
    let held = |t: &str| store.whole_image_path(t).unwrap().exists();
    assert!(!held("a") && held("b") && held("c"), "the oldest went");
    // Even over the bound alone, the one just kept stays.
    drop(store);
    config.local.whole_images_max_bytes = 1;
    let store = PageStore::open(&config).await.unwrap();
    image(&store);
    assert!(store.keep_whole_image(&one("d"), None).unwrap());
    let held = |t: &str| store.whole_image_path(t).unwrap().exists();
    assert!(held("d") && !held("b") && !held("c"));
}

#[tokio::test]
async fn a_damaged_kept_image_is_not_used_and_is_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let (manifest, _) = image(&store);
    assert!(store.keep_whole_image(&manifest, None).unwrap());
    let path = store.whole_image_path("t").unwrap();
    let kept = std::fs::read(&path).unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    // A page's bytes (in the second part), then the footer.
    for at in [
        super::HEADER + 70 * (super::PAGE_HEADER + 40),
        kept.len() - 1,
    ] {
        let mut damaged = kept.clone();
        damaged[at] ^= 0xff;
        std::fs::write(&path, &damaged).unwrap();
        assert!(!store.materialize_whole_image(&manifest, &out).unwrap());
        assert!(!path.exists(), "a damaged image is deleted");
    }
    // Cut short, the same.
    std::fs::write(&path, &kept).unwrap();
    assert!(store.materialize_whole_image(&manifest, &out).unwrap());
    std::fs::write(&path, &kept[..kept.len() / 2]).unwrap();
    assert!(!store.materialize_whole_image(&manifest, &out).unwrap());
    assert!(!path.exists());
}

/// A kept image is a copy: it never takes the disk's last free bytes.
#[tokio::test]
async fn no_image_is_kept_without_room_on_the_disk() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let (manifest, _) = image(&store);
    let free = super::free_bytes(dir.path()).unwrap();
    assert!(!store
        .keep_whole_image_leaving(&manifest, None, free)
        .unwrap());
    assert!(!store.whole_image_path("t").unwrap().exists());
    assert!(store.keep_whole_image_leaving(&manifest, None, 0).unwrap());
}

#[tokio::test]
async fn no_image_is_kept_when_a_page_is_on_neither_tier_nor_left_half_written() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path()).await;
    let (mut manifest, _) = image(&store);
    let elsewhere = PageId::of(&page(5));
    manifest.files[1].content = FileContent::Paged(vec![elsewhere]);
    assert!(!store.keep_whole_image(&manifest, None).unwrap());
    let dir = store.whole_images_dir().unwrap();
    let left: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
    assert!(left.is_empty(), "nothing left behind: {left:?}");
    // And one a killed worker left half written goes at the next open.
    std::fs::write(dir.join("t.img.7.tmp"), b"PCWHOLE1").unwrap();
    drop(store);
    let store = open(tmp.path()).await;
    assert_eq!(store.whole_images_dir().unwrap(), dir);
    let left: Vec<_> = std::fs::read_dir(dir).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");
}
