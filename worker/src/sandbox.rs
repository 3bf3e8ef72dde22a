//! A tenant's own view of the machine: a mount namespace whose root holds only what it needs.
//!
//! Without it a tenant runs as root in the worker's mount namespace and can read every other
//! tenant's state, image files and checkpoints, and the store. With it the tenant sees, from a
//! root directory of its own (`tenants/NAME/view`, a skeleton of mount points): the system
//! directories read-only (`/usr`, `/etc`, and `/bin`, `/lib`... as the host has them), the paths
//! its spec names read-only, its working directory writable at its own path, a `/tmp` and a
//! `/dev/shm` of its own, `/dev/null`, `zero`, `full`, `random` and `urandom`, its log at
//! [`LOG_INSIDE`], and a `/proc` of its own PID namespace (no other process of the machine).
//! Nothing of the worker's home but its working directory.
//!
//! CRIU dumps the namespace with the tenant. Each bind mount is declared external under a key
//! ([`View::dump_externals`]) and given back by key on restore ([`View::restore_externals`]), with
//! the skeleton as the restored tree's root (`--root`), as container runtimes do.
//!
//! [`View::enter`] runs in the child between fork and exec: it may not allocate, so everything it
//! needs is prepared as C strings beforehand ([`View::prepare`]).

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Where the tenant's log (its stdout and stderr) is inside its view.
pub const LOG_INSIDE: &str = "/.tenant.log";

/// Top-level host directories a program needs, shown read-only (or as the same symlink, on a
/// merged-`/usr` system).
const SYSTEM_DIRS: &[&str] = &[
    "usr", "etc", "bin", "sbin", "lib", "lib32", "lib64", "libx32", "opt",
];

/// Device nodes every tenant gets, bound from the host's `/dev`.
const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom"];

/// One bind mount of the view.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bind {
    /// What is mounted, on the host.
    pub host: PathBuf,
    /// Where, as the tenant sees it.
    pub inside: PathBuf,
    pub writable: bool,
    /// Its name in CRIU's `--external mnt[...]` declarations.
    pub key: String,
}

/// A tenant's view: its root and the bind mounts under it, in mount order.
#[derive(Clone, Debug)]
pub struct View {
    root: PathBuf,
    binds: Vec<Bind>,
    workdir: PathBuf,
}

/// Where the parts of a tenant's view come from on the host.
pub struct ViewSources<'a> {
    /// The skeleton that becomes its root.
    pub root: &'a Path,
    /// Its `/tmp` and `/dev/shm`.
    pub tmp: &'a Path,
    pub shm: &'a Path,
    /// Its log file.
    pub log: &'a Path,
    /// Its working directory (absolute), bound writable at the same path.
    pub workdir: &'a Path,
    /// Absolute paths shown read-only at the same path.
    pub read_only: &'a [PathBuf],
}

impl View {
    /// The view of a tenant, from what the host has.
    pub fn new(src: &ViewSources<'_>) -> View {
        let mut binds = Vec::new();
        for dir in SYSTEM_DIRS {
            let host = Path::new("/").join(dir);
            let is_dir = std::fs::symlink_metadata(&host).is_ok_and(|m| m.is_dir());
            if is_dir {
                binds.push(Bind {
                    inside: host.clone(),
                    host,
                    writable: false,
                    key: (*dir).to_string(),
                });
            }
        }
        for dev in DEVICES {
            let host = Path::new("/dev").join(dev);
            binds.push(Bind {
                inside: host.clone(),
                host,
                writable: true,
                key: format!("dev-{dev}"),
            });
        }
        binds.push(Bind {
            host: src.tmp.to_path_buf(),
            inside: "/tmp".into(),
            writable: true,
            key: "tmp".into(),
        });
        binds.push(Bind {
            host: src.shm.to_path_buf(),
            inside: "/dev/shm".into(),
            writable: true,
            key: "shm".into(),
        });
        for (i, path) in src.read_only.iter().enumerate() {
            binds.push(Bind {
                host: path.clone(),
                inside: path.clone(),
                writable: false,
                key: format!("ro{i}"),
            });
        }
        binds.push(Bind {
            host: src.workdir.to_path_buf(),
            inside: src.workdir.to_path_buf(),
            writable: true,
            key: "work".into(),
        });
        binds.push(Bind {
            host: src.log.to_path_buf(),
            inside: LOG_INSIDE.into(),
            writable: true,
            key: "log".into(),
        });
        View {
            root: src.root.to_path_buf(),
            binds,
            workdir: src.workdir.to_path_buf(),
        }
    }

    /// The directory that becomes the tenant's `/` (CRIU's `--root` on restore).
    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn binds(&self) -> &[Bind] {
        &self.binds
    }

