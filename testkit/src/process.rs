//! Processes seen from the host: a tenant's pid in its own PID namespace, and a stranger that
//! takes a given pid (what a busy machine does to a sleeping tenant's old pid).

use std::process::{Child, Command, Stdio};

/// The pids of `pid` in each PID namespace it belongs to, outermost first (`NSpid`).
pub fn ns_pids(pid: u64) -> Vec<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))
        .unwrap()
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect()
}

/// A `sleep` that holds exactly `pid` (which must be free), started by setting the kernel's last
/// pid just below it. Other processes starting at the same moment may win the pid: it retries.
/// Kill the returned child when done.
pub fn occupy_pid(pid: u64) -> Child {
    for _ in 0..50 {
        std::fs::write("/proc/sys/kernel/ns_last_pid", (pid - 1).to_string()).unwrap();
        let mut child = Command::new("sleep")
            .arg("600")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        if u64::from(child.id()) == pid {
            return child;
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    panic!("could not start a process with pid {pid} in 50 tries");
}
