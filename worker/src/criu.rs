//! CRIU, the checkpoint/restore engine, driven as a subprocess.
//!
//! Every run gets a work directory (`-W`) for its socket, log and stats, so that the image
//! directory itself may be a read-only FUSE mount. A failed run's error carries the tail of its
//! log, which is where CRIU says what went wrong.

use crate::sandbox::View;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::process::{Child, Command};
use tracing::debug;

use crate::error::{Error, Result};

/// The oldest CRIU that works here: 4.1 fails on Linux >= 6.16 (SO_PASSCRED on inet sockets),
/// 3.17 on the vDSO layout.
pub const MIN_VERSION: &str = "4.2";

/// How to install CRIU >= [`MIN_VERSION`], in the errors of a missing or old one. No Debian
/// release packages it yet (bookworm has 3.17, trixie 4.1), so a package of pico cannot depend
/// on it: the worker checks at start and says this. The commands are those `deploy/setup.sh`
/// runs (a build from Debian unstable's source package, about a minute).
pub const INSTALL: &str = "Debian packages no CRIU that new (bookworm has 3.17, trixie 4.1). \
From picocenter-rs's source tree, run deploy/setup.sh as root; or build it the way it does:\n  \
apt-get install build-essential pkg-config curl libprotobuf-dev libprotobuf-c-dev \
protobuf-c-compiler protobuf-compiler python3-protobuf libnl-3-dev libnet1-dev libcap-dev \
libbsd-dev libaio-dev libgnutls28-dev uuid-dev libdrm-dev libnftables-dev\n  \
echo 'deb-src http://deb.debian.org/debian unstable main' \
>/etc/apt/sources.list.d/picocenter-criu-src.list && apt-get update\n  \
mkdir -p /usr/local/src/criu && cd /usr/local/src/criu && \
apt-get source --print-uris -qq criu | grep -o \"'[^']*orig.tar[^']*'\" | tr -d \"'\" | \
xargs -n1 curl -fsSLO && tar -xf criu_*.orig.tar.* --strip-components=1 && make -j\"$(nproc)\" criu && \
install -m 0755 criu/criu /usr/local/sbin/criu\n\
then `criu --version` says 4.2 or later (/usr/local/sbin is on the PATH of systemd's services; \
else set [worker] criu in pico.toml).";

#[derive(Clone, Debug)]
pub struct Criu {
    bin: PathBuf,
    version: String,
    log_level: u8,
    hw_breakpoints: bool,
    /// The worker this CRIU runs for, as its errors name it (the host name, or the worker's
    /// name in a cluster).
    host: String,
    /// The cgroup yard every restore is given (`cgroup::yard`); `None`: CRIU makes its own.
    cgroup_yard: Option<PathBuf>,
}

/// A cgroup a restored tree lands in instead of the one its dump recorded (CRIU's
/// `--cgroup-root CONTROLLER:PATH`, which renames the dumped tree's top cgroup in that hierarchy):
/// a tenant dumped by another worker (a move between hosts) would otherwise be put where that
/// worker kept it, a cgroup CRIU makes for it here with the other worker's limits and that no
/// one removes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CgroupRoot {
    /// The hierarchy, by a controller of it ("memory", "cpu"; "" names v2's).
    pub controller: String,
    /// From the hierarchy's root, `/`-led.
    pub path: String,
}

impl CgroupRoot {
    /// The argument of `--cgroup-root`.
    fn arg(&self) -> String {
        format!("{}:{}", self.controller, self.path)
    }
}

/// Where a restored tree is put: the network namespace it joins, the mount view that becomes its
/// root, the cgroups it lands in (none given: those its dump recorded).
#[derive(Clone, Copy, Debug, Default)]
pub struct Placement<'a> {
    pub netns: Option<&'a Path>,
    pub view: Option<&'a View>,
    pub cgroups: &'a [CgroupRoot],
}

/// CRIU's switch to its breakpoint-free path (`CRIU_FAULT=130`, `FI_NO_BREAKPOINTS`): it stops
/// the restored (and the parasite-cured) tasks at their final `rt_sigreturn` by tracing their
/// system calls, as it does on kernels without hardware breakpoints, instead of setting a debug
/// register. Setting one (`ptrace(PTRACE_POKEUSER)` of `u_debugreg`) took 9.3 ms here under
/// strace, and a restore of the counter app 19-20 ms with the switch against 22-34 ms without.
/// The variable selects nothing else: CRIU reads it into one strategy, compared with each
/// injection point, and this one only picks the stop method.
const NO_BREAKPOINTS_ENV: (&str, &str) = ("CRIU_FAULT", "130");

