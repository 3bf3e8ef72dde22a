//! ActiveSets lent between tenants of one program: a tenant with no ActiveSet of its own yet
//! (it was never restored lazily) borrows the set another tenant of the same program learned.
//!
//! Why: a tenant's first lazy restore knows nothing of its working set, so each page its first
//! request touches is a fault, and from the cold tier each fault is a round trip; its first
//! swap-out's locality pack holds CRIU's eager pages only. Tenants of one program started with
//! the deterministic layout (ASLR off, the same pids in their PID namespaces) keep the same data
//! at the same addresses, so another tenant's set names the right pages by position (pagemap and
//! virtual address) in the new tenant's checkpoint: its first swap-out stores them in its locality
//! pack, and the swap-in of that checkpoint installs them eagerly, as if it had learned them
//! itself. What that restore then learns is the tenant's own set. A set lent only after the
//! swap-out is not used by that swap-in: its pages are not in the checkpoint's locality pack, so
//! they would be read from the ordinary packs apart from it, and the fill behind the restore would
//! read the same ranges again (ten counters swapped out before any learned: the second read twice
//! its new pages). Under the default layout addresses differ per
//! tenant and a borrowed set would name nothing or the wrong pages: those tenants neither lend
//! nor borrow.
//!
//! Kept in memory, newest lender wins: a restarted worker lends again once a tenant has learned.

use std::collections::HashMap;
use std::sync::Mutex;

use pager::activeset::ActiveSet;

use crate::host::lock_std;
use crate::tenant::TenantInfo;

/// The newest ActiveSet learned per program.
#[derive(Default)]
pub(crate) struct ProgramSets {
    sets: Mutex<HashMap<String, ActiveSet>>,
}

impl ProgramSets {
    /// Keeps `set` (a tenant of `program` just learned it) for the next tenant of `program`
    /// with none of its own.
    pub(crate) fn lend(&self, program: &str, set: &ActiveSet) {
        lock_std(&self.sets).insert(program.to_string(), set.clone());
    }

    /// The set another tenant of `program` learned last, if any.
    pub(crate) fn borrow(&self, program: &str) -> Option<ActiveSet> {
        lock_std(&self.sets).get(program).cloned()
    }
}

/// The program a tenant runs, as far as lending ActiveSets goes: its command without the words
/// that are numbers (a port, a size), when it runs with the deterministic layout; `None` otherwise.
pub(crate) fn program_of(info: &TenantInfo) -> Option<String> {
    info.deterministic.then(|| program_key(&info.cmd))
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

    #[test]
    fn the_newest_lender_wins() {
        let sets = ProgramSets::default();
        assert!(sets.borrow("p").is_none());
        sets.lend("p", &ActiveSet::new("a"));
        sets.lend("p", &ActiveSet::new("b"));
        assert_eq!(sets.borrow("p").unwrap().tenant, "b");
        assert!(sets.borrow("q").is_none());
    }
}
