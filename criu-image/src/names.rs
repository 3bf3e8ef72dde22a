//! The names of the files of a CRIU image directory that the pager and the worker look at, and
//! the rule an ingest of such a directory splits its files into pages by.
//!
//! CRIU names them in `criu/image-desc.c` (its `imgset_template`, which appends `.img`):
//! `pages-%u` for `CR_FD_PAGES`, `pagemap-%ld` for `CR_FD_PAGEMAP` (by pid) and
//! `pagemap-shmem-%ld` for shared memory's pagemaps, which are not a process's. The `N` of
//! `pages-N.img` is the `pages_id` in the head of the pagemap that describes it.

use pagestore::ingest::{IngestOptions, PagedFiles};

/// Whether `name` is one of CRIU's page files (`pages-*.img`): the raw pages of the process
/// pagemaps, which an ingest splits into pages whatever their size.
pub fn is_pages_file(name: &str) -> bool {
    name.starts_with("pages-") && name.ends_with(".img")
}

/// The page file that holds the pages of a pagemap whose head says `pages_id`.
pub fn pages_file_name(pages_id: u32) -> String {
    format!("pages-{pages_id}.img")
}

/// True for the pagemaps of processes (`pagemap-<pid>.img`), whose pages `pages-N.img` holds.
pub fn is_process_pagemap(name: &str) -> bool {
    name.strip_prefix("pagemap-")
        .and_then(|r| r.strip_suffix(".img"))
        .is_some_and(all_digits)
}

/// True for any pagemap whose pages a restore reads from a `pages-N.img`: a process's, or a
/// shared memory segment's (`pagemap-shmem-<id>.img`, the same format). CRIU restores shared
/// memory eagerly, never lazily, before the tenant runs: its pages belong in the restore set (an
/// nginx master and worker share one; left out, `criu restore` read it from the cold tier one
/// round trip after the restore set's).
pub fn is_pagemap(name: &str) -> bool {
    is_process_pagemap(name)
        || name
            .strip_prefix("pagemap-shmem-")
            .and_then(|r| r.strip_suffix(".img"))
            .is_some_and(all_digits)
}

fn all_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// The ingest rule for a CRIU image directory: CRIU's page files are paged (and, as for any
/// directory, every file too large to keep inline); everything else is kept whole in the
/// manifest, where a restore reads it from without a page lookup.
pub const PAGED_FILES: PagedFiles = PagedFiles::named(is_pages_file);

/// The options of a plain ingest of a CRIU image directory: [`PAGED_FILES`], nothing else.
pub fn ingest_options() -> IngestOptions {
    IngestOptions {
        paged: PAGED_FILES,
        ..IngestOptions::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_files_are_paged_whatever_their_size() {
        assert!(is_pages_file("pages-1.img"));
        assert!(!is_pages_file("pagemap-1.img"));
        assert!(!is_pages_file("pages-1.img.tmp"));
        assert_eq!(pages_file_name(7), "pages-7.img");
        assert!(PAGED_FILES.is_paged("pages-2.img", 4096));
        assert!(!PAGED_FILES.is_paged("core-1.img", 4096));
        assert!(PAGED_FILES.is_paged("core-1.img", 2 << 20));
    }

    #[test]
    fn process_pagemaps_are_named_by_pid() {
        assert!(is_process_pagemap("pagemap-123.img"));
        assert!(!is_process_pagemap("pagemap-shmem-1.img"));
        assert!(is_pagemap("pagemap-shmem-1.img"));
        assert!(is_pagemap("pagemap-123.img"));
        assert!(!is_pagemap("pagemap-shmem-.img"));
        assert!(!is_pagemap("pagemap-shmem-1.img.tmp"));
    }
}