/// Parses `criu --version` output ("Version: 4.2.1").
pub fn parse_version(output: &str) -> Option<String> {
    output.lines().find_map(|l| {
        l.trim()
            .strip_prefix("Version:")
            .map(|v| v.trim().to_string())
    })
}

/// Compares dotted versions numerically: "4.10" > "4.2".
pub fn version_at_least(version: &str, min: &str) -> bool {
    let parse = |v: &str| -> Vec<u64> {
        v.split('.')
            .map(|p| {
                p.trim_matches(|c: char| !c.is_ascii_digit())
                    .parse()
                    .unwrap_or(0)
            })
            .collect()
    };
    let (a, b) = (parse(version), parse(min));
    for i in 0..a.len().max(b.len()) {
        let (x, y) = (
            a.get(i).copied().unwrap_or(0),
            b.get(i).copied().unwrap_or(0),
        );
        if x != y {
            return x > y;
        }
    }
    true
}

impl Criu {
    /// Finds CRIU and checks its version.
    pub async fn detect(bin: &Path, log_level: u8) -> Result<Criu> {
        let out = Command::new(bin)
            .arg("--version")
            .output()
            .await
            .map_err(|_| Error::CriuMissing {
                bin: bin.to_path_buf(),
                needed: MIN_VERSION,
            })?;
        let text = String::from_utf8_lossy(&out.stdout);
        let version = parse_version(&text).ok_or_else(|| Error::CriuMissing {
            bin: bin.to_path_buf(),
            needed: MIN_VERSION,
        })?;
        if !version_at_least(&version, MIN_VERSION) {
            return Err(Error::CriuTooOld {
                bin: bin.to_path_buf(),
                found: version,
                needed: MIN_VERSION,
            });
        }
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_default();
        Ok(Criu {
            bin: bin.to_path_buf(),
            version,
            log_level,
            hw_breakpoints: true,
            host,
            cgroup_yard: None,
        })
    }

    /// This CRIU's errors name the worker `name`.
    pub fn on_worker(mut self, name: &str) -> Criu {
        self.host = name.to_string();
        self
    }

    /// This CRIU stops tasks without hardware breakpoints (see [`NO_BREAKPOINTS_ENV`]).
    pub fn without_hw_breakpoints(mut self) -> Criu {
        self.hw_breakpoints = false;
        self
    }

    /// This CRIU's restores find the cgroup hierarchies linked in `yard` (see `cgroup::yard`)
    /// instead of mounting them.
    pub(crate) fn with_cgroup_yard(mut self, yard: PathBuf) -> Criu {
        self.cgroup_yard = Some(yard);
        self
    }

    /// The cgroup yard of this CRIU's restores, if it has one.
    pub(crate) fn cgroup_yard(&self) -> Option<&Path> {
        self.cgroup_yard.as_deref()
    }

    /// Sets the environment every run of this CRIU gets.
    pub(crate) fn set_env(&self, cmd: &mut Command) {
        if !self.hw_breakpoints {
            cmd.env(NO_BREAKPOINTS_ENV.0, NO_BREAKPOINTS_ENV.1);
        }
    }

    pub fn version(&self) -> &str {
        &self.version
    }

    pub(crate) fn bin(&self) -> &Path {
        &self.bin
    }

    pub(crate) fn log_level(&self) -> u8 {
        self.log_level
    }

    fn command(&self, action: &str, images: &Path, work: &Path, log: &str) -> Command {
        let mut c = Command::new(&self.bin);
        c.arg(action)
            .arg("-D")
            .arg(images)
            .arg("-W")
            .arg(work)
            .arg("-o")
            .arg(log)
            .arg(format!("-v{}", self.log_level))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(false);
        self.set_env(&mut c);
        c
    }

