//! The kept dumps: kept, checked, replaced, bounded, damaged, and not kept without room.

use crate::config::StoreConfig;
use crate::manifest::testing::{file, of_files, paged_bytes};
use crate::manifest::{FileContent, Manifest};
use crate::page::{PageId, PAGE_SIZE};
use crate::store::PageStore;
use std::path::{Path, PathBuf};

fn page(byte: u8) -> Vec<u8> {
    let mut p = vec![byte; PAGE_SIZE];
    p[0] = byte.wrapping_add(1);
    p
}

async fn open(dir: &Path) -> PageStore {
    PageStore::open(&StoreConfig::embedded(dir)).await.unwrap()
}

/// A checkpoint of tenant `t` (an inline file and a page file of several parts, with a zero
/// page and a last page cut short by the file size) and its dump in `at/name`.
fn dumped(at: &Path, name: &str) -> (Manifest, PathBuf) {
    let (a, b) = (page(1), page(2));
    let (ida, idb) = (PageId::of(&a), PageId::of(&b));
    let mut ids = vec![ida; 3 * 64];
    ids.extend([PageId::ZERO, idb, ida]);
    // The cut page was named with zeros after the end: its id is of those bytes.
    let size = (ids.len() * PAGE_SIZE - 100) as u64;
    let mut cut = a.clone();
    cut[PAGE_SIZE - 100..].fill(0);
    let last = ids.len() - 1;
    ids[last] = PageId::of(&cut);
    let pages = paged_bytes(&ids, &[(ida, &a), (idb, &b), (ids[last], &cut)], size);
    let mut manifest = of_files(vec![
        file("inventory.img", 3, FileContent::Inline(vec![7, 8, 9])),
        file("pages-1.img", size, FileContent::Paged(ids)),
    ]);
    manifest.created_ms = 42;
    let dump = at.join(name);
    std::fs::create_dir_all(&dump).unwrap();
    std::fs::write(dump.join("inventory.img"), [7, 8, 9]).unwrap();
    std::fs::write(dump.join("pages-1.img"), pages).unwrap();
    (manifest, dump)
}

/// CRIU's page files, as the worker names them.
fn is_pages(name: &str) -> bool {
    criu_image::names::is_pages_file(name)
}

fn kept_path(store: &PageStore, tenant: &str) -> PathBuf {
    store.kept_dump_path(tenant).unwrap()
}

#[tokio::test]
async fn a_dump_is_kept_where_a_restore_reads_it_and_checks_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let (manifest, dump) = dumped(dir.path(), "staging");
    assert!(store.keep_dump(&manifest, &dump).unwrap());
    assert!(!dump.exists(), "moved, not copied");
    let kept = store.kept_dump(&manifest).unwrap().expect("kept");
    assert_eq!(kept.path(), kept_path(&store, "t"));
    assert_eq!(
        std::fs::read(kept.path().join("inventory.img")).unwrap(),
        [7, 8, 9]
    );
    assert!(kept.check_files(&manifest, kept.path(), is_pages).unwrap());
    assert!(kept.check_pages(&manifest, kept.path(), is_pages).unwrap());
    // Its zero page is a hole.
    use std::os::unix::fs::MetadataExt;
    let pages = std::fs::metadata(kept.path().join("pages-1.img")).unwrap();
    assert!(pages.blocks() * 512 < pages.len(), "{pages:?}");

    // A copy of it (a tenant in a user namespace) is checked the same way.
    let copy = dir.path().join("copy");
    std::fs::create_dir(&copy).unwrap();
    kept.copy_into(&manifest, &copy).unwrap();
    assert!(kept.check_files(&manifest, &copy, is_pages).unwrap());
    assert!(kept.check_pages(&manifest, &copy, is_pages).unwrap());
    drop(kept);

    // Another checkpoint of the tenant is not this one's: not used, kept.
    let mut newer = manifest.clone();
    newer.generation += 1;
    assert!(store.kept_dump(&newer).unwrap().is_none());
    assert!(store.kept_dump(&manifest).unwrap().is_some());

    // Forgotten with its tenant.
    store.drop_whole_image("t").await;
    assert!(store.kept_dump(&manifest).unwrap().is_none());
}

/// A dump that is not its checkpoint's, however it differs, fails its check and is deleted.
#[tokio::test]
async fn a_kept_dump_that_differs_from_its_checkpoint_is_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let damages: [Damage; 5] = [
        ("a page's byte", |d| {
            change(&d.join("pages-1.img"), 2 * 64 * PAGE_SIZE + 17)
        }),
        ("the cut page's byte", |d| {
            change(&d.join("pages-1.img"), 194 * PAGE_SIZE + 5)
        }),
        ("a zero page's byte", |d| {
            change(&d.join("pages-1.img"), 192 * PAGE_SIZE + 9)
        }),
        ("a small file", |d| change(&d.join("inventory.img"), 1)),
        ("a page file cut short", |d| {
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(d.join("pages-1.img"))
                .unwrap();
            f.set_len(PAGE_SIZE as u64).unwrap();
        }),
    ];
    for (what, damage) in damages {
        let (manifest, dump) = dumped(dir.path(), "staging");
        assert!(store.keep_dump(&manifest, &dump).unwrap());
        let kept = store.kept_dump(&manifest).unwrap().expect("kept");
        damage(kept.path());
        let passed = kept.check_files(&manifest, kept.path(), is_pages).unwrap()
            && kept.check_pages(&manifest, kept.path(), is_pages).unwrap();
        assert!(!passed, "{what}");
        assert!(!kept_path(&store, "t").exists(), "{what}: deleted");
    }
    // A file the checkpoint does not hold (CRIU would read it unchecked): not used, deleted.
    let (manifest, dump) = dumped(dir.path(), "staging");
    assert!(store.keep_dump(&manifest, &dump).unwrap());
    std::fs::write(kept_path(&store, "t").join("core-9.img"), b"x").unwrap();
    assert!(store.kept_dump(&manifest).unwrap().is_none());
    assert!(!kept_path(&store, "t").exists());
}

