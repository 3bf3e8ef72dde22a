//! Which checkpoints are restored whole, and what their image takes: the rules a swap-in plans
//! by (and a swap-out, which keeps a dump only for a checkpoint the next swap-in restores whole),
//! apart from how [`super`] restores them.

use std::path::Path;

use pagestore::{FileContent, Manifest, PAGE_SIZE};

/// Whether a tenant whose working set is `working_set` pages (as last seen; `None`: unknown) is
/// dense enough in an image of `pages` non-zero pages to be restored whole: the set covers at
/// least `share` of them, and they are fewer than `below_mib` MiB. Lazily, each page of the
/// set is a fault or part of CRIU's eager reads through the pager; whole, every page is
/// written to a tmpfs at memory speed and CRIU reads it at tmpfs speed. Measured here from the
/// local tier (p50 of 5 runs, same runs as plain CRIU's 92-133 ms from tmpfs): node walking a Map
/// (a working set of 39% of its 70 MiB image) woke for the second time in 147 ms lazily and
/// 113-127 ms whole, Python walking a dict (73% of 120 MiB) in 291 and 137-172 ms; their first
/// wake-ups (a set borrowed from another tenant of their program) in 420 and 233 ms lazily,
/// 294-307 and 134-159 ms whole. Redis and a 256 MiB heap whose requests touch under 1% of their
/// images stay lazy: they answer faster than plain CRIU restores them.
pub(crate) fn dense_enough(
    working_set: Option<usize>,
    pages: usize,
    share: f64,
    below_mib: u64,
) -> bool {
    match working_set {
        Some(set) if pages > 0 => covers(set, pages, share) && pages_under_mib(pages, below_mib),
        _ => false,
    }
}

/// Whether a checkpoint of `pages` non-zero pages is restored whole first, and what that
/// restore fetches: it is small (nothing), or its tenant's working set (`working_set` pages, as
/// last seen) is dense in it (a few pages; see [`dense_enough`]). Whole restores are off
/// altogether with `whole_restore_below_mib = 0`. The swap-in's test, and the swap-out's for
/// keeping the image whole on the local disk.
pub(crate) fn restored_whole(
    config: &crate::config::WorkerConfig,
    working_set: Option<usize>,
    pages: usize,
) -> Option<Fetch> {
    if config.whole_restore_below_mib == 0 {
        return None;
    }
    if pages_under_mib(pages, config.whole_restore_below_mib) {
        return Some(Fetch::Nothing);
    }
    dense_enough(
        working_set,
        pages,
        config.whole_restore_dense_share,
        config.whole_restore_dense_below_mib,
    )
    .then_some(Fetch::Few)
}

/// Whether a set of `set` pages is at least `share` (above 0) of an image of `pages` non-zero
/// pages: a dense tenant's, whatever its size.
pub(crate) fn covers(set: usize, pages: usize, share: f64) -> bool {
    share > 0.0 && set as f64 >= share * pages as f64
}

/// Whether `pages` pages are fewer than `below_mib` MiB (0: never): an image of so many
/// non-zero pages is small enough to be restored whole (whether this worker holds them all, the
/// restore finds out).
pub(crate) fn pages_under_mib(pages: usize, below_mib: u64) -> bool {
    below_mib > 0 && ((pages * PAGE_SIZE) as u64) < below_mib << 20
}

/// Whether a dump in `dir` is small enough to be restored whole (its page files, zero pages
/// included, under `below_mib` MiB): its checkpoint is then kept in memory at ingest, where
/// its next swap-in writes it out from.
pub(crate) fn dump_small_enough(dir: &Path, below_mib: u64) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    let bytes: u64 = entries
        .flatten()
        .filter(|e| criu_image::names::is_pages_file(&e.file_name().to_string_lossy()))
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum();
    below_mib > 0 && bytes < below_mib << 20
}

/// The most the image can take written out into a tmpfs of huge pages: its small files by the
/// page, its page files by the huge page (2 MiB), zero pages (holes) included, since a huge page
/// backs a hole inside it. Counting holes as nothing filled the tmpfs of `pico bench restore`'s
/// py-dict image ("No space left on device") before it was written.
pub(super) fn image_bytes(manifest: &Manifest) -> u64 {
    const HUGE_PAGE: u64 = 2 << 20;
    manifest
        .files
        .iter()
        .map(|f| match &f.content {
            FileContent::Inline(_) => f.size.div_ceil(PAGE_SIZE as u64) * PAGE_SIZE as u64,
            FileContent::Paged(ids) => {
                ((ids.len() * PAGE_SIZE) as u64).div_ceil(HUGE_PAGE) * HUGE_PAGE
            }
        })
        .sum()
}