    /// Runs `cmd` to its end, inside the network namespace pinned at `netns` if given.
    async fn run(
        &self,
        op: &'static str,
        mut cmd: Command,
        netns: Option<&Path>,
        work: &Path,
        log: &str,
    ) -> Result<()> {
        debug!(op, ?cmd, "running criu");
        let child = match netns {
            Some(pin) => crate::netns::spawn_inside(&mut cmd, pin).map_err(|e| Error::io(pin, e)),
            None => cmd.spawn().map_err(|e| Error::io(&self.bin, e)),
        }?;
        let out = child
            .wait_with_output()
            .await
            .map_err(|e| Error::io(&self.bin, e))?;
        if out.status.success() {
            return Ok(());
        }
        Err(self.failure(op, out.status.to_string(), work, log, &out.stderr))
    }

    /// The error for a run that ended badly, with the tail of its log.
    pub(crate) fn failure(
        &self,
        op: &'static str,
        status: String,
        work: &Path,
        log: &str,
        stderr: &[u8],
    ) -> Error {
        let log = keep_failed_log(&work.join(log));
        let text = std::fs::read_to_string(&log).ok();
        if let Some(held) = text.as_deref().and_then(crate::dump_check::refused) {
            return Error::DumpRefused { held, log };
        }
        if let Some((file, why)) = text.as_deref().and_then(changed_file) {
            return Error::SystemFileChanged {
                op,
                worker: self.host.clone(),
                file,
                why,
                log,
            };
        }
        let mut tail = log_tail(&log, 12);
        let stderr = String::from_utf8_lossy(stderr);
        if !stderr.trim().is_empty() {
            tail.push_str("\nstderr: ");
            tail.push_str(stderr.trim());
        }
        Error::Criu {
            op,
            status,
            log,
            tail,
        }
    }

    /// Checkpoints the process tree rooted at `pid` into `images`; the tree is gone afterwards.
    /// With `netns`, CRIU runs inside the tenant's network namespace pinned there, which it then
    /// takes for its own and does not dump (see `netns`).
    pub async fn dump(
        &self,
        pid: u32,
        images: &Path,
        work: &Path,
        netns: Option<&Path>,
        view: Option<&View>,
    ) -> Result<()> {
        self.dump_cgroups(pid, images, work, netns, view, &[], false)
            .await
    }

    /// [`Criu::dump`] recording the tree's cgroups in the hierarchies `cgroup_controllers` only
    /// (each as `/proc/PID/cgroup` names it: "memory", "cpu,cpuacct", "" for v2); all of them
    /// when empty. A restore then sets up (mounts, moves the tree into) those alone. With
    /// `leave_running` the tree goes on after the dump (a checkpoint of a running tenant).
    #[allow(clippy::too_many_arguments)]
    pub async fn dump_cgroups(
        &self,
        pid: u32,
        images: &Path,
        work: &Path,
        netns: Option<&Path>,
        view: Option<&View>,
        cgroup_controllers: &[String],
        leave_running: bool,
    ) -> Result<()> {
        let mut cmd = self.command("dump", images, work, "dump.log");
        cmd.arg("-t").arg(pid.to_string()).arg("--tcp-established");
        if leave_running {
            cmd.arg("--leave-running");
        }
        for external in view.map(View::dump_externals).unwrap_or_default() {
            cmd.arg("--external").arg(external);
        }
        // A sandboxed tree has a /proc of its own PID namespace; only others see the host's.
        if view.is_none() {
            let script = crate::dump_check::install(work).map_err(|e| Error::io(work, e))?;
            cmd.arg("--action-script").arg(script);
        }
        for controllers in cgroup_controllers {
            cmd.arg("--cgroup-dump-controller").arg(controllers);
        }
        self.run("dump", cmd, netns, work, "dump.log").await
    }

    /// `criu cpuinfo dump` (this CPU's record into `dir`) or `criu cpuinfo check` (this CPU
    /// against the record in `dir`).
    pub async fn cpuinfo(&self, sub: &str, dir: &Path) -> Result<()> {
        let mut cmd = self.command("cpuinfo", dir, dir, "cpuinfo.log");
        cmd.arg(sub);
        self.run("cpuinfo", cmd, None, dir, "cpuinfo.log").await
    }