/// What a damage is called, and how it is done to a kept dump's directory.
type Damage = (&'static str, fn(&Path));

fn change(path: &Path, at: usize) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[at] ^= 0xff;
    std::fs::write(path, bytes).unwrap();
}

/// Two swap-outs keep their dumps at once: the older checkpoint's, kept last, does not replace
/// the newer one's (its next restore would read the tiers instead).
#[tokio::test]
async fn an_older_checkpoints_dump_does_not_replace_a_newer_ones() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let (older, older_dump) = dumped(dir.path(), "older");
    let (mut newer, newer_dump) = dumped(dir.path(), "newer");
    newer.generation += 1;
    assert!(store.keep_dump(&newer, &newer_dump).unwrap());
    assert!(!store.keep_dump(&older, &older_dump).unwrap());
    assert!(older_dump.exists(), "left to the caller");
    assert!(store.kept_dump(&newer).unwrap().is_some());
    assert!(store.kept_dump(&older).unwrap().is_none());
    // A newer one still replaces an older one, which is deleted.
    let (mut newest, newest_dump) = dumped(dir.path(), "newest");
    newest.generation += 2;
    assert!(store.keep_dump(&newest, &newest_dump).unwrap());
    assert!(store.kept_dump(&newest).unwrap().is_some());
    let left: Vec<_> = std::fs::read_dir(store.whole_images_dir().unwrap())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(left, ["t.dump"]);
}

/// Beyond `[local] whole_images_max_bytes`, the least recently kept dumps go, never the one
/// just kept, nor one a restore is reading.
#[tokio::test]
async fn kept_dumps_are_bounded_the_oldest_deleted_first() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = StoreConfig::embedded(dir.path());
    let store = PageStore::open(&config).await.unwrap();
    let keep = |store: &PageStore, tenant: &str| {
        let (mut manifest, dump) = dumped(dir.path(), &format!("staging-{tenant}"));
        manifest.tenant = tenant.into();
        assert!(store.keep_dump(&manifest, &dump).unwrap());
        manifest
    };
    keep(&store, "a");
    let size = super::disk_bytes(&kept_path(&store, "a"));
    drop(store);
    config.local.whole_images_max_bytes = 2 * size;
    let store = PageStore::open(&config).await.unwrap();
    for tenant in ["b", "c"] {
        std::thread::sleep(std::time::Duration::from_millis(20));
        keep(&store, tenant);
    }
    let held = |store: &PageStore, t: &str| kept_path(store, t).exists();
    assert!(
        !held(&store, "a") && held(&store, "b") && held(&store, "c"),
        "the oldest went"
    );
    // Even over the bound alone, the one just kept stays, and one being read.
    drop(store);
    config.local.whole_images_max_bytes = 1;
    let store = PageStore::open(&config).await.unwrap();
    let c = Manifest {
        tenant: "c".into(),
        ..dumped(dir.path(), "unused").0
    };
    let reading = store.kept_dump(&c).unwrap().expect("kept");
    keep(&store, "d");
    assert!(held(&store, "d") && !held(&store, "b") && held(&store, "c"));
    drop(reading);
}

/// A kept dump is a copy: it never holds the disk's last free bytes.
#[tokio::test]
async fn no_dump_is_kept_without_room_on_the_disk() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let (manifest, dump) = dumped(dir.path(), "staging");
    let free = super::free_bytes(dir.path()).unwrap();
    assert!(!store
        .keep_dump_leaving(&manifest, &dump, free + (1 << 30))
        .unwrap());
    assert!(dump.exists() && !kept_path(&store, "t").exists());
    assert!(store.keep_dump_leaving(&manifest, &dump, 0).unwrap());
}

#[tokio::test]
async fn a_dump_without_the_checkpoints_files_is_not_kept_nor_what_a_killed_worker_left() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path()).await;
    let (manifest, dump) = dumped(tmp.path(), "staging");
    std::fs::remove_file(dump.join("inventory.img")).unwrap();
    assert!(!store.keep_dump(&manifest, &dump).unwrap());
    let (mut manifest, dump) = dumped(tmp.path(), "staging");
    manifest.files[1].size += 1;
    assert!(!store.keep_dump(&manifest, &dump).unwrap());
    let dir = store.whole_images_dir().unwrap();
    let left: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
    assert!(left.is_empty(), "nothing kept: {left:?}");
    // What a killed worker left (a dump being replaced, a kept image of the format before)
    // goes at the next open.
    std::fs::create_dir(dir.join("t.7.replaced")).unwrap();
    std::fs::write(dir.join("t.img"), b"PCWHOLE2").unwrap();
    drop(store);
    let store = open(tmp.path()).await;
    assert_eq!(store.whole_images_dir().unwrap(), dir);
    let left: Vec<_> = std::fs::read_dir(dir).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");
}