/// What a whole restore fetches from the cold tier when this worker lacks pages of the image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fetch {
    /// Nothing: the restore goes lazy (a small image, whose lazy restore is cheap).
    Nothing,
    /// The missing pages, if they are few (a dense tenant's image, see [`dense_enough`]);
    /// otherwise nothing.
    Few,
    /// Every page (a tenant restored only whole).
    All,
}

#[cfg(test)]
mod tests {
    use super::*;
    use pagestore::PageId;
    use testkit::manifest::{file, of_files};

    #[test]
    fn a_working_set_covering_enough_of_an_image_under_the_cap_is_dense() {
        let mib = (1 << 20) / PAGE_SIZE;
        // A quarter of 100 MiB, under a 512 MiB cap.
        assert!(dense_enough(Some(25 * mib), 100 * mib, 0.25, 512));
        assert!(!dense_enough(Some(25 * mib - 1), 100 * mib, 0.25, 512));
        // Unknown, switched off, or over the cap.
        assert!(!dense_enough(None, 100 * mib, 0.25, 512));
        assert!(!dense_enough(Some(100 * mib), 100 * mib, 0.0, 512));
        assert!(!dense_enough(Some(100 * mib), 100 * mib, 0.25, 100));
        assert!(!dense_enough(Some(0), 0, 0.25, 512));
    }

    #[test]
    fn small_images_and_dense_tenants_are_restored_whole_unless_switched_off() {
        let mib = (1 << 20) / PAGE_SIZE;
        let mut config = crate::config::WorkerConfig::embedded(Path::new("/nonexistent"));
        config.whole_restore_below_mib = 32;
        config.whole_restore_dense_share = 0.25;
        let whole = |set, pages| restored_whole(&config, set, pages);
        assert_eq!(whole(None, 31 * mib), Some(Fetch::Nothing));
        assert_eq!(whole(Some(25 * mib), 100 * mib), Some(Fetch::Few));
        assert_eq!(whole(Some(mib), 100 * mib), None, "sparse: lazy");
        assert_eq!(whole(None, 100 * mib), None, "nothing known: lazy");
        config.whole_restore_below_mib = 0;
        let whole = |set, pages| restored_whole(&config, set, pages);
        assert_eq!(whole(Some(25 * mib), 100 * mib), None, "switched off");
        assert_eq!(whole(None, mib), None);
    }

    #[test]
    fn a_dump_is_small_enough_by_its_page_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("core-1.img"), vec![1u8; 2 << 20]).unwrap();
        std::fs::write(dir.path().join("pages-1.img"), vec![1u8; 1 << 20]).unwrap();
        assert!(dump_small_enough(dir.path(), 2), "only page files count");
        assert!(!dump_small_enough(dir.path(), 1));
        assert!(!dump_small_enough(dir.path(), 0));
        assert!(!dump_small_enough(&dir.path().join("gone"), 32));
    }

    #[test]
    fn the_image_has_room_for_its_small_files_and_its_page_files_in_huge_pages() {
        let (a, b) = (PageId([1; 32]), PageId([2; 32]));
        let m = of_files(vec![
            file("pagemap-1.img", 3, FileContent::Inline(vec![1, 2, 3])),
            file(
                "pages-1.img",
                4 * PAGE_SIZE as u64,
                FileContent::Paged(vec![a, PageId::ZERO, b, a]),
            ),
        ]);
        // Written out, a small file takes a page, a page file whole huge pages (a zero page is a
        // hole, which a huge page backs all the same).
        assert_eq!(image_bytes(&m), PAGE_SIZE as u64 + (2 << 20));
        let small_enough = |m: &Manifest, mib| pages_under_mib(m.non_zero_pages().count(), mib);
        assert!(small_enough(&m, 1));
        let mut big = m.clone();
        big.files[1].content = FileContent::Paged(vec![a; 256]);
        assert!(
            !small_enough(&big, 1),
            "256 pages of 4 KiB are 1 MiB, not under it"
        );
        assert!(!small_enough(&m, 0), "0 turns whole restores off");
    }
}