    /// Starts the lazy-pages daemon, which serves page faults of a lazy restore from the page
    /// files of `images`. It exits once every page has been copied in.
    pub fn spawn_lazy_pages(&self, images: &Path, work: &Path) -> Result<Child> {
        let mut cmd = self.command("lazy-pages", images, work, "lazy-pages.log");
        cmd.kill_on_drop(true);
        cmd.spawn().map_err(|e| Error::io(&self.bin, e))
    }

    /// Restores the tree from `images`, detached, put as `placement` says; with `lazy`, memory
    /// marked lazy is left to the lazy-pages daemon already listening in `work`. Returns the
    /// root pid. With a network namespace, CRIU runs inside it, and so does the tree. With
    /// `stopped`, every task of the tree is left stopped (`SIGSTOP` before CRIU lets go of it,
    /// so none runs an instruction of its own): the caller continues them
    /// (`process::continue_tree`) or kills them.
    pub async fn restore(
        &self,
        images: &Path,
        work: &Path,
        lazy: bool,
        placement: Placement<'_>,
        stopped: bool,
    ) -> Result<u32> {
        let Placement {
            netns,
            view,
            cgroups,
        } = placement;
        let pidfile = work.join("restore.pid");
        let mut cmd = self.command("restore", images, work, "restore.log");
        cmd.arg("-d")
            .arg("--tcp-established")
            .arg("--pidfile")
            .arg(&pidfile);
        if lazy {
            cmd.arg("--lazy-pages");
        }
        if stopped {
            cmd.arg("--leave-stopped");
        }
        if let Some(yard) = &self.cgroup_yard {
            cmd.arg("--cgroup-yard").arg(yard);
        }
        for root in cgroups {
            cmd.arg("--cgroup-root").arg(root.arg());
        }
        if let Some(view) = view {
            prepare_root(view)?;
            cmd.arg("--root").arg(view.root());
            for external in view.restore_externals() {
                cmd.arg("--external").arg(external);
            }
        }
        self.run("restore", cmd, netns, work, "restore.log").await?;
        let text = std::fs::read_to_string(&pidfile).map_err(|e| Error::io(&pidfile, e))?;
        text.trim().parse().map_err(|_| Error::BadPidFile {
            path: pidfile.clone(),
            text: text.clone(),
        })
    }

    /// The error for a lazy-pages daemon that ended badly.
    pub fn lazy_pages_failure(&self, work: &Path, status: String) -> Error {
        self.failure("lazy-pages", status, work, "lazy-pages.log", b"")
    }
}

/// The first file CRIU's `log` says is not the one the tenant had open at its dump: its path and
/// how it differs (CRIU checks each open or mapped file's size, build-ID and mode on restore).
/// A tenant restored on another worker meets this when that worker's system files (an
/// interpreter, a library) differ from the first one's.
pub(crate) fn changed_file(log: &str) -> Option<(String, String)> {
    let absolute = |path: &str| match path.starts_with('/') {
        true => path.to_string(),
        false => format!("/{path}"),
    };
    log.lines().find_map(|line| {
        if let Some((_, rest)) = line.split_once(" File ") {
            let (path, why) = rest.split_once(" has bad ")?;
            let why = why.split(" File r/w/x").next().unwrap_or(why).trim();
            return Some((absolute(path), format!("bad {why}")));
        }
        let (_, rest) = line.split_once("Can't open file ")?;
        let (path, why) = rest.split_once(" on restore: ")?;
        // A file of a process in /proc is no system file: a dump that held one (see
        // `dump_check`) cannot be restored anywhere, and the plain error says so better.
        if path.starts_with("proc/") {
            return None;
        }
        Some((absolute(path), format!("cannot be opened: {}", why.trim())))
    })
}

/// Makes sure the skeleton that becomes a restored tenant's root is there (the host's
/// directories may have changed since it was made).
pub(crate) fn prepare_root(view: &View) -> Result<()> {
    view.prepare().map_err(|e| Error::io(view.root(), e))
}

/// The last `n` lines of a log file (or why it could not be read).
/// Failed runs' logs kept per tenant (the work directory is emptied before each run).
const FAILED_LOGS_KEPT: usize = 5;

