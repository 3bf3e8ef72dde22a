//! The restore set of a dump not yet ingested: the page positions the next restore will read
//! first, so that the ingest can also store them together in a locality pack
//! (`pagestore::locality`).
//!
//! It is computed the way a swap-in computes it from the stored checkpoint
//! ([`ImageLayout::eager_page_ids`] after the pager's `ActiveSet::eager_plan` has made the set's
//! pages eager): every page CRIU restores eagerly (not `PE_LAZY`) plus the ActiveSet's pages, in
//! `pages-N.img` order, which is the order `criu restore` reads them since the set is installed
//! eagerly.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use pagestore::locality::PagePos;
use pagestore::PAGE_SIZE;

use crate::files::read_dir_files;
use crate::layout::ImageLayout;
use crate::names::is_pagemap;

impl ImageLayout {
    /// The pagemaps of an image directory on disk (unreadable ones are skipped: the
    /// restore set is an optimisation, never a reason to fail a swap-out).
    pub fn of_dir(dir: &Path) -> ImageLayout {
        let pagemaps = read_dir_files(dir, is_pagemap);
        ImageLayout::of_pagemaps(pagemaps.iter().map(|(n, b)| (n.as_str(), b.as_slice())))
    }

    /// The positions the next restore reads before the tenant runs, with the pages of `set`
    /// (pagemap name and virtual address, e.g. an ActiveSet's) installed eagerly: in pages-file
    /// name order, then page order; at most `max_pages`.
    pub fn restore_positions<'a>(
        &self,
        set: impl IntoIterator<Item = (&'a str, u64)>,
        max_pages: usize,
    ) -> Vec<PagePos> {
        let eager = by_pagemap(set);
        let mut out = Vec::new();
        for (pages_file, pagemap, positions) in self.page_files_in_order() {
            let set_here = eager.get(pagemap);
            for (i, pos) in positions.iter().enumerate() {
                if out.len() >= max_pages {
                    return out;
                }
                if !pos.lazy || set_here.is_some_and(|s| s.contains(&pos.vaddr)) {
                    out.push(PagePos {
                        file: pages_file.to_string(),
                        page: i as u64,
                    });
                }
            }
        }
        out
    }

    /// The lazy positions within `around` pages (by virtual address, in the same pagemap) of a
    /// page of `set`, not in `set` themselves: where the pages a tenant touches next to its
    /// working set lie. Learned sets miss a few pages on later restores, nearly all of them one
    /// or two pages from a page of the set (heap objects that grew across a page boundary);
    /// fetched with the restore set, such a miss is served from memory instead of a cold round
    /// trip of its own. In pages-file name order, then page order; at most `max_pages`.
    pub fn neighbour_positions<'a>(
        &self,
        set: impl IntoIterator<Item = (&'a str, u64)>,
        around: u64,
        max_pages: usize,
    ) -> Vec<PagePos> {
        let in_set = by_pagemap(set);
        let reach = around * PAGE_SIZE as u64;
        let mut out = Vec::new();
        for (pages_file, pagemap, positions) in self.page_files_in_order() {
            let Some(set_here) = in_set.get(pagemap) else {
                continue;
            };
            // Positions follow the pagemap's address order: a page's neighbours within `around`
            // pages are at most `around` positions away.
            let near = |i: usize| {
                let pos = positions[i];
                let lo = i.saturating_sub(around as usize);
                let hi = (i + around as usize).min(positions.len() - 1);
                (lo..=hi).any(|j| {
                    let other = positions[j];
                    j != i
                        && set_here.contains(&other.vaddr)
                        && pos.vaddr.abs_diff(other.vaddr) <= reach
                })
            };
            for (i, pos) in positions.iter().enumerate() {
                if out.len() >= max_pages {
                    return out;
                }
                if pos.lazy && !set_here.contains(&pos.vaddr) && near(i) {
                    out.push(PagePos {
                        file: pages_file.to_string(),
                        page: i as u64,
                    });
                }
            }
        }
        out
    }

