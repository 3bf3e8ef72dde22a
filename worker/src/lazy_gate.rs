//! A relay on CRIU's lazy-pages socket that holds back the "restore finished" message, so that
//! the lazy-pages daemon serves page faults only until the worker lets it go on.
//!
//! **Why.** CRIU's lazy-pages daemon starts copying every remaining lazy page in the background
//! the moment `criu restore` tells it the restore is done (criu/uffd.c: `restore_finished` turns
//! the epoll timeout to 0 and `xfer_pages` runs between events). That copy races the tenant's
//! first request: each page it brings in before the tenant touches it never faults, so the
//! ActiveSet cannot see it (measured: a Python tenant's `/inc` touches ~310 pages; a restore
//! where the copy got ahead showed ~120 of them as faults, and the next restore, eagerly
//! installing only those, still faulted ~190), and each fault waits behind a background read of
//! up to 4 MiB in the daemon's single thread. Holding the message for the learning window
//! makes every first touch a fault (the working set is learned whole) and keeps the daemon free
//! for faults while the tenant answers its first request; then the background copy runs. A
//! restore that learns nothing holds it for the second reason alone (released at once, the
//! large heap's first answer from the cold tier took 2045 against 1824 ms at p50 in one A/B,
//! within what runs spread by here: bench/results/restore-gate), and so only until the fill has
//! the whole image in memory, when the copy's reads no longer wait on the cold tier
//! (`swap_in::background`; bench/results/restore-gate-filled).
//!
//! **Protocol** (criu/uffd.c, `send_uffd` and `lazy_pages_finish_restore`): on one stream
//! connection, `criu restore` sends per task an `i32` pid, then (for a live task) one byte with
//! the task's userfaultfd attached as `SCM_RIGHTS`; at the end it sends the `u32`
//! `0x52535446` ("ReSTore Finished") and closes. The relay keeps those message boundaries
//! (a file descriptor must stay with its own byte, or the daemon's plain `recv` of the next pid
//! would drop it), forwards tasks as they come, and forwards the finish message when released.

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Instant;

use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};
use tracing::{debug, warn};

use crate::error::{Error, Result};

/// The socket name CRIU uses, in its work directory (`-W`).
pub const SOCKET_NAME: &str = "lazy-pages.socket";

/// CRIU's "restore finished" message (criu/uffd.c, `LAZY_PAGES_RESTORE_FINISHED`). Never a pid:
/// it is above any `pid_max`.
const RESTORE_FINISHED: u32 = 0x5253_5446;

/// The relay between one `criu restore` (which connects to `restore_work/lazy-pages.socket`) and
/// the lazy-pages daemon (listening in its own work directory). Dropping it releases the finish
/// message too: a running tenant must always get the rest of its pages.
pub struct LazyGate {
    release: Option<mpsc::Sender<()>>,
    abandon: Arc<AtomicBool>,
    connected: Arc<AtomicBool>,
    listen_path: PathBuf,
}

impl LazyGate {
    /// Listens for `criu restore` in `restore_work` and relays to the daemon whose socket is
    /// in `daemon_work`. The daemon may still be starting: the relay connects to it as soon as
    /// it listens, so `criu restore` and `criu lazy-pages` start side by side (each spends
    /// tens of milliseconds probing the kernel before it does anything).
    pub fn open(restore_work: &Path, daemon_work: &Path) -> Result<LazyGate> {
        let listen_path = restore_work.join(SOCKET_NAME);
        let _ = std::fs::remove_file(&listen_path);
        let listener = {
            let (_dir, short) =
                SocketPath::in_dir(restore_work).map_err(|e| Error::io(restore_work, e))?;
            UnixListener::bind(short).map_err(|e| Error::io(&listen_path, e))?
        };
        let daemon_work = daemon_work.to_path_buf();
        let (release, released) = mpsc::channel();
        let abandon = Arc::new(AtomicBool::new(false));
        let connected = Arc::new(AtomicBool::new(false));
        {
            let abandon = abandon.clone();
            let connected = connected.clone();
            std::thread::Builder::new()
                .name("lazy-gate".into())
                .spawn(move || {
                    if let Err(e) = relay(listener, &daemon_work, &abandon, &connected, released) {
                        warn!(error = %e, "lazy-pages relay ended badly");
                    }
                })
                .map_err(|e| Error::io(&listen_path, e))?;
        }
        Ok(LazyGate {
            release: Some(release),
            abandon,
            connected,
            listen_path,
        })
    }

    /// Whether the daemon has been reached (from then on it holds the tenant's userfaultfds).
    pub fn daemon_connected(&self) -> bool {
        self.connected.load(Ordering::SeqCst)
    }

    /// Lets the finish message through (at once if it has arrived, else as soon as it does):
    /// the daemon then copies in the rest of the image and exits.
    pub fn release(&mut self) {
        if let Some(tx) = self.release.take() {
            let _ = tx.send(());
        }
    }
}

