//! The ActiveSet's plan of a swap-in (`ActiveSet::eager_plan`): which of a checkpoint's lazy
//! pages its set makes eager, and the pagemaps rewritten for it. It is on every lazy swap-in's
//! path before the restore set is fetched; a dense tenant's set holds tens of thousands of pages
//! per restore it remembers (a Python tenant holding a large dict: ~22k, four restores kept).
//!
//! `cargo bench -p pager --bench eager_plan [-- PAGES [RUNS]]` prints the median and best of
//! RUNS plans (default 22000 pages, 30 runs).

// A benchmark: a failure should stop it loudly.
#![allow(clippy::unwrap_used)]

use std::time::Instant;

use criu_image::pagemap::{Pagemap, PagemapEntry, PE_LAZY, PE_PRESENT};
use pager::activeset::{ActivePage, ActiveSet, RestoreTrace};
use pagestore::{FileContent, Manifest, PageId};
use testkit::manifest::{file, of_files};

/// Pages per mapping of the synthetic tenant (its pagemap entries).
const RUN_PAGES: u64 = 128;

/// A checkpoint of one process whose `pages` lazy pages lie in runs of [`RUN_PAGES`], a few
/// eager pages first.
fn checkpoint(pages: u64) -> Manifest {
    let mut entries = vec![PagemapEntry {
        vaddr: 0x1000,
        nr_pages: 16,
        flags: PE_PRESENT,
        in_parent: None,
    }];
    let mut vaddr = 0x10_0000u64;
    let mut left = pages;
    while left > 0 {
        let n = left.min(RUN_PAGES);
        entries.push(PagemapEntry {
            vaddr,
            nr_pages: n as u32,
            flags: PE_PRESENT | PE_LAZY,
            in_parent: None,
        });
        vaddr += (n + 16) * 4096;
        left -= n;
    }
    let pagemap = Pagemap {
        pages_id: 1,
        entries,
    };
    let ids: Vec<PageId> = (1..=16 + pages)
        .map(|i| {
            let mut id = [0u8; 32];
            id[..8].copy_from_slice(&i.to_le_bytes());
            PageId(id)
        })
        .collect();
    of_files(vec![
        file("pagemap-42.img", 0, FileContent::Inline(pagemap.encode())),
        file(
            "pages-1.img",
            ids.len() as u64 * 4096,
            FileContent::Paged(ids),
        ),
    ])
}

/// A set of `restores` restores, each touching nine tenths of the lazy pages, each from its
/// own start (a working set that changes a little between wake-ups).
fn set_of(manifest: &Manifest, restores: u64) -> ActiveSet {
    let pm = match &manifest.files[0].content {
        FileContent::Inline(b) => Pagemap::decode(b).unwrap(),
        FileContent::Paged(_) => unreachable!(),
    };
    let lazy: Vec<u64> = pm
        .page_positions()
        .into_iter()
        .filter(|p| p.lazy)
        .map(|p| p.vaddr)
        .collect();
    let mut set = ActiveSet::new("bench");
    for r in 0..restores {
        let pages: Vec<ActivePage> = lazy
            .iter()
            .cycle()
            .skip((r * 997) as usize)
            .take(lazy.len() * 9 / 10)
            .map(|&vaddr| ActivePage {
                pagemap: "pagemap-42.img".into(),
                vaddr,
                id: String::new(),
            })
            .collect();
        set.record(
            RestoreTrace {
                checkpoint: format!("c{r}"),
                generation: r,
                pages,
                eager_pages: 0,
                faults: 0,
                foreseen: 0,
            },
            restores as usize,
        );
    }
    set
}

fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let pages = args.first().copied().unwrap_or(22_000);
    let runs = args.get(1).copied().unwrap_or(30).max(1) as usize;
    let manifest = checkpoint(pages * 10 / 9 + 1);
    let set = set_of(&manifest, 4);
    let mut ms = Vec::with_capacity(runs);
    let mut planned = 0;
    for _ in 0..runs {
        let mut m = manifest.clone();
        let started = Instant::now();
        let plan = set.eager_plan(&mut m, usize::MAX);
        ms.push(started.elapsed().as_secs_f64() * 1000.0);
        planned = plan.ids.len();
    }
    ms.sort_by(f64::total_cmp);
    println!(
        "eager_plan: {planned} pages planned from a set of 4 restores: median {:.2} ms, best {:.2} ms ({runs} runs)",
        ms[ms.len() / 2],
        ms[0]
    );
}