    /// [`Self::page_files`] in pages-file name order: the order of a locality pack.
    fn page_files_in_order(&self) -> Vec<(&str, &str, &[crate::pagemap::PagePosition])> {
        let mut files: Vec<_> = self.page_files().collect();
        files.sort_by(|a, b| a.0.cmp(b.0));
        files
    }
}

/// The addresses of a set's pages, by pagemap.
fn by_pagemap<'a>(set: impl IntoIterator<Item = (&'a str, u64)>) -> HashMap<&'a str, HashSet<u64>> {
    let mut by: HashMap<&str, HashSet<u64>> = HashMap::new();
    for (pagemap, vaddr) in set {
        by.entry(pagemap).or_default().insert(vaddr);
    }
    by
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::one_eager_six_lazy_pagemap;

    #[test]
    fn eager_pages_and_the_set_in_image_order() {
        let pm = one_eager_six_lazy_pagemap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pagemap-42.img"), pm.encode()).unwrap();
        std::fs::write(dir.path().join("core-42.img"), b"x").unwrap();
        let layout = ImageLayout::of_dir(dir.path());
        // First touched last in the image: the locality pack still follows image order.
        let set = [0x15000, 0x11000, 0x99000].map(|vaddr| ("pagemap-42.img", vaddr));
        let pos = |page| PagePos {
            file: "pages-1.img".into(),
            page,
        };
        assert_eq!(
            layout.restore_positions(set, 100),
            vec![pos(0), pos(2), pos(6)]
        );
        assert_eq!(layout.restore_positions([], 100), vec![pos(0)]);
        assert_eq!(layout.restore_positions(set, 2), vec![pos(0), pos(2)]);
    }

    #[test]
    fn neighbours_are_the_lazy_pages_next_to_the_set() {
        let pm = one_eager_six_lazy_pagemap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pagemap-42.img"), pm.encode()).unwrap();
        let layout = ImageLayout::of_dir(dir.path());
        let pos = |page| PagePos {
            file: "pages-1.img".into(),
            page,
        };
        // Lazy pages 0x10000..0x16000 are positions 1..=6; 0x1000 (position 0) is eager.
        let set = [("pagemap-42.img", 0x12000)];
        assert_eq!(
            layout.neighbour_positions(set, 1, 100),
            vec![pos(2), pos(4)]
        );
        assert_eq!(
            layout.neighbour_positions(set, 2, 100),
            vec![pos(1), pos(2), pos(4), pos(5)]
        );
        assert_eq!(layout.neighbour_positions(set, 2, 1), vec![pos(1)]);
        // The eager page next door is restored anyway; pages of the set are not their own
        // neighbours; another pagemap's set has none here.
        let set = [("pagemap-42.img", 0x10000), ("pagemap-42.img", 0x11000)];
        assert_eq!(layout.neighbour_positions(set, 1, 100), vec![pos(3)]);
        assert_eq!(
            layout.neighbour_positions([("pagemap-7.img", 0x12000)], 1, 100),
            vec![]
        );
        assert_eq!(layout.neighbour_positions(set, 0, 100), vec![]);
    }

    #[test]
    fn shared_memory_is_restored_eagerly_and_read_first() {
        use crate::pagemap::{Pagemap, PagemapEntry, PE_PRESENT};
        let dir = tempfile::tempdir().unwrap();
        let process = one_eager_six_lazy_pagemap();
        std::fs::write(dir.path().join("pagemap-42.img"), process.encode()).unwrap();
        // A segment of two pages, shared by the tenant's processes (nginx's master and worker).
        let shmem = Pagemap {
            pages_id: 2,
            entries: vec![PagemapEntry {
                vaddr: 0,
                nr_pages: 2,
                flags: PE_PRESENT,
                in_parent: None,
            }],
        };
        std::fs::write(dir.path().join("pagemap-shmem-7.img"), shmem.encode()).unwrap();
        let layout = ImageLayout::of_dir(dir.path());
        let pos = |file: &str, page| PagePos {
            file: file.into(),
            page,
        };
        assert_eq!(
            layout.restore_positions([], 100),
            vec![
                pos("pages-1.img", 0),
                pos("pages-2.img", 0),
                pos("pages-2.img", 1)
            ]
        );
    }
}