/// A copy of a failed run's `log` that outlives its work directory: `../failed/MS-NAME.log` beside
/// it, the newest [`FAILED_LOGS_KEPT`] kept; `log` itself if it cannot be copied.
fn keep_failed_log(log: &Path) -> std::path::PathBuf {
    let Some(dir) = log
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join("failed"))
    else {
        return log.to_path_buf();
    };
    let Some(name) = log.file_name().and_then(|n| n.to_str()) else {
        return log.to_path_buf();
    };
    let kept = dir.join(format!("{}-{name}", pagestore::clock::now_ms()));
    if std::fs::create_dir_all(&dir).is_err() || std::fs::copy(log, &kept).is_err() {
        return log.to_path_buf();
    }
    let mut old: Vec<_> = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .collect();
    old.sort_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok());
    let excess = old.len().saturating_sub(FAILED_LOGS_KEPT);
    for path in old.into_iter().take(excess) {
        let _ = std::fs::remove_file(path);
    }
    kept
}

pub fn log_tail(path: &Path, n: usize) -> String {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(n)..].join("\n")
        }
        Err(e) => format!("(no log: {e})"),
    }
}

#[cfg(test)]
mod tests {
    use super::changed_file;

    #[test]
    fn a_changed_system_file_is_found_in_the_restore_log() {
        let size = "(00.021300)      1: Error (criu/files-reg.c:2175): File usr/bin/python3.11 has bad size 6831737 (expect 6831736)\n(00.021310) Error (criu/cr-restore.c:1520): 1 exited, status=1";
        assert_eq!(
            changed_file(size),
            Some((
                "/usr/bin/python3.11".into(),
                "bad size 6831737 (expect 6831736)".into()
            ))
        );
        let build_id = "(00.02)  1: Error (criu/files-reg.c:2153): File lib/x86_64-linux-gnu/libc.so.6 has bad build-ID";
        assert_eq!(changed_file(build_id).unwrap().1, "bad build-ID");
        let gone = "(00.02)  1: Error (criu/files-reg.c:2353): Can't open file opt/app/bin on restore: No such file or directory";
        assert_eq!(
            changed_file(gone),
            Some((
                "/opt/app/bin".into(),
                "cannot be opened: No such file or directory".into()
            ))
        );
        assert_eq!(
            changed_file("(00.01) Error (criu/cr-restore.c:1): something else"),
            None
        );
        let host_proc = "(00.02)  1: Error (criu/files-reg.c:2353): Can't open file proc/4242/stat on restore: No such file or directory";
        assert_eq!(changed_file(host_proc), None, "not a system file");
    }

    use super::*;

    #[test]
    fn versions() {
        assert_eq!(
            parse_version("Version: 4.2.1\nGitID: x\n").as_deref(),
            Some("4.2.1")
        );
        assert_eq!(parse_version("nonsense"), None);
        assert!(version_at_least("4.2.1", "4.2"));
        assert!(version_at_least("4.10", "4.2"));
        assert!(!version_at_least("4.1", "4.2"));
        assert!(!version_at_least("3.17", "4.2"));
    }

    #[tokio::test]
    async fn missing_criu_says_how_to_install_it() {
        let err = Criu::detect(Path::new("/nonexistent/criu"), 2)
            .await
            .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("4.2") && msg.contains("deploy/setup.sh"),
            "{msg}"
        );
        // Without the source tree: the commands themselves.
        assert!(
            msg.contains("make -j")
                && msg.contains("install -m 0755 criu/criu /usr/local/sbin/criu"),
            "{msg}"
        );
    }

    #[test]
    fn without_hw_breakpoints_every_run_takes_criu_s_breakpoint_free_path() {
        let fault = |criu: &Criu| {
            let cmd = criu.command("restore", Path::new("/i"), Path::new("/w"), "x.log");
            cmd.as_std()
                .get_envs()
                .find(|(k, _)| *k == "CRIU_FAULT")
                .and_then(|(_, v)| v.map(|v| v.to_string_lossy().into_owned()))
        };
        let criu = Criu {
            bin: PathBuf::from("criu"),
            version: "4.2.1".into(),
            log_level: 2,
            hw_breakpoints: true,
            host: "w1".into(),
            cgroup_yard: None,
        };
        assert_eq!(fault(&criu), None, "CRIU's own default");
        assert_eq!(
            fault(&criu.without_hw_breakpoints()).as_deref(),
            Some("130")
        );
    }
}
