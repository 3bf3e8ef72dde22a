//! CRIU's cgroup yard, made once per worker: a directory with one link per cgroup hierarchy to
//! where the host mounts it, handed to every restore (`--cgroup-yard`).
//!
//! **Why.** To put a restored tree back into its cgroups, a `criu restore` without a yard makes
//! one of its own: a tmpfs with each hierarchy of the image mounted in it, unmounted at its end.
//! Measured here (cgroup v1, the Python counter's whole restore): mounting the memory hierarchy
//! took 10 ms of CRIU's 21. The hierarchies are already mounted on the host, so a yard of links
//! to them costs nothing per restore. On a cgroup v2 host the yard also keeps CRIU from mounting
//! cgroup2 itself, which resets the unified hierarchy's options (`nsdelegate`,
//! `memory_recursiveprot`, `favordynmods`: see `fast_moves`) for the whole machine to the none
//! CRIU passes.
//!
//! **Names.** CRIU looks for a hierarchy under the yard by its controllers as `/proc/PID/cgroup`
//! lists them, joined by commas, a `name=` prefix dropped (`memory`, `cpu,cpuacct`, `systemd`),
//! and `unified` for cgroup v2. A hierarchy it finds no link for, it mounts there itself (and
//! leaves mounted: the worker detaches stale mounts under its mounts directory at start), so
//! every hierarchy this process is in gets a link, not only the memory and cpu ones tenants'
//! dumps record.

use std::path::{Path, PathBuf};

use super::hierarchy::CgroupMount;

/// The links of a yard: for each hierarchy of `proc_self_cgroup` (the text of
/// `/proc/self/cgroup`) that `mountinfo` mounts, CRIU's name for it and where it is mounted.
pub(crate) fn links(proc_self_cgroup: &str, mountinfo: &str) -> Vec<(String, PathBuf)> {
    let mounts: Vec<CgroupMount> = CgroupMount::all(mountinfo).collect();
    let mut links: Vec<(String, PathBuf)> = Vec::new();
    for line in proc_self_cgroup.lines() {
        let Some(controllers) = line.split(':').nth(1) else {
            continue;
        };
        let at = mounts.iter().find_map(|m| match m {
            CgroupMount::V2 { at, .. } if controllers.is_empty() => Some(at),
            CgroupMount::V1 {
                at,
                controllers: mounted,
            } if !controllers.is_empty() => {
                let first = controllers.split(',').next()?;
                mounted.iter().any(|c| c == first).then_some(at)
            }
            _ => None,
        });
        let Some(at) = at else {
            continue;
        };
        let name = yard_name(controllers);
        if !links.iter().any(|(n, _)| *n == name) {
            links.push((name, at.clone()));
        }
    }
    links
}

/// CRIU's directory name in its yard for the hierarchy of `controllers` (a field of
/// `/proc/PID/cgroup`): see the module doc.
fn yard_name(controllers: &str) -> String {
    if controllers.is_empty() {
        return "unified".to_string();
    }
    controllers
        .split(',')
        .map(|c| c.strip_prefix("name=").unwrap_or(c))
        .collect::<Vec<_>>()
        .join(",")
}

/// Makes the yard `dir` afresh with `links`. Only links and empty directories are removed
/// from an old one: a directory CRIU mounted a hierarchy on holds cgroups, and is left to the
/// worker's detaching of stale mounts.
pub(crate) fn make(dir: &Path, links: &[(String, PathBuf)]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let _ = match entry.file_type()?.is_dir() {
            true => std::fs::remove_dir(entry.path()),
            false => std::fs::remove_file(entry.path()),
        };
    }
    for (name, at) in links {
        let link = dir.join(name);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(at, link)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This machine's (cgroup v1 hierarchies, and v2 with hugetlb only).
    const MOUNTINFO: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu2,cpuacct
37 31 0:34 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw,favordynmods
";

    #[test]
    fn every_hierarchy_of_the_process_gets_a_link_named_as_criu_names_it() {
        let cgroup = "12:name=systemd:/\n4:memory:/\n3:cpu:/\n2:cpu2,cpuacct:/x\n\
                      9:pids:/\n0::/\n";
        let links = links(cgroup, MOUNTINFO);
        let at = |p: &str| PathBuf::from(p);
        assert_eq!(
            links,
            vec![
                ("systemd".into(), at("/sys/fs/cgroup/systemd")),
                ("memory".into(), at("/sys/fs/cgroup/memory")),
                ("cpu".into(), at("/sys/fs/cgroup/cpu")),
                ("cpu2,cpuacct".into(), at("/sys/fs/cgroup/cpu,cpuacct")),
                ("unified".into(), at("/sys/fs/cgroup/unified")),
            ],
            "pids is not mounted: no link (CRIU mounts it if an image asks)"
        );
    }

    #[test]
    fn the_yard_is_made_afresh() {
        let dir = tempfile::tempdir().unwrap();
        let yard = dir.path().join("yard");
        make(&yard, &[("old".into(), dir.path().into())]).unwrap();
        std::fs::create_dir_all(yard.join("empty")).unwrap();
        std::fs::create_dir_all(yard.join("full/x")).unwrap();
        make(&yard, &[("memory".into(), dir.path().into())]).unwrap();
        assert!(!yard.join("old").exists());
        assert!(!yard.join("empty").exists());
        assert!(
            yard.join("full/x").exists(),
            "never a tree (a mounted hierarchy's cgroups)"
        );
        assert_eq!(std::fs::read_link(yard.join("memory")).unwrap(), dir.path());
    }
}
