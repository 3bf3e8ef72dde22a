//! Telling systemd how a daemon is doing (`sd_notify(3)`), without libsystemd: a unit of
//! `Type=notify` waits for `READY=1` before it counts the service as started (and starts what
//! is ordered after it), and with `WatchdogSec=` restarts a service that stops sending
//! `WATCHDOG=1`. The worker and the hub both speak it (`deploy/systemd/`).
//!
//! The protocol, as `sd_notify(3)` and systemd's `src/libsystemd/sd-daemon/sd-daemon.c` define
//! it: systemd passes a socket address in `NOTIFY_SOCKET`, a path (`/run/systemd/notify`) or an
//! abstract name written with a leading `@`; the daemon sends it datagrams of newline-separated
//! `KEY=VALUE` assignments. The ones used here: `READY=1` (serving), `RELOADING=1` with
//! `MONOTONIC_USEC=` (a reload began; `READY=1` ends it), `STOPPING=1`, `STATUS=` (one line
//! `systemctl status` shows) and `WATCHDOG=1`. `WATCHDOG_USEC` is the watchdog's interval and
//! `WATCHDOG_PID` the process it is for (absent: the main process, us); the daemon pings at
//! half the interval, as the manual advises.
//!
//! The variables are taken out of the environment at start ([`take_from_env`]) so that no
//! tenant inherits them (a tenant could otherwise speak for the worker), and handed back
//! explicitly to the worker's own re-exec ([`exec_env`]), which keeps the process id: systemd
//! hears `READY=1` again from the same main process.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::OnceLock;
use std::time::Duration;

use tracing::{debug, info, warn};

const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";
const WATCHDOG_USEC: &str = "WATCHDOG_USEC";
const WATCHDOG_PID: &str = "WATCHDOG_PID";

/// A connection to systemd's notification socket.
#[derive(Debug)]
pub struct Notifier {
    socket: UnixDatagram,
    addr: SocketAddr,
    /// `NOTIFY_SOCKET` as given, for a re-exec.
    raw: OsString,
    /// `WATCHDOG_USEC`, when the watchdog is for this process.
    watchdog: Option<Duration>,
}

impl Notifier {
    /// A notifier for the socket named by `notify_socket` (a `NOTIFY_SOCKET` value), with the
    /// watchdog `watchdog` (see [`watchdog_of`]).
    pub fn new(notify_socket: &OsStr, watchdog: Option<Duration>) -> io::Result<Notifier> {
        Ok(Notifier {
            socket: UnixDatagram::unbound()?,
            addr: address(notify_socket)?,
            raw: notify_socket.to_os_string(),
            watchdog,
        })
    }

    /// Sends `state` (`KEY=VALUE` lines) in one datagram.
    pub fn send(&self, state: &str) -> io::Result<()> {
        let sent = self.socket.send_to_addr(state.as_bytes(), &self.addr)?;
        if sent != state.len() {
            return Err(io::Error::other("notification sent in part"));
        }
        Ok(())
    }

    /// How often the watchdog must hear from this process: half its interval, as
    /// `sd_watchdog_enabled(3)` advises. `None`: no watchdog.
    pub fn ping_every(&self) -> Option<Duration> {
        self.watchdog.map(|interval| interval / 2)
    }
}

/// The socket address `NOTIFY_SOCKET` names: a path, or `@name` for an abstract one.
fn address(notify_socket: &OsStr) -> io::Result<SocketAddr> {
    let bytes = notify_socket.as_bytes();
    match bytes.first() {
        Some(b'/') => SocketAddr::from_pathname(notify_socket),
        Some(b'@') => {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(&bytes[1..])
        }
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("NOTIFY_SOCKET {notify_socket:?} is neither a path nor an @abstract name"),
        )),
    }
}

/// The watchdog interval `WATCHDOG_USEC` gives this process (`pid`): none when it is absent,
/// zero or malformed, or when `WATCHDOG_PID` names another process.
pub fn watchdog_of(usec: Option<&str>, watchdog_pid: Option<&str>, pid: u32) -> Option<Duration> {
    if let Some(for_pid) = watchdog_pid {
        if for_pid.trim().parse::<u32>().ok() != Some(pid) {
            return None;
        }
    }
    let usec: u64 = usec?.trim().parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec))
}

/// This process's notifier, taken from the environment once by [`take_from_env`].
static SYSTEMD: OnceLock<Option<Notifier>> = OnceLock::new();

/// Reads `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID` and removes them from the
/// environment (no child inherits them). Call it once at start, before any thread exists;
/// without it (or without `NOTIFY_SOCKET`) every function here does nothing.
pub fn take_from_env() {
    let socket = std::env::var_os(NOTIFY_SOCKET);
    let usec = std::env::var(WATCHDOG_USEC).ok();
    let pid = std::env::var(WATCHDOG_PID).ok();
    // SAFETY: called once at start, before any thread reads the environment.
    unsafe {
        for var in [NOTIFY_SOCKET, WATCHDOG_USEC, WATCHDOG_PID] {
            std::env::remove_var(var);
        }
    }
    let notifier = socket.and_then(|socket| {
        let watchdog = watchdog_of(usec.as_deref(), pid.as_deref(), std::process::id());
        match Notifier::new(&socket, watchdog) {
            Ok(n) => Some(n),
            Err(e) => {
                warn!(error = %e, "cannot notify systemd");
                None
            }
        }
    });
    let _ = SYSTEMD.set(notifier);
}

