//! One tenant's cgroup: made with its limits, joined before exec, read for membership and memory,
//! named for a restore, removed.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::files::{at, write_file};
use super::groups::{enable_controllers_down_to, REMOVE_WITHIN};
use super::{shares_of_weight, Limits, CPU_WEIGHT_DEFAULT};
use crate::criu::CgroupRoot;

/// One tenant's cgroup: one directory on v2, one per controller on v1.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TenantCgroup {
    /// The root of the v2 hierarchy; `None` on v1.
    pub(super) v2_root: Option<PathBuf>,
    /// `picocenter/<worker>/<tenant>`, as `/proc/PID/cgroup` shows it (from the root).
    pub(super) relative: PathBuf,
    /// v2: the one directory; v1: memory's, then cpu's (one when both are mounted together).
    pub(super) dirs: Vec<PathBuf>,
}

impl TenantCgroup {
    fn v2(&self) -> bool {
        self.v2_root.is_some()
    }

    /// The directory holding the memory controller's files.
    fn memory_dir(&self) -> &Path {
        &self.dirs[0]
    }

    /// The directory holding the cpu controller's files.
    fn cpu_dir(&self) -> &Path {
        self.dirs.last().unwrap_or(&self.dirs[0])
    }

    /// Makes the cgroup (and its parents) if it is missing, and sets `limits` in it.
    pub(crate) fn create(&self, limits: &Limits) -> std::io::Result<()> {
        if let (Some(root), Some(parent)) = (&self.v2_root, self.relative.parent()) {
            enable_controllers_down_to(root, parent)?;
        }
        for dir in &self.dirs {
            std::fs::create_dir_all(dir).map_err(|e| at(dir, e))?;
        }
        self.set(limits)
    }

    /// Writes `limits` (an absent one as the kernel's default) into the cgroup.
    pub(crate) fn set(&self, limits: &Limits) -> std::io::Result<()> {
        for (file, value) in self.settings(limits) {
            let path = match file {
                f if f.starts_with("cpu.") => self.cpu_dir().join(f),
                f => self.memory_dir().join(f),
            };
            // The swap files exist only where the kernel accounts swap.
            if file.contains("swap") && !path.exists() {
                continue;
            }
            write_file(&path, &value)?;
        }
        Ok(())
    }

    /// The files written for `limits`, in order, with their values.
    fn settings(&self, limits: &Limits) -> Vec<(&'static str, String)> {
        let weight = limits.cpu_weight.unwrap_or(CPU_WEIGHT_DEFAULT);
        if self.v2() {
            let memory = limits
                .memory_limit
                .map_or("max".to_string(), |b| b.to_string());
            let swap = if limits.memory_limit.is_some() {
                "0"
            } else {
                "max"
            };
            vec![
                ("memory.max", memory),
                ("memory.swap.max", swap.to_string()),
                ("cpu.weight", weight.to_string()),
            ]
        } else {
            let memory = limits
                .memory_limit
                .map_or("-1".to_string(), |b| b.to_string());
            // memsw may never be below the limit: lifted first, set after.
            vec![
                ("memory.memsw.limit_in_bytes", "-1".to_string()),
                ("memory.limit_in_bytes", memory.clone()),
                ("memory.memsw.limit_in_bytes", memory),
                ("cpu.shares", shares_of_weight(weight).to_string()),
            ]
        }
    }

    /// Opens the cgroup's `cgroup.procs` files for writing, for [`join_before_exec`].
    pub(crate) fn open_procs(&self) -> std::io::Result<Vec<File>> {
        self.dirs
            .iter()
            .map(|dir| {
                let path = dir.join("cgroup.procs");
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(|e| at(&path, e))
            })
            .collect()
    }

