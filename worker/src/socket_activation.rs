//! Listening sockets handed over by systemd (socket activation, `sd_listen_fds(3)`): a
//! `pico-worker.socket` unit holds the tenants' public ports while no worker runs, so a client
//! that connects during a restart or an upgrade waits in the socket's backlog instead of being
//! refused, and the connection that arrives first can start the worker.
//!
//! systemd passes the sockets as descriptors 3.. with `LISTEN_FDS` (their number) and
//! `LISTEN_PID` (the process they are for). The worker takes each listening TCP socket for the
//! tenant of its port (its names, `LISTEN_FDNAMES`, are not needed); a socket whose port no
//! tenant has yet waits for the `tenant add` of that port.

use std::collections::HashMap;
use std::ops::Range;
use std::os::fd::{FromRawFd, RawFd};

use tracing::{info, warn};

/// The first descriptor systemd passes (`SD_LISTEN_FDS_START`).
const FIRST_FD: RawFd = 3;

/// The sockets systemd passed to this process, by port (the variables are cleared: a tenant
/// started later does not see them).
pub(crate) fn listeners() -> HashMap<u16, std::net::TcpListener> {
    let passed = passed_fds(
        std::env::var("LISTEN_PID").ok().as_deref(),
        std::env::var("LISTEN_FDS").ok().as_deref(),
        std::process::id(),
    );
    // SAFETY: called once at start, before any thread reads the environment.
    unsafe {
        for var in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
            std::env::remove_var(var);
        }
    }
    let mut out = HashMap::new();
    for fd in passed {
        if !crate::handover::is_listening_socket(fd) {
            warn!(
                fd,
                "a descriptor from systemd is not a listening socket: ignored"
            );
            continue;
        }
        // SAFETY: systemd passed `fd` to this process and nothing else owns it.
        let listener = unsafe { std::net::TcpListener::from_raw_fd(fd) };
        // Close-on-exec (systemd leaves it off), and non-blocking for tokio.
        // SAFETY: fcntl on the descriptor just taken.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
        let port = match listener.local_addr() {
            Ok(addr) => addr.port(),
            Err(e) => {
                warn!(fd, error = %e, "a socket from systemd has no local address: ignored");
                continue;
            }
        };
        if listener.set_nonblocking(true).is_ok() {
            out.insert(port, listener);
        }
    }
    if !out.is_empty() {
        info!(
            sockets = out.len(),
            "took over listening sockets from systemd"
        );
    }
    out
}

/// The descriptors systemd passed by `LISTEN_PID` and `LISTEN_FDS`: none unless they are for
/// `pid` (a variable inherited from a parent that was activated is not for us).
fn passed_fds(listen_pid: Option<&str>, listen_fds: Option<&str>, pid: u32) -> Range<RawFd> {
    let for_us = listen_pid.and_then(|p| p.trim().parse::<u32>().ok()) == Some(pid);
    let count = listen_fds
        .and_then(|n| n.trim().parse::<RawFd>().ok())
        .filter(|&n| for_us && n > 0)
        .unwrap_or(0);
    FIRST_FD..FIRST_FD.saturating_add(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_are_taken_only_when_passed_to_this_process() {
        assert_eq!(passed_fds(Some("42"), Some("2"), 42), 3..5);
        assert!(
            passed_fds(Some("41"), Some("2"), 42).is_empty(),
            "another process's"
        );
        assert!(passed_fds(None, Some("2"), 42).is_empty());
        assert!(passed_fds(Some("42"), None, 42).is_empty());
        assert!(passed_fds(Some("42"), Some("-1"), 42).is_empty());
        assert!(passed_fds(Some("x"), Some("1"), 42).is_empty());
    }
}
