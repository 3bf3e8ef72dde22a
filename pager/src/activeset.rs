//! The ActiveSet: the pages a tenant touches in the first moments after a restore, learned from
//! the pager's access log and used to make the next restore fast.
//!
//! **Learning.** CRIU's lazy-pages daemon reads image pages for two reasons: a page fault (one
//! page, at the faulting address) and, once the restore is done, a background copy of every
//! remaining lazy page. The background copy always takes the lowest-addressed lazy page not yet
//! copied (CRIU's `xfer_pages` takes the first of its address-sorted iovs), so a read is a fault
//! exactly when it is one page long and does not start at the lowest unread lazy page of its
//! file. (Checked against CRIU 4.2.1's own `#PF` log lines: 36 of 36 faults, none false; the
//! e2e test repeats the check.) Request size alone is not enough: most one-page reads are
//! background copies of one-page regions.
//!
//! **Keying.** Each page is kept by position (pagemap file and virtual address, stable across
//! checkpoints of a tenant since CRIU restores pids and layouts) and by content (page id), so a
//! set survives a new checkpoint and notices content that changed at an address.
//!
//! **Using it.** [`ActiveSet::eager_plan`] rewrites the checkpoint's pagemaps so that the set's
//! pages lose `PE_LAZY`: CRIU then installs them in bulk before the tenant runs, instead of one
//! userfaultfd fault (~64 µs plus a FUSE round trip) per page.

use std::collections::{HashMap, HashSet};

/// Maps and sets keyed by addresses on a swap-in's path: hashed fast (foldhash, seeded per map)
/// rather than with SipHash, which took a fifth of planning a dense tenant's set.
type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;
type FastSet<K> = HashSet<K, foldhash::fast::RandomState>;

use criu_image::pagemap::{PagePosition, Pagemap};
use criu_image::ImageLayout;
use pagestore::{FileContent, Manifest, PageId, PAGE_SIZE};
use serde::{Deserialize, Serialize};

use crate::access::PageAccess;

/// One page of an ActiveSet.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ActivePage {
    /// The pagemap image that maps it, e.g. `pagemap-1234.img`.
    pub pagemap: String,
    pub vaddr: u64,
    /// The page's content id (hex) when it was last seen.
    pub id: String,
}

/// Whether CRIU's background copy could run in the window being classified.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Background {
    /// Held back until the window closed (the worker's lazy gate): every one-page read of a
    /// lazy page is a fault.
    Held,
    /// It may have run: a one-page read at the lowest unread lazy page of its file is taken for
    /// a background copy (which misses a fault that lands exactly there).
    Racing,
}

/// Picks out the page faults among the reads of one restore, in the order they happened,
/// up to `until_us` after the mount. Each page counts once.
pub fn classify_faults(
    layout: &ImageLayout,
    accesses: &[PageAccess],
    until_us: u64,
    background: Background,
) -> Vec<ActivePage> {
    // Unread lazy pages per page file, so that the lowest one is the background cursor.
    let mut unread: HashMap<&str, std::collections::BTreeSet<u64>> = HashMap::new();
    for (file, _, positions) in layout.page_files() {
        let lazy = positions
            .iter()
            .enumerate()
            .filter(|(_, p)| p.lazy)
            .map(|(i, _)| i as u64)
            .collect();
        unread.insert(file, lazy);
    }
    let mut faults = Vec::new();
    let mut seen = HashSet::new();
    let mut i = 0;
    while i < accesses.len() {
        let first = &accesses[i];
        let mut j = i + 1;
        while j < accesses.len() && accesses[j].request == first.request {
            j += 1;
        }
        if first.at_us > until_us {
            break;
        }
        if let Some(lazy) = unread.get_mut(first.file.as_str()) {
            let cursor = lazy.first().copied();
            let is_fault = first.request_len as usize == PAGE_SIZE
                && lazy.contains(&first.page)
                && (background == Background::Held || cursor != Some(first.page));
            if is_fault {
                if let Some((pagemap, pos)) = layout.position(&first.file, first.page) {
                    if seen.insert((pagemap.to_string(), pos.vaddr)) {
                        faults.push(ActivePage {
                            pagemap: pagemap.to_string(),
                            vaddr: pos.vaddr,
                            id: first.id.to_hex(),
                        });
                    }
                }
            }
            for a in &accesses[i..j] {
                lazy.remove(&a.page);
            }
        }
        i = j;
    }
    faults
}

