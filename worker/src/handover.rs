//! A worker that replaces itself without refusing a connection: on SIGUSR2 it re-executes its
//! binary (the same path, so an upgraded `pico` takes over) in the same process, handing the
//! tenants' listening sockets to the new image.
//!
//! exec keeps the process id, so the tenants stay this process's children, and keeps every
//! descriptor not marked close-on-exec: the listening sockets are unmarked and named in
//! [`LISTENERS_ENV`] (`port=fd,...`); everything else closes. While the new image starts,
//! connection attempts wait in the sockets' backlogs and are accepted once it serves. Connections
//! already forwarded are given [`DRAIN`] to end and are closed with the old image.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::time::{Duration, Instant};

use tracing::{info, warn};

use crate::host::{lock_std, Worker};

/// Where the new image finds the sockets: `port=fd` pairs, comma-separated.
pub const LISTENERS_ENV: &str = "PICO_INHERITED_LISTENERS";

/// How long forwarded connections are given to end before the re-exec closes them.
pub const DRAIN: Duration = Duration::from_secs(10);

/// Waits (at most [`DRAIN`]) until no connection is forwarded to any tenant.
pub(crate) async fn drain(worker: &Worker) {
    let started = Instant::now();
    loop {
        let open: usize = worker
            .tenants
            .all()
            .iter()
            .map(|s| s.activity.open_connections())
            .sum();
        if open == 0 {
            return;
        }
        if started.elapsed() >= DRAIN {
            warn!(open, "connections still open: closed by the re-exec");
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Re-executes this process's binary with the same arguments, the tenants' listening sockets
/// inherited. Returns only if the exec failed (the error says why).
pub(crate) fn reexec(worker: &Worker) -> std::io::Error {
    let mut pairs = Vec::new();
    let mut keep = |port: u16, fd: RawFd| {
        // SAFETY: fcntl on a descriptor the worker owns; only its close-on-exec flag changes.
        if unsafe { libc::fcntl(fd, libc::F_SETFD, 0) } == 0 {
            pairs.push(format!("{port}={fd}"));
        }
    };
    for slot in worker.tenants.all() {
        if let Some(listener) = lock_std(&slot.listening).as_ref() {
            keep(slot.port, listener.as_raw_fd());
        }
    }
    // Sockets handed over (by systemd, or to a previous image) for ports no tenant has yet.
    for (port, listener) in lock_std(&worker.spare_listeners).iter() {
        keep(*port, listener.as_raw_fd());
    }
    let exe = match std::env::current_exe() {
        // An upgraded binary replaced the file: the path, not the deleted inode.
        Ok(path) => match path.to_str().and_then(|p| p.strip_suffix(" (deleted)")) {
            Some(p) => p.into(),
            None => path,
        },
        Err(e) => return e,
    };
    info!(exe = %exe.display(), listeners = pairs.len(), "re-executing the worker");
    use std::os::unix::process::CommandExt;
    std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env(LISTENERS_ENV, pairs.join(","))
        // systemd's socket and watchdog, taken out of the environment at start.
        .envs(crate::sd_notify::exec_env())
        .exec()
}

/// The listening sockets a previous image of this worker handed over, by port (the variable
/// is cleared: a tenant started later does not see it).
pub(crate) fn inherited() -> HashMap<u16, std::net::TcpListener> {
    let Ok(text) = std::env::var(LISTENERS_ENV) else {
        return HashMap::new();
    };
    // SAFETY: called once at start, before any thread reads the environment.
    unsafe { std::env::remove_var(LISTENERS_ENV) };
    let mut out = HashMap::new();
    for (port, fd) in parse(&text) {
        if !is_listening_socket(fd) {
            warn!(
                port,
                fd, "inherited descriptor is not a listening socket: ignored"
            );
            continue;
        }
        // SAFETY: the previous image left `fd` open for us and nothing else owns it.
        let listener = unsafe { std::net::TcpListener::from_raw_fd(fd) };
        // Close-on-exec again, and non-blocking for tokio.
        // SAFETY: fcntl on the descriptor just taken.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
        if listener.set_nonblocking(true).is_ok() {
            out.insert(port, listener);
        }
    }
    info!(listeners = out.len(), "took over listening sockets");
    out
}

/// `port=fd` pairs of [`LISTENERS_ENV`]; malformed ones skipped.
fn parse(text: &str) -> Vec<(u16, RawFd)> {
    text.split(',')
        .filter_map(|pair| {
            let (port, fd) = pair.split_once('=')?;
            Some((port.trim().parse().ok()?, fd.trim().parse().ok()?))
        })
        .filter(|&(_, fd): &(u16, RawFd)| fd > 2)
        .collect()
}

/// Whether `fd` is an open socket in the listening state.
pub(crate) fn is_listening_socket(fd: RawFd) -> bool {
    let mut listening: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `listening`.
    let ok = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ACCEPTCONN,
            (&mut listening as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    ok == 0 && listening != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_parse_and_bad_ones_are_skipped() {
        assert_eq!(parse("8080=7,9090=12"), vec![(8080, 7), (9090, 12)]);
        assert_eq!(parse("x=1,80=,80=2,443=9"), vec![(443, 9)]);
        assert!(parse("").is_empty());
    }

    #[test]
    fn only_a_listening_socket_is_taken() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        assert!(is_listening_socket(listener.as_raw_fd()));
        let file = std::fs::File::open("/proc/self/stat").unwrap();
        assert!(!is_listening_socket(file.as_raw_fd()));
    }
}