    /// Moves process `pid` (all its threads) into the cgroup.
    pub(crate) fn add(&self, pid: u32) -> std::io::Result<()> {
        for dir in &self.dirs {
            write_file(&dir.join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }

    /// The hierarchies in which process `pid` is in this cgroup, as `/proc/PID/cgroup` names
    /// them ("memory", "cpu,cpuacct"; "" for v2).
    pub(crate) fn hierarchies_holding(&self, pid: u32) -> Vec<String> {
        std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
            .map(|text| self.hierarchies_in(&text))
            .unwrap_or_default()
    }

    /// [`TenantCgroup::hierarchies_holding`] of `/proc/PID/cgroup` text.
    fn hierarchies_in(&self, proc_cgroup: &str) -> Vec<String> {
        let want = Path::new("/").join(&self.relative);
        proc_cgroup
            .lines()
            .filter_map(|line| {
                let mut fields = line.splitn(3, ':');
                let (_, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
                (Path::new(path) == want).then(|| controllers.to_string())
            })
            .collect()
    }

    /// This cgroup as a restore's cgroup roots: the dumped tree's top cgroup, in the memory and
    /// cpu hierarchies (v1) or in v2's, renamed to this one. Other hierarchies a dump may have
    /// recorded keep their paths.
    pub(crate) fn restore_roots(&self) -> Vec<CgroupRoot> {
        let path = Path::new("/")
            .join(&self.relative)
            .to_string_lossy()
            .into_owned();
        let controllers: &[&str] = if self.v2() { &[""] } else { &["memory", "cpu"] };
        controllers
            .iter()
            .map(|controller| CgroupRoot {
                controller: controller.to_string(),
                path: path.clone(),
            })
            .collect()
    }

    /// Whether process `pid` is in this cgroup (in every controller of it).
    pub(crate) fn holds(&self, pid: u32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
            .is_ok_and(|text| self.holds_in(&text))
    }

    /// Whether `/proc/PID/cgroup` text puts the process in this cgroup.
    fn holds_in(&self, proc_cgroup: &str) -> bool {
        let want = Path::new("/").join(&self.relative);
        let mut wanted: Vec<&str> = if self.v2() {
            vec![""]
        } else {
            vec!["memory", "cpu"]
        };
        for line in proc_cgroup.lines() {
            let mut fields = line.splitn(3, ':');
            let (_, controllers, path) = (fields.next(), fields.next(), fields.next());
            let (Some(controllers), Some(path)) = (controllers, path) else {
                continue;
            };
            if Path::new(path) != want {
                continue;
            }
            wanted.retain(|w| {
                if w.is_empty() {
                    !controllers.is_empty()
                } else {
                    !controllers.split(',').any(|c| c == *w)
                }
            });
        }
        wanted.is_empty()
    }

    /// The tenant's memory in use: anonymous plus shared memory (see the module doc), bytes.
    pub(crate) fn memory_bytes(&self) -> Option<u64> {
        let stat = std::fs::read_to_string(self.memory_dir().join("memory.stat")).ok()?;
        memory_of_stat(&stat, self.v2())
    }

    /// Removes the cgroup, waiting a little for the processes of a tree just killed or dumped
    /// to leave it; a cgroup that does not exist is no error.
    pub(crate) async fn remove(&self) -> std::io::Result<()> {
        let started = Instant::now();
        for dir in &self.dirs {
            loop {
                match std::fs::remove_dir(dir) {
                    Ok(()) => break,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                    Err(_) if started.elapsed() < REMOVE_WITHIN => {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    Err(e) => return Err(at(dir, e)),
                }
            }
        }
        Ok(())
    }
}

/// Anonymous plus shared memory of `memory.stat` text (v2's names, or v1's hierarchical ones).
fn memory_of_stat(stat: &str, v2: bool) -> Option<u64> {
    let (anon, shmem) = if v2 {
        ("anon", "shmem")
    } else {
        ("total_rss", "total_shmem")
    };
    let field = |name: &str| {
        stat.lines().find_map(|l| {
            let (key, value) = l.split_once(' ')?;
            (key == name).then(|| value.trim().parse::<u64>().ok())?
        })
    };
    Some(field(anon)? + field(shmem).unwrap_or(0))
}

/// Makes `cmd`'s process join the cgroups whose `cgroup.procs` are `procs` between its fork and
/// its exec, so that all it allocates is charged there from its first page (a pid written from
/// the parent after the spawn would race with the child's first allocations).
pub(crate) fn join_before_exec(cmd: &mut std::process::Command, procs: Vec<File>) {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    // SAFETY: write(2) is async-signal-safe; the descriptors live as long as the command.
    unsafe {
        cmd.pre_exec(move || {
            for file in &procs {
                // "0": the writing process itself (both v1 and v2).
                if libc::write(file.as_raw_fd(), b"0".as_ptr().cast(), 1) != 1 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroup::{Cgroups, Hierarchy};

    #[test]
    fn limits_in_v1_and_v2_files() {
        let limits = Limits {
            memory_limit: Some(256 << 20),
            cpu_weight: Some(50),
        };
        let v1 = TenantCgroup {
            v2_root: None,
            relative: "picocenter/x/t".into(),
            dirs: vec!["/m".into(), "/c".into()],
        };
        let bytes = (256u64 << 20).to_string();
        assert_eq!(
            v1.settings(&limits),
            vec![
                ("memory.memsw.limit_in_bytes", "-1".to_string()),
                ("memory.limit_in_bytes", bytes.clone()),
                ("memory.memsw.limit_in_bytes", bytes.clone()),
                ("cpu.shares", "512".to_string()),
            ]
        );
        let v2 = TenantCgroup {
            v2_root: Some("/".into()),
            relative: "picocenter/x/t".into(),
            dirs: vec!["/t".into()],
        };
        assert_eq!(
            v2.settings(&Limits::default()),
            vec![
                ("memory.max", "max".to_string()),
                ("memory.swap.max", "max".to_string()),
                ("cpu.weight", "100".to_string()),
            ]
        );
        assert_eq!(v2.settings(&limits)[0], ("memory.max", bytes));
        assert_eq!(
            v2.settings(&limits)[1],
            ("memory.swap.max", "0".to_string())
        );
        assert_eq!(shares_of_weight(100), 1024);
        assert_eq!(shares_of_weight(1), 10);
        assert_eq!(shares_of_weight(10_000), 102_400);
    }

    #[test]
    fn membership_is_read_from_proc_pid_cgroup() {
        let v1 = TenantCgroup {
            v2_root: None,
            relative: "picocenter/x/t".into(),
            dirs: vec!["/m".into(), "/c".into()],
        };
        let inside = "4:memory:/picocenter/x/t\n2:cpuacct:/\n1:cpu:/picocenter/x/t\n0::/\n";
        assert!(v1.holds_in(inside));
        assert!(!v1.holds_in("4:memory:/picocenter/x/t\n1:cpu:/\n0::/\n"));
        let together = "1:cpu,cpuacct:/picocenter/x/t\n4:memory:/picocenter/x/t\n";
        assert!(v1.holds_in(together));
        let v2 = TenantCgroup {
            v2_root: Some("/".into()),
            relative: "picocenter/x/t".into(),
            dirs: vec!["/t".into()],
        };
        assert!(v2.holds_in("0::/picocenter/x/t\n"));
        assert_eq!(v1.hierarchies_in(together), vec!["cpu,cpuacct", "memory"]);
        assert_eq!(v1.hierarchies_in(inside), vec!["memory", "cpu"]);
        assert_eq!(v2.hierarchies_in("0::/picocenter/x/t\n"), vec![""]);
        assert!(v2.hierarchies_in("0::/\n").is_empty());
        assert!(!v2.holds_in("0::/picocenter/x/other\n"));
    }

    #[test]
    fn memory_in_use_is_anonymous_plus_shared() {
        let v1 = "cache 4096\nrss 100\nshmem 7\ntotal_cache 8192\ntotal_rss 1000\ntotal_shmem 24\n";
        assert_eq!(memory_of_stat(v1, false), Some(1024));
        let v2 = "anon 2000\nfile 5000\nkernel 30\nshmem 48\nfile_mapped 10\n";
        assert_eq!(memory_of_stat(v2, true), Some(2048));
        assert_eq!(memory_of_stat("file 1\n", true), None);
    }

    /// On this machine's own hierarchy (the tests run as root): a child joins the cgroup before
    /// its command runs, the limits are in the controllers' files, its memory is counted there,
    /// and the cgroup goes once the child has.
    #[tokio::test]
    async fn a_process_joins_its_cgroup_before_exec_with_its_limits() {
        let home = tempfile::tempdir().unwrap();
        let hierarchy = Hierarchy::detect().expect("this machine has cgroups");
        let cgroups = Cgroups::new(Ok(hierarchy), home.path());
        let cgroup = cgroups.tenant("t").unwrap();
        let limits = Limits {
            memory_limit: Some(64 << 20),
            cpu_weight: Some(200),
        };
        cgroup.create(&limits).unwrap();
        let read = |file: &str| {
            let dir = if file.starts_with("cpu.") {
                cgroup.cpu_dir()
            } else {
                cgroup.memory_dir()
            };
            std::fs::read_to_string(dir.join(file))
                .unwrap()
                .trim()
                .to_string()
        };
        if cgroup.v2() {
            assert_eq!(read("memory.max"), (64u64 << 20).to_string());
            assert_eq!(read("cpu.weight"), "200");
        } else {
            assert_eq!(read("memory.limit_in_bytes"), (64u64 << 20).to_string());
            assert_eq!(read("cpu.shares"), "2048");
        }
        let mut cmd = std::process::Command::new("sh");
        cmd.args([
            "-c",
            "cat /proc/self/cgroup; head -c 8000000 /dev/zero | tail -c 1 >/dev/null; sleep 5",
        ])
        .stdout(std::process::Stdio::piped());
        join_before_exec(&mut cmd, cgroup.open_procs().unwrap());
        let mut child = cmd.spawn().unwrap();
        let mut first = String::new();
        let stdout = child.stdout.take().unwrap();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut first).unwrap();
        assert!(cgroup.holds(child.id()), "the shell is in its cgroup");
        assert!(cgroup.memory_bytes().is_some_and(|b| b > 0));
        let _ = child.kill();
        let _ = child.wait();
        // What sh's children (cat, head, tail) left is gone with them.
        cgroup.remove().await.unwrap();
        assert!(cgroup.dirs.iter().all(|d| !d.exists()));
        cgroups.remove_worker_group();
    }
}