/// What one restore taught.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RestoreTrace {
    pub checkpoint: String,
    pub generation: u64,
    /// Pages installed eagerly from the set, then pages that faulted, in first-touch order.
    pub pages: Vec<ActivePage>,
    /// Pages the set installed eagerly.
    pub eager_pages: u64,
    /// Faults the set did not foresee.
    pub faults: u64,
    /// Faults on pages the set had prefetched into memory (`activeset_install = "prefetch"`).
    #[serde(default)]
    pub foreseen: u64,
}

impl RestoreTrace {
    /// The share of this restore's working set that the ActiveSet installed or prefetched ahead
    /// of time.
    pub fn hit_rate(&self) -> f64 {
        let total = self.eager_pages + self.foreseen + self.faults;
        if total == 0 {
            0.0
        } else {
            (self.eager_pages + self.foreseen) as f64 / total as f64
        }
    }
}

/// A tenant's ActiveSet: the traces of its last restores (newest first).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ActiveSet {
    pub tenant: String,
    pub restores: Vec<RestoreTrace>,
}

/// The eager-install plan for one restore.
#[derive(Clone, Debug, Default)]
pub struct EagerPlan {
    /// Pages made eager, in first-touch order, as found in the new checkpoint; their `id` left
    /// empty (hex-encoding 22k ids took a dense tenant's plan ~7% of its time on the swap-in's
    /// path): [`EagerPlan::traced_pages`] gives them with it.
    pub pages: Vec<ActivePage>,
    /// Their content ids in the new checkpoint (what to prefetch), same order.
    pub ids: Vec<PageId>,
}

impl EagerPlan {
    /// [`Self::pages`] with each page's content id, for the restore's trace.
    pub fn traced_pages(&self) -> Vec<ActivePage> {
        self.pages
            .iter()
            .zip(&self.ids)
            .map(|(p, id)| ActivePage {
                pagemap: p.pagemap.clone(),
                vaddr: p.vaddr,
                id: id.to_hex(),
            })
            .collect()
    }
}

impl ActiveSet {
    pub fn new(tenant: &str) -> ActiveSet {
        ActiveSet {
            tenant: tenant.to_string(),
            restores: Vec::new(),
        }
    }

    /// Adds a restore's trace, keeping the newest `window`.
    pub fn record(&mut self, trace: RestoreTrace, window: usize) {
        self.restores.insert(0, trace);
        self.restores.truncate(window.max(1));
    }

    /// The pages its newest restore touched (installed eagerly, or faulted in): the tenant's
    /// working set as last seen; 0 before its first restore.
    pub fn working_set_pages(&self) -> usize {
        self.restores.first().map_or(0, |t| t.pages.len())
    }

    /// Whether the set may still miss pages: it holds fewer than the `window` restores it keeps
    /// (a young set, still learning: the large heap's missed in 9 of its first 12 restores), or
    /// one of them faulted pages the set it installed had not foreseen (a restore that installed
    /// none, the first, teaches the set and misses nothing). Its neighbours are then worth
    /// fetching with it.
    pub fn may_miss(&self, window: usize) -> bool {
        self.restores.len() < window
            || self
                .restores
                .iter()
                .any(|t| t.eager_pages + t.foreseen > 0 && t.faults > 0)
    }

    /// The merged set: pages seen in any kept restore, most frequent first, then in the
    /// first-touch order of the newest restore that saw them; at most `max_pages`.
    pub fn pages(&self, max_pages: usize) -> Vec<ActivePage> {
        self.ranked(max_pages).into_iter().cloned().collect()
    }

