//! Entering a view: the mounts, the pivot and the stdio of a tenant, made by the tenant's first
//! process between fork and exec (async-signal-safe calls only, on strings made beforehand).

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::{Bind, LOG_INSIDE, PROC_READ_ONLY};

/// A view ready to be entered by a child between fork and exec.
pub struct Entry {
    root: CString,
    /// The flags of the mount holding the skeleton that a remount must keep (see [`kept_flags`]).
    root_kept: libc::c_ulong,
    proc_dir: CString,
    /// [`PROC_READ_ONLY`], under the root before the pivot.
    proc_read_only: Vec<CString>,
    /// Source, target (under the root, before the pivot), writable, the source's flags a remount
    /// must keep.
    binds: Vec<(CString, CString, bool, libc::c_ulong)>,
    workdir: CString,
    log: CString,
    dev_null: CString,
}

impl Entry {
    /// The entry into a view whose skeleton is `root`, with `binds` and `workdir`.
    pub(super) fn new(root: &Path, binds: &[Bind], workdir: &Path) -> std::io::Result<Entry> {
        let c = |p: &Path| {
            CString::new(p.as_os_str().as_bytes())
                .map_err(|_| std::io::Error::other(format!("{} has a NUL byte", p.display())))
        };
        let mut targets = Vec::with_capacity(binds.len());
        for b in binds {
            let target = root.join(b.inside.strip_prefix("/").unwrap_or(&b.inside));
            targets.push((c(&b.host)?, c(&target)?, b.writable, kept_flags(&b.host)?));
        }
        Ok(Entry {
            root: c(root)?,
            root_kept: kept_flags(root)?,
            proc_dir: c(&root.join("proc"))?,
            proc_read_only: PROC_READ_ONLY
                .iter()
                .map(|p| c(&root.join("proc").join(p)))
                .collect::<std::io::Result<_>>()?,
            binds: targets,
            workdir: c(workdir)?,
            log: c(Path::new(LOG_INSIDE))?,
            dev_null: c(Path::new("/dev/null"))?,
        })
    }

    /// Moves the calling process (pid 1 of the tenant's PID namespace, not yet exec'd) into a
    /// mount namespace of its own holding the view (and IPC and UTS namespaces of its own), makes the view its root and its working
    /// directory its current one, and points its stdin at `/dev/null` and its stdout and stderr
    /// at its log, as seen inside (CRIU finds a file only on a mount of the namespace).
    ///
    /// Only async-signal-safe calls: it runs between fork and exec.
    pub fn enter(&self) -> std::io::Result<()> {
        use libc::{MS_BIND, MS_NODEV, MS_NOEXEC, MS_NOSUID, MS_PRIVATE, MS_RDONLY, MS_REC};
        // Its own System V IPC objects (another tenant's shared memory is root's, so root's to
        // attach to in a shared namespace) and host name, beside its own mounts.
        check(unsafe {
            libc::unshare(libc::CLONE_NEWNS | libc::CLONE_NEWIPC | libc::CLONE_NEWUTS)
        })?;
        // Nothing mounted here propagates back to the host, nor the host's mounts in here.
        mount(None, c"/", None, MS_REC | MS_PRIVATE)?;
        mount(Some(&self.root), &self.root, None, MS_BIND)?;
        remount_bind(
            &self.root,
            MS_RDONLY | MS_NOSUID | MS_NODEV | self.root_kept,
        )?;
        for (source, target, writable, kept) in &self.binds {
            mount(Some(source), target, None, MS_BIND)?;
            let flags = if *writable { 0 } else { MS_RDONLY } | MS_NOSUID;
            remount_bind(target, flags | kept)?;
        }
        mount(
            Some(c"proc"),
            &self.proc_dir,
            Some(c"proc"),
            MS_NOSUID | MS_NODEV | MS_NOEXEC,
        )?;
        for path in &self.proc_read_only {
            // SAFETY: access(2) of a string that outlives the call.
            if unsafe { libc::access(path.as_ptr(), libc::F_OK) } == 0 {
                mount(Some(path), path, None, MS_BIND)?;
                remount_bind(path, MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)?;
            }
        }
        check(unsafe { libc::chdir(self.root.as_ptr()) })?;
        // pivot_root(".", "."): the old root ends up on top of the new one, detached below.
        check(unsafe { libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()) } as i32)?;
        check(unsafe { libc::umount2(c".".as_ptr(), libc::MNT_DETACH) })?;
        check(unsafe { libc::chdir(self.workdir.as_ptr()) })?;
        reopen(&self.dev_null, libc::O_RDONLY, &[0])?;
        reopen(&self.log, libc::O_WRONLY | libc::O_APPEND, &[1, 2])
    }
}

/// The flags of the mount holding `path` that a bind of it must keep when remounted: a tenant
/// in a user namespace may not clear them (the kernel locks them), and keeping them changes
/// nothing for one without (a bind starts with them).
fn kept_flags(path: &Path) -> std::io::Result<libc::c_ulong> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::other(format!("{} has a NUL byte", path.display())))?;
    // SAFETY: statvfs fills the struct it is given from a string that outlives the call.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    check(unsafe { libc::statvfs(c.as_ptr(), &mut st) })
        .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    let pairs = [
        (libc::ST_RDONLY, libc::MS_RDONLY),
        (libc::ST_NOSUID, libc::MS_NOSUID),
        (libc::ST_NODEV, libc::MS_NODEV),
        (libc::ST_NOEXEC, libc::MS_NOEXEC),
        (libc::ST_NOATIME, libc::MS_NOATIME),
        (libc::ST_NODIRATIME, libc::MS_NODIRATIME),
        (libc::ST_RELATIME, libc::MS_RELATIME),
    ];
    Ok(pairs
        .iter()
        .filter(|(st_flag, _)| st.f_flag & st_flag != 0)
        .fold(0, |flags, (_, ms_flag)| flags | ms_flag))
}

fn check(ret: i32) -> std::io::Result<()> {
    if ret < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn mount(
    source: Option<&std::ffi::CStr>,
    target: &std::ffi::CStr,
    fstype: Option<&std::ffi::CStr>,
    flags: libc::c_ulong,
) -> std::io::Result<()> {
    let ptr = |s: Option<&std::ffi::CStr>| s.map_or(std::ptr::null(), |s| s.as_ptr());
    // SAFETY: every pointer is a NUL-terminated string that outlives the call, or null.
    check(unsafe {
        libc::mount(
            ptr(source),
            target.as_ptr(),
            ptr(fstype),
            flags,
            std::ptr::null(),
        )
    })
}

/// Sets the flags of the bind mount at `target` (a bind mount takes them only by a remount).
fn remount_bind(target: &std::ffi::CStr, flags: libc::c_ulong) -> std::io::Result<()> {
    mount(None, target, None, libc::MS_BIND | libc::MS_REMOUNT | flags)
}

/// Opens `path` and puts it on each of `fds`.
fn reopen(path: &std::ffi::CStr, flags: i32, fds: &[i32]) -> std::io::Result<()> {
    // SAFETY: open, dup2 and close take a string that outlives the call and numbers.
    unsafe {
        let fd = libc::open(path.as_ptr(), flags | libc::O_CLOEXEC);
        check(fd)?;
        for &target in fds {
            check(libc::dup2(fd, target))?;
        }
        libc::close(fd);
    }
    Ok(())
}