impl Drop for LazyGate {
    fn drop(&mut self) {
        self.release();
        self.abandon.store(true, Ordering::SeqCst);
        // Wakes a relay still waiting for `criu restore` to connect (the restore failed early).
        // The relay thread is not joined: it ends by itself once the restore side closes.
        if let Some(dir) = self.listen_path.parent() {
            if let Ok((_dir, short)) = SocketPath::in_dir(dir) {
                let _ = UnixStream::connect(short);
            }
        }
    }
}

fn relay(
    listener: UnixListener,
    daemon_work: &Path,
    abandon: &AtomicBool,
    connected: &AtomicBool,
    released: mpsc::Receiver<()>,
) -> std::result::Result<(), String> {
    let (restore, _) = listener.accept().map_err(|e| format!("accept: {e}"))?;
    if abandon.load(Ordering::SeqCst) {
        return Ok(());
    }
    drop(listener);
    let (_dir, daemon_path) =
        SocketPath::in_dir(daemon_work).map_err(|e| format!("{}: {e}", daemon_work.display()))?;
    let daemon = connect_when_listening(&daemon_path, abandon)?;
    connected.store(true, Ordering::SeqCst);
    let mut tasks = 0u32;
    loop {
        let Some(word) = read_word(restore.as_raw_fd())? else {
            // The restore ended without finishing: closing makes the daemon give up too.
            return Err(format!(
                "criu restore closed after {tasks} tasks, unfinished"
            ));
        };
        if word == RESTORE_FINISHED {
            let held = Instant::now();
            // A closed channel (the gate dropped) releases too.
            let _ = released.recv();
            send_all(daemon.as_raw_fd(), &word.to_ne_bytes(), None)?;
            debug!(
                tasks,
                held_ms = held.elapsed().as_millis() as u64,
                "restore finished, passed to the lazy-pages daemon"
            );
            return Ok(());
        }
        send_all(daemon.as_raw_fd(), &word.to_ne_bytes(), None)?;
        // A negative pid is a zombie: no userfaultfd follows.
        if (word as i32) >= 0 {
            let (byte, fd) = read_fd(restore.as_raw_fd())?;
            send_all(daemon.as_raw_fd(), &[byte], Some(fd.as_raw_fd()))?;
            tasks += 1;
        }
    }
}

/// Connects to the daemon's socket, waiting (bounded) for the daemon to start listening.
fn connect_when_listening(
    path: &Path,
    abandon: &AtomicBool,
) -> std::result::Result<UnixStream, String> {
    let started = Instant::now();
    loop {
        match UnixStream::connect(path) {
            Ok(s) => return Ok(s),
            Err(e) if abandon.load(Ordering::SeqCst) || started.elapsed() > DAEMON_START_LIMIT => {
                return Err(format!("{}: {e}", path.display()))
            }
            Err(_) => std::thread::sleep(std::time::Duration::from_micros(500)),
        }
    }
}

/// The path to bind or connect CRIU's socket in a directory, short enough for a unix socket
/// address (108 bytes with its terminating zero): a deep home directory makes
/// `…/tenants/NAME/criu/lazy-pages/lazy-pages.socket` longer than that, and then the relay could
/// not reach the daemon and every lazy restore failed ("Failed sending restore finished
/// indication: Broken pipe", seen with a 22-byte `--home`). A long one goes through the
/// directory's descriptor (`/proc/self/fd/N/lazy-pages.socket`), held open while it is used.
struct SocketPath;

impl SocketPath {
    fn in_dir(dir: &Path) -> std::io::Result<(Option<std::fs::File>, PathBuf)> {
        let direct = dir.join(SOCKET_NAME);
        if direct.as_os_str().len() < 100 {
            return Ok((None, direct));
        }
        use std::os::unix::fs::OpenOptionsExt;
        let handle = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
            .open(dir)?;
        let short = PathBuf::from(format!(
            "/proc/self/fd/{}/{SOCKET_NAME}",
            handle.as_raw_fd()
        ));
        Ok((Some(handle), short))
    }
}

/// How long the daemon may take to listen.
const DAEMON_START_LIMIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Reads one 4-byte word (a pid or the finish message); `None` at a clean end of stream.
fn read_word(fd: RawFd) -> std::result::Result<Option<u32>, String> {
    let mut buf = [0u8; 4];
    let mut got = 0;
    while got < buf.len() {
        let (n, fds) = recv(fd, &mut buf[got..])?;
        if !fds.is_empty() {
            return Err("a file descriptor came with a pid".into());
        }
        if n == 0 {
            return if got == 0 {
                Ok(None)
            } else {
                Err("short message".into())
            };
        }
        got += n;
    }
    Ok(Some(u32::from_ne_bytes(buf)))
}

/// Reads the one byte that carries a task's userfaultfd.
fn read_fd(fd: RawFd) -> std::result::Result<(u8, OwnedFd), String> {
    let mut byte = [0u8; 1];
    let (n, mut fds) = recv(fd, &mut byte)?;
    match (n, fds.len()) {
        (1, 1) => Ok((byte[0], fds.remove(0))),
        _ => Err(format!(
            "expected a userfaultfd, got {n} bytes and {} fds",
            fds.len()
        )),
    }
}