    /// [`Self::pages`], borrowed: a dense tenant's set holds tens of thousands of pages per
    /// restore it remembers, and a swap-in plans from it on the wake-up's path.
    fn ranked<'s>(&'s self, max_pages: usize) -> Vec<&'s ActivePage> {
        // Keyed by the pagemap's index among the few a tenant has (one per process) rather
        // than its name: a string hashed per page took 5-6 ms for 22k pages.
        let mut pagemaps: Vec<&str> = Vec::new();
        let mut index_of = |name: &'s str| match pagemaps.iter().position(|&p| p == name) {
            Some(i) => i,
            None => {
                pagemaps.push(name);
                pagemaps.len() - 1
            }
        };
        let seen: usize = self.restores.iter().map(|t| t.pages.len()).sum();
        // Each page's rank as one number, so that the sort compares integers: the restores it
        // was seen in (more first), then the age of the newest restore that saw it (newer
        // first), then its order in that restore. A set keeps at most 255 restores (the
        // window, 4 by default) of fewer than 2^48 pages each.
        let rank = |seen_in: usize, age: usize, order: usize| -> u64 {
            let seen_in = seen_in.min(0xff) as u64;
            let age = age.min(0xff) as u64;
            ((0xff - seen_in) << 56) | (age << 48) | (order as u64 & ((1 << 48) - 1))
        };
        let mut score: FastMap<(usize, u64), (usize, usize, usize, &ActivePage)> =
            FastMap::with_capacity_and_hasher(seen, Default::default());
        for (age, trace) in self.restores.iter().enumerate() {
            for (order, p) in trace.pages.iter().enumerate() {
                let e = score
                    .entry((index_of(&p.pagemap), p.vaddr))
                    .or_insert((0, age, order, p));
                e.0 += 1;
            }
        }
        let mut pages: Vec<(u64, &ActivePage)> = score
            .into_values()
            .map(|(seen_in, age, order, p)| (rank(seen_in, age, order), p))
            .collect();
        pages.sort_unstable_by_key(|&(rank, _)| rank);
        pages.into_iter().take(max_pages).map(|(_, p)| p).collect()
    }

    /// Rewrites the process pagemaps of `manifest` so that the set's pages are restored eagerly,
    /// and says which pages (and contents) that is.
    pub fn eager_plan(&self, manifest: &mut Manifest, max_pages: usize) -> EagerPlan {
        let plan = self.prefetch_plan(manifest, max_pages);
        let mut by_pagemap: HashMap<&str, FastSet<u64>> = HashMap::new();
        for p in &plan.pages {
            by_pagemap.entry(&p.pagemap).or_default().insert(p.vaddr);
        }
        for f in manifest.files.iter_mut() {
            let Some(eager) = by_pagemap.get(f.name.as_str()) else {
                continue;
            };
            if let FileContent::Inline(bytes) = &f.content {
                if let Ok(pm) = Pagemap::decode(bytes) {
                    let encoded = pm.with_eager(eager).0.encode();
                    f.size = encoded.len() as u64;
                    f.content = FileContent::Inline(encoded);
                }
            }
        }
        plan
    }

    /// The set's lazy pages as found in `manifest` (in the set's order) and their contents:
    /// what [`Self::eager_plan`] makes eager, or, left lazy, what to prefetch into memory so that
    /// each page's fault is served from there.
    pub fn prefetch_plan(&self, manifest: &Manifest, max_pages: usize) -> EagerPlan {
        let wanted = self.ranked(max_pages);
        let pagemaps: HashSet<&str> = wanted.iter().map(|p| p.pagemap.as_str()).collect();
        // Where each address of those pagemaps lives in the new checkpoint: its content and
        // whether it is lazy (only pages that were lazy become eager; the others were restored
        // eagerly anyway). Per pagemap, keyed by address alone: no string built or hashed per
        // page (with one per page, planning took a 120 MiB Python tenant's swap-in 40-50 ms).
        let layout = ImageLayout::of(manifest);
        let mut where_is: HashMap<&str, PagesByAddress> = HashMap::new();
        for (pages_file, pagemap, positions) in layout.page_files() {
            if !pagemaps.contains(pagemap) {
                continue;
            }
            let ids = manifest.file(pages_file).map_or(&[][..], |f| f.pages());
            where_is.insert(pagemap, PagesByAddress::new(positions, ids));
        }
        let mut plan = EagerPlan::default();
        for p in wanted {
            let found = where_is
                .get(p.pagemap.as_str())
                .and_then(|at| at.get(p.vaddr));
            // None: that address is no longer mapped.
            if let Some((id, true)) = found {
                plan.ids.push(id);
                plan.pages.push(ActivePage {
                    pagemap: p.pagemap.clone(),
                    vaddr: p.vaddr,
                    id: String::new(),
                });
            }
        }
        plan
    }
}

