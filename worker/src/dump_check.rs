//! A dump no restore could open is refused while the tenant is still frozen, so it goes on.
//!
//! A tenant without a sandbox sees the host's `/proc`. A descriptor it holds on a file there,
//! such as redis's `/proc/<pid>/stat` (opened and closed again every time it reads its RSS), names
//! a host pid that its restored tree will not have: CRIU dumps it without complaint, and every
//! restore of that checkpoint then fails (`Can't open file proc/<pid>/stat on restore`). A swap-out
//! that commits such a dump kills the only process that held the tenant's newest state.
//!
//! CRIU runs its post-dump action scripts after the images are written and before the frozen tree
//! is killed; when one fails, CRIU resumes the tree and the dump fails. The worker writes
//! [`SCRIPT`] into the work directory of each dump of a tenant without a sandbox and passes it
//! to CRIU (a sandboxed tenant has a `/proc` of its own PID namespace, whose pids its restore
//! keeps). The script lists every
//! descriptor of the frozen tree that points into `/proc/<pid>/` and fails when there is one;
//! the swap-out then dumps again a moment later ([`crate::swap_out`]), when the file is likely
//! closed, or fails and leaves the tenant running.

use std::path::{Path, PathBuf};

/// The post-dump script (POSIX sh). `CRTOOLS_INIT_PID` is the tree's root as the host numbers
/// it; its descendants come from each thread's `children`. One `find` lists the descriptors
/// whose target is under `/proc/<digits>`, each on a line of CRIU's log after [`REFUSED`].
pub const SCRIPT: &str = r#"#!/bin/sh
# Installed by pico's worker (worker/src/dump_check.rs): CRIU runs it with the dumped tree frozen.
[ "$CRTOOLS_SCRIPT_ACTION" = post-dump ] || exit 0
fd_dirs=
add_tree() {
    local threads kids kid
    fd_dirs="$fd_dirs /proc/$1/fd"
    for threads in /proc/"$1"/task/*/children; do
        kids=
        read -r kids < "$threads" || :
        for kid in $kids; do add_tree "$kid"; done
    done
}
add_tree "$CRTOOLS_INIT_PID"
held=$(find $fd_dirs -lname '/proc/[0-9]*' -printf 'pico: refused dump: %p -> %l\n' 2>/dev/null)
[ -n "$held" ] || exit 0
printf '%s\n' "$held"
exit 3
"#;

/// What the script writes before each descriptor it found, in CRIU's log.
pub const REFUSED: &str = "pico: refused dump: ";

/// File name of the installed script.
const FILE: &str = "post-dump-check.sh";

/// Writes [`SCRIPT`] into `dir`, a dump's fresh work directory, executable, and returns its
/// path. The file is closed before CRIU executes it (a process that forked meanwhile holds the
/// written descriptor only until its own exec: close-on-exec).
pub fn install(dir: &Path) -> std::io::Result<PathBuf> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join(FILE);
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o755)
        .open(&path)?
        .write_all(SCRIPT.as_bytes())?;
    Ok(path)
}

/// The descriptors a dump was refused for ("/proc/PID/fd/N -> /proc/PID/stat"), from the text
/// of its CRIU log; `None` when the script refused nothing.
pub fn refused(log: &str) -> Option<Vec<String>> {
    let held: Vec<String> = log
        .lines()
        .filter_map(|line| {
            line.split_once(REFUSED)
                .map(|(_, fd)| fd.trim().to_string())
        })
        .collect();
    (!held.is_empty()).then_some(held)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};

    /// Runs the installed script as CRIU would, for the tree rooted at `pid`.
    fn check(script: &Path, pid: u32) -> (i32, String) {
        let out = Command::new(script)
            .env("CRTOOLS_SCRIPT_ACTION", "post-dump")
            .env("CRTOOLS_INIT_PID", pid.to_string())
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }

    /// `sh -c CMD`, with a pipe on its stdout to wait for it to be ready ("ready" written).
    fn spawn(cmd: &str) -> std::process::Child {
        use std::io::Read;
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(cmd)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut ready = [0u8; 5];
        child
            .stdout
            .as_mut()
            .unwrap()
            .read_exact(&mut ready)
            .unwrap();
        child
    }

    #[test]
    fn a_tree_holding_a_file_of_a_pid_in_proc_is_refused_and_others_pass() {
        let dir = tempfile::tempdir().unwrap();
        let script = install(dir.path()).unwrap();

        // A grandchild holds its own /proc/<pid>/stat open (through /proc/self).
        let mut holding =
            spawn("sh -c 'exec 3</proc/self/stat; echo ready; exec sleep 30 >&-' & wait");
        let (code, out) = check(&script, holding.id());
        let grandchild =
            std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", holding.id())).unwrap();
        let _ = Command::new("kill")
            .args(grandchild.split_whitespace())
            .status();
        let _ = holding.kill();
        let _ = holding.wait();
        assert_eq!(code, 3, "{out}");
        let held = refused(&out).unwrap();
        assert_eq!(held.len(), 1, "{out}");
        assert!(held[0].ends_with("/stat"), "{held:?}");
        assert!(held[0].contains("/fd/3 -> /proc/"), "{held:?}");

        // Files elsewhere, and /proc files not of a pid, are fine.
        let mut clean =
            spawn("exec 3</proc/meminfo 4</etc/hostname; echo ready; exec sleep 30 >&-");
        let (code, out) = check(&script, clean.id());
        let _ = clean.kill();
        let _ = clean.wait();
        assert_eq!((code, refused(&out)), (0, None), "{out}");

        // Other actions of CRIU's pass at once.
        let out = Command::new(&script)
            .env("CRTOOLS_SCRIPT_ACTION", "pre-dump")
            .status()
            .unwrap();
        assert!(out.success());
    }

    #[test]
    fn refused_reads_the_scripts_lines_out_of_a_criu_log() {
        let log = "(00.01) Running post-dump scripts\n\
                   pico: refused dump: /proc/7/fd/5 -> /proc/7/stat\n\
                   (00.02) Error (criu/action-scripts.c:95): Script exited with 3\n";
        assert_eq!(
            refused(log),
            Some(vec!["/proc/7/fd/5 -> /proc/7/stat".to_string()])
        );
        assert_eq!(refused("(00.01) Dumping finished successfully\n"), None);
    }
}
