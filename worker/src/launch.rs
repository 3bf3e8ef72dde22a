//! Starting a tenant's process tree so that CRIU can always bring it back.
//!
//! A restore needs every pid of the dumped tree to be free, and in the machine's PID namespace
//! nothing keeps them free: while a tenant sleeps in the store any new process may take its pid,
//! and every CRIU restore moves the kernel's next pid back to the restored tree's own pids, so
//! the processes started right after it (the next spare CRIU, a neighbour's helper) take the
//! pids just above, which are often another sleeping tenant's. Its restore then fails with
//! `Can't fork for <pid>: File exists`.
//!
//! So every tenant starts as pid 1 of a PID namespace of its own: CRIU dumps the namespace with
//! it and restores it as a new one, where its pids are always free; only the host pid changes.
//! The tenant also leads a session of its own (CRIU refuses a tree whose session leader is outside
//! its namespace), and with `deterministic` it runs without ASLR and with fixed hash seeds.
//!
//! Being its namespace's init has two consequences. It ignores every signal it has no handler
//! for, except `SIGKILL` and `SIGSTOP`, so it is stopped with `SIGKILL`. And it sees the
//! machine's `/proc`, so CRIU's parasite mounts a `/proc` of the namespace in the tenant's working
//! directory for a moment during a dump: that directory must be writable.

use std::process::Command;

/// What a sandboxed tenant enters before its program runs: its view, then its confinement.
pub struct Confined {
    view: crate::sandbox::Entry,
    filter: crate::confine::Filter,
}

impl Confined {
    pub fn new(view: crate::sandbox::Entry) -> Confined {
        Confined {
            view,
            filter: crate::confine::Filter::new(),
        }
    }
}

/// Makes `cmd` start a tenant: in a session of its own, in the network namespace `netns` when
/// given (see `netns`), with `deterministic` without ASLR and with fixed hash seeds, and with
/// `confined` in its sandbox (see `sandbox`, `confine`). Spawn it with
/// [`spawn_in_own_pid_namespace`].
pub fn as_tenant(
    cmd: &mut Command,
    deterministic: bool,
    netns: Option<std::fs::File>,
    confined: Option<Confined>,
) {
    use std::os::unix::process::CommandExt;
    if deterministic {
        cmd.envs(DETERMINISTIC_ENV.iter().copied());
    }
    // SAFETY: setsid, setns, personality, close_range and the sandbox's calls (see `sandbox` and
    // `confine`) are async-signal-safe and touch no parent memory;
    // the namespace's descriptor lives as long as the command.
    unsafe {
        cmd.pre_exec(move || {
            if let Some(ns) = &netns {
                crate::netns::enter(ns)?;
            }
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if deterministic {
                disable_aslr()?;
            }
            if let Some(c) = &confined {
                c.view.enter()?;
            }
            // Nothing of the worker's but stdio: a descriptor it inherited without close-on-exec
            // (from whatever started it) would reach every tenant, and CRIU cannot dump a file
            // outside a sandbox's view. Marked close-on-exec rather than closed: the pipe that
            // reports a failed exec to the worker is one of them.
            if libc::syscall(
                libc::SYS_close_range,
                3,
                libc::c_uint::MAX,
                CLOSE_RANGE_CLOEXEC,
            ) < 0
            {
                return Err(std::io::Error::last_os_error());
            }
            if let Some(c) = &confined {
                crate::confine::confine(&c.filter)?;
            }
            Ok(())
        });
    }
}

/// `close_range(2)`'s flag that marks the descriptors close-on-exec instead of closing them.
const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;

/// Runs `spawn` on a thread of its own whose children start in a new PID namespace: the first
/// process `spawn` starts is that namespace's pid 1. `spawn` must start exactly one process (a
/// namespace has one init; a second child would be its pid 2, or fail once the init has ended).
pub fn spawn_in_own_pid_namespace<T, F>(spawn: F) -> std::io::Result<T>
where
    F: FnOnce() -> std::io::Result<T> + Send,
    T: Send,
{
    // unshare(CLONE_NEWPID) changes the namespace of the calling thread's future children only,
    // so a thread that ends right after keeps the rest of the process out of it.
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                // SAFETY: unshare takes a flag word and changes only this thread's namespaces.
                if unsafe { libc::unshare(libc::CLONE_NEWPID) } != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                spawn()
            })
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("the spawning thread panicked")))
    })
}

/// Environment set for tenants launched with a deterministic layout: interpreters that seed their
/// hash tables at random would otherwise make every tenant's heap differ.
pub const DETERMINISTIC_ENV: &[(&str, &str)] = &[("PYTHONHASHSEED", "0")];

/// Turns off address-space randomisation for the calling process and its future children
/// (`setarch -R`). Identical programs then lay out memory identically, so their checkpoints share
/// pages across tenants (measured: 5 Python tenants 4.1x dedup instead of ~1.03x). The trade-off:
/// ASLR protects against memory-corruption exploits; an operator chooses it per tenant.
pub fn disable_aslr() -> std::io::Result<()> {
    // SAFETY: personality(2) reads and sets a flag word of the calling process; no memory.
    unsafe {
        let current = libc::personality(0xffff_ffff);
        if current < 0 || libc::personality((current as libc::c_ulong) | 0x0040000) < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufRead;

    #[test]
    fn a_tenant_is_pid_1_of_its_own_namespace_leads_its_session_and_may_run_without_aslr() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo $$; exec sleep 10"])
            .stdout(std::process::Stdio::piped());
        as_tenant(&mut cmd, true, None, None);
        let mut child = spawn_in_own_pid_namespace(move || cmd.spawn()).expect("spawn");
        let mut line = String::new();
        let stdout = child.stdout.take().expect("stdout");
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read");
        let host_pid = child.id();
        let stat = std::fs::read_to_string(format!("/proc/{host_pid}/stat")).expect("stat");
        let personality =
            std::fs::read_to_string(format!("/proc/{host_pid}/personality")).expect("personality");
        let _ = child.kill();
        let _ = child.wait();

        assert_eq!(line.trim(), "1", "its own pid, seen from inside");
        // Fields after the command name: state, ppid, pgrp, session.
        let (_, rest) = stat.rsplit_once(')').expect("stat has a command name");
        let session: u32 = rest
            .split_whitespace()
            .nth(3)
            .expect("session")
            .parse()
            .expect("number");
        assert_eq!(session, host_pid, "it leads its own session");
        let flags = u32::from_str_radix(personality.trim(), 16).expect("hex");
        assert_ne!(
            flags & 0x0040000,
            0,
            "ADDR_NO_RANDOMIZE is set: {personality}"
        );
    }
}
