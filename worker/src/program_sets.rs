//! ActiveSets lent between tenants of one program: a tenant with no ActiveSet of its own yet
//! (it was never restored lazily) borrows the set another tenant of the same program learned.
//!
//! Why: a tenant's first lazy restore knows nothing of its working set, so each page its first
//! request touches is a fault, and from the cold tier each fault is a round trip; its first
//! swap-out's locality pack holds CRIU's eager pages only. Tenants of one program, started alike,
//! make the same mappings in the same order and touch the same parts of them. A set names pages
//! by pagemap and virtual address, so it is lent with the lender's mappings (its `mm-PID.img`),
//! and the borrower's first swap-out moves each page to the same place in its own mappings
//! (`criu_image::address_space`): under ASLR the mappings start elsewhere per tenant, with the
//! deterministic layout (ASLR off) they start at the same addresses and the move is none. The
//! moved set goes into the new checkpoint's locality pack, and the swap-in of that checkpoint
//! installs it eagerly, as if the tenant had learned it itself. What that restore then learns is
//! the tenant's own set. A page the move puts where the borrower has none is left out; one it
//! puts on the wrong data only costs its bytes (the set chooses which pages are eager, never
//! their contents). A set lent only after the swap-out is not used by that swap-in: its pages
//! are not in the checkpoint's locality pack, so they would be read from the ordinary packs apart
//! from it, and the fill behind the restore would read the same ranges again (ten counters
//! swapped out before any learned: the second read twice its new pages).
//!
//! Kept in memory, newest lender wins: a restarted worker lends again once a tenant has learned.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use criu_image::ImageSpaces;
use pager::activeset::ActiveSet;

use crate::host::lock_std;
use crate::tenant::TenantInfo;

/// A set as lent: the pages, and the mappings of the checkpoint they were learned on.
#[derive(Clone)]
pub(crate) struct LentSet {
    pub set: ActiveSet,
    pub spaces: ImageSpaces,
}

/// A set as borrowed, for the borrower's checkpoint.
#[derive(Clone)]
pub(crate) struct BorrowedSet {
    /// Shared: a swap-in plans from it on the wake-up's path.
    pub set: Arc<ActiveSet>,
    /// Its pages were moved to other addresses (the two tenants' layouts differ): a guess at
    /// the borrower's working set, which its first restore completes (see `swap_in::fill`).
    pub moved: bool,
}

impl LentSet {
    /// The set with each page moved to its place in the dump whose mappings are `to`; pages
    /// with no such place are left out. Without mappings on either side, the set as it is.
    pub(crate) fn moved_to(&self, to: &ImageSpaces) -> BorrowedSet {
        let mut set = self.set.clone();
        let mut moved = false;
        if self.spaces.is_empty() || to.is_empty() {
            return BorrowedSet {
                set: Arc::new(set),
                moved,
            };
        }
        let to = self.spaces.move_to(to);
        for trace in &mut set.restores {
            trace
                .pages
                .retain_mut(|page| match to.page(&page.pagemap, page.vaddr) {
                    Some((pagemap, vaddr)) => {
                        moved |= pagemap != page.pagemap || vaddr != page.vaddr;
                        page.pagemap = pagemap.to_string();
                        page.vaddr = vaddr;
                        true
                    }
                    None => {
                        moved = true;
                        false
                    }
                });
        }
        BorrowedSet {
            set: Arc::new(set),
            moved,
        }
    }
}

/// The newest ActiveSet learned per program.
#[derive(Default)]
pub(crate) struct ProgramSets {
    sets: Mutex<HashMap<String, LentSet>>,
}

impl ProgramSets {
    /// Keeps `set` (a tenant of `program` just learned it on a checkpoint with mappings
    /// `spaces`) for the next tenant of `program` with none of its own.
    pub(crate) fn lend(&self, program: &str, set: &ActiveSet, spaces: &ImageSpaces) {
        let lent = LentSet {
            set: set.clone(),
            spaces: spaces.clone(),
        };
        lock_std(&self.sets).insert(program.to_string(), lent);
    }

    /// The set another tenant of `program` learned last, if any.
    pub(crate) fn borrow(&self, program: &str) -> Option<LentSet> {
        lock_std(&self.sets).get(program).cloned()
    }
}

