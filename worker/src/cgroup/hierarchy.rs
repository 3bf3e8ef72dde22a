//! Which cgroup hierarchy the worker uses: v2 with the memory and cpu controllers, else v1 with
//! both mounted, found in `/proc/self/mountinfo`.

use std::path::{Path, PathBuf};

/// Where the memory and cpu controllers are mounted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Hierarchy {
    /// One unified hierarchy with both controllers.
    V2 { root: PathBuf },
    /// One hierarchy per controller (possibly the same mount, `cpu,cpuacct` and the like).
    V1 { memory: PathBuf, cpu: PathBuf },
}

impl Hierarchy {
    /// The hierarchy of this machine (see the module doc); `Err` says why there is none.
    pub(crate) fn detect() -> Result<Hierarchy, String> {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
            .map_err(|e| format!("/proc/self/mountinfo cannot be read: {e}"))?;
        let v2_controllers = |root: &Path| {
            std::fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default()
        };
        from_mountinfo(&mountinfo, v2_controllers)
    }
}

/// The hierarchy that `mountinfo` (the text of `/proc/self/mountinfo`) shows, v2 first;
/// `v2_controllers` reads a cgroup2 mount's `cgroup.controllers`.
pub(crate) fn from_mountinfo(
    mountinfo: &str,
    v2_controllers: impl Fn(&Path) -> String,
) -> Result<Hierarchy, String> {
    let mut v1_memory = None;
    let mut v1_cpu = None;
    let mut v2_without = Vec::new();
    for mount in CgroupMount::all(mountinfo) {
        match mount {
            CgroupMount::V2 { at: root, .. } => {
                let controllers = v2_controllers(&root);
                let has = |c: &str| controllers.split_whitespace().any(|x| x == c);
                if has("memory") && has("cpu") {
                    return Ok(Hierarchy::V2 { root });
                }
                v2_without.push(format!("{} ({})", root.display(), controllers.trim()));
            }
            CgroupMount::V1 { at, controllers } => {
                if controllers.iter().any(|c| c == "memory") {
                    v1_memory.get_or_insert(at.clone());
                }
                if controllers.iter().any(|c| c == "cpu") {
                    v1_cpu.get_or_insert(at);
                }
            }
        }
    }
    match (v1_memory, v1_cpu) {
        (Some(memory), Some(cpu)) => Ok(Hierarchy::V1 { memory, cpu }),
        (memory, cpu) => Err(format!(
            "no cgroup v2 hierarchy with the memory and cpu controllers{} and no cgroup v1 \
             hierarchies of both (memory: {}, cpu: {})",
            if v2_without.is_empty() {
                String::new()
            } else {
                format!(" (cgroup2 at {})", v2_without.join(", "))
            },
            memory.map_or("not mounted".into(), |p| p.display().to_string()),
            cpu.map_or("not mounted".into(), |p| p.display().to_string()),
        )),
    }
}

/// A cgroup mount of mountinfo.
pub(super) enum CgroupMount {
    /// The unified hierarchy, with its options (`rw,nsdelegate,...`).
    V2 { at: PathBuf, options: String },
    /// A v1 hierarchy, with its options, which name its controllers (`rw,cpu,cpuacct`,
    /// `rw,name=systemd`).
    V1 {
        at: PathBuf,
        controllers: Vec<String>,
    },
}

impl CgroupMount {
    /// Every cgroup mount of `mountinfo` (the text of `/proc/self/mountinfo`), in its order.
    pub(super) fn all(mountinfo: &str) -> impl Iterator<Item = CgroupMount> + '_ {
        mountinfo.lines().filter_map(CgroupMount::parse)
    }

    /// One line of mountinfo: `ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS [TAGS...] - FSTYPE SOURCE
    /// SUPEROPTS`; `None` unless it mounts a cgroup hierarchy.
    fn parse(line: &str) -> Option<CgroupMount> {
        let (before, after) = line.split_once(" - ")?;
        let at = PathBuf::from(unescape(before.split_whitespace().nth(4)?));
        let mut after = after.split_whitespace();
        let fstype = after.next()?;
        let superopts = after.nth(1).unwrap_or("");
        match fstype {
            "cgroup2" => Some(CgroupMount::V2 {
                at,
                options: superopts.to_string(),
            }),
            "cgroup" => Some(CgroupMount::V1 {
                at,
                controllers: superopts.split(',').map(str::to_string).collect(),
            }),
            _ => None,
        }
    }
}

/// Mountinfo's octal escapes (`\040` for a space) undone.
fn unescape(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    let mut rest = field;
    while let Some(i) = rest.find('\\') {
        out.push_str(&rest[..i]);
        let code = rest.get(i + 1..i + 4);
        match code.and_then(|c| u8::from_str_radix(c, 8).ok()) {
            Some(byte) => {
                out.push(char::from(byte));
                rest = &rest[i + 4..];
            }
            None => {
                out.push('\\');
                rest = &rest[i + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This machine's: cgroup v1 memory and cpu, and a v2 hierarchy with hugetlb only.
    const V1_MOUNTINFO: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    /// A systemd host's: one unified hierarchy.
    const V2_MOUNTINFO: &str = "\
25 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
30 24 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate
";
    #[test]
    fn v1_is_found_where_v2_lacks_the_controllers() {
        let h = from_mountinfo(V1_MOUNTINFO, |_| "hugetlb\n".into()).unwrap();
        assert_eq!(
            h,
            Hierarchy::V1 {
                memory: "/sys/fs/cgroup/memory".into(),
                cpu: "/sys/fs/cgroup/cpu".into()
            }
        );
    }

    #[test]
    fn v2_is_preferred_when_it_has_memory_and_cpu() {
        let h = from_mountinfo(V2_MOUNTINFO, |_| "cpuset cpu io memory pids\n".into()).unwrap();
        assert_eq!(
            h,
            Hierarchy::V2 {
                root: "/sys/fs/cgroup".into()
            }
        );
        let why = from_mountinfo(V2_MOUNTINFO, |_| "pids\n".into()).unwrap_err();
        assert!(why.contains("/sys/fs/cgroup (pids)"), "{why}");
    }

    #[test]
    fn v1_controllers_mounted_together_and_paths_with_spaces() {
        let text = "40 31 0:36 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n\
                    41 31 0:37 / /mnt/my\\040memory rw - cgroup cgroup rw,memory\n";
        let h = from_mountinfo(text, |_| String::new()).unwrap();
        assert_eq!(
            h,
            Hierarchy::V1 {
                memory: "/mnt/my memory".into(),
                cpu: "/sys/fs/cgroup/cpu,cpuacct".into()
            }
        );
        let why =
            from_mountinfo("1 0 0:1 / / rw - ext4 /dev/sda rw\n", |_| String::new()).unwrap_err();
        assert!(why.contains("memory: not mounted"), "{why}");
    }
}