fn recv(fd: RawFd, buf: &mut [u8]) -> std::result::Result<(usize, Vec<OwnedFd>), String> {
    let mut cmsg = nix::cmsg_space!([RawFd; 4]);
    let mut iov = [IoSliceMut::new(buf)];
    loop {
        match recvmsg::<()>(fd, &mut iov, Some(&mut cmsg), MsgFlags::MSG_CMSG_CLOEXEC) {
            Ok(msg) => {
                let mut fds = Vec::new();
                for c in msg.cmsgs().map_err(|e| format!("cmsg: {e}"))? {
                    if let ControlMessageOwned::ScmRights(raw) = c {
                        // SAFETY: the kernel just installed these descriptors for us; nothing
                        // else owns them.
                        fds.extend(raw.into_iter().map(|r| unsafe { OwnedFd::from_raw_fd(r) }));
                    }
                }
                if msg.flags.contains(MsgFlags::MSG_CTRUNC) {
                    return Err("control message truncated".into());
                }
                return Ok((msg.bytes, fds));
            }
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(format!("recvmsg: {e}")),
        }
    }
}

fn send_all(fd: RawFd, bytes: &[u8], with_fd: Option<RawFd>) -> std::result::Result<(), String> {
    let fds = with_fd.map(|f| [f]);
    let cmsgs: Vec<ControlMessage> = fds.iter().map(|f| ControlMessage::ScmRights(f)).collect();
    let mut sent = 0;
    while sent < bytes.len() {
        let iov = [IoSlice::new(&bytes[sent..])];
        let attach = if sent == 0 { &cmsgs[..] } else { &[][..] };
        match sendmsg::<()>(fd, &iov, attach, MsgFlags::MSG_NOSIGNAL, None) {
            Ok(n) => sent += n,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(format!("sendmsg: {e}")),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    /// What `criu restore` does on the socket, from a test thread.
    fn restorer(path: &Path, pids: &[i32], finish: bool) {
        let s = UnixStream::connect(path).unwrap();
        for &pid in pids {
            send_all(s.as_raw_fd(), &pid.to_ne_bytes(), None).unwrap();
            if pid >= 0 {
                let (r, _w) = UnixStream::pair().unwrap();
                send_all(s.as_raw_fd(), &[0], Some(r.as_raw_fd())).unwrap();
            }
        }
        if finish {
            send_all(s.as_raw_fd(), &RESTORE_FINISHED.to_ne_bytes(), None).unwrap();
        }
    }

    #[test]
    fn tasks_pass_at_once_and_the_finish_waits_for_release() {
        let dir = tempfile::tempdir().unwrap();
        relays_tasks_and_holds_the_finish(dir.path());
    }

    #[test]
    fn work_directories_too_deep_for_a_socket_address_work_too() {
        let dir = tempfile::tempdir().unwrap();
        let deep = dir
            .path()
            .join("a-home-directory-of-some-length/tenants/a-tenant-with-a-longer-name/criu");
        assert!(deep.join("lazy-pages").join(SOCKET_NAME).as_os_str().len() > 108);
        relays_tasks_and_holds_the_finish(&deep);
    }

    fn relays_tasks_and_holds_the_finish(base: &Path) {
        let (rw, dw) = (base.join("restore"), base.join("lazy-pages"));
        std::fs::create_dir_all(&rw).unwrap();
        std::fs::create_dir_all(&dw).unwrap();
        // The restore may connect before the daemon listens.
        let mut gate = LazyGate::open(&rw, &dw).unwrap();
        let (_r, restore_socket) = SocketPath::in_dir(&rw).unwrap();
        restorer(&restore_socket, &[42, -7, 43], true);
        assert!(!gate.daemon_connected());
        let (_d, daemon_socket) = SocketPath::in_dir(&dw).unwrap();
        let daemon = UnixListener::bind(daemon_socket).unwrap();
        let (d, _) = daemon.accept().unwrap();
        let fd = d.as_raw_fd();
        assert_eq!(read_word(fd).unwrap(), Some(42));
        let (_, uffd) = read_fd(fd).unwrap();
        assert!(uffd.as_raw_fd() >= 0);
        assert_eq!(read_word(fd).unwrap(), Some(-7i32 as u32));
        assert_eq!(read_word(fd).unwrap(), Some(43));
        read_fd(fd).unwrap();
        assert!(gate.daemon_connected());
        d.set_read_timeout(Some(std::time::Duration::from_millis(200)))
            .unwrap();
        let mut buf = [0u8; 4];
        assert!((&d).read(&mut buf).is_err(), "finish must wait");
        gate.release();
        d.set_read_timeout(None).unwrap();
        assert_eq!(read_word(fd).unwrap(), Some(RESTORE_FINISHED));
        assert_eq!(read_word(fd).unwrap(), None, "then the relay closes");
    }

    #[test]
    fn dropping_an_unused_gate_does_not_hang() {
        let dir = tempfile::tempdir().unwrap();
        let gate = LazyGate::open(dir.path(), dir.path()).unwrap();
        drop(gate);
    }
}
