//! Cgroup moves without a wait: the kernel's `favordynmods`, turned on for the machine at the
//! worker's start.
//!
//! **Why.** Moving a process into a cgroup (a restore's CRIU moving the restored tree into the
//! tenant's cgroup, a tenant joining its cgroup before it executes its command) takes the
//! kernel's `cgroup_threadgroup_rwsem` for writing, and the first writer after a quiet spell
//! waits for an RCU grace period before it may. Measured here (cgroup v1, the Python counter's
//! whole restore from the local tier): CRIU's move waited 10-12 ms of its 21 ms restore, and the
//! first answer at the client came 34-45 ms after the connect; with `favordynmods` on, the move
//! takes microseconds, the restore 12 ms and the first answer 26-28 ms. A dense host moves
//! processes all the time, one wake-up at a time, each after a quiet spell of its own.
//!
//! **What it costs.** `favordynmods` (Linux >= 6.0) keeps that lock on the path that needs no
//! grace period, for every cgroup hierarchy of the machine: in the kernel's words it reduces the
//! latencies of task migrations "at the cost of making hot path operations such as forks and
//! exits more expensive". On Linux 6.18 it also moves `cgroup.procs` writes to a lock per thread
//! group, and cannot be turned off again until a reboot (the kernel logs "per threadgroup rwsem
//! mechanism can't be disabled" when asked to). `[worker] favor_cgroup_moves = false` leaves it
//! alone.
//!
//! **How.** It is an option of the unified (v2) hierarchy that holds for the whole machine, and
//! a mount of cgroup2 sets all of that hierarchy's options to those it is given. So cgroup2 is
//! mounted once on a scratch directory with the options the host's cgroup2 mount has
//! (`nsdelegate`, `memory_recursiveprot`, ...) plus `favordynmods`, and unmounted at once: the
//! host's own mount is untouched, and a host without cgroup2 mounted (v1 only) gets it all the
//! same. A worker in a cgroup namespace of its own cannot set it (the kernel ignores the options
//! there), which the check afterwards finds out. CRIU would reset the options with each cgroup2
//! mount of its own: the worker's restores use a yard of links instead (`yard`).

use std::path::Path;

use super::hierarchy::CgroupMount;

/// The option.
const OPTION: &str = "favordynmods";

/// What [`favor_dynamic_moves`] found or did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum FastMoves {
    /// The unified hierarchy had the option already.
    AlreadyOn,
    /// Turned on now.
    TurnedOn,
    /// It could not be turned on: why.
    Unavailable(String),
}

/// Turns `favordynmods` on for the machine (see the module doc), mounting cgroup2 on `scratch`
/// for a moment.
pub(crate) fn favor_dynamic_moves(scratch: &Path) -> FastMoves {
    let read = || std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let options = unified_options(&read());
    let Some(data) = mount_data(options.as_deref()) else {
        return FastMoves::AlreadyOn;
    };
    if let Err(e) = mount_and_detach(scratch, &data) {
        return FastMoves::Unavailable(format!(
            "cgroup2 cannot be mounted with {OPTION} (Linux >= 6.0 has it): {e}"
        ));
    }
    match unified_options(&read()) {
        Some(now) if !has_option(&now, OPTION) => FastMoves::Unavailable(format!(
            "the unified hierarchy's options stayed {now:?} (a cgroup namespace of the worker's \
             own?)"
        )),
        _ => FastMoves::TurnedOn,
    }
}

/// The options of the host's cgroup2 mount in `mountinfo`, if there is one.
fn unified_options(mountinfo: &str) -> Option<String> {
    CgroupMount::all(mountinfo).find_map(|m| match m {
        CgroupMount::V2 { options, .. } => Some(options),
        CgroupMount::V1 { .. } => None,
    })
}

/// Whether the comma-separated `options` hold `option`.
fn has_option(options: &str, option: &str) -> bool {
    options.split(',').any(|o| o == option)
}

/// The options to mount cgroup2 with: those of the host's mount (`options`; `None`: none
/// mounted), without `rw`/`ro`, plus [`OPTION`]; `None` if it has the option already.
fn mount_data(options: Option<&str>) -> Option<String> {
    let options = options.unwrap_or("");
    if has_option(options, OPTION) {
        return None;
    }
    let mut kept: Vec<&str> = options
        .split(',')
        .filter(|o| !o.is_empty() && *o != "rw" && *o != "ro")
        .collect();
    kept.push(OPTION);
    Some(kept.join(","))
}

/// Mounts cgroup2 on `scratch` with `data` and detaches it again.
fn mount_and_detach(scratch: &Path, data: &str) -> std::io::Result<()> {
    use nix::mount::{MntFlags, MsFlags};
    std::fs::create_dir_all(scratch)?;
    nix::mount::mount(
        Some("cgroup2"),
        scratch,
        Some("cgroup2"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some(data),
    )?;
    nix::mount::umount2(scratch, MntFlags::MNT_DETACH)?;
    let _ = std::fs::remove_dir(scratch);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_mounts_options_are_kept_and_the_option_added() {
        assert_eq!(
            mount_data(Some("rw,nsdelegate,memory_recursiveprot")).as_deref(),
            Some("nsdelegate,memory_recursiveprot,favordynmods")
        );
        assert_eq!(mount_data(Some("rw")).as_deref(), Some("favordynmods"));
        assert_eq!(mount_data(None).as_deref(), Some("favordynmods"));
        assert_eq!(mount_data(Some("rw,favordynmods,nsdelegate")), None);
    }

    #[test]
    fn the_unified_hierarchys_options_are_read_from_mountinfo() {
        let text = "32 31 0:29 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n\
                    30 24 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_eq!(unified_options(text).as_deref(), Some("rw,nsdelegate"));
        assert_eq!(unified_options("1 0 0:1 / / rw - ext4 /dev/sda rw\n"), None);
    }

    /// On this machine's kernel (as root): the option is on afterwards, whatever it was, and the
    /// scratch mount is gone.
    #[test]
    fn the_option_is_on_for_the_machine_afterwards() {
        let dir = tempfile::tempdir().unwrap();
        let scratch = dir.path().join("cgroup2");
        let outcome = favor_dynamic_moves(&scratch);
        assert!(
            matches!(outcome, FastMoves::AlreadyOn | FastMoves::TurnedOn),
            "{outcome:?}"
        );
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(!mountinfo.contains(scratch.to_str().unwrap()));
        if let Some(options) = unified_options(&mountinfo) {
            assert!(has_option(&options, OPTION), "{options}");
        }
    }
}
