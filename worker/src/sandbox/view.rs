//! What a tenant is shown: the bind mounts of its view, in mount order, and the paths its command
//! names.

use std::path::{Path, PathBuf};

use super::{Entry, DEVICES, LOG_INSIDE, SYSTEM_DIRS};

/// The host paths a sandboxed tenant is shown read-only: those its spec names (`explicit`) and
/// the directory of each absolute path its command names (a file's directory, a directory
/// itself) that exists, less those the system directories or its working directory already
/// show, and those directly under `/` (`/tmp`, `/root`: too much to show for one file). A path
/// inside one of the worker's `secrets` is refused, with the reason; so is a working directory
/// that holds one (except the tenant's own directory, `own`).
pub fn shown_read_only(
    cmd: &[String],
    explicit: &[PathBuf],
    workdir: &Path,
    own: &Path,
    secrets: &[PathBuf],
) -> Result<Vec<PathBuf>, String> {
    let inside_secret = |p: &Path| {
        secrets
            .iter()
            .find(|s| p.starts_with(s) && !p.starts_with(own))
            .cloned()
    };
    if let Some(secret) = secrets.iter().find(|s| s.starts_with(workdir)) {
        return Err(format!(
            "its working directory {} holds the worker's {}, which a sandboxed tenant may not see",
            workdir.display(),
            secret.display()
        ));
    }
    if let Some(secret) = inside_secret(workdir) {
        return Err(format!(
            "its working directory {} is inside the worker's {}",
            workdir.display(),
            secret.display()
        ));
    }
    let system = |p: &Path| {
        SYSTEM_DIRS
            .iter()
            .any(|d| p.starts_with(Path::new("/").join(d)))
    };
    let mut shown: Vec<PathBuf> = Vec::new();
    let named = cmd.iter().filter(|a| a.starts_with('/')).filter_map(|a| {
        let path = Path::new(a);
        let meta = std::fs::metadata(path).ok()?;
        Some(if meta.is_dir() {
            path.to_path_buf()
        } else {
            path.parent()?.to_path_buf()
        })
    });
    for path in explicit.iter().cloned().chain(named) {
        if let Some(secret) = inside_secret(&path) {
            return Err(format!(
                "{} is inside the worker's {}, which a sandboxed tenant may not see",
                path.display(),
                secret.display()
            ));
        }
        let too_wide = path.components().count() < 3;
        let explicit_path = explicit.contains(&path);
        if path.parent().is_none() {
            return Err("a sandbox cannot show the whole machine (/) read-only".into());
        }
        if (!explicit_path && (too_wide || system(&path)))
            || path.starts_with(workdir)
            || shown.iter().any(|s| path.starts_with(s))
        {
            continue;
        }
        shown.retain(|s| !s.starts_with(&path));
        shown.push(path);
    }
    Ok(shown)
}

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
    /// The worker's paths no tenant may see: masked where a shown directory holds them.
    pub secrets: &'a [PathBuf],
    /// An empty directory and an empty file of the tenant's, mounted over those.
    pub mask_dir: &'a Path,
    pub mask_file: &'a Path,
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
        let shown_from_host: Vec<PathBuf> = binds
            .iter()
            .filter(|b| !b.writable)
            .map(|b| b.inside.clone())
            .collect();
        let hidden = src.secrets.iter().filter(|secret| {
            shown_from_host
                .iter()
                .any(|shown| secret.starts_with(shown))
        });
        for (i, secret) in hidden.enumerate() {
            let host = if secret.is_dir() {
                src.mask_dir
            } else {
                src.mask_file
            };
            binds.push(Bind {
                host: host.to_path_buf(),
                inside: secret.clone(),
                writable: false,
                key: format!("mask{i}"),
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
        Entry::new(&self.root, &self.binds, &self.workdir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(dir: &Path, read_only: &[PathBuf]) -> View {
        view_hiding(dir, read_only, &[])
    }

    fn view_hiding(dir: &Path, read_only: &[PathBuf], secrets: &[PathBuf]) -> View {
        View::new(&ViewSources {
            root: &dir.join("view"),
            tmp: &dir.join("tmp"),
            shm: &dir.join("shm"),
            log: &dir.join("tenant.log"),
            workdir: Path::new("/tmp/app/cwd"),
            read_only,
            secrets,
            mask_dir: &dir.join("mask"),
            mask_file: &dir.join("mask-file"),
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
            secrets: &[],
            mask_dir: &dir.path().join("mask"),
            mask_file: &dir.path().join("mask-file"),
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

    #[test]
    fn a_secret_under_a_shown_directory_is_masked_and_one_elsewhere_is_not_shown_at_all() {
        let secrets = [
            PathBuf::from("/opt/pico/tenants"),
            PathBuf::from("/var/lib/pico/cold"),
        ];
        let v = view_hiding(Path::new("/h/t"), &[], &secrets);
        let masks: Vec<&Bind> = v
            .binds()
            .iter()
            .filter(|b| b.key.starts_with("mask"))
            .collect();
        if Path::new("/opt").is_dir() && !Path::new("/opt").is_symlink() {
            assert_eq!(masks.len(), 1, "{masks:?}");
            assert_eq!(masks[0].inside, PathBuf::from("/opt/pico/tenants"));
            assert!(!masks[0].writable);
            // Mounted after what it hides, before the working directory.
            let at = |key: &str| v.binds().iter().position(|b| b.key == key).unwrap();
            assert!(at("opt") < at("mask0") && at("mask0") < at("work"));
        } else {
            assert!(masks.is_empty(), "{masks:?}");
        }
    }

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_directories_a_command_names_are_shown_read_only_but_never_a_secret() {
        let dir = tempfile::tempdir().unwrap();
        let app = dir.path().join("srv/app");
        let data = dir.path().join("srv/data");
        for d in [&app, &data] {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::write(app.join("main.py"), b"").unwrap();
        let work = dir.path().join("work");
        let own = dir.path().join("home/tenants/t");
        let secrets = [
            dir.path().join("home/tenants"),
            dir.path().join("home/cold"),
        ];
        let main = app.join("main.py").display().to_string();
        let shown = shown_read_only(
            &strings(&[
                "python3",
                &main,
                "--data",
                data.to_str().unwrap(),
                "/no/such",
            ]),
            &[],
            &work,
            &own,
            &secrets,
        )
        .unwrap();
        assert_eq!(shown, vec![app.clone(), data.clone()]);

        // A path the system directories show, a path directly under /, and one inside the
        // working directory add nothing; a named directory holding an earlier one replaces it.
        let shown = shown_read_only(
            &strings(&["/usr/bin/python3", "/tmp", &main]),
            &[dir.path().join("srv")],
            &work,
            &own,
            &secrets,
        )
        .unwrap();
        assert_eq!(shown, vec![dir.path().join("srv")]);

        std::fs::create_dir_all(&secrets[1]).unwrap();
        let e = shown_read_only(
            &strings(&["cat", secrets[1].to_str().unwrap()]),
            &[],
            &work,
            &own,
            &secrets,
        )
        .unwrap_err();
        assert!(e.contains("cold"), "{e}");
        let e = shown_read_only(&[], &[], &dir.path().join("home"), &own, &secrets).unwrap_err();
        assert!(e.contains("holds the worker's"), "{e}");
        // Its own directory under the worker's tenants is its to work in.
        assert!(shown_read_only(&[], &[], &own.join("cwd"), &own, &secrets).is_ok());
    }
}