fn notifier() -> Option<&'static Notifier> {
    SYSTEMD.get().and_then(Option::as_ref)
}

/// Sends `state` if systemd listens; a failure is logged, never fatal.
fn notify(state: &str) {
    if let Some(n) = notifier() {
        match n.send(state) {
            Ok(()) => debug!(state, "notified systemd"),
            Err(e) => warn!(error = %e, state, "cannot notify systemd"),
        }
    }
}

/// The service serves: `READY=1`, with `status` for `systemctl status`.
pub fn ready(status: &str) {
    notify(&format!("READY=1\nSTATUS={}", one_line(status)));
}

/// A reload began (the worker's SIGUSR2 re-exec); `READY=1` from the new image ends it.
pub fn reloading() {
    notify(&format!(
        "RELOADING=1\nMONOTONIC_USEC={}\nSTATUS=re-executing",
        monotonic_usec()
    ));
}

/// The service is stopping, with what it does meanwhile.
pub fn stopping(status: &str) {
    notify(&format!("STOPPING=1\nSTATUS={}", one_line(status)));
}

/// Pings systemd's watchdog from this runtime every half interval, while the runtime runs (a
/// runtime too wedged to run this task gets the service restarted). `None` without a watchdog.
pub fn spawn_watchdog() -> Option<tokio::task::JoinHandle<()>> {
    let notifier = notifier()?;
    let every = notifier.ping_every()?;
    info!(
        every_ms = every.as_millis() as u64,
        "pinging systemd's watchdog"
    );
    Some(tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = notifier.send("WATCHDOG=1") {
                warn!(error = %e, "cannot ping systemd's watchdog");
            }
        }
    }))
}

/// The variables a re-exec of this process passes on, so that its new image notifies the same
/// socket and pings the same watchdog (the process id does not change).
pub fn exec_env() -> Vec<(&'static str, OsString)> {
    let Some(n) = notifier() else {
        return Vec::new();
    };
    let mut env = vec![(NOTIFY_SOCKET, n.raw.clone())];
    if let Some(interval) = n.watchdog {
        env.push((WATCHDOG_USEC, interval.as_micros().to_string().into()));
        env.push((WATCHDOG_PID, std::process::id().to_string().into()));
    }
    env
}

fn one_line(text: &str) -> String {
    text.replace('\n', " ")
}

/// `CLOCK_MONOTONIC` in microseconds, as `RELOADING=1` carries it.
fn monotonic_usec() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec, which outlives the call.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64) * 1_000_000 + (ts.tv_nsec as u64) / 1_000
}

#[cfg(test)]
mod tests {
    use super::*;

    fn received(socket: &UnixDatagram) -> String {
        let mut buf = [0u8; 512];
        let n = socket.recv(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    #[test]
    fn a_path_socket_receives_each_state_as_one_datagram() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let listener = UnixDatagram::bind(&path).unwrap();
        let n = Notifier::new(path.as_os_str(), None).unwrap();
        n.send("READY=1\nSTATUS=serving").unwrap();
        n.send("WATCHDOG=1").unwrap();
        assert_eq!(received(&listener), "READY=1\nSTATUS=serving");
        assert_eq!(received(&listener), "WATCHDOG=1");
    }

    #[test]
    fn an_abstract_socket_is_written_with_an_at_sign() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("pico-sd-notify-test-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let listener = UnixDatagram::bind_addr(&addr).unwrap();
        let n = Notifier::new(OsStr::new(&format!("@{name}")), None).unwrap();
        n.send("STOPPING=1").unwrap();
        assert_eq!(received(&listener), "STOPPING=1");
    }

    #[test]
    fn other_addresses_are_refused() {
        for bad in ["", "relative/notify", "vsock:2:1234"] {
            assert!(Notifier::new(OsStr::new(bad), None).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_watchdog_is_ours_unless_another_pid_is_named() {
        let second = Some(Duration::from_secs(1));
        assert_eq!(watchdog_of(Some("1000000"), None, 7), second);
        assert_eq!(watchdog_of(Some("1000000"), Some("7"), 7), second);
        assert_eq!(watchdog_of(Some("1000000"), Some("8"), 7), None);
        assert_eq!(watchdog_of(Some("0"), None, 7), None);
        assert_eq!(watchdog_of(Some("soon"), None, 7), None);
        assert_eq!(watchdog_of(None, Some("7"), 7), None);
        let n = Notifier::new(OsStr::new("/run/systemd/notify"), second).unwrap();
        assert_eq!(n.ping_every(), Some(Duration::from_millis(500)));
    }

    #[test]
    fn status_is_one_line() {
        assert_eq!(one_line("a\nb"), "a b");
        assert!(monotonic_usec() > 0);
    }
}
