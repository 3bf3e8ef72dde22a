//! systemd without systemd as PID 1: a notification socket a test listens on in systemd's place
//! (`NOTIFY_SOCKET`), the service settings a test runs a unit's command with, read from the unit
//! file, and `systemd-analyze verify` of unit files.

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// A datagram socket bound where a daemon's `NOTIFY_SOCKET` points, as systemd's would be.
pub struct NotifySocket {
    socket: UnixDatagram,
    path: PathBuf,
    _dir: tempfile::TempDir,
    /// Every datagram received so far, in order.
    pub received: Vec<String>,
}

impl NotifySocket {
    pub fn bind() -> NotifySocket {
        let dir = tempfile::Builder::new()
            .prefix("pico-notify-")
            .tempdir()
            .unwrap();
        let path = dir.path().join("notify");
        let socket = UnixDatagram::bind(&path).unwrap();
        NotifySocket {
            socket,
            path,
            _dir: dir,
            received: Vec::new(),
        }
    }

    /// The value of `NOTIFY_SOCKET` for the daemon.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether a datagram received so far holds the line `line`.
    pub fn seen(&self, line: &str) -> bool {
        self.received.iter().any(|d| d.lines().any(|l| l == line))
    }

    /// Waits (at most `within`) for a datagram holding the line `line` (such as `READY=1`) and
    /// returns it; panics with everything received if none comes.
    pub fn expect(&mut self, line: &str, within: Duration) -> String {
        self.expect_while(line, within, || Ok(()))
    }