/// One pagemap's pages by address: its positions are in address order as CRIU writes them,
/// so a page is found by binary search, without indexing every page of a large image (a map of
/// the large heap's 68k addresses took its swap-in's plan milliseconds, for ~440 lookups); the
/// positions of a pagemap that is not in order are sorted first.
struct PagesByAddress<'a> {
    positions: &'a [PagePosition],
    ids: &'a [PageId],
    /// Position indexes in address order, when the positions are not in it themselves.
    order: Option<Vec<usize>>,
}

impl<'a> PagesByAddress<'a> {
    fn new(positions: &'a [PagePosition], ids: &'a [PageId]) -> PagesByAddress<'a> {
        let in_order = positions.windows(2).all(|w| w[0].vaddr < w[1].vaddr);
        let order = (!in_order).then(|| {
            let mut order: Vec<usize> = (0..positions.len()).collect();
            order.sort_by_key(|&i| positions[i].vaddr);
            order
        });
        PagesByAddress {
            positions,
            ids,
            order,
        }
    }

    /// The content of the page at `vaddr` and whether it is lazy.
    fn get(&self, vaddr: u64) -> Option<(PageId, bool)> {
        let i = match &self.order {
            None => self
                .positions
                .binary_search_by_key(&vaddr, |p| p.vaddr)
                .ok()?,
            Some(order) => {
                order[order
                    .binary_search_by_key(&vaddr, |&i| self.positions[i].vaddr)
                    .ok()?]
            }
        };
        Some((*self.ids.get(i)?, self.positions[i].lazy))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use criu_image::fixtures::one_eager_six_lazy_pagemap;
    use testkit::manifest::{file, of_files};

    /// A page of the tests' pagemap, as a restore trace names it.
    fn page(vaddr: u64) -> ActivePage {
        ActivePage {
            pagemap: "pagemap-42.img".into(),
            vaddr,
            id: String::new(),
        }
    }

    fn manifest() -> Manifest {
        let pm = one_eager_six_lazy_pagemap();
        let ids: Vec<PageId> = (1..=7u8).map(|i| PageId([i; 32])).collect();
        of_files(vec![
            file("pagemap-42.img", 0, FileContent::Inline(pm.encode())),
            file("pages-1.img", 7 * 4096, FileContent::Paged(ids)),
        ])
    }

    /// The fill's two parts: the lazy pages chosen (here the last two), then the others, each in
    /// image order, every lazy page once and no eager one.
    #[test]
    fn lazy_pages_split_in_two_chosen_first() {
        let m = manifest();
        let layout = criu_image::ImageLayout::of(&m);
        let ids: Vec<PageId> = (1..=7u8).map(|i| PageId([i; 32])).collect();
        let (chosen, others) = layout.lazy_page_ids_split(&m, |pagemap| {
            let here = pagemap == "pagemap-42.img";
            move |vaddr| here && vaddr >= 0x14000
        });
        assert_eq!(chosen, ids[5..7]);
        assert_eq!(others, ids[1..5]);
        assert_eq!(layout.lazy_page_ids(&m), ids[1..7]);
    }

    /// The restore set a swap-out plans from the dump on disk is the one a swap-in computes
    /// from the stored checkpoint with the same ActiveSet.
    #[test]
    fn restore_positions_match_the_swap_ins_restore_set() {
        let m = manifest();
        let dir = tempfile::tempdir().unwrap();
        if let FileContent::Inline(b) = &m.files[0].content {
            std::fs::write(dir.path().join(&m.files[0].name), b).unwrap();
        }
        let mut set = ActiveSet::new("t");
        set.record(
            RestoreTrace {
                pages: [0x12000u64, 0x10000]
                    .iter()
                    .map(|&vaddr| ActivePage {
                        pagemap: "pagemap-42.img".into(),
                        vaddr,
                        id: String::new(),
                    })
                    .collect(),
                ..Default::default()
            },
            4,
        );
        let wanted = set.pages(100);
        let positions = ImageLayout::of_dir(dir.path())
            .restore_positions(wanted.iter().map(|p| (p.pagemap.as_str(), p.vaddr)), 100);
        let mut served = m.clone();
        set.eager_plan(&mut served, 100);
        let restore_set = ImageLayout::of(&served).eager_page_ids(&served);
        let pages = m.files[1].pages();
        let from_dump: Vec<PageId> = positions.iter().map(|p| pages[p.page as usize]).collect();
        assert_eq!(from_dump, restore_set);
    }

    fn read(request: u64, page: u64, len: u32, at_us: u64) -> Vec<PageAccess> {
        (0..u64::from(len).div_ceil(4096))
            .map(|i| PageAccess {
                file: "pages-1.img".into(),
                page: page + i,
                id: PageId([(page + i + 1) as u8; 32]),
                at_us,
                request_len: len,
                request,
            })
            .collect()
    }

    #[test]
    fn faults_are_one_page_reads_away_from_the_background_cursor() {
        let m = manifest();
        let layout = ImageLayout::of(&m);
        let mut log = Vec::new();
        log.extend(read(0, 0, 4096, 10)); // eager restore of the non-lazy page: not a fault
        log.extend(read(1, 4, 4096, 20)); // fault at page 4 (cursor is page 1)
        log.extend(read(2, 1, 8192, 30)); // background: pages 1-2
        log.extend(read(3, 3, 4096, 40)); // background: cursor is now page 3
        log.extend(read(4, 6, 4096, 50)); // fault at page 6 (cursor is page 5)
        log.extend(read(5, 5, 4096, 900)); // after the window
        let faults = classify_faults(&layout, &log, 100, Background::Racing);
        let vaddrs: Vec<u64> = faults.iter().map(|f| f.vaddr).collect();
        assert_eq!(vaddrs, vec![0x10000 + 3 * 4096, 0x10000 + 5 * 4096]);
        assert_eq!(faults[0].pagemap, "pagemap-42.img");
    }

    #[test]
    fn with_the_background_copy_held_a_fault_at_the_cursor_counts() {
        let m = manifest();
        let layout = ImageLayout::of(&m);
        let mut log = Vec::new();
        log.extend(read(0, 0, 4096, 10)); // eager restore of the non-lazy page: not a fault
        log.extend(read(1, 1, 4096, 20)); // fault exactly at the lowest lazy page
        log.extend(read(2, 4, 4096, 30)); // fault
        let at = |f: Vec<ActivePage>| f.iter().map(|f| f.vaddr).collect::<Vec<_>>();
        assert_eq!(
            at(classify_faults(&layout, &log, 100, Background::Held)),
            vec![0x10000, 0x10000 + 3 * 4096]
        );
        assert_eq!(
            at(classify_faults(&layout, &log, 100, Background::Racing)),
            vec![0x10000 + 3 * 4096]
        );
    }

    #[test]
    fn eager_plan_rewrites_the_pagemap_and_names_the_new_contents() {
        let mut set = ActiveSet::new("t");
        set.record(
            RestoreTrace {
                pages: vec![page(0x12000), page(0x1000)],
                ..Default::default()
            },
            4,
        );
        set.record(
            RestoreTrace {
                pages: vec![page(0x12000), page(0x99000)],
                ..Default::default()
            },
            4,
        );
        assert_eq!(set.pages(10)[0].vaddr, 0x12000, "seen twice ranks first");
        let mut m = manifest();
        let plan = set.eager_plan(&mut m, 10);
        // 0x1000 was never lazy and 0x99000 is not mapped any more: only 0x12000 is planned.
        assert_eq!(plan.ids, vec![PageId([4; 32])]);
        let pm = Pagemap::decode(match &m.files[0].content {
            FileContent::Inline(b) => b,
            _ => unreachable!(),
        })
        .unwrap();
        let eager: Vec<u64> = pm
            .page_positions()
            .iter()
            .filter(|p| !p.lazy)
            .map(|p| p.vaddr)
            .collect();
        assert_eq!(eager, vec![0x1000, 0x12000]);
        assert_eq!(
            m.files[0].size,
            m.files[0].pages().len() as u64
                + match &m.files[0].content {
                    FileContent::Inline(b) => b.len() as u64,
                    _ => 0,
                }
        );
    }

    #[test]
    fn a_prefetch_plan_names_the_same_pages_and_leaves_the_pagemaps_alone() {
        let mut set = ActiveSet::new("t");
        set.record(
            RestoreTrace {
                pages: vec![page(0x13000), page(0x1000), page(0x12000)],
                ..Default::default()
            },
            4,
        );
        let m = manifest();
        let plan = set.prefetch_plan(&m, 10);
        assert_eq!(plan.ids, vec![PageId([5; 32]), PageId([4; 32])]);
        let mut rewritten = m.clone();
        assert_eq!(set.eager_plan(&mut rewritten, 10).ids, plan.ids);
        assert_eq!(m, manifest(), "the pagemaps are served as dumped");
        assert_ne!(rewritten, m);
    }

    #[test]
    fn pages_are_found_by_address_in_order_or_not() {
        let at = |vaddr, lazy| PagePosition { vaddr, lazy };
        let ids: Vec<PageId> = (1..=3u8).map(|i| PageId([i; 32])).collect();
        let sorted = [at(0x1000, false), at(0x5000, true), at(0x9000, true)];
        let unsorted = [at(0x9000, true), at(0x1000, false), at(0x5000, true)];
        let a = PagesByAddress::new(&sorted, &ids);
        assert_eq!(a.get(0x5000), Some((ids[1], true)));
        assert_eq!(a.get(0x1000), Some((ids[0], false)));
        assert_eq!(a.get(0x2000), None);
        let b = PagesByAddress::new(&unsorted, &ids);
        assert_eq!(b.get(0x9000), Some((ids[0], true)));
        assert_eq!(b.get(0x1000), Some((ids[1], false)));
        assert_eq!(b.get(0x4000), None);
        // A pagemap longer than its pages file: no id, no page.
        assert_eq!(PagesByAddress::new(&sorted, &ids[..1]).get(0x9000), None);
    }

    #[test]
    fn hit_rate_counts_eager_and_prefetched_pages() {
        let t = RestoreTrace {
            eager_pages: 0,
            foreseen: 3,
            faults: 1,
            ..Default::default()
        };
        assert_eq!(t.hit_rate(), 0.75);
    }

    #[test]
    fn the_window_keeps_the_newest_restores() {
        let mut set = ActiveSet::new("t");
        for g in 0..6 {
            set.record(
                RestoreTrace {
                    generation: g,
                    ..Default::default()
                },
                4,
            );
        }
        let gens: Vec<u64> = set.restores.iter().map(|r| r.generation).collect();
        assert_eq!(gens, vec![5, 4, 3, 2]);
    }

    #[test]
    fn a_set_may_miss_while_young_or_while_a_restore_it_installed_faulted() {
        let trace = |eager_pages, foreseen, faults| RestoreTrace {
            eager_pages,
            foreseen,
            faults,
            ..Default::default()
        };
        let mut set = ActiveSet::new("t");
        // Young: fewer restores than the window keeps.
        set.record(trace(0, 0, 120), 2);
        assert!(set.may_miss(2));
        // The first restore installed nothing: all it faulted taught the set.
        set.record(trace(120, 0, 0), 2);
        assert!(!set.may_miss(2));
        set.record(trace(120, 0, 2), 2);
        assert!(set.may_miss(2));
        set.record(trace(0, 118, 1), 2);
        assert!(set.may_miss(2));
        // Out of the window, the misses are forgotten.
        set.record(trace(122, 0, 0), 2);
        set.record(trace(122, 0, 0), 2);
        assert!(!set.may_miss(2));
        assert!(set.may_miss(3), "two restores kept of three");
    }

    /// The merged set's order: pages seen in more restores first; among equals, those the
    /// newest restore saw, in its first-touch order, then the next newest's.
    #[test]
    fn the_merged_set_ranks_by_restores_seen_in_then_newest_first_touch() {
        let trace = |vaddrs: &[u64]| RestoreTrace {
            pages: vaddrs.iter().map(|&v| page(v)).collect(),
            ..Default::default()
        };
        let mut set = ActiveSet::new("t");
        set.record(trace(&[0x1000, 0x2000, 0x3000, 0x4000]), 4);
        set.record(trace(&[0x5000, 0x3000, 0x1000]), 4);
        set.record(trace(&[0x6000, 0x1000, 0x5000]), 4);
        let ranked: Vec<u64> = set.pages(100).iter().map(|p| p.vaddr).collect();
        // 0x1000 in three; 0x5000 in two (newest at order 2), 0x3000 in two (newest the middle
        // restore); then the newest's 0x6000, the oldest's 0x2000 and 0x4000.
        assert_eq!(ranked, [0x1000, 0x5000, 0x3000, 0x6000, 0x2000, 0x4000]);
        assert_eq!(set.pages(2).len(), 2);
    }
}
