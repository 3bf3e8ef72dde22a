//! A network namespace per tenant: the tenant listens on its port inside it, where nothing but
//! the worker can reach it, and two tenants may use the same port.
//!
//! The namespace has only a loopback interface (no outbound network: a tenant reaches nothing
//! outside itself). It is pinned by a bind mount of its `nsfs` file in the tenant's directory,
//! so that it outlives the tenant's processes: a swapped-out tenant keeps it (about 190 KiB of
//! kernel memory, measured with `SUnreclaim`) and is restored into it, and a restarted worker
//! finds it again.
//!
//! CRIU runs *inside* the namespace for a dump, so that it sees the tenant's namespace as its
//! own root one and does not dump it (dumping it cost 85 ms per dump and 124 ms per restore here,
//! against 28 and 20 without); a restore is also run inside it, or told to join it (`criu swrk`).
//! The worker reaches the tenant through sockets it creates inside the namespace
//! ([`socket_in`](HostNetns::socket_in)) and connects to the tenant's loopback.

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

/// Creates a network namespace with its loopback up and pins it at `pin` (a new empty file).
/// Blocking (a thread of its own enters the new namespace and ends).
pub fn create(pin: &Path) -> std::io::Result<()> {
    File::create(pin)?;
    let pin = pin.to_path_buf();
    let made = std::thread::scope(|scope| {
        scope
            .spawn(|| -> std::io::Result<()> {
                // SAFETY: unshare takes a flag word and changes only this thread's namespaces;
                // the thread ends right after.
                if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                loopback_up()?;
                nix::mount::mount(
                    Some("/proc/thread-self/ns/net"),
                    &pin,
                    None::<&str>,
                    nix::mount::MsFlags::MS_BIND,
                    None::<&str>,
                )
                .map_err(std::io::Error::from)
            })
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("the namespace thread panicked")))
    });
    if made.is_err() {
        let _ = std::fs::remove_file(&pin);
    }
    made
}

/// Whether `pin` holds a pinned namespace (a bind mount of an `nsfs` file).
pub fn is_pinned(pin: &Path) -> bool {
    nix::sys::statfs::statfs(pin).is_ok_and(|s| s.filesystem_type().0 == NSFS_MAGIC)
}

/// `NSFS_MAGIC` of `linux/magic.h`.
const NSFS_MAGIC: libc::c_long = 0x6e73_6673;

/// Unpins the namespace at `pin` and deletes the file; the kernel frees the namespace once no
/// process is in it. Absent is fine.
pub fn remove(pin: &Path) -> std::io::Result<()> {
    if is_pinned(pin) {
        nix::mount::umount2(pin, nix::mount::MntFlags::MNT_DETACH).map_err(std::io::Error::from)?;
    }
    match std::fs::remove_file(pin) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Opens the namespace pinned at `pin`, for [`enter`] or [`socket_in`](HostNetns::socket_in).
pub fn open(pin: &Path) -> std::io::Result<File> {
    if !is_pinned(pin) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("no network namespace is pinned at {}", pin.display()),
        ));
    }
    File::open(pin)
}

/// Moves the calling thread into namespace `ns` (from a `pre_exec` hook: async-signal-safe).
pub fn enter(ns: &impl AsRawFd) -> std::io::Result<()> {
    // SAFETY: setns takes a descriptor and a flag word.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Starts `cmd` inside the namespace pinned at `pin`: a short-lived thread of the worker enters
/// it, starts the command (which inherits the thread's namespace) and ends, so no thread that
/// outlives it is ever left in a tenant's namespace.
///
/// **Why not `setns` in a `pre_exec` hook** (the obvious way): a command with a hook is started
/// by `fork`, which copies the worker's page tables (hundreds of MiB mapped) and makes every
/// page it writes next fault once; without one the standard library uses `posix_spawn`, which
/// shares the worker's memory until the exec. Measured in a burst of wake-ups: the worker's
/// forks cost more CPU than CRIU itself.
///
/// Call from within the tokio runtime (the child is reaped through its signal driver).
pub fn spawn_inside(
    cmd: &mut tokio::process::Command,
    pin: &Path,
) -> std::io::Result<tokio::process::Child> {
    let ns = open(pin)?;
    let runtime = tokio::runtime::Handle::current();
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let _runtime = runtime.enter();
                enter(&ns)?;
                cmd.spawn()
            })
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("the spawning thread panicked")))
    })
}

/// The worker's own namespace, opened once at start: [`socket_in`](HostNetns::socket_in) returns to it.
pub struct HostNetns(File);

impl HostNetns {
    /// The namespace of the calling process (call from the main thread, before any
    /// [`socket_in`](HostNetns::socket_in)).
    pub fn current() -> std::io::Result<HostNetns> {
        File::open("/proc/self/ns/net").map(HostNetns)
    }

    /// A TCP stream socket (IPv4, non-blocking, close-on-exec) that belongs to namespace `ns`:
    /// the calling thread enters `ns`, creates it and comes back (8-10 µs measured here). If
    /// the way back fails the thread would stay in the tenant's namespace, which nothing may
    /// see: the process aborts instead (a restarted worker loses nothing).
    pub fn socket_in(&self, ns: &File) -> std::io::Result<OwnedFd> {
        enter(ns)?;
        // SAFETY: socket(2) with constant arguments.
        let fd = unsafe {
            libc::socket(
                libc::AF_INET,
                libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
            )
        };
        let made = if fd < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            // SAFETY: a descriptor we just created and own.
            Ok(unsafe { OwnedFd::from_raw_fd(fd) })
        };
        if let Err(e) = enter(&self.0) {
            tracing::error!(error = %e, "could not return to the worker's network namespace");
            std::process::abort();
        }
        made
    }
}

/// Sets the loopback interface of the calling thread's namespace up.
fn loopback_up() -> std::io::Result<()> {
    // SAFETY: a plain datagram socket for the interface ioctls, closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is ours.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: ifreq is plain data; zeroed is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS / SIOCSIFFLAGS read and write `req`, which outlives the calls.
    unsafe {
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) < 0 {
            return Err(std::io::Error::last_os_error());
        }
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pinned_namespace_is_separate_has_loopback_and_goes_when_removed() {
        testkit::require_root();
        let dir = tempfile::tempdir().unwrap();
        let pin = dir.path().join("netns");
        create(&pin).unwrap();
        assert!(is_pinned(&pin));
        let ns = open(&pin).unwrap();
        let host = HostNetns::current().unwrap();

        // A listener inside, reached only by a socket made inside.
        let fd = host.socket_in(&ns).unwrap();
        let inside = std::net::TcpListener::from(fd);
        // A fresh socket() is not bound: bind it to the inside loopback.
        let addr: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
        let inside = socket2::Socket::from(std::os::fd::OwnedFd::from(inside));
        inside.bind(&addr.into()).unwrap();
        inside.listen(8).unwrap();
        let port = inside.local_addr().unwrap().as_socket().unwrap().port();
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
            "the host's loopback does not reach inside"
        );
        let client = socket2::Socket::from(host.socket_in(&ns).unwrap());
        client.set_nonblocking(false).unwrap();
        let target: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        client.connect(&target.into()).unwrap();

        // The thread came back: a plain socket is on the host again.
        let host_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let host_port = host_listener.local_addr().unwrap().port();
        std::net::TcpStream::connect(("127.0.0.1", host_port)).unwrap();

        drop((ns, client, inside));
        remove(&pin).unwrap();
        assert!(!pin.exists());
        remove(&pin).unwrap();
    }
}