/// The program a tenant runs, as far as lending ActiveSets goes: its command without the words
/// that are numbers (a port, a size), and whether it runs with the deterministic layout (its
/// pages then lie elsewhere than under ASLR: the two do not lend to each other).
pub(crate) fn program_of(info: &TenantInfo) -> String {
    let layout = if info.deterministic {
        "deterministic"
    } else {
        "aslr"
    };
    format!("{layout}\0{}", program_key(&info.cmd))
}

fn program_key(cmd: &[String]) -> String {
    let words: Vec<&str> = cmd
        .iter()
        .map(String::as_str)
        .filter(|w| w.is_empty() || !w.bytes().all(|b| b.is_ascii_digit()))
        .collect();
    words.join("\0")
}

#[cfg(test)]
mod tests {
    use super::*;
    use criu_image::fixtures::{anon_vma, mm_image};

    fn cmd(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| w.to_string()).collect()
    }

    #[test]
    fn one_program_whatever_its_port() {
        assert_eq!(
            program_key(&cmd(&["python3", "/srv/counter.py", "8080"])),
            program_key(&cmd(&["python3", "/srv/counter.py", "9090"]))
        );
        assert_ne!(
            program_key(&cmd(&["python3", "/srv/counter.py", "8080"])),
            program_key(&cmd(&["python3", "/srv/other.py", "8080"]))
        );
        // Words are not run together: "a b" is not "ab".
        assert_ne!(program_key(&cmd(&["a", "b"])), program_key(&cmd(&["ab"])));
    }

    /// A set of one page, 0xf000 into a 64 KiB anonymous mapping at `at`, learned on a dump
    /// whose only process has that mapping.
    fn lent_at(at: u64) -> LentSet {
        let mut set = ActiveSet::new("lender");
        set.record(
            pager::activeset::RestoreTrace {
                pages: vec![pager::activeset::ActivePage {
                    pagemap: "pagemap-1.img".into(),
                    vaddr: at + 0xf000,
                    id: String::new(),
                }],
                ..Default::default()
            },
            4,
        );
        LentSet {
            set,
            spaces: dump_with_mapping_at(at),
        }
    }

    fn dump_with_mapping_at(at: u64) -> ImageSpaces {
        let mm = mm_image(&[anon_vma(at, at + 0x10000)]);
        ImageSpaces::of_files([("mm-1.img", mm.as_slice())].into_iter())
    }

    fn pages(set: &ActiveSet) -> Vec<(String, u64)> {
        set.pages(usize::MAX)
            .into_iter()
            .map(|p| (p.pagemap, p.vaddr))
            .collect()
    }

    #[test]
    fn a_lent_set_is_moved_to_the_borrowers_mappings_and_says_whether_it_moved() {
        let lent = lent_at(0x7f00_0000_0000);
        let same = lent.moved_to(&dump_with_mapping_at(0x7f00_0000_0000));
        assert!(!same.moved, "the same layout: nothing moved");
        assert_eq!(
            pages(&same.set),
            [("pagemap-1.img".into(), 0x7f00_0000_f000)]
        );
        let elsewhere = lent.moved_to(&dump_with_mapping_at(0x7f3a_0000_0000));
        assert!(elsewhere.moved);
        assert_eq!(
            pages(&elsewhere.set),
            [("pagemap-1.img".into(), 0x7f3a_0000_f000)]
        );
        // A borrower without such a mapping gets nothing of it.
        let none = lent.moved_to(&ImageSpaces::of_files(
            [("mm-1.img", mm_image(&[]).as_slice())].into_iter(),
        ));
        assert!(none.moved && pages(&none.set).is_empty());
    }

    #[test]
    fn the_newest_lender_wins() {
        let sets = ProgramSets::default();
        assert!(sets.borrow("p").is_none());
        let spaces = ImageSpaces::default();
        sets.lend("p", &ActiveSet::new("a"), &spaces);
        sets.lend("p", &ActiveSet::new("b"), &spaces);
        assert_eq!(sets.borrow("p").unwrap().set.tenant, "b");
        assert!(sets.borrow("q").is_none());
    }
}