    /// Builds the skeleton (a mount point for every bind, `/proc`, the host's top-level
    /// symlinks) and checks that every source exists. Run before each start and restore: the
    /// host's directories may have changed since.
    pub fn prepare(&self) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.root)?;
        for dir in SYSTEM_DIRS {
            let host = Path::new("/").join(dir);
            if let Ok(target) = std::fs::read_link(&host) {
                let link = self.root.join(dir);
                if std::fs::read_link(&link).ok().as_deref() != Some(target.as_path()) {
                    let _ = std::fs::remove_file(&link);
                    std::os::unix::fs::symlink(&target, &link)?;
                }
            }
        }
        std::fs::create_dir_all(self.root.join("proc"))?;
        for (i, bind) in self.binds.iter().enumerate() {
            let meta = std::fs::metadata(&bind.host).map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!("{} (shown to the tenant): {e}", bind.host.display()),
                )
            })?;
            let point = self.mount_point_on_host(i);
            if meta.is_dir() {
                std::fs::create_dir_all(&point)?;
            } else if !point.exists() {
                if let Some(parent) = point.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                std::fs::File::create(&point)?;
            }
        }
        Ok(())
    }

    /// Where the mount point of bind `i` is on the host before the tenant's namespace exists:
    /// under the source of the last earlier bind that holds it (its `/tmp`, say), else under
    /// the skeleton.
    fn mount_point_on_host(&self, i: usize) -> PathBuf {
        let inside = &self.binds[i].inside;
        for outer in self.binds[..i].iter().rev() {
            if let Ok(rest) = inside.strip_prefix(&outer.inside) {
                return outer.host.join(rest);
            }
        }
        self.root.join(inside.strip_prefix("/").unwrap_or(inside))
    }

    /// `--external` values for `criu dump`: each bind by its mount point inside.
    pub fn dump_externals(&self) -> Vec<String> {
        self.binds
            .iter()
            .map(|b| format!("mnt[{}]:{}", b.inside.display(), b.key))
            .collect()
    }

    /// `--external` values for `criu restore`: each key with its source on the host.
    pub fn restore_externals(&self) -> Vec<String> {
        self.binds
            .iter()
            .map(|b| format!("mnt[{}]:{}", b.key, b.host.display()))
            .collect()
    }

    /// What [`Entry::enter`] needs, as C strings (made here: the child may not allocate).
    pub fn entry(&self) -> std::io::Result<Entry> {
        let c = |p: &Path| {
            CString::new(p.as_os_str().as_bytes())
                .map_err(|_| std::io::Error::other(format!("{} has a NUL byte", p.display())))
        };
        let mut binds = Vec::with_capacity(self.binds.len());
        for b in &self.binds {
            let target = self
                .root
                .join(b.inside.strip_prefix("/").unwrap_or(&b.inside));
            binds.push((c(&b.host)?, c(&target)?, b.writable));
        }
        Ok(Entry {
            root: c(&self.root)?,
            proc_dir: c(&self.root.join("proc"))?,
            binds,
            workdir: c(&self.workdir)?,
            log: c(Path::new(LOG_INSIDE))?,
            dev_null: c(Path::new("/dev/null"))?,
        })
    }
}

/// A view ready to be entered by a child between fork and exec.
pub struct Entry {
    root: CString,
    proc_dir: CString,
    /// Source, target (under the root, before the pivot), writable.
    binds: Vec<(CString, CString, bool)>,
    workdir: CString,
    log: CString,
    dev_null: CString,
}

impl Entry {
    /// Moves the calling process (pid 1 of the tenant's PID namespace, not yet exec'd) into a
    /// mount namespace of its own holding the view, makes the view its root and its working
    /// directory its current one, and points its stdin at `/dev/null` and its stdout and stderr
    /// at its log, as seen inside (CRIU finds a file only on a mount of the namespace).
    ///
    /// Only async-signal-safe calls: it runs between fork and exec.
    pub fn enter(&self) -> std::io::Result<()> {
        use libc::{MS_BIND, MS_NODEV, MS_NOEXEC, MS_NOSUID, MS_PRIVATE, MS_RDONLY, MS_REC};
        check(unsafe { libc::unshare(libc::CLONE_NEWNS) })?;
        // Nothing mounted here propagates back to the host, nor the host's mounts in here.
        mount(None, c"/", None, MS_REC | MS_PRIVATE)?;
        mount(Some(&self.root), &self.root, None, MS_BIND)?;
        remount_bind(&self.root, MS_RDONLY | MS_NOSUID | MS_NODEV)?;
        for (source, target, writable) in &self.binds {
            mount(Some(source), target, None, MS_BIND)?;
            let flags = if *writable { 0 } else { MS_RDONLY } | MS_NOSUID;
            remount_bind(target, flags)?;
        }
        mount(
            Some(c"proc"),
            &self.proc_dir,
            Some(c"proc"),
            MS_NOSUID | MS_NODEV | MS_NOEXEC,
        )?;
        check(unsafe { libc::chdir(self.root.as_ptr()) })?;
        // pivot_root(".", "."): the old root ends up on top of the new one, detached below.
        check(unsafe { libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()) } as i32)?;
        check(unsafe { libc::umount2(c".".as_ptr(), libc::MNT_DETACH) })?;
        check(unsafe { libc::chdir(self.workdir.as_ptr()) })?;
        reopen(&self.dev_null, libc::O_RDONLY, &[0])?;
        reopen(&self.log, libc::O_WRONLY | libc::O_APPEND, &[1, 2])
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn view(dir: &Path, read_only: &[PathBuf]) -> View {
        View::new(&ViewSources {
            root: &dir.join("view"),
            tmp: &dir.join("tmp"),
            shm: &dir.join("shm"),
            log: &dir.join("tenant.log"),
            workdir: Path::new("/tmp/app/cwd"),
            read_only,
        })
    }

