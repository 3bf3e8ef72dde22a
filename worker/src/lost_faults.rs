//! Wakes a lazily restored tenant's threads whose page fault CRIU's lazy-pages daemon dropped.
//!
//! **Why.** When a tenant thread faults on a lazy page while another of its threads has a
//! memory-map event in flight (jemalloc's `madvise(MADV_DONTNEED)`, an `munmap`, an `mremap`,
//! a `fork`), the kernel refuses `UFFDIO_COPY` with `EAGAIN` until the daemon has read that
//! event. CRIU 4.2's daemon (criu/uffd.c, `uffd_io_complete`) takes that as "0 pages copied",
//! puts the page back on its list of pages to copy in the background and never answers the
//! fault again: the thread sleeps until the background copy reaches its page, which the lazy
//! gate holds back for the learning window and which then goes through the whole image (seen
//! in `pico bench restore`: redis waking in 1.4 s instead of 0.14, its daemon log showing
//! `copy: mcopy_rc:-11` and then a `REMOVE` event).
//!
//! **How.** While the daemon serves a tenant, the worker wakes every thread waiting on any of
//! the daemon's userfaultfds (`UFFDIO_WAKE` over the whole address space, through a copy of the
//! descriptor taken with `pidfd_getfd`) every few milliseconds. A woken thread whose page is
//! still missing faults again, and the daemon, its event read meanwhile, answers that new fault
//! normally. A thread whose fault the daemon is still serving only sends it twice: the daemon
//! answers the copy with `EEXIST` (or finds the page already gone from its list), which it
//! treats as done. Waking a thread that is not waiting costs nothing. The descriptor is held
//! only for the call: a userfaultfd the daemon has closed must not stay registered (a later
//! fault on it would wait for an answer nobody sends).

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::Duration;

use tracing::debug;

/// How often a daemon's waiting threads are woken: the longest a dropped fault waits.
pub const WAKE_INTERVAL: Duration = Duration::from_millis(10);

/// `struct uffdio_range` (linux/userfaultfd.h).
#[repr(C)]
struct UffdioRange {
    start: u64,
    len: u64,
}

/// `UFFDIO_WAKE`: `_IOR(0xAA, 0x02, struct uffdio_range)`.
const UFFDIO_WAKE: libc::c_ulong = 0x8010_AA02;

/// The end of the user address space (`TASK_SIZE`): on x86-64 with 4-level page tables (higher
/// addresses are only mapped on request under 5-level paging), on arm64 with 48-bit addresses.
#[cfg(not(target_arch = "aarch64"))]
const USER_SPACE_END: u64 = 0x7fff_ffff_f000;
#[cfg(target_arch = "aarch64")]
const USER_SPACE_END: u64 = 0xffff_ffff_f000;

/// The range every wake covers, from the lowest address a process may map
/// (`vm.mmap_min_addr`, read once) to [`USER_SPACE_END`].
static USER_SPACE: std::sync::LazyLock<UffdioRange> =
    std::sync::LazyLock::new(UffdioRange::user_space);

/// How `/proc/PID/fd/N` names a userfaultfd.
const USERFAULTFD_LINK: &str = "anon_inode:[userfaultfd]";

/// Wakes the threads waiting on the userfaultfds of `daemon` every [`WAKE_INTERVAL`], until it
/// exits or cannot be reached (at once for `None`: a daemon already reaped). Cancel it by
/// dropping the future.
pub async fn wake_while_serving(daemon: Option<u32>, tenant: &str) {
    let Some(daemon) = daemon else {
        return;
    };
    let pidfd = match crate::process::pidfd_open(daemon) {
        Ok(fd) => fd,
        Err(e) => {
            debug!(tenant, daemon, error = %e, "cannot reach the lazy-pages daemon to wake dropped faults");
            return;
        }
    };
    let mut tick = tokio::time::interval(WAKE_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if wake_all(daemon, &pidfd, &USER_SPACE).is_err() {
            return;
        }
    }
}

/// Wakes every thread waiting on a userfaultfd that process `pid` (whose pidfd is `pidfd`)
/// holds; returns how many descriptors it woke. An error means the process is gone.
fn wake_all(pid: u32, pidfd: &OwnedFd, range: &UffdioRange) -> std::io::Result<usize> {
    let mut woken = 0;
    for fd in userfaultfds(pid)? {
        // The descriptor may have been closed (or reused) since the listing: skip it then.
        let Ok(uffd) = crate::process::pidfd_getfd(pidfd, fd) else {
            continue;
        };
        // SAFETY: UFFDIO_WAKE reads one `uffdio_range`, which `range` is; on another kind of
        // descriptor (a reused number) the call fails with ENOTTY and touches nothing.
        if unsafe { libc::ioctl(uffd.as_raw_fd(), UFFDIO_WAKE, range as *const UffdioRange) } == 0 {
            woken += 1;
        }
    }
    Ok(woken)
}

/// The descriptor numbers of the userfaultfds process `pid` holds.
fn userfaultfds(pid: u32) -> std::io::Result<Vec<RawFd>> {
    let mut fds = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd"))? {
        let entry = entry?;
        let Some(fd) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        if std::fs::read_link(entry.path()).is_ok_and(|l| l.as_os_str() == USERFAULTFD_LINK) {
            fds.push(fd);
        }
    }
    Ok(fds)
}

