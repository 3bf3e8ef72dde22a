//! The restore set of a dump not yet ingested: the page positions the next restore will read
//! first, so that the ingest can also store them together in a locality pack
//! (`pagestore::locality`).
//!
//! It is computed the way a swap-in computes it from the stored checkpoint
//! ([`ImageLayout::eager_page_ids`] after [`ActiveSet::eager_plan`]): every page CRIU restores
//! eagerly (not `PE_LAZY`) plus the ActiveSet's pages, in `pages-N.img` order, which is the
//! order `criu restore` reads them since the set is installed eagerly.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use pagestore::locality::PagePos;

use crate::activeset::{ActiveSet, ImageLayout};
use crate::pagemap::is_process_pagemap;

impl ImageLayout {
    /// The process pagemaps of an image directory on disk (unreadable ones are skipped: the
    /// restore set is an optimisation, never a reason to fail a swap-out).
    pub fn of_dir(dir: &Path) -> ImageLayout {
        let mut pagemaps = Vec::new();
        if let Ok(entries) = std::fs::read_dir(dir) {
            for entry in entries.flatten() {
                let Ok(name) = entry.file_name().into_string() else {
                    continue;
                };
                if !is_process_pagemap(&name) {
                    continue;
                }
                match std::fs::read(entry.path()) {
                    Ok(bytes) => pagemaps.push((name, bytes)),
                    Err(e) => tracing::warn!(file = %name, error = %e, "skipping pagemap"),
                }
            }
        }
        ImageLayout::of_pagemaps(pagemaps.iter().map(|(n, b)| (n.as_str(), b.as_slice())))
    }

    /// The positions the next restore reads before the tenant runs, with `set` installed
    /// eagerly: in pages-file name order, then page order; at most `max_pages`.
    pub fn restore_positions(&self, set: Option<&ActiveSet>, max_pages: usize) -> Vec<PagePos> {
        let mut eager: HashMap<&str, HashSet<u64>> = HashMap::new();
        let wanted = set.map(|s| s.pages(max_pages)).unwrap_or_default();
        for p in &wanted {
            eager.entry(p.pagemap.as_str()).or_default().insert(p.vaddr);
        }
        let mut files: Vec<_> = self.files.iter().collect();
        files.sort_by(|a, b| a.0.cmp(b.0));
        let mut out = Vec::new();
        for (pages_file, (pagemap, positions)) in files {
            let set_here = eager.get(pagemap.as_str());
            for (i, pos) in positions.iter().enumerate() {
                if out.len() >= max_pages {
                    return out;
                }
                if !pos.lazy || set_here.is_some_and(|s| s.contains(&pos.vaddr)) {
                    out.push(PagePos {
                        file: pages_file.clone(),
                        page: i as u64,
                    });
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::activeset::tests::{page, pagemap};
    use crate::activeset::RestoreTrace;

    #[test]
    fn eager_pages_and_the_set_in_image_order() {
        let pm = pagemap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pagemap-42.img"), pm.encode()).unwrap();
        std::fs::write(dir.path().join("core-42.img"), b"x").unwrap();
        let layout = ImageLayout::of_dir(dir.path());
        let mut set = ActiveSet::new("t");
        // First touched last in the image: the locality pack still follows image order.
        set.record(
            RestoreTrace {
                pages: vec![page(0x15000), page(0x11000), page(0x99000)],
                ..Default::default()
            },
            4,
        );
        let pos = |page| PagePos {
            file: "pages-1.img".into(),
            page,
        };
        assert_eq!(
            layout.restore_positions(Some(&set), 100),
            vec![pos(0), pos(2), pos(6)]
        );
        assert_eq!(layout.restore_positions(None, 100), vec![pos(0)]);
        assert_eq!(
            layout.restore_positions(Some(&set), 2),
            vec![pos(0), pos(2)]
        );
    }
}
