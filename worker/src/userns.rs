//! A user namespace per tenant (`user_namespace = true` in its spec): root inside the tenant is
//! an unprivileged range of ids on the host.
//!
//! A sandboxed tenant without one runs as the host's root with few capabilities: it reads what
//! root can read of the directories it is shown (`/etc/shadow` among them), and a way out of its
//! sandbox would make it the host's root. With one, ids `0..IDS_PER_TENANT` inside are
//! `first..first + IDS_PER_TENANT` on the host, a range no other tenant of the worker has
//! ([`IdRanges`]): the host's files are "nobody's" to it, its own files are its range's, and
//! two tenants cannot touch each other's processes or files even through a shared path.
//!
//! What it takes: the namespace must own the tenant's PID namespace (to mount its `/proc`, and
//! for CRIU, whose parasite refuses an unprivileged task whose `/proc` is not its own), so the
//! tenant is cloned into both at once ([`crate::launch::spawn_in_own_user_namespace`]); a
//! multithreaded worker cannot `unshare` a user namespace itself. The worker writes the maps
//! from outside ([`write_maps`]) before the tenant goes on, and gives the files the tenant
//! writes (its working directory, its log) to its range ([`give_tree`]). CRIU dumps the
//! namespace with its maps and restores them as they were; its restored tasks open some images
//! themselves, one (the time namespace's) before their maps are written, when they are nobody
//! on the host: images are readable by everyone, in a mounts directory of root's alone. This machine's root lacks
//! `CAP_SYS_RESOURCE` and CRIU still dumps and restores such a tenant (checked by the e2e tests).
//!
//! A lazy restore needs more: CRIU opens the userfaultfd of each restored task from inside the
//! task, where it is root of its user namespace only, and the kernel gives a userfaultfd that
//! handles kernel-mode faults only to a process with `CAP_SYS_PTRACE` in the host's namespace,
//! unless `vm.unprivileged_userfaultfd` is 1 ([`lazy_restores_allowed`]). Where it is 0 (the
//! kernel's default), such a tenant is always restored whole: its pages are fetched first,
//! from whichever tier holds them, and CRIU restores it from a tmpfs.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Mutex;

/// Ids each tenant's namespace maps (uids and gids alike): enough for programs that switch to
/// `nobody` (65534) or another system user after they start.
pub const IDS_PER_TENANT: u32 = 65536;

/// The host ids given to tenants' user namespaces: ranges of [`IDS_PER_TENANT`] from `first`
/// on, each taken by one tenant at most.
pub struct IdRanges {
    first: u32,
    taken: Mutex<BTreeSet<u32>>,
}

/// Every range from the worker's first id to the largest id is taken.
#[derive(Debug, thiserror::Error)]
#[error("no range of {IDS_PER_TENANT} host ids is left for a user namespace from {first} on")]
pub struct IdsExhausted {
    pub first: u32,
}

impl IdRanges {
    /// Ranges from `first` on, with those of `taken` (tenants that have one) taken.
    pub fn new(first: u32, taken: impl IntoIterator<Item = u32>) -> IdRanges {
        IdRanges {
            first,
            taken: Mutex::new(taken.into_iter().collect()),
        }
    }

    /// The first host id of the lowest range no tenant has, now taken.
    pub fn take(&self) -> Result<u32, IdsExhausted> {
        let mut taken = self.taken.lock().unwrap_or_else(|p| p.into_inner());
        // A range ends below u32::MAX, which is no id ((uid_t) -1).
        let free = (self.first..=u32::MAX - IDS_PER_TENANT)
            .step_by(IDS_PER_TENANT as usize)
            .find(|candidate| !taken.contains(candidate))
            .ok_or(IdsExhausted { first: self.first })?;
        taken.insert(free);
        Ok(free)
    }

    /// Makes the range starting at `first` free again (its tenant is gone, or never started).
    pub fn give_back(&self, first: u32) {
        self.taken
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&first);
    }
}

/// Whether CRIU may restore a tenant in a user namespace lazily here:
/// `vm.unprivileged_userfaultfd` is 1 (see the module doc).
pub fn lazy_restores_allowed() -> bool {
    std::fs::read_to_string("/proc/sys/vm/unprivileged_userfaultfd").is_ok_and(|v| v.trim() == "1")
}

/// Writes the uid and gid maps of the user namespace of process `pid`, which waits for them:
/// ids `0..IDS_PER_TENANT` inside are `first..` on the host. The worker's root may write any
/// map of a child namespace (no `newuidmap`, `setgroups` left allowed inside).
pub fn write_maps(pid: u32, first: u32) -> std::io::Result<()> {
    let map = format!("0 {first} {IDS_PER_TENANT}\n");
    for file in ["uid_map", "gid_map"] {
        let path = format!("/proc/{pid}/{file}");
        std::fs::write(&path, &map)
            .map_err(|e| std::io::Error::new(e.kind(), format!("{path}: {e}")))?;
    }
    Ok(())
}

/// Gives `path`, and everything under it when it is a directory, to root of the range starting
/// at `first` (uid and gid `first`); symbolic links themselves, never what they point to.
pub fn give_tree(path: &Path, first: u32) -> std::io::Result<()> {
    let at = |p: &Path, e: std::io::Error| {
        std::io::Error::new(e.kind(), format!("{}: {e}", p.display()))
    };
    std::os::unix::fs::lchown(path, Some(first), Some(first)).map_err(|e| at(path, e))?;
    let meta = std::fs::symlink_metadata(path).map_err(|e| at(path, e))?;
    if meta.is_dir() {
        for entry in std::fs::read_dir(path).map_err(|e| at(path, e))? {
            give_tree(&entry.map_err(|e| at(path, e))?.path(), first)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn each_tenant_gets_a_range_of_its_own_and_a_range_given_back_is_taken_again() {
        let ranges = IdRanges::new(100_000, [100_000 + IDS_PER_TENANT]);
        assert_eq!(ranges.take().unwrap(), 100_000);
        assert_eq!(ranges.take().unwrap(), 100_000 + 2 * IDS_PER_TENANT);
        ranges.give_back(100_000);
        assert_eq!(ranges.take().unwrap(), 100_000);
    }

    #[test]
    fn ranges_end_before_the_largest_id() {
        let last = u32::MAX - 2 * IDS_PER_TENANT + 1;
        let ranges = IdRanges::new(last, []);
        assert_eq!(ranges.take().unwrap(), last);
        let e = ranges.take().unwrap_err();
        assert!(e.to_string().contains("no range"), "{e}");
    }

    #[test]
    fn a_tree_is_given_to_the_range_without_following_its_links() {
        let dir = tempfile::tempdir().unwrap();
        let top = dir.path().join("work");
        std::fs::create_dir_all(top.join("sub")).unwrap();
        std::fs::write(top.join("sub/file"), b"x").unwrap();
        let outside = dir.path().join("outside");
        std::fs::write(&outside, b"y").unwrap();
        std::os::unix::fs::symlink(&outside, top.join("link")).unwrap();

        give_tree(&top, 200_000).unwrap();
        for p in [
            top.clone(),
            top.join("sub"),
            top.join("sub/file"),
            top.join("link"),
        ] {
            let m = std::fs::symlink_metadata(&p).unwrap();
            assert_eq!((m.uid(), m.gid()), (200_000, 200_000), "{}", p.display());
        }
        let m = std::fs::metadata(&outside).unwrap();
        assert_eq!(m.uid(), 0, "what a link points to keeps its owner");
    }
}