impl UffdioRange {
    /// From the lowest address a process may map to the end of user space.
    fn user_space() -> UffdioRange {
        let page = 4096;
        let min = std::fs::read_to_string("/proc/sys/vm/mmap_min_addr")
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .unwrap_or(65536)
            .max(page)
            .next_multiple_of(page);
        UffdioRange {
            start: min,
            len: USER_SPACE_END - min,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::FromRawFd;

    /// `struct uffdio_api`.
    #[repr(C)]
    struct UffdioApi {
        api: u64,
        features: u64,
        ioctls: u64,
    }
    /// `struct uffdio_register`.
    #[repr(C)]
    struct UffdioRegister {
        range: UffdioRange,
        mode: u64,
        ioctls: u64,
    }
    /// `struct uffdio_zeropage`.
    #[repr(C)]
    struct UffdioZeropage {
        range: UffdioRange,
        mode: u64,
        zeropage: i64,
    }
    const UFFDIO_API: libc::c_ulong = 0xC018_AA3F;
    const UFFDIO_REGISTER: libc::c_ulong = 0xC020_AA00;
    const UFFDIO_ZEROPAGE: libc::c_ulong = 0xC020_AA04;
    const UFFD_EVENT_PAGEFAULT: u8 = 0x12;

    /// Reads the next fault address from `uffd`, waiting up to 5 s.
    fn next_fault(uffd: &OwnedFd) -> Option<u64> {
        let mut pfd = libc::pollfd {
            fd: uffd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: poll reads and writes the one pollfd it is given.
        if unsafe { libc::poll(&mut pfd, 1, 5000) } != 1 {
            return None;
        }
        let mut msg = [0u8; 32];
        // SAFETY: read writes at most 32 bytes into `msg`.
        let n = unsafe { libc::read(uffd.as_raw_fd(), msg.as_mut_ptr().cast(), msg.len()) };
        (n == 32 && msg[0] == UFFD_EVENT_PAGEFAULT)
            .then(|| u64::from_ne_bytes(msg[16..24].try_into().expect("8 bytes")))
    }

    #[test]
    fn a_fault_read_and_left_unanswered_is_sent_again_once_woken() {
        // A userfaultfd of this process, one page registered for missing faults.
        // SAFETY: the syscall takes flags and returns a new descriptor (owned below) or -1.
        let fd =
            unsafe { libc::syscall(libc::SYS_userfaultfd, libc::O_CLOEXEC | libc::O_NONBLOCK) };
        assert!(fd >= 0, "userfaultfd: {}", std::io::Error::last_os_error());
        // SAFETY: just opened, owned by nothing else.
        let uffd = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
        let mut api = UffdioApi {
            api: 0xAA,
            features: 0,
            ioctls: 0,
        };
        // SAFETY: UFFDIO_API reads and writes one uffdio_api.
        assert_eq!(unsafe { libc::ioctl(fd as RawFd, UFFDIO_API, &mut api) }, 0);
        // SAFETY: an anonymous private mapping of one page, unmapped at the end.
        let page = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(page, libc::MAP_FAILED);
        let addr = page as u64;
        let mut reg = UffdioRegister {
            range: UffdioRange {
                start: addr,
                len: 4096,
            },
            mode: 1, // UFFDIO_REGISTER_MODE_MISSING
            ioctls: 0,
        };
        // SAFETY: UFFDIO_REGISTER reads and writes one uffdio_register.
        let registered = unsafe { libc::ioctl(fd as RawFd, UFFDIO_REGISTER, &mut reg) };
        assert_eq!(registered, 0, "{}", std::io::Error::last_os_error());

        // A thread touches the page and sleeps in the fault; its message is read and dropped,
        // as CRIU's daemon drops a fault whose copy the kernel refused.
        let toucher = std::thread::spawn(move || {
            // SAFETY: the page stays mapped until this thread has been joined.
            unsafe { std::ptr::read_volatile(addr as *const u8) }
        });
        assert_eq!(next_fault(&uffd), Some(addr), "the first fault");

        let pid = std::process::id();
        let pidfd = crate::process::pidfd_open(pid).expect("pidfd of this process");
        assert!(userfaultfds(pid).expect("own fds").contains(&(fd as RawFd)));
        let woken = wake_all(pid, &pidfd, &USER_SPACE).expect("wake");
        assert!(woken >= 1, "the userfaultfd was found and woken");
        assert_eq!(next_fault(&uffd), Some(addr), "the same fault, sent again");

        // Answer it: the thread reads a zero and ends.
        let mut zero = UffdioZeropage {
            range: UffdioRange {
                start: addr,
                len: 4096,
            },
            mode: 0,
            zeropage: 0,
        };
        // SAFETY: UFFDIO_ZEROPAGE reads and writes one uffdio_zeropage.
        assert_eq!(
            unsafe { libc::ioctl(fd as RawFd, UFFDIO_ZEROPAGE, &mut zero) },
            0
        );
        assert_eq!(toucher.join().expect("toucher"), 0);
        // SAFETY: the mapping made above, no longer used.
        unsafe { libc::munmap(page, 4096) };
    }
}