    /// As [`NotifySocket::expect`], giving up early with what `alive` says when it says the
    /// daemon is gone (asked every 200 ms).
    pub fn expect_while(
        &mut self,
        line: &str,
        within: Duration,
        mut alive: impl FnMut() -> Result<(), String>,
    ) -> String {
        let started = Instant::now();
        let mut buf = vec![0u8; 4096];
        loop {
            let left = within.saturating_sub(started.elapsed());
            assert!(
                !left.is_zero(),
                "no {line} within {within:?}; received: {:?}",
                self.received
            );
            if let Err(why) = alive() {
                panic!("no {line}: {why}; received: {:?}", self.received);
            }
            self.socket
                .set_read_timeout(Some(left.min(Duration::from_millis(200))))
                .unwrap();
            match self.socket.recv(&mut buf) {
                Ok(n) => {
                    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                    self.received.push(text.clone());
                    if text.lines().any(|l| l == line) {
                        return text;
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => panic!("notification socket: {e}"),
            }
        }
    }
}

/// The `[Service]` settings of a unit file a test starts a unit's command by.
pub struct ServiceUnit {
    settings: Vec<(String, String)>,
}

impl ServiceUnit {
    pub fn read(path: &Path) -> ServiceUnit {
        let text = std::fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        ServiceUnit::parse(&text)
    }

    /// The `[Service]` section's `KEY=VALUE` lines (comments, other sections left out; no line
    /// continuations, which our units do not use).
    pub fn parse(text: &str) -> ServiceUnit {
        let mut section = "";
        let mut settings = Vec::new();
        for line in text.lines().map(str::trim) {
            if line.starts_with('[') {
                section = line;
            } else if section == "[Service]" && !line.starts_with(['#', ';']) {
                if let Some((k, v)) = line.split_once('=') {
                    settings.push((k.trim().to_string(), v.trim().to_string()));
                }
            }
        }
        ServiceUnit { settings }
    }

    /// Every value of `key`, in order.
    pub fn all(&self, key: &str) -> Vec<&str> {
        self.settings
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The one value of `key`.
    pub fn one(&self, key: &str) -> &str {
        match self.all(key)[..] {
            [value] => value,
            ref values => panic!("{key}: {values:?}, one value expected"),
        }
    }

    /// A command line (`ExecStart=`, `ExecReload=`) as its words, `$MAINPID` replaced by
    /// `main_pid`. Quotes and specifiers are refused: our units use none, so the words are
    /// exactly what systemd runs.
    pub fn command(&self, key: &str, main_pid: Option<u32>) -> Vec<String> {
        let line = self.one(key);
        assert!(
            !line.contains(['"', '\'', '%', '\\']),
            "{key}={line}: quoting and specifiers are not supported here"
        );
        line.split_whitespace()
            .map(|w| match (w, main_pid) {
                ("$MAINPID", Some(pid)) => pid.to_string(),
                _ => w.to_string(),
            })
            .collect()
    }

    /// `Environment=` assignments (unquoted `K=V` words).
    pub fn environment(&self) -> Vec<(String, String)> {
        self.all("Environment")
            .iter()
            .flat_map(|line| line.split_whitespace())
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// `setpriv --bounding-set` of `CapabilityBoundingSet=`: `-cap,...` for `~CAP...` (those
    /// dropped), `-all,+cap,...` for a list (those kept); `None` when not set.
    pub fn bounding_set_for_setpriv(&self) -> Option<String> {
        let line = self.all("CapabilityBoundingSet").join(" ");
        if line.is_empty() {
            return None;
        }
        let (dropped, caps) = match line.strip_prefix('~') {
            Some(rest) => (true, rest),
            None => (false, line.as_str()),
        };
        let names = caps.split_whitespace().map(|c| {
            c.strip_prefix("CAP_")
                .unwrap_or_else(|| panic!("{c}: not a capability"))
                .to_lowercase()
        });
        Some(if dropped {
            names.map(|c| format!("-{c}")).collect::<Vec<_>>().join(",")
        } else {
            std::iter::once("-all".to_string())
                .chain(names.map(|c| format!("+{c}")))
                .collect::<Vec<_>>()
                .join(",")
        })
    }
}

/// `systemd-analyze verify UNITS...`: its output (stdout and stderr), or a panic with it when it
/// fails or warns. It checks that the commands exist: point them at files that do.
pub fn verify(units: &[PathBuf]) -> String {
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .args(units)
        .output()
        .expect("systemd-analyze (Debian package systemd) must be installed");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && text.trim().is_empty(),
        "systemd-analyze verify {units:?} ({}):\n{text}",
        out.status
    );
    text
}

/// Copies the unit files `units` into `dir` with each `(from, to)` of `paths` replaced (binary
/// paths pointed at files that exist here), for [`verify`]; the copies' paths.
pub fn copy_units(units: &[PathBuf], dir: &Path, paths: &[(&str, &Path)]) -> Vec<PathBuf> {
    units
        .iter()
        .map(|unit| {
            let mut text = std::fs::read_to_string(unit).unwrap();
            for (from, to) in paths {
                text = text.replace(from, to.to_str().unwrap());
            }
            let copy = dir.join(unit.file_name().unwrap());
            std::fs::write(&copy, text).unwrap();
            copy
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_unit_s_service_settings_and_commands() {
        let unit = ServiceUnit::parse(
            "[Unit]\nDescription=x\n[Service]\n# ExecStart=/nope\nExecStart=/usr/bin/pico --home /h worker run\n\
             ExecReload=/bin/kill -USR2 $MAINPID\nEnvironment=A=1 B=2\n\
             CapabilityBoundingSet=~CAP_SYS_MODULE CAP_SYS_BOOT\n[Install]\nWantedBy=m\n",
        );
        assert_eq!(
            unit.command("ExecStart", None),
            ["/usr/bin/pico", "--home", "/h", "worker", "run"]
        );
        assert_eq!(
            unit.command("ExecReload", Some(42)),
            ["/bin/kill", "-USR2", "42"]
        );
        assert_eq!(
            unit.environment(),
            [("A".into(), "1".into()), ("B".into(), "2".into())]
        );
        assert_eq!(
            unit.bounding_set_for_setpriv().as_deref(),
            Some("-sys_module,-sys_boot")
        );
        let kept = ServiceUnit::parse("[Service]\nCapabilityBoundingSet=CAP_NET_BIND_SERVICE\n");
        assert_eq!(
            kept.bounding_set_for_setpriv().as_deref(),
            Some("-all,+net_bind_service")
        );
    }
}