    #[test]
    fn every_bind_is_declared_external_by_its_mount_point_and_given_back_by_key() {
        let v = view(Path::new("/h/t"), &[PathBuf::from("/srv/app")]);
        let dump = v.dump_externals();
        let restore = v.restore_externals();
        assert!(dump.contains(&"mnt[/usr]:usr".to_string()), "{dump:?}");
        assert!(dump.contains(&"mnt[/tmp/app/cwd]:work".to_string()));
        assert!(dump.contains(&"mnt[/srv/app]:ro0".to_string()));
        assert!(dump.contains(&format!("mnt[{LOG_INSIDE}]:log")));
        assert!(
            restore.contains(&"mnt[tmp]:/h/t/tmp".to_string()),
            "{restore:?}"
        );
        assert!(restore.contains(&"mnt[work]:/tmp/app/cwd".to_string()));
        assert_eq!(dump.len(), restore.len());
        let keys: std::collections::HashSet<_> = v.binds().iter().map(|b| &b.key).collect();
        assert_eq!(keys.len(), v.binds().len(), "keys are unique");
    }

    #[test]
    fn a_mount_point_inside_an_earlier_bind_is_made_in_that_binds_source() {
        let v = view(Path::new("/h/t"), &[]);
        let work = v.binds().iter().position(|b| b.key == "work").unwrap();
        // The working directory is under /tmp, which is the tenant's own `tmp`.
        assert_eq!(
            v.mount_point_on_host(work),
            PathBuf::from("/h/t/tmp/app/cwd")
        );
        let shm = v.binds().iter().position(|b| b.key == "shm").unwrap();
        assert_eq!(
            v.mount_point_on_host(shm),
            PathBuf::from("/h/t/view/dev/shm")
        );
    }

    #[test]
    fn the_skeleton_has_a_mount_point_of_the_right_kind_for_every_bind() {
        let dir = tempfile::tempdir().unwrap();
        for d in ["tmp", "shm"] {
            std::fs::create_dir(dir.path().join(d)).unwrap();
        }
        std::fs::write(dir.path().join("tenant.log"), b"").unwrap();
        let work = dir.path().join("work");
        std::fs::create_dir(&work).unwrap();
        let v = View::new(&ViewSources {
            root: &dir.path().join("view"),
            tmp: &dir.path().join("tmp"),
            shm: &dir.path().join("shm"),
            log: &dir.path().join("tenant.log"),
            workdir: &work,
            read_only: &[],
        });
        v.prepare().unwrap();
        let root = dir.path().join("view");
        assert!(root.join("usr").is_dir());
        assert!(root.join("proc").is_dir());
        assert!(root.join("dev/null").is_file());
        assert!(root.join(".tenant.log").is_file());
        assert!(root.join("dev/shm").is_dir());
        let work_bind = v.binds().iter().position(|b| b.key == "work").unwrap();
        assert!(v.mount_point_on_host(work_bind).is_dir());
        // Again, over what is there.
        v.prepare().unwrap();
    }

    #[test]
    fn a_missing_read_only_path_is_named() {
        let dir = tempfile::tempdir().unwrap();
        for d in ["tmp", "shm"] {
            std::fs::create_dir(dir.path().join(d)).unwrap();
        }
        std::fs::write(dir.path().join("tenant.log"), b"").unwrap();
        let v = view(dir.path(), &[PathBuf::from("/no/such/dir")]);
        let e = v.prepare().unwrap_err().to_string();
        assert!(e.contains("/no/such/dir"), "{e}");
    }
}
