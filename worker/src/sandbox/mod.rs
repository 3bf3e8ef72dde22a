//! A tenant's own view of the machine: a mount namespace whose root holds only what it needs.
//!
//! Without it a tenant runs as root in the worker's mount namespace and can read every other
//! tenant's state, image files and checkpoints, and the store. With it the tenant sees, from a
//! root directory of its own (`tenants/NAME/view`, a skeleton of mount points): the system
//! directories read-only (`/usr`, `/etc`, and `/bin`, `/lib`... as the host has them), the paths
//! its spec names read-only, its working directory writable at its own path, a `/tmp` and a
//! `/dev/shm` of its own, `/dev/null`, `zero`, `full`, `random` and `urandom`, its log at
//! [`LOG_INSIDE`], and a `/proc` of its own PID namespace (no other process of the machine).
//! Nothing of the worker's home but its working directory: the worker's own paths (store,
//! records, socket, config: its *secrets*) are refused as shown paths, and where a shown
//! directory holds one (a home under `/opt`), an empty directory or file is mounted over it.
//!
//! [`shown_read_only`] adds, to the paths a spec names, the directory of each absolute path its
//! command names (`python3 /srv/app/main.py` shows `/srv/app`), so that most commands run in a
//! sandbox as they are.
//!
//! CRIU dumps the namespace with the tenant. Each bind mount is declared external under a key
//! ([`View::dump_externals`]) and given back by key on restore ([`View::restore_externals`]), with
//! the skeleton as the restored tree's root (`--root`), as container runtimes do.
//!
//! `view` says what a tenant sees ([`View`], [`shown_read_only`]); `entry` makes it so, in the
//! child between fork and exec, where nothing may allocate: everything [`Entry::enter`] needs is
//! prepared as C strings beforehand ([`View::entry`]).

mod entry;
mod view;

pub use entry::Entry;
pub use view::{shown_read_only, Bind, View, ViewSources};

/// Where the tenant's log (its stdout and stderr) is inside its view.
pub const LOG_INSIDE: &str = "/.tenant.log";

/// Top-level host directories a program needs, shown read-only (or as the same symlink, on a
/// merged-`/usr` system).
pub(crate) const SYSTEM_DIRS: &[&str] = &[
    "usr", "etc", "bin", "sbin", "lib", "lib32", "lib64", "libx32", "opt",
];

/// Parts of its `/proc` a tenant may read but not write, as container runtimes have them: root
/// may write `/proc/sys` (`kernel/core_pattern` runs a program as the host's root) and
/// `/proc/sysrq-trigger` (reboots the machine) by its uid alone, without a capability.
pub(crate) const PROC_READ_ONLY: &[&str] = &["sys", "sysrq-trigger", "bus", "fs", "irq"];

/// Device nodes every tenant gets, bound from the host's `/dev`.
pub(crate) const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom"];
