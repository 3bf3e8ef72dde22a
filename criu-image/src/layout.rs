//! The layout of a CRIU image: for each page file (`pages-N.img`), the pagemap (a process's or a
//! shared memory segment's) that describes it and where each of its pages belongs (virtual address, lazy or not).
//!
//! Read from the pagemaps a checkpoint keeps inline ([`ImageLayout::of`]) or from a dump still on
//! disk ([`ImageLayout::of_dir`], in [`crate::restore_set`]). A swap-in uses it to name the pages
//! `criu restore` reads before the tenant runs (to prefetch them) and the ones the lazy-pages
//! daemon copies in after; the pager's ActiveSet uses it to tell page faults from background
//! copies and to find a learned page again in a new checkpoint.

use std::collections::{HashMap, HashSet};

/// Page ids seen, hashed fast (foldhash, seeded per set): ids are BLAKE3 hashes, and a large
/// image's tens of thousands went through SipHash on a swap-in's path.
type PageIdSet = HashSet<PageId, foldhash::fast::RandomState>;

use pagestore::{Manifest, PageId};

use crate::files::inline_files;
use crate::names::{is_pagemap, pages_file_name};
use crate::pagemap::{PagePosition, Pagemap};

/// For each page file, the pagemap that describes it and each page's position.
pub struct ImageLayout {
    /// pages file → (its pagemap, each page's position).
    pub(crate) files: HashMap<String, (String, Vec<PagePosition>)>,
}

impl ImageLayout {
    /// Decodes every pagemap of a checkpoint (malformed ones are skipped: the ActiveSet
    /// is an optimisation, never a reason to fail a restore).
    pub fn of(manifest: &Manifest) -> ImageLayout {
        ImageLayout::of_pagemaps(inline_files(manifest))
    }

    /// The same from (file name, bytes) pairs; files that are not pagemaps are ignored.
    pub fn of_pagemaps<'a>(files_in: impl Iterator<Item = (&'a str, &'a [u8])>) -> ImageLayout {
        let mut files = HashMap::new();
        for (name, bytes) in files_in {
            if !is_pagemap(name) {
                continue;
            }
            match Pagemap::decode(bytes) {
                Ok(pm) => {
                    files.insert(
                        pages_file_name(pm.pages_id),
                        (name.to_string(), pm.page_positions()),
                    );
                }
                Err(e) => tracing::warn!(file = %name, error = %e, "skipping pagemap"),
            }
        }
        ImageLayout { files }
    }

    /// The pages `criu restore` reads before the tenant runs: every present page that is not
    /// lazy (after an eager plan, that includes the ActiveSet), in image order, without zero pages
    /// or repeats. Prefetching exactly these turns a restore's many small reads into a few
    /// large ones.
    pub fn eager_page_ids(&self, manifest: &Manifest) -> Vec<PageId> {
        let mut seen = PageIdSet::default();
        self.page_ids(manifest, &mut seen, |_| |pos: &PagePosition| !pos.lazy)
    }

    /// The pages CRIU's lazy-pages daemon copies in after the restore (faults and background
    /// copy), in image order, without zero pages or repeats.
    pub fn lazy_page_ids(&self, manifest: &Manifest) -> Vec<PageId> {
        self.lazy_page_ids_split(manifest, |_| |_| true).0
    }

    /// The same in two parts: those at an address for which `first(pagemap)` holds, and the
    /// others (each in image order; a page in both parts is in the first only). `first` is asked
    /// once per pagemap, for the test of its addresses: a swap-in splits a large image's tens of
    /// thousands of pages on its path, and a lookup by pagemap name per page cost the large
    /// heap's (68k pages) several milliseconds.
    pub fn lazy_page_ids_split<F: Fn(u64) -> bool>(
        &self,
        manifest: &Manifest,
        first: impl Fn(&str) -> F,
    ) -> (Vec<PageId>, Vec<PageId>) {
        let mut seen = PageIdSet::default();
        let chosen = self.page_ids(manifest, &mut seen, |pagemap| {
            let first = first(pagemap);
            move |pos: &PagePosition| pos.lazy && first(pos.vaddr)
        });
        let others = self.page_ids(manifest, &mut seen, |_| |pos: &PagePosition| pos.lazy);
        (chosen, others)
    }

    /// The pages at positions `wanted(pagemap)(position)` picks, in image order, without zero
    /// pages or those already `seen`.
    fn page_ids<W: Fn(&PagePosition) -> bool>(
        &self,
        manifest: &Manifest,
        seen: &mut PageIdSet,
        wanted: impl Fn(&str) -> W,
    ) -> Vec<PageId> {
        let mut ids = Vec::new();
        let mut files: Vec<_> = self.files.iter().collect();
        files.sort_by(|a, b| a.0.cmp(b.0));
        for (pages_file, (pagemap, positions)) in files {
            let Some(pages) = manifest.file(pages_file).map(|f| f.pages()) else {
                continue;
            };
            let wanted = wanted(pagemap);
            for (pos, id) in positions.iter().zip(pages) {
                if wanted(pos) && !id.is_zero() && seen.insert(*id) {
                    ids.push(*id);
                }
            }
        }
        ids
    }

    /// Every page file: its name, the name of the pagemap that describes it, and each of its
    /// pages' position by page index (page files in no particular order).
    pub fn page_files(&self) -> impl Iterator<Item = (&str, &str, &[PagePosition])> {
        self.files.iter().map(|(pages_file, (pagemap, positions))| {
            (pages_file.as_str(), pagemap.as_str(), positions.as_slice())
        })
    }

    /// Where page `page` of `pages_file` belongs: the pagemap that maps it, and its position.
    pub fn position(&self, pages_file: &str, page: u64) -> Option<(&str, PagePosition)> {
        let (pagemap, positions) = self.files.get(pages_file)?;
        Some((pagemap.as_str(), *positions.get(page as usize)?))
    }
}
